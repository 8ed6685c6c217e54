"""Compare several models side by side on one dataset over several seeds (mean ± std, paired test).

    python run_compare.py --models BPR,LightGCN,VBPR,FREEDOM,LGMRec,DRAGON --dataset tiktok \\
        --seeds 999,1,2 --config_files my_tiktok.yaml --out results/compare_tiktok --epochs=100

Every model runs under the plugin's protocol (valid-selected epoch, test once with the train-only
mask); the best model is chosen on mean valid Recall@20 and compared with every other one by a
paired test over per-user test Recall@20. Any ``--key=value`` is a configuration value for every
run and beats the yaml files; ``--MODEL:key=value`` applies to one model only (e.g.
``--DRAGON:learning_rate=0.001``). Finished runs are stored in ``<out>/runs/`` and reused by a later
call with the same settings. Writes summary.md, summary.csv, per_seed.csv and
per_user_recall@20.npz into ``--out``.

``--from_runs DIR [DIR ...]`` trains nothing: it builds the table from the runs stored under the
``runs/`` folders of earlier comparisons (e.g. models run in parallel processes, or with
different seeds), for the listed models::

    python run_compare.py --models BPR,LightGCN,FITMM --dataset tiktok \\
        --from_runs results/ids results/fitmm --out results/compare_tiktok
"""

from __future__ import annotations

import argparse
import sys

from recbole_fitmm.cli import parse_overrides
from recbole_fitmm.compare import PAIRED_TESTS, assemble, compare
from recbole_fitmm.errors import FITMMError


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the comparison and print the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name (folder)")
    parser.add_argument("--seeds", default="999", help="comma-separated seeds (default 999)")
    parser.add_argument(
        "--config_files", nargs="+", default=[], help="yaml files (space-separated)"
    )
    parser.add_argument("--out", default=None, help="output folder (results/compare_<dataset>)")
    parser.add_argument("--test", choices=PAIRED_TESTS, default="wilcoxon", help="paired test")
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep run checkpoints")
    parser.add_argument(
        "--from_runs", nargs="+", default=None, help="build the table from stored runs only"
    )
    args, rest = parser.parse_known_args(argv)
    try:
        seeds = [int(seed) for seed in _names(args.seeds)]
    except ValueError:
        print(
            f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr
        )
        return 2
    try:
        if args.from_runs:
            out = args.out or f"results/compare_{args.dataset}"
            result = assemble(_names(args.models), args.dataset, args.from_runs, out, args.test)
            print(result.markdown)
            print("written: " + ", ".join(str(path) for path in result.files))
            return 0
        files = [name for token in args.config_files for name in token.split()]
        result = compare(
            _names(args.models),
            args.dataset,
            seeds,
            config_file_list=files or None,
            config_dict=parse_overrides(rest),
            out_dir=args.out,
            method=args.test,
            keep_checkpoints=args.keep_checkpoints,
        )
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    print("written: " + ", ".join(str(path) for path in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
