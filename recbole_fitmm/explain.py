"""What a trained FITMM learned: spectral energy per band, gates, band weights, modality weights.

    python -m recbole_fitmm.explain saved/FITMM-mmsynth-....pth            # report as Markdown
    python -m recbole_fitmm.explain saved/FITMM-....pth --json report.json
    python -m recbole_fitmm.explain saved/FITMM-....pth --recommend 0,1,2 --k 10
    python -m recbole_fitmm.explain saved/FITMM-....pth --plots figures/ --cold-max 5

For each side (users, items) and each modality block (id, then the feature modalities), the
report gives the share of the block's spectral energy (sum of squared singular values) that each
frequency band holds — band 1 = largest singular values ("low frequency") — for the base view R.
It also gives the global band weights ``β_k = sigmoid(θ_k)``, the gate scale ``s``, the mean and
spread of the per-row gates ``g_k`` and the fraction of rows whose gate excess over 1 is zero
(bands the IB term has "shut off" for that row), and the mean per-user modality weights.

``--plots DIR`` draws the energy shares, the user gates of warm and cold users (at most
``--cold-max`` training interactions) and the band weights (:mod:`recbole_fitmm.plots`), and
the training curve when the run's history lies beside the checkpoint (any model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from recbole_fitmm.checkpoint import resolve_checkpoint
from recbole_fitmm.errors import ConfigError, DataError, FITMMError
from recbole_fitmm.inference import load_model, recommend
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.model import layers, spectral
from recbole_fitmm.plots import COLD_MAX, fitmm_plots, read_history, training_curve


def _block_energy(view: torch.Tensor, n_blocks: int, num_bands: int) -> list[list[float]]:
    """Energy share per band of every d-column block; [n_blocks][M] lists summing to 1."""
    shares = []
    for block in view.double().chunk(n_blocks, dim=1):
        sigma = torch.linalg.svdvals(block)
        sizes = spectral.band_sizes(block.shape[0], block.shape[1], num_bands)
        energy = torch.stack([part.pow(2).sum() for part in sigma.split(sizes)])
        shares.append((energy / energy.sum().clamp_min(1e-300)).tolist())
    return shares


def _gate_summary(gate: Any, gates: torch.Tensor) -> dict[str, Any]:
    return {
        "band_weights": torch.sigmoid(gate.band_logits).tolist(),
        "gate_scale": float(gate.gate_scale) if gate.gated else None,
        "gate_mean": gates.mean(dim=0).tolist(),
        "gate_std": gates.std(dim=0).tolist() if gates.shape[0] > 1 else [0.0] * gates.shape[1],
        "shut_off_fraction": layers.shut_off_fraction(gates, gate.direction).tolist(),
    }


@torch.no_grad()
def explain_fitmm(model: Any) -> dict[str, Any]:
    """Summarise a FITMM model's bands and gates.

    Args:
        model: A :class:`~recbole_fitmm.model.fitmm.FITMM` instance (trained or not).

    Returns:
        Plain data: ``blocks`` (names), ``num_bands``, and per side (``users``, ``items``)
        ``energy`` ([blocks][M] energy shares of the base view), ``band_weights`` [M],
        ``gate_scale``, ``gate_mean`` [M], ``gate_std`` [M], ``shut_off_fraction`` [M]; plus
        ``user_modality_weights`` (mean and std per block).

    Raises:
        ConfigError: ``model`` is not FITMM.
    """
    if type(model).__name__ != "FITMM":
        raise ConfigError(f"explain needs a FITMM model, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    out = model.forward()
    model.train(was_training)
    m, n_blocks = model.params.num_freq_bands, model.n_blocks
    report: dict[str, Any] = {"blocks": ["id", *model.modalities], "num_bands": m}
    sides = (
        ("users", out.user_views, out.user_gates, model.user_gate),
        ("items", out.item_views, out.item_gates, model.item_gate),
    )
    for name, views, gates, gate in sides:
        report[name] = {
            "energy": _block_energy(views[0], n_blocks, m),
            **_gate_summary(gate, gates),
        }
    weights = model.user_weights.double()
    report["user_modality_weights"] = {
        "mean": weights.mean(0).tolist(),
        "std": weights.std(0).tolist(),
    }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`explain_fitmm` as Markdown tables."""
    m = report["num_bands"]
    bands = " | ".join(f"band {k + 1}" for k in range(m))
    lines = []
    for side in ("users", "items"):
        part = report[side]
        lines += [f"### {side}", "", f"| | {bands} |", "|---" * (m + 1) + "|"]
        for block, shares in zip(report["blocks"], part["energy"]):
            lines.append(
                f"| energy share, {block} | " + " | ".join(f"{v:.3f}" for v in shares) + " |"
            )
        for key in ("band_weights", "gate_mean", "gate_std", "shut_off_fraction"):
            lines.append(f"| {key} | " + " | ".join(f"{v:.3f}" for v in part[key]) + " |")
        scale = part["gate_scale"]
        lines += ["", f"gate scale s = {scale:.4f}" if scale is not None else "gate off", ""]
    weights = report["user_modality_weights"]
    lines.append(
        "user modality weights (mean ± std): "
        + ", ".join(
            f"{b} {mu:.3f} ± {sd:.3f}"
            for b, mu, sd in zip(report["blocks"], weights["mean"], weights["std"])
        )
    )
    return "\n".join(lines)


def write_plots(
    checkpoint: str,
    model: Any,
    dataset: Any,
    folder: str,
    report: dict[str, Any] | None = None,
    cold_max: int = COLD_MAX,
) -> list[Path]:
    """The figures of ``--plots``: FITMM's (given its report) and the training curve.

    Args:
        checkpoint: The checkpoint file; the history is read beside it
            (:func:`recbole_fitmm.plots.read_history`); no curve when there is none.
        model: The loaded model.
        dataset: Its training dataset (``train_data.dataset``).
        folder: Output folder.
        report: :func:`explain_fitmm` of a FITMM ``model``; ``None``: the curve only.
        cold_max: Largest number of training interactions of a cold user.

    Returns:
        The written PNG files.
    """
    files = []
    if report is not None:
        files += fitmm_plots(model, dataset, folder, report, cold_max).values()
    try:
        history, metric = read_history(checkpoint)
    except DataError:
        return files
    files.append(Path(folder) / "curve.png")
    training_curve(history, files[-1], metric)
    return files


def main(argv: list[str] | None = None) -> int:
    """Command line: explain a FITMM checkpoint, draw figures, print recommendations."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.explain", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="a FITMM checkpoint, or a folder (its newest best)")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--recommend", default="", help="comma-separated raw user tokens")
    parser.add_argument("--k", type=int, default=10, help="items per user for --recommend")
    parser.add_argument("--plots", default=None, help="write PNG figures into this folder")
    parser.add_argument(
        "--cold-max", type=int, default=COLD_MAX, help="most training items of a cold user"
    )
    args = parser.parse_args(argv)
    try:
        checkpoint = resolve_checkpoint(args.checkpoint)  # a file, or a folder's newest best
        config, model, _, train_data, _, _ = load_model(checkpoint, {"state": "ERROR"})
        report = None
        if config["model"] == "FITMM":
            report = explain_fitmm(model)
            print(format_report(report))
            if args.json:
                atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        if args.plots:
            dataset = train_data.dataset
            files = write_plots(checkpoint, model, dataset, args.plots, report, args.cold_max)
            print("figures: " + ", ".join(str(f) for f in files))
        users = [u for u in args.recommend.split(",") if u]
        if users:
            items, scores = recommend(model, train_data.dataset, users, args.k)
            for user, row, values in zip(users, items, scores):
                pairs = ", ".join(f"{i} ({s:.3f})" for i, s in zip(row, values))
                print(f"user {user}: {pairs}")
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
