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
import scipy.sparse as sp
import torch
from torch import Tensor

from recbole_fitmm.model.layers import sparse_product


def bipartite_adjacency(
    users: np.ndarray | Tensor, items: np.ndarray | Tensor, n_users: int, n_items: int
) -> Tensor:
    """Symmetric-normalised adjacency ``D^-1/2 A D^-1/2`` of the user–item graph.

    Nodes are users ``0..n_users-1`` followed by items ``n_users..n_users+n_items-1``. Every
    (user, item) pair becomes two undirected edges; duplicate pairs count once; no self loops.

    Args:
        users: Int array or tensor [E] of user ids (a tensor's device is kept).
        items: Int array or tensor [E] of item ids.
        n_users: Number of user ids (including PAD 0).
        n_items: Number of item ids (including PAD 0).

    Returns:
        Sparse COO float32 tensor [n_users + n_items, n_users + n_items], coalesced, on the ids'
        device.

    Example:
        >>> adj = bipartite_adjacency(np.array([1, 1]), np.array([1, 2]), 2, 3)
        >>> adj.shape
        torch.Size([5, 5])
    """
    pairs = torch.unique(torch.stack([_index(users), _index(items)]), dim=1)
    rows = torch.cat([pairs[0], pairs[1] + n_users])
    cols = torch.cat([pairs[1] + n_users, pairs[0]])
    n = n_users + n_items
    ones = torch.ones(rows.numel(), device=rows.device)
    degree = torch.zeros(n, device=rows.device).index_add_(0, rows, ones)
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[degree == 0] = 0.0
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return _sparse(torch.stack([rows, cols]), values, (n, n))


def _index(ids: np.ndarray | Tensor) -> Tensor:
    """Ids as an int64 tensor, on the device they are on (numpy arrays: CPU)."""
    if isinstance(ids, Tensor):
        return ids.to(torch.int64)
    return torch.as_tensor(np.asarray(ids), dtype=torch.int64)


def _sparse(indices: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A coalesced COO tensor from indices known to be in range (invariant checks off, stated)."""
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def propagate(
    adj: Tensor, x0: Tensor, n_layers: int, pooling: str = "sum", adj_t: Tensor | None = None
) -> Tensor:
    """Parameter-free propagation ``X^{l+1} = adj · X^l`` and pooling of layers 0..L.

    Args:
        adj: Sparse [N, N] normalised adjacency.
        x0: Node features [N, d] (layer 0).
        n_layers: Number of propagation steps L (0 returns ``x0``).
        pooling: ``sum`` (DRAGON, FITMM) or ``mean`` (LightGCN, FREEDOM) over the L+1 layers.
        adj_t: The transpose of a frozen, coalesced ``adj`` (``adj`` itself when symmetric):
            products then run in CSR layout without re-transposing ``adj`` in every backward
            (:func:`~recbole_fitmm.model.layers.sparse_product`); ``None``: ``torch.sparse.mm``.

    Returns:
        Pooled node representations [N, d].
    """
    if pooling not in ("sum", "mean"):
        raise ValueError(f"pooling must be 'sum' or 'mean', got {pooling!r}")
    total = x0
    x = x0
    for _ in range(n_layers):
        x = torch.sparse.mm(adj, x) if adj_t is None else sparse_product(adj, adj_t, x)
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
    return _sparse(torch.stack([rows, cols]), values, (n, n))


def without_pad(matrix: Tensor) -> Tensor:
    """Drop row and column 0 (PAD, no entries) of a sparse COO matrix.

    Args:
        matrix: Coalesced sparse [n, n] with an empty row and column 0.

    Returns:
        Sparse COO [n - 1, n - 1]: entry (i, j) of the result is entry (i + 1, j + 1).
    """
    n = matrix.shape[0] - 1
    return _sparse(matrix.indices() - 1, matrix.values(), (n, n))


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


# ---------------------------------------------------------------------------------------------
# Additions for the multimodal baselines (VBPR, FREEDOM, LGMRec, DRAGON).


def interaction_matrix(
    users: np.ndarray | Tensor,
    items: np.ndarray | Tensor,
    n_users: int,
    n_items: int,
    row_normalise: bool = False,
) -> Tensor:
    """The binary user–item matrix ``R`` (duplicate pairs count once), optionally row-normalised.

    Args:
        users: Int array [E] of user ids.
        items: Int array [E] of item ids.
        n_users: Number of user ids (including PAD 0).
        n_items: Number of item ids (including PAD 0).
        row_normalise: Divide every row by its number of items (``D_u^-1 R``, a per-user mean).

    Returns:
        Sparse COO float32 tensor [n_users, n_items], coalesced.

    Example:
        >>> interaction_matrix(np.array([1, 1]), np.array([1, 2]), 2, 3).to_dense()[1]
        tensor([0., 1., 1.])
    """
    pairs = torch.unique(
        torch.stack(
            [
                torch.as_tensor(np.asarray(users), dtype=torch.int64),
                torch.as_tensor(np.asarray(items), dtype=torch.int64),
            ]
        ),
        dim=1,
    )
    values = torch.ones(pairs.shape[1])
    if row_normalise:
        degree = torch.zeros(n_users).index_add_(0, pairs[0], values)
        values = values / degree[pairs[0]]
    return _sparse(pairs, values, (n_users, n_items))


def edge_degree_weights(users: Tensor, items: Tensor, n_users: int, n_items: int) -> Tensor:
    """``1 / sqrt(d_u d_i)`` for every user–item edge (FREEDOM's pruning probabilities).

    Args:
        users: Int64 tensor [E] of user ids (distinct pairs).
        items: Int64 tensor [E] of item ids.
        n_users: Number of user ids.
        n_items: Number of item ids.

    Returns:
        Float32 tensor [E]; edges of low-degree endpoints get large weights.
    """
    ones = torch.ones(users.numel(), device=users.device)
    user_degree = torch.zeros(n_users, device=users.device).index_add_(0, users, ones)
    item_degree = torch.zeros(n_items, device=users.device).index_add_(0, items, ones)
    return (user_degree[users] * item_degree[items]).rsqrt()


def degree_sensitive_pruning(
    users: Tensor,
    items: Tensor,
    n_users: int,
    n_items: int,
    drop_ratio: float,
    weights: Tensor | None = None,
) -> Tensor:
    """FREEDOM's degree-sensitive edge pruning of the user–item graph (a training-time sample).

    Keeps ``int(E * (1 - drop_ratio))`` distinct edges sampled without replacement with
    probability proportional to ``1 / sqrt(d_u d_i)`` (edges between high-degree nodes are pruned
    first), then re-normalises the kept edges with their own degrees. Draws from torch's global
    generator, so a fixed seed gives a fixed sample.

    Args:
        users: Int64 tensor [E] of user ids of the distinct training pairs.
        items: Int64 tensor [E] of item ids.
        n_users: Number of user ids.
        n_items: Number of item ids.
        drop_ratio: Fraction of edges to prune, in [0, 1). 0 returns the full graph.
        weights: Precomputed :func:`edge_degree_weights` [E] (computed when ``None``).

    Returns:
        Sparse COO float32 [n_users + n_items, n_users + n_items], ``D^-1/2 A D^-1/2`` of the kept
        edges (same node layout as :func:`bipartite_adjacency`).

    Example:
        >>> adj = degree_sensitive_pruning(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2]),
        ...                                3, 3, drop_ratio=0.5)
        >>> int(adj._nnz())
        2
    """
    if not 0.0 <= drop_ratio < 1.0:
        raise ValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
    if drop_ratio == 0.0:
        return bipartite_adjacency(users, items, n_users, n_items)
    if weights is None:
        weights = edge_degree_weights(users, items, n_users, n_items)
    n_keep = max(1, int(users.numel() * (1.0 - drop_ratio)))
    keep = torch.multinomial(weights, n_keep, replacement=False)
    kept_users, kept_items = users[keep], items[keep]
    values = edge_degree_weights(kept_users, kept_items, n_users, n_items)
    rows = torch.cat([kept_users, kept_items + n_users])
    cols = torch.cat([kept_items + n_users, kept_users])
    n = n_users + n_items
    return _sparse(torch.stack([rows, cols]), torch.cat([values, values]), (n, n))


def modality_weights(names: Sequence[str], image_weight: float) -> list[float]:
    """Mixing weights of the per-modality item graphs, generalising ``mm_image_weight``.

    FREEDOM and DRAGON mix two kNN graphs as ``w · S_image + (1 - w) · S_text``. For any number of
    modalities: one modality gets weight 1; otherwise a modality named ``image`` gets ``w`` and
    the others share ``1 - w`` equally; without an ``image`` modality all weights are equal.

    Args:
        names: Modality names in dataset order.
        image_weight: ``mm_image_weight`` in [0, 1].

    Returns:
        One weight per name, summing to 1.

    Example:
        >>> modality_weights(["image", "text"], 0.1)
        [0.1, 0.9]
    """
    if not names:
        raise ValueError("need at least one modality")
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"mm_image_weight must be in [0, 1], got {image_weight}")
    if len(names) == 1:
        return [1.0]
    if "image" not in names:
        return [1.0 / len(names)] * len(names)
    rest = (1.0 - image_weight) / (len(names) - 1)
    return [image_weight if name == "image" else rest for name in names]


def multimodal_knn_graph(features: Sequence[Tensor], weights: Sequence[float], k: int) -> Tensor:
    """Weighted sum of one :func:`knn_graph` per modality (FREEDOM's / DRAGON's frozen item graph).

    Args:
        features: One item feature matrix [N, f_m] per modality (row 0 = PAD, left unlinked).
        weights: One mixing weight per modality (see :func:`modality_weights`).
        k: Neighbours per item in each modality graph.

    Returns:
        Sparse COO float32 [N, N], coalesced.
    """
    return weighted_sum([knn_graph(feat, k) for feat in features], weights)


def user_cooccurrence_graph(
    users: np.ndarray | Tensor, items: np.ndarray | Tensor, n_users: int, k: int
) -> Tensor:
    """DRAGON's user–user graph, built in memory from the training interactions.

    Two users are linked with weight ``c`` = the number of training items they share. Every user
    keeps its ``k`` other users with the largest ``c`` (ties: smaller user id first; fewer when
    it has fewer co-users) and the kept weights are softmax-normalised over the raw counts, as in
    DRAGON's ``topk_sample`` with ``user_aggr_mode='softmax'``. Counts are computed for row blocks
    of users, so the dense U×U matrix is never formed.

    Args:
        users: Int array [E] of user ids of training interactions.
        items: Int array [E] of item ids.
        n_users: Number of user ids (including PAD 0, which gets no edges).
        k: Neighbours per user.

    Returns:
        Sparse COO float32 [n_users, n_users]; each non-empty row sums to 1, no self loops.

    Example:
        >>> g = user_cooccurrence_graph(np.array([1, 2, 2]), np.array([5, 5, 6]), 3, k=4)
        >>> g.to_dense()[1].tolist(), g.to_dense()[2].tolist()
        ([0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
    """

    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_cols = int(items.max()) + 1 if items.size else 1
    matrix = sp.csr_matrix(
        (np.ones(users.size, dtype=np.float32), (users, items)), shape=(n_users, n_cols)
    )
    matrix.data[:] = 1.0  # duplicates (summed by the constructor) count once
    matrix_t = matrix.T.tocsc()
    k = min(k, n_users)
    block = _block_rows(n_users)
    rows_out, cols_out, vals_out = [], [], []
    for lo in range(0, n_users, block):
        hi = min(lo + block, n_users)
        counts = torch.from_numpy((matrix[lo:hi] @ matrix_t).toarray().astype(np.int64))
        counts[torch.arange(hi - lo), torch.arange(lo, hi)] = 0
        # Largest count first, smaller user id first among equal counts (deterministic).
        key = counts * n_users + (n_users - 1 - torch.arange(n_users))
        top = key.topk(k, dim=1).indices
        top_counts = counts.gather(1, top)
        valid = top_counts > 0
        logits = top_counts.float().masked_fill(~valid, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        row_ids = torch.arange(lo, hi).unsqueeze(1).expand_as(top)
        rows_out.append(row_ids[valid])
        cols_out.append(top[valid])
        vals_out.append(weights[valid])
    indices = torch.stack([torch.cat(rows_out), torch.cat(cols_out)])
    return _sparse(indices, torch.cat(vals_out), (n_users, n_users))
