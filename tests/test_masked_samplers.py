"""Masked-diffusion samplers (masked_euler, parallel_unmask, first_hitting) and ARDM's budget DP.

Layers (see shared/STYLE.md):

* samples against each sampler's own exact law (goodness of fit at a fixed
  seed and a stated false-alarm probability), with negative controls: the
  same samples must be rejected against a law they do not follow;
* exact identities: the cached Euler sampler draws the very same tokens,
  ``masked_euler_law`` with one step is ``parallel_unmask_law`` with one
  block, the Euler law converges to the random-order law as steps grow;
* statistics of the sampler's bookkeeping: the cached NFE against
  :math:`N(1-(1-1/N)^L)`, first-hitting times against order statistics of
  uniforms;
* jit/vmap behaviour: same key, same tokens; vmap equals a loop; no new
  compilation for a second family of the same shapes;
* errors name the argument;
* the budget DP against brute force over all compositions of ``L``.

The exhaustive theorem check first-hitting = random-order ancestral is
``proofs/check_05_first_hitting_any_order.py``.

False alarms: each goodness-of-fit assertion is at level 1e-5 (Pearson
chi-square with the verifier's pooling, calibrated in ``tests/test_verify.py``);
each z-test at 4.5 standard errors (two-sided 6.8e-6); each KS test at 1e-5.
Over the module: about 1e-4.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from error_checks import raises as _raises
from scipy import stats

from arprob import AnyOrderAR, TabularJoint, schedules
from arprob.conditionals import perturbed
from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    InvalidProbabilityError,
)
from arprob.samplers import (
    ancestral_law,
    first_hitting,
    first_hitting_law,
    masked_euler,
    masked_euler_law,
    parallel_unmask,
    parallel_unmask_law,
)
from arprob.samplers import masked as masked_module
from arprob.samplers.budget import budget_curve, budgeted_blocks, step_losses
from arprob.verify import Sampler, check, gof, tv

LAW = 1e-12
LEVEL = 1e-5  # goodness-of-fit and KS level per assertion
Z = 4.5  # two-sided normal tail 6.8e-6
NUM_SAMPLES = 20_000  # one value everywhere: each sampler compiles once per num_samples
VOCAB, LENGTH = 3, 4


@functools.cache
def tabular() -> TabularJoint:
    """V=3, L=4, cells from a Dirichlet(0.5) (numpy: no JAX compilation to build it)."""
    return TabularJoint(probs=np.random.default_rng(1).dirichlet(np.full(81, 0.5)).reshape((3,) * 4))


@functools.cache
def noisy():
    """An inconsistent family, for first_hitting: with exact conditionals its law is the model whatever
    the order of reveals, so a sampler that picked positions wrongly would go unseen."""
    return perturbed(tabular(), jax.random.key(5), 0.5)


def other_tabular() -> TabularJoint:
    """A second model of the same shapes (for the no-recompilation test)."""
    return TabularJoint(probs=np.random.default_rng(2).dirichlet(np.full(81, 0.5)).reshape((3,) * 4))


def _fits(tokens, law) -> float:
    return gof(np.asarray(tokens), law, vocab_size=VOCAB).p_value


# Compilation is most of this module's cost, and pytest-xdist hands consecutive tests to different
# workers; so every use of one sampler kernel (one sampler, family type, num_samples and static
# configuration) sits in ONE test, which checks the claims in turn through the helpers below.  The
# samplers run on the exact tabular family (masked_euler, parallel_unmask) or the perturbed one
# (first_hitting), always with NUM_SAMPLES rows.


def _check_keys(sample, family) -> None:
    """Same key, same tokens; another key, other tokens."""
    first = np.asarray(sample(jax.random.key(0), family)[0])
    np.testing.assert_array_equal(np.asarray(sample(jax.random.key(0), family)[0]), first)
    assert not np.array_equal(np.asarray(sample(jax.random.key(1), family)[0]), first)


def _check_no_recompilation(kernel, sample, family, other) -> None:
    """A second family of the same shapes runs the compiled kernel as data (counted on its cache)."""
    first = np.asarray(sample(jax.random.key(0), family)[0])
    compiled = kernel._cache_size()
    assert not np.array_equal(np.asarray(sample(jax.random.key(0), other)[0]), first)
    assert kernel._cache_size() == compiled


def _check_vmap(sample, family) -> None:
    """vmap over keys equals a loop over keys (tokens and nfe)."""
    keys = jax.random.split(jax.random.key(2), 2)
    batched_tokens, batched_stats = jax.vmap(lambda key: sample(key, family))(keys)
    for index, key in enumerate(keys):
        tokens, stats_ = sample(key, family)
        np.testing.assert_array_equal(np.asarray(batched_tokens[index]), np.asarray(tokens))
        np.testing.assert_array_equal(np.asarray(batched_stats.nfe[index]), np.asarray(stats_.nfe))


LINEAR = schedules.linear()


def _euler(cache: bool, schedule=LINEAR):
    return lambda key, family: masked_euler(key, family, NUM_SAMPLES, 4, schedule, cache=cache)


# ------------------------------------------------------------------------------ samplers


def _cached_euler_nfe(schedule, num_steps: int, length: int) -> float:
    r"""Exact E[NFE] of the cached masked Euler sampler, from the schedule alone (not from the sampler).

    The cache (RADD) calls the network at step j (0-based) iff some position is still masked at its
    start and either j = 0 or some token was revealed at step j - 1 (otherwise the sequence, hence the
    logits, did not change).  Positions are revealed independently; a position is still masked after
    j steps with probability :math:`S_j = m(t_{N-j}) / m(t_N)`, :math:`t_n = n/N`.  With A "some token
    revealed at step j-1" (per position :math:`S_{j-1} - S_j`) and B "some token masked after j steps",
    :math:`P(A \cap B) = 1 - (1 - S_{j-1} + S_j)^L - (1 - S_j)^L + (1 - S_{j-1})^L` by inclusion-exclusion
    over the complements, and :math:`E[\mathrm{NFE}] = 1 + \sum_{j=1}^{N-1} P(A_j \cap B_j)`."""
    times = np.arange(num_steps, -1, -1) / num_steps
    mask = np.asarray(schedule.mask_prob(times), np.float64)
    masked_after = mask / mask[0]  # S_0 = 1, ..., S_N = 0
    expected = 1.0
    for j in range(1, num_steps):
        before, after = masked_after[j - 1], masked_after[j]
        expected += 1 - (1 - before + after) ** length - (1 - after) ** length + (1 - before) ** length
    return expected


def test_masked_euler():
    """(1) Same key, cache on or off: exactly the same tokens, for three schedules, and the uncached
    sampler calls the network N = 4 times.  (2) The uncached samples (linear schedule) and the cached
    samples (all three schedules) fit masked_euler_law (level 1e-5 each; at n = 20,000 on 81 cells a law
    at TV >= 0.039 from the claimed one is rejected with probability >= 0.99, ``detectable``), and not the
    model (negative control: exact TV 0.17).  (3) Cached NFE, every schedule: its mean within 4.5 se of
    the exact expectation computed from the schedule (``_cached_euler_nfe``, which for the linear
    schedule is N(1 - (1 - 1/N)^L) = 2.73, checked to 1e-12), and below the uncached N = 4 by more than
    4.5 se.  Linear schedule: each token's reveal step is uniform on N steps, the cached sampler calls
    the network once per distinct reveal step D, and (occupancy) Var[D] = N(N-1)(1-2/N)^L + N(1-1/N)^L
    - N^2(1-1/N)^{2L}.  Each z-test at 4.5 se: false alarm 6.8e-6.  (4) Keys, vmap (the cache's
    lax.cond becomes a select) and no recompilation for a new model."""
    law = masked_euler_law(tabular(), 4, schedules.linear())
    assert tv(law, tabular().law()) > 0.1
    n = 4
    linear_mean = n * (1 - (1 - 1 / n) ** LENGTH)
    assert abs(_cached_euler_nfe(schedules.linear(), n, LENGTH) - linear_mean) < 1e-12
    for seed, schedule in enumerate((schedules.linear(), schedules.cosine(), schedules.log_linear(0.01))):
        key = jax.random.key(seed)
        plain, plain_stats = _euler(False, schedule)(key, tabular())
        cached, cached_stats = _euler(True, schedule)(key, tabular())
        np.testing.assert_array_equal(np.asarray(cached), np.asarray(plain))
        assert np.all(np.asarray(plain_stats.nfe) == n)
        schedule_law = law if seed == 0 else masked_euler_law(tabular(), n, schedule)
        assert _fits(cached, schedule_law) > LEVEL, schedule
        nfe = np.asarray(cached_stats.nfe, np.float64)
        assert nfe.min() >= 1 and nfe.max() <= n
        standard_error = nfe.std(ddof=1) / math.sqrt(NUM_SAMPLES)
        expected = _cached_euler_nfe(schedule, n, LENGTH)
        assert abs(nfe.mean() - expected) <= Z * standard_error, (schedule, nfe.mean(), expected)
        assert nfe.mean() + Z * standard_error < n, (schedule, nfe.mean())  # the cache saves calls
        if seed == 0:
            assert plain.shape == (NUM_SAMPLES, LENGTH) and plain.dtype == jnp.int32
            assert _fits(plain, law) > LEVEL
            assert _fits(plain, tabular().law()) < 1e-12
            variance = (n * (n - 1) * (1 - 2 / n) ** LENGTH + n * (1 - 1 / n) ** LENGTH
                        - n**2 * (1 - 1 / n) ** (2 * LENGTH))
            assert abs(nfe.mean() - linear_mean) <= Z * math.sqrt(variance / NUM_SAMPLES), (nfe.mean(), linear_mean)
            assert abs(nfe.var() / variance - 1) < 0.1  # the variance too: relative sd about 0.01 here
            assert abs(n - linear_mean) > 10 * Z * math.sqrt(variance / NUM_SAMPLES)  # N itself is far outside
    _check_keys(_euler(True), tabular())
    _check_vmap(_euler(True), tabular())
    for cache in (False, True):
        _check_no_recompilation(masked_module._masked_euler, _euler(cache), tabular(), other_tabular())


def test_parallel_unmask():
    """Samples with k = 2 and with blocks (1, 3) fit parallel_unmask_law (level 1e-5) and not the
    model (negative control: exact TV 0.24 and 0.42); nfe is the number of blocks; keys; no
    recompilation for a new model."""
    for k in (2, (1, 3)):
        law = parallel_unmask_law(tabular(), k)
        tokens, stats_ = parallel_unmask(jax.random.key(2), tabular(), NUM_SAMPLES, k)
        assert np.all(np.asarray(stats_.nfe) == 2)
        assert _fits(tokens, law) > LEVEL
        assert tv(law, tabular().law()) > 0.2 and _fits(tokens, tabular().law()) < 1e-12
    sample = lambda key, family: parallel_unmask(key, family, NUM_SAMPLES, 2)  # noqa: E731
    _check_keys(sample, tabular())
    _check_no_recompilation(masked_module._parallel_unmask, sample, tabular(), other_tabular())


def test_first_hitting():
    """(1) Samples of the perturbed family fit first_hitting_law through the full verifier (check, with
    the law wrapped as a TabularJoint target: Holm level 1e-5), and do not fit the left-to-right law
    of the same family (negative control: exact TV 0.29).  (2) nfe = L; the reveal times decrease in
    (0, 1]; with the linear schedule each position is revealed at an independent uniform time, so
    the first reveal time is the maximum of L uniforms (CDF t^L) and the last the minimum
    (CDF 1 - (1-t)^L): KS tests at level 1e-5 each, with a negative control.  (3) Keys; no
    recompilation for a new family."""
    law = first_hitting_law(noisy())
    sample = lambda key, family: first_hitting(key, family, NUM_SAMPLES)  # noqa: E731
    sampler = Sampler(lambda key, num_samples: first_hitting(key, noisy(), num_samples), law=law,
                      name="first_hitting")
    report = check(sampler, TabularJoint(probs=law.reshape((VOCAB,) * LENGTH)), num_samples=NUM_SAMPLES,
                   alpha=LEVEL, seed=3)
    assert report.passed, report
    assert report.exact_tv < 1e-12 and report.nfe == LENGTH
    tokens, stats_ = sample(jax.random.key(4), noisy())
    left_to_right = ancestral_law(noisy())
    assert tv(law, left_to_right) > 0.1 and _fits(tokens, left_to_right) < 1e-12

    times = np.asarray(stats_.times)
    assert times.shape == (NUM_SAMPLES, LENGTH)
    assert np.all(np.asarray(stats_.nfe) == LENGTH)
    assert np.all((times > 0) & (times <= 1))
    assert np.all(np.diff(times, axis=1) < 0)
    assert stats.kstest(times[:, 0], lambda t: t**LENGTH).pvalue > LEVEL
    assert stats.kstest(times[:, -1], lambda t: 1 - (1 - t) ** LENGTH).pvalue > LEVEL
    assert stats.kstest(times[:, -1], lambda t: t**LENGTH).pvalue < 1e-12  # negative control

    _check_keys(sample, noisy())
    _check_no_recompilation(masked_module._first_hitting, sample, noisy(),
                            perturbed(other_tabular(), jax.random.key(6), 0.3))


# ---------------------------------------------------------------------- exact laws


def test_one_euler_step_is_one_parallel_block():
    """One step reveals every position at once, each from q(. | nothing): one block of L."""
    for schedule in (schedules.linear(), schedules.cosine()):
        np.testing.assert_allclose(masked_euler_law(tabular(), 1, schedule), parallel_unmask_law(tabular(), LENGTH),
                                   rtol=0, atol=LAW)


def test_euler_law_converges_to_the_random_order_law_as_steps_grow():
    random_order = ancestral_law(tabular(), "random")  # the model itself: exact conditionals
    distances = [tv(masked_euler_law(tabular(), steps, schedules.linear()), random_order)
                 for steps in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < 0.15 * distances[0]  # about 1/N: 0.50 at N=1, 0.046 at N=16


def test_laws_are_normalized_and_exact_for_independent_tokens():
    """For a product law every sampler is exact: tokens revealed together are independent anyway."""
    marginals = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    product = functools.reduce(np.multiply.outer, marginals)
    independent = TabularJoint(probs=product)
    target = product.reshape(-1)
    for law in (masked_euler_law(independent, 1, schedules.linear()), parallel_unmask_law(independent, 2),
                parallel_unmask_law(independent, (3, 1)), first_hitting_law(independent)):
        assert law.shape == (81,) and abs(law.sum() - 1.0) < LAW
        np.testing.assert_allclose(law, target, rtol=0, atol=LAW)
    # negative control: with dependence, one block is the product of the marginals, not the joint
    assert tv(parallel_unmask_law(tabular(), LENGTH), tabular().law()) > 0.1


def test_parallel_unmask_with_one_token_per_call_is_the_random_order_law():
    """Perturbed family: the random-order law is a genuine mixture over orders, not the model."""
    random_order = ancestral_law(noisy(), "random")
    np.testing.assert_allclose(parallel_unmask_law(noisy(), 1), random_order, rtol=0, atol=LAW)
    np.testing.assert_allclose(parallel_unmask_law(noisy(), (1, 1, 1, 1)), random_order, rtol=0, atol=LAW)
    assert tv(random_order, tabular().law()) > 0.01


# ------------------------------------------------------------------------------ errors


def test_sampler_arguments_are_validated_with_the_argument_named():
    family, key, linear = noisy(), jax.random.key(0), schedules.linear()
    _raises(InvalidArgumentError, lambda: masked_euler(key, family, 0, 4, linear), "masked_euler", "num_samples")
    _raises(InvalidArgumentError, lambda: masked_euler(key, family, 8, 0, linear), "masked_euler", "num_steps")
    _raises(ArprobTypeError, lambda: masked_euler(key, family, 8, 2.0, linear), "num_steps", "int")
    _raises(ArprobTypeError, lambda: masked_euler(key, family, 8, 4, "linear"), "masked_euler", "schedule",
            "schedules.linear()")
    _raises(InvalidArgumentError, lambda: masked_euler_law(family, 0, linear), "masked_euler_law", "num_steps")
    _raises(ArprobTypeError, lambda: masked_euler_law(family, 4, None), "masked_euler_law", "schedule")
    _raises(InvalidArgumentError, lambda: parallel_unmask(key, family, 0, 2), "parallel_unmask", "num_samples")
    _raises(InvalidArgumentError, lambda: parallel_unmask(key, family, 8, 0), "parallel_unmask", "k must be >= 1")
    _raises(InvalidArgumentError, lambda: parallel_unmask(key, family, 8, (1, 2)), "k must be", "summing to",
            "length=4")
    _raises(InvalidArgumentError, lambda: parallel_unmask(key, family, 8, (2, 0, 2)), "k must be", "positive")
    _raises(InvalidArgumentError, lambda: parallel_unmask(key, family, 8, ()), "k must be")
    _raises(InvalidArgumentError, lambda: parallel_unmask_law(family, (5,)), "parallel_unmask_law", "k must be")
    _raises(InvalidArgumentError, lambda: first_hitting(key, family, 0), "first_hitting", "num_samples")
    _raises(ArprobTypeError, lambda: first_hitting(key, "family", 8), "first_hitting", "conditional family")


@pytest.mark.parametrize("k", [2.0, True, "ab", (1, 1.5, 2)])
def test_non_integer_block_sizes_are_refused(k):
    """Not truncated, not a bare TypeError: an ArprobError naming k (the sampler validates k the same way,
    before compiling anything)."""
    _raises(InvalidArgumentError, lambda: parallel_unmask_law(tabular(), k), "parallel_unmask_law", "k must be",
            repr(k))
    _raises(InvalidArgumentError, lambda: parallel_unmask(jax.random.key(0), tabular(), 8, k), "parallel_unmask",
            "k must be")


def test_law_enumerations_are_refused_above_their_budgets():
    long = TabularJoint(probs=np.full((2,) * 12, 2.0**-12))
    _raises(EnumerationTooLargeError, lambda: masked_euler_law(long, 4, schedules.linear()), "masked_euler_law",
            "max_entries=4,194,304")
    _raises(EnumerationTooLargeError, lambda: parallel_unmask_law(noisy(), 2, max_entries=1000),
            "parallel_unmask_law", "max_entries=1,000")
    _raises(EnumerationTooLargeError, lambda: first_hitting_law(noisy(), max_entries=1000), "first_hitting_law",
            "max_entries=1,000")


# ------------------------------------------------------------------------- budget DP


def _compositions(length: int, parts: int):
    """All ordered block sizes (b_1, ..., b_parts) of positive ints summing to length."""
    for cuts in itertools.combinations(range(1, length), parts - 1):
        edges = (0, *cuts, length)
        yield tuple(b - a for a, b in zip(edges, edges[1:]))


def _composition_loss(losses, blocks) -> float:
    start, total = 0, 0.0
    for size in blocks:
        total += size * losses[start]
        start += size
    return total


@pytest.mark.parametrize("shape", ["decreasing", "increasing", "random"])
def test_budgeted_blocks_is_the_best_composition(shape):
    rng = np.random.default_rng({"decreasing": 0, "increasing": 1, "random": 2}[shape])
    losses = rng.uniform(0.1, 2.0, 7)
    losses = {"decreasing": np.sort(losses)[::-1], "increasing": np.sort(losses), "random": losses}[shape]
    for budget in range(1, 8):
        blocks, loss = budgeted_blocks(losses, budget)
        assert len(blocks) == budget and sum(blocks) == 7 and min(blocks) >= 1
        best = min(_composition_loss(losses, c) for c in _compositions(7, budget))
        assert abs(loss - best) < 1e-12
        assert abs(_composition_loss(losses, blocks) - loss) < 1e-12
    assert budgeted_blocks(losses, 7)[0] == (1,) * 7
    assert budgeted_blocks(losses, 1) == ((7,), pytest.approx(7 * losses[0], abs=1e-12))


def test_budget_curve_bounds_and_endpoints():
    """dp_loss >= cross-entropy (Jensen over paths), with equality at one call; at B = L the DP loss is the
    expected any-order NLL and, for exact conditionals, the generated law is the target."""
    model = tabular()
    expected_nll = float(model.law() @ np.asarray(AnyOrderAR(model).expected_nll(np.asarray(
        list(itertools.product(range(VOCAB), repeat=LENGTH))))))
    for family in (model, noisy()):
        curve = budget_curve(family, model)
        assert tuple(curve.budgets) == (1, 2, 3, 4)
        assert np.all(curve.dp_loss >= curve.cross_entropy - 1e-12)
        assert abs(curve.dp_loss[0] - curve.cross_entropy[0]) < 1e-10  # one block: a single path
        assert curve.blocks[-1] == (1, 1, 1, 1)
        np.testing.assert_allclose(curve.tv[0], tv(parallel_unmask_law(family, LENGTH), model.law()), atol=LAW)
        if family is model:
            assert abs(curve.dp_loss[-1] - expected_nll) < 1e-10  # the entropy of the model
            assert curve.tv[-1] < 1e-12 and abs(curve.cross_entropy[-1] - expected_nll) < 1e-10
            assert np.all(np.diff(curve.tv) < 0)  # more calls, closer to the target
        else:
            per_sequence = np.asarray(AnyOrderAR(family).expected_nll(np.asarray(
                list(itertools.product(range(VOCAB), repeat=LENGTH)))))
            assert abs(curve.dp_loss[-1] - model.law() @ per_sequence) < 1e-10
            assert curve.tv[-1] > 0.05  # negative control: an inconsistent family never reaches the target


def test_step_losses_accepts_a_model_a_law_or_samples():
    by_model = step_losses(noisy(), tabular())
    by_law = step_losses(noisy(), tabular().law())
    np.testing.assert_allclose(by_law, by_model, rtol=0, atol=1e-12)
    samples = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [1, 0, 0, 2]], dtype=np.int32)
    by_samples = step_losses(noisy(), samples)
    h = np.asarray(AnyOrderAR(noisy()).per_size_losses(samples)).mean(axis=1)
    expected = [h[LENGTH - k] / (math.comb(LENGTH, k) * (LENGTH - k)) for k in range(LENGTH)]
    np.testing.assert_allclose(by_samples, expected, rtol=0, atol=1e-12)


def test_a_budgeted_sampler_traces_under_jit():
    # `arprob check` fuses sampling into a compiled loop: the blocks must be computable while tracing
    def sample(key):
        blocks = budgeted_blocks(step_losses(noisy(), tabular()), 2)[0]
        return parallel_unmask(key, noisy(), 64, blocks)[0]

    eager = budgeted_blocks(step_losses(noisy(), tabular()), 2)[0]
    np.testing.assert_array_equal(jax.jit(sample)(jax.random.key(0)),
                                  parallel_unmask(jax.random.key(0), noisy(), 64, eager)[0])


def test_budget_arguments_are_validated():
    losses = np.array([1.0, 0.5, 0.2])
    _raises(InvalidArgumentError, lambda: budgeted_blocks(losses, 4), "budgeted_blocks", "budget=4", "1..3")
    _raises(InvalidArgumentError, lambda: budgeted_blocks(losses, 0), "budget", ">= 1")
    _raises(InvalidArgumentError, lambda: budgeted_blocks(np.array([1.0, np.nan]), 1), "step_losses", "finite")
    _raises(InvalidArgumentError, lambda: budgeted_blocks(np.zeros((2, 2)), 1), "1-d")
    _raises(InvalidProbabilityError, lambda: step_losses(noisy(), np.full(81, 0.5)), "step_losses", "summing to 1")
    _raises(InvalidArgumentError, lambda: step_losses(noisy(), np.zeros((2, 3), np.int32)), "step_losses",
            "shape (2, 3)")
