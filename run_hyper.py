"""Tune any model (plugin or RecBole) on validation with RecBole's HyperTuning.

    python run_hyper.py --model=FITMM --dataset=mmsynth --params_file=properties/hyper/FITMM.hyper
    python run_hyper.py --model=LightGCN --dataset=tiktok --algo=random --max_evals=20 \
        --params_file=properties/hyper/LightGCN.hyper --epochs=100

Remaining ``--key=value`` arguments are fixed configuration values for every trial; tuned
parameters always win over them. The result (best parameters chosen on validation, their test
metrics, every trial) is written as JSON to ``--output_file``.
"""

from __future__ import annotations

import argparse
import sys

from recbole_fitmm.cli import format_results, parse_overrides
from recbole_fitmm.errors import FITMMError
from recbole_fitmm.tuning import ALGORITHMS, tune, write_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", default="FITMM")
    parser.add_argument("--dataset", "-d", default="mmsynth")
    parser.add_argument(
        "--params_file", default=None, help="default: properties/hyper/<model>.hyper"
    )
    parser.add_argument("--algo", default="exhaustive", choices=ALGORITHMS)
    parser.add_argument("--max_evals", type=int, default=100)
    parser.add_argument("--early_stop", type=int, default=10)
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    parser.add_argument(
        "--output_file", default=None, help="default: results/hyper_<model>_<dataset>.json"
    )
    args, rest = parser.parse_known_args(argv)
    params_file = args.params_file or f"properties/hyper/{args.model}.hyper"
    output = args.output_file or f"results/hyper_{args.model}_{args.dataset}.json"
    try:
        result = tune(
            args.model,
            args.dataset,
            params_file,
            algo=args.algo,
            max_evals=args.max_evals,
            early_stop=args.early_stop,
            config_file_list=args.config_files.split() or None,
            fixed=parse_overrides(rest),
        )
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_result(result, output)
    print(f"\nbest parameters (selected on validation): {result.best_params}\n")
    print(format_results({"valid": result.best_valid_result, "test": result.test_result}))
    print(f"\n{len(result.trials)} trials written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
