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
    """The trainer class for a model, with the plugin's safe, resumable checkpoints.

    A plugin model's own ``<Model>Trainer`` if its module defines one, else RecBole's trainer for
    the model; for general and traditional models (plugin and built-in) the result always has
    :class:`recbole_fitmm.trainer.CheckpointMixin` in front. Other model types (sequential,
    context-aware, knowledge-based) keep RecBole's trainer.

    Args:
        model_type: The model's ``ModelType``.
        model_name: The model's name.

    Returns:
        A trainer class taking ``(config, model)``.
    """
    from recbole.trainer import Trainer as RecBoleTrainer
    from recbole.utils import ModelType

    from recbole_fitmm.trainer import with_checkpoints

    trainer = None
    if model_name in PLUGIN_MODELS:
        module = importlib.import_module(PLUGIN_MODELS[model_name])
        trainer = getattr(module, f"{model_name}Trainer", None)
    if trainer is None:
        trainer = recbole_get_trainer(model_type, model_name)
    general = model_name in PLUGIN_MODELS or model_type in (
        ModelType.GENERAL,
        ModelType.TRADITIONAL,
    )
    if general and issubclass(trainer, RecBoleTrainer):
        return with_checkpoints(trainer)
    return trainer


def check_dataset_files(config: Any) -> None:
    """Fail early, naming the file and the problem, on a missing or malformed dataset.

    Checks the dataset folder (RecBole would otherwise try to download an unknown dataset and may
    prompt on stdin), then every atomic file RecBole will read: present, non-empty, well-formed
    header and rows, ids present (:func:`recbole_fitmm.data.validate.check_atomic_file`).

    Raises:
        DataError: The first problem found.
    """
    from recbole_fitmm.data.validate import atomic_files, check_atomic_file

    folder = Path(config["data_path"])
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    for path, source in atomic_files(config):
        if not path.is_file():
            what = "interaction" if source == "inter" else f"{source} feature"
            raise DataError(f"{what} file {path} does not exist")
        check_atomic_file(path, source, config)


def create_dataset(config: Any) -> Any:
    """Build the dataset after checking its files, then apply the interaction policies.

    Plugin models get the multimodal hook (:class:`~recbole_fitmm.data.dataset.MultiModalDataset`),
    other models RecBole's dataset. Duplicate and cold-user interactions are then handled as
    ``duplicate_policy`` and ``cold_user_policy`` say
    (:func:`~recbole_fitmm.data.validate.apply_interaction_policies`).

    Args:
        config: The run's configuration.

    Returns:
        The dataset, not yet split.

    Raises:
        DataError: A file is missing or malformed, or a policy refuses the data.
    """
    from recbole_fitmm.data.validate import apply_interaction_policies

    check_dataset_files(config)
    if is_plugin_model(config["model"]):
        from recbole_fitmm.data.dataset import MultiModalDataset

        dataset = MultiModalDataset(config)
    else:
        dataset = recbole_create_dataset(config)
    apply_interaction_policies(dataset, config)
    return dataset
