"""Any-subset speculative decoding (ASSD) and σ-GPT token-based rejection sampling.

Layers (see shared/STYLE.md):

* exact laws: ``any_subset_speculative_law`` equals ``ancestral_law`` in the
  same order (theorem 8) for exact and perturbed families, every k and order,
  to 1e-12; ``sigma_gpt_rejection_law`` against a literal enumeration of the
  algorithm's randomness (drafts, orders, accept/reject outcomes) on a tiny
  space, and its exactness / non-exactness claims;
* samples against each sampler's own exact law (goodness of fit), the
  non-exact variants included, with negative controls; the mean NFE against
  the exact expectation of the laws' dynamic programs;
* bookkeeping: ``nfe <= L``, the per-sample counts add up; same key, same tokens;
* errors name the argument.

False alarms: each goodness-of-fit assertion is at level 1e-4 (Pearson
chi-square with the verifier's pooling), 5 of them; each z-test on a mean NFE at
5 standard errors (two-sided 5.7e-7), 5 of them; over the module about 5e-4.
The samplers compile once per (family type, k or num_orders): three compilations in all.
The negative controls assert p < 1e-12 where the exact TV is >= 0.05.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import sys
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import jax
import numpy as np
from error_checks import raises as _raises

from arprob import NGram, TabularJoint
from arprob._enumerate import all_sequences
from arprob.conditionals import as_conditionals, normalized_logits, perturbed, split_static
from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    InvalidOrderError,
)
from arprob.samplers import ancestral_law
from arprob.samplers import any_subset as any_subset_module
from arprob.samplers.any_subset import (
    any_subset_speculative,
    any_subset_speculative_cost,
    any_subset_speculative_law,
    sigma_gpt_rejection,
    sigma_gpt_rejection_cost,
    sigma_gpt_rejection_law,
)
from arprob.verify import gof, tv

LAW = 1e-12
LEVEL = 1e-4  # goodness-of-fit level per assertion
Z = 5.0  # standard errors for the NFE z-tests (two-sided 5.7e-7)
NUM_SAMPLES = 20_000


@functools.cache
def tabular() -> TabularJoint:
    """V=3, L=4, Dirichlet(0.5) cells."""
    return TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5)


@functools.cache
def ngram() -> NGram:
    """V=2, L=5, context 2."""
    return NGram.random(jax.random.key(1), 5, 2, 2)


@functools.cache
def noisy():
    """An inconsistent family (the tabular model with logit noise 0.5)."""
    return perturbed(tabular(), jax.random.key(7), 0.5)


def _fits(tokens, law, vocab_size) -> float:
    return gof(np.asarray(tokens), law, vocab_size=vocab_size).p_value


def _check_mean_nfe(nfe, expected: float) -> None:
    """z-test of the mean NFE against its exact expectation, with the sample standard deviation."""
    nfe = np.asarray(nfe, np.float64)
    error = Z * max(nfe.std(ddof=1), 1e-12) / math.sqrt(nfe.size)
    assert abs(nfe.mean() - expected) <= error, (nfe.mean(), expected, error)


# ------------------------------------------------------------------------------ exact laws: ASSD


def test_assd_law_is_the_ancestral_law():
    """Theorem 8: for every family (two exact models, one perturbed), k in (2, 3, L), order random, left to
    right and reversed, the ASSD law equals ancestral_law in the same order to 1e-12; for the exact
    models, the model.  Negative control: for the perturbed family the three orders give different
    laws (TV > 0.01), so the equality is not a property of any law computed by the DP."""
    for family in (tabular(), ngram(), noisy()):
        length = family.length
        reversed_order = np.arange(length)[::-1].copy()
        laws = {}
        for name, order in (("random", "random"), ("left to right", None), ("reversed", reversed_order)):
            target = ancestral_law(family, order)
            laws[name] = target
            for k in (2, 3, length):
                law = any_subset_speculative_law(family, k, order)
                np.testing.assert_allclose(law, target, rtol=0, atol=LAW, err_msg=f"{family!r} k={k} {name}")
            if family is not noisy():
                np.testing.assert_allclose(target, family.law().ravel(), rtol=0, atol=LAW)
    # `laws` now holds the perturbed family's: different orders, different laws
    assert tv(laws["random"], laws["left to right"]) > 0.01
    assert tv(laws["reversed"], laws["left to right"]) > 0.01


def _proof_check_08():
    """The exact-rational machinery of ``proofs/check_08_any_subset_speculative.py`` (ASSD enumerated as it
    runs, in ``fractions.Fraction``).  Imported as pytest imports it, with ``proofs/`` on ``sys.path``
    (it imports its sibling ``check_06_speculative``)."""
    proofs = str(Path(__file__).resolve().parents[1] / "proofs")
    if proofs not in sys.path:
        sys.path.insert(0, proofs)
    return importlib.import_module("check_08_any_subset_speculative")


def _rational_assd_nfe(model, k: int) -> Fraction:
    """Exact expected calls of ASSD in a uniformly random order, in rationals, independently of the library.

    The model's float64 table, read as exact binary fractions and renormalized exactly, gives the
    rational joint; its conditionals (by summation) feed the proof check's enumeration of ASSD in
    every order; the random order is the average over the L! orders."""
    check_08 = _proof_check_08()
    vocab_size, length = model.vocab_size, model.length
    cells = list(itertools.product(range(vocab_size), repeat=length))
    weights = [Fraction(float(w)) for w in np.asarray(model.law(), np.float64).ravel()]
    total = sum(weights)
    table = check_08.consistent_family({x: w / total for x, w in zip(cells, weights)}, length, vocab_size)
    orders = list(itertools.permutations(range(length)))
    costs = [sum(calls * probability for calls, probability in check_08.assd(table, order, k, length,
                                                                               vocab_size)[1].items())
             for order in orders]
    return sum(costs) / len(orders)


def test_assd_cost():
    """Exact expected NFE: k = 1 and k = 2 cost exactly L calls (k = 2: every 2-call round reveals 2
    tokens); larger k cost fewer, never more than L; the rounds are at least ceil(L/k).  On the V=3,
    L=4 table (random order), k = 3 and k = 4 against the exact rational expectation of the proof
    check's enumeration (about 3.115 and 2.422 calls), to 1e-12."""
    family = tabular()
    for k in (1, 2):
        nfe, rounds = any_subset_speculative_cost(family, k)
        assert abs(nfe - 4) < 1e-12 and abs(rounds - 4 / k) < 1e-12
    previous = 4.0
    for k in (3, 4):
        nfe, rounds = any_subset_speculative_cost(family, k)
        assert nfe < previous - 0.1 and rounds >= math.ceil(4 / k) - 1e-12
        assert abs(nfe - float(_rational_assd_nfe(family, k))) < 1e-12, k
        previous = nfe
    assert any_subset_speculative_cost(family, 9) == any_subset_speculative_cost(family, 4)


# ------------------------------------------------------------------------------ exact laws: σ-GPT


def _literal_sigma_gpt_law(family, num_orders: int, residual: bool) -> np.ndarray:
    """The σ-GPT law by enumerating the algorithm's randomness literally (tiny spaces only).

    Every round enumerates all drafts, all N-tuples of orders and, per order, the accept/reject outcome
    of each step in turn, keeps the first order with the longest accepted prefix and recurses on the
    new partial sequence; conditionals come from one batched call on all (V+1)^L partial sequences.
    """
    vocab_size, length = family.vocab_size, family.length
    states = all_sequences(vocab_size + 1, length)
    dynamic, static = split_static(as_conditionals(family))
    probs = np.exp(np.asarray(normalized_logits(dynamic, static, states, states != vocab_size), np.float64))
    table = {tuple(int(v) for v in state): probs[index] for index, state in enumerate(states)}

    @functools.cache
    def finish(partial: tuple) -> dict:
        hidden = [i for i in range(length) if partial[i] == vocab_size]
        out: dict = defaultdict(float)
        if not hidden:
            out[partial] = 1.0
            return out
        q = table[partial]

        def reveal(updates: dict, weight: float):
            state = list(partial)
            for position, value in updates.items():
                state[position] = value
            for final, mass in finish(tuple(state)).items():
                out[final] += weight * mass

        if len(hidden) == 1:
            for value in range(vocab_size):
                reveal({hidden[0]: value}, q[hidden[0], value])
            return out
        orders = list(itertools.permutations(hidden))
        for drafts in itertools.product(range(vocab_size), repeat=len(hidden)):
            draft = dict(zip(hidden, drafts))
            weight = math.prod(q[i, draft[i]] for i in hidden)

            def outcomes(order, draft=draft):  # [(m, probability)] for one order, step by step
                result, alive, state = [], 1.0, list(partial)
                state[order[0]] = draft[order[0]]
                for j in range(1, len(order)):
                    p = table[tuple(state)][order[j], draft[order[j]]]
                    accept = min(1.0, p / q[order[j], draft[order[j]]])
                    result.append((j, alive * (1 - accept)))
                    alive *= accept
                    state[order[j]] = draft[order[j]]
                result.append((len(order), alive))
                return result

            per_order = {order: outcomes(order) for order in orders}
            for chosen in itertools.product(orders, repeat=num_orders):
                for trial in itertools.product(*(per_order[order] for order in chosen)):
                    mass = weight * math.prod(p for _, p in trial) / len(orders) ** num_orders
                    if mass == 0:
                        continue
                    prefixes = [m for m, _ in trial]
                    best = prefixes.index(max(prefixes))
                    order, m = chosen[best], prefixes[best]
                    updates = {i: draft[i] for i in order[:m]}
                    if residual and m < len(order):
                        state = list(partial)
                        for position, value in updates.items():
                            state[position] = value
                        gap = np.maximum(table[tuple(state)][order[m]] - q[order[m]], 0.0)
                        for value in range(vocab_size):
                            if gap[value] > 0:
                                reveal({**updates, order[m]: value}, mass * gap[value] / gap.sum())
                    else:
                        reveal(updates, mass)
        return out

    law = np.zeros(vocab_size**length)
    powers = vocab_size ** np.arange(length - 1, -1, -1)
    for final, mass in finish((vocab_size,) * length).items():
        law[int(np.dot(final, powers))] += mass
    return law


def test_sigma_gpt_law_against_literal_enumeration():
    """The DP (order mixtures F, first-maximal selection, sums over discarded drafts, residual) equals
    the literal enumeration of the algorithm on V=2, L=3 for an inconsistent family, N in (1, 2),
    residual on and off, to 1e-12; negative control: N=1 and N=2 differ (TV > 1e-3)."""
    base = TabularJoint(probs=np.random.default_rng(4).dirichlet(np.full(8, 0.5)).reshape((2,) * 3))  # no compile
    family = perturbed(base, jax.random.key(8), 0.7)
    laws = {}
    for num_orders in (1, 2):
        for residual in (False, True):
            literal = _literal_sigma_gpt_law(family, num_orders, residual)
            laws[num_orders, residual] = sigma_gpt_rejection_law(family, num_orders, residual)
            np.testing.assert_allclose(laws[num_orders, residual], literal, rtol=0, atol=LAW)
    assert tv(laws[1, False], laws[2, False]) > 1e-3 and tv(laws[1, True], laws[2, True]) > 1e-3


def test_sigma_gpt_exactness():
    """residual=True, num_orders=1 is exact for the exact models (1e-12) and equals the order mixture
    ancestral_law(q, "random") even for the inconsistent family: redrawing the order of the remaining
    positions after a stop that looks only at the prefix leaves the law of the order uniform.  Its NFE
    equals ASSD's with k = L in a random order.  As published (residual=False), N = 1 or 4, and with
    the residual but N = 4, the law differs from the target (TV > 1e-3; printed).  Every law sums to 1."""
    models = {"table V3 L4": tabular(), "ngram V2 L5": ngram(),
              "ngram V2 K2 L6 key 3": NGram.random(jax.random.key(3), 6, 2, 2)}
    for name, model in models.items():
        target = model.law().ravel()
        exact = sigma_gpt_rejection_law(model, 1, True)
        np.testing.assert_allclose(exact, target, rtol=0, atol=LAW)
        for num_orders, residual in ((1, False), (4, False), (4, True)):
            law = sigma_gpt_rejection_law(model, num_orders, residual)
            assert abs(law.sum() - 1) < 1e-12
            distance = tv(law, target)
            print(f"sigma-GPT {name} num_orders={num_orders} residual={residual}: TV to the model {distance:.4f}")
            assert distance > 1e-3
    family = noisy()
    mixture = ancestral_law(family, "random")
    np.testing.assert_allclose(sigma_gpt_rejection_law(family, 1, True), mixture, rtol=0, atol=LAW)
    assert tv(mixture, ancestral_law(family, None)) > 0.01  # the family is inconsistent
    np.testing.assert_allclose(sigma_gpt_rejection_cost(family, 1, True), any_subset_speculative_cost(family, 4),
                               rtol=0, atol=1e-12)
    for num_orders, residual in ((1, False), (4, True)):
        distance = tv(sigma_gpt_rejection_law(family, num_orders, residual), mixture)
        print(f"sigma-GPT perturbed table num_orders={num_orders} residual={residual}: TV to the mixture "
              f"{distance:.4f}")
        assert distance > 1e-3


# ------------------------------------------------------------------------------ samplers


def _check_assd_bookkeeping(stats, length: int, k: int) -> None:
    """nfe <= L; nfe = 2 rounds - (single-token rounds, at most one); the tokens add up:
    L = singles + sum over speculative rounds of (m + [rejected]), and each rejection leaves at least
    one verified draft unaccepted."""
    nfe, rounds, drafted, accepted = (np.asarray(x, np.int64) for x in stats)
    assert nfe.max() <= length and nfe.min() >= 1
    singles = 2 * rounds - nfe
    assert singles.min() >= 0 and singles.max() <= 1
    speculative = rounds - singles
    rejections = length - singles - accepted - speculative
    assert rejections.min() >= 0 and np.all(rejections <= speculative)
    assert np.all(drafted - accepted >= rejections) and np.all(drafted <= speculative * (k - 1))


REVERSED = np.array([3, 2, 1, 0])


def test_assd_samples():
    """The inconsistent family with k = 3: samples in random order fit ancestral_law(q, "random") and
    samples in reversed order fit ancestral_law(q, reversed), each rejected against the other's law
    (negative controls, exact TV printed, >= 0.05); mean NFE within 5 se of any_subset_speculative_cost;
    bookkeeping; the two orders share one compilation; same key, same tokens."""
    family, k = noisy(), 3
    laws = {"random": ancestral_law(family, "random"), "reversed": ancestral_law(family, REVERSED)}
    distance = tv(laws["random"], laws["reversed"])
    print(f"ASSD perturbed table: TV between the random-order and the reversed-order laws {distance:.4f}")
    assert distance > 0.05
    samples = {}
    for name, order in (("random", "random"), ("reversed", REVERSED)):
        tokens, stats = any_subset_speculative(jax.random.key(11), family, NUM_SAMPLES, k, order)
        if name == "random":
            compiled = any_subset_module._any_subset_speculative._cache_size()
        assert tokens.shape == (NUM_SAMPLES, family.length) and tokens.dtype == np.int32
        p_value = _fits(tokens, laws[name], family.vocab_size)
        expected = any_subset_speculative_cost(family, k, order)[0]
        print(f"ASSD perturbed table k={k} order={name}: gof p {p_value:.3g}, mean nfe "
              f"{np.asarray(stats.nfe).mean():.4f} (exact {expected:.4f}), acceptance "
              f"{np.sum(stats.accepted) / np.sum(stats.drafted):.3f}")
        assert p_value > LEVEL
        _check_mean_nfe(stats.nfe, expected)
        _check_assd_bookkeeping(stats, family.length, k)
        samples[name] = tokens
    assert any_subset_module._any_subset_speculative._cache_size() == compiled
    assert _fits(samples["random"], laws["reversed"], 3) < 1e-12
    assert _fits(samples["reversed"], laws["random"], 3) < 1e-12
    again, _ = any_subset_speculative(jax.random.key(11), family, NUM_SAMPLES, k, REVERSED)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(samples["reversed"]))


def test_sigma_gpt_samples():
    """On the table: samples fit sigma_gpt_rejection_law for the published sampler (N = 1 and 4) and
    the exact variant (residual, N = 1; its law is the model); the published N = 1 samples do not fit
    the model (negative control, exact TV 0.094); mean NFE within 5 se of sigma_gpt_rejection_cost;
    nfe <= L for the exact variant (its rounds are ASSD rounds); the residual flag does not recompile;
    same key, same tokens."""
    family = tabular()
    samples = {}
    for num_orders, residual in ((1, False), (1, True), (4, False)):
        law = sigma_gpt_rejection_law(family, num_orders, residual)
        tokens, stats = sigma_gpt_rejection(jax.random.key(12), family, NUM_SAMPLES, num_orders, residual)
        if (num_orders, residual) == (1, False):
            compiled = any_subset_module._sigma_gpt_rejection._cache_size()
        elif num_orders == 1:
            assert any_subset_module._sigma_gpt_rejection._cache_size() == compiled
        p_value = _fits(tokens, law, 3)
        expected = sigma_gpt_rejection_cost(family, num_orders, residual)[0]
        print(f"sigma-GPT table N={num_orders} residual={residual}: gof p {p_value:.3g}, "
              f"mean nfe {np.asarray(stats.nfe).mean():.4f} (exact {expected:.4f})")
        assert p_value > LEVEL
        _check_mean_nfe(stats.nfe, expected)
        nfe, rounds, drafted, accepted = (np.asarray(x, np.int64) for x in stats)
        assert np.all(accepted <= drafted) and np.all((2 * rounds - nfe >= 0) & (2 * rounds - nfe <= 1))
        if residual:
            np.testing.assert_allclose(law, family.law().ravel(), rtol=0, atol=LAW)
            assert nfe.max() <= family.length
        samples[num_orders, residual] = tokens
    published = samples[1, False]
    assert tv(sigma_gpt_rejection_law(family), family.law()) > 0.05 and _fits(published, family.law(), 3) < 1e-12
    again, _ = sigma_gpt_rejection(jax.random.key(12), family, NUM_SAMPLES, 1, False)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(published))


# ------------------------------------------------------------------------------ errors


def test_errors():
    """Bad k, num_orders, residual and order name the argument; huge enumerations are refused."""
    key = jax.random.key(0)
    _raises(InvalidArgumentError, lambda: any_subset_speculative(key, tabular(), 10, 0), "k", ">= 1")
    _raises(ArprobTypeError, lambda: any_subset_speculative(key, tabular(), 10, 2.0), "k must be an int")
    _raises(InvalidArgumentError, lambda: any_subset_speculative_law(tabular(), 0), "k")
    _raises(InvalidOrderError, lambda: any_subset_speculative(key, tabular(), 10, 2, [0, 0, 1, 2]),
            "not a permutation")
    _raises(InvalidOrderError, lambda: any_subset_speculative_law(tabular(), 2, "left"), "order='left'")
    _raises(InvalidArgumentError, lambda: sigma_gpt_rejection(key, tabular(), 10, num_orders=0), "num_orders")
    _raises(ArprobTypeError, lambda: sigma_gpt_rejection(key, tabular(), 10, residual=1), "residual", "bool")
    _raises(ArprobTypeError, lambda: sigma_gpt_rejection_law(tabular(), residual="yes"), "residual")
    long = NGram.random(jax.random.key(0), 12, 2, 2)
    _raises(EnumerationTooLargeError, lambda: any_subset_speculative_law(long, 3), "max_entries")
    _raises(EnumerationTooLargeError, lambda: sigma_gpt_rejection_law(long), "max_entries")
