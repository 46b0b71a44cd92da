r"""Self-consistency of marginal models: the residuals that theorem 9 says vanish exactly for valid joints.

A function :math:`m` on partial assignments is the marginal table of one joint law exactly when

.. math::

    m(x_\emptyset) = 1, \qquad m(x_S) = \sum_{v} m(x_S, x_i = v)
    \quad \text{for every } S,\ i \notin S,\ x_S

(and :math:`m \ge 0`; ``proofs/09-marginalization.md``, theorem 9).  :func:`self_consistency`
measures both in log space,

.. math::

    r(S, i, x_S) = \Bigl|\log m(x_S) - \log \sum_v m(x_S, x_i = v)\Bigr|, \qquad r_\emptyset = |\log m(x_\emptyset)|,

exhaustively over every :math:`(S, i, x_S)` when the :math:`(V+1)^L` masked inputs fit, and on
sampled triples otherwise (MaM, Liu et al. 2024, train on the same sampled residuals).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import check_int, check_key, check_shape, check_tokens, is_concrete
from arprob.conditionals import join_static, split_static
from arprob.errors import ArprobTypeError, EnumerationTooLargeError
from arprob.marginalization.protocol import as_marginals

__all__ = ["SELF_CONSISTENCY_MAX_INPUTS", "SelfConsistency", "self_consistency"]

#: Most masked inputs :math:`(V+1)^L` that the exhaustive mode evaluates (one marginal each):
#: ``2**20`` covers e.g. :math:`V = 3, L = 10` or :math:`V = 2, L = 12`.
SELF_CONSISTENCY_MAX_INPUTS = 2**20

_CHUNK = 4096  # marginal evaluations per call; the last chunk is padded so one compilation serves all


class SelfConsistency(NamedTuple):
    r"""Residuals of the self-consistency identities (log space, nats).

    Attributes
    ----------
    max_residual
        :math:`\max |\log m(x_S) - \log\sum_v m(x_S, x_i = v)|` over the checked triples
        (0 where both sides are :math:`-\infty`, ``inf`` where exactly one is).
    mean_residual
        The mean of the same residuals.
    normalization
        :math:`|\log m(x_\emptyset)|`.
    worst
        ``(observed, i, x)`` of the largest residual: the set :math:`S` as a bool mask, the
        summed-out position and the tokens (mask id :math:`V` outside :math:`S`).
    num_checks
        How many triples :math:`(S, i, x_S)` were checked.
    exhaustive
        True when every triple was checked.
    """

    max_residual: float
    mean_residual: float
    normalization: float
    worst: tuple
    num_checks: int
    exhaustive: bool

    @property
    def max_violation(self) -> float:
        """``max(max_residual, normalization)``: 0 (to rounding) for a valid joint's marginals."""
        return max(self.max_residual, self.normalization)


@partial(jax.jit, static_argnames=("static",))
def _marginal_block(dynamic, static, x, observed):
    return join_static(dynamic, static).marginal_log_prob(x, observed)


def _evaluate(marginals, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``marginals.marginal_log_prob`` on rows ``(N, L)``, in padded chunks, as float64 numpy."""
    dynamic, static = split_static(marginals)
    size = x.shape[0]
    chunk = min(_CHUNK, size)
    padded = -(-size // chunk) * chunk
    index = np.arange(padded) % size
    x, observed = x[index], observed[index]
    blocks = [np.asarray(_marginal_block(dynamic, static, jnp.asarray(x[s : s + chunk]),
                                         jnp.asarray(observed[s : s + chunk])), np.float64)
              for s in range(0, padded, chunk)]
    return np.concatenate(blocks)[:size]


def _residual(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    both_impossible = np.isneginf(left) & np.isneginf(right)
    with np.errstate(invalid="ignore"):
        return np.where(both_impossible, 0.0, np.abs(left - right))


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    high = values.max(axis=axis, keepdims=True)
    safe = np.where(np.isfinite(high), high, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(values - safe).sum(axis=axis)) + np.squeeze(safe, axis)


def _exhaustive(marginals) -> SelfConsistency:
    vocab_size, length = marginals.vocab_size, marginals.length
    size = (vocab_size + 1) ** length
    powers = (vocab_size + 1) ** np.arange(length - 1, -1, -1, dtype=np.int64)
    codes = np.arange(size, dtype=np.int64)
    digits = (codes[:, None] // powers) % (vocab_size + 1)  # digit V = unobserved
    observed = digits < vocab_size
    table = _evaluate(marginals, np.where(observed, digits, 0).astype(np.int32), observed)
    normalization = float(abs(table[-1])) if np.isfinite(table[-1]) else float("inf")  # all digits V: S = ∅
    rows, positions = np.nonzero(~observed)  # every (x_S, i) with i unobserved
    # children[k, v]: the code with digit i set to v (digit V -> v subtracts (V - v) * power_i)
    children = codes[rows, None] - (vocab_size - np.arange(vocab_size))[None, :] * powers[positions, None]
    residuals = _residual(table[rows], _logsumexp(table[children], axis=1))
    worst = int(residuals.argmax())
    return SelfConsistency(
        max_residual=float(residuals.max()), mean_residual=float(residuals.mean()), normalization=normalization,
        worst=(observed[rows[worst]], int(positions[worst]), digits[rows[worst]].astype(np.int32)),
        num_checks=int(residuals.size), exhaustive=True)


def _sampled(marginals, key, num_samples: int, x) -> SelfConsistency:
    vocab_size, length = marginals.vocab_size, marginals.length
    key_tokens, key_order, key_depth = jax.random.split(key, 3)
    if x is None:
        x = np.asarray(jax.random.randint(key_tokens, (num_samples, length), 0, vocab_size), np.int32)
    orders = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, length))(
        jax.random.split(key_order, num_samples)))
    depths = np.asarray(jax.random.randint(key_depth, (num_samples,), 0, length))
    rank = np.argsort(orders, axis=1)
    observed = rank < depths[:, None]  # S = σ(<d)
    positions = orders[np.arange(num_samples), depths]  # i = σ(d)
    parents = np.where(observed, x, vocab_size).astype(np.int32)
    children = np.repeat(parents[:, None, :], vocab_size, axis=1)
    children[np.arange(num_samples)[:, None], np.arange(vocab_size)[None, :], positions[:, None]] = \
        np.arange(vocab_size)[None, :]
    child_observed = np.repeat(observed[:, None, :], vocab_size, axis=1)
    child_observed[np.arange(num_samples), :, positions] = True
    all_x = np.concatenate([np.full((1, length), vocab_size, np.int32), parents,
                            children.reshape(-1, length)])
    all_observed = np.concatenate([np.zeros((1, length), bool), observed, child_observed.reshape(-1, length)])
    values = _evaluate(marginals, np.where(all_observed, all_x, 0).astype(np.int32), all_observed)
    empty, parent_values = values[0], values[1 : num_samples + 1]
    child_values = values[num_samples + 1 :].reshape(num_samples, vocab_size)
    residuals = _residual(parent_values, _logsumexp(child_values, axis=1))
    worst = int(residuals.argmax())
    return SelfConsistency(
        max_residual=float(residuals.max()), mean_residual=float(residuals.mean()),
        normalization=float(abs(empty)) if np.isfinite(empty) else float("inf"),
        worst=(observed[worst], int(positions[worst]), parents[worst]),
        num_checks=num_samples, exhaustive=False)


def self_consistency(marginals, *, exact: bool | None = None, key=None, num_samples: int = 1024, x=None,
                     max_inputs: int = SELF_CONSISTENCY_MAX_INPUTS) -> SelfConsistency:
    r"""Residuals of :math:`m(x_S) = \sum_v m(x_S, x_i = v)` and of :math:`\log m(x_\emptyset) = 0`.

    Parameters
    ----------
    marginals
        A :class:`~arprob.marginalization.Marginals` without batch shape.
    exact
        ``True``: every triple :math:`(S, i, x_S)`, :math:`L (V+1)^{L-1}` of them, from one
        marginal evaluation per masked input (:math:`(V+1)^L`, refused above ``max_inputs``).
        ``False``: ``num_samples`` sampled triples.  ``None`` (default): exhaustive when the
        :math:`(V+1)^L` inputs fit in ``max_inputs``, sampled otherwise.
    key
        PRNG key for the sampled mode (required there, unused when exhaustive).  Each sample
        draws :math:`x` (uniform on :math:`[V]^L`, or row ``b`` of ``x``), an order
        :math:`\sigma` and a depth :math:`d \in \{0, \dots, L-1\}` uniformly, and checks
        :math:`S = \sigma({<}d)`, :math:`i = \sigma(d)`.
    num_samples
        Sampled triples (sampled mode); costs :math:`(V + 1)` marginal evaluations each.
    x : Int[Array, "num_samples length"], optional
        Sequences to check at in the sampled mode (e.g. draws from the model, which put the
        checks where the mass is); uniform when omitted.
    max_inputs
        Largest :math:`(V+1)^L` the exhaustive mode evaluates.

    Returns
    -------
    SelfConsistency
        All zero up to rounding (``<= 1e-10`` in float64 for arprob's exact models) exactly
        when the marginals are those of a joint (theorem 9, ``proofs/09-marginalization.md``).

    Raises
    ------
    EnumerationTooLargeError
        ``exact=True`` with more than ``max_inputs`` masked inputs.
    """
    owner = "self_consistency"
    marginals = as_marginals(marginals, owner)
    vocab_size, length = marginals.vocab_size, marginals.length
    if exact not in (None, True, False):
        raise ArprobTypeError(f"{owner}: exact is {exact!r}, expected None (choose), True or False")
    max_inputs = check_int(owner, "max_inputs", max_inputs, minimum=1)
    log_inputs = length * np.log2(vocab_size + 1)
    fits = log_inputs <= np.log2(max_inputs) + 1e-9
    if exact is True and not fits:
        count = f"{(vocab_size + 1) ** length:,}" if log_inputs < 200 else f"2**{log_inputs:.0f}"
        raise EnumerationTooLargeError(
            f"{owner}: the exhaustive check evaluates all (V+1)**L = {vocab_size + 1}**{length} = {count} "
            f"masked inputs ({length} x {vocab_size + 1}**{length - 1} identities), above "
            f"max_inputs={max_inputs:,}; pass exact=False with a key to sample triples, or raise max_inputs")
    if exact is True or (exact is None and fits):
        return _exhaustive(marginals)
    if key is None:
        raise ArprobTypeError(
            f"{owner}: the sampled check needs a key ((V+1)**L = {vocab_size + 1}**{length} masked inputs "
            + ("exceed" if not fits else "fit in") + f" max_inputs={max_inputs:,}); pass key=jax.random.key(0)")
    key = check_key(owner, key)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    if x is not None:
        if not is_concrete(x):
            raise ArprobTypeError(f"{owner}: x is traced; call self_consistency outside jit")
        check_shape(owner, "x", x, (length,))
        check_tokens(owner, "x", x, vocab_size)
        x = np.asarray(x, np.int32).reshape(-1, length)
        if x.shape[0] != num_samples:
            raise ArprobTypeError(f"{owner}: x has {x.shape[0]} rows, expected num_samples={num_samples} "
                                  "(one sequence per sampled triple)")
    return _sampled(marginals, key, num_samples, x)
