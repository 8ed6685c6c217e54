"""The command lines: one run, a comparison, a search (``recbole-fitmm``, ``recbole-fitmm-compare``,
``recbole-fitmm-hyper`` once installed; ``run_recbole_fitmm.py``, ``run_compare.py`` and
``run_hyper.py`` in a checkout). Each returns an exit status: 0, or 2 with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recbole_fitmm.cli import format_results, parse_overrides
from recbole_fitmm.compare import DEFAULT_TEST, PAIRED_TESTS, assemble, compare
from recbole_fitmm.compare_tuned import TUNING_SEED, tuned_compare
from recbole_fitmm.config import PROPERTIES
from recbole_fitmm.errors import ConfigError, FITMMError
from recbole_fitmm.quick_start import run_recbole_fitmm
from recbole_fitmm.stats import DEFAULT_ACTIVITY_BINS, activity_labels
from recbole_fitmm.tuning import TOOLS, Search, tune, write_result
from recbole_fitmm.tuning_ray import RayResources, tune_ray
from recbole_fitmm.tuning_space import ALGORITHMS


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def add_ray_options(group: argparse._ArgumentGroup, cpus_per_trial: float | None) -> None:
    """The Ray resources of a search (``run_hyper.py --tool=ray``, ``run_compare.py --tuned``).

    Args:
        group: The parser group that receives them.
        cpus_per_trial: Default of ``--cpus_per_trial`` (``None``: not given, meaning 1).
    """
    group.add_argument("--cpus", type=int, default=None, help="Ray: CPUs (default: all cores)")
    group.add_argument(
        "--cpus_per_trial",
        type=float,
        default=cpus_per_trial,
        help="Ray: CPUs per trial, also its torch threads (default: 1)",
    )
    group.add_argument(
        "--gpus_per_trial",
        type=float,
        default=None,
        help="Ray: GPUs per trial (default: the GPUs shared by the trials that run at once)",
    )
    group.add_argument("--address", default=None, help="Ray: join this cluster (host:port)")


RUN_MAIN_DESCRIPTION = "Train and evaluate one model under the paper protocol."


def run_main(argv: list[str] | None = None) -> int:
    """Train and evaluate one model under the paper protocol.

        python run_recbole_fitmm.py                                  # FITMM on the embedded mmsynth
        python run_recbole_fitmm.py --model=LightGCN --dataset=baby --config_files="my.yaml"
        python run_recbole_fitmm.py --model=FITMM --learning_rate=0.001 --seed=1

    Any ``--key=value`` is a RecBole/plugin configuration value and beats every yaml file.
    """
    parser = argparse.ArgumentParser(description=RUN_MAIN_DESCRIPTION)
    parser.add_argument("--model", "-m", default="FITMM", help="plugin or RecBole model name")
    parser.add_argument("--dataset", "-d", default="mmsynth", help="dataset name (folder)")
    parser.add_argument(
        "--config_files", default="", help="space-separated yaml files (one argument)"
    )
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = parse_overrides(rest)
        result = run_recbole_fitmm(
            args.model,
            args.dataset,
            config_file_list=args.config_files.split() or None,
            config_dict=overrides,
        )
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"\n{result['model']} on {result['dataset']} "
        f"(best valid {result['config']['valid_metric']} = {result['best_valid_score']:.4f}, "
        f"training {result['train_seconds']:.1f} s)\n"
    )
    print(format_results({"valid": result["best_valid_result"], "test": result["test_result"]}))
    return 0


COMPARE_MAIN_DESCRIPTION = (
    "Compare several models side by side on one dataset over several seeds "
    "(mean ± std, paired test)."
)


def compare_main(argv: list[str] | None = None) -> int:
    """Compare several models on one dataset over several seeds (mean ± std, paired test).

        python run_compare.py --models BPR,LightGCN,VBPR,FREEDOM,LGMRec,DRAGON --dataset tiktok \\
            --seeds 999,1,2 --config_files my_tiktok.yaml --out results/compare_tiktok --epochs=100

    Every model runs under the plugin's protocol (valid-selected epoch, test once with the
    train-only mask); the best model is chosen on mean valid Recall@20 and compared with every
    other one by a paired test over per-user test Recall@20. Any ``--key=value`` is a
    configuration value for every run and beats the yaml files; ``--MODEL:key=value`` applies to
    one model only (e.g. ``--DRAGON:learning_rate=0.001``). Finished runs are stored in
    ``<out>/runs/`` and reused by a later call with the same settings. Writes summary.md,
    summary.csv, per_seed.csv and per_user_recall@20.npz into ``--out``.

    ``--from_runs DIR [DIR ...]`` trains nothing: it builds the table from the runs stored under the
    ``runs/`` folders of earlier comparisons (e.g. models run in parallel processes, or with
    different seeds), for the listed models::

        python run_compare.py --models BPR,LightGCN,FITMM --dataset tiktok \\
            --from_runs results/ids results/fitmm --out results/compare_tiktok

    A folder given as ``LABEL=DIR`` enters the table under ``LABEL`` (runs of one model with
    other settings, e.g. ``--models FITMM,FITMM-plus --from_runs FITMM-plus=results/plus ...``).

    ``--tuned --budget N`` first tunes every model with a search space on validation with ``N``
    trials (``--tool hyperopt|ray``, ``--trial_epochs``, trials with ``--tuning_seed``, 42 by
    default, which may not be a reported seed), then compares the selected settings::

        python run_compare.py --models LightGCN,FREEDOM,FITMM --dataset tiktok --tuned \\
            --budget 12 --seeds 999,1,2 --tool ray --cpus 4
    """
    parser = argparse.ArgumentParser(description=COMPARE_MAIN_DESCRIPTION)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name (folder)")
    parser.add_argument("--seeds", default="999", help="comma-separated seeds (default 999)")
    parser.add_argument(
        "--config_files", nargs="+", default=[], help="yaml files (space-separated)"
    )
    parser.add_argument("--out", default=None, help="output folder (results/compare_<dataset>)")
    parser.add_argument(
        "--test", choices=PAIRED_TESTS, default=DEFAULT_TEST, help="paired test (default twolevel)"
    )
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep run checkpoints")
    bins = ",".join(map(str, DEFAULT_ACTIVITY_BINS))
    parser.add_argument(
        "--activity_bins",
        default=bins,
        help="inclusive upper edges of the user-activity groups (training interactions), "
        f"comma-separated (default {bins}: {', '.join(activity_labels(DEFAULT_ACTIVITY_BINS))})",
    )
    parser.add_argument(
        "--from_runs",
        nargs="+",
        default=None,
        help="build the table from stored runs only ([LABEL=]DIR: LABEL names the folder's model)",
    )
    tuning = parser.add_argument_group("tuned comparison (--tuned)")
    tuning.add_argument("--tuned", action="store_true", help="tune every model first")
    tuning.add_argument("--budget", type=int, default=12, help="trials per model (default 12)")
    tuning.add_argument("--tool", choices=TOOLS, default="hyperopt", help="tuning backend")
    tuning.add_argument("--tuning_seed", type=int, default=TUNING_SEED, help="seed of the trials")
    tuning.add_argument("--trial_epochs", type=int, default=None, help="epoch cap of a trial")
    add_ray_options(tuning, cpus_per_trial=1.0)
    args, rest = parser.parse_known_args(argv)
    try:
        seeds = [int(seed) for seed in _names(args.seeds)]
        bins = [int(edge) for edge in _names(args.activity_bins)]
    except ValueError:
        print(
            f"error: --seeds and --activity_bins must be comma-separated integers, got "
            f"{args.seeds!r} and {args.activity_bins!r}",
            file=sys.stderr,
        )
        return 2
    try:
        if args.from_runs:
            out = args.out or f"results/compare_{args.dataset}"
            result = assemble(
                _names(args.models), args.dataset, args.from_runs, out, args.test, bins
            )
            print(result.markdown)
            print("written: " + ", ".join(str(path) for path in result.files))
            return 0
        files = [name for token in args.config_files for name in token.split()]
        models, shared = (
            _names(args.models),
            {
                "config_file_list": files or None,
                "config_dict": parse_overrides(rest),
                "out_dir": args.out,
                "method": args.test,
                "activity_bins": bins,
            },
        )
        if args.tuned:
            resources = RayResources(
                args.cpus, args.cpus_per_trial, args.gpus_per_trial, args.address
            )
            result = tuned_compare(
                models,
                args.dataset,
                seeds,
                args.budget,
                tool=args.tool,
                resources=resources,
                tuning_seed=args.tuning_seed,
                trial_epochs=args.trial_epochs,
                **shared,
            )
        else:
            result = compare(
                models, args.dataset, seeds, keep_checkpoints=args.keep_checkpoints, **shared
            )
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    print("written: " + ", ".join(str(path) for path in result.files))
    return 0


HYPER_MAIN_DESCRIPTION = (
    "Tune any model (plugin or RecBole) on validation: one trial after another (hyperopt) or "
    "parallel and resumable trials (Ray Tune)."
)


def hyper_main(argv: list[str] | None = None) -> int:
    """Tune any model (plugin or RecBole) on validation.

        python run_hyper.py --model=FITMM --dataset=mmsynth \\
            --params_file=properties/hyper/FITMM.hyper
        python run_hyper.py --model=LightGCN --dataset=tiktok --algo=random --max_evals=20 \\
            --params_file=properties/hyper/LightGCN.hyper --epochs=100
        python run_hyper.py --model=BPR --dataset=mmsynth --tool=ray --cpus=2 --cpus_per_trial=1

    ``--tool=hyperopt`` (default) runs RecBole's ``HyperTuning``, one trial after another.
    ``--tool=ray`` runs the trials in parallel in a local Ray started for the search (``--cpus``,
    default: the machine's cores; ``--cpus_per_trial``, default 1, also the torch threads of a
    trial; ``--gpus_per_trial``, may be fractional, default: the GPUs shared by the trials that
    run at once) or on the cluster at ``--address=host:port``. A random search over ``choice``
    entries tries distinct points (seeded by ``--seed``). Finished trials are stored in
    ``hyperopt/<model>_<dataset>/finished`` (or ``ray/...``) beside the output file: running the
    same command again after an interruption reuses them. A failing trial is listed with its
    error and the search goes on.

    Remaining ``--key=value`` arguments are fixed configuration values for every trial (e.g.
    ``--epochs=50`` caps every trial's epochs); tuned parameters always win over them. The
    result (best parameters chosen on validation, their test metrics, every trial) is written as
    JSON to ``--output_file``. Exit status 1 when no trial succeeded, 130 when interrupted.
    """
    parser = argparse.ArgumentParser(description=HYPER_MAIN_DESCRIPTION)
    parser.add_argument("--model", "-m", default="FITMM")
    parser.add_argument("--dataset", "-d", default="mmsynth")
    parser.add_argument(
        "--params_file", default=None, help="default: the package's properties/hyper/<model>.hyper"
    )
    parser.add_argument("--algo", default="exhaustive", choices=ALGORITHMS)
    parser.add_argument("--max_evals", type=int, default=100)
    parser.add_argument("--early_stop", type=int, default=10)
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    parser.add_argument(
        "--output_file", default=None, help="default: results/hyper_<model>_<dataset>.json"
    )
    parser.add_argument("--tool", default="hyperopt", choices=TOOLS)
    add_ray_options(parser.add_argument_group("Ray Tune (--tool=ray)"), cpus_per_trial=None)
    args, rest = parser.parse_known_args(argv)
    params_file = args.params_file or PROPERTIES / "hyper" / f"{args.model}.hyper"
    output = Path(args.output_file or f"results/hyper_{args.model}_{args.dataset}.json")
    given = [
        name
        for name in ("cpus", "cpus_per_trial", "gpus_per_trial", "address")
        if getattr(args, name) is not None
    ]
    try:
        if args.tool == "hyperopt" and given:
            raise ConfigError(f"--{given[0]} needs --tool=ray")
        search = Search(
            params_file,
            args.algo,
            args.max_evals,
            args.early_stop,
            args.config_files.split() or None,
            parse_overrides(rest),
        )
        if args.tool == "ray":
            resources = RayResources(
                cpus=args.cpus,
                cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial,
                address=args.address,
            )
            result = tune_ray(
                args.model, args.dataset, search, resources=resources, out_dir=output.parent
            )
        else:
            result = tune(args.model, args.dataset, search, out_dir=output.parent)
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_result(result, output)
    failed = sum(trial["status"] != "ok" for trial in result.trials)
    print(f"\n{len(result.trials)} trials ({failed} failed) written to {output}")
    if not result.complete:
        print("interrupted: run the same command again to continue", file=sys.stderr)
    if not result.best_params:
        print("error: no trial succeeded", file=sys.stderr)
        return 1
    print(f"best parameters (selected on validation): {result.best_params}\n")
    print(format_results({"valid": result.best_valid_result, "test": result.test_result}))
    return 0 if result.complete else 130
