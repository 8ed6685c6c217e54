"""The shared graph code (``recbole_fitmm.model.graph``) against dense numpy computations.

Every expectation here is built independently of the package: cosine top-k by sorting a dense
similarity matrix, ``D^-1/2 A D^-1/2`` from a dense 0/1 matrix, propagation by matrix powers, and
FREEDOM's sampling probabilities from degrees counted in numpy. The helpers are shared with the
model tests (``tests/test_fitmm.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_fitmm.model import graph

#: Smallest gap between the k-th and (k+1)-th cosine of a row for its neighbour set to be unique.
TIE_GAP = 1e-6


# ---------------------------------------------------------------------------- reference code
def dense_normalised(adjacency: np.ndarray) -> np.ndarray:
    """``D^-1/2 A D^-1/2`` of a dense 0/1 matrix, ``D`` its row sums (empty rows stay 0)."""
    degree = adjacency.sum(axis=1)
    inv_sqrt = np.zeros_like(degree, dtype=np.float64)
    inv_sqrt[degree > 0] = 1.0 / np.sqrt(degree[degree > 0])
    return inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]


def dense_bipartite(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """The normalised user–item graph, users first, from a dense adjacency of the edge list."""
    adjacency = np.zeros((n_users + n_items, n_users + n_items))
    adjacency[users, n_users + items] = 1.0  # a repeated pair sets the same entry again
    adjacency[n_users + items, users] = 1.0
    return dense_normalised(adjacency)


def brute_force_knn(
    features: np.ndarray | torch.Tensor, k: int, skip_pad: bool = True
) -> np.ndarray:
    """Cosine kNN graph by sorting every row of the dense similarity matrix (float64).

    Each node links to its ``k`` most similar nodes (itself included); the 0/1 matrix is then
    normalised with its row sums, so every kept entry is ``1/k``. Row and column 0 stay empty
    when ``skip_pad``. Fails when a row's neighbour set is not unique (a tie at the k-th place),
    so a test's data must avoid ties by construction.
    """
    x = np.asarray(features, dtype=np.float64)
    start = 1 if skip_pad else 0
    real = x[start:]
    norms = np.linalg.norm(real, axis=1, keepdims=True)
    unit = real / np.maximum(norms, 1e-12)
    similarity = unit @ unit.T
    k = min(k, real.shape[0])
    adjacency = np.zeros((x.shape[0], x.shape[0]))
    for row, values in enumerate(similarity):
        order = np.argsort(-values, kind="stable")
        if k < len(order):
            gap = values[order[k - 1]] - values[order[k]]
            assert gap > TIE_GAP, f"row {row + start}: tie at the k-th neighbour ({gap:.2e})"
        adjacency[row + start, order[:k] + start] = 1.0
    expected = dense_normalised(adjacency)
    assert np.allclose(expected[adjacency > 0], 1.0 / k)  # the 1/k normalisation, by hand
    return expected


def _features(n: int, dim: int, seed: int) -> torch.Tensor:
    """Gaussian features with a zero PAD row 0 (continuous: no ties, checked by the reference)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    x[0] = 0.0
    return x


def _edges(n_users: int, n_items: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (user, item) pairs, with repeats and some ids left without edges; PAD 0 unused."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, n_users - 2, n), rng.integers(1, n_items - 2, n)


# ---------------------------------------------------------------------------- kNN graphs
@pytest.mark.parametrize(("n", "dim", "k"), [(30, 6, 4), (25, 3, 1), (9, 5, 20)])
def test_knn_graph_matches_brute_force_cosine_top_k(n: int, dim: int, k: int) -> None:
    features = _features(n, dim, seed=n)
    got = graph.knn_graph(features, k).to_dense().numpy()
    expected = brute_force_knn(features, k)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not got[0].any() and not got[:, 0].any()  # PAD row and column empty
    assert ((got > 0).sum(axis=1)[1:] == min(k, n - 1)).all()


def test_knn_graph_is_scale_invariant_and_may_include_pad_row() -> None:
    # Cosine similarity: scaling a row changes no neighbour; without skip_pad row 0 is a node.
    features = torch.randn(15, 4, generator=torch.Generator().manual_seed(1))
    scaled = features * torch.linspace(0.1, 50.0, 15).unsqueeze(1)
    got = graph.knn_graph(scaled, 3, skip_pad=False).to_dense().numpy()
    np.testing.assert_allclose(got, brute_force_knn(features, 3, skip_pad=False), atol=1e-7)
    assert (got[0] > 0).sum() == 3


def test_knn_graph_in_row_blocks_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    # The production block size only splits graphs of thousands of nodes: force 4-row blocks.
    monkeypatch.setattr(graph, "_block_rows", lambda n_cols, budget=0: 4)
    features = _features(23, 5, seed=2)
    got = graph.knn_graph(features, 3).to_dense().numpy()
    np.testing.assert_allclose(got, brute_force_knn(features, 3), rtol=1e-6, atol=1e-7)


def test_multimodal_knn_graph_matches_brute_force() -> None:
    a, b = _features(20, 5, seed=3), _features(20, 3, seed=4)
    mixed = graph.multimodal_knn_graph([a, b], [0.3, 0.7], k=4).to_dense().numpy()
    expected = 0.3 * brute_force_knn(a, 4) + 0.7 * brute_force_knn(b, 4)
    np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-7)
    # entries are 0.3/4, 0.7/4 or (shared neighbour) 1/4: checked by hand as well
    allowed = np.array([0.3, 0.7, 1.0]) / 4
    assert np.isclose(mixed[mixed > 0][:, None], allowed, rtol=1e-6).any(axis=1).all()


# ---------------------------------------------------------------------------- user–item graph
@pytest.mark.parametrize("as_tensor", [False, True])
def test_bipartite_adjacency_is_the_dense_symmetric_normalisation(as_tensor: bool) -> None:
    users, items = _edges(12, 9, 45, seed=5)
    args = (torch.from_numpy(users), torch.from_numpy(items)) if as_tensor else (users, items)
    got = graph.bipartite_adjacency(*args, 12, 9).to_dense().numpy()
    np.testing.assert_allclose(got, dense_bipartite(users, items, 12, 9), rtol=1e-6, atol=1e-7)


def test_bipartite_adjacency_hand_computed() -> None:
    # user 1 - items 1, 2 (the pair (1, 1) twice); user 2 - item 2.  Degrees: u1 2, u2 1,
    # i1 1, i2 2.  Nodes: users 0..2, then items 3..5.
    got = graph.bipartite_adjacency(np.array([1, 1, 1, 2]), np.array([1, 1, 2, 2]), 3, 3)
    expected = np.zeros((6, 6))
    expected[1, 4] = expected[4, 1] = 1 / np.sqrt(2 * 1)
    expected[1, 5] = expected[5, 1] = 1 / np.sqrt(2 * 2)
    expected[2, 5] = expected[5, 2] = 1 / np.sqrt(1 * 2)
    np.testing.assert_allclose(got.to_dense().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_propagate_is_the_sum_of_matrix_powers(pooling: str) -> None:
    users, items = _edges(10, 8, 30, seed=6)
    adj = graph.bipartite_adjacency(users, items, 10, 8)
    x0 = torch.randn(18, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    dense, x = dense_bipartite(users, items, 10, 8), x0.numpy()
    layers = [x, dense @ x, dense @ dense @ x, dense @ dense @ dense @ x]
    expected = sum(layers) / (4 if pooling == "mean" else 1)
    got = graph.propagate(adj.double(), x0, 3, pooling)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(graph.propagate(adj, x0.float(), 0, pooling), x0.float())


# ---------------------------------------------------------------------------- FREEDOM's pruning
def _distinct_edges(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    users, items = _edges(40, 30, 300, seed)
    pairs = np.unique(np.stack([users, items]), axis=1)
    return torch.from_numpy(pairs[0]), torch.from_numpy(pairs[1])


def test_pruning_at_ratio_zero_is_the_dense_normalisation() -> None:
    users, items = _distinct_edges(seed=1)
    got = graph.degree_sensitive_pruning(users, items, 40, 30, drop_ratio=0.0)
    expected = dense_bipartite(users.numpy(), items.numpy(), 40, 30)
    np.testing.assert_allclose(got.to_dense().numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("drop_ratio", "seed"), [(0.8, 0), (0.5, 1), (0.1, 2)])
def test_pruned_sample_is_a_renormalised_subset(drop_ratio: float, seed: int) -> None:
    users, items = _distinct_edges(seed=2)
    n_edges = users.numel()
    torch.manual_seed(seed)
    got = graph.degree_sensitive_pruning(users, items, 40, 30, drop_ratio).to_dense().numpy()
    block = got[:40, 40:]
    kept_users, kept_items = np.nonzero(block)
    assert len(kept_users) == int(n_edges * (1 - drop_ratio))  # distinct edges, no repeats
    original = set(zip(users.tolist(), items.tolist()))
    assert set(zip(kept_users.tolist(), kept_items.tolist())) <= original
    # The kept edges with their own degrees, normalised densely from scratch.
    expected = dense_bipartite(kept_users, kept_items, 40, 30)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_pruning_draws_edges_in_proportion_to_inverse_sqrt_degrees() -> None:
    # Keeping one edge: P(edge u-i) = w / sum(w), w = 1/sqrt(d_u d_i) with degrees counted here.
    users = torch.tensor([1, 1, 1, 1, 2, 2, 3, 4, 5, 5])
    items = torch.tensor([1, 2, 3, 4, 1, 5, 1, 6, 6, 7])
    d_user = np.bincount(users.numpy(), minlength=6)
    d_item = np.bincount(items.numpy(), minlength=8)
    weights = 1.0 / np.sqrt(d_user[users.numpy()] * d_item[items.numpy()])
    probability = weights / weights.sum()
    index = {(u, i): e for e, (u, i) in enumerate(zip(users.tolist(), items.tolist()))}
    torch.manual_seed(0)
    draws = 2000
    counts = np.zeros(len(users))
    for _ in range(draws):
        adj = graph.degree_sensitive_pruning(users, items, 6, 8, drop_ratio=0.95)
        (u, i), value = adj.indices()[:, 0].tolist(), float(adj.values()[0])
        counts[index[(u, i - 6)]] += 1
        assert value == pytest.approx(1.0)  # a lone edge: both degrees 1
    standard_error = np.sqrt(probability * (1 - probability) / draws)
    assert (np.abs(counts / draws - probability) < 4 * standard_error).all(), counts / draws
    assert counts[index[(1, 1)]] < counts[index[(4, 6)]]  # hub edges pruned first


def test_edge_degree_weights_by_hand() -> None:
    # user 1: degree 2, user 2: 1; item 1: degree 2, item 2: 1.
    got = graph.edge_degree_weights(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 1]), 3, 3)
    torch.testing.assert_close(got, torch.tensor([1 / 2, 1 / np.sqrt(2), 1 / np.sqrt(2)]).float())
