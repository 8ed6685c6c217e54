"""Checks of the atomic files before RecBole reads them, and the interaction policies after.

RecBole reports a malformed atomic file, if at all, with a deep pandas traceback, reads a missing
id as the token ``0`` and keeps duplicate or cold-start interactions silently. This module turns
every such case into a :class:`~recbole_fitmm.errors.DataError` that names the file, the line
and the problem, for every model (plugin and RecBole built-in):

* :func:`check_dataset_files` / :func:`check_atomic_file`: encoding, header ``name:type``
  tokens, field counts per line, ids present and without surrounding blanks, float columns
  numeric — the same parse RecBole does;
* :func:`apply_interaction_policies`: duplicate (user, item) interactions
  (``duplicate_policy: error | drop``) and users without training interactions in a fixed split
  (``cold_user_policy: drop | error | keep``).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:  # the set pandas uses for na_values; private, so keep a copy of pandas 2.3's as fallback
    from pandas._libs.parsers import STR_NA_VALUES
except ImportError:  # pragma: no cover
    STR_NA_VALUES = {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }  # fmt: skip

from recbole_fitmm.data.files import run_files
from recbole_fitmm.errors import DataError

FEATURE_TYPES = ("token", "float", "token_seq", "float_seq")
#: Values pandas (and so RecBole) reads as missing.
NA_VALUES = frozenset(STR_NA_VALUES) | {""}


def check_dataset_files(config: Any) -> None:
    """Fail early, naming the file and the problem, on a missing or malformed dataset.

    Checks the dataset folder (RecBole would otherwise try to download an unknown dataset and may
    prompt on stdin), then every atomic file RecBole will read (:func:`run_files`): present,
    non-empty, well-formed header and rows, ids present (:func:`check_atomic_file`). Feature
    files are checked by the dataset hook when it reads them.

    Args:
        config: The run's configuration.

    Raises:
        DataError: The first problem found.
    """
    folder = Path(config["data_path"])
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    for file in run_files(config):
        if file.source == "feature":
            continue
        if not file.path.is_file():
            what = "interaction" if file.source == "inter" else f"{file.source} feature"
            raise DataError(f"{what} file {file.path} does not exist")
        check_atomic_file(file.path, file.source, config)


def loaded_columns(config: Any, source: str, fields: list[str]) -> list[str]:
    """The header fields RecBole loads from a file of ``source`` (its ``load_col`` rule).

    Args:
        config: The run's configuration (``load_col``, ``unload_col``).
        source: ``inter``, ``user``, ``item`` or an additional suffix.
        fields: Field names of the file's header.

    Returns:
        The loaded fields, in header order.
    """
    load_col, unload_col = config["load_col"], config["unload_col"]
    if load_col is None:
        keep = set(fields)
    elif source not in load_col:
        keep = set()
    elif load_col[source] == "*":
        keep = set(fields)
    else:
        keep = set(load_col[source])
    if unload_col is not None and source in unload_col:
        keep -= set(unload_col[source])
    return [field for field in fields if field in keep]


def _header(path: Path, line: str, sep: str) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for token in line.split(sep):
        name, colon, ftype = token.partition(":")
        if not colon or ":" in ftype or not name or name != name.strip():
            raise DataError(
                f"{path}: header field {token!r} is not of the form name:type "
                f"(type one of {', '.join(FEATURE_TYPES)}; fields separated by {sep!r})"
            )
        if ftype not in FEATURE_TYPES:
            raise DataError(
                f"{path}: header field {token!r} has type {ftype!r}; expected one of "
                f"{', '.join(FEATURE_TYPES)}"
            )
        if any(name == seen for seen, _ in fields):
            raise DataError(f"{path}: header names field {name!r} twice")
        fields.append((name, ftype))
    return fields


def check_atomic_file(path: Path, source: str, config: Any) -> None:
    """Check one atomic file the way RecBole will read it.

    Args:
        path: The file.
        source: ``inter``, ``user``, ``item`` or an additional suffix.
        config: The run's configuration (separators, encoding, id fields, ``load_col``).

    Raises:
        DataError: The file is missing or empty, not valid text, has a malformed header, a line
            with the wrong number of fields, a missing or padded id, or a non-numeric value in a
            float column.
    """
    if not path.is_file():
        raise DataError(f"atomic file {path} does not exist")
    sep = config["field_separator"] or "\t"
    seq_sep = config["seq_separator"] or " "
    encoding = config["encoding"] or "utf-8"
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(
            f"{path} is empty; expected a header such as user_id:token{sep}item_id:token"
        )
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as err:
        raise DataError(f"{path} is not valid {encoding} text ({err})") from None
    if text.startswith("\ufeff"):
        raise DataError(f"{path} starts with a byte-order mark; save it as {encoding} without BOM")
    for char, what in (("\r", "Windows (CRLF) or old Mac line endings"), ("\x00", "NUL bytes")):
        if char in text:
            raise DataError(f"{path} contains {what}; RecBole reads only \\n-terminated text")
    head, newline, body = text.partition("\n")
    fields = _header(path, head, sep)
    names = [name for name, _ in fields]
    types = dict(fields)
    ids = {"inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]}
    ids["user"], ids["item"] = [config["USER_ID_FIELD"]], [config["ITEM_ID_FIELD"]]
    loaded = loaded_columns(config, source, names)
    for field in ids.get(source, []):
        if field is None:
            continue
        if field not in types:
            raise DataError(f"{path}: header {head!r} has no {field} column")
        if types[field] != "token":
            raise DataError(f"{path}: {field} must have type token, not {types[field]}")
        if field not in loaded:
            raise DataError(f"{path}: load_col/unload_col leave out the id column {field}")
    lines = body.split("\n")
    numbers = [number for number, line in enumerate(lines, start=2) if line]
    if not newline or not numbers:
        raise DataError(f"{path} has a header but no data rows")
    counts = [line.count(sep) for line in lines if line]
    wrong = next((i for i, count in enumerate(counts) if count != len(names) - 1), None)
    if wrong is not None:
        line = lines[numbers[wrong] - 2]
        raise DataError(
            f"{path}, line {numbers[wrong]}: {len(line.split(sep))} fields, but the header has "
            f"{len(names)} ({line[:80]!r})"
        )
    id_fields = [field for field in ids.get(source, []) if field is not None]
    tokens = pd.read_csv(
        io.StringIO(text),
        sep=sep,
        usecols=[f"{field}:token" for field in id_fields],
        dtype=str,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        engine="c" if len(sep) == 1 else "python",
    )
    for field in id_fields:
        column = tokens[f"{field}:token"]
        for bad, problem in (
            (column.isin(NA_VALUES), "is empty or reads as missing"),
            (column != column.str.strip(), "has surrounding blanks"),
        ):
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{path}, line {numbers[row]}: {field} {column.iloc[row]!r} {problem}"
                )
    exact = '"' in text or any(types[field] in ("float", "float_seq") for field in loaded)
    if not exact:
        return
    # Quotes or numbers: parse exactly as RecBole does (its slower python engine).
    frame = _read_like_recbole(path, text, sep, fields, loaded, len(numbers))
    for field in loaded:
        if types[field] != "float_seq":
            continue
        for number, value in zip(numbers, frame[field].fillna("")):
            try:
                [float(x) for x in value.split(seq_sep) if x]
            except ValueError:
                raise DataError(
                    f"{path}, line {number}: {field} {value[:40]!r} is not a list of numbers "
                    f"separated by {seq_sep!r}"
                ) from None


def _read_like_recbole(
    path: Path, text: str, sep: str, fields: list[tuple[str, str]], loaded: list[str], n_rows: int
) -> pd.DataFrame:
    """Parse ``text`` with the pandas call of RecBole's ``Dataset._load_feat``."""
    usecols = [f"{name}:{ftype}" for name, ftype in fields if name in loaded]
    dtype = {f"{n}:{t}": (np.float64 if t == "float" else str) for n, t in fields if n in loaded}
    try:
        frame = pd.read_csv(
            io.StringIO(text), delimiter=sep, usecols=usecols, dtype=dtype, engine="python"
        )
    except (ValueError, csv.Error, pd.errors.ParserError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        for name, ftype in fields:
            if ftype == "float" and name in loaded:
                _locate_bad_float(path, text, sep, [n for n, _ in fields], name)
        hint = '; quoted fields (starting with ") are not supported' if '"' in text else ""
        raise DataError(f"{path} cannot be parsed as an atomic file ({detail}){hint}") from None
    if len(frame) != n_rows:
        raise DataError(
            f"{path}: pandas reads {len(frame)} rows but the file has {n_rows} non-empty lines; "
            'quoted fields (starting with ") are not supported in atomic files'
        )
    frame.columns = [name for name, _ in fields if name in loaded]
    return frame


def _locate_bad_float(path: Path, text: str, sep: str, names: list[str], field: str) -> None:
    index = names.index(field)
    for number, line in enumerate(text.split("\n")[1:], start=2):
        if not line:
            continue
        value = line.split(sep)[index]
        if value.strip() and pd.isna(pd.to_numeric(pd.Series([value]), errors="coerce")[0]):
            raise DataError(f"{path}, line {number}: {field} {value!r} is not a number")


def apply_interaction_policies(dataset: Any, config: Any) -> None:
    """Apply ``duplicate_policy`` and ``cold_user_policy`` to a freshly loaded dataset.

    Interactions are ordered as RecBole concatenates the split files (train, valid, test); a
    duplicate is a (user, item) pair seen before, within a file or in an earlier split. A cold user
    has valid/test interactions but none in the first (training) split; MMRec drops them.

    Args:
        dataset: A RecBole dataset before ``build()`` (``inter_feat`` is a DataFrame).
        config: The run's configuration.

    Raises:
        DataError: ``error`` policies and an offending row, or a split left empty.
    """
    frame = dataset.inter_feat
    uid, iid = dataset.uid_field, dataset.iid_field
    if frame is None or uid is None or iid is None or not isinstance(frame, pd.DataFrame):
        return
    parts = config["benchmark_filename"]
    sizes = list(dataset.file_size_list) if parts else [len(frame)]
    names = (
        [f"{config['dataset']}.{p}.inter" for p in parts]
        if parts
        else [f"{config['dataset']}.inter"]
    )
    split = np.repeat(np.arange(len(sizes)), sizes)
    users = frame[uid].to_numpy()
    items = frame[iid].to_numpy()
    logger = logging.getLogger()
    drop = np.zeros(len(frame), dtype=bool)
    folder = config["data_path"]

    duplicated = pd.DataFrame({"u": users, "i": items}).duplicated(keep="first").to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero((users == users[row]) & (items == items[row]))[0])
        message = (
            f"{folder}: {int(duplicated.sum())} duplicate (user, item) interactions in "
            f"{', '.join(sorted({names[s] for s in split[duplicated]}))} (first: user "
            f"{_token(dataset, uid, users[row])!r}, item {_token(dataset, iid, items[row])!r} in "
            f"{names[split[row]]}, already in {names[split[first]]})"
        )
        if config["duplicate_policy"] == "error":
            raise DataError(message + "; set duplicate_policy: drop to keep the first occurrence")
        logger.warning(message + "; dropped, the first occurrence is kept")
        drop |= duplicated

    if parts and len(sizes) > 1 and config["cold_user_policy"] != "keep":
        train_users = np.unique(users[split == 0])
        cold = (split > 0) & ~np.isin(users, train_users)
        if cold.any():
            n_users = len(np.unique(users[cold]))
            where = ", ".join(sorted({names[s] for s in split[cold]}))
            message = (
                f"{folder}: {n_users} users of {where} have no "
                f"interaction in {names[0]} (first: user {_token(dataset, uid, users[cold][0])!r})"
            )
            if config["cold_user_policy"] == "error":
                raise DataError(
                    message + "; MMRec drops them (cold_user_policy: drop), or evaluate them "
                    "anyway with cold_user_policy: keep"
                )
            logger.warning(message + f"; their {int(cold.sum())} interactions are dropped")
            drop |= cold

    if drop.any():
        dataset.inter_feat = frame.loc[~drop].reset_index(drop=True)
        if parts:
            dataset.file_size_list = [int(((split == s) & ~drop).sum()) for s in range(len(sizes))]
    if parts:
        for name, size in zip(names, dataset.file_size_list):
            if size == 0:
                raise DataError(f"{folder}: {name} has no interactions left after the checks above")


def _token(dataset: Any, field: str, internal_id: Any) -> str:
    return str(dataset.field2id_token[field][int(internal_id)])
