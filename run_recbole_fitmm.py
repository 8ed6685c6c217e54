"""Train and evaluate one model under the paper protocol.

    python run_recbole_fitmm.py                                  # FITMM on the embedded mmsynth
    python run_recbole_fitmm.py --model=LightGCN --dataset=baby --config_files="my.yaml"
    python run_recbole_fitmm.py --model=FITMM --learning_rate=0.001 --seed=1

Any ``--key=value`` is a RecBole/plugin configuration value and beats every yaml file.
"""

from __future__ import annotations

import argparse
import sys

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.cli import format_results, parse_overrides
from recbole_fitmm.errors import FITMMError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
