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

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import Tensor

from recbole_fitmm.errors import DataError
from recbole_fitmm.model.graph import bipartite_adjacency, multimodal_knn_graph
from recbole_fitmm.model.layers import frozen_pair
from recbole_fitmm.model.params import ModelParams


class MultiModalRecommender(GeneralRecommender):
    """A graph recommender scored by ``<e_u, e_i>`` with cached evaluation representations.

    Subclasses implement :meth:`compute_representations` (all users and all items at once) and
    ``calculate_loss``; they call :meth:`drop_cache` nowhere themselves. A subclass names its
    hyperparameter dataclass in ``params_class``; the constructor reads it into ``params``.

    Args:
        config: RecBole ``Config`` holding the model's hyperparameters.
        dataset: Training dataset with ``modal_feats`` (the dataset hook's).

    Attributes:
        modal_feats: Modality name -> float32 tensor [n_items, f_m], row 0 (PAD) zero, in the
            order of the dataset's ``modalities`` config.
    """

    input_type = InputType.PAIRWISE
    params_class: type[ModelParams] | None = None

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        if self.params_class is not None:
            self.params = self.params_class.from_config(config, type(self).__name__)
        feats = getattr(dataset, "modal_feats", None)
        if not feats:
            raise DataError(
                f"{type(self).__name__} needs item features: run it through recbole_fitmm "
                "(run_recbole_fitmm / recbole_fitmm.utils.create_dataset) with `modalities` set "
                "in the dataset config."
            )
        self.modal_feats: dict[str, Tensor] = dict(feats)
        #: The dataset hook's cache of frozen graphs (``get(key, inputs, build)``), or ``None``.
        self.graph_cache = getattr(dataset, "graph_cache", None)
        self.user_feat: Tensor | None = getattr(dataset, "user_feat", None)
        self._cache: tuple[Tensor, Tensor] | None = None
        #: Named parts of the last training loss (detached), when a model records them; the
        #: trainer sums them per epoch without synchronising and names them if the loss diverges.
        self.last_loss_parts: dict[str, Tensor] | None = None

    def register_graph(self, name: str, matrix: Tensor | None, symmetric: bool = False) -> None:
        """Keep a frozen sparse graph and its transpose as CSR buffers ``name`` and ``name_t``.

        The buffers move with the model (``.to(device)``) and stay out of the ``state_dict``;
        :func:`~recbole_fitmm.model.layers.sparse_product` multiplies with them.

        Args:
            name: Attribute name.
            matrix: Sparse [n, m] graph, or ``None`` (both attributes become ``None``).
            symmetric: The graph equals its transpose (one tensor serves both).
        """
        pair = frozen_pair(matrix, symmetric) if matrix is not None else (None, None)
        self.register_buffer(name, pair[0], persistent=False)
        self.register_buffer(f"{name}_t", pair[1], persistent=False)

    def __deepcopy__(self, memo: dict[int, Any]) -> MultiModalRecommender:
        """A deep copy that shares the frozen CSR graphs (torch cannot deep-copy CSR tensors).

        The graphs are never modified in place (moving a model replaces its references), so the
        copy and the original can share them.
        """
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        for key, value in self.__dict__.items():
            if key == "_buffers":
                value = {
                    name: buffer
                    if buffer is not None and buffer.layout == torch.sparse_csr
                    else copy.deepcopy(buffer, memo)
                    for name, buffer in value.items()
                }
            else:
                value = copy.deepcopy(value, memo)
            twin.__dict__[key] = value
        return twin

    def item_knn_graph(
        self, features: list[Tensor], weights: list[float], k: int, **key: Any
    ) -> Tensor:
        """The frozen multimodal kNN item graph, built on the model's device and cached on disk.

        Args:
            features: One item feature matrix [N, f_m] per modality (row 0 = PAD, unlinked).
            weights: One mixing weight per modality.
            k: Neighbours per item.
            **key: Anything else the graph depends on (e.g. the feature preprocessing).

        Returns:
            Sparse COO [N, N] on the CPU (:func:`~recbole_fitmm.model.graph.multimodal_knn_graph`).
        """

        def build() -> Tensor:
            on_device = [feature.to(self.device) for feature in features]
            return multimodal_knn_graph(on_device, weights, k).cpu()

        if self.graph_cache is None:
            return build()
        full_key = {"kind": "multimodal_knn", "k": k, "weights": list(weights), **key}
        return self.graph_cache.get(full_key, features, build)

    def register_user_item_graph(self, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        """Register the normalised training user–item graph as ``norm_adj`` (symmetric, CSR).

        Args:
            dataset: Training dataset.

        Returns:
            The training edges ``(users, items)`` (:meth:`train_edges`).
        """
        users, items = self.train_edges(dataset)
        adj = bipartite_adjacency(users, items, self.n_users, self.n_items)
        self.register_graph("norm_adj", adj, symmetric=True)
        return users, items

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

    def batch_ids(self, interaction: Any) -> tuple[Tensor, Tensor, Tensor]:
        """The users, positive items and negative items of a pairwise batch, each [B]."""
        return (
            interaction[self.USER_ID],
            interaction[self.ITEM_ID],
            interaction[self.NEG_ITEM_ID],
        )

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
