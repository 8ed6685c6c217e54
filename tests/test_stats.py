"""The comparison's paired tests: calibration under the null, power, exact cases, Holm, bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from recbole_fitmm.errors import ConfigError
from recbole_fitmm.stats import (
    activity_groups,
    activity_labels,
    holm,
    paired_pvalue,
    two_level_pvalue,
    two_level_test,
)


def _simulate(
    rng: np.random.Generator,
    n_users: int,
    seeds: tuple[int, int],
    seed_sd: float,
    delta: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Recall@20 of two models, shape [S, n_users] each.

    Every user has a hit probability ``p_u`` (the same for both models, ``+ delta`` for the
    first) and 1-3 test items, so Recall@20 takes few discrete values; every run (seed) shifts
    all hit probabilities by one N(0, ``seed_sd``) draw: seed-to-seed variance.
    """
    p_u = np.minimum(rng.beta(0.5, 3.0, n_users), 0.6)
    items = rng.integers(1, 4, n_users)

    def runs(n_seeds: int, p: np.ndarray) -> np.ndarray:
        shifts = rng.normal(0.0, seed_sd, n_seeds)
        return np.stack([rng.binomial(items, np.clip(p + g, 0, 1)) / items for g in shifts])

    return runs(seeds[0], p_u + delta), runs(seeds[1], p_u)


def _null_pvalues(seeds: tuple[int, int], seed_sd: float, method: str, draws: int = 200):
    rng = np.random.default_rng(2024)
    return np.array(
        [paired_pvalue(*_simulate(rng, 2000, seeds, seed_sd), method) for _ in range(draws)]
    )


@pytest.mark.parametrize(
    "seeds, seed_sd",
    [((3, 3), 0.0), ((3, 3), 0.01), ((2, 3), 0.01), ((1, 3), 0.005), ((2, 2), 0.02)],
)
def test_two_level_test_is_calibrated_for_two_runs_of_the_same_model(seeds, seed_sd) -> None:
    pvalues = _null_pvalues(seeds, seed_sd, "twolevel")
    assert stats.kstest(pvalues, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(pvalues < 0.05) <= 0.09


def test_user_level_tests_ignore_seed_variance() -> None:
    """The same simulation has real seed variance: the user-level tests see differences."""
    for method in ("wilcoxon", "ttest"):
        assert np.mean(_null_pvalues((3, 3), 0.01, method) < 0.05) > 0.2


def test_a_planted_difference_is_found_and_a_tiny_one_is_not() -> None:
    rng = np.random.default_rng(7)
    found = [two_level_test(*_simulate(rng, 10_000, (3, 3), 0.002, 0.02)) for _ in range(20)]
    assert np.mean([result.p_value < 0.01 for result in found]) >= 0.8
    assert np.mean([result.diff for result in found]) == pytest.approx(0.02, abs=0.002)
    tiny = [two_level_test(*_simulate(rng, 300, (3, 3), 0.002, 0.002)) for _ in range(20)]
    assert np.mean([result.p_value < 0.05 for result in tiny]) <= 0.25


def test_hand_computed_case() -> None:
    best = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    other = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    result = two_level_test(best, other)
    # d = [1/2, -1/2, 1/2]: mean 1/6, variance 1/3, all of it per-user seed noise (residual mean
    # squares 1/6 and 1/2, halved for 2 seeds); per-seed means 2/3, 1/3 and 1/3, 1/3: pooled
    # variance (1/18 + 0) / 2 = 1/36 on 2 degrees of freedom, times 1/2 + 1/2.
    assert result.diff == pytest.approx(1 / 6)
    assert result.user_var == pytest.approx(0.0, abs=1e-15)
    assert result.seed_var == pytest.approx(1 / 36)
    assert (result.seed_df, result.n_users) == (2, 3)
    # p = P(|T_2| sqrt(2 / X) >= 1), T_2 ~ t(2), X ~ chi2(2): with T_2 = Z sqrt(2 / Y) and
    # X / 2, Y / 2 ~ Exp(1), p = P(Z^2 >= E1 E2) = 1 - int_0^inf e^-e sqrt(e / (e + 2)) de.
    exact = 1 - integrate.quad(lambda e: np.exp(-e) * np.sqrt(e / (e + 2)), 0, np.inf)[0]
    assert result.p_value == pytest.approx(exact, rel=1e-6)


def test_without_seed_variance_it_is_the_paired_t_test() -> None:
    rng = np.random.default_rng(3)
    best, other = rng.random(50), rng.random(50) - 0.1
    result = two_level_test(np.stack([best, best]), np.stack([other] * 3))
    assert result.seed_var == 0.0
    assert result.p_value == pytest.approx(stats.ttest_rel(best, other).pvalue, rel=1e-9)


def test_with_only_seed_variance_it_is_the_two_sample_t_test_on_seed_means() -> None:
    rng = np.random.default_rng(4)
    users = rng.random(100_000)
    shifts_a, shifts_b = rng.normal(0.01, 0.01, 3), rng.normal(0.0, 0.01, 2)
    result = two_level_test(users + shifts_a[:, None], users + shifts_b[:, None])
    assert result.user_var == pytest.approx(0.0, abs=1e-18)
    expected = stats.ttest_ind(shifts_a, shifts_b, equal_var=True).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-3)  # t(n - 1) instead of normal


@pytest.mark.parametrize(
    "diff, user_var, seed_var, seed_df", [(2.0, 1.0, 1.0, 2), (1.0, 1.0, 0.3, 1)]
)
def test_p_value_matches_its_definition_by_simulation(diff, user_var, seed_var, seed_df) -> None:
    rng = np.random.default_rng(5)
    draws = 1_000_000
    t, x = rng.standard_t(29, draws), rng.chisquare(seed_df, draws)
    simulated = np.mean(np.abs(t) * np.sqrt(user_var + seed_var * seed_df / x) >= diff)
    error = np.sqrt(simulated * (1 - simulated) / draws)
    assert abs(two_level_pvalue(diff, user_var, seed_var, seed_df, 30) - simulated) < 4 * error


def test_unequal_and_single_seed_sets() -> None:
    rng = np.random.default_rng(6)
    best, other = _simulate(rng, 500, (2, 3), 0.005, 0.05)
    assert two_level_test(best, other).seed_df == 3  # seeds are not paired between models
    assert two_level_test(best[:1], other).seed_df == 2
    assert two_level_test(best[:1], other[:1]) is None  # seed variance not estimable
    assert paired_pvalue(best[0], other[0]) is None
    assert paired_pvalue(best[0], other[0], "ttest") < 0.05
    with pytest.raises(ValueError, match="users"):
        two_level_test(best, other[:, 1:])


def test_paired_pvalue_edge_cases() -> None:
    values = np.random.default_rng(8).integers(0, 4, (3, 40)) / 4  # exact sums
    for method in ("twolevel", "wilcoxon", "ttest"):
        assert paired_pvalue(values, values[::-1], method) == 1.0  # equal seed averages
        assert paired_pvalue(values[:, :1], values[:2, :1] + 1, method) is None  # one user
    with pytest.raises(ConfigError, match="twolevel"):
        paired_pvalue(values, values, "sign")


def test_holm_step_down() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.02, 0.5]) == [None, pytest.approx(0.04), pytest.approx(0.5)]
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_activity_bins() -> None:
    assert activity_labels((5, 10, 20)) == ["<= 5", "6-10", "11-20", "> 20"]
    assert activity_labels((1, 2)) == ["<= 1", "2", "> 2"]
    counts = np.array([0, 5, 6, 10, 11, 20, 21, 300])
    assert activity_groups(counts, (5, 10, 20)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for bad in ((), (5, 5), (-1, 3), (10, 5)):
        with pytest.raises(ConfigError, match="bins"):
            activity_groups(counts, bad)
