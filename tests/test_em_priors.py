"""fit_em with conjugate priors (MAP-EM): Dirichlet rows, matrix-normal AR weights, inverse-Wishart covariances.

The priors' log-densities are taken from scipy.stats (``dirichlet``, ``matrix_normal``,
``invwishart``), independently of the library's closed-form M-step, and checked two ways:

* MAP-EM never decreases the penalized objective F + log prior (every iteration);
* with the states known (one-hot ``state_prior``) one step lands on the maximizer of the
  penalized complete-data objective: its directional derivatives vanish (central differences,
  |d| < 1e-5), while the maximum-likelihood step's do not (|d| > 1e-2: the check can fail).
"""

import jax
import numpy as np
import pytest
from scipy import stats

from arprob.distributions.arhmm import ARHMM
from arprob.distributions.hmm import HMM
from arprob.errors import InvalidArgumentError, ShapeError
from arprob.learning import fit_em

D, K = 2, 2
LAMBDA, PSI, COUNT, ALPHA = 3.0, np.array([[0.5, 0.1], [0.1, 0.4]]), 2 * D + 3.0, 2.0

TRUE = ARHMM(np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.15, 0.85]]),
             np.array([[[[0.5, 0.1], [0.0, 0.3]]], [[[-0.4, 0.0], [0.2, 0.1]]]]),
             np.array([[1.0, 0.0], [-1.0, 0.5]]),
             np.array([[[0.3, 0.05], [0.05, 0.2]], [[0.5, -0.1], [-0.1, 0.4]]]), 1)
START = ARHMM(np.array([0.5, 0.5]), np.array([[0.7, 0.3], [0.3, 0.7]]), np.zeros((K, 1, D, D)),
              np.array([[0.5, 0.0], [-0.5, 0.0]]), np.stack([np.eye(D)] * K), 1)
PRIORS = dict(transition_concentration=ALPHA, weights_precision=LAMBDA, covariance_prior_scale=PSI,
              covariance_prior_count=COUNT)


@pytest.fixture(scope="module")
def data():
    states, y = TRUE.sample_with_states(jax.random.key(4), (3,), length=60)
    return np.asarray(states), np.asarray(y)


def log_prior(model, tied):
    """log p(theta) from scipy: Dirichlet rows, A_k | Q_k ~ MN(0, Q_k, I / lambda), Q ~ IW(n0 - D - 1, Psi)."""
    total = sum(stats.dirichlet(np.full(K, ALPHA)).logpdf(row) for row in np.asarray(model.transition_probs))
    covariances = np.asarray(model.covariances)
    for k in range(K):
        weights = np.asarray(model.weights[k, 0])  # (D, pD) with p = 1
        total += stats.matrix_normal(np.zeros((D, D)), rowcov=covariances[k], colcov=np.eye(D) / LAMBDA).logpdf(
            weights)
    wishart = stats.invwishart(df=COUNT - D - 1, scale=PSI)
    total += wishart.logpdf(covariances[0]) if tied else sum(wishart.logpdf(c) for c in covariances)
    return total


def log_likelihood(model, y):
    return float(np.sum(np.asarray(model.log_prob(y))))


@pytest.mark.parametrize("tied", [False, True])
def test_map_em_never_decreases_the_penalized_objective(data, tied):
    _, y = data
    penalized = []
    model = START
    for _ in range(12):  # one step at a time, so that the prior can be evaluated at every iterate
        penalized.append(log_likelihood(model, y) + log_prior(model, tied))
        model, _ = fit_em(model, y, max_iters=1, tied_covariance=tied, **PRIORS)
    diffs = np.diff(penalized)
    assert np.all(diffs >= -1e-9 * np.abs(penalized[:-1])), diffs
    assert penalized[-1] > penalized[0] + 1.0


def complete_objective(y, states, weights, biases, covariances, with_prior):
    """Emission part of log p(y, z) (+ the weights and covariance priors), the states known."""
    total = 0.0
    for k in range(K):
        rows = states == k
        means = y[:, :-1][rows] @ weights[k].T + biases[k]
        total += stats.multivariate_normal(np.zeros(D), covariances[k]).logpdf(y[:, 1:][rows] - means).sum()
        if with_prior:
            total += stats.matrix_normal(np.zeros((D, D)), rowcov=covariances[k],
                                         colcov=np.eye(D) / LAMBDA).logpdf(weights[k])
            total += stats.invwishart(df=COUNT - D - 1, scale=PSI).logpdf(covariances[k])
    return total


def directional_derivatives(y, states, model, with_prior, num_directions=6, step=1e-5):
    rng = np.random.default_rng(0)
    theta = [np.asarray(model.weights[:, 0], np.float64), np.asarray(model.biases, np.float64),
             np.asarray(model.covariances, np.float64)]
    out = []
    for _ in range(num_directions):
        delta = [rng.normal(size=a.shape) for a in theta]
        delta[2] = 0.5 * (delta[2] + np.swapaxes(delta[2], -1, -2)) * 0.1  # symmetric; stays positive definite
        plus = complete_objective(y, states, *[a + step * d for a, d in zip(theta, delta)], with_prior)
        minus = complete_objective(y, states, *[a - step * d for a, d in zip(theta, delta)], with_prior)
        out.append((plus - minus) / (2 * step))
    return np.array(out)


def test_one_supervised_step_is_the_map_estimate(data):
    states, y = data
    one_hot = np.concatenate([np.ones((y.shape[0], 1, K)), np.eye(K)[states]], axis=1)
    fitted, _ = fit_em(START, y, state_prior=one_hot, max_iters=1, **PRIORS)
    assert np.max(np.abs(directional_derivatives(y, states, fitted, with_prior=True))) < 1e-5
    # the Dirichlet MAP rows, counted directly
    counts = np.zeros((K, K))
    np.add.at(counts, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    expected = (counts + ALPHA - 1) / (counts + ALPHA - 1).sum(1, keepdims=True)
    np.testing.assert_allclose(fitted.transition_probs, expected, atol=1e-12)
    # negative control: the maximum-likelihood step is not stationary for the penalized objective
    mle, _ = fit_em(START, y, state_prior=one_hot, max_iters=1)
    assert np.max(np.abs(directional_derivatives(y, states, mle, with_prior=True))) > 1e-2
    assert np.max(np.abs(directional_derivatives(y, states, mle, with_prior=False))) < 1e-5


def test_hmm_emission_dirichlet_map_step():
    model = HMM(np.array([0.5, 0.5]), np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.6, 0.3, 0.1],
                                                                                  [0.1, 0.3, 0.6]]), 8)
    tokens = np.asarray(model.sample(jax.random.key(1), (5,)))
    states = np.random.default_rng(2).integers(0, 2, size=tokens.shape)  # any known states: a one-step formula
    fitted, _ = fit_em(model, tokens, state_prior=np.eye(2)[states], max_iters=1, emission_concentration=3.0)
    counts = np.zeros((2, 3))
    np.add.at(counts, (states.ravel(), tokens.ravel()), 1)
    np.testing.assert_allclose(fitted.emission_probs, (counts + 2.0) / (counts + 2.0).sum(1, keepdims=True),
                               atol=1e-12)


def test_prior_arguments_are_checked(data):
    _, y = data
    with pytest.raises(InvalidArgumentError, match="weights_precision"):
        fit_em(START, y, weights_precision=-1.0)
    with pytest.raises(InvalidArgumentError, match="covariance_prior_scale"):
        fit_em(START, y, covariance_prior_scale=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ShapeError, match="covariance_prior_scale"):
        fit_em(START, y, covariance_prior_scale=np.eye(3))
    with pytest.raises(InvalidArgumentError, match="covariance_prior_count"):
        fit_em(START, y, covariance_prior_count=-2.0)
    with pytest.raises(InvalidArgumentError, match="emission_concentration"):
        fit_em(START, y, emission_concentration=2.0)
    hmm = HMM(np.array([0.5, 0.5]), np.eye(2) * 0.5 + 0.25, np.full((2, 3), 1 / 3), 4)
    with pytest.raises(InvalidArgumentError, match="weights_precision"):
        fit_em(hmm, np.zeros((2, 4), int), weights_precision=1.0)
