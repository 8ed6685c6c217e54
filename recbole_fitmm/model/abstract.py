"""Base class of the plugin's multimodal recommenders.

Every plugin model (FITMM and the multimodal baselines) is a RecBole ``GeneralRecommender`` whose
scores are dot products of a user and an item representation computed from the whole graph. This
base class owns the parts that are the same for all of them:

* the feature matrices, read from the dataset hook (``dataset.modal_feats``), never from files;
* evaluation caching: representations are computed once per evaluation and reused for every batch
  of users; the cache is dropped whenever the model goes back to training mode, loads weights or
  computes a loss, so an evaluation never sees stale embeddings;
* ``predict`` and ``full_sort_predict`` on top of :meth:`compute_representations`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import Tensor

from recbole_fitmm.errors import DataError


class MultiModalRecommender(GeneralRecommender):
    """A graph recommender scored by ``<e_u, e_i>`` with cached evaluation representations.

    Subclasses implement :meth:`compute_representations` (all users and all items at once) and
    ``calculate_loss``; they call :meth:`drop_cache` nowhere themselves.

    Attributes:
        modal_feats: Modality name -> float32 tensor [n_items, f_m], row 0 (PAD) zero, in the
            order of the dataset's ``modalities`` config.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        feats = getattr(dataset, "modal_feats", None)
        if not feats:
            raise DataError(
                f"{type(self).__name__} needs item features: run it through recbole_fitmm "
                "(run_recbole_fitmm / recbole_fitmm.utils.create_dataset) with `modalities` set "
                "in the dataset config."
            )
        self.modal_feats: dict[str, Tensor] = dict(feats)
        self.user_feat: Tensor | None = getattr(dataset, "user_feat", None)
        self._cache: tuple[Tensor, Tensor] | None = None

    @staticmethod
    def train_edges(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        """User and item ids of the training interactions (RecBole ids, PAD = 0 unused).

        Args:
            dataset: Training dataset.

        Returns:
            ``(users, items)``, int64 arrays of shape [n_interactions].
        """
        coo = dataset.inter_matrix(form="coo")
        return np.asarray(coo.row, dtype=np.int64), np.asarray(coo.col, dtype=np.int64)

    # ------------------------------------------------------------------ representations
    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations used for scoring.

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, D] and [n_items, D].
        """
        raise NotImplementedError

    def drop_cache(self) -> None:
        """Forget the cached evaluation representations."""
        self._cache = None

    def cached_representations(self) -> tuple[Tensor, Tensor]:
        """Representations for evaluation, computed at most once until the cache is dropped."""
        if self._cache is None or self.training:
            with torch.no_grad():
                user_e, item_e = self.compute_representations()
            if self.training:
                return user_e, item_e
            self._cache = (user_e.detach(), item_e.detach())
        return self._cache

    def train(self, mode: bool = True) -> MultiModalRecommender:
        """Switch mode; entering training mode drops the evaluation cache."""
        if mode:
            self.drop_cache()
        return super().train(mode)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights and drop the evaluation cache (it belonged to the old weights).

        Args:
            state_dict: Parameters and buffers, as from ``state_dict()``.
            strict: Require exactly matching keys.
            assign: Assign the given tensors instead of copying into the existing ones.

        Returns:
            PyTorch's named tuple of missing and unexpected keys.
        """
        self.drop_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ RecBole interface
    def predict(self, interaction: Any) -> Tensor:
        """Scores of (user, item) pairs.

        Args:
            interaction: Batch with ``USER_ID`` and ``ITEM_ID`` of shape [B].

        Returns:
            Scores of shape [B].
        """
        user_e, item_e = self.cached_representations()
        users = interaction[self.USER_ID]
        items = interaction[self.ITEM_ID]
        return (user_e[users] * item_e[items]).sum(dim=-1)

    def full_sort_predict(self, interaction: Any) -> Tensor:
        """Scores of a batch of users against every item.

        Args:
            interaction: Batch with ``USER_ID`` of shape [B].

        Returns:
            Scores of shape [B, n_items] (column 0 is PAD; the trainer masks it).
        """
        user_e, item_e = self.cached_representations()
        return user_e[interaction[self.USER_ID]] @ item_e.T
