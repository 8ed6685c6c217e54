"""Filters and split rules on a frame of raw interactions (used by ``recbole_fitmm.prepare``).

The frame has string columns ``user`` and ``item`` (raw ids), an int column ``row`` (0-based data
row of the source file, for messages and file order) and optionally float columns ``rating`` and
``time``.

Split rules: ``mmrec`` is MMRec's per-user rule over a seeded shuffle of each user's rows: n < 10
rows -> n - 2 train, 1 valid, 1 test; else vt = int(0.2 n) -> n - vt train, vt // 2 valid,
vt - vt // 2 test (users with fewer than 3 rows keep them all in train). ``user-time`` uses the
same counts with each user's rows in time order (latest to test; ties in file order).
``global-time`` cuts all rows at two times T1 < T2 (train < T1 <= valid < T2 <= test), given, or
the times at two fractions of all rows in time order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.errors import DataError

SPLIT_RULES = ("mmrec", "user-time", "global-time")
DUPLICATES = ("first", "last", "error")


def resolve_duplicates(
    frame: pd.DataFrame, policy: str, path: Path, columns: tuple[str, str]
) -> pd.DataFrame:
    """Keep one row per (user, item) pair.

    Args:
        frame: Interactions (module docstring; ``time`` needed by ``last``).
        policy: ``first`` (file order), ``last`` (largest time; ties: later in the file) or
            ``error``.
        path: The raw file, for messages.
        columns: The user and item column names in the file, for messages.

    Returns:
        The kept rows, in file order.

    Raises:
        DataError: ``policy`` is ``error`` and a pair repeats (names both data rows).
    """
    pair = ["user", "item"]
    if policy == "last":
        ordered = frame.sort_values(["time", "row"], kind="stable")
        return ordered.drop_duplicates(pair, keep="last").sort_values("row")
    repeated = frame.duplicated(pair, keep="first").to_numpy()
    if policy == "error" and repeated.any():
        second = frame.iloc[int(np.flatnonzero(repeated)[0])]
        same = (frame["user"] == second["user"]) & (frame["item"] == second["item"])
        first = int(frame.loc[same, "row"].iloc[0])
        raise DataError(
            f"{path}: columns {columns[0]}, {columns[1]}: data rows {first + 1} and "
            f"{second['row'] + 1} repeat the pair ({second['user']!r}, {second['item']!r}); "
            "pass --duplicates first or last to keep one"
        )
    return frame[~repeated]


def k_core(
    frame: pd.DataFrame, user_core: int, item_core: int
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Drop users with fewer than ``user_core`` rows and items with fewer than ``item_core``,
    both counted on the same frame, until nothing changes.

    Args:
        frame: Rows with ``user`` and ``item`` columns.
        user_core: Minimum rows per user.
        item_core: Minimum rows per item.

    Returns:
        The (user_core, item_core)-core (unique, whatever the order of removals) and the frame
        after each round that removed rows.
    """
    rounds: list[pd.DataFrame] = []
    while len(frame):
        users = frame.groupby("user")["item"].transform("size").to_numpy()
        items = frame.groupby("item")["user"].transform("size").to_numpy()
        keep = (users >= user_core) & (items >= item_core)
        if keep.all():
            break
        frame = frame[keep]
        rounds.append(frame)
    return frame, rounds


def mmrec_counts(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MMRec's per-user train and valid counts (the rest is test).

    Args:
        n: Rows per user, int array [U].

    Returns:
        Train counts [U] and valid counts [U]: n < 3 -> (n, 0); n < 10 -> (n - 2, 1); else
        vt = int(0.2 n) -> (n - vt, vt // 2).
    """
    vt = np.where(n < 10, 2, (0.2 * n).astype(np.int64))
    valid = np.where(n < 10, 1, vt // 2)
    small = n < 3
    return np.where(small, n, n - vt), np.where(small, 0, valid)


def split_labels(
    frame: pd.DataFrame,
    rule: str,
    seed: int = 999,
    cut_times: tuple[float, float] | None = None,
    cut_fractions: tuple[float, float] | None = None,
) -> np.ndarray:
    """x_label (0 train, 1 valid, 2 test) of every row (module docstring).

    Args:
        frame: Interactions (``time`` needed by the time rules).
        rule: ``mmrec``, ``user-time`` or ``global-time``.
        seed: Seed of the ``mmrec`` shuffle.
        cut_times: ``global-time`` cut times (T1, T2).
        cut_fractions: ``global-time`` cut fractions (F1, F2) (default 0.8, 0.9 when neither
            cut is given).

    Returns:
        int64 array [rows], aligned with ``frame``.
    """
    n_rows = len(frame)
    if rule == "global-time":
        time = frame["time"].to_numpy()
        if cut_times is not None:
            t1, t2 = cut_times
        else:
            f1, f2 = cut_fractions or (0.8, 0.9)
            ordered = np.sort(time)
            t1, t2 = (ordered[min(int(f * n_rows), n_rows - 1)] for f in (f1, f2))
        return np.where(time < t1, 0, np.where(time < t2, 1, 2)).astype(np.int64)
    user = pd.factorize(frame["user"])[0]
    if rule == "mmrec":
        key = np.random.default_rng(seed).permutation(n_rows)
    else:
        key = frame["time"].to_numpy()
    order = np.lexsort((frame["row"].to_numpy(), key, user))
    sizes = np.bincount(user)
    start = np.cumsum(sizes) - sizes
    sorted_user = user[order]
    rank = np.arange(n_rows) - start[sorted_user]
    train, valid = (c[sorted_user] for c in mmrec_counts(sizes))
    labels = np.empty(n_rows, dtype=np.int64)
    labels[order] = np.where(rank < train, 0, np.where(rank < train + valid, 1, 2))
    return labels
