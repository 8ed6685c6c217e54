"""The MMRec -> RecBole benchmark converter (``recbole_fitmm.data.convert``)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recbole_fitmm import Config
from recbole_fitmm.data.convert import choose_modalities, convert_mmrec, main
from recbole_fitmm.data.dataset import MultiModalDataset
from recbole_fitmm.data.synthetic import SyntheticSpec, generate
from recbole_fitmm.errors import ConfigError, DataError

SPEC = SyntheticSpec(
    n_users=40, n_items=30, n_topics=3, modalities={"text": 6, "audio": 4, "image": 8}, seed=3
)
SPLITS = ("train", "valid", "test")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N_ITEMS = generate(SPEC).n_items


def write_mmrec(folder: Path, name: str = "mini") -> dict[str, list[tuple[int, int]]]:
    """Write a small MMRec-format dataset; return the (user, item) pairs each split must hold.

    One extra user has only valid/test rows (it must be dropped); ratings are 1..5.
    """
    data = generate(SPEC)
    folder.mkdir(parents=True, exist_ok=True)
    cold_user = data.n_users
    inter = np.concatenate([data.inter, [[cold_user, 0, 1], [cold_user, 1, 2]]])
    ratings = np.arange(len(inter)) % 5 + 1
    lines = ["userID\titemID\trating\ttimestamp\tx_label"]
    lines += [
        f"{u}\t{i}\t{r}\t{1000 + k}\t{x}" for k, ((u, i, x), r) in enumerate(zip(inter, ratings))
    ]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    for modality, matrix in data.features.items():
        np.save(folder / f"{modality}_feat.npy", matrix.astype(np.float64))
    return {
        split: [(int(u), int(i)) for u, i, x in data.inter if x == label]
        for label, split in enumerate(SPLITS)
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    write_mmrec(tmp_path / "src" / "mini")
    return tmp_path / "src" / "mini"


def run(src: Path, tmp_path: Path, **kwargs: object):
    return convert_mmrec(src, out=tmp_path / "out", properties_dir=tmp_path / "props", **kwargs)


def read_pairs(path: Path) -> list[tuple[int, int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token"
    return [tuple(int(v) for v in line.split("\t")) for line in lines[1:]]


def no_output(tmp_path: Path) -> bool:
    out, props = tmp_path / "out", tmp_path / "props"
    return (not out.exists() or not any(out.iterdir())) and not (props / "mini.yaml").exists()


def load(tmp_path: Path, name: str = "mini") -> MultiModalDataset:
    yaml_file = str(tmp_path / "props" / f"{name}.yaml")
    config = Config("BPR", name, [yaml_file], {"gpu_id": "", "state": "ERROR"})
    return MultiModalDataset(config)


def test_round_trip(tmp_path: Path) -> None:
    expected = write_mmrec(tmp_path / "src" / "mini")
    stats = run(tmp_path / "src" / "mini", tmp_path)
    assert stats.interactions == {s: len(expected[s]) for s in SPLITS}
    assert stats.dropped_cold_start == {"valid": 1, "test": 1}
    assert stats.features == {"image": (N_ITEMS, 8), "text": (N_ITEMS, 6), "audio": (N_ITEMS, 4)}
    assert list(stats.features) == ["image", "text", "audio"]
    assert (stats.users, stats.items) == (SPEC.n_users, N_ITEMS)
    for split in SPLITS:
        assert read_pairs(tmp_path / "out" / "mini" / f"mini.{split}.inter") == expected[split]
    assert "modalities: [image, text, audio]" in stats.yaml_file.read_text()

    dataset = load(tmp_path)
    assert list(dataset.modal_feats) == ["image", "text", "audio"]
    for part, split in zip(dataset.build(), SPLITS):
        users = part.id2token(part.uid_field, part.inter_feat[part.uid_field].numpy())
        items = part.id2token(part.iid_field, part.inter_feat[part.iid_field].numpy())
        got = Counter((int(u), int(i)) for u, i in zip(users, items))
        assert got == Counter(expected[split])
    tokens = dataset.field2id_token[dataset.iid_field]
    for modality, feats in dataset.modal_feats.items():
        raw = np.load(tmp_path / "src" / "mini" / f"{modality}_feat.npy")
        written = np.load(tmp_path / "out" / "mini" / f"mini.{modality}.npy")
        assert written.dtype == np.float32
        np.testing.assert_array_equal(written, raw.astype(np.float32))
        assert not feats[0].any()
        for iid in range(1, len(tokens)):
            np.testing.assert_array_equal(feats[iid].numpy(), written[int(tokens[iid])])


def test_swap_valid_test(src: Path, tmp_path: Path) -> None:
    plain = run(src, tmp_path)
    valid = read_pairs(plain.folder / "mini.valid.inter")
    test = read_pairs(plain.folder / "mini.test.inter")
    swapped = run(src, tmp_path, swap_valid_test=True, force=True)
    assert read_pairs(swapped.folder / "mini.valid.inter") == test
    assert read_pairs(swapped.folder / "mini.test.inter") == valid
    assert swapped.interactions["valid"] == plain.interactions["test"]
    assert "swapped" in swapped.summary()


def test_min_rating_and_unused_feature_rows(src: Path, tmp_path: Path) -> None:
    stats = run(src, tmp_path, min_rating=4)
    total = sum(stats.interactions.values()) + sum(stats.dropped_cold_start.values())
    assert stats.dropped_min_rating > 0
    assert total + stats.dropped_min_rating == len((src / "mini.inter").read_text().split("\n")) - 2
    assert stats.unused_feature_rows == N_ITEMS - stats.items > 0
    assert "feature_policy: lenient" in stats.yaml_file.read_text()
    dataset = load(tmp_path)
    assert dataset.modal_feats["image"].shape == (stats.items + 1, 8)


def test_modalities_option(src: Path, tmp_path: Path) -> None:
    assert choose_modalities(src) == ["image", "text", "audio"]
    stats = run(src, tmp_path, modalities=["text", "image"])
    assert list(stats.features) == ["text", "image"]
    assert sorted(p.name for p in stats.folder.glob("*.npy")) == ["mini.image.npy", "mini.text.npy"]
    assert "modalities: [text, image]" in stats.yaml_file.read_text()
    with pytest.raises(ConfigError, match="twice"):
        run(src, tmp_path, modalities=["text", "text"], force=True)
    with pytest.raises(DataError, match="video_feat.npy"):
        run(src, tmp_path, modalities=["video"], force=True)


def test_no_features(src: Path, tmp_path: Path) -> None:
    for path in src.glob("*_feat.npy"):
        path.unlink()
    stats = run(src, tmp_path)
    assert stats.features == {} and "features: none" in stats.summary()
    assert "only ID-based models" in stats.yaml_file.read_text()
    assert "modalities: []" in stats.yaml_file.read_text()


def test_refuses_overwrite_without_force(src: Path, tmp_path: Path) -> None:
    stats = run(src, tmp_path)
    (stats.folder / "stale.txt").write_text("old")
    with pytest.raises(DataError, match="--force"):
        run(src, tmp_path)
    assert (stats.folder / "stale.txt").exists()
    stats.folder.joinpath("stale.txt").unlink()
    stats.yaml_file.unlink()
    (stats.folder / "stale.txt").write_text("old")
    with pytest.raises(DataError, match="mini\\b.*already exists"):
        run(src, tmp_path)
    run(src, tmp_path, force=True)
    assert not (stats.folder / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mini"]


def test_failed_yaml_write_restores_previous_output(src: Path, tmp_path: Path) -> None:
    stats = run(src, tmp_path)
    (stats.folder / "marker").write_text("previous")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the properties folder should be")
    with pytest.raises(OSError):
        convert_mmrec(src, out=tmp_path / "out", properties_dir=blocked / "sub", force=True)
    assert (stats.folder / "marker").read_text() == "previous"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mini"]


def test_name_and_output_checks(src: Path, tmp_path: Path) -> None:
    positive = run(src, tmp_path, name="mini_pos", min_rating=4)
    assert positive.folder == tmp_path / "out" / "mini_pos"
    assert (positive.folder / "mini_pos.train.inter").is_file()
    with pytest.raises(ConfigError, match="source folder"):
        convert_mmrec(src, out=src.parent, properties_dir=tmp_path / "props")
    renamed = tmp_path / "renamed"
    src.rename(renamed)
    assert run(renamed, tmp_path).name == "mini"  # the folder's only .inter file
    (renamed / "other.inter").write_text("")
    with pytest.raises(DataError, match="exactly one"):
        run(renamed, tmp_path, force=True)
    with pytest.raises(ConfigError, match="name"):
        run(renamed, tmp_path, name="../evil")


def _edit_inter(src: Path, edit) -> None:
    path = src / "mini.inter"
    path.write_text(edit(path.read_text()))


BAD_INTER = {
    "missing column": (lambda t: t.replace("\tx_label", "\tlabel", 1), "x_label"),
    "non-integer user": (lambda t: t.replace("\n0\t", "\nu0\t", 1), "userID"),
    "float item": (lambda t: t.replace("\n", "\n1\t1.5\t5\t1\t0\n", 1), "itemID"),
    "negative id": (lambda t: t.replace("\n", "\n-1\t1\t5\t1\t0\n", 1), "userID"),
    "empty id": (lambda t: t.replace("\n", "\n1\t\t5\t1\t0\n", 1), "itemID"),
    "label 3": (lambda t: t.replace("\n", "\n1\t1\t5\t1\t3\n", 1), "x_label"),
    "no test rows": (
        lambda t: "\n".join(r for r in t.split("\n") if not r.endswith("\t2")),
        "x_label",
    ),
    "header only": (lambda t: t.split("\n")[0] + "\n", "x_label"),
    "empty file": (lambda t: "", "mini.inter"),
    "too many fields": (lambda t: t.replace("\n", "\n1\t1\t5\t1\t0\t9\n", 1), "mini.inter"),
    "too many fields later": (lambda t: t + "1\t1\t5\t1\t0\t9\n", "line"),
    "too few fields": (lambda t: t.replace("\n", "\n1\t1\t5\n", 1), "x_label"),
}


@pytest.mark.parametrize("case", list(BAD_INTER))
def test_bad_interactions(src: Path, tmp_path: Path, case: str) -> None:
    edit, field = BAD_INTER[case]
    _edit_inter(src, edit)
    with pytest.raises(DataError, match=field) as info:
        run(src, tmp_path)
    assert "mini.inter" in str(info.value)
    assert no_output(tmp_path)


def test_missing_inputs(tmp_path: Path, src: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        run(tmp_path / "nowhere", tmp_path)
    (src / "mini.inter").rename(src / "mini.txt")
    with pytest.raises(DataError, match="interaction file .*mini.inter"):
        run(src, tmp_path)
    (src / "mini.txt").rename(src / "mini.inter")
    with pytest.raises(DataError, match="rating"):
        _edit_inter(src, lambda t: t.replace("\trating", "\tscore", 1))
        run(src, tmp_path, min_rating=4)
    assert no_output(tmp_path)


BAD_FEATURES = {
    "1-D": (lambda m: m[:, 0], "2-D"),
    "NaN": (lambda m: np.where(np.arange(m.size).reshape(m.shape) == 5, np.nan, m), "NaN"),
    "too few rows": (lambda m: m[:-1], "rows"),
    "integer": (lambda m: m.astype(np.int64), "dtype"),
    "other row count": (lambda m: np.vstack([m, m[:1]]), "disagree"),
}


@pytest.mark.parametrize("case", list(BAD_FEATURES))
def test_bad_features(src: Path, tmp_path: Path, case: str) -> None:
    edit, message = BAD_FEATURES[case]
    path = src / "text_feat.npy"
    np.save(path, edit(np.load(path)))
    with pytest.raises(DataError, match=message) as info:
        run(src, tmp_path)
    assert "text_feat.npy" in str(info.value)
    assert no_output(tmp_path)


def test_pickled_feature_file(src: Path, tmp_path: Path) -> None:
    np.save(src / "image_feat.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="image_feat.npy"):
        run(src, tmp_path)
    assert no_output(tmp_path)


def test_cli(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(src), "--out", str(tmp_path / "out"), "--properties", str(tmp_path / "props")]
    assert main(args + ["--swap-valid-test", "--min-rating", "2"]) == 0
    stdout = capsys.readouterr().out
    assert f"image {N_ITEMS}x8" in stdout and "rating below min-rating" in stdout
    assert "swapped" in stdout
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err
    assert main(args + ["--force", "--modalities", "audio"]) == 0
    assert f"features: audio {N_ITEMS}x4" in capsys.readouterr().out


def test_cli_module_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recbole_fitmm.data.convert",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: source folder")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    not (SHARED_DATA / "tiktok" / "tiktok.inter").is_file(), reason="shared data not present"
)
def test_tiktok(tmp_path: Path) -> None:
    stats = run(SHARED_DATA / "tiktok", tmp_path)
    assert list(stats.features) == ["image", "audio"]
    assert stats.features["image"] == (6710, 128)
    assert sum(stats.dropped_cold_start.values()) == 10
    assert stats.unused_feature_rows == 6710 - stats.items
    dataset = load(tmp_path, "tiktok")
    assert dataset.modal_feats["audio"].shape == (stats.items + 1, 128)
