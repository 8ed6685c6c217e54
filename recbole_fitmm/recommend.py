"""Top-k recommendations of a trained model, written to a CSV or Parquet file.

    python -m recbole_fitmm.recommend saved/FITMM-mmsynth-....pth                 # every user
    python -m recbole_fitmm.recommend CKPT --users 0,1,2 --k 10 --out top10.csv
    python -m recbole_fitmm.recommend CKPT --users-file users.txt --format parquet --mask train

One row per (user, rank): ``user`` and ``item`` as raw tokens, ``rank`` from 1, ``score`` the
model's score (float32). ``--original-ids``: for a dataset made by ``python -m
recbole_fitmm.prepare``, users are given and users and items written as the ids of the original
file, through the id maps beside the split files. Masked items never appear: with
``--mask all`` (default) every item the user interacted with in train, valid or test, with
``--mask train`` only the training items (the paper's test protocol). Users are scored in
batches of at most ``--budget`` scores and the rows streamed to a temporary file in the target
folder that is renamed when complete, so memory stays bounded and an interrupted run leaves no
partial file. Works for every plugin model and RecBole general model
(:func:`recbole_fitmm.inference.top_k`).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recbole_fitmm.checkpoint import resolve_checkpoint
from recbole_fitmm.errors import ConfigError, DataError, FITMMError
from recbole_fitmm.inference import SCORE_BUDGET, load_model, top_k
from recbole_fitmm.io import atomic_write

FORMATS = ("csv", "parquet")
MASKS = ("train", "all")
COLUMNS = ("user", "rank", "item", "score")
SCHEMA = pa.schema(
    [("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()), ("score", pa.float32())]
)


def user_ids(dataset: Any, tokens: Sequence[str] | None = None) -> np.ndarray:
    """Internal ids of raw user tokens, or of every real user.

    Args:
        dataset: A dataset with the model's token mapping.
        tokens: Raw user tokens (duplicates dropped, order kept); ``None`` for every user.

    Returns:
        Internal user ids, int64 [n] (every user: ``1 .. user_num - 1``).

    Raises:
        DataError: A token is unknown to the dataset, or the list is empty.
    """
    if tokens is None:
        return np.arange(1, dataset.user_num, dtype=np.int64)
    tokens = list(dict.fromkeys(str(t) for t in tokens))
    if not tokens:
        raise DataError("no users given")
    token2id = dataset.field2token_id[dataset.uid_field]
    unknown = [t for t in tokens if t not in token2id or t == "[PAD]"]
    if unknown:
        raise DataError(
            f"{len(unknown)} unknown user token(s) for dataset {dataset.dataset_name!r}: "
            f"{unknown[:5]}"
        )
    return np.asarray([token2id[t] for t in tokens], dtype=np.int64)


def read_id_map(path: Path) -> dict[str, str]:
    """An id map of ``prepare`` (tab-separated, header, columns raw id and new id): new -> raw.

    Args:
        path: ``u_id_mapping.csv`` or ``i_id_mapping.csv`` beside the split files.

    Returns:
        New id token -> original id.

    Raises:
        DataError: The file is missing or has not two columns.
    """
    if not path.is_file():
        raise DataError(f"{path} does not exist: --original-ids needs the id maps of prepare")
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    if any(len(row) != 2 for row in rows):
        raise DataError(f"{path}: expected two tab-separated columns (original id, new id)")
    return {new.strip(): raw.strip() for raw, new in rows}


def read_users_file(path: str | Path) -> list[str]:
    """Raw user tokens of a text file: one per line (or comma-separated), blank lines skipped.

    Raises:
        DataError: The file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read users file {path}: {err}") from err
    return [t.strip() for line in text.splitlines() for t in line.split(",") if t.strip()]


def _rows(
    model: Any,
    dataset: Any,
    uids: np.ndarray,
    k: int,
    budget: int,
    id_maps: list[dict[str, str]] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The output rows, one record batch per scored batch of users."""
    user_tokens = dataset.field2id_token[dataset.uid_field].astype(str)
    item_tokens = dataset.field2id_token[dataset.iid_field].astype(str)
    if id_maps is not None:  # tokens of the dataset -> ids of the original file
        user_tokens = np.asarray([id_maps[0].get(t, t) for t in user_tokens])
        item_tokens = np.asarray([id_maps[1].get(t, t) for t in item_tokens])
    for batch, items, scores in top_k(model, dataset, uids, k, budget):
        kept = items >= 0
        row, col = np.nonzero(kept)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(user_tokens[batch[row]].astype(str)),
                pa.array((col + 1).astype(np.int32)),
                pa.array(item_tokens[items[kept]].astype(str)),
                pa.array(scores[kept].astype(np.float32)),
            ],
            schema=SCHEMA,
        )


def _write_csv(batches: Iterator[pa.RecordBatch], handle: IO[bytes]) -> int:
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for batch in batches:
        users, ranks, items, scores = (batch.column(i).to_pylist() for i in range(4))
        writer.writerows(zip(users, ranks, items, (f"{s:.9g}" for s in scores)))
        n += batch.num_rows
    text.flush()
    text.detach()  # the handle stays open for atomic_write's fsync
    return n


def _write_parquet(batches: Iterator[pa.RecordBatch], handle: IO[bytes]) -> int:
    n = 0
    with pq.ParquetWriter(handle, SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)
            n += batch.num_rows
    return n


def write_top_k(
    model: Any,
    dataset: Any,
    uids: np.ndarray,
    path: str | Path,
    k: int = 20,
    fmt: str = "csv",
    budget: int = SCORE_BUDGET,
    id_maps: list[dict[str, str]] | None = None,
) -> int:
    """Write the top-k items of users to ``path`` (columns ``user, rank, item, score``).

    Args:
        model: A trained model in evaluation mode (:func:`~recbole_fitmm.inference.load_model`).
        dataset: Dataset whose interactions are masked and whose tokens are written:
            ``train_data.dataset`` (training items) or the full dataset (every interaction).
        uids: Internal user ids, int64 [n] (:func:`user_ids`).
        path: Output file; written atomically (temporary file in its folder, then renamed).
        k: Items per user (>= 1); fewer rows for a user with fewer unmasked items.
        fmt: ``csv`` or ``parquet``.
        budget: Largest number of scores held at once.
        id_maps: ``[users, items]`` token -> original id (:func:`read_id_map`), or ``None``.

    Returns:
        Number of rows written.

    Raises:
        ConfigError: ``k`` or ``budget`` is below 1, or ``fmt`` is unknown.
    """
    if k < 1 or budget < 1:
        raise ConfigError(f"k and budget must be at least 1, got k={k}, budget={budget}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    model.eval()
    writer = _write_csv if fmt == "csv" else _write_parquet
    written: list[int] = []
    rows = _rows(model, dataset, uids, k, budget, id_maps)
    atomic_write(path, lambda handle: written.append(writer(rows, handle)))
    return written[0]


def default_output(checkpoint: str | Path, k: int, fmt: str) -> Path:
    """The default output file: ``<checkpoint stem>.top<k>.<fmt>`` beside the checkpoint.

    Args:
        checkpoint: The checkpoint file (``X.pth`` gives ``X.top<k>.<fmt>``).
        k: Items per user.
        fmt: ``csv`` or ``parquet``.

    Returns:
        The output path.
    """
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.name.removesuffix('.pth')}.top{k}.{fmt}")


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring); returns 0, or 2 after a one-line ``error: ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.recommend", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="a checkpoint, or a checkpoint folder (its newest best)")
    users = parser.add_mutually_exclusive_group()
    users.add_argument("--users", default=None, help="comma-separated raw user tokens")
    users.add_argument("--users-file", default=None, help="raw user tokens, one per line")
    parser.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument(
        "--mask",
        choices=MASKS,
        default="all",
        help="all (default): every item the user has seen; train: training items only",
    )
    parser.add_argument("--out", default=None, help="default: <checkpoint>.top<k>.<format>")
    parser.add_argument("--budget", type=int, default=SCORE_BUDGET, help="scores held at once")
    parser.add_argument(
        "--original-ids", action="store_true", help="ids of prepare's input (its id maps)"
    )
    args = parser.parse_args(argv)
    try:
        if args.k < 1 or args.budget < 1:
            raise ConfigError(f"--k and --budget must be at least 1, got {args.k}, {args.budget}")
        tokens = None
        if args.users is not None:
            tokens = [t.strip() for t in args.users.split(",") if t.strip()]
        elif args.users_file is not None:
            tokens = read_users_file(args.users_file)
        checkpoint = resolve_checkpoint(args.checkpoint)  # a file, or a folder's newest best
        config, model, dataset, train_data, _, _ = load_model(checkpoint, {"state": "ERROR"})
        masked = train_data.dataset if args.mask == "train" else dataset
        maps = None
        if args.original_ids:
            folder = Path(config["data_path"])
            maps = [read_id_map(folder / f"{side}_id_mapping.csv") for side in ("u", "i")]
            to_new = {raw: new for new, raw in maps[0].items()}
            tokens = None if tokens is None else [to_new.get(t, f"{t} (unknown)") for t in tokens]
        uids = user_ids(masked, tokens)
        out = Path(args.out) if args.out else default_output(checkpoint, args.k, args.format)
        n = write_top_k(model, masked, uids, out, args.k, args.format, args.budget, maps)
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} recommendations of {len(uids)} users written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
