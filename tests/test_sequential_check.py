"""Issue 17: sequential checking, plan_for, weighted Holm, the debiased distance and its interval, seeds.

Resolution of the statistical tests here: each states the TV its sample size detects.
"""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from arprob import NGram
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.verify import Sampler, check, detectable, from_law, holm, plan_for, seeds, tv
from arprob.verify.check import (
    _tv_summary,
    binomial_mean_absolute_deviation,
    null_mean_tv,
    split_lower_bound,
)
from arprob.verify.plans import EARLY_SHARE, FIRST_LOOK, test_weights
from arprob.verify.projections import Test

TARGET = NGram.random(jax.random.key(3), vocab_size=3, context_size=1, length=3)  # 27 sequences
LAW = np.asarray(TARGET.law(), np.float64).ravel()
POWERS = 3 ** np.arange(2, -1, -1)


def numpy_sampler(law):
    """A NumPy sampler drawing i.i.d. sequences from ``law`` (takes an int seed: seed_type='int')."""

    def draw(seed, num_samples):
        index = np.random.default_rng(seed).choice(law.size, size=num_samples, p=law / law.sum())
        return ((index[:, None] // POWERS) % 3).astype(np.int32)

    return draw


# -- weighted Holm --------------------------------------------------------------------------------


def _weighted_step_down(p, w, alpha):
    """Direct weighted Holm: reject in order of p/w while p_(k) <= alpha w_(k) / (weight not yet rejected)."""
    w = np.asarray(w, float) / np.sum(w)
    remaining = set(range(len(p)))
    rejected = set()
    while remaining:
        k = min(remaining, key=lambda i: (p[i] / w[i], i))
        if p[k] > alpha * w[k] / sum(w[i] for i in remaining):
            break
        rejected.add(k)
        remaining.remove(k)
    return rejected


def test_weighted_holm_equals_the_step_down_rule_and_holm_with_equal_weights():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 7))
        p = rng.uniform(0, 0.05, m) ** rng.uniform(0.5, 2)
        w = rng.uniform(0.1, 1, m)
        adjusted = holm(p, w)
        for alpha in (0.001, 0.01, 0.05):
            assert set(np.flatnonzero(adjusted <= alpha)) == _weighted_step_down(p, w, alpha)
        np.testing.assert_allclose(holm(p, np.ones(m)), holm(p), rtol=0, atol=1e-15)
    # Holm by hand: p = (0.01, 0.04, 0.03), m = 3 -> (0.03, 0.06, 0.06)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06], atol=1e-15)
    with pytest.raises(InvalidArgumentError, match="weights"):
        holm([0.1, 0.2], [1.0, -1.0])


def test_primary_tests_get_half_of_alpha():
    tests = [Test("x[0]", "cells", (0,)), Test("x[1]", "cells", (1,)), Test("rosenblatt", "pit")]
    np.testing.assert_allclose(test_weights(tests), [0.25, 0.25, 0.5])
    joint = [Test("joint", "cells"), Test("joint head", "cells", statistic="head")]
    np.testing.assert_allclose(test_weights(joint), [0.5, 0.5])


# -- plan_for --------------------------------------------------------------------------------------


def test_plan_for_is_what_check_runs():
    fixed = plan_for(TARGET, deviation=0.05)
    report = check(from_law(LAW, 3, 3), TARGET, deviation=0.05, progress=False)
    assert not report.sequential and report.num_samples == fixed.num_samples == report.planned_samples
    assert fixed.looks == (fixed.num_samples,)
    sequential = plan_for(TARGET, deviation=0.02, sequential=True)
    assert sequential.looks[0] == FIRST_LOOK and sequential.looks[-1] == sequential.num_samples
    assert sum(sequential.look_alphas) == pytest.approx(1e-4, rel=1e-12)
    assert sequential.look_alphas[-1] == pytest.approx(1e-4 * (1 - EARLY_SHARE), rel=1e-12)
    # the last look is planned at its own level: the plan is longer, by about 1%
    assert 1.0 < sequential.num_samples / plan_for(TARGET, deviation=0.02).num_samples < 1.05
    timed = plan_for(TARGET, deviation=0.02, sampler=from_law(LAW, 3, 3))
    assert timed.samples_per_second > 0 and timed.expected_seconds == pytest.approx(
        timed.num_samples / timed.samples_per_second)
    assert "share of alpha" in str(timed) and "expected time" in str(timed)


# -- sequential checking ---------------------------------------------------------------------------

FALSE_ALARM_SEEDS = 500


@pytest.mark.slow
def test_sequential_false_alarm_rate_stays_below_alpha_over_500_seeds():
    """Exact JAX sampler, sequential, default tests (joint + head), alpha = 0.05, deviation 0.02.

    Plan: 3 looks (2,048, 8,192 and the plan's 30,438 samples, resolution 0.02 TV on 27 cells).
    The family-wise rate must be <= alpha: one-sided binomial test at level 1e-3 (false-alarm rate of
    this assertion 1e-3).  Measured: 22 rejections of 500, 5 of them at an early look (the fixed-n
    design on the same seeds: 23).
    """
    sampler = from_law(LAW, 3, 3)
    alpha = 0.05
    plan = plan_for(TARGET, alpha=alpha, deviation=0.02, sequential=True)
    assert len(plan.looks) >= 3
    reports = [check(sampler, TARGET, alpha=alpha, deviation=0.02, seed=seed, sequential=True, progress=False)
               for seed in range(FALSE_ALARM_SEEDS)]
    rejections = sum(not r.passed for r in reports)
    assert stats.binomtest(rejections, FALSE_ALARM_SEEDS, alpha, alternative="greater").pvalue > 1e-3, rejections
    early = sum(not r.passed and r.num_samples < plan.num_samples for r in reports)
    assert early <= rejections


@pytest.mark.parametrize("mix", [0.3, 0.6])
def test_gross_bugs_stop_after_a_few_thousand_samples(mix):
    """A NumPy sampler (sequential by default) from a law at TV >= 0.1 is rejected at the first or second
    look (<= 8,192 samples) of a plan of ~800,000; the report says where it stopped and bounds the TV away
    from 0 (the sample-split lower bound)."""
    biased = (1 - mix) * LAW + mix * np.roll(LAW, 1)
    assert tv(biased, LAW) >= 0.1
    report = check(numpy_sampler(biased), TARGET, seed_type="int", law=biased, progress=False)
    assert report.sequential and not report.passed
    assert report.num_samples <= 4 * FIRST_LOOK < report.planned_samples
    assert report.looks[-1]["rejected"] and report.looks[-1]["num_samples"] == report.num_samples
    assert 0 < report.tv_interval[0] <= report.exact_tv <= report.tv_interval[1]
    assert "stopped at look" in report.summary()


def test_sequential_passing_run_draws_the_plan_and_is_reproducible():
    sampler = numpy_sampler(LAW)
    a = check(sampler, TARGET, seed_type="int", deviation=0.03, progress=False)
    b = check(sampler, TARGET, seed_type="int", deviation=0.03, progress=False)
    assert a.passed and a.num_samples == a.planned_samples == plan_for(TARGET, deviation=0.03,
                                                                       sequential=True).num_samples
    assert [t.value for t in a.tests] == [t.value for t in b.tests]
    assert [look["num_samples"] for look in a.looks] == list(plan_for(TARGET, deviation=0.03,
                                                                      sequential=True).looks)


def test_sequential_default_follows_what_the_sampler_is():
    jax_report = check(from_law(LAW, 3, 3), TARGET, deviation=0.05, progress=False)
    assert not jax_report.sequential
    host = check(numpy_sampler(LAW), TARGET, seed_type="numpy", deviation=0.05, progress=False)
    assert host.sequential
    with pytest.raises(InvalidArgumentError, match="two-sample"):
        check(from_law(LAW, 3, 3), TARGET, reference=from_law(LAW, 3, 3), sequential=True, progress=False)


# -- distance -------------------------------------------------------------------------------------


def test_binomial_mean_absolute_deviation_is_exact():
    for n in (1, 7, 50, 333):
        for p in (0.0, 1e-3, 0.1, 0.37, 0.5, 0.9, 1.0):
            k = np.arange(n + 1)
            brute = float(np.sum(stats.binom.pmf(k, n, p) * np.abs(k - n * p)))
            assert binomial_mean_absolute_deviation(n, [p])[0] == pytest.approx(brute, rel=1e-10, abs=1e-12)
    n = 40
    law = np.array([0.5, 0.3, 0.2])
    counts = [(a, b, n - a - b) for a in range(n + 1) for b in range(n + 1 - a)]
    pmf = stats.multinomial.pmf(counts, n, law)
    brute = float(np.sum(pmf * 0.5 * np.abs(np.asarray(counts) / n - law).sum(axis=1)))
    assert null_mean_tv(n, law) == pytest.approx(brute, abs=1e-12)


def test_split_lower_bound_covers_at_its_level():
    """Coverage by simulation: 2,000 replicates per law at delta = 0.05; the bound must fall below the true
    TV in at least 93.5% of them (a Binomial(2000, 0.95) count is below 1,870 with probability < 1e-4)."""
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(64))
    for target_tv in (0.0, 0.02, 0.1):
        q = p if target_tv == 0 else (1 - target_tv / tv(np.roll(p, 5), p)) * p + target_tv / tv(
            np.roll(p, 5), p) * np.roll(p, 5)
        true_tv = tv(q, p)
        first = rng.multinomial(2000, q, size=2000)
        second = rng.multinomial(2000, q, size=2000)
        covered = sum(split_lower_bound(a, b, p, 0.05) <= true_tv + 1e-15 for a, b in zip(first, second))
        assert covered >= 1870, (target_tv, covered)


def test_check_interval_coverage_and_debiased_estimate_by_simulation():
    """The full interval of the joint test (Weissman, McDiarmid, split) at alpha = 0.1 covers the exact TV
    in >= 93% of 600 simulated runs per law (it is valid at 90% and conservative); the bootstrap
    bias-corrected estimate is closer to the truth than the plug-in on average."""
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(243))
    tests = [Test("joint", "cells")]
    for target_tv in (0.0, 0.03, 0.2):
        shifted = np.roll(p, 7)
        q = p if target_tv == 0 else (1 - target_tv / tv(shifted, p)) * p + target_tv / tv(shifted, p) * shifted
        true_tv = tv(q, p)
        covered, plug, debiased = 0, [], []
        for _ in range(600):
            half = rng.multinomial(5000, q)
            total = half + rng.multinomial(5000, q)
            summary = _tv_summary({tests[0].counter: total}, {tests[0].counter: half}, tests, [p], 0.1, 10000, 5,
                                  int(rng.integers(1 << 30)))
            covered += summary["interval"][0] <= true_tv <= summary["interval"][1]
            plug.append(summary["estimate"])
            debiased.append(summary["debiased"])
        assert covered >= 0.93 * 600, (target_tv, covered)
        assert abs(np.mean(debiased) - true_tv) < abs(np.mean(plug) - true_tv), target_tv


def test_report_states_the_null_mean_and_the_debiased_estimate():
    report = check(from_law(LAW, 3, 3), TARGET, num_samples=50_000, progress=False)
    assert report.tv_null_mean == pytest.approx(null_mean_tv(50_000, LAW), rel=1e-12)
    assert 0 <= report.tv_debiased <= 1 and report.tv_interval[0] <= report.tv_interval[1]
    assert "an exact sampler shows a plug-in TV" in report.summary()
    assert report.to_dict()["looks"] == report.looks


# -- seeds and the first call ----------------------------------------------------------------------


def test_seeds_are_deterministic_and_independent_across_keys():
    a = seeds(jax.random.key(0), 1000)
    assert np.array_equal(a, seeds(jax.random.key(0), 1000)) and len(set(a.tolist())) == 1000
    assert a.dtype == np.uint64 and int(a.max()) < 2**63
    b = seeds(jax.random.key(1), 1000)
    assert not set(a.tolist()) & set(b.tolist())
    # the top bit pattern is uniform: a chi-square test on 16 bins of the top 4 bits (false-alarm rate 1e-4)
    counts = np.bincount((seeds(jax.random.key(2), 20_000) >> np.uint64(59)).astype(int), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_swapped_arguments_get_a_clear_error():
    def swapped(num_samples, key):  # the engine convention written the other way round
        return jax.random.randint(key, (num_samples, 3), 0, 3)

    with pytest.raises(ArprobTypeError, match=r"sampler\(key, num_samples\)"):
        check(swapped, TARGET, num_samples=1000, progress=False)
    with pytest.raises(InvalidArgumentError, match="seed_type"):
        check(numpy_sampler(LAW), TARGET, seed_type="torch", progress=False)


def test_resolution_of_the_sequential_plan_is_stated():
    report = check(Sampler(numpy_sampler(LAW), law=LAW, jax=False), TARGET, seed_type="int", deviation=0.05,
                   progress=False)
    assert report.resolution == pytest.approx(
        detectable(report.num_samples, 27, report.looks[-1]["alpha"] * 0.5, 0.99), rel=1e-9)
    assert math.isclose(report.resolution, 0.05, rel_tol=0.02)
