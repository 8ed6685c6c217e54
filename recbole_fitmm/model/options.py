"""FITMM's options beyond the release, on plain tensors (each off by default; the model's
yaml documents the switches and BENCHMARKS.md measures them).

* :func:`preprocess_features` — centre or ZCA-whiten raw features (``feature_preprocess``);
* :func:`band_dropout` — drop high bands of a row in training (``band_dropout``);
* :class:`PersonalBands` — user-dependent band weights (``personal_bands``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FEATURE_PREPROCESSING = ("none", "center", "whiten")
PERSONAL_BANDS = ("none", "user", "activity")
#: Eigenvalue floor of the ZCA whitening, relative to the largest covariance eigenvalue.
WHITEN_EPS = 1e-5


class PersonalBands(nn.Module):
    """User-dependent band-weight offsets (an option; the release's band weights are global).

    ``user``: a learned offset per user and band, initialised at 0. ``activity``: offsets
    ``a_k · z_u`` with ``z_u`` the user's standardised ``log(1 + training interactions)`` and
    ``a`` learned, initialised at 0; users of different activity then weight bands differently,
    with M parameters. Either way the model starts as the release does.

    Args:
        mode: ``user`` or ``activity``.
        activity: Training interactions per user, [N] (real users).
        num_bands: Number of bands M.

    Example:
        >>> bands = PersonalBands("activity", torch.tensor([1.0, 5.0, 20.0]), num_bands=3)
        >>> bands().shape
        torch.Size([3, 3])
    """

    def __init__(self, mode: str, activity: Tensor, num_bands: int) -> None:
        super().__init__()
        if mode not in PERSONAL_BANDS[1:]:
            raise ValueError(f"mode must be one of {PERSONAL_BANDS[1:]}, got {mode!r}")
        self.mode = mode
        if mode == "user":
            self.offsets = nn.Parameter(torch.zeros(activity.shape[0], num_bands))
        else:
            z = torch.log1p(activity.float())
            self.register_buffer("z", ((z - z.mean()) / z.std().clamp_min(1e-12)).unsqueeze(1))
            self.slopes = nn.Parameter(torch.zeros(num_bands))

    def forward(self) -> Tensor:
        """Band-logit offsets of every user, [N, M]."""
        if self.mode == "user":
            return self.offsets
        return self.z * self.slopes


def band_dropout(coef: Tensor, rate: float) -> Tensor:
    """Drop each high band (k >= 2, 1-based) of each row with probability ``rate`` (training).

    Kept high bands are scaled by ``1 / (1 - rate)`` (inverted dropout: the expected coefficient
    is unchanged); band 1, the dominant directions, is never dropped.

    Args:
        coef: Band coefficients [N, M].
        rate: Drop probability in [0, 1).

    Returns:
        [N, M] coefficients; ``coef`` itself when ``rate`` is 0 or M is 1.
    """
    if rate <= 0 or coef.shape[1] < 2:
        return coef
    keep = (torch.rand_like(coef[:, 1:]) >= rate).to(coef.dtype) / (1.0 - rate)
    return torch.cat([coef[:, :1], coef[:, 1:] * keep], dim=1)


def preprocess_features(features: Tensor, mode: str) -> Tensor:
    """Centre or ZCA-whiten a feature matrix (an option before the kNN graph and the MLPs).

    Pre-trained embeddings are anisotropic: tiktok's image features have mean 2.7 and row norm
    ~33, so cosine kNN and the MLP inputs are dominated by one shared direction. ``center``
    subtracts the mean row; ``whiten`` then rotates onto the covariance eigenvectors, scales each
    by ``1/sqrt(λ + ε λ_max)`` and rotates back (ZCA), in float64.

    Args:
        features: [N, f] rows of real items (no PAD row).
        mode: ``none``, ``center`` or ``whiten``.

    Returns:
        [N, f] float32 (``features`` itself for ``none``).
    """
    if mode not in FEATURE_PREPROCESSING:
        raise ValueError(f"mode must be one of {FEATURE_PREPROCESSING}, got {mode!r}")
    if mode == "none":
        return features
    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    if mode == "whiten":
        covariance = x.T @ x / max(1, x.shape[0] - 1)
        eigvals, eigvecs = torch.linalg.eigh(covariance)
        scale = (eigvals.clamp_min(0) + WHITEN_EPS * eigvals.max()).rsqrt()
        x = (x @ eigvecs) * scale @ eigvecs.T
    return x.float()
