"""``python -m recbole_fitmm.prepare``: filters, k-core, id maps and splits computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recbole.data.dataset import Dataset

from recbole_fitmm import Config
from recbole_fitmm.data.convert import convert_mmrec
from recbole_fitmm.data.interactions import k_core, mmrec_counts, resolve_duplicates, split_labels
from recbole_fitmm.errors import ConfigError, DataError
from recbole_fitmm.prepare import Columns, PrepareOptions, load_interactions, main, prepare

COLUMNS = Columns("user_id", "item_id", "rating", "timestamp")
HEADER = ("user_id", "item_id", "rating", "timestamp")
# (user, item, rating, time). With user-core 3 and item-core 2:
# round 1 drops user 7 (2 rows) and items i5, i6, i7 (1 row each): users 10, 9, 100, 8 remain,
# 8 with only i1; round 2 drops user 8; then stable: 3 users, items i1..i4, 10 rows.
ROWS = [
    ("10", "i1", 5, 1), ("10", "i2", 4, 2), ("10", "i3", 5, 3), ("10", "i4", 3, 4),
    ("9", "i1", 4, 5), ("9", "i2", 5, 3), ("9", "i3", 4, 1),
    ("100", "i1", 5, 2), ("100", "i2", 4, 2), ("100", "i4", 5, 1),
    ("7", "i3", 5, 9), ("7", "i5", 5, 9),
    ("8", "i1", 5, 9), ("8", "i6", 5, 9), ("8", "i7", 5, 9),
]  # fmt: skip
# New ids: users in numeric order 9 -> 0, 10 -> 1, 100 -> 2; items i1..i4 -> 0..3.
# user-time split (n < 10: latest -> test, second latest -> valid; ties in file order):
# user 10: i1, i2 train, i3 valid, i4 test; user 9 (times i3 1, i2 3, i1 5): i3 train, i2 valid,
# i1 test; user 100 (i4 1, i1 2, i2 2): i4 train, i1 valid, i2 test.
EXPECTED = {
    "train": {(1, 0), (1, 1), (0, 2), (2, 3)},
    "valid": {(1, 2), (0, 1), (2, 0)},
    "test": {(1, 3), (0, 0), (2, 1)},
}
CORE = PrepareOptions(user_core=3, item_core=2, split="user-time")


def write_rows(path: Path, rows: list[tuple], header: tuple = HEADER) -> Path:
    if path.suffix == ".jsonl":
        lines = [json.dumps(dict(zip(header, row))) for row in rows]
    else:
        sep = "," if path.suffix == ".csv" else "\t"
        lines = [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(path: Path, tmp_path: Path, options: PrepareOptions = CORE, **kwargs: object):
    return prepare(
        path, COLUMNS, options, out=tmp_path / "out", properties_dir=tmp_path / "props", **kwargs
    )


def read_split(folder: Path, name: str, split: str) -> list[tuple[int, int]]:
    lines = (folder / f"{name}.{split}.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token"
    return [tuple(int(v) for v in line.split("\t")) for line in lines[1:]]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_k_core_id_maps_and_time_split_by_hand(tmp_path: Path, suffix: str) -> None:
    report = run(write_rows(tmp_path / f"raw{suffix}", ROWS), tmp_path, name="mini")
    steps = {label: counts for label, *counts in report.steps}
    assert steps["read"] == [5, 7, 15]
    assert steps["after k-core round 1"] == [4, 4, 11]
    assert steps["after k-core round 2"] == [3, 4, 10]
    assert "after k-core round 3" not in steps
    assert steps["final"] == [3, 4, 10]
    folder = tmp_path / "out" / "mini"
    for split, pairs in EXPECTED.items():
        assert set(read_split(folder, "mini", split)) == pairs
    assert report.stats.interactions == {"train": 4, "valid": 3, "test": 3}
    assert (folder / "u_id_mapping.csv").read_text() == "user_id\tuserID\n9\t0\n10\t1\n100\t2\n"
    items = "item_id\titemID\ni1\t0\ni2\t1\ni3\t2\ni4\t3\n"
    assert (folder / "i_id_mapping.csv").read_text() == items
    summary = report.summary()
    assert "after k-core round 2: users 3, items 4, interactions 10" in summary
    assert "interactions: train 4, valid 3, test 3" in summary


def test_written_exactly_as_the_converter_writes(tmp_path: Path) -> None:
    """Feed prepare's labelled rows to the MMRec converter: identical split files and yaml body."""
    stats = run(write_rows(tmp_path / "raw.csv", ROWS), tmp_path, name="mini").stats
    src = tmp_path / "mmrec" / "mini"
    src.mkdir(parents=True)
    lines = ["userID\titemID\tx_label"]
    for label, split in enumerate(("train", "valid", "test")):
        lines += [f"{u}\t{i}\t{label}" for u, i in read_split(stats.folder, "mini", split)]
    (src / "mini.inter").write_text("\n".join(lines) + "\n")
    other = convert_mmrec(src, out=tmp_path / "out2", properties_dir=tmp_path / "props2")
    for split in ("train", "valid", "test"):
        name = f"mini.{split}.inter"
        assert (stats.folder / name).read_bytes() == (other.folder / name).read_bytes()
    mine, theirs = stats.yaml_file.read_text(), other.yaml_file.read_text()
    assert mine.startswith("# Written by `python -m recbole_fitmm.prepare` from")
    body = [[line for line in text.splitlines()[2:] if not line.startswith("data_path")]
            for text in (mine, theirs)]  # fmt: skip
    assert body[0] == body[1] and "modalities: []" in body[0]
    config = Config("BPR", "mini", [str(stats.yaml_file)], {"gpu_id": "", "state": "ERROR"})
    dataset = Dataset(config)  # ID-only: RecBole's own dataset class reads it
    assert dataset.inter_num == 10 and dataset.user_num == 4  # + [PAD]
    assert [len(part) for part in dataset.build()] == [4, 3, 3]


def test_k_core_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"user": rng.integers(0, 30, 300).astype(str), "item": rng.integers(0, 40, 300).astype(str)}
    ).drop_duplicates()
    core, rounds = k_core(frame, 4, 3)
    assert rounds and len(core) == len(rounds[-1])
    assert core.groupby("user").size().min() >= 4 and core.groupby("item").size().min() >= 3
    kept = frame  # users first, then items, alternately: the same unique core
    while True:
        users = kept.groupby("user")["item"].transform("size") >= 4
        kept2 = kept[users]
        kept2 = kept2[kept2.groupby("item")["user"].transform("size") >= 3]
        if len(kept2) == len(kept):
            break
        kept = kept2
    assert sorted(map(tuple, core.to_numpy())) == sorted(map(tuple, kept.to_numpy()))


def test_mmrec_counts_and_seeded_split(tmp_path: Path) -> None:
    train, valid = mmrec_counts(np.array([1, 2, 3, 9, 10, 15, 25]))
    assert train.tolist() == [1, 2, 1, 7, 8, 12, 20]
    assert valid.tolist() == [0, 0, 1, 1, 1, 1, 2]  # test = n - train - valid: 0 0 1 1 1 2 3
    rows = [(str(u), f"i{k}", 5, k) for u, n in ((0, 25), (1, 10), (2, 4)) for k in range(n)]
    path = write_rows(tmp_path / "raw.tsv", rows)
    frame = load_interactions(path, COLUMNS)
    labels = split_labels(frame, "mmrec", seed=3)
    per_user = {u: np.bincount(labels[frame["user"] == u], minlength=3).tolist() for u in "012"}
    assert per_user == {"0": [20, 2, 3], "1": [8, 1, 1], "2": [2, 1, 1]}
    assert (split_labels(frame, "mmrec", seed=3) == labels).all()
    assert not (split_labels(frame, "mmrec", seed=4) == labels).all()
    by_time = split_labels(frame, "user-time")
    assert by_time[frame["user"] == "0"].tolist() == [0] * 20 + [1] * 2 + [2] * 3


def test_global_time_cuts(tmp_path: Path) -> None:
    # user a: times 1..6, user b: 7..9, user c: 10 only (no training row -> dropped)
    rows = [("a", f"i{t}", 5, t) for t in range(1, 7)] + [("b", "i1", 5, 7), ("b", "i2", 5, 8)]
    rows += [("b", "i3", 5, 9), ("c", "i4", 5, 10)]
    path = write_rows(tmp_path / "raw.csv", rows)
    frame = load_interactions(path, COLUMNS)
    labels = split_labels(frame, "global-time", cut_times=(4, 7)).tolist()
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # fractions 0.5 / 0.8 of 10 rows: T1 = 6th time = 6, T2 = 9th time = 9
    labels = split_labels(frame, "global-time", cut_fractions=(0.5, 0.8)).tolist()
    assert labels == [0] * 5 + [1] * 3 + [2] * 2
    # cuts 4 / 6: users b and c have no training row; user a keeps 3 / 2 / 1
    report = run(path, tmp_path, PrepareOptions(split="global-time", cut_times=(4, 6)))
    steps = {label: counts for label, *counts in report.steps}
    assert steps["after dropping users without training rows"] == [1, 6, 6]
    assert report.stats.interactions == {"train": 3, "valid": 2, "test": 1}


def test_duplicates_threshold_and_exclusion(tmp_path: Path) -> None:
    rows = [(u, i, 5, 1) for u in "abc" for i in "vwxyz"]  # data rows 1..15
    rows += [("a", "x", 2, 0), ("a", "y", 5, 9), ("b", "q", 1, 1)]  # data rows 16, 17, 18
    path = write_rows(tmp_path / "raw.csv", rows)
    frame = load_interactions(path, COLUMNS)
    pair = ("user_id", "item_id")
    first = resolve_duplicates(frame, "first", path, pair)
    assert first["row"].tolist() == list(range(15)) + [17]
    last = resolve_duplicates(frame, "last", path, pair)  # a-x from time 1, a-y from time 9
    assert last["row"].tolist() == [0, 1, 2] + list(range(4, 15)) + [16, 17]
    with pytest.raises(DataError, match=r"raw.csv: columns user_id, item_id: data rows 3 and 16"):
        resolve_duplicates(frame, "error", path, pair)
    excluded = write_rows(tmp_path / "drop.tsv", [("z",)], header=("item_id",))
    options = PrepareOptions(min_rating=4, exclude_items=(excluded,))
    report = run(path, tmp_path, options)
    steps = [(label, *counts) for label, *counts in report.steps]
    assert steps[0] == ("read", 3, 6, 18)
    assert steps[1] == ("after excluding listed items", 3, 5, 15)
    assert steps[2] == ("after rating >= 4", 3, 4, 13)  # drops a-x (2) and b-q (1)
    assert steps[3] == ("after duplicates", 3, 4, 12)  # a-y twice
    assert report.stats.interactions == {"train": 6, "valid": 3, "test": 3}


BAD = {
    "missing column": (
        lambda t: t.replace("rating", "score", 1),
        DataError,
        "missing column.*rating",
    ),
    "text rating": (
        lambda t: t.replace(",5,1\n", ",five,1\n", 1),
        DataError,
        r"rating.*data row 1",
    ),
    "text time": (lambda t: t.replace(",5,1\n", ",5,noon\n", 1), DataError, r"timestamp.*row 1"),
    "empty id": (lambda t: t.replace("\n10,", "\n,", 1), DataError, r"column user_id.*empty"),
    "header only": (lambda t: t.split("\n")[0] + "\n", DataError, "no interactions"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_and_column(tmp_path: Path, case: str) -> None:
    edit, error, message = BAD[case]
    path = write_rows(tmp_path / "raw.csv", ROWS)
    path.write_text(edit(path.read_text()))
    with pytest.raises(error, match=message) as info:
        run(path, tmp_path)
    assert "raw.csv" in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "props").exists()


def test_bad_options_and_empty_results(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "raw.csv", ROWS)
    with pytest.raises(DataError, match="raw.csv: no interactions remain after rating >= 9"):
        run(path, tmp_path, PrepareOptions(min_rating=9))
    with pytest.raises(DataError, match="after k-core"):
        run(path, tmp_path, PrepareOptions(user_core=50))
    short = write_rows(
        tmp_path / "short.csv", [("a", "x", 5, 1), ("a", "y", 5, 2), ("b", "x", 5, 1)]
    )
    with pytest.raises(DataError, match="short.csv: column x_label: no valid rows"):
        run(short, tmp_path, PrepareOptions())  # users with < 3 rows keep them all in train
    ids_only = Columns("user_id", "item_id")
    for columns, options, message in [
        (ids_only, PrepareOptions(min_rating=4), "needs --rating"),
        (ids_only, PrepareOptions(split="user-time"), "need --time"),
        (ids_only, PrepareOptions(duplicates="last"), "need --time"),
        (COLUMNS, PrepareOptions(cut_times=(1, 2)), "need --split global-time"),
        (COLUMNS, PrepareOptions(split="global-time", cut_times=(2, 1)), "T1 < T2"),
        (COLUMNS, PrepareOptions(split="global-time", cut_fractions=(0.9, 0.5)), "0 < F1 < F2"),
        (COLUMNS, PrepareOptions(modalities=["text", "text"]), "modalities"),
        (COLUMNS, PrepareOptions(user_core=-1), ">= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            prepare(path, columns, options, out=tmp_path / "out", properties_dir=tmp_path / "p")
    with pytest.raises(ConfigError, match="format"):
        run(write_rows(tmp_path / "raw.txt", ROWS), tmp_path)
    bad_json = tmp_path / "raw.jsonl"
    bad_json.write_text('{"user_id": "1", "item_id": "2"}\nnot json\n')
    with pytest.raises(DataError, match="raw.jsonl: line 2 is not JSON"):
        run(bad_json, tmp_path)
    assert not (tmp_path / "out").exists()


def test_refuses_overwrite_and_lists_modalities(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "raw.csv", ROWS)
    options = PrepareOptions(user_core=3, item_core=2, split="user-time", modalities=["text"])
    stats = run(path, tmp_path, options).stats
    yaml_text = stats.yaml_file.read_text()
    assert "modalities: [text]" in yaml_text and "raw.text.npy: write with" in yaml_text
    with pytest.raises(DataError, match="--force"):
        run(path, tmp_path)
    run(path, tmp_path, force=True)
    assert "modalities: []" in stats.yaml_file.read_text()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rows(tmp_path / "raw.jsonl", ROWS)
    args = [str(path), "--user", "user_id", "--item", "item_id", "--rating", "rating"]
    args += ["--time", "timestamp", "--out", str(tmp_path / "out")]
    args += ["--properties", str(tmp_path / "props"), "--name", "cli"]
    assert main(args + ["--user-core", "3", "--item-core", "2", "--split", "user-time"]) == 0
    out = capsys.readouterr().out
    assert "read: users 5, items 7, interactions 15" in out
    assert "final: users 3, items 4, interactions 10" in out
    assert set(read_split(tmp_path / "out" / "cli", "cli", "test")) == EXPECTED["test"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err
    # fractions 0.3 / 0.6 of 15 rows: T1 = 5th time (2), T2 = 10th time (5)
    assert main(args + ["--force", "--split", "global-time", "--cut-fractions", "0.3", "0.6"]) == 0
    assert "after dropping users without training rows: users 3" in capsys.readouterr().out
    assert "cut-fractions: (0.3, 0.6)" in (tmp_path / "props" / "cli.yaml").read_text()


def test_a_file_without_header_like_u_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """MovieLens' u.data: tab-separated user, item, rating, time, no header row."""
    lines = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS)
    raw = tmp_path / "u.data"
    raw.write_text(lines)
    args = [str(raw), "--format", "tsv", "--names", "user,item,rating,time", "--user", "user"]
    args += ["--item", "item", "--time", "time", "--user-core", "3", "--item-core", "2"]
    args += ["--split", "user-time", "--out", str(tmp_path / "out"), "--name", "udata"]
    assert main(args + ["--properties", str(tmp_path / "props")]) == 0
    assert "read: users 5, items 7, interactions 15" in capsys.readouterr().out  # no row lost
    for split, pairs in EXPECTED.items():
        assert set(read_split(tmp_path / "out" / "udata", "udata", split)) == pairs
    raw.write_text(lines + "11\ti1\t5\n")  # a short line
    names = ("user", "item", "rating", "time")
    with pytest.raises(DataError, match="line 16 has 3 fields, expected 4"):
        load_interactions(raw, Columns("user", "item", names=names), "tsv")
    with pytest.raises(ConfigError, match="distinct names"):
        load_interactions(raw, Columns("user", "item", names=("user", "user")), "tsv")
