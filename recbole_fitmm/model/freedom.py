"""FREEDOM (Zhou & Shen, ACM MM 2023) as released in MMRec (``src/models/freedom.py``).

"Freezing and denoising" two graphs:

* a **frozen** item–item graph ``S = Σ_m w_m · kNN_m`` built once from the raw item features
  (cosine kNN, ``knn_k`` neighbours, ``D^-1/2 A D^-1/2``), mixed with ``mm_image_weight``
  (``w_image = 0.1``, the rest shared by the other modalities; see
  :func:`~recbole_fitmm.model.graph.modality_weights`). It propagates the item **ID** embeddings
  ``n_mm_layers`` times: ``h = S^n E_i``;
* a **denoised** user–item graph: in every training epoch a fraction ``dropout`` of the edges is
  pruned by degree-sensitive sampling (:func:`~recbole_fitmm.model.graph.degree_sensitive_pruning`);
  evaluation uses the full normalised graph.

Representations: LightGCN over ``[E_u ; E_i]`` with ``n_ui_layers`` layers, mean-pooled including
layer 0; items add ``h``. Loss: BPR on these scores plus ``reg_weight`` times one BPR term per
modality that scores the user's propagated vector against a linear projection of the (trainable)
raw item features.

Differences from MMRec: any number of modalities; the kNN graph is built block-wise and never
cached to the data folder; the pruned graph is resampled lazily at the first loss of each training
epoch (RecBole's trainer calls ``model.train()`` once per epoch; MMRec's trainer calls
``pre_epoch_processing``), which is the same schedule; the modality projections are evaluated for
the batch's items only (same values and gradients). Unused keys of MMRec's yaml (``lambda_coeff``,
``weight_size``, ``cf_model``, ``degree_ratio``) are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recbole_fitmm.model.abstract import MultiModalRecommender
from recbole_fitmm.model.graph import (
    degree_sensitive_pruning,
    edge_degree_weights,
    modality_weights,
    propagate,
)
from recbole_fitmm.model.layers import bpr_loss, frozen_pair, pair_scores, sparse_product
from recbole_fitmm.model.params import ModelParams, check


@dataclass(frozen=True)
class FREEDOMParams(ModelParams):
    """FREEDOM hyperparameters (``properties/model/FREEDOM.yaml``).

    Attributes:
        embedding_size: d of the user and item ID embeddings.
        feat_embed_dim: Output size of the per-modality feature projections (must equal d).
        knn_k: Neighbours per item in each modality's kNN graph.
        mm_image_weight: Weight of the image graph in the mixed item graph.
        n_mm_layers: Propagation steps on the item–item graph.
        n_ui_layers: LightGCN layers on the user–item graph.
        dropout: Fraction of user–item edges pruned in each training epoch, in [0, 1).
        reg_weight: Weight of the per-modality BPR terms.
    """

    embedding_size: int
    feat_embed_dim: int
    knn_k: int
    mm_image_weight: float
    n_mm_layers: int
    n_ui_layers: int
    dropout: float
    reg_weight: float

    POSITIVE = ("embedding_size", "knn_k")
    NON_NEGATIVE = ("n_mm_layers", "n_ui_layers", "reg_weight")
    FRACTIONS = ("mm_image_weight",)

    def check_more(self) -> None:
        """Projected features are scored against user embeddings; dropout stays below 1."""
        check(
            self.feat_embed_dim == self.embedding_size,
            "FREEDOM",
            "feat_embed_dim must equal embedding_size (projected features are scored against "
            "user embeddings)",
        )
        check(self.dropout < 1.0 and self.dropout >= 0.0, "FREEDOM", "dropout must be in [0, 1)")


class FREEDOM(MultiModalRecommender):
    """FREEDOM with a frozen multimodal item graph and a pruned user–item graph."""

    params_class = FREEDOMParams

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        p = self.params
        pairs = np.unique(np.stack(self.register_user_item_graph(dataset)), axis=1)
        users, items = torch.from_numpy(pairs[0]), torch.from_numpy(pairs[1])
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer(
            "edge_weights",
            edge_degree_weights(users, items, self.n_users, self.n_items),
            persistent=False,
        )
        names = list(self.modal_feats)
        weights = modality_weights(names, p.mm_image_weight)
        feats = [self.modal_feats[name].float() for name in names]
        self.register_graph("mm_adj", self.item_knn_graph(feats, weights, p.knn_k))
        self.user_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(self.n_users, p.embedding_size))
        )
        self.item_id_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(self.n_items, p.embedding_size))
        )
        # Raw features stay trainable (MMRec: nn.Embedding.from_pretrained(freeze=False)).
        self.feat_tables = nn.ParameterDict(
            {name: nn.Parameter(feat.clone()) for name, feat in zip(names, feats)}
        )
        self.feat_trs = nn.ModuleDict(
            {name: nn.Linear(feat.shape[1], p.feat_embed_dim) for name, feat in zip(names, feats)}
        )
        self._train_adj: Tensor | None = None

    def train(self, mode: bool = True) -> FREEDOM:
        """Switch mode; entering training mode also schedules a fresh pruned graph."""
        if mode:
            self._train_adj = None
        return super().train(mode)

    def pruned_adjacency(self) -> Tensor:
        """The pruned user–item graph of the current training epoch (sampled on first use).

        Returns:
            Sparse CSR [n_users + n_items, n_users + n_items] normalised adjacency, built on the
            model's device.
        """
        if self._train_adj is None:
            pruned = degree_sensitive_pruning(
                self.edge_users,
                self.edge_items,
                self.n_users,
                self.n_items,
                self.params.dropout,
                self.edge_weights,
            )
            self._train_adj = frozen_pair(pruned, symmetric=True)[0]  # CSR, once per epoch
        return self._train_adj

    def forward(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        """Propagate on the user–item graph ``adj`` and the frozen item graph.

        Args:
            adj: Sparse normalised user–item adjacency [n_users + n_items, n_users + n_items].

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, d] and [n_items, d].
        """
        h = self.item_id_embedding
        for _ in range(self.params.n_mm_layers):
            h = sparse_product(self.mm_adj, self.mm_adj_t, h)
        ego = torch.cat([self.user_embedding, self.item_id_embedding], dim=0)
        nodes = propagate(adj, ego, self.params.n_ui_layers, "mean", adj_t=adj)  # symmetric
        user_e, item_e = torch.split(nodes, [self.n_users, self.n_items])
        return user_e, item_e + h

    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """Evaluation representations on the full (unpruned) user–item graph.

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, d] and [n_items, d].
        """
        return self.forward(self.norm_adj)

    def calculate_loss(self, interaction: Any) -> Tensor:
        """BPR on the pruned graph plus ``reg_weight`` × the per-modality feature BPR terms.

        The batch is pairwise and not modified; the loss is a scalar.
        """
        users, pos, neg = self.batch_ids(interaction)
        user_all, item_all = self.forward(self.pruned_adjacency())
        user_e = user_all[users]
        loss = bpr_loss(*pair_scores(user_e, item_all[pos], item_all[neg]))
        modal = user_e.new_zeros(())
        for name, table in self.feat_tables.items():
            trs = self.feat_trs[name]
            modal = modal + bpr_loss(*pair_scores(user_e, trs(table[pos]), trs(table[neg])))
        return loss + self.params.reg_weight * modal
