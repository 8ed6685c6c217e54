"""FITMM's options beyond the release: each changes exactly what it claims; the default is the
release (a fixed-seed run at the released defaults reproduces weights recorded before the options
existed)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.checkpoint import read_checkpoint
from recbole_fitmm.config import Config
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.model import layers, options, spectral
from recbole_fitmm.model.fitmm import FITMM
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.trainer import FITMMTrainer
from tests.conftest import toy_config

DIGEST = Path(__file__).parent / "data" / "fitmm_release_digest.json"


@pytest.fixture(scope="module")
def base(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The toy dataset's FITMM config and training dataloader (built once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("options"))
        patch.setattr(sys, "argv", ["pytest"])
        config = Config("FITMM", "toy", config_dict=toy_config(toy_root))
        train_data, _, _ = data_preparation(config, create_dataset(config))
    return config, train_data


def build(base: tuple[Any, Any], seed: int = 0, **overrides: Any) -> FITMM:
    """A fresh FITMM on the toy data with some configuration values replaced."""
    config, train_data = base
    config = copy.copy(config)
    config.final_config_dict = {**config.final_config_dict, **overrides}
    torch.manual_seed(seed)
    return FITMM(config, train_data._dataset)


def batch(base: tuple[Any, Any]) -> Any:
    return next(iter(base[1]))


# ---------------------------------------------------------------------------- the release path
def test_released_defaults_reproduce_the_weights_before_the_options(toy_root: Path) -> None:
    """Weights after 2 epochs at the released defaults equal those of the code before the
    options (tests/data/fitmm_release_digest.json, made with commit 4f02f4c)."""
    recorded = json.loads(DIGEST.read_text())
    values = toy_config(toy_root, epochs=2, stopping_step=2, train_batch_size=256, seed=3)
    result = run_recbole_fitmm("FITMM", "toy", config_dict=values)
    weights = read_checkpoint(result["last_checkpoint"])["state_dict"]
    assert sorted(weights) == sorted(recorded["digest"])
    # float32 training on another machine (measured on an AMD EPYC against the recorded digests)
    # moves the digests by at most 4e-8 of a tensor's absolute sum and its first value by 2e-7
    # of its mean |w|; a 10 % change of the smallest loss weight (reg_weight
    # 0.001 -> 0.0011) moves them by 4.2e-7 and 3.8e-6, an ib_weight change by 5e-4 and 4e-3.
    for name, (total, absolute, first) in recorded["digest"].items():
        w = weights[name].double()
        scale = max(absolute, 1e-12)
        assert abs(float(w.sum()) - total) <= 2e-7 * scale, name
        assert abs(float(w.abs().sum()) - absolute) <= 2e-7 * scale, name
        assert abs(float(w.flatten()[0]) - first) <= 2e-6 * scale / w.numel(), name
    assert result["test_result"]["recall@20"] == recorded["test_recall@20"]


# ---------------------------------------------------------------------------- feature preprocessing
def test_preprocessing_centres_and_whitens_like_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 3.0  # anisotropic, off-centre
    tensor = torch.tensor(x, dtype=torch.float32)
    assert options.preprocess_features(tensor, "none") is tensor
    centred = options.preprocess_features(tensor, "center").double().numpy()
    np.testing.assert_allclose(centred, x - x.mean(axis=0), atol=1e-5)
    white = options.preprocess_features(tensor, "whiten").double().numpy()
    x32 = tensor.double().numpy()
    c = x32 - x32.mean(axis=0)
    lam, vec = np.linalg.eigh(c.T @ c / (len(c) - 1))
    zca = vec @ np.diag(1 / np.sqrt(lam + options.WHITEN_EPS * lam.max())) @ vec.T
    np.testing.assert_allclose(white, c @ zca, atol=1e-4)
    np.testing.assert_allclose(
        np.cov(white.T), np.eye(6), atol=0.02
    )  # whitened, up to the eps floor


def test_preprocessing_changes_tables_and_item_graph_only(base: tuple) -> None:
    release = build(base)
    centred = build(base, feature_preprocess="center")
    raw = base[1]._dataset.modal_feats["image"][1:]
    np.testing.assert_allclose(
        centred.feature_tables[0].detach().numpy(),
        (raw - raw.mean(dim=0)).numpy(),
        atol=1e-5,
    )
    assert not torch.equal(release.item_graph.to_dense(), centred.item_graph.to_dense())
    assert torch.equal(release.adj.to_dense(), centred.adj.to_dense())
    for name in ("preference", "item_embedding", "user_weights"):  # same initialisation
        assert torch.equal(getattr(release, name), getattr(centred, name))


# ---------------------------------------------------------------------------- band dropout
def test_band_dropout_keeps_band_one_and_the_expectation() -> None:
    coef = torch.full((20_000, 3), 2.0)
    assert options.band_dropout(coef, 0.0) is coef
    torch.manual_seed(0)
    out = options.band_dropout(coef, 0.25)
    assert torch.equal(out[:, 0], coef[:, 0])
    high = out[:, 1:]
    values = sorted(high.unique().tolist())
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(2.0 / 0.75)
    dropped = float((high == 0).double().mean())
    assert abs(dropped - 0.25) < 4 * np.sqrt(0.25 * 0.75 / high.numel())  # binomial, 4 sigma
    assert abs(float(high.mean()) - 2.0) < 0.03


def test_band_dropout_only_in_training(base: tuple) -> None:
    model = build(base, band_dropout=0.5)
    model.eval()
    with torch.no_grad():
        a, b = model.compute_representations(), model.compute_representations()
    assert torch.equal(a[0], b[0])
    release = build(base)
    release.eval()
    with torch.no_grad():
        assert torch.equal(release.compute_representations()[0], a[0])


# ---------------------------------------------------------------------------- personal bands
def test_personal_bands_by_activity_match_the_standardised_log_degree() -> None:
    activity = torch.tensor([1.0, 3.0, 10.0, 40.0])
    module = options.PersonalBands("activity", activity, num_bands=3)
    assert torch.equal(module(), torch.zeros(4, 3))  # starts as the release
    with torch.no_grad():
        module.slopes.copy_(torch.tensor([0.5, -1.0, 2.0]))
    z = np.log1p(activity.numpy())
    z = (z - z.mean()) / z.std(ddof=1)
    np.testing.assert_allclose(module().detach().numpy(), np.outer(z, [0.5, -1.0, 2.0]), rtol=1e-5)


def test_personal_bands_change_user_band_weights_only(base: tuple) -> None:
    model = build(base, personal_bands="user")
    release = build(base)
    model.eval()
    release.eval()
    with torch.no_grad():
        assert torch.allclose(model.forward().user_e, release.forward().user_e)  # zero offsets
        model.personal.offsets[0] = torch.tensor([5.0, -5.0, 0.0])
        changed = model.forward()
        reference = release.forward()
    assert not torch.allclose(changed.user_e[1], reference.user_e[1])
    assert torch.allclose(changed.user_e[2:], reference.user_e[2:])
    assert torch.equal(changed.item_e, reference.item_e)


# ---------------------------------------------------------------------------- gate normalisation
def test_normalised_gate_rescales_each_row_to_mean_one() -> None:
    torch.manual_seed(0)
    plain = layers.BandGate(8, 3)
    normed = layers.BandGate(8, 3, normalise=True)
    normed.load_state_dict(plain.state_dict())
    task = torch.randn(5, 8)
    coef, gates = plain(task)
    coef_n, gates_n = normed(task)
    expected = gates / gates.mean(dim=1, keepdim=True)
    torch.testing.assert_close(gates_n, expected)
    torch.testing.assert_close(gates_n.mean(dim=1), torch.ones(5))
    torch.testing.assert_close(coef_n, torch.sigmoid(plain.band_logits) * expected)


# ---------------------------------------------------------------------------- edge dropout
def test_edge_dropout_samples_the_training_graph_once_per_epoch(base: tuple) -> None:
    model = build(base, edge_dropout=0.4)
    n_edges = model.edge_pairs.shape[1]
    model.train()
    first = model.training_adjacency()
    assert model.training_adjacency() is first
    assert first._nnz() == 2 * int(n_edges * 0.6)
    assert model.adj._nnz() == 2 * n_edges
    model.train()
    assert not torch.equal(first.col_indices(), model.training_adjacency().col_indices())
    model.eval()
    release = build(base)
    release.eval()
    with torch.no_grad():  # evaluation uses the full graph: same as the release, same weights
        assert torch.equal(model.forward().user_e, release.forward().user_e)


# ---------------------------------------------------------------------------- IB warm-up
def test_ib_warmup_scales_the_ib_term_from_zero(base: tuple) -> None:
    data = batch(base)
    warm = build(base, ib_warmup_epochs=4)
    without = build(base, ib_weight=0.0)
    full = build(base)
    losses = {}
    for epoch in (0, 2, 4, 9):
        warm.on_epoch_start(epoch)
        torch.manual_seed(1)
        losses[epoch] = float(warm.calculate_loss(data).detach())
    torch.manual_seed(1)
    assert losses[0] == pytest.approx(float(without.calculate_loss(data).detach()), rel=1e-6)
    torch.manual_seed(1)
    at_full = float(full.calculate_loss(data).detach())
    assert losses[4] == pytest.approx(at_full, rel=1e-6)
    assert losses[9] == pytest.approx(at_full, rel=1e-6)
    assert losses[2] == pytest.approx((losses[0] + at_full) / 2, rel=1e-5)  # linear in between


# ---------------------------------------------------------------------------- feature learning rate
def test_feature_lr_scale_scales_only_the_feature_table_steps(base: tuple) -> None:
    data = batch(base)
    steps = {}
    for scale in (1.0, 0.1):
        model = build(base, feature_lr_scale=scale)
        before = [p.detach().clone() for p in model.parameters()]
        trainer = FITMMTrainer(base[0], model)
        trainer.optimizer.zero_grad()
        model.calculate_loss(data).backward()
        trainer.optimizer.step()
        steps[scale] = [p.detach() - b for p, b in zip(model.parameters(), before)]
    model = build(base)
    is_table = [any(p is t for t in model.feature_tables) for p in model.parameters()]
    for table, full, scaled in zip(is_table, steps[1.0], steps[0.1]):
        if table:  # Adam's first step is lr·g/(|g| + eps): proportional to the learning rate
            # (steps measured as differences of float32 weights: one ulp of the weight, ~1e-7)
            torch.testing.assert_close(scaled, 0.1 * full, rtol=1e-3, atol=3e-7)
            assert float(full.abs().max()) > 1e-5
        else:
            torch.testing.assert_close(scaled, full)
    assert any(is_table) and not all(is_table)


@pytest.mark.parametrize(
    "bad",
    [
        {"band_dropout": 1.0},
        {"edge_dropout": -0.1},
        {"feature_preprocess": "pca"},
        {"personal_bands": "item"},
        {"feature_lr_scale": -1.0},
        {"ib_warmup_epochs": -2},
    ],
)
def test_invalid_option_values_raise(base: tuple, bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        build(base, **bad)


def test_batched_band_split_equals_one_decomposition_per_matrix() -> None:
    """One batched eigh of all Gram matrices gives the bases (and gradients) of separate calls."""
    torch.manual_seed(3)
    views = [torch.randn(n, 24, dtype=torch.float64, requires_grad=True) for n in (40, 40, 30, 30)]
    together, labels = spectral.band_bases(views, 8, 3)
    apart = torch.cat([spectral.band_bases([v], 8, 3)[0] for v in views])
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-12)
    weights = torch.randn_like(together)
    grads_together = torch.autograd.grad((together * weights).sum(), views)
    grads_apart = torch.autograd.grad((apart * weights).sum(), views)
    for a, b in zip(grads_together, grads_apart):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert labels.shape == (4, 8)
