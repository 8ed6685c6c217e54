"""Tune any model (plugin or RecBole) on validation with RecBole's HyperTuning.

    python run_hyper.py --model=FITMM --dataset=mmsynth --params_file=properties/hyper/FITMM.hyper
    python run_hyper.py --model=LightGCN --dataset=tiktok --algo=random --max_evals=20 \
        --params_file=properties/hyper/LightGCN.hyper --epochs=100

Remaining ``--key=value`` arguments are fixed configuration values for every trial; tuned
parameters always win over them. The result (best parameters chosen on validation, their test
metrics, every trial) is written as JSON to ``--output_file``.
"""

import sys

from recbole_fitmm.commands import hyper_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
