"""HMM inference kernels (arprob.inference.hmm) against brute force over all K**T paths, in float64.

Shapes are kept few (K = 3, T = 5 or 3 or 4) so the jit caches are reused.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp

from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.inference import hmm as hmm_module
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
from arprob.verify.gof import gof

K, T = 3, 5
EXACT = dict(rtol=1e-10, atol=1e-12)


def random_hmm(seed, num_states=K, num_timesteps=T, *, time_varying=False, prior=None, mask=False):
    """Random log-potentials; ``prior`` in (None, "soft", "hard"); ``mask`` drops steps 1 and 3."""
    rng = np.random.default_rng(seed)
    log_initial = np.log(rng.dirichlet(np.ones(num_states)))
    shape = (num_timesteps - 1, num_states) if time_varying else (num_states,)
    log_transition = np.log(rng.dirichlet(np.ones(num_states), size=shape))
    log_likelihoods = rng.normal(size=(num_timesteps, num_states)) * 1.5
    kwargs = {}
    if prior == "soft":
        kwargs["log_prior"] = np.log(rng.dirichlet(np.ones(num_states), size=num_timesteps))
    elif prior == "hard":
        allowed = rng.random((num_timesteps, num_states)) < 0.6
        allowed[np.arange(num_timesteps), rng.integers(0, num_states, num_timesteps)] = True
        kwargs["log_prior"] = np.where(allowed, rng.normal(size=allowed.shape) * 0.3, -np.inf)
    if mask:
        kwargs["mask"] = np.array([t not in (1, 3) for t in range(num_timesteps)])
    return (log_initial, log_transition, log_likelihoods), kwargs


def brute_force(log_initial, log_transition, log_likelihoods, log_prior=None, mask=None, length=None):
    """Every quantity by enumeration of all K**L paths (L = length)."""
    length = log_likelihoods.shape[0] if length is None else length
    num_states = log_initial.shape[0]
    transitions = (log_transition if log_transition.ndim == 3
                   else np.broadcast_to(log_transition, (length - 1,) + log_transition.shape))
    observed = np.ones(log_likelihoods.shape[0], bool) if mask is None else mask
    potentials = np.where(observed[:, None], log_likelihoods, 0.0)
    if log_prior is not None:
        potentials = potentials + log_prior
    paths = np.array(list(itertools.product(range(num_states), repeat=length)))
    steps = [log_initial[paths[:, 0]] + potentials[0, paths[:, 0]]]
    for t in range(1, length):
        steps.append(transitions[t - 1][paths[:, t - 1], paths[:, t]] + potentials[t, paths[:, t]])
    steps = np.stack(steps, axis=1)  # (paths, L): log-factor entering at step t
    log_joint = steps.sum(axis=1)
    log_z = logsumexp(log_joint)
    posterior = np.exp(log_joint - log_z)
    onehot = paths[:, :, None] == np.arange(num_states)  # (paths, L, K)
    smoothed = np.einsum("p,ptk->tk", posterior, onehot)
    pairwise = np.einsum("p,ptk,ptl->tkl", posterior, onehot[:, :-1], onehot[:, 1:])
    filtered, predicted, log_backward = [], [], []
    for t in range(length):
        prefix = steps[:, : t + 1].sum(axis=1)
        filtered.append(np.exp(logsumexp(np.where(onehot[:, t].T, prefix, -np.inf), axis=1) - logsumexp(prefix)))
        entering = log_initial[paths[:, 0]] if t == 0 else transitions[t - 1][paths[:, t - 1], paths[:, t]]
        before = steps[:, :t].sum(axis=1) + entering
        predicted.append(np.exp(logsumexp(np.where(onehot[:, t].T, before, -np.inf), axis=1) - logsumexp(before)))
        suffix = steps[:, t + 1:].sum(axis=1)
        log_backward.append(logsumexp(np.where(onehot[:, t].T, suffix, -np.inf), axis=1) - t * np.log(num_states))
    best = int(np.argmax(log_joint))
    return dict(log_likelihood=log_z, smoothed=smoothed, pairwise=pairwise, filtered=np.array(filtered),
                predicted=np.array(predicted), log_backward=np.array(log_backward), path=paths[best],
                path_log_prob=log_joint[best], law=posterior)


CASES = {
    "plain": dict(),
    "time_varying_soft_prior_mask": dict(time_varying=True, prior="soft", mask=True),
    "hard_prior_mask": dict(prior="hard", mask=True),
    "time_varying": dict(time_varying=True),
}


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernels_equal_brute_force(case, parallel):
    args, kwargs = random_hmm(sorted(CASES).index(case), **CASES[case])
    exact = brute_force(*args, **kwargs)
    options = dict(kwargs, parallel=parallel)
    assert_allclose(hmm_log_likelihood(*args, **options), exact["log_likelihood"], **EXACT)
    filtered = hmm_filter(*args, **options)
    assert_allclose(filtered.log_likelihood, exact["log_likelihood"], **EXACT)
    assert_allclose(filtered.filtered_probs, exact["filtered"], **EXACT)
    assert_allclose(filtered.predicted_probs, exact["predicted"], **EXACT)
    backward = hmm_backward(*args, **options)
    assert_allclose(backward.log_likelihood, exact["log_likelihood"], **EXACT)
    finite = np.isfinite(exact["log_backward"])
    assert_array_equal(np.isfinite(backward.log_backward), finite)
    assert_allclose(np.asarray(backward.log_backward)[finite], exact["log_backward"][finite], **EXACT)
    smoothed = hmm_smoother(*args, **options)
    assert_allclose(smoothed.log_likelihood, exact["log_likelihood"], **EXACT)
    assert_allclose(smoothed.filtered_probs, exact["filtered"], **EXACT)
    assert_allclose(smoothed.smoothed_probs, exact["smoothed"], **EXACT)
    assert_allclose(hmm_pairwise_marginals(*args, **options), exact["pairwise"], **EXACT)
    assert_allclose(hmm_expected_transitions(*args, **options), exact["pairwise"].sum(axis=0), **EXACT)
    path, log_prob = hmm_viterbi(*args, **options)
    assert_array_equal(path, exact["path"])
    assert_allclose(log_prob, exact["path_log_prob"], **EXACT)
    if CASES[case].get("prior") == "hard":  # a hard prior conditions on the allowed paths
        forbidden = ~np.isfinite(kwargs["log_prior"])
        assert np.all(np.asarray(smoothed.smoothed_probs)[forbidden] == 0.0)
        assert not np.any(forbidden[np.arange(T), np.asarray(path)])


@pytest.mark.parametrize("case", ["plain", "hard_prior_mask"])
@pytest.mark.parametrize("padding", [0, 3])
def test_em_posterior_statistics_equal_brute_force(case, padding):
    """fit_em's fused E-step (one forward and one backward loop) against enumeration, padded or not."""
    args, kwargs = random_hmm(sorted(CASES).index(case), **CASES[case])
    exact = brute_force(*args, **kwargs)
    log_initial, log_transition, log_likelihoods = args
    rng = np.random.default_rng(7)
    pad = rng.normal(size=(padding, K))
    padded = np.concatenate([log_likelihoods, pad])
    prior = kwargs.get("log_prior")
    prior = np.concatenate([prior, pad]) if prior is not None else None
    mask = kwargs.get("mask")
    mask = np.concatenate([mask, np.ones(padding, bool)]) if mask is not None else None
    prepared = hmm_module._prepare("test", log_initial, log_transition, padded, prior, mask, T)
    value, filtered, smoothed, counts = hmm_module._posterior_statistics(*prepared)
    assert_allclose(value, exact["log_likelihood"], **EXACT)
    assert_allclose(np.asarray(smoothed)[:T], exact["smoothed"], **EXACT)
    assert_allclose(np.asarray(filtered)[:T], exact["filtered"], **EXACT)
    assert np.all(np.asarray(filtered)[T:] == 0.0)
    assert np.all(np.asarray(smoothed)[T:] == 0.0)
    assert_allclose(counts, exact["pairwise"].sum(axis=0), **EXACT)


def test_parallel_equals_sequential():
    """Time-varying, soft prior, mask, padding (length 4 of 5): the two forms agree to 1e-8."""
    args, kwargs = random_hmm(7, time_varying=True, prior="soft", mask=True)
    kwargs["length"] = 4
    tight = dict(rtol=1e-8, atol=1e-10)
    for kernel in (hmm_log_likelihood, hmm_filter, hmm_backward, hmm_smoother, hmm_pairwise_marginals,
                   hmm_expected_transitions):
        sequential = kernel(*args, **kwargs)
        parallel = kernel(*args, **kwargs, parallel=True)
        jax.tree.map(lambda a, b: assert_allclose(a, b, **tight), sequential, parallel)
    (path, log_prob), (path_parallel, log_prob_parallel) = (hmm_viterbi(*args, **kwargs, parallel=flag)
                                                            for flag in (False, True))
    assert_array_equal(path, path_parallel)
    assert_allclose(log_prob, log_prob_parallel, **tight)


def test_hessian_is_the_posterior_covariance_also_under_vmap():
    """d^2 log Z / d l_s(i) d l_t(j) = Cov(1[z_s = i], 1[z_t = j]) under the posterior (brute force), through
    the fused products' custom batching and differentiation rules: forward-over-reverse, and per sequence
    of a vmapped batch."""
    args, kwargs = random_hmm(21, prior="soft")
    log_initial, log_transition, log_likelihoods = args
    exact = brute_force(*args, **kwargs)
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    indicators = np.eye(K)[paths].reshape(len(paths), T * K)  # (paths, T*K)
    mean = exact["law"] @ indicators
    covariance = (indicators * exact["law"][:, None]).T @ indicators - np.outer(mean, mean)

    def log_z(likelihoods):
        return hmm_log_likelihood(log_initial, log_transition, likelihoods, **kwargs)

    hessian = jax.hessian(log_z)(jnp.asarray(log_likelihoods)).reshape(T * K, T * K)
    assert_allclose(hessian, covariance, rtol=1e-9, atol=1e-11)
    batch = jnp.stack([jnp.asarray(log_likelihoods), jnp.asarray(log_likelihoods) + 0.5])
    batched = jax.vmap(jax.hessian(log_z))(batch).reshape(2, T * K, T * K)
    assert_allclose(batched[0], covariance, rtol=1e-9, atol=1e-11)
    assert_allclose(batched[1], covariance, rtol=1e-9, atol=1e-11)  # a constant shift of l_t changes nothing


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_gradients_are_the_posterior_marginals(parallel):
    """d log Z / d l_t(k) = m_t p(z_t = k | .) and d log Z / d log A^(t)_ij = xi_t(i, j): autodiff through
    the compensated sums, the shifts and the associative scans gives the exact posterior quantities."""
    args, kwargs = random_hmm(12, time_varying=True, prior="hard", mask=True)
    log_initial, log_transition, log_likelihoods = args
    exact = brute_force(*args, **kwargs)

    def log_z(log_likelihoods, log_transition):
        return hmm_log_likelihood(log_initial, log_transition, log_likelihoods, **kwargs, parallel=parallel)

    by_likelihood, by_transition = jax.grad(log_z, argnums=(0, 1))(log_likelihoods, log_transition)
    assert_allclose(by_likelihood, exact["smoothed"] * kwargs["mask"][:, None], **EXACT)
    assert_allclose(by_transition, exact["pairwise"], **EXACT)


UNPADDED = 3


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("time_varying", [False, True], ids=["homogeneous", "time_varying"])
def test_padding_changes_nothing(time_varying, parallel):
    """A sequence padded from 3 to 5 steps (junk in the padding) with length=3 gives the unpadded results.

    Reference: the sequential kernels on the unpadded arrays; bit-identical for the sequential form, 1e-12 for the
    parallel form (whose rounding differs from the sequential one's).
    """
    (log_initial, log_transition, log_likelihoods), kwargs = random_hmm(
        11, time_varying=time_varying, prior="soft", mask=True)
    cut = (log_initial, log_transition[: UNPADDED - 1] if time_varying else log_transition,
           log_likelihoods[:UNPADDED])
    cut_kwargs = {name: value[:UNPADDED] for name, value in kwargs.items()}
    padded_kwargs = dict(kwargs, length=UNPADDED, parallel=parallel)
    args = (log_initial, log_transition, log_likelihoods)
    compare = assert_array_equal if not parallel else (lambda a, b: assert_allclose(a, b, rtol=0, atol=1e-12))
    for kernel in (hmm_log_likelihood, hmm_filter, hmm_backward, hmm_smoother):
        full = kernel(*args, **padded_kwargs)
        short = kernel(*cut, **cut_kwargs)
        for padded_value, value in zip(jax.tree.leaves(full), jax.tree.leaves(short), strict=True):
            padded_value = np.asarray(padded_value)
            if padded_value.ndim:
                assert np.all(padded_value[UNPADDED:] == 0.0)
                padded_value = padded_value[:UNPADDED]
            compare(padded_value, value)
    pairwise = np.asarray(hmm_pairwise_marginals(*args, **padded_kwargs))
    assert np.all(pairwise[UNPADDED - 1:] == 0.0)
    compare(pairwise[: UNPADDED - 1], hmm_pairwise_marginals(*cut, **cut_kwargs))
    compare(hmm_expected_transitions(*args, **padded_kwargs),
            hmm_expected_transitions(*cut, **cut_kwargs))
    path, log_prob = hmm_viterbi(*args, **padded_kwargs)
    short_path, short_log_prob = hmm_viterbi(*cut, **cut_kwargs)
    assert_array_equal(path, np.concatenate([short_path, [-1] * (T - UNPADDED)]))
    compare(log_prob, short_log_prob)


def test_ragged_batch_under_vmap_and_jit():
    """Traced lengths: vmap over a padded batch equals each unpadded sequence."""
    lengths = np.array([5, 3, 4])
    batch = [random_hmm(20 + i, time_varying=True, prior="soft", mask=True) for i in range(len(lengths))]
    stacked = [np.stack([b[0][j] for b in batch]) for j in range(3)]
    priors = np.stack([b[1]["log_prior"] for b in batch])
    masks = np.stack([b[1]["mask"] for b in batch])

    @jax.jit
    def batched(log_initial, log_transition, log_likelihoods, log_prior, mask, length):
        return jax.vmap(lambda *a: hmm_smoother(*a[:3], log_prior=a[3], mask=a[4], length=a[5]))(
            log_initial, log_transition, log_likelihoods, log_prior, mask, length)

    result = batched(*stacked, priors, masks, lengths)
    for i, length in enumerate(lengths):
        (log_initial, log_transition, log_likelihoods), kwargs = batch[i]
        single = hmm_smoother(log_initial, log_transition, log_likelihoods, **kwargs, length=int(length))
        assert_allclose(result.log_likelihood[i], single.log_likelihood, **EXACT)
        assert_allclose(result.smoothed_probs[i], single.smoothed_probs, **EXACT)
        assert np.all(np.asarray(result.smoothed_probs[i, length:]) == 0.0)


# Two goodness-of-fit tests below, each at level 1e-4: false-alarm rate at most 2e-4 in all (seeds fixed).
GOF_LEVEL = 1e-4


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_posterior_samples_follow_the_exact_path_posterior(parallel):
    """FFBS paths vs the exact posterior over the 3**4 paths of a padded (T=5, length=4) sequence."""
    length = 4
    args, kwargs = random_hmm(3, time_varying=True, prior="soft", mask=True)
    exact = brute_force(*args, **kwargs, length=length)
    samples = np.asarray(hmm_posterior_sample(jax.random.PRNGKey(5), *args, 20_000, **kwargs, length=length,
                                              parallel=parallel))
    assert samples.shape == (20_000, T) and samples.dtype == np.int32
    assert np.all(samples[:, length:] == -1)
    result = gof(samples[:, :length], exact["law"], vocab_size=K)
    assert result.p_value > GOF_LEVEL, result


def test_posterior_samples_respect_a_hard_prior_and_keys():
    args, kwargs = random_hmm(4, time_varying=True, prior="hard", mask=True)
    key = jax.random.PRNGKey(1)
    samples = np.asarray(hmm_posterior_sample(key, *args, 20_000, **kwargs))
    forbidden = ~np.isfinite(kwargs["log_prior"])
    assert not np.any(forbidden[np.arange(T), samples])
    assert_array_equal(samples, hmm_posterior_sample(key, *args, 20_000, **kwargs))


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_viterbi_ties_go_to_the_lowest_state(parallel):
    zeros = np.zeros(K)
    path, log_prob = hmm_viterbi(zeros, np.zeros((K, K)), np.zeros((T, K)), parallel=parallel)
    assert_array_equal(path, np.zeros(T, np.int32))
    assert_allclose(log_prob, 0.0, atol=1e-12)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), permutation=st.permutations(range(K)), parallel=st.booleans(),
       shift=st.floats(-3.0, 3.0))
def test_relabelling_permutes_and_a_constant_prior_only_shifts(seed, permutation, parallel, shift):
    args, kwargs = random_hmm(seed, time_varying=True, prior="soft", mask=True)
    log_initial, log_transition, log_likelihoods = args
    perm = np.asarray(permutation)  # new state s is old state perm[s]
    permuted = (log_initial[perm], log_transition[:, perm][:, :, perm], log_likelihoods[:, perm])
    permuted_kwargs = dict(kwargs, log_prior=kwargs["log_prior"][:, perm])
    base = hmm_smoother(*args, **kwargs, parallel=parallel)
    other = hmm_smoother(*permuted, **permuted_kwargs, parallel=parallel)
    assert_allclose(other.log_likelihood, base.log_likelihood, **EXACT)
    assert_allclose(other.smoothed_probs, np.asarray(base.smoothed_probs)[:, perm], **EXACT)
    pairwise = np.asarray(hmm_pairwise_marginals(*args, **kwargs, parallel=parallel))
    assert_allclose(hmm_pairwise_marginals(*permuted, **permuted_kwargs, parallel=parallel),
                    pairwise[:, perm][:, :, perm], **EXACT)
    path, _ = hmm_viterbi(*args, **kwargs, parallel=parallel)
    other_path, _ = hmm_viterbi(*permuted, **permuted_kwargs, parallel=parallel)
    assert_array_equal(perm[np.asarray(other_path)], path)
    # a prior constant over states adds sum_t c_t to log Z and changes no posterior quantity
    constant = kwargs["log_prior"] + shift * np.arange(1, T + 1)[:, None]
    shifted = hmm_smoother(*args, **dict(kwargs, log_prior=constant), parallel=parallel)
    assert_allclose(shifted.log_likelihood, base.log_likelihood + shift * T * (T + 1) / 2, **EXACT)
    assert_allclose(shifted.smoothed_probs, base.smoothed_probs, **EXACT)


def test_uniform_prior_equals_no_prior_up_to_its_constant():
    args, kwargs = random_hmm(9, time_varying=True, prior="soft", mask=True)
    uniform = dict(kwargs, log_prior=np.full((T, K), -np.log(K)))
    without = {name: value for name, value in kwargs.items() if name != "log_prior"}
    with_prior = hmm_smoother(*args, **uniform)
    assert_allclose(with_prior.log_likelihood, hmm_smoother(*args, **without).log_likelihood - T * np.log(K),
                    **EXACT)
    assert_allclose(with_prior.smoothed_probs, hmm_smoother(*args, **without).smoothed_probs, **EXACT)


def test_float32_inputs_stay_float32():
    args, _ = random_hmm(2)
    result = hmm_filter(*(np.asarray(a, np.float32) for a in args))
    assert result.filtered_probs.dtype == jnp.float32 and result.log_likelihood.dtype == jnp.float32


def test_invalid_arguments_are_refused():
    args, _ = random_hmm(0)
    log_initial, log_transition, log_likelihoods = args
    with pytest.raises(ShapeError, match="log_initial"):
        hmm_filter(log_initial[:2], log_transition, log_likelihoods)
    with pytest.raises(ShapeError, match="log_transition"):
        hmm_filter(log_initial, np.zeros((T, K, K)), log_likelihoods)
    with pytest.raises(ShapeError, match="log_likelihoods"):
        hmm_filter(log_initial, log_transition, log_likelihoods[0])
    with pytest.raises(ShapeError, match="log_prior"):
        hmm_filter(log_initial, log_transition, log_likelihoods, log_prior=np.zeros((T, K + 1)))
    with pytest.raises(ArprobTypeError, match="mask"):
        hmm_filter(log_initial, log_transition, log_likelihoods, mask=np.ones(T))
    with pytest.raises(InvalidArgumentError, match="length"):
        hmm_filter(log_initial, log_transition, log_likelihoods, length=T + 1)
    with pytest.raises(InvalidArgumentError, match="num_samples"):
        hmm_posterior_sample(jax.random.PRNGKey(0), *args, 0)
