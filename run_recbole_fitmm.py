"""Train and evaluate one model under the paper protocol.

    python run_recbole_fitmm.py                                  # FITMM on the embedded mmsynth
    python run_recbole_fitmm.py --model=LightGCN --dataset=baby --config_files="my.yaml"
    python run_recbole_fitmm.py --model=FITMM --learning_rate=0.001 --seed=1

Any ``--key=value`` is a RecBole/plugin configuration value and beats every yaml file.
"""

import sys

from recbole_fitmm.commands import run_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
