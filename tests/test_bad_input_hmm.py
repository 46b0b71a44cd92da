"""Bad input and missing data in the HMM layer: one convention for the kernels, ARHMM, prognostics and learning.

* ``-inf`` log-potentials are impossible evidence: ``log Z = -inf``, never NaN; quantities that condition on
  it are exactly 0 (no law), the Viterbi path is ``-1``; posterior summaries with nothing to carry the
  ``-inf`` raise :class:`ZeroProbabilityError` on concrete input (``-1`` draws under ``jit``);
* NaN and ``+inf`` log-potentials are refused;
* NaN in an observation row means missing: exactly the numbers of ``mask=False`` at that row; ``±inf`` refused.

Exact comparisons in float64 (``conftest.py`` enables x64).  The hostile-input suite
(``tests/hostile/catalogue_hmm.py``) runs every public argument through every hostile value of its kind.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arprob import ARHMM, fit_em, fit_sgd
from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    ShapeError,
    ZeroProbabilityError,
)
from arprob.inference.hmm import (
    hmm_backward,
    hmm_expected_transitions,
    hmm_filter,
    hmm_log_likelihood,
    hmm_pairwise_marginals,
    hmm_posterior_sample,
    hmm_smoother,
    hmm_viterbi,
)
from arprob.prognostics import degradation_level, rul_distribution, time_to_threshold

K, T = 3, 7
KERNELS = (hmm_log_likelihood, hmm_filter, hmm_backward, hmm_smoother, hmm_pairwise_marginals,
           hmm_expected_transitions, hmm_viterbi)


def _potentials(seed=0):
    rng = np.random.default_rng(seed)
    return (np.log(rng.dirichlet(np.ones(K))), np.log(rng.dirichlet(np.ones(K), size=K)),
            rng.normal(size=(T, K)))


def _leaves(result):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(result)]


def _no_nan(result):
    return not any(np.isnan(leaf).any() for leaf in _leaves(result) if np.issubdtype(leaf.dtype, np.floating))


# ---------------------------------------------------------------- impossible evidence in the kernels


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("argument", ["log_initial", "log_transition", "log_likelihoods", "log_prior", "step"])
def test_impossible_evidence_gives_minus_inf_and_zero_posteriors(argument, parallel):
    log_initial, log_transition, log_likelihoods = _potentials()
    log_prior = np.zeros((T, K))
    if argument == "log_initial":
        log_initial = np.full(K, -np.inf)
    elif argument == "log_transition":
        log_transition = np.full((K, K), -np.inf)
    elif argument == "log_likelihoods":
        log_likelihoods = np.full((T, K), -np.inf)
    elif argument == "log_prior":
        log_prior = np.full((T, K), -np.inf)
    else:  # one step whose every state is impossible
        log_likelihoods = log_likelihoods.copy()
        log_likelihoods[4] = -np.inf
    args = (log_initial, log_transition, log_likelihoods)
    kwargs = dict(log_prior=log_prior, parallel=parallel)
    for kernel in KERNELS:
        result = kernel(*args, **kwargs)
        assert _no_nan(result), kernel.__name__
    assert float(hmm_log_likelihood(*args, **kwargs)) == -np.inf
    smoothed = hmm_smoother(*args, **kwargs)
    assert float(smoothed.log_likelihood) == -np.inf
    assert np.all(np.asarray(smoothed.smoothed_probs) == 0.0)
    assert np.all(np.asarray(hmm_pairwise_marginals(*args, **kwargs)) == 0.0)
    assert np.all(np.asarray(hmm_expected_transitions(*args, **kwargs)) == 0.0)
    path, log_weight = hmm_viterbi(*args, **kwargs)
    assert float(log_weight) == -np.inf and np.all(np.asarray(path) == -1)
    assert float(hmm_backward(*args, **kwargs).log_likelihood) == -np.inf
    assert float(hmm_filter(*args, **kwargs).log_likelihood) == -np.inf


@pytest.mark.parametrize("parallel", [False, True])
def test_filter_rows_before_the_impossible_step_are_exact(parallel):
    """Filtering conditions on the past only: rows before the impossible step are the exact filtered laws,
    the predicted law at that step too; from it on (filtered) and after it (predicted) the rows are 0."""
    log_initial, log_transition, log_likelihoods = _potentials(1)
    impossible = log_likelihoods.copy()
    impossible[4] = -np.inf
    reference = hmm_filter(log_initial, log_transition, log_likelihoods, parallel=parallel)
    result = hmm_filter(log_initial, log_transition, impossible, parallel=parallel)
    np.testing.assert_allclose(result.filtered_probs[:4], reference.filtered_probs[:4], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.predicted_probs[:5], reference.predicted_probs[:5], rtol=0, atol=1e-12)
    assert np.all(np.asarray(result.filtered_probs[4:]) == 0.0)
    assert np.all(np.asarray(result.predicted_probs[5:]) == 0.0)
    # the backward messages are exact: beta_t = 0 for t < 4 (log -inf), unchanged after the impossible step
    backward = hmm_backward(log_initial, log_transition, impossible, parallel=parallel).log_backward
    exact = hmm_backward(log_initial, log_transition, log_likelihoods, parallel=parallel).log_backward
    assert np.all(np.asarray(backward[:4]) == -np.inf)
    np.testing.assert_allclose(backward[4:], exact[4:], rtol=0, atol=1e-12)


def test_a_forbidden_state_is_not_impossible_evidence():
    """-inf on some states only (a hard prior) is ordinary evidence: finite log Z, posteriors sum to one."""
    log_initial, log_transition, log_likelihoods = _potentials(2)
    log_prior = np.zeros((T, K))
    log_prior[3, :2] = -np.inf
    result = hmm_smoother(log_initial, log_transition, log_likelihoods, log_prior=log_prior)
    assert np.isfinite(float(result.log_likelihood))
    np.testing.assert_allclose(np.asarray(result.smoothed_probs).sum(-1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.asarray(result.smoothed_probs)[3, :2] == 0.0)


@pytest.mark.parametrize("parallel", [False, True])
def test_posterior_sample_refuses_impossible_evidence_and_marks_it_under_jit(parallel):
    log_initial, log_transition, log_likelihoods = _potentials()
    log_likelihoods = np.full((T, K), -np.inf)
    with pytest.raises(ZeroProbabilityError, match="hmm_posterior_sample: the evidence has probability zero"):
        hmm_posterior_sample(jax.random.key(0), log_initial, log_transition, log_likelihoods, 5, parallel=parallel)
    draw = jax.jit(lambda key, a, b, c: hmm_posterior_sample(key, a, b, c, 5, parallel=parallel))
    paths = draw(jax.random.key(0), log_initial, log_transition, log_likelihoods)
    assert paths.shape == (5, T) and np.all(np.asarray(paths) == -1)


# ---------------------------------------------------------------- NaN and +inf log-potentials


@pytest.mark.parametrize("argument", ["log_initial", "log_transition", "log_likelihoods", "log_prior"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_plus_inf_log_potentials_are_refused(argument, value):
    log_initial, log_transition, log_likelihoods = _potentials()
    arrays = dict(log_initial=log_initial, log_transition=log_transition, log_likelihoods=log_likelihoods,
                  log_prior=np.zeros((T, K)))
    bad = arrays[argument].copy()
    bad.reshape(-1)[1] = value
    arrays[argument] = bad
    for kernel in KERNELS:
        with pytest.raises(InvalidArgumentError, match=f"{kernel.__name__}: {argument} has 1 NaN or \\+inf"):
            kernel(**arrays)


def test_checks_skip_tracers_so_jit_and_grad_still_work():
    log_initial, log_transition, log_likelihoods = _potentials(3)
    eager = hmm_log_likelihood(log_initial, log_transition, log_likelihoods, length=5)
    jitted = jax.jit(lambda a, b, c, n: hmm_log_likelihood(a, b, c, length=n))(log_initial, log_transition,
                                                                                 log_likelihoods, 5)
    assert abs(float(eager) - float(jitted)) < 1e-12
    gradient = jax.grad(lambda c: hmm_log_likelihood(log_initial, log_transition, c))(jnp.asarray(log_likelihoods))
    smoothed = hmm_smoother(log_initial, log_transition, log_likelihoods).smoothed_probs
    np.testing.assert_allclose(gradient, smoothed, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bad, error, words", [
    (dict(log_likelihoods="ll"), ArprobTypeError, "log_likelihoods must be an array"),
    (dict(log_likelihoods=np.zeros((0, K))), ShapeError, "log_likelihoods has shape (0, 3)"),
    (dict(log_likelihoods=np.zeros((T, K), bool)), ArprobTypeError, "log_likelihoods has dtype bool"),
    (dict(mask=np.ones(T, int)), ArprobTypeError, "mask has dtype int"),
    (dict(mask=np.ones(T - 1, bool)), ShapeError, "mask has shape (6,), expected (7,)"),
    (dict(length=4.0), ArprobTypeError, "length must be an int, got float 4.0 (use 4)"),
    (dict(length=0), InvalidArgumentError, "length must be >= 1"),
    (dict(parallel="yes"), ArprobTypeError, "parallel must be True or False"),
])
def test_wrong_types_and_shapes_name_the_function_and_argument(bad, error, words):
    log_initial, log_transition, log_likelihoods = _potentials()
    kwargs = {**dict(log_initial=log_initial, log_transition=log_transition, log_likelihoods=log_likelihoods), **bad}
    with pytest.raises(error) as raised:
        hmm_filter(**kwargs)
    assert str(raised.value).startswith("hmm_filter: ") and words in str(raised.value)


def test_sizes_and_keys_are_refused_up_front():
    log_initial, log_transition, log_likelihoods = _potentials()
    start = time.perf_counter()
    with pytest.raises(EnumerationTooLargeError, match="hmm_posterior_sample: drawing num_samples="):
        hmm_posterior_sample(jax.random.key(0), log_initial, log_transition, log_likelihoods, 10**12)
    for key in (0, 1.5, None, np.zeros(2), jax.random.split(jax.random.key(0), 3)):
        with pytest.raises((ArprobTypeError, ShapeError), match="hmm_posterior_sample: key"):
            hmm_posterior_sample(key, log_initial, log_transition, log_likelihoods, 3)
    with pytest.raises(ArprobTypeError, match="num_samples must be an int"):
        hmm_posterior_sample(jax.random.key(0), log_initial, log_transition, log_likelihoods, 3.0)
    assert time.perf_counter() - start < 10.0


# ---------------------------------------------------------------- ARHMM: NaN rows are missing observations


def _arhmm(num_lags=1, seed=0):
    rng = np.random.default_rng(seed)
    transition = np.array([[0.7, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 1.0]])
    weights = 0.3 * rng.normal(size=(3, num_lags, 2, 2))
    biases = np.stack([np.linspace(0, 2, 3), np.linspace(0, 1, 3)], axis=1)
    factors = 0.4 * rng.normal(size=(3, 2, 2))
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.3 * np.eye(2)
    return ARHMM(np.array([0.6, 0.3, 0.1]), transition, weights, biases, covariances, num_lags, length=9)


def _record(length=9, seed=4):
    return np.cumsum(0.5 * np.random.default_rng(seed).normal(size=(length, 2)), axis=0)


def _missing(y, rows, component=None):
    y_nan = y.copy()
    observed = np.ones(len(y), bool)
    for row in rows:
        if component is None:
            y_nan[row] = np.nan
        else:
            y_nan[row, component] = np.nan
        observed[row] = False
    return y_nan, observed


def _assert_same(first, second):
    for a, b in zip(_leaves(first), _leaves(second)):
        assert a.shape == b.shape
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_lags", [0, 1, 2])
@pytest.mark.parametrize("component", [None, 1])
def test_nan_row_is_exactly_mask_false(num_lags, component):
    model = _arhmm(num_lags)
    y = _record()
    y_nan, observed = _missing(y, [3, 6], component)  # a NaN in one component makes the whole row missing
    for method in ("log_prob", "filter", "smooth", "viterbi", "emission_log_likelihoods"):
        if method == "emission_log_likelihoods":
            with_nan = model.emission_log_likelihoods(y_nan)
            explicit = jnp.where(model._per_step("test", jnp.asarray(y), None, observed)[2][:, None],
                                 model.emission_log_likelihoods(y), 0.0)
        else:
            with_nan = getattr(model, method)(y_nan)
            explicit = getattr(model, method)(y, mask=observed)
        assert _no_nan(with_nan), method
        _assert_same(with_nan, explicit)
    key = jax.random.key(7)
    _assert_same(model.posterior_sample(key, y_nan, 50), model.posterior_sample(key, y, 50, mask=observed))
    # NaN rows combine with an explicit mask (their union is missing), and work under jit
    other = observed.copy()
    other[1] = False
    _assert_same(model.log_prob(y_nan, mask=np.ones(9, bool) & (np.arange(9) != 1)), model.log_prob(y, mask=other))
    _assert_same(jax.jit(model.log_prob)(y_nan), model.log_prob(y, mask=observed))


def test_nan_rows_in_a_batch_and_their_gradient():
    model = _arhmm(1)
    batch = np.stack([_record(seed=s) for s in range(3)])
    masks = np.ones((3, 9), bool)
    masks[1, [2, 5]] = False
    with_nan = np.where(masks[..., None], batch, np.nan)
    _assert_same(model.log_prob(with_nan), model.log_prob(batch, mask=masks))
    gradient = jax.grad(lambda b: ARHMM(model.initial_probs, model.transition_probs, model.weights, b,
                                        model.covariances, 1).log_prob(with_nan).sum())(model.biases)
    assert np.all(np.isfinite(np.asarray(gradient)))


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_observations_are_refused_everywhere(value):
    model = _arhmm(1)
    y = _record()
    y[2, 0] = value
    calls = {
        "ARHMM.log_prob": lambda: model.log_prob(y),
        "ARHMM.filter": lambda: model.filter(y),
        "ARHMM.smooth": lambda: model.smooth(y),
        "ARHMM.viterbi": lambda: model.viterbi(y),
        "degradation_level": lambda: degradation_level(model, y),
        "rul_distribution": lambda: rul_distribution(model, y, 2, 5),
        "time_to_threshold": lambda: time_to_threshold(jax.random.key(0), model, y, 2, 5, 5),
        "fit_em": lambda: fit_em(model, y, max_iters=1),
        "fit_sgd": lambda: fit_sgd(model, y, num_steps=1),
    }
    for owner, call in calls.items():
        with pytest.raises(InvalidArgumentError, match=f"{owner}: (y|value|data) has 1 infinite value"):
            call()


def test_prognostics_treat_nan_as_missing_and_refuse_impossible_records():
    model = _arhmm(1)
    y = _record()
    y_nan, observed = _missing(y, [4])
    _assert_same(degradation_level(model, y_nan), degradation_level(model, y, mask=observed))
    _assert_same(rul_distribution(model, y_nan, 2, 20), rul_distribution(model, y, 2, 20, mask=observed))
    key = jax.random.key(3)
    _assert_same(time_to_threshold(key, model, y_nan, 2, 200, 20),
                 time_to_threshold(key, model, y, 2, 200, 20, mask=observed))
    # a left-to-right chain cannot go back: failed (state 2) at step 3, healthy (state 0) at step 6
    log_prior = np.zeros((8, 3))
    log_prior[2] = [-np.inf, -np.inf, 0.0]
    log_prior[5] = [0.0, -np.inf, -np.inf]
    assert float(model.log_prob(y, log_prior=log_prior)) == -np.inf
    for owner, call in {
        "degradation_level": lambda: degradation_level(model, y, log_prior=log_prior),
        "rul_distribution": lambda: rul_distribution(model, y, 2, 20, log_prior=log_prior),
        "time_to_threshold": lambda: time_to_threshold(key, model, y, 2, 20, 20, log_prior=log_prior),
        "ARHMM.posterior_sample": lambda: model.posterior_sample(key, y, 4, log_prior=log_prior),
    }.items():
        with pytest.raises(ZeroProbabilityError, match=f"^{owner}: "):
            call()


def test_huge_horizons_and_sample_counts_are_refused_before_running():
    model = _arhmm(1)
    y = _record()
    start = time.perf_counter()
    with pytest.raises(EnumerationTooLargeError, match="rul_distribution: .*max_horizon=1,000,000,000"):
        rul_distribution(model, y, 2, 10**9)
    with pytest.raises(EnumerationTooLargeError, match="time_to_threshold: simulating num_samples="):
        time_to_threshold(jax.random.key(0), model, y, 2, 10, 10**9)
    with pytest.raises(EnumerationTooLargeError, match="time_to_threshold: simulating num_samples=1,000,000,000"):
        time_to_threshold(jax.random.key(0), model, y, 2, 10**9, 10)
    with pytest.raises(EnumerationTooLargeError, match=r"ARHMM.sample: drawing sample_shape=\(1000000000000,\)"):
        model.sample(jax.random.key(0), (10**12,))
    with pytest.raises(EnumerationTooLargeError, match="fit_em: max_iters=1,000,000,000,000 iterations"):
        fit_em(model, y, max_iters=10**12)
    for call in (lambda: model.sample(0), lambda: model.forecast(1.5, np.zeros((1, 2)), 3, 10),
                 lambda: time_to_threshold(None, model, y, 2, 10, 10), lambda: fit_em(model, y, key=3)):
        with pytest.raises(ArprobTypeError, match="key must be a PRNG key"):
            call()
    assert time.perf_counter() - start < 10.0


# ---------------------------------------------------------------- learning


def test_fit_em_and_fit_sgd_treat_nan_as_missing():
    model = _arhmm(1)
    data = np.stack([_record(seed=s) for s in range(2)])
    masks = np.ones((2, 9), bool)
    masks[0, 3] = masks[1, [5, 6]] = False
    with_nan = np.where(masks[..., None], data, np.nan)
    fitted_nan, values_nan = fit_em(model, with_nan, max_iters=4, tol=0.0)
    fitted_mask, values_mask = fit_em(model, data, mask=masks, max_iters=4, tol=0.0)
    np.testing.assert_allclose(values_nan, values_mask, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fitted_nan.covariances, fitted_mask.covariances, rtol=0, atol=1e-10)
    _, losses = fit_sgd(model, with_nan, num_steps=3, learning_rate=0.01)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # the first loss is -log p of the masked data (covariances pass a 1e-6 jitter round trip: ~1e-12)
    assert abs(losses[0] + float(np.sum(model.log_prob(data, mask=masks)))) < 1e-8


def test_fit_em_names_the_real_problem():
    model = _arhmm(1)
    y = _record()
    for floor in (0.0, -1.0, np.nan, "1e-6"):
        with pytest.raises((InvalidArgumentError, ArprobTypeError), match="fit_em: covariance_floor"):
            fit_em(model, y, covariance_floor=floor)
    prior = np.ones((9, 3))
    prior[4] = 0.0
    with pytest.raises(ZeroProbabilityError, match=r"fit_em: state_prior\[4\] is 0 for every state"):
        fit_em(model, y, state_prior=prior)
    prior = np.ones((9, 3))
    prior[2], prior[6] = [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]  # failed, then healthy: no path
    with pytest.raises(ZeroProbabilityError, match="fit_em: the data have probability zero"):
        fit_em(model, y, state_prior=prior)
    with pytest.raises(ArprobTypeError, match="fit_em: freeze must be a tuple"):
        fit_em(model, y, freeze="weights")
    with pytest.raises(ArprobTypeError, match="fit_em: mask has dtype"):
        fit_em(model, y, mask=np.ones(9))


def test_fit_sgd_names_the_real_problem():
    model = _arhmm(1)
    y = _record()
    with pytest.raises(ArprobTypeError, match="fit_sgd: optimizer must be an optax.GradientTransformation"):
        fit_sgd(model, y, optimizer="adam")
    for rate in (-1.0, 0.0, np.nan):
        with pytest.raises(InvalidArgumentError, match="fit_sgd: learning_rate"):
            fit_sgd(model, y, learning_rate=rate)
    with pytest.raises(ShapeError) as raised:
        fit_sgd(model, y[:1])
    assert str(raised.value).startswith("fit_sgd: data has sequences of 1 step(s)")
    assert "hmm_log_likelihood" not in str(raised.value)
    with pytest.raises(ArprobTypeError, match="fit_sgd: num_steps must be an int"):
        fit_sgd(model, y, num_steps=2.0)
