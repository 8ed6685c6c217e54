"""Convert an MMRec-format dataset folder into RecBole benchmark files plus feature files.

Input (MMRec's layout): ``<src>/<name>.inter``, tab-separated with a header
``userID itemID [rating timestamp] x_label`` (non-negative integer ids; x_label 0/1/2 =
train/valid/test), and one ``<m>_feat.npy`` per modality ``m`` (row r = item r).

Output: ``<out>/<name>/<name>.{train,valid,test}.inter`` (header ``user_id:token\\titem_id:token``;
MMRec's integer ids are kept as tokens, so row r of a feature file still belongs to token ``r``),
``<out>/<name>/<name>.<m>.npy`` (float32; the dataset hook's files) and ``<properties>/<name>.yaml``
(``benchmark_filename``, ``modalities`` and, when needed, ``data_path`` and ``feature_policy``).

Valid/test rows of users without training rows are dropped (MMRec's
``filter_out_cod_start_users``). Nothing is written until the input is fully validated; the
dataset folder is assembled in a temporary sibling folder and renamed into place, so a failed run
leaves no partial output. Usage::

    python -m recbole_fitmm.data.convert ../shared/data/ml100k --out /tmp/converted \\
        --properties /tmp/converted/properties
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.config import DATASET_ATOMIC, PROPERTIES
from recbole_fitmm.data.dataset import read_feature_file
from recbole_fitmm.errors import ConfigError, DataError, FITMMError
from recbole_fitmm.io import atomic_write_npy, atomic_write_text

SPLITS = ("train", "valid", "test")
ID_COLUMNS = ("userID", "itemID", "x_label")
FEATURE_SUFFIX = "_feat.npy"
#: Modalities that come first, in this order; any other modality follows alphabetically.
LEADING_MODALITIES = ("image", "text")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class ConversionStats:
    """What a conversion wrote.

    Attributes:
        name: Dataset name.
        folder: The dataset folder ``<out>/<name>``.
        yaml_file: The dataset yaml.
        users: Distinct users over the three split files.
        items: Distinct items over the three split files.
        interactions: Split name -> rows written.
        dropped_cold_start: ``valid``/``test`` -> rows dropped because the user has no train rows.
        dropped_min_rating: Rows dropped by ``min_rating`` (all splits).
        swapped_valid_test: Whether x_label 1 and 2 were swapped.
        features: Modality -> shape of the written matrix.
        unused_feature_rows: Feature rows whose item occurs in no written split.
    """

    name: str
    folder: Path
    yaml_file: Path
    users: int
    items: int
    interactions: dict[str, int]
    dropped_cold_start: dict[str, int]
    dropped_min_rating: int = 0
    swapped_valid_test: bool = False
    features: dict[str, tuple[int, int]] = field(default_factory=dict)
    unused_feature_rows: int = 0

    def summary(self) -> str:
        """Human-readable statistics, one fact per line."""
        counts = ", ".join(f"{split} {n:,}" for split, n in self.interactions.items())
        shapes = ", ".join(f"{m} {rows}x{dim}" for m, (rows, dim) in self.features.items())
        lines = [
            f"dataset {self.name}: {self.folder} (yaml: {self.yaml_file})",
            f"users {self.users:,}, items {self.items:,}",
            f"interactions: {counts} (total {sum(self.interactions.values()):,})",
            "dropped (users without training rows): "
            + ", ".join(f"{split} {n:,}" for split, n in self.dropped_cold_start.items()),
            f"dropped (rating below min-rating): {self.dropped_min_rating:,}",
            f"x_label 1 and 2 swapped (valid <-> test): {self.swapped_valid_test}",
            f"features: {shapes or 'none'}",
        ]
        if self.unused_feature_rows:
            lines.append(
                f"{self.unused_feature_rows:,} feature rows belong to items in no split "
                "(feature_policy: lenient written to the yaml)"
            )
        return "\n".join(lines)


def choose_modalities(src: Path, requested: list[str] | None = None) -> list[str]:
    """The modalities to convert.

    Args:
        src: MMRec dataset folder.
        requested: Names in the wanted order; ``None`` takes every ``<m>_feat.npy`` in ``src``:
            image, text, then the others alphabetically.

    Returns:
        Modality names.

    Raises:
        ConfigError: A requested name is repeated or not a plain name.
    """
    if requested is None:
        found = {p.name[: -len(FEATURE_SUFFIX)] for p in src.glob(f"*{FEATURE_SUFFIX}")}
        leading = [m for m in LEADING_MODALITIES if m in found]
        return leading + sorted(m for m in found - set(leading) if _NAME.fullmatch(m))
    if len(set(requested)) != len(requested):
        raise ConfigError(f"--modalities lists a modality twice: {requested}")
    bad = [m for m in requested if not _NAME.fullmatch(m)]
    if bad:
        raise ConfigError(f"modality name {bad[0]!r} must be letters, digits, _ or -")
    return list(requested)


def find_inter_file(src: Path) -> Path:
    """The interaction file: ``<src>/<folder name>.inter``, else the folder's only ``.inter``.

    Args:
        src: MMRec dataset folder.

    Returns:
        Path of the ``.inter`` file.

    Raises:
        DataError: Neither exists.
    """
    expected = src / f"{src.resolve().name}.inter"
    found = [expected] if expected.is_file() else sorted(src.glob("*.inter"))
    if len(found) != 1:
        raise DataError(
            f"interaction file {expected} does not exist and {src} holds {len(found)} other "
            ".inter files; expected exactly one"
        )
    return found[0]


def _fail_first(path: Path, column: str, bad: np.ndarray, values: pd.Series, what: str) -> None:
    """Raise a :class:`DataError` naming the first data row flagged in ``bad``, if any."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column}, data row {row + 1}: {values.iloc[row]!r} is not {what}"
        )


def read_mmrec_inter(path: Path, need_rating: bool = False) -> pd.DataFrame:
    """Read and validate an MMRec ``.inter`` file.

    Args:
        path: The tab-separated file.
        need_rating: Also require a numeric ``rating`` column.

    Returns:
        Frame with int64 columns ``userID``, ``itemID``, ``x_label`` (and float ``rating`` when
        ``need_rating``), in file order.

    Raises:
        DataError: Missing or unreadable file, missing column, non-integer id, x_label outside
            {0, 1, 2}, non-numeric rating.
    """
    if not path.is_file():
        raise DataError(f"interaction file {path} does not exist")
    try:
        with warnings.catch_warnings():
            # A first data row with more fields than the header would be read as an index.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, index_col=False)
    except (ValueError, pd.errors.ParserWarning) as err:  # pandas' and decoding errors
        reason = " ".join(str(err).split())
        raise DataError(f"{path}: not a tab-separated file with a header ({reason})") from err
    required = ID_COLUMNS + (("rating",) if need_rating else ())
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {list(raw.columns)} "
            "(expected header userID, itemID, [rating, timestamp,] x_label, tab-separated)"
        )
    frame = pd.DataFrame()
    for column in ID_COLUMNS:
        values = raw[column].fillna("").astype(str).str.strip()
        bad = ~values.str.fullmatch(r"\d{1,18}").to_numpy(dtype=bool)
        _fail_first(path, column, bad, values, "a non-negative integer")
        frame[column] = values.to_numpy().astype(np.int64)
    bad = ~frame["x_label"].isin([0, 1, 2]).to_numpy()
    _fail_first(path, "x_label", bad, raw["x_label"], "0 (train), 1 (valid) or 2 (test)")
    if need_rating:
        rating = pd.to_numeric(raw["rating"].str.strip(), errors="coerce")
        _fail_first(path, "rating", rating.isna().to_numpy(), raw["rating"], "a number")
        frame["rating"] = rating.to_numpy(dtype=np.float64)
    return frame


def split_rows(
    frame: pd.DataFrame, path: Path, swap_valid_test: bool = False, min_rating: float | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, int], int]:
    """Apply the rating filter, the valid/test swap and the cold-start filter; split by x_label.

    Args:
        frame: Output of :func:`read_mmrec_inter`.
        path: The source file, for messages.
        swap_valid_test: Swap x_label 1 and 2.
        min_rating: Keep only rows with ``rating >= min_rating`` (``None``: keep all).

    Returns:
        Split name -> frame of ``userID``, ``itemID``; rows dropped per split by the cold-start
        filter (``valid``, ``test``); rows dropped by the rating filter.

    Raises:
        DataError: A split is empty after filtering.
    """
    n_before = len(frame)
    if min_rating is not None:
        frame = frame[frame["rating"] >= min_rating]
    dropped_rating = n_before - len(frame)
    labels = frame["x_label"].to_numpy()
    if swap_valid_test:
        labels = np.select([labels == 1, labels == 2], [2, 1], labels)
    has_train = frame["userID"].isin(frame.loc[labels == 0, "userID"]).to_numpy()
    parts: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for label, split in enumerate(SPLITS):
        rows = labels == label
        if label:
            dropped[split] = int((rows & ~has_train).sum())
            rows &= has_train
        parts[split] = frame.loc[rows, ["userID", "itemID"]]
        if parts[split].empty:
            source_label = (0, 2, 1)[label] if swap_valid_test else label
            raise DataError(
                f"{path}: column x_label: no {split} rows (x_label {source_label}) remain after "
                f"filtering ({dropped_rating} rows below min-rating, "
                f"{dropped.get(split, 0)} of users without training rows)"
            )
    return parts, dropped, dropped_rating


def load_features(src: Path, modalities: list[str], n_items: int) -> dict[str, np.ndarray]:
    """Read and check ``<m>_feat.npy`` for every modality.

    Args:
        src: MMRec dataset folder.
        modalities: Modality names.
        n_items: Rows needed: max itemID + 1 over the input file.

    Returns:
        Modality -> float32 matrix [rows, dim], rows >= ``n_items``.

    Raises:
        DataError: A file is missing or malformed, has too few rows, or the row counts differ.
    """
    features: dict[str, np.ndarray] = {}
    for modality in modalities:
        path = src / f"{modality}{FEATURE_SUFFIX}"
        matrix = read_feature_file(path)
        if matrix.shape[0] < n_items:
            raise DataError(
                f"feature file {path} has {matrix.shape[0]} rows; the interactions need at least "
                f"max itemID + 1 = {n_items}"
            )
        features[modality] = matrix
    rows = {f"{m}{FEATURE_SUFFIX}": f.shape[0] for m, f in features.items()}
    if len(set(rows.values())) > 1:
        raise DataError(f"feature files in {src} disagree on the number of item rows: {rows}")
    return features


def _yaml_text(
    src: Path, modalities: list[str], out: Path, lenient: bool, swap: bool, min_rating: float | None
) -> str:
    options = [f"swap-valid-test: {swap}", f"min-rating: {min_rating}"]
    lines = [
        "# Written by `python -m recbole_fitmm.data.convert` from",
        f"# {src} ({', '.join(options)}).",
        "benchmark_filename: [train, valid, test]",
        f"modalities: [{', '.join(modalities)}]",
    ]
    if not modalities:
        lines.insert(-1, "# No <m>_feat.npy files: only ID-based models (BPR, LightGCN, ...) run.")
    if out.resolve() != DATASET_ATOMIC.resolve():
        lines.append(f"data_path: {json.dumps(str(out.resolve()))}")
    if lenient:
        lines += [
            "# Some feature rows belong to items in no split; the dataset hook ignores them.",
            "feature_policy: lenient",
        ]
    return "\n".join(lines) + "\n"


def convert_mmrec(
    src: str | Path,
    name: str | None = None,
    out: str | Path = DATASET_ATOMIC,
    properties_dir: str | Path = PROPERTIES / "dataset",
    modalities: list[str] | None = None,
    swap_valid_test: bool = False,
    min_rating: float | None = None,
    force: bool = False,
) -> ConversionStats:
    """Convert the MMRec dataset in ``src`` (see the module docstring).

    Args:
        src: MMRec dataset folder holding an ``.inter`` file and ``<m>_feat.npy`` files.
        name: Output dataset name (default: the stem of :func:`find_inter_file`).
        out: Folder that receives ``<name>/`` (default: the repository's ``dataset_atomic/``).
        properties_dir: Folder that receives ``<name>.yaml`` (default: ``properties/dataset/``).
        modalities: Modalities to copy, in this order (default: every ``<m>_feat.npy``; image,
            text, then the others alphabetically).
        swap_valid_test: Swap x_label 1 and 2 (the shared sports/clothing files need it for
            MMRec's protocol).
        min_rating: Keep only rows with ``rating >= min_rating``; needs a ``rating`` column.
        force: Replace an existing dataset folder and yaml.

    Returns:
        Statistics of the written dataset.

    Raises:
        DataError: Bad input (the message names the file and the field) or existing output
            without ``force``.
        ConfigError: Bad option values.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"source folder {src} does not exist")
    if name is not None and not _NAME.fullmatch(name):
        raise ConfigError(f"dataset name {name!r} must be letters, digits, _ or -")
    inter_path = find_inter_file(src)
    name = name or inter_path.stem
    if not _NAME.fullmatch(name):
        raise DataError(f"{inter_path}: the dataset name must be letters, digits, _ or -")
    out, properties_dir = Path(out), Path(properties_dir)
    target, yaml_file = out / name, properties_dir / f"{name}.yaml"
    if target.resolve() == src.resolve():
        raise ConfigError(f"output folder {target} is the source folder; choose another --out")
    for existing in (target, yaml_file):
        if existing.exists() and not force:
            raise DataError(f"{existing} already exists; pass --force to overwrite it")
    chosen = choose_modalities(src, modalities)

    frame = read_mmrec_inter(inter_path, need_rating=min_rating is not None)
    parts, dropped, dropped_rating = split_rows(frame, inter_path, swap_valid_test, min_rating)
    features = load_features(src, chosen, int(frame["itemID"].max()) + 1)
    items = np.unique(np.concatenate([p["itemID"].to_numpy() for p in parts.values()]))
    users = np.unique(np.concatenate([p["userID"].to_numpy() for p in parts.values()]))
    unused = next(iter(features.values())).shape[0] - len(items) if features else 0

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset folder should not be
    backup: Path | None = None
    published = False
    try:
        header = "user_id:token\titem_id:token\n"
        for split, part in parts.items():
            body = "".join(f"{u}\t{i}\n" for u, i in part.itertuples(index=False))
            atomic_write_text(staging / f"{name}.{split}.inter", header + body)
        for modality, matrix in features.items():
            atomic_write_npy(staging / f"{name}.{modality}.npy", matrix)
        if target.exists():
            backup = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.old-"))
            os.replace(target, backup / name)
        os.replace(staging, target)
        published = True
        atomic_write_text(
            yaml_file, _yaml_text(src, chosen, out, unused > 0, swap_valid_test, min_rating)
        )
    except BaseException:
        if published:
            shutil.rmtree(target, ignore_errors=True)
        if backup is not None and (backup / name).exists():
            os.replace(backup / name, target)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    return ConversionStats(
        name=name,
        folder=target,
        yaml_file=yaml_file,
        users=len(users),
        items=len(items),
        interactions={split: len(part) for split, part in parts.items()},
        dropped_cold_start=dropped,
        dropped_min_rating=dropped_rating,
        swapped_valid_test=swap_valid_test,
        features={m: (int(f.shape[0]), int(f.shape[1])) for m, f in features.items()},
        unused_feature_rows=unused,
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m recbole_fitmm.data.convert SRC [options]``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on a :class:`~recbole_fitmm.errors.FITMMError` (one line on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.data.convert",
        description="Convert an MMRec-format dataset folder into RecBole benchmark files, "
        "feature files and a dataset yaml.",
    )
    parser.add_argument("src", type=Path, help="folder holding <name>.inter and <m>_feat.npy")
    parser.add_argument("--name", help="output dataset name (default: the .inter file's stem)")
    parser.add_argument(
        "--out", type=Path, default=DATASET_ATOMIC, help="receives <name>/ (default: %(default)s)"
    )
    parser.add_argument(
        "--properties",
        dest="properties_dir",
        type=Path,
        default=PROPERTIES / "dataset",
        help="receives <name>.yaml (default: %(default)s)",
    )
    parser.add_argument(
        "--modalities", nargs="+", metavar="M", help="subset/order (default: every <m>_feat.npy)"
    )
    parser.add_argument("--swap-valid-test", action="store_true", help="swap x_label 1 and 2")
    parser.add_argument("--min-rating", type=float, help="keep only rows with rating >= this value")
    parser.add_argument("--force", action="store_true", help="overwrite existing output")
    args = parser.parse_args(argv)
    try:
        stats = convert_mmrec(**vars(args))
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(stats.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
