"""The run layer: configuration, dataset and dataloaders of a run, one run of any model under the
plugin's protocol, the tuner's objective, and rebuilding a trained model from its checkpoint.

Everything above this module (comparison, tuning, explanation, the command lines) starts runs and
loads models through it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.utils import init_logger, init_seed

from recbole_fitmm.checkpoint import (
    find_latest,
)
from recbole_fitmm.config import Config
from recbole_fitmm.data.dataset import MultiModalDataset
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.data.options import check_data_options
from recbole_fitmm.data.validate import apply_interaction_policies, check_dataset_files
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.provenance import build_provenance, write_json
from recbole_fitmm.registry import get_model, is_plugin_model, missing_package_message
from recbole_fitmm.trainer import get_trainer


def build_config(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
) -> Config:
    """The resolved configuration of a run, with every plugin-level value checked.

    Args:
        model: Model name.
        dataset: Dataset name.
        config_file_list: Extra yaml files.
        config_dict: Extra values.

    Returns:
        The ``Config``.

    Raises:
        ConfigError: A value is missing or out of range (run-level, data-level or RecBole's).
    """
    config = Config(model, dataset, config_file_list, config_dict)
    check_data_options(config, needs_features=is_plugin_model(config["model"]))
    return config


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
    check_dataset_files(config)
    if is_plugin_model(config["model"]):
        dataset = MultiModalDataset(config)
    else:
        dataset = recbole_create_dataset(config)
    apply_interaction_policies(dataset, config)
    return dataset


def build_model(config: Any, train_data: Any) -> Any:
    """The run's model, built on its training split and moved to its device.

    Args:
        config: The run's configuration.
        train_data: The training dataloader (graphs are built from its dataset).

    Returns:
        The model (plugin or RecBole).
    """
    with warnings.catch_warnings():
        # RecBole's LightGCN (and NGCF...) build their graphs with the deprecated
        # torch.sparse.FloatTensor; nothing a user can change.
        warnings.filterwarnings("ignore", r"torch\.sparse\.SparseTensor", UserWarning)
        model = get_model(config["model"])(config, train_data._dataset)
    return model.to(config["device"])


def apply_test_mask(config: Any, train_data: Any, test_data: Any) -> None:
    """Set which items are masked when ranking for the test split.

    RecBole masks every item the user saw in train **and** valid (``test_mask: train_valid``).
    MMRec and FITMM mask only training items (``test_mask: train_only``): validation items stay
    rankable, but are not positives.

    Args:
        config: The run's configuration.
        train_data: Training dataloader (its dataset holds the training interactions).
        test_data: Full-sort test dataloader; its ``uid2history_item`` is rewritten in place.
    """
    if config["test_mask"] != "train_only" or not hasattr(test_data, "uid2history_item"):
        return
    train = train_data._dataset.inter_matrix(form="csr")
    for uid in np.asarray(test_data.uid_list):
        positives = test_data.uid2positive_item[uid]
        seen = train.indices[train.indptr[uid] : train.indptr[uid + 1]]
        history = np.setdiff1d(seen, positives.numpy())
        test_data.uid2history_item[uid] = torch.as_tensor(history, dtype=torch.int64)


def apply_negative_pool(config: Any, train_data: Any) -> None:
    """Restrict training negatives to items of the training split (``neg_sample_pool``).

    RecBole's sampler draws item ids uniformly from ``1 .. n_items - 1`` and rejects the user's
    positives (``all``). MMRec's loader (and so the FITMM release) draws from the items present
    in the training split only (``train_items``): an item seen only in valid/test never becomes a
    negative. Same rejection of positives, one ``randint`` per draw as RecBole's.

    Args:
        config: The run's configuration.
        train_data: Training dataloader; its sampler's uniform draw is replaced in place.

    Raises:
        ConfigError: ``train_items`` with a non-uniform negative distribution.
    """
    sampler = getattr(train_data, "_sampler", None)
    if config["neg_sample_pool"] != "train_items" or sampler is None:
        return
    if getattr(sampler, "distribution", "uniform") != "uniform":
        raise ConfigError("neg_sample_pool: train_items needs uniform negative sampling")
    items = train_data._dataset.inter_feat[config["ITEM_ID_FIELD"]].numpy()
    pool = np.unique(items)
    sampler._uni_sampling = lambda n: pool[np.random.randint(0, len(pool), n)]


def data_preparation(config: Any, dataset: Any) -> tuple[Any, Any, Any]:
    """RecBole's ``data_preparation`` followed by the plugin's negative pool and test mask."""
    train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    apply_negative_pool(config, train_data)
    apply_test_mask(config, train_data, test_data)
    return train_data, valid_data, test_data


def run_recbole_fitmm(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train one model on one dataset, select on validation, then test once.

    Works for plugin models (FITMM, ...) and every RecBole built-in general model (BPR,
    LightGCN, ...), all under the plugin's protocol (``properties/overall.yaml``).

    Args:
        model: Model name.
        dataset: Dataset name (a folder under ``data_path``).
        config_file_list: Extra yaml files.
        config_dict: Extra configuration values.
        saved: Keep the best checkpoint and test with it (otherwise the last weights are tested).
        resume_from: Continue an interrupted run from its ``*.last.pth`` checkpoint, or
            ``"latest"`` for the newest one of this model and dataset in ``checkpoint_dir``
            (default: the ``resume_from`` configuration value). With the same configuration the
            result equals that of an uninterrupted run.

    With ``reproducibility: True`` (the default) a CPU run uses torch's deterministic algorithms,
    so two runs with the same seed give the same weights and metrics. On a GPU only RecBole's
    cuDNN settings apply (sparse products accumulate in a nondeterministic order there).

    Returns:
        ``model``, ``dataset``, ``best_valid_score``, ``valid_score_bigger``,
        ``best_valid_result``, ``test_result`` (metric -> float), ``train_seconds``,
        ``checkpoint`` (best checkpoint path or ``None``), ``last_checkpoint`` (resumable
        checkpoint or ``None``), ``result_file`` (JSON beside the checkpoint or ``None``),
        ``provenance`` (plain data: configuration, versions, dataset fingerprint) and ``config``
        (the resolved ``Config``).

    Raises:
        ConfigError: Invalid configuration.
        DataError: Missing or malformed data.
        CheckpointError: ``resume_from`` is unreadable or belongs to another model or dataset.
    """
    config = build_config(model, dataset, config_file_list, config_dict)
    cpu = torch.device(config["device"]).type == "cpu"
    with deterministic(bool(config["reproducibility"]) and cpu), run_logging(config):
        try:
            return _run(config, saved, resume_from)
        except ModuleNotFoundError as err:  # a RecBole model's optional package (NCL: faiss)
            if err.name and err.name.split(".")[0] not in ("recbole", "recbole_fitmm"):
                raise ConfigError(missing_package_message(config["model"], err.name)) from None
            raise


@contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Use torch's deterministic algorithms inside the block (``reproducibility: True``).

    Multi-threaded CPU kernels (e.g. the accumulation behind ``embedding[index]`` gradients)
    otherwise differ in the last bits from run to run. Operations without a deterministic
    version only warn. The previous setting is restored on exit.

    Args:
        enabled: Turn deterministic algorithms on (off: torch's default kernels).
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


@contextmanager
def run_logging(config: Any) -> Iterator[None]:
    """RecBole's logging for one run: its handlers are removed when the run ends.

    RecBole configures the root logger with ``logging.basicConfig``, which does nothing once the
    root has handlers: without this, every later run in the same process (a comparison, a
    search) would write into the first run's log file.

    Args:
        config: The run's configuration.
    """
    root = logging.getLogger()
    before = set(root.handlers)
    init_logger(config)
    added = [handler for handler in root.handlers if handler not in before]
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()


def _run(config: Config, saved: bool, resume_from: str | Path | None) -> dict[str, Any]:
    init_seed(config["seed"], config["reproducibility"])
    logger = logging.getLogger()
    logger.info(config)

    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = build_model(config, train_data)
    logger.info(net)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    resume = resume_from or config["resume_from"]
    if resume == "latest":
        resume = find_latest(config["checkpoint_dir"], config["model"], config["dataset"])
    if resume:
        logger.info(f"resuming from {resume}")
        trainer.resume_checkpoint(resume)

    start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    # seconds of training, including those before an interruption when resumed
    train_seconds = time.perf_counter() - start + getattr(trainer, "resumed_train_seconds", 0.0)
    diverged = getattr(trainer, "diverged", None)
    testable = not (saved and diverged and trainer.best_epoch is None)
    test_result = None
    if testable:
        test_result = trainer.evaluate(
            test_data, load_best_model=saved, show_progress=config["show_progress"]
        )
    provenance = getattr(trainer, "provenance", None) or build_provenance(
        config, dataset_fingerprint(config)
    )
    has_best = saved and testable
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": _floats(best_valid_result),
        "test_result": _floats(test_result) if test_result is not None else None,
        "train_seconds": train_seconds,
        "history": getattr(trainer, "history", []),
        "diverged": diverged,
        "checkpoint": trainer.saved_model_file if has_best else None,
        "last_checkpoint": getattr(trainer, "last_model_file", None) if saved else None,
        "result_file": None,
        "provenance": provenance,
        "config": config,
    }
    if saved:
        stem = Path(getattr(trainer, "last_model_file", trainer.saved_model_file))
        name = stem.name.removesuffix(".last.pth").removesuffix(".pth")
        result["result_file"] = str(stem.with_name(name + ".result.json"))
        record = {k: v for k, v in result.items() if k != "config"}
        record["resumed_from"] = str(resume) if resume else None
        write_json(result["result_file"], record)
    return result


def objective_function(
    config_dict: dict[str, Any] | None = None,
    config_file_list: list[str] | None = None,
    saved: bool = True,
) -> dict[str, Any]:
    """Objective for ``recbole.trainer.HyperTuning`` (hyperopt): one run, selected on valid.

    Args:
        config_dict: The trial's values, including ``model`` and ``dataset``.
        config_file_list: Fixed yaml files.
        saved: Test with the best-validation checkpoint.

    Returns:
        The dictionary ``HyperTuning`` expects: ``model``, ``best_valid_score``,
        ``valid_score_bigger``, ``best_valid_result``, ``test_result``. No Ray reporting.
    """
    result = run_recbole_fitmm(
        config_file_list=config_file_list, config_dict=config_dict, saved=saved
    )
    return {
        key: result[key]
        for key in (
            "model",
            "best_valid_score",
            "valid_score_bigger",
            "best_valid_result",
            "test_result",
        )
    }


def _floats(result: dict[str, Any] | None) -> dict[str, float]:
    return {key: float(value) for key, value in (result or {}).items()}
