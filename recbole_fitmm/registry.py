"""Model lookup: the plugin's own models by an explicit map, RecBole's built-ins otherwise.

This module sits at the bottom of the package with :mod:`~recbole_fitmm.errors`,
:mod:`~recbole_fitmm.io` and :mod:`~recbole_fitmm.version`; it imports the model classes (which
depend on nothing above them) and RecBole's model lookup, nothing else of the package.
"""

from __future__ import annotations

import importlib.util

import torch
from recbole.utils import get_model as recbole_get_model

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.model.dragon import DRAGON
from recbole_fitmm.model.fitmm import FITMM
from recbole_fitmm.model.freedom import FREEDOM
from recbole_fitmm.model.lgmrec import LGMRec
from recbole_fitmm.model.vbpr import VBPR

#: Plugin models by name. Explicit: no name probing.
PLUGIN_MODELS: dict[str, type] = {
    "FITMM": FITMM,
    "VBPR": VBPR,
    "FREEDOM": FREEDOM,
    "LGMRec": LGMRec,
    "DRAGON": DRAGON,
}

#: Third-party packages some RecBole models import, and where they come from. A missing one
#: ends in a one-line error naming the package and the extra that installs it.
EXTRA_PACKAGES: dict[str, str] = {
    "faiss": "faiss-cpu",
    "kmeans_pytorch": "kmeans-pytorch",
    "community": "python-louvain",
    "networkx": "networkx",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
}

#: RecBole models that import an extra package on every run (checked before training starts).
REQUIRED_PACKAGES: dict[str, tuple[str, ...]] = {"NCL": ("faiss",)}


def is_plugin_model(name: str) -> bool:
    """True when ``name`` is one of the plugin's own (multimodal) models."""
    return name in PLUGIN_MODELS


def missing_package_message(model: str, module: str) -> str:
    """The one-line error for a RecBole model whose extra package is not installed.

    Args:
        model: Model name.
        module: Name of the module that failed to import (e.g. ``faiss``).

    Returns:
        The message, naming the pip package and the ``recbole-extras`` extra.
    """
    top = module.split(".")[0]
    package = EXTRA_PACKAGES.get(top, top)
    return (
        f"model {model} needs the package {package!r}, which is not installed: "
        f"pip install {package} (or pip install 'recbole-fitmm[recbole-extras]')"
    )


def get_model(name: str) -> type:
    """The model class called ``name``: a plugin model, else RecBole's built-in one.

    Args:
        name: Model name as RecBole spells it (``FITMM``, ``LightGCN``...).

    Returns:
        The model class.

    Raises:
        ConfigError: Neither the plugin nor RecBole has a model of that name, or the RecBole
            model needs a package that is not installed.
    """
    if name in PLUGIN_MODELS:
        return PLUGIN_MODELS[name]
    for module in REQUIRED_PACKAGES.get(name, ()):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(missing_package_message(name, module))
    anomaly = torch.is_anomaly_enabled()
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError) as err:
        # RecBole probes its model packages in turn; the last one (exlib) needs lightgbm and
        # xgboost, so an unknown name can surface as an ImportError.
        raise ConfigError(
            f"unknown model {name!r}: not a recbole_fitmm model ({', '.join(PLUGIN_MODELS)}) "
            f"and not a RecBole model ({type(err).__name__}: {err})"
        ) from None
    finally:
        # RecBole's SINE module switches autograd's anomaly detection on for the whole process
        # when it is imported (any lookup that reaches recbole.model.sequential_recommender):
        # every later backward would run several times slower and raise on a NaN.
        torch.autograd.set_detect_anomaly(anomaly)
