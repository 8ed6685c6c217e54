"""Write a benchmark dataset from an MMRec-format frame: split files, feature files and a yaml.

The one writer behind ``python -m recbole_fitmm.data.convert`` (MMRec folders) and
``python -m recbole_fitmm.prepare`` (raw interaction files). Input: a frame with integer columns
``userID``, ``itemID``, ``x_label`` (0/1/2 = train/valid/test; plus ``rating`` when a rating
threshold is applied here). Output: ``<out>/<name>/<name>.{train,valid,test}.inter`` (header
``user_id:token\\titem_id:token``; the integer ids are kept as tokens, so row r of a feature file
still belongs to token ``r``), ``<out>/<name>/<name>.<m>.npy`` per modality and
``<properties>/<name>.yaml`` (``benchmark_filename``, ``modalities`` and, when needed,
``data_path`` and ``feature_policy``).

Valid/test rows of users without training rows are dropped (MMRec's
``filter_out_cod_start_users``). The dataset folder is assembled in a temporary sibling folder and
renamed into place, so a failed run leaves no partial output (and an earlier output intact).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_fitmm.config import DATASET_ATOMIC
from recbole_fitmm.errors import ConfigError, DataError
from recbole_fitmm.io import atomic_write_npy, atomic_write_text

SPLITS = ("train", "valid", "test")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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


@dataclass(frozen=True)
class Target:
    """Where a benchmark dataset goes and how its yaml names its origin.

    Attributes:
        name: Dataset name (letters, digits, ``_``, ``-``).
        out: Folder that receives ``<name>/``.
        properties_dir: Folder that receives ``<name>.yaml``.
        command: The module that writes it, named in the yaml's first comment line.
        source: The input it was made from, named in the yaml's second comment line.
        options: Option name -> value, listed in the yaml's second comment line.
    """

    name: str
    out: Path
    properties_dir: Path
    command: str
    source: Path
    options: dict[str, object]

    @property
    def folder(self) -> Path:
        """The dataset folder ``<out>/<name>``."""
        return self.out / self.name

    @property
    def yaml_file(self) -> Path:
        """The dataset yaml ``<properties_dir>/<name>.yaml``."""
        return self.properties_dir / f"{self.name}.yaml"

    def check(self, force: bool) -> None:
        """Refuse a bad name, or existing output unless ``force``.

        Args:
            force: Existing output may be replaced.

        Raises:
            ConfigError: The name is not letters, digits, ``_`` or ``-``.
            DataError: The dataset folder or yaml exists and ``force`` is false.
        """
        if not NAME.fullmatch(self.name):
            raise ConfigError(f"dataset name {self.name!r} must be letters, digits, _ or -")
        for existing in (self.folder, self.yaml_file):
            if existing.exists() and not force:
                raise DataError(f"{existing} already exists; pass --force to overwrite it")


def split_rows(
    frame: pd.DataFrame, path: Path, swap_valid_test: bool = False, min_rating: float | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, int], int]:
    """Apply the rating filter, the valid/test swap and the cold-start filter; split by x_label.

    Args:
        frame: Integer columns ``userID``, ``itemID``, ``x_label`` (and ``rating`` when
            ``min_rating`` is given).
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


def _yaml_text(target: Target, modalities: list[str], written: set[str], lenient: bool) -> str:
    options = ", ".join(f"{key}: {value}" for key, value in target.options.items())
    lines = [
        f"# Written by `python -m {target.command}` from",
        f"# {target.source} ({options}).",
        "benchmark_filename: [train, valid, test]",
        f"modalities: [{', '.join(modalities)}]",
    ]
    if not modalities:
        lines.insert(-1, "# No <m>_feat.npy files: only ID-based models (BPR, LightGCN, ...) run.")
    pending = [m for m in modalities if m not in written]
    if pending:
        files = ", ".join(f"{target.name}.{m}.npy" for m in pending)
        lines.insert(-1, f"# {files}: write with `python -m recbole_fitmm.encode` (row r = item r)")
    if target.out.resolve() != DATASET_ATOMIC.resolve():
        lines.append(f"data_path: {json.dumps(str(target.out.resolve()))}")
    if lenient:
        lines += [
            "# Some feature rows belong to items in no split; the dataset hook ignores them.",
            "feature_policy: lenient",
        ]
    return "\n".join(lines) + "\n"


def write_benchmark(
    frame: pd.DataFrame,
    path: Path,
    target: Target,
    features: dict[str, np.ndarray],
    *,
    modalities: list[str] | None = None,
    swap_valid_test: bool = False,
    min_rating: float | None = None,
    extra_files: dict[str, str] | None = None,
) -> ConversionStats:
    """Split an MMRec-format frame and write the dataset folder and yaml (module docstring).

    Args:
        frame: Integer columns ``userID``, ``itemID``, ``x_label`` (and ``rating`` when
            ``min_rating`` is given); ids are the tokens written.
        path: The interaction file, named in messages.
        target: Output name, folders and the yaml's origin line; check it first.
        features: Modality -> float32 matrix [rows, dim] with row r = item r, rows > max itemID.
        modalities: Modalities the yaml lists (default: ``features``' keys, in order); one without
            a matrix here gets a comment saying how to write its file.
        swap_valid_test: Swap x_label 1 and 2.
        min_rating: Keep only rows with ``rating >= min_rating``.
        extra_files: File name -> text, written into the dataset folder too (e.g. id maps).

    Returns:
        Statistics of the written dataset.

    Raises:
        DataError: A split is empty after filtering.
    """
    parts, dropped, dropped_rating = split_rows(frame, path, swap_valid_test, min_rating)
    items = np.unique(np.concatenate([p["itemID"].to_numpy() for p in parts.values()]))
    users = np.unique(np.concatenate([p["userID"].to_numpy() for p in parts.values()]))
    unused = next(iter(features.values())).shape[0] - len(items) if features else 0
    chosen = list(features) if modalities is None else modalities
    name, out, folder = target.name, target.out, target.folder

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
        for file_name, text in (extra_files or {}).items():
            atomic_write_text(staging / file_name, text)
        if folder.exists():
            backup = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.old-"))
            os.replace(folder, backup / name)
        os.replace(staging, folder)
        published = True
        yaml_text = _yaml_text(target, chosen, set(features), unused > 0)
        atomic_write_text(target.yaml_file, yaml_text)
    except BaseException:
        if published:
            shutil.rmtree(folder, ignore_errors=True)
        if backup is not None and (backup / name).exists():
            os.replace(backup / name, folder)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    return ConversionStats(
        name=name,
        folder=folder,
        yaml_file=target.yaml_file,
        users=len(users),
        items=len(items),
        interactions={split: len(part) for split, part in parts.items()},
        dropped_cold_start=dropped,
        dropped_min_rating=dropped_rating,
        swapped_valid_test=swap_valid_test,
        features={m: (int(f.shape[0]), int(f.shape[1])) for m, f in features.items()},
        unused_feature_rows=unused,
    )
