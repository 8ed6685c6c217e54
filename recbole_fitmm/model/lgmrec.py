"""LGMRec (Guo et al., AAAI 2024) as released by the authors and in MMRec (``lgmrec.py``).

Local and global graph learning:

* **CGE** (collaborative graph embedding): LightGCN over ``[E_u ; E_i]`` (``cf_model: lightgcn``,
  ``n_ui_layers`` layers, mean pooling incl. layer 0) or the raw embeddings (``cf_model: mf``);
* **MGE** (modality graph embedding), per modality m: frozen raw features projected by a bias-free
  matrix ``X_m = F_m W_m`` for items, the mean of a user's training items for users, then
  ``n_mm_layers`` propagation steps on the normalised user–item graph;
* **GHE** (global hypergraph embedding), per modality m: ``hyper_num`` hyperedges with item
  assignments ``softmax_τ(F_m H_m)`` and user assignments ``softmax_τ(R F_m H_m)``, dropout
  ``1 - keep_rate`` on the assignments, ``n_hyper_layer`` hypergraph convolutions of the CGE item
  embeddings;
* final ``e = CGE + Σ_m normalize(MGE_m) + alpha · normalize(Σ_m GHE_m)``.

Loss: BPR + ``cl_weight`` × hypergraph InfoNCE between modalities (users of the batch, positive
items; τ = 0.2) + ``reg_weight`` × the summed L2 norms of the batch's embeddings / batch size.

**Deterministic evaluation (deviation from the release).** MMRec/the authors apply
``F.gumbel_softmax`` to the hyperedge assignments in every forward pass, evaluation included, so
the scores of fixed weights change from one evaluation to the next. Here Gumbel noise is drawn in
training mode only; in evaluation mode the assignments are the noise-free ``softmax(logits / τ)``
and the assignment dropout is off (as in the release, where it is an ``nn.Dropout``).

RecBole's PAD item 0 (zero features) is kept out of every hyperedge (the release has no PAD id).
Other generalisations: any number of modalities. GHE and MGE sum over all modalities and the
contrastive term sums over every pair of modalities ``a < b`` in dataset order (for
``[image, text]`` exactly the release's single v→t term). With one modality there is no
contrastive term (the release falls back to CGE only, i.e. LightGCN, when a modality is missing).

**User hyperedges (``user_hyperedges``).** In the release's ``forward`` the text block assigns
``uv_hyper = gumbel_softmax(ut_hyper)``: the image branch's user assignments are overwritten by the
*text* users' softmax, and the text branch's user assignments stay the raw logits ``R F_t H_t``.
``release`` (default) reproduces this for any number of modalities (the first modality's users get
the last modality's softmax, every other modality's users its raw logits); ``per_modality`` gives
each modality's users the softmax of their own logits, as the paper describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_fitmm.model.abstract import MultiModalRecommender
from recbole_fitmm.model.graph import interaction_matrix, propagate
from recbole_fitmm.model.layers import autocast_float32, bpr_loss, pair_scores, sparse_product
from recbole_fitmm.model.params import ModelParams, check

#: Temperature of the hyperedge softmax and of the contrastive loss (hard-coded in the release).
TAU = 0.2
USER_HYPEREDGES = ("release", "per_modality")
CF_MODELS = ("lightgcn", "mf")


@dataclass(frozen=True)
class LGMRecParams(ModelParams):
    """LGMRec hyperparameters (``properties/model/LGMRec.yaml``).

    Attributes:
        embedding_size: d of the user and item ID embeddings.
        feat_embed_dim: Output size of the modality projections (must equal d).
        cf_model: ``lightgcn`` or ``mf`` (no propagation) for the collaborative embedding.
        n_ui_layers: LightGCN layers of the collaborative embedding.
        n_mm_layers: Propagation steps of the modality embeddings.
        n_hyper_layer: Hypergraph convolution layers (>= 1).
        hyper_num: Number of hyperedges per modality.
        keep_rate: 1 - dropout rate on the hyperedge assignments (training only).
        alpha: Weight of the global hypergraph embedding.
        cl_weight: Weight of the hypergraph contrastive loss.
        reg_weight: Weight of the L2-norm regulariser.
        user_hyperedges: ``release`` (the released code's assignments, see the module docstring)
            or ``per_modality``.
    """

    embedding_size: int
    feat_embed_dim: int
    cf_model: str
    n_ui_layers: int
    n_mm_layers: int
    n_hyper_layer: int
    hyper_num: int
    keep_rate: float
    alpha: float
    cl_weight: float
    reg_weight: float
    user_hyperedges: str

    POSITIVE = ("embedding_size", "n_hyper_layer", "hyper_num")
    NON_NEGATIVE = ("n_ui_layers", "n_mm_layers", "alpha", "cl_weight", "reg_weight")
    CHOICES = {"cf_model": CF_MODELS, "user_hyperedges": USER_HYPEREDGES}

    def check_more(self) -> None:
        """Modality and ID embeddings are added; some units must survive the dropout."""
        check(
            self.feat_embed_dim == self.embedding_size,
            "LGMRec",
            "feat_embed_dim must equal embedding_size (modality and ID embeddings are added)",
        )
        check(0.0 < self.keep_rate <= 1.0, "LGMRec", "keep_rate must be in (0, 1]")


def hypergraph_conv(
    item_hyper: Tensor, user_hyper: Tensor, item_e: Tensor, n_layers: int
) -> tuple[Tensor, Tensor]:
    """LGMRec's ``HGNNLayer``: item → hyperedge → item/user message passing.

    Args:
        item_hyper: Item–hyperedge assignments [I, H].
        user_hyper: User–hyperedge assignments [U, H].
        item_e: Item embeddings [I, d] (layer 0).
        n_layers: Number of layers (>= 1).

    Returns:
        ``(user_out, item_out)`` of shapes [U, d] and [I, d].
    """
    user_out = item_e.new_zeros(user_hyper.shape[0], item_e.shape[1])
    for _ in range(n_layers):
        hyper_e = item_hyper.T @ item_e
        item_e = item_hyper @ hyper_e
        user_out = user_hyper @ hyper_e
    return user_out, item_e


@autocast_float32
class _BoundedLogSumExp(torch.autograd.Function):
    """Row-wise ``log Σ_n exp(a_b · c_n)`` for scores bounded by 1/τ, as the release computes it.

    The scores of :func:`infonce` are cosines times 1/τ = 5, so ``exp`` cannot overflow and no
    max shift is needed (the release exponentiates directly too). One [B, N] buffer holds
    ``exp(scores)`` and is turned into the gradient weights in place in the backward pass: about
    half the time and memory traffic of ``torch.logsumexp`` and its autograd backward, which
    materialise ``scores - lse`` and its exponential again. A second backward through the same
    graph (``retain_graph=True``) raises instead of reading the overwritten buffer.
    """

    @staticmethod
    def forward(ctx: Any, anchor: Tensor, candidates: Tensor) -> Tensor:
        weights = torch.exp_(anchor @ candidates.T)  # [B, N]
        total = weights.sum(dim=1)
        ctx.save_for_backward(anchor, candidates, weights, total)
        ctx.used = False
        return total.log()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if ctx.used:
            raise RuntimeError("LGMRec's InfoNCE supports one backward pass per forward pass")
        ctx.used = True
        anchor, candidates, weights, total = ctx.saved_tensors
        weights.mul_((grad / total).unsqueeze(1))  # softmax(scores) * grad
        grad_anchor = weights @ candidates if ctx.needs_input_grad[0] else None
        grad_candidates = weights.T @ anchor if ctx.needs_input_grad[1] else None
        return grad_anchor, grad_candidates


def infonce(anchor: Tensor, positive: Tensor, candidates: Tensor) -> Tensor:
    """The release's ``ssl_triple_loss``: summed InfoNCE with cosine similarities and τ.

    Args:
        anchor: [B, d] vectors of one modality.
        positive: [B, d] vectors of the same nodes in another modality.
        candidates: [N, d] all nodes in the other modality (the denominator).

    Returns:
        Scalar ``-Σ_b log(exp(cos(a_b, p_b)/τ) / Σ_n exp(cos(a_b, c_n)/τ))``.
    """
    anchor, positive, candidates = (F.normalize(x) for x in (anchor, positive, candidates))
    anchor = anchor / TAU  # 1/τ on the [B, d] factor, not on the [B, N] similarity
    pos = (anchor * positive).sum(dim=1)
    total = _BoundedLogSumExp.apply(anchor, candidates)
    return (total - pos).sum()


class LGMRec(MultiModalRecommender):
    """LGMRec with deterministic (noise-free) evaluation."""

    params_class = LGMRecParams

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        p = self.params
        users, items = self.register_user_item_graph(dataset)
        for name, normalise in (("inter", False), ("inter_mean", True)):
            matrix = interaction_matrix(users, items, self.n_users, self.n_items, normalise)
            self.register_graph(name, matrix)
        self.user_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(self.n_users, p.embedding_size))
        )
        self.item_id_embedding = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(self.n_items, p.embedding_size))
        )
        self.names = list(self.modal_feats)
        for name in self.names:  # raw features are frozen in LGMRec
            self.register_buffer(f"feat_{name}", self.modal_feats[name].float(), persistent=False)
        dims = {name: self.modal_feats[name].shape[1] for name in self.names}
        self.item_trs = nn.ParameterDict(
            {
                name: nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, p.feat_embed_dim)))
                for name, dim in dims.items()
            }
        )
        self.hyper = nn.ParameterDict(
            {
                name: nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, p.hyper_num)))
                for name, dim in dims.items()
            }
        )
        self.drop = nn.Dropout(p=1.0 - p.keep_rate)
        # PAD item 0 (zero features) would otherwise join every hyperedge with weight 1/H.
        item_mask = torch.ones(self.n_items, 1)
        item_mask[0] = 0.0
        self.register_buffer("item_mask", item_mask, persistent=False)

    def _assign(self, logits: Tensor) -> Tensor:
        """Soft hyperedge assignments: Gumbel-softmax in training, plain softmax at evaluation."""
        if self.training:
            return F.gumbel_softmax(logits, TAU, hard=False, dim=1)
        return torch.softmax(logits / TAU, dim=1)

    def user_assignments(self, user_logits: list[Tensor], m: int) -> Tensor:
        """User–hyperedge assignments of modality ``m`` (``user_hyperedges``, before dropout).

        Args:
            user_logits: Per modality, the users' hyperedge logits ``R F H`` [U, H].
            m: Index of the modality.

        Returns:
            [U, H]: ``per_modality``: the softmax of modality m's logits; ``release`` with several
            modalities: the last modality's softmax for m = 0, raw logits otherwise.
        """
        if self.params.user_hyperedges == "per_modality" or len(user_logits) == 1:
            return self._assign(user_logits[m])
        return self._assign(user_logits[-1]) if m == 0 else user_logits[m]

    def parts(self) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """The three summands of the final embeddings, users stacked over items.

        Returns:
            ``cge`` [U+I, d] (collaborative), ``mge`` [U+I, d] (``Σ_m normalize(MGE_m)``),
            ``ghe`` [U+I, d] (``alpha · normalize(Σ_m GHE_m)``) and, per modality, the
            hypergraph embeddings ``(user_hyper_e [U, d], item_hyper_e [I, d])``.
        """
        p = self.params
        ego = torch.cat([self.user_embedding, self.item_id_embedding], dim=0)
        cge = ego
        if p.cf_model == "lightgcn":
            cge = propagate(self.norm_adj, ego, p.n_ui_layers, "mean", self.norm_adj)
        cge_items = cge[self.n_users :]
        mge = torch.zeros_like(cge)
        ghe = torch.zeros_like(cge)
        hyper_embs = []
        feats = [getattr(self, f"feat_{name}") for name in self.names]
        item_logits = [feat @ self.hyper[name] for feat, name in zip(feats, self.names)]
        user_logits = [sparse_product(self.inter, self.inter_t, x) for x in item_logits]
        for m, (name, feat) in enumerate(zip(self.names, feats)):
            item_hyper = self.drop(self._assign(item_logits[m])) * self.item_mask
            user_hyper = self.drop(self.user_assignments(user_logits, m))
            item_x = feat @ self.item_trs[name]
            user_x = sparse_product(self.inter_mean, self.inter_mean_t, item_x)
            nodes = torch.cat([user_x, item_x], dim=0)
            for _ in range(p.n_mm_layers):
                nodes = sparse_product(self.norm_adj, self.norm_adj, nodes)
            mge = mge + F.normalize(nodes)
            user_h, item_h = hypergraph_conv(item_hyper, user_hyper, cge_items, p.n_hyper_layer)
            ghe = ghe + torch.cat([user_h, item_h], dim=0)
            hyper_embs.append((user_h, item_h))
        return cge, mge, p.alpha * F.normalize(ghe), hyper_embs

    def _forward(self) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """All representations.

        Returns:
            ``user_e`` [U, d], ``item_e`` [I, d] and, per modality, the hypergraph embeddings
            ``(user_hyper_e [U, d], item_hyper_e [I, d])``.
        """
        cge, mge, ghe, hyper_embs = self.parts()
        user_e, item_e = torch.split(cge + mge + ghe, [self.n_users, self.n_items])
        return user_e, item_e, hyper_embs

    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """Representations (noise-free in evaluation mode).

        Returns:
            ``(user_e, item_e)`` of shapes [n_users, d] and [n_items, d].
        """
        user_e, item_e, _ = self._forward()
        return user_e, item_e

    def calculate_loss(self, interaction: Any) -> Tensor:
        """BPR + ``cl_weight`` × hypergraph contrastive loss + ``reg_weight`` × L2 norms.

        The batch is pairwise and not modified; the loss is a scalar.
        """
        users, pos, neg = self.batch_ids(interaction)
        user_all, item_all, hyper_embs = self._forward()
        user_e, pos_e, neg_e = user_all[users], item_all[pos], item_all[neg]
        loss = bpr_loss(*pair_scores(user_e, pos_e, neg_e))
        contrast = user_e.new_zeros(())
        for (user_a, item_a), (user_b, item_b) in combinations(hyper_embs, 2):
            contrast = contrast + infonce(user_a[users], user_b[users], user_b)
            contrast = contrast + infonce(item_a[pos], item_b[pos], item_b)
        reg = (user_e.norm() + pos_e.norm() + neg_e.norm()) / users.shape[0]
        return loss + self.params.cl_weight * contrast + self.params.reg_weight * reg
