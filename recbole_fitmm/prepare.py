"""Turn a raw interaction file into a benchmark dataset: filter, re-index, split, write.

Steps, each reported with its user/item/interaction counts: read a CSV, TSV or JSON-lines file
(columns named by ``--user``, ``--item`` and optionally ``--rating``, ``--time``; a file without a
header row, such as MovieLens' ``u.data``, names all its columns with ``--names``); drop the items
of ``--exclude-items``; keep rows with ``rating >= --min-rating``; resolve repeated (user, item)
pairs (``--duplicates first`` in file order, ``last`` by time, or ``error``); iterate
``--user-core``/``--item-core`` filtering until stable; label each row train/valid/test; drop
valid/test rows of users without training rows; map users and items to contiguous integer ids
0.. (numeric order when all raw ids are integers, else string order) and write the maps beside
the split files (``u_id_mapping.csv``, ``i_id_mapping.csv``: tab-separated, raw id -> new id, as
MMRec's datasets ship them). The split files and the yaml are written by the converter's writer
(:func:`recbole_fitmm.data.benchmark.write_benchmark`), so they are exactly the converter's.

Splits: ``mmrec`` (default) is MMRec's per-user rule over a seeded shuffle of each user's rows:
n < 10 rows -> n - 2 train, 1 valid, 1 test; else vt = int(0.2 n) -> n - vt train, vt // 2
valid, vt - vt // 2 test (users with fewer than 3 rows keep them all in train). ``user-time``
uses the same counts with each user's rows in time order (latest to test; ties in file order).
``global-time`` cuts all rows at two times: ``--cut-times T1 T2`` (train < T1 <= valid < T2 <=
test) or ``--cut-fractions F1 F2`` (T1, T2 = the times at those fractions of all rows in time
order; default 0.8 0.9). Usage::

    python -m recbole_fitmm.prepare ratings.csv --user user_id --item item_id --rating rating \\
        --time timestamp --min-rating 4 --user-core 5 --item-core 5 --name mydata
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.cli import run_action
from recbole_fitmm.config import OUTPUT_DATA, OUTPUT_PROPERTIES
from recbole_fitmm.data.benchmark import NAME, ConversionStats, Target, write_benchmark
from recbole_fitmm.data.interactions import (
    DUPLICATES,
    SPLIT_RULES,
    k_core,
    resolve_duplicates,
    split_labels,
)
from recbole_fitmm.data.tables import id_column, numeric_column, read_table, sort_ids
from recbole_fitmm.errors import ConfigError, DataError


@dataclass(frozen=True)
class Columns:
    """Column names in the raw file.

    Attributes:
        user: User id column.
        item: Item id column.
        rating: Rating column (needed by ``min_rating``), or ``None``.
        time: Timestamp column, numbers (needed by the time splits and ``duplicates="last"``).
        names: Every column's name, in order, for a CSV/TSV file without a header row (such as
            MovieLens' ``u.data``: ``("user", "item", "rating", "time")``); ``None``: the file's
            first line is its header.
    """

    user: str
    item: str
    rating: str | None = None
    time: str | None = None
    names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PrepareOptions:
    """Filtering and splitting options (module docstring).

    Attributes:
        min_rating: Keep rows with ``rating >= min_rating``; ``None`` keeps all.
        duplicates: ``first``, ``last`` (by time) or ``error``.
        user_core: Minimum rows per user (iterated with ``item_core``); 0 or 1: no filter.
        item_core: Minimum rows per item.
        split: ``mmrec``, ``user-time`` or ``global-time``.
        seed: Seed of the ``mmrec`` shuffle.
        cut_times: ``global-time`` cut times (T1, T2), T1 < T2.
        cut_fractions: ``global-time`` cut fractions (F1, F2), 0 < F1 < F2 < 1.
        exclude_items: Tables whose item column (named like ``Columns.item``) lists raw ids to
            drop (e.g. the encoder's ``<name>.<m>.dropped.tsv``).
        modalities: Modalities the yaml lists (their ``.npy`` files come from the encoder).
    """

    min_rating: float | None = None
    duplicates: str = "first"
    user_core: int = 0
    item_core: int = 0
    split: str = "mmrec"
    seed: int = 999
    cut_times: tuple[float, float] | None = None
    cut_fractions: tuple[float, float] | None = None
    exclude_items: tuple[Path, ...] = ()
    modalities: list[str] = field(default_factory=list)

    def check(self, columns: Columns) -> None:
        """Refuse inconsistent options.

        Args:
            columns: The raw file's columns.

        Raises:
            ConfigError: The first problem found.
        """
        if self.min_rating is not None and columns.rating is None:
            raise ConfigError("--min-rating needs --rating")
        if (self.split != "mmrec" or self.duplicates == "last") and columns.time is None:
            raise ConfigError(f"--split {self.split} / --duplicates {self.duplicates} need --time")
        if self.duplicates not in DUPLICATES or self.split not in SPLIT_RULES:
            raise ConfigError(f"--duplicates one of {DUPLICATES}, --split one of {SPLIT_RULES}")
        if min(self.user_core, self.item_core) < 0:
            raise ConfigError("--user-core and --item-core must be >= 0")
        times, fractions = self.cut_times, self.cut_fractions
        if (times or fractions) is not None and self.split != "global-time":
            raise ConfigError("--cut-times/--cut-fractions need --split global-time")
        if times is not None and fractions is not None:
            raise ConfigError("give --cut-times or --cut-fractions, not both")
        if times is not None and not times[0] < times[1]:
            raise ConfigError(f"--cut-times T1 T2 needs T1 < T2, got {times}")
        if fractions is not None and not 0 < fractions[0] < fractions[1] < 1:
            raise ConfigError(f"--cut-fractions F1 F2 needs 0 < F1 < F2 < 1, got {fractions}")
        bad = [m for m in self.modalities if not NAME.fullmatch(m)]
        if bad or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"--modalities {self.modalities}: distinct letters/digits/_/- names")


@dataclass
class PrepareReport:
    """What :func:`prepare` did.

    Attributes:
        steps: (step, users, items, interactions) after each step, in order.
        stats: What the writer wrote (per-split counts, folder, yaml).
    """

    steps: list[tuple[str, int, int, int]]
    stats: ConversionStats

    def summary(self) -> str:
        """One line per step, then the writer's statistics."""
        lines = [f"{s}: users {u:,}, items {i:,}, interactions {n:,}" for s, u, i, n in self.steps]
        return "\n".join(lines + [self.stats.summary()])


def load_interactions(path: Path, columns: Columns, fmt: str | None = None) -> pd.DataFrame:
    """Read the raw file into ``user``, ``item`` (str), ``rating``, ``time`` (float), ``row``.

    Args:
        path: CSV, TSV or JSON-lines file (a header row, or ``columns.names``).
        columns: Column names.
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``None`` (from the suffix).

    Returns:
        Frame in file order; ``row`` is the 0-based data row; ``rating``/``time`` only when named.

    Raises:
        DataError: Missing column, empty id, non-numeric rating or timestamp (names the file,
            the column and the data row).
    """
    named = [c for c in (columns.user, columns.item, columns.rating, columns.time) if c]
    raw = read_table(path, named, fmt, list(columns.names) if columns.names else None)
    frame = pd.DataFrame(
        {
            "user": id_column(raw, columns.user, path),
            "item": id_column(raw, columns.item, path),
            "row": np.arange(len(raw)),
        }
    )
    if columns.rating:
        frame["rating"] = numeric_column(raw, columns.rating, path, "rating")
    if columns.time:
        frame["time"] = numeric_column(raw, columns.time, path, "timestamp")
    return frame.reset_index(drop=True)


def _counts(frame: pd.DataFrame) -> tuple[int, int, int]:
    return int(frame["user"].nunique()), int(frame["item"].nunique()), len(frame)


def _id_map(raw_ids: np.ndarray, column: str, new_column: str) -> str:
    lines = [f"{column}\t{new_column}"] + [f"{raw}\t{new}" for new, raw in enumerate(raw_ids)]
    return "\n".join(lines) + "\n"


def prepare(
    path: str | Path,
    columns: Columns,
    options: PrepareOptions | None = None,
    name: str | None = None,
    out: str | Path = OUTPUT_DATA,
    properties_dir: str | Path = OUTPUT_PROPERTIES,
    force: bool = False,
    fmt: str | None = None,
) -> PrepareReport:
    """Filter, re-index, split and write ``path`` (see the module docstring).

    Args:
        path: The raw interaction file.
        columns: Its column names.
        options: Filters and split rule (default: :class:`PrepareOptions` defaults).
        name: Dataset name (default: the file's stem).
        out: Folder that receives ``<name>/`` (default: the repository's ``dataset_atomic/``).
        properties_dir: Folder that receives ``<name>.yaml`` (default: ``properties/dataset/``).
        force: Replace existing output.
        fmt: ``csv``, ``tsv``, ``jsonl`` or ``None`` (from the suffix).

    Returns:
        Counts after every step and the writer's statistics.

    Raises:
        DataError: Bad input (names the file and the column) or nothing left after a step.
        ConfigError: Inconsistent options, bad name, or existing output without ``force``.
    """
    path, options = Path(path), options or PrepareOptions()
    options.check(columns)
    shown = {key.replace("_", "-"): value for key, value in vars(options).items()}
    del shown["modalities"]
    shown["exclude-items"] = [str(p) for p in options.exclude_items]
    command = "recbole_fitmm.prepare"
    target = Target(name or path.stem, Path(out), Path(properties_dir), command, path, shown)
    target.check(force)

    frame = load_interactions(path, columns, fmt)
    steps = [("read", *_counts(frame))]
    if frame.empty:
        raise DataError(f"{path}: no interactions (a header without data rows)")

    def step(label: str, kept: pd.DataFrame) -> pd.DataFrame:
        steps.append((label, *_counts(kept)))
        if kept.empty:
            raise DataError(f"{path}: no interactions remain {label}")
        return kept

    if options.exclude_items:
        listed = {
            i
            for f in options.exclude_items
            for i in id_column(read_table(f, [columns.item]), columns.item, f)
        }
        frame = step("after excluding listed items", frame[~frame["item"].isin(listed)])
    if options.min_rating is not None:
        kept = frame[frame["rating"] >= options.min_rating]
        frame = step(f"after {columns.rating} >= {options.min_rating:g}", kept)
    frame = step(
        "after duplicates",
        resolve_duplicates(frame, options.duplicates, path, (columns.user, columns.item)),
    )
    if max(options.user_core, options.item_core) > 1:
        frame, rounds = k_core(frame, options.user_core, options.item_core)
        for number, kept in enumerate(rounds, start=1):
            step(f"after k-core round {number}", kept)
        if not rounds:
            step("after k-core (nothing removed)", frame)
    labels = split_labels(
        frame, options.split, options.seed, options.cut_times, options.cut_fractions
    )
    has_train = frame["user"].isin(frame.loc[labels == 0, "user"]).to_numpy()
    if not has_train.all():
        frame, labels = frame[has_train], labels[has_train]
        step("after dropping users without training rows", frame)

    users, items = sort_ids(frame["user"].to_numpy()), sort_ids(frame["item"].to_numpy())
    mmrec = pd.DataFrame(
        {
            "userID": pd.Index(users).get_indexer(frame["user"]),
            "itemID": pd.Index(items).get_indexer(frame["item"]),
        }
    )
    for column in ("rating", "time"):
        if column in frame:
            mmrec["timestamp" if column == "time" else column] = frame[column].to_numpy()
    mmrec["x_label"] = labels
    maps = {
        "u_id_mapping.csv": _id_map(users, columns.user, "userID"),
        "i_id_mapping.csv": _id_map(items, columns.item, "itemID"),
    }
    stats = write_benchmark(
        mmrec, path, target, {}, modalities=options.modalities, extra_files=maps
    )
    steps.append(("final", stats.users, stats.items, sum(stats.interactions.values())))
    return PrepareReport(steps=steps, stats=stats)


def main(argv: list[str] | None = None) -> int:
    """The command line of ``prepare`` (module docstring); the exit status: 0, or 2 after a
    one-line error."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.prepare",
        description="Filter, re-index and split a raw interaction file into a benchmark dataset.",
    )
    add = parser.add_argument
    add("file", type=Path, help="interaction file: .csv, .tsv or .jsonl (a header row, or --names)")
    add("--names", help="comma-separated names of every column of a CSV/TSV without a header "
        "(e.g. MovieLens' u.data: user,item,rating,time)")  # fmt: skip
    add("--user", required=True, help="user id column")
    add("--item", required=True, help="item id column")
    add("--rating", help="rating column (numbers)")
    add("--time", help="timestamp column (numbers, e.g. Unix seconds)")
    add("--format", choices=("csv", "tsv", "jsonl"), help="default: from the file's suffix")
    add("--exclude-items", type=Path, action="append", default=[], metavar="FILE",
        help="table whose --item column lists items to drop (repeatable)")  # fmt: skip
    add("--min-rating", type=float, help="keep rows with rating >= this value")
    add("--duplicates", choices=DUPLICATES, default="first", help="repeated (user, item) pairs")
    add("--user-core", type=int, default=0, help="minimum interactions per user (iterated)")
    add("--item-core", type=int, default=0, help="minimum interactions per item (iterated)")
    add("--split", choices=SPLIT_RULES, default="mmrec", help="default: %(default)s")
    add("--seed", type=int, default=999, help="seed of the mmrec shuffle (default: %(default)s)")
    add("--cut-times", type=float, nargs=2, metavar=("T1", "T2"), help="global-time cuts")
    add("--cut-fractions", type=float, nargs=2, metavar=("F1", "F2"), help="global-time cuts")
    add("--modalities", nargs="+", default=[], metavar="M", help="modalities the yaml lists")
    add("--name", help="dataset name (default: the file's stem)")
    add("--out", type=Path, default=OUTPUT_DATA, help="receives <name>/")
    add("--properties", type=Path, default=OUTPUT_PROPERTIES, help="receives <name>.yaml")
    add("--force", action="store_true", help="overwrite existing output")
    args = parser.parse_args(argv)

    def run() -> str:
        chosen = {f.name: getattr(args, f.name) for f in fields(PrepareOptions)}
        for cut in ("cut_times", "cut_fractions"):
            chosen[cut] = tuple(chosen[cut]) if chosen[cut] else None
        chosen["exclude_items"] = tuple(chosen["exclude_items"])
        options = PrepareOptions(**chosen)
        names = tuple(args.names.split(",")) if args.names else None
        columns = Columns(args.user, args.item, args.rating, args.time, names)
        report = prepare(
            args.file,
            columns,
            options,
            args.name,
            args.out,
            args.properties,
            args.force,
            args.format,
        )
        return report.summary()

    return run_action(run)


if __name__ == "__main__":
    raise SystemExit(main())
