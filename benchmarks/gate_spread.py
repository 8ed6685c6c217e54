"""How user-dependent FITMM's frequency selection is: gates and band weights by user activity.

For a trained FITMM checkpoint (or a checkpoint folder: its newest best one), users are grouped by
their number of training interactions (≤ 5 / 6–10 / 11–20 / > 20, or ``--activity_bins``) and,
per group and band, the mean ± std of the gate ``g_k`` and of the effective band coefficient
``β_{u,k} g_{u,k}`` are printed (``β`` includes the ``personal_bands`` offsets when the model
has them), with the spread of the coefficients across users::

    python benchmarks/gate_spread.py saved/FITMM-tiktok-....pth
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from recbole_fitmm.inference import load_model
from recbole_fitmm.plots import user_gates
from recbole_fitmm.stats import DEFAULT_ACTIVITY_BINS, activity_labels


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument(
        "--activity_bins",
        default=",".join(map(str, DEFAULT_ACTIVITY_BINS)),
        help="inclusive upper edges of the user groups by training interactions (default 5,10,20)",
    )
    args = parser.parse_args(argv)
    bins = [int(b) for b in args.activity_bins.split(",")]
    config, model, _, train_data, _, _ = load_model(args.checkpoint, {"state": "ERROR"})
    gates, counts = user_gates(model, train_data.dataset)
    with torch.no_grad():
        logits = model.user_gate.band_logits.detach().cpu().double()
        if model.personal is not None:
            logits = logits + model.personal().detach().cpu().double()
        beta = torch.sigmoid(logits).expand(gates.shape[0], -1).numpy()
    coef = beta * gates
    edges = np.searchsorted(np.asarray(bins), counts, side="left")
    labels = activity_labels(bins)
    p = model.params
    print(
        f"{config['dataset']}: FITMM (gate {p.use_gate}, normalised {p.gate_normalise}, "
        f"personal_bands {p.personal_bands}); {len(counts)} users; gate scale "
        f"{float(model.user_gate.gate_scale) if model.user_gate.gated else 'off'}"
    )
    print(
        "| users (train interactions) | n | gate g_k mean ± std | coefficient β_k g_k mean ± std |"
    )
    print("|---|---|---|---|")
    for group, label in enumerate(labels):
        rows = edges == group
        if not rows.any():
            continue
        g = ", ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(gates[rows].mean(0), gates[rows].std(0)))
        c = ", ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(coef[rows].mean(0), coef[rows].std(0)))
        print(f"| {label} | {int(rows.sum())} | {g} | {c} |")
    spread = coef.std(0) / np.abs(coef.mean(0))
    print(f"coefficient spread across users (std / mean) per band: {np.round(spread, 4).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
