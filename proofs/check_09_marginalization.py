r"""Machine check of theorem 9 (``proofs/09-marginalization.md``).

Three layers:

(a) exact rationals, no library code: for every :math:`V \in \{2, 3\}`, :math:`L \in \{1, 2, 3\}`
    and seeded random rational joints (with zero cells, and a point mass): marginal tables satisfy
    (N) and (C) at every :math:`(S, i, x_S)` (part 1); a table built downwards from a random
    non-negative full table with (C) at :math:`i = \min([L]\setminus S)` only satisfies (C) at every
    :math:`i` and is the marginal table of its full entry (part 2, the lemma); the ratio family of
    a valid table has chain-rule marginals equal to the table along every order (part 3).
(b) float64 through the library: ``self_consistency`` of every exact model kind is below 1e-10,
    ``marginal_log_prob`` equals numpy sums of ``law()``, and the ratio family
    (``conditionals_from_marginals``) has ``ancestral_law`` equal to ``law()`` in every order.
(c) negative controls: a table changed at one entry breaks (C) exactly at the instances that
    mention it; a doubled table keeps (C) and breaks (N); ``perturbed_marginals`` fails
    ``self_consistency`` and its ratio family is order-dependent.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import jax
import numpy as np
import pytest

import arprob
from arprob._enumerate import all_sequences
from arprob.marginalization import conditionals_from_marginals, perturbed_marginals, self_consistency
from arprob.samplers import ancestral_law

LAW_TOLERANCE = 1e-12  # float64 laws: a few roundings of numbers <= 1
LOG_TOLERANCE = 1e-10  # float64 log-marginals: logsumexps of at most V**L terms

SMALL_SPACES = [(vocab_size, length) for vocab_size in (2, 3) for length in (1, 2, 3)]


# ---------------------------------------------------------------------------
# (a) exact rationals
# ---------------------------------------------------------------------------


def _cells(vocab_size: int, length: int):
    return list(itertools.product(range(vocab_size), repeat=length))


def _subsets(length: int):
    return [frozenset(c) for size in range(length + 1) for c in itertools.combinations(range(length), size)]


def _assignments(subset, vocab_size: int):
    """Every ``x_S`` as a dict position -> token."""
    positions = sorted(subset)
    return [dict(zip(positions, values, strict=True))
            for values in itertools.product(range(vocab_size), repeat=len(positions))]


def _key(assignment: dict) -> tuple:
    """A partial assignment as a hashable key: sorted ``(position, token)`` pairs."""
    return tuple(sorted(assignment.items()))


def _random_weights(rng: random.Random, vocab_size: int, length: int, zero_fraction: float):
    while True:
        weights = {cell: 0 if rng.random() < zero_fraction else rng.randint(1, 9)
                   for cell in _cells(vocab_size, length)}
        if sum(weights.values()) > 0:
            return weights


def _joints(vocab_size: int, length: int):
    rng = random.Random(900 + 10 * vocab_size + length)
    joints = []
    for zero_fraction in (0.0, 0.3, 0.6):
        weights = _random_weights(rng, vocab_size, length, zero_fraction)
        total = sum(weights.values())
        joints.append({cell: Fraction(w, total) for cell, w in weights.items()})
    point_mass = dict.fromkeys(_cells(vocab_size, length), Fraction(0))
    point_mass[(vocab_size - 1,) * length] = Fraction(1)
    return joints + [point_mass]


def _marginal_table(joint, vocab_size: int, length: int):
    r""":math:`m_p(x_S) = \sum_{y:\, y_S = x_S} p(y)` for every partial assignment."""
    table = {}
    for subset in _subsets(length):
        for assignment in _assignments(subset, vocab_size):
            table[_key(assignment)] = sum(
                (mass for cell, mass in joint.items() if all(cell[j] == v for j, v in assignment.items())),
                Fraction(0))
    return table


def _violations(table, vocab_size: int, length: int):
    """The instances ``(S, i, x_S)`` of (C) that fail, as ``(key of x_S, i)``."""
    failures = []
    for subset in _subsets(length):
        for assignment in _assignments(subset, vocab_size):
            for position in set(range(length)) - subset:
                children = sum(table[_key({**assignment, position: v})] for v in range(vocab_size))
                if table[_key(assignment)] != children:
                    failures.append((_key(assignment), position))
    return failures


def _ratio(table, vocab_size: int, position: int, context: dict, value: int) -> Fraction:
    """The ratio family: ``m(x_S, x_i = v) / sum_v' m(x_S, x_i = v')``, uniform when that is 0/0."""
    denominator = sum(table[_key({**context, position: v})] for v in range(vocab_size))
    if denominator == 0:
        return Fraction(1, vocab_size)
    return table[_key({**context, position: value})] / denominator


def _chain_marginal(table, vocab_size: int, order, assignment: dict) -> Fraction:
    """Chain rule of the ratio family along ``order`` restricted to the assigned positions."""
    product, context = Fraction(1), {}
    for position in order:
        if position in assignment:
            product *= _ratio(table, vocab_size, position, context, assignment[position])
            context[position] = assignment[position]
    return product


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_marginals_of_a_joint_are_self_consistent_exact(vocab_size, length):
    """Part 1: (N) and (C) at every instance."""
    for joint in _joints(vocab_size, length):
        table = _marginal_table(joint, vocab_size, length)
        assert table[()] == 1
        assert _violations(table, vocab_size, length) == []


def _downward_table(rng: random.Random, vocab_size: int, length: int):
    """A random non-negative full table, extended downwards with (C) at ``i = min([L] minus S)`` only."""
    weights = _random_weights(rng, vocab_size, length, 0.3)
    total = sum(weights.values())
    table = {_key(dict(enumerate(cell))): Fraction(w, total) for cell, w in weights.items()}
    for size in range(length - 1, -1, -1):
        for subset in _subsets(length):
            if len(subset) != size:
                continue
            position = min(set(range(length)) - subset)
            for assignment in _assignments(subset, vocab_size):
                table[_key(assignment)] = sum(table[_key({**assignment, position: v})] for v in range(vocab_size))
    return table


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_self_consistency_gives_the_joint_exact(vocab_size, length):
    """Part 2: (C) at one position per set implies (C) everywhere and m = m_p, p = m(x_[L])."""
    rng = random.Random(17 + 10 * vocab_size + length)
    for _ in range(3):
        table = _downward_table(rng, vocab_size, length)
        joint = {cell: table[_key(dict(enumerate(cell)))] for cell in _cells(vocab_size, length)}
        assert all(mass >= 0 for mass in joint.values()) and sum(joint.values()) == table[()] == 1
        assert _violations(table, vocab_size, length) == []
        assert _marginal_table(joint, vocab_size, length) == table


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_ratio_family_recovers_the_table_in_every_order_exact(vocab_size, length):
    """Part 3: denominators equal m(x_S) where positive; chain-rule marginals equal m in every order."""
    null_contexts = 0
    for joint in _joints(vocab_size, length):
        table = _marginal_table(joint, vocab_size, length)
        for subset in _subsets(length):
            for assignment in _assignments(subset, vocab_size):
                mass = table[_key(assignment)]
                for position in set(range(length)) - subset:
                    denominator = sum(table[_key({**assignment, position: v})] for v in range(vocab_size))
                    assert denominator == mass
                    null_contexts += mass == 0
                for order in itertools.permutations(range(length)):
                    assert _chain_marginal(table, vocab_size, order, assignment) == mass
    if length >= 2:  # the zero-probability branch of the proof was exercised
        assert null_contexts > 0


@pytest.mark.parametrize(("vocab_size", "length"), [s for s in SMALL_SPACES if s[1] >= 2])
def test_negative_control_one_entry_and_normalisation_exact(vocab_size, length):
    """One changed entry breaks exactly the (C) instances that mention it; a doubled table breaks only (N)."""
    joint = _joints(vocab_size, length)[0]
    table = _marginal_table(joint, vocab_size, length)
    assignment = {length - 1: 0}  # S = {L-1}: 0 < |S| < L
    bad = dict(table)
    bad[_key(assignment)] += Fraction(1, 100)
    expected = {(_key(assignment), i) for i in range(length - 1)}  # as the parent
    expected |= {((), length - 1)}  # as a child of the empty set, summed out at i = L-1
    assert set(_violations(bad, vocab_size, length)) == expected
    # and the ratio family of the bad table no longer recovers it in some order
    assert any(_chain_marginal(bad, vocab_size, order, assignment) != bad[_key(assignment)]
               or _chain_marginal(bad, vocab_size, order, {0: 0, length - 1: 0})
               != bad[_key({0: 0, length - 1: 0})]
               for order in itertools.permutations(range(length)))
    doubled = {k: 2 * v for k, v in table.items()}
    assert _violations(doubled, vocab_size, length) == [] and doubled[()] == 2


# ---------------------------------------------------------------------------
# (b) float64 through the library
# ---------------------------------------------------------------------------


def _library_models():
    rng = np.random.default_rng(9)
    transition = rng.dirichlet(np.ones(3), size=3)
    transition[0, 1] = 0.0
    transition /= transition.sum(axis=1, keepdims=True)
    probs = rng.dirichlet(np.ones(8)).reshape(2, 2, 2)
    probs[1, 0, 1] = 0.0
    probs /= probs.sum()
    return [
        arprob.TabularJoint(probs, length=3),
        arprob.MarkovChain(rng.dirichlet(np.ones(3)), transition, 3),
        arprob.NGram(rng.dirichlet(np.ones(2), size=(3, 3)), 3, context_size=2),
        arprob.HMM(rng.dirichlet(np.ones(2)), rng.dirichlet(np.ones(2), size=2),
                   rng.dirichlet(np.ones(3), size=2), 3),
    ]


LIBRARY_MODELS = _library_models()


@pytest.mark.parametrize("model", LIBRARY_MODELS, ids=lambda m: type(m).__name__)
def test_library_models_are_self_consistent(model):
    result = self_consistency(model)
    assert result.exhaustive and result.max_violation <= LOG_TOLERANCE, result
    # independent oracle: marginals summed from the enumerated law
    vocab_size, length = model.vocab_size, model.length
    law = np.asarray(model.law(), np.float64).reshape((vocab_size,) * length)
    for subset in _subsets(length):
        observed = np.array([j in subset for j in range(length)])
        summed = law.sum(axis=tuple(j for j in range(length) if j not in subset)) if len(subset) < length else law
        sequences = all_sequences(vocab_size, length)
        got = np.exp(np.asarray(model.marginal_log_prob(sequences, np.broadcast_to(observed, sequences.shape))))
        expected = summed[tuple(sequences[:, j] for j in sorted(subset))] if subset else np.ones(len(sequences))
        assert np.abs(got - expected).max() <= LAW_TOLERANCE


@pytest.mark.parametrize("model", LIBRARY_MODELS, ids=lambda m: type(m).__name__)
def test_ratio_family_samples_the_joint_in_every_order(model):
    family = conditionals_from_marginals(model)
    target = np.asarray(model.law(), np.float64).reshape(-1)
    for order in [*itertools.permutations(range(model.length)), "random"]:
        assert np.abs(ancestral_law(family, order=order) - target).max() <= LAW_TOLERANCE


# ---------------------------------------------------------------------------
# (c) negative control in float64
# ---------------------------------------------------------------------------


def test_perturbed_marginals_are_rejected():
    model = LIBRARY_MODELS[0]
    bad = perturbed_marginals(model, jax.random.key(1), 0.1)
    result = self_consistency(bad)
    assert result.max_residual > 1e-2 and result.normalization > 0
    family = conditionals_from_marginals(bad)
    laws = [ancestral_law(family, order=order) for order in itertools.permutations(range(model.length))]
    assert max(0.5 * np.abs(first - second).sum() for first in laws for second in laws) > 1e-3
    target = np.asarray(model.law(), np.float64).reshape(-1)
    assert np.abs(laws[0] - target).max() > LAW_TOLERANCE
