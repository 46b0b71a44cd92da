r"""Machine check of theorem 5 (``proofs/05-first-hitting-any-order.md``).

(a) sympy, exact: the reveal-time process.  With :math:`n` masked positions at
    time :math:`t`, each masked at an independent time of law :math:`m(s)/m(t)`
    on :math:`[0, t]`, the next reveal time has law :math:`(m(s)/m(t))^n`, which
    for the linear schedule is the law of :math:`t\,u^{1/n}` (the first-hitting
    step); the next position is each masked one with probability :math:`1/n`,
    independently of that time.
(b) exact rationals (``fractions.Fraction``, equality with ``==``) on a tiny
    family, consistent and inconsistent: the law of the first-hitting chain,
    summed over all :math:`L!\,V^L` reveal sequences, equals the average over all
    :math:`L!` orders of :math:`q_\sigma` and parallel unmasking with ``k = 1``;
    ``masked_euler`` with the linear schedule and ``N`` steps is the mixture of
    parallel unmasking over block-size sequences, weighted by their
    probabilities, for N = 1..5; with N = 1 it is the product of marginals; its
    distance to the target is at most the probability of a collision, which is
    a birthday problem, and the mean number of steps that reveal something (the
    calls of the cached sampler) is :math:`N(1 - (1-1/N)^L)`.  The library's
    float64 laws of the same families match these rationals to 1e-12.
(c) float64 through the library, 1e-12: ``first_hitting_law`` equals
    ``ancestral_law(family, "random")`` and ``parallel_unmask_law(family, 1)``
    for exact and perturbed families of three small models (and the model's law
    for exact ones); ``masked_euler_law`` is the block-size mixture for the
    linear and cosine schedules, tends to the first-hitting law as ``N`` grows
    (TV decreasing, below the collision probability), and equals the product of
    marginals and ``parallel_unmask_law(family, L)`` for ``N = 1``.  Negative
    control: parallel unmasking of ``k = 2`` is off the target of a dependent
    model (and exact for an independent one).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from jax.tree_util import register_pytree_node_class

import arprob
from arprob import schedules
from arprob._enumerate import all_sequences
from arprob.conditionals import as_conditionals, perturbed
from arprob.samplers import ancestral_law, first_hitting_law, masked_euler_law, parallel_unmask_law
from arprob.samplers.ancestral import _log_conditionals_on
from arprob.verify import tv

LAW_TOLERANCE = 1e-12  # float64 probabilities


# ---------------------------------------------------------------------------
# (a) symbolic: the reveal times
# ---------------------------------------------------------------------------

S, T, U = sympy.symbols("s t u", positive=True)
N = sympy.Symbol("n", positive=True, integer=True)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_next_reveal_time_and_position(kind):
    r"""Next reveal = the largest of n i.i.d. masking times with CDF :math:`F(s) = m(s)/m(t)` on [0, t].

    :math:`P(\text{next} \le s) = F(s)^n`; the joint density of "position i is
    next, at time s" is :math:`f(s)F(s)^{n-1} = \frac1n \cdot nf(s)F(s)^{n-1}`:
    the position is uniform and independent of the time.
    """
    mask_prob = {"linear": lambda x: x, "cosine": lambda x: 1 - sympy.cos(sympy.pi * x / 2)}[kind]
    cdf = mask_prob(S) / mask_prob(T)
    density = sympy.diff(cdf, S)
    next_time_density = sympy.diff(cdf**N, S)  # density of the maximum of n
    position_and_time = density * cdf ** (N - 1)  # i is the maximum, at s
    assert sympy.simplify(position_and_time - next_time_density / N) == 0  # product form: (1/n) x law of the time
    total = sympy.integrate(position_and_time.subs(N, 3), (S, 0, T))
    assert sympy.simplify(total - sympy.Rational(1, 3)) == 0  # P(i is next) = 1/n, here n = 3
    assert sympy.simplify((cdf**N).subs(S, T) - 1) == 0 and sympy.simplify(mask_prob(0)) == 0


def test_first_hitting_step_has_the_law_of_the_next_reveal():
    r"""Linear schedule: :math:`P(t\,u^{1/n} \le s) = P(u \le (s/t)^n) = (s/t)^n`, the law of the maximum."""
    threshold = sympy.solve(sympy.Eq(T * U ** (1 / N), S), U)  # t u^{1/n} <= s  <=>  u <= threshold
    assert len(threshold) == 1
    assert sympy.simplify(threshold[0] - (S / T) ** N) == 0  # u is uniform, so this is the CDF at s
    # negative control: u^{1/(n+1)} would give the maximum of n + 1 times
    assert sympy.simplify(sympy.solve(sympy.Eq(T * U ** (1 / (N + 1)), S), U)[0] - (S / T) ** N) != 0


# ---------------------------------------------------------------------------
# (b) exact rationals on a tiny family
# ---------------------------------------------------------------------------

VOCAB, LENGTH = 2, 3
MASK = VOCAB


def _context_code(tokens: tuple, position: int) -> int:
    """Base-(V+1) code of the context of ``position``: the revealed tokens except its own (masks as V)."""
    digits = [MASK if j == position else token for j, token in enumerate(tokens)]
    return sum(d * (VOCAB + 1) ** (LENGTH - 1 - j) for j, d in enumerate(digits))


def _inconsistent_table(seed: int) -> list:
    """``table[i][code][v]``: rational conditionals with small random integer weights (no joint has them)."""
    rng = np.random.default_rng(seed)
    table = []
    for _ in range(LENGTH):
        rows = []
        for _ in range((VOCAB + 1) ** LENGTH):
            weights = [int(w) for w in rng.integers(1, 6, size=VOCAB)]
            rows.append([Fraction(w, sum(weights)) for w in weights])
        table.append(rows)
    return table


def _joint(seed: int) -> dict:
    """A rational joint over [V]^L with positive integer weights."""
    weights = np.random.default_rng(seed).integers(1, 9, size=VOCAB**LENGTH)
    total = int(weights.sum())
    return {x: Fraction(int(w), total) for x, w in zip(itertools.product(range(VOCAB), repeat=LENGTH), weights)}


def _consistent_table(joint: dict) -> list:
    """The exact conditionals of ``joint`` in rationals, by summation."""
    table = [[None] * (VOCAB + 1) ** LENGTH for _ in range(LENGTH)]
    for position in range(LENGTH):
        for state in itertools.product(range(VOCAB + 1), repeat=LENGTH):
            if state[position] != MASK:
                continue  # the context of position i never contains i
            mass = [sum(p for x, p in joint.items() if x[position] == v
                        and all(s == MASK or s == x_j for j, (s, x_j) in enumerate(zip(state, x)) if j != position))
                    for v in range(VOCAB)]
            table[position][_context_code(state, position)] = [m / sum(mass) for m in mass]
    for position in range(LENGTH):  # codes whose own digit is not the mask are never asked; fill them
        for code, row in enumerate(table[position]):
            if row is None:
                table[position][code] = [Fraction(1, VOCAB)] * VOCAB
    return table


def _q(table, state: tuple, position: int, token: int) -> Fraction:
    return table[position][_context_code(state, position)][token]


def _reveal(state: tuple, assignment: dict) -> tuple:
    return tuple(assignment.get(j, s) for j, s in enumerate(state))


def order_average(table) -> dict:
    r""":math:`\frac{1}{L!}\sum_\sigma q_\sigma(x)`, enumerating all :math:`L!` orders."""
    law = {}
    orders = list(itertools.permutations(range(LENGTH)))
    for x in itertools.product(range(VOCAB), repeat=LENGTH):
        total = Fraction(0)
        for order in orders:
            state, probability = (MASK,) * LENGTH, Fraction(1)
            for position in order:
                probability *= _q(table, state, position, x[position])
                state = _reveal(state, {position: x[position]})
            total += probability
        law[x] = total / len(orders)
    return law


def first_hitting_paths(table) -> dict:
    """The first-hitting chain summed over every reveal sequence ((i_1, v_1), ..., (i_L, v_L))."""
    law = dict.fromkeys(itertools.product(range(VOCAB), repeat=LENGTH), Fraction(0))

    def walk(state: tuple, probability: Fraction):
        masked = [j for j, s in enumerate(state) if s == MASK]
        if not masked:
            law[state] += probability
            return
        for position in masked:  # uniform among the masked positions
            for token in range(VOCAB):
                step = Fraction(1, len(masked)) * _q(table, state, position, token)
                walk(_reveal(state, {position: token}), probability * step)

    walk((MASK,) * LENGTH, Fraction(1))
    return law


def parallel_blocks(table, sizes: tuple) -> dict:
    """Parallel unmasking in blocks ``sizes`` of a uniform order, enumerating all L! orders."""
    law = dict.fromkeys(itertools.product(range(VOCAB), repeat=LENGTH), Fraction(0))
    orders = list(itertools.permutations(range(LENGTH)))
    bounds = np.cumsum((0,) + tuple(sizes))
    for x in law:
        for order in orders:
            state, probability = (MASK,) * LENGTH, Fraction(1)
            for start, stop in zip(bounds[:-1], bounds[1:]):
                block = order[start:stop]
                for position in block:  # each drawn from its conditional given the same state
                    probability *= _q(table, state, position, x[position])
                state = _reveal(state, {position: x[position] for position in block})
            law[x] += probability / len(orders)
    return law


def euler_linear(table, num_steps: int) -> dict:
    r"""``masked_euler`` with the linear schedule: at grid step n (time n/N to (n-1)/N) reveal w.p. 1/n."""
    states = {(MASK,) * LENGTH: Fraction(1)}
    for n in range(num_steps, 0, -1):
        reveal = Fraction(1, n)
        following: dict = {}
        for state, probability in states.items():
            masked = [j for j, s in enumerate(state) if s == MASK]
            for count in range(len(masked) + 1):
                for block in itertools.combinations(masked, count):
                    choose = reveal**count * (1 - reveal) ** (len(masked) - count)
                    for tokens in itertools.product(range(VOCAB), repeat=count):
                        step = choose
                        for position, token in zip(block, tokens):
                            step *= _q(table, state, position, token)
                        target = _reveal(state, dict(zip(block, tokens)))
                        following[target] = following.get(target, Fraction(0)) + probability * step
        states = following
    return {x: states.get(x, Fraction(0)) for x in itertools.product(range(VOCAB), repeat=LENGTH)}


def block_size_probabilities(reveal_probs, length: int, one=1) -> dict:
    """Law of the sequence of nonzero reveal counts of ``masked_euler`` (a composition of ``length``)."""
    paths = {(length, ()): one}  # (masked count, block sizes so far) -> probability
    for reveal in reveal_probs:
        following: dict = {}
        for (masked, sizes), probability in paths.items():
            for count in range(masked + 1):
                step = math.comb(masked, count) * reveal**count * (one - reveal) ** (masked - count)
                if step == 0:
                    continue
                key = (masked - count, sizes + ((count,) if count else ()))
                following[key] = following.get(key, 0 * one) + probability * step
        paths = following
    out: dict = {}
    for (masked, sizes), probability in paths.items():
        assert masked == 0  # the last step reveals everything left
        out[sizes] = out.get(sizes, 0 * one) + probability
    return out


def _total_variation(first: dict, second: dict) -> Fraction:
    return sum(abs(first[x] - second[x]) for x in first) / 2


RATIONAL_FAMILIES = {"consistent": lambda: _consistent_table(_joint(11)),
                     "inconsistent": lambda: _inconsistent_table(12)}


@pytest.fixture(scope="module")
def rational_laws():
    out = {}
    for name, make in RATIONAL_FAMILIES.items():
        table = make()
        out[name] = {
            "table": table,
            "orders": order_average(table),
            "first_hitting": first_hitting_paths(table),
            "parallel": {sizes: parallel_blocks(table, sizes) for sizes in [(1, 1, 1), (1, 2), (2, 1), (3,)]},
            "euler": {steps: euler_linear(table, steps) for steps in range(1, 6)},
        }
    return out


@pytest.mark.parametrize("name", list(RATIONAL_FAMILIES))
def test_first_hitting_equals_random_order_exactly(rational_laws, name):
    laws = rational_laws[name]
    assert sum(laws["first_hitting"].values()) == 1
    assert laws["first_hitting"] == laws["orders"]
    assert laws["parallel"][1, 1, 1] == laws["orders"]
    if name == "consistent":
        assert laws["orders"] == _joint(11)  # theorem 1: every order gives the joint


@pytest.mark.parametrize("name", list(RATIONAL_FAMILIES))
def test_masked_euler_is_a_mixture_of_parallel_unmasking_exactly(rational_laws, name):
    laws = rational_laws[name]
    for steps, euler in laws["euler"].items():
        reveal_probs = [Fraction(1, n) for n in range(steps, 0, -1)]
        weights = block_size_probabilities(reveal_probs, LENGTH, Fraction(1))
        assert sum(weights.values()) == 1
        mixture = {x: sum(w * laws["parallel"][sizes][x] for sizes, w in weights.items()) for x in euler}
        assert euler == mixture, steps
        collision = 1 - weights.get((1,) * LENGTH, Fraction(0))
        assert _total_variation(euler, laws["first_hitting"]) <= collision
        # each position's reveal step is uniform on the N steps, independently: a birthday problem
        assert 1 - collision == math.prod(1 - Fraction(j, steps) for j in range(LENGTH))
        # with the cache, one network call per step that reveals something: N (1 - (1 - 1/N)^L) on average
        calls = sum(w * len(sizes) for sizes, w in weights.items())
        assert calls == steps * (1 - (1 - Fraction(1, steps)) ** LENGTH)
    assert laws["euler"][1] == laws["parallel"][(LENGTH,)]  # one step: every token from q(. | nothing)


def test_parallel_unmasking_is_off_for_the_dependent_joint(rational_laws):
    """Negative control: blocks of two drawn independently miss the dependence of the joint."""
    laws = rational_laws["consistent"]
    joint = _joint(11)
    for sizes in [(1, 2), (2, 1), (3,)]:
        assert _total_variation(laws["parallel"][sizes], joint) > Fraction(1, 1000)
    assert _total_variation(laws["euler"][5], joint) > 0


@register_pytree_node_class
class TableConditionals:
    """A family read from a table ``log_table[i, code, v]``, code = base-(V+1) context of ``i`` (masks as V)."""

    def __init__(self, log_table, vocab_size: int, length: int):
        self.log_table, self.vocab_size, self.length = log_table, vocab_size, length

    def __call__(self, x, observed):
        vocab_size, length = self.vocab_size, self.length
        x, observed = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(observed, bool))
        context = observed[..., None, :] & ~jnp.eye(length, dtype=bool)  # (..., i, j)
        digits = jnp.where(context, x[..., None, :], vocab_size)
        code = (digits * jnp.asarray((vocab_size + 1) ** np.arange(length - 1, -1, -1))).sum(axis=-1)
        return self.log_table[jnp.arange(length), code]

    def tree_flatten(self):
        return (self.log_table,), (self.vocab_size, self.length)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


def _as_family(table) -> TableConditionals:
    with np.errstate(divide="ignore"):
        log_table = np.log(np.array([[[float(p) for p in row] for row in rows] for rows in table]))
    return TableConditionals(jnp.asarray(log_table), VOCAB, LENGTH)


def _as_array(law: dict) -> np.ndarray:
    return np.array([float(law[x]) for x in itertools.product(range(VOCAB), repeat=LENGTH)])


@pytest.mark.parametrize("name", list(RATIONAL_FAMILIES))
def test_library_laws_match_the_rationals(rational_laws, name):
    laws = rational_laws[name]
    family = _as_family(laws["table"])
    close = {"rtol": 0, "atol": LAW_TOLERANCE}
    np.testing.assert_allclose(first_hitting_law(family), _as_array(laws["first_hitting"]), **close)
    np.testing.assert_allclose(ancestral_law(family, "random"), _as_array(laws["orders"]), **close)
    for sizes, law in laws["parallel"].items():
        np.testing.assert_allclose(parallel_unmask_law(family, sizes), _as_array(law), **close)
    np.testing.assert_allclose(parallel_unmask_law(family, 2), _as_array(laws["parallel"][2, 1]), **close)
    for steps, law in laws["euler"].items():
        np.testing.assert_allclose(masked_euler_law(family, steps, schedules.linear()), _as_array(law), **close)


# ---------------------------------------------------------------------------
# (c) float64 through the library
# ---------------------------------------------------------------------------


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


def _markov_with_zero() -> arprob.MarkovChain:
    rows = _dirichlet(6, (4, 3))
    rows[0, 2] = 0.0
    rows /= rows.sum(axis=1, keepdims=True)
    return arprob.MarkovChain(rows[3], rows[:3], 3)


MODELS = {
    "tabular-V2-L3": lambda: arprob.TabularJoint(probs=_dirichlet(3, (8,), 0.5).reshape(2, 2, 2)),
    "tabular-V3-L3": lambda: arprob.TabularJoint(probs=_dirichlet(4, (27,), 0.5).reshape(3, 3, 3)),
    "markov-V3-L3-zeros": _markov_with_zero,
}
# (model, scale): 0.0 is the exact family; the theorem holds for any family
# (one perturbed family: each family class and shape costs two compilations; the rational table
# family of (b) is a second inconsistent one)
FAMILIES = [("tabular-V2-L3", 0.0), ("tabular-V2-L3", 1.0), ("tabular-V3-L3", 0.0), ("markov-V3-L3-zeros", 0.0)]


def _family(name: str, scale: float):
    model = MODELS[name]()
    return model, (model if scale == 0.0 else perturbed(model, jax.random.key(17), scale))


@pytest.mark.parametrize(("name", "scale"), FAMILIES)
def test_first_hitting_law_is_the_random_order_law(name, scale):
    model, family = _family(name, scale)
    target = ancestral_law(family, "random")
    np.testing.assert_allclose(first_hitting_law(family), target, rtol=0, atol=LAW_TOLERANCE)
    np.testing.assert_allclose(parallel_unmask_law(family, 1), target, rtol=0, atol=LAW_TOLERANCE)
    if scale == 0.0:
        np.testing.assert_allclose(target, model.law(), rtol=0, atol=LAW_TOLERANCE)
    else:  # the perturbed family's order mixture is a different law from the model's
        assert tv(target, model.law()) > 1e-3


def _product_of_marginals(family) -> np.ndarray:
    """:math:`\\prod_i q(x_i \\mid \\emptyset)` on every sequence: each position asked with nothing observed.

    Uses the jitted look-up that ``ancestral_law`` compiled for this family already.
    """
    family = as_conditionals(family)
    sequences = all_sequences(family.vocab_size, family.length)
    return np.exp(_log_conditionals_on(family, sequences, np.zeros(family.length, bool)).sum(axis=1))


def _reveal_probs(schedule, num_steps: int) -> np.ndarray:
    """(m(t_n) - m(t_{n-1})) / m(t_n) on the uniform grid from t = 1 to 0 (the masked_euler reveal probability)."""
    mask = np.array([float(schedule.mask_prob(n / num_steps)) for n in range(num_steps, -1, -1)])
    return (mask[:-1] - mask[1:]) / mask[:-1]


STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@pytest.mark.parametrize(("name", "scale"), [("tabular-V3-L3", 0.0), ("tabular-V2-L3", 1.0)])
def test_masked_euler_law(name, scale):
    """Block-size mixture for every N and two schedules; N = 1 is the product of marginals; N -> inf converges."""
    model, family = _family(name, scale)
    length = model.length
    first_hitting = first_hitting_law(family)
    compositions = {sizes: parallel_unmask_law(family, sizes)
                    for count in range(1, length + 1)
                    for sizes in {c for c in itertools.product(range(1, length + 1), repeat=count) if sum(c) == length}}
    for schedule in (schedules.linear(), schedules.cosine()):
        distances = []
        for steps in STEPS:
            law = masked_euler_law(family, steps, schedule)
            weights = block_size_probabilities(_reveal_probs(schedule, steps), length, 1.0)
            mixture = sum(weight * compositions[sizes] for sizes, weight in weights.items())
            np.testing.assert_allclose(law, mixture, rtol=0, atol=LAW_TOLERANCE)
            collision = 1.0 - weights.get((1,) * length, 0.0)
            distances.append(tv(law, first_hitting))
            assert distances[-1] <= collision + LAW_TOLERANCE
        assert all(later < earlier for earlier, later in zip(distances, distances[1:])), distances
        assert distances[-1] < 0.05 * distances[0]
    one_step = masked_euler_law(family, 1, schedules.linear())
    np.testing.assert_allclose(one_step, parallel_unmask_law(family, length), rtol=0, atol=LAW_TOLERANCE)
    np.testing.assert_allclose(one_step, _product_of_marginals(family), rtol=0, atol=LAW_TOLERANCE)


def test_parallel_unmasking_needs_independence():
    """Negative control: k = 2 is off a dependent model's law; a model with independent tokens is unharmed."""
    dependent = MODELS["tabular-V3-L3"]()
    assert tv(parallel_unmask_law(dependent, 2), dependent.law()) > 0.01
    rows = _dirichlet(9, (1, 3))
    independent = arprob.MarkovChain(rows[0], np.repeat(rows, 3, axis=0), 3)  # every row the same: i.i.d. tokens
    for k in (1, 2, 3):
        assert tv(parallel_unmask_law(independent, k), independent.law()) < LAW_TOLERANCE
