"""Figures of a trained FITMM and of any run, written as PNG files.

    python -m recbole_fitmm.plots curve saved/FITMM-....last.pth.json --out curve.png
    python -m recbole_fitmm.plots curve saved/FITMM-....result.json --out curve.png
    python -m recbole_fitmm.plots curve log/FITMM/FITMM-....log --out curve.png
    python -m recbole_fitmm.explain saved/FITMM-....pth --plots figures/     # the FITMM figures

Every figure is a :class:`matplotlib.figure.Figure` drawn on its own Agg canvas (no pyplot, no
global backend), ``FIGSIZES[name]`` inches at ``DPI`` dots per inch, written atomically. Every plot
function returns the numbers it drew, so they can be checked against the model or the run files.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from recbole_fitmm.cli import run_action
from recbole_fitmm.errors import DataError
from recbole_fitmm.io import atomic_write

DPI = 100
#: Figure sizes in inches (width, height); the PNG has ``size × DPI`` pixels.
FIGSIZES = {
    "energy": (10.0, 4.0),
    "gates": (12.0, 4.0),
    "band_weights": (6.0, 4.0),
    "curve": (10.0, 4.0),
    "comparison": (8.0, 4.5),
}
COLD_MAX = 5
GATE_BINS = 20
COMPARISON_METRICS = ("recall@20", "ndcg@20")


def _figure(name: str, ncols: int = 1) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=FIGSIZES[name], dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` as PNG at :data:`DPI` and write it atomically to ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _grouped_bars(ax: Any, values: np.ndarray, labels: Sequence[str], ticks: Sequence[str]) -> None:
    """Bars of ``values`` [groups, positions]: one colour per group, side by side per position."""
    n_groups, n_pos = values.shape
    width = 0.8 / n_groups
    x = np.arange(n_pos)
    for g in range(n_groups):
        ax.bar(x + (g - (n_groups - 1) / 2) * width, values[g], width, label=labels[g])
    ax.set_xticks(x, list(ticks))


# ---------------------------------------------------------------------- FITMM figures
def energy_chart(report: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Bars of the spectral energy share per band and modality block, users and items.

    Args:
        report: The output of :func:`recbole_fitmm.explain.explain_fitmm`.
        path: PNG file to write.

    Returns:
        ``blocks`` (names) and, per side (``users``, ``items``), the plotted shares, float64
        [n_blocks, M] (row b: block b's share of its energy in bands 1..M).
    """
    m, blocks = report["num_bands"], list(report["blocks"])
    fig, axes = _figure("energy", 2)
    plotted: dict[str, Any] = {"blocks": blocks}
    for ax, side in zip(axes, ("users", "items")):
        shares = np.asarray(report[side]["energy"], dtype=np.float64)
        _grouped_bars(ax, shares, blocks, [f"band {k + 1}" for k in range(m)])
        ax.set(title=f"{side}: base view R", ylabel="share of the block's energy", ylim=(0, 1))
        ax.legend(title="block")
        plotted[side] = shares
    fig.suptitle("Spectral energy per frequency band (band 1 = largest singular values)")
    save_figure(fig, path)
    return plotted


@torch.no_grad()
def user_gates(model: Any, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-user gates of a FITMM and the users' training interaction counts.

    Args:
        model: A FITMM (its evaluation-mode forward pass is used; its mode is restored).
        dataset: The training dataset (``train_data.dataset``).

    Returns:
        ``(gates, counts)``: float64 [n_users - 1, M] and int64 [n_users - 1], for the internal
        user ids 1..n_users-1.
    """
    was_training = model.training
    model.eval()
    gates = model.forward().user_gates.double().cpu().numpy()
    model.train(was_training)
    counts = np.diff(dataset.inter_matrix(form="csr").indptr)[1:].astype(np.int64)
    return gates, counts


def gate_histograms(
    model: Any, dataset: Any, path: str | Path, cold_max: int = COLD_MAX, bins: int = GATE_BINS
) -> dict[str, Any]:
    """Histograms of each band's user gate ``g_k``, warm users against cold users.

    Args:
        model: A FITMM.
        dataset: The training dataset (``train_data.dataset``); a user with at most
            ``cold_max`` training interactions is cold.
        path: PNG file to write.
        cold_max: Largest number of training interactions of a cold user.
        bins: Bins per band, shared by both groups.

    Returns:
        ``gates`` float64 [U, M], ``counts`` int64 [U], ``cold`` bool [U] (U = n_users - 1),
        ``edges`` float64 [M, bins + 1], and the plotted histograms ``warm`` and ``cold_hist``,
        float64 [M, bins]: the share of the group's users in each bin (zeros for an empty group).
    """
    gates, counts = user_gates(model, dataset)
    cold = counts <= cold_max
    m = gates.shape[1]
    edges = np.stack([np.histogram_bin_edges(gates[:, k], bins=bins) for k in range(m)])
    hists = {}
    for name, rows in (("warm", ~cold), ("cold_hist", cold)):
        hist = [np.histogram(gates[rows, k], bins=edges[k])[0] for k in range(m)]
        hists[name] = np.asarray(hist, dtype=np.float64) / max(int(rows.sum()), 1)
    fig, axes = _figure("gates", m)
    labels = (
        f"warm (> {cold_max} train items, n={int((~cold).sum())})",
        f"cold (≤ {cold_max}, n={int(cold.sum())})",
    )
    for k, ax in enumerate(axes):
        for hist, label in zip((hists["warm"], hists["cold_hist"]), labels):
            ax.stairs(hist[k], edges[k], fill=True, alpha=0.5, label=label)
        ax.set(title=f"band {k + 1}", xlabel=f"gate g_{k + 1}", ylabel="share of users")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    fig.suptitle("User gates per band: warm and cold users")
    save_figure(fig, path)
    return {"gates": gates, "counts": counts, "cold": cold, "edges": edges, **hists}


def band_weight_chart(model: Any, path: str | Path) -> dict[str, np.ndarray]:
    """Bars of the band weights ``β_k = sigmoid(θ_k)`` of both sides.

    Args:
        model: A FITMM (``user_gate`` and ``item_gate`` with ``band_logits`` [M]).
        path: PNG file to write.

    Returns:
        ``users`` and ``items``: the plotted weights, float64 [M].
    """
    plotted = {
        side: torch.sigmoid(gate.band_logits.detach().double()).cpu().numpy()
        for side, gate in (("users", model.user_gate), ("items", model.item_gate))
    }
    fig, (ax,) = _figure("band_weights")
    values = np.stack([plotted["users"], plotted["items"]])
    _grouped_bars(ax, values, ["users", "items"], [f"band {k + 1}" for k in range(values.shape[1])])
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(title="Band weights β_k = sigmoid(θ_k)", ylabel="β_k", ylim=(0, 1.15))
    ax.legend(loc="upper center", ncols=2)
    save_figure(fig, path)
    return plotted


def fitmm_plots(
    model: Any,
    dataset: Any,
    folder: str | Path,
    report: Mapping[str, Any],
    cold_max: int = COLD_MAX,
) -> dict[str, Path]:
    """Write ``energy.png``, ``gates.png`` and ``band_weights.png`` of a FITMM into ``folder``.

    Args:
        model: A FITMM.
        dataset: Its training dataset (``train_data.dataset``).
        folder: Output folder (created if needed).
        report: :func:`recbole_fitmm.explain.explain_fitmm` of ``model``.
        cold_max: Largest number of training interactions of a cold user.

    Returns:
        Figure name -> written file.
    """
    folder = Path(folder)
    files = {name: folder / f"{name}.png" for name in ("energy", "gates", "band_weights")}
    energy_chart(report, files["energy"])
    gate_histograms(model, dataset, files["gates"], cold_max)
    band_weight_chart(model, files["band_weights"])
    return files


# ---------------------------------------------------------------------- training curves
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRAIN = re.compile(r"epoch (\d+) training \[(.*)\]")
_LOSS = re.compile(r"train[ _]loss\d*: ([^,\]\s]+)")
_VALID = re.compile(r"epoch (\d+) evaluating \[[^\]]*valid_score: ([^\]\s]+)\]")
_METRIC = re.compile(r"^valid_metric\s*=\s*(\S+)", re.MULTILINE)
_PAIR = re.compile(r"(\S+) : (\S+)")


def _log_history(text: str) -> tuple[list[dict[str, Any]], str]:
    """Entries of a RecBole text log, one per epoch (the last one wins after a restart)."""
    lines = _ANSI.sub("", text).splitlines()
    entries: dict[int, dict[str, Any]] = {}
    valid_epoch = None
    for i, line in enumerate(lines):
        if found := _TRAIN.search(line):
            entry = entries.setdefault(int(found[1]), {"epoch": int(found[1])})
            entry["train_loss"] = sum(float(v) for v in _LOSS.findall(found[2]))
        elif found := _VALID.search(line):
            valid_epoch = int(found[1])
            entry = entries.setdefault(valid_epoch, {"epoch": valid_epoch})
            entry.update(valid_score=float(found[2]), valid={})
        elif "valid result:" in line and valid_epoch is not None and i + 1 < len(lines):
            pairs = _PAIR.findall(lines[i + 1])
            entries[valid_epoch]["valid"] = {key: float(value) for key, value in pairs}
    metric = _METRIC.search(text)
    return [entries[e] for e in sorted(entries)], metric[1] if metric else "valid_score"


def _json_history(path: Path) -> tuple[list[dict[str, Any]], str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        return None
    if not all(isinstance(entry, dict) and "epoch" in entry for entry in data["history"]):
        raise DataError(f"{path}: a history entry without an epoch")
    config = (data.get("provenance") or {}).get("config") or {}
    return data["history"], str(config.get("valid_metric") or "valid_score")


def read_history(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The per-epoch history of a run and the name of its validation metric.

    Args:
        path: A last checkpoint's sidecar (``*.last.pth.json``), a result file
            (``*.result.json``), a stored comparison run (``runs/*.json``), a RecBole text log
            (``log/<model>/*.log``), or a checkpoint (``*.pth``: the history is read from its
            sidecar, else from ``<stem>.last.pth.json``, else from ``<stem>.result.json``).

    Returns:
        ``(history, metric)``: entries ``{"epoch", "train_loss", "valid_score", "valid"}`` in
        epoch order (a log also has entries of epochs without validation) and the validation
        metric's name (``valid_score`` when the file does not say).

    Raises:
        DataError: The file cannot be read or holds no history.
    """
    path = Path(path)
    if path.suffix == ".pth":
        stem = path.name.removesuffix(".pth").removesuffix(".last")
        candidates = [path.with_name(path.name + ".json")]
        candidates += [
            path.with_name(stem + ".last.pth.json"),
            path.with_name(stem + ".result.json"),
        ]
    elif path.suffix == ".json":
        candidates = [path]
    else:
        try:
            history, metric = _log_history(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as err:
            raise DataError(f"cannot read log {path}: {err}") from err
        if not history:
            raise DataError(f"{path}: no 'epoch N training' lines (a RecBole log at state INFO?)")
        return history, metric
    for candidate in candidates:
        found = _json_history(candidate)
        if found and found[0]:
            return found
    raise DataError(f"no training history in {', '.join(str(c) for c in candidates)}")


def training_curve(
    history: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "valid_score"
) -> dict[str, np.ndarray]:
    """Train loss and validation metric per epoch, side by side.

    Args:
        history: Entries ``{"epoch", "train_loss", "valid_score", ...}`` (:func:`read_history`).
        path: PNG file to write.
        metric: Name of the validation metric (axis label).

    Returns:
        ``loss_epochs`` int64 [a] and ``train_loss`` float64 [a] (entries with a train loss;
        the strings ``"nan"``/``"inf"`` of strict JSON read as floats),
        ``valid_epochs`` int64 [b] and ``valid_score`` float64 [b] (entries with a validation).
    """
    loss = [
        (e["epoch"], float(e["train_loss"])) for e in history if e.get("train_loss") is not None
    ]
    valid = [
        (e["epoch"], float(e["valid_score"])) for e in history if e.get("valid_score") is not None
    ]
    plotted = {}
    for name, pairs, key in (("loss", loss, "train_loss"), ("valid", valid, "valid_score")):
        plotted[f"{name}_epochs"] = np.asarray([p[0] for p in pairs], dtype=np.int64)
        plotted[key] = np.asarray([p[1] for p in pairs], dtype=np.float64)
    fig, (left, right) = _figure("curve", 2)
    left.plot(plotted["loss_epochs"], plotted["train_loss"], marker="o", ms=3)
    left.set(title="training", xlabel="epoch", ylabel="train loss")
    right.plot(plotted["valid_epochs"], plotted["valid_score"], marker="o", ms=3, color="C1")
    right.set(title="validation", xlabel="epoch", ylabel=metric)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path)
    return plotted


# ---------------------------------------------------------------------- comparisons
def _value(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def comparison_chart(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    metrics: Sequence[str] = COMPARISON_METRICS,
) -> dict[str, Any]:
    """Bars of test metrics per model, with the spread over seeds as error bars.

    Args:
        rows: Rows of :func:`recbole_fitmm.compare_table.summarise` (keys ``model``,
            ``n_seeds``, ``test_<metric>_mean`` and ``test_<metric>_std``). A row without a
            finite mean for every metric (a run that diverged) is left out; a missing std
            counts as 0.
        path: PNG file to write (a chart saying so when no row is left).
        metrics: Test metrics, one bar each per model.

    Returns:
        ``models`` (names, in row order), ``left_out`` (names of the rows left out),
        ``n_seeds`` int64 [n], and per metric
        ``<metric>_mean`` and ``<metric>_std`` (the error bars: sample std over seeds), float64
        [n].
    """
    complete = [all(_value(row, f"test_{m}_mean") is not None for m in metrics) for row in rows]
    kept = [row for row, ok in zip(rows, complete) if ok]
    plotted: dict[str, Any] = {
        "models": [str(row["model"]) for row in kept],
        "left_out": [str(row["model"]) for row, ok in zip(rows, complete) if not ok],
        "n_seeds": np.asarray([int(row.get("n_seeds", 1)) for row in kept], dtype=np.int64),
    }
    for m in metrics:
        plotted[f"{m}_mean"] = np.asarray([_value(r, f"test_{m}_mean") for r in kept], dtype=float)
        plotted[f"{m}_std"] = np.asarray(
            [_value(r, f"test_{m}_std") or 0.0 for r in kept], dtype=np.float64
        )
    fig, (ax,) = _figure("comparison")
    if kept:
        x = np.arange(len(kept))
        width = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            offset = (j - (len(metrics) - 1) / 2) * width
            heights, spread = plotted[f"{m}_mean"], plotted[f"{m}_std"]
            ax.bar(x + offset, heights, width, yerr=spread, capsize=3, label=f"test {m}")
        ticks = [f"{name}\n(seeds: {n})" for name, n in zip(plotted["models"], plotted["n_seeds"])]
        ax.set_xticks(x, ticks, fontsize=10 if len(kept) <= 6 else 7)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no model with test results", ha="center", va="center")
    ax.set(title="Test metrics (mean ± sample std over seeds)", ylabel="value")
    if plotted["left_out"]:
        fig.supxlabel("no test result: " + ", ".join(plotted["left_out"]), fontsize=9)
    save_figure(fig, path)
    return plotted


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring); returns 0, or 2 after a one-line ``error: ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.plots", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    curve = commands.add_parser("curve", help="train loss and validation metric per epoch")
    curve.add_argument("file", help="*.last.pth.json, *.result.json, a RecBole log or a .pth")
    curve.add_argument("--out", default="curve.png", help="PNG file (default curve.png)")
    args = parser.parse_args(argv)

    def plot() -> str:
        history, metric = read_history(args.file)
        training_curve(history, args.out, metric)
        return f"{len(history)} epochs plotted to {args.out}"

    return run_action(plot)


if __name__ == "__main__":
    sys.exit(main())
