"""The comparison runner: table shape, valid-only selection, paired tests, per-user metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from recbole.utils import init_seed

import run_compare
from recbole_fitmm import compare as compare_module
from recbole_fitmm.checkpoint import find_resumable, read_checkpoint
from recbole_fitmm.compare import assemble, compare, model_config
from recbole_fitmm.compare_table import (
    PerUser,
    RunRecord,
    load_run,
    paired_pvalue,
    save_run,
    seed_averaged,
    summarise,
)
from recbole_fitmm.config import Config
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.per_user import evaluate_checkpoint, per_user_metrics
from recbole_fitmm.quick_start import create_dataset, data_preparation, run_recbole_fitmm
from recbole_fitmm.registry import get_model
from recbole_fitmm.resumable import CheckpointMixin
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
    assert 0.0 <= other["p_value"] <= 1.0
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
    table = [line for line in (out / "summary.md").read_text().splitlines() if line[:2] == "| "]
    assert len(table) == 3 and all(line.count("±") == 5 for line in table[1:])
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
        _record("B", 1, valid=0.20, test=0.50, users=users, values=[0.5, 0.6, 0.4, 0.5]),
    ]
    rows = summarise(records)
    assert [row["best"] for row in rows] == [True, False]
    assert rows[0]["p_value"] is None and 0 <= rows[1]["p_value"] <= 1


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
    base = rng.random(200)
    assert paired_pvalue(base, base) == 1.0
    assert paired_pvalue(base, base, "ttest") == 1.0
    better = base + 0.1 + 0.01 * rng.random(200)
    for method in ("wilcoxon", "ttest"):
        assert paired_pvalue(better, base, method) < 1e-6
        noise = base + 0.01 * rng.standard_normal(200)
        assert 0.0 <= paired_pvalue(noise, base, method) <= 1.0
    with pytest.raises(ConfigError):
        paired_pvalue(base, base, "sign")


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
