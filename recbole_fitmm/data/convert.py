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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.cli import run_action
from recbole_fitmm.config import OUTPUT_DATA, OUTPUT_PROPERTIES
from recbole_fitmm.data.benchmark import (
    NAME,
    SPLITS,
    ConversionStats,
    Target,
    split_rows,
    write_benchmark,
)
from recbole_fitmm.data.dataset import read_feature_file
from recbole_fitmm.errors import ConfigError, DataError

__all__ = ["SPLITS", "ConversionStats", "convert_mmrec", "main", "split_rows"]

ID_COLUMNS = ("userID", "itemID", "x_label")
FEATURE_SUFFIX = "_feat.npy"
#: Modalities that come first, in this order; any other modality follows alphabetically.
LEADING_MODALITIES = ("image", "text")


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
        return leading + sorted(m for m in found - set(leading) if NAME.fullmatch(m))
    if len(set(requested)) != len(requested):
        raise ConfigError(f"--modalities lists a modality twice: {requested}")
    bad = [m for m in requested if not NAME.fullmatch(m)]
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


def convert_mmrec(
    src: str | Path,
    name: str | None = None,
    out: str | Path = OUTPUT_DATA,
    properties_dir: str | Path = OUTPUT_PROPERTIES,
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
    if name is not None and not NAME.fullmatch(name):
        raise ConfigError(f"dataset name {name!r} must be letters, digits, _ or -")
    inter_path = find_inter_file(src)
    name = name or inter_path.stem
    if not NAME.fullmatch(name):
        raise DataError(f"{inter_path}: the dataset name must be letters, digits, _ or -")
    options = {"swap-valid-test": swap_valid_test, "min-rating": min_rating}
    command = "recbole_fitmm.data.convert"
    target = Target(name, Path(out), Path(properties_dir), command, src, options)
    if target.folder.resolve() == src.resolve():
        raise ConfigError(
            f"output folder {target.folder} is the source folder; choose another --out"
        )
    target.check(force)
    chosen = choose_modalities(src, modalities)

    frame = read_mmrec_inter(inter_path, need_rating=min_rating is not None)
    split_rows(frame, inter_path, swap_valid_test, min_rating)  # refuse empty splits first
    features = load_features(src, chosen, int(frame["itemID"].max()) + 1)
    return write_benchmark(
        frame, inter_path, target, features, swap_valid_test=swap_valid_test, min_rating=min_rating
    )


def main(argv: list[str] | None = None) -> int:
    """The converter's command line (module docstring); the exit status: 0, or 2 after a
    one-line error."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.data.convert",
        description="Convert an MMRec-format dataset folder into RecBole benchmark files, "
        "feature files and a dataset yaml.",
    )
    parser.add_argument("src", type=Path, help="folder holding <name>.inter and <m>_feat.npy")
    parser.add_argument("--name", help="output dataset name (default: the .inter file's stem)")
    parser.add_argument(
        "--out", type=Path, default=OUTPUT_DATA, help="receives <name>/ (default: %(default)s)"
    )
    parser.add_argument(
        "--properties",
        dest="properties_dir",
        type=Path,
        default=OUTPUT_PROPERTIES,
        help="receives <name>.yaml (default: %(default)s)",
    )
    parser.add_argument(
        "--modalities", nargs="+", metavar="M", help="subset/order (default: every <m>_feat.npy)"
    )
    parser.add_argument("--swap-valid-test", action="store_true", help="swap x_label 1 and 2")
    parser.add_argument("--min-rating", type=float, help="keep only rows with rating >= this value")
    parser.add_argument("--force", action="store_true", help="overwrite existing output")
    args = parser.parse_args(argv)
    return run_action(lambda: convert_mmrec(**vars(args)).summary())


if __name__ == "__main__":
    raise SystemExit(main())
