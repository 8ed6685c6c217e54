"""FITMM and multimodal baselines as a RecBole 1.2.1 plugin.

Layers, bottom to top (a module imports only from layers below it; ``tests/test_code_quality.py``
checks that the import graph has no cycle):

1. ``errors``, ``io``, ``version``, ``compat``, ``cli`` (argument parsing, result printing),
   ``stats`` (paired tests); ``model/`` (plain PyTorch building blocks and the models;
   ``model.layers`` and ``model.spectral`` do not import RecBole); ``registry`` (model names ->
   classes);
2. ``config`` (RecBole ``Config`` + the plugin's yaml files; applies ``compat``), ``provenance``;
3. ``data/`` (files, options, checks, the dataset hook, converter, synthetic data) and
   ``checkpoint`` (the file format);
4. ``resumable`` (checkpoints, history, divergence), ``trainer`` (``get_trainer`` and the trainer
   classes);
5. ``quick_start`` — the run layer: datasets, dataloaders, one run — and ``inference`` (loading
   a trained model, top-k);
6. ``compare``/``compare_table``/``per_user``, ``tuning``/``tuning_ray``/``compare_tuned``,
   ``explain``, ``plots``, ``prepare``, ``encode``, ``recommend`` and ``commands``; the scripts
   at the repository root on top.

Importing the package itself is cheap: the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from recbole_fitmm.version import __version__

_EXPORTS = {
    "Config": "recbole_fitmm.config",
    "get_model": "recbole_fitmm.registry",
    "get_trainer": "recbole_fitmm.trainer",
    "objective_function": "recbole_fitmm.quick_start",
    "run_recbole_fitmm": "recbole_fitmm.quick_start",
    "load_model": "recbole_fitmm.inference",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Load an exported name from its module on first access (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recbole_fitmm' has no attribute {name!r}")
