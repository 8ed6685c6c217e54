"""DRAGON (Zhou et al., ECAI 2023) as released (github.com/hongyurain/DRAGON, MMRec ``dragon.py``).

Dyadic relations enhanced with two homogeneous graphs. Per modality m (FITMM's encoder without
the ID branch, ``fitmm_method.md`` §2.2):

* user preference matrix ``P_m`` [U, d] (Xavier-normal) and item input
  ``MLP_m(F_m) = Linear(4d → d)(LeakyReLU(Linear(f_m → 4d)(F_m)))`` on the frozen raw features;
* ``X⁰ = normalize([P_m ; MLP_m(F_m)])`` propagated ``n_layers`` times on the symmetric-normalised
  user–item graph, summed over layers 0..L: ``X_m``.

Users: ``u = [w_u1 · X_1[u] | … | w_uM · X_M[u]]`` with per-user modality weights (softmax over
modalities once at init, then trained unconstrained), plus one hop on the **user–user graph**
(top-``user_graph_k`` co-interacting users, softmax over co-interaction counts):
``u ← u + S_user u``. Items: ``i = [X_1[i] | … | X_M[i]]`` plus ``n_mm_layers`` hops on the frozen
item kNN graph mixed with ``mm_image_weight``: ``i ← i + S_item^n i``. Score ``<u, i>``
(``M·d``-dimensional). Loss: ``-mean(log2 σ(s⁺ - s⁻))`` + ``reg_weight`` × (Σ_m mean(P_m[users]²)
+ mean(w²)).

Differences from the release (none changes the model):

* the user graph is built here, in memory and sparse, from the training interactions with the
  rule of DRAGON's ``tools/generate-u-u-matrix.py`` (co-interaction counts, top-k) — no
  ``user_graph_dict.npy`` file is needed (MMRec issues #1/#5/#37). The release pads users with
  fewer than ``k`` co-users by *randomly* repeating some of them once per epoch, which changes
  their softmax weights at random; here such users keep exactly their co-users (deterministic);
* evaluation runs a fresh forward pass on the current weights (the release scores with the
  embeddings of the last training batch) and never modifies the input batch (the release adds
  ``n_users`` to the item ids in place);
* any number of modalities; unused parts of the release (modality-dropout edge lists,
  ``MLP_user``, ``image_trs``/``text_trs``, ``weight_i``) are not built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_fitmm.model.abstract import MultiModalRecommender
from recbole_fitmm.model.graph import (
    modality_weights,
    propagate,
    user_cooccurrence_graph,
)
from recbole_fitmm.model.layers import bpr_loss, feature_mlp, pair_scores, sparse_product
from recbole_fitmm.model.params import ModelParams


@dataclass(frozen=True)
class DRAGONParams(ModelParams):
    """DRAGON hyperparameters (``properties/model/DRAGON.yaml``).

    Attributes:
        embedding_size: d, latent size per modality (the release hard-codes 64).
        n_layers: Propagation steps on the user–item graph (the release's GCN applies 2).
        n_mm_layers: Hops on the item kNN graph.
        knn_k: Neighbours per item in each modality's kNN graph.
        mm_image_weight: Weight of the image graph in the mixed item graph.
        user_graph_k: Co-interacting users kept per user (the release hard-codes 40).
        reg_weight: Weight of the preference and modality-weight regulariser.
    """

    embedding_size: int
    n_layers: int
    n_mm_layers: int
    knn_k: int
    mm_image_weight: float
    user_graph_k: int
    reg_weight: float

    POSITIVE = ("embedding_size", "knn_k", "user_graph_k")
    NON_NEGATIVE = ("n_layers", "n_mm_layers", "reg_weight")
    FRACTIONS = ("mm_image_weight",)


class ModalityGCN(nn.Module):
    """One DRAGON modality branch: feature MLP, user preferences, weightless GCN (sum of layers).

    Args:
        n_users: Number of user ids.
        feat_dim: Raw feature size f.
        dim: Latent size d.
        n_layers: Propagation steps.

    Example:
        >>> gcn = ModalityGCN(n_users=3, feat_dim=5, dim=4, n_layers=2)
        >>> adj = torch.sparse_coo_tensor(torch.empty(2, 0, dtype=torch.long), [], (5, 5))
        >>> gcn(adj, torch.randn(2, 5)).shape
        torch.Size([5, 4])
    """

    def __init__(self, n_users: int, feat_dim: int, dim: int, n_layers: int) -> None:
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim)))
        self.mlp = feature_mlp(feat_dim, 4 * dim, dim)
        self.n_layers = n_layers

    def forward(self, adj: Tensor, features: Tensor) -> Tensor:
        """Propagated user and item representations of this modality.

        Args:
            adj: Sparse normalised user–item adjacency [U + I, U + I].
            features: Raw item features [I, f].

        Returns:
            ``X_m`` of shape [U + I, d].
        """
        items = self.mlp(features)
        x = F.normalize(torch.cat([self.preference, items], dim=0))
        return propagate(adj, x, self.n_layers, pooling="sum", adj_t=adj)  # adj is symmetric


class DRAGON(MultiModalRecommender):
    """DRAGON with an in-memory user co-occurrence graph and fresh evaluation forwards."""

    params_class = DRAGONParams

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        users, items = self.register_user_item_graph(dataset)
        p = self.params
        user_graph = user_cooccurrence_graph(users, items, self.n_users, p.user_graph_k)
        self.register_graph("user_graph", user_graph)
        self.names = list(self.modal_feats)
        feats = [self.modal_feats[name].float() for name in self.names]
        weights = modality_weights(self.names, p.mm_image_weight)
        self.register_graph("mm_adj", self.item_knn_graph(feats, weights, p.knn_k))
        for name, feat in zip(self.names, feats):  # the GCN branches read the frozen raw features
            self.register_buffer(f"feat_{name}", feat, persistent=False)
        self.gcn = nn.ModuleDict(
            {
                name: ModalityGCN(self.n_users, feat.shape[1], p.embedding_size, p.n_layers)
                for name, feat in zip(self.names, feats)
            }
        )
        weight_u = nn.init.xavier_normal_(torch.empty(self.n_users, len(self.names), 1))
        self.weight_u = nn.Parameter(torch.softmax(weight_u, dim=1))

    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """User and item representations over all modalities.

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, M·d] and [n_items, M·d].
        """
        user_parts, item_parts = [], []
        for index, name in enumerate(self.names):
            rep = self.gcn[name](self.norm_adj, getattr(self, f"feat_{name}"))
            user_parts.append(self.weight_u[:, index] * rep[: self.n_users])
            item_parts.append(rep[self.n_users :])
        user_e = torch.cat(user_parts, dim=1)
        item_e = torch.cat(item_parts, dim=1)
        h = item_e
        for _ in range(self.params.n_mm_layers):
            h = sparse_product(self.mm_adj, self.mm_adj_t, h)
        user_e = user_e + sparse_product(self.user_graph, self.user_graph_t, user_e)
        return user_e, item_e + h

    def calculate_loss(self, interaction: Any) -> Tensor:
        """DRAGON's log2-BPR loss plus the preference / modality-weight regulariser.

        Args:
            interaction: Batch with ``USER_ID``, ``ITEM_ID`` and ``NEG_ITEM_ID`` of shape [B];
                not modified.

        Returns:
            Scalar loss.
        """
        users = interaction[self.USER_ID]
        user_all, item_all = self.compute_representations()
        user_e = user_all[users]
        pos_scores, neg_scores = pair_scores(
            user_e, item_all[interaction[self.ITEM_ID]], item_all[interaction[self.NEG_ITEM_ID]]
        )
        loss = bpr_loss(pos_scores, neg_scores) / np.log(2.0)  # -mean(log2 σ(diff))
        reg = sum((gcn.preference[users] ** 2).mean() for gcn in self.gcn.values())
        reg = reg + (self.weight_u**2).mean()
        return loss + self.params.reg_weight * reg
