"""AnyOrderAR: order likelihoods, the subset-form expected NLL, the order mixture, order dependence.

Oracles are written here, independently of the library: one family call asks
every question ``log q(x_i | x_S)`` (all 16 observed sets S), and the
log-likelihood of an order is a Python loop over the chain rule reading those
answers; the expected NLL and the mixture are averages over every one of the
``L!`` orders.
(The symbolic proof that the subset form equals the order average is
``proofs/check_02_any_order_nll.py``; these tests cover the API: batching,
broadcasting, jit, Monte Carlo estimates, errors.)

Statistical assertions use fixed seeds and state their false-alarm
probability (the probability that they fail although the code is right).

Shapes: one tabular model (V=3, L=4: 81 sequences, 24 orders) and its
perturbed (inconsistent) version carry most tests, so that JAX compiles few
distinct shapes; the hypothesis property uses V=2, L=3 only.
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
from hypothesis import given, settings
from hypothesis import strategies as st

import arprob
from arprob import AnyOrderAR, MarkovChain, TabularJoint
from arprob._enumerate import all_sequences
from arprob.conditionals import perturbed
from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    InvalidOrderError,
    InvalidTokenError,
    ShapeError,
)
from arprob.samplers import ancestral_law
from arprob.testing import strategies as ars

EXACT = 1e-10  # float64 sums of a few dozen logs
LAW = 1e-12  # float64 probabilities

# z for a two-sided normal tail of 6.8e-6: the false-alarm probability of one |estimate - truth| <= Z * se check
Z = 4.5


@functools.cache
def tabular() -> TabularJoint:
    """V=3, L=4, cells from a Dirichlet(0.5) (numpy: no JAX compilation to build it)."""
    return TabularJoint(probs=np.random.default_rng(1).dirichlet(np.full(81, 0.5)).reshape((3,) * 4))


@functools.cache
def noisy():
    """Inconsistent: the law of ancestral sampling depends on the order."""
    return perturbed(tabular(), jax.random.key(5), 0.5)


X = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [1, 0, 0, 2]], dtype=np.int32)
ORDERS = np.array(list(itertools.permutations(range(4))), dtype=np.int32)  # all 24


SUBSETS = np.array(list(itertools.product([False, True], repeat=4)))[:, ::-1]  # row s: bit i of s at column i


@jax.jit
def _log_conditionals(family, x, observed):
    return jax.nn.log_softmax(family(x, observed), axis=-1)


@functools.cache
def _question_table(which: str) -> np.ndarray:
    """``table[s, b, i, v] = log q(x_i = v | x^b_S)`` for every subset S of observed positions: one family call."""
    family = arprob.conditionals.exact(tabular()) if which == "exact" else noisy()
    xs = np.repeat(X[None], len(SUBSETS), axis=0).reshape(-1, 4)
    observed = np.repeat(SUBSETS[:, None], len(X), axis=1).reshape(-1, 4)
    table = _log_conditionals(family, jnp.asarray(xs), jnp.asarray(observed))
    return np.asarray(table, np.float64).reshape(len(SUBSETS), len(X), 4, 3)


def _explicit_log_prob(which: str, order) -> np.ndarray:
    """``sum_t log q(x_{order[t]} | x_{order[<t]})`` for every row of X, by a loop over the steps."""
    table = _question_table(which)
    total, revealed = np.zeros(len(X)), 0
    for position in order:
        total += table[revealed, np.arange(len(X)), position, X[:, position]]
        revealed |= 1 << int(position)
    return total


@functools.cache
def _all_order_log_probs(which: str) -> np.ndarray:
    """Explicit ``log q_sigma(x)`` for every order (rows) and every row of X (columns)."""
    return np.stack([_explicit_log_prob(which, order) for order in ORDERS])


# ------------------------------------------------------------------ log_prob


@pytest.mark.parametrize("which", ["exact", "noisy"])
def test_log_prob_is_the_chain_rule_in_the_given_order(which):
    model = AnyOrderAR(tabular() if which == "exact" else noisy())
    explicit = _all_order_log_probs(which)
    for order, expected in zip(ORDERS[::5], explicit[::5]):
        np.testing.assert_allclose(np.asarray(model.log_prob(X, order)), expected, rtol=0, atol=EXACT)
    if which == "exact":  # chain rule in any order: every order gives log p(x)
        np.testing.assert_allclose(explicit, np.broadcast_to(np.asarray(tabular().log_prob(X)), explicit.shape),
                                   rtol=0, atol=EXACT)
    else:  # negative control: the perturbed family's orders disagree
        assert np.ptp(explicit, axis=0).min() > 1e-3


def test_log_prob_broadcasts_x_against_orders():
    model = AnyOrderAR(noisy())
    explicit = _all_order_log_probs("noisy")  # (24, 3)
    # (3, 1, L) against (24, L): every (sequence, order) pair, shape (3, 24)
    table = np.asarray(model.log_prob(X[:, None, :], ORDERS))
    assert table.shape == (3, 24)
    np.testing.assert_allclose(table, explicit.T, rtol=0, atol=EXACT)
    # one sequence, several orders; several sequences, one order; paired rows
    np.testing.assert_allclose(np.asarray(model.log_prob(X[1], ORDERS[:3])), explicit[:3, 1], atol=EXACT)
    np.testing.assert_allclose(np.asarray(model.log_prob(X, ORDERS[7])), explicit[7], atol=EXACT)
    np.testing.assert_allclose(np.asarray(model.log_prob(X, ORDERS[[0, 7, 23]])), explicit[[0, 7, 23], [0, 1, 2]],
                               atol=EXACT)


def test_log_prob_under_jit_of_vmap_equals_the_eager_call():
    model = AnyOrderAR(noisy())
    orders = ORDERS[[5, 11, 17]]
    transformed = jax.jit(jax.vmap(model.log_prob))(jnp.asarray(X), jnp.asarray(orders))
    np.testing.assert_allclose(np.asarray(transformed), _all_order_log_probs("noisy")[[5, 11, 17], [0, 1, 2]],
                               rtol=0, atol=EXACT)


def test_log_prob_spread_is_the_range_over_orders():
    model = AnyOrderAR(noisy())
    explicit = _all_order_log_probs("noisy")
    spread = model.log_prob_spread(X)
    np.testing.assert_allclose(np.asarray(spread.min), explicit.min(axis=0), atol=EXACT)
    np.testing.assert_allclose(np.asarray(spread.max), explicit.max(axis=0), atol=EXACT)
    np.testing.assert_allclose(np.asarray(spread.spread), np.ptp(explicit, axis=0), atol=EXACT)
    some = model.log_prob_spread(X, orders=ORDERS[:2])
    np.testing.assert_allclose(np.asarray(some.spread), np.ptp(explicit[:2], axis=0), atol=EXACT)


# ------------------------------------------------------- expected NLL and its MC estimate


@pytest.mark.parametrize("which", ["exact", "noisy"])
def test_expected_nll_is_the_average_over_all_orders(which):
    model = AnyOrderAR(tabular() if which == "exact" else noisy())
    brute_force = -_all_order_log_probs(which).mean(axis=0)
    np.testing.assert_allclose(np.asarray(model.expected_nll(X)), brute_force, rtol=0, atol=EXACT)
    # batch shapes: (1, 3, L) -> (1, 3); (L,) -> () (one shape compiled for the exact family only)
    np.testing.assert_allclose(np.asarray(model.expected_nll(X[None])), brute_force[None], rtol=0, atol=EXACT)
    if which == "exact":
        single = np.asarray(model.expected_nll(X[0]))
        assert single.shape == () and abs(float(single) - brute_force[0]) < EXACT


def test_per_size_losses_sum_over_masks_of_each_size():
    """h_k sums -log q(x_i | x_not M) over masks M of size k and i in M; the weighted sum is expected_nll."""
    model = AnyOrderAR(noisy())
    h = np.asarray(model.per_size_losses(X))
    assert h.shape == (5, 3)
    table = _question_table("noisy")
    chosen = np.take_along_axis(table, np.broadcast_to(X[None, :, :, None], table.shape[:3] + (1,)), -1)[..., 0]
    expected = np.zeros((5, 3))
    for s, observed in enumerate(SUBSETS):
        expected[(~observed).sum()] -= chosen[s][:, ~observed].sum(axis=-1)
    np.testing.assert_allclose(h, expected, rtol=0, atol=EXACT)
    assert np.all(h[0] == 0.0)
    weights = np.array([0.0] + [1.0 / (k * math.comb(4, k)) for k in range(1, 5)])
    np.testing.assert_allclose(weights @ h, np.asarray(model.expected_nll(X)), atol=EXACT)


def test_expected_nll_mc():
    """(1) |MC - exact| <= 4.5 standard errors for each of 3 sequences (6,144 orders).  The orders are
    i.i.d. and -log q_sigma(x) is bounded, so the t-statistic is normal to a very good approximation:
    false-alarm probability <= 3 * 6.8e-6 = 2e-5.

    (2) stderr * sqrt(n) estimates the standard deviation of -log q_sigma(x) over uniform orders,
    known exactly here (24 orders).  The sample standard deviation of n i.i.d. bounded draws has
    relative error about sqrt((kurtosis - 1) / (4 n)) <= 0.12 at n = 72 and 0.013 at n = 6,144
    (kurtosis <= 5 here); the tolerances, 0.6 and 0.1, are >= 5 such errors: false-alarm
    probability < 1e-6.  (Sizes chosen to reuse compiled shapes.)

    (3) Same key, same estimate; another key, another one.
    """
    model = AnyOrderAR(noisy())
    exact = np.asarray(model.expected_nll(X))
    mean, large = (np.asarray(a) for a in model.expected_nll_mc(jax.random.key(0), X, 6144))
    assert mean.shape == large.shape == (3,)
    assert np.all(large > 0)
    assert np.all(np.abs(mean - exact) <= Z * large), (mean, exact, large)

    sd = (-_all_order_log_probs("noisy")).std(axis=0)  # population sd over the 24 orders
    small_runs = [model.expected_nll_mc(jax.random.key(1 + b), X[b], 72) for b in range(3)]
    small = np.array([float(run[1]) for run in small_runs])
    np.testing.assert_allclose(small * np.sqrt(72) / sd, 1.0, atol=0.6)
    np.testing.assert_allclose(large * np.sqrt(6144) / sd, 1.0, atol=0.1)
    assert np.all(large < small / 4.5)  # sqrt(6144 / 72) = 9.2 expected; 4.5 leaves room for the small-n error

    again = model.expected_nll_mc(jax.random.key(1), X[0], 72)
    assert float(again[0]) == float(small_runs[0][0]) and float(again[1]) == float(small_runs[0][1])
    assert float(model.expected_nll_mc(jax.random.key(9), X[0], 72)[0]) != float(small_runs[0][0])


# ------------------------------------------------------------- mixture and Jensen gap


def test_mixture_log_prob_and_the_jensen_gap():
    """log q_bar(x) is the log of the mean over orders and the log of the random-order ancestral law
    (a different dynamic program); the Jensen gap E[-log q_sigma] - (-log q_bar) is >= 0, zero for exact
    conditionals and not for the perturbed family (negative control)."""
    model = AnyOrderAR(noisy())
    explicit = _all_order_log_probs("noisy")
    log_mean = np.log(np.exp(explicit).mean(axis=0))
    np.testing.assert_allclose(np.asarray(model.mixture_log_prob(X)), log_mean, rtol=0, atol=EXACT)
    sequences = all_sequences(3, 4)
    law = ancestral_law(noisy(), "random")
    np.testing.assert_allclose(np.exp(np.asarray(model.mixture_log_prob(sequences))), law, rtol=1e-10, atol=LAW)

    noisy_gap = np.asarray(model.jensen_gap(sequences))
    assert noisy_gap.min() >= -EXACT
    assert noisy_gap.max() > 1e-2
    np.testing.assert_allclose(np.asarray(model.jensen_gap(X)), -explicit.mean(axis=0) + log_mean, atol=EXACT)
    assert np.max(np.abs(np.asarray(AnyOrderAR(tabular()).jensen_gap(X)))) < EXACT


# ----------------------------------------------------------------- order dependence


@settings(max_examples=12, deadline=None)
@given(model=ars.models(vocab_size=2, length=3), base=ars.tabular_joints(2, 3), seed=st.integers(0, 2**32 - 1))
def test_order_inconsistency_is_zero_for_exact_conditionals_and_not_for_perturbed(model, base, seed):
    exact = AnyOrderAR(model).order_inconsistency()
    assert exact.num_orders == 6
    assert 0.0 <= exact.max_spread <= EXACT
    assert 0.0 <= exact.mean_spread <= EXACT
    assert 0.0 <= exact.max_tv <= EXACT
    # negative control: a perturbed family depends on the order (the spread is in log space, so it
    # shows even on peaked laws).  One base class only, to keep the compilations few.
    inconsistent = AnyOrderAR(perturbed(base, jax.random.key(seed), 0.5)).order_inconsistency()
    assert inconsistent.max_spread > 1e-3
    assert 0.0 <= inconsistent.mean_spread <= inconsistent.max_spread


def test_order_inconsistency_reports_the_pair_of_orders_it_names():
    model = AnyOrderAR(noisy())
    result = model.order_inconsistency()
    assert result.num_orders == 24
    first, second = (np.array(order) for order in result.max_tv_orders)
    laws = [model.law(order) for order in (first, second)]
    assert abs(arprob.verify.tv(*laws) - result.max_tv) < LAW
    subset = model.order_inconsistency(orders=ORDERS[:3])
    assert subset.num_orders == 3 and subset.max_tv <= result.max_tv + LAW


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2]])
def test_law_of_one_order_is_the_ancestral_law_in_that_order(order):
    law = AnyOrderAR(noisy()).law(np.array(order))
    assert law.dtype == np.float64 and law.shape == (81,)
    np.testing.assert_allclose(law, ancestral_law(noisy(), np.array(order)), rtol=0, atol=LAW)
    assert abs(law.sum() - 1.0) < LAW


# ------------------------------------------------------------------------ errors


def test_bad_orders_are_refused_with_the_order_in_the_message():
    model = AnyOrderAR(tabular())
    _raises(InvalidOrderError, lambda: model.log_prob(X[0], [0, 0, 1, 2]), "AnyOrderAR.log_prob",
            "[0, 0, 1, 2]", "not a permutation")
    _raises(InvalidOrderError, lambda: model.log_prob(X[0], [0, 1, 2]), "order has shape (3,)", "(..., 4)")
    _raises(InvalidOrderError, lambda: model.log_prob(X[0], np.array([0.0, 1.0, 2.0, 3.0])), "dtype")
    _raises(InvalidOrderError, lambda: model.log_prob_spread(X, orders=ORDERS[0]), "orders has shape (4,)")
    _raises(InvalidOrderError, lambda: model.law([1, 2, 3, 4]), "not a permutation")


def test_bad_sequences_are_refused():
    model = AnyOrderAR(tabular())
    _raises(ShapeError, lambda: model.log_prob([0, 1, 2], [0, 1, 2, 3]), "x has shape (3,)", "(..., 4)")
    _raises(ShapeError, lambda: model.expected_nll(np.zeros((2, 5), np.int32)), "x has shape (2, 5)")
    _raises(InvalidTokenError, lambda: model.expected_nll([0, 1, 3, 0]), "mask token 3")
    _raises(InvalidTokenError, lambda: model.mixture_log_prob([0, -1, 2, 0]), "token -1")
    _raises(ArprobTypeError, lambda: AnyOrderAR("a string"), "AnyOrderAR", "str")


def test_num_orders_must_be_a_positive_int():
    model = AnyOrderAR(tabular())
    _raises(InvalidArgumentError, lambda: model.expected_nll_mc(jax.random.key(0), X, 0), "num_orders", ">= 1")
    _raises(ArprobTypeError, lambda: model.expected_nll_mc(jax.random.key(0), X, 2.5), "num_orders", "int")


def _uniform_chain(length: int) -> MarkovChain:
    return MarkovChain(np.full(2, 0.5), np.full((2, 2), 0.5), length)


@pytest.mark.parametrize("method", ["expected_nll", "mixture_log_prob", "per_size_losses", "jensen_gap"])
def test_the_subset_form_is_refused_above_its_budget(method):
    """2**L patterns: refused for L > 24, and when 2**L * batch * L exceeds 2**28."""
    long = AnyOrderAR(_uniform_chain(25))
    _raises(EnumerationTooLargeError, lambda: getattr(long, method)(np.zeros(25, np.int32)),
            "2**25 observation patterns", "budget of 2**28", "expected_nll_mc")
    # L = 20 fits for one sequence but not for 13 (2**20 * 13 * 20 > 2**28)
    _raises(EnumerationTooLargeError,
            lambda: getattr(AnyOrderAR(_uniform_chain(20)), method)(np.zeros((13, 20), np.int32)),
            "for 13 sequence(s)", "budget of 2**28")


def test_enumerations_over_orders_and_sequences_are_refused_above_their_budgets():
    seven = AnyOrderAR(_uniform_chain(7))
    _raises(EnumerationTooLargeError, seven.order_inconsistency, "7! = 5,040 orders", "max_orders=720")
    _raises(EnumerationTooLargeError, lambda: seven.log_prob_spread(np.zeros(7, np.int32), max_orders=100),
            "max_orders=100")
    _raises(EnumerationTooLargeError, lambda: seven.law(np.arange(7), max_entries=100), "max_entries=100")
