"""The search: params files, selection and records, and the Ray Tune backend (parallel trials,
failures recorded, an interrupted search resumed without re-running finished trials)."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import recbole_fitmm.tuning as tuning_module
import recbole_fitmm.tuning_ray as ray_module
import run_hyper
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.tuning import (
    Progress,
    Search,
    build_result,
    trial_record,
    tune,
    write_result,
)
from recbole_fitmm.tuning_ray import EarlyStop, RayResources, ray_session, tune_ray
from recbole_fitmm.tuning_space import parse_space, plain_params, space_size, trial_points
from tests.conftest import toy_config


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.hyper"
    path.write_text(text)
    return path


def test_params_file_kinds_comments_and_typing(tmp_path: Path) -> None:
    path = _params(
        tmp_path,
        "# a comment\n"
        "learning_rate choice [0.01, 1e-4]   # spaces inside the list are fine\n"
        "\n"
        "layers choice [[64,64],[128]]\n"
        "dropout uniform 0,0.5\n"
        "lr2 loguniform -8,0\n"
        "n_layers quniform 1,3,1\n",
    )
    space = {param.name: param for param in parse_space(path)}
    assert space["learning_rate"].values == (0.01, 1e-4)
    assert space["layers"].values == ([64, 64], [128])
    assert space["dropout"].values == (0.0, 0.5)
    assert space["n_layers"].grid() == [1, 2, 3]
    assert plain_params(list(space.values()), {"n_layers": 2.0}) == {"n_layers": 2}
    grid = parse_space(_params(tmp_path, "a choice [1,2,3]\nb quniform 0,1,0.5\n"))
    assert space_size(grid, "exhaustive", 1) == 9
    assert space_size(grid, "random", 7) == 7


@pytest.mark.parametrize(
    "text",
    ["lr choice 0.1\n", "lr normal 0,1\n", "lr uniform 1\n", "lr uniform 2,1\n", "a b\n"],
)
def test_malformed_params_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        parse_space(_params(tmp_path, text))


def test_exhaustive_search_refuses_continuous_entries(tmp_path: Path) -> None:
    space = parse_space(_params(tmp_path, "lr loguniform -8,0\n"))
    with pytest.raises(ConfigError, match="exhaustive"):
        space_size(space, "exhaustive", 10)


def test_selection_uses_validation_and_skips_failed_trials() -> None:
    def result(valid: float, test: float | None) -> dict[str, Any]:
        return {
            "best_valid_score": valid,
            "best_valid_result": {"recall@20": valid},
            "test_result": None if test is None else {"recall@20": test},
        }

    records = [
        trial_record({"x": 1}, result(0.2, 0.9), 1.0),
        trial_record({"x": 2}, result(0.5, 0.1), 1.0),
        trial_record({"x": 3}, result(-math.inf, None), 1.0),  # diverged before validating
    ]
    assert [r["status"] for r in records] == ["ok", "ok", "failed"]
    chosen = build_result("BPR", "toy", records, bigger=True)
    assert chosen.best_params == {"x": 2} and chosen.test_result == {"recall@20": 0.1}
    assert build_result("BPR", "toy", records, bigger=False).best_params == {"x": 1}
    assert build_result("BPR", "toy", records[2:], bigger=True).best_params == {}


def test_progress_line_reports_best_left_and_time() -> None:
    lines: list[str] = []
    progress = Progress(total=3, metric="recall@20", bigger=True, write=lines.append)
    progress.add(trial_record({"lr": 0.1}, {"best_valid_score": 0.3, "test_result": {}}, 1.0))
    progress.add(trial_record({"lr": 0.2}, {"best_valid_score": 0.1, "test_result": {}}, 1.0))
    assert lines[1].startswith("[trial 2/3] lr=0.2: valid recall@20 0.1000 | best 0.3000 | 1 left")
    assert "s elapsed, ~" in lines[1] and progress.stalled(1) and not progress.stalled(2)


def test_grid_points_are_the_product_in_file_order(tmp_path: Path) -> None:
    space = parse_space(_params(tmp_path, "a choice [1,2]\nb quniform 0,2,1\nc choice ['x','y']"))
    expected = [dict(zip("abc", v)) for v in itertools.product([1, 2], [0, 1, 2], ["x", "y"])]
    assert trial_points(space, "exhaustive", 1, seed=0) == expected


def test_random_search_over_a_grid_draws_distinct_points(tmp_path: Path) -> None:
    space = parse_space(_params(tmp_path, "a choice [1,2,3,4,5,6,7]\nb choice [0.1,0.2]"))
    grid = [dict(zip("ab", v)) for v in itertools.product(range(1, 8), (0.1, 0.2))]
    drawn = trial_points(space, "random", 12, seed=42)
    keys = {json.dumps(point, sort_keys=True) for point in drawn}
    assert len(drawn) == len(keys) == 12 == space_size(space, "random", 12)
    assert all(point in grid for point in drawn)
    assert drawn == trial_points(space, "random", 12, seed=42)  # the seed fixes the draw
    assert drawn != trial_points(space, "random", 12, seed=7)
    whole = trial_points(space, "random", 50, seed=42)  # a budget beyond the grid: all of it
    assert len(whole) == space_size(space, "random", 50) == 14 and sorted(
        whole, key=lambda p: (p["a"], p["b"])
    ) == sorted(grid, key=lambda p: (p["a"], p["b"]))
    continuous = parse_space(_params(tmp_path, "a uniform 0,1"))
    assert trial_points(continuous, "random", 5, seed=1) is None  # the library samples


def test_hyperopt_search_records_failures_and_resumes(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, interrupted = tmp_path / "calls.txt", tmp_path / "interrupted"
    objective = fake_objective(calls, interrupted, driver=None)
    monkeypatch.setattr(tuning_module, "objective_function", objective)
    space = _params(tmp_path, "x choice [1,2,3,4,5]\n")

    def search() -> Any:
        return tune("BPR", "toy", Search(space, fixed=toy_config(toy_root)), out_dir=tmp_path)

    first = search()  # interrupted by x=3 (Ctrl-C)
    assert not first.complete and 3 not in [t["params"]["x"] for t in first.trials]
    finished = [t["params"]["x"] for t in first.trials]
    second = search()
    assert second.complete and len(second.trials) == 5
    ran = [int(x) for x in calls.read_text().split()]
    assert all(ran.count(x) == 1 for x in finished) and ran.count(3) == 2
    assert len(list((tmp_path / "hyperopt" / "BPR_toy" / "finished").glob("*.json"))) == 5
    by_x = {trial["params"]["x"]: trial for trial in second.trials}
    assert [by_x[x]["status"] for x in range(1, 6)] == ["ok", "failed", "ok", "ok", "failed"]
    assert by_x[2]["error"] == "ValueError: x=2 is a bad value"
    assert second.best_params == {"x": 4} and second.test_result == {"recall@20": 0.1}


def test_ray_shares_the_gpus_among_concurrent_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_module.ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    shared = ray_module._resolve(RayResources(cpus_per_trial=2))
    assert shared.gpus_per_trial == pytest.approx(0.5)  # 4 trials at once on 2 GPUs
    assert ray_module._slots(shared) == 4
    assert ray_module._resolve(RayResources(gpus_per_trial=0.0)).gpus_per_trial == 0.0
    monkeypatch.setattr(ray_module.ray, "cluster_resources", lambda: {"CPU": 8.0})
    assert ray_module._resolve(RayResources()).gpus_per_trial == 0.0


def test_ray_early_stop_after_trials_without_progress() -> None:
    progress = Progress(total=5, metric="recall@20", bigger=True, write=lambda line: None)
    stopper = EarlyStop(progress, early_stop=2)
    for score in (0.1, 0.3, 0.2):
        progress.add(trial_record({"x": score}, {"best_valid_score": score, "test_result": {}}, 1))
        assert not stopper.stop_all()
    progress.add(trial_record({"x": 0}, None, None, "ValueError: bad"))  # a failure: no progress
    assert stopper.stop_all() and not stopper("trial", {})


# --- Ray Tune backend: one local Ray for the module --------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """ray.init(num_cpus=2, include_dashboard=False, ...) once for the module; ray.shutdown()."""
    with ray_session(RayResources(cpus=2)):
        yield


def test_ray_search_on_the_embedded_dataset_through_the_script(
    tmp_path: Path, local_ray: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "tuned.json"
    argv = [
        "--model=BPR",
        "--dataset=mmsynth",  # the embedded dataset, found without a data_path
        f"--params_file={_params(tmp_path, 'learning_rate choice [0.05,0.0001]')}",
        f"--output_file={out}",
        "--tool=ray",
        "--cpus_per_trial=1",  # two trials at once on the module's 2-CPU Ray
        "--gpu_id=''",
        "--state=ERROR",
        "--show_progress=False",
        "--epochs=1",
    ]
    assert run_hyper.main(argv) == 0
    written = json.loads(out.read_text())
    assert written["tool"] == "ray" and written["complete"]
    assert [t["status"] for t in written["trials"]] == ["ok", "ok"]
    best = max(written["trials"], key=lambda t: t["best_valid_score"])
    assert written["best_params"] == best["params"]
    assert written["test_result"] == best["test_result"]
    assert written["best_valid_result"]["recall@20"] == best["best_valid_score"]
    experiment = Path(written["experiment_dir"])
    assert experiment == tmp_path / "out" / "ray" / "BPR_mmsynth"
    assert len(list((experiment / "finished").glob("*.json"))) == 2
    assert not list(experiment.rglob("*.pth"))  # trial checkpoints are deleted after testing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "space.hyper"]  # no log/, saved/
    results = [json.loads(path.read_text()) for path in experiment.glob("*/result.json")]
    assert len({result["pid"] for result in results}) == 2  # two workers
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[trial")]
    assert len(lines) == 2 and lines[-1].split(" | ")[2] == "0 left"


@pytest.mark.parametrize(
    ("option", "message"),
    [("--gpus_per_trial=1000", "Ray has"), ("--cpus_per_trial=64", "Ray has 2 CPUs")],
)
def test_ray_search_refuses_resources_the_cluster_lacks(
    tmp_path: Path, local_ray: None, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    params = _params(tmp_path, "learning_rate choice [0.01]")
    assert run_hyper.main(["--model=BPR", f"--params_file={params}", "--tool=ray", option]) == 2
    assert message in capsys.readouterr().err


def fake_objective(calls: Path, marker: Path, driver: int | None) -> Callable[..., dict[str, Any]]:
    """An objective with known valid/test scores per ``x``; x=3 interrupts the search once.

    x=1: valid 0.2, test 0.9 (the best test); x=2: raises; x=3: valid 0.3; x=4: valid 0.5, test
    0.1 (the best valid); x=5: no result (as a run whose loss diverged at once). Every call
    appends ``x`` to ``calls``; the first call with x=3 sends SIGINT to the ``driver`` process
    (Ctrl-C in a Ray search), or raises ``KeyboardInterrupt`` in-process when it is ``None``.
    """
    scores = {1: (0.2, 0.9), 3: (0.3, 0.5), 4: (0.5, 0.1)}

    def objective(config: dict[str, Any], files: list[str] | None) -> dict[str, Any]:
        x = config["x"]
        with open(calls, "a") as handle:
            handle.write(f"{x}\n")
        if x == 2:
            raise ValueError("x=2 is a bad value")
        if x == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            if driver is None:
                raise KeyboardInterrupt
            os.kill(driver, signal.SIGINT)
            time.sleep(1)  # still running when the driver stops
        valid, test = scores.get(x, (-math.inf, None))
        return {
            "model": "BPR",
            "best_valid_score": valid,
            "valid_score_bigger": True,
            "best_valid_result": {"recall@20": valid} if test is not None else None,
            "test_result": None if test is None else {"recall@20": test},
        }

    return objective


def test_ray_search_selects_on_valid_records_failures_and_resumes(
    toy_root: Path, tmp_path: Path, local_ray: None, capsys: pytest.CaptureFixture[str]
) -> None:
    calls, marker = tmp_path / "calls.txt", tmp_path / "interrupted"

    def search() -> Any:
        return tune_ray(
            "BPR",
            "toy",
            Search(_params(tmp_path, "x choice [1,2,3,4,5]\n"), fixed=toy_config(toy_root)),
            resources=RayResources(cpus_per_trial=1),
            objective=fake_objective(calls, marker, os.getpid()),
        )

    first = search()  # interrupted by x=3 (Ctrl-C)
    assert not first.complete and 0 < len(first.trials) < 5
    finished = [trial["params"]["x"] for trial in first.trials]
    assert 3 not in finished
    second = search()  # the same search again
    assert second.complete and len(second.trials) == 5
    ran = [int(x) for x in calls.read_text().split()]
    assert all(ran.count(x) == 1 for x in finished)  # finished trials (failed ones too) not rerun
    assert ran.count(3) == 2  # the interrupted trial reran
    assert set(ran) == {1, 2, 3, 4, 5}
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.endswith("(stored)") for line in lines) == len(finished)

    by_x = {trial["params"]["x"]: trial for trial in second.trials}
    assert {x: t["status"] for x, t in sorted(by_x.items())} == {
        1: "ok",
        2: "failed",
        3: "ok",
        4: "ok",
        5: "failed",
    }
    assert by_x[2]["error"] == "ValueError: x=2 is a bad value"
    assert "diverged" in by_x[5]["error"]
    # Selected on validation (x=4: valid 0.5), although x=1 has the best test score (0.9).
    assert second.best_params == {"x": 4}
    assert second.best_valid_result == {"recall@20": 0.5}
    assert second.test_result == {"recall@20": 0.1}
    written = json.loads(write_result(second, tmp_path / "hyper.json").read_text())
    assert len(written["trials"]) == 5 and written["best_params"] == {"x": 4}


def test_a_search_switches_backends_without_rerunning_finished_trials(
    toy_root: Path, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, marker = tmp_path / "calls.txt", tmp_path / "interrupted"
    marker.touch()  # an existing marker: x=3 does not interrupt the search
    objective = fake_objective(calls, marker, driver=None)
    monkeypatch.setattr(tuning_module, "objective_function", objective)
    monkeypatch.chdir(toy_root)
    fixed = toy_config(toy_root, data_path=".")  # relative: both backends must key it alike

    def search(grid: str) -> Search:
        return Search(_params(tmp_path, f"x choice [{grid}]\n"), fixed=fixed)

    out = tmp_path / "stores"
    first = tune("BPR", "toy", search("1,4"), out_dir=out, write=lambda line: None)
    assert first.complete and sorted(calls.read_text().split()) == ["1", "4"]
    lines: list[str] = []
    second = tune_ray(
        "BPR", "toy", search("1,3,4"), RayResources(cpus_per_trial=1), out, objective, lines.append
    )
    # Only x=3 trained on Ray; x=1 and x=4 came from the hyperopt store.
    assert sorted(calls.read_text().split()) == ["1", "3", "4"]
    assert sum(line.endswith("(stored)") for line in lines) == 2
    assert second.best_params == {"x": 4} and len(second.trials) == 3
    third = tune("BPR", "toy", search("1,3,4"), out_dir=out, write=lambda line: None)
    assert sorted(calls.read_text().split()) == ["1", "3", "4"]  # back on hyperopt: nothing ran
    assert third.complete and {t["params"]["x"] for t in third.trials} == {1, 3, 4}
    # Each backend wrote only what it trained.
    assert len(list((out / "hyperopt" / "BPR_toy" / "finished").glob("*.json"))) == 2
    assert len(list((out / "ray" / "BPR_toy" / "finished").glob("*.json"))) == 1
