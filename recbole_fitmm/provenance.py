"""What a result or checkpoint was made from: plain configuration, versions, dataset fingerprint.

Every checkpoint and result file the plugin writes carries a *provenance* record, both inside the
file (as plain data, so ``torch.load(weights_only=True)`` reads it) and in a JSON sidecar beside
it (``<file>.json``):

* ``config``: the resolved configuration as plain YAML/JSON data (enums by name, devices as text);
* ``config_input``: the subset that rebuilds the same configuration
  (:func:`recbole_fitmm.checkpoint.load_model` feeds it back as ``config_dict``);
* ``versions``: python, torch, recbole, numpy, scipy, pandas, recbole_fitmm;
* ``dataset_fingerprint``: sha256 of every split and feature file the run read, by role
  (``train.inter``, ``image.npy``...), and one sha256 over all of them. Loading or resuming a
  checkpoint against data with another fingerprint fails with
  :class:`~recbole_fitmm.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
import time
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas
import recbole
import scipy
import torch

from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.version import __version__

#: Keys ``Config`` derives itself; feeding them back would be wrong (``data_path`` gets the
#: dataset name appended, enums would arrive as strings) or pointless.
DERIVED_KEYS = frozenset(
    {
        "model",
        "dataset",
        "data_path",
        "MODEL_TYPE",
        "MODEL_INPUT_TYPE",
        "eval_type",
        "device",
        "single_spec",
        "local_rank",
        "valid_metric_bigger",
        "valid_neg_sample_args",
        "test_neg_sample_args",
        "resume_from",
    }
)

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def to_plain(value: Any) -> Any:
    """Convert a configuration value to plain data (None, bool, int, float, str, list, dict).

    Args:
        value: Any value found in a RecBole ``Config``.

    Returns:
        The value with numpy scalars unwrapped, tuples/sets as lists, enums by name and every
        other object as its ``str``.
    """
    if value is None:
        return None
    for kind in (bool, str, int, float):  # exact built-in types, also for subclasses
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.generic):
        return to_plain(value.item())
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_plain(item) for item in value), key=str)
    return str(value)


def is_plain(value: Any) -> bool:
    """True when ``value`` is already plain data (tuples count as lists)."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain(item) for item in value)
    return False


def plain_config(config: Any) -> dict[str, Any]:
    """The whole resolved configuration as plain data, keys sorted."""
    values = config.final_config_dict
    return {key: to_plain(values[key]) for key in sorted(values)}


def config_input(config: Any) -> dict[str, Any]:
    """The configuration values that rebuild ``config`` when passed back as ``config_dict``.

    Args:
        config: A resolved ``Config``.

    Returns:
        Every value that is plain data already, except the keys ``Config`` derives itself
        (:data:`DERIVED_KEYS`).
    """
    values = config.final_config_dict
    return {
        key: to_plain(values[key])
        for key in sorted(values)
        if key not in DERIVED_KEYS and is_plain(values[key])
    }


_REVISION: list[str | None] = []


def source_revision() -> str | None:
    """The git revision of the package's source checkout, or ``None`` for an installed package.

    Uncommitted changes to the package, ``properties/`` or ``setup.cfg`` are part of it: the
    result is ``<commit>+dirty.<sha256 of the diff, 12 hex digits>``. Computed once per process.

    Returns:
        The revision, or ``None`` when the package does not run from a git checkout (or git is
        missing).
    """
    if not _REVISION:
        root = Path(__file__).resolve().parent.parent
        revision = None
        if (root / ".git").exists():
            try:
                commit = _git(root, "rev-parse", "HEAD").strip()
                diff = _git(root, "diff", "HEAD", "--", "recbole_fitmm", "properties", "setup.cfg")
                revision = commit
                if diff:
                    digest = hashlib.sha256(diff.encode("utf-8")).hexdigest()[:12]
                    revision = f"{commit}+dirty.{digest}"
            except (OSError, subprocess.CalledProcessError):
                revision = None
        _REVISION.append(revision)
    return _REVISION[0]


_CODE: list[str] = []


def source_digest(package: Path) -> str:
    """sha256 (16 hex digits) over the Python sources under ``package``: each file's path
    relative to it and its bytes, in path order. Other files (caches, notes) do not count.

    Args:
        package: The package folder.

    Returns:
        The digest; equal for two folders holding the same sources (a checkout and an install).
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode("utf-8") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_digest() -> str:
    """The code a run's numbers depend on: :func:`source_digest` of this package and the
    versions of python and the libraries (:func:`versions` without the git revision).

    Stored runs and searches are keyed by it instead of the git revision, so a commit that
    changes only documentation, tests, benchmarks or another model's yaml keeps them reusable,
    while any change to the package's code (or a library upgrade) does not. Computed once per
    process.

    Returns:
        ``<source digest>-<sha256 of the versions, 8 hex digits>``.
    """
    if not _CODE:
        libraries = {k: v for k, v in versions().items() if k != "recbole_fitmm_revision"}
        pinned = hashlib.sha256(json.dumps(libraries, sort_keys=True).encode("utf-8"))
        _CODE.append(f"{source_digest(Path(__file__).resolve().parent)}-{pinned.hexdigest()[:8]}")
    return _CODE[0]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def versions() -> dict[str, str]:
    """Versions of python and of the libraries a result depends on."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "recbole": recbole.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "recbole_fitmm": __version__,
        "recbole_fitmm_revision": source_revision() or "",
    }


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (cached per path, size and modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def fingerprint(files: Mapping[str, Path]) -> dict[str, Any]:
    """Fingerprint of a dataset.

    Args:
        files: Role -> path (:func:`recbole_fitmm.data.files.run_files`). Missing files are
            skipped.

    Returns:
        ``{"sha256": <hash over all files>, "files": {role: {"sha256", "bytes"}}}``. The file
        names do not enter the hash, only the roles and the contents: a renamed copy of a
        dataset has the same fingerprint.
    """
    entries = {
        role: {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        for role, path in sorted(files.items())
        if path.is_file()
    }
    total = hashlib.sha256(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest()
    return {"sha256": total, "files": entries}


def build_provenance(config: Any, dataset_fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record of a run (see the module docstring).

    Args:
        config: The run's resolved ``Config``.
        dataset_fingerprint: Fingerprint of the files the run reads
            (:func:`recbole_fitmm.data.files.dataset_fingerprint`).

    Returns:
        Plain data: ``model``, ``dataset``, ``data_path`` (absolute), ``created`` (UTC, ISO
        8601), ``config``, ``config_input``, ``versions``, ``dataset_fingerprint``.
    """
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "data_path": str(Path(config["data_path"]).resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": plain_config(config),
        "config_input": config_input(config),
        "versions": versions(),
        "dataset_fingerprint": dict(dataset_fingerprint),
    }


def json_safe(value: Any) -> Any:
    """Plain data that strict JSON accepts: non-finite floats become strings (``"-inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return to_plain(value)


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Atomically write ``data`` as indented, strict JSON."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an output file: ``<file>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")
