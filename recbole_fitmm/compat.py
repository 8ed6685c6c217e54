"""Fixes that let RecBole 1.2.1 run on today's numpy, scipy, torch and pandas.

Each fix is idempotent and a no-op where the library still behaves as RecBole expects
(``recbole_notes.md`` §3 lists the failures they prevent). :func:`apply` runs when
``recbole_fitmm.config`` is imported, before anything builds a RecBole ``Config``; a Ray worker
calls it again before its trial.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from recbole.data.dataset import Dataset
from recbole.utils import FeatureType

#: Aliases removed in numpy 2 that RecBole (``np.float_``...) and ray (``np.bool8``) use.
NUMPY_ALIASES: dict[str, type] = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
}


def patch_numpy() -> None:
    """Re-create the numpy aliases removed in numpy 2 (only where absent)."""
    for name, value in NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _dok_update(self: sp.dok_matrix, data: dict) -> None:
    self._dict.update(data)


def patch_scipy() -> None:
    """Give ``scipy.sparse.dok_matrix`` back the private ``_update`` (removed in scipy 1.13).

    RecBole's LightGCN, NGCF, GCMC, SpectralCF, NCL build their adjacency with it.
    """
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_update


def patch_torch_load() -> None:
    """Let RecBole's trainer load its own checkpoints on torch >= 2.6.

    RecBole pickles its ``Config`` into every checkpoint and calls ``torch.load`` without
    ``weights_only``; torch >= 2.6 then refuses the file. The plugin's own loaders always pass
    ``weights_only=True`` explicitly (``recbole_fitmm.checkpoint``) and are not affected.
    """
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _fill_nan(self) -> None:  # noqa: ANN001 - RecBole Dataset
    """Copy-on-write-safe version of ``recbole.data.dataset.Dataset._fill_nan``.

    pandas 3 ignores ``df[col].fillna(..., inplace=True)``; assign the result instead. Missing
    tokens become ``""``, missing floats the column mean, missing sequences empty sequences.
    """
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


#: RecBole's own ``Dataset._fill_nan``, kept by :func:`patch_pandas` (tests compare against it).
RECBOLE_FILL_NAN = None


def patch_pandas() -> None:
    """Make RecBole's NaN filling work under pandas copy-on-write (always on in pandas 3).

    Only ``_fill_nan`` is replaced; ``*_seq`` fields with missing values (RecBole's dataset.py:509)
    are not used by this plugin and are left as RecBole has them.
    """
    global RECBOLE_FILL_NAN
    if Dataset._fill_nan is not _fill_nan:
        RECBOLE_FILL_NAN = Dataset._fill_nan
        Dataset._fill_nan = _fill_nan


def apply() -> None:
    """Apply every fix (idempotent)."""
    patch_numpy()
    patch_scipy()
    patch_torch_load()
    patch_pandas()
