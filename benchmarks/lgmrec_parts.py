"""What each part of a trained LGMRec contributes to its ranking, for diagnosis only.

LGMRec scores with ``e = CGE + Σ_m normalize(MGE_m) + alpha · normalize(Σ_m GHE_m)``. This script
loads a checkpoint and prints, for users and items, the mean row norm of each part, then the
validation Recall@20 / NDCG@20 (RecBole's evaluator, the plugin's masking) when the model scores
with every non-empty subset of the three parts. A small ID part next to unit-norm modality parts
means the ranking is mostly decided by the features. Usage::

    python benchmarks/lgmrec_parts.py CHECKPOINT [--data_path DIR]

Validation only; nothing here selects a model or a setting.
"""

from __future__ import annotations

import argparse
from itertools import combinations

import torch

from recbole_fitmm.inference import load_model
from recbole_fitmm.trainer import get_trainer

PARTS = ("cge", "mge", "ghe")


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data_path", help="folder holding the dataset, if it moved")
    args = parser.parse_args(argv)
    overrides = {"gpu_id": "", "state": "WARNING", "show_progress": False}
    if args.data_path:
        overrides["data_path"] = args.data_path
    config, model, _, _, valid_data, _ = load_model(args.checkpoint, overrides)
    if config["model"] != "LGMRec":
        parser.error(f"{args.checkpoint} holds a {config['model']} model, not LGMRec")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    with torch.no_grad():
        cge, mge, ghe, _ = model.parts()
    parts = dict(zip(PARTS, (cge, mge, ghe)))
    n_users = model.n_users
    for name, value in parts.items():
        users, items = value[1:n_users].norm(dim=1), value[n_users + 1 :].norm(dim=1)
        print(f"{name}: mean row norm users {users.mean():.4f}, items {items.mean():.4f}")
    for size in range(1, len(PARTS) + 1):
        for subset in combinations(PARTS, size):
            total = sum(parts[name] for name in subset)
            user_e, item_e = torch.split(total, [n_users, model.n_items])
            model.compute_representations = lambda u=user_e, i=item_e: (u, i)
            model.drop_cache()
            result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
            print(
                f"{' + '.join(subset):<17} valid recall@20 {result['recall@20']:.4f}  "
                f"ndcg@20 {result['ndcg@20']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
