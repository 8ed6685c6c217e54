"""The comparison runner: table shape, valid-only selection, paired tests, per-user metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recbole.utils import init_seed
from scipy import stats

import run_compare
from recbole_fitmm import compare as compare_module
from recbole_fitmm.checkpoint import find_resumable, read_checkpoint
from recbole_fitmm.compare import assemble, compare, model_config
from recbole_fitmm.compare_report import per_seed_rows, render_csv, render_markdown
from recbole_fitmm.compare_table import (
    PAIRED_TESTS,
    PerUser,
    RunRecord,
    load_run,
    paired_pvalue,
    save_run,
    seed_averaged,
    summarise,
    summarise_by_activity,
)
from recbole_fitmm.config import Config
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.per_user import evaluate_checkpoint, per_user_metrics
from recbole_fitmm.quick_start import create_dataset, data_preparation, run_recbole_fitmm
from recbole_fitmm.registry import get_model
from recbole_fitmm.resumable import CheckpointMixin
from recbole_fitmm.stats import holm
from recbole_fitmm.trainer import get_trainer
from tests.conftest import toy_config

TEST_KEYS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def _record(model: str, seed: int, valid: float, test: float, users, values) -> RunRecord:
    per_user = PerUser(np.asarray(users), {"recall@20": np.asarray(values, dtype=float)})
    return RunRecord(model, seed, {"recall@20": valid}, {k: test for k in TEST_KEYS}, 1.0, per_user)


def test_two_models_two_seeds_give_a_full_table(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    config = toy_config(toy_root, epochs=1)
    result = compare(["BPR", "VBPR"], "toy", [999, 1], config_dict=config, out_dir=out)
    rows = result.rows
    assert [row["model"] for row in rows] == ["BPR", "VBPR"]
    assert sum(row["best"] for row in rows) == 1
    best = max(rows, key=lambda row: row["valid_recall@20_mean"])
    assert best["best"] and best["p_value"] is None
    (other,) = [row for row in rows if not row["best"]]
    assert other["p_value"] is not None  # its value is tested against known answers in test_stats
    for row in rows:
        assert row["n_seeds"] == 2
        for key in ["valid_recall@20", *(f"test_{k}" for k in TEST_KEYS), "train_seconds"]:
            assert np.isfinite(row[f"{key}_mean"]) and row[f"{key}_std"] >= 0
    with open(out / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [line["model"] for line in summary] == ["BPR", "VBPR"]
    with open(out / "per_seed.csv") as handle:
        per_seed = list(csv.DictReader(handle))
    assert [(line["model"], line["seed"]) for line in per_seed] == [
        ("BPR", "999"),
        ("BPR", "1"),
        ("VBPR", "999"),
        ("VBPR", "1"),
    ]
    main, activity = (out / "summary.md").read_text().split("**By user activity**")
    table = [line for line in main.splitlines() if line[:2] == "| "]
    assert len(table) == 3 and all(line.count("±") == 5 for line in table[1:])
    # users per activity group, counted from the split files themselves
    train = pd.read_csv(toy_root / "toy" / "toy.train.inter", sep="\t", dtype=str)
    test = pd.read_csv(toy_root / "toy" / "toy.test.inter", sep="\t", dtype=str)
    counts = train.iloc[:, 0].value_counts()
    tested = counts[counts.index.isin(test.iloc[:, 0])].to_numpy()
    expected = [
        int(((tested > low) & (tested <= high)).sum())
        for low, high in ((0, 5), (5, 10), (10, 20), (20, np.inf))
    ]
    with open(out / "summary_by_activity.csv") as handle:
        groups = [row for row in csv.DictReader(handle) if row["model"] == "BPR"]
    got = [int(row["n_users"]) for row in groups]
    assert [n for n in expected if n] == got and "training interactions" in activity
    # other groups from the command line (median split of the tested users' counts)
    middle = int(np.median(tested))
    assert (
        run_compare.main(
            ["--models", "BPR", "--dataset", "toy", "--from_runs", str(out), "--out"]
            + [str(tmp_path / "bins"), "--activity_bins", str(middle)]
        )
        == 0
    )
    with open(tmp_path / "bins" / "summary_by_activity.csv") as handle:
        got = [int(row["n_users"]) for row in csv.DictReader(handle)]
    assert got == [int((tested <= middle).sum()), int((tested > middle).sum())]
    arrays = np.load(out / "per_user_recall@20.npz", allow_pickle=False)
    assert set(arrays.files) == {"users", "BPR", "VBPR"}
    assert arrays["BPR"].shape == arrays["users"].shape
    assert not list((out / "checkpoints").glob("*.pth"))  # removed unless kept
    # A second comparison with the same settings reuses every stored run.
    monkeypatch.setattr(compare_module, "run_one", lambda *a, **k: pytest.fail("retrained"))
    again = compare(["BPR", "VBPR"], "toy", [999, 1], config_dict=config, out_dir=out)
    assert [row["p_value"] for row in again.rows] == [row["p_value"] for row in rows]
    # The table can be rebuilt from stored runs, in any model order, from several folders.
    rebuilt = assemble(["VBPR", "BPR"], "toy", [out], tmp_path / "table")
    assert [row["model"] for row in rebuilt.rows] == ["VBPR", "BPR"]
    assert {r["model"]: r["p_value"] for r in rebuilt.rows} == {
        r["model"]: r["p_value"] for r in rows
    }
    split = tmp_path / "split"
    (split / "runs").mkdir(parents=True)
    for suffix in (".json", ".npz"):  # VBPR seed 1 lives elsewhere, BPR seed 1 is dropped
        (out / "runs" / f"VBPR-seed1{suffix}").rename(split / "runs" / f"VBPR-seed1{suffix}")
        (out / "runs" / f"BPR-seed1{suffix}").unlink()
    mixed = assemble(["BPR", "VBPR"], "toy", [out, split], tmp_path / "table2")
    assert [row["n_seeds"] for row in mixed.rows] == [1, 2]
    assert "BPR 999; VBPR 1, 999" in mixed.markdown
    with pytest.raises(ConfigError, match="both"):
        assemble(["VBPR"], "toy", [split, split], tmp_path / "table3")
    with pytest.raises(ConfigError, match="no stored runs"):
        assemble(["BPR", "LightGCN"], "toy", [out], tmp_path / "table4")
    # LABEL=DIR: the same model's runs from another folder enter under their own name.
    labelled = assemble(["VBPR", "again"], "toy", [split, f"again={split}"], tmp_path / "t5")
    by_model = {row["model"]: row for row in labelled.rows}
    stored = json.loads((split / "runs" / "VBPR-seed1.json").read_text())["test"]["recall@20"]
    assert by_model["again"]["test_recall@20_mean"] == pytest.approx(stored)
    assert by_model["VBPR"]["test_recall@20_mean"] == pytest.approx(stored)
    with pytest.raises(ConfigError, match="one model"):
        assemble(["x"], "toy", [f"x={out}"], tmp_path / "t6")


def test_cli_runs_one_model(toy_root: Path, tmp_path: Path, capsys) -> None:
    overrides = [
        f"--data_path={toy_root}",
        "--benchmark_filename=[train,valid,test]",
        "--modalities=[image,text]",
        "--gpu_id=''",
        "--state=ERROR",
        "--epochs=1",
        "--eval_batch_size=1048576",
    ]
    code = run_compare.main(
        ["--models", "BPR", "--dataset", "toy", "--seeds", "5", "--out", str(tmp_path / "o")]
        + overrides
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "**BPR** (best)" in printed and "| — |" in printed
    assert "±" not in printed  # no spread from a single seed
    assert (tmp_path / "o" / "summary.md").is_file()


def test_cli_rejects_bad_arguments(capsys) -> None:
    assert run_compare.main(["--models", "BPR", "--dataset", "toy", "--seeds", "a,b"]) == 2
    assert run_compare.main(["--models", "BPR", "--dataset", "toy", "stray"]) == 2
    assert "error:" in capsys.readouterr().err


def test_protocol_is_checked_before_training(toy_root: Path, tmp_path: Path) -> None:
    config = toy_config(toy_root, valid_metric="NDCG@10")
    with pytest.raises(ConfigError, match="recall@20"):
        compare(["BPR"], "toy", [1], config_dict=config, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="topk"):
        compare(["BPR"], "toy", [1], config_dict=toy_config(toy_root, topk=[5]), out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_best_is_chosen_on_valid_never_on_test() -> None:
    users = ["1", "2", "3", "4"]
    records = [
        _record("A", 1, valid=0.30, test=0.10, users=users, values=[0.1, 0.2, 0.0, 0.1]),
        _record("B", 1, valid=0.20, test=0.50, users=users, values=[0.5, 0.6, 0.4, 0.3]),
    ]
    rows = summarise(records)
    assert [row["best"] for row in rows] == [True, False]
    assert rows[0]["p_value"] is None
    assert rows[1]["p_value"] is None  # one seed each: the seed variance cannot be estimated
    assert "| n/a | n/a |" in render_markdown(rows, {})
    assert summarise(records, "ttest")[1]["p_value"] < 0.05


def test_users_are_aligned_by_id_and_averaged_over_seeds() -> None:
    records = [
        _record("A", 1, 0.1, 0.1, users=["1", "2", "3"], values=[1.0, 2.0, 3.0]),
        _record("A", 2, 0.1, 0.1, users=["3", "1", "2"], values=[5.0, 3.0, 4.0]),
        _record("B", 1, 0.1, 0.1, users=["2", "3", "1"], values=[7.0, 8.0, 9.0]),
    ]
    users, averaged = seed_averaged(records)
    assert users.tolist() == ["1", "2", "3"]
    assert averaged["A"].tolist() == [2.0, 3.0, 4.0]
    assert averaged["B"].tolist() == [9.0, 7.0, 8.0]


def test_paired_pvalue() -> None:
    rng = np.random.default_rng(0)
    users = rng.random(200)
    base = users + 0.01 * rng.standard_normal((3, 200))  # three seeds
    for method in PAIRED_TESTS:
        assert paired_pvalue(base, base, method) == 1.0
    better = users + 0.1 + 0.01 * rng.standard_normal((3, 200))
    for method in PAIRED_TESTS:
        assert paired_pvalue(better, base, method) < 1e-6
    assert paired_pvalue(better[0], base[0]) is None  # one seed each
    for method in ("wilcoxon", "ttest"):  # user-level tests of the seed averages
        assert paired_pvalue(better[0], base[0], method) < 1e-6
    with pytest.raises(ConfigError):
        paired_pvalue(base, base, "sign")


def _run(model, seed, users, recall, ndcg=None, counts=None, valid=0.1, diverged=None):
    """A run with per-user Recall@20 (and NDCG@20, training counts); ``recall=None``: a run
    that diverged before any validation."""
    if recall is None:
        empty = PerUser(np.empty(0, dtype=str), {})
        return RunRecord(model, seed, {}, {}, 2.0, empty, diverged=diverged or {"epoch": 0})
    values = {"recall@20": np.asarray(recall, float)}
    if ndcg is not None:
        values["ndcg@20"] = np.asarray(ndcg, float)
    per_user = PerUser(np.asarray(users), values, None if counts is None else np.asarray(counts))
    test = {k: float(np.mean(recall)) for k in TEST_KEYS}
    return RunRecord(model, seed, {"recall@20": valid}, test, 1.0, per_user, diverged=diverged)


def test_diverged_runs_are_counted_and_left_out() -> None:
    users = [str(u) for u in range(30)]
    rng = np.random.default_rng(1)
    records = [
        _run("A", 1, users, rng.random(30), valid=0.3),
        _run("A", 2, users, rng.random(30), valid=0.3),
        _run("A", 3, users, None),  # diverged before any validation
        _run("B", 1, users, None),  # B has no usable run
        _run("C", 1, users, rng.random(30) * 0.5),
        _run("C", 2, users, rng.random(30) * 0.5, diverged={"epoch": 4}),  # tested, diverged
    ]
    rows = summarise(records)
    assert [(r["n_seeds"], r["n_diverged"]) for r in rows] == [(2, 1), (0, 1), (2, 1)]
    assert rows[0]["best"] and rows[1]["test_recall@20_mean"] is None
    assert rows[1]["p_value"] is None and rows[2]["p_value"] < 0.05
    assert rows[2]["p_holm"] == rows[2]["p_value"]  # one comparison
    markdown = render_markdown(rows, {"dataset": "toy"})
    (line_b,) = [line for line in markdown.splitlines() if line.startswith("| B |")]
    assert line_b.count("diverged") == 6  # seeds cell and the five metrics
    assert "| 2 (1 diverged) |" in markdown
    assert "Holm-adjusted over 1 comparison" in markdown
    summary = list(csv.DictReader(render_csv(rows).splitlines()))
    assert [line["n_seeds"] for line in summary] == ["2", "0", "2"]
    assert [row["diverged"] for row in per_seed_rows(records)] == [
        False,
        False,
        True,
        True,
        False,
        True,
    ]
    assert set(seed_averaged(records)[1]) == {"A", "C"}


def test_holm_over_the_comparisons_with_the_best() -> None:
    users = [str(u) for u in range(400)]
    rng = np.random.default_rng(2)
    base = rng.random(400)
    records = [
        _run(model, seed, users, base + shift + 0.002 * rng.standard_normal(400), valid=valid)
        for model, shift, valid in (("A", 0.0, 0.3), ("B", -0.01, 0.2), ("C", -0.002, 0.1))
        for seed in (1, 2, 3)
    ]
    rows = summarise(records)
    raw = [row["p_value"] for row in rows]
    assert raw[0] is None and 0 < raw[1] < raw[2]
    assert [row["p_holm"] for row in rows] == [None, 2 * raw[1], max(2 * raw[1], raw[2])]
    assert {row["test"] for row in rows} == {"twolevel"}
    markdown = render_markdown(rows, {})
    assert "two-level" in markdown and "Holm-adjusted over 2 comparisons" in markdown
    assert "| p vs best | p (Holm) |" in markdown


def test_seed_sets_may_differ_between_models() -> None:
    users = [str(u) for u in range(300)]
    rng = np.random.default_rng(3)
    a = rng.random((2, 300)) + 0.05
    b = rng.random((3, 300))
    records = [_run("A", seed, users, a[i], valid=0.3) for i, seed in enumerate((7, 8))]
    records += [_run("B", seed, users, b[i]) for i, seed in enumerate((1, 2, 3))]
    rows = summarise(records)
    assert rows[1]["p_value"] == pytest.approx(paired_pvalue(a, b), rel=1e-12)  # not refused
    # Seed averages are compared user by user only over the same seeds: none in common here ...
    with pytest.raises(ConfigError, match="no seed is common"):
        summarise(records, "wilcoxon")
    # ... and with seed 1 of A added, only seed 1 of each model enters the test.
    extra = rng.random(300) + 0.05
    records.append(_run("A", 1, users, extra, valid=0.3))
    expected = stats.ttest_rel(extra, b[0]).pvalue
    assert summarise(records, "ttest")[1]["p_value"] == pytest.approx(expected, rel=1e-9)


def test_activity_table() -> None:
    users = ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    counts = [1, 5, 7, 12, 30, 8, 40]  # groups <= 5: u1 u2; 6-10: u3 u6; 11-20: u4; > 20: u5 u7
    recall = {"A": [[1.0, 0.5, 0.0, 1.0, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 1.0]]}
    recall["B"] = [[0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5]]
    records = [
        _run(m, s, users, recall[m][s], np.asarray(recall[m][s]) / 2, counts, valid=v)
        for m, v in (("A", 0.3), ("B", 0.2))
        for s in (0, 1)
    ]
    rows = summarise_by_activity(records)
    assert [row["group"] for row in rows] == [
        "<= 5",
        "<= 5",
        "6-10",
        "6-10",
        "11-20",
        "11-20",
        "> 20",
        "> 20",
    ]
    assert [row["n_users"] for row in rows[::2]] == [2, 2, 1, 2]
    a_low, b_low = rows[0], rows[1]
    assert a_low["test_recall@20_mean"] == pytest.approx((1.0 + 0.5 + 0.5 + 0.5) / 4)
    assert b_low["test_ndcg@20_mean"] == pytest.approx((0.0 + 0.5 + 0.0 + 0.0) / 8)
    assert a_low["p_value"] is None and a_low["best"]
    members = [0, 1]
    a = np.asarray(recall["A"])[:, members]
    b = np.asarray(recall["B"])[:, members]
    assert b_low["p_value"] == paired_pvalue(a, b)
    assert rows[5]["p_value"] is None  # one user in 11-20
    assert [row["p_holm"] for row in rows] == holm([row["p_value"] for row in rows])  # all groups
    text = render_csv(rows)
    assert text.splitlines()[0].startswith("group,min_train,max_train,n_users,model")
    assert len(text.splitlines()) == 9
    markdown = render_markdown(summarise(records), {}, rows)
    assert "By user activity" in markdown and "| > 20 | 2 |" in markdown
    custom = summarise_by_activity(records, bins=(10,))
    assert [row["n_users"] for row in custom[::2]] == [4, 3]
    with pytest.raises(ConfigError, match="bins"):
        summarise_by_activity(records, bins=(10, 10))
    for record in records:  # runs stored before training counts were recorded
        record.per_user.train_counts = None
    assert summarise_by_activity(records) == []
    assert "By user activity" not in render_markdown(summarise(records), {}, [])


def test_stored_runs_keep_training_counts(tmp_path: Path) -> None:
    record = _run("A", 3, ["1", "2"], [0.5, 1.0], [0.2, 0.4], counts=[4, 9])
    save_run(tmp_path, record, "sig")
    loaded = load_run(tmp_path, "A", 3, "sig")
    assert loaded.per_user.train_counts.tolist() == [4, 9]
    assert set(loaded.per_user.values) == {"recall@20", "ndcg@20"}
    np.savez(tmp_path / "A-seed3.npz", users=["1", "2"], **{"recall@20": [0.5, 1.0]})  # old file
    assert load_run(tmp_path, "A", 3, "sig").per_user.train_counts is None


def test_per_user_metrics_reproduce_the_trainer(toy_root: Path) -> None:
    config = Config("LightGCN", "toy", config_dict=toy_config(toy_root, epochs=1))
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "LightGCN")(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    expected = trainer.evaluate(test_data, load_best_model=False)
    got = per_user_metrics(trainer, test_data)
    assert len(got.users) == len(set(got.users.tolist())) == len(test_data.uid_list)
    for key in TEST_KEYS:
        assert round(float(got.values[key].mean()), 4) == pytest.approx(expected[key], abs=1e-4)


def test_checkpoint_reevaluation_rebuilds_the_training_graph(toy_root: Path) -> None:
    config = toy_config(toy_root, epochs=2, checkpoint_dir="saved")
    result = run_recbole_fitmm("FREEDOM", "toy", config_dict=config)
    test, per_user = evaluate_checkpoint(result["config"], result["checkpoint"])
    assert test == result["test_result"]
    assert round(float(per_user.values["recall@20"].mean()), 4) == test["recall@20"]


def test_model_scoped_overrides() -> None:
    values = {"epochs": 5, "VBPR:reg_weight": 0.1, "BPR:epochs": 7}
    assert model_config(values, "VBPR", ["BPR", "VBPR"]) == {"epochs": 5, "reg_weight": 0.1}
    assert model_config(values, "BPR", ["BPR", "VBPR"]) == {"epochs": 7}
    with pytest.raises(ConfigError, match="LGMRec"):
        model_config({"LGMRec:alpha": 0.1}, "BPR", ["BPR"])


def test_stored_runs_need_the_same_signature(tmp_path: Path) -> None:
    record = _record("A", 3, 0.2, 0.3, users=["1", "2"], values=[0.5, 1.0])
    save_run(tmp_path, record, "sig")
    loaded = load_run(tmp_path, "A", 3, "sig")
    assert loaded is not None and loaded.test == record.test
    assert loaded.per_user.users.tolist() == ["1", "2"]
    assert loaded.per_user.values["recall@20"].tolist() == [0.5, 1.0]
    assert load_run(tmp_path, "A", 3, "other") is None
    assert load_run(tmp_path, "A", 4, "sig") is None


def test_a_run_interrupted_in_training_resumes_from_its_last_checkpoint(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = toy_config(toy_root, epochs=4, stopping_step=10, train_batch_size=256)
    whole = compare(["BPR"], "toy", [7], config_dict=config, out_dir=tmp_path / "whole")
    out = tmp_path / "cut"
    original = CheckpointMixin._train_epoch

    def killed_at_epoch_2(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 2:
            raise KeyboardInterrupt
        return original(self, train_data, epoch_idx, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(CheckpointMixin, "_train_epoch", killed_at_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            compare(["BPR"], "toy", [7], config_dict=config, out_dir=out)
    (last,) = (out / "checkpoints").glob("*.last.pth")
    assert read_checkpoint(last)["epoch"] == 1 and read_checkpoint(last)["train_seconds"] > 0
    values = {**config, "checkpoint_dir": str(out / "checkpoints")}
    for changes, expected in (({}, last), ({"seed": 8}, None), ({"epochs": 5}, None)):
        run = Config("BPR", "toy", None, {**values, "seed": 7, **changes})
        assert find_resumable(run, dataset_fingerprint(run)) == expected

    seen = []
    run_one = compare_module.run_one
    monkeypatch.setattr(
        compare_module, "run_one", lambda *a, **k: seen.append(a[-1]) or run_one(*a, **k)
    )
    resumed = compare(["BPR"], "toy", [7], config_dict=config, out_dir=out)
    assert seen == [last]
    assert resumed.records[0].test == whole.records[0].test
    assert resumed.records[0].valid == whole.records[0].valid
    assert not list((out / "checkpoints").glob("*.pth"))
