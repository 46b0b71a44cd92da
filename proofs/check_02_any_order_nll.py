r"""Machine check of theorem 2 (``proofs/02-any-order-nll-subset-form.md``).

(a) sympy, exact: with one symbol :math:`c(i, S)` per question, the average over
    all :math:`L!` orders of :math:`\sum_t c(\sigma(t), \sigma(<t))` equals the
    subset form with weights :math:`1/(k\binom{L}{k})`, as linear forms, for
    :math:`L = 1, \dots, 4`; two plausible wrong weightings are rejected; the
    weights of each mask size sum to one (general :math:`L`); the counting
    identity :math:`(L-k)!(k-1)!/L! = 1/(k\binom{L}{k})` (general :math:`L, k`);
    the Beta integral :math:`\int_0^1 \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda =
    1/(k\binom{L}{k})` for :math:`L \le 6`.
(b) float64 through the library: for perturbed (inconsistent) and exact
    conditionals of small models, the order average of :math:`-\log q_\sigma(x)`
    (all :math:`L!` orders, prefix-masked calls) equals the subset form
    (subset-masked calls) on every sequence; it is at least
    :math:`-\log` of the order-mixture law ``ancestral_law(family, "random")``,
    strictly somewhere for the perturbed family, and equal to
    :math:`-\log p(x)` for the exact one.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

import arprob
from arprob._enumerate import all_sequences
from arprob.conditionals import exact, perturbed
from arprob.samplers import ancestral_law

TOLERANCE = 1e-10  # float64 sums of L! * L logs of moderate size
LAW_TOLERANCE = 1e-12  # float64 probabilities


# ---------------------------------------------------------------------------
# (a) symbolic
# ---------------------------------------------------------------------------


def _term(position: int, context: frozenset):
    """The symbol :math:`c(i, S) = -\\log q(x_i \\mid x_S)`."""
    name = "".join(map(str, sorted(context))) or "empty"
    return sympy.Symbol(f"c_{position}_{name}", nonnegative=True)


def _order_average(length: int):
    r""":math:`\frac{1}{L!}\sum_\sigma \sum_t c(\sigma(t), \sigma(<t))`."""
    total = sympy.Integer(0)
    for order in itertools.permutations(range(length)):
        total += sum(_term(order[t], frozenset(order[:t])) for t in range(length))
    return sympy.Rational(1, math.factorial(length)) * total


def _weight(length: int, size: int):
    return sympy.Rational(1, size * math.comb(length, size))


def _subset_form(length: int, weight=_weight):
    r""":math:`\sum_k w(L, k) \sum_{|M| = k} \sum_{i \in M} c(i, [L] \setminus M)`."""
    everything = frozenset(range(length))
    total = sympy.Integer(0)
    for size in range(1, length + 1):
        for masked in itertools.combinations(range(length), size):
            total += weight(length, size) * sum(_term(i, everything - set(masked)) for i in masked)
    return total


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_order_average_equals_subset_form(length):
    difference = sympy.expand(_order_average(length) - _subset_form(length))
    assert difference == 0
    # every question (i, S) with i not in S appears, each exactly once on the right
    assert len(_subset_form(length).free_symbols) == length * 2 ** (length - 1)


WRONG_WEIGHTS = {
    "without 1/k": lambda length, size: sympy.Rational(1, math.comb(length, size)),
    "1/L instead of 1/k": lambda length, size: sympy.Rational(1, length * math.comb(length, size)),
}


@pytest.mark.parametrize("length", [2, 3, 4])
@pytest.mark.parametrize("mutant", list(WRONG_WEIGHTS))
def test_wrong_weights_are_rejected(length, mutant):
    """Negative control: the symbolic comparison does detect a wrong weighting."""
    difference = sympy.expand(_order_average(length) - _subset_form(length, WRONG_WEIGHTS[mutant]))
    assert difference != 0


def test_weights_of_each_mask_size_sum_to_one():
    r""":math:`\binom{L}{k} \cdot k \cdot \frac{1}{k\binom{L}{k}} = 1`, so the weights total L predictions."""
    length, size = sympy.symbols("L k", integer=True, positive=True)
    per_size = sympy.binomial(length, size) * size / (size * sympy.binomial(length, size))
    assert sympy.simplify(per_size - 1) == 0
    assert sympy.simplify(sympy.summation(per_size, (size, 1, length)) - length) == 0
    for concrete in range(1, 9):
        sizes = range(1, concrete + 1)
        assert sum(math.comb(concrete, k) * k * _weight(concrete, k) for k in sizes) == concrete
    # the same total read off the order average: every order makes L predictions
    for concrete in range(1, 5):
        coefficients = _order_average(concrete).as_coefficients_dict()
        assert sum(coefficients.values()) == concrete


def test_counting_identity_general():
    r""":math:`\frac{(L-k)!\,(k-1)!}{L!} = \frac{1}{k\binom{L}{k}}` as an identity in L and k."""
    length, size = sympy.symbols("L k", integer=True, positive=True)
    ratio = (sympy.factorial(length - size) * sympy.factorial(size - 1) / sympy.factorial(length)
             * size * sympy.binomial(length, size))
    assert sympy.combsimp(ratio) == 1


@pytest.mark.parametrize("length", range(1, 7))
def test_beta_integral(length):
    r""":math:`\int_0^1 \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda = 1/(k\binom{L}{k})`.

    This is the bridge to theorem 4 (continuous-time masking schedules)."""
    lam = sympy.Symbol("lambda", positive=True)
    for size in range(1, length + 1):
        integral = sympy.integrate(lam ** (size - 1) * (1 - lam) ** (length - size), (lam, 0, 1))
        assert integral == _weight(length, size)


# ---------------------------------------------------------------------------
# (b) float64 through the library
# ---------------------------------------------------------------------------


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


# Same models as check_01 (V=2 tabular, V=3 Markov chain, L=4), so that ancestral_law's
# compilations are shared when both files run in one session.
MODELS = {
    "tabular-V2-L4": lambda: arprob.TabularJoint(probs=_dirichlet(3, (16,)).reshape((2,) * 4)),
    "markov-V3-L4": lambda: (lambda rows: arprob.MarkovChain(rows[-1], rows[:-1], 4))(_dirichlet(4, (4, 3))),
}
SCALES = [0.0, 0.5, 2.0]  # 0.0 is the exact family


def _family(name: str, scale: float):
    model = MODELS[name]()
    if scale == 0.0:
        return model, exact(model)
    return model, perturbed(model, jax.random.key(17), scale)


def _subset_masks(length: int) -> np.ndarray:
    """All ``2**L`` observed sets; row ``b`` observes position ``j`` iff bit ``j`` of ``b`` is set."""
    return (np.arange(2**length)[:, None] >> np.arange(length)[None, :]) & 1 == 1


def _orders(length: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(length))), dtype=np.int32)


def _prefix_masks(orders: np.ndarray) -> np.ndarray:
    """``masks[s, t, j]`` is True iff position j comes before step t in order s."""
    rank = np.argsort(orders, axis=1)
    return rank[:, None, :] < np.arange(orders.shape[1])[None, :, None]


@jax.jit
def _log_conditionals(family, sequences, masks):
    r"""``out[m, n, i]`` = :math:`\log q(y_i \mid y_{S_m \setminus \{i\}})` for each row ``y``."""
    logits = jax.nn.log_softmax(family(sequences[None], masks[:, None, :]), axis=-1)  # (M, N, L, V)
    tokens = jnp.broadcast_to(sequences[None, :, :, None], logits.shape[:-1] + (1,))
    return jnp.take_along_axis(logits, tokens, axis=-1)[..., 0]


def _float_weight(length: int, size: int) -> float:
    return 1.0 / (size * math.comb(length, size))


def both_sides(family, weight=_float_weight):
    r"""``(order_nll, subset_nll, order_log_joints)`` for every sequence.

    ``order_nll`` averages :math:`-\log q_\sigma(x)` over all :math:`L!` orders,
    from prefix-masked questions; ``subset_nll`` is the subset form, from
    subset-masked questions (a separate block of the same batched call, so one
    compilation serves both); ``order_log_joints[s]`` is :math:`\log q_{\sigma_s}`.
    """
    length = family.length
    sequences = jnp.asarray(all_sequences(family.vocab_size, length))
    orders = _orders(length)
    prefix = _prefix_masks(orders).reshape(-1, length)
    subsets = _subset_masks(length)
    log_q = np.asarray(_log_conditionals(family, sequences, jnp.asarray(np.concatenate([prefix, subsets]))),
                       np.float64)
    by_order, by_subset = log_q[: len(prefix)], log_q[len(prefix):]

    by_order = by_order.reshape(len(orders), length, -1, length)  # (order, step, sequence, position)
    order_log_joints = np.take_along_axis(by_order, orders[:, :, None, None], axis=3)[..., 0].sum(axis=1)
    order_nll = -order_log_joints.mean(axis=0)

    subset_nll = np.zeros(sequences.shape[0])
    for subset, observed in enumerate(subsets):
        masked = ~observed
        size = int(masked.sum())
        if size == 0:
            continue
        subset_nll += -weight(length, size) * by_subset[subset][:, masked].sum(axis=1)
    return order_nll, subset_nll, order_log_joints


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", list(MODELS))
def test_order_average_nll_equals_subset_form(name, scale):
    _, family = _family(name, scale)
    order_nll, subset_nll, _ = both_sides(family)
    assert np.isfinite(order_nll).all()
    np.testing.assert_allclose(order_nll, subset_nll, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", list(MODELS))
def test_jensen_bound_against_order_mixture(name, scale):
    model, family = _family(name, scale)
    order_nll, _, order_log_joints = both_sides(family)
    mixture = ancestral_law(family, order="random")  # the subset dynamic program, not our enumeration
    np.testing.assert_allclose(np.exp(order_log_joints).mean(axis=0), mixture, rtol=0, atol=LAW_TOLERANCE)
    mixture_nll = -np.log(mixture)
    gap = order_nll - mixture_nll
    assert gap.min() >= -TOLERANCE
    if scale == 0.0:
        np.testing.assert_allclose(gap, 0.0, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(order_nll, -np.log(model.law()), rtol=0, atol=TOLERANCE)
    else:
        assert gap.max() > 1e-6  # inconsistent: q_sigma(x) varies with sigma, so AM-GM is strict


def test_wrong_weights_fail_the_float_check():
    """Negative control for (b): replacing 1/(k C(L,k)) by 1/C(L,k) breaks the equality."""
    _, family = _family("tabular-V2-L4", 0.5)
    order_nll, wrong_nll, _ = both_sides(family, weight=lambda length, size: 1.0 / math.comb(length, size))
    assert np.abs(wrong_nll - order_nll).max() > 1e-3
