"""FITMM experiment families on real data: the DRAGON → FITMM ladder, the sensitivity checks,
the authors' later setting and the options beyond the paper (BENCHMARKS.md, "FITMM on sparse data").

Every configuration is one :func:`recbole_fitmm.compare.compare` call (paper protocol, selection on
valid Recall@20, test once), stored under ``<out>/<dataset>/<family>/<name>-lr<lr>/`` so that a
rerun reuses finished runs and resumes interrupted ones::

    python benchmarks/experiments.py run ladder --dataset tiktok --seeds 999 --lrs 1e-4,1e-3 \\
        --config_files /tmp/conv_props/tiktok.yaml /tmp/quiet.yaml --out /tmp/exp
    python benchmarks/experiments.py table ladder --dataset tiktok --out /tmp/exp

``table`` prints, per configuration and learning rate: seeds, valid/test Recall@20 and NDCG@20
(mean ± std), best epoch, and the shape of the valid curve (peak epoch, relative drop of valid
Recall@20 20 epochs after the peak), plus FITMM's diagnostics at the best epoch when recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recbole_fitmm.cli import parse_overrides
from recbole_fitmm.compare import compare

#: The ladder from DRAGON to FITMM, one change per step (issue #14 item 1). Values are overrides
#: of the model's yaml; ``model`` picks the model.
_SPECTRAL_OFF = {
    "num_freq_bands": 1,
    "use_gate": False,
    "ib_weight": 0.0,
    "consistency": "none",
    "loss_type": "bpr",
}
LADDER: dict[str, dict[str, Any]] = {
    "L0-dragon": {"model": "DRAGON"},
    "L1-encoder": {"model": "FITMM", **_SPECTRAL_OFF},
    "L2-bands": {"model": "FITMM", **_SPECTRAL_OFF, "num_freq_bands": 3},
    "L3-gate": {"model": "FITMM", **_SPECTRAL_OFF, "num_freq_bands": 3, "use_gate": True},
    "L4-ib": {
        "model": "FITMM",
        **_SPECTRAL_OFF,
        "num_freq_bands": 3,
        "use_gate": True,
        "ib_weight": 1.0,
    },
    "L5-consistency": {"model": "FITMM", "loss_type": "bpr"},
    "L6-bce": {"model": "FITMM"},  # the released defaults
}
#: The paper's sensitivity checks (issue #14 item 2), at the released defaults otherwise.
BANDS = {f"K{k}": {"model": "FITMM", "num_freq_bands": k} for k in (1, 2, 3, 4, 5)}
IB = {f"ib{w:g}": {"model": "FITMM", "ib_weight": w} for w in (0.0, 0.01, 0.1, 1.0, 10.0)}
#: The authors' later FITMM configuration (TimeMM repository) (item 3).
LATER = {"later": {"model": "FITMM", "ib_weight": 0.01, "reg_weight": 0.0}}
#: Each option beyond the paper on top of the released defaults (item 4).
OPTIONS = {
    "center": {"model": "FITMM", "feature_preprocess": "center"},
    "whiten": {"model": "FITMM", "feature_preprocess": "whiten"},
    "featlr0.1": {"model": "FITMM", "feature_lr_scale": 0.1},
    "ibwarm10": {"model": "FITMM", "ib_warmup_epochs": 10},
    "banddrop0.2": {"model": "FITMM", "band_dropout": 0.2},
    "personal-user": {"model": "FITMM", "personal_bands": "user"},
    "personal-activity": {"model": "FITMM", "personal_bands": "activity"},
    "edgedrop0.2": {"model": "FITMM", "edge_dropout": 0.2},
    "gatenorm": {"model": "FITMM", "gate_normalise": True},
}
#: Candidates for the validation-selected FITMM (item 5), from what the ladder shows: the BPR
#: ladder steps with the gate normalised (re-weighting bands without scaling rows), and the gate-off
#: step with edge dropout or whitened features.
_L2 = {"model": "FITMM", **_SPECTRAL_OFF, "num_freq_bands": 3}
PLUS = {
    "gatenorm": {**_L2, "use_gate": True, "gate_normalise": True},
    "gatenorm-ib": {**_L2, "use_gate": True, "gate_normalise": True, "ib_weight": 1.0},
    "gatenorm-ib-cons": {"model": "FITMM", "loss_type": "bpr", "gate_normalise": True},
    "nogate-edgedrop": {**_L2, "edge_dropout": 0.2},
    "nogate-whiten": {**_L2, "feature_preprocess": "whiten"},
}
FAMILIES: dict[str, dict[str, dict[str, Any]]] = {
    "ladder": LADDER,
    "bands": BANDS,
    "ib": IB,
    "later": LATER,
    "options": OPTIONS,
    "plus": PLUS,
}


def run_dir(out: Path, dataset: str, family: str, name: str, lr: float) -> Path:
    """Folder of one configuration at one learning rate."""
    return out / dataset / family / f"{name}-lr{lr:g}"


def run(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    """Run every selected configuration of a family at every learning rate and seed."""
    family = FAMILIES[args.family]
    names = args.only.split(",") if args.only else list(family)
    seeds = [int(s) for s in args.seeds.split(",")]
    for lr in (float(x) for x in args.lrs.split(",")):
        for name in names:
            values = dict(family[name])
            model = values.pop("model")
            values.update(extra)
            values["learning_rate"] = lr
            out = run_dir(Path(args.out), args.dataset, args.family, name, lr)
            print(f"== {args.family}/{name} lr {lr:g} seeds {seeds} -> {out}", flush=True)
            compare(
                [model],
                args.dataset,
                seeds,
                config_file_list=args.config_files,
                config_dict=values,
                out_dir=out,
                keep_checkpoints=args.keep_checkpoints,
            )


def curve_shape(history: list[dict[str, Any]]) -> tuple[int | None, float | None]:
    """Peak epoch of valid Recall@20, relative drop 20 evaluations later (None: too short)."""
    scores = [h["valid_score"] for h in history]
    if not scores:
        return None, None
    peak = int(np.argmax(scores))
    later = peak + 20
    drop = None if later >= len(scores) else 1.0 - scores[later] / max(scores[peak], 1e-12)
    return int(history[peak]["epoch"]), drop


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def table(args: argparse.Namespace) -> str:
    """The family's table from the stored runs (Markdown)."""
    root = Path(args.out) / args.dataset / args.family
    lines = [
        "| config | lr | seeds | valid R@20 | test R@20 | test N@20 | best epochs | "
        "valid peak → +20 epochs | diagnostics at best epoch (seed " + "first) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in sorted(root.glob("*-lr*")) if root.is_dir() else []:
        name, _, lr = folder.name.rpartition("-lr")
        runs = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*-seed*.json"))]
        if not runs:
            continue
        valid = [r["valid"]["recall@20"] for r in runs]
        test = [r["test"]["recall@20"] for r in runs]
        ndcg = [r["test"]["ndcg@20"] for r in runs]
        epochs, drops = [], []
        for r in runs:
            peak, drop = curve_shape(r.get("history", []))
            epochs.append("?" if peak is None else str(peak))
            drops.append("–" if drop is None else f"{-100 * drop:+.0f}%")
        diag = ""
        history = runs[0].get("history", [])
        if history and "diagnostics" in history[0]:
            best = max(history, key=lambda h: h["valid_score"])["diagnostics"]
            diag = _diag_text(best)
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(
            f"| {name} | {lr} | {seeds} | {_mean_std(valid)} | {_mean_std(test)} | "
            f"{_mean_std(ndcg)} | {', '.join(epochs)} | {', '.join(drops)} | {diag} |"
        )
    return "\n".join(lines)


def _diag_text(d: dict[str, Any]) -> str:
    parts = [f"‖e_u‖ {d['norm_user']:.2f}", f"‖e_i‖ {d['norm_item']:.2f}"]
    if d.get("gate_scale_user") is not None:
        parts.append(f"s {d['gate_scale_user']:.2f}/{d['gate_scale_item']:.2f}")
    if "gate_mean_user" in d:
        parts.append("g_u " + "/".join(f"{g:.2f}" for g in d["gate_mean_user"]))
    if "shut_off_user" in d:
        parts.append("off_u " + "/".join(f"{x:.0%}" for x in d["shut_off_user"]))
        parts.append("off_i " + "/".join(f"{x:.0%}" for x in d["shut_off_item"]))
    parts.append("β_u " + "/".join(f"{b:.2f}" for b in d["band_weights_user"]))
    parts.append("drift " + "/".join(f"{x:.2f}" for x in d["feature_drift"]))
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seeds", default="999")
    parser.add_argument("--lrs", default="0.0001,0.001")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--config_files", nargs="+", default=[])
    parser.add_argument("--out", default="results/experiments")
    parser.add_argument(
        "--keep_checkpoints", action="store_true", help="keep the runs' checkpoints"
    )
    args, rest = parser.parse_known_args(argv)
    if args.action == "run":
        run(args, parse_overrides(rest))
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
