"""VBPR (He & McAuley, AAAI 2016) as implemented in MMRec (``src/models/vbpr.py``).

Score ``<p_u, [q_i ; W f_i + b]>``: a 2d-dimensional user vector against the concatenation of a
d-dimensional item ID embedding and a linear projection of the item's raw features. MMRec's
version (followed here) concatenates all modalities into one feature vector ``f_i``, has no item
bias and no separate visual user factor (the second half of ``p_u`` plays that role), and trains
with BPR plus ``reg_weight`` times the summed L2 norms of the batch's embeddings divided by the
batch size (MMRec's ``EmbLoss``).

Differences from MMRec, none affecting results: any number of modalities (concatenated in dataset
order; MMRec uses text then image), and the feature projection is evaluated for the batch's items
only during training (MMRec projects all items per batch; the values and gradients are equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from recbole_fitmm.model.abstract import MultiModalRecommender
from recbole_fitmm.model.params import ModelParams


@dataclass(frozen=True)
class VBPRParams(ModelParams):
    """VBPR hyperparameters (``properties/model/VBPR.yaml``).

    Attributes:
        embedding_size: d, size of the ID part and of the projected feature part of an item.
        reg_weight: Weight of the L2-norm regulariser on the batch's embeddings.
    """

    embedding_size: int
    reg_weight: float

    POSITIVE = ("embedding_size",)
    NON_NEGATIVE = ("reg_weight",)


class VBPR(MultiModalRecommender):
    """Visual BPR over any number of concatenated item feature modalities."""

    params_class = VBPRParams

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        d = self.params.embedding_size
        raw = torch.cat([feat.float() for feat in self.modal_feats.values()], dim=1)
        self.register_buffer("item_raw_features", raw, persistent=False)
        self.u_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, 2 * d)))
        self.i_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.item_linear = nn.Linear(raw.shape[1], d)
        nn.init.xavier_normal_(self.item_linear.weight)
        nn.init.zeros_(self.item_linear.bias)

    def item_embeddings(self, items: Tensor | None = None) -> Tensor:
        """Item vectors ``[q_i ; W f_i + b]``.

        Args:
            items: Int64 item ids [B], or ``None`` for all items.

        Returns:
            Shape [B, 2d] (or [n_items, 2d]).
        """
        if items is None:
            return torch.cat([self.i_embedding, self.item_linear(self.item_raw_features)], dim=1)
        projected = self.item_linear(self.item_raw_features[items])
        return torch.cat([self.i_embedding[items], projected], dim=1)

    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """User and item vectors.

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, 2d] and [n_items, 2d].
        """
        return self.u_embedding, self.item_embeddings()

    def calculate_loss(self, interaction: Any) -> Tensor:
        """BPR loss plus the L2-norm regulariser of the batch's embeddings.

        The batch is pairwise and not modified; the loss is a scalar.
        """
        users = interaction[self.USER_ID]
        user_e = self.u_embedding[users]
        pos_e = self.item_embeddings(interaction[self.ITEM_ID])
        neg_e = self.item_embeddings(interaction[self.NEG_ITEM_ID])
        diff = (user_e * pos_e).sum(dim=1) - (user_e * neg_e).sum(dim=1)
        # MMRec's BPRLoss: -log(1e-10 + sigmoid(diff)).
        bpr = -torch.log(1e-10 + torch.sigmoid(diff)).mean()
        reg = (user_e.norm() + pos_e.norm() + neg_e.norm()) / users.shape[0]
        return bpr + self.params.reg_weight * reg
