"""FITMM's hyperparameters (``properties/model/FITMM.yaml``), read once into a frozen dataclass.

The released model's keys come first, then the numerics of the band split, then the options that
change the release's arithmetic (all off by default; BENCHMARKS.md measures each).
"""

from __future__ import annotations

from dataclasses import dataclass

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.model import graph, layers, options, spectral
from recbole_fitmm.model.params import ModelParams, check

CONSISTENCIES = ("band", "cross_modal", "none")
FEATURE_MLP_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class FITMMParams(ModelParams):
    """FITMM hyperparameters, one field per key of ``properties/model/FITMM.yaml``.

    Attributes:
        embedding_size: Latent size d of each block (64); D = B·d.
        mlp_hidden_size: Hidden size of the feature MLPs (256 = 4d).
        num_layers: User–item propagation layers, summed with layer 0 (2).
        n_mm_layers: Hops of the item (and user) kNN graph (1).
        knn_k: Neighbours per node of the kNN graphs (10).
        mm_image_weight: Weight of the ``image`` modality's graph in ``S_mm`` (0.1); the other
            modalities share the rest equally, without an ``image`` modality all are equal, a
            single modality gets 1 (:func:`graph.modality_weights`, shared with FREEDOM/DRAGON).
        modality_weights: Explicit graph weights in ``modalities`` order (normalised to sum 1);
            overrides ``mm_image_weight`` when set.
        use_item_graph: ``H_i = S_mm R_i``; ``False`` (ablation) gives ``H_i = R_i`` as the
            release's switch does.
        use_user_graph: ``H_u = S_user P`` from the dataset's ``user_modality`` features.
        num_freq_bands: Bands M (3); 1 = no decomposition (ablation).
        use_gate: Residual gate; ``False`` (ablation) fixes ``g = 1``, so the IB term is 0.
        ib_direction: ``Pos`` (sigmoid gate) or ``Dual`` (tanh gate).
        ib_alpha: α of the IB surrogate.
        ib_mu: μ of the IB surrogate.
        ib_phi_plus: φ⁺ of the IB surrogate.
        ib_weight: λ_IB; 0 = IB off (ablation).
        consistency: ``band`` (§3.3, release), ``cross_modal`` (§3.4) or ``none`` (ablation).
        reg_weight: λ_cl, weight of the consistency loss.
        cl_temperature: τ of the consistency losses.
        loss_type: ``bce`` (release) or ``bpr``.
        svd_solver: ``gram`` (stable backward) or ``svd`` (release's autograd).
        svd_float64: Run the decomposition in float64.
        svd_grad_guard: Relative Lorentzian width of the ``gram`` backward (0 = exact 1/Δ).
        train_features: Train the raw feature tables, as the release does (``True``); ``False``
            keeps them fixed (an option for the tiktok investigation in BENCHMARKS.md).
        feature_mlp_dtype: ``float32`` (faithful) or ``bfloat16``: the feature MLPs' products
            run under bfloat16 autocast (weights and feature tables stay float32). A speed
            option, not the release's arithmetic (BENCHMARKS.md measures both).
        learning_rate: Adam learning rate (the release's model yaml: 1e-4); read by the trainer.

        The options below change the release's arithmetic; each is off by default and measured
        in BENCHMARKS.md ("FITMM on sparse data").

        feature_preprocess: ``none`` (release), ``center`` (subtract each modality's mean
            feature vector) or ``whiten`` (ZCA whitening) of the raw features, before the kNN
            graph and the feature tables (:func:`options.preprocess_features`).
        feature_lr_scale: Learning-rate multiplier of the raw feature tables (1 = release).
        ib_warmup_epochs: The IB weight grows linearly from 0 over this many epochs (0 = release).
        band_dropout: Training-time probability of dropping each high band (k >= 2) of a row
            (:func:`options.band_dropout`; 0 = release).
        personal_bands: ``none`` (release), ``user`` (a learned band-weight offset per user) or
            ``activity`` (band-weight offsets proportional to the user's standardised
            log-activity): user-dependent frequency selection (:class:`options.PersonalBands`).
        edge_dropout: Fraction of user–item edges dropped in each training epoch with
            FREEDOM's degree-sensitive sampling (0 = release).
        gate_normalise: Divide each row's gates by their mean over the bands, so the gate
            re-weights bands but cannot scale a whole representation (``False`` = release).
    """

    embedding_size: int
    mlp_hidden_size: int
    num_layers: int
    n_mm_layers: int
    knn_k: int
    mm_image_weight: float
    modality_weights: list[float] | None
    use_item_graph: bool
    use_user_graph: bool
    num_freq_bands: int
    use_gate: bool
    ib_direction: str
    ib_alpha: float
    ib_mu: float
    ib_phi_plus: float
    ib_weight: float
    consistency: str
    reg_weight: float
    cl_temperature: float
    loss_type: str
    svd_solver: str
    svd_float64: bool
    svd_grad_guard: float
    train_features: bool
    feature_mlp_dtype: str
    learning_rate: float
    feature_preprocess: str
    feature_lr_scale: float
    ib_warmup_epochs: int
    band_dropout: float
    personal_bands: str
    edge_dropout: float
    gate_normalise: bool

    POSITIVE = (
        "embedding_size",
        "mlp_hidden_size",
        "knn_k",
        "n_mm_layers",
        "cl_temperature",
        "learning_rate",
    )
    NON_NEGATIVE = (
        "ib_alpha",
        "ib_mu",
        "ib_phi_plus",
        "ib_weight",
        "reg_weight",
        "num_layers",
        "svd_grad_guard",
        "feature_lr_scale",
        "ib_warmup_epochs",
    )
    FRACTIONS = ("mm_image_weight",)
    CHOICES = {
        "ib_direction": layers.IB_DIRECTIONS,
        "consistency": CONSISTENCIES,
        "loss_type": layers.LOSS_TYPES,
        "svd_solver": spectral.SOLVERS,
        "feature_mlp_dtype": FEATURE_MLP_DTYPES,
        "feature_preprocess": options.FEATURE_PREPROCESSING,
        "personal_bands": options.PERSONAL_BANDS,
    }

    def check_more(self) -> None:
        """The number of bands, the explicit modality weights and the dropout rates."""
        for name in ("band_dropout", "edge_dropout"):
            rate = getattr(self, name)
            check(0.0 <= rate < 1.0, "FITMM", f"{name} must be in [0, 1), got {rate}")
        check(
            1 <= self.num_freq_bands <= self.embedding_size,
            "FITMM",
            f"num_freq_bands must be in [1, embedding_size = {self.embedding_size}] (the bands "
            f"split the {self.embedding_size} singular values of a block), got "
            f"{self.num_freq_bands}",
        )
        weights = self.modality_weights
        check(
            weights is None
            or (
                isinstance(weights, list | tuple)
                and len(weights) > 0
                and all(isinstance(w, int | float) and w >= 0 for w in weights)
                and sum(weights) > 0
            ),
            "FITMM",
            f"modality_weights must be null or a list of weights >= 0 with a positive sum, "
            f"got {weights!r}",
        )


def item_graph_weights(params: FITMMParams, names: list[str]) -> list[float]:
    """Weight of each modality's kNN graph in ``S_mm`` (rule in :class:`FITMMParams`).

    Args:
        params: The model's hyperparameters.
        names: Feature modality names in dataset order.

    Returns:
        One weight per modality, summing to 1.

    Raises:
        ConfigError: ``modality_weights`` does not have one entry per modality.
    """
    if params.modality_weights is None:
        return graph.modality_weights(names, params.mm_image_weight)
    weights = [float(w) for w in params.modality_weights]
    if len(weights) != len(names):
        raise ConfigError(
            f"FITMM: modality_weights has {len(weights)} entries for the modalities {names}; "
            "give one weight per modality, in the same order"
        )
    return [w / sum(weights) for w in weights]
