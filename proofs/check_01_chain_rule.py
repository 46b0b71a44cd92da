r"""Machine check of theorem 1 (``proofs/01-chain-rule-any-order.md``).

Three layers:

(a) exact rationals, no library code: for every :math:`V \in \{2, 3\}`,
    :math:`L \in \{1, 2, 3\}` and several random rational joints (with zero
    cells and zero-probability contexts), every order and every sequence, the
    any-order chain-rule product equals :math:`p(x)`; the prefix-marginal lemma
    holds for arbitrary (inconsistent) rational families; a family consistent
    on the support, with arbitrary answers at null contexts, has every
    :math:`q_\sigma = p`; a random family has two orders that disagree.
(b) float64 through the library: for small ``TabularJoint``, ``MarkovChain`` and
    ``NGram`` models (some with zero cells), ``ancestral_law`` in every order and
    in random order equals ``model.law()``, and the order-wise likelihood from
    ``conditional_logits`` with prefix masks equals ``model.log_prob``.
(c) negative control: for ``perturbed`` conditionals the order-wise laws and
    likelihoods differ, and the assertions of (b) reject them.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arprob
from arprob._enumerate import all_sequences
from arprob.conditionals import exact, perturbed
from arprob.samplers import ancestral_law

LAW_TOLERANCE = 1e-12  # float64 laws: a few roundings of numbers <= 1
LOG_TOLERANCE = 1e-10  # float64 log-likelihoods: sums of L logs of moderate size


# ---------------------------------------------------------------------------
# (a) exact rationals
# ---------------------------------------------------------------------------

SMALL_SPACES = [(vocab_size, length) for vocab_size in (2, 3) for length in (1, 2, 3)]


def _cells(vocab_size: int, length: int):
    return list(itertools.product(range(vocab_size), repeat=length))


def _random_joint(rng: random.Random, vocab_size: int, length: int, zero_fraction: float):
    """A joint with integer weights in [1, 9], each cell zeroed with probability ``zero_fraction``."""
    cells = _cells(vocab_size, length)
    while True:
        weights = [0 if rng.random() < zero_fraction else rng.randint(1, 9) for _ in cells]
        if sum(weights) > 0:
            break
    total = sum(weights)
    return {cell: Fraction(weight, total) for cell, weight in zip(cells, weights, strict=True)}


def _joints(vocab_size: int, length: int):
    """Dense, sparse and very sparse random joints, plus a point mass."""
    rng = random.Random(1000 * vocab_size + length)
    joints = [_random_joint(rng, vocab_size, length, zero_fraction)
              for zero_fraction in (0.0, 0.0, 0.3, 0.3, 0.6, 0.6, 0.9)]
    point_mass = dict.fromkeys(_cells(vocab_size, length), Fraction(0))
    point_mass[(vocab_size - 1,) * length] = Fraction(1)
    return joints + [point_mass]


def _subsets(length: int):
    return [frozenset(c) for size in range(length + 1) for c in itertools.combinations(range(length), size)]


def _marginals(joint, length: int):
    """``marginals[S][x_S]`` = :math:`p(x_S)`, with ``x_S`` the tuple of ``x_j`` for sorted ``j in S``."""
    marginals = {}
    for subset in _subsets(length):
        table: dict[tuple, Fraction] = {}
        positions = sorted(subset)
        for cell, mass in joint.items():
            key = tuple(cell[j] for j in positions)
            table[key] = table.get(key, Fraction(0)) + mass
        marginals[subset] = table
    return marginals


def _restrict(x, subset) -> tuple:
    return tuple(x[j] for j in sorted(subset))


def _exact_conditional(marginals, vocab_size, position, context, x) -> Fraction:
    r""":math:`p(x_i \mid x_S)`; uniform when :math:`p(x_S) = 0` (arprob's convention)."""
    denominator = marginals[context][_restrict(x, context)]
    if denominator == 0:
        return Fraction(1, vocab_size)
    return marginals[context | {position}][_restrict(x, context | {position})] / denominator


def _order_joint(conditional, order, x) -> Fraction:
    r""":math:`q_\sigma(x) = \prod_t q(x_{\sigma(t)} \mid x_{\sigma(<t)})` for ``conditional(i, S, x)``."""
    product = Fraction(1)
    for t, position in enumerate(order):
        product *= conditional(position, frozenset(order[:t]), x)
    return product


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_chain_rule_in_every_order_exact_rationals(vocab_size, length):
    null_contexts_seen = 0
    for joint in _joints(vocab_size, length):
        marginals = _marginals(joint, length)

        def conditional(position, context, x, marginals=marginals):
            return _exact_conditional(marginals, vocab_size, position, context, x)

        for order in itertools.permutations(range(length)):
            for x, mass in joint.items():
                assert _order_joint(conditional, order, x) == mass, (order, x)
                null_contexts_seen += sum(
                    marginals[frozenset(order[:t])][_restrict(x, order[:t])] == 0 for t in range(length)
                )
    if length >= 2:  # the zero-probability branch of the proof was exercised
        assert null_contexts_seen > 0


def _random_family(rng: random.Random, vocab_size: int, length: int):
    """An arbitrary rational family: one random law on V for every question (i, S, x_S)."""
    family = {}
    for position in range(length):
        others = [j for j in range(length) if j != position]
        for size in range(length):
            for context in itertools.combinations(others, size):
                for values in itertools.product(range(vocab_size), repeat=size):
                    weights = [rng.randint(0, 5) for _ in range(vocab_size)]
                    if sum(weights) == 0:
                        weights[rng.randrange(vocab_size)] = 1
                    total = sum(weights)
                    family[position, frozenset(context), values] = [Fraction(w, total) for w in weights]
    return family


def _family_conditional(family):
    def conditional(position, context, x):
        return family[position, context, _restrict(x, context)][x[position]]

    return conditional


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_prefix_marginals_of_any_order_joint_exact_rationals(vocab_size, length):
    r"""Lemma: the marginal of :math:`q_\sigma` on :math:`\sigma(<t)` is the product of its first t
    factors, for an arbitrary (inconsistent) family."""
    rng = random.Random(7 + 100 * vocab_size + length)
    cells = _cells(vocab_size, length)
    for _ in range(3):
        conditional = _family_conditional(_random_family(rng, vocab_size, length))
        for order in itertools.permutations(range(length)):
            joint = {x: _order_joint(conditional, order, x) for x in cells}
            assert sum(joint.values()) == 1
            marginals = _marginals(joint, length)
            for t in range(length + 1):
                prefix = frozenset(order[:t])
                for x in cells:
                    assert marginals[prefix][_restrict(x, prefix)] == _order_joint(conditional, order[:t], x)


@pytest.mark.parametrize(("vocab_size", "length"), SMALL_SPACES)
def test_consistent_on_support_gives_one_joint_in_every_order(vocab_size, length):
    """(a) => (b) of the converse, with arbitrary answers at zero-probability contexts."""
    rng = random.Random(11 + 100 * vocab_size + length)
    for joint in _joints(vocab_size, length):
        marginals = _marginals(joint, length)
        arbitrary = _random_family(rng, vocab_size, length)

        def conditional(position, context, x, marginals=marginals, arbitrary=arbitrary):
            if marginals[context][_restrict(x, context)] == 0:
                return arbitrary[position, context, _restrict(x, context)][x[position]]
            return _exact_conditional(marginals, vocab_size, position, context, x)

        for order in itertools.permutations(range(length)):
            assert all(_order_joint(conditional, order, x) == mass for x, mass in joint.items())


@pytest.mark.parametrize(("vocab_size", "length"), [s for s in SMALL_SPACES if s[1] >= 2])
def test_random_family_has_orders_that_disagree(vocab_size, length):
    """Negative control for (a): an arbitrary family is not consistent, and the order joints show it."""
    rng = random.Random(13 + 100 * vocab_size + length)
    cells = _cells(vocab_size, length)
    for _ in range(3):
        conditional = _family_conditional(_random_family(rng, vocab_size, length))
        joints = {tuple(_order_joint(conditional, order, x) for x in cells)
                  for order in itertools.permutations(range(length))}
        assert len(joints) > 1


# ---------------------------------------------------------------------------
# (b) float64 through the library
# ---------------------------------------------------------------------------


# Parameters come from numpy's seeded Dirichlet rather than the models' ``random``
# constructors: those draw through ``jax.random.loggamma``, which compiles anew
# (seconds on CPU) for every parameter shape.


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


def _tabular(seed: int, vocab_size: int, length: int, concentration: float = 1.0):
    probs = _dirichlet(seed, (vocab_size**length,), concentration)
    return arprob.TabularJoint(probs=probs.reshape((vocab_size,) * length))


def _markov_chain(seed: int, vocab_size: int, length: int):
    rows = _dirichlet(seed, (vocab_size + 1, vocab_size))
    return arprob.MarkovChain(rows[-1], rows[:-1], length)


def _ngram(seed: int, vocab_size: int, length: int, context_size: int, concentration: float = 1.0):
    table = _dirichlet(seed, (vocab_size + 1,) * context_size + (vocab_size,), concentration)
    return arprob.NGram(table, length, context_size=context_size)


def _sparse_tabular():
    """V=2, L=4 with half the cells zero: every sequence with x_0 = x_1 = 1 has probability 0."""
    probs = _dirichlet(7, (16,))
    probs[12:] = 0.0
    probs[[1, 6, 9]] = 0.0
    return arprob.TabularJoint(probs=(probs / probs.sum()).reshape((2,) * 4))


def _sparse_markov_chain():
    """V=3, L=4 with zero initial and transition entries (x_0 = 1 has probability 0)."""
    initial = np.array([0.5, 0.0, 0.5])
    transition = np.array([[0.0, 0.7, 0.3], [0.2, 0.0, 0.8], [0.0, 0.0, 1.0]])
    return arprob.MarkovChain(initial, transition, 4)


# Sparse cases share their shapes with dense ones, so that they reuse compilations.
MODELS = {
    "tabular-V2-L1": lambda: _tabular(0, 2, 1),
    "tabular-V3-L3": lambda: _tabular(2, 3, 3, concentration=0.3),
    "tabular-V2-L4": lambda: _tabular(3, 2, 4),
    "tabular-sparse-V2-L4": _sparse_tabular,
    "markov-V3-L4": lambda: _markov_chain(4, 3, 4),
    "markov-sparse-V3-L4": _sparse_markov_chain,
    "ngram-V2-L4-K2": lambda: _ngram(5, 2, 4, 2, concentration=0.5),
}


def _orders(length: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(length))), dtype=np.int32)


def _prefix_masks(orders: np.ndarray) -> np.ndarray:
    """``masks[s, t, j]`` is True iff position j comes before step t in order s."""
    length = orders.shape[1]
    rank = np.argsort(orders, axis=1)
    return rank[:, None, :] < np.arange(length)[None, :, None]


@jax.jit
def _log_conditionals(family, sequences, masks):
    r"""``out[m, n, i]`` = :math:`\log q(y_i \mid y_{S_m \setminus \{i\}})` for each row ``y``."""
    logits = jax.nn.log_softmax(family(sequences[None], masks[:, None, :]), axis=-1)  # (M, N, L, V)
    tokens = jnp.broadcast_to(sequences[None, :, :, None], logits.shape[:-1] + (1,))
    return jnp.take_along_axis(logits, tokens, axis=-1)[..., 0]


def order_log_likelihoods(family) -> np.ndarray:
    r""":math:`\log q_\sigma(y)` for every order (rows, as in :func:`_orders`) and sequence (columns).

    Computed from the family's answers to prefix-masked questions only, one
    batched call for all :math:`L! \cdot L` prefixes.
    """
    length = family.length
    orders = _orders(length)
    sequences = jnp.asarray(all_sequences(family.vocab_size, length))
    masks = _prefix_masks(orders).reshape(-1, length)
    log_q = np.asarray(_log_conditionals(family, sequences, jnp.asarray(masks)), np.float64)
    log_q = log_q.reshape(len(orders), length, -1, length)  # (order, step, sequence, position)
    chosen = np.take_along_axis(log_q, orders[:, :, None, None], axis=3)[..., 0]  # (order, step, sequence)
    return chosen.sum(axis=1)


def assert_same_log_likelihood(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to ``LOG_TOLERANCE`` where finite, and ``-inf`` exactly where ``expected`` is."""
    actual, expected = np.broadcast_arrays(actual, expected)
    assert not np.isnan(actual).any()
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=LOG_TOLERANCE)


def assert_every_order_law_is(family, law: np.ndarray) -> None:
    """``ancestral_law(family, order)`` equals ``law`` for every fixed order and for random order."""
    for order in _orders(family.length):
        np.testing.assert_allclose(ancestral_law(family, order), law, rtol=0, atol=LAW_TOLERANCE,
                                   err_msg=f"order {order.tolist()}")
    np.testing.assert_allclose(ancestral_law(family, "random"), law, rtol=0, atol=LAW_TOLERANCE,
                               err_msg="order='random'")


@pytest.mark.parametrize("name", list(MODELS))
def test_ancestral_law_in_every_order_is_the_joint(name):
    model = MODELS[name]()
    law = model.law()
    assert abs(law.sum() - 1) < LAW_TOLERANCE
    assert_every_order_law_is(model, law)


@pytest.mark.parametrize("name", list(MODELS))
def test_order_likelihood_from_prefix_conditionals_is_log_prob(name):
    model = MODELS[name]()
    sequences = jnp.asarray(all_sequences(model.vocab_size, model.length))
    log_prob = np.asarray(model.log_prob(sequences), np.float64)
    with np.errstate(divide="ignore"):  # log 0 = -inf on the zero cells of the sparse models
        assert_same_log_likelihood(np.log(model.law()), log_prob)
    assert_same_log_likelihood(order_log_likelihoods(exact(model)), log_prob[None, :])


@pytest.mark.parametrize("name", ["tabular-sparse-V2-L4", "markov-sparse-V3-L4"])
def test_sparse_models_reach_zero_probability_contexts(name):
    """The sparse cases have prefixes of probability 0, so the uniform-answer branch is exercised."""
    model = MODELS[name]()
    law = model.law().reshape((model.vocab_size,) * model.length)
    first_two = law.sum(axis=tuple(range(2, model.length)))  # p(x_0, x_1)
    assert (first_two == 0).any() and abs(law.sum() - 1) < LAW_TOLERANCE


# ---------------------------------------------------------------------------
# (c) negative control: an inconsistent family fails the checks of (b)
# ---------------------------------------------------------------------------

PERTURBED = ["tabular-V2-L4", "markov-V3-L4"]  # the shapes check_02 perturbs too (shared compilations)


def _total_variation(first: np.ndarray, second: np.ndarray) -> float:
    return 0.5 * float(np.abs(first - second).sum())


def _perturbed(name: str):
    model = MODELS[name]()
    return model, perturbed(model, jax.random.key(17), 0.5)


@pytest.mark.parametrize("name", PERTURBED)
def test_perturbed_family_has_order_dependent_law(name):
    model, family = _perturbed(name)
    laws = [ancestral_law(family, order) for order in _orders(model.length)]
    for law in laws:
        assert abs(law.sum() - 1) < LAW_TOLERANCE  # each q_sigma is still a joint
    largest = max(_total_variation(a, b) for a, b in itertools.combinations(laws, 2))
    assert largest > 1e-3
    with pytest.raises(AssertionError):
        assert_every_order_law_is(family, model.law())


def test_perturbed_family_has_order_dependent_likelihood():
    """The likelihood check of (b) rejects the perturbed family: its order likelihoods disagree."""
    model, family = _perturbed("tabular-V2-L4")
    log_likelihoods = order_log_likelihoods(family)
    assert np.ptp(log_likelihoods, axis=0).max() > 1e-3
    log_prob = np.asarray(model.log_prob(jnp.asarray(all_sequences(model.vocab_size, model.length))))
    with pytest.raises(AssertionError):
        assert_same_log_likelihood(log_likelihoods, log_prob[None, :])
    laws = np.stack([ancestral_law(family, order) for order in _orders(model.length)])
    np.testing.assert_allclose(np.exp(log_likelihoods), laws, rtol=0, atol=LAW_TOLERANCE)


def test_factorial_count_of_orders():
    """Bookkeeping: the order enumeration used above is all of S_L."""
    for length in range(1, 5):
        orders = _orders(length)
        assert len(orders) == math.factorial(length)
        assert len({tuple(o) for o in orders}) == len(orders)
        assert (np.sort(orders, axis=1) == np.arange(length)).all()
