"""Safe checkpoints: tensors and plain data only, read with ``torch.load(weights_only=True)``.

A run writes two checkpoints into ``checkpoint_dir`` (both atomically, each with a JSON
sidecar ``<file>.json``):

* ``<model>-<dataset>-<time>-<id>.pth`` — the best-validation weights (``kind: best``);
* ``<model>-<dataset>-<time>-<id>.last.pth`` — everything needed to resume exactly
  (``kind: last``): weights, optimizer state, epoch, best score and result, early-stopping
  counter, and the random states of python, numpy, torch (CPU and CUDA) and of the training
  dataloader's shuffling generator.

Unlike RecBole's checkpoints they hold no pickled ``Config``: the configuration is stored as
plain data in the provenance record (:mod:`recbole_fitmm.provenance`). This module is the file
format only (write, read, verify, find); rebuilding a model from a checkpoint is the run layer's
(:func:`recbole_fitmm.inference.load_model`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recbole_fitmm.errors import CheckpointError
from recbole_fitmm.io import atomic_write
from recbole_fitmm.provenance import (
    json_safe,
    plain_config,
    sidecar_path,
    to_plain,
    write_json,
)

#: Format tag stored in every checkpoint.
FORMAT = "recbole_fitmm.checkpoint/1"
LAST_SUFFIX = ".last.pth"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Atomically write a checkpoint and its JSON sidecar.

    Args:
        path: Destination ``.pth`` file.
        state: Tensors and plain data only; must hold ``kind`` and ``provenance``. The sidecar
            receives every plain entry except the weights, optimizer and random states.

    Returns:
        The checkpoint path.
    """
    payload = {"format": FORMAT, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))
    heavy = {"state_dict", "other_parameter", "optimizer", "rng"}
    write_json(
        sidecar_path(path),
        {"checkpoint": Path(path).name, **{k: v for k, v in payload.items() if k not in heavy}},
    )
    return Path(path)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by the plugin, without unpickling arbitrary objects.

    Args:
        path: A ``.pth`` file written by :func:`save_checkpoint`.
        map_location: Device the tensors are moved to.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: The file is missing, truncated, not a plugin checkpoint (RecBole's own
            checkpoints pickle a ``Config`` and are refused), or of an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = next((line for line in lines if "Unsupported" in line), None)
        first = first or (lines[0] if lines else type(err).__name__)
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({first}); it is corrupt or not written "
            "by recbole_fitmm (RecBole's own checkpoints pickle their Config and are not loaded)"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} checkpoint")
    return checkpoint


def check_dataset(checkpoint: Mapping[str, Any], path: str | Path, fingerprint: Mapping) -> None:
    """Fail unless the checkpoint was made from data with the given fingerprint.

    Args:
        checkpoint: A checkpoint dictionary.
        path: Its file, for the message.
        fingerprint: The current dataset's fingerprint (:func:`dataset_fingerprint`).

    Raises:
        CheckpointError: The fingerprints differ; the message lists the files that changed.
    """
    saved = checkpoint["provenance"]["dataset_fingerprint"]
    if saved["sha256"] == fingerprint["sha256"]:
        return
    old, new = saved["files"], fingerprint["files"]
    changed = sorted(
        role
        for role in set(old) | set(new)
        if old.get(role, {}).get("sha256") != new.get(role, {}).get("sha256")
    )
    raise CheckpointError(
        f"checkpoint {path} was made from other data (dataset "
        f"{checkpoint['provenance']['dataset']!r}); files that differ: {', '.join(changed)}"
    )


def capture_rng(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Random states of python, numpy, torch (CPU, CUDA) and the training dataloader.

    Args:
        loader_generator: The training dataloader's shuffling generator (RecBole seeds one per
            dataloader), or ``None``.

    Returns:
        Tensors and plain data only.
    """
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }
    return state


def restore_rng(state: Mapping[str, Any], loader_generator: torch.Generator | None) -> None:
    """Restore the states captured by :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            nps["keys"].cpu().numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"].cpu())


def _last_checkpoints(checkpoint_dir: str | Path, model: str, dataset: str) -> list[Path]:
    """Every ``<model>-<dataset>-*.last.pth`` in ``checkpoint_dir``, newest first."""
    pattern = f"{model}-{str(dataset).replace(os.sep, '_')}-*{LAST_SUFFIX}"
    found = Path(checkpoint_dir).glob(pattern)
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a folder's newest best checkpoint (its ``*.pth`` but ``*.last.pth``).

    Args:
        path: A ``.pth`` file or a ``checkpoint_dir``.

    Returns:
        The checkpoint file.

    Raises:
        CheckpointError: The folder holds no best checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    best = [p for p in path.glob("*.pth") if not p.name.endswith(LAST_SUFFIX)]
    if not best:
        raise CheckpointError(f"{path} holds no best checkpoint (*.pth)")
    return max(best, key=lambda p: p.stat().st_mtime_ns)


def find_latest(checkpoint_dir: str | Path, model: str, dataset: str) -> Path:
    """The most recent "last" checkpoint of ``model`` on ``dataset`` in ``checkpoint_dir``.

    Args:
        checkpoint_dir: Folder holding the checkpoints.
        model: Model name.
        dataset: Dataset name.

    Returns:
        The newest ``<model>-<dataset>-*.last.pth`` by modification time.

    Raises:
        CheckpointError: There is none.
    """
    candidates = _last_checkpoints(checkpoint_dir, model, dataset)
    if not candidates:
        raise CheckpointError(
            f"resume_from: latest found no {model}-{dataset}-*{LAST_SUFFIX} in {checkpoint_dir}"
        )
    return candidates[0]


def find_resumable(config: Any, fingerprint: Mapping[str, Any]) -> Path | None:
    """The newest "last" checkpoint of a run with exactly this configuration.

    A candidate is a ``<model>-<dataset>-*.last.pth`` in ``config["checkpoint_dir"]`` whose
    stored resolved configuration equals ``config``'s
    (``resume_from`` aside; the seed is part of it) and whose dataset fingerprint matches the files
    on disk. Unreadable sidecars are skipped.

    Args:
        config: The resolved ``Config`` of the run about to start.
        fingerprint: The fingerprint of its data files.

    Returns:
        The checkpoint to resume from (a run that had finished training resumes to its test
        evaluation), or ``None``.
    """
    # compared as they read back from JSON (tuples become lists, non-finite floats strings)
    wanted = json.loads(json.dumps(json_safe(plain_config(config))))
    wanted.pop("resume_from", None)
    for path in _last_checkpoints(config["checkpoint_dir"], config["model"], config["dataset"]):
        try:
            side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
            stored = side["provenance"]["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not isinstance(stored, dict):
            continue
        if {k: v for k, v in stored.items() if k != "resume_from"} != wanted:
            continue
        if side["provenance"].get("dataset_fingerprint", {}).get("sha256") == fingerprint["sha256"]:
            return path
    return None


def load_weights(model: torch.nn.Module, checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Load a checkpoint's weights (and RecBole's ``other_parameter``) into ``model``.

    Args:
        model: The model; tensors are moved to its device.
        checkpoint: A checkpoint dictionary (:func:`read_checkpoint`).
        path: Its file, for messages.

    Raises:
        CheckpointError: The weights do not fit the model (another architecture or size).
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        model.load_state_dict(
            {
                k: v.to(device) if isinstance(v, Tensor) else v
                for k, v in checkpoint["state_dict"].items()
            }
        )
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model {type(model).__name__}: "
            f"{str(err).splitlines()[0]} (was the model configuration changed?)"
        ) from None
    if hasattr(model, "load_other_parameter"):
        model.load_other_parameter(checkpoint.get("other_parameter"))


def plain_result(result: Mapping[str, Any] | None) -> dict[str, float] | None:
    """A metric dictionary as plain floats (``None`` stays ``None``)."""
    if result is None:
        return None
    return {str(key): float(to_plain(value)) for key, value in result.items()}
