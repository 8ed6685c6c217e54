"""Building the frozen multimodal kNN item graph against loading it from the graph cache.

Random features at the sizes of the issue (4096-d image + 384-d text, k = 10, weights 0.1 / 0.9)
for each item count; the build is :func:`recbole_fitmm.model.graph.multimodal_knn_graph` (row
blocks, never a dense items × items matrix) on the given device; the cache is
:class:`recbole_fitmm.data.graph_cache.GraphCache` (first call builds and writes, second call
hashes the features and reads)::

    python benchmarks/bench_knn_cache.py --items 20000 100000 [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from recbole_fitmm.data.graph_cache import GraphCache
from recbole_fitmm.model.graph import multimodal_knn_graph


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[20000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, {args.threads} threads, "
          f"{args.device}")  # fmt: skip
    for n in args.items:
        generator = torch.Generator().manual_seed(n)
        features = [torch.randn(n + 1, dim, generator=generator) for dim in (4096, 384)]
        for feature in features:
            feature[0] = 0.0  # the PAD row

        def build(features: list[torch.Tensor] = features) -> torch.Tensor:
            on_device = [f.to(args.device) for f in features]
            graph = multimodal_knn_graph(on_device, [0.1, 0.9], 10)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return graph.cpu()

        with tempfile.TemporaryDirectory(prefix="bench_knn_") as folder:
            cache = GraphCache(folder)
            key = {"kind": "bench", "k": 10, "weights": [0.1, 0.9]}
            start = time.perf_counter()
            built = cache.get(key, features, build)
            first = time.perf_counter() - start
            start = time.perf_counter()
            loaded = cache.get(key, features, lambda: (_ for _ in ()).throw(AssertionError()))
            second = time.perf_counter() - start
            assert torch.equal(built.indices(), loaded.indices())
        print(f"{n:>7} items: build + write {first:8.1f} s   load (hash + read) {second:6.2f} s   "
              f"ratio {first / second:6.1f}x   nnz {built._nnz():,}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
