r"""The marginal protocol, and conversions between marginals and conditional families.

A *marginal model* answers, for a batch of partially observed sequences,

.. math::

    \mathrm{marginal\_log\_prob}(x, \mathrm{observed}) = \log m(x_S),
    \qquad S = \{j : \mathrm{observed}_j\},

the log-probability of the observed tokens with every other position summed out.  Every exact
arprob model (:class:`~arprob.TabularJoint`, :class:`~arprob.MarkovChain`,
:class:`~arprob.NGram`, :class:`~arprob.HMM`) already satisfies :class:`Marginals`.

Two conversions, each documented with its cost in *marginal calls* (one call answers one
batch of ``(x, observed)`` pairs) or *network calls* (one answers every position of one
observation pattern):

* :func:`conditionals_from_marginals`: the ratio
  :math:`q(x_i = v \mid x_S) = m(x_S, x_i = v) / \sum_{v'} m(x_S, x_i = v')`, a conditional
  family usable by every sampler; one query costs :math:`L V` marginal evaluations.
* :func:`marginals_from_conditionals`: the chain rule along an order of :math:`S`,
  :math:`\log m_\sigma(x_S) = \sum_t \log q(x_{s_t} \mid x_{s_{<t}})`; one query costs
  :math:`L` network calls.  It depends on the order unless the family is consistent
  (``proofs/01-chain-rule-any-order.md``); :meth:`ConditionalMarginals.log_prob_spread` reports
  the spread.

Both are exact inverses of each other on consistent inputs (``proofs/09-marginalization.md``,
theorem 9): the ratio of self-consistent marginals is a consistent family, and the chain rule
along any order recovers the marginals.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from arprob._validation import check_key, check_mask, check_order, check_shape, check_tokens, is_concrete
from arprob.anyorder import LogProbSpread
from arprob.conditionals import (
    PerturbedBase,
    _key_data,
    as_conditionals,
    join_static,
    masked_input_noise,
    split_static,
)
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidOrderError

__all__ = ["ConditionalMarginals", "MarginalConditionals", "Marginals", "PerturbedMarginals",
           "as_marginals", "conditionals_from_marginals", "marginals_from_conditionals",
           "perturbed_marginals"]


@runtime_checkable
class Marginals(Protocol):
    """Anything with ``vocab_size``, ``length`` and ``marginal_log_prob(x, observed) -> (...)``.

    ``marginal_log_prob(x, observed)[...]`` is :math:`\\log m(x_S)` with
    :math:`S = \\{j : \\mathrm{observed}_j\\}`; values of ``x`` at unobserved positions are ignored
    (they may hold the mask id ``vocab_size``).  Every exact arprob model qualifies.
    """

    vocab_size: int
    length: int

    def marginal_log_prob(self, x, observed):  # pragma: no cover - protocol signature
        ...


def as_marginals(obj, owner: str = "arprob", name: str = "marginals") -> Marginals:
    """``obj`` checked to satisfy :class:`Marginals` (positive int ``vocab_size`` and ``length``)."""
    if isinstance(obj, type) or not isinstance(obj, Marginals):
        raise ArprobTypeError(
            f"{owner}: {name}: expected a marginal model (vocab_size, length, marginal_log_prob(x, observed)), "
            f"such as TabularJoint, MarkovChain, NGram or HMM, got {type(obj).__name__} ({obj!r:.40}); "
            "a conditional family becomes one with marginals_from_conditionals"
        )
    for attribute in ("vocab_size", "length"):
        value = getattr(obj, attribute)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ArprobTypeError(f"{owner}: {name}.{attribute} is {value!r}, expected a positive int")
    if getattr(obj, "batch_shape", ()) != ():
        raise ArprobTypeError(f"{owner}: {name} has batch_shape {obj.batch_shape}, expected () "
                              "(index the batch first)")
    return obj


def _check_query(owner: str, vocab_size: int, length: int, x, observed):
    if is_concrete(x, observed):
        check_shape(owner, "x", x, (length,))
        check_mask(owner, "observed", observed, length)
        check_tokens(owner, "x", x, vocab_size, observed=observed)
    x, observed = jnp.asarray(x), jnp.asarray(observed, bool)
    batch_shape = jnp.broadcast_shapes(x.shape[:-1], observed.shape[:-1])
    x = jnp.broadcast_to(x, batch_shape + (length,)).astype(jnp.int32)
    return jnp.where(observed, x, 0), jnp.broadcast_to(observed, batch_shape + (length,))


# ---------------------------------------------------------------------------
# conditionals from marginals
# ---------------------------------------------------------------------------


@register_pytree_node_class
class MarginalConditionals:
    r"""The conditional family induced by a marginal model: ratios of marginals.

    .. math::

        \log q(x_i = v \mid x_{S \setminus \{i\}})
        = \log m(x_{S\setminus\{i\}}, x_i = v) - \log \sum_{v'} m(x_{S\setminus\{i\}}, x_i = v'),

    uniform where every :math:`m(x_{S\setminus\{i\}}, x_i = v')` is zero (the library's answer at
    contexts of probability zero).  The denominator is the sum over :math:`v'`, not
    :math:`m(x_{S\setminus\{i\}})`: the two agree exactly when the marginals are self-consistent
    (theorem 9), and the sum always gives a normalised answer.  Cost: one marginal call on
    ``(..., L, V)`` inputs, i.e. :math:`L V` marginal evaluations per query.
    """

    def __init__(self, marginals):
        self.marginals = marginals

    @property
    def vocab_size(self) -> int:
        return self.marginals.vocab_size

    @property
    def length(self) -> int:
        return self.marginals.length

    def __call__(self, x, observed):
        vocab_size, length = self.vocab_size, self.length
        x, observed = _check_query("MarginalConditionals", vocab_size, length, x, observed)
        eye = jnp.eye(length, dtype=bool)
        # queries[..., i, v, :] = x with x_i = v; observed set (S \ {i}) ∪ {i}
        tokens = jnp.where(eye[:, None, :], jnp.arange(vocab_size)[None, :, None], x[..., None, None, :])
        masks = (observed[..., None, :] & ~eye) | eye  # (..., L_i, L_j)
        masks = jnp.broadcast_to(masks[..., :, None, :], tokens.shape)
        log_mass = self.marginals.marginal_log_prob(tokens, masks)  # (..., L, V)
        total = jax.nn.logsumexp(log_mass, axis=-1, keepdims=True)
        impossible = jnp.isneginf(total)
        uniform = jnp.full_like(log_mass, -np.log(vocab_size))
        return jnp.where(impossible, uniform, log_mass - jnp.where(impossible, 0.0, total))

    def tree_flatten(self):
        return (self.marginals,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self):
        return f"conditionals_from_marginals({self.marginals!r})"


def conditionals_from_marginals(marginals) -> MarginalConditionals:
    r"""The conditional family :math:`q(x_i = v \mid x_S) = m(x_S, x_i = v) / \sum_{v'} m(x_S, x_i = v')`.

    Parameters
    ----------
    marginals
        A :class:`Marginals` (an exact model, :class:`PerturbedMarginals`, a trained marginal
        network, ...), without batch shape.

    Returns
    -------
    MarginalConditionals
        A conditional family (:class:`~arprob.Conditionals`, a pytree): every sampler and
        :func:`~arprob.verify.check` accept it.  Each query costs :math:`L V` marginal evaluations.
        For self-consistent marginals it is consistent with the joint :math:`m(x_{[L]})`
        (theorem 9, ``proofs/09-marginalization.md``); for an exact model it equals the
        model's own ``conditional_logits``.
    """
    return MarginalConditionals(as_marginals(marginals, "conditionals_from_marginals"))


# ---------------------------------------------------------------------------
# marginals from conditionals
# ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static",))
def _subset_chain_log_prob(dynamic, static, x, observed, order):
    r""":math:`\sum_{t:\ \sigma(t) \in S} \log q(x_{\sigma(t)} \mid x_{S \cap \sigma(<t)})`, rows ``(B, L)``."""
    family = join_static(dynamic, static)
    length = x.shape[1]
    rows = jnp.arange(x.shape[0])
    rank = jnp.argsort(order, axis=1)  # rank[b, j] = t with order[b, t] = j

    def step(t, total):
        context = observed & (rank < t)
        logits = jax.nn.log_softmax(family(x, context), axis=-1)
        position = order[:, t]
        term = logits[rows, position, x[rows, position]]
        return total + jnp.where(observed[rows, position], term, 0.0)

    return jax.lax.fori_loop(0, length, step, jnp.zeros(x.shape[0], jnp.result_type(float)))


class ConditionalMarginals:
    r"""Marginals of a conditional family by the chain rule along an order of the observed set.

    .. math::

        \log m_\sigma(x_S) = \sum_{t=0}^{|S|-1} \log q\bigl(x_{s_t} \mid x_{s_0}, \dots, x_{s_{t-1}}\bigr),

    where :math:`s_0, s_1, \dots` are the positions of :math:`S` in the order they appear in
    the permutation :math:`\sigma` (``order``).  For a consistent family this is the joint's
    marginal for every order (theorem 1); otherwise it depends on the order, and
    :meth:`log_prob_spread` measures by how much.  Cost: ``L`` network calls per query
    (steps outside :math:`S` are masked, so one compilation serves every pattern).
    """

    def __init__(self, conditionals, order):
        self.conditionals = conditionals
        self.order = order

    @property
    def vocab_size(self) -> int:
        return self.conditionals.vocab_size

    @property
    def length(self) -> int:
        return self.conditionals.length

    def __repr__(self):
        return f"marginals_from_conditionals({self.conditionals!r}, order={self.order.tolist()})"

    def _evaluate(self, x, observed, order, owner):
        x, observed = _check_query(owner, self.vocab_size, self.length, x, observed)
        batch_shape = x.shape[:-1]
        flat_x, flat_observed = x.reshape(-1, self.length), observed.reshape(-1, self.length)
        orders = jnp.broadcast_to(jnp.asarray(order, jnp.int32), flat_x.shape)
        dynamic, static = split_static(self.conditionals)
        return _subset_chain_log_prob(dynamic, static, flat_x, flat_observed, orders).reshape(batch_shape)

    def marginal_log_prob(self, x, observed):
        r""":math:`\log m_\sigma(x_S)` along ``self.order``; shape: the batch shape of ``(x, observed)``."""
        return self._evaluate(x, observed, self.order, "ConditionalMarginals.marginal_log_prob")

    def log_prob(self, x):
        r""":math:`\log q_\sigma(x)`, the order-:math:`\sigma` joint (every position observed)."""
        return self.marginal_log_prob(x, jnp.ones(jnp.shape(x), bool))

    def log_prob_spread(self, x, observed, orders=None, *, max_orders: int = 40_320) -> LogProbSpread:
        r"""Minimum, maximum and spread of :math:`\log m_\sigma(x_S)` over orders.

        Parameters
        ----------
        x : Int[Array, "*batch length"]
        observed : Bool[Array, "*batch length"]
        orders : Int[Array, "num_orders length"], optional
            Permutations to compare; all :math:`L!` by default (refused above ``max_orders``).
            Only their restriction to :math:`S` matters.

        Returns
        -------
        LogProbSpread
            ``spread`` is 0 for a consistent family (to rounding) and where every order gives
            :math:`-\infty`.  Costs ``L`` network calls per order.
        """
        owner = "ConditionalMarginals.log_prob_spread"
        length = self.length
        if orders is None:
            count = math.factorial(length)
            if count > max_orders:
                raise EnumerationTooLargeError(
                    f"{owner}: comparing all {length}! = {count:,} orders is above max_orders={max_orders:,}; "
                    "pass orders=... (an array of permutations) or raise max_orders")
            orders = np.array(list(itertools.permutations(range(length))), np.int32)
        orders = np.asarray(orders)
        if orders.ndim != 2 or orders.shape[1] != length:
            raise InvalidOrderError(f"{owner}: orders has shape {orders.shape}, expected (num_orders, {length})")
        check_order(owner, orders, length)
        values = jnp.stack([self._evaluate(x, observed, order, owner) for order in orders])
        low, high = values.min(axis=0), values.max(axis=0)
        spread = jnp.where(jnp.isneginf(high), 0.0, high - low)
        return LogProbSpread(low, high, spread)


def marginals_from_conditionals(conditionals, order=None) -> ConditionalMarginals:
    r"""Marginals :math:`\log m_\sigma(x_S)` of a conditional family by the chain rule along ``order``.

    Parameters
    ----------
    conditionals
        A conditional family (:class:`~arprob.Conditionals`) or an exact model.
    order : Int[Array, "length"], optional
        A permutation :math:`\sigma` of ``range(length)`` (default: left to right); the
        observed set :math:`S` is revealed in the order its positions appear in ``order``.

    Returns
    -------
    ConditionalMarginals
        A :class:`Marginals`.  Exact (the joint's marginals, for every order) when the family is
        consistent (theorem 1); for an inconsistent family the answer depends on ``order``
        (:meth:`ConditionalMarginals.log_prob_spread`) and need not be self-consistent.
        Cost: ``L`` network calls per query.
    """
    owner = "marginals_from_conditionals"
    family = as_conditionals(conditionals, owner)
    if order is None:
        order = np.arange(family.length, dtype=np.int32)
    order = np.asarray(order)
    if order.ndim != 1:
        raise InvalidOrderError(f"{owner}: order has shape {order.shape}, expected ({family.length},): "
                                f"one permutation of range({family.length})")
    check_order(owner, order, family.length)
    return ConditionalMarginals(family, order.astype(np.int32))


# ---------------------------------------------------------------------------
# a negative control
# ---------------------------------------------------------------------------


@register_pytree_node_class
class PerturbedMarginals(PerturbedBase):
    r"""``base.marginal_log_prob(x, S) + scale * noise(S, x_S)``: marginals that are not self-consistent.

    The noise is a standard normal drawn from a key that is a fixed, injective function of the
    masked input :math:`(S, x_S)` (its base-:math:`(V+1)` digits, :math:`V` = unobserved), so the
    object is a deterministic function of the partial assignment, like an imperfect marginal
    network; the empty assignment is perturbed too.  For ``scale > 0`` the residuals of
    :func:`~arprob.marginalization.self_consistency` are of order ``scale``.
    """

    def noise(self, x, observed):
        """The unscaled noise, shape: the batch shape of ``(x, observed)``."""
        vocab_size, length = self.vocab_size, self.length
        x, observed = _check_query("PerturbedMarginals", vocab_size, length, x, observed)
        digits = jnp.where(observed, x, vocab_size)
        return masked_input_noise(self.key_data, digits, vocab_size)

    def marginal_log_prob(self, x, observed):
        base = self.base.marginal_log_prob(x, observed)
        return base + self.scale * self.noise(x, observed).astype(base.dtype)

    def __repr__(self):
        return f"perturbed_marginals({self.base!r}, scale={self.scale})"


def perturbed_marginals(base, key, scale) -> PerturbedMarginals:
    r"""A negative control: ``base``'s log-marginals plus deterministic noise of size ``scale``.

    Parameters
    ----------
    base
        A :class:`Marginals`, e.g. an exact model.
    key
        PRNG key that fixes the noise function of :math:`(S, x_S)`.
    scale
        Standard deviation of the noise on each log-marginal, a finite number ``>= 0``.
    """
    owner = "perturbed_marginals"
    base = as_marginals(base, owner, "base")
    key = check_key(owner, key)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not np.isfinite(scale) or scale < 0:
        raise ArprobTypeError(f"{owner}: scale is {scale!r}, expected a finite number >= 0 "
                              "(the standard deviation of the log-marginal noise)")
    return PerturbedMarginals(base, _key_data(key), float(scale))
