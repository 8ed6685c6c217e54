"""Bad input ends in a clear ``recbole_fitmm.errors`` type naming the file and the problem."""

from __future__ import annotations

import builtins
import logging
from pathlib import Path
from typing import Any

import pytest

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.config import Config
from recbole_fitmm.data.validate import check_dataset_files
from recbole_fitmm.errors import ConfigError, DataError
from recbole_fitmm.quick_start import create_dataset
from recbole_fitmm.registry import get_model
from tests.test_dataset_hook import SPLITS, TEST, TRAIN, VALID, hook_config, make_dataset

HEADER = "user_id:token\titem_id:token\n"


@pytest.fixture(autouse=True)
def _no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stdin prompt (RecBole's download question) would fail the test instead of hanging."""

    def refuse(*args: Any) -> str:
        raise AssertionError("recbole_fitmm prompted on stdin")

    monkeypatch.setattr(builtins, "input", refuse)


def load(root: Path, model: str = "BPR", **values: Any) -> Any:
    """``create_dataset`` for ``root/hk`` (all checks and policies)."""
    return create_dataset(hook_config(root, model=model, **values))


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere does not exist; convert the data first"):
        Config("BPR", "nowhere", config_dict={"data_path": str(tmp_path)})
    config = hook_config(make_dataset(tmp_path).parent)
    config["data_path"] = str(tmp_path / "gone")
    with pytest.raises(DataError, match=r"dataset folder .*gone does not exist"):
        check_dataset_files(config)


def test_missing_split_file(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.valid.inter").unlink()
    with pytest.raises(DataError, match=r"interaction file .*hk\.valid\.inter does not exist"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("\n \n", "is empty"), (HEADER, "has a header but no data rows")],
)
def test_empty_split_file(tmp_path: Path, content: str, message: str) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.test.inter").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load(tmp_path)
    assert "hk.test.inter" in str(info.value)


BAD_HEADERS = {
    "no types": ("user_id\titem_id\n", "'user_id' is not of the form name:type"),
    "unknown type": ("user_id:tok\titem_id:token\n", "has type 'tok'"),
    "two colons": ("user_id:token:x\titem_id:token\n", "not of the form name:type"),
    "duplicate": ("user_id:token\tuser_id:token\n", "names field 'user_id' twice"),
    "no item column": ("user_id:token\trating:float\n", "has no item_id column"),
    "float id": ("user_id:float\titem_id:token\n", "user_id must have type token"),
    "space separated": ("user_id:token item_id:token\n", r"fields separated by '\\t'"),
}


@pytest.mark.parametrize("model", ["BPR", "VBPR"])
@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_malformed_header(tmp_path: Path, case: str, model: str) -> None:
    header, message = BAD_HEADERS[case]
    folder = make_dataset(tmp_path)
    (folder / "hk.train.inter").write_text(header + "0\t1\n")
    with pytest.raises(DataError, match=message) as info:
        load(tmp_path, model=model)
    assert "hk.train.inter" in str(info.value)


BAD_BYTES = {
    "byte-order mark": ("\ufeff" + HEADER + "0\t1\n").encode(),
    "CRLF": (HEADER + "0\t1\n").replace("\n", "\r\n").encode(),
    "latin-1": HEADER.encode() + "0\tcaf\xe9\n".encode("latin-1"),
    "NUL": (HEADER + "0\t1\x00\n").encode(),
}


@pytest.mark.parametrize("case", list(BAD_BYTES))
def test_undecodable_or_odd_text(tmp_path: Path, case: str) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.train.inter").write_bytes(BAD_BYTES[case])
    with pytest.raises(DataError, match="hk.train.inter"):
        load(tmp_path)


BAD_ROWS = {
    "extra field": ("0\t1\t5\n", r"line 3: 3 fields, but the header has 2"),
    "missing field": ("0\n", r"line 3: 1 fields"),
    "empty user": ("\t1\n", r"line 3: user_id '' is empty or reads as missing"),
    "NA token": ("NA\t1\n", r"line 3: user_id 'NA' is empty or reads as missing"),
    "padded item": ("0\t 1\n", r"line 3: item_id ' 1' has surrounding blanks"),
    "quoted field": ('0\t"1\n2\t3\n', "quoted fields"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_malformed_rows(tmp_path: Path, case: str) -> None:
    row, message = BAD_ROWS[case]
    folder = make_dataset(tmp_path)
    (folder / "hk.valid.inter").write_text(HEADER + "1\t2\n" + row)
    with pytest.raises(DataError, match=message) as info:
        load(tmp_path)
    assert "hk.valid.inter" in str(info.value)


def test_non_numeric_float_column(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path)
    header = "user_id:token\titem_id:token\trating:float\n"
    rows = [f"{u}\t{i}\t4.0\n" for u, i in TRAIN]
    rows[2] = "1\t5\tfive\n\n"
    (folder / "hk.train.inter").write_text(header + "".join(rows))
    load_col = {"inter": ["user_id", "item_id", "rating"]}
    with pytest.raises(DataError, match=r"hk\.train\.inter, line 4: rating 'five' is not a number"):
        load(tmp_path, load_col=load_col)
    rows[2] = "1\t5\t\n"  # a missing float is allowed: RecBole fills in the column mean
    (folder / "hk.train.inter").write_text(header + "".join(rows))
    assert len(load(tmp_path, load_col=load_col).inter_feat) == len(TRAIN + VALID + TEST)


def test_item_feature_file_is_checked_too(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.item").write_text("item_id:token\ttitle:token_seq\n1\ta b\n2 c\n")
    with pytest.raises(DataError, match=r"hk\.item, line 3: 1 fields"):
        load(tmp_path, load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "title"]})


# ---------------------------------------------------------------------------- policies
def test_duplicates_are_an_error_by_default(tmp_path: Path) -> None:
    make_dataset(tmp_path, splits=(TRAIN + [(0, 7)], VALID, TEST))
    with pytest.raises(DataError, match=r"1 duplicate .*user '0', item '7' in hk\.train\.inter"):
        load(tmp_path)
    make_dataset(tmp_path, splits=(TRAIN, VALID, TEST + [(2, 3)]))  # (2, 3) is a train pair
    with pytest.raises(DataError, match=r"in hk\.test\.inter, already in hk\.train\.inter"):
        load(tmp_path)


def test_duplicates_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_dataset(tmp_path, splits=(TRAIN + [(0, 7)], VALID + [(1, 5)], TEST + [(2, 3)]))
    with caplog.at_level(logging.WARNING):
        dataset = load(tmp_path, duplicate_policy="drop")
    assert "3 duplicate (user, item) interactions" in caplog.text
    assert dataset.file_size_list == [len(TRAIN), len(VALID), len(TEST)]
    train, valid, test = dataset.build()
    pairs = {
        (dataset.id2token("user_id", u), dataset.id2token("item_id", i))
        for u, i in zip(test.inter_feat["user_id"].tolist(), test.inter_feat["item_id"].tolist())
    }
    assert ("2", "3") not in pairs and len(pairs) == len(TEST)


COLD = (TRAIN, VALID + [(9, 1)], TEST + [(9, 2), (8, 3)])


def test_cold_users_dropped_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dataset(tmp_path, splits=COLD)
    with caplog.at_level(logging.WARNING):
        dataset = load(tmp_path)
    assert "2 users of hk.test.inter, hk.valid.inter have no interaction in hk.train.inter" in (
        caplog.text
    )
    assert dataset.file_size_list == [len(TRAIN), len(VALID), len(TEST)]


def test_cold_users_error_and_keep(tmp_path: Path) -> None:
    make_dataset(tmp_path, splits=COLD)
    with pytest.raises(DataError, match="MMRec drops them"):
        load(tmp_path, cold_user_policy="error")
    kept = load(tmp_path, cold_user_policy="keep")
    assert kept.file_size_list == [len(TRAIN), len(VALID) + 1, len(TEST) + 2]


def test_a_split_emptied_by_the_policies(tmp_path: Path) -> None:
    make_dataset(tmp_path, splits=(TRAIN, [(9, 1)], TEST))
    with pytest.raises(DataError, match=r"hk\.valid\.inter has no interactions left"):
        load(tmp_path)


# ---------------------------------------------------------------------------- configuration
def test_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model 'NoSuchModel'"):
        get_model("NoSuchModel")
    make_dataset(tmp_path)
    with pytest.raises(ConfigError, match="unknown model"):
        hook_config(tmp_path, model="NoSuchModel")


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "test_mask": ({"test_mask": "all"}, "test_mask is 'all'"),
    "feature_policy": ({"feature_policy": "loose"}, "feature_policy is 'loose'"),
    "duplicate_policy": ({"duplicate_policy": "keep"}, "duplicate_policy is 'keep'"),
    "cold_user_policy": ({"cold_user_policy": "ignore"}, "cold_user_policy is 'ignore'"),
    "modality path": ({"modalities": ["../image"]}, "not a plain file-name part"),
    "modality twice": ({"modalities": ["image", "image"]}, "lists a modality twice"),
    "modalities type": ({"modalities": {"image": 1}}, "expected a list of names"),
    "user modality": ({"user_modality": "image"}, "user_modality 'image' is also an item"),
    "epochs": ({"epochs": 0}, "epochs is 0; expected an integer >= 1"),
    "epochs bool": ({"epochs": True}, "epochs is True"),
    "train_batch_size": ({"train_batch_size": 0}, "train_batch_size is 0"),
    "eval_batch_size": ({"eval_batch_size": -1}, "eval_batch_size is -1"),
    "stopping_step": ({"stopping_step": -1}, "stopping_step is -1; expected an integer >= 0"),
    "learning_rate zero": ({"learning_rate": 0.0}, "learning_rate is 0.0; expected a number > 0"),
    "learning_rate text": ({"learning_rate": "fast"}, "learning_rate is 'fast'"),
    "weight_decay": ({"weight_decay": -0.1}, "weight_decay is -0.1"),
    "learner": ({"learner": "adamx"}, "learner is 'adamx'"),
    "topk": ({"topk": [10, -5]}, "topk"),
    "valid_metric k": ({"valid_metric": "Recall@30"}, "valid_metric 'Recall@30' is not computed"),
    "valid_metric name": ({"valid_metric": "MRR@10"}, "valid_metric 'MRR@10' is not computed"),
    "metrics": ({"metrics": ["NoSuchMetric"]}, "no metric named"),
    "resume_from": ({"resume_from": ""}, "resume_from is ''"),
    "checkpoint_every": ({"checkpoint_every": -1}, "checkpoint_every is -1; expected an integer"),
    "checkpoint_seconds": ({"checkpoint_seconds": "often"}, "checkpoint_seconds is 'often'"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_invalid_configuration_values(tmp_path: Path, case: str) -> None:
    values, message = BAD_VALUES[case]
    make_dataset(tmp_path)
    with pytest.raises(ConfigError, match=message):
        hook_config(tmp_path, **values)


def test_plugin_model_needs_modalities(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    with pytest.raises(ConfigError, match="VBPR needs item features"):
        hook_config(tmp_path, model="VBPR", modalities=None)


def test_missing_config_file(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    with pytest.raises(ConfigError, match="cannot read a configuration file"):
        Config("BPR", "hk", [str(tmp_path / "nope.yaml")], {"data_path": str(tmp_path)})


def test_runner_reports_bad_data_before_training(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.train.inter").write_text("user_id:token\titem_id:tok\n0\t1\n")
    config = {"data_path": str(tmp_path), "benchmark_filename": SPLITS, "gpu_id": ""}
    with pytest.raises(DataError, match="has type 'tok'"):
        run_recbole_fitmm("BPR", "hk", config_dict={**config, "state": "ERROR"})
    assert not (tmp_path / "saved").exists() or not list((tmp_path / "saved").iterdir())
