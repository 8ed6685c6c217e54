"""The embedded dataset ``dataset_atomic/mmsynth``: reproducible, small and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from recbole_fitmm import Config, run_recbole_fitmm
from recbole_fitmm.config import DATASET_ATOMIC, PROPERTIES
from recbole_fitmm.data.dataset import MultiModalDataset
from recbole_fitmm.data.mmsynth import MMSYNTH_SPEC, main

FOLDER = DATASET_ATOMIC / "mmsynth"
MODALITIES = ["image", "text", "audio"]
BUDGET_BYTES = 1_500_000
QUIET = {"gpu_id": "", "state": "ERROR", "topk": [20], "metrics": ["Recall"]}


def read_split(split: str, folder: Path = FOLDER) -> np.ndarray:
    """(user, item) token pairs of one split file, int64 [n, 2]."""
    lines = (folder / f"mmsynth.{split}.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token"
    return np.array([line.split("\t") for line in lines[1:]], dtype=np.int64)


def dense(pairs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    matrix = np.zeros(shape)
    matrix[pairs[:, 0], pairs[:, 1]] = 1.0
    return matrix


def recall_at_20(scores: np.ndarray, train: np.ndarray, target: np.ndarray) -> float:
    """MMRec Recall@20 (hits / |positives|) over users with positives; train items masked."""
    scores = np.where(train > 0, -np.inf, scores)
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    hits = np.take_along_axis(target, top, axis=1).sum(axis=1)
    users = target.sum(axis=1) > 0
    return float((hits[users] / target.sum(axis=1)[users]).mean())


def test_regenerating_reproduces_the_committed_files(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    fresh = tmp_path / "mmsynth"
    names = sorted(p.name for p in FOLDER.iterdir())
    assert sorted(p.name for p in fresh.iterdir()) == names
    for name in names:
        if name.endswith(".inter"):
            assert (fresh / name).read_bytes() == (FOLDER / name).read_bytes(), name
        else:  # allow last-bit differences from another BLAS
            new, old = np.load(fresh / name), np.load(FOLDER / name)
            assert new.dtype == old.dtype == np.float32 and new.shape == old.shape
            np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-6, err_msg=name)


def test_size_and_shape() -> None:
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) < BUDGET_BYTES
    pairs = np.concatenate([read_split(split) for split in ("train", "valid", "test")])
    n_users, n_items = pairs[:, 0].max() + 1, pairs[:, 1].max() + 1
    assert len(np.unique(pairs[:, 0])) == n_users == MMSYNTH_SPEC.n_users
    assert len(np.unique(pairs[:, 1])) == n_items and 64 <= n_items <= MMSYNTH_SPEC.n_items
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    for modality, dim in MMSYNTH_SPEC.modalities.items():
        features = np.load(FOLDER / f"mmsynth.{modality}.npy")
        assert features.shape == (n_items, dim) and np.isfinite(features).all()


def test_yaml_and_dataset_hook() -> None:
    values = yaml.safe_load((PROPERTIES / "dataset" / "mmsynth.yaml").read_text())
    assert values["benchmark_filename"] == ["train", "valid", "test"]
    assert values["modalities"] == MODALITIES
    dataset = MultiModalDataset(Config("BPR", "mmsynth", config_dict=QUIET))
    assert list(dataset.modal_feats) == MODALITIES
    assert dataset.modal_feats["audio"].shape == (dataset.item_num, 32)


def test_content_beats_popularity() -> None:
    train, valid = read_split("train"), read_split("valid")
    features = [np.load(FOLDER / f"mmsynth.{m}.npy").astype(np.float64) for m in MODALITIES]
    shape = (MMSYNTH_SPEC.n_users, features[0].shape[0])
    train_m, valid_m = dense(train, shape), dense(valid, shape)
    unit = []
    for matrix in features:
        centred = matrix - matrix.mean(axis=0)
        unit.append(centred / np.linalg.norm(centred, axis=1, keepdims=True))
    joint = np.concatenate(unit, axis=1) / np.sqrt(len(unit))
    similarity = joint @ joint.T
    np.fill_diagonal(similarity, 0.0)
    content = train_m @ similarity / train_m.sum(axis=1, keepdims=True)
    popularity = np.broadcast_to(train_m.sum(axis=0), shape)
    content_recall = recall_at_20(content, train_m, valid_m)
    pop_recall = recall_at_20(popularity, train_m, valid_m)
    assert content_recall > 1.5 * pop_recall and content_recall - pop_recall > 0.03


def test_lightgcn_beats_pop() -> None:
    # RecBole's Pop adds at most one count per item and batch: small batches give true counts.
    pop = run_recbole_fitmm(
        "Pop",
        "mmsynth",
        config_dict={**QUIET, "epochs": 1, "train_batch_size": 256, "train_neg_sample_args": None},
        saved=False,
    )
    learned = run_recbole_fitmm(
        "LightGCN",
        "mmsynth",
        config_dict={**QUIET, "epochs": 5, "learning_rate": 0.01},
        saved=False,
    )
    pop_recall = pop["best_valid_result"]["recall@20"]
    assert learned["best_valid_result"]["recall@20"] > 1.5 * pop_recall
    assert learned["test_result"]["recall@20"] > 1.5 * pop["test_result"]["recall@20"]
