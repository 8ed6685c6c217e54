"""FITMM (ACM MM 2025) as a RecBole model: frequency-aware multimodal recommendation.

Pipeline (``fitmm_method.md`` §1–§3), for B = 1 + (number of feature modalities) blocks of d columns
(item IDs, then each modality of ``dataset.modal_feats`` in ``modalities`` order):

1. one parameter-free LightGCN branch per block, all blocks propagated **at once** as one
   ``[users + items, B·d]`` node matrix (a sparse product acts on every column separately, so this
   equals B separate propagations);
2. ``R_u`` (per-user modality weights), ``H_u`` (preference matrices, optionally through a user
   kNN graph), ``R_i``, ``H_i = S_mm R_i`` (frozen multimodal item kNN graph);
3. per d-column block, the thin-SVD band split of ``R`` and ``H``; within-band components ``Z^(k)``;
4. residual gate and band weights give ``e_u``, ``e_i``; the score is ``<e_u, e_i>``;
5. loss = BCE (or BPR) + ``ib_weight``·IB + ``reg_weight``·consistency (band or cross-modal).

Deviation from the release (``fitmm_method.md`` §7 row 6): the bands come from the eigenvectors of
each block's float64 Gram matrix with a stable projector backward (``svd_solver: gram``, see
:mod:`recbole_fitmm.model.layers`) instead of autograd through ``torch.linalg.svd``. The forward
values agree with the SVD to float rounding and the gradient equals the SVD's wherever that one is
finite; ``svd_solver: svd`` restores the release's backward.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.model import graph, layers, options, spectral
from recbole_fitmm.model.abstract import MultiModalRecommender
from recbole_fitmm.model.fitmm_params import FITMMParams, item_graph_weights


class Bands(NamedTuple):
    """The band split of one side: singular vectors of R's and H's blocks.

    Attributes:
        bases: ``(V_R, V_H)`` of every block, [2, B, d, d] (:func:`spectral.band_bases`).
        labels: Band of each singular direction, [d].
    """

    bases: Tensor
    labels: Tensor


class FITMMPass(NamedTuple):
    """One full forward pass. Views, bands and gates cover the real rows 1.. only.

    Attributes:
        user_e: Final user representations [n_users, D], PAD row 0 zero.
        item_e: Final item representations [n_items, D], PAD row 0 zero.
        user_views: ``(R_u, H_u)``, each [n_users - 1, D].
        item_views: ``(R_i, H_i)``, each [n_items - 1, D].
        user_bands: The users' band split, or ``None`` when M = 1.
        item_bands: The items' band split, or ``None`` when M = 1.
        user_gates: Gates [n_users - 1, M].
        item_gates: Gates [n_items - 1, M].
    """

    user_e: Tensor
    item_e: Tensor
    user_views: tuple[Tensor, Tensor]
    item_views: tuple[Tensor, Tensor]
    user_bands: Bands | None
    item_bands: Bands | None
    user_gates: Tensor
    item_gates: Tensor


class FITMM(MultiModalRecommender):
    """FITMM on any number of feature modalities (module docstring; ``fitmm_method.md``).

    Parameters, graphs and the band split cover the real ids 1..n-1 only; the PAD row 0 of the
    final representations is zero, so PAD never enters the SVD, the gates or the IB means.
    """

    params_class = FITMMParams

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        p = self.params
        d = p.embedding_size
        self.dim = d
        self.modalities = list(self.modal_feats)
        self.n_blocks = 1 + len(self.modalities)
        n_users, n_items, width = self.n_users - 1, self.n_items - 1, self.n_blocks * d
        # Branch preference matrices P_id | P_m1 | ... as column blocks of one matrix.
        self.preference = nn.Parameter(torch.empty(n_users, width))
        for b in range(self.n_blocks):
            nn.init.xavier_normal_(self.preference.data[:, b * d : (b + 1) * d])
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, d)))
        feats = [
            options.preprocess_features(self.modal_feats[name][1:].float(), p.feature_preprocess)
            for name in self.modalities
        ]
        self._initial_tables = feats  # for the drift diagnostic; the release's are modal_feats
        self.feature_tables = nn.ParameterList(
            nn.Parameter(f.clone(), requires_grad=p.train_features) for f in feats
        )
        self.encoders = nn.ModuleList(
            layers.feature_mlp(f.shape[1], p.mlp_hidden_size, d) for f in feats
        )
        user_weights = nn.init.xavier_normal_(torch.empty(n_users, self.n_blocks, 1))
        self.user_weights = nn.Parameter(F.softmax(user_weights.squeeze(-1), dim=1))
        gate = (width, p.num_freq_bands, p.ib_direction, p.use_gate, p.gate_normalise)
        self.user_gate = layers.BandGate(*gate)
        self.item_gate = layers.BandGate(*gate)

        inter = dataset.inter_matrix(form="coo")
        edges = torch.as_tensor(inter.row - 1), torch.as_tensor(inter.col - 1)
        adj = graph.bipartite_adjacency(*edges, n_users, n_items)
        self.register_graph("adj", adj, symmetric=True)
        self.personal = None
        if p.personal_bands != "none":
            activity = torch.bincount(edges[0], minlength=n_users)
            self.personal = options.PersonalBands(p.personal_bands, activity, p.num_freq_bands)
        if p.edge_dropout > 0:  # distinct training edges, for the per-epoch sample
            pairs = torch.unique(torch.stack(edges), dim=1)
            self.register_buffer("edge_pairs", pairs, persistent=False)
        self._epoch_adj: Tensor | None = None
        self._epoch = 0
        item_graph = None
        if p.use_item_graph:
            full = [torch.cat([f.new_zeros(1, f.shape[1]), f]) for f in feats]  # PAD unlinked
            weights = item_graph_weights(p, self.modalities)
            knn = self.item_knn_graph(full, weights, p.knn_k, preprocess=p.feature_preprocess)
            item_graph = graph.without_pad(knn)
        self.register_graph("item_graph", item_graph)
        user_graph = None
        if p.use_user_graph:
            if self.user_feat is None:
                raise ConfigError(
                    "FITMM: use_user_graph needs user features; set `user_modality` so the "
                    "dataset loads <dataset>.<user_modality>.npy"
                )
            user_graph = graph.without_pad(graph.knn_graph(self.user_feat, p.knn_k))
        self.register_graph("user_graph", user_graph)
        # The band of each singular direction depends only on the shapes: computed once.
        labels = [spectral.band_labels(n, d, p.num_freq_bands) for n in (n_users, n_items)]
        self.register_buffer("band_labels", torch.stack(labels)[[0, 0, 1, 1]], persistent=False)

    # ------------------------------------------------------------------ forward
    def base_views(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Base and auxiliary views of both sides (§2.2–§2.5), real rows 1.. only.

        Returns:
            ``(R_u, H_u, R_i, H_i)``: [n_users-1, D] twice, then [n_items-1, D] twice.
        """
        n_users, n_blocks = self.preference.shape[0], self.n_blocks
        item_inputs = [self.item_embedding] + self.encode_features()
        x = torch.cat([self.preference, torch.cat(item_inputs, dim=1)])
        x = F.normalize(x.view(x.shape[0], n_blocks, self.dim), dim=-1).view(x.shape[0], -1)
        # all blocks in one product per layer; sum of layers 0..L
        adj = self.training_adjacency() if self.training else self.adj
        total = graph.propagate(adj, x, self.params.num_layers, "sum", adj_t=adj)
        users, r_i = total.split([n_users, total.shape[0] - n_users])
        r_u = users.view(n_users, n_blocks, -1) * self.user_weights.unsqueeze(-1)
        h_u, h_i = self.preference, r_i
        for _ in range(self.params.n_mm_layers):
            if self.user_graph is not None:
                h_u = layers.sparse_product(self.user_graph, self.user_graph_t, h_u)
            if self.item_graph is not None:
                h_i = layers.sparse_product(self.item_graph, self.item_graph_t, h_i)
        return r_u.view(n_users, -1), h_u, r_i, h_i

    def training_adjacency(self) -> Tensor:
        """The user–item graph of this training epoch: the full graph, or with ``edge_dropout``
        FREEDOM's degree-sensitive sample of the edges, drawn once per epoch (symmetric CSR)."""
        if self.params.edge_dropout <= 0:
            return self.adj
        if self._epoch_adj is None:
            n_users, n_items = self.preference.shape[0], self.item_embedding.shape[0]
            users, items = self.edge_pairs
            sample = graph.degree_sensitive_pruning(
                users, items, n_users, n_items, self.params.edge_dropout
            )
            self._epoch_adj = layers.frozen_pair(sample, symmetric=True)[0]
        return self._epoch_adj

    def train(self, mode: bool = True) -> FITMM:
        """Switch mode; a new training epoch draws a new edge sample (``edge_dropout``)."""
        if mode:
            self._epoch_adj = None
        return super().train(mode)

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (the IB warm-up reads it)."""
        self._epoch = epoch

    def ib_scale(self) -> float:
        """The IB weight's factor, ``min(1, epoch / ib_warmup_epochs)`` (release: always 1)."""
        warmup = self.params.ib_warmup_epochs
        return 1.0 if warmup <= 0 else min(1.0, self._epoch / warmup)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimiser: the raw feature tables get ``feature_lr_scale``.

        Returns:
            ``[{"params": [...], "lr_scale": 1.0}, {"params": tables, "lr_scale": s}]`` (one group
            when the scale is 1).
        """
        tables = {id(t) for t in self.feature_tables}
        rest = [q for q in self.parameters() if id(q) not in tables]
        groups = [{"params": rest, "lr_scale": 1.0}]
        if self.params.feature_lr_scale == 1.0:
            groups[0]["params"] = list(self.parameters())
        else:
            groups.append(
                {"params": list(self.feature_tables), "lr_scale": self.params.feature_lr_scale}
            )
        return groups

    def encode_features(self) -> list[Tensor]:
        """The feature MLPs over every real item's (trainable) raw features (§2.2).

        Returns:
            One [n_items-1, d] float32 tensor per modality.
        """
        device = self.item_embedding.device.type
        low = self.params.feature_mlp_dtype == "bfloat16"
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=low):
            out = [encoder(table) for encoder, table in zip(self.encoders, self.feature_tables)]
        return [x.float() for x in out]

    def fuse(
        self, base: Tensor, aux: Tensor, bands: Bands | None, gate: layers.BandGate
    ) -> tuple[Tensor, Tensor]:
        """Within-band components and gated band fusion of one side (§2.7–§2.8).

        Args:
            base: Base view R, [N, D] (also the gate's task embedding).
            aux: Auxiliary view H, [N, D].
            bands: The side's band split, or ``None`` for M = 1 (``band_1(X) = X``).
            gate: The side's :class:`layers.BandGate`.

        Returns:
            ``(e [N, D], gates [N, M])``, ``e = Σ_k β_k g_k Z^(k)``.
        """
        offsets = self.personal() if gate is self.user_gate and self.personal is not None else None
        coef, gates = gate(base, offsets)
        if self.training:
            coef = options.band_dropout(coef, self.params.band_dropout)
        if bands is None:
            return (base + aux) * coef, gates
        return spectral.fused_bands(base, aux, bands.bases, bands.labels, coef), gates

    def band_rows(self, views: tuple[Tensor, Tensor], bands: Bands | None, ids: Tensor) -> Tensor:
        """Within-band components ``Z^(k)`` of a batch (§2.7).

        Args:
            views: ``(R, H)`` of one side, each [N, D] (real rows).
            bands: That side's band split, or ``None`` for M = 1.
            ids: Ids (>= 1) of shape [b].

        Returns:
            [b, M, D]: ``Z^(k) = band_k(R) + band_k(H)``, modality blocks concatenated.
        """
        base, aux = views[0][ids - 1], views[1][ids - 1]
        if bands is None:
            return (base + aux).unsqueeze(1)
        m = self.params.num_freq_bands
        return spectral.band_rows(base, aux, bands.bases, bands.labels, m)

    def forward(self) -> FITMMPass:
        """Representations of all users and items (§2), as at every training step."""
        p = self.params
        r_u, h_u, r_i, h_i = self.base_views()
        user_bands = item_bands = None
        if p.num_freq_bands > 1:
            options = (p.svd_solver, p.svd_float64, p.svd_grad_guard)
            views = [r_u, h_u, r_i, h_i]
            bases, labels = spectral.band_bases(
                views, self.dim, p.num_freq_bands, *options, labels=self.band_labels
            )
            user_bands, item_bands = Bands(bases[:2], labels[0]), Bands(bases[2:], labels[2])
        e_u, g_u = self.fuse(r_u, h_u, user_bands, self.user_gate)
        e_i, g_i = self.fuse(r_i, h_i, item_bands, self.item_gate)
        e_u, e_i = (torch.cat([e.new_zeros(1, e.shape[1]), e]) for e in (e_u, e_i))  # PAD row
        return FITMMPass(e_u, e_i, (r_u, h_u), (r_i, h_i), user_bands, item_bands, g_u, g_i)

    def compute_representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations [n_users, D], [n_items, D] (row 0 zero)."""
        out = self.forward()
        if not self.training:  # kept for :meth:`diagnostics` (evaluation only, no autograd)
            self._eval_gates = (out.user_gates.detach(), out.item_gates.detach())
        return out.user_e, out.item_e

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """Scalars that describe the current weights, for the trainer's per-epoch history.

        Reads the representations and gates of the last evaluation (computes them if none);
        changes nothing. Keys: ``norm_user``/``norm_item`` (mean row norm of ``e_u``/``e_i``),
        ``gate_scale_*``, ``band_weights_*`` [M], ``gate_mean_*``/``gate_std_*`` [M],
        ``shut_off_*`` [M] (:func:`~recbole_fitmm.model.layers.shut_off_fraction`),
        ``feature_drift`` (per modality, ``‖F − F₀‖ / ‖F₀‖`` of the raw feature tables) and
        ``modality_weights`` (mean per-user block weights).
        """
        user_e, item_e = self.cached_representations()
        gates = getattr(self, "_eval_gates", None)
        stats: dict[str, Any] = {
            "norm_user": float(user_e[1:].norm(dim=1).mean()),
            "norm_item": float(item_e[1:].norm(dim=1).mean()),
            "modality_weights": self.user_weights.mean(0).tolist(),
            "feature_drift": [
                float((table - start.to(table)).norm() / start.norm().clamp_min(1e-12))
                for start, table in zip(self._initial_tables, self.feature_tables)
            ],
        }
        for side, gate, index in (("user", self.user_gate, 0), ("item", self.item_gate, 1)):
            stats[f"band_weights_{side}"] = torch.sigmoid(gate.band_logits).tolist()
            stats[f"gate_scale_{side}"] = float(gate.gate_scale) if gate.gated else None
            if gates is not None:
                stats[f"gate_mean_{side}"] = gates[index].mean(0).tolist()
                stats[f"gate_std_{side}"] = gates[index].std(0).tolist()
                stats[f"shut_off_{side}"] = layers.shut_off_fraction(
                    gates[index], gate.direction
                ).tolist()
        return stats

    # ------------------------------------------------------------------ losses
    def loss_terms(self, interaction: Any) -> dict[str, Tensor]:
        """Unweighted loss terms of one batch (§3).

        Args:
            interaction: Batch with ``USER_ID``, ``ITEM_ID`` and ``NEG_ITEM_ID`` of shape [B].

        Returns:
            ``rec``, ``ib`` (0 without gate) and ``consistency`` (0 when off or weighted 0).
        """
        p = self.params
        out = self.forward()
        users, pos, neg = self.batch_ids(interaction)
        user_e = out.user_e[users]
        pos_scores = (user_e * out.item_e[pos]).sum(dim=-1)
        neg_scores = (user_e * out.item_e[neg]).sum(dim=-1)
        terms = {"rec": layers.recommendation_loss(pos_scores, neg_scores, p.loss_type)}
        zero = pos_scores.new_zeros(())
        terms["ib"] = zero
        if p.use_gate:
            terms["ib"] = sum(
                layers.ib_surrogate(g, p.ib_direction, p.ib_alpha, p.ib_mu, p.ib_phi_plus)
                for g in (out.user_gates, out.item_gates)
            )
        terms["consistency"] = zero
        if p.consistency != "none" and p.reg_weight > 0:
            # Unique rows with their multiplicities: the same loss on a smaller B×B similarity.
            users, user_counts = torch.unique(users, return_counts=True)
            pos, item_counts = torch.unique(pos, return_counts=True)
            user_bands = self.band_rows(out.user_views, out.user_bands, users)
            item_bands = self.band_rows(out.item_views, out.item_bands, pos)
            tau = p.cl_temperature
            if p.consistency == "band":
                loss = layers.band_consistency_loss(
                    user_bands, item_bands, tau, user_counts, item_counts
                )
            else:
                loss = layers.cross_modal_consistency_loss(
                    user_bands, item_bands, self.dim, tau, (user_counts, item_counts)
                )
            terms["consistency"] = loss
        return terms

    def calculate_loss(self, interaction: Any) -> Tensor:
        """``rec + ib_weight·IB + reg_weight·consistency`` on one batch (a scalar)."""
        self.drop_cache()
        terms = self.loss_terms(interaction)
        p = self.params
        parts = {
            "rec": terms["rec"],
            "ib": p.ib_weight * self.ib_scale() * terms["ib"],
            "consistency": p.reg_weight * terms["consistency"],
        }
        # the weighted parts, summed per epoch by the trainer (named in a divergence warning)
        self.last_loss_parts = {name: value.detach() for name, value in parts.items()}
        return parts["rec"] + parts["ib"] + parts["consistency"]
