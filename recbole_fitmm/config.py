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

import os
from pathlib import Path
from typing import Any

from recbole.config import Config as RecBoleConfig

from recbole_fitmm.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = ROOT / "properties"
DATASET_ATOMIC = ROOT / "dataset_atomic"

#: Dataset-hook keys; they belong to RecBole's "Dataset" parameter group (its cache check).
PLUGIN_DATASET_ARGS = ["modalities", "user_modality", "feature_policy"]
TEST_MASKS = ("train_only", "train_valid")


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
        super().__init__(model, dataset, config_file_list, config_dict)
        self._check_plugin_values()

    def _init_parameters_category(self) -> None:
        super()._init_parameters_category()
        # RecBole stores references to its module-level lists and extends them in place; copy.
        self.parameters = {key: list(value) for key, value in self.parameters.items()}
        self.parameters["Dataset"] += PLUGIN_DATASET_ARGS
        self.parameters["Evaluation"] += ["test_mask"]

    def _load_cmd_line(self) -> dict[str, Any]:
        """The library never reads ``sys.argv``: scripts pass ``--key=value`` in ``config_dict``
        (see :func:`recbole_fitmm.cli.parse_overrides`)."""
        return {}

    def _get_model_and_dataset(self, model: Any, dataset: Any) -> tuple[str, type, str]:
        from recbole_fitmm.utils import get_model

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
        self._update_internal_config_dict(str(PROPERTIES / "overall.yaml"))
        self.internal_config_dict["data_path"] = str(DATASET_ATOMIC)
        model_file = PROPERTIES / "model" / f"{model}.yaml"
        if model_file.is_file():
            self._update_internal_config_dict(str(model_file))
        dataset_file = PROPERTIES / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            values = self._update_internal_config_dict(str(dataset_file))
            self.parameters["Dataset"] += [k for k in values if k not in self.parameters["Dataset"]]

    def _check_plugin_values(self) -> None:
        mask = self.final_config_dict.get("test_mask")
        if mask not in TEST_MASKS:
            raise ConfigError(f"test_mask is {mask!r}; expected one of {TEST_MASKS}")
        data_path = self.final_config_dict["data_path"]
        if not os.path.isdir(data_path):
            raise ConfigError(
                f"dataset folder {data_path} does not exist; convert the data first "
                "(python -m recbole_fitmm.data.convert) or set data_path"
            )
