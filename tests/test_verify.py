"""The verifier, verified: distances, planning, gof calibration, check's false alarms and power.

Statistical assertions use fixed seeds; each states the probability that it
fails although the code is right ("false-alarm rate").
"""

import json

import jax
import numpy as np
import pytest
from scipy import stats

from arprob import MarkovChain, NGram, TabularJoint
from arprob.conditionals import perturbed
from arprob.errors import ArprobTypeError, InvalidTokenError, ShapeError
from arprob.samplers import ancestral, ancestral_law
from arprob.verify import (
    Counts,
    Sampler,
    check,
    chi2_divergence,
    detectable,
    from_law,
    gof,
    hellinger,
    holm,
    kl,
    plan,
    power_of,
    tv,
)
from arprob.verify.gof import _pool, _test_counts

# -- distances -----------------------------------------------------------------


def test_distances_on_a_hand_computed_pair():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    assert tv(p, q) == pytest.approx(0.5, abs=1e-15)
    assert kl(p, q) == pytest.approx(np.log(2.0), abs=1e-15)
    assert kl(q, p) == np.inf
    assert chi2_divergence(p, q) == pytest.approx(2 * 0.25**2 / 0.25 + 0.5**2 / 0.5, abs=1e-15)
    assert chi2_divergence(q, p) == np.inf
    assert hellinger(p, q) == pytest.approx(np.sqrt(1 - 2 * np.sqrt(0.125)), abs=1e-15)
    assert tv(p, p) == 0.0 and kl(p, p) == 0.0 and hellinger(p, p) == 0.0


def test_distance_inequalities_on_random_laws():
    rng = np.random.default_rng(0)
    for _ in range(200):
        size = rng.integers(2, 40)
        p, q = rng.dirichlet(np.full(size, 0.7), size=2)
        distance = tv(p, q)
        h = hellinger(p, q)
        assert h**2 <= distance + 1e-12 <= np.sqrt(2) * h + 2e-12
        assert distance <= np.sqrt(kl(p, q) / 2) + 1e-12  # Pinsker
        assert 4 * distance**2 <= chi2_divergence(p, q) + 1e-12  # Cauchy-Schwarz (planning bound)


def test_distances_reject_mismatched_or_invalid_laws():
    with pytest.raises(ShapeError, match="shape"):
        tv(np.ones(3) / 3, np.ones(4) / 4)
    with pytest.raises(ValueError, match="sums to"):
        kl(np.array([0.5, 0.6]), np.array([0.5, 0.5]))


# -- planning -----------------------------------------------------------------


def test_plan_reaches_the_power_and_detectable_inverts_it():
    for support in (2, 27, 1000, 100_000):
        n = plan(0.02, support, alpha=1e-4, power=0.99)
        assert power_of(n, 0.02, support, 1e-4) >= 0.99
        assert power_of(n - 1, 0.02, support, 1e-4) < 0.99
        # n is the smallest integer that reaches the power, so detectable brackets 0.02 between n-1 and n
        assert detectable(n, support, 1e-4, 0.99) <= 0.02 < detectable(n - 1, support, 1e-4, 0.99)
    assert plan(0.01, 64) > plan(0.02, 64) > plan(0.02, 8)


def test_plan_power_is_met_by_simulation_on_the_worst_case_alternative():
    """Worst case: q - p proportional to p on two halves, so chi2(q||p) = 4 TV^2 exactly.

    Rejection rate over 400 simulated tests must not fall below 0.9 (binomial
    test at level 1e-3: false-alarm rate 1e-3).
    """
    rng = np.random.default_rng(1)
    support, deviation = 40, 0.05
    p = rng.dirichlet(np.ones(support))
    sign = np.where(np.arange(support) < support // 2, 1.0, -1.0)
    half_mass = np.array([p[sign > 0].sum(), p[sign < 0].sum()])
    q = p * (1 + sign * deviation / np.where(sign > 0, half_mass[0], half_mass[1]))
    assert tv(q, p) == pytest.approx(deviation, abs=1e-12)
    assert chi2_divergence(q, p) == pytest.approx(
        deviation**2 * (1 / half_mass[0] + 1 / half_mass[1]), rel=1e-10
    )
    n = plan(deviation, support, alpha=0.01, power=0.9)
    rejected = sum(_test_counts(rng.multinomial(n, q), p, "pearson")[2] <= 0.01 for _ in range(400))
    assert stats.binomtest(rejected, 400, 0.9, alternative="less").pvalue > 1e-3, rejected


# -- goodness of fit -----------------------------------------------------------


def test_pooling_groups_small_cells_until_each_expects_enough():
    expected = np.array([0.1, 0.2, 3.0, 4.0, 6.0, 10.0, 0.0, 0.5])
    groups = _pool(expected, 5.0)
    assert groups[6] == -1  # zero-probability cell
    totals = np.bincount(groups[groups >= 0], weights=expected[groups >= 0])
    assert np.all(totals >= 5.0)
    assert totals.sum() == pytest.approx(expected.sum())


@pytest.mark.parametrize(
    "support, num_samples, statistic",
    [(30, 5000, "pearson"), (30, 5000, "g"), (30, 5000, "head"),
     (20_000, 4000, "pearson"), (100_000, 40_000, "pearson"), (2000, 30_000, "head")],
)
def test_gof_is_calibrated_against_exact_monte_carlo(support, num_samples, statistic):
    """p-values of multinomial draws from the target itself are uniform.

    The null is simulated exactly (numpy multinomial from the known target); the
    fraction of p-values <= 0.05 must be consistent with 0.05 (two-sided binomial
    test at level 1e-3 over 400 replicates: false-alarm rate 1e-3), and a KS test
    of the p-values against uniform must not reject at 1e-3.  Includes supports
    of 2*10^4 and 10^5 with tiny expected counts (pooling at work).
    """
    rng = np.random.default_rng(support + num_samples)
    p = rng.dirichlet(np.full(support, 0.5))
    p_values = np.array([_test_counts(rng.multinomial(num_samples, p), p, statistic)[2] for _ in range(400)])
    rejections = int(np.sum(p_values <= 0.05))
    assert stats.binomtest(rejections, 400, 0.05).pvalue > 1e-3, rejections
    # discrete statistics: compare the p-values' CDF only on the upper range where it is near-continuous
    assert stats.kstest(p_values[p_values > 0.01], stats.uniform(0.01, 0.99).cdf).pvalue > 1e-3


def test_gof_flags_a_sample_on_a_zero_probability_outcome():
    law = np.array([0.5, 0.5, 0.0, 0.0])  # V=2, L=2: sequences 10 and 11 impossible
    samples = np.array([[0, 0], [0, 1]] * 50 + [[1, 1]])
    result = gof(samples, law)
    assert result.p_value == 0.0
    assert result.zero_probability_hits == [(1, 1)]
    assert "zero-probability" in result.method


def test_gof_on_projection_uses_the_exact_marginal_and_counts():
    model = TabularJoint.random(jax.random.key(0), 3, 3)
    law = model.law()
    tokens = np.asarray(model.sample(jax.random.key(1), (20_000,)))
    result = gof(tokens, law, projection=(2, 0))
    expected = law.reshape(3, 3, 3).sum(axis=1).T.ravel()  # cells (x2, x0)
    np.testing.assert_allclose(result.expected / result.num_samples, expected, atol=1e-15)
    counts = np.bincount(tokens[:, 2] * 3 + tokens[:, 0], minlength=9)
    np.testing.assert_array_equal(result.observed, counts)
    again = gof(Counts(counts, 3, (2, 0)), law)
    assert again.p_value == result.p_value
    # a model works as the law, and the statistic is reproducible
    assert gof(tokens, model, projection=(2, 0)).value == result.value


def test_gof_rejects_bad_input():
    law = np.full(8, 1 / 8)
    with pytest.raises(InvalidTokenError, match="token 2"):
        gof(np.array([[0, 1, 2]]), law, vocab_size=2)
    with pytest.raises(ValueError, match="statistic"):
        gof(np.zeros((3, 3), int), law, statistic="kolmogorov")
    with pytest.raises(ShapeError):
        gof(np.zeros(3, int), law)


def test_holm_matches_hand_computation():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adjusted, [0.04, 0.09, 0.09, 0.5], atol=1e-15)


# -- check: false alarms and power ----------------------------------------------

TARGET = TabularJoint.random(jax.random.key(11), 3, 3)  # 27 outcomes


FALSE_ALARM_SEEDS = 500
CONFIDENCE = 0.95  # of the one-sided Clopper-Pearson bounds below


def _false_alarm_upper_bound(rejections: int, seeds: int) -> float:
    """One-sided Clopper-Pearson upper confidence bound (level CONFIDENCE) on a rejection rate."""
    return stats.binomtest(rejections, seeds, alternative="less").proportion_ci(CONFIDENCE).high


@pytest.mark.slow
def test_false_alarm_rate_of_check_matches_alpha_over_500_seeds():
    """Exact sampler, one joint Pearson test at alpha = 0.05 per run: rejections ~ Binomial(500, alpha).

    (1) Calibration: two-sided binomial test at level 1e-3 (false-alarm rate of this assertion 1e-3).
    (2) Confirmation: the one-sided 95% Clopper-Pearson upper bound on the rate is <= 2 alpha = 0.1,
    i.e. at most 38 rejections of 500 (if the rate is alpha, more happen with probability 0.005).
    Measured: 29 rejections (bound 0.078); about 9 minutes while ``check`` compiles per call.
    """
    sampler = from_law(TARGET.law(), 3, 3)
    alpha = 0.05
    rejections = sum(
        not check(sampler, TARGET, alpha=alpha, num_samples=3000, projections="joint", seed=seed).passed
        for seed in range(FALSE_ALARM_SEEDS)
    )
    assert stats.binomtest(rejections, FALSE_ALARM_SEEDS, alpha).pvalue > 1e-3, rejections
    assert _false_alarm_upper_bound(rejections, FALSE_ALARM_SEEDS) <= 2 * alpha, rejections


@pytest.mark.slow
def test_family_wise_false_alarms_with_holm_stay_below_alpha():
    """Default projections (Pearson + head, Holm) at alpha = 0.05 per run, 500 seeds of an exact sampler.

    (1) Family-wise rate <= alpha: one-sided binomial test at level 1e-3.  (2) Confirmation: the
    one-sided 95% Clopper-Pearson upper bound on the rate is <= 2 alpha = 0.1 (at most 38 rejections
    of 500; if the rate is alpha, more happen with probability 0.005, less if it is below alpha).
    Measured: 17 rejections (bound 0.051).
    """
    sampler = from_law(TARGET.law(), 3, 3)
    alpha = 0.05
    rejections = sum(
        not check(sampler, TARGET, alpha=alpha, num_samples=3000, seed=seed).passed
        for seed in range(FALSE_ALARM_SEEDS)
    )
    assert stats.binomtest(rejections, FALSE_ALARM_SEEDS, alpha, alternative="greater").pvalue > 1e-3, rejections
    assert _false_alarm_upper_bound(rejections, FALSE_ALARM_SEEDS) <= 2 * alpha, rejections


def _biased_laws(p, deviation):
    """Laws at exact TV `deviation` from p, of three shapes seen in real sampler bugs."""
    from scipy.optimize import brentq

    def at_distance(family):
        parameter = brentq(lambda s: tv(family(s), p) - deviation, 0.0, 1.0 - 1e-12)
        return family(parameter)

    def temperature(s):  # p^(1/T) with T = 1 + s: flattened
        q = p ** (1.0 / (1.0 + 3 * s))
        return q / q.sum()

    def uniform_mix(s):
        return (1 - s) * p + s / p.size

    top = np.argmax(p)

    def head_shift(s):  # mass moved from the top outcome to the others proportionally
        q = p.copy()
        q[top] -= s * p[top]
        others = np.arange(p.size) != top
        q[others] += s * p[top] * p[others] / p[others].sum()
        return q

    return {"temperature": at_distance(temperature), "uniform mix": at_distance(uniform_mix),
            "head shift": at_distance(head_shift)}


POWER_SEEDS = 29  # 0.9**29 = 0.047 < 0.05: 29 rejections of 29 confirm power >= 0.9 at 95% confidence


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["temperature", "uniform mix", "head shift"])
def test_power_of_check_at_the_planned_size(shape):
    """A law at TV 0.05 is rejected with probability >= 0.9 at the size planned for power 0.9.

    29 seeds per shape, every one must reject: then the one-sided 95% Clopper-Pearson lower bound on
    the power is 0.05**(1/29) = 0.902 >= 0.9 (were the power 0.9, 29 of 29 would happen with
    probability 0.047).  The plan is for the worst law at TV 0.05; these shapes are rejected more
    often (measured: 100 of 100 seeds for each), so a miss among the fixed seeds is unlikely: at a
    power of 0.999 it would happen with probability 0.03.
    """
    p = TARGET.law()
    q = _biased_laws(p, 0.05)[shape]
    assert tv(p, q) == pytest.approx(0.05, abs=1e-9)
    sampler = from_law(q, 3, 3)
    reports = [check(sampler, TARGET, deviation=0.05, power=0.9, seed=seed) for seed in range(POWER_SEEDS)]
    rejections = sum(not r.passed for r in reports)
    assert reports[0].planned and reports[0].num_samples == plan(0.05, 27, 1e-4 / 2, 0.9)
    lower = stats.binomtest(rejections, POWER_SEEDS, alternative="greater").proportion_ci(CONFIDENCE).low
    assert lower >= 0.9, (rejections, lower)


# -- check: behaviour ------------------------------------------------------------


def test_check_reports_exact_tv_nfe_and_counts_every_sample():
    model = MarkovChain.random(jax.random.key(3), 3, 3)
    sampler = Sampler(lambda key, n: ancestral(key, model, n, order="random"),
                      law=lambda: ancestral_law(model, "random"), name="ancestral")
    report = check(sampler, model, num_samples=1000, batch_size=300)
    assert report.passed
    assert report.exact_tv < 1e-12
    assert report.nfe == pytest.approx(3.0)
    assert report.num_samples == 1000
    assert all(t.observed.sum() == 1000 for t in report.tests)
    assert report.tv_interval[0] <= report.tv_estimate <= report.tv_interval[1]
    json.dumps(report.to_dict())
    assert "PASSED" in report.summary()
    figure = report.plot()
    assert len(figure.axes) == 2


def test_report_plot_labels_cells_by_tokens_names_the_sampler_and_marks_capped_p_values():
    import dataclasses

    import matplotlib.pyplot as plt

    model = TabularJoint.random(jax.random.key(4), length=4, vocab_size=3)  # 81 cells
    sampler = from_law(model.law(), 3, 4, name="exact sampler")
    report = check(sampler, model, num_samples=2000, seed=1)
    joint = max(report.tests, key=lambda t: t.observed.size)
    order = np.argsort(-joint.expected, kind="stable")

    # few cells: each is labelled by its tokens, most likely first; the title names sampler and target
    figure = report.plot(max_cells=20)
    ax_counts, ax_p = figure.axes
    labels = [label.get_text() for label in ax_counts.get_xticklabels()]
    assert labels == ["".join(map(str, np.unravel_index(cell, (3,) * 4))) for cell in order[:20]]
    assert "exact sampler" in figure._suptitle.get_text() and report.target in figure._suptitle.get_text()
    assert not any("capped" in text.get_text() for text in ax_p.texts)
    plt.close(figure)

    # many cells: only the DEVIANT_CELL_LABELS farthest from their expected count are labelled
    figure = report.plot(max_cells=81)
    ticks = figure.axes[0].get_xticks()
    assert 81 > report.MAX_CELL_LABELS and len(ticks) == report.DEVIANT_CELL_LABELS
    residual = np.abs(joint.observed[order] - joint.expected[order]) / np.sqrt(joint.expected[order])
    assert residual[ticks.astype(int)].min() >= np.delete(residual, ticks.astype(int)).max()
    plt.close(figure)

    # a p-value of 0 is drawn at the floor, hatched, and said to be capped
    tests = [dataclasses.replace(t, p_adjusted=0.0, rejected=True) if t is joint else t for t in report.tests]
    figure = dataclasses.replace(report, tests=tests, passed=False).plot()
    ax_p = figure.axes[1]
    capped_row = [t.name for t in tests].index(joint.name)
    assert ax_p.patches[capped_row].get_width() == pytest.approx(300)
    assert ax_p.patches[capped_row].get_hatch() == "//"
    assert [text.get_text().strip() for text in ax_p.texts] == ["capped"]
    assert "(p < 1e-300)" in ax_p.get_yticklabels()[capped_row].get_text()
    assert "FAILED" in figure._suptitle.get_text()
    plt.close(figure)


def test_check_catches_inconsistent_conditionals_and_bounds_tv():
    model = TabularJoint.random(jax.random.key(5), 3, 3)
    family = perturbed(model, jax.random.key(6), 0.5)
    law = ancestral_law(family)
    exact_tv = tv(law, model.law())
    assert exact_tv > 0.05
    report = check(lambda key, n: ancestral(key, family, n), model, law=law, deviation=0.05)
    assert not report.passed
    assert report.exact_tv == pytest.approx(exact_tv, abs=1e-15)
    # the (1 - alpha) interval covers the exact TV (fails with probability <= alpha = 1e-4)
    assert report.tv_interval[0] <= exact_tv <= report.tv_interval[1]


def test_ancestral_sampler_matches_its_own_law_for_inconsistent_conditionals():
    """The sampler is checked against ancestral_law (independent code), made a target model."""
    model = NGram.random(jax.random.key(8), 4, 2, 2)
    family = perturbed(model, jax.random.key(9), 1.0)
    for order in (None, "random", np.array([2, 0, 3, 1])):
        law = ancestral_law(family, order)
        target = TabularJoint(probs=law.reshape((2,) * 4))
        report = check(lambda key, n, order=order: ancestral(key, family, n, order=order), target,
                       law=law, deviation=0.03)
        assert report.passed, report.summary()
        assert report.exact_tv < 1e-12


def test_zero_probability_sample_fails_immediately_and_names_the_sequence():
    probs = np.full(8, 1 / 6)
    probs[[3, 5]] = 0.0  # sequences 011 and 101 impossible
    target = TabularJoint(probs=probs.reshape(2, 2, 2))
    leaky = np.full(8, 1 / 8)
    report = check(from_law(leaky, 2, 3), target, num_samples=2000)
    assert not report.passed
    assert (0, 1, 1) in report.zero_probability_hits or (1, 0, 1) in report.zero_probability_hits


def test_projection_mode_for_a_model_too_large_to_enumerate():
    """L = 14, V = 3: 4.8M sequences, tested through marginals, pairs, a prefix and Rosenblatt."""
    model = NGram.random(jax.random.key(12), 14, 3, 2)
    exact = check(lambda key, n: model.sample(key, (n,)), model, num_samples=20_000, max_joint_cells=2**12)
    names = [t.name for t in exact.tests]
    assert "rosenblatt" in names and "x[0]" in names and any(n.startswith("x[0:") for n in names)
    assert exact.passed, exact.summary()
    assert exact.tv_scope.startswith("lower bound")
    # a context-1 chain fitted to the same marginals is not the model: Rosenblatt and pairs see it
    wrong = NGram(model.table.sum(axis=0) / model.table.sum(axis=0).sum(-1, keepdims=True), 14)
    report = check(lambda key, n: wrong.sample(key, (n,)), model, num_samples=20_000, max_joint_cells=2**12)
    assert not report.passed


def test_check_rejects_bad_arguments():
    model = TabularJoint.random(jax.random.key(0), 2, 2)
    with pytest.raises(ShapeError, match="expected"):
        check(lambda key, n: np.zeros((n, 3), np.int32), model, num_samples=10)
    with pytest.raises(InvalidTokenError, match="outside"):
        check(lambda key, n: np.full((n, 2), 5, np.int32), model, num_samples=10)
    with pytest.raises(ArprobTypeError, match="exact arprob model"):
        check(lambda key, n: np.zeros((n, 2), np.int32), object(), num_samples=10)
    with pytest.raises(ArprobTypeError, match="callable"):
        check(42, model)
