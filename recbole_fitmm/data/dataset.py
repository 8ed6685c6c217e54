"""The multimodal dataset hook: RecBole's ``Dataset`` plus one feature matrix per modality.

Files and the row rule
----------------------
For a dataset ``<name>`` with ``modalities: [image, text]`` the hook reads
``<data_path>/<name>/<name>.image.npy`` and ``<name>.text.npy``: 2-D floating-point arrays without
pickles. **Row r of every feature file belongs to the item whose token is the integer r** (the
MMRec convention; the converter writes tokens this way). The hook reorders rows into RecBole's
internal item ids through ``field2id_token``, so ``modal_feats[m][iid]`` is the feature vector of
internal item ``iid``, and row 0 (``[PAD]``) is zero.

``user_modality: <u>`` optionally loads ``<name>.<u>.npy`` the same way for users (row r = user
token r), used by FITMM's optional user kNN graph.

``feature_policy`` decides what happens when the tokens and the rows do not match one to one:
``strict`` (default) raises :class:`~recbole_fitmm.errors.DataError`; ``lenient`` gives items
without a row a zero vector and ignores rows without an item, with a warning for each. Under both
policies, feature files that disagree on the number of rows are an error (row r would not describe
the same item everywhere), and so are NaN or infinite values, non-float, pickled or non-2-D arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_fitmm.data.graph_cache import GraphCache
from recbole_fitmm.data.options import check_data_options
from recbole_fitmm.errors import DataError


def read_feature_file(path: Path) -> np.ndarray:
    """Load one feature matrix and check its form.

    Args:
        path: A ``.npy`` file.

    Returns:
        The matrix as float32, shape [rows, dim].

    Raises:
        DataError: The file is missing, unreadable, pickled, not 2-D, not floating point, empty,
            or holds NaN or infinite values.
    """
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"feature file {path} is empty (0 bytes)")
    try:
        raw = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as err:
        raise DataError(f"feature file {path} is not a plain numeric .npy array ({err})") from None
    except (OSError, EOFError) as err:
        raise DataError(f"feature file {path} cannot be read as .npy ({err})") from None
    if not isinstance(raw, np.ndarray):
        if hasattr(raw, "close"):
            raw.close()
        raise DataError(f"feature file {path} is an .npz archive; save one matrix with np.save")
    if raw.ndim != 2:
        raise DataError(
            f"feature file {path} has shape {raw.shape}; expected a 2-D matrix [items, dim]"
        )
    if not np.issubdtype(raw.dtype, np.floating):
        raise DataError(
            f"feature file {path} has dtype {raw.dtype}; expected float16, float32 or float64"
        )
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        raise DataError(f"feature file {path} is empty (shape {raw.shape})")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, reported below
        matrix = np.asarray(raw, dtype=np.float32)
    finite = np.isfinite(matrix)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"feature file {path} holds NaN or infinite values in {len(bad_rows)} rows "
            f"(first: row {bad_rows[0]})"
        )
    return matrix


def token_rows(tokens: np.ndarray, field: str, source: str) -> np.ndarray:
    """Row numbers named by raw tokens (the token of row r is ``str(r)``).

    Args:
        tokens: Raw tokens of internal ids 1..n (``field2id_token[field][1:]``).
        field: Field name, for messages.
        source: Where the tokens come from, for messages.

    Returns:
        Int64 array [n] of row numbers.

    Raises:
        DataError: A token is not a non-negative integer (digits only), or two tokens name the
            same row (``"7"`` and ``"007"``).
    """
    bad = next((t for t in tokens if not str(t).isdigit() or not str(t).isascii()), None)
    if bad is not None:
        raise DataError(
            f"{source}: {field} token {bad!r} is not a non-negative integer; feature rows are "
            "matched to tokens by number (row r = token r). Convert the data with "
            "`python -m recbole_fitmm.data.convert`."
        )
    try:
        rows = np.asarray([int(t) for t in tokens], dtype=np.int64)
    except OverflowError:
        big = max(tokens, key=lambda t: len(str(t)))
        raise DataError(
            f"{source}: {field} token {big!r} is too large to be a row number"
        ) from None
    unique, counts = np.unique(rows, return_counts=True)
    if len(unique) < len(rows):
        row = unique[counts > 1][0]
        same = [str(tokens[i]) for i in np.flatnonzero(rows == row)[:2]]
        raise DataError(
            f"{source}: {field} tokens {same[0]!r} and {same[1]!r} both name feature row {row}; "
            "write tokens without leading zeros"
        )
    return rows


def align_rows(
    matrix: np.ndarray, rows: np.ndarray, path: Path, policy: str, what: str
) -> np.ndarray:
    """Reorder feature rows into internal-id order with a zero PAD row 0.

    Args:
        matrix: Feature matrix [n_rows, dim] read from ``path``.
        rows: Row number of every internal id 1..n, shape [n].
        path: The feature file, for messages.
        policy: ``strict`` or ``lenient`` (see the module docstring).
        what: ``item`` or ``user``, for messages.

    Returns:
        Float32 matrix [n + 1, dim]; row 0 is zero.
    """
    logger = logging.getLogger()
    missing = rows >= matrix.shape[0]
    covered = np.zeros(matrix.shape[0], dtype=bool)
    covered[rows[~missing]] = True
    unknown = np.flatnonzero(~covered)
    problems = []
    if missing.any():
        problems.append(
            (
                f"has {matrix.shape[0]} rows but {int(missing.sum())} {what}s have no row "
                f"(first: token {rows[missing][0]})",
                "zero-fill them",
                "their features are zero",
            )
        )
    if len(unknown):
        problems.append(
            (
                f"has {len(unknown)} rows for unknown {what}s (first: row {unknown[0]}; "
                f"expected exactly one row per {what} token)",
                "ignore them",
                "they are ignored",
            )
        )
    for problem, remedy, effect in problems:
        message = f"feature file {path} {problem}"
        if policy == "strict":
            raise DataError(f"{message}; set feature_policy: lenient to {remedy}")
        logger.warning(f"{message}; {effect}")
    aligned = np.zeros((len(rows) + 1, matrix.shape[1]), dtype=np.float32)
    aligned[1:][~missing] = matrix[rows[~missing]]
    return aligned


class MultiModalDataset(Dataset):
    """RecBole dataset carrying one feature matrix per modality (see the module docstring).

    Attributes:
        modal_feats: Modality name -> float32 tensor [n_items, dim], internal-id order, row 0 zero;
            ordered as the ``modalities`` config.
        user_feat: Float32 tensor [n_users, dim] or ``None`` when ``user_modality`` is unset.
    """

    def __init__(self, config: Any) -> None:
        modalities = check_data_options(config, needs_features=True)
        super().__init__(config)
        policy = config["feature_policy"]
        folder = Path(self.dataset_path)
        item_tokens = self.field2id_token[self.iid_field][1:]
        item_rows = token_rows(item_tokens, self.iid_field, str(folder))
        matrices = {
            name: read_feature_file(folder / f"{self.dataset_name}.{name}.npy")
            for name in modalities
        }
        n_rows = {f"{self.dataset_name}.{name}.npy": m.shape[0] for name, m in matrices.items()}
        if len(set(n_rows.values())) > 1:
            raise DataError(
                f"feature files in {folder} disagree on the number of item rows: {n_rows}; "
                "row r of every file must describe the same item"
            )
        self.modal_feats: dict[str, Tensor] = {
            name: torch.from_numpy(
                align_rows(
                    matrix, item_rows, folder / f"{self.dataset_name}.{name}.npy", policy, "item"
                )
            )
            for name, matrix in matrices.items()
        }
        cache_dir = config["graph_cache_dir"] if "graph_cache_dir" in config else None
        #: Cache of frozen kNN graphs built from these features (``None``: disabled).
        self.graph_cache = GraphCache(cache_dir) if cache_dir else None
        self.user_feat: Tensor | None = None
        user_modality = config["user_modality"]
        if user_modality:
            path = folder / f"{self.dataset_name}.{user_modality}.npy"
            user_tokens = self.field2id_token[self.uid_field][1:]
            user_rows = token_rows(user_tokens, self.uid_field, str(folder))
            self.user_feat = torch.from_numpy(
                align_rows(read_feature_file(path), user_rows, path, policy, "user")
            )
