"""Prognostics: degradation level against path enumeration, RUL law against matrix powers and simulation."""

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from arprob.distributions.arhmm import ARHMM
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.prognostics import degradation_level, rul_distribution, time_to_threshold


def _left_to_right(stay):
    """Left-to-right transitions with the given probabilities of staying; the last state absorbing."""
    num_states = len(stay) + 1
    transition = np.zeros((num_states, num_states))
    for k, probability in enumerate(stay):
        transition[k, k], transition[k, k + 1] = probability, 1 - probability
    transition[-1, -1] = 1.0
    return transition


def _model(transition, seed=0, initial=None):
    rng = np.random.default_rng(seed)
    num_states = transition.shape[0]
    initial = np.eye(num_states)[0] if initial is None else initial
    weights = 0.3 * rng.normal(size=(num_states, 1, 2, 2))
    biases = np.stack([np.linspace(0, 2, num_states), np.linspace(0, 1, num_states)], axis=1)
    factors = 0.4 * rng.normal(size=(num_states, 2, 2))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.3 * np.eye(2)
    return ARHMM(initial, transition, weights, biases, covariances, num_lags=1)


def _record(seed):
    """Any record will do for the filters (it need not come from the model); NumPy, so nothing to compile."""
    return np.cumsum(0.5 * np.random.default_rng(seed).normal(size=(7, 2)), axis=0)


def _emission_densities(model, y):
    """``dens[i, k] = N(y[1+i]; A_k y[i] + b_k, Q_k)`` by scipy (independent of arprob's kernels)."""
    weights, biases, covariances = (np.asarray(a) for a in (model.weights, model.biases, model.covariances))
    return np.array([[stats.multivariate_normal(weights[k, 0] @ y[t - 1] + biases[k], covariances[k]).pdf(y[t])
                      for k in range(model.num_states)] for t in range(1, len(y))])


def _path_weights(model, densities, steps):
    """All state paths over the first ``steps`` modelled steps and their joint weights with the data."""
    initial, transition = np.asarray(model.initial_probs), np.asarray(model.transition_probs)
    paths = np.array(list(itertools.product(range(model.num_states), repeat=steps)))
    weights = initial[paths[:, 0]] * densities[0, paths[:, 0]]
    for t in range(1, steps):
        weights = weights * transition[paths[:, t - 1], paths[:, t]] * densities[t, paths[:, t]]
    return paths, weights


def test_degradation_level_matches_path_enumeration():
    model = _model(_left_to_right([0.7, 0.6, 0.8]), seed=1, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    y = _record(3)
    levels = np.array([0.0, 0.4, 1.5, 3.0])
    densities = _emission_densities(model, y)
    steps = len(y) - 1
    filtered = []
    for t in range(steps):
        paths, weights = _path_weights(model, densities, t + 1)
        filtered.append(weights @ levels[paths[:, t]] / weights.sum())
    paths, weights = _path_weights(model, densities, steps)
    smoothed = [weights @ levels[paths[:, t]] / weights.sum() for t in range(steps)]
    result = degradation_level(model, y, levels=levels)
    np.testing.assert_allclose(result.filtered, filtered, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.smoothed, smoothed, rtol=0, atol=1e-10)
    default = degradation_level(model, y)
    np.testing.assert_allclose(default.smoothed, np.asarray(model.smooth(y).smoothed_probs) @ np.arange(4),
                               atol=1e-12)


def test_known_state_fixes_the_level():
    model = _model(_left_to_right([0.7, 0.6, 0.8]), seed=1)
    y = _record(4)
    log_prior = np.zeros((6, 4))
    log_prior[2] = np.where(np.arange(4) == 1, 0.0, -np.inf)
    result = degradation_level(model, y, log_prior=log_prior)
    assert abs(float(result.filtered[2]) - 1.0) < 1e-12 and abs(float(result.smoothed[2]) - 1.0) < 1e-12
    # left to right: before the known state 1 the smoothed level is <= 1, after it >= 1
    assert np.all(np.asarray(result.smoothed[:2]) <= 1 + 1e-12) and np.all(np.asarray(result.smoothed[3:]) >= 1 - 1e-12)


def _brute_force_rul(state_probs, transition, threshold, max_horizon):
    """P(R <= h) = (alpha P~^h)(F) with the failure rows of P made absorbing, by numpy matrix powers."""
    absorbing = transition.copy()
    absorbing[threshold:] = np.eye(len(state_probs))[threshold:]
    cdf = np.array([(state_probs @ np.linalg.matrix_power(absorbing, h))[threshold:].sum()
                    for h in range(max_horizon + 1)])
    return np.diff(cdf, prepend=0.0), 1 - cdf[-1]


@pytest.mark.parametrize("left_to_right", [True, False])
def test_rul_distribution_equals_matrix_powers(left_to_right):
    rng = np.random.default_rng(5)
    transition = _left_to_right([0.8, 0.7, 0.9]) if left_to_right else rng.dirichlet(np.ones(4), size=4)
    model = _model(transition, seed=2, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    y = _record(6)
    state_probs = np.asarray(model.filter(y).filtered_probs[-1])
    for threshold in (1, 2, 3):
        law = rul_distribution(model, y, threshold, max_horizon=25)
        probs, censored = _brute_force_rul(state_probs, np.asarray(transition), threshold, 25)
        np.testing.assert_allclose(law.probs, probs, rtol=0, atol=1e-12)
        assert abs(float(law.censored_prob) - censored) < 1e-12
        assert abs(float(law.probs.sum() + law.censored_prob) - 1) < 1e-12


def test_quantiles():
    model = _model(_left_to_right([0.8, 0.7, 0.9]), seed=3)
    y = _record(7)
    law = rul_distribution(model, y, 2, max_horizon=25)
    cdf = law.cdf()
    median, upper = law.quantile([0.5, 0.95])
    assert np.isfinite(upper) and 1e-8 < float(law.censored_prob) < 0.05
    assert cdf[int(median)] >= 0.5 and (median == 0 or cdf[int(median) - 1] < 0.5)
    assert cdf[int(upper)] >= 0.95 and cdf[int(upper) - 1] < 0.95
    assert np.isinf(law.quantile(1.0 - 0.5 * float(law.censored_prob)))  # beyond the horizon
    with pytest.raises(InvalidArgumentError, match="q must lie in"):
        law.quantile(1.5)


def test_simulated_rul_matches_exact_law():
    """Pearson chi-square of 20,000 simulated RULs against the exact law; false-alarm rate 1e-3 (seed fixed)."""
    model = _model(_left_to_right([0.85, 0.8, 0.9]), seed=4, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    y = _record(8)
    max_horizon, num_samples = 25, 20_000
    law = rul_distribution(model, y, 3, max_horizon)
    draws = time_to_threshold(jax.random.key(9), model, y, 3, num_samples, max_horizon)
    times, censored = np.asarray(draws.times), np.asarray(draws.censored)
    assert np.all(times[censored] == max_horizon)
    counts = np.append(np.bincount(times[~censored], minlength=max_horizon + 1), censored.sum())
    expected = num_samples * np.append(np.asarray(law.probs), float(law.censored_prob))
    assert np.all(counts[expected == 0] == 0)  # impossible values never drawn
    # pool bins with expected count < 5 into their neighbour (left to right)
    pooled_counts, pooled_expected, run_count, run_expected = [], [], 0, 0.0
    for count, value in zip(counts, expected):
        run_count, run_expected = run_count + count, run_expected + value
        if run_expected >= 5:
            pooled_counts.append(run_count)
            pooled_expected.append(run_expected)
            run_count, run_expected = 0, 0.0
    pooled_counts[-1] += run_count
    pooled_expected[-1] += run_expected
    statistic, p_value = stats.chisquare(pooled_counts, pooled_expected)
    assert len(pooled_counts) >= 10
    assert p_value > 1e-3, (statistic, p_value)


def test_simulation_detects_a_wrong_law():
    """Power check: the same test rejects the draws against the law of another chain."""
    model = _model(_left_to_right([0.85, 0.8, 0.9]), seed=4, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    other = _model(_left_to_right([0.8, 0.8, 0.9]), seed=4, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    y = _record(8)
    law = rul_distribution(other, y, 3, 25)
    draws = time_to_threshold(jax.random.key(9), model, y, 3, 20_000, 25)
    counts = np.append(np.bincount(np.asarray(draws.times)[~np.asarray(draws.censored)], minlength=26),
                       np.asarray(draws.censored).sum())
    expected = 20_000 * np.append(np.asarray(law.probs), float(law.censored_prob))
    keep = expected >= 5
    scaled = expected[keep] * counts[keep].sum() / expected[keep].sum()
    assert stats.chisquare(counts[keep], scaled).pvalue < 1e-6


def test_already_failed_and_validation():
    model = _model(_left_to_right([0.8, 0.7, 0.9]), seed=5)
    y = _record(10)
    log_prior = np.zeros((6, 4))
    log_prior[-1] = np.where(np.arange(4) == 2, 0.0, -np.inf)  # known to be in the failure set now
    law = rul_distribution(model, y, 2, 25, log_prior=log_prior)
    assert abs(float(law.probs[0]) - 1) < 1e-12
    draws = time_to_threshold(jax.random.key(1), model, y, 2, 20_000, 25, log_prior=log_prior)
    assert np.all(np.asarray(draws.times) == 0) and not np.any(np.asarray(draws.censored))
    for bad in (0, 4, -1):
        with pytest.raises(InvalidArgumentError, match="threshold_state"):
            rul_distribution(model, y, bad, 5)
    with pytest.raises(ArprobTypeError, match="threshold_state must be an int"):
        time_to_threshold(jax.random.key(0), model, y, 1.5, 10, 5)
    with pytest.raises(InvalidArgumentError, match="max_horizon"):
        rul_distribution(model, y, 1, 0)
    with pytest.raises(InvalidArgumentError, match="num_samples"):
        time_to_threshold(jax.random.key(0), model, y, 1, 0, 5)
    with pytest.raises(ArprobTypeError, match="must be an arprob.ARHMM"):
        degradation_level(object(), y)
    with pytest.raises(ShapeError, match="levels has shape"):
        degradation_level(model, y, levels=np.arange(3.0))
    with pytest.raises(InvalidArgumentError, match="levels must be finite"):
        degradation_level(model, y, levels=np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(ShapeError):
        rul_distribution(model, y[:, :1], 1, 5)


def test_padded_record_with_length_equals_the_cut_record():
    model = _model(_left_to_right([0.8, 0.7, 0.9]), seed=6, initial=np.array([0.5, 0.3, 0.15, 0.05]))
    y = _record(11)
    padded = np.concatenate([np.asarray(y), 100.0 * np.ones((3, 2))])  # junk after the valid rows
    for length in (4, 7):
        cut = rul_distribution(model, y[:length], 3, 25)
        law = rul_distribution(model, padded, 3, 25, length=length)
        np.testing.assert_allclose(law.probs, cut.probs, rtol=0, atol=1e-12)
        assert abs(float(law.censored_prob) - float(cut.censored_prob)) < 1e-12
    draws = time_to_threshold(jax.random.key(2), model, padded, 3, 20_000, 25, length=5)
    assert draws.times.shape == (20_000,)
    for bad in (1, 11):
        with pytest.raises(InvalidArgumentError, match="length"):
            rul_distribution(model, padded, 3, 25, length=bad)
