"""FITMM's RecBole-free building blocks besides the band split (``fitmm_method.md`` §2–§3).

* :func:`frozen_pair` / :func:`sparse_product` — products with a frozen CSR graph and its
  precomputed transpose; :func:`autocast_float32` declares custom autograd functions for autocast.
* :func:`pair_scores` / :func:`bpr_loss` — the BPR loss every BPR-trained model uses.
* :func:`feature_mlp` — the two-layer modality encoder (§2.2).
* :class:`BandGate` — the residual task-adaptive gate and the global band weights (§2.8).
* :func:`ib_surrogate` — the frequency-domain IB surrogate on gate excesses (§3.2).
* :func:`band_consistency_loss` (§3.3, released) and :func:`cross_modal_consistency_loss` (§3.4).
* :func:`recommendation_loss` — pointwise BCE (released) or BPR (§3.1).

The SVD band split itself lives in :mod:`recbole_fitmm.model.spectral`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Slope of the LeakyReLU inside the feature MLPs (a code constant of the release).
LEAKY_SLOPE = 0.01
#: ε inside the IB surrogate's square root (release).
IB_EPS = 1e-12
#: Initial value of the learnable gate scale ``s`` and of the band logits ``θ`` (release).
GATE_SCALE_INIT = 0.5
BAND_LOGIT_INIT = 1.0
#: Norm floor of the cosine similarities in the consistency losses (``F.cosine_similarity``'s).
COS_EPS = 1e-8

IB_DIRECTIONS = ("Pos", "Dual")
#: A gate whose excess over 1 is at most this counts as shut off (the IB term's zero point).
SHUT_OFF_TOL = 1e-6
LOSS_TYPES = ("bce", "bpr")


def autocast_float32(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """Declare a custom autograd function for autocast: it runs in float32 on CPU and CUDA.

    Under ``torch.autocast`` (RecBole's ``enable_amp``) floating inputs are cast to float32 and
    the forward runs with autocast off (``torch.amp.custom_fwd``); the backward runs under the
    forward's autocast state (``torch.amp.custom_bwd``). For the sparse products (no bfloat16 CSR
    kernel on CPU), the Gram band split (float64 inside) and LGMRec's sum of exponentials (float16
    overflows past 65504).

    Args:
        function: A ``torch.autograd.Function`` subclass.

    Returns:
        The same class, its ``forward``/``backward`` wrapped for both device types.
    """
    forward, backward = function.forward, function.backward
    for device in ("cpu", "cuda"):
        forward = torch.amp.custom_fwd(forward, device_type=device, cast_inputs=torch.float32)
        backward = torch.amp.custom_bwd(backward, device_type=device)
    function.forward = staticmethod(forward)  # type: ignore[method-assign]
    function.backward = staticmethod(backward)  # type: ignore[method-assign]
    return function


@autocast_float32
class _FrozenProduct(torch.autograd.Function):
    """``A @ x`` for a constant CSR matrix ``A`` whose CSR transpose is known."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, matrix: Tensor, matrix_t: Tensor) -> Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.matrix_t @ grad, None, None


def frozen_pair(matrix: Tensor, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """A frozen sparse matrix and its transpose in CSR layout, for :func:`sparse_product`.

    Converted once (at model construction, or once per epoch for FREEDOM's sampled graph), so no
    forward or backward pass re-converts or re-transposes a graph.

    Args:
        matrix: Sparse COO (or CSR) [n, m].
        symmetric: ``matrix`` equals its transpose; the same tensor is returned twice.

    Returns:
        ``(A, Aᵀ)`` as sparse CSR tensors of shapes [n, m] and [m, n].
    """
    with warnings.catch_warnings():
        # torch marks CSR support as beta on every conversion; the products used here are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        csr = matrix.to_sparse_csr() if matrix.layout != torch.sparse_csr else matrix
        if symmetric:
            return csr, csr
        return csr, matrix.to_sparse_coo().t().coalesce().to_sparse_csr()


def sparse_product(matrix: Tensor, matrix_t: Tensor, x: Tensor) -> Tensor:
    """``A @ x`` with a gradient for ``x`` only, computed as ``Aᵀ @ grad``.

    ``torch.sparse.mm`` on a COO matrix re-transposes and re-sorts ``A`` in every backward (4×
    the forward's time on Baby's graph); here both products run on CSR matrices built once
    (:func:`frozen_pair`). In float32 under autocast (:func:`autocast_float32`).

    Args:
        matrix: Sparse CSR [n, m].
        matrix_t: Its transpose, sparse CSR [m, n].
        x: Dense [m, c].

    Returns:
        Dense [n, c], float32.
    """
    return _FrozenProduct.apply(x, matrix, matrix_t)


def pair_scores(user_e: Tensor, pos_e: Tensor, neg_e: Tensor) -> tuple[Tensor, Tensor]:
    """Dot-product scores of (user, positive) and (user, negative) pairs.

    Args:
        user_e: User vectors [B, d].
        pos_e: Positive item vectors [B, d].
        neg_e: Negative item vectors [B, d].

    Returns:
        ``(pos_scores [B], neg_scores [B])``.
    """
    return (user_e * pos_e).sum(dim=1), (user_e * neg_e).sum(dim=1)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Mean BPR loss ``−log σ(s⁺ − s⁻)`` (natural log) over a batch.

    Args:
        pos_scores: Scores of the positive pairs, [B].
        neg_scores: Scores of the sampled negatives, [B].

    Returns:
        Scalar loss.
    """
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def feature_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The two-layer modality encoder ``Linear(f→h) → LeakyReLU(0.01) → Linear(h→d)`` (§2.2).

    Args:
        in_dim: Raw feature size f.
        hidden: Hidden size (256 = 4d in the release).
        out_dim: Latent size d.

    Returns:
        The MLP, mapping [N, f] to [N, d].
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, out_dim)
    )


class BandGate(nn.Module):
    """Residual task-adaptive gate with global band weights (§2.8), for one side.

    ``g = 1 + s·sigmoid(W t + b)`` ("Pos") or ``1 + s·tanh(W t + b)`` ("Dual"), ``s`` a learnable
    scalar (init 0.5, unconstrained); band weights ``β = sigmoid(θ)``, ``θ`` init 1. The fused
    representation is ``e = Σ_k β_k g_k Z^(k)``; this module returns the per-row coefficients
    ``β_k g_k`` and the gates. With ``gated=False`` (ablation) ``g ≡ 1`` and no gate parameters
    exist. Option (off in the release): ``normalise`` divides each row's gates by their mean
    over the bands, so the gate re-weights the bands of a row without scaling the row.

    Args:
        dim: Size D of the task embedding.
        num_bands: Number of bands M.
        direction: ``Pos`` or ``Dual``.
        gated: Use the gate (else only the band weights).
        normalise: Divide the gates by their row mean.

    Example:
        >>> gate = BandGate(dim=12, num_bands=3)
        >>> coef, gates = gate(torch.randn(5, 12))
        >>> coef.shape, gates.shape
        (torch.Size([5, 3]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        dim: int,
        num_bands: int,
        direction: str = "Pos",
        gated: bool = True,
        normalise: bool = False,
    ) -> None:
        super().__init__()
        if direction not in IB_DIRECTIONS:
            raise ValueError(f"direction must be one of {IB_DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.gated = gated
        self.normalise = normalise
        self.band_logits = nn.Parameter(torch.full((num_bands,), BAND_LOGIT_INIT))
        if gated:
            self.linear = nn.Linear(dim, num_bands)
            self.gate_scale = nn.Parameter(torch.tensor(GATE_SCALE_INIT))

    def forward(self, task: Tensor, offsets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Band coefficients and gates.

        Args:
            task: Task embedding T (the base representation), [N, D].
            offsets: Per-row band-logit offsets [N, M]
                (:class:`~recbole_fitmm.model.options.PersonalBands`), or ``None``.

        Returns:
            ``(coef, gates)``, both [N, M]: ``coef = sigmoid(θ + offsets) * gates``.
        """
        if self.gated:
            logits = self.linear(task)
            act = torch.sigmoid(logits) if self.direction == "Pos" else torch.tanh(logits)
            gates = 1.0 + self.gate_scale * act
            if self.normalise:
                gates = gates / gates.mean(dim=1, keepdim=True)
        else:
            gates = task.new_ones(task.shape[0], self.band_logits.shape[0])
        logits = self.band_logits if offsets is None else self.band_logits + offsets
        return torch.sigmoid(logits) * gates, gates


def ib_surrogate(gates: Tensor, direction: str, alpha: float, mu: float, phi_plus: float) -> Tensor:
    """Frequency-domain IB surrogate of one side (§3.2).

    ``δ = ReLU(g − 1)`` ("Pos") or ``g − 1`` ("Dual", threshold input ``|δ|``);
    ``α·mean‖δ‖² + μ·mean(sqrt(‖δ‖² + 1e-12) · Σ_k ReLU(t_k − φ⁺))``.

    Args:
        gates: Gates g, [N, M].
        direction: ``Pos`` or ``Dual``.
        alpha: Weight α of the L2 term.
        mu: Weight μ of the norm-weighted L1 term.
        phi_plus: Threshold φ⁺ of the L1 term.

    Returns:
        Scalar loss; ≈ 0.5 at initialisation for M = 3, 0 when every excess is 0.
    """
    delta = gates - 1.0
    if direction == "Pos":
        delta = F.relu(delta)
        threshold_input = delta
    elif direction == "Dual":
        threshold_input = delta.abs()
    else:
        raise ValueError(f"direction must be one of {IB_DIRECTIONS}, got {direction!r}")
    norm_sq = (delta * delta).sum(dim=1)
    exceed = F.relu(threshold_input - phi_plus).sum(dim=1)
    return alpha * norm_sq.mean() + mu * (torch.sqrt(norm_sq + IB_EPS) * exceed).mean()


def shut_off_fraction(gates: Tensor, direction: str) -> Tensor:
    """Share of rows per band whose gate the IB term has shut off (§3.2).

    The excess is ``ReLU(g − 1)`` ("Pos") or ``|g − 1|`` ("Dual"), as in :func:`ib_surrogate`;
    a band is shut off for a row when its excess is at most :data:`SHUT_OFF_TOL`.

    Args:
        gates: Gates g, [N, M].
        direction: ``Pos`` or ``Dual``.

    Returns:
        [M] shares in [0, 1] (float64).
    """
    if direction not in IB_DIRECTIONS:
        raise ValueError(f"direction must be one of {IB_DIRECTIONS}, got {direction!r}")
    excess = (gates - 1.0).abs() if direction == "Dual" else (gates - 1.0).clamp_min(0.0)
    return (excess <= SHUT_OFF_TOL).double().mean(dim=0)


def _cosine_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit norm with ``F.cosine_similarity``'s norm floor, same shape."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(COS_EPS)


def _spread(x: Tensor, weights: Tensor, tau: float) -> Tensor:
    """``mean_{b,b'} log_softmax_{b'}(x xᵀ / τ)`` over a batch given as unique rows.

    Row b of ``x`` [B, D] stands for ``weights[b]`` identical batch rows; the value is the
    all-entries mean over that expanded batch of ``W = Σ w`` rows, from a B×B instead of a W×W
    similarity: with ``L = log_softmax(x xᵀ / τ + log w)`` (``log w`` added to every row), it is
    ``wᵀ L w / W² − Σ_b w_b log w_b / W``.
    """
    # log w = 0 for rows that occur once: adding it changes no bit, and no host check is needed.
    log_weights = weights.log()
    logits = x @ x.T / tau + log_weights
    total = weights.sum()
    value = weights @ F.log_softmax(logits, dim=-1) @ weights / total**2
    return value - (weights * log_weights).sum() / total


def _weights(bands: Tensor, counts: Tensor | None) -> Tensor:
    """Row multiplicities as a float vector (ones when ``counts`` is None)."""
    return bands.new_ones(bands.shape[0]) if counts is None else counts.to(bands.dtype)


def _spread_sum(sides: list[tuple[Tensor, Tensor]], tau: float) -> Tensor:
    """Σ over the sides and the bands ``k >= ⌊M/2⌋`` of the all-entries mean log-softmax."""
    return sum(
        _spread(bands[:, k], weights, tau)
        for bands, weights in sides
        for k in range(bands.shape[1] // 2, bands.shape[1])
    )


def _mean_rows(values: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean over dim 0."""
    return torch.tensordot(weights, values, dims=1) / weights.sum()


def band_consistency_loss(
    user_bands: Tensor,
    item_bands: Tensor,
    tau: float = 1.0,
    user_counts: Tensor | None = None,
    item_counts: Tensor | None = None,
) -> Tensor:
    """Band-consistency loss of the release (§3.3).

    For each side: ``Σ_{k≠l} MSE(cos(z_k, z_l), 1)`` over ordered band pairs, minus the
    all-entries mean log-softmax of ``z_k z_kᵀ / τ`` for the bands ``k ≥ ⌊M/2⌋`` (0-based);
    both sides summed and divided by ``M(M−1)``. With a single band there is no pair and the
    normaliser is 0: the loss is defined as 0. A batch may be passed as its unique rows with
    their multiplicities (``*_counts``); the value is that of the full batch.

    Args:
        user_bands: Batch user bands, [B, M, D].
        item_bands: Batch positive-item bands, [B', M, D].
        tau: Temperature τ.
        user_counts: Multiplicity of each user row, [B] (default: 1).
        item_counts: Multiplicity of each item row, [B'] (default: 1).

    Returns:
        Scalar loss.
    """
    num_bands = user_bands.shape[1]
    if num_bands < 2:
        return user_bands.new_zeros(())
    off_diagonal = ~torch.eye(num_bands, dtype=torch.bool, device=user_bands.device)
    sides = [(user_bands, _weights(user_bands, user_counts))]
    sides.append((item_bands, _weights(item_bands, item_counts)))
    total = user_bands.new_zeros(())
    for bands, weights in sides:
        unit = _cosine_rows(bands)
        cos = unit @ unit.mT  # [B, M, M]
        total = total + _mean_rows((cos - 1.0) ** 2, weights)[off_diagonal].sum()
    total = total - _spread_sum(sides, tau)
    return total / (num_bands * (num_bands - 1))


def cross_modal_consistency_loss(
    user_bands: Tensor,
    item_bands: Tensor,
    block: int,
    tau: float = 1.0,
    counts: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Cross-modal spectral consistency (§3.4, the paper's wording; unused by the release).

    Within every band, each pair of modality blocks (id, v, t, ... of ``block`` columns) is pulled
    together, ``MSE(cos(block_a, block_b), 1)``, and for bands ``k ≥ ⌊M/2⌋`` the all-entries mean
    log-softmax of the B×B band similarity is subtracted. Divided by ``2·P·M`` with P the number of
    block pairs (``6M`` for id|v|t, the release's normaliser).

    Args:
        user_bands: Batch user bands, [B, M, D], D = n_blocks · block.
        item_bands: Batch positive-item bands, [B', M, D].
        block: Columns per modality block d.
        tau: Temperature τ.
        counts: Multiplicities of the user rows and of the item rows (default: 1).

    Returns:
        Scalar loss.
    """
    num_bands, width = user_bands.shape[1:]
    n_blocks = width // block
    pairs = torch.triu_indices(n_blocks, n_blocks, offset=1, device=user_bands.device)
    user_counts, item_counts = counts if counts is not None else (None, None)
    sides = [(user_bands, _weights(user_bands, user_counts))]
    sides.append((item_bands, _weights(item_bands, item_counts)))
    total = user_bands.new_zeros(())
    for bands, weights in sides:
        unit = _cosine_rows(bands.reshape(bands.shape[0], num_bands, n_blocks, block))
        cos = unit @ unit.mT  # [B, M, n_blocks, n_blocks]
        total = total + _mean_rows((cos[..., pairs[0], pairs[1]] - 1.0) ** 2, weights).sum()
    total = total - _spread_sum(sides, tau)
    return total / max(1, 2 * pairs.shape[1] * num_bands)


def recommendation_loss(pos_scores: Tensor, neg_scores: Tensor, loss_type: str = "bce") -> Tensor:
    """Recommendation loss on (positive, negative) score pairs (§3.1).

    Args:
        pos_scores: Scores of the positive pairs, [B].
        neg_scores: Scores of the sampled negatives, [B].
        loss_type: ``bce`` — binary cross-entropy with logits, mean over the 2B scores (release);
            ``bpr`` — ``mean(−log σ(s⁺ − s⁻))`` (natural log; the release's unused variant used
            log2, i.e. the same loss times 1/ln 2).

    Returns:
        Scalar loss.
    """
    if loss_type == "bce":
        scores = torch.cat([pos_scores, neg_scores])
        labels = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)])
        return F.binary_cross_entropy_with_logits(scores, labels)
    if loss_type == "bpr":
        return bpr_loss(pos_scores, neg_scores)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
