"""The figures: valid PNGs of the declared size, and plotted numbers that come from the model."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_fitmm import explain, plots
from recbole_fitmm.compare_table import PerUser, RunRecord, summarise
from recbole_fitmm.errors import DataError
from recbole_fitmm.inference import load_model
from recbole_fitmm.quick_start import run_recbole_fitmm
from tests.conftest import toy_config
from tests.test_explain import svd_energy_shares

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk of a PNG file (checked to be one)."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert data[-12:] == struct.pack(">I4s", 0, b"IEND") + data[-4:]
    return struct.unpack(">II", data[16:24])


def expected_size(name: str) -> tuple[int, int]:
    width, height = plots.FIGSIZES[name]
    return round(width * plots.DPI), round(height * plots.DPI)


@pytest.fixture(scope="module")
def run(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-epoch FITMM run logged at INFO (a text log too), and the reloaded model."""
    work = tmp_path_factory.mktemp("plots")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setattr(sys, "argv", ["pytest"])
        # RecBole's logging.basicConfig attaches its file log only to a root without handlers
        root_logger = logging.getLogger()
        patch.setattr(root_logger, "handlers", [])
        patch.setattr(root_logger, "level", root_logger.level)
        values = toy_config(toy_root, checkpoint_dir=str(work / "saved"), state="INFO")
        result = run_recbole_fitmm("FITMM", "toy", config_dict=values)
        for handler in root_logger.handlers:
            handler.close()
        _, model, _, train_data, _, _ = load_model(result["checkpoint"], {"state": "ERROR"})
    (log,) = (work / "log" / "FITMM").glob("*.log")
    return {**result, "model": model, "train": train_data.dataset, "log": log, "root": toy_root}


def test_energy_chart_plots_the_svd_energy_of_the_base_views(
    run: dict[str, Any], tmp_path: Path
) -> None:
    model = run["model"]
    plotted = plots.energy_chart(explain.explain_fitmm(model), tmp_path / "energy.png")
    assert png_size(tmp_path / "energy.png") == expected_size("energy")
    with torch.no_grad():
        out = model.forward()
    assert plotted["blocks"] == ["id", "image", "text"]
    for side, view in (("users", out.user_views[0]), ("items", out.item_views[0])):
        expected = svd_energy_shares(view.numpy(), model.n_blocks, 3)
        np.testing.assert_allclose(plotted[side], expected, rtol=1e-9, atol=1e-12)


def test_gate_histograms_split_users_by_their_training_interactions(
    run: dict[str, Any], tmp_path: Path
) -> None:
    model, dataset = run["model"], run["train"]
    plotted = plots.gate_histograms(model, dataset, tmp_path / "gates.png", cold_max=5, bins=8)
    assert png_size(tmp_path / "gates.png") == expected_size("gates")
    with torch.no_grad():
        gates = model.forward().user_gates.double().numpy()
    train = pd.read_csv(run["root"] / "toy" / "toy.train.inter", sep="\t", dtype=str)
    token2id = dataset.field2token_id[dataset.uid_field]
    users = train.drop_duplicates().iloc[:, 0].map(token2id).to_numpy()
    counts = np.bincount(users, minlength=dataset.user_num)[1:]
    cold = counts <= 5
    assert 0 < cold.sum() < len(cold)  # both groups present in the toy data
    np.testing.assert_array_equal(plotted["counts"], counts)
    np.testing.assert_array_equal(plotted["cold"], cold)
    np.testing.assert_allclose(plotted["gates"], gates, rtol=1e-12)
    for k in range(gates.shape[1]):
        span = (gates[:, k].min(), gates[:, k].max())
        for key, rows in (("warm", ~cold), ("cold_hist", cold)):
            hist, edges = np.histogram(gates[rows, k], bins=8, range=span)
            np.testing.assert_allclose(plotted["edges"][k], edges)
            np.testing.assert_allclose(plotted[key][k], hist / rows.sum())
            assert plotted[key][k].sum() == pytest.approx(1.0)


def test_band_weights_are_the_sigmoid_of_the_gate_logits(
    run: dict[str, Any], tmp_path: Path
) -> None:
    model = run["model"]
    logits = {"users": [-2.0, 0.0, 1.5], "items": [0.5, 3.0, -1.0]}
    saved = (
        model.user_gate.band_logits.detach().clone(),
        model.item_gate.band_logits.detach().clone(),
    )
    with torch.no_grad():
        model.user_gate.band_logits.copy_(torch.tensor(logits["users"]))
        model.item_gate.band_logits.copy_(torch.tensor(logits["items"]))
    try:
        plotted = plots.band_weight_chart(model, tmp_path / "bands.png")
    finally:
        with torch.no_grad():
            model.user_gate.band_logits.copy_(saved[0])
            model.item_gate.band_logits.copy_(saved[1])
    assert png_size(tmp_path / "bands.png") == expected_size("band_weights")
    for side, values in logits.items():
        expected = [1.0 / (1.0 + math.exp(-x)) for x in values]
        np.testing.assert_allclose(plotted[side], expected, rtol=1e-12)


def _from_json(path: Path) -> tuple[list[int], list[float], list[float]]:
    history = json.loads(path.read_text())["history"]
    return (
        [e["epoch"] for e in history],
        [float(e["train_loss"]) for e in history],
        [float(e["valid_score"]) for e in history],
    )


def test_training_curve_reads_sidecar_result_log_and_checkpoint(
    run: dict[str, Any], tmp_path: Path
) -> None:
    epochs, losses, scores = _from_json(Path(run["result_file"]))
    assert epochs == [0, 1]
    sidecar = Path(run["last_checkpoint"] + ".json")
    sources = [sidecar, Path(run["result_file"]), run["log"], Path(run["checkpoint"])]
    for i, source in enumerate(sources):
        history, metric = plots.read_history(source)
        assert metric == "Recall@20"
        plotted = plots.training_curve(history, tmp_path / f"curve{i}.png", metric)
        assert png_size(tmp_path / f"curve{i}.png") == expected_size("curve")
        assert plotted["loss_epochs"].tolist() == epochs == plotted["valid_epochs"].tolist()
        exact = source != run["log"]  # the log rounds: loss to 4, valid_score to 6 decimals
        np.testing.assert_allclose(plotted["train_loss"], losses, atol=0 if exact else 5e-5)
        np.testing.assert_allclose(plotted["valid_score"], scores, atol=0 if exact else 5e-7)
    log_history, _ = plots.read_history(run["log"])
    json_history = json.loads(sidecar.read_text())["history"]
    for from_log, from_json in zip(log_history, json_history):
        assert from_log["valid"] == pytest.approx(from_json["valid"], abs=5e-5)


def test_log_parser_reads_loss_tuples_sparse_validation_colours_and_restarts() -> None:
    text = "\n".join(
        [
            "valid_metric = NDCG@10",
            "INFO  \x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 1.00s, "
            "\x1b[1;34mtrain_loss1\x1b[0m: 0.5000, \x1b[1;34mtrain_loss2\x1b[0m: 0.2500]",
            "INFO  epoch 1 training [time: 1.00s, train_loss1: 0.4000, train_loss2: 0.2000]",
            "INFO  epoch 1 evaluating [time: 0.10s, valid_score: 0.012300]",
            "INFO  valid result: ",
            "recall@10 : 0.02    ndcg@10 : 0.0123",
            "INFO  epoch 1 training [time: 1.00s, train_loss1: 0.3000, train_loss2: nan]",
        ]
    )
    history, metric = plots._log_history(text)
    assert metric == "NDCG@10"
    assert [e["epoch"] for e in history] == [0, 1]
    assert history[0] == {"epoch": 0, "train_loss": 0.75}
    assert math.isnan(history[1]["train_loss"])  # the restarted epoch 1 wins
    assert history[1]["valid_score"] == 0.0123
    assert history[1]["valid"] == {"recall@10": 0.02, "ndcg@10": 0.0123}


def test_curve_of_a_diverged_run_and_a_malformed_history(tmp_path: Path) -> None:
    history = [
        {"epoch": 0, "train_loss": 2.0, "valid_score": 0.1},
        {"epoch": 1, "train_loss": "nan", "valid_score": None},  # strict JSON's non-finite
    ]
    plotted = plots.training_curve(history, tmp_path / "c.png")
    assert plotted["loss_epochs"].tolist() == [0, 1] and plotted["valid_epochs"].tolist() == [0]
    assert plotted["train_loss"][0] == 2.0 and math.isnan(plotted["train_loss"][1])
    bad = tmp_path / "bad.json"
    bad.write_text('{"history": [{"train_loss": 1.0}]}')
    with pytest.raises(DataError, match="without an epoch"):
        plots.read_history(bad)


def test_curve_command(run: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "c.png"
    assert plots.main(["curve", run["result_file"], "--out", str(out)]) == 0
    assert png_size(out) == expected_size("curve")
    not_a_run = tmp_path / "x.json"
    not_a_run.write_text('{"model": "BPR"}')
    assert plots.main(["curve", str(not_a_run), "--out", str(tmp_path / "d.png")]) == 2
    assert capsys.readouterr().err.startswith("error: no training history")
    quiet_log = tmp_path / "quiet.log"
    quiet_log.write_text("INFO  dataset loaded\n")
    with pytest.raises(DataError, match="no 'epoch N training' lines"):
        plots.read_history(quiet_log)


def _records() -> list[RunRecord]:
    """Three models × three seeds with known test values; the third model diverged."""
    users = np.array(["0", "1", "2"])
    records = []
    for m, (model, base) in enumerate((("BPR", 0.10), ("FITMM", 0.15), ("DRAGON", 0.12))):
        for seed in range(3):
            value = base + 0.01 * seed * (m + 1)
            test = {"recall@10": value / 2, "recall@20": value, "ndcg@10": value / 4}
            test["ndcg@20"] = value / 3
            per_user = PerUser(users, {"recall@20": np.full(3, value)})
            records.append(RunRecord(model, seed, {"recall@20": value}, test, 1.0, per_user))
    return records


def test_comparison_chart_plots_means_and_seed_spread(tmp_path: Path) -> None:
    records = _records()
    rows = summarise(records)
    rows[2] = {**rows[2], "test_recall@20_mean": None, "test_ndcg@20_mean": float("nan")}
    plotted = plots.comparison_chart(rows, tmp_path / "cmp.png")
    assert png_size(tmp_path / "cmp.png") == expected_size("comparison")
    assert plotted["models"] == ["BPR", "FITMM"] and plotted["left_out"] == ["DRAGON"]
    assert plotted["n_seeds"].tolist() == [3, 3]
    for metric in ("recall@20", "ndcg@20"):
        for i, model in enumerate(plotted["models"]):
            values = [r.test[metric] for r in records if r.model == model]
            assert plotted[f"{metric}_mean"][i] == pytest.approx(np.mean(values))
            assert plotted[f"{metric}_std"][i] == pytest.approx(np.std(values, ddof=1))
    empty = plots.comparison_chart(rows[2:], tmp_path / "none.png")
    assert empty["models"] == [] and png_size(tmp_path / "none.png") == expected_size("comparison")


def test_explain_command_writes_every_figure(
    run: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    folder = tmp_path / "figures"
    assert explain.main([run["checkpoint"], "--plots", str(folder), "--cold-max", "3"]) == 0
    names = ["energy", "gates", "band_weights", "curve"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        assert png_size(folder / f"{name}.png") == expected_size(name)
    assert "figures: " in capsys.readouterr().out


def test_drawing_leaves_pyplot_and_the_backend_alone(tmp_path: Path) -> None:
    code = (
        "import sys, matplotlib; backend = lambda: dict.__getitem__(matplotlib.rcParams, "
        "'backend'); before = backend(); from recbole_fitmm import plots; "
        "plots.training_curve([{'epoch': 0, 'train_loss': 1.0, 'valid_score': 0.1}], 'c.png'); "
        "print('matplotlib.pyplot' in sys.modules, backend() == before)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
    assert png_size(tmp_path / "c.png") == expected_size("curve")
