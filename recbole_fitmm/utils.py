"""Model, trainer and dataset lookup: plugin first, RecBole otherwise."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recbole.data import create_dataset as recbole_create_dataset
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_fitmm.errors import ConfigError, DataError

#: Plugin models: name -> module holding a class of the same name. Explicit, no name probing.
PLUGIN_MODELS: dict[str, str] = {
    "FITMM": "recbole_fitmm.model.fitmm",
    "VBPR": "recbole_fitmm.model.vbpr",
    "FREEDOM": "recbole_fitmm.model.freedom",
    "LGMRec": "recbole_fitmm.model.lgmrec",
    "DRAGON": "recbole_fitmm.model.dragon",
}


def is_plugin_model(name: str) -> bool:
    """True when ``name`` is one of the plugin's own (multimodal) models."""
    return name in PLUGIN_MODELS


def get_model(name: str) -> type:
    """The model class called ``name``: a plugin model, else RecBole's built-in one.

    Raises:
        ConfigError: Neither the plugin nor RecBole has a model of that name.
    """
    if name in PLUGIN_MODELS:
        return getattr(importlib.import_module(PLUGIN_MODELS[name]), name)
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError) as err:
        # RecBole probes its model packages in turn; the last one (exlib) needs lightgbm and
        # xgboost, so an unknown name can surface as an ImportError.
        raise ConfigError(
            f"unknown model {name!r}: not a recbole_fitmm model ({', '.join(PLUGIN_MODELS)}) "
            f"and not a RecBole model ({type(err).__name__}: {err})"
        ) from None


def get_trainer(model_type: Any, model_name: str) -> type:
    """The trainer class for a model: the plugin's ``<Model>Trainer`` if any, else RecBole's."""
    if model_name in PLUGIN_MODELS:
        module = importlib.import_module(PLUGIN_MODELS[model_name])
        trainer = getattr(module, f"{model_name}Trainer", None)
        if trainer is not None:
            return trainer
    return recbole_get_trainer(model_type, model_name)


def check_dataset_files(config: Any) -> None:
    """Fail early, with the path, when the dataset folder or a split file is missing.

    RecBole would otherwise try to download an unknown dataset and may prompt on stdin.
    """
    folder = Path(config["data_path"])
    name = config["dataset"]
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    parts = config["benchmark_filename"]
    files = (
        [folder / f"{name}.{part}.inter" for part in parts] if parts else [folder / f"{name}.inter"]
    )
    for path in files:
        if not path.is_file():
            raise DataError(f"interaction file {path} does not exist")


def create_dataset(config: Any) -> Any:
    """Build the dataset: the multimodal hook for plugin models, RecBole's dataset otherwise."""
    check_dataset_files(config)
    if is_plugin_model(config["model"]):
        from recbole_fitmm.data.dataset import MultiModalDataset

        return MultiModalDataset(config)
    return recbole_create_dataset(config)
