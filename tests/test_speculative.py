"""Speculative decoding and SpecTr: samplers against their exact laws, costs, acceptance formulas.

Statistical assertions: goodness-of-fit p-values are compared with 1e-4 (false
alarm 1e-4 per test under the law); means are compared with their exact
expectations at 4.5 standard errors (two-sided false alarm 7e-6 per
comparison, normal approximation with >= 20,000 i.i.d. sequences).  Seeds are
fixed, so the outcomes are deterministic.
"""

import jax
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from arprob.conditionals import perturbed
from arprob.distributions import MarkovChain, TabularJoint
from arprob.errors import ArprobTypeError, IncompatibleError, InvalidArgumentError, InvalidProbabilityError, ShapeError
from arprob.samplers import ancestral_law
from arprob.samplers.spectr import (
    kseq_acceptance,
    kseq_rho,
    optimal_acceptance,
    spectr,
    spectr_cost,
    spectr_law,
)
from arprob.samplers.speculative import (
    expected_tokens_per_call,
    speculative,
    speculative_cost,
    speculative_law,
)
from arprob.verify import gof, tv

NUM = 20000  # one sample size for every sampler call (one compilation per sampler and model pair)


@pytest.fixture(scope="module")
def models():
    target = TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5)
    draft = TabularJoint.random(jax.random.key(5), 4, 3, concentration=1.0)
    return target, draft


def iid_chain(probs, length):
    """A MarkovChain whose every conditional is ``probs`` (i.i.d. positions)."""
    probs = np.asarray(probs, np.float64)
    return MarkovChain(probs, np.tile(probs, (probs.size, 1)), length)


def within(measured, expected, stderr, z=4.5):
    return abs(measured - expected) <= z * stderr


def test_speculative_samples_follow_the_law_and_the_cost(models):
    target, draft = models
    law = speculative_law(target, draft, 2)
    np.testing.assert_allclose(law, np.asarray(target.law()), rtol=0, atol=1e-12)
    tokens, stats = speculative(jax.random.key(0), target, draft, NUM, 2)
    assert gof(np.asarray(tokens), law, vocab_size=3).p_value > 1e-4
    cost = speculative_cost(target, draft, 2)
    for name in ("target_calls", "draft_calls", "drafted", "accepted", "rejected"):
        values = np.asarray(getattr(stats, name), np.float64)
        assert within(values.mean(), getattr(cost, name), values.std() / np.sqrt(NUM)), name
    assert np.array_equal(stats.nfe, stats.target_calls)
    assert np.all(np.asarray(stats.accepted) <= np.asarray(stats.drafted))
    again, _ = speculative(jax.random.key(0), target, draft, NUM, 2)
    assert np.array_equal(np.asarray(tokens), np.asarray(again))


def test_speculative_law_is_the_left_to_right_law_of_an_inconsistent_target(models):
    target, draft = models
    family = perturbed(target, jax.random.key(7), 0.7)
    np.testing.assert_allclose(speculative_law(family, draft, 3), ancestral_law(family, None), atol=1e-12)
    # and not the random-order law, which differs for an inconsistent family
    assert tv(speculative_law(family, draft, 3), ancestral_law(family, "random")) > 1e-3


def test_draft_equal_to_target_accepts_everything(models):
    target, _ = models
    cost = speculative_cost(target, target, 3)
    assert cost.accepted == pytest.approx(cost.drafted, abs=1e-12)
    assert cost.target_calls == pytest.approx(1.0, abs=1e-12)  # 3 drafts + bonus = 4 = L tokens in one round


def test_acceptance_and_tokens_per_call_match_the_closed_forms():
    """Measured check of theorem 6's formulas on i.i.d.-position models where TV(p, q) varies."""
    p = np.array([0.6, 0.3, 0.1])
    length, gamma = 5, 2
    target = iid_chain(p, length)
    for q in ([0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5], [0.05, 0.15, 0.8]):
        q = np.asarray(q)
        alpha = 1.0 - 0.5 * np.abs(p - q).sum()
        draft = iid_chain(q, length)
        cost = speculative_cost(target, draft, gamma)
        assert cost.acceptance_rate == pytest.approx(alpha, abs=1e-12)
        # renewal count of rounds: a round from position t covers min(gamma, L - t) drafts, then one more token
        reach = np.zeros(length + 1)
        reach[0] = 1.0
        for start in range(length):
            span = min(gamma, length - start)
            for j in range(span):  # reject at draft j after j acceptances
                reach[start + j + 1] += reach[start] * alpha**j * (1 - alpha)
            reach[min(start + span + 1, length)] += reach[start] * alpha**span
        assert cost.target_calls == pytest.approx(reach[:length].sum(), abs=1e-12)
        _, stats = speculative(jax.random.key(3), target, draft, NUM, gamma)
        accepted = np.asarray(stats.accepted, np.float64)
        drafted = np.asarray(stats.accepted + stats.rejected, np.float64)  # examined drafts
        ratio = accepted.sum() / drafted.sum()
        # delta-method standard error of a ratio of means over i.i.d. sequences
        residuals = accepted - ratio * drafted
        stderr = residuals.std() / (drafted.mean() * np.sqrt(NUM))
        assert within(ratio, alpha, stderr), (q, ratio, alpha)
    # tokens per round far from the end of the sequence: the geometric sum
    alpha = np.linspace(0, 1, 11)
    for gamma in (1, 2, 5):
        expected = np.where(alpha < 1, (1 - alpha ** (gamma + 1)) / np.where(alpha < 1, 1 - alpha, 1), gamma + 1)
        np.testing.assert_allclose(expected_tokens_per_call(alpha, gamma), expected, atol=1e-12)


def test_speculative_rejects_bad_arguments(models):
    target, draft = models
    with pytest.raises(InvalidArgumentError, match="draft_length"):
        speculative(jax.random.key(0), target, draft, 10, 0)
    with pytest.raises(ArprobTypeError, match="num_samples"):
        speculative(jax.random.key(0), target, draft, 2.5, 2)
    with pytest.raises(IncompatibleError, match="draft has length=3"):
        speculative(jax.random.key(0), target, TabularJoint.random(jax.random.key(0), 3, 3), 10, 2)
    with pytest.raises(InvalidArgumentError, match="acceptance"):
        expected_tokens_per_call(1.5, 2)


def test_spectr_samples_follow_the_law_and_the_cost(models):
    target, draft = models
    law = spectr_law(target, draft, 3, 2)
    # rho is the feasible end of a bisection; its residual is clipped at -1e-13, hence 1e-12 here
    np.testing.assert_allclose(law, np.asarray(target.law()), rtol=0, atol=1e-12)
    tokens, stats = spectr(jax.random.key(0), target, draft, NUM, 3, 2)
    assert gof(np.asarray(tokens), law, vocab_size=3).p_value > 1e-4
    cost = spectr_cost(target, draft, 3, 2)
    for name in ("target_calls", "draft_calls", "accepted"):
        values = np.asarray(getattr(stats, name), np.float64)
        assert within(values.mean(), getattr(cost, name), values.std() / np.sqrt(NUM)), name
    # more drafts, fewer target calls (exact expectations)
    calls = [spectr_cost(target, draft, k, 2).target_calls for k in (1, 2, 3)]
    assert calls[0] > calls[1] > calls[2]
    assert calls[0] == pytest.approx(speculative_cost(target, draft, 2).target_calls, abs=1e-12)


@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
# q[0] = 1.06e-7: HiGHS's presolve once declared the equality-form LP of optimal_acceptance infeasible here
@example(vocab_size=4, k=2, seed=5412)
def test_kseq_rho_is_feasible_and_acceptance_is_between_the_bounds(vocab_size, k, seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.full(vocab_size, 0.7)), rng.dirichlet(np.full(vocab_size, 0.7))
    rho = float(kseq_rho(p, q, k))
    assert 1.0 <= rho <= k
    beta = np.minimum(q, p / rho).sum()
    residual = p - np.minimum(q, p / rho) * (1 - (1 - beta) ** k) / beta
    assert residual.min() >= -1e-12
    if rho > 1.0 + 1e-9:  # minimal: slightly smaller rho is infeasible
        smaller = rho - 1e-6
        beta_s = np.minimum(q, p / smaller).sum()
        residual_s = p - np.minimum(q, p / smaller) * (1 - (1 - beta_s) ** k) / beta_s
        assert residual_s.min() < 0
    accept = float(kseq_acceptance(p, q, k))
    best = optimal_acceptance(p, q, k)
    # the LP (HiGHS) against the exact min-cut formula: measured within 3e-14 on 20,000 random pairs
    assert best == pytest.approx(optimal_acceptance(p, q, k, method="cut"), abs=1e-9)
    best = optimal_acceptance(p, q, k, method="cut")
    assert accept <= best + 1e-12
    assert accept >= (1 - 1 / np.e) * best - 1e-12
    if k == 1:
        assert accept == pytest.approx(1 - 0.5 * np.abs(p - q).sum(), abs=1e-12)
        assert best == pytest.approx(accept, abs=1e-12)


def test_kseq_rejects_bad_probabilities():
    with pytest.raises(InvalidProbabilityError, match="kseq_rho: p sums to 1.1"):
        kseq_rho([0.5, 0.6], [0.5, 0.5], 2)
    with pytest.raises(ShapeError, match="same shape"):
        kseq_acceptance([0.5, 0.5], [1.0], 2)
