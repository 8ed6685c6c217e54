"""Training and evaluation speed and peak memory of FITMM vs RecBole's LightGCN, in one run.

Datasets, written to a temporary folder and removed afterwards:

* ``babysynth`` — generated with :mod:`recbole_fitmm.data.synthetic` at Amazon Baby's size
  (19,445 users, 7,050 items, ~160k interactions, 4096-d image + 384-d text features);
* ``ml100k`` — ``../shared/data/ml100k`` converted with :mod:`recbole_fitmm.data.convert`, when that
  folder exists beside the checkout (skipped otherwise, or with ``--skip-ml100k``).

Each (dataset, model) pair runs in its own subprocess (so peak RSS is per model), through the
plugin (``Config`` → ``create_dataset`` → ``data_preparation`` → ``get_model`` → ``get_trainer``),
and alternates one training epoch with one full-sort evaluation on the validation split, as
training does. It reports seconds per epoch, seconds per evaluation (the first evaluation after
each epoch, so every model recomputes its cached representations), peak RSS (``VmHWM``, and
its value once the data are loaded) and the ratios FITMM / LightGCN. Usage::

    python benchmarks/bench_fitmm.py [--epochs 2] [--threads N] [--skip-ml100k] [--bf16] [--svd]
        [--device cpu|cuda] [--json F]

With ``--device cuda`` every timing ends with ``torch.cuda.synchronize()`` and the report adds
each model's peak GPU memory (``torch.cuda.max_memory_allocated``).

``--bf16`` adds ``FITMM-bf16``: FITMM with ``feature_mlp_dtype: bfloat16`` (the feature MLPs
under bfloat16 autocast, a speed option that changes the arithmetic), timed in the same run.

``--svd`` first compares the band-split solvers (accuracy against a float64 SVD on the Baby-sized
model's matrices, time, finiteness of gradients on degenerate blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_ML100K = ROOT.parent / "shared" / "data" / "ml100k"
MODELS = ("LightGCN", "FITMM")
#: Labelled variants: label -> (model, extra configuration values).
VARIANTS = {"FITMM-bf16": ("FITMM", {"feature_mlp_dtype": "bfloat16"})}
#: Amazon Baby's size (fitmm_method.md §6.3): 160,792 interactions over 19,445 users.
BABY = {"n_users": 19445, "n_items": 7050, "mean_inter": 160792 / 19445, "min_inter": 5}


def make_babysynth(root: Path) -> dict[str, Any]:
    """Write the Baby-sized synthetic dataset under ``root``; return its config values."""
    from recbole_fitmm.data.synthetic import SyntheticSpec, generate, write_atomic

    spec = SyntheticSpec(modalities={"image": 4096, "text": 384}, n_topics=16, seed=1, **BABY)
    write_atomic(generate(spec), root, "babysynth")
    return {"benchmark_filename": ["train", "valid", "test"], "modalities": ["image", "text"]}


def make_ml100k(root: Path) -> dict[str, Any]:
    """Convert ``../shared/data/ml100k`` into ``root``; return the converter's dataset yaml."""
    from recbole_fitmm.data.convert import convert_mmrec

    properties = root / "properties"
    convert_mmrec(SHARED_ML100K, name="ml100k", out=root, properties_dir=properties)
    values = yaml.safe_load((properties / "ml100k.yaml").read_text())
    values.pop("data_path", None)
    return values


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``; reset by exec, unlike ``ru_maxrss``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(
    model: str,
    dataset: str,
    root: str,
    values: dict[str, Any],
    epochs: int,
    threads: int,
    label: str = "",
    device: str = "cpu",
) -> dict:
    """Train and evaluate one model; runs inside its own subprocess."""
    import torch
    from recbole.utils import init_seed

    cuda = device == "cuda"

    def sync() -> None:  # timings of asynchronous GPU work end when the device is done
        if cuda:
            torch.cuda.synchronize()

    if threads:
        torch.set_num_threads(threads)
    from recbole_fitmm.config import Config
    from recbole_fitmm.quick_start import create_dataset, data_preparation
    from recbole_fitmm.registry import get_model
    from recbole_fitmm.trainer import get_trainer

    config_dict = {
        "data_path": root,
        "gpu_id": "0" if cuda else "",
        "state": "ERROR",
        "show_progress": False,
        "checkpoint_dir": str(Path(root) / "saved"),
        **values,
    }
    config = Config(model, dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, data)
    data_rss = peak_rss_mib()
    start = time.perf_counter()
    net = get_model(model)(config, train_data._dataset).to(config["device"])
    init_seconds = time.perf_counter() - start
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
    epoch_seconds, eval_seconds, recall = [], [], []
    for epoch in range(epochs):
        sync()
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        sync()
        epoch_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        sync()
        eval_seconds.append(time.perf_counter() - start)
        recall.append(float(result["recall@20"]))
    return {
        "model": label or model,
        "dataset": dataset,
        "init_seconds": init_seconds,
        "epoch_seconds": epoch_seconds,
        "eval_seconds": eval_seconds,
        "valid_recall@20": recall,
        "peak_rss_mib": peak_rss_mib(),
        "data_rss_mib": data_rss,
        "train_batches": len(train_data),
        "threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
    }


def _reference_bands(x: Any, labels: Any, num_bands: int) -> Any:
    """Bands ``U_k diag(s_k) V_kᵀ`` of one block from a float64 ``torch.linalg.svd``."""
    import torch

    u, sigma, vh = torch.linalg.svd(x.double(), full_matrices=False)
    mask = torch.nn.functional.one_hot(labels[: len(sigma)], num_bands + 1)[:, :num_bands]
    return torch.stack([(u * sigma * mask[:, k]) @ vh for k in range(num_bands)])


def svd_study(root: str, values: dict[str, Any]) -> list[str]:
    """Accuracy, speed and gradient safety of the band-split solvers (``--svd``)."""
    import torch

    from recbole_fitmm.config import Config
    from recbole_fitmm.model import spectral
    from recbole_fitmm.quick_start import create_dataset, data_preparation
    from recbole_fitmm.registry import get_model

    config = Config("FITMM", "babysynth", config_dict={"data_path": root, "gpu_id": "", **values})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("FITMM")(config, train_data._dataset)
    with torch.no_grad():
        matrices = list(model.base_views())
    variants = {
        "gram float64 (default)": {"solver": "gram", "float64": True},
        "gram float32": {"solver": "gram", "float64": False},
        "svd float64": {"solver": "svd", "float64": True},
        "svd float32 (release)": {"solver": "svd", "float64": False},
    }
    lines = ["band split of R_u, H_u, R_i, H_i (3 blocks each) of an initialised FITMM:"]
    for name, options in variants.items():
        leaves = [m.clone().requires_grad_() for m in matrices]
        times = []
        for _ in range(3):
            start = time.perf_counter()
            bases, labels = spectral.band_bases(leaves, 64, 3, **options)
            bases.sum().backward()
            times.append(time.perf_counter() - start)
        error = 0.0
        for i, x in enumerate(matrices):
            for b in range(3):
                block = x[:, 64 * b : 64 * b + 64]
                ref = _reference_bands(block, labels[i], 3)
                with torch.no_grad():
                    got = spectral.band_split(block, 3, **options).double()
                error = max(error, float((got - ref).abs().max() / block.abs().max()))
        lines.append(
            f"  {name:24s} max |band - float64 SVD band| / max|X| = {error:.1e};"
            f"  forward+backward {min(times) * 1000:.0f} ms"
        )
    lines.append("gradients of a gated band sum on degenerate 500x64 blocks (finite?):")
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(500, 64, generator=gen))
    cases = {
        "generic": torch.randn(500, 64, generator=gen),
        "duplicate rows": torch.randn(5, 64, generator=gen).repeat(100, 1),
        "zero rows": torch.cat([torch.randn(100, 64, generator=gen), torch.zeros(400, 64)]),
        "rank 3": torch.randn(500, 3, generator=gen) @ torch.randn(3, 64, generator=gen),
        "equal singular values": q,
        "near-equal (1e-6)": q * (1 + 1e-6 * torch.arange(64.0)),
    }
    coef = torch.tensor([0.7, 1.3, 0.4]).expand(500, 3)
    solvers = {
        "svd float32": {"solver": "svd", "float64": False},
        "svd float64": {"solver": "svd", "float64": True},
        "gram guard 0": {"solver": "gram", "grad_guard": 0.0},
        "gram guard 1e-8": {"solver": "gram", "grad_guard": 1e-8},
    }
    lines.append("  " + " " * 22 + "".join(f"{name:>17s}" for name in solvers))
    for case, x in cases.items():
        cells = []
        for options in solvers.values():
            leaf = x.clone().requires_grad_()
            bases, labels = spectral.band_bases([leaf], 64, 3, **options)
            fused = spectral.fused_bands(leaf, leaf, bases[[0, 0]], labels[0], coef)
            (grad,) = torch.autograd.grad(fused.square().sum(), leaf)
            cells.append("finite" if torch.isfinite(grad).all() else "NaN/inf")
        lines.append(f"  {case:22s}" + "".join(f"{cell:>17s}" for cell in cells))
    return lines


def run_worker(
    model: str,
    dataset: str,
    root: Path,
    values: dict,
    epochs: int,
    threads: int,
    label: str = "",
    device: str = "cpu",
) -> dict:
    """Run :func:`worker` in a fresh interpreter and parse its JSON answer."""
    args = json.dumps([model, dataset, str(root), values, epochs, threads, label, device])
    done = subprocess.run(
        [sys.executable, __file__, "--worker", args],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{model} on {dataset} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    """``nproc``, CPU model and torch version, for the report."""
    import torch

    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"nproc={os.cpu_count()}, {model}, torch {torch.__version__}, {threads} threads"


def report(rows: list[dict]) -> str:
    """A table per dataset with the FITMM / LightGCN ratios."""
    lines = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        by_model = {row["model"]: row for row in rows if row["dataset"] == dataset}
        lines.append(f"\n{dataset}")
        lines.append(
            f"{'model':10s} {'s/epoch':>9s} {'s/eval':>8s} {'peak MiB':>9s} {'data MiB':>9s}"
            f" {'init s':>7s} {'GPU MiB':>8s}"
            f" {'batches':>8s}  valid R@20 per epoch"
        )
        for name in by_model:
            row = by_model[name]
            row["epoch"] = statistics.median(row["epoch_seconds"])
            row["eval"] = statistics.median(row["eval_seconds"])
            recall = ", ".join(f"{r:.4f}" for r in row["valid_recall@20"])
            lines.append(
                f"{name:10s} {row['epoch']:9.2f} {row['eval']:8.2f} {row['peak_rss_mib']:9.0f}"
                f" {row['data_rss_mib']:9.0f} {row['init_seconds']:7.2f}"
                f" {row.get('peak_gpu_mib', 0.0):8.0f}"
                f" {row['train_batches']:8d}  {recall}"
            )
        lightgcn = by_model["LightGCN"]
        for name in (name for name in by_model if name.startswith("FITMM")):
            fitmm = by_model[name]
            lines.append(
                f"ratio {name}/LightGCN: epoch {fitmm['epoch'] / lightgcn['epoch']:.2f}x "
                f"(target <= 5), eval {fitmm['eval'] / lightgcn['eval']:.2f}x (target <= 1.5), "
                f"peak memory {fitmm['peak_rss_mib'] / lightgcn['peak_rss_mib']:.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (median)")
    parser.add_argument("--skip-ml100k", action="store_true", help="only the synthetic dataset")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per model (default: torch's)"
    )
    parser.add_argument("--svd", action="store_true", help="also study the band-split solvers")
    parser.add_argument("--bf16", action="store_true", help="also time FITMM-bf16")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {machine()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fitmm_") as tmp:
        root = Path(tmp)
        datasets = {"babysynth": make_babysynth(root)}
        if SHARED_ML100K.is_dir() and not args.skip_ml100k:
            datasets["ml100k"] = make_ml100k(root)
        if args.svd:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            print("\n".join(svd_study(str(root), datasets["babysynth"])), flush=True)
        for dataset, values in datasets.items():
            runs = [(model, model, {}) for model in MODELS]
            if args.bf16:
                runs += [(label, model, extra) for label, (model, extra) in VARIANTS.items()]
            for label, model, extra in runs:
                rows.append(
                    run_worker(
                        model,
                        dataset,
                        root,
                        {**values, **extra},
                        args.epochs,
                        args.threads,
                        label,
                        args.device,
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
