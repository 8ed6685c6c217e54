"""Every supported model against the shared contract, plus the baselines' own checks.

Adding a model to the contract takes three lines (see ``tests/model_contract.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from recbole_fitmm.config import PROPERTIES, Config
from recbole_fitmm.data.synthetic import SyntheticSpec, generate, write_atomic
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.model import graph
from recbole_fitmm.model.dragon import DRAGON, DRAGONParams
from recbole_fitmm.model.freedom import FREEDOM, FREEDOMParams
from recbole_fitmm.model.lgmrec import LGMRec, LGMRecParams, infonce
from recbole_fitmm.model.vbpr import VBPR, VBPRParams
from recbole_fitmm.quick_start import create_dataset, data_preparation
from tests.conftest import toy_config
from tests.model_contract import ModelContract
from tests.test_graph_math import brute_force_knn, dense_bipartite


# ---------------------------------------------------------------------------- the contract
class TestBPR(ModelContract):
    model_name = "BPR"
    overrides = {"epochs": 10}  # plain MF needs 10 epochs to overtake popularity on the toy data


class TestLightGCN(ModelContract):
    model_name = "LightGCN"


class TestVBPR(ModelContract):
    model_name = "VBPR"


class TestFREEDOM(ModelContract):
    model_name = "FREEDOM"


class TestLGMRec(ModelContract):
    model_name = "LGMRec"


class TestDRAGON(ModelContract):
    model_name = "DRAGON"
    overrides = {"learning_rate": 0.01}  # the paper's 1e-4 is too slow for a 10-epoch fit


# ---------------------------------------------------------------------------- helpers
PARAMS = {
    "VBPR": VBPRParams,
    "FREEDOM": FREEDOMParams,
    "LGMRec": LGMRecParams,
    "DRAGON": DRAGONParams,
}
MODELS = {"VBPR": VBPR, "FREEDOM": FREEDOM, "LGMRec": LGMRec, "DRAGON": DRAGON}
#: Keys a model yaml may set besides its hyperparameters: the trainer's, read by RecBole.
TRAINER_KEYS = {"learning_rate", "train_batch_size", "epochs", "weight_decay"}


@pytest.fixture(scope="module")
def tri_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset with three modalities (image, text, audio)."""
    root = tmp_path_factory.mktemp("tri")
    spec = SyntheticSpec(
        n_users=60,
        n_items=50,
        n_topics=3,
        modalities={"image": 8, "text": 6, "audio": 5},
        mean_inter=8,
        seed=3,
    )
    write_atomic(generate(spec), root, "tri")
    return root


def build(model: str, root: Path, dataset: str = "toy", **overrides: Any) -> tuple:
    """Config, training dataloader and a fresh model for ``model`` on ``root/dataset``."""
    config = Config(model, dataset, config_dict=toy_config(root, **overrides))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return config, train_data, MODELS[model](config, train_data._dataset)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def dense_freedom(model: FREEDOM, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """FREEDOM's evaluation representations from dense matrices (the paper's equations).

    ``h = S^n E_i`` with ``S = 0.1 kNN(image) + 0.9 kNN(text)``; LightGCN mean over layers 0..L
    of ``Â^l [E_u; E_i]`` on the full training graph; items get ``+ h``.
    """
    p = model.params
    s = 0.1 * brute_force_knn(model.modal_feats["image"], p.knn_k)
    s = s + 0.9 * brute_force_knn(model.modal_feats["text"], p.knn_k)
    h = _np(model.item_id_embedding)
    for _ in range(p.n_mm_layers):
        h = s @ h
    adj = dense_bipartite(*model.train_edges(dataset), model.n_users, model.n_items)
    x = np.concatenate([_np(model.user_embedding), _np(model.item_id_embedding)])
    layers = [x]
    for _ in range(p.n_ui_layers):
        layers.append(adj @ layers[-1])
    nodes = sum(layers) / len(layers)
    return nodes[: model.n_users], nodes[model.n_users :] + h


def dense_lgmrec(model: LGMRec, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """LGMRec's noise-free evaluation representations from dense matrices (default settings).

    CGE: LightGCN mean over layers 0..L. MGE, per modality: items ``F W``, users the mean of
    their training items' rows, ``n_mm_layers`` steps on ``Â``, rows normalised, summed.
    GHE, per modality: item assignments ``softmax(F H / τ)`` (PAD item 0 in no hyperedge), user
    assignments as released (modality 0: the last modality's ``softmax(R F H / τ)``, the others
    the raw ``R F H``), one hypergraph layer over the CGE items; ``alpha`` × the normalised sum.
    """
    p, tau = model.params, 0.2
    assert (p.cf_model, p.n_hyper_layer, p.user_hyperedges) == ("lightgcn", 1, "release")
    users, items = model.train_edges(dataset)
    n_users, n_items = model.n_users, model.n_items
    adj = dense_bipartite(users, items, n_users, n_items)
    r = np.zeros((n_users, n_items))
    r[users, items] = 1.0
    degree = r.sum(axis=1, keepdims=True)
    r_mean = np.divide(r, degree, out=np.zeros_like(r), where=degree > 0)
    x = np.concatenate([_np(model.user_embedding), _np(model.item_id_embedding)])
    layers = [x]
    for _ in range(p.n_ui_layers):
        layers.append(adj @ layers[-1])
    cge = sum(layers) / len(layers)

    def softmax(logits: np.ndarray) -> np.ndarray:
        z = np.exp(logits / tau - (logits / tau).max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    names = list(model.modal_feats)
    feats = [_np(model.modal_feats[name]) for name in names]
    item_logits = [f @ _np(model.hyper[name]) for f, name in zip(feats, names)]
    user_logits = [r @ logits for logits in item_logits]
    mge, ghe = np.zeros_like(cge), np.zeros_like(cge)
    for m, (name, f) in enumerate(zip(names, feats)):
        item_x = f @ _np(model.item_trs[name])
        nodes = np.concatenate([r_mean @ item_x, item_x])
        for _ in range(p.n_mm_layers):
            nodes = adj @ nodes
        mge += _unit_rows(nodes)
        item_hyper = softmax(item_logits[m])
        item_hyper[0] = 0.0
        user_hyper = softmax(user_logits[-1]) if m == 0 else user_logits[m]
        hyper_e = item_hyper.T @ cge[n_users:]
        ghe += np.concatenate([user_hyper @ hyper_e, item_hyper @ hyper_e])
    final = cge + mge + p.alpha * _unit_rows(ghe)
    return final[:n_users], final[n_users:]


# ---------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_yaml_keys_match_params(name: str) -> None:
    keys = set(yaml.safe_load((PROPERTIES / "model" / f"{name}.yaml").read_text()))
    fields = {field.name for field in dataclasses.fields(PARAMS[name])}
    assert keys - TRAINER_KEYS == fields


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_params_fail_clearly(name: str) -> None:
    values = yaml.safe_load((PROPERTIES / "model" / f"{name}.yaml").read_text())
    assert PARAMS[name].from_config(values, name)  # the defaults are valid
    missing = {k: v for k, v in values.items() if k != "reg_weight"}
    with pytest.raises(ConfigError, match="reg_weight"):
        PARAMS[name].from_config(missing, name)
    with pytest.raises(ConfigError, match="embedding_size"):
        PARAMS[name].from_config({**values, "embedding_size": "64"}, name)
    with pytest.raises(ConfigError, match="embedding_size"):
        PARAMS[name].from_config({**values, "embedding_size": 0}, name)


def test_params_are_frozen() -> None:
    params = VBPRParams(embedding_size=8, reg_weight=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.reg_weight = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------- shared graph code
def _random_interactions(n_users: int, n_items: int, n: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    return rng.integers(1, n_users, n), rng.integers(1, n_items, n)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_propagation_with_a_stored_transpose_matches_sparse_mm(pooling: str) -> None:
    gen = torch.Generator().manual_seed(2)
    users, items = (
        torch.randint(1, 9, (40,), generator=gen),
        torch.randint(1, 7, (40,), generator=gen),
    )
    adj = graph.bipartite_adjacency(users, items, 9, 7)
    torch.testing.assert_close(adj.to_dense(), adj.to_dense().T, rtol=0, atol=0)  # symmetric
    x0 = torch.randn(16, 5, generator=gen, dtype=torch.float32)
    weights = torch.randn(16, 5, generator=gen)
    outputs, grads = [], []
    for adj_t in (None, adj):
        x = x0.clone().requires_grad_()
        out = graph.propagate(adj, x, 3, pooling, adj_t)
        (out * weights).sum().backward()
        outputs.append(out.detach())
        grads.append(x.grad)
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])


def brute_force_cooccurrence(
    users: np.ndarray, items: np.ndarray, n_users: int, k: int
) -> np.ndarray:
    """DRAGON's user graph by hand: shared-item counts from a dense 0/1 matrix, each user's k
    largest (ties: smaller id first, zero counts dropped), softmax over the kept raw counts."""
    dense = np.zeros((n_users, int(items.max()) + 1))
    dense[users, items] = 1.0
    counts = dense @ dense.T
    np.fill_diagonal(counts, 0)
    expected = np.zeros((n_users, n_users))
    for u in range(n_users):
        order = sorted(range(n_users), key=lambda v: (-counts[u, v], v))[:k]
        kept = [v for v in order if counts[u, v] > 0]
        if kept:
            weights = np.exp(counts[u, kept] - counts[u, kept].max())
            expected[u, kept] = weights / weights.sum()
    return expected


def test_user_cooccurrence_graph_matches_brute_force() -> None:
    users, items = _random_interactions(30, 25, 150, seed=0)
    got = graph.user_cooccurrence_graph(users, items, 30, 4).to_dense()
    expected = brute_force_cooccurrence(users, items, 30, 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert got[0].abs().sum() == 0 and torch.diagonal(got).abs().sum() == 0


def test_modality_weights_generalise_the_image_weight() -> None:
    assert graph.modality_weights(["text"], 0.1) == [1.0]
    assert graph.modality_weights(["image", "audio"], 0.1) == [0.1, 0.9]
    assert graph.modality_weights(["text", "image", "audio"], 0.2) == pytest.approx([0.4, 0.2, 0.4])
    assert graph.modality_weights(["text", "audio"], 0.1) == [0.5, 0.5]
    with pytest.raises(ValueError):
        graph.modality_weights(["image", "text"], 1.5)


def test_interaction_matrix_counts_pairs_once() -> None:
    users, items = np.array([1, 1, 1, 2]), np.array([1, 1, 2, 2])
    assert graph.interaction_matrix(users, items, 3, 3).to_dense().tolist() == [
        [0, 0, 0],
        [0, 1, 1],
        [0, 0, 1],
    ]
    mean = graph.interaction_matrix(users, items, 3, 3, row_normalise=True).to_dense()
    assert mean.tolist() == [[0, 0, 0], [0, 0.5, 0.5], [0, 0, 1]]


# ---------------------------------------------------------------------------- model specifics
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("modalities", [["text"], ["image", "text", "audio"]])
def test_any_number_of_modalities(name: str, modalities: list[str], tri_root: Path) -> None:
    config, train_data, model = build(name, tri_root, "tri", modalities=modalities)
    loss = model.calculate_loss(next(iter(train_data)))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    user_e, item_e = model.cached_representations()
    assert user_e.shape[0] == model.n_users and item_e.shape[0] == model.n_items


def test_train_edges_are_the_training_interactions(toy_root: Path) -> None:
    config, train_data, model = build("VBPR", toy_root)
    users, items = model.train_edges(train_data._dataset)
    assert users.dtype == np.int64 and items.dtype == np.int64
    inter = train_data._dataset.inter_feat
    expected = sorted(
        zip(inter[config["USER_ID_FIELD"]].tolist(), inter[config["ITEM_ID_FIELD"]].tolist())
    )
    assert sorted(zip(users.tolist(), items.tolist())) == expected
    assert users.min() >= 1 and items.min() >= 1  # PAD (0) never appears


def test_freedom_prunes_during_training_only(toy_root: Path) -> None:
    _, train_data, model = build("FREEDOM", toy_root)
    model.train()
    first = model.pruned_adjacency()
    assert model.pruned_adjacency() is first  # one sample per epoch
    n_edges = model.edge_users.numel()
    assert first._nnz() == 2 * int(n_edges * (1 - model.params.dropout))
    model.train()  # next epoch
    second = model.pruned_adjacency()
    assert not torch.equal(first.col_indices(), second.col_indices())
    model.eval()
    user_e, item_e = model.cached_representations()  # on the full graph, computed densely here
    expected_u, expected_i = dense_freedom(model, train_data._dataset)
    np.testing.assert_allclose(user_e.numpy(), expected_u, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(item_e.numpy(), expected_i, rtol=1e-4, atol=1e-6)


def test_lgmrec_noise_only_in_training(toy_root: Path) -> None:
    _, _, model = build("LGMRec", toy_root)
    model.train()
    with torch.no_grad():
        noisy = [model.compute_representations()[1] for _ in range(2)]
    assert not torch.equal(*noisy)
    model.eval()
    with torch.no_grad():
        clean = [model.compute_representations()[1] for _ in range(2)]
    assert torch.equal(*clean)


def test_lgmrec_evaluation_forward_matches_dense_numpy(toy_root: Path) -> None:
    _, train_data, model = build("LGMRec", toy_root)
    model.eval()
    with torch.no_grad():
        user_e, item_e = model.compute_representations()
    expected_u, expected_i = dense_lgmrec(model, train_data._dataset)
    np.testing.assert_allclose(user_e.numpy(), expected_u, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(item_e.numpy(), expected_i, rtol=1e-4, atol=1e-6)


def release_infonce(a: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The released ``ssl_triple_loss`` written out (τ = 0.2)."""
    na, npos, nc = (torch.nn.functional.normalize(x) for x in (a, p, c))
    pos = torch.exp((na * npos).sum(dim=1) / 0.2)
    return -torch.log(pos / torch.exp(na @ nc.T / 0.2).sum(dim=1)).sum()


def test_lgmrec_infonce_is_the_release_formula() -> None:
    gen = torch.Generator().manual_seed(4)
    a, p, c = (torch.randn(n, 8, generator=gen, dtype=torch.float64) for n in (5, 5, 9))
    torch.testing.assert_close(infonce(a, p, c), release_infonce(a, p, c))


def test_lgmrec_infonce_gradients_are_the_release_formulas() -> None:
    gen = torch.Generator().manual_seed(5)
    inputs = [torch.randn(n, 6, generator=gen, dtype=torch.float64) for n in (4, 4, 7)]
    ours = [x.clone().requires_grad_() for x in inputs]
    theirs = [x.clone().requires_grad_() for x in inputs]
    infonce(*ours).backward()
    release_infonce(*theirs).backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad)
    # the candidates may be the positives' own matrix (as in the model): gradients add up
    ours = [x.clone().requires_grad_() for x in (inputs[0], inputs[2])]
    theirs = [x.clone().requires_grad_() for x in (inputs[0], inputs[2])]
    infonce(ours[0], ours[1][:4], ours[1]).backward()
    release_infonce(theirs[0], theirs[1][:4], theirs[1]).backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad)
    loss = infonce(*[x.clone().requires_grad_() for x in inputs])
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_lgmrec_user_hyperedges_option(toy_root: Path) -> None:
    # The release's assignments: modality 0's users get the last modality's softmax, the others
    # their raw logits; per_modality: each its own softmax. Items are the same in both.
    _, _, model = build("LGMRec", toy_root)
    model.eval()
    logits = [torch.randn(5, 4), torch.randn(5, 4)]
    released = [model.user_assignments(logits, m) for m in (0, 1)]
    assert torch.equal(released[0], torch.softmax(logits[1] / 0.2, dim=1))
    assert torch.equal(released[1], logits[1])
    config = dict(model.params.__dict__, user_hyperedges="per_modality")
    model.params = type(model.params)(**config)
    own = [model.user_assignments(logits, m) for m in (0, 1)]
    for m in (0, 1):
        assert torch.equal(own[m], torch.softmax(logits[m] / 0.2, dim=1))
    assert not torch.equal(own[0], released[0])
    with torch.no_grad():
        user_e, item_e = model.compute_representations()
    assert torch.isfinite(user_e).all() and torch.isfinite(item_e).all()


def test_dragon_user_graph_and_untouched_batch(toy_root: Path) -> None:
    _, train_data, model = build("DRAGON", toy_root)
    coo = train_data._dataset.inter_matrix(form="coo")
    assert model.params.user_graph_k == 40  # the release's value
    expected = brute_force_cooccurrence(coo.row, coo.col, model.n_users, 40)
    np.testing.assert_allclose(model.user_graph.to_dense().numpy(), expected, rtol=1e-6, atol=1e-7)
    batch = next(iter(train_data))
    before = {key: value.clone() for key, value in batch.interaction.items()}
    model.calculate_loss(batch).backward()
    assert all(torch.equal(before[key], batch[key]) for key in before)


def test_models_run_on_cpu_without_cuda_calls(toy_root: Path, monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model touched CUDA")

    monkeypatch.setattr(torch.Tensor, "cuda", refuse)
    for name in MODELS:
        _, train_data, model = build(name, toy_root)
        model.calculate_loss(next(iter(train_data))).backward()
        assert all(p.device.type == "cpu" for p in model.parameters())
