"""The training-step paths changed for the GPU, each timed against its previous form in one run.

On Baby-sized random tensors (19,444 users, 7,049 items, 3 blocks of 64 columns, the training
graph's density), CPU::

    python benchmarks/bench_step_paths.py [--threads N] [--repeat 5]

* band split: one batched ``eigh`` of the 12 Gram matrices (now) against one call per matrix (the
  previous four calls of three blocks), forward + backward;
* frozen products: CSR matrices stored once (now) against a COO matrix converted to CSR in every
  product and every backward (before), forward + backward of one propagation layer;
* the eigendecomposition with and without the former per-call switch to one thread
  (``torch.set_num_threads(1)`` around the call; removed because it changes a process-wide setting
  from inside the forward pass, races with other threads and does nothing on CUDA).

The host synchronisations that were removed (``bool((weights == 1).all())`` in the consistency
term, ``loss.item()`` and ``isnan`` after every batch) cost nothing measurable on a CPU; on a GPU
each stalls the launch queue once per call (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from recbole_fitmm.model import graph, layers, spectral

USERS, ITEMS, BLOCK, BLOCKS, DEGREE = 19444, 7049, 64, 3, 6


def timed(steps: list[Callable[[], None]], repeat: int) -> list[float]:
    """Median seconds of each step over ``repeat`` interleaved calls after one warm-up each
    (interleaving spreads the load of a shared machine over both sides)."""
    times: list[list[float]] = [[] for _ in steps]
    for step in steps:
        step()
    for _ in range(repeat):
        for step, spent in zip(steps, times):
            start = time.perf_counter()
            step()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def band_split(batched: bool, one_thread: bool = False) -> Callable[[], None]:
    """Forward + backward of the band bases of R_u, H_u, R_i, H_i."""
    torch.manual_seed(0)
    views = [
        torch.randn(n, BLOCK * BLOCKS, requires_grad=True) for n in (USERS, USERS, ITEMS, ITEMS)
    ]
    labels = torch.stack([spectral.band_labels(v.shape[0], BLOCK, 3) for v in views])

    def step() -> None:
        threads = torch.get_num_threads()
        if one_thread:
            torch.set_num_threads(1)
        try:
            if batched:
                bases, _ = spectral.band_bases(views, BLOCK, 3, labels=labels)
            else:
                bases = torch.cat(
                    [spectral.band_bases([v], BLOCK, 3, labels=labels[i : i + 1])[0]
                     for i, v in enumerate(views)]
                )  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        bases.square().sum().backward()

    return step


def propagation(stored_csr: bool) -> Callable[[], None]:
    """Forward + backward of one layer on the user–item graph, 192 columns."""
    torch.manual_seed(0)
    users = torch.randint(1, USERS, (USERS * DEGREE,))
    items = torch.randint(1, ITEMS, (USERS * DEGREE,))
    adj = graph.bipartite_adjacency(users, items, USERS, ITEMS)
    x = torch.randn(USERS + ITEMS, BLOCK * BLOCKS, requires_grad=True)
    csr, _ = layers.frozen_pair(adj, symmetric=True)

    def step() -> None:
        if stored_csr:
            out = layers.sparse_product(csr, csr, x)
        else:  # the previous form: COO buffers, converted in the forward and in the backward
            out = _ConvertEveryCall.apply(x, adj)
        out.square().sum().backward()

    return step


class _ConvertEveryCall(torch.autograd.Function):
    """The previous frozen product: a coalesced COO matrix converted to CSR in every call."""

    @staticmethod
    def forward(ctx, x, matrix):  # noqa: ANN001, ANN205 - benchmark-local reference
        ctx.matrix = matrix
        return matrix.to_sparse_csr() @ x

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return ctx.matrix.t().coalesce().to_sparse_csr() @ grad, None


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, {args.threads} threads")
    pairs = [
        ("band split, 12 Gram eigh", band_split(True), band_split(False)),
        ("propagation layer, 192 cols", propagation(True), propagation(False)),
        ("band split, thread switch", band_split(True), band_split(True, one_thread=True)),
    ]
    for name, now, before in pairs:
        t_now, t_before = timed([now, before], args.repeat)
        print(f"{name:30s} now {1000 * t_now:8.1f} ms   before {1000 * t_before:8.1f} ms   "
              f"ratio now/before {t_now / t_before:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
