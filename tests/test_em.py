"""fit_em: monotone (theorem 12), exact where the answer is closed form, ragged batches, no recompilation.

The recovery test is statistical: with a fixed seed, each fitted parameter must lie
within 5 asymptotic standard errors of the truth (computed from the true model and
the number of steps each state receives), so a correct fit fails with probability
below ~1e-5 per parameter; the seed makes the outcome deterministic.
"""

import jax
import numpy as np
import pytest

from arprob.distributions.arhmm import ARHMM
from arprob.distributions.hmm import HMM
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.learning import em, fit_em, fit_sgd

TRUE = ARHMM(np.array([0.5, 0.5]), np.array([[0.95, 0.05], [0.1, 0.9]]),
             np.array([[[[0.5]]], [[[-0.3]]]]), np.array([[1.0], [-1.0]]), np.array([[[0.3]], [[0.5]]]), 1)
START = ARHMM(np.array([0.5, 0.5]), np.array([[0.8, 0.2], [0.2, 0.8]]), np.array([[[[0.1]]], [[[0.0]]]]),
              np.array([[0.5], [-0.5]]), np.array([[[1.0]], [[1.0]]]), 1)


def with_lag_rows(prior, num_lags=1):
    """Prepend the rows of the unmodelled first ``num_lags`` steps (ignored by fit_em)."""
    return np.concatenate([np.ones(prior.shape[:1] + (num_lags,) + prior.shape[2:]), prior], axis=1)


def monotone(values):
    return np.all(np.diff(values) >= -1e-10 * np.abs(values[:-1]))


@pytest.fixture(scope="module")
def data():
    states, y = TRUE.sample_with_states(jax.random.key(0), (4,), length=300)
    assert states.shape == (4, 299)  # the states of the modelled steps t = 1..299
    return np.asarray(states), np.asarray(y)


def test_recovers_parameters_and_never_decreases(data):
    states, y = data
    fitted, values = fit_em(START, y, max_iters=100, tol=1e-10)
    assert monotone(values) and values[-1] > values[0]
    visits = np.array([(states == k).sum() for k in range(2)])
    variances = np.array([0.3, 0.5])
    bias_se = np.sqrt(variances / visits) * 3  # AR(1) regression: intercept variance is inflated by the lag
    np.testing.assert_array_less(np.abs(np.asarray(fitted.biases).ravel() - [1.0, -1.0]), 5 * bias_se)
    np.testing.assert_array_less(np.abs(np.asarray(fitted.weights).ravel() - [0.5, -0.3]), 5 * 3 / np.sqrt(visits))
    stay = np.diagonal(np.asarray(fitted.transition_probs))
    np.testing.assert_array_less(np.abs(stay - [0.95, 0.9]), 5 * np.sqrt(stay * (1 - stay) / visits))
    np.testing.assert_array_less(np.abs(np.asarray(fitted.covariances).ravel() - variances),
                                 5 * variances * np.sqrt(2 / visits))


def test_known_states_give_the_supervised_estimates_in_one_step(data):
    states, y = data
    prior = with_lag_rows(np.eye(2)[states])  # one-hot: the states are known at every modelled step
    fitted, values = fit_em(START, y, state_prior=prior, max_iters=1)
    s = states
    counts = np.zeros((2, 2))
    np.add.at(counts, (s[:, :-1].ravel(), s[:, 1:].ravel()), 1)
    np.testing.assert_allclose(fitted.transition_probs, counts / counts.sum(1, keepdims=True), atol=1e-12)
    for k in range(2):
        rows = s == k
        features = np.stack([y[:, :-1, 0][rows], np.ones(rows.sum())], axis=1)
        target = y[:, 1:, 0][rows]
        solution, *_ = np.linalg.lstsq(features, target, rcond=None)
        np.testing.assert_allclose([fitted.weights[k, 0, 0, 0], fitted.biases[k, 0]], solution, atol=1e-10)
        residual = target - features @ solution
        np.testing.assert_allclose(fitted.covariances[k, 0, 0], np.mean(residual**2), rtol=1e-10)


@pytest.mark.parametrize("case", ["soft", "hard", "missing", "stationary", "frozen"])
def test_every_iteration_is_monotone_with_partial_knowledge(data, case):
    states, y = data
    y = y[:3, :120]
    rng = np.random.default_rng(1)
    kwargs = {}
    model = START
    if case == "soft":
        kwargs["state_prior"] = rng.dirichlet(np.ones(2), size=y.shape[:2])
    if case == "hard":
        prior = np.ones((3, 119, 2))
        known = rng.random((3, 119)) < 0.2
        prior[known] = np.eye(2)[states[:3, :119][known]]
        kwargs["state_prior"] = with_lag_rows(prior)
    if case == "missing":
        mask = rng.random(y.shape[:2]) > 0.1
        y = np.where(mask[..., None], y, np.nan)
        kwargs["mask"] = mask
    if case == "stationary":
        model = ARHMM("stationary", START.transition_probs, START.weights, START.biases, START.covariances, 1)
    if case == "frozen":
        kwargs["freeze"] = ("weights", "covariances")
    fitted, values = fit_em(model, y, max_iters=30, tol=0.0, **kwargs)
    assert monotone(values), np.diff(values)
    assert values[-1] > values[0] + 1.0
    if case == "stationary":
        assert fitted.stationary
        np.testing.assert_allclose(fitted.initial_probs @ fitted.transition_probs, fitted.initial_probs, atol=1e-12)
    if case == "frozen":
        np.testing.assert_array_equal(fitted.weights, START.weights)
        np.testing.assert_array_equal(fitted.covariances, START.covariances)


def test_padding_changes_nothing_and_no_recompilation(data):
    _, y = data
    lengths = np.array([300, 200, 150, 90])
    padded_a = y.copy()
    padded_b = y.copy()
    for n, length in enumerate(lengths):
        padded_a[n, length:] = 0.0
        padded_b[n, length:] = 1e3  # garbage in the padding
    fit_a, values_a = fit_em(START, padded_a, lengths=lengths, max_iters=5, tol=0.0)
    size = em._e_step._cache_size()
    fit_b, values_b = fit_em(START, padded_b, lengths=lengths, max_iters=5, tol=0.0)
    assert em._e_step._cache_size() == size  # same shapes: the second fit compiled nothing new
    np.testing.assert_allclose(values_a, values_b, rtol=1e-12)
    for name in ("transition_probs", "weights", "biases", "covariances"):
        np.testing.assert_allclose(getattr(fit_a, name), getattr(fit_b, name), atol=1e-12)


def simulate_hmm(rng, initial, transition, emission, num_sequences, length):
    states = np.zeros((num_sequences, length), int)
    for n in range(num_sequences):
        states[n, 0] = rng.choice(2, p=initial)
        for t in range(1, length):
            states[n, t] = rng.choice(2, p=transition[states[n, t - 1]])
    tokens = np.array([[rng.choice(3, p=emission[z]) for z in row] for row in states])
    return states, tokens


def test_hmm_categorical_em_is_monotone_and_supervised_exact():
    initial, transition = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
    emission = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    states, tokens = simulate_hmm(np.random.default_rng(3), initial, transition, emission, 3, 200)
    start = HMM(np.array([0.5, 0.5]), np.array([[0.7, 0.3], [0.3, 0.7]]),
                np.array([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]), 200)
    fitted, values = fit_em(start, tokens, max_iters=40, tol=0.0)
    assert monotone(values) and values[-1] > values[0]
    np.testing.assert_allclose(values[0], float(np.sum(start.log_prob(tokens))), rtol=1e-12)
    fitted, _ = fit_em(start, tokens, state_prior=np.eye(2)[states], max_iters=1)
    counts = np.zeros((2, 3))
    np.add.at(counts, (states.ravel(), tokens.ravel()), 1)
    np.testing.assert_allclose(fitted.emission_probs, counts / counts.sum(1, keepdims=True), atol=1e-12)
    pairs = np.zeros((2, 2))
    np.add.at(pairs, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    np.testing.assert_allclose(fitted.transition_probs, pairs / pairs.sum(1, keepdims=True), atol=1e-12)


def test_errors(data):
    _, y = data
    with pytest.raises(ShapeError, match="state_prior"):
        fit_em(START, y, state_prior=np.ones((2, 2)))
    with pytest.raises(InvalidArgumentError, match="state_prior"):
        fit_em(START, y, state_prior=-np.ones(y.shape[:2] + (2,)))
    with pytest.raises(ArprobTypeError, match="key"):
        fit_em(START, y, num_restarts=3)
    with pytest.raises(InvalidArgumentError, match="freeze"):
        fit_em(START, y, freeze=("emission_probs",))
    with pytest.raises(ArprobTypeError, match="ARHMM or arprob.HMM"):
        fit_em(object(), y)
    with pytest.raises(InvalidArgumentError, match="lengths"):
        fit_em(START, y, lengths=np.array([1, 2, 3, 400]))


def test_fit_sgd_reaches_the_em_optimum(data):
    """The gradient path through the same likelihood ends where EM does (same data, same start)."""
    _, y = data
    _, values = fit_em(START, y, max_iters=200, tol=1e-12)
    fitted, losses = fit_sgd(START, y, num_steps=300, learning_rate=0.05)
    assert losses[-1] < losses[0]
    assert losses[-1] == pytest.approx(-values[-1], abs=1e-3)  # measured gap: 2e-8 nats
    np.testing.assert_allclose(float(np.sum(fitted.log_prob(y))), -losses[-1], rtol=1e-10)
    with pytest.raises(InvalidArgumentError, match="stationary"):
        fit_sgd(ARHMM("stationary", START.transition_probs, START.weights, START.biases, START.covariances, 1), y)


def test_too_few_steps_for_the_regression_give_finite_estimates():
    """Two modelled steps, three coefficients per output (D = 2, p = 1, bias): the Gram matrix is singular;
    the M-step takes the minimum-norm solution (it used to return NaN)."""
    model = ARHMM(np.array([1.0, 0.0]), np.array([[0.9, 0.1], [0.1, 0.9]]), np.zeros((2, 1, 2, 2)),
                  np.zeros((2, 2)), np.stack([np.eye(2)] * 2), 1)
    y = np.array([[0.1, 0.2], [0.4, -0.3], [1.0, 0.5]])
    fitted, values = fit_em(model, y, max_iters=3)
    for array in (fitted.weights, fitted.biases, fitted.covariances, fitted.transition_probs):
        assert np.all(np.isfinite(np.asarray(array)))
    assert monotone(values)
