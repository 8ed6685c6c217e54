"""FITMM through RecBole: the contract, the ``fitmm_method.md`` §8 checklist, switches, options."""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from recbole.data.interaction import Interaction

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.config import PROPERTIES, Config
from recbole_fitmm.data.synthetic import SyntheticSpec, generate, write_atomic
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.inference import load_model
from recbole_fitmm.model import layers, spectral
from recbole_fitmm.model.fitmm import FITMM, Bands, FITMMParams, item_graph_weights
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.trainer import FITMMTrainer
from tests.conftest import toy_config
from tests.model_contract import ModelContract
from tests.test_graph_math import brute_force_knn, dense_bipartite
from tests.test_layers import _release_band_loss, _release_cross_modal_loss


class TestFITMMContract(ModelContract):
    model_name = "FITMM"
    # Blocks of 32 (D = 96) instead of 64: every code path of the default configuration, at a
    # third of the cost; the contract's claims do not depend on the width.
    overrides = {"embedding_size": 32, "mlp_hidden_size": 64}


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def base(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """The toy dataset's FITMM config and training dataloader (built once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("fitmm"))
        patch.setattr(sys, "argv", ["pytest"])
        config = Config("FITMM", "toy", config_dict=toy_config(toy_root))
        train_data, _, _ = data_preparation(config, create_dataset(config))
    return config, train_data


def build(base: tuple[Any, Any], dataset: Any = None, seed: int = 0, **overrides: Any) -> FITMM:
    """A fresh FITMM on the toy data with some configuration values replaced."""
    config, train_data = base
    config = copy.copy(config)
    config.final_config_dict = {**config.final_config_dict, **overrides}
    torch.manual_seed(seed)
    return FITMM(config, dataset if dataset is not None else train_data._dataset)


def batch(base: tuple[Any, Any]) -> Any:
    return next(iter(base[1]))


def transplant(source: FITMM, target: FITMM) -> None:
    """Copy every parameter the target has with the same shape."""
    own = target.state_dict()
    target.load_state_dict(
        {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape},
        strict=False,
    )


def dense(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.to_dense()


@pytest.fixture
def default(base: tuple[Any, Any]) -> FITMM:
    return build(base)


def views(model: FITMM) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.base_views()


def small_batch(base: tuple[Any, Any], size: int = 64) -> Any:
    """The first ``size`` training pairs (the reference losses below form B×B matrices)."""
    return batch(base)[:size]


# ---------------------------------------------------------------------------- reference code
#: IB of :func:`set_constant_gates`, by hand. Users: s = 0.5 and sigmoid(b) = (1/2, 3/4, 1/4), so
#: δ = (1/4, 3/8, 1/8), ‖δ‖² = 7/32, Σδ = 3/4; items: s = 0.2, sigmoid(0) = 1/2, δ = 1/10 per band.
#: α = μ = 1, φ⁺ = 0: IB = ‖δ‖² + ‖δ‖·Σδ per side (every row has the same gates).
IB_BY_HAND = (7 / 32 + math.sqrt(7 / 32) * 3 / 4) + (3 / 100 + math.sqrt(3 / 100) * 3 / 10)


def set_constant_gates(model: FITMM) -> None:
    """Gates that do not depend on the row: zero gate weights, chosen biases and scales."""
    with torch.no_grad():
        for gate, bias, scale in (
            (model.user_gate, [0.0, math.log(3.0), -math.log(3.0)], 0.5),
            (model.item_gate, [0.0, 0.0, 0.0], 0.2),
        ):
            gate.linear.weight.zero_()
            gate.linear.bias.copy_(torch.tensor(bias))
            gate.gate_scale.fill_(scale)


def svd_band_rows(
    views: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor, d: int, m: int
) -> torch.Tensor:
    """``Z^(k) = band_k(R) + band_k(H)`` of rows ``ids`` (>= 1) by ``torch.linalg.svd``, [b, M, D].

    ``band_k(X) = U_k S_k V_kᵀ`` of every d-column block, the singular values split into M
    contiguous groups, the first ``r mod M`` groups one larger (r = min(N, d)); float64.
    """
    blocks = []
    for block in range(views[0].shape[1] // d):
        bands = 0
        for view in views:
            x = view[:, block * d : (block + 1) * d].detach().double()
            u, s, vh = torch.linalg.svd(x, full_matrices=False)
            r = s.numel()
            sizes = [r // m + (1 if k < r % m else 0) for k in range(m)]
            parts, start = [], 0
            for size in sizes:
                part = slice(start, start + size)
                parts.append((u[ids - 1, part] * s[part]) @ vh[part])
                start += size
            bands = bands + torch.stack(parts, dim=1)
        blocks.append(bands)
    return torch.cat(blocks, dim=2)


def reference_terms(model: FITMM, data: Any) -> dict[str, float]:
    """The loss terms from the model's representations, computed outside the model.

    ``rec``: BCE (or ``bpr``: BPR) written out in numpy; ``band`` / ``cross_modal``: the release's
    loops (``tests/test_layers.py``) over the full batch (not its unique rows) on bands from
    ``torch.linalg.svd`` (not the model's Gram eigenvectors).
    """
    with torch.no_grad():
        out = model.forward()
    users, pos, neg = (data[key] for key in ("user_id", "item_id", "neg_item_id"))
    user_e, item_e = out.user_e.double().numpy(), out.item_e.double().numpy()
    pos_s = (user_e[users] * item_e[pos]).sum(1)
    neg_s = (user_e[users] * item_e[neg]).sum(1)
    log_sigmoid = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
    bce = -(log_sigmoid(pos_s).sum() + log_sigmoid(-neg_s).sum()) / (2 * len(pos_s))
    bpr = -log_sigmoid(pos_s - neg_s).mean()
    d, m = model.dim, model.params.num_freq_bands
    user_bands = svd_band_rows(out.user_views, users, d, m).unbind(1)
    item_bands = svd_band_rows(out.item_views, pos, d, m).unbind(1)
    tau = model.params.cl_temperature
    return {
        "bce": float(bce),
        "bpr": float(bpr),
        "band": float(_release_band_loss(list(user_bands), list(item_bands), tau)),
        "cross_modal": float(_release_cross_modal_loss(list(user_bands), list(item_bands))),
    }


# ---------------------------------------------------------------------------- configuration
def test_yaml_keys_are_the_params_fields() -> None:
    values = yaml.safe_load((PROPERTIES / "model" / "FITMM.yaml").read_text())
    assert set(values) == {field.name for field in dataclasses.fields(FITMMParams)}


def test_released_defaults(base: tuple[Any, Any]) -> None:
    p = FITMMParams.from_config(base[0])
    assert (p.embedding_size, p.mlp_hidden_size, p.num_layers, p.n_mm_layers, p.knn_k) == (
        64,
        256,
        2,
        1,
        10,
    )
    assert (p.num_freq_bands, p.ib_direction, p.ib_alpha, p.ib_mu, p.ib_phi_plus) == (
        3,
        "Pos",
        1.0,
        1.0,
        0.0,
    )
    assert (p.ib_weight, p.reg_weight, p.mm_image_weight, p.learning_rate) == (1.0, 1e-3, 0.1, 1e-4)
    assert (p.consistency, p.loss_type, p.svd_solver, p.svd_float64) == (
        "band",
        "bce",
        "gram",
        True,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"num_freq_bands": 0},
        {"num_freq_bands": 65},
        {"knn_k": 0},
        {"ib_weight": -1.0},
        {"reg_weight": -0.001},
        {"ib_alpha": -1.0},
        {"ib_direction": "Neg"},
        {"consistency": "contrastive"},
        {"loss_type": "hinge"},
        {"svd_solver": "qr"},
        {"modality_weights": [-1.0, 2.0]},
        {"use_gate": "yes"},
        {"embedding_size": 2.5},
    ],
)
def test_invalid_values_raise(base: tuple[Any, Any], bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        FITMMParams.from_config({**base[0].final_config_dict, **bad})


def test_missing_key_and_wrong_weight_count_raise(base: tuple[Any, Any]) -> None:
    values = dict(base[0].final_config_dict)
    del values["knn_k"]
    with pytest.raises(ConfigError, match="knn_k"):
        FITMMParams.from_config(values)
    with pytest.raises(ConfigError, match="modality_weights"):
        build(base, modality_weights=[1.0, 2.0, 3.0])


def test_modality_weight_rule(base: tuple[Any, Any]) -> None:
    p = FITMMParams.from_config(base[0])
    assert item_graph_weights(p, ["image", "text"]) == pytest.approx([0.1, 0.9])
    assert item_graph_weights(p, ["text"]) == [1.0]
    assert item_graph_weights(p, ["image", "text", "audio"]) == pytest.approx([0.1, 0.45, 0.45])
    assert item_graph_weights(p, ["text", "audio"]) == pytest.approx([0.5, 0.5])
    explicit = dataclasses.replace(p, modality_weights=[1.0, 3.0])
    assert item_graph_weights(explicit, ["image", "text"]) == pytest.approx([0.25, 0.75])


# ---------------------------------------------------------------------------- architecture
def test_shapes_pad_and_trainable_features(default: FITMM) -> None:
    n_users, n_items = default.n_users, default.n_items
    with torch.no_grad():
        user_e, item_e = default.compute_representations()
    assert user_e.shape == (n_users, 192) and item_e.shape == (n_items, 192)  # D = 3 * 64
    assert not user_e[0].any() and not item_e[0].any()
    for table, name in zip(default.feature_tables, default.modalities):
        assert table.requires_grad
        assert torch.equal(table, default.modal_feats[name][1:])
    assert default.preference.shape == (n_users - 1, 192)
    weights = default.user_weights.detach()
    torch.testing.assert_close(weights.sum(1), torch.ones(n_users - 1))  # softmax once at init


def test_item_graph_is_knn_mix_built_once_and_frozen(base: tuple[Any, Any]) -> None:
    model = build(base, learning_rate=0.1)
    mixed = dense(model.item_graph)
    image, text = (brute_force_knn(model.modal_feats[m], 10)[1:, 1:] for m in ("image", "text"))
    np.testing.assert_allclose(mixed.numpy(), 0.1 * image + 0.9 * text, rtol=1e-6, atol=1e-7)
    assert not any("graph" in key or "adj" in key for key in model.state_dict())
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        optimiser.zero_grad()
        model.calculate_loss(batch(base)).backward()
        optimiser.step()
    assert not torch.equal(model.feature_tables[0], model.modal_feats["image"][1:])
    assert torch.equal(dense(model.item_graph), mixed)


def test_stacked_propagation_equals_separate_branches(default: FITMM, base: tuple) -> None:
    r_u, h_u, r_i, h_i = views(default)
    inter = base[1]._dataset.inter_matrix(form="coo")
    n_users = default.n_users - 1
    adj = dense_bipartite(inter.row - 1, inter.col - 1, n_users, default.n_items - 1)
    with torch.no_grad():
        inputs = [default.item_embedding] + [
            enc(t) for enc, t in zip(default.encoders, default.feature_tables)
        ]
        for b, item_in in enumerate(inputs):
            cols = slice(64 * b, 64 * b + 64)
            x0 = F.normalize(torch.cat([default.preference[:, cols], item_in]), dim=1)
            x0 = x0.double().numpy()
            x = x0 + adj @ x0 + adj @ (adj @ x0)  # one branch on its own, dense, layers 0..2
            np.testing.assert_allclose(r_i[:, cols].numpy(), x[n_users:], rtol=1e-4, atol=1e-5)
            expected_u = x[:n_users] * default.user_weights[:, b : b + 1].double().numpy()
            np.testing.assert_allclose(r_u[:, cols].numpy(), expected_u, rtol=1e-4, atol=1e-5)
    assert torch.equal(h_u, default.preference)
    torch.testing.assert_close(h_i, dense(default.item_graph) @ r_i)


def test_unit_gates_and_band_weights_give_dragon_items(default: FITMM) -> None:
    """§2.11: with gates and band weights 1, Σ_k Z_i^(k) = R_i + S_mm R_i."""
    r_u, h_u, r_i, h_i = views(default)
    ones = layers.BandGate(192, 3, gated=False)
    with torch.no_grad():
        ones.band_logits.fill_(float("inf"))  # sigmoid(θ) = 1 exactly
        bases, labels = spectral.band_bases([r_i, h_i], 64, 3)
        split = Bands(bases, labels[0])
        fused, gates = default.fuse(r_i, h_i, split, ones)
        ids = torch.arange(1, default.n_items)
        bands = default.band_rows((r_i, h_i), split, ids)
    expected = r_i + dense(default.item_graph) @ r_i
    assert torch.equal(gates, torch.ones_like(gates))
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bands.sum(1), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("switch", "expected"),
    [
        ({}, lambda ref: ref["bce"] + 0.7 * IB_BY_HAND + 0.3 * ref["band"]),
        ({"ib_weight": 0.0}, lambda ref: ref["bce"] + 0.3 * ref["band"]),
        ({"consistency": "none"}, lambda ref: ref["bce"] + 0.7 * IB_BY_HAND),
        ({"reg_weight": 0.0}, lambda ref: ref["bce"] + 0.7 * IB_BY_HAND),
    ],
)
def test_loss_is_bce_plus_ib_plus_consistency(
    default: FITMM, base: tuple, switch: dict, expected: Any
) -> None:
    """§3: rec + λ_IB·IB + λ_cl·consistency, each term computed outside the model; the
    switches remove exactly their term and leave the forward pass alone."""
    full, model = (build(base, **{"ib_weight": 0.7, "reg_weight": 0.3, **c}) for c in ({}, switch))
    for each in (full, model):
        transplant(default, each)
        set_constant_gates(each)
    with torch.no_grad():
        a, b = full.forward(), model.forward()
    assert torch.equal(a.user_e, b.user_e) and torch.equal(a.item_e, b.item_e)
    data = small_batch(base)
    ref = reference_terms(model, data)
    terms = model.loss_terms(data)
    assert terms["rec"].item() == pytest.approx(ref["bce"], rel=1e-5)
    if model.params.use_gate:
        assert terms["ib"].item() == pytest.approx(IB_BY_HAND, rel=1e-6)
    assert model.calculate_loss(data).item() == pytest.approx(expected(ref), rel=1e-5)
    if not switch:
        assert terms["consistency"].item() == pytest.approx(ref["band"], rel=1e-4)


def test_ib_is_zero_when_gate_scale_not_positive(default: FITMM, base: tuple) -> None:
    with torch.no_grad():
        default.user_gate.gate_scale.fill_(-0.2)
        default.item_gate.gate_scale.fill_(0.0)
    assert default.loss_terms(batch(base))["ib"].item() == 0.0


def test_calculate_loss_drops_the_evaluation_cache(default: FITMM, base: tuple) -> None:
    default.eval()
    default.cached_representations()
    assert default._cache is not None
    default.calculate_loss(batch(base))
    assert default._cache is None


# ---------------------------------------------------------------------------- ablation switches
def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ablation_single_band(default: FITMM, base: tuple) -> None:
    ablated = build(base, num_freq_bands=1)
    transplant(default, ablated)
    for a, b in zip(views(default), views(ablated)):
        _same(a, b)
    r_u, h_u, *_ = views(ablated)
    with torch.no_grad():
        out = ablated.forward()
        coef, _ = ablated.user_gate(r_u)
    assert out.user_bands is None and coef.shape[1] == 1
    _same(out.user_e[1:], coef * (r_u + h_u))
    assert ablated.loss_terms(batch(base))["consistency"].item() == 0.0


def test_ablation_gate_off(default: FITMM, base: tuple) -> None:
    ablated = build(base, use_gate=False)
    transplant(default, ablated)
    assert not any("linear" in k or "gate_scale" in k for k in ablated.state_dict())
    with torch.no_grad():
        default.user_gate.gate_scale.zero_()  # g = 1 in the full model
        default.item_gate.gate_scale.zero_()
        full, off = default.forward(), ablated.forward()
    _same(full.user_e, off.user_e)
    _same(full.item_e, off.item_e)
    data = batch(base)
    terms = ablated.loss_terms(data)
    assert terms["ib"].item() == 0.0
    torch.testing.assert_close(terms["rec"], default.loss_terms(data)["rec"])


def test_ablation_item_graph_off(default: FITMM, base: tuple) -> None:
    ablated = build(base, use_item_graph=False)
    transplant(default, ablated)
    assert ablated.item_graph is None
    r_u, h_u, r_i, h_i = views(ablated)
    assert torch.equal(h_i, r_i)
    for a, b in zip(views(default)[:3], (r_u, h_u, r_i)):
        _same(a, b)
    with torch.no_grad():
        _same(default.forward().user_e, ablated.forward().user_e)
        assert not torch.allclose(default.forward().item_e, ablated.forward().item_e)


# ---------------------------------------------------------------------------- numerical safety
def test_gradients_finite_on_degenerate_inputs(base: tuple) -> None:
    dataset = copy.copy(base[1]._dataset)
    image = dataset.modal_feats["image"].clone()
    image[1:] = image[1]  # every item has the same image
    text = torch.zeros_like(dataset.modal_feats["text"])  # all-zero text features
    text[1:, 0] = torch.arange(1, len(text)) % 3  # rank 1, many duplicates
    dataset.modal_feats = {"image": image, "text": text}
    model = build(base, dataset=dataset)
    with torch.no_grad():
        model.preference[:, :64] = model.preference[0, :64]  # rank-1 user block
        model.item_embedding.zero_()  # all-zero id inputs
    loss = model.calculate_loss(batch(base))
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), name


# ---------------------------------------------------------------------------- options
def test_dual_gate_option(default: FITMM, base: tuple) -> None:
    # tanh(±ln 2) = ±3/5: with s = 1/2 the user gates are 1 + (3/10, -3/10, 0), which the "Pos"
    # gate cannot produce; Dual's IB uses |δ|: ‖δ‖² = 9/50, Σ|δ| = 3/5. Item gates: δ = 0.
    dual = build(base, ib_direction="Dual")
    transplant(default, dual)
    set_constant_gates(dual)
    with torch.no_grad():
        dual.user_gate.linear.bias.copy_(torch.tensor([math.log(2.0), -math.log(2.0), 0.0]))
        dual.item_gate.linear.bias.zero_()
        out = dual.forward()
    torch.testing.assert_close(
        out.user_gates, torch.tensor([[1.3, 0.7, 1.0]]).expand_as(out.user_gates)
    )
    assert torch.equal(out.item_gates, torch.ones_like(out.item_gates))
    ib = dual.loss_terms(small_batch(base))["ib"].item()
    assert ib == pytest.approx(9 / 50 + math.sqrt(9 / 50) * 3 / 5, rel=1e-6)


def test_bpr_and_cross_modal_options(default: FITMM, base: tuple) -> None:
    model = build(base, loss_type="bpr", consistency="cross_modal")
    transplant(default, model)
    assert model.params.cl_temperature == 1.0  # the release's cross-modal loop has τ = 1
    data = small_batch(base)
    terms, ref = model.loss_terms(data), reference_terms(model, data)
    assert terms["rec"].item() == pytest.approx(ref["bpr"], rel=1e-5)
    assert terms["consistency"].item() == pytest.approx(ref["cross_modal"], rel=1e-4)


@pytest.mark.parametrize("option", [{"svd_solver": "svd"}, {"svd_float64": False}])
def test_decomposition_options_give_the_same_forward(
    default: FITMM, base: tuple, option: dict
) -> None:
    other = build(base, **option)
    transplant(default, other)
    with torch.no_grad():
        a, b = default.forward(), other.forward()
    tolerance = 1e-4 if option.get("svd_float64") is False else 1e-5
    torch.testing.assert_close(a.user_e, b.user_e, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(a.item_e, b.item_e, rtol=tolerance, atol=tolerance)


def test_fixed_features_option(default: FITMM, base: tuple) -> None:
    # train_features: False keeps the raw tables out of training only: same forward, no gradient.
    fixed = build(base, train_features=False)
    transplant(default, fixed)
    with torch.no_grad():
        torch.testing.assert_close(fixed.forward().item_e, default.forward().item_e)
    fixed.calculate_loss(batch(base)).backward()
    for table in fixed.feature_tables:
        assert not table.requires_grad and table.grad is None
    assert all(p.grad is not None for p in fixed.encoders.parameters())
    assert set(fixed.state_dict()) == set(default.state_dict())


def test_bfloat16_feature_mlp_option(default: FITMM, base: tuple) -> None:
    # Only the feature MLPs change arithmetic: their outputs move by bf16 rounding (~1e-2
    # relative), stay float32, and the loss and every gradient stay finite and close.
    other = build(base, feature_mlp_dtype="bfloat16")
    transplant(default, other)
    exact, low = default.encode_features(), other.encode_features()
    for a, b in zip(exact, low):
        assert b.dtype == torch.float32
        error = ((a - b).norm() / a.norm()).item()
        assert 0 < error < 3e-2
    data = batch(base)
    for model in (default, other):
        model.zero_grad()
        model.calculate_loss(data).backward()
    torch.testing.assert_close(
        default.calculate_loss(data), other.calculate_loss(data), rtol=2e-2, atol=0
    )
    for (name, p), q in zip(default.named_parameters(), other.parameters()):
        assert q.grad is not None and torch.isfinite(q.grad).all(), name
        assert q.grad.dtype == p.dtype == torch.float32
    with pytest.raises(ConfigError, match="feature_mlp_dtype"):
        build(base, feature_mlp_dtype="float16")


def test_user_graph_option(base: tuple) -> None:
    dataset = copy.copy(base[1]._dataset)
    with pytest.raises(ConfigError, match="user_modality"):
        build(base, use_user_graph=True)
    user_feat = torch.randn(dataset.user_num, 8, generator=torch.Generator().manual_seed(3))
    user_feat[0] = 0.0
    dataset.user_feat = user_feat
    model = build(base, dataset=dataset, use_user_graph=True)
    s_user = brute_force_knn(user_feat, 10)[1:, 1:]
    _, h_u, _, _ = views(model)
    expected = s_user @ model.preference.detach().double().numpy()
    np.testing.assert_allclose(h_u.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_fused_adam_trainer_matches_adam(default: FITMM, base: tuple) -> None:
    twin = copy.deepcopy(default)
    trainer = FITMMTrainer(base[0], default)
    assert trainer.optimizer.defaults["fused"] is True
    assert trainer.optimizer.defaults["lr"] == base[0]["learning_rate"]
    plain = torch.optim.Adam(twin.parameters(), lr=base[0]["learning_rate"])
    data = batch(base)
    for model, optimiser in ((default, trainer.optimizer), (twin, plain)):
        optimiser.zero_grad()
        model.calculate_loss(data).backward()
        optimiser.step()
    for a, b in zip(default.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- other modalities
@pytest.mark.parametrize("modalities", [["text"], ["image", "audio", "text"]])
def test_any_number_of_modalities(tmp_path: Path, modalities: list[str]) -> None:
    spec = SyntheticSpec(
        n_users=90, n_items=70, n_topics=3, modalities={m: 10 for m in modalities}, seed=5
    )
    write_atomic(generate(spec), tmp_path, "multi")
    config = Config("FITMM", "multi", config_dict=toy_config(tmp_path, modalities=modalities))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = FITMM(config, train_data._dataset)
    assert model.modalities == modalities
    with torch.no_grad():
        user_e, item_e = model.compute_representations()
    assert user_e.shape[1] == item_e.shape[1] == 64 * (1 + len(modalities))
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    assert torch.isfinite(loss)
    if len(modalities) == 3:  # image 0.1, the others 0.45 each
        parts = [brute_force_knn(model.modal_feats[m], 10)[1:, 1:] for m in modalities]
        mixed = 0.1 * parts[0] + 0.45 * parts[1] + 0.45 * parts[2]
        np.testing.assert_allclose(dense(model.item_graph).numpy(), mixed, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- end to end
def test_runs_through_the_plugin_runner(toy_root: Path) -> None:
    """One run end to end; its test Recall@20 and NDCG@20 recomputed from the saved model."""
    result = run_recbole_fitmm("FITMM", "toy", config_dict=toy_config(toy_root))
    assert result["model"] == "FITMM"
    _, model, _, train_data, _, test_data = load_model(result["checkpoint"])
    seen = train_data._dataset.inter_matrix(form="csr").toarray()  # test_mask: train_only
    truth = test_data._dataset.inter_matrix(form="csr").toarray() > 0
    users = np.flatnonzero(truth.any(axis=1))
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": torch.from_numpy(users)}))
    scores = scores.view(len(users), -1).double().numpy()
    scores[:, 0] = -np.inf
    scores[seen[users] > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    hits = truth[users[:, None], top]  # [users, 20]
    n_true = truth[users].sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, 22))
    ideal = np.array([discounts[: min(n, 20)].sum() for n in n_true])
    expected = {
        "recall@20": (hits.sum(axis=1) / n_true).mean(),
        "ndcg@20": ((hits * discounts).sum(axis=1) / ideal).mean(),
    }
    for metric, value in expected.items():  # RecBole rounds to 4 decimals
        assert result["test_result"][metric] == pytest.approx(value, abs=5e-5), metric


def test_beats_bpr_when_content_matters(tmp_path: Path) -> None:
    """Items are cold-ish and their features carry the topics: FITMM must beat BPR.

    Both models use learning rate 0.01 (the release's 1e-4 needs hundreds of epochs).
    """
    spec = SyntheticSpec(
        n_users=300,
        n_items=400,
        n_topics=6,
        modalities={"image": 32, "text": 16},
        noise={"image": 0.5, "text": 0.3},
        mean_inter=9,
        min_inter=5,
        seed=11,
    )
    write_atomic(generate(spec), tmp_path, "content")
    common = {
        "epochs": 15,
        "stopping_step": 5,
        "train_batch_size": 256,
        "learning_rate": 0.01,
        "metrics": ["Recall"],
        "topk": [20],
    }
    # FITMM with blocks of 32 (D = 96, a third of the default's cost) against BPR's 64: the
    # narrower model has to win on content alone.
    narrow = {"embedding_size": 32, "mlp_hidden_size": 64}
    recall = {}
    for name, own in (("BPR", {}), ("FITMM", narrow)):
        values = toy_config(tmp_path, **common, **own)
        result = run_recbole_fitmm(name, "content", config_dict=values, saved=False)
        recall[name] = result["test_result"]["recall@20"]
    assert recall["FITMM"] > recall["BPR"] * 1.1, recall
