"""Bad input to the verifier, arprob.precision and arprob.schedules: a clear ArprobError, never a verdict.

The hostile-input suite (tests/hostile, catalogue_verify) tries every argument of every public function
with every hostile value of its kind; these are the behaviours that matter most, stated one by one: a
goodness-of-fit test never returns a p-value on empty or invalid input, sizes that cannot finish are
refused up front with the size they would need, and every message names the function and the argument.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from error_checks import raises

from arprob import TabularJoint, precision, schedules
from arprob.errors import (
    ArprobError,
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    InvalidProbabilityError,
    InvalidTokenError,
    ShapeError,
)
from arprob.verify import (
    Counts,
    Sampler,
    chi2_divergence,
    detectable,
    from_law,
    gof,
    hellinger,
    holm,
    kl,
    plan,
    power_of,
    projected_law,
    resolution,
    tv,
)
from arprob.verify.planning import NORMAL_DF

LAW = np.array([0.05, 0.1, 0.15, 0.2, 0.1, 0.1, 0.2, 0.1])  # V = 2, L = 3
SAMPLES = np.random.default_rng(0).integers(0, 2, (300, 3))


# -- gof never gives a verdict on invalid input ---------------------------------------------------


def test_gof_refuses_empty_samples_instead_of_p_one():
    raises(InvalidArgumentError, lambda: gof(SAMPLES[:0], LAW), "gof", "samples", "empty")
    raises(InvalidArgumentError, lambda: gof(Counts(np.zeros(8), 2), LAW), "gof", "samples", "0 samples")


@pytest.mark.parametrize("position", [0, 5, 7])
def test_gof_refuses_nan_anywhere_in_the_law(position):
    law = LAW.copy()
    law[position] = np.nan
    raises(InvalidProbabilityError, lambda: gof(SAMPLES, law), "gof", "law", "non-finite")


@pytest.mark.parametrize("law, fragment", [(LAW * 2, "sums to 2"), (np.where(LAW == 0.05, -0.05, LAW), "negative"),
                                           ("law", "real numbers"), (None, "real numbers")])
def test_gof_refuses_a_law_that_is_not_a_law(law, fragment):
    with pytest.raises(ArprobError, match=fragment) as raised:
        gof(SAMPLES, law)
    assert str(raised.value).startswith("gof: law")


@pytest.mark.parametrize("samples, error, fragment", [
    (SAMPLES.astype(float), InvalidTokenError, "dtype float64"),
    (np.where(SAMPLES == 1, np.nan, SAMPLES), InvalidTokenError, "NaN"),
    (SAMPLES.astype(bool), InvalidTokenError, "dtype bool"),
    (np.where(SAMPLES == 1, 2, SAMPLES), InvalidTokenError, "token 2"),
    (SAMPLES[:, :2], ShapeError, "samples of length 2"),
    (SAMPLES[:, 0], ShapeError, "(num_samples, length)"),
    ("tokens", ArprobTypeError, "integer tokens"),
])
def test_gof_refuses_samples_that_are_not_tokens(samples, error, fragment):
    raises(error, lambda: gof(samples, LAW, vocab_size=2), "gof", "samples", fragment)


@pytest.mark.parametrize("projection, error, fragment", [
    ((7,), InvalidArgumentError, "position 7"), ((-1,), InvalidArgumentError, "do not count from the end"),
    ((0, 0), InvalidArgumentError, "repeats"), ((0.5,), ArprobTypeError, "integer positions"),
    ((), InvalidArgumentError, "empty"), ("02", ArprobTypeError, "tuple of positions"), (3, ArprobTypeError, "tuple"),
])
def test_bad_projections_are_refused_by_gof_and_projected_law(projection, error, fragment):
    raises(error, lambda: gof(SAMPLES, LAW, projection=projection), "gof", "projection", fragment)
    raises(error, lambda: projected_law(LAW, 2, 3, projection), "projected_law", "projection", fragment)


def test_gof_arguments_and_a_valid_call_still_answer():
    raises(InvalidArgumentError, lambda: gof(SAMPLES, LAW, statistic="kolmogorov"), "gof", "statistic", "'pearson'")
    raises(InvalidArgumentError, lambda: gof(SAMPLES, LAW, min_expected=0), "gof", "min_expected")
    raises(ArprobTypeError, lambda: gof(SAMPLES, LAW, vocab_size=2.0), "gof", "vocab_size", "use 2")
    result = gof(SAMPLES, LAW, projection=np.array([2, 0]))  # numpy positions are fine
    assert result.projection == (2, 0) and 0.0 <= result.p_value <= 1.0


def test_counts_are_checked_when_built():
    raises(InvalidArgumentError, lambda: Counts(np.array([3, -1, 2, 0]), 2), "Counts", "counts", "-1")
    raises(InvalidArgumentError, lambda: Counts(np.array([3, 0.5, 2, 0]), 2), "Counts", "counts", "whole numbers")
    raises(ShapeError, lambda: Counts(np.ones(5), 2), "Counts", "counts", "not a power of vocab_size=2")
    raises(ShapeError, lambda: Counts(np.ones(4), 2, (0, 1, 2)), "Counts", "counts", "2**3 cells")
    raises(ArprobTypeError, lambda: Counts(np.ones(4), "2"), "Counts", "vocab_size")
    assert Counts(np.ones(4, int), 2, [1, 0]).projection == (1, 0)


# -- distances -----------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [tv, kl, hellinger, chi2_divergence])
def test_distances_refuse_what_is_not_a_pair_of_laws(distance):
    name = distance.__name__
    p = np.array([0.2, 0.3, 0.5])
    raises(ArprobTypeError, lambda: distance("ab", "cd"), name, "p", "real numbers")
    raises(InvalidProbabilityError, lambda: distance(p, np.array([0.2, np.nan, 0.8])), name, "q", "non-finite")
    raises(InvalidProbabilityError, lambda: distance(np.array([1.2, -0.2, 0.0]), p), name, "p", "negative")
    raises(InvalidProbabilityError, lambda: distance(p, 2 * p), name, "q", "sums to 2")
    raises(ShapeError, lambda: distance(p, np.array([0.5, 0.5])), name, "p", "q", "same shape")
    raises(ShapeError, lambda: distance(np.array([]), np.array([])), name, "p", "empty")
    assert distance(p, p) == 0.0


def test_holm_refuses_nan_and_p_values_outside_zero_one():
    for bad in ([0.01, np.nan], [0.01, -0.1], [0.01, 1.5], []):
        raises(InvalidArgumentError, lambda bad=bad: holm(bad), "holm", "p_values")
    np.testing.assert_array_equal(holm([0.3]), [0.3])


# -- planning ------------------------------------------------------------------------------------


def test_plan_refuses_a_size_no_run_reaches_stating_it():
    started = time.perf_counter()
    raises(InvalidArgumentError, lambda: plan(1e-300, 27), "plan", "deviation=1e-300", "10^601", "samples")
    raises(InvalidArgumentError, lambda: plan(1e-12, 27), "plan", "deviation", "2**63 - 1")
    assert time.perf_counter() - started < 5.0
    assert isinstance(plan(1e-8, 27), int)  # 10^17 samples: an answer, even if no run reaches it


@pytest.mark.parametrize("call, argument", [
    (lambda: plan(0.0, 27), "deviation"), (lambda: plan(1.5, 27), "deviation"), (lambda: plan("0.1", 27), "deviation"),
    (lambda: plan(0.1, 1), "support_size"), (lambda: plan(0.1, 27.0), "support_size"),
    (lambda: plan(0.1, 27, alpha=0.0), "alpha"), (lambda: plan(0.1, 27, alpha=math.nan), "alpha"),
    (lambda: plan(0.1, 27, power=1.0), "power"), (lambda: plan(0.1, 27, power=None), "power"),
    (lambda: detectable(0, 27), "num_samples"), (lambda: detectable(10.5, 27), "num_samples"),
    (lambda: detectable(100, 27, power=-0.1), "power"), (lambda: power_of(-5, 0.1, 27), "num_samples"),
    (lambda: power_of(100, math.nan, 27), "deviation"), (lambda: power_of(100, 0.1, 0), "support_size"),
    (lambda: power_of(100, 0.1, 27, alpha=1.5), "alpha"), (lambda: power_of(True, 0.1, 27), "num_samples"),
])
def test_planning_arguments_are_refused_by_name(call, argument):
    with pytest.raises(ArprobError) as raised:
        call()
    assert argument in str(raised.value)


def test_planning_answers_for_huge_supports_and_is_continuous_at_the_normal_approximation():
    """Beyond NORMAL_DF degrees of freedom the tail is the normal approximation: the two agree to 1e-4."""
    n = plan(0.05, 10**12, 1e-3, 0.9)
    assert isinstance(n, int) and power_of(n, 0.05, 10**12, 1e-3) >= 0.9 > power_of(n - 10**4, 0.05, 10**12, 1e-3)
    below, above = int(NORMAL_DF), int(NORMAL_DF) + 2
    for num_samples in (10**8, 3 * 10**8, 10**9):
        assert power_of(num_samples, 0.01, below) == pytest.approx(power_of(num_samples, 0.01, above), abs=1e-4)
    assert 0.0 < detectable(10**12, 2**63 - 1) < 1.0
    raises(InvalidArgumentError, lambda: plan(0.1, 2**63), "plan", "support_size")


# -- samplers and resolution ---------------------------------------------------------------------


def test_from_law_and_sampler_check_their_arguments_without_forming_huge_powers():
    started = time.perf_counter()
    raises(ShapeError, lambda: from_law(LAW, 2, 10**12), "from_law", "length", "2**1000000000000")
    assert time.perf_counter() - started < 2.0
    raises(InvalidProbabilityError, lambda: from_law(LAW * 2, 2, 3), "from_law", "law", "sums to 2")
    raises(ArprobTypeError, lambda: from_law(LAW, 2.0, 3), "from_law", "vocab_size")
    raises(ArprobTypeError, lambda: Sampler("not a function"), "Sampler", "fn")
    raises(InvalidProbabilityError, lambda: Sampler(lambda key, n: None, law=np.array([0.5, np.nan])), "Sampler", "law")
    sampler = from_law(LAW, 2, 3, name="biased")
    raises(ArprobTypeError, lambda: sampler(0, 10), "Sampler 'biased'", "key", "jax.random.key")
    raises(ShapeError, lambda: sampler(jax.random.split(jax.random.key(0), 4), 10), "Sampler 'biased'", "key", "batch")
    raises(InvalidArgumentError, lambda: sampler(jax.random.key(0), 0), "Sampler 'biased'", "num_samples")
    raises(EnumerationTooLargeError, lambda: sampler(jax.random.key(0), 10**12), "Sampler 'biased'", "num_samples")
    assert np.asarray(sampler(jax.random.key(0), 5)).shape == (5, 3)


def test_resolution_names_itself_not_check():
    target = TabularJoint.random(jax.random.key(0), 2, 3)
    raises(InvalidArgumentError, lambda: resolution(target, seconds=0), "resolution", "seconds")
    raises(InvalidArgumentError, lambda: resolution(target, seconds=math.inf), "resolution", "seconds")
    raises(InvalidArgumentError, lambda: resolution(target, alpha=1.0), "resolution", "alpha")
    raises(ArprobTypeError, lambda: resolution(target, sampler="fast"), "resolution", "sampler")
    raises(InvalidArgumentError, lambda: resolution(target, projections=[(0, 0)]), "resolution", "projections[0]")
    raises(ArprobTypeError, lambda: resolution(target, projections=[(0.5,)]), "resolution", "projections[0]")
    raises(InvalidArgumentError, lambda: resolution(target, seed=-1), "resolution", "seed")
    raises(ArprobTypeError, lambda: resolution("model"), "resolution", "target")


# -- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [0, 1.5, None, np.zeros(2), jax.random.split(jax.random.key(0), 3)])
def test_categorical_and_gumbel_refuse_what_is_not_one_key(key):
    raises(ArprobError, lambda: precision.categorical(key, jnp.zeros(3)), "categorical", "key")
    raises(ArprobError, lambda: precision.gumbel(key, (3,)), "gumbel", "key")


def test_categorical_refuses_logits_that_have_no_law_instead_of_drawing_token_zero():
    key = jax.random.key(0)
    raises(InvalidArgumentError, lambda: precision.categorical(key, jnp.array([0.0, jnp.nan])), "categorical",
           "logits", "nan")
    raises(InvalidArgumentError, lambda: precision.categorical(key, jnp.array([0.0, jnp.inf])), "categorical",
           "logits", "inf")
    rows = jnp.array([[0.0, -jnp.inf], [-jnp.inf, -jnp.inf]])
    raises(InvalidProbabilityError, lambda: precision.categorical(key, rows), "categorical", "logits", "-inf")
    raises(EnumerationTooLargeError, lambda: precision.categorical(key, jnp.zeros(3), shape=(10**12,)),
           "categorical", "shape")
    raises(ArprobTypeError, lambda: precision.categorical(key, jnp.zeros(3), shape="10"), "categorical", "shape")
    # partly impossible rows are valid, and traced logits pass (checked values only where concrete)
    assert np.all(np.asarray(precision.categorical(key, jnp.array([-jnp.inf, 0.0]), shape=(50,))) == 1)
    traced = jax.jit(lambda k, l: precision.categorical(k, l, shape=(20,)))(key, jnp.array([0.0, -jnp.inf]))
    assert np.all(np.asarray(traced) == 0)


def test_masked_diffusion_token_law_refuses_a_step_count_that_would_not_finish():
    started = time.perf_counter()
    raises(EnumerationTooLargeError, lambda: precision.masked_diffusion_token_law([0.5, 0.5], 10**9, 3.0),
           "masked_diffusion_token_law", "num_steps=1,000,000,000", "10^12")
    raises(EnumerationTooLargeError, lambda: precision.masked_diffusion_summary([0.6, 0.4], 10**12),
           "masked_diffusion_summary", "num_steps")
    assert time.perf_counter() - started < 2.0
    raises(InvalidArgumentError, lambda: precision.masked_diffusion_summary([0.6, 0.4], 0),
           "masked_diffusion_summary", "num_steps")
    raises(InvalidArgumentError, lambda: precision.masked_diffusion_summary([0.5, 0.5], 4),
           "masked_diffusion_summary", "probs", "uniform")


@pytest.mark.parametrize("call, owner, argument", [
    (lambda: precision.tempered([0.5, 0.5], 0.0), "tempered", "temperature"),
    (lambda: precision.tempered([0.5, 0.5], math.nan), "tempered", "temperature"),
    (lambda: precision.tempered([0.5, 0.5], "hot"), "tempered", "temperature"),
    (lambda: precision.entropy("probs"), "entropy", "probs"),
    (lambda: precision.entropy([0.5, np.nan]), "entropy", "probs"),
    (lambda: precision.effective_temperature([0.6, 0.4], [0.5, 0.6]), "effective_temperature", "law"),
    (lambda: precision.gumbel_cap(mode="bogus"), "gumbel_cap", "mode"),
    (lambda: precision.gumbel_floor(None), "gumbel_floor", "dtype"),
    (lambda: precision.library_tv_bound(10, "int32"), "library_tv_bound", "dtype"),
    (lambda: precision.worst_case_tv_bound(0, 15.0), "worst_case_tv_bound", "vocab_size"),
    (lambda: precision.clamped_gumbel_law([0.0, 1.0], "big"), "clamped_gumbel_law", "cap"),
    (lambda: precision.clamped_gumbel_law([0.0, 1.0], 1.0, 2.0), "clamped_gumbel_law", "floor"),
    (lambda: precision.tv_bound([0.0, np.nan], 15.0), "tv_bound", "logits"),
    (lambda: precision.suppression_bound([-np.inf, -np.inf], 15.0), "suppression_bound", "logits"),
    (lambda: precision.jax_grouped_law([0.0, 1.0], [1, 0], "bfloat16"), "jax_grouped_law", "group_sizes"),
    (lambda: precision.jax_grouped_law([0.0, 1.0], [1.0, 2.0], "bfloat16"), "jax_grouped_law", "group_sizes"),
    (lambda: precision.gumbel(jax.random.key(0), (3,), "bogus"), "gumbel", "dtype"),
    (lambda: precision.gumbel(jax.random.key(0), (-1,)), "gumbel", "shape"),
])
def test_precision_arguments_are_refused_by_name(call, owner, argument):
    with pytest.raises(ArprobError) as raised:
        call()
    message = str(raised.value)
    assert message.startswith(owner + ":") and argument in message, message


# -- schedules -----------------------------------------------------------------------------------


def test_schedules_refuse_unknown_kinds_and_times_outside_zero_one():
    raises(InvalidArgumentError, lambda: schedules.Schedule("quadratic"), "Schedule", "kind", "'linear'")
    raises(InvalidArgumentError, lambda: schedules.Schedule("linear", eps=0.1), "Schedule", "eps", "log_linear")
    raises(InvalidArgumentError, lambda: schedules.linear().alpha(1.5), "Schedule.alpha", "t", "[0, 1]")
    raises(InvalidArgumentError, lambda: schedules.cosine().rate(np.array([0.2, np.nan])), "Schedule.rate", "t",
           "index (1,)")
    raises(InvalidArgumentError, lambda: schedules.log_linear(0.1).total(-0.5), "Schedule.total", "t")
    raises(ArprobTypeError, lambda: schedules.linear().mask_prob("0.5"), "Schedule.mask_prob", "t")
    raises(InvalidArgumentError, lambda: schedules.log_linear(1.0), "schedules.log_linear", "eps", "[0, 1)")
    # the ends of [0, 1] are valid, and traced times pass under jit
    assert schedules.linear().total(1.0) == math.inf and schedules.linear().alpha(0.0) == 1.0
    assert float(jax.jit(schedules.linear().alpha)(0.25)) == 0.75
