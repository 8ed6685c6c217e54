"""Where a FITMM training step goes: one step timed with parts of the model switched off.

On the Baby-sized synthetic data of ``bench_fitmm.py`` (generated into a temporary folder), one
training batch is run through ``calculate_loss``, ``backward`` and the trainer's optimiser step
for each variant below; the best of ``--repeats`` steps (after one warm-up) is printed. The
differences between variants attribute the step's time to the feature MLPs, the consistency loss
and the band machinery. Usage::

    python benchmarks/profile_fitmm_step.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from bench_fitmm import make_babysynth

#: label -> configuration values replaced in the released defaults.
VARIANTS = {
    "released defaults": {},
    "bf16 feature MLPs": {"feature_mlp_dtype": "bfloat16"},
    "bf16, consistency none": {"feature_mlp_dtype": "bfloat16", "consistency": "none"},
    "bf16, one band": {"feature_mlp_dtype": "bfloat16", "num_freq_bands": 1},
    "bf16, fixed features": {"feature_mlp_dtype": "bfloat16", "train_features": False},
}


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from recbole_fitmm.config import Config
    from recbole_fitmm.quick_start import create_dataset, data_preparation
    from recbole_fitmm.registry import get_model
    from recbole_fitmm.trainer import get_trainer

    with tempfile.TemporaryDirectory(prefix="profile_fitmm_") as tmp:
        values = make_babysynth(Path(tmp))
        config = Config(
            "FITMM",
            "babysynth",
            config_dict={"data_path": tmp, "gpu_id": "", "state": "ERROR", **values},
        )
        train_data, _, _ = data_preparation(config, create_dataset(config))
        batch = next(iter(train_data))
        print(f"threads {torch.get_num_threads()}; seconds, best of {args.repeats}")
        print(f"{'variant':26s} {'forward':>8s} {'backward':>9s} {'optimiser':>10s} {'total':>7s}")
        for label, extra in VARIANTS.items():
            variant = copy.copy(config)
            variant.final_config_dict = {**config.final_config_dict, **extra}
            torch.manual_seed(0)
            model = get_model("FITMM")(variant, train_data._dataset)
            optimizer = get_trainer(variant["MODEL_TYPE"], "FITMM")(variant, model).optimizer
            model.train()
            times = []
            for _ in range(args.repeats + 1):
                start = time.perf_counter()
                optimizer.zero_grad()
                loss = model.calculate_loss(batch)
                forward = time.perf_counter()
                loss.backward()
                backward = time.perf_counter()
                optimizer.step()
                times.append((forward - start, backward - forward, time.perf_counter() - backward))
            best = [min(step[i] for step in times[1:]) for i in range(3)]
            print(f"{label:26s} {best[0]:8.3f} {best[1]:9.3f} {best[2]:10.3f} {sum(best):7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
