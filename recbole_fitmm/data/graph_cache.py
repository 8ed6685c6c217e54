"""An on-disk cache of frozen kNN item graphs, so that a dataset's graph is built once.

Building the multimodal kNN graph costs O(I²·f) (BENCHMARKS.md: 38 s at 20k items on one CPU
thread, ~16 min at 100k) and every run, tuning trial and comparison seed would repeat it. The
cache stores each graph under ``graph_cache_dir`` (a configuration key; ``~`` disables it), in a
file named by the sha256 of its key: the graph kind and parameters (``k``, modality weights,
preprocessing) and the sha256 of the exact feature arrays it is built from. A file that cannot be
read, holds another key or a malformed graph is rebuilt and replaced, never used. Files are
tensors and plain data only (read with ``weights_only=True``) and written atomically. Nothing is
written into a dataset folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recbole_fitmm.io import atomic_write

FORMAT = "recbole_fitmm.graph_cache/1"


def tensor_sha256(tensors: Sequence[Tensor]) -> str:
    """sha256 over the shapes, dtypes and bytes of tensors (moved to the CPU to hash).

    Args:
        tensors: Dense tensors.

    Returns:
        Hex digest.
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class GraphCache:
    """Frozen sparse graphs on disk, keyed by their parameters and input features.

    Args:
        folder: Where the cache files live (created on the first write).

    Example:
        >>> cache = GraphCache(tempfile.mkdtemp())  # doctest: +SKIP
        >>> graph = cache.get({"kind": "knn", "k": 10}, [features], build)  # doctest: +SKIP
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path_for(self, key: Mapping[str, Any]) -> Path:
        """The cache file of a full key."""
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.folder / f"graph-{name}.pt"

    def get(
        self, key: Mapping[str, Any], inputs: Sequence[Tensor], build: Callable[[], Tensor]
    ) -> Tensor:
        """The cached graph of ``key`` and ``inputs``, or ``build()`` (then cached).

        Args:
            key: Plain data naming the graph and its parameters.
            inputs: The tensors the graph is built from (their sha256 joins the key).
            build: Builds the sparse COO graph (on any device).

        Returns:
            The coalesced sparse COO graph, on the CPU.
        """
        full = {**key, "inputs": tensor_sha256(inputs)}
        path = self.path_for(full)
        logger = logging.getLogger()
        graph = self._read(path, full)
        if graph is not None:
            logger.info(f"graph cache: loaded {path.name}")
            return graph
        start = time.perf_counter()
        graph = build().cpu().coalesce()
        seconds = time.perf_counter() - start
        payload = {
            "format": FORMAT,
            "key": json.dumps(full, sort_keys=True),
            "indices": graph.indices(),
            "values": graph.values(),
            "shape": list(graph.shape),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))
        logger.info(f"graph cache: built {path.name} in {seconds:.1f} s")
        return graph

    @staticmethod
    def _read(path: Path, key: Mapping[str, Any]) -> Tensor | None:
        """The graph stored at ``path`` for exactly ``key``, or ``None`` (missing or unusable)."""
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") != FORMAT:
                return None
            if payload["key"] != json.dumps(dict(key), sort_keys=True):
                return None
            indices, values, shape = payload["indices"], payload["values"], payload["shape"]
            n_rows, n_cols = int(shape[0]), int(shape[1])
            if indices.shape != (2, values.shape[0]) or values.dtype != torch.float32:
                return None
            if indices.numel() and (
                indices.min() < 0 or indices[0].max() >= n_rows or indices[1].max() >= n_cols
            ):
                return None
            graph = torch.sparse_coo_tensor(
                indices,
                values,
                (n_rows, n_cols),
                check_invariants=False,  # bounds checked above
            )
            return graph.coalesce()
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, TypeError,
                AttributeError, IndexError, zipfile.BadZipFile, OSError):  # fmt: skip
            logging.getLogger().warning(f"graph cache: {path.name} is unreadable; rebuilding")
            return None
