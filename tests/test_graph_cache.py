"""The on-disk cache of frozen kNN item graphs: built once, reused, never trusted blindly."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import recbole_fitmm.model.abstract as abstract
from recbole_fitmm.config import PROPERTIES, Config
from recbole_fitmm.data.graph_cache import GraphCache
from recbole_fitmm.model.dragon import DRAGON
from recbole_fitmm.model.fitmm import FITMM
from recbole_fitmm.model.graph import multimodal_knn_graph
from recbole_fitmm.quick_start import create_dataset, data_preparation
from tests.conftest import toy_config


@pytest.fixture
def data(toy_root: Path, tmp_path: Path) -> tuple[Any, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["pytest"])
        values = toy_config(toy_root, graph_cache_dir=str(tmp_path / "cache"))
        config = Config("FITMM", "toy", config_dict=values)
        train_data, _, _ = data_preparation(config, create_dataset(config))
    return config, train_data._dataset


def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def build(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return multimodal_knn_graph(*args, **kwargs)

    monkeypatch.setattr(abstract, "multimodal_knn_graph", build)
    return calls


def with_values(config: Any, **values: Any) -> Any:
    config = copy.copy(config)
    config.final_config_dict = {**config.final_config_dict, **values}
    return config


def test_the_graph_is_built_once_and_equals_the_uncached_one(
    data: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, dataset = data
    calls = counted(monkeypatch)
    first = FITMM(config, dataset)
    second = FITMM(config, dataset)
    assert calls == [1] and len(list((tmp_path / "cache").glob("graph-*.pt"))) == 1
    assert torch.equal(first.item_graph.to_dense(), second.item_graph.to_dense())
    dataset.graph_cache = None
    try:
        uncached = FITMM(config, dataset)
    finally:
        dataset.graph_cache = GraphCache(tmp_path / "cache")
    assert calls == [1, 1]
    assert torch.equal(first.item_graph.to_dense(), uncached.item_graph.to_dense())


def test_other_parameters_or_features_get_their_own_graph(
    data: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, dataset = data
    calls = counted(monkeypatch)
    FITMM(config, dataset)
    FITMM(with_values(config, knn_k=5), dataset)
    FITMM(with_values(config, mm_image_weight=0.5), dataset)
    FITMM(with_values(config, feature_preprocess="center"), dataset)
    DRAGON(with_values(config, model="DRAGON", **_dragon_defaults()), dataset)
    assert len(calls) == 5 and len(list((tmp_path / "cache").glob("graph-*.pt"))) == 5
    dataset.modal_feats["image"][5, 0] += 1.0  # the same file name would now be stale
    FITMM(config, dataset)
    assert len(calls) == 6


def test_an_unusable_cache_file_is_rebuilt(
    data: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, dataset = data
    calls = counted(monkeypatch)
    reference = FITMM(config, dataset).item_graph.to_dense()
    (path,) = (tmp_path / "cache").glob("graph-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert torch.equal(FITMM(config, dataset).item_graph.to_dense(), reference)
    assert len(calls) == 2
    other = FITMM(with_values(config, knn_k=5), dataset)
    (other_path,) = set((tmp_path / "cache").glob("graph-*.pt")) - {path}
    other_path.replace(path)  # a file that holds another key under this key's name
    assert torch.equal(FITMM(config, dataset).item_graph.to_dense(), reference)
    assert len(calls) == 4
    del other


def _dragon_defaults() -> dict[str, Any]:
    return yaml.safe_load((PROPERTIES / "model" / "DRAGON.yaml").read_text())
