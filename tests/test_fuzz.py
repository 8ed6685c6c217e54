"""Property-based tests: malformed input ends in a ``FITMMError`` and leaves no partial output.

Inputs are valid files with a few random mutations (so both the accepting and the refusing paths
are exercised), plus pure noise. Bounded (``max_examples``, no per-example deadline,
derandomized, no example database) so the file runs in well under a minute on two CPU cores and
gives the same examples on every run.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recbole_fitmm.data.convert import convert_mmrec
from recbole_fitmm.data.dataset import MultiModalDataset
from recbole_fitmm.errors import FITMMError
from recbole_fitmm.quick_start import create_dataset
from tests.test_dataset_hook import N_ITEMS, TEST, TRAIN, VALID, hook_config, make_dataset

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Pieces of atomic-file text: valid tokens, near misses and hostile characters.
PIECES = [
    "0", "1", "7", "12", "007", "-3", "x", "", " ", "NA", "nan", "1.5", '"', ":", "\t", "\n",
    "\r", "\x00", "é", "user_id:token", "item_id:float", "rating:float", "tag:token_seq",
    "emb:float_seq", "a b",
]  # fmt: skip


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@st.composite
def mutated_text(draw: Any, text: str) -> str:
    """``text`` after 0-3 random edits of its lines and tab-separated cells."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, 3))):
        row = draw(st.integers(0, len(lines) - 1))
        cells = lines[row].split("\t")
        col = draw(st.integers(0, len(cells) - 1))
        piece = draw(st.sampled_from(PIECES))
        edit = draw(st.sampled_from(["replace", "insert", "add cell", "drop line", "new line"]))
        if edit == "replace":
            cells[col] = piece
        elif edit == "insert":
            at = draw(st.integers(0, len(cells[col])))
            cells[col] = cells[col][:at] + piece + cells[col][at:]
        elif edit == "add cell":
            cells.insert(col, piece)
        if edit == "drop line":
            del lines[row]
            lines = lines or [""]
        elif edit == "new line":
            lines.insert(row, "\t".join(draw(st.lists(st.sampled_from(PIECES), max_size=3))))
        else:
            lines[row] = "\t".join(cells)
    return "\n".join(lines)


def split_text(rows: list[tuple[int, int]]) -> str:
    return "user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in rows)


PARTS = {"train": TRAIN, "valid": VALID, "test": TEST}


@FUZZ
@given(data=st.data(), part=st.sampled_from(list(PARTS)), noise=st.booleans())
def test_fuzz_atomic_files(tmp_path: Path, data: Any, part: str, noise: bool) -> None:
    folder = make_dataset(tmp_path)
    before = _listing(tmp_path)
    if noise:
        content = data.draw(st.binary(max_size=64))
    else:
        content = data.draw(mutated_text(split_text(PARTS[part]))).encode("utf-8")
    (folder / f"hk.{part}.inter").write_bytes(content)
    try:
        dataset = create_dataset(hook_config(tmp_path, duplicate_policy="drop"))
    except FITMMError as err:
        event(f"refused: {type(err).__name__}")
    else:
        event("loaded")
        assert all(size > 0 for size in dataset.file_size_list)
        assert not dataset.inter_feat[["user_id", "item_id"]].isna().any().any()
    assert _listing(tmp_path) == before


NPY_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]


@st.composite
def npy_files(draw: Any, n_rows: int = N_ITEMS) -> bytes:
    """A feature file: mostly a float matrix of about ``n_rows`` rows, else anything."""
    kind = draw(st.sampled_from(["matrix", "matrix", "matrix", "array", "pickle", "noise", "cut"]))
    if kind == "noise":
        return draw(st.binary(max_size=200))
    if kind == "pickle":
        array = np.array([{"row": i} for i in range(n_rows)], dtype=object)
    else:
        if kind == "array":
            shape = tuple(draw(st.lists(st.integers(0, 10), max_size=3)))
        else:
            shape = (n_rows + draw(st.sampled_from([0, 0, 0, -1, 1])), draw(st.integers(1, 4)))
        array = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) / 7
        if array.size and draw(st.integers(0, 3)) == 0:
            array.flat[draw(st.integers(0, array.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, 1e300])
            )
        if kind == "array":
            with np.errstate(all="ignore"):
                array = array.astype(draw(st.sampled_from(NPY_DTYPES)))
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=kind == "pickle")
    content = buffer.getvalue()
    return content[: draw(st.integers(0, len(content) - 1))] if kind == "cut" else content


@FUZZ
@given(content=npy_files(), policy=st.sampled_from(["strict", "lenient"]))
def test_fuzz_feature_files(tmp_path: Path, content: bytes, policy: str) -> None:
    folder = make_dataset(tmp_path)
    (folder / "hk.text.npy").write_bytes(content)
    before = _listing(tmp_path)
    try:
        dataset = MultiModalDataset(hook_config(tmp_path, feature_policy=policy))
    except FITMMError as err:
        event(f"refused: {type(err).__name__}")
    else:
        event("loaded")
        feats = dataset.modal_feats["text"]
        assert feats.shape[0] == dataset.item_num and bool(feats.isfinite().all())
        assert feats[0].abs().sum() == 0
    assert _listing(tmp_path) == before


# Mostly row numbers, sometimes (about 1 in 7) a token that cannot name a row.
BAD_TOKENS = ["07", "-1", "+3", "x", "99999999999999999999", "1e3", "٣"]
item_tokens = st.integers(0, 90).map(lambda k: str(k % 13) if k < 78 else BAD_TOKENS[k % 7])


@FUZZ
@given(
    tokens=st.lists(item_tokens, min_size=4, max_size=8, unique=True),
    n_rows=st.integers(1, 14),
    policy=st.sampled_from(["strict", "lenient", "lenient"]),
)
def test_fuzz_token_row_alignment(tmp_path: Path, tokens: list, n_rows: int, policy: str) -> None:
    splits = (list(enumerate(tokens)), [(0, tokens[-1])], [(1, tokens[-2])])
    folder = make_dataset(tmp_path, n_feature_rows=n_rows, splits=splits)
    raw = np.load(folder / "hk.image.npy")
    try:
        dataset = create_dataset(
            hook_config(tmp_path, model="VBPR", feature_policy=policy, duplicate_policy="drop")
        )
    except FITMMError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("loaded")
    feats = dataset.modal_feats["image"].numpy()
    id2token = dataset.field2id_token["item_id"]
    assert not feats[0].any()
    for iid in range(1, dataset.item_num):
        row = int(id2token[iid])
        expected = raw[row] if row < n_rows else np.zeros(raw.shape[1], np.float32)
        np.testing.assert_array_equal(feats[iid], expected)


@st.composite
def mmrec_files(draw: Any) -> str:
    """An MMRec ``.inter`` file: every user has train, valid and test rows, then mutations."""
    rating = draw(st.booleans())
    header = "userID\titemID\t" + ("rating\ttimestamp\t" if rating else "") + "x_label"
    rows = []
    for user in range(draw(st.integers(1, 4))):
        items = draw(st.lists(st.integers(0, 9), min_size=3, max_size=5, unique=True))
        for k, item in enumerate(items):
            extra = "5\t1000\t" if rating else ""
            rows.append(f"{user}\t{item}\t{extra}{min(k, 2)}")
    return draw(mutated_text(header + "\n" + "\n".join(rows) + "\n"))


@FUZZ
@given(inter=mmrec_files(), features=st.lists(npy_files(10), max_size=2))
def test_fuzz_converter(tmp_path: Path, inter: str, features: list[bytes]) -> None:
    src, out, props = tmp_path / "src", tmp_path / "out", tmp_path / "props"
    for folder in (src, out, props):
        shutil.rmtree(folder, ignore_errors=True)
    src.mkdir()
    (src / "src.inter").write_text(inter)
    for modality, content in zip(["image", "text"], features):
        (src / f"{modality}_feat.npy").write_bytes(content)
    try:
        stats = convert_mmrec(src, name="fz", out=out, properties_dir=props)
    except FITMMError as err:
        event(f"refused: {type(err).__name__}")
        leftovers = [p for p in (out, props) if p.exists() and any(p.iterdir())]
        assert not leftovers, f"partial output in {leftovers}"
        return
    event("converted")
    assert sorted(p.name for p in out.iterdir()) == ["fz"]
    config = hook_config(
        out,
        name="fz",
        model="VBPR" if stats.features else "BPR",
        modalities=list(stats.features) or None,
        feature_policy="lenient" if stats.unused_feature_rows else "strict",
    )
    create_dataset(config)  # whatever the converter accepts, the plugin loads


def test_unmutated_inputs_load(tmp_path: Path) -> None:
    """The strategies' starting point is valid data (so the fuzz tests test something)."""
    make_dataset(tmp_path, splits=(TRAIN, VALID, TEST))
    assert create_dataset(hook_config(tmp_path)).file_size_list == [10, 5, 5]
