"""Read user-supplied tables (CSV, TSV, JSON lines) as text, with errors that name file and column.

Used by ``python -m recbole_fitmm.prepare`` (interaction files) and ``python -m
recbole_fitmm.encode`` (item tables). Every value is read as a string (ids keep leading zeros;
an empty cell or a JSON ``null`` becomes ``""``); the callers parse numbers themselves.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.errors import ConfigError, DataError

#: File suffix -> format; ``--format`` overrides it.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def table_format(path: Path, requested: str | None = None) -> str:
    """The format of ``path``: ``requested``, else guessed from the suffix.

    Args:
        path: The table file.
        requested: ``csv``, ``tsv`` or ``jsonl``, or ``None`` to use the suffix.

    Returns:
        ``csv``, ``tsv`` or ``jsonl``.

    Raises:
        ConfigError: Unknown format, or a suffix that names none.
    """
    if requested is not None:
        if requested not in ("csv", "tsv", "jsonl"):
            raise ConfigError(f"--format {requested!r}: expected csv, tsv or jsonl")
        return requested
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ConfigError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "pass --format csv, tsv or jsonl"
        )
    return found


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number} is not JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {number} is not a JSON object")
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    return frame.apply(lambda col: col.map(lambda v: "" if v is None or v != v else str(v)))


def read_table(
    path: Path, columns: list[str], fmt: str | None = None, names: list[str] | None = None
) -> pd.DataFrame:
    """Read a table with a header (or without one, given the column ``names``); values as text.

    Args:
        path: CSV, TSV or JSON-lines file (one object per line).
        columns: Columns that must be present.
        fmt: ``csv``, ``tsv`` or ``jsonl`` (default: from the suffix, see :func:`table_format`).
        names: The names of every column, in order, of a CSV/TSV file that has no header row
            (such as MovieLens' ``u.data``); ``None``: the first line is the header.

    Returns:
        Frame of strings in file order (``""`` where a value is empty or missing); data row k
        (1-based) is row k - 1.

    Raises:
        DataError: Missing or unreadable file, a malformed line (with ``names``: a line whose
            number of fields differs), a missing column.
        ConfigError: Unknown format, or ``names`` for JSON lines or with a repeated name.
    """
    kind = table_format(path, fmt)
    if names is not None and (kind == "jsonl" or len(set(names)) != len(names) or not names):
        raise ConfigError(
            f"column names for a file without a header need a CSV/TSV file and distinct names, "
            f"got {names} for {kind.upper()}"
        )
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if kind == "jsonl":
        frame = _read_jsonl(path)
    else:
        sep = "," if kind == "csv" else "\t"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path,
                    sep=sep,
                    dtype=str,
                    keep_default_na=False,
                    index_col=False,
                    header=None if names else "infer",
                    names=names,
                )
        except (ValueError, pd.errors.ParserWarning) as err:  # pandas' and decoding errors
            reason = " ".join(str(err).split())
            what = f"with the {len(names)} columns {names}" if names else "with a header"
            raise DataError(f"{path}: not a {kind.upper()} file {what} ({reason})") from err
        if names:
            _check_field_counts(path, sep, len(names))
        frame = frame.fillna("")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {list(frame.columns)}"
        )
    return frame


def _check_field_counts(path: Path, sep: str, expected: int) -> None:
    """Raise when a line of a header-less file has another number of fields than named."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            stripped = line.rstrip("\r\n")
            if stripped and stripped.count(sep) + 1 != expected:
                raise DataError(
                    f"{path}: line {number} has {stripped.count(sep) + 1} fields, expected "
                    f"{expected} (the column names given)"
                )


def numeric_column(frame: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    """Parse a column of numbers.

    Args:
        frame: Output of :func:`read_table`.
        column: Column name.
        path: The file, for messages.
        what: What the column holds, for messages (e.g. ``"rating"``).

    Returns:
        float64 array, shape [rows].

    Raises:
        DataError: A value is empty or not a finite number (names file, column and data row).
    """
    text = frame[column].astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {column} ({what}), data row {row + 1}: {text.iloc[row]!r} "
            "is not a number"
        )
    return values


def id_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """The stripped values of an id column, none empty.

    Args:
        frame: Output of :func:`read_table`.
        column: Column name.
        path: The file, for messages.

    Returns:
        Series of non-empty strings, in file order.

    Raises:
        DataError: A value is empty (names file, column and data row).
    """
    values = frame[column].astype(str).str.strip()
    empty = (values == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(f"{path}: column {column}, data row {row + 1}: the id is empty")
    return values


def sort_ids(ids: np.ndarray) -> np.ndarray:
    """Distinct raw ids in the order that gives them new ids 0, 1, ...

    Args:
        ids: Raw ids as strings, shape [n].

    Returns:
        The distinct ids: by numeric value when all are integers (``"2"`` before ``"10"``), else
        in string order.
    """
    distinct = np.unique(ids.astype(str))
    if all(s.lstrip("-").isdigit() for s in distinct):
        order = np.argsort([int(s) for s in distinct], kind="stable")
        return distinct[order]
    return distinct
