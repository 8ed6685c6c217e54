"""Why tiktok's most active users get no test hit from any model: what their test items are.

Every comparison table on ``../shared/data/tiktok`` shows the users with more than 300 training
interactions at Recall@20 = 0 for every model. This script reads the MMRec-format folder directly
(no model, no RecBole) and prints, for the test users above ``--min_train`` training interactions:
their share of the training interactions, where their test items sit in the item-id range, how
often those items occur in training and who trains on them, and the Recall@20 of three rankers
that learn nothing (each excluding the user's training items):

* ``content <m>``: cosine similarity between an item's centred feature row of modality ``m`` and
  the mean of the user's training rows;
* ``popularity``: training count among the same heavy users;
* ``highest id``: the highest item id first (a property of the id assignment, not a model).

::

    python benchmarks/tiktok_heavy_users.py [--data ../shared/data/tiktok] [--min_train 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from recbole_fitmm.data.convert import (
    choose_modalities,
    find_inter_file,
    load_features,
    read_mmrec_inter,
)
from recbole_fitmm.errors import DataError

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiktok"
TOP_K = 20


def recall_at_k(scores: np.ndarray, seen: list[np.ndarray], target: np.ndarray) -> float:
    """Recall@20 with one test item per user.

    Args:
        scores: ``[n_users, n_items]`` scores, one row per heavy test user.
        seen: Per user, the training item ids to exclude.
        target: ``[n_users]`` the test item of each user.

    Returns:
        The fraction of users with fewer than ``TOP_K`` items scored strictly above their test
        item (items tied with it do not push it down: an optimistic count for tied scores).
    """
    hits = 0
    for row, excluded, item in zip(scores, seen, target):
        row = row.astype(np.float64)  # a copy: the exclusion below must not reach ``scores``
        row[excluded] = -np.inf
        hits += int((row > row[item]).sum() < TOP_K)
    return hits / len(target)


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring).

    Args:
        argv: Arguments without the program name.

    Returns:
        0 on success, 1 when the data folder is absent or malformed.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--min_train", type=int, default=300)
    args = parser.parse_args(argv)
    try:
        inter = read_mmrec_inter(find_inter_file(args.data))
        n_items = int(inter.itemID.max()) + 1
        features = load_features(args.data, choose_modalities(args.data), n_items)
    except DataError as err:
        print(f"{err}: nothing to measure", file=sys.stderr)
        return 1
    train, test = inter[inter.x_label == 0], inter[inter.x_label == 2]
    activity = train.groupby("userID").size()
    heavy = set(activity[activity > args.min_train].index)
    heavy_test = test[test.userID.isin(heavy)]
    if heavy_test.empty:
        print(f"no test user has more than {args.min_train} training interactions")
        return 0
    heavy_train = train[train.userID.isin(heavy)]
    item_count = train.groupby("itemID").size().reindex(range(n_items), fill_value=0).to_numpy()
    trained_by = train[train.itemID.isin(heavy_test.itemID)]
    print(
        f"users with > {args.min_train} training interactions: {len(heavy)} "
        f"({len(heavy_test.userID.unique())} in test, {len(heavy_test)} test interactions), "
        f"{len(heavy_train) / len(train):.1%} of the training interactions"
    )
    print(
        f"their test items: ids {heavy_test.itemID.min()}-{heavy_test.itemID.max()} "
        f"of 0-{n_items - 1}; "
        f"training count median {np.median(item_count[heavy_test.itemID]):.0f}, "
        f"{int((item_count[heavy_test.itemID] == 0).sum())} never in training; "
        f"their training interactions come from these users: "
        f"{trained_by.userID.isin(heavy).mean():.0%}"
    )
    print(
        "other test users' items: training count median "
        f"{np.median(item_count[test[~test.userID.isin(heavy)].itemID]):.0f}"
    )
    users = heavy_test.userID.to_numpy()
    seen = [train.itemID[train.userID == u].to_numpy() for u in users]
    target = heavy_test.itemID.to_numpy()
    rankers: dict[str, np.ndarray] = {}
    for modality, matrix in features.items():
        rows = matrix[:n_items].astype(np.float64)
        rows -= rows.mean(axis=0)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True) + 1e-12
        profiles = np.stack([rows[items].mean(axis=0) for items in seen])
        rankers[f"content {modality}"] = profiles @ rows.T
    heavy_count = heavy_train.groupby("itemID").size().reindex(range(n_items), fill_value=0)
    rankers["popularity"] = np.tile(heavy_count.to_numpy(), (len(users), 1))
    rankers["highest id"] = np.tile(np.arange(n_items), (len(users), 1))
    for name, scores in rankers.items():
        print(f"Recall@{TOP_K} of {name}: {recall_at_k(scores, seen, target):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
