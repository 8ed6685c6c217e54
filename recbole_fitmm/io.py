"""Atomic file writes: every output goes to a temporary file in the target folder, then is renamed.

A run that dies mid-write leaves either the old file or the new one, never a truncated file.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically.

    Args:
        path: Destination path; its folder is created if needed.
        write: Callback that writes the whole content into the binary file object it receives.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual mode
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text to ``path``."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Atomically write ``array`` in ``.npy`` format (no pickling)."""

    def write(handle: IO[bytes]) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        handle.write(buffer.getvalue())

    return atomic_write(path, write)
