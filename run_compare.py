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

import sys

from recbole_fitmm.commands import compare_main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
