"""FITMM's spectral ("frequency") band split on plain tensors (``fitmm_method.md`` §2.6–§2.7).

Each d-column block ``X`` (N × d) of a representation is split by its thin SVD
``X = Σ_r σ_r u_r v_rᵀ`` into M contiguous rank groups of the singular triplets (largest first):
``band_k(X) = U_k diag(σ_k) V_kᵀ = X V_k V_kᵀ``. Only the right singular vectors ``V`` are needed,
and a gated sum of bands is two products: ``Σ_k c_k band_k(X) = ((X V) ⊙ c[labels]) Vᵀ``.

Solvers for ``V``:

* ``gram`` (default): eigenvectors of the Gram matrix ``XᵀX`` (d × d) in float64 — as accurate as
  an SVD of X for the bands (``BENCHMARKS.md``) and ~N/d times cheaper. Its backward
  (:class:`_GramBases`) differentiates only what the bands depend on: a band is invariant to
  rotations of the singular vectors inside it, so the within-band pairs are skipped (exact), and the
  cross-band terms ``1 / (λ_i − λ_j)`` (``λ = σ²``) become the Lorentzian ``Δ / (Δ² + ε²)`` with
  ``ε = grad_guard · λ_max``: the exact gradient while the band boundaries are separated by much
  more than ε, finite (zero for an exact tie) where the split itself is discontinuous.
  ``grad_guard = 0`` keeps the exact ``1 / Δ``. This gradient is only valid for functions of V
  that are invariant to within-band rotations, such as the bands themselves (all uses here).
* ``svd``: ``torch.linalg.svd`` of X with autograd, as released. Its backward divides by
  ``σ_i² − σ_j²`` for *every* pair, so repeated singular values (duplicate or zero rows,
  rank-deficient blocks) give inf/NaN gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recbole_fitmm.model.layers import autocast_float32

SOLVERS = ("gram", "svd")


def band_sizes(n_rows: int, dim: int, num_bands: int) -> list[int]:
    """Number of singular triplets in each band.

    The ``r = min(n_rows, dim)`` triplets of an ``n_rows × dim`` block are cut into ``num_bands``
    contiguous groups of ``r // num_bands``; the first ``r % num_bands`` groups get one extra
    (``[22, 21, 21]`` for ``r = 64``, ``M = 3``).

    Args:
        n_rows: Rows N of the block.
        dim: Columns d of the block.
        num_bands: Number of bands M (>= 1).

    Returns:
        M sizes summing to ``min(n_rows, dim)``.
    """
    if num_bands < 1:
        raise ValueError(f"num_bands must be >= 1, got {num_bands}")
    base, extra = divmod(min(n_rows, dim), num_bands)
    return [base + (1 if k < extra else 0) for k in range(num_bands)]


def band_labels(
    n_rows: int, dim: int, num_bands: int, device: torch.device | None = None
) -> Tensor:
    """Band of each singular direction, in decreasing singular-value order.

    Args:
        n_rows: Rows N of the block.
        dim: Columns d of the block.
        num_bands: Number of bands M.
        device: Device of the result.

    Returns:
        Int64 [d]; entries ``M`` mark directions beyond the rank ``min(N, d)`` (in no band).
    """
    sizes = band_sizes(n_rows, dim, num_bands)
    labels = [k for k, size in enumerate(sizes) for _ in range(size)]
    labels += [num_bands] * (dim - len(labels))
    return torch.tensor(labels, dtype=torch.int64, device=device)


@autocast_float32
class _GramBases(torch.autograd.Function):
    """Right singular vectors of m blocks [B, N_i, d] from their Gram matrices (module docstring).

    The m·B Gram matrices are decomposed by one batched ``torch.linalg.eigh`` call.
    """

    @staticmethod
    def forward(ctx: Any, labels: Tensor, guard: float, float64: bool, *blocks: Tensor) -> Tensor:
        work = [block.double() if float64 else block for block in blocks]
        grams = torch.stack([block.mT @ block for block in work])  # [m, B, d, d]
        eigvals, eigvecs = torch.linalg.eigh(grams)
        eigvals, eigvecs = eigvals.flip(-1), eigvecs.flip(-1)  # decreasing
        ctx.save_for_backward(eigvals, eigvecs, labels, *blocks)
        ctx.guard = guard
        return eigvecs.to(blocks[0].dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        eigvals, eigvecs, labels, *blocks = ctx.saved_tensors
        # dV = V (F ∘ Vᵀ dG V) with F_ij = 1 / (λ_j − λ_i): keep cross-band pairs only.
        rotated = eigvecs.mT @ grad.to(eigvecs.dtype)
        gap = eigvals.unsqueeze(-2) - eigvals.unsqueeze(-1)  # [i, j] = λ_j − λ_i
        if ctx.guard > 0:
            eps = ctx.guard * eigvals[..., :1].clamp_min(1e-30).unsqueeze(-1)
            inverse = gap / (gap * gap + eps * eps)
        else:
            inverse = 1.0 / gap
        cross = (labels.unsqueeze(-1) != labels.unsqueeze(-2))[:, None]  # [m, 1, d, d]
        weights = torch.where(cross, inverse * rotated, torch.zeros_like(rotated))
        grad_gram = eigvecs @ weights @ eigvecs.mT
        grad_gram = grad_gram + grad_gram.mT  # d(XᵀX) = dXᵀX + XᵀdX
        grads = tuple(
            block @ grad_gram[i].to(block.dtype) if ctx.needs_input_grad[3 + i] else None
            for i, block in enumerate(blocks)
        )
        return (None, None, None, *grads)


def band_bases(
    matrices: Sequence[Tensor],
    block: int,
    num_bands: int,
    solver: str = "gram",
    float64: bool = True,
    grad_guard: float = 1e-8,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Right singular vectors of every d-column block, and the band of each direction.

    Args:
        matrices: m matrices [N_i, B·d] (row counts may differ, B may not), cut into B blocks.
        block: Columns d per block.
        num_bands: Number of bands M.
        solver: ``gram`` or ``svd`` (module docstring).
        float64: Run the decomposition (Gram matrices included) in float64.
        grad_guard: Relative Lorentzian width of the ``gram`` backward.
        labels: The bands of the directions, [m, d] (:func:`band_labels` of each matrix), when
            the caller keeps them (they depend only on the shapes); computed otherwise.

    Returns:
        ``(V, labels)``: V [m, B, d, d] in the matrices' dtype, column r of ``V[i, b]`` the r-th
        right singular vector of block b of matrix i (zero beyond the rank for ``svd``); labels
        [m, d] (:func:`band_labels`). Only band-invariant functions of V get exact gradients.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if len({x.shape[1] for x in matrices}) != 1 or matrices[0].shape[1] % block:
        raise ValueError(f"matrices need the same number of columns, a multiple of {block}")
    if labels is None:
        labels = torch.stack(
            [band_labels(x.shape[0], block, num_bands, x.device) for x in matrices]
        )
    blocks = [x.reshape(x.shape[0], -1, block).transpose(0, 1) for x in matrices]  # [B, N, d]
    if solver == "gram":
        return _GramBases.apply(labels, grad_guard, float64, *blocks), labels
    bases = []
    for blocks_i in blocks:
        work = blocks_i.double() if float64 else blocks_i
        vh = torch.linalg.svd(work, full_matrices=False)[2]
        bases.append(F.pad(vh.mT, (0, block - vh.shape[-2])).to(blocks_i.dtype))  # [B, d, d]
    return torch.stack(bases), labels


def _band_masks(labels: Tensor, num_bands: int, dtype: torch.dtype) -> Tensor:
    """[M, d] indicator of the directions of each band."""
    return F.one_hot(labels, num_bands + 1)[:, :num_bands].T.to(dtype)


def band_split(x: Tensor, num_bands: int, **options: object) -> Tensor:
    """Split a matrix into rank-ordered SVD bands (§2.6).

    Args:
        x: Embedding block, shape [N, d].
        num_bands: Number of contiguous singular-value groups M.
        **options: ``solver``, ``float64``, ``grad_guard`` of :func:`band_bases`.

    Returns:
        [M, N, d]; band 0 holds the largest singular values and the bands sum to ``x``.
    """
    bases, labels = band_bases([x], x.shape[1], num_bands, **options)  # type: ignore[arg-type]
    vectors = bases[0, 0]
    masks = _band_masks(labels[0], num_bands, x.dtype)  # [M, d]
    return ((x @ vectors).unsqueeze(0) * masks.unsqueeze(1)) @ vectors.T


def fused_bands(base: Tensor, aux: Tensor, bases: Tensor, labels: Tensor, coef: Tensor) -> Tensor:
    """``Σ_k coef_k · (band_k(R_b) + band_k(H_b))`` for every block b and row (§2.7–§2.8).

    Args:
        base: Base view R, [N, B·d].
        aux: Auxiliary view H, [N, B·d].
        bases: ``(V_R, V_H)`` of every block, [2, B, d, d] (:func:`band_bases`).
        labels: Band of each direction, [d] (the same for R and H: same N).
        coef: Per-row band coefficients, [N, M].

    Returns:
        [N, B·d].
    """
    n, width = base.shape
    n_blocks, dim = bases.shape[1], bases.shape[2]
    scale = F.pad(coef, (0, 1))[:, labels]  # [N, d]; 0 beyond the rank
    base_y = (base.reshape(n, n_blocks, dim).transpose(0, 1) @ bases[0]) * scale
    aux_y = (aux.reshape(n, n_blocks, dim).transpose(0, 1) @ bases[1]) * scale
    fused = torch.baddbmm(base_y @ bases[0].mT, aux_y, bases[1].mT)  # [B, N, d]
    return fused.transpose(0, 1).reshape(n, width)


def band_rows(base: Tensor, aux: Tensor, bases: Tensor, labels: Tensor, num_bands: int) -> Tensor:
    """Within-band components ``Z^(k) = band_k(R) + band_k(H)`` of some rows (§2.7).

    Args:
        base: Base view R of the rows, [b, B·d].
        aux: Auxiliary view H of the same rows, [b, B·d].
        bases: [2, B, d, d] computed on the **full** matrices (:func:`band_bases`).
        labels: Band of each direction, [d].
        num_bands: Number of bands M.

    Returns:
        [b, M, B·d]; modality blocks concatenated within each band.
    """
    n, width = base.shape
    n_blocks, dim = bases.shape[1], bases.shape[2]
    masks = _band_masks(labels, num_bands, base.dtype)  # [M, d]
    # Band projectors P_k = V diag(mask_k) Vᵀ side by side: [2, B, d, M·d].
    mixers = torch.einsum("sbik,mk,sbjk->sbimj", bases, masks, bases)
    mixers = mixers.reshape(2, n_blocks, dim, num_bands * dim)
    base_blocks = base.reshape(n, n_blocks, dim).transpose(0, 1)
    aux_blocks = aux.reshape(n, n_blocks, dim).transpose(0, 1)
    rows = torch.baddbmm(base_blocks @ mixers[0], aux_blocks, mixers[1])  # [B, b, M·d]
    return rows.view(n_blocks, n, num_bands, dim).permute(1, 2, 0, 3).reshape(n, num_bands, width)
