"""Safe checkpoints: tensors and plain data only, read with ``torch.load(weights_only=True)``.

A run writes two checkpoints into ``checkpoint_dir`` (both atomically, each with a JSON
sidecar ``<file>.json``):

* ``<model>-<dataset>-<time>-<id>.pth`` — the best-validation weights (``kind: best``);
* ``<model>-<dataset>-<time>-<id>.last.pth`` — everything needed to resume exactly
  (``kind: last``): weights, optimizer state, epoch, best score and result, early-stopping
  counter, and the random states of python, numpy, torch (CPU and CUDA) and of the training
  dataloader's shuffling generator.

Unlike RecBole's checkpoints they hold no pickled ``Config``: the configuration is stored as
plain data in the provenance record (:mod:`recbole_fitmm.provenance`). :func:`load_model`
rebuilds configuration, dataset and model from a checkpoint; :func:`recommend` turns a model into
top-k lists in raw tokens.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recbole_fitmm.errors import CheckpointError, DataError
from recbole_fitmm.io import atomic_write
from recbole_fitmm.provenance import (
    dataset_fingerprint,
    json_safe,
    plain_config,
    sidecar_path,
    to_plain,
    write_json,
)

#: Format tag stored in every checkpoint.
FORMAT = "recbole_fitmm.checkpoint/1"
LAST_SUFFIX = ".last.pth"


def last_path_for(best_path: str | Path) -> Path:
    """The "last" checkpoint that belongs to a best checkpoint ``X.pth``: ``X.last.pth``."""
    best_path = Path(best_path)
    return best_path.with_name(best_path.name[: -len(".pth")] + LAST_SUFFIX)


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
            nps["keys"].numpy().astype(np.uint32),
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


def find_resumable(config: Any) -> Path | None:
    """The newest "last" checkpoint of a run with exactly this configuration.

    A candidate is a ``<model>-<dataset>-*.last.pth`` in ``config["checkpoint_dir"]`` whose
    stored resolved configuration equals ``config``'s
    (``resume_from`` aside; the seed is part of it) and whose dataset fingerprint matches the files
    on disk. Unreadable sidecars are skipped.

    Args:
        config: The resolved ``Config`` of the run about to start.

    Returns:
        The checkpoint to resume from (a run that had finished training resumes to its test
        evaluation), or ``None``.
    """
    # compared as they read back from JSON (tuples become lists, non-finite floats strings)
    wanted = json.loads(json.dumps(json_safe(plain_config(config))))
    wanted.pop("resume_from", None)
    fingerprint = None
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
        fingerprint = fingerprint or dataset_fingerprint(config)
        if side["provenance"].get("dataset_fingerprint", {}).get("sha256") == fingerprint["sha256"]:
            return path
    return None


def load_model(
    path: str | Path, config_overrides: Mapping[str, Any] | None = None
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Rebuild configuration, dataset, dataloaders and trained model from a checkpoint.

    The safe counterpart of RecBole's ``load_data_and_model``: the configuration comes from the
    checkpoint's plain-data provenance, the dataset is read again and must have the fingerprint
    the checkpoint was made from.

    Args:
        path: A best or last checkpoint written by the plugin's trainer.
        config_overrides: Values that replace stored ones, e.g. ``{"data_path": ...}`` when the
            data moved, or ``{"gpu_id": ""}`` to load on the CPU.

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)``; the model is in
        evaluation mode on ``config["device"]``.

    Raises:
        CheckpointError: The checkpoint is unreadable, or the data differ from the data it was
            made from.
    """
    from recbole.utils import init_seed

    from recbole_fitmm.config import Config
    from recbole_fitmm.quick_start import data_preparation
    from recbole_fitmm.utils import create_dataset, get_model

    checkpoint = read_checkpoint(path)
    provenance = checkpoint["provenance"]
    values = dict(provenance["config_input"])
    values["data_path"] = str(Path(provenance["data_path"]).parent)
    values.update(config_overrides or {})
    config = Config(provenance["model"], provenance["dataset"], config_dict=values)
    check_dataset(checkpoint, path, dataset_fingerprint(config))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    load_weights(model, checkpoint, path)
    model.eval()
    logging.getLogger().info(f"Loaded {config['model']} from {path}")
    return config, model, dataset, train_data, valid_data, test_data


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


@torch.no_grad()
def recommend(
    model: Any, dataset: Any, user_tokens: Sequence[str], k: int
) -> tuple[list[list[str]], list[list[float]]]:
    """Top-k items per user, in raw tokens, excluding the items ``dataset`` records for the user.

    Args:
        model: A trained RecBole or plugin model (e.g. from :func:`load_model`).
        dataset: A dataset with the model's token mapping. Its interactions are masked: pass
            ``train_data.dataset`` to mask training items (the paper's test protocol), or the
            full dataset to mask every item the user has interacted with.
        user_tokens: Raw user tokens.
        k: Number of items per user (at least 1).

    Returns:
        ``(items, scores)``: per user, up to ``k`` raw item tokens, best first, and their scores.
        Fewer than ``k`` only when the user has fewer unmasked items.

    Raises:
        DataError: A user token is unknown to the dataset.
        ValueError: ``k`` is smaller than 1.
    """
    from recbole.data.interaction import Interaction

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    token2id = dataset.field2token_id[uid_field]
    unknown = [t for t in user_tokens if str(t) not in token2id or str(t) == "[PAD]"]
    if unknown:
        raise DataError(f"unknown user tokens for dataset {dataset.dataset_name!r}: {unknown[:5]}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    uids = torch.as_tensor([token2id[str(t)] for t in user_tokens], dtype=torch.int64)
    model.eval()
    n_items = dataset.item_num
    try:
        scores = model.full_sort_predict(Interaction({uid_field: uids.to(device)}))
    except NotImplementedError:
        users = uids.repeat_interleave(n_items)
        items = torch.arange(n_items).repeat(len(uids))
        scores = model.predict(Interaction({uid_field: users, iid_field: items}).to(device))
    scores = scores.view(len(uids), n_items).float().cpu().clone()
    scores[:, 0] = -torch.inf
    seen = dataset.inter_matrix(form="csr")
    for row, uid in enumerate(uids.tolist()):
        items = seen.indices[seen.indptr[uid] : seen.indptr[uid + 1]]
        scores[row, torch.as_tensor(items, dtype=torch.int64)] = -torch.inf
    top_scores, top_items = torch.topk(scores, min(k, n_items), dim=1)
    id2token = dataset.field2id_token[iid_field]
    items_out: list[list[str]] = []
    scores_out: list[list[float]] = []
    for row_items, row_scores in zip(top_items.tolist(), top_scores.tolist()):
        kept = [(i, s) for i, s in zip(row_items, row_scores) if s != -float("inf")]
        items_out.append([str(id2token[i]) for i, _ in kept])
        scores_out.append([float(s) for _, s in kept])
    return items_out, scores_out


def plain_result(result: Mapping[str, Any] | None) -> dict[str, float] | None:
    """A metric dictionary as plain floats (``None`` stays ``None``)."""
    if result is None:
        return None
    return {str(key): float(to_plain(value)) for key, value in result.items()}
