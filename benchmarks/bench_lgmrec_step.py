"""One LGMRec training step with its InfoNCE on ``torch.logsumexp`` against the plugin's kernel.

The plugin computes the contrastive denominator with ``_BoundedLogSumExp`` (one [B, N] buffer,
gradient weights formed in place). This script times forward + backward of a whole training step
both ways, alternating, on one batch of a dataset, and prints the medians and their ratio. Usage::

    python benchmarks/bench_lgmrec_step.py DATASET [--config_files a.yaml ...] [--steps 6]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

import recbole_fitmm.model.lgmrec as lgmrec
from recbole_fitmm.config import Config
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.registry import get_model


def logsumexp_infonce(anchor: Tensor, positive: Tensor, candidates: Tensor) -> Tensor:
    """:func:`recbole_fitmm.model.lgmrec.infonce` with ``torch.logsumexp`` and its autograd."""
    anchor, positive, candidates = (F.normalize(x) for x in (anchor, positive, candidates))
    anchor = anchor / lgmrec.TAU
    pos = (anchor * positive).sum(dim=1)
    return (torch.logsumexp(anchor @ candidates.T, dim=1) - pos).sum()


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--config_files", nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = Config("LGMRec", args.dataset, args.config_files, {"state": "ERROR", "gpu_id": ""})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LGMRec")(config, train_data._dataset)
    batch = next(iter(train_data))
    kernels = {"torch.logsumexp": logsumexp_infonce, "plugin kernel": lgmrec.infonce}
    seconds: dict[str, list[float]] = {name: [] for name in kernels}
    try:
        for _ in range(args.steps):
            for name, kernel in kernels.items():
                lgmrec.infonce = kernel
                model.zero_grad()
                start = time.perf_counter()
                model.calculate_loss(batch).backward()
                seconds[name].append(time.perf_counter() - start)
    finally:
        lgmrec.infonce = kernels["plugin kernel"]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.dataset}: {model.n_users} users, {model.n_items} items, batch {len(batch)}")
    for name, value in medians.items():
        print(f"{name:>16}: median step {value:.3f} s over {args.steps}")
    print(f"plugin / logsumexp: {medians['plugin kernel'] / medians['torch.logsumexp']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
