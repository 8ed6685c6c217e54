"""The shipped search spaces (properties/hyper/): readable, about real keys, big enough for the
tuned comparison's budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recbole_fitmm.config import PROPERTIES
from recbole_fitmm.quick_start import build_config
from recbole_fitmm.tuning_space import parse_space
from tests.conftest import toy_config

MODELS = ["BPR", "LightGCN", "VBPR", "FREEDOM", "LGMRec", "DRAGON", "FITMM"]


@pytest.mark.parametrize("model", MODELS)
def test_search_space_names_real_keys_and_allows_the_budget(toy_root: Path, model: str) -> None:
    path = PROPERTIES / "hyper" / f"{model}.hyper"
    assert path.read_text().startswith("#"), "say where the ranges come from"
    space = parse_space(path)
    config = build_config(model, "toy", config_dict=toy_config(toy_root))
    for param in space:
        assert param.name in config.final_config_dict, f"{model}: {param.name} is no key"
        assert param.kind == "choice"
    first = {param.name: param.grid()[0] for param in space}
    build_config(model, "toy", config_dict=toy_config(toy_root, **first))  # values are accepted
    assert math.prod(len(param.grid()) for param in space) >= 12  # the tuned budget
