"""The dataset hook's contract: feature rows aligned to internal ids, PAD row zero, policies."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recbole_fitmm.config import Config
from recbole_fitmm.data.dataset import MultiModalDataset, read_feature_file
from recbole_fitmm.errors import DataError
from recbole_fitmm.quick_start import build_config, create_dataset, data_preparation

SPLITS = ["train", "valid", "test"]
# Item tokens appear in a scrambled order, so RecBole's internal ids differ from the tokens.
TRAIN = [(0, 7), (0, 2), (1, 5), (1, 0), (2, 3), (2, 7), (3, 1), (3, 6), (4, 4), (4, 2)]
VALID = [(0, 5), (1, 3), (2, 1), (3, 0), (4, 6)]
TEST = [(0, 6), (1, 7), (2, 0), (3, 2), (4, 5)]
N_ITEMS, N_USERS = 8, 5


def write_split(folder: Path, name: str, part: str, rows: list[tuple[Any, Any]]) -> Path:
    """Write ``<name>.<part>.inter`` with a user_id/item_id header."""
    path = folder / f"{name}.{part}.inter"
    body = "".join(f"{u}\t{i}\n" for u, i in rows)
    path.write_text("user_id:token\titem_id:token\n" + body)
    return path


def feature_matrix(n_rows: int, dim: int, offset: float = 0.0) -> np.ndarray:
    """Row r holds r + 1 + offset + column / 100: every row is recognisable."""
    rows = np.arange(n_rows, dtype=np.float32)[:, None] + 1 + offset
    return (rows + np.arange(dim, dtype=np.float32)[None, :] / 100).astype(np.float32)


def make_dataset(
    root: Path,
    name: str = "hk",
    modalities: dict[str, int] | None = None,
    n_feature_rows: int = N_ITEMS,
    splits: tuple[list, list, list] = (TRAIN, VALID, TEST),
) -> Path:
    """A small benchmark dataset with one ``.npy`` per modality under ``root/name``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in zip(SPLITS, splits):
        write_split(folder, name, part, rows)
    for index, (modality, dim) in enumerate((modalities or {"image": 6, "text": 3}).items()):
        np.save(folder / f"{name}.{modality}.npy", feature_matrix(n_feature_rows, dim, 10 * index))
    return folder


def hook_config(root: Path, name: str = "hk", model: str = "BPR", **values: Any) -> Config:
    """A quiet CPU configuration for ``root/name``."""
    config = {
        "data_path": str(root),
        "benchmark_filename": SPLITS,
        "modalities": ["image", "text"],
        "gpu_id": "",
        "state": "ERROR",
    }
    config.update(values)
    return build_config(model, name, config_dict=config)


@pytest.mark.parametrize("n_modalities", [1, 2, 3, 4])
def test_rows_follow_the_token_mapping(tmp_path: Path, n_modalities: int) -> None:
    dims = dict(list({"image": 6, "text": 3, "audio": 5, "video": 2}.items())[:n_modalities])
    folder = make_dataset(tmp_path, modalities=dims)
    dataset = MultiModalDataset(hook_config(tmp_path, modalities=list(dims)))
    assert list(dataset.modal_feats) == list(dims)
    tokens = dataset.field2id_token[dataset.iid_field]
    assert list(tokens[1:4]) == ["7", "2", "5"]  # internal ids follow first appearance
    for modality, dim in dims.items():
        feats = dataset.modal_feats[modality]
        raw = np.load(folder / f"hk.{modality}.npy")
        assert feats.dtype.is_floating_point and tuple(feats.shape) == (dataset.item_num, dim)
        assert feats[0].abs().sum() == 0  # [PAD]
        for iid in range(1, dataset.item_num):
            np.testing.assert_array_equal(feats[iid].numpy(), raw[int(tokens[iid])])
    assert dataset.user_feat is None


def test_user_features_follow_the_user_tokens(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path)
    np.save(folder / "hk.profile.npy", feature_matrix(N_USERS, 4, 100))
    dataset = MultiModalDataset(hook_config(tmp_path, user_modality="profile"))
    tokens = dataset.field2id_token[dataset.uid_field]
    assert tuple(dataset.user_feat.shape) == (dataset.user_num, 4)
    assert dataset.user_feat[0].abs().sum() == 0
    raw = np.load(folder / "hk.profile.npy")
    for uid in range(1, dataset.user_num):
        np.testing.assert_array_equal(dataset.user_feat[uid].numpy(), raw[int(tokens[uid])])


def test_features_reach_the_training_dataset(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    config = hook_config(tmp_path, model="VBPR")
    dataset = create_dataset(config)
    assert isinstance(dataset, MultiModalDataset)
    train_data, _, _ = data_preparation(config, dataset)
    assert train_data._dataset.modal_feats is dataset.modal_feats


def test_item_without_features_strict_and_lenient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_dataset(tmp_path, n_feature_rows=N_ITEMS - 1)  # item token 7 has no row
    with pytest.raises(DataError, match=r"hk\.image\.npy has 7 rows but 1 items.*lenient"):
        MultiModalDataset(hook_config(tmp_path))
    with caplog.at_level(logging.WARNING):
        dataset = MultiModalDataset(hook_config(tmp_path, feature_policy="lenient"))
    assert "their features are zero" in caplog.text
    iid = dataset.field2token_id[dataset.iid_field]["7"]
    assert dataset.modal_feats["image"][iid].abs().sum() == 0
    assert dataset.modal_feats["image"][dataset.field2token_id["item_id"]["2"]][0] == 3.0


def test_feature_rows_for_unknown_items_strict_and_lenient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_dataset(tmp_path, n_feature_rows=N_ITEMS + 2)  # rows 8 and 9 belong to no item
    with pytest.raises(DataError, match="2 rows for unknown items"):
        MultiModalDataset(hook_config(tmp_path))
    with caplog.at_level(logging.WARNING):
        dataset = MultiModalDataset(hook_config(tmp_path, feature_policy="lenient"))
    assert "they are ignored" in caplog.text
    assert tuple(dataset.modal_feats["text"].shape) == (N_ITEMS + 1, 3)


@pytest.mark.parametrize("policy", ["strict", "lenient"])
def test_modalities_with_different_row_counts(tmp_path: Path, policy: str) -> None:
    folder = make_dataset(tmp_path)
    np.save(folder / "hk.text.npy", feature_matrix(N_ITEMS + 1, 3))
    with pytest.raises(DataError, match="disagree on the number of item rows"):
        MultiModalDataset(hook_config(tmp_path, feature_policy=policy))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(tmp_path: Path, bad: float) -> None:
    folder = make_dataset(tmp_path)
    matrix = feature_matrix(N_ITEMS, 6)
    matrix[3, 2] = bad
    np.save(folder / "hk.image.npy", matrix)
    with pytest.raises(DataError, match=r"hk\.image\.npy holds NaN or infinite.*row 3"):
        MultiModalDataset(hook_config(tmp_path))


def _save_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


BAD_FILES = {
    "integer dtype": (lambda p: np.save(p, np.ones((N_ITEMS, 3), dtype=np.int64)), "dtype int64"),
    "1-D": (lambda p: np.save(p, np.ones(N_ITEMS, dtype=np.float32)), "expected a 2-D"),
    "3-D": (lambda p: np.save(p, np.ones((N_ITEMS, 2, 2), np.float32)), "expected a 2-D"),
    "pickled": (
        lambda p: np.save(p, np.array([{"a": 1}] * N_ITEMS, dtype=object), allow_pickle=True),
        "not a plain numeric",
    ),
    "npz": (lambda p: _save_bytes(p, _npz_bytes()), r"\.npz archive"),
    "empty file": (lambda p: _save_bytes(p, b""), "empty"),
    "no rows": (lambda p: np.save(p, np.ones((0, 3), np.float32)), "empty|not a plain"),
    "garbage": (lambda p: _save_bytes(p, b"not an array at all"), "not a plain|cannot be read"),
    "truncated": (
        lambda p: _save_bytes(p, _npy_bytes(feature_matrix(N_ITEMS, 3))[:-7]),
        "not a plain|cannot be read",
    ),
    "complex": (lambda p: np.save(p, np.ones((N_ITEMS, 3), np.complex64)), "dtype complex64"),
}


def _npy_bytes(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, matrix)
    return buffer.getvalue()


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.ones((N_ITEMS, 2), np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_feature_files(tmp_path: Path, case: str) -> None:
    folder = make_dataset(tmp_path)
    write, message = BAD_FILES[case]
    write(folder / "hk.text.npy")
    with pytest.raises(DataError, match=message) as info:
        MultiModalDataset(hook_config(tmp_path))
    assert "hk.text.npy" in str(info.value)


def test_float64_and_float16_features_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, feature_matrix(4, 3).astype(np.float16))
    assert read_feature_file(path).dtype == np.float32
    np.save(path, feature_matrix(4, 3).astype(np.float64))
    np.testing.assert_array_equal(read_feature_file(path), feature_matrix(4, 3))


def test_missing_feature_file(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    with pytest.raises(DataError, match=r"hk\.audio\.npy does not exist"):
        MultiModalDataset(hook_config(tmp_path, modalities=["image", "audio"]))


@pytest.mark.parametrize(
    ("tokens", "message"),
    [(("x1", "2"), "'x1' is not a non-negative integer"), (("07", "7"), "both name feature row 7")],
)
def test_item_tokens_must_be_row_numbers(tmp_path: Path, tokens: tuple, message: str) -> None:
    rows = [(0, tokens[0]), (0, tokens[1]), (1, 3)]
    make_dataset(tmp_path, splits=(rows, [(0, 3)], [(1, tokens[1])]))
    with pytest.raises(DataError, match=message):
        MultiModalDataset(hook_config(tmp_path))
