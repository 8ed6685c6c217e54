"""The comparison's tables as Markdown and CSV (computed by :mod:`recbole_fitmm.compare_table`)."""

from __future__ import annotations

import csv
import io
from typing import Any

from recbole_fitmm.compare_table import (
    ACTIVITY_METRICS,
    LABELS,
    SELECT_METRIC,
    TEST_METRICS,
    RunRecord,
)
from recbole_fitmm.stats import DEFAULT_TEST, TEST_DESCRIPTIONS


def _p_text(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _test_note(method: str, n_tests: int, adjusted: str = "raw and Holm-adjusted") -> str:
    common = "" if method == DEFAULT_TEST else ", over the seeds common to every model"
    return (
        f"p vs best ({method}): {TEST_DESCRIPTIONS[method]} in per-user test Recall@20, the best "
        f"model (on valid) against each other model{common}; {adjusted} over {n_tests} "
        f"comparison{'s' if n_tests != 1 else ''}"
    )


def render_markdown(
    rows: list[dict[str, Any]],
    header: dict[str, Any],
    activity: list[dict[str, Any]] | None = None,
) -> str:
    """The comparison table in Markdown, preceded by the run's description (± only for > 1 seed).

    Args:
        rows: Output of :func:`summarise`.
        header: Key -> value lines printed above the table (dataset, seeds, ...).
        activity: Output of :func:`summarise_by_activity`; when not empty, the "by user activity"
            table follows the main one.

    Returns:
        Markdown text.
    """
    lines = [f"- {key}: {value}" for key, value in header.items()]
    metric_heads = [f"test {LABELS[m.split('@')[0]]}@{m.split('@')[1]}" for m in TEST_METRICS]
    heads = ["model", "seeds", "valid R@20", *metric_heads, "train s", "p vs best", "p (Holm)"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        seeds = str(row["n_seeds"])
        if row["n_diverged"]:
            seeds += f" ({row['n_diverged']} diverged)"
        cells = [f"**{row['model']}** (best)" if row["best"] else row["model"], seeds]
        for name in [f"valid_{SELECT_METRIC}", *(f"test_{m}" for m in TEST_METRICS)]:
            mean, std = row[name + "_mean"], row[name + "_std"]
            if mean is None:
                cells.append("diverged")
            else:
                cells.append(f"{mean:.4f} ± {std:.4f}" if row["n_seeds"] > 1 else f"{mean:.4f}")
        seconds = row["train_seconds_mean"]
        cells.append("—" if seconds is None else f"{seconds:.1f}")
        for key in ("p_value", "p_holm"):
            cells.append("—" if row["best"] or not row["n_seeds"] else _p_text(row[key]))
        lines.append("| " + " | ".join(cells) + " |")
    n_tests = sum(row["p_value"] is not None for row in rows)
    lines += ["", "- " + _test_note(rows[0]["test"], n_tests)]
    if any(row["n_diverged"] for row in rows):
        lines.append(
            "- seeds: runs with a test result; diverged: runs stopped by a non-finite loss, tested"
            " with their best checkpoint, left out when they diverged before any validation"
        )
    if any(row["p_value"] is None and row["n_seeds"] and not row["best"] for row in rows):
        lines.append("- n/a: not testable (< 2 users, or twolevel with one seed of each model)")
    if activity:
        lines += ["", _activity_markdown(activity)]
    return "\n".join(lines) + "\n"


def _activity_markdown(activity: list[dict[str, Any]]) -> str:
    """The "by user activity" table: a line per group, R@20 / N@20 per model, p vs the best."""
    models = list(dict.fromkeys(row["model"] for row in activity))
    best = next((row["model"] for row in activity if row["best"]), None)
    others = [model for model in models if model != best]
    heads = ["train interactions", "users", *(f"{m} R@20 / N@20" for m in models)]
    heads += [f"p {best} vs {m} (Holm)" for m in others]
    lines = ["**By user activity** (test, users grouped by their number of training interactions)"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for label in dict.fromkeys(row["group"] for row in activity):
        cells = {row["model"]: row for row in activity if row["group"] == label}
        line = [label, str(cells[models[0]]["n_users"])]
        for model in models:
            means = [cells[model][f"test_{m}_mean"] for m in ACTIVITY_METRICS]
            text = " / ".join("—" if mean is None else f"{mean:.4f}" for mean in means)
            line.append(text if cells[model]["n_seeds"] else "diverged")
        line += [_p_text(cells[m]["p_holm"]) if cells[m]["n_seeds"] else "—" for m in others]
        lines.append("| " + " | ".join(line) + " |")
    n_tests = sum(row["p_value"] is not None for row in activity)
    note = _test_note(activity[0]["test"], n_tests, "Holm-adjusted")
    return "\n".join([*lines, "", f"- {note} (all groups together)"])


def render_csv(rows: list[dict[str, Any]]) -> str:
    """Rows (dictionaries with the same keys) as CSV text with a header line.

    Args:
        rows: Table rows, e.g. from :func:`summarise` or :func:`summarise_by_activity`.

    Returns:
        CSV text; empty for no rows.
    """
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def per_seed_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run: model, seed, valid Recall@20, test metrics (empty when diverged before
    any validation), training seconds, whether it diverged."""
    return [
        {
            "model": r.model,
            "seed": r.seed,
            f"valid_{SELECT_METRIC}": (r.valid or {}).get(SELECT_METRIC),
            **{f"test_{m}": r.test.get(m) for m in TEST_METRICS},
            "train_seconds": round(r.train_seconds, 2),
            "diverged": r.diverged is not None,
        }
        for r in records
    ]
