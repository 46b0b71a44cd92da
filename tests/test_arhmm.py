"""ARHMM: brute force over all K**(T-p) state paths, conventions, sampling, numpyro, validation.

The oracle below is written independently of arprob: plain loops over paths with the Gaussian
densities of scipy.stats.multivariate_normal and hand-written AR means.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import log_density
from scipy import stats
from scipy.special import logsumexp

from arprob.distributions.arhmm import ARHMM, stationary_distribution
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidProbabilityError, ShapeError


def _parameters(num_states, dimension, num_lags, seed, tied=False):
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(num_states))
    transition = rng.dirichlet(np.ones(num_states), size=num_states)
    weights = 0.4 * rng.normal(size=(num_states, num_lags, dimension, dimension))
    biases = rng.normal(size=(num_states, dimension))
    factors = rng.normal(size=(num_states, dimension, dimension))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.5 * np.eye(dimension)
    if tied:
        covariances = covariances[0]
    return initial, transition, weights, biases, covariances


def _mean(weights, biases, y, t, k):
    """Hand-written AR mean: sum_{l=1..p} weights[k, l-1] @ y[t-l] + biases[k]."""
    mean = np.array(biases[k], dtype=float)
    for lag in range(1, weights.shape[1] + 1):
        mean = mean + weights[k, lag - 1] @ y[t - lag]
    return mean


def _brute_force(params, num_lags, y, log_prior=None, mask=None):
    """(log Z, smoothed (T-p, K), best path, log-weights of all paths, paths) by enumeration."""
    initial, transition, weights, biases, covariances = params
    num_states = len(initial)
    covariances = np.broadcast_to(covariances, (num_states,) + covariances.shape[-2:])
    steps = y.shape[0] - num_lags
    paths = list(itertools.product(range(num_states), repeat=steps))
    log_weights = []
    for path in paths:
        total = np.log(initial[path[0]])
        for i, k in enumerate(path):
            t = num_lags + i
            if i > 0:
                total += np.log(transition[path[i - 1], k])
            if mask is None or mask[i]:
                total += stats.multivariate_normal.logpdf(y[t], _mean(weights, biases, y, t, k), covariances[k])
            if log_prior is not None:
                total += log_prior[i, k]
        log_weights.append(total)
    log_weights = np.array(log_weights)
    log_z = logsumexp(log_weights)
    posterior = np.exp(log_weights - log_z)
    smoothed = np.zeros((steps, num_states))
    for weight, path in zip(posterior, paths):
        smoothed[np.arange(steps), list(path)] += weight
    return log_z, smoothed, np.array(paths[int(np.argmax(log_weights))]), log_weights, paths


CASES = [  # (K, D, p, T, tied)
    (2, 1, 1, 5, False),
    (2, 2, 2, 5, False),
    (3, 2, 1, 4, True),
    (2, 1, 0, 4, False),
]


@pytest.mark.parametrize("num_states,dimension,num_lags,length,tied", CASES)
def test_matches_brute_force(num_states, dimension, num_lags, length, tied):
    params = _parameters(num_states, dimension, num_lags, seed=num_states * 10 + num_lags, tied=tied)
    model = ARHMM(*params, num_lags)
    assert model.tied == tied and model.covariances.shape == (num_states, dimension, dimension)
    y = np.random.default_rng(1).normal(size=(length, dimension))
    log_z, smoothed, best, _, _ = _brute_force(params, num_lags, y)
    assert abs(float(model.log_prob(y)) - log_z) < 1e-10
    result = model.smooth(y)
    assert abs(float(result.log_likelihood) - log_z) < 1e-10
    np.testing.assert_allclose(result.smoothed_probs, smoothed, atol=1e-10)
    path, _ = model.viterbi(y)
    np.testing.assert_array_equal(path, best)
    # filtered probabilities: the last state's marginal given the prefix y[:p+i+1]
    filtered = model.filter(y).filtered_probs
    for i in range(length - num_lags):
        _, prefix_smoothed, _, _, _ = _brute_force(params, num_lags, y[: num_lags + i + 1])
        np.testing.assert_allclose(filtered[i], prefix_smoothed[-1], atol=1e-10)


def test_prior_and_mask_match_brute_force():
    num_lags = 1
    params = _parameters(2, 2, num_lags, seed=3)
    model = ARHMM(*params, num_lags)
    y = np.random.default_rng(2).normal(size=(5, 2))
    log_prior = np.log(np.random.default_rng(4).dirichlet(np.ones(2), size=4))
    log_prior[2, 1] = -np.inf  # hard knowledge: z_3 = 0
    mask = np.array([True, False, True, True])
    log_z, smoothed, best, _, _ = _brute_force(params, num_lags, y, log_prior=log_prior, mask=mask)
    assert abs(float(model.log_prob(y, log_prior=log_prior, mask=mask)) - log_z) < 1e-10
    result = model.smooth(y, log_prior=log_prior, mask=mask)
    np.testing.assert_allclose(result.smoothed_probs, smoothed, atol=1e-10)
    assert result.smoothed_probs[2, 1] == 0.0
    np.testing.assert_array_equal(model.viterbi(y, log_prior=log_prior, mask=mask)[0], best)


def test_data_aligned_prior_and_mask_match_brute_force():
    """log_prior (T, K) and mask (T,) aligned with the data, as fit_em takes them: the first p prior rows are
    ignored, and a missing observation drops every term it enters (its own and those it is a lag of)."""
    num_lags = 2
    params = _parameters(2, 1, num_lags, seed=5)
    model = ARHMM(*params, num_lags)
    y = np.random.default_rng(6).normal(size=(7, 1))
    log_prior = np.log(np.random.default_rng(7).dirichlet(np.ones(2), size=7))
    observed = np.array([True, True, True, False, True, True, True])  # y_3 missing: steps 3, 4, 5 drop
    terms = np.array([True, False, False, False, True])  # modelled steps t = 2..6
    log_z, smoothed, best, _, _ = _brute_force(params, num_lags, y, log_prior=log_prior[num_lags:], mask=terms)
    y_missing = y.copy()
    y_missing[3] = np.nan  # allowed where the data-aligned mask says missing
    value = model.log_prob(y_missing, log_prior=log_prior, mask=observed)
    assert abs(float(value) - log_z) < 1e-10
    assert abs(float(model.log_prob(y, log_prior=log_prior[num_lags:], mask=terms)) - log_z) < 1e-10
    result = model.smooth(y_missing, log_prior=log_prior, mask=observed)
    np.testing.assert_allclose(result.smoothed_probs, smoothed, atol=1e-10)
    np.testing.assert_array_equal(model.viterbi(y_missing, log_prior=log_prior, mask=observed)[0], best)
    gradient = jax.grad(lambda b: ARHMM(params[0], params[1], params[2], b, params[4], num_lags).log_prob(
        y_missing, mask=observed))(jnp.asarray(params[3]))
    assert np.all(np.isfinite(gradient))
    # fit_em's starting value is the same quantity, in either alignment
    from arprob.learning import fit_em

    for prior, mask in ((np.exp(log_prior), observed), (np.exp(log_prior[num_lags:]), terms)):
        data = y_missing if mask is observed else y
        _, values = fit_em(model, data, state_prior=prior, mask=mask, max_iters=1)
        assert abs(values[0] - log_z) < 1e-9


def test_posterior_sample_matches_path_posterior():
    """Chi-square goodness of fit of 4000 sampled paths to the enumerated posterior; false-alarm rate 1e-3."""
    num_lags = 1
    params = _parameters(2, 1, num_lags, seed=5)
    model = ARHMM(*params, num_lags)
    y = np.random.default_rng(6).normal(size=(5, 1))
    _, _, _, log_weights, paths = _brute_force(params, num_lags, y)
    probs = np.exp(log_weights - logsumexp(log_weights))
    samples = np.asarray(model.posterior_sample(jax.random.PRNGKey(0), y, 4000))
    index = {path: i for i, path in enumerate(paths)}
    counts = np.bincount([index[tuple(row)] for row in samples], minlength=len(paths))
    keep = probs * 4000 >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(probs[keep], probs[~keep].sum()) * 4000
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_batched_log_prob_equals_loop_and_jits():
    params = _parameters(2, 2, 2, seed=7)
    model = ARHMM(*params, 2)
    y = np.random.default_rng(8).normal(size=(2, 3, 5, 2))
    batched = model.log_prob(y)
    assert batched.shape == (2, 3)
    loop = np.array([[float(model.log_prob(y[i, j])) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(batched, loop, atol=1e-12)
    np.testing.assert_allclose(jax.jit(model.log_prob)(y), loop, atol=1e-12)
    assert model.emission_log_likelihoods(y).shape == (2, 3, 3, 2)


# ---------------------------------------------------------------- conventions


def test_lag_convention_hand_written_mean():
    """p = 2, weights[k, 0] multiplies y[t-1] and weights[k, 1] multiplies y[t-2]."""
    weights = np.array([[[[0.5]], [[-0.3]]], [[[0.1]], [[0.8]]]])  # (K=2, p=2, 1, 1)
    biases = np.array([[0.2], [-1.0]])
    variances = np.array([0.7, 1.3])
    model = ARHMM(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.3, 0.7]]), weights, biases,
                  variances[:, None, None], 2)
    y = np.array([[1.0], [-2.0], [0.5], [3.0]])
    log_lik = np.asarray(model.emission_log_likelihoods(y))
    for i, t in enumerate([2, 3]):
        means = [0.5 * y[t - 1, 0] - 0.3 * y[t - 2, 0] + 0.2, 0.1 * y[t - 1, 0] + 0.8 * y[t - 2, 0] - 1.0]
        for k in range(2):
            expected = stats.norm.logpdf(y[t, 0], means[k], np.sqrt(variances[k]))
            assert abs(log_lik[i, k] - expected) < 1e-12
    # the swapped convention gives a different answer (the test can fail)
    swapped = ARHMM(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.3, 0.7]]), weights[:, ::-1], biases,
                    variances[:, None, None], 2)
    assert abs(float(swapped.log_prob(y)) - float(model.log_prob(y))) > 1e-3


def test_matrix_convention_and_sampler_recursion():
    """D = 2, non-symmetric A: the mean is A @ x (not x @ A); the sampler follows the same recursion."""
    weights = np.array([[[[0.5, 0.2], [-0.1, 0.3]], [[0.0, -0.4], [0.25, 0.1]]]])  # K=1, p=2
    biases = np.array([[0.1, -0.2]])
    history = np.array([[1.0, 2.0], [-0.5, 0.7]])  # oldest first
    tiny = ARHMM(np.ones(1), np.ones((1, 1)), weights, biases, 1e-26 * np.eye(2), 2, length=6)
    draw = np.asarray(tiny.sample(jax.random.PRNGKey(0), history=history))
    np.testing.assert_array_equal(draw[:2], history)
    expected = list(history)
    for t in range(2, 6):
        expected.append(weights[0, 0] @ expected[t - 1] + weights[0, 1] @ expected[t - 2] + biases[0])
    np.testing.assert_allclose(draw, np.array(expected), atol=1e-11)
    y = np.random.default_rng(9).normal(size=(4, 2))
    model = ARHMM(np.ones(1), np.ones((1, 1)), weights, biases, np.eye(2), 2)
    mean = weights[0, 0] @ y[2] + weights[0, 1] @ y[1] + biases[0]
    expected_log = stats.multivariate_normal.logpdf(y[3], mean, np.eye(2))
    assert abs(float(model.emission_log_likelihoods(y)[1, 0]) - expected_log) < 1e-12


def test_stationary_initial_law():
    params = _parameters(3, 2, 1, seed=11)
    transition = params[1]
    model = ARHMM("stationary", *params[1:], 1)
    pi = np.asarray(model.initial_probs)
    np.testing.assert_allclose(pi @ transition, pi, atol=1e-14)
    assert abs(pi.sum() - 1) < 1e-14 and np.all(pi >= 0)
    eigenvalues, vectors = np.linalg.eig(transition.T)
    reference = np.real(vectors[:, np.argmin(np.abs(eigenvalues - 1))])
    np.testing.assert_allclose(pi, reference / reference.sum(), atol=1e-12)
    y = np.random.default_rng(12).normal(size=(4, 2))
    explicit = ARHMM(pi, *params[1:], 1)
    assert abs(float(model.log_prob(y)) - float(explicit.log_prob(y))) < 1e-12
    assert model.stationary and not explicit.stationary
    with pytest.raises(InvalidArgumentError, match="no unique stationary law"):
        stationary_distribution(jnp.eye(2))
    with pytest.raises(InvalidArgumentError, match="no unique stationary law"):
        ARHMM("stationary", np.eye(3), *params[2:], 1)
    # differentiable in the transition matrix (NUTS / gradient fitting)
    gradient = jax.grad(lambda p: stationary_distribution(p)[0])(jnp.asarray(transition))
    assert np.all(np.isfinite(np.asarray(gradient)))


# ---------------------------------------------------------------- sampling


def test_var_sample_residuals():
    """K = 1 is a VAR(1): whitened one-step residuals are iid N(0, I).

    Two tests at false-alarm rate 1e-3 each (total <= 2e-3): Kolmogorov-Smirnov of the 4000 whitened
    values against N(0, 1), and the 3 distinct entries of their sample covariance against I by
    z-scores (variance 2/n on the diagonal, 1/n off it) with Bonferroni threshold |z| < 3.59.
    """
    weights = np.array([[[[0.6, 0.2], [-0.3, 0.4]]]])
    biases = np.array([[0.5, -1.0]])
    covariance = np.array([[1.0, 0.6], [0.6, 2.0]])
    model = ARHMM(np.ones(1), np.ones((1, 1)), weights, biases, covariance, 1, length=2001)
    y = np.asarray(model.sample(jax.random.PRNGKey(42)))
    residuals = y[1:] - y[:-1] @ weights[0, 0].T - biases[0]
    whitened = np.linalg.solve(np.linalg.cholesky(covariance), residuals.T).T
    assert stats.kstest(whitened.ravel(), "norm").pvalue > 1e-3
    n = whitened.shape[0]
    sample_cov = whitened.T @ whitened / n
    z_scores = [(sample_cov[0, 0] - 1) / np.sqrt(2 / n), (sample_cov[1, 1] - 1) / np.sqrt(2 / n),
                sample_cov[0, 1] / np.sqrt(1 / n)]
    assert max(abs(z) for z in z_scores) < 3.59


def test_switching_sample_rosenblatt():
    """K = 2, p = 1, D = 1, T = 3: the Rosenblatt transform of the draws is iid U(0, 1).

    u1 = F(y1 | y0), u2 = F(y2 | y0, y1) with the exact mixture CDFs (filter written by hand).
    Kolmogorov-Smirnov on 2 x 2000 values, false-alarm rate 1e-3.
    """
    initial = np.array([0.3, 0.7])
    transition = np.array([[0.8, 0.2], [0.4, 0.6]])
    weights = np.array([[[[0.9]]], [[[-0.5]]]])
    biases = np.array([[1.0], [-1.0]])
    sds = np.array([0.5, 1.5])
    model = ARHMM(initial, transition, weights, biases, (sds**2)[:, None, None], 1, length=3)
    history = np.array([[0.4]])
    states, y = model.sample_with_states(jax.random.PRNGKey(3), (2000,), history=history)
    assert states.shape == (2000, 2) and y.shape == (2000, 3, 1)
    y = np.asarray(y)[..., 0]
    means1 = weights[:, 0, 0, 0][None] * y[:, :1] + biases[:, 0][None]  # (n, K)
    u1 = np.sum(initial * stats.norm.cdf(y[:, 1:2], means1, sds), axis=1)
    posterior = initial * stats.norm.pdf(y[:, 1:2], means1, sds)
    predicted = (posterior / posterior.sum(1, keepdims=True)) @ transition
    means2 = weights[:, 0, 0, 0][None] * y[:, 1:2] + biases[:, 0][None]
    u2 = np.sum(predicted * stats.norm.cdf(y[:, 2:3], means2, sds), axis=1)
    assert stats.kstest(np.concatenate([u1, u2]), "uniform").pvalue > 1e-3


# ---------------------------------------------------------------- numpyro


def test_numpyro_trace_and_log_density():
    params = _parameters(2, 2, 1, seed=13)
    y = np.random.default_rng(14).normal(size=(3, 5, 2))

    def model(data):
        numpyro.sample("y", ARHMM(*params, 1), obs=data)

    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(y[0])
    site = trace["y"]
    assert site["is_observed"]
    expected = float(ARHMM(*params, 1).log_prob(y[0]))
    assert abs(float(site["fn"].log_prob(site["value"])) - expected) < 1e-12
    assert abs(float(log_density(model, (y[0],), {}, {})[0]) - expected) < 1e-12

    def plated(data):
        with numpyro.plate("sequences", data.shape[0]):
            numpyro.sample("y", ARHMM(*params, 1, length=data.shape[1]), obs=data)

    def plated_without_length(data):  # the (1, D) placeholder event shape broadcasts against any T
        with numpyro.plate("sequences", data.shape[0]):
            numpyro.sample("y", ARHMM(*params, 1), obs=data)

    total = sum(float(ARHMM(*params, 1).log_prob(row)) for row in y)
    assert abs(float(log_density(plated, (y,), {}, {})[0]) - total) < 1e-10
    assert abs(float(log_density(plated_without_length, (y,), {}, {})[0]) - total) < 1e-10
    # differentiable in the parameters (the NUTS path)
    gradient = jax.grad(lambda b: ARHMM(*params[:3], b, params[4], 1).log_prob(y[0]))(jnp.asarray(params[3]))
    assert np.all(np.isfinite(np.asarray(gradient)))


# ---------------------------------------------------------------- forecast


def test_forecast_horizon_one_exact_and_later_steps_monte_carlo():
    initial, transition, weights, biases, covariances = _parameters(2, 2, 2, seed=15)
    model = ARHMM(initial, transition, weights, biases, covariances, 2)
    history = np.array([[0.3, -1.0], [1.2, 0.4]])
    state_probs = np.array([0.25, 0.75])
    result = model.forecast(jax.random.PRNGKey(5), history, 2, 20000, state_probs=state_probs)
    assert result.samples.shape == (20000, 2, 2) and result.states.shape == (20000, 2)
    means = np.array([weights[k, 0] @ history[1] + weights[k, 1] @ history[0] + biases[k] for k in range(2)])
    mean = state_probs @ means
    second = sum(state_probs[k] * (covariances[k] + np.outer(means[k], means[k])) for k in range(2))
    np.testing.assert_allclose(result.mean[0], mean, atol=1e-12)
    np.testing.assert_allclose(result.covariance[0], second - np.outer(mean, mean), atol=1e-12)
    # step 2: exact mean sum_{i,j} w_i P_ij (A_j1 mu_i + A_j2 x_{p-1} + b_j); Monte Carlo estimate within
    # 3.29 standard errors per coordinate (false-alarm rate about 2e-3 over the 2 coordinates)
    exact = sum(state_probs[i] * transition[i, j]
                * (weights[j, 0] @ means[i] + weights[j, 1] @ history[1] + biases[j])
                for i in range(2) for j in range(2))
    standard_error = np.sqrt(np.diag(result.covariance[1]) / 20000)
    assert np.all(np.abs(np.asarray(result.mean[1]) - exact) < 3.29 * standard_error)


# ---------------------------------------------------------------- validation


def test_validation_errors():
    initial, transition, weights, biases, covariances = _parameters(2, 2, 1, seed=16)
    with pytest.raises(ShapeError, match=r"weights has shape \(2, 2, 2, 2\), expected .*\(2, 1, 2, 2\)"):
        ARHMM(initial, transition, np.zeros((2, 2, 2, 2)), biases, covariances, 1)
    with pytest.raises(ShapeError, match="biases has shape"):
        ARHMM(initial, transition, weights, np.zeros((3, 2)), covariances, 1)
    with pytest.raises(ShapeError, match="covariances has shape"):
        ARHMM(initial, transition, weights, biases, np.eye(3), 1)
    with pytest.raises(ShapeError, match="transition_probs has shape"):
        ARHMM(initial, np.ones((2, 3)) / 3, weights, biases, covariances, 1)
    with pytest.raises(ShapeError, match="initial_probs has shape"):
        ARHMM(np.ones(3) / 3, transition, weights, biases, covariances, 1)
    with pytest.raises(InvalidArgumentError, match="'stationary'"):
        ARHMM("uniform", transition, weights, biases, covariances, 1)
    with pytest.raises(InvalidProbabilityError, match="initial_probs sums to"):
        ARHMM(np.array([0.5, 0.6]), transition, weights, biases, covariances, 1)
    with pytest.raises(InvalidProbabilityError, match="transition_probs"):
        ARHMM(initial, np.array([[0.5, 0.6], [0.5, 0.5]]), weights, biases, covariances, 1)
    with pytest.raises(InvalidArgumentError, match=r"covariances\[1\] is not positive definite"):
        ARHMM(initial, transition, weights, biases, np.stack([np.eye(2), np.diag([1.0, -1.0])]), 1)
    with pytest.raises(InvalidArgumentError, match="not symmetric"):
        ARHMM(initial, transition, weights, biases, np.array([[1.0, 0.5], [0.0, 1.0]]), 1)
    with pytest.raises(ArprobTypeError, match="num_lags"):
        ARHMM(initial, transition, weights, biases, covariances, 1.0)
    model = ARHMM(initial, transition, weights, biases, covariances, 1)
    y = np.zeros((4, 2))
    with pytest.raises(ShapeError, match=r"expected \(\.\.\., T, D\) with D = 2"):
        model.log_prob(np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="T > num_lags"):
        model.log_prob(np.zeros((1, 2)))
    with pytest.raises(ArprobTypeError, match="mask has dtype"):
        model.log_prob(y, mask=np.ones(3))
    with pytest.raises(ShapeError, match=r"mask has shape \(5,\), expected"):
        model.log_prob(y, mask=np.ones(5, bool))  # neither T - num_lags = 3 nor T = 4 entries
    with pytest.raises(ShapeError, match="log_prior has shape"):
        model.smooth(y, log_prior=np.zeros((5, 2)))
    with pytest.raises(ShapeError, match="one sequence"):
        model.viterbi(np.zeros((2, 4, 2)))
    with pytest.raises(InvalidArgumentError, match="length"):
        model.sample(jax.random.PRNGKey(0))
    with pytest.raises(ShapeError, match="history has shape"):
        model.forecast(jax.random.PRNGKey(0), np.zeros((2, 2)), 1, 10)
    # validate_args=False skips value checks (shapes are still checked)
    ARHMM(np.array([0.5, 0.6]), transition, weights, biases, covariances, 1, validate_args=False)


def test_sampling_without_lags_is_a_gaussian_hmm():
    """Regression: num_lags = 0 used to crash in the sampler's history update.

    With one state the draws are i.i.d. N(b, Q); the sample mean of 2,000 draws is
    within 5 standard errors of b (false alarm ~6e-7, fixed key).
    """
    model = ARHMM(np.array([1.0]), np.array([[1.0]]), np.zeros((1, 0, 1, 1)), np.array([[2.0]]),
                  np.array([[[0.25]]]), 0)
    _, y = model.sample_with_states(jax.random.key(0), (), length=2000)
    assert y.shape == (2000, 1)
    assert abs(float(np.mean(y)) - 2.0) < 5 * 0.5 / np.sqrt(2000)
    assert np.isfinite(float(model.log_prob(y)))
