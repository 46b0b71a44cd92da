r"""Any-order autoregressive models built on a conditional family.

A conditional family :math:`q` (:class:`~arprob.Conditionals`) defines one
autoregressive model per order :math:`\sigma` of the ``L`` positions,

.. math::

    q_\sigma(x) = \prod_{t=0}^{L-1} q\bigl(x_{\sigma(t)} \mid x_{\sigma(<t)}\bigr),

and the *order mixture* :math:`\bar q(x) = \frac{1}{L!}\sum_\sigma q_\sigma(x)`,
which is what ancestral sampling in a uniformly random order draws from
(σ-GPT, ARDM, AS-ARMs).  Training objectives of any-order models and of
absorbing diffusion are the expected NLL over orders,

.. math::

    \mathbb{E}_\sigma[-\log q_\sigma(x)]
    = \sum_{k=1}^{L} \frac{1}{k\binom{L}{k}} \sum_{|M|=k} \sum_{i\in M} -\log q(x_i \mid x_{\neg M}),

the subset form of ``proofs/02-any-order-nll-subset-form.md`` (theorem 2): it
needs :math:`2^L - 1` network calls instead of :math:`L!\,L`.  By Jensen,
:math:`\mathbb{E}_\sigma[-\log q_\sigma(x)] \ge -\log \bar q(x)`, with equality
for every ``x`` exactly when the family is consistent (all :math:`q_\sigma` equal).

:class:`AnyOrderAR` computes all of these exactly (float64 when x64 is on) and
measures how much a learned or perturbed family depends on the order
(:meth:`AnyOrderAR.order_inconsistency`).
"""

from __future__ import annotations

import itertools
import math
import sys
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob._validation import (
    check_enumeration,
    check_int,
    check_key,
    check_memory,
    check_order,
    check_shape,
    check_tokens,
    is_concrete,
)
from arprob.conditionals import ExactConditionals, as_conditionals, join_static, split_static
from arprob.errors import EnumerationTooLargeError, InvalidOrderError

__all__ = ["AnyOrderAR", "LogProbSpread", "OrderInconsistency", "subset_log_conditionals"]

# Network calls are made on blocks of this many observation patterns, padded,
# so that one compilation serves every length-L query.
_BLOCK = 64


@partial(jax.jit, static_argnames=("static",))
def _gather_block(dynamic, static, x, observed):
    """``log q(x_i | x_{S_s})`` for patterns ``observed`` (P, L) and rows ``x`` (B, L) -> (P, B, L)."""
    family = join_static(dynamic, static)
    num_patterns, batch = observed.shape[0], x.shape[0]
    xs = jnp.broadcast_to(x[None], (num_patterns, batch, x.shape[1]))
    masks = jnp.broadcast_to(observed[:, None, :], xs.shape)
    logits = jax.nn.log_softmax(family(xs, masks), axis=-1)
    return jnp.take_along_axis(logits, xs[..., None], axis=-1)[..., 0]


def subset_log_conditionals(conditionals, x, observed) -> jax.Array:
    r"""``log q(x_i | x_S)`` for every observation pattern ``S`` and position ``i``.

    Parameters
    ----------
    conditionals
        A conditional family or an exact model.
    x : Int[Array, "batch length"]
        Clean sequences.
    observed : Bool[Array, "patterns length"]
        One observation pattern per row.

    Returns
    -------
    Float[Array, "patterns batch length"]
        Entry ``[s, b, i]`` is :math:`\log q(x^b_i \mid x^b_j,\ j \in S_s\setminus\{i\})`.
        One network call per pattern (batched in blocks of 64).
    """
    family = as_conditionals(conditionals, "subset_log_conditionals")
    dynamic, static = split_static(family)
    x = jnp.asarray(x, jnp.int32)
    observed = np.asarray(observed, dtype=bool)
    outputs = []
    for start in range(0, observed.shape[0], _BLOCK):
        block = observed[start : start + _BLOCK]
        size = block.shape[0]
        if size < _BLOCK:
            block = np.concatenate([block, np.zeros((_BLOCK - size, block.shape[1]), bool)])
        outputs.append(_gather_block(dynamic, static, x, jnp.asarray(block))[:size])
    return jnp.concatenate(outputs, axis=0)


def _subset_masks(length: int) -> np.ndarray:
    """All ``2**L`` subsets as boolean rows; row ``s`` has bit ``i`` of ``s`` at column ``i``."""
    codes = np.arange(2**length, dtype=np.int64)
    return ((codes[:, None] >> np.arange(length)) & 1).astype(bool)


class LogProbSpread(NamedTuple):
    """Range of :math:`\\log q_\\sigma(x)` over a set of orders (per sequence)."""

    min: jax.Array
    max: jax.Array
    spread: jax.Array  # max - min; 0 where every order gives -inf


class OrderInconsistency(NamedTuple):
    """How much a family's model depends on the order, over the whole space.

    Attributes
    ----------
    max_spread
        :math:`\\max_x [\\max_\\sigma \\log q_\\sigma(x) - \\min_\\sigma \\log q_\\sigma(x)]`
        over sequences with :math:`\\bar q(x) > 0` (``inf`` if some order gives
        such an ``x`` probability zero).
    mean_spread
        The same spread averaged under the order mixture :math:`\\bar q`.
    max_tv
        :math:`\\max_{\\sigma,\\sigma'} \\mathrm{TV}(q_\\sigma, q_{\\sigma'})`.
    max_tv_orders
        The pair of orders attaining ``max_tv``.
    num_orders
        How many orders were compared.
    """

    max_spread: float
    mean_spread: float
    max_tv: float
    max_tv_orders: tuple
    num_orders: int


class AnyOrderAR:
    r"""The any-order autoregressive view of a conditional family.

    Parameters
    ----------
    conditionals
        A conditional family (:class:`~arprob.Conditionals`), e.g. a trained
        any-subset network, or an exact model (converted with
        :func:`arprob.conditionals.exact`).

    Notes
    -----
    Every method is exact: no sampling except in :meth:`expected_nll_mc`.
    Costs are in network calls (one call answers every position for one
    observation pattern): ``log_prob`` needs ``L`` per order, ``expected_nll``
    and ``mixture_log_prob`` need ``2**L`` (shared by the whole batch).
    See ``proofs/01-chain-rule-any-order.md`` and
    ``proofs/02-any-order-nll-subset-form.md``.
    """

    def __init__(self, conditionals):
        self.conditionals = as_conditionals(conditionals, "AnyOrderAR")

    @property
    def vocab_size(self) -> int:
        return self.conditionals.vocab_size

    @property
    def length(self) -> int:
        return self.conditionals.length

    def __repr__(self):
        return f"AnyOrderAR({self.conditionals!r})"

    # -- input handling ------------------------------------------------------
    def _tokens(self, x, name="x", owner=None):
        owner = owner or f"AnyOrderAR.{sys._getframe(1).f_code.co_name}"
        if is_concrete(x):
            check_shape(owner, name, x, (self.length,))
            check_tokens(owner, name, x, self.vocab_size)
        x = jnp.asarray(x, jnp.int32)
        return x.reshape(-1, self.length), x.shape[:-1]

    def _orders(self, order):
        owner = "AnyOrderAR.log_prob"
        if is_concrete(order):
            array = np.asarray(order)
            if array.ndim == 0 or array.shape[-1] != self.length:
                raise InvalidOrderError(
                    f"{owner}: order has shape {array.shape}, expected (..., {self.length}) "
                    f"(a permutation of range({self.length}) per row)"
                )
            for row in array.reshape(-1, self.length):
                check_order(owner, row, self.length)
        return jnp.asarray(order, jnp.int32)

    def _subset_budget(self, batch: int, owner: str) -> None:
        length = self.length
        if length > 24 or (2**length) * max(batch, 1) * length > 2**28:
            raise EnumerationTooLargeError(
                f"{owner}: the subset form needs 2**{length} observation patterns for {batch} "
                f"sequence(s) ({2**length * max(batch, 1) * length:,} log-conditionals), above the "
                "budget of 2**28; use expected_nll_mc for long sequences or pass fewer sequences"
            )

    # -- likelihoods ---------------------------------------------------------
    def log_prob(self, x, order):
        r""":math:`\log q_\sigma(x) = \sum_t \log q(x_{\sigma(t)} \mid x_{\sigma(<t)})`.

        Parameters
        ----------
        x : Int[Array, "*batch length"]
        order : Int[Array, "*batch length"]
            Permutations of ``range(length)``; broadcast against ``x``.

        Returns
        -------
        Float[Array, "*batch"]
            ``L`` network calls per (sequence, order) pair.
        """
        if is_concrete(x):
            check_shape("AnyOrderAR.log_prob", "x", x, (self.length,))
            check_tokens("AnyOrderAR.log_prob", "x", x, self.vocab_size)
        x = jnp.asarray(x)
        order = self._orders(order)
        batch_shape = jnp.broadcast_shapes(x.shape[:-1], order.shape[:-1])
        xs = jnp.broadcast_to(x, batch_shape + (self.length,)).reshape(-1, self.length).astype(jnp.int32)
        orders = jnp.broadcast_to(order, batch_shape + (self.length,)).reshape(-1, self.length)
        dynamic, static = split_static(self.conditionals)
        return _order_log_prob(dynamic, static, xs, orders).reshape(batch_shape)

    def next_token_logits(self, prefixes, lengths=None):
        r"""The left-to-right factors of :meth:`log_prob` under the identity order, for padded prefixes.

        .. math::

            \mathrm{logits}[b, v] = \log q(x_{n_b} = v \mid x_{<n_b} = \mathrm{prefixes}[b, :n_b]),
            \qquad n_b = \mathrm{lengths}[b],

        the family's answer at position :math:`n_b` with the prefix observed, normalised
        (``log_softmax``): the next-token law of :math:`q_{\mathrm{id}}`, the order
        ``range(L)`` autoregressive model (not of the order mixture :math:`\bar q`, unless the
        family is consistent).  One network call for the whole batch.  Arguments, shapes and
        checks as :meth:`arprob.TabularJoint.next_token_logits` (padding from ``lengths`` on is
        ignored whatever it holds, ``0 <= lengths < L``); for an exact family the model's own
        method answers (:class:`~arprob.HMM` and chain models by their fast kernels).

        Returns
        -------
        Float[Array, "*batch V"]
        """
        from arprob.distributions.base import check_prefixes

        if isinstance(self.conditionals, ExactConditionals):
            return self.conditionals.model.next_token_logits(prefixes, lengths)
        prefixes, lengths = check_prefixes("AnyOrderAR.next_token_logits", prefixes, lengths,
                                           vocab_size=self.vocab_size, length=self.length)
        dynamic, static = split_static(self.conditionals)
        return _next_token_logits(dynamic, static, prefixes, lengths)

    def expected_nll(self, x):
        r"""Exact :math:`\mathbb{E}_\sigma[-\log q_\sigma(x)]` over uniform orders, by the subset form.

        .. math::

            \sum_{k=1}^{L} \frac{1}{k\binom{L}{k}} \sum_{|M|=k} \sum_{i\in M} -\log q(x_i \mid x_{\neg M})

        (theorem 2, ``proofs/02-any-order-nll-subset-form.md``): :math:`2^L - 1`
        network calls for the whole batch instead of :math:`L \cdot L!` per
        sequence.  For ``L = 12`` that is 4,095 calls against 5.7e9.

        Returns
        -------
        Float[Array, "*batch"]
        """
        flat, batch_shape = self._tokens(x)
        self._subset_budget(flat.shape[0], "AnyOrderAR.expected_nll")
        per_size = self._per_size_losses(flat)  # (L+1, B): h_k
        length = self.length
        weights = np.array([0.0] + [1.0 / (k * math.comb(length, k)) for k in range(1, length + 1)])
        return (jnp.asarray(weights)[:, None] * per_size).sum(axis=0).reshape(batch_shape)

    def _per_size_losses(self, flat):
        r""":math:`h_k(x) = \sum_{|M|=k}\sum_{i\in M} -\log q(x_i\mid x_{\neg M})` for k = 0..L, shape (L+1, B)."""
        length = self.length
        subsets = _subset_masks(length)  # row s: observed set S; masked set M = not S
        table = subset_log_conditionals(self.conditionals, flat, subsets)  # (2^L, B, L)
        masked = jnp.asarray(~subsets)
        losses = -jnp.where(masked[:, None, :], table, 0.0).sum(axis=-1)  # (2^L, B)
        sizes = (~subsets).sum(axis=1)
        # a select, not a matrix product: a loss of +inf (p(x) = 0) times a zero weight would be NaN
        members = jnp.asarray(sizes[None, :] == np.arange(length + 1)[:, None])
        return jnp.where(members[:, :, None], losses[None], 0.0).sum(axis=1)

    def per_size_losses(self, x):
        r"""The exact inner sums :math:`h_k(x)` for ``k = 0..L``, shape ``(L+1, *batch)``.

        .. math::

            h_k(x) = \sum_{|M|=k} \sum_{i\in M} -\log q(x_i \mid x_{\neg M}),

        the total loss of predicting every masked token when ``k`` are masked.
        Every masking-based training objective is a weighted sum of them
        (see :mod:`arprob.diffusion`).
        """
        flat, batch_shape = self._tokens(x)
        self._subset_budget(flat.shape[0], "AnyOrderAR.per_size_losses")
        return self._per_size_losses(flat).reshape((self.length + 1,) + batch_shape)

    def expected_nll_mc(self, key, x, num_orders: int):
        r"""Monte Carlo estimate of :math:`\mathbb{E}_\sigma[-\log q_\sigma(x)]` with its standard error.

        Draws ``num_orders`` uniform orders (shared by every sequence in the
        batch: common random numbers) and averages :math:`-\log q_\sigma(x)`.

        Returns
        -------
        mean, standard_error : Float[Array, "*batch"]
            ``standard_error`` is the sample standard deviation over orders
            divided by :math:`\sqrt{\text{num\_orders}}` (0 for one order).
        """
        owner = "AnyOrderAR.expected_nll_mc"
        key = check_key(owner, key)
        num_orders = check_int(owner, "num_orders", num_orders, minimum=1)
        flat, batch_shape = self._tokens(x)
        check_memory(owner, f"num_orders={num_orders:,} orders for {flat.shape[0]:,} sequences",
                     (num_orders, flat.shape[0], self.length, self.length, self.vocab_size + 1), itemsize=4,
                     fix="use fewer orders per call and average the estimates")
        keys = jax.random.split(key, num_orders)
        orders = jax.vmap(lambda k: jax.random.permutation(k, self.length))(keys).astype(jnp.int32)
        xs = jnp.broadcast_to(flat[None], (num_orders,) + flat.shape).reshape(-1, self.length)
        os = jnp.broadcast_to(orders[:, None], (num_orders, flat.shape[0], self.length)).reshape(-1, self.length)
        dynamic, static = split_static(self.conditionals)
        nll = -_order_log_prob(dynamic, static, xs, os).reshape(num_orders, -1)
        mean = nll.mean(axis=0)
        if num_orders > 1:
            stderr = nll.std(axis=0, ddof=1) / np.sqrt(num_orders)
        else:
            stderr = jnp.zeros_like(mean)
        return mean.reshape(batch_shape), stderr.reshape(batch_shape)

    def mixture_log_prob(self, x):
        r"""Exact :math:`\log \bar q(x) = \log \frac{1}{L!}\sum_\sigma q_\sigma(x)` (the order mixture).

        Summed over all :math:`L!` orders by the dynamic program over revealed
        subsets,

        .. math::

            f(\emptyset) = 1,\quad f(S) = \sum_{i\in S} f(S\setminus\{i\})\, q(x_i\mid x_{S\setminus\{i\}}),
            \quad \bar q(x) = f([L]) / L!,

        in log space: :math:`2^L` network calls and :math:`2^L L` additions.
        """
        flat, batch_shape = self._tokens(x)
        self._subset_budget(flat.shape[0], "AnyOrderAR.mixture_log_prob")
        length = self.length
        subsets = _subset_masks(length)
        table = subset_log_conditionals(self.conditionals, flat, subsets)  # [S, b, i] = log q(x_i | x_S)
        log_f = _subset_dp(table, length)
        return (log_f - math.lgamma(length + 1)).reshape(batch_shape)

    def jensen_gap(self, x):
        r""":math:`\mathbb{E}_\sigma[-\log q_\sigma(x)] - (-\log \bar q(x)) \ge 0`; zero iff consistent at ``x``."""
        return self.expected_nll(x) + self.mixture_log_prob(x)

    # -- order dependence ----------------------------------------------------
    def log_prob_spread(self, x, orders=None, *, max_orders: int = 40_320):
        r"""Minimum, maximum and spread of :math:`\log q_\sigma(x)` over orders.

        Parameters
        ----------
        x : Int[Array, "*batch length"]
        orders : Int[Array, "num_orders length"], optional
            The orders to compare; all :math:`L!` orders by default (refused
            when :math:`L!` exceeds ``max_orders``).
        """
        flat, batch_shape = self._tokens(x)
        orders = self._all_orders(orders, max_orders, "AnyOrderAR.log_prob_spread")
        log_probs = self._log_prob_matrix(flat, orders)  # (O, B)
        low, high = log_probs.min(axis=0), log_probs.max(axis=0)
        with np.errstate(invalid="ignore"):  # -inf - (-inf) where every order gives probability 0: spread 0
            spread = np.where(np.isneginf(high), 0.0, high - low)
        return LogProbSpread(*(jnp.asarray(a).reshape(batch_shape) for a in (low, high, spread)))

    def law(self, order, *, max_entries: int = 2**26) -> np.ndarray:
        """The law :math:`q_\\sigma` of one order over all ``V**L`` sequences (float64, lexicographic)."""
        orders = self._all_orders(np.asarray(order)[None], 1, "AnyOrderAR.law")
        check_enumeration("AnyOrderAR.law", self.vocab_size, self.length, factor=self.length,
                          max_entries=max_entries, what="the law of one order")
        sequences = all_sequences(self.vocab_size, self.length)
        return np.exp(self._log_prob_matrix(sequences, orders)[0])

    def order_inconsistency(self, orders=None, *, max_orders: int = 720, max_entries: int = 2**24):
        r"""How much the model depends on the order, over the whole sequence space.

        Computes :math:`\log q_\sigma(x)` for every sequence and every order in
        ``orders`` (all :math:`L!` by default, refused above ``max_orders``) and
        returns an :class:`OrderInconsistency`: the largest and mean spread of
        the log-likelihood across orders, and the largest TV distance between
        the laws of two orders.  All zero (to rounding) exactly when the family
        is consistent on the orders compared (theorem 1).
        """
        owner = "AnyOrderAR.order_inconsistency"
        orders = self._all_orders(orders, max_orders, owner)
        check_enumeration(owner, self.vocab_size, self.length, factor=orders.shape[0] * self.length,
                          max_entries=max_entries, what="the laws of every order")
        sequences = all_sequences(self.vocab_size, self.length)
        log_probs = self._log_prob_matrix(sequences, orders)  # (O, N)
        laws = np.exp(log_probs)
        mixture = laws.mean(axis=0)
        support = mixture > 0
        high, low = log_probs.max(axis=0), log_probs.min(axis=0)
        spread = np.where(support, high - low, 0.0)
        max_tv, pair = 0.0, (0, 0)
        for first in range(laws.shape[0]):
            distances = 0.5 * np.abs(laws[first + 1 :] - laws[first]).sum(axis=1)
            if distances.size and distances.max() > max_tv:
                max_tv, pair = float(distances.max()), (first, first + 1 + int(distances.argmax()))
        return OrderInconsistency(
            max_spread=float(spread.max()),
            mean_spread=float((mixture * spread).sum() / mixture.sum()),
            max_tv=max_tv,
            max_tv_orders=(tuple(int(v) for v in orders[pair[0]]), tuple(int(v) for v in orders[pair[1]])),
            num_orders=int(orders.shape[0]),
        )

    def _all_orders(self, orders, max_orders: int, owner: str) -> np.ndarray:
        length = self.length
        if orders is None:
            count = math.factorial(length)
            if count > max_orders:
                raise EnumerationTooLargeError(
                    f"{owner}: comparing all {length}! = {count:,} orders is above max_orders={max_orders:,}; "
                    "pass orders=... (an array of permutations) or raise max_orders"
                )
            return np.array(list(itertools.permutations(range(length))), dtype=np.int32)
        array = np.asarray(orders)
        if array.ndim != 2 or array.shape[1] != length:
            raise InvalidOrderError(f"{owner}: orders has shape {array.shape}, expected (num_orders, {length})")
        for row in array:
            check_order(owner, row, length)
        return array.astype(np.int32)

    def _log_prob_matrix(self, sequences, orders, chunk: int = 2**15) -> np.ndarray:
        """``log q_sigma(x)`` for every order (rows) and sequence (columns), float64 numpy."""
        dynamic, static = split_static(self.conditionals)
        sequences = jnp.asarray(sequences, jnp.int32)
        rows = []
        for order in orders:
            values = []
            for start in range(0, sequences.shape[0], chunk):
                block = sequences[start : start + chunk]
                values.append(np.asarray(
                    _order_log_prob(dynamic, static, block, jnp.broadcast_to(jnp.asarray(order), block.shape)),
                    np.float64))
            rows.append(np.concatenate(values))
        return np.stack(rows)


@partial(jax.jit, static_argnames=("static",))
def _order_log_prob(dynamic, static, xs, orders):
    """``sum_t log q(x_{order_t} | x_{order_<t})`` for rows (B, L) of x and orders."""
    family = join_static(dynamic, static)
    length = xs.shape[1]
    rows = jnp.arange(xs.shape[0])
    rank = jnp.argsort(orders, axis=1)  # rank[b, j] = t with orders[b, t] = j

    def step(t, total):
        observed = rank < t
        logits = jax.nn.log_softmax(family(xs, observed), axis=-1)
        position = orders[:, t]
        return total + logits[rows, position, xs[rows, position]]

    return jax.lax.fori_loop(0, length, step, jnp.zeros(xs.shape[0], jnp.result_type(float)))


@partial(jax.jit, static_argnames=("static",))
def _next_token_logits(dynamic, static, prefixes, lengths):
    """``log_softmax(family(x, x_{<n} observed))[n]`` for padded prefixes ``(..., P)`` and lengths ``(...)``."""
    family = join_static(dynamic, static)
    length = family.length
    batch = prefixes.shape[:-1]
    padded = jnp.pad(prefixes, [(0, 0)] * len(batch) + [(0, length - prefixes.shape[-1])])
    observed = jnp.arange(length) < lengths[..., None]
    tokens = jnp.where(observed, padded, family.vocab_size).astype(jnp.int32).reshape(-1, length)  # masks
    logits = jax.nn.log_softmax(family(tokens, observed.reshape(-1, length)), axis=-1)
    rows = jnp.arange(tokens.shape[0])
    return logits[rows, lengths.reshape(-1)].reshape(batch + (logits.shape[-1],))


def _subset_dp(table, length: int):
    r"""``log f([L])`` of the revealed-subset recursion, given ``table[S, b, i] = log q(x_i | x_S)``.

    Runs in numpy float64, one popcount layer at a time (``2**L * L`` log-additions per sequence).
    """
    table = np.asarray(table, np.float64)
    codes = np.arange(2**length)
    popcount = np.array([bin(c).count("1") for c in codes])
    log_f = np.full(table.shape[:2], -np.inf)
    log_f[0] = 0.0
    bits = 1 << np.arange(length)
    for size in range(1, length + 1):
        layer = codes[popcount == size]
        present = (layer[:, None] & bits[None, :]) != 0  # (n, L)
        parents = np.where(present, layer[:, None] ^ bits[None, :], 0)
        # terms[s, i, b] = log f(S \ {i}) + log q(x_i | x_{S \ {i}})
        terms = log_f[parents] + table[parents, :, np.arange(length)[None, :]]
        terms = np.where(present[..., None], terms, -np.inf)
        high = terms.max(axis=1, keepdims=True)
        safe = np.where(np.isfinite(high), high, 0.0)
        with np.errstate(divide="ignore"):
            log_f[layer] = (np.log(np.exp(terms - safe).sum(axis=1)) + safe[:, 0])
    return jnp.asarray(log_f[-1])
