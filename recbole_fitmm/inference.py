"""Using a trained model: rebuild it from its checkpoint, and score top-k lists in bounded memory.

Part of the run layer (beside :mod:`recbole_fitmm.quick_start`, whose datasets and dataloaders it
rebuilds). ``python -m recbole_fitmm.recommend`` writes the lists to files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_fitmm.checkpoint import (
    check_dataset,
    load_weights,
    read_checkpoint,
    resolve_checkpoint,
)
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import DataError
from recbole_fitmm.quick_start import build_config, build_model, create_dataset, data_preparation


def load_model(
    path: str | Path, config_overrides: Mapping[str, Any] | None = None
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Rebuild configuration, dataset, dataloaders and trained model from a checkpoint.

    The safe counterpart of RecBole's ``load_data_and_model``: the configuration comes from the
    checkpoint's plain-data provenance, the dataset is read again and must have the fingerprint
    the checkpoint was made from.

    Args:
        path: A best or last checkpoint written by the plugin's trainer, or a checkpoint folder
            (its newest best checkpoint).
        config_overrides: Values that replace stored ones, e.g. ``{"data_path": ...}`` when the
            data moved, or ``{"gpu_id": ""}`` to load on the CPU.

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)``; the model is in
        evaluation mode on ``config["device"]``.

    Raises:
        CheckpointError: The checkpoint is unreadable, or the data differ from the data it was
            made from.
    """
    path = resolve_checkpoint(path)
    checkpoint = read_checkpoint(path)
    provenance = checkpoint["provenance"]
    values = dict(provenance["config_input"])
    values["data_path"] = str(Path(provenance["data_path"]).parent)
    values.update(config_overrides or {})
    config = build_config(provenance["model"], provenance["dataset"], config_dict=values)
    check_dataset(checkpoint, path, dataset_fingerprint(config))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = build_model(config, train_data)
    load_weights(model, checkpoint, path)
    model.eval()
    logging.getLogger().info(f"Loaded {config['model']} from {path}")
    return config, model, dataset, train_data, valid_data, test_data


#: Users × items scores held at once by :func:`top_k` (float32: 64 MiB).
SCORE_BUDGET = 1 << 24


@torch.no_grad()
def top_k(
    model: Any, dataset: Any, uids: np.ndarray, k: int, budget: int = SCORE_BUDGET
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Top-k items of users, in batches whose score matrix stays within ``budget`` entries.

    The items ``dataset`` records for a user (and PAD) are masked. Works for the plugin's models
    and RecBole's general models (``full_sort_predict``, else ``predict`` on every pair).

    Args:
        model: A trained model, in evaluation mode.
        dataset: Dataset whose interactions are masked (``train_data.dataset``: training items).
        uids: Internal user ids, int64 [n].
        k: Items per user (>= 1).
        budget: Largest number of scores computed at once.

    Yields:
        ``(uids [b], items [b, k'], scores [b, k'])`` with ``k' = min(k, n_items)``; internal
        item ids best first; masked slots (a user with fewer than ``k'`` unmasked items) have
        item -1 and score ``-inf``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n_items = dataset.item_num
    device = next(iter(model.parameters()), torch.empty(0)).device
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    seen = dataset.inter_matrix(form="csr")
    step = max(1, budget // n_items)
    width = min(k, n_items)
    for start in range(0, len(uids), step):
        batch = np.asarray(uids[start : start + step], dtype=np.int64)
        users = torch.as_tensor(batch, device=device)
        try:
            scores = model.full_sort_predict(Interaction({uid_field: users}))
        except NotImplementedError:
            pairs = {
                uid_field: users.repeat_interleave(n_items),
                iid_field: torch.arange(n_items, device=device).repeat(len(batch)),
            }
            scores = model.predict(Interaction(pairs))
        scores = scores.view(len(batch), n_items).float().clone()
        scores[:, 0] = -torch.inf
        counts = np.diff(seen.indptr)[batch]
        rows = np.repeat(np.arange(len(batch)), counts)
        cols = np.concatenate([seen.indices[seen.indptr[u] : seen.indptr[u + 1]] for u in batch])
        scores[
            torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)
        ] = -torch.inf
        values, items = torch.topk(scores, width, dim=1)
        items = items.masked_fill(torch.isinf(values), -1)
        yield batch, items.cpu().numpy(), values.cpu().numpy()


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
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    token2id = dataset.field2token_id[dataset.uid_field]
    unknown = [t for t in user_tokens if str(t) not in token2id or str(t) == "[PAD]"]
    if unknown:
        raise DataError(f"unknown user tokens for dataset {dataset.dataset_name!r}: {unknown[:5]}")
    uids = np.asarray([token2id[str(t)] for t in user_tokens], dtype=np.int64)
    model.eval()
    id2token = dataset.field2id_token[dataset.iid_field]
    items_out: list[list[str]] = []
    scores_out: list[list[float]] = []
    for _, items, scores in top_k(model, dataset, uids, k):
        for row_items, row_scores in zip(items, scores):
            kept = row_items >= 0
            items_out.append([str(id2token[i]) for i in row_items[kept]])
            scores_out.append([float(s) for s in row_scores[kept]])
    return items_out, scores_out
