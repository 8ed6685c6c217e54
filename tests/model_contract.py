"""The contract every model the plugin ships or claims to support must pass (implicit-style mixin).

Adding a model takes three lines in ``tests/test_models.py``::

    class TestMyModel(ModelContract):
        model_name = "MyModel"
        overrides = {"learning_rate": 0.01}   # optional

The mixin prepares the generated ``toy`` dataset (4 latent topics, image + text features;
``tests/conftest.py``) once per class, trains the model on it once on the CPU, trains it once more
on the hand-made ``known`` dataset (users in disjoint item groups,
``tests/conftest.py::known_best_data``), and checks:

* the loss is a finite scalar and a few optimiser steps on one batch lower it;
* after a short fit the model beats popularity (RecBole's ``Pop``) on valid Recall@20 and NDCG@20;
* after a short fit on ``known``, every user's known best item (the one unseen item of the user's
  group) is ranked first once training and valid items are masked;
* ``full_sort_predict`` agrees with ``predict`` on the same (user, item) pairs;
* evaluation is deterministic: two evaluations (and two fresh forward passes) are identical;
* the evaluation cache is dropped when training resumes (plugin models);
* a ``state_dict`` save/load round trip reproduces the scores exactly;
* the same seed builds the same model (and another seed another one);
* after the trainer's masking, PAD item 0 and the user's training items never reach the top-K.

Every check runs on the CPU and, when one is present, on a CUDA device (``device`` fixture;
``benchmarks/gpu_check.sh`` runs the CUDA cases alone).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_fitmm.config import Config
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.registry import get_model, is_plugin_model
from recbole_fitmm.trainer import get_trainer
from tests.conftest import KNOWN_GROUP_ITEMS, KNOWN_GROUPS, device_params, gpu_id, toy_config

#: Training setup of the contract fit: small batches and a high learning rate, so a few epochs
#: on the toy data are enough to learn its topic structure (a test class may ask for more).
FIT_CONFIG: dict[str, Any] = {
    "epochs": 5,
    "stopping_step": 10,
    "train_batch_size": 256,
    "learning_rate": 0.01,
    "metrics": ["Recall", "NDCG"],
    "topk": [10, 20],
}
TOP_K = 20
#: Training setup of the ``known`` fit: 5 batches per epoch; every model ranks every user's known
#: best item first from about the 6th epoch on (BPR is the slowest), and keeps doing so.
KNOWN_CONFIG: dict[str, Any] = {
    "epochs": 10,
    "eval_step": 10,  # validated once, after the last epoch
    "train_batch_size": 64,
    "learning_rate": 0.02,
}


@dataclass
class Fitted:
    """A model trained by the contract fit, with everything needed to probe it."""

    config: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any
    trainer: Any
    valid_result: dict[str, float]


@dataclass
class Prepared:
    """A model's configuration and dataloaders (built once per test class)."""

    config: Any
    train_data: Any
    valid_data: Any
    test_data: Any


def prepare(
    model_name: str,
    root: Path,
    workdir: Path,
    overrides: dict[str, Any],
    dataset: str = "toy",
    device: str = "cpu",
) -> Prepared:
    """Configuration and dataloaders of ``model_name`` on ``root/dataset`` (inside ``workdir``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["pytest"])
        values = toy_config(root, **{**FIT_CONFIG, **overrides, "gpu_id": gpu_id(device)})
        config = Config(model_name, dataset, config_dict=values)
        init_seed(config["seed"], config["reproducibility"])
        return Prepared(config, *data_preparation(config, create_dataset(config)))


def new_model(data: Prepared, workdir: Path, seed: int | None = None) -> tuple[Any, Any]:
    """A freshly initialised model (seeded with the config's seed or ``seed``) and its trainer."""
    config = data.config
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        init_seed(config["seed"] if seed is None else seed, config["reproducibility"])
        model = get_model(config["model"])(config, data.train_data._dataset)
        model = model.to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return model, trainer


def fit(data: Prepared, workdir: Path) -> Fitted:
    """Train a fresh model with the contract setup and evaluate it on valid.

    Args:
        data: The model's configuration and dataloaders.
        workdir: Folder RecBole may write logs and checkpoints into.

    Returns:
        The trained model and its data.
    """
    model, trainer = new_model(data, workdir)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        trainer.fit(data.train_data, data.valid_data, saved=False, show_progress=False)
        valid_result = trainer.evaluate(data.valid_data, load_best_model=False)
    return Fitted(
        data.config,
        data.train_data,
        data.valid_data,
        data.test_data,
        model,
        trainer,
        dict(valid_result),
    )


@lru_cache(maxsize=None)
def popularity_result(root: str, workdir: str) -> dict[str, float]:
    """Valid metrics of RecBole's ``Pop`` on the toy data (computed once per session)."""
    return fit(prepare("Pop", Path(root), Path(workdir), {"epochs": 1}), Path(workdir)).valid_result


def score_users(model: Any, users: torch.Tensor, uid_field: str) -> torch.Tensor:
    """``full_sort_predict`` of ``users`` reshaped to [B, n_items], without gradients."""
    device = next(model.parameters()).device
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({uid_field: users.to(device)}))
    return scores.view(users.numel(), -1)


class ModelContract:
    """Mixin: set ``model_name`` (and optionally ``overrides``) in a ``Test*`` subclass."""

    model_name: ClassVar[str]
    overrides: ClassVar[dict[str, Any]] = {}

    # ------------------------------------------------------------------ fixtures
    # Class-scoped fixtures are classmethods: they run once per class, not per test instance.
    @pytest.fixture(scope="class", params=device_params())
    @classmethod
    def device(cls, request: pytest.FixtureRequest) -> str:
        """Every check runs on the CPU, and on CUDA when a device is present."""
        return request.param

    @pytest.fixture(scope="class")
    @classmethod
    def prepared(
        cls, device: str, toy_root: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> Prepared:
        workdir = tmp_path_factory.mktemp("data")
        return prepare(cls.model_name, toy_root, workdir, cls.overrides, device=device)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
        return fit(prepared, tmp_path_factory.mktemp("fit"))

    @pytest.fixture(scope="class")
    @classmethod
    def known(
        cls, device: str, known_root: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> Fitted:
        workdir = tmp_path_factory.mktemp("known")
        overrides = {**cls.overrides, **KNOWN_CONFIG}  # one training setup for all models
        data = prepare(cls.model_name, known_root, workdir, overrides, "known", device)
        return fit(data, workdir)

    @pytest.fixture
    def fresh(self, prepared: Prepared, tmp_path: Path) -> tuple:
        """A freshly initialised model on the class's dataloaders."""
        model, trainer = new_model(prepared, tmp_path)
        p = prepared
        return p.config, p.train_data, p.valid_data, p.test_data, model, trainer

    @pytest.fixture
    def users(self) -> torch.Tensor:
        return torch.arange(1, 25)

    # ------------------------------------------------------------------ training
    def test_loss_finite_and_decreases(self, fresh: tuple) -> None:
        config, train_data, *_, model, _trainer = fresh
        model.train()
        batch = next(iter(train_data)).to(config["device"])
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for _ in range(8):
            optimiser.zero_grad()
            loss = model.calculate_loss(batch)
            assert loss.numel() == 1 and torch.isfinite(loss).all()  # RecBole: shape [] or [1]
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses

    def test_beats_popularity(self, fitted: Fitted, toy_root: Path, tmp_path_factory) -> None:
        workdir = tmp_path_factory.getbasetemp() / "pop"
        workdir.mkdir(exist_ok=True)
        pop = popularity_result(str(toy_root), str(workdir))
        for metric in ("recall@20", "ndcg@20"):
            assert fitted.valid_result[metric] > pop[metric], (metric, fitted.valid_result, pop)

    def test_known_best_item_ranked_first(self, known: Fitted) -> None:
        uid, iid = known.config["USER_ID_FIELD"], known.config["ITEM_ID_FIELD"]
        test = known.test_data._dataset.inter_feat
        users, best = test[uid], test[iid]
        assert users.unique().numel() == users.numel() == known.train_data._dataset.user_num - 1
        seen = sum(
            loader._dataset.inter_matrix(form="csr").toarray()
            for loader in (known.train_data, known.valid_data)
        )
        known.model.eval()
        scores = score_users(known.model, users, uid)
        scores[:, 0] = -torch.inf  # PAD
        scores[torch.from_numpy(seen[users.numpy()] > 0).to(scores.device)] = -torch.inf
        unseen = KNOWN_GROUPS * KNOWN_GROUP_ITEMS - (KNOWN_GROUP_ITEMS - 1)  # 1 own, 30 others
        assert torch.isfinite(scores).sum(1).tolist() == [unseen] * users.numel()
        ranked_first = scores.argmax(dim=1).cpu()
        assert torch.equal(ranked_first, best), (ranked_first != best).sum()

    # ------------------------------------------------------------------ scoring
    def test_full_sort_agrees_with_predict(self, fitted: Fitted, users: torch.Tensor) -> None:
        model, config = fitted.model, fitted.config
        model.eval()
        full = score_users(model, users, config["USER_ID_FIELD"])
        n_items = full.shape[1]
        assert n_items == fitted.train_data._dataset.item_num
        pairs = Interaction(
            {
                config["USER_ID_FIELD"]: users.repeat_interleave(n_items),
                config["ITEM_ID_FIELD"]: torch.arange(n_items).repeat(users.numel()),
            }
        ).to(config["device"])
        with torch.no_grad():
            single = model.predict(pairs).view(users.numel(), n_items)
        torch.testing.assert_close(single.float(), full.float(), rtol=1e-5, atol=1e-5)

    def test_evaluation_is_deterministic(self, fitted: Fitted, users: torch.Tensor) -> None:
        model, trainer, uid = fitted.model, fitted.trainer, fitted.config["USER_ID_FIELD"]
        first = trainer.evaluate(fitted.valid_data, load_best_model=False)
        second = trainer.evaluate(fitted.valid_data, load_best_model=False)
        assert dict(first) == dict(second)
        model.eval()
        scores = score_users(model, users, uid)
        model.train()  # drops the plugin's evaluation cache: the next call recomputes
        model.eval()
        assert torch.equal(scores, score_users(model, users, uid))

    def test_cache_dropped_when_training_resumes(self, fresh: tuple, users: torch.Tensor) -> None:
        config, train_data, *_, model, _trainer = fresh
        if not is_plugin_model(self.model_name):
            pytest.skip("RecBole built-in: no plugin evaluation cache")
        uid = config["USER_ID_FIELD"]
        model.eval()
        before = score_users(model, users, uid)
        assert model._cache is not None
        model.train()
        assert model._cache is None
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        optimiser.zero_grad()
        model.calculate_loss(next(iter(train_data)).to(config["device"])).backward()
        optimiser.step()
        model.eval()
        after = score_users(model, users, uid)
        assert not torch.equal(before, after)
        with torch.no_grad():
            user_e, item_e = model.compute_representations()
        torch.testing.assert_close(after, user_e[users.to(user_e.device)] @ item_e.T)

    # ------------------------------------------------------------------ persistence
    def test_state_dict_round_trip(
        self, fitted: Fitted, prepared: Prepared, tmp_path: Path, users: torch.Tensor
    ) -> None:
        model, uid = fitted.model, fitted.config["USER_ID_FIELD"]
        model.eval()
        expected = score_users(model, users, uid)
        path = tmp_path / "weights.pt"
        torch.save(model.state_dict(), path)
        restored, _trainer = new_model(prepared, tmp_path, seed=12345)  # another initialisation
        restored.load_state_dict(torch.load(path, weights_only=True))
        restored.eval()
        assert torch.equal(expected, score_users(restored, users, uid))

    def test_same_seed_same_model(self, fresh: tuple, prepared: Prepared, tmp_path: Path) -> None:
        *_, model, _trainer = fresh
        again, _ = new_model(prepared, tmp_path)
        other, _ = new_model(prepared, tmp_path, seed=12345)
        assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
        first, second = model.state_dict(), again.state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first)

    # ------------------------------------------------------------------ masking
    def test_pad_and_training_items_never_in_top_k(self, fitted: Fitted) -> None:
        trainer, config = fitted.trainer, fitted.config
        train = fitted.train_data._dataset.inter_matrix(form="csr").toarray() > 0
        trainer.tot_item_num = fitted.train_data._dataset.item_num
        fitted.model.eval()
        for loader in (fitted.valid_data, fitted.test_data):
            for batch in loader:
                with torch.no_grad():
                    interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
                top = scores.topk(TOP_K, dim=1).indices.cpu().numpy()
                users = interaction[config["USER_ID_FIELD"]].cpu().numpy()
                assert not (top == 0).any()
                assert not train[users[:, None], top].any()
