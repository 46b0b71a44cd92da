"""Machine check of theorem 12 (proofs/12-arhmm-forward-em.md).

1. sympy: the forward recursion equals the sum over paths, symbolically (K = 2, T = 3,
   time-varying transitions, prior weights as free symbols).
2. float64 brute force: the library's forward kernel (arprob.inference.hmm_log_likelihood)
   applied to AR-Gaussian emission log-likelihoods equals log sum over all K**(T-p) state
   paths of the joint density (scipy.stats.multivariate_normal), with prior weights (soft and
   hard) and missing observations; p = 1, 2 and D = 1, 2.
3. EM: a reference Baum-Welch for the ARHMM (E-step by enumerating paths, closed-form M-step of
   the conditional Gaussian regression), run 25 iterations on random instances with soft and hard
   prior weights and missing observations: the weighted log-likelihood F never decreases (to
   1e-10 relative) and F(theta') - F(theta) >= Q(theta' | theta) - Q(theta | theta) >= 0.
   Negative control: an E-step that ignores the prior weights lets F decrease.
"""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from scipy.stats import multivariate_normal

from arprob.inference import hmm_log_likelihood


def test_forward_recursion_is_the_sum_over_paths_symbolically():
    K, T = 2, 3
    pi = sp.symbols("pi0:2", positive=True)
    A = [[[sp.Symbol(f"A{t}_{i}{j}", positive=True) for j in range(K)] for i in range(K)] for t in range(T - 1)]
    e = [[sp.Symbol(f"e{t}_{k}", positive=True) for k in range(K)] for t in range(T)]  # emission densities
    w = [[sp.Symbol(f"w{t}_{k}", positive=True) for k in range(K)] for t in range(T)]  # prior weights
    brute = 0
    for path in itertools.product(range(K), repeat=T):
        term = pi[path[0]] * w[0][path[0]] * e[0][path[0]]
        for t in range(1, T):
            term *= A[t - 1][path[t - 1]][path[t]] * w[t][path[t]] * e[t][path[t]]
        brute += term
    alpha = [pi[k] * w[0][k] * e[0][k] for k in range(K)]
    for t in range(1, T):
        alpha = [sum(alpha[i] * A[t - 1][i][j] for i in range(K)) * w[t][j] * e[t][j] for j in range(K)]
    assert sp.expand(sum(alpha) - brute) == 0
    # negative control: dropping one weight from the recursion breaks the identity
    wrong = [pi[k] * e[0][k] for k in range(K)]
    for t in range(1, T):
        wrong = [sum(wrong[i] * A[t - 1][i][j] for i in range(K)) * w[t][j] * e[t][j] for j in range(K)]
    assert sp.expand(sum(wrong) - brute) != 0


def random_arhmm(rng, K, D, p):
    weights = rng.normal(scale=0.4 / p, size=(K, p, D, D))
    biases = rng.normal(size=(K, D))
    factors = rng.normal(size=(K, D, D))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.5 * np.eye(D)
    initial = rng.dirichlet(np.ones(K))
    transition = rng.dirichlet(np.ones(K), size=K)
    return initial, transition, weights, biases, covariances


def emission_log_likelihoods(y, weights, biases, covariances):
    """log N(y_t; sum_l weights[k, l-1] y_{t-l} + b_k, Q_k) for t = p..T-1, shape (T-p, K)."""
    K, p = weights.shape[:2]
    out = np.zeros((y.shape[0] - p, K))
    for t in range(p, y.shape[0]):
        for k in range(K):
            mean = biases[k] + sum(weights[k, lag - 1] @ y[t - lag] for lag in range(1, p + 1))
            out[t - p, k] = multivariate_normal(mean, covariances[k]).logpdf(y[t])
    return out


def brute_force(initial, transition, log_lik, log_prior, mask):
    steps, K = log_lik.shape
    terms = []
    for path in itertools.product(range(K), repeat=steps):
        value = np.log(initial[path[0]])
        for t in range(1, steps):
            value += np.log(transition[path[t - 1], path[t]])
        for t in range(steps):
            value += log_prior[t, path[t]] + (log_lik[t, path[t]] if mask[t] else 0.0)
        terms.append(value)
    return float(np.logaddexp.reduce(terms))


@pytest.mark.parametrize("D, p", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_forward_kernel_equals_the_sum_over_paths_with_ar_emissions(D, p):
    rng = np.random.default_rng(10 * D + p)
    K, T = 2, 5 + p
    initial, transition, weights, biases, covariances = random_arhmm(rng, K, D, p)
    y = rng.normal(size=(T, D))
    log_lik = emission_log_likelihoods(y, weights, biases, covariances)
    steps = T - p
    soft = np.log(rng.dirichlet(np.ones(K), size=steps))
    hard = np.zeros((steps, K))
    hard[1, 0] = -np.inf  # state 0 forbidden at the second modelled step
    mask = np.ones(steps, bool)
    mask[2] = False
    for log_prior, use_mask in ((np.zeros((steps, K)), False), (soft, False), (soft, True), (hard, True)):
        m = mask if use_mask else np.ones(steps, bool)
        expected = brute_force(initial, transition, log_lik, log_prior, m)
        got = hmm_log_likelihood(jnp.log(initial), jnp.log(transition), jnp.asarray(log_lik),
                                 log_prior=jnp.asarray(log_prior), mask=jnp.asarray(m))
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# EM with prior weights: a reference implementation of the E- and M-steps of the theorem
# ---------------------------------------------------------------------------------------------


def path_log_weights(theta, y, log_prior, mask, p, use_prior=True):
    initial, transition, weights, biases, covariances = theta
    log_lik = emission_log_likelihoods(y, weights, biases, covariances)
    steps, K = log_lik.shape
    paths = np.array(list(itertools.product(range(K), repeat=steps)))
    with np.errstate(divide="ignore"):  # EM may drive a probability to exactly 0
        log_joint = np.log(initial[paths[:, 0]])
        for t in range(1, steps):
            log_joint = log_joint + np.log(transition[paths[:, t - 1], paths[:, t]])
    for t in range(steps):
        log_joint = log_joint + np.where(mask[t], log_lik[t, paths[:, t]], 0.0)
    weighted = log_joint + (sum(log_prior[t, paths[:, t]] for t in range(steps)) if use_prior else 0.0)
    return paths, log_joint, weighted


def objective(theta, y, log_prior, mask, p):
    """F(theta) = log sum_z prod_t w_t(z_t) p_theta(z, y_{p:} | y_{:p})."""
    _, _, weighted = path_log_weights(theta, y, log_prior, mask, p)
    return float(np.logaddexp.reduce(weighted))


def expected_complete(theta_new, posterior, paths, y, mask, p):
    """Q(theta_new | theta) = E_posterior[log p_theta_new(z, y)] (the prior weights do not depend on theta)."""
    _, log_joint, _ = path_log_weights(theta_new, y, np.zeros((paths.shape[1], theta_new[0].size)), mask, p)
    return float(np.sum(np.where(posterior > 0, posterior * np.where(posterior > 0, log_joint, 0.0), 0.0)))


VARIANCE_FLOOR = 1e-2  # D = 1: Q is unimodal in the variance, so max(estimate, floor) is the constrained maximizer


def m_step(posterior, paths, y, mask, p, K, D, old):
    steps = paths.shape[1]
    gamma = np.stack([np.bincount(paths[:, t], weights=posterior, minlength=K) for t in range(steps)])
    counts = np.zeros((K, K))
    for t in range(1, steps):
        np.add.at(counts, (paths[:, t - 1], paths[:, t]), posterior)
    initial = gamma[0] / gamma[0].sum()
    rows = counts.sum(axis=1, keepdims=True)
    transition = np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), old[1])  # Q ignores unvisited rows
    features = np.stack([np.concatenate([y[t - lag] for lag in range(1, p + 1)] + [np.ones(1)])
                         for t in range(p, y.shape[0])])  # (steps, p*D + 1)
    targets = y[p:]
    weights = np.zeros((K, p, D, D))
    biases = np.zeros((K, D))
    covariances = np.zeros((K, D, D))
    for k in range(K):
        g = gamma[:, k] * mask  # missing observations carry no emission term
        gram = features.T @ (g[:, None] * features)
        cross = targets.T @ (g[:, None] * features)
        solution = np.linalg.solve(gram, cross.T).T  # (D, p*D + 1)
        for lag in range(p):
            weights[k, lag] = solution[:, lag * D:(lag + 1) * D]
        biases[k] = solution[:, -1]
        residuals = targets - features @ solution.T
        covariances[k] = np.maximum((residuals.T @ (g[:, None] * residuals)) / g.sum(), VARIANCE_FLOOR)
    return initial, transition, weights, biases, covariances


def em_run(theta, y, log_prior, mask, p, iterations, use_prior=True):
    K, D = theta[0].size, y.shape[1]
    values, gaps = [objective(theta, y, log_prior, mask, p)], []
    for _ in range(iterations):
        paths, _, weighted = path_log_weights(theta, y, log_prior, mask, p, use_prior=use_prior)
        posterior = np.exp(weighted - np.logaddexp.reduce(weighted))
        new = m_step(posterior, paths, y, mask, p, K, D, theta)
        gaps.append(expected_complete(new, posterior, paths, y, mask, p)
                    - expected_complete(theta, posterior, paths, y, mask, p))
        theta = new
        values.append(objective(theta, y, log_prior, mask, p))
    return np.array(values), np.array(gaps)


@pytest.mark.parametrize("case", ["none", "soft", "hard", "soft+missing"])
def test_em_never_decreases_the_weighted_likelihood(case):
    rng = np.random.default_rng({"none": 1, "soft": 2, "hard": 3, "soft+missing": 4}[case])
    K, D, p, T = 2, 1, 1, 11
    theta = random_arhmm(rng, K, D, p)
    y = np.cumsum(rng.normal(size=(T, D)), axis=0) * 0.5
    steps = T - p
    log_prior = np.zeros((steps, K))
    mask = np.ones(steps, bool)
    if "soft" in case:
        log_prior = np.log(rng.dirichlet(np.ones(K), size=steps))
    if case == "hard":
        log_prior[[0, 3, 6], 1] = -np.inf  # known state 0 at three steps (partial knowledge)
    if "missing" in case:
        mask[[2, 5]] = False
    values, gaps = em_run(theta, y, log_prior, mask, p, 25)
    increments = np.diff(values)
    assert np.all(increments >= -1e-10 * np.abs(values[:-1])), increments
    assert np.all(gaps >= -1e-10)  # the M-step maximizes Q
    assert np.all(increments >= gaps - 1e-9)  # F(theta') - F(theta) >= Q(theta'|theta) - Q(theta|theta)
    assert values[-1] > values[0] + 1e-3  # EM made progress: the check is not vacuous


def test_ignoring_the_prior_in_the_e_step_can_decrease_the_weighted_likelihood():
    """Negative control: the monotonicity needs the prior weights inside the posterior."""
    decreased = False
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        K, D, p, T = 2, 1, 1, 8
        theta = random_arhmm(rng, K, D, p)
        y = np.cumsum(rng.normal(size=(T, D)), axis=0) * 0.5
        log_prior = np.zeros((T - p, K))
        log_prior[::2, 0] = -np.inf  # hard knowledge: state 1 at every other step
        mask = np.ones(T - p, bool)
        values, _ = em_run(theta, y, log_prior, mask, p, 10, use_prior=False)
        if np.any(np.diff(values) < -1e-6) or not np.all(np.isfinite(values)):
            decreased = True
            break
    assert decreased


@pytest.mark.parametrize("case", ["soft", "hard"])
def test_library_fit_em_takes_the_reference_steps(case):
    """arprob.fit_em (batched forward-backward E-step) against the enumerating reference above."""
    from arprob.distributions.arhmm import ARHMM
    from arprob.learning import fit_em

    rng = np.random.default_rng(7)
    K, D, p, T = 2, 1, 1, 11
    theta = random_arhmm(rng, K, D, p)
    y = np.cumsum(rng.normal(size=(T, D)), axis=0) * 0.5
    log_prior = np.log(rng.dirichlet(np.ones(K), size=T - p))
    if case == "hard":
        log_prior[[0, 3, 6], 1] = -np.inf
    mask = np.ones(T - p, bool)
    reference = theta
    for _ in range(3):
        paths, _, weighted = path_log_weights(reference, y, log_prior, mask, p)
        posterior = np.exp(weighted - np.logaddexp.reduce(weighted))
        reference = m_step(posterior, paths, y, mask, p, K, D, reference)
    model = ARHMM(*theta, num_lags=p)
    state_prior = np.concatenate([np.ones((p, K)), np.exp(log_prior)])
    fitted, values = fit_em(model, y, state_prior=state_prior, max_iters=3, tol=0.0, covariance_floor=VARIANCE_FLOOR)
    assert values[0] == pytest.approx(objective(theta, y, log_prior, mask, p), rel=1e-12)
    for got, expected in zip((fitted.initial_probs, fitted.transition_probs, fitted.weights, fitted.biases,
                              fitted.covariances), reference):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-9, atol=1e-12)
