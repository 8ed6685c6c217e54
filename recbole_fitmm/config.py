"""The plugin's ``Config``: RecBole's, plus the plugin's defaults, model and dataset yaml files.

Layering, lowest priority first (RecBole's own order, with the plugin's files slotted in as
internal defaults):

1. RecBole's ``properties/overall.yaml`` and built-in model/dataset yaml files;
2. ``properties/overall.yaml`` of this repository — the paper's protocol (``README``);
3. ``properties/model/<Model>.yaml``;
4. ``properties/dataset/<dataset>.yaml`` (written by the converter; e.g. the split files);
5. config files, then ``config_dict``. Unlike RecBole's, this ``Config`` does not read
   ``sys.argv``; the scripts turn ``--key=value`` arguments into ``config_dict`` entries, which
   beat every file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recbole.config import Config as RecBoleConfig

from recbole_fitmm import compat
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.registry import get_model

# RecBole's Config and everything after it need the fixes (numpy 2, scipy >= 1.13, torch.load,
# pandas 3); every path into RecBole's configuration, data and trainer goes through this module.
compat.apply()

_PACKAGE = Path(__file__).resolve().parent
#: Source checkout: the repository holds properties/ and dataset_atomic/ beside the package.
#: Installed wheel: the same files are package data inside it (setup.cfg maps them there).
ROOT = _PACKAGE.parent if (_PACKAGE.parent / "properties").is_dir() else _PACKAGE
PROPERTIES = ROOT / "properties"
DATASET_ATOMIC = ROOT / "dataset_atomic"
#: True when running from a source checkout (outputs may go into the repository's git-ignored
#: folders); False for an installed package (outputs go to the working directory).
CHECKOUT = ROOT != _PACKAGE
#: Where the converter and ``prepare`` write datasets and their yaml by default: the checkout's
#: git-ignored folders, or ``./dataset_atomic`` and ``./properties/dataset`` of the working
#: directory for an installed package (never into the installed package).
OUTPUT_DATA = DATASET_ATOMIC if CHECKOUT else Path("dataset_atomic")
OUTPUT_PROPERTIES = PROPERTIES / "dataset" if CHECKOUT else Path("properties") / "dataset"

#: Dataset-hook keys; they belong to RecBole's "Dataset" parameter group (its cache check).
PLUGIN_DATASET_ARGS = [
    "modalities",
    "user_modality",
    "feature_policy",
    "duplicate_policy",
    "cold_user_policy",
]
TEST_MASKS = ("train_only", "train_valid")
NEG_SAMPLE_POOLS = ("all", "train_items")
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")


class Config(RecBoleConfig):
    """RecBole ``Config`` that resolves plugin models and loads the plugin's yaml files.

    Args:
        model: Model name (plugin or RecBole) or model class.
        dataset: Dataset name; its folder is ``<data_path>/<dataset>``. ``data_path`` defaults to
            this repository's ``dataset_atomic/``.
        config_file_list: Extra yaml files.
        config_dict: Extra values (beaten only by ``--key=value`` on the command line).
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict[str, Any] | None = None,
    ) -> None:
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except ConfigError:
            raise
        except OSError as err:
            raise ConfigError(f"cannot read a configuration file: {err}") from None
        except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError) as err:
            # RecBole's own checks (topk, metrics, eval_args...) and yaml errors.
            raise ConfigError(f"invalid configuration: {err}") from None
        self._check_plugin_values()

    def _init_parameters_category(self) -> None:
        super()._init_parameters_category()
        # RecBole stores references to its module-level lists and extends them in place; copy.
        self.parameters = {key: list(value) for key, value in self.parameters.items()}
        self.parameters["Dataset"] += PLUGIN_DATASET_ARGS
        self.parameters["Evaluation"] += ["test_mask"]
        self.parameters["Training"] += ["neg_sample_pool"]

    def _load_cmd_line(self) -> dict[str, Any]:
        """The library never reads ``sys.argv``: scripts pass ``--key=value`` in ``config_dict``
        (see :func:`recbole_fitmm.cli.parse_overrides`)."""
        return {}

    def _get_model_and_dataset(self, model: Any, dataset: Any) -> tuple[str, type, str]:
        if model is None:
            if "model" not in self.external_config_dict:
                raise ConfigError("no model given: pass model=... or --model=NAME")
            model = self.external_config_dict["model"]
        if isinstance(model, str):
            model_name, model_class = model, get_model(model)
        else:
            model_name, model_class = model.__name__, model
        if dataset is None:
            if "dataset" not in self.external_config_dict:
                raise ConfigError("no dataset given: pass dataset=... or --dataset=NAME")
            dataset = self.external_config_dict["dataset"]
        return model_name, model_class, dataset

    def _load_internal_config_dict(self, model: str, model_class: type, dataset: str) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        overall, model_file, dataset_file = plugin_yaml_files(model, dataset)
        self._update_internal_config_dict(str(overall))
        self.internal_config_dict["data_path"] = str(DATASET_ATOMIC)
        if model_file is not None:
            self._update_internal_config_dict(str(model_file))
        if dataset_file is not None:
            values = self._update_internal_config_dict(str(dataset_file))
            self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]

    def _check_plugin_values(self) -> None:
        check_values(self.final_config_dict)
        data_path = self.final_config_dict["data_path"]
        if not os.path.isdir(data_path):
            raise ConfigError(
                f"dataset folder {data_path} does not exist; convert the data first "
                "(python -m recbole_fitmm.data.convert) or set data_path"
            )


def plugin_yaml_files(model: str, dataset: str) -> tuple[Path, Path | None, Path | None]:
    """The plugin's yaml files that apply to a run, in loading order.

    Args:
        model: Model name.
        dataset: Dataset name.

    Returns:
        ``properties/overall.yaml``, ``properties/model/<model>.yaml`` and
        ``properties/dataset/<dataset>.yaml`` (``None`` where the file does not exist).
    """
    model_file = PROPERTIES / "model" / f"{model}.yaml"
    dataset_file = PROPERTIES / "dataset" / f"{dataset}.yaml"
    return (
        PROPERTIES / "overall.yaml",
        model_file if model_file.is_file() else None,
        dataset_file if dataset_file.is_file() else None,
    )


def plugin_yaml_texts(model: str, dataset: str) -> list[str]:
    """The text of every file of :func:`plugin_yaml_files` (empty for a missing one)."""
    return [path.read_text() if path else "" for path in plugin_yaml_files(model, dataset)]


def _int(values: Mapping[str, Any], key: str, minimum: int) -> None:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} is {value!r}; expected an integer >= {minimum}")


def _choice(values: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if values.get(key) not in choices:
        raise ConfigError(f"{key} is {values.get(key)!r}; expected one of {', '.join(choices)}")


def check_values(values: Mapping[str, Any]) -> None:
    """Check the run-level configuration values.

    Models check their own hyperparameters (``model/params.py``) and the data layer its options
    (:func:`recbole_fitmm.data.options.check_data_options`).

    Args:
        values: The resolved configuration (``Config.final_config_dict``).

    Raises:
        ConfigError: The first value out of range, naming the key, the value and what is allowed.
    """
    _choice(values, "test_mask", TEST_MASKS)
    _choice(values, "neg_sample_pool", NEG_SAMPLE_POOLS)
    for key in ("epochs", "train_batch_size", "eval_batch_size"):
        _int(values, key, 1)
    _int(values, "stopping_step", 0)
    _int(values, "eval_step", -(2**31))
    _int(values, "seed", -(2**63))
    rate = values.get("learning_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
        raise ConfigError(f"learning_rate is {rate!r}; expected a number > 0")
    decay = values.get("weight_decay")
    if decay is not None and (
        isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < math.inf
    ):
        raise ConfigError(f"weight_decay is {decay!r}; expected a number >= 0")
    learner = values.get("learner")
    if not isinstance(learner, str) or learner.lower() not in LEARNERS:
        raise ConfigError(f"learner is {learner!r}; expected one of {', '.join(LEARNERS)}")
    topk = values.get("topk") or []
    if not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk):
        raise ConfigError(f"topk is {values.get('topk')!r}; expected positive integers")
    metrics = [str(m).lower() for m in values.get("metrics") or []]
    valid_metric = values.get("valid_metric")
    if not isinstance(valid_metric, str):
        raise ConfigError(f"valid_metric is {valid_metric!r}; expected e.g. Recall@20")
    name, at, k = valid_metric.lower().partition("@")
    if name not in metrics or (at and (not k.isdigit() or int(k) not in topk)):
        raise ConfigError(
            f"valid_metric {valid_metric!r} is not computed: metrics are {values.get('metrics')} "
            f"at topk {topk}"
        )
    _int(values, "checkpoint_every", 0)
    seconds = values.get("checkpoint_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ConfigError(
            f"checkpoint_seconds is {seconds!r}; expected a number >= 0 (0: not by time)"
        )
    resume = values.get("resume_from")
    if resume is not None and (not isinstance(resume, str) or not resume):
        raise ConfigError(f"resume_from is {resume!r}; expected a checkpoint path or 'latest'")
