"""The data layer's own configuration keys: which feature files to read and what to do with
interactions and feature rows that do not fit (``properties/overall.yaml`` documents each).

Every check of these keys lives here; the run layer calls :func:`check_data_options` right after
building the configuration, before any file is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from recbole_fitmm.errors import ConfigError

FEATURE_POLICIES = ("strict", "lenient")
DUPLICATE_POLICIES = ("error", "drop")
COLD_USER_POLICIES = ("drop", "error", "keep")
#: A modality name becomes part of a file name: ``<dataset>.<modality>.npy``.
MODALITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def modality_names(values: Mapping[str, Any]) -> list[str]:
    """The item modalities of a configuration, as a list (a single name is allowed).

    Args:
        values: The configuration (``Config`` or any mapping).

    Returns:
        Modality names in configuration order; empty when unset.

    Raises:
        ConfigError: ``modalities`` is neither a name nor a list of names.
    """
    modalities = values["modalities"] if "modalities" in values else None
    names = [modalities] if isinstance(modalities, str) else modalities
    if names is not None and (
        not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
    ):
        raise ConfigError(f"modalities is {modalities!r}; expected a list of names")
    return list(names or [])


def _choice(values: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    value = values[key] if key in values else None
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(choices)}")


def check_data_options(values: Mapping[str, Any], needs_features: bool) -> list[str]:
    """Check the data layer's keys: modalities, ``user_modality`` and the three policies.

    Args:
        values: The resolved configuration.
        needs_features: The model reads item features (the plugin's multimodal models).

    Returns:
        The item modality names.

    Raises:
        ConfigError: The first bad value, naming the key and what is allowed.
    """
    _choice(values, "feature_policy", FEATURE_POLICIES)
    _choice(values, "duplicate_policy", DUPLICATE_POLICIES)
    _choice(values, "cold_user_policy", COLD_USER_POLICIES)
    names = modality_names(values)
    if needs_features and not names:
        raise ConfigError(
            f"{values['model']} needs item features: set modalities, e.g. [image, text] "
            "(files <dataset>.<modality>.npy)"
        )
    user = values["user_modality"] if "user_modality" in values else None
    for name in [*names, *([user] if user is not None else [])]:
        if not isinstance(name, str) or not MODALITY_NAME.fullmatch(name):
            raise ConfigError(
                f"modality name {name!r} is not a plain file-name part (letters, digits, _ and -)"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"modalities lists a modality twice: {names}")
    if user is not None and user in names:
        raise ConfigError(f"user_modality {user!r} is also an item modality; use another file")
    return names
