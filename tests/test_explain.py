"""The FITMM report (bands, gates, modality weights) and the explain/recommend command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.config import Config
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.explain import explain_fitmm, main
from recbole_fitmm.model.fitmm import FITMM
from recbole_fitmm.quick_start import create_dataset, data_preparation
from tests.conftest import toy_config


def _model(root: Path) -> tuple[FITMM, object]:
    config = Config("FITMM", "toy", config_dict=toy_config(root))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return FITMM(config, train_data._dataset), train_data


def svd_energy_shares(view: np.ndarray, n_blocks: int, num_bands: int) -> np.ndarray:
    """Energy share per band of each column block, from numpy's SVD: [n_blocks, num_bands].

    Band k holds the k-th of ``num_bands`` contiguous groups of singular values, largest first;
    the ``r = min(rows, d)`` values are split as evenly as possible, earlier groups larger.
    """
    shares = []
    for block in np.split(view.astype(np.float64), n_blocks, axis=1):
        energy = np.linalg.svd(block, compute_uv=False) ** 2  # descending
        shares.append([part.sum() / energy.sum() for part in np.array_split(energy, num_bands)])
    return np.asarray(shares)


def test_report_of_an_initial_model(toy_root: Path) -> None:
    model, _ = _model(toy_root)
    report = explain_fitmm(model)
    assert report["blocks"] == ["id", "image", "text"] and report["num_bands"] == 3
    model.eval()
    with torch.no_grad():
        out = model.forward()
    views = {"users": out.user_views[0].numpy(), "items": out.item_views[0].numpy()}
    for side in ("users", "items"):
        part = report[side]
        expected = svd_energy_shares(views[side], 3, 3)
        np.testing.assert_allclose(part["energy"], expected, rtol=1e-9, atol=1e-12)
        assert part["band_weights"] == pytest.approx([torch.sigmoid(torch.tensor(1.0)).item()] * 3)
        assert part["gate_scale"] == pytest.approx(0.5)
        assert all(1.0 < g < 1.5 for g in part["gate_mean"])  # g = 1 + 0.5 sigmoid(.)
        assert part["shut_off_fraction"] == [0.0, 0.0, 0.0]
    weights = report["user_modality_weights"]["mean"]  # softmax once at init: about 1/3 each
    assert sum(weights) == pytest.approx(1.0) and weights == pytest.approx([1 / 3] * 3, abs=0.02)


def test_negative_gate_scale_shows_as_shut_off_bands(toy_root: Path) -> None:
    model, _ = _model(toy_root)
    with torch.no_grad():
        model.item_gate.gate_scale.fill_(-1.0)
    report = explain_fitmm(model)
    assert report["items"]["shut_off_fraction"] == [1.0, 1.0, 1.0]
    assert report["users"]["shut_off_fraction"] == [0.0, 0.0, 0.0]


def test_per_epoch_diagnostics_describe_the_evaluated_model(toy_root: Path) -> None:
    model, _ = _model(toy_root)
    with torch.no_grad():
        model.item_gate.gate_scale.fill_(-1.0)  # every item band shut off
        model.eval()
        out = model.forward()
    diag = model.diagnostics()
    np.testing.assert_allclose(diag["gate_mean_user"], out.user_gates.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(diag["gate_mean_item"], out.item_gates.mean(0).numpy(), rtol=1e-6)
    assert diag["shut_off_item"] == [1.0, 1.0, 1.0]
    assert diag["shut_off_user"] == [0.0, 0.0, 0.0]  # g = 1 + 0.5 sigmoid(.) > 1
    assert diag["norm_user"] == pytest.approx(float(out.user_e[1:].norm(dim=1).mean()), rel=1e-6)
    assert diag["feature_drift"] == [0.0, 0.0]  # untrained: the tables are their initial values
    assert diag["gate_scale_item"] == pytest.approx(-1.0)


def test_explain_rejects_other_models(toy_root: Path) -> None:
    with pytest.raises(ConfigError, match="FITMM"):
        explain_fitmm(torch.nn.Linear(2, 2))


def test_command_explains_and_recommends(
    toy_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_recbole_fitmm("FITMM", "toy", config_dict=toy_config(toy_root, epochs=1))
    out = tmp_path / "report.json"
    assert main([result["checkpoint"], "--json", str(out), "--recommend", "0,1", "--k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "energy share, image" in printed and "gate scale s" in printed
    lines = [line for line in printed.splitlines() if line.startswith(("user 0:", "user 1:"))]
    assert len(lines) == 2 and all(line.count("(") == 5 for line in lines)
    assert json.loads(out.read_text())["blocks"] == ["id", "image", "text"]
