"""Statistics and tables of a model comparison (:mod:`recbole_fitmm.compare` runs the models).

* :class:`RunRecord` / :class:`PerUser` — one (model, seed) run and its per-user test metrics;
  saved to and read back from ``<out>/runs/`` so finished runs are reused;
* :func:`summarise` — mean ± sample std over seeds, the best model on **valid** Recall@20 and a
  paired test (Wilcoxon signed-rank or paired t-test) of it against every other model over
  per-user test Recall@20, users aligned by raw id and averaged over seeds;
* :func:`render_markdown` / :func:`render_csv` — the table.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write, atomic_write_text

SELECT_METRIC = "recall@20"
TEST_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PAIRED_TESTS = ("wilcoxon", "ttest")
LABELS = {"recall": "R", "ndcg": "N"}


@dataclass
class PerUser:
    """Per-user test metrics of one run.

    Attributes:
        users: Raw user ids (tokens) [n_users], in evaluation order.
        values: Metric name (e.g. ``recall@20``) -> float64 array [n_users].
    """

    users: np.ndarray
    values: dict[str, np.ndarray]


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


def save_run(folder: Path, record: RunRecord, signature: str) -> None:
    """Store a finished run as ``<model>-seed<seed>.json`` + ``.npz`` (atomic writes).

    Args:
        folder: The comparison's ``runs/`` folder.
        record: The run.
        signature: Hash of everything that determines the run (see ``compare``).
    """
    stem = folder / f"{record.model}-seed{record.seed}"
    buffer = io.BytesIO()
    np.savez(buffer, users=record.per_user.users, **record.per_user.values)
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
        The stored run, or ``None`` when absent, unreadable or made with other settings.
    """
    stem = folder / f"{model}-seed{seed}"
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        if meta.get("signature") != signature:
            return None
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as arrays:
            values = {key: arrays[key] for key in arrays.files if key != "users"}
            users = arrays["users"]
    except (OSError, ValueError, KeyError):
        return None
    return RunRecord(
        model,
        seed,
        meta["valid"],
        meta["test"],
        meta["train_seconds"],
        PerUser(users, values),
        meta.get("history", []),
        meta.get("diverged"),
    )


def paired_pvalue(best: np.ndarray, other: np.ndarray, method: str = "wilcoxon") -> float:
    """Two-sided p-value of a paired test between two models' per-user values.

    Args:
        best: Per-user values of the best model [n].
        other: Per-user values of the other model [n], same users in the same order.
        method: ``wilcoxon`` (signed-rank) or ``ttest`` (paired t-test).

    Returns:
        p in [0, 1]; 1.0 when the two are identical for every user.
    """
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    diff = np.asarray(best, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    if not np.any(diff):
        return 1.0
    if method == "wilcoxon":
        p = stats.wilcoxon(diff).pvalue
    else:
        p = stats.ttest_rel(best, other).pvalue
    return float(np.clip(p, 0.0, 1.0)) if np.isfinite(p) else 1.0


def seed_averaged(records: list[RunRecord], metric: str = SELECT_METRIC) -> tuple[np.ndarray, dict]:
    """Per-user ``metric`` of every model averaged over its seeds, users aligned by raw id.

    Args:
        records: All runs.
        metric: Per-user metric name.

    Returns:
        The users common to every run (sorted) and model -> float64 array over those users.
    """
    users = records[0].per_user.users
    for record in records[1:]:
        users = np.intersect1d(users, record.per_user.users)
    users = np.unique(users)
    averaged: dict[str, list[np.ndarray]] = {}
    for record in records:
        order = np.argsort(record.per_user.users)
        index = order[np.searchsorted(record.per_user.users, users, sorter=order)]
        averaged.setdefault(record.model, []).append(record.per_user.values[metric][index])
    return users, {model: np.mean(values, axis=0) for model, values in averaged.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(records: list[RunRecord], method: str = "wilcoxon") -> list[dict[str, Any]]:
    """One row per model: means, standard deviations, best flag and p-value against the best.

    Args:
        records: All runs (at least one).
        method: Paired test, see :func:`paired_pvalue`.

    Returns:
        Rows in model order of first appearance, with keys ``model``, ``n_seeds``,
        ``valid_recall@20_mean``/``_std``, ``test_<metric>_mean``/``_std``,
        ``train_seconds_mean``/``_std``, ``best`` and ``p_value`` (``None`` for the best).
    """
    models = list(dict.fromkeys(record.model for record in records))
    rows = []
    for model in models:
        runs = [record for record in records if record.model == model]
        row: dict[str, Any] = {"model": model, "n_seeds": len(runs)}
        columns = {f"valid_{SELECT_METRIC}": [r.valid[SELECT_METRIC] for r in runs]}
        columns.update({f"test_{m}": [r.test[m] for r in runs] for m in TEST_METRICS})
        columns["train_seconds"] = [r.train_seconds for r in runs]
        for name, values in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
        rows.append(row)
    best = max(rows, key=lambda row: row[f"valid_{SELECT_METRIC}_mean"])
    _, per_user = seed_averaged(records)
    for row in rows:
        row["best"] = row is best
        row["p_value"] = (
            None
            if row is best
            else paired_pvalue(per_user[best["model"]], per_user[row["model"]], method)
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The comparison table in Markdown, preceded by the run's description (± only for > 1 seed).

    Args:
        rows: Output of :func:`summarise`.
        header: Key -> value lines printed above the table (dataset, seeds, ...).

    Returns:
        Markdown text.
    """
    lines = [f"- {key}: {value}" for key, value in header.items()]
    metric_heads = [f"test {LABELS[m.split('@')[0]]}@{m.split('@')[1]}" for m in TEST_METRICS]
    heads = ["model", "seeds", "valid R@20", *metric_heads, "train s", "p vs best"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        cells = [f"**{row['model']}** (best)" if row["best"] else row["model"], str(row["n_seeds"])]
        for name in [f"valid_{SELECT_METRIC}", *(f"test_{m}" for m in TEST_METRICS)]:
            mean, std = row[name + "_mean"], row[name + "_std"]
            cells.append(f"{mean:.4f} ± {std:.4f}" if row["n_seeds"] > 1 else f"{mean:.4f}")
        cells.append(f"{row['train_seconds_mean']:.1f}")
        cells.append("—" if row["p_value"] is None else f"{row['p_value']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    """Rows (dictionaries with the same keys) as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def per_seed_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run: model, seed, valid Recall@20, test metrics, training seconds."""
    return [
        {
            "model": r.model,
            "seed": r.seed,
            f"valid_{SELECT_METRIC}": r.valid[SELECT_METRIC],
            **{f"test_{m}": r.test[m] for m in TEST_METRICS},
            "train_seconds": round(r.train_seconds, 2),
        }
        for r in records
    ]
