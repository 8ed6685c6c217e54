"""FITMM's RecBole-free building blocks on plain tensors (``fitmm_method.md`` §2.6–§3, §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from recbole_fitmm.model import layers, spectral


def _generic(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A full-rank block with well separated singular values."""
    gen = torch.Generator().manual_seed(seed)
    rank = min(n, d)
    u, _ = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=dtype))
    v, _ = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=dtype))
    sigma = torch.linspace(3.0, 0.1, rank, dtype=dtype)
    return (u * sigma) @ v.T


def _svd_bands(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Reference bands ``U_k diag(s_k) V_kᵀ`` from ``torch.linalg.svd`` (§2.6)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    bands, start = [], 0
    for size in sizes:
        sl = slice(start, start + size)
        bands.append(u[:, sl] @ torch.diag(s[sl]) @ vh[sl])
        start += size
    return torch.stack(bands)


# ---------------------------------------------------------------------- band split
def test_band_sizes() -> None:
    assert spectral.band_sizes(1000, 64, 3) == [22, 21, 21]
    assert spectral.band_sizes(64, 64, 1) == [64]
    assert spectral.band_sizes(10, 64, 3) == [4, 3, 3]  # min(N, d) singular values
    assert spectral.band_sizes(2, 64, 3) == [1, 1, 0]
    with pytest.raises(ValueError):
        spectral.band_sizes(10, 64, 0)


@pytest.mark.parametrize("solver", spectral.SOLVERS)
def test_bands_match_svd_sum_to_block_and_are_orthogonal(solver: str) -> None:
    x = _generic(200, 64)
    bands = spectral.band_split(x, 3, solver=solver)
    assert bands.shape == (3, 200, 64)
    torch.testing.assert_close(bands, _svd_bands(x, [22, 21, 21]), rtol=0, atol=1e-10)
    torch.testing.assert_close(bands.sum(0), x, rtol=0, atol=1e-12)
    for k in range(3):
        for m in range(k + 1, 3):
            # Row-wise orthogonal (|cos| at rounding level) and orthogonal column spaces.
            assert (bands[k] * bands[m]).sum(1).abs().max() < 1e-12
            assert (bands[k].T @ bands[m]).abs().max() < 1e-11
    # Band 1 holds the largest singular values.
    top = torch.linalg.svdvals(bands[0])[:22]
    torch.testing.assert_close(top, torch.linalg.svdvals(x)[:22])


def test_float32_gram_path_matches_float64_svd() -> None:
    x = _generic(500, 64, dtype=torch.float32)
    reference = _svd_bands(x.double(), [22, 21, 21])
    bands = spectral.band_split(x, 3)  # float64 Gram, result in float32
    assert bands.dtype == torch.float32
    assert (bands.double() - reference).abs().max() < 1e-5


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 80), d=st.integers(1, 12), m=st.integers(1, 5), seed=st.integers(0, 99))
def test_bands_always_reconstruct(n: int, d: int, m: int, seed: int) -> None:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    bands = spectral.band_split(x, m)
    torch.testing.assert_close(bands.sum(0), x, rtol=1e-9, atol=1e-9)


def test_blocks_of_different_heights_in_one_call() -> None:
    a = _generic(100, 16, seed=1)  # two 8-column blocks each
    b = torch.randn(6, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bases, labels = spectral.band_bases([a, b], block=8, num_bands=3)
    assert bases.shape == (2, 2, 8, 8)
    assert labels.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2, 3, 3]]
    for x, sizes in ((a, [3, 3, 2]), (b, [2, 2, 2])):
        for blk in range(2):
            y = x[:, 8 * blk : 8 * blk + 8]
            torch.testing.assert_close(
                spectral.band_split(y, 3), _svd_bands(y, sizes), rtol=0, atol=1e-10
            )
    with pytest.raises(ValueError):
        spectral.band_bases([a, b[:, :8]], block=8, num_bands=3)


@pytest.mark.parametrize("solver", spectral.SOLVERS)
def test_fused_bands_and_band_rows(solver: str) -> None:
    base, aux = _generic(40, 24, seed=3), _generic(40, 24, seed=4)
    bases, labels = spectral.band_bases([base, aux], block=8, num_bands=2, solver=solver)
    coef = torch.rand(40, 2, dtype=torch.float64)
    fused = spectral.fused_bands(base, aux, bases, labels[0], coef)
    rows = spectral.band_rows(base, aux, bases, labels[0], 2)  # [40, 2, 24]
    for b in range(3):
        cols = slice(8 * b, 8 * b + 8)
        z = spectral.band_split(base[:, cols], 2) + spectral.band_split(aux[:, cols], 2)
        torch.testing.assert_close(rows[:, :, cols], z.transpose(0, 1))
        torch.testing.assert_close(fused[:, cols], (coef.T.unsqueeze(-1) * z).sum(0))


# ---------------------------------------------------------------------- band gradients
def _weighted_bands(x: torch.Tensor, guard: float = 0.0, solver: str = "gram") -> torch.Tensor:
    """A band-invariant function of the singular vectors: a fused sum of bands."""
    bases, labels = spectral.band_bases([x], x.shape[1], 3, solver=solver, grad_guard=guard)
    coef = torch.tensor([[0.7, 1.3, 0.4]], dtype=x.dtype).expand(x.shape[0], 3)
    return spectral.fused_bands(x, 0.5 * x, bases[[0, 0]], labels[0], coef)


def test_gram_backward_is_exact_gradient() -> None:
    assert torch.autograd.gradcheck(_weighted_bands, (_generic(16, 6, seed=5).requires_grad_(),))
    # Fewer rows than columns: directions beyond the rank belong to no band.
    assert torch.autograd.gradcheck(_weighted_bands, (_generic(4, 6, seed=6).requires_grad_(),))

    def rows(y: torch.Tensor) -> torch.Tensor:
        bases, labels = spectral.band_bases([y], 6, 3, grad_guard=0.0)
        return spectral.band_rows(y, y, bases[[0, 0]], labels[0], 3)

    assert torch.autograd.gradcheck(rows, (_generic(10, 6, seed=7).requires_grad_(),))


def test_gram_backward_equals_svd_backward_on_generic_input() -> None:
    x = _generic(60, 16, seed=7).requires_grad_()
    weight = torch.randn(60, 16, dtype=torch.float64)
    grads = []
    for solver in spectral.SOLVERS:
        (grad,) = torch.autograd.grad((_weighted_bands(x, 1e-8, solver) * weight).sum(), x)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-9)


def _degenerate_blocks() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(8)
    base = torch.randn(50, 16, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(50, 16, generator=gen))
    return {
        "duplicate rows": base[:5].repeat(10, 1),
        "zero rows": torch.cat([base[:20], torch.zeros(30, 16)]),
        "all zero": torch.zeros(50, 16),
        "rank 2": torch.randn(50, 2, generator=gen) @ torch.randn(2, 16, generator=gen),
        "equal singular values": q * 2.0,
        "near-equal singular values": q * (1.0 + 1e-7 * torch.arange(16.0)),
        "fewer rows than columns": base[:4],
    }


@pytest.mark.parametrize("name", list(_degenerate_blocks()))
def test_gradients_finite_on_degenerate_blocks(name: str) -> None:
    x = _degenerate_blocks()[name].requires_grad_()
    bands = spectral.band_split(x, 3)
    torch.testing.assert_close(bands.sum(0), x.detach(), rtol=1e-5, atol=1e-5)
    coef = torch.tensor([0.7, 1.3, 0.4]).view(3, 1, 1)
    loss = (coef * bands).pow(2).sum() + layers.band_consistency_loss(
        bands.transpose(0, 1), bands.transpose(0, 1)
    )
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all(), name


# ---------------------------------------------------------------------- gate and IB
def _gate(direction: str, bias: list[float], scale: float) -> layers.BandGate:
    gate = layers.BandGate(dim=4, num_bands=3, direction=direction)
    with torch.no_grad():
        gate.linear.weight.zero_()
        gate.linear.bias.copy_(torch.tensor(bias))
        gate.gate_scale.fill_(scale)
    return gate


def test_pos_gate_values() -> None:
    coef, gates = _gate("Pos", [0.0, 2.0, -1.0], 0.5)(torch.randn(2, 4))
    expected = 1 + 0.5 * torch.sigmoid(torch.tensor([0.0, 2.0, -1.0]))
    torch.testing.assert_close(gates, expected.expand(2, 3))
    torch.testing.assert_close(coef, torch.sigmoid(torch.tensor(1.0)) * expected.expand(2, 3))


def test_dual_gate_values_and_ablation() -> None:
    _, gates = _gate("Dual", [0.0, 2.0, -1.0], 0.5)(torch.randn(2, 4))
    torch.testing.assert_close(gates[0], 1 + 0.5 * torch.tanh(torch.tensor([0.0, 2.0, -1.0])))
    off = layers.BandGate(dim=4, num_bands=3, gated=False)
    assert [name for name, _ in off.named_parameters()] == ["band_logits"]
    coef, gates = off(torch.randn(5, 4))
    assert torch.equal(gates, torch.ones(5, 3))
    torch.testing.assert_close(coef, torch.full((5, 3), torch.sigmoid(torch.tensor(1.0)).item()))


def test_ib_at_initialisation_is_about_one_half() -> None:
    gates = torch.full((7, 3), 1.25)  # s = 0.5, sigmoid(0) = 0.5: δ = 0.25 per band
    expected = 3 * 0.25**2 + math.sqrt(3 * 0.25**2 + 1e-12) * 0.75
    value = layers.ib_surrogate(gates, "Pos", 1.0, 1.0, 0.0)
    assert value.item() == pytest.approx(expected)


def test_ib_hand_computed_cases() -> None:
    gates = torch.tensor([[1.5, 1.0, 0.8], [1.1, 1.2, 1.0]])
    # Pos: δ = relu(g - 1) = [[.5, 0, 0], [.1, .2, 0]]
    n1, n2 = 0.25, 0.05
    term2 = (math.sqrt(n1) * 0.5 + math.sqrt(n2) * 0.3) / 2
    value = layers.ib_surrogate(gates, "Pos", 2.0, 3.0, 0.0)
    assert value.item() == pytest.approx(2.0 * (n1 + n2) / 2 + 3.0 * term2, rel=1e-6)
    # φ⁺ = 0.15 leaves excesses below it out of term 2.
    term2 = (math.sqrt(n1) * 0.35 + math.sqrt(n2) * 0.05) / 2
    value = layers.ib_surrogate(gates, "Pos", 1.0, 1.0, 0.15)
    assert value.item() == pytest.approx((n1 + n2) / 2 + term2, rel=1e-5)
    # Dual: δ = g - 1 keeps the sign, threshold on |δ|.
    n1 = 0.25 + 0.04
    term2 = (math.sqrt(n1) * 0.7 + math.sqrt(n2) * 0.3) / 2
    value = layers.ib_surrogate(gates, "Dual", 1.0, 1.0, 0.0)
    assert value.item() == pytest.approx((n1 + n2) / 2 + term2, rel=1e-6)


def test_shut_off_fraction_hand_computed() -> None:
    gates = torch.tensor([[1.0, 1.3, 0.8], [1.0 + 5e-7, 1.0, 1.2]])
    # Pos: excess ReLU(g - 1) -> [[0, .3, 0], [5e-7, 0, .2]]; Dual: |g - 1| -> .2 counts too
    assert layers.shut_off_fraction(gates, "Pos").tolist() == [1.0, 0.5, 0.5]
    assert layers.shut_off_fraction(gates, "Dual").tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="direction"):
        layers.shut_off_fraction(gates, "Neg")


def test_ib_zero_when_gate_scale_not_positive() -> None:
    for scale in (0.0, -0.3):
        _, gates = _gate("Pos", [0.3, -2.0, 1.0], scale)(torch.randn(4, 4))
        assert layers.ib_surrogate(gates, "Pos", 1.0, 1.0, 0.0).item() == 0.0


# ---------------------------------------------------------------------- consistency losses
def _release_band_loss(users: list, items: list, tau: float = 1.0) -> torch.Tensor:
    """The release's ``frequency_contrastive_loss``, loop for loop (§3.3)."""
    m, loss = len(users), 0.0
    for k in range(m):
        for j in range(m):
            if k != j:
                for bands in (users, items):
                    cos = F.cosine_similarity(bands[k], bands[j], dim=-1)
                    loss = loss + F.mse_loss(cos, torch.ones_like(cos))
        if k >= m // 2:
            for bands in (users, items):
                loss = loss - F.log_softmax(bands[k] @ bands[k].T / tau, dim=-1).mean()
    return loss / (m * (m - 1))


def _release_cross_modal_loss(users: list, items: list) -> torch.Tensor:
    """The release's ``modality_frequency_contrastive_loss`` (§3.4), three blocks."""
    m, loss = len(users), 0.0
    for k in range(m):
        for bands in (users, items):
            a, b, c = torch.chunk(bands[k], 3, dim=-1)
            for x, y in ((a, b), (a, c), (b, c)):
                cos = F.cosine_similarity(x, y, dim=-1)
                loss = loss + F.mse_loss(cos, torch.ones_like(cos))
            if k >= m // 2:
                loss = loss - F.log_softmax(bands[k] @ bands[k].T, dim=-1).mean()
    return loss / max(1, 6 * m)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_consistency_losses_match_the_release(m: int) -> None:
    gen = torch.Generator().manual_seed(m)
    users, items = torch.randn(16, m, 12, generator=gen), torch.randn(16, m, 12, generator=gen)
    expected = _release_band_loss(list(users.unbind(1)), list(items.unbind(1)), tau=0.7)
    actual = layers.band_consistency_loss(users, items, tau=0.7)
    torch.testing.assert_close(actual, expected)
    expected = _release_cross_modal_loss(list(users.unbind(1)), list(items.unbind(1)))
    torch.testing.assert_close(layers.cross_modal_consistency_loss(users, items, 4), expected)


def test_consistency_losses_on_unique_rows_with_counts() -> None:
    """Passing each distinct row once with its multiplicity gives the full batch's loss."""
    gen = torch.Generator().manual_seed(9)
    users = torch.randn(10, 3, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.randn(7, 3, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    user_ids = torch.randint(0, 10, (40,), generator=gen)
    item_ids = torch.randint(0, 7, (40,), generator=gen)
    for loss in (
        lambda u, i, cu, ci: layers.band_consistency_loss(u, i, 0.5, cu, ci),
        lambda u, i, cu, ci: layers.cross_modal_consistency_loss(
            u, i, 4, 0.5, None if cu is None else (cu, ci)
        ),
    ):
        full = loss(users[user_ids], items[item_ids], None, None)
        grads_full = torch.autograd.grad(full, (users, items))
        uu, cu = torch.unique(user_ids, return_counts=True)
        ui, ci = torch.unique(item_ids, return_counts=True)
        unique = loss(users[uu], items[ui], cu, ci)
        torch.testing.assert_close(unique, full)
        for a, b in zip(torch.autograd.grad(unique, (users, items)), grads_full):
            torch.testing.assert_close(a, b)


def test_band_consistency_single_band_is_zero() -> None:
    assert layers.band_consistency_loss(torch.randn(4, 1, 6), torch.randn(4, 1, 6)).item() == 0.0


# ---------------------------------------------------------------------- the rest
def test_recommendation_losses() -> None:
    pos, neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.3])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  -log sigmoid(-x)
    # BCE: labels 1 for the positives, 0 for the negatives, mean over the 4 scores.
    bce = (softplus(-2.0) + softplus(1.0) + softplus(0.5) + softplus(0.3)) / 4
    assert layers.recommendation_loss(pos, neg, "bce").item() == pytest.approx(bce, rel=1e-6)
    bpr = (softplus(-(2.0 - 0.5)) + softplus(-(-1.0 - 0.3))) / 2
    assert layers.recommendation_loss(pos, neg, "bpr").item() == pytest.approx(bpr, rel=1e-6)
    with pytest.raises(ValueError):
        layers.recommendation_loss(pos, neg, "hinge")


def test_sparse_product_matches_dense() -> None:
    dense = torch.randn(6, 5) * (torch.rand(6, 5) > 0.5)
    matrix, matrix_t = layers.frozen_pair(dense.to_sparse())
    x = torch.randn(5, 3, requires_grad=True)
    out = layers.sparse_product(matrix, matrix_t, x)
    torch.testing.assert_close(out, dense @ x)
    weight = torch.randn(6, 3)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    torch.testing.assert_close(grad, dense.T @ weight)


def test_feature_mlp_is_linear_leaky_relu_linear() -> None:
    """f -> hidden -> d with LeakyReLU(0.01) between (the release's feature MLP), by numpy."""
    mlp = layers.feature_mlp(10, 8, 4)
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    w1, b1, w2, b2 = (p.detach().double().numpy() for p in mlp.parameters())
    assert w1.shape == (8, 10) and w2.shape == (4, 8)
    hidden = x.double().numpy() @ w1.T + b1
    assert (hidden < 0).any() and (hidden > 0).any()  # both sides of the kink are exercised
    expected = np.where(hidden > 0, hidden, 0.01 * hidden) @ w2.T + b2
    np.testing.assert_allclose(mlp(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
