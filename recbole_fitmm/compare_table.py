"""Statistics and tables of a model comparison (:mod:`recbole_fitmm.compare` runs the models).

* :class:`RunRecord` / :class:`PerUser` — one (model, seed) run, its per-user test metrics and
  training-interaction counts; stored in ``<out>/runs/`` so finished runs are reused;
* :func:`summarise` — mean ± sample std over seeds, the best model on **valid** Recall@20 and a
  paired test of it against every other model on per-user test Recall@20
  (:mod:`recbole_fitmm.stats`), raw and Holm-adjusted. Runs that diverged before any
  validation have no test result: counted (``n_diverged``), left out of every statistic;
* :func:`summarise_by_activity` — "who gains": the same per group of user activity.

:mod:`recbole_fitmm.compare_report` renders the tables.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write, atomic_write_text
from recbole_fitmm.stats import (
    DEFAULT_ACTIVITY_BINS,
    DEFAULT_TEST,
    activity_groups,
    activity_labels,
    check_bins,
    compare_to_best,
    holm,
)
from recbole_fitmm.stats import PAIRED_TESTS as PAIRED_TESTS  # re-exported
from recbole_fitmm.stats import paired_pvalue as paired_pvalue  # re-exported

SELECT_METRIC = "recall@20"
TEST_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
ACTIVITY_METRICS = ("recall@20", "ndcg@20")
LABELS = {"recall": "R", "ndcg": "N"}
TRAIN_COUNTS = "train_counts"  # key of the training-interaction counts in a run's .npz


@dataclass
class PerUser:
    """Per-user test metrics of one run.

    Attributes:
        users: Raw user ids (tokens) [n_users], in evaluation order.
        values: Metric name (e.g. ``recall@20``) -> float64 array [n_users].
        train_counts: Number of training interactions of each user, int64 [n_users]; ``None``
            for runs stored before it was recorded (no activity table then).
    """

    users: np.ndarray
    values: dict[str, np.ndarray]
    train_counts: np.ndarray | None = None


@dataclass
class RunRecord:
    """The outcome of one (model, seed) run."""

    model: str
    seed: int
    valid: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    per_user: PerUser = field(repr=False)
    #: Per-validation records of the run (epoch, train loss, valid metrics, diagnostics).
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: ``{"epoch", "loss_parts"}`` when a non-finite loss ended training (tested with the best
    #: checkpoint; no test result when it diverged before any validation).
    diverged: dict[str, Any] | None = None


def _usable(record: RunRecord) -> bool:
    """Whether a run has a test result (not one that diverged before any validation)."""
    return bool(record.test) and SELECT_METRIC in record.per_user.values


def save_run(folder: Path, record: RunRecord, signature: str) -> None:
    """Store a finished run as ``<model>-seed<seed>.json`` + ``.npz`` (atomic writes).

    Args:
        folder: The comparison's ``runs/`` folder.
        record: The run.
        signature: Hash of everything that determines the run (see ``compare``).
    """
    stem = folder / f"{record.model}-seed{record.seed}"
    arrays = {"users": record.per_user.users, **record.per_user.values}
    if record.per_user.train_counts is not None:
        arrays[TRAIN_COUNTS] = np.asarray(record.per_user.train_counts, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(stem.with_suffix(".npz"), lambda handle: handle.write(buffer.getvalue()))
    meta = {
        "signature": signature,
        "model": record.model,
        "seed": record.seed,
        "valid": record.valid,
        "test": record.test,
        "train_seconds": record.train_seconds,
        "history": record.history,
        "diverged": record.diverged,
    }
    atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True))


def load_run(folder: Path, model: str, seed: int, signature: str) -> RunRecord | None:
    """A stored run with the same signature, or ``None``.

    Args:
        folder: The comparison's ``runs/`` folder.
        model: Model name.
        seed: Seed.
        signature: Signature the stored run must carry.

    Returns:
        The stored run, or ``None`` when absent, unreadable or made with other settings. Runs
        stored without training-interaction counts load with ``train_counts=None``.
    """
    stem = folder / f"{model}-seed{seed}"
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        if meta.get("signature") != signature:
            return None
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as arrays:
            skip = ("users", TRAIN_COUNTS)
            values = {key: arrays[key] for key in arrays.files if key not in skip}
            users = arrays["users"]
            counts = arrays[TRAIN_COUNTS] if TRAIN_COUNTS in arrays.files else None
    except (OSError, ValueError, KeyError):
        return None
    return RunRecord(
        model,
        seed,
        meta["valid"],
        meta["test"],
        meta["train_seconds"],
        PerUser(users, values, counts),
        meta.get("history", []),
        meta.get("diverged"),
    )


def seed_values(
    records: list[RunRecord], metric: str = SELECT_METRIC
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-user ``metric`` of every run with a test result, users aligned by raw id.

    Args:
        records: All runs; those without a test result are skipped.
        metric: Per-user metric name.

    Returns:
        The users common to every usable run (sorted), shape [n], and model -> float64 array
        [n_seeds, n] (one row per usable run, in record order); empty when no run is usable.
    """
    runs = [record for record in records if _usable(record)]
    if not runs:
        return np.empty(0, dtype=str), {}
    users = runs[0].per_user.users
    for record in runs[1:]:
        users = np.intersect1d(users, record.per_user.users)
    users = np.unique(users)
    rows: dict[str, list[np.ndarray]] = {}
    for record in runs:
        order = np.argsort(record.per_user.users)
        index = order[np.searchsorted(record.per_user.users, users, sorter=order)]
        rows.setdefault(record.model, []).append(record.per_user.values[metric][index])
    return users, {model: np.stack(values) for model, values in rows.items()}


def seed_averaged(
    records: list[RunRecord], metric: str = SELECT_METRIC
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`seed_values` averaged over each model's seeds: users [n], model -> float64 [n]."""
    users, values = seed_values(records, metric)
    return users, {model: runs.mean(axis=0) for model, runs in values.items()}


def tested_records(records: list[RunRecord], method: str) -> list[RunRecord]:
    """The runs a paired test compares.

    The two-level test treats each model's seeds as its own sample (seeds are not paired across
    models), so every run counts. The seed-averaged tests (``wilcoxon``, ``ttest``) compare seed
    averages user by user, which are comparable only over the same seeds: they use the seeds
    every model has.

    Args:
        records: All runs.
        method: One of :data:`~recbole_fitmm.stats.PAIRED_TESTS`.

    Returns:
        The runs to test.

    Raises:
        ConfigError: A seed-averaged test and no seed that every model has.
    """
    usable = [record for record in records if _usable(record)]
    if method == DEFAULT_TEST or not usable:
        return records
    seed_sets = {}
    for record in usable:
        seed_sets.setdefault(record.model, set()).add(record.seed)
    common = set.intersection(*seed_sets.values())
    if not common:
        raise ConfigError(
            f"the {method} test compares seed averages over the same seeds, and no seed is "
            f"common to every model ({', '.join(f'{m}: {sorted(s)}' for m, s in seed_sets.items())}"
            f"); use the two-level test (--test twolevel) or run the models on common seeds"
        )
    return [record for record in records if record.seed in common]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _best_model(records: list[RunRecord]) -> str | None:
    """The model with the highest mean valid Recall@20 over its usable runs."""
    valid: dict[str, list[float]] = {}
    for record in filter(_usable, records):
        valid.setdefault(record.model, []).append(record.valid[SELECT_METRIC])
    return max(valid, key=lambda model: np.mean(valid[model])) if valid else None


def summarise(records: list[RunRecord], method: str = DEFAULT_TEST) -> list[dict[str, Any]]:
    """One row per model: means, standard deviations, best flag and p-values against the best.

    Args:
        records: All runs (at least one); runs without a test result are only counted.
        method: Paired test, one of :data:`~recbole_fitmm.stats.PAIRED_TESTS`.

    Returns:
        Rows in model order of first appearance, every row with the keys ``model``,
        ``n_seeds`` (runs with a test result), ``n_diverged`` (runs stopped by a non-finite
        loss, with or without a test result), ``valid_recall@20_mean``/``_std``,
        ``test_<metric>_mean``/``_std``, ``train_seconds_mean``/``_std`` (``None`` without a
        usable run), ``best``, ``p_value`` and ``p_holm`` (raw and Holm-adjusted over the
        comparisons with the best; ``None`` for the best and untested models) and ``test``.
    """
    models = list(dict.fromkeys(record.model for record in records))
    best = _best_model(records)
    rows = []
    for model in models:
        runs = [record for record in records if record.model == model and _usable(record)]
        row: dict[str, Any] = {
            "model": model,
            "n_seeds": len(runs),
            "n_diverged": sum(r.diverged is not None for r in records if r.model == model),
        }
        columns = {f"valid_{SELECT_METRIC}": [r.valid[SELECT_METRIC] for r in runs]}
        columns.update({f"test_{m}": [r.test[m] for r in runs] for m in TEST_METRICS})
        columns["train_seconds"] = [r.train_seconds for r in runs]
        for name, values in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
        row["best"] = model == best
        rows.append(row)
    _, values = seed_values(tested_records(records, method))
    raw = compare_to_best(values, best, models, method)
    adjusted = dict(zip(models, holm([raw[model] for model in models])))
    for row in rows:
        row.update(p_value=raw[row["model"]], p_holm=adjusted[row["model"]], test=method)
    return rows


def summarise_by_activity(
    records: list[RunRecord],
    method: str = DEFAULT_TEST,
    bins: Sequence[int] = DEFAULT_ACTIVITY_BINS,
) -> list[dict[str, Any]]:
    """Per user-activity group and model: test Recall@20 / NDCG@20 and the test against the best.

    Users (common to every usable run) are grouped by their number of training interactions
    (``bins``: inclusive upper edges). The best model is the overall one (on valid, as in
    :func:`summarise`); within each group it is tested against every other model on per-user
    Recall@20, and the p-values are Holm-adjusted over all the comparisons of the table.

    Args:
        records: All runs; those without a test result are skipped.
        method: Paired test, one of :data:`~recbole_fitmm.stats.PAIRED_TESTS`.
        bins: Upper edges of the groups, default ``(5, 10, 20)``: <= 5, 6-10, 11-20, > 20.

    Returns:
        One row per (group, model) with the keys ``group``, ``min_train``, ``max_train``
        (``None`` for the last group), ``n_users``, ``model``, ``best``, ``n_seeds``,
        ``test_recall@20_mean``, ``test_ndcg@20_mean`` (``None`` without a usable run or user),
        ``p_value``, ``p_holm`` and ``test``; empty when no usable run records training counts.
    """
    edges = check_bins(bins)
    known = _train_counts(records)
    if known is None:
        return []
    users, values = seed_values(records)
    group = activity_groups(np.asarray([known[user] for user in users.tolist()]), edges)
    tested = list(filter(_usable, records))
    present = [m for m in ACTIVITY_METRICS if all(m in r.per_user.values for r in tested)]
    metrics = {metric: seed_values(records, metric)[1] for metric in present}
    models = list(dict.fromkeys(record.model for record in records))
    best = _best_model(records)
    lows = (0, *(edge + 1 for edge in edges))
    tested_users, tested_values = seed_values(tested_records(records, method))
    tested_group = activity_groups(np.asarray([known[u] for u in tested_users.tolist()]), edges)
    rows = []
    for index, label in enumerate(activity_labels(edges)):
        members = group == index
        subset = {model: table[:, tested_group == index] for model, table in tested_values.items()}
        raw = compare_to_best(subset, best, models, method)
        for model in models:
            row: dict[str, Any] = {
                "group": label,
                "min_train": lows[index],
                "max_train": edges[index] if index < len(edges) else None,
                "n_users": int(members.sum()),
                "model": model,
                "best": model == best,
                "n_seeds": len(values.get(model, ())),
            }
            for metric in ACTIVITY_METRICS:
                table = metrics.get(metric, {}).get(model)
                known_mean = table is not None and members.any()
                row[f"test_{metric}_mean"] = float(table[:, members].mean()) if known_mean else None
            row.update(p_value=raw[model], p_holm=None, test=method)
            rows.append(row)
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows])):
        row["p_holm"] = adjusted
    return rows


def _train_counts(records: list[RunRecord]) -> dict[str, int] | None:
    """Raw user id -> number of training interactions from the usable runs, or ``None``.

    Every run that records counts must agree on the users they share (same dataset and split);
    on a mismatch a warning is logged and ``None`` returned (no activity table).
    """
    known: dict[str, int] = {}
    for record in filter(_usable, records):
        counts = record.per_user.train_counts
        if counts is None:
            continue
        for user, count in zip(record.per_user.users.tolist(), np.asarray(counts).tolist()):
            if known.setdefault(user, count) != count:
                logging.getLogger().warning(
                    f"{record.model} seed {record.seed}: user {user} has {count} training "
                    f"interactions, another run has {known[user]}; no activity table"
                )
                return None
    return known or None
