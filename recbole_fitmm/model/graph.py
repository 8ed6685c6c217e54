"""Graph building blocks shared by every plugin model (RecBole-free, plain tensors).

* :func:`bipartite_adjacency` — the symmetric-normalised user–item graph of LightGCN / DRAGON /
  FREEDOM / FITMM, built straight from COO indices (no dok matrices).
* :func:`propagate` — parameter-free propagation with sum or mean pooling of the layers.
* :func:`knn_graph` — a frozen cosine kNN graph built in row blocks, never forming the dense N×N
  similarity matrix, so it scales to 100k+ nodes.
* :func:`weighted_sum` — mixes modality graphs (e.g. ``0.1·S_image + 0.9·S_text``).

Row and column 0 are the PAD id in RecBole; :func:`knn_graph` leaves them empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def bipartite_adjacency(
    users: np.ndarray | Tensor, items: np.ndarray | Tensor, n_users: int, n_items: int
) -> Tensor:
    """Symmetric-normalised adjacency ``D^-1/2 A D^-1/2`` of the user–item graph.

    Nodes are users ``0..n_users-1`` followed by items ``n_users..n_users+n_items-1``. Every
    (user, item) pair becomes two undirected edges; duplicate pairs count once; no self loops.

    Args:
        users: Int array [E] of user ids.
        items: Int array [E] of item ids.
        n_users: Number of user ids (including PAD 0).
        n_items: Number of item ids (including PAD 0).

    Returns:
        Sparse COO float32 tensor [n_users + n_items, n_users + n_items], coalesced.

    Example:
        >>> adj = bipartite_adjacency(np.array([1, 1]), np.array([1, 2]), 2, 3)
        >>> adj.shape
        torch.Size([5, 5])
    """
    users = torch.as_tensor(np.asarray(users), dtype=torch.int64)
    items = torch.as_tensor(np.asarray(items), dtype=torch.int64)
    pairs = torch.unique(torch.stack([users, items]), dim=1)
    rows = torch.cat([pairs[0], pairs[1] + n_users])
    cols = torch.cat([pairs[1] + n_users, pairs[0]])
    n = n_users + n_items
    degree = torch.zeros(n).index_add_(0, rows, torch.ones(rows.numel()))
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[degree == 0] = 0.0
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).coalesce()


def propagate(adj: Tensor, x0: Tensor, n_layers: int, pooling: str = "sum") -> Tensor:
    """Parameter-free propagation ``X^{l+1} = adj · X^l`` and pooling of layers 0..L.

    Args:
        adj: Sparse [N, N] normalised adjacency.
        x0: Node features [N, d] (layer 0).
        n_layers: Number of propagation steps L (0 returns ``x0``).
        pooling: ``sum`` (DRAGON, FITMM) or ``mean`` (LightGCN, FREEDOM) over the L+1 layers.

    Returns:
        Pooled node representations [N, d].
    """
    if pooling not in ("sum", "mean"):
        raise ValueError(f"pooling must be 'sum' or 'mean', got {pooling!r}")
    total = x0
    x = x0
    for _ in range(n_layers):
        x = torch.sparse.mm(adj, x)
        total = total + x
    return total / (n_layers + 1) if pooling == "mean" else total


def _block_rows(n_cols: int, budget: int = 1 << 25) -> int:
    return max(1, budget // max(n_cols, 1))


def knn_graph(features: Tensor, k: int, skip_pad: bool = True) -> Tensor:
    """Frozen cosine kNN graph, normalised as in FREEDOM/DRAGON, built in row blocks.

    Each node keeps its ``k`` most cosine-similar nodes (itself included, as in the references),
    edges are binary, and the graph is normalised ``D^-1/2 A D^-1/2`` with ``D`` the row sums, so
    every kept entry is ``1/k``. The graph is directed (not symmetrised). Peak extra memory is one
    block of about 32M similarities, whatever N is.

    Args:
        features: Node features [N, f]; all-zero rows are allowed (cosine 0 to everything).
        k: Neighbours per node; capped at the number of real nodes.
        skip_pad: Leave row and column 0 (RecBole's PAD id) empty.

    Returns:
        Sparse COO float32 tensor [N, N] with ``k`` entries in each non-PAD row.

    Example:
        >>> g = knn_graph(torch.eye(5), k=2)
        >>> g.shape, int(g._nnz())
        (torch.Size([5, 5]), 8)
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n = features.shape[0]
    start = 1 if skip_pad else 0
    x = features[start:].float()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(k, x.shape[0])
    block = _block_rows(x.shape[0])
    neighbours = []
    with torch.no_grad():
        for lo in range(0, x.shape[0], block):
            sim = x[lo : lo + block] @ x.T
            neighbours.append(sim.topk(k, dim=1).indices)
    cols = torch.cat(neighbours).reshape(-1) + start
    rows = torch.arange(start, n, device=features.device).repeat_interleave(k)
    degree = torch.zeros(n, device=features.device).index_add_(
        0, rows, torch.ones(rows.numel(), device=features.device)
    )
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[degree == 0] = 0.0
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).coalesce()


def weighted_sum(graphs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Weighted sum of sparse graphs of the same shape (e.g. one kNN graph per modality).

    Args:
        graphs: Sparse [N, N] tensors.
        weights: One weight per graph.

    Returns:
        Sparse COO [N, N], coalesced.
    """
    if len(graphs) != len(weights) or not graphs:
        raise ValueError("need one weight per graph and at least one graph")
    total = graphs[0] * weights[0]
    for graph, weight in zip(graphs[1:], weights[1:]):
        total = total + graph * weight
    return total.coalesce()
