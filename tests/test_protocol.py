"""The paper protocol's test mask on a hand-made example with hand-computed metrics.

Two users, six items, fixed scores:

* u1: train {a, b}, valid {c}, test {d}; scores a 6 > c 5 > b 4 > e 3 > d 2 > f 1.
  ``train_only`` (MMRec/FITMM) masks a, b: ranking c, e, d, f, so d is 3rd.
  ``train_valid`` (RecBole) masks a, b, c: ranking e, d, f, so d is 2nd.
* u2: train {e}, valid {f}, test {a}; a scores highest, so it is 1st under both masks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.trainer import Trainer
from recbole.utils import InputType

from recbole_fitmm.config import Config
from recbole_fitmm.quick_start import create_dataset, data_preparation

SPLITS = {
    "train": [("u1", "a"), ("u1", "b"), ("u2", "e")],
    "valid": [("u1", "c"), ("u2", "f")],
    "test": [("u1", "d"), ("u2", "a")],
}
SCORES = {
    "u1": {"a": 6, "c": 5, "b": 4, "e": 3, "d": 2, "f": 1},
    "u2": {"a": 6, "b": 5, "c": 4, "d": 3, "e": 2, "f": 1},
}


class FixedScores(GeneralRecommender):
    """A 'model' whose scores are a hand-filled table [n_users, n_items]."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset) -> None:  # noqa: ANN001
        super().__init__(config, dataset)
        self.table = torch.nn.Parameter(torch.zeros(self.n_users, self.n_items))

    def calculate_loss(self, interaction):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def predict(self, interaction):  # noqa: ANN001, ANN201
        return self.table[interaction[self.USER_ID], interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):  # noqa: ANN001, ANN201
        return self.table[interaction[self.USER_ID]]


def _write(root: Path) -> None:
    folder = root / "hand"
    folder.mkdir(parents=True)
    for part, rows in SPLITS.items():
        body = "".join(f"{u}\t{i}\n" for u, i in rows)
        (folder / f"hand.{part}.inter").write_text("user_id:token\titem_id:token\n" + body)


def _evaluate(root: Path, mask: str) -> dict[str, float]:
    config = Config(
        FixedScores,
        "hand",
        config_dict={
            "data_path": str(root),
            "benchmark_filename": ["train", "valid", "test"],
            "metrics": ["Recall", "NDCG"],
            "topk": [1, 2, 3],
            "valid_metric": "Recall@2",
            "test_mask": mask,
            "gpu_id": "",
            "state": "ERROR",
        },
    )
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = FixedScores(config, train_data._dataset)
    with torch.no_grad():
        for user, row in SCORES.items():
            uid = dataset.token2id(dataset.uid_field, user)
            for item, score in row.items():
                model.table[uid, dataset.token2id(dataset.iid_field, item)] = float(score)
    return Trainer(config, model).evaluate(test_data, load_best_model=False)


@pytest.mark.parametrize(
    ("mask", "rank_u1"),
    [("train_only", 3), ("train_valid", 2)],
)
def test_masks_give_hand_computed_metrics(tmp_path: Path, mask: str, rank_u1: int) -> None:
    _write(tmp_path)
    result = _evaluate(tmp_path, mask)
    for k in (1, 2, 3):
        hit_u1 = 1.0 if rank_u1 <= k else 0.0
        assert result[f"recall@{k}"] == pytest.approx((hit_u1 + 1.0) / 2, abs=1e-4)
        ndcg_u1 = 1.0 / math.log2(rank_u1 + 1) if rank_u1 <= k else 0.0
        assert result[f"ndcg@{k}"] == pytest.approx((ndcg_u1 + 1.0) / 2, abs=1e-4)


def test_unknown_test_mask_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(ValueError, match="test_mask"):
        _evaluate(tmp_path, "everything")


def _negatives(root: Path, pool: str, epochs: int = 40) -> set[str]:
    """Item tokens drawn as training negatives over ``epochs`` passes of the hand data."""
    config = Config(
        "BPR",
        "hand",
        config_dict={
            "data_path": str(root),
            "benchmark_filename": ["train", "valid", "test"],
            "neg_sample_pool": pool,
            "gpu_id": "",
            "state": "ERROR",
        },
    )
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    drawn: set[str] = set()
    for _ in range(epochs):
        for batch in train_data:
            for item in batch[config["NEG_PREFIX"] + config["ITEM_ID_FIELD"]].tolist():
                drawn.add(dataset.id2token(dataset.iid_field, item))
    return drawn


def test_negative_pool_train_items_draws_only_training_items(tmp_path: Path) -> None:
    # Training items a, b, e. u1 (a, b) can only get e; u2 (e) gets a or b. c, d, f occur only
    # in valid/test: RecBole's pool draws them, MMRec's never does.
    _write(tmp_path)
    assert _negatives(tmp_path, "train_items") == {"a", "b", "e"}
    assert _negatives(tmp_path, "all") == {"a", "b", "c", "d", "e", "f"}


def test_unknown_negative_pool_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path)
    with pytest.raises(ValueError, match="neg_sample_pool"):
        _negatives(tmp_path, "everything", epochs=1)
