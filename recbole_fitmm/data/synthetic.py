"""Deterministic synthetic multimodal datasets with known structure.

Users have latent tastes over topics, items have latent topics, every modality's feature matrix is
a noisy linear image of the item topics, and interactions are drawn from the tastes with a
long-tailed item popularity. The per-user split follows MMRec's rule (``fitmm_method.md`` §5), so
the files look exactly like converted MMRec data.

This module builds the embedded ``dataset_atomic/mmsynth`` dataset and the small datasets the tests
write into temporary folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recbole_fitmm.io import atomic_write_npy, atomic_write_text


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic dataset.

    Attributes:
        n_users: Number of users.
        n_items: Number of candidate items (items nobody interacts with are dropped).
        n_topics: Number of latent topics.
        modalities: Feature modality name -> feature dimension.
        noise: Modality name -> noise standard deviation relative to the topic signal (default 1.0).
        min_inter: Minimum interactions per user.
        mean_inter: Mean interactions per user (user activity is long-tailed).
        taste_concentration: Dirichlet concentration of user tastes (small = focused users).
        popularity_exponent: Weight of the Zipf popularity term in the interaction score.
        seed: Seed of the generator; the same spec always gives the same data.
    """

    n_users: int = 600
    n_items: int = 400
    n_topics: int = 8
    modalities: dict[str, int] = field(default_factory=lambda: {"image": 64, "text": 32})
    noise: dict[str, float] = field(default_factory=dict)
    min_inter: int = 5
    mean_inter: float = 18.0
    taste_concentration: float = 0.15
    popularity_exponent: float = 0.6
    seed: int = 2026


@dataclass
class SyntheticData:
    """A generated dataset.

    Attributes:
        inter: Int64 array [n_interactions, 3] of (user, item, x_label); x_label 0/1/2 =
            train/valid/test. Users and items are numbered 0..n-1 and every item occurs.
        features: Modality name -> float32 array [n_items, dim]; row r belongs to item r.
        tastes: User taste distributions, [n_users, n_topics].
        topics: Item topic distributions, [n_items, n_topics].
    """

    inter: np.ndarray
    features: dict[str, np.ndarray]
    tastes: np.ndarray
    topics: np.ndarray

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.tastes.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items (every one occurs in the interactions)."""
        return self.topics.shape[0]


def mmrec_split_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """MMRec's per-user split labels for ``n`` interactions, in a random order.

    Args:
        n: Number of interactions of the user (at least 3).
        rng: Random generator used to shuffle the user's interactions.

    Returns:
        Int64 array [n] of x_label values: n < 10 gives n-2 train, 1 valid, 1 test; otherwise
        ``vt = int(0.2 n)`` gives ``vt // 2`` valid and ``vt - vt // 2`` test.
    """
    if n < 10:
        labels = [0] * (n - 2) + [1, 2]
    else:
        vt = int(0.2 * n)
        labels = [0] * (n - vt) + [1] * (vt // 2) + [2] * (vt - vt // 2)
    return rng.permutation(np.asarray(labels, dtype=np.int64))


def generate(spec: SyntheticSpec) -> SyntheticData:
    """Generate a dataset from ``spec`` (deterministic in ``spec.seed``).

    Args:
        spec: Sizes, modalities and noise levels.

    Returns:
        The interactions with their split labels, the feature matrices and the latent structure.
    """
    rng = np.random.default_rng(spec.seed)
    n_topics = spec.n_topics
    # Items: one dominant topic plus a little mixture.
    main_topic = rng.integers(0, n_topics, size=spec.n_items)
    topics = rng.dirichlet(np.full(n_topics, 0.1), size=spec.n_items) * 0.3
    topics[np.arange(spec.n_items), main_topic] += 0.7
    # Users: focused tastes.
    tastes = rng.dirichlet(np.full(n_topics, spec.taste_concentration), size=spec.n_users)
    # Long-tailed popularity (random Zipf ranks).
    ranks = rng.permutation(spec.n_items) + 1
    log_pop = -spec.popularity_exponent * np.log(ranks)
    # Long-tailed activity.
    extra = rng.geometric(1.0 / max(spec.mean_inter - spec.min_inter + 1, 1.0), size=spec.n_users)
    counts = np.minimum(spec.min_inter + extra - 1, spec.n_items // 2)

    affinity = np.log(tastes @ topics.T + 1e-9) + log_pop  # [U, I]
    rows = []
    for u in range(spec.n_users):
        gumbel = rng.gumbel(size=spec.n_items)
        chosen = np.argpartition(-(affinity[u] + gumbel), counts[u])[: counts[u]]
        labels = mmrec_split_labels(len(chosen), rng)
        rows.append(np.stack([np.full(len(chosen), u), chosen, labels], axis=1))
    inter = np.concatenate(rows).astype(np.int64)

    # Drop items nobody touched and renumber the rest 0..n-1 in their original order.
    used = np.unique(inter[:, 1])
    remap = np.full(spec.n_items, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    inter[:, 1] = remap[inter[:, 1]]
    topics = topics[used]

    features = {}
    for name, dim in spec.modalities.items():
        projection = rng.normal(size=(n_topics, dim)) / np.sqrt(n_topics)
        signal = topics @ projection
        noise = rng.normal(size=signal.shape) * spec.noise.get(name, 1.0) * signal.std()
        features[name] = (signal + noise).astype(np.float32)
    return SyntheticData(inter=inter, features=features, tastes=tastes, topics=topics)


def write_atomic(data: SyntheticData, root: str | Path, name: str) -> Path:
    """Write ``data`` as RecBole benchmark files plus one ``.npy`` per modality.

    Args:
        data: The generated dataset.
        root: Folder that receives ``<name>/``.
        name: Dataset name.

    Returns:
        The dataset folder ``root/name`` holding ``<name>.{train,valid,test}.inter`` and
        ``<name>.<modality>.npy``.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\n"
    for label, part in enumerate(("train", "valid", "test")):
        rows = data.inter[data.inter[:, 2] == label]
        body = "".join(f"{u}\t{i}\n" for u, i, _ in rows)
        atomic_write_text(folder / f"{name}.{part}.inter", header + body)
    for modality, matrix in data.features.items():
        atomic_write_npy(folder / f"{name}.{modality}.npy", matrix)
    return folder
