"""Tune any model (plugin or RecBole) on validation: hyperopt (sequential) or Ray Tune (parallel).

    python run_hyper.py --model=FITMM --dataset=mmsynth --params_file=properties/hyper/FITMM.hyper
    python run_hyper.py --model=LightGCN --dataset=tiktok --algo=random --max_evals=20 \
        --params_file=properties/hyper/LightGCN.hyper --epochs=100
    python run_hyper.py --model=BPR --dataset=mmsynth --tool=ray --cpus=2 --cpus_per_trial=1

``--tool=hyperopt`` (default) runs the trials one after another with RecBole's HyperTuning.
``--tool=ray`` runs them in parallel in a local Ray started for the search (``--cpus``, default:
all cores; ``--cpus_per_trial``, default 1, also the torch threads of a trial;
``--gpus_per_trial``, may be fractional), or on the Ray cluster at ``--address=host:port``; its
experiment folder is ``ray/<model>_<dataset>`` beside the output file. A Ray search that was
killed or interrupted continues when the same command is run again: finished trials (failed ones
included) are reused, not re-run. A failing trial is listed with its error; the search goes on.

Both tools read the same params file (``name choice [..]``, ``uniform a,b``, ``loguniform a,b``
with natural-log bounds, ``quniform a,b,q``) and support ``--algo=exhaustive|random|bayes``,
``--max_evals`` and ``--early_stop``. Remaining ``--key=value`` arguments are fixed configuration
values for every trial (``--epochs=N`` caps every trial's epochs; RecBole's ``stopping_step``
stops a trial early); tuned parameters always win over them. The configuration is selected on
the validation metric only; the result (best parameters, their valid and test metrics, every
trial) is written as JSON to ``--output_file`` (default ``results/hyper_<model>_<dataset>.json``).
"""

import sys

from recbole_fitmm.commands import hyper_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
