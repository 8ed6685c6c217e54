"""What the checkpoint cadence costs: one checkpoint write against one training epoch, in one run.

Builds FITMM (released defaults) on the Baby-sized synthetic data (19,445 users, 7,050 items,
4096-d image + 384-d text features, as ``bench_fitmm.py``), trains one epoch to fill the Adam
moments, then times the trainer's checkpoint write (``_flush``: the pending best weights, the
resumable last checkpoint with the optimizer state, the commit) and prints the per-epoch overhead
of each cadence::

    python benchmarks/bench_checkpoint.py [--threads N] [--gpu-epoch-seconds 1.0]

Cadences: after every epoch (``checkpoint_every: 1``, the behaviour before the cadence existed)
and every 300 s (``checkpoint_seconds: 300``, the default). The overhead per epoch is
``write / epoch`` for the first and ``write / max(epoch, 300 s)`` for the second, both with the
epoch time measured here on the CPU and with the GPU epoch time given on the command line
(Baby-sized FITMM takes about 1 s per epoch on an H100, the issue's figure).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from recbole.utils import init_seed

from recbole_fitmm.config import Config
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.registry import get_model
from recbole_fitmm.trainer import get_trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fitmm import make_babysynth  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-epoch-seconds", type=float, default=1.0)
    parser.add_argument("--writes", type=int, default=3, help="timed writes (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as tmp:
        values = make_babysynth(Path(tmp))
        config = Config(
            "FITMM",
            "babysynth",
            config_dict={
                "data_path": tmp,
                "gpu_id": "",
                "state": "ERROR",
                "checkpoint_dir": str(Path(tmp) / "saved"),
                "graph_cache_dir": None,
                **values,
            },
        )
        init_seed(config["seed"], True)
        train_data, _, _ = data_preparation(config, create_dataset(config))
        model = get_model("FITMM")(config, train_data._dataset)
        trainer = get_trainer(config["MODEL_TYPE"], "FITMM")(config, model)
        start = time.perf_counter()
        trainer._train_epoch(train_data, 0)
        epoch = time.perf_counter() - start
        writes = []
        for step in range(args.writes):
            trainer._save_checkpoint(step)  # a new best each time: the full two-phase write
            start = time.perf_counter()
            trainer._flush(step, stopped=False)
            writes.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in (Path(tmp) / "saved").glob("*.pth")) / 2**30
    write = statistics.median(writes)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, {args.threads} threads")
    print(f"FITMM babysynth: epoch {epoch:.1f} s (CPU), checkpoint write {write:.2f} s "
          f"(median of {args.writes}: {', '.join(f'{w:.2f}' for w in writes)}), "
          f"best + last on disk {size:.2f} GiB")  # fmt: skip
    for label, seconds in (("CPU", epoch), ("GPU", args.gpu_epoch_seconds)):
        every = write / seconds
        timed = write / max(seconds, 300.0)
        print(f"{label} epoch {seconds:.1f} s: overhead per epoch with checkpoint_every: 1 = "
              f"{100 * every:.1f}%, with checkpoint_seconds: 300 = {100 * timed:.2f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
