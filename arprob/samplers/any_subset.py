r"""Speculative decoding with an any-subset network as its own draft model.

An any-subset (any-order) network answers :math:`q(x_i \mid x_S)` for every
position at once.  Two samplers use one such call to *draft* many tokens
independently (the conditional-independence shortcut of parallel unmasking)
and a second call to *verify* them against the joint factors, with the
accept/reject rule of speculative decoding (Leviathan et al. 2023; Chen et al.
2023):

* :func:`any_subset_speculative` -- ASSD (Guo & Ermon 2025, "Reviving
  any-subset autoregressive models with principled parallel sampling and
  speculative decoding").  In an order :math:`\sigma` with :math:`t` tokens
  revealed, draft the next :math:`k' = \min(k, L-t)` positions
  :math:`d_i \sim q_i = q(\cdot \mid x_{\sigma(<t)})` independently, verify them
  with :math:`p_i = q(\cdot \mid x_{\sigma(<t)}, d_{<i})` at
  :math:`\sigma(t+i)`, accept while :math:`u_i < \min(1, p_i(d_i)/q_i(d_i))`,
  and at the first rejection :math:`j` draw
  :math:`x_{\sigma(t+j)} \sim (p_j - q_j)^+ / \lVert (p_j - q_j)^+ \rVert_1`.
  Theorem 8 (``proofs/08-any-subset-speculative.md``): its law is exactly
  ancestral sampling in :math:`\sigma`, :math:`q_\sigma`, for *every* family
  (consistent or not), and it makes at most :math:`L` calls per sequence.
* :func:`sigma_gpt_rejection` -- the token-based rejection sampling of σ-GPT
  (Pannatier et al. 2024, "σ-GPTs: a new approach to autoregressive models"):
  draft *all* remaining positions, verify them along ``num_orders`` random
  orders of the remaining positions, keep the longest accepted prefix and
  discard the rest.  As published it is not exact (rejected tokens are redrawn
  from :math:`q` in the next round, not from the residual, and choosing the
  best of several orders favours sequences that are accepted easily).  With
  ``residual=True`` and ``num_orders=1`` it is exact: its law is the order
  mixture ``ancestral_law(q, "random")`` for every family, the law of ASSD
  with :math:`k = L` in a random order (see :func:`sigma_gpt_rejection`).

Each sampler has its exact law beside it, computed in float64 by a dynamic
program independent of the sampler code: :func:`any_subset_speculative_law`
(over the orders and the round boundaries) with
:func:`any_subset_speculative_cost` (the exact expected NFE), and
:func:`sigma_gpt_rejection_law` (over revealed sets) with
:func:`sigma_gpt_rejection_cost`.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob._random import categorical
from arprob._validation import (
    check_draw,
    check_enumeration,
    check_int,
    check_within_length,
    check_work,
    is_concrete,
    refuses_nan_output,
)
from arprob.conditionals import as_conditionals, join_static, split_static
from arprob.errors import ArprobTypeError
from arprob.samplers.ancestral import _log_conditionals_on, _resolve_order

__all__ = [
    "AnySubsetStats",
    "SigmaGPTStats",
    "any_subset_speculative",
    "any_subset_speculative_cost",
    "any_subset_speculative_law",
    "sigma_gpt_rejection",
    "sigma_gpt_rejection_cost",
    "sigma_gpt_rejection_law",
]


class AnySubsetStats(NamedTuple):
    """Per-sample statistics of :func:`any_subset_speculative`, each of shape ``(num_samples,)``.

    Attributes
    ----------
    nfe
        Network calls: 2 per speculative round (draft + verify), 1 per round
        with a single position left; at most ``L``.
    rounds
        Rounds (loop iterations in which the sample advanced).
    drafted
        Drafted tokens that were *verified*: :math:`k'-1` per speculative
        round (the first draft of a round is a draw from its own conditional
        and is kept without a test).
    accepted
        Verified drafts that were accepted (:math:`m-1` per round, :math:`m`
        the length of the accepted prefix).  ``accepted / drafted`` is the
        acceptance rate.
    """

    nfe: jax.Array
    rounds: jax.Array
    drafted: jax.Array
    accepted: jax.Array


class SigmaGPTStats(NamedTuple):
    """Per-sample statistics of :func:`sigma_gpt_rejection`, each of shape ``(num_samples,)``.

    Attributes
    ----------
    nfe
        Network calls: 2 per burst round (burst + one batched verify call for
        all orders), 1 when a single position is left.
    rounds
        Rounds.
    drafted
        Verified drafts: :math:`r-1` per burst round with :math:`r` positions
        left (the first draft along any order is kept without a test).
    accepted
        Accepted verified drafts of the kept order (:math:`m-1` per round).
    """

    nfe: jax.Array
    rounds: jax.Array
    drafted: jax.Array
    accepted: jax.Array


# Rows per family call inside the samplers: the verify calls ask (num_samples x masks) questions at
# once, and an exact family's intermediates grow with the rows; larger batches run as a lax.map over
# chunks of this many rows (one logical network evaluation all the same).
_CHUNK_ROWS = 8192


def _log_probs(family, tokens, observed, index=None):
    """``log_softmax`` of the family's answer on any batch shape (flattened, chunked for the call).

    With ``index`` (the batch shape of ``tokens`` plus a trailing axis of ``m`` positions), only the
    rows at those positions, ``(..., m, V)``, are taken from the answer and normalized: the same
    values as normalizing all ``L`` rows and taking ``m`` (``log_softmax`` works row by row).
    """
    length = tokens.shape[-1]
    batch = tokens.shape[:-1]
    tokens, observed = tokens.reshape(-1, length), observed.reshape(-1, length)
    rows = (tokens, observed) if index is None else (tokens, observed, index.reshape(tokens.shape[0], -1))

    def answer(rows):
        logits = family(rows[0], rows[1])
        if index is not None:
            logits = jnp.take_along_axis(logits, rows[2][..., None], axis=-2)
        return jax.nn.log_softmax(logits.astype(jnp.result_type(float)), axis=-1)

    logits = jax.lax.map(answer, rows, batch_size=_CHUNK_ROWS) if tokens.shape[0] > _CHUNK_ROWS else answer(rows)
    return logits.reshape(batch + logits.shape[-2:])


def _residual_logits(log_p, log_q):
    r"""``log max(0, p - q)`` (``-inf`` where ``p <= q``); ``log_p`` itself where the residual is all zero.

    The all-zero residual (``p == q``) is only reached with probability 0 (a
    draft is then always accepted); the fallback keeps the draw finite.
    """
    above = log_p > log_q
    gap = jnp.where(above, log_q - log_p, -1.0)  # < 0 where used
    residual = jnp.where(above, log_p + jnp.log1p(-jnp.exp(gap)), -jnp.inf)
    empty = jnp.all(residual == -jnp.inf, axis=-1, keepdims=True)
    return jnp.where(empty, log_p, residual)


def _check_bool(owner: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ArprobTypeError(f"{owner}: {name} must be a bool (True or False), got {type(value).__name__} "
                              f"({value!r})")
    return bool(value)


# -- any-subset speculative decoding (ASSD) ----------------------------------------------
@partial(jax.jit, static_argnames=("static", "num_samples", "k"))
def _any_subset_speculative(key, dynamic, static, order, random_order, num_samples: int, k: int):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    key_order, key_rounds = jax.random.split(key)
    # random_order is a traced flag, so the random and the fixed orders share one compilation
    keys = jax.random.split(key_order, num_samples)
    permutations = jax.vmap(lambda k_: jax.random.permutation(k_, length))(keys).astype(jnp.int32)
    orders = jnp.where(random_order, permutations, jnp.broadcast_to(order, (num_samples, length)).astype(jnp.int32))
    rank = jnp.argsort(orders, axis=1).astype(jnp.int32)  # rank[b, i]: the step at which i is revealed
    rows = jnp.arange(num_samples)[:, None]
    steps = jnp.arange(k, dtype=jnp.int32)
    zeros = jnp.zeros((num_samples,), jnp.int32)

    def unfinished(state):
        return jnp.any(state[1] < length)

    def round_(state):
        tokens, revealed, nfe, rounds, drafted, accepted, index = state
        key_draft, key_accept, key_residual = jax.random.split(jax.random.fold_in(key_rounds, index), 3)
        active = revealed < length
        width = jnp.clip(length - revealed, 1, k)  # k'
        observed = rank < revealed[:, None]
        positions = orders[rows, jnp.minimum(revealed[:, None] + steps, length - 1)]  # (n, k): σ(t+i)
        # the draft call; only the k positions of the round are drafted (the others would never be read)
        log_q_at = _log_probs(family, tokens, observed, positions)  # (n, k, V)
        drafts = categorical(key_draft, log_q_at).astype(jnp.int32)  # (n, k), independent given x_{σ(<t)}
        new_rank = rank - revealed[:, None]  # the step of the round at which each position is revealed
        drafted_here = jnp.sum(jnp.where(new_rank[:, None, :] == steps[None, :, None], drafts[..., None], 0),
                               axis=1).astype(jnp.int32)
        if k > 1:  # the verify call: masks σ(<t+i), i = 1..k-1, in one batched call
            filled = jnp.where(observed, tokens, drafted_here)
            bounds = revealed[:, None] + steps[1:]  # (n, k-1)
            verify_observed = rank[:, None, :] < bounds[:, :, None]  # (n, k-1, L)
            verify_tokens = jnp.where(verify_observed, filled[:, None, :], vocab_size)
            log_p_rest = _log_probs(family, verify_tokens, verify_observed, positions[:, 1:, None])  # (n, k-1, 1, V)
            log_p_at = jnp.concatenate([log_q_at[:, :1], log_p_rest[:, :, 0]], axis=1)  # p_0 = q_0
        else:
            log_p_at = log_q_at
        log_ratio = (jnp.take_along_axis(log_p_at, drafts[..., None], axis=-1)
                     - jnp.take_along_axis(log_q_at, drafts[..., None], axis=-1))[..., 0]
        uniforms = jax.random.uniform(key_accept, (num_samples, k), dtype=log_q_at.dtype)
        accept = (jnp.log(uniforms) < log_ratio) | (steps == 0)
        rejected = ~accept & (steps < width[:, None])
        prefix = jnp.where(rejected.any(axis=1), jnp.argmax(rejected, axis=1), width).astype(jnp.int32)  # m
        stopped = prefix < width
        at = jnp.minimum(prefix, k - 1)[:, None]
        residual = _residual_logits(log_p_at[rows, at][:, 0], log_q_at[rows, at][:, 0])  # (n, V)
        replacement = categorical(key_residual, residual).astype(jnp.int32)
        update = jnp.where((new_rank >= 0) & (new_rank < prefix[:, None]), drafted_here, tokens)
        update = jnp.where(stopped[:, None] & (new_rank == prefix[:, None]), replacement[:, None], update)
        tokens = jnp.where(active[:, None], update, tokens)
        advance = jnp.where(stopped, prefix + 1, width)
        speculative = active & (width >= 2)
        return (tokens, jnp.where(active, revealed + advance, revealed),
                nfe + jnp.where(speculative, 2, active.astype(jnp.int32)),
                rounds + active.astype(jnp.int32),
                drafted + jnp.where(speculative, width - 1, 0),
                accepted + jnp.where(speculative, prefix - 1, 0), index + 1)

    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    state = (tokens, zeros, zeros, zeros, zeros, zeros, jnp.int32(0))
    tokens, _, nfe, rounds, drafted, accepted, _ = jax.lax.while_loop(unfinished, round_, state)
    return tokens, AnySubsetStats(nfe=nfe, rounds=rounds, drafted=drafted, accepted=accepted)


def any_subset_speculative(key, conditionals, num_samples: int, k: int, order="random"):
    r"""Any-subset speculative decoding (ASSD; Guo & Ermon 2025): draft ``k`` tokens in one call, verify in one.

    Per sample, in the order :math:`\sigma` and with :math:`t` tokens revealed,
    a round with :math:`k' = \min(k, L - t) \ge 2`

    1. draws :math:`d_i \sim q_i := q(\cdot \mid x_{\sigma(<t)})` at
       :math:`\sigma(t+i)` for :math:`i < k'`, independently (one call);
    2. computes :math:`p_i := q(\cdot \mid x_{\sigma(<t)}, d_{\sigma(t)}, \dots,
       d_{\sigma(t+i-1)})` at :math:`\sigma(t+i)` for all :math:`i < k'` (one
       batched call over :math:`k'` masks; :math:`p_0 = q_0`);
    3. accepts :math:`d_0, d_1, \dots` while
       :math:`u_i < \min\bigl(1, p_i(d_i)/q_i(d_i)\bigr)` (independent uniforms),
       and at the first rejection :math:`j` draws
       :math:`x_{\sigma(t+j)} \sim (p_j - q_j)^+/\lVert(p_j - q_j)^+\rVert_1`,
       revealing :math:`j+1` tokens; if all are accepted it reveals :math:`k'`.

    With one position left it draws it from :math:`q` (one call).

    **Law** (theorem 8, ``proofs/08-any-subset-speculative.md``): for every
    family :math:`q`, consistent or not, the output has law
    :math:`\sum_\sigma \pi(\sigma)\, q_\sigma(x)`, with
    :math:`q_\sigma(x) = \prod_t q(x_{\sigma(t)} \mid x_{\sigma(<t)})`: exactly
    ``ancestral_law(q, order)``, and the model itself for exact conditionals.
    Each 2-call round reveals at least 2 tokens, so ``nfe <= L``.

    Parameters
    ----------
    key
        PRNG key.
    conditionals
        A conditional family or an exact model.
    num_samples
        Number of sequences.
    k
        Draft length, an int ``>= 1`` (``k = 1`` is ancestral sampling;
        values above ``L`` act as ``L``).
    order
        ``"random"`` (a uniform permutation per sample, drawn once), ``None``
        (left to right) or a permutation of ``range(L)``.

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : AnySubsetStats
        ``nfe``, ``rounds``, ``drafted``, ``accepted`` per sample; the exact
        expectations are :func:`any_subset_speculative_cost`.

    Examples
    --------
    >>> import jax
    >>> from arprob import TabularJoint
    >>> from arprob.samplers.any_subset import any_subset_speculative
    >>> model = TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5)
    >>> tokens, stats = any_subset_speculative(jax.random.key(0), model, 1000, k=4)
    >>> bool((stats.nfe <= 4).all())
    True
    """
    owner = "any_subset_speculative"
    family = as_conditionals(conditionals, owner)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size)
    k = check_within_length(owner, "k", k, family.length)
    random_order, fixed = _resolve_order(owner, order, family.length)
    dynamic, static = split_static(family)
    return _any_subset_speculative(key, dynamic, static, fixed, jnp.asarray(random_order), num_samples,
                                   min(k, family.length))


class _MaskTable:
    """float64 ``log q(y_i | y_S)`` on all ``V**L`` sequences, one ``(V**L, L)`` array per mask, cached."""

    def __init__(self, family, sequences):
        self.family, self.sequences, self.length = family, sequences, family.length
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, mask: int) -> np.ndarray:
        if mask not in self.cache:
            observed = np.array([(mask >> i) & 1 for i in range(self.length)], dtype=bool)
            self.cache[mask] = _log_conditionals_on(self.family, self.sequences, observed)
        return self.cache[mask]


def _assd_in_order(table: _MaskTable, sigma, k: int, vocab_size: int):
    r"""Law, expected NFE and rounds of ASSD in the fixed order ``sigma``.

    ``reach[t]`` is the array over :math:`V^L` of
    :math:`g_t(x) = P(\text{a round starts with } x_{\sigma(<t)} \text{ revealed})`,
    a function of :math:`x_{\sigma(<t)}` only.  A round of width :math:`k'` moves
    :math:`g_t \cdot \prod_{i<j}\min(q_i, p_i)\,(p_j - q_j)^+` to :math:`t + j + 1`
    (first rejection at :math:`j`) and :math:`g_t \prod_{i<k'} \min(q_i, p_i)` to
    :math:`t + k'`, all evaluated at the output tokens :math:`x_{\sigma(t+i)}`.
    """
    length = len(sigma)
    size = table.sequences.shape[0]
    reach = [np.zeros(size) for _ in range(length + 1)]
    reach[0][:] = 1.0
    masks = [sum(1 << int(i) for i in sigma[:t]) for t in range(length + 1)]
    nfe = rounds = 0.0
    for t in range(length):
        if not reach[t].any():
            continue
        width = min(k, length - t)
        started = reach[t].sum() / vocab_size ** (length - t)  # probability that a round starts at t
        rounds += started
        nfe += started * (1 if width == 1 else 2)
        log_q = table(masks[t])
        carried = reach[t] * np.exp(log_q[:, sigma[t]])  # i = 0: q_0 = p_0, always accepted
        for i in range(1, width):
            position = sigma[t + i]
            q_i = np.exp(log_q[:, position])
            p_i = np.exp(table(masks[t + i])[:, position])
            reach[t + i + 1] += carried * np.maximum(p_i - q_i, 0.0)  # rejected at i, residual token
            carried = carried * np.minimum(p_i, q_i)  # accepted at i
        reach[t + width] += carried
    return reach[length], nfe, rounds


def _assd_dp(owner: str, conditionals, k, order, max_entries: int):
    family = as_conditionals(conditionals, owner)
    k = check_within_length(owner, "k", k, family.length)
    max_entries = check_int(owner, "max_entries", max_entries, minimum=1)
    vocab_size, length = family.vocab_size, family.length
    random_order, fixed = _resolve_order(owner, order, length)
    if not is_concrete(fixed):
        raise ArprobTypeError(f"{owner}: order must be concrete (not traced)")
    num_orders = math.factorial(length) if random_order else 1
    check_enumeration(owner, vocab_size, length, factor=num_orders * length, max_entries=max_entries,
                      what="the ASSD law" + (" averaged over all L! orders" if random_order else ""))
    orders = itertools.permutations(range(length)) if random_order else [tuple(np.asarray(fixed).tolist())]
    table = _MaskTable(family, all_sequences(vocab_size, length))
    law, nfe, rounds = np.zeros(vocab_size**length), 0.0, 0.0
    for sigma in orders:
        law_sigma, nfe_sigma, rounds_sigma = _assd_in_order(table, sigma, min(k, length), vocab_size)
        law += law_sigma
        nfe += nfe_sigma
        rounds += rounds_sigma
    return law / num_orders, nfe / num_orders, rounds / num_orders


@refuses_nan_output
def any_subset_speculative_law(conditionals, k: int, order="random", *, max_entries: int = 2**26) -> np.ndarray:
    r"""Exact law of :func:`any_subset_speculative`, float64 over all ``V**L`` sequences (lexicographic).

    A dynamic program over round boundaries, independent of the sampler: for a
    fixed order :math:`\sigma`, :math:`g_t(x)` (a function of
    :math:`x_{\sigma(<t)}`) is the probability that a round starts with those
    tokens revealed; a round of width :math:`k' \ge 2` sends

    .. math::

        g_{t+j+1} \mathrel{+}= g_t \prod_{i<j} \min(q_i, p_i)(x_{\sigma(t+i)})\,
            (p_j - q_j)^+(x_{\sigma(t+j)}), \qquad
        g_{t+k'} \mathrel{+}= g_t \prod_{i<k'} \min(q_i, p_i)(x_{\sigma(t+i)})

    (:math:`p_0 = q_0`: the first draft is always kept; the discarded drafts
    sum out), and a round of width 1 multiplies by :math:`q`.  The law is
    :math:`g_L`; ``order="random"`` averages it over all :math:`L!` orders
    (refused above ``max_entries`` entries of work, :math:`L!\,L\,V^L`).
    Theorem 8 says it equals ``ancestral_law(conditionals, order)``; the tests
    check that to 1e-12.
    """
    return _assd_dp("any_subset_speculative_law", conditionals, k, order, max_entries)[0]


@refuses_nan_output
def any_subset_speculative_cost(conditionals, k: int, order="random", *,
                                max_entries: int = 2**26) -> tuple[float, float]:
    r"""Exact expected ``(nfe, rounds)`` per sequence of :func:`any_subset_speculative`.

    From the dynamic program of :func:`any_subset_speculative_law`: a round
    starts with :math:`t` tokens revealed with probability
    :math:`\sum_x g_t(x) / V^{L-t}` (:math:`g_t` is constant in the other
    :math:`L-t` tokens) and costs 2 calls, or 1 when :math:`t = L - 1`.
    """
    _, nfe, rounds = _assd_dp("any_subset_speculative_cost", conditionals, k, order, max_entries)
    return float(nfe), float(rounds)


# -- σ-GPT token-based rejection sampling -----------------------------------------------
@partial(jax.jit, static_argnames=("static", "num_samples", "num_orders"))
def _sigma_gpt_rejection(key, dynamic, static, residual, num_samples: int, num_orders: int):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    rows = jnp.arange(num_samples)
    steps = jnp.arange(length, dtype=jnp.int32)
    zeros = jnp.zeros((num_samples,), jnp.int32)

    def unfinished(state):
        return jnp.any(state[0] == vocab_size)

    def round_(state):
        tokens, nfe, rounds, drafted, accepted, index = state
        key_draft, key_order, key_accept, key_residual = jax.random.split(jax.random.fold_in(key, index), 4)
        observed = tokens != vocab_size
        remaining = length - observed.sum(axis=1).astype(jnp.int32)  # r
        active = remaining > 0
        log_q = _log_probs(family, tokens, observed)  # (n, L, V): the burst call
        draft = categorical(key_draft, log_q).astype(jnp.int32)
        filled = jnp.where(observed, tokens, draft)
        # num_orders uniform orders of the remaining positions: a uniform permutation of range(L),
        # stably sorted so that the remaining positions come first (in their permuted order)
        keys = jax.random.split(key_order, num_samples * num_orders)
        shuffled = jax.vmap(lambda k_: jax.random.permutation(k_, length))(keys)
        shuffled = shuffled.reshape(num_samples, num_orders, length).astype(jnp.int32)
        shuffled_observed = jnp.take_along_axis(jnp.broadcast_to(observed[:, None, :], shuffled.shape), shuffled, -1)
        orders = jnp.take_along_axis(shuffled, jnp.argsort(shuffled_observed, axis=-1, stable=True), -1)  # o(j)
        rank = jnp.argsort(orders, axis=-1).astype(jnp.int32)  # rank < r on the remaining positions
        if length > 1:  # the verify call: for every order and j = 1..L-1, the mask x_S ∪ d_{o(<j)}
            verify_observed = observed[:, None, None, :] | (rank[:, :, None, :] < steps[None, None, 1:, None])
            verify_tokens = jnp.where(verify_observed, filled[:, None, None, :], vocab_size)
            # only the row scored at each mask, o(j), is taken from the answer and normalized
            log_p_at = _log_probs(family, verify_tokens, verify_observed, orders[:, :, 1:, None])[..., 0, :]
            sample_index = rows[:, None, None]
            log_q_at = log_q[sample_index, orders[:, :, 1:]]  # (n, N, L-1, V)
            drafts = filled[sample_index, orders[:, :, 1:]][..., None]
            log_ratio = (jnp.take_along_axis(log_p_at, drafts, -1)
                         - jnp.take_along_axis(log_q_at, drafts, -1))[..., 0]
            uniforms = jax.random.uniform(key_accept, log_ratio.shape, dtype=log_q.dtype)
            rejected = ~(jnp.log(uniforms) < log_ratio) & (steps[None, None, 1:] < remaining[:, None, None])
            prefix = jnp.where(rejected.any(-1), jnp.argmax(rejected, -1) + 1, remaining[:, None])  # m_n >= 1
            prefix = prefix.astype(jnp.int32)
        else:
            prefix = jnp.broadcast_to(remaining[:, None], (num_samples, num_orders))
        best = jnp.argmax(prefix, axis=1)  # the first order with the longest accepted prefix
        kept = prefix[rows, best]  # m
        kept_rank = rank[rows, best]  # (n, L)
        tokens_new = jnp.where(kept_rank < kept[:, None], filled, tokens)
        if length > 1:  # residual is a traced flag: both variants share one compilation
            stopped = residual & (kept < remaining)
            at = jnp.clip(kept - 1, 0, length - 2)
            scores = _residual_logits(log_p_at[rows, best, at], log_q_at[rows, best, at])  # (n, V)
            replacement = categorical(key_residual, scores).astype(jnp.int32)
            tokens_new = jnp.where(stopped[:, None] & (kept_rank == kept[:, None]), replacement[:, None], tokens_new)
        burst = active & (remaining >= 2)
        return (jnp.where(active[:, None], tokens_new, tokens),
                nfe + jnp.where(burst, 2, active.astype(jnp.int32)), rounds + active.astype(jnp.int32),
                drafted + jnp.where(burst, remaining - 1, 0), accepted + jnp.where(burst, kept - 1, 0), index + 1)

    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    state = (tokens, zeros, zeros, zeros, zeros, jnp.int32(0))
    tokens, nfe, rounds, drafted, accepted, _ = jax.lax.while_loop(unfinished, round_, state)
    return tokens, SigmaGPTStats(nfe=nfe, rounds=rounds, drafted=drafted, accepted=accepted)


def _check_sigma_gpt(owner: str, conditionals, num_orders, residual):
    family = as_conditionals(conditionals, owner)
    num_orders = check_int(owner, "num_orders", num_orders, minimum=1)
    residual = _check_bool(owner, "residual", residual)
    return family, num_orders, residual


def sigma_gpt_rejection(key, conditionals, num_samples: int, num_orders: int = 1, residual: bool = False):
    r"""σ-GPT's token-based rejection sampling (Pannatier et al. 2024): draft everything, keep a verified prefix.

    Per sample, with revealed set :math:`S` and :math:`r \ge 2` remaining
    positions :math:`R`, a round

    1. draws :math:`d_i \sim q(\cdot \mid x_S)` for every :math:`i \in R`,
       independently (the burst call);
    2. draws :math:`N` = ``num_orders`` uniform orders :math:`o^{(n)}` of
       :math:`R` (fresh every round) and scores, in one batched call, the
       drafts along each: :math:`p^{(n)}_j = q(\cdot \mid x_S, d_{o^{(n)}(<j)})`
       at :math:`o^{(n)}(j)`, against :math:`q^{(n)}_j = q(\cdot \mid x_S)` there;
    3. accepts along each order while
       :math:`u^{(n)}_j < \min(1, p^{(n)}_j(d)/q^{(n)}_j(d))`
       (:math:`j = 0` always: :math:`p_0 = q_0`), giving prefix lengths
       :math:`m_n \ge 1`, keeps the first order :math:`n^*` with the largest
       :math:`m_n` and reveals :math:`d` on :math:`o^{(n^*)}(<m)`.  The other
       drafts are discarded and redrawn next round.  With ``residual=True``
       and :math:`m < r`, the position :math:`o^{(n^*)}(m)` is also revealed,
       drawn from :math:`(p_m - q_m)^+/\lVert (p_m - q_m)^+ \rVert_1` along
       :math:`n^*`.

    With one position left it draws it from :math:`q` (one call).

    **Law.** As published (``residual=False``) the sampler is *not* exact: a
    rejected position is left to a later round, where it is drafted again and
    verified again, so the mass :math:`(p_m - q_m)^+` that the residual draw
    supplies is replaced by draws that again partly follow the draft, and the
    tokens that the context makes more likely than the draft are
    under-sampled.  With ``num_orders > 1``, keeping the best of several
    orders favours draft sets that are accepted easily, a bias the residual
    does not undo.  With ``residual=True`` and ``num_orders=1`` every round is
    a speculative step (theorem 8, ``proofs/08-any-subset-speculative.md``)
    along a uniform order of :math:`R`; the order is redrawn every round, but
    where a round stops depends only on the prefix it has looked at, so the
    order of the positions not yet revealed stays uniform and independent of
    the tokens, and redrawing it changes nothing.  The law is then the order
    mixture ``ancestral_law(q, "random")`` for *every* family (the model for
    exact conditionals), the law of :func:`any_subset_speculative` with
    :math:`k = L` in a random order.  :func:`sigma_gpt_rejection_law`
    computes the law in every case.

    Parameters
    ----------
    key
        PRNG key.
    conditionals
        A conditional family or an exact model.
    num_samples
        Number of sequences.
    num_orders
        Orders :math:`N \ge 1` scored per round (all in the one verify call).
    residual
        Draw the first rejected position from the residual (exact variant)
        instead of discarding it (as published).

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : SigmaGPTStats
        ``nfe``, ``rounds``, ``drafted``, ``accepted`` per sample; the exact
        expectations are :func:`sigma_gpt_rejection_cost`.
    """
    owner = "sigma_gpt_rejection"
    family, num_orders, residual = _check_sigma_gpt(owner, conditionals, num_orders, residual)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size,
                                  per_sample=num_orders, per_sample_name="num_orders")
    dynamic, static = split_static(family)
    return _sigma_gpt_rejection(key, dynamic, static, jnp.asarray(residual), num_samples, num_orders)


def _kept_probability(chance: np.ndarray, num_orders: int) -> np.ndarray:
    r"""``P(kept = (o, m) | d)`` from ``chance[o, m] = π(o, m | d)``, shape ``(r!, r+1, V**L)``.

    With :math:`F(m) = \sum_{o'}\sum_{m'\le m} \pi(o', m')`, the first of
    :math:`N` i.i.d. trials with the maximal prefix is :math:`(o, m)` with
    probability :math:`\sum_{i=1}^N F(m-1)^{i-1}\,\pi(o,m)\,F(m)^{N-i}`.
    """
    below_or_at = np.cumsum(chance.sum(axis=0), axis=0)  # F(m), (r+1, V^L)
    below = np.concatenate([np.zeros_like(below_or_at[:1]), below_or_at[:-1]])  # F(m-1)
    weight = sum(below ** (i - 1) * below_or_at ** (num_orders - i) for i in range(1, num_orders + 1))
    return chance * weight[None]


def _sigma_gpt_dp(owner: str, conditionals, num_orders, residual, max_entries: int):
    r"""Law, expected NFE and rounds of :func:`sigma_gpt_rejection` by a DP over revealed sets.

    ``reach[S]`` is an array over :math:`V^L` (a function of :math:`x_S`): the
    probability that a round starts with :math:`S` revealed holding those tokens.
    """
    family, num_orders, residual = _check_sigma_gpt(owner, conditionals, num_orders, residual)
    vocab_size, length = family.vocab_size, family.length
    check_enumeration(owner, vocab_size, length, factor=max(math.factorial(length) * (length + 1), 2**length * length),
                      max_entries=max_entries, what="the σ-GPT rejection-sampling law")
    # the sum over the N trials is a Python loop per revealed set: each step counted as 10**6 operations
    check_work(owner, f"the law with num_orders={num_orders:,}",
               float(num_orders) * 2.0**length * (1e6 + math.factorial(length) * (length + 1) * vocab_size**length),
               fix="use fewer verification orders (the sum over the N trials is explicit)")
    sequences = all_sequences(vocab_size, length)
    table = _MaskTable(family, sequences)
    shape = (vocab_size,) * length
    full = 2**length - 1
    reach = {0: np.ones(sequences.shape[0])}
    nfe = rounds = 0.0
    for revealed in sorted(range(full), key=lambda mask: bin(mask).count("1")):
        if revealed not in reach or not reach[revealed].any():
            continue
        current = reach.pop(revealed)
        hidden = [i for i in range(length) if not (revealed >> i) & 1]
        size = len(hidden)
        started = current.sum() / vocab_size**size
        rounds += started
        nfe += started * (1 if size == 1 else 2)
        log_q = table(revealed)
        if size == 1:
            reach[full] = reach.get(full, 0.0) + current * np.exp(log_q[:, hidden[0]])
            continue
        orders = list(itertools.permutations(hidden))
        # acceptance a[o, j](d) = min(1, p_{o,j}(d) / q(d_{o(j)} | x_S)); a[o, 0] = 1
        accept = np.ones((len(orders), size, sequences.shape[0]))
        for index, order in enumerate(orders):
            for j in range(1, size):
                mask = revealed | sum(1 << i for i in order[:j])
                log_p, log_d = table(mask)[:, order[j]], log_q[:, order[j]]
                # a draft with q(d) = 0 is never drawn: its weight below is 0, give it a finite acceptance
                drawable = np.isfinite(log_d)
                accept[index, j] = np.where(drawable, np.minimum(1.0, np.exp(
                    np.where(drawable, log_p - np.where(drawable, log_d, 0.0), 0.0))), 1.0)
        # chance[o, m](d) = π(o, m | d) = (1/r!) prod_{j<m} a_j (1 - a_m), m = 1..r (no last factor at m = r)
        chance = np.zeros((len(orders), size + 1, sequences.shape[0]))
        prefix = np.cumprod(accept, axis=1)
        chance[:, 1:size] = prefix[:, : size - 1] * (1.0 - accept[:, 1:])
        chance[:, size] = prefix[:, size - 1]
        chance /= len(orders)
        weight = _kept_probability(chance, num_orders) * np.exp(log_q[:, hidden].sum(axis=1))
        # group by where the round goes: the kept set o(<m), and with the residual the position o(m)
        grouped: dict[tuple, np.ndarray] = {}
        for index, order in enumerate(orders):
            for m in range(1, size + 1):
                target = (frozenset(order[:m]), order[m] if residual and m < size else None)
                grouped[target] = grouped.get(target, 0.0) + weight[index, m]
        for (kept, resampled), summed in grouped.items():
            discarded = tuple(i for i in hidden if i not in kept)
            mass = summed.reshape(shape)
            if discarded:
                mass = np.broadcast_to(mass.sum(axis=discarded, keepdims=True), shape)
            mass = mass.reshape(-1)
            after = revealed | sum(1 << i for i in kept)
            if resampled is not None:  # times the residual law at o(m), as a function of the new token
                gap = np.maximum(np.exp(table(after)[:, resampled]) - np.exp(log_q[:, resampled]), 0.0)
                total = np.broadcast_to(gap.reshape(shape).sum(axis=resampled, keepdims=True), shape).reshape(-1)
                mass = mass * np.divide(gap, total, out=np.zeros_like(gap), where=total > 0)
                after |= 1 << resampled
            reach[after] = reach.get(after, 0.0) + current * mass
    return reach.get(full, np.zeros(sequences.shape[0])), nfe, rounds


@refuses_nan_output
def sigma_gpt_rejection_law(conditionals, num_orders: int = 1, residual: bool = False, *,
                            max_entries: int = 2**26) -> np.ndarray:
    r"""Exact law of :func:`sigma_gpt_rejection`, float64 over all ``V**L`` sequences (lexicographic).

    A dynamic program over revealed sets :math:`S`, independent of the
    sampler: :math:`g_S` (an array over :math:`V^L`, a function of :math:`x_S`)
    is the probability that a round starts with :math:`S` revealed.  From
    :math:`S` with :math:`r \ge 2` remaining positions :math:`R`, index the
    :math:`V^L` array by the drafts :math:`d` on :math:`R`; for every order
    :math:`o` of :math:`R` and prefix length :math:`1 \le m \le r`, with
    :math:`a_{o,j} = \min(1, p_{o,j}/q_{o,j})`,

    .. math::

        \pi(o, m \mid d) = \frac{1}{r!}\prod_{j<m} a_{o,j}(d)\,\bigl(1 - a_{o,m}(d)\bigr)
        \quad(\text{no last factor at } m = r), \qquad
        F(m \mid d) = \sum_{o'}\sum_{m' \le m}\pi(o', m' \mid d),

    the kept trial is :math:`(o, m)` with probability
    :math:`\sum_{i=1}^{N} F(m-1)^{i-1}\,\pi(o,m)\,F(m)^{N-i}` (the first of
    :math:`N` trials with the maximal prefix), and the weight
    :math:`\prod_{i\in R} q(d_i \mid x_S)\,P(\text{kept} = (o,m) \mid d)`,
    summed over the discarded drafts, moves :math:`g_S` to
    :math:`S \cup o(<m)`; with ``residual`` and :math:`m < r` it is multiplied
    by the residual law at :math:`o(m)` and moves to :math:`S \cup o(\le m)`.
    One remaining position multiplies by :math:`q`.  The law is
    :math:`g_{[L]}`.  Work :math:`O(\sum_S r!\, r\, V^L)`; refused above
    ``max_entries`` (:math:`L!\,(L+1)\,V^L` entries).
    """
    return _sigma_gpt_dp("sigma_gpt_rejection_law", conditionals, num_orders, residual, max_entries)[0]


@refuses_nan_output
def sigma_gpt_rejection_cost(conditionals, num_orders: int = 1, residual: bool = False, *,
                             max_entries: int = 2**26) -> tuple[float, float]:
    r"""Exact expected ``(nfe, rounds)`` per sequence of :func:`sigma_gpt_rejection`.

    From the dynamic program of :func:`sigma_gpt_rejection_law`: a round
    starts at :math:`S` with probability :math:`\sum_x g_S(x)/V^{L-|S|}` and
    costs 2 calls, or 1 with one position left.
    """
    _, nfe, rounds = _sigma_gpt_dp("sigma_gpt_rejection_cost", conditionals, num_orders, residual, max_entries)
    return float(nfe), float(rounds)
