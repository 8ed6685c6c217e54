"""Each compatibility fix is idempotent and needed: the tests recreate the breaking library
behaviour (numpy 2 without aliases, scipy >= 1.13 without ``dok_matrix._update``, torch >= 2.6
weights-only loading, pandas copy-on-write) and show RecBole failing without the fix and working
with it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data.dataset import Dataset
from recbole.model.general_recommender import BPR, LightGCN
from recbole.trainer import Trainer

from recbole_fitmm import compat
from recbole_fitmm.config import Config
from recbole_fitmm.quick_start import create_dataset, data_preparation
from tests.conftest import toy_config


def _recbole_config(root: Path, model: str = "BPR") -> RecBoleConfig:
    values = toy_config(root)
    values.pop("modalities")
    return RecBoleConfig(model, "toy", config_dict=values)


def test_apply_is_idempotent() -> None:
    compat.apply()
    state = (np.float_, np.bool8, sp.dok_matrix._update, Dataset._fill_nan)
    compat.apply()
    assert (np.float_, np.bool8, sp.dok_matrix._update, Dataset._fill_nan) == state
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"


def test_numpy2_aliases(monkeypatch: pytest.MonkeyPatch, toy_root: Path) -> None:
    for name in compat.NUMPY_ALIASES:
        monkeypatch.delattr(np, name, raising=False)  # what numpy 2 looks like
    with pytest.raises(AttributeError, match="float_"):
        _recbole_config(toy_root)
    compat.patch_numpy()
    assert np.float_ is np.float64 and np.bool8 is np.bool_
    assert _recbole_config(toy_root)["model"] == "BPR"


def test_scipy_dok_update(monkeypatch: pytest.MonkeyPatch, toy_root: Path) -> None:
    owner = next(c for c in sp.dok_matrix.__mro__ if "_update" in c.__dict__)
    monkeypatch.delattr(owner, "_update")  # scipy >= 1.13
    config = _recbole_config(toy_root, "LightGCN")
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    with pytest.raises(AttributeError, match="_update"):
        LightGCN(config, train_data._dataset)
    compat.patch_scipy()
    model = LightGCN(config, train_data._dataset)
    # The patched _update builds the same normalised adjacency as a COO construction.
    dense = model.norm_adj_matrix.to_dense()
    assert torch.allclose(dense, dense.T, atol=1e-6)
    assert dense.shape[0] == model.n_users + model.n_items


def test_torch_load_of_recbole_checkpoints(monkeypatch: pytest.MonkeyPatch, toy_root: Path) -> None:
    config = Config("BPR", "toy", config_dict=toy_config(toy_root, epochs=1))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    trainer = Trainer(config, BPR(config, train_data._dataset))
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")  # torch >= 2.6 default
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        trainer.evaluate(test_data, load_best_model=True)
    compat.patch_torch_load()
    result = trainer.evaluate(test_data, load_best_model=True)
    # One epoch: the best checkpoint holds the weights in memory, so loading it changes nothing.
    assert result == trainer.evaluate(test_data, load_best_model=False)


def _write_rated_dataset(root: Path) -> None:
    folder = root / "rated"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float"]
    rows += [
        f"{u}\t{i}\t{'' if (u, i) == (1, 2) else 2.0 + u}" for u in range(1, 5) for i in range(6)
    ]
    (folder / "rated.inter").write_text("\n".join(rows) + "\n")


def test_pandas_copy_on_write_fill_nan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_rated_dataset(tmp_path)
    values = {
        "data_path": str(tmp_path),
        "load_col": {"inter": ["user_id", "item_id", "rating"]},
        "gpu_id": "",
        "state": "ERROR",
    }
    with pd.option_context("mode.copy_on_write", True):  # always on in pandas 3
        config = RecBoleConfig("BPR", "rated", config_dict=values)
        original = Dataset.__dict__["_fill_nan"]
        monkeypatch.setattr(Dataset, "_fill_nan", compat.RECBOLE_FILL_NAN)
        assert Dataset(config).inter_feat["rating"].isna().sum() == 1  # inplace fillna was lost
        monkeypatch.setattr(Dataset, "_fill_nan", original)
        compat.patch_pandas()
        ratings = Dataset(config).inter_feat["rating"]
    assert ratings.isna().sum() == 0
    present = [2.0 + u for u in range(1, 5) for i in range(6) if (u, i) != (1, 2)]
    assert float(ratings.min()) == pytest.approx(min(present))
    assert np.isclose(ratings.to_numpy(), np.mean(present)).sum() == 1
