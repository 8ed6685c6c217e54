"""Learning curves: valid and test Recall@20 after every epoch, for diagnosis only.

The paper protocol selects the epoch on validation and evaluates test once. This script evaluates
test after every epoch as well, to see *why* a model stops where it does (e.g. whether test keeps
improving after validation has peaked, which would blame early stopping on a small validation
split). Nothing here may be used to select a model or a setting. Usage::

    python benchmarks/curves.py MODEL DATASET EPOCHS OUT.json [--config_files a.yaml b.yaml]
        [--key=value ...]

Prints one JSON line per epoch (epoch, training loss, valid Recall@20, test Recall@20 and
NDCG@20) and writes the list to ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recbole.utils import init_seed

from recbole_fitmm.cli import parse_overrides
from recbole_fitmm.config import Config
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.quick_start import create_dataset, data_preparation
from recbole_fitmm.registry import get_model
from recbole_fitmm.trainer import get_trainer


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("epochs", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--config_files", nargs="+", default=None, help="yaml files")
    args, rest = parser.parse_known_args(argv)
    config = Config(args.model, args.dataset, args.config_files, parse_overrides(rest))
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(args.model)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], args.model)(config, model)
    rows = []
    for epoch in range(args.epochs):
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        rows.append(
            {
                "epoch": epoch,
                "loss": float(sum(loss) if isinstance(loss, tuple) else loss),
                "valid_recall@20": float(valid["recall@20"]),
                "test_recall@20": float(test["recall@20"]),
                "test_ndcg@20": float(test["ndcg@20"]),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    atomic_write_text(args.out, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
