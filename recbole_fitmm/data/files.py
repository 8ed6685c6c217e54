"""The files a run reads, listed once: for the checks before RecBole reads them
(:mod:`recbole_fitmm.data.validate`) and for the dataset fingerprint in every checkpoint and
result (:mod:`recbole_fitmm.provenance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recbole_fitmm.data.options import modality_names
from recbole_fitmm.provenance import fingerprint
from recbole_fitmm.registry import is_plugin_model


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset.

    Attributes:
        role: Name in the fingerprint: ``<part>.inter`` (or ``inter``), ``user``, ``item``, an
            additional suffix, or ``<modality>.npy``.
        path: Where it is.
        source: RecBole's source name (``inter``, ``user``, ``item``, the suffix) or
            ``feature`` for a ``.npy`` matrix read by the dataset hook.
    """

    role: str
    path: Path
    source: str


def run_files(config: Any) -> list[DataFile]:
    """Every file a run with ``config`` reads.

    Interaction files, additional atomic files and (for the plugin's models) the feature files
    of ``modalities`` and ``user_modality`` are listed whether or not they exist; ``.user`` and
    ``.item`` files only when present (RecBole reads them when they are there).

    Args:
        config: A resolved ``Config``.

    Returns:
        The files, interactions first.
    """
    folder = Path(config["data_path"])
    name = config["dataset"]
    parts = config["benchmark_filename"]
    files = (
        [DataFile(f"{part}.inter", folder / f"{name}.{part}.inter", "inter") for part in parts]
        if parts
        else [DataFile("inter", folder / f"{name}.inter", "inter")]
    )
    for source in ("user", "item"):
        path = folder / f"{name}.{source}"
        if path.is_file():
            files.append(DataFile(source, path, source))
    for suffix in config["additional_feat_suffix"] or []:
        files.append(DataFile(suffix, folder / f"{name}.{suffix}", suffix))
    if is_plugin_model(config["model"]):
        user = [config["user_modality"]] if config["user_modality"] else []
        for modality in [*modality_names(config), *user]:
            files.append(DataFile(f"{modality}.npy", folder / f"{name}.{modality}.npy", "feature"))
    return files


def dataset_fingerprint(config: Any) -> dict[str, Any]:
    """Fingerprint (:func:`recbole_fitmm.provenance.fingerprint`) of the files of ``config``."""
    return fingerprint({f.role: f.path for f in run_files(config)})
