"""Paired tests of a model comparison: two models' per-user test metrics over several seeds.

Default test (``twolevel``, :func:`two_level_test`): a test of the mean per-user difference that
counts both sources of noise of a comparison, the sample of test users and the training seeds.
Each model's runs form a table ``X[s, u]`` (seed ``s``, user ``u``); ``d_u`` is the difference of
the two models' seed averages and ``D = mean_u d_u``, whose variance has two parts:

* seeds, ``v = s2 (1/S_a + 1/S_b)``: ``s2`` is the sample variance of a model's per-seed means
  ``mean_u X[s, u]`` pooled over the two models (``f = S_a + S_b - 2`` degrees of freedom, one
  model may have a single seed): a global shift per seed plus the per-user noise averaged over
  the users;
* users, ``u = max(var(d_u) - e2_a/S_a - e2_b/S_b, 0) / n``: the user-to-user variance of the
  true difference, without the per-user seed noise already in ``v`` (``e2``: residual mean square
  of a model's seeds x users table, pooled for a single-seed model).

With ``f`` this small, plugging ``s2`` into Welch–Satterthwaite degrees of freedom is liberal (up
to 9 % rejections at the 5 % level with 2 + 2 seeds), so the uncertainty of ``s2`` is integrated
out as in Fisher's solution of the Behrens–Fisher problem (:func:`two_level_pvalue`):
``p = P(|T| sqrt(u + v f / X) >= |D|)``, ``T ~ t(n - 1)``, ``X ~ chi2(f)``, two-sided for
H0: E[D] = 0. It is the paired t-test when ``v = 0``, Student's two-sample t-test of the
per-seed means when ``u = 0`` (n large). Not computed (``None``) with one seed of each model.
Seeds are *not* paired between models (seed 1 of two models shares no training state): the seed
sets may differ.

Measured on the simulation of ``tests/test_stats.py`` (2,000 null draws per setting, 1-3 test
items per user, seed shift sd 0-0.02, 1 to 5 seeds per model): 4.1-6.4 % of p < 0.05 for two runs
of the same model, 2.6-4.8 % for models that differ per user but not on average. A two-level
bootstrap (resample users and each model's seeds) rejected 0 % without seed shift (the per-user
seed noise counted twice) and 17 % with a dominant one (a 3-seed bootstrap variance is 2/3 of the
unbiased one, and the reference normal); Wilcoxon and the user-level paired t-test, which ignore
the seeds, 12-62 % once seeds shift (sd 0.005-0.02). They remain available as ``--test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special, stats

from recbole_fitmm.errors import ConfigError

DEFAULT_TEST = "twolevel"
PAIRED_TESTS = ("twolevel", "wilcoxon", "ttest")
TEST_DESCRIPTIONS = {
    "twolevel": "two-level test (users and seeds) of the mean difference",
    "wilcoxon": "Wilcoxon signed-rank test over users of the seed averages (no seed variance)",
    "ttest": "paired t-test over users of the seed averages (no seed variance)",
}
#: Upper edges (inclusive) of the user-activity groups: <= 5, 6-10, 11-20, > 20 training items.
DEFAULT_ACTIVITY_BINS = (5, 10, 20)


@dataclass(frozen=True)
class TwoLevelResult:
    """Outcome of :func:`two_level_test`.

    Attributes:
        diff: Mean over users of the difference of seed averages, ``best - other``.
        user_var: Users' part of the variance of ``diff`` (``u``).
        seed_var: Seeds' part of the variance of ``diff`` (``v``), estimated with ``seed_df``
            degrees of freedom.
        seed_df: Degrees of freedom of ``seed_var`` (``S_a + S_b - 2`` over models with 2+ seeds).
        n_users: Number of users.
        p_value: Two-sided p-value for H0: the expected difference is 0.
    """

    diff: float
    user_var: float
    seed_var: float
    seed_df: int
    n_users: int
    p_value: float


def _as_runs(values: np.ndarray) -> np.ndarray:
    runs = np.asarray(values, dtype=np.float64)
    return runs[None, :] if runs.ndim == 1 else runs


def _seed_parts(runs: np.ndarray) -> tuple[float, float]:
    """Sum of squares of the per-seed means and residual mean square of a [S, n] table."""
    seed_means = runs.mean(axis=1)
    residual = runs - seed_means[:, None] - runs.mean(axis=0)[None, :] + runs.mean()
    n_seeds, n_users = runs.shape
    return float(np.sum((seed_means - seed_means.mean()) ** 2)), float(
        np.sum(residual**2) / ((n_seeds - 1) * (n_users - 1))
    )


def two_level_pvalue(diff: float, user_var: float, seed_var: float, seed_df: int, n: int) -> float:
    """``P(|T| sqrt(user_var + seed_var * seed_df / X) >= |diff|)``, T ~ t(n-1), X ~ chi2(seed_df).

    The seed variance's uncertainty is integrated out (Fisher's fiducial argument, as for the
    Behrens-Fisher problem); computed by one adaptive quadrature over T:
    ``2 int_0^inf pdf_T(z) P(X <= seed_var seed_df z^2 / (diff^2 - user_var z^2)) dz`` (the
    probability is 1 where the denominator is <= 0).

    Args:
        diff: The mean difference.
        user_var: Users' part of its variance (known up to ``n - 1`` degrees of freedom).
        seed_var: Seeds' part of its variance, estimated with ``seed_df`` degrees of freedom.
        seed_df: Degrees of freedom of ``seed_var`` (at least 1).
        n: Number of users.

    Returns:
        The two-sided p-value: Student's t with ``n - 1`` degrees of freedom (the paired t-test)
        when ``seed_var`` is 0, tending to Student's t with ``seed_df`` degrees of freedom when
        ``user_var`` is 0 and ``n`` is large; 1.0 for ``diff == 0``, 0.0 when both variance parts
        are 0 and ``diff`` is not.
    """
    if n < 2 or seed_df < 1:
        raise ValueError(f"need n >= 2 users and seed_df >= 1, got n={n}, seed_df={seed_df}")
    size = abs(diff)
    if size == 0:
        return 1.0
    if user_var <= 0 and seed_var <= 0:
        return 0.0
    nu = n - 1
    if seed_var <= 0:
        return float(2 * special.stdtr(nu, -size / np.sqrt(user_var)))
    log_norm = special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)

    def inner(z: float) -> float:
        density = np.exp(log_norm - (nu + 1) / 2 * np.log1p(z * z / nu))
        room = size**2 - user_var * z * z  # P(X <= seed_var seed_df z^2 / room), 1 if room <= 0
        return density * (
            special.chdtr(seed_df, seed_var * seed_df * z * z / room) if room > 0 else 1.0
        )

    area = integrate.quad(inner, 0.0, np.inf, epsabs=0.0, epsrel=1e-10, limit=500)[0]
    return float(min(1.0, 2 * area))


def two_level_test(best: np.ndarray, other: np.ndarray) -> TwoLevelResult | None:
    """Two-level (users and seeds) test of the mean per-user difference of two models.

    Args:
        best: Per-user values of one model, shape [S_a, n] (one row per seed) or [n] (one seed).
        other: Per-user values of the other model, shape [S_b, n], same users in the same order.

    Returns:
        The difference, its two variance parts and the p-value of :func:`two_level_pvalue`;
        ``None`` when it cannot be computed (fewer than 2 users, or one seed of each model).
    """
    a, b = _as_runs(best), _as_runs(other)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two models have {a.shape[1]} and {b.shape[1]} users")
    n = a.shape[1]
    if n < 2 or len(a) + len(b) < 3:
        return None
    tables = (a, b)
    parts = {i: _seed_parts(runs) for i, runs in enumerate(tables) if len(runs) > 1}
    f = sum(len(tables[i]) - 1 for i in parts)
    seed_var = sum(sum_sq for sum_sq, _ in parts.values()) / f * (1 / len(a) + 1 / len(b))
    pooled_e2 = sum((len(tables[i]) - 1) * e2 for i, (_, e2) in parts.items()) / f
    noise = sum(parts.get(i, (0.0, pooled_e2))[1] / len(runs) for i, runs in enumerate(tables))
    d = a.mean(axis=0) - b.mean(axis=0)
    diff = float(d.mean())
    user_var = max(float(d.var(ddof=1)) - noise, 0.0) / n
    p = two_level_pvalue(diff, user_var, seed_var, f, n)
    return TwoLevelResult(diff, user_var, seed_var, f, n, p)


def paired_pvalue(best: np.ndarray, other: np.ndarray, method: str = DEFAULT_TEST) -> float | None:
    """Two-sided p-value of a paired test between two models' per-user values.

    Args:
        best: Per-user values of the best model, shape [S_a, n] (one row per seed) or [n].
        other: Per-user values of the other model, shape [S_b, n] or [n], same users in the same
            order.
        method: One of :data:`PAIRED_TESTS`: ``twolevel`` (:func:`two_level_test`), or
            ``wilcoxon`` (signed-rank) / ``ttest`` (paired t-test) over the seed averages.

    Returns:
        The p-value; 1.0 when the seed averages are equal for every user; ``None`` for fewer
        than 2 users or when the test cannot be computed (see :func:`two_level_test`).
    """
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    a, b = _as_runs(best), _as_runs(other)
    diff = a.mean(axis=0) - b.mean(axis=0)
    if len(diff) < 2:
        return None
    if not np.any(diff):
        return 1.0
    if method == "twolevel":
        result = two_level_test(a, b)
        return None if result is None else result.p_value
    if method == "wilcoxon":
        p = stats.wilcoxon(diff).pvalue
    else:
        p = stats.ttest_rel(a.mean(axis=0), b.mean(axis=0)).pvalue
    return float(p) if np.isfinite(p) else 1.0


def compare_to_best(
    values: dict[str, np.ndarray], best: str | None, models: Sequence[str], method: str
) -> dict[str, float | None]:
    """Raw p-values of the best model against every other model.

    Args:
        values: Model -> per-user values [S_m, n] (same users); models without runs are absent.
        best: The best model (``None``: nothing is tested).
        models: Every model of the table.
        method: One of :data:`PAIRED_TESTS`.

    Returns:
        Model -> p-value of :func:`paired_pvalue`; ``None`` for the best model and for models
        without values.
    """
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    return {
        model: paired_pvalue(values[best], values[model], method)
        if best in values and model in values and model != best
        else None
        for model in models
    }


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment for the family of the p-values given (``None`` is skipped).

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``.

    Args:
        pvalues: Raw p-values, ``None`` for comparisons that were not tested.

    Returns:
        Adjusted p-values in the same order, ``None`` where the input is ``None``.
    """
    tested = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(tested, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(tested) - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def check_bins(bins: Sequence[int]) -> tuple[int, ...]:
    """Validate user-activity bin edges.

    Args:
        bins: Increasing non-negative upper edges (inclusive), e.g. ``(5, 10, 20)``.

    Returns:
        The edges as a tuple of ints.
    """
    edges = tuple(int(edge) for edge in bins)
    if not edges or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"activity bins must be increasing non-negative integers, got {bins}")
    return edges


def activity_labels(bins: Sequence[int]) -> list[str]:
    """Labels of the groups cut by ``bins``, e.g. ``["<= 5", "6-10", "11-20", "> 20"]``.

    Args:
        bins: Upper edges, see :func:`check_bins`.

    Returns:
        ``len(bins) + 1`` labels.
    """
    edges = check_bins(bins)
    lows = [edge + 1 for edge in edges[:-1]]
    middle = [f"{low}" if low == high else f"{low}-{high}" for low, high in zip(lows, edges[1:])]
    return [f"<= {edges[0]}", *middle, f"> {edges[-1]}"]


def activity_groups(counts: np.ndarray, bins: Sequence[int]) -> np.ndarray:
    """The activity group of every user.

    Args:
        counts: Training-interaction count per user, int shape [n].
        bins: Upper edges, see :func:`check_bins`.

    Returns:
        Group index per user, int64 shape [n], in ``0 .. len(bins)`` (index into
        :func:`activity_labels`).
    """
    return np.searchsorted(np.asarray(check_bins(bins)), np.asarray(counts), side="left")
