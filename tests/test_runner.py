"""End-to-end runs of RecBole built-ins through the plugin entry points, the CLI and the tuner."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import run_hyper
import run_recbole_fitmm as cli_script
from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.cli import parse_overrides, parse_value
from recbole_fitmm.config import ROOT, Config
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.tuning import Search, tune
from tests.conftest import toy_config

KEYS = {"model", "dataset", "best_valid_score", "best_valid_result", "test_result", "train_seconds"}


@pytest.mark.parametrize("model", ["BPR", "LightGCN"])
def test_builtin_models_run_through_the_plugin(toy_root: Path, tmp_path: Path, model: str) -> None:
    result = run_recbole_fitmm(model, "toy", config_dict=toy_config(toy_root, epochs=3))
    assert KEYS <= set(result)
    assert result["model"] == model
    for split in ("best_valid_result", "test_result"):
        metrics = result[split]
        # The paper protocol: Recall/NDCG/Precision/MAP at 5/10/20/50.
        expected = {
            f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)
        }
        assert expected <= set(metrics)
        assert metrics["recall@50"] >= metrics["recall@20"] >= metrics["recall@10"]
    assert result["best_valid_score"] == pytest.approx(result["best_valid_result"]["recall@20"])
    # Outputs land in the working directory (a temporary folder here), never in the repository.
    assert (tmp_path / "saved").is_dir() and (tmp_path / "log").is_dir()


def test_protocol_defaults_come_from_the_plugin(toy_root: Path) -> None:
    config = Config("LightGCN", "toy", config_dict=toy_config(toy_root))
    assert config["valid_metric"] == "Recall@20"
    assert config["topk"] == [5, 10, 20, 50]
    assert config["stopping_step"] == 2  # overridden by the test config
    assert config["train_batch_size"] == 2048
    assert config["test_mask"] == "train_only"
    assert config["seed"] == 999
    assert Config("BPR", "toy", config_dict={"data_path": str(toy_root)})["stopping_step"] == 20


def test_default_data_path_is_the_embedded_folder() -> None:
    config = Config("BPR", "mmsynth")
    assert Path(config["data_path"]) == ROOT / "dataset_atomic" / "mmsynth"


def test_unknown_model_is_a_clear_error(toy_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model 'NoSuchModel'"):
        run_recbole_fitmm("NoSuchModel", "toy", config_dict=toy_config(toy_root))


def test_missing_dataset_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config("BPR", "nowhere", config_dict={"data_path": str(tmp_path)})


def test_parse_overrides_types_values() -> None:
    assert parse_overrides(["--learning_rate=1e-4", "--epochs=3", "--topk=[10,20]"]) == {
        "learning_rate": 1e-4,
        "epochs": 3,
        "topk": [10, 20],
    }
    assert parse_value("True") is True
    assert parse_value("''") == ""
    assert parse_value("train_only") == "train_only"
    assert parse_value("{inter: [user_id, item_id]}") == {"inter": ["user_id", "item_id"]}
    with pytest.raises(ConfigError, match="expected --key=value"):
        parse_overrides(["epochs"])


def test_cli_prints_a_results_table(toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--model=BPR",
        "--dataset=toy",
        f"--data_path={toy_root}",
        "--benchmark_filename=[train,valid,test]",
        "--epochs=1",
        "--gpu_id=''",
        "--state=ERROR",
    ]
    assert cli_script.main(argv) == 0
    out = capsys.readouterr().out
    assert "| metric | valid | test |" in out and "| recall@20 |" in out


def test_cli_reports_bad_input_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_script.main(["--model=BPR", "--dataset=nowhere", f"--data_path={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_two_trial_tuning_selects_on_validation(toy_root: Path, tmp_path: Path) -> None:
    params = tmp_path / "bpr.hyper"
    params.write_text("learning_rate choice [0.05,0.0001]\n")
    result = tune("BPR", "toy", Search(params, fixed=toy_config(toy_root, epochs=2)))
    assert len(result.trials) == 2
    best = max(result.trials, key=lambda t: t["best_valid_score"])
    assert result.best_valid_result == best["best_valid_result"]
    assert result.best_params["learning_rate"] in (0.05, 0.0001)
    assert result.best_valid_result["recall@20"] == pytest.approx(best["best_valid_score"])


def test_run_hyper_script_writes_json(toy_root: Path, tmp_path: Path) -> None:
    params = tmp_path / "bpr.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    out = tmp_path / "tuned.json"
    argv = [
        "--model=BPR",
        "--dataset=toy",
        f"--params_file={params}",
        f"--output_file={out}",
        f"--data_path={toy_root}",
        "--benchmark_filename=[train,valid,test]",
        "--epochs=1",
        "--gpu_id=''",
        "--state=ERROR",
    ]
    assert run_hyper.main(argv) == 0
    written = json.loads(out.read_text())
    assert written["model"] == "BPR" and len(written["trials"]) == 2
    assert written["tool"] == "hyperopt" and written["complete"]
    assert set(written["best_params"]) == {"learning_rate"}
    assert {t["params"]["learning_rate"] for t in written["trials"]} == {0.01, 0.001}
    assert all(t["status"] == "ok" for t in written["trials"])


def test_run_hyper_refuses_ray_options_without_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_hyper.main(["--model=BPR", "--cpus_per_trial=2"]) == 2
    assert "--cpus_per_trial needs --tool=ray" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("faiss") is not None, reason="faiss is installed")
def test_a_model_whose_extra_package_is_missing_is_one_clear_error(
    toy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RecBole's NCL imports faiss when it trains: refused before training, naming the extra."""
    with pytest.raises(ConfigError, match=r"NCL needs the package 'faiss-cpu'.*recbole-extras"):
        run_recbole_fitmm("NCL", "toy", config_dict=toy_config(toy_root))
    args = ["--model=NCL", "--dataset=toy", f"--data_path={toy_root}", "--gpu_id=''"]
    assert cli_script.main([*args, "--benchmark_filename=[train,valid,test]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model NCL needs the package") and "\n" not in err
