r"""SpecTr: speculative decoding with several drafts (Sun et al. 2023), and its exact law.

*k-sequential selection* (k-SEQ).  Given :math:`k` i.i.d. candidates
:math:`X_1, \dots, X_k \sim q`, examine them in turn and accept :math:`X_i` with
probability :math:`\min(1, p(X_i) / (\rho\, q(X_i)))`; if none is accepted,
draw from the residual

.. math::

    p_{\mathrm{res}}(x) \propto p(x) - \min\!\big(q(x), p(x)/\rho\big)\,
    \frac{1 - (1-\beta)^k}{\beta}, \qquad
    \beta = \sum_x \min\!\big(q(x), p(x)/\rho\big).

Acceptance of :math:`x` through candidate :math:`i` has probability
:math:`(1-\beta)^{i-1} \min(q, p/\rho)(x)`, so whenever the residual is
non-negative the output is distributed as :math:`p` (theorem 7,
``proofs/07-spectr.md``) and a token is accepted with probability
:math:`1 - (1 - \beta)^k`.  :math:`\rho = k` is always feasible and
:math:`\rho = 1, k = 1` is speculative decoding; :func:`kseq_rho` finds the
smallest feasible :math:`\rho \in [1, k]` by bisection on the residual's sign,
which maximizes the acceptance among feasible values.  :func:`optimal_acceptance`
solves the optimal :math:`k`-candidate coupling as a linear program for
comparison (SpecTr proves k-SEQ reaches at least :math:`1 - 1/e` of it).

At the sequence level, :func:`spectr` drafts :math:`k` i.i.d. sequences of
:math:`\gamma` tokens from the draft family and scores all their prefixes with
the target in one call.  At each position the candidates are the drafts that
agree with the accepted prefix (they are i.i.d. from :math:`q(\cdot\mid
\text{prefix})` given it), k'-SEQ picks a token or falls back to the residual
(which ends the round); if all :math:`\gamma` positions are accepted a bonus
token is drawn from the target.  The law is the target's left-to-right law;
:func:`spectr_law` computes it by a dynamic program over (position, offset in
the round, number of surviving drafts) from an enumeration of the candidate
tuples, independently of the sampler.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog

from arprob._enumerate import all_sequences
from arprob._random import categorical
from arprob._validation import (
    check_draw,
    check_enumeration,
    check_int,
    check_probs,
    check_real,
    check_real_array,
    check_within_length,
    refuses_nan_output,
)
from arprob.conditionals import join_static, split_static
from arprob.errors import EnumerationTooLargeError, InvalidArgumentError, ShapeError
from arprob.samplers.speculative import _families, _log_positive_part, prefix_log_probs, row_log_probs

__all__ = [
    "SpecTrCost",
    "SpecTrStats",
    "kseq_acceptance",
    "kseq_rho",
    "optimal_acceptance",
    "spectr",
    "spectr_cost",
    "spectr_law",
]

_BISECTIONS = 60  # halvings of [1, k]: the returned rho is within (k - 1) 2**-60 of the boundary
_SLACK = 1e-13  # a residual entry counts as non-negative down to -_SLACK


class SpecTrStats(NamedTuple):
    """Per-sample statistics of :func:`spectr`.

    Attributes
    ----------
    nfe, target_calls
        Target calls (one per round; it scores the prefixes of all drafts).
    draft_calls
        Draft calls (one per drafted position, batched over the ``num_drafts`` drafts).
    accepted
        Tokens taken from a draft (the rest are residual or bonus tokens).
    """

    nfe: jax.Array
    target_calls: jax.Array
    draft_calls: jax.Array
    accepted: jax.Array


class SpecTrCost(NamedTuple):
    """Exact expected numbers per sequence (:func:`spectr_cost`)."""

    target_calls: float
    draft_calls: float
    accepted: float


def _residual_weights(p, q, rho, k, xp):
    beta = xp.sum(xp.minimum(q, p / rho[..., None]), axis=-1)
    factor = xp.where(beta > 0, (1.0 - (1.0 - beta) ** k) / xp.where(beta > 0, beta, 1.0), k)
    return p - xp.minimum(q, p / rho[..., None]) * factor[..., None], beta


def _feasible(p, q, rho, k, xp):
    residual, _ = _residual_weights(p, q, rho, k, xp)
    return xp.all(residual >= -_SLACK, axis=-1)


def _rho_numpy(p: np.ndarray, q: np.ndarray, k) -> np.ndarray:
    k = np.broadcast_to(np.asarray(k, np.float64), p.shape[:-1])
    low, high = np.ones_like(k), k.copy()
    at_one = _feasible(p, q, low, k, np)
    for _ in range(_BISECTIONS):
        middle = 0.5 * (low + high)
        ok = _feasible(p, q, middle, k, np)
        high, low = np.where(ok, middle, high), np.where(ok, low, middle)
    return np.where(at_one, 1.0, high)


def _rho_jax(p, q, survivors, num_drafts: int):
    r""":func:`_rho_numpy`'s bisection in JAX for rows ``p, q`` ``(n, V)`` and integer ``survivors`` ``(n,)``.

    The same 60 halvings of the same feasibility test, laid out vocabulary-major,
    ``(V, n)``, so a row's sum over the (small) vocabulary is a few elementwise
    adds, and with :math:`(1 - \beta)^k` as a product (``survivors`` is an
    integer in ``0..num_drafts``) rather than a ``pow``: the same test up to
    rounding in the last bit, at a fraction of the cost.  Any feasible :math:`\rho` gives
    the target law (theorem 7); the bisection only picks the smallest one.
    """
    p, q = p.T, q.T  # (V, n)
    k = survivors.astype(p.dtype)
    slack = -_SLACK

    def feasible(rho):
        capped = jnp.minimum(q, p / rho)
        beta = jnp.sum(capped, axis=0)
        complement, power = 1.0 - beta, jnp.ones_like(beta)
        for count in range(1, num_drafts + 1):  # power = complement ** survivors
            power = jnp.where(survivors >= count, power * complement, power)
        factor = jnp.where(beta > 0, (1.0 - power) / jnp.where(beta > 0, beta, 1.0), k)
        return jnp.all(p - capped * factor >= slack, axis=0)

    at_one = feasible(jnp.ones_like(k))

    # Once every row's bracket is down to adjacent floats (about 53 halvings of [1, k]), the midpoint
    # rounds to an end and the bracket stops changing: stopping there returns what 60 halvings return.
    def halve(state):
        index, low, high, _ = state
        middle = 0.5 * (low + high)
        ok = feasible(middle)
        new_low, new_high = jnp.where(ok, low, middle), jnp.where(ok, middle, high)
        return index + 1, new_low, new_high, jnp.any((new_low != low) | (new_high != high))

    _, _, high, _ = jax.lax.while_loop(lambda state: (state[0] < _BISECTIONS) & state[3], halve,
                                       (0, jnp.ones_like(k), k, True))
    return jnp.where(at_one, 1.0, high)


def _as_pair(owner: str, p, q):
    p = check_real_array(owner, "p", p)
    q = check_real_array(owner, "q", q)
    if p.shape != q.shape or p.ndim < 1 or p.shape[-1] < 1:
        raise ShapeError(f"{owner}: p and q must have the same shape (..., V) with V >= 1, "
                         f"got {p.shape} and {q.shape}")
    check_probs(owner, "p", p)
    check_probs(owner, "q", q)
    return p, q


def kseq_rho(p, q, num_drafts: int) -> np.ndarray:
    r"""The smallest :math:`\rho \in [1, k]` that keeps the k-SEQ residual non-negative (bisection).

    Vectorized over leading axes of ``p`` and ``q`` (``(..., V)``).  Returns 1
    when 1 is feasible (always for ``num_drafts = 1``); otherwise the feasible
    end of a 60-step bisection between 1 (infeasible) and :math:`k` (feasible).
    """
    owner = "kseq_rho"
    p, q = _as_pair(owner, p, q)
    k = check_int(owner, "num_drafts", num_drafts, minimum=1)
    return _rho_numpy(p, q, k)


def kseq_acceptance(p, q, num_drafts: int, rho=None) -> np.ndarray:
    r"""P(some candidate is accepted) :math:`= 1 - (1 - \beta)^k` (theorem 7), for ``rho`` or :func:`kseq_rho`."""
    owner = "kseq_acceptance"
    p, q = _as_pair(owner, p, q)
    k = check_int(owner, "num_drafts", num_drafts, minimum=1)
    if rho is not None:
        rho = check_real(owner, "rho", rho, low=1.0, high=float(k),
                         fix="rho is the k-SEQ scale, feasible in [1, num_drafts]; omit it to use kseq_rho")
    rho = _rho_numpy(p, q, k) if rho is None else np.broadcast_to(np.asarray(rho, np.float64), p.shape[:-1])
    _, beta = _residual_weights(p, q, rho, k, np)
    return 1.0 - (1.0 - beta) ** k


def optimal_acceptance(p, q, num_drafts: int, method: str = "lp") -> float:
    r"""The best P(Y ∈ {X_1..X_k}) over couplings of :math:`Y \sim p` and :math:`X_{1..k}` i.i.d. :math:`q`.

    ``method="lp"``: a linear program (scipy's HiGHS) over the sub-coupling
    that carries the reward, one variable :math:`\pi(\tau, y) \ge 0` per
    draft tuple :math:`\tau \in [V]^k` and token :math:`y \in \tau`: maximize
    :math:`\sum \pi(\tau, y)` subject to
    :math:`\sum_y \pi(\tau, y) \le \prod_i q(\tau_i)` and
    :math:`\sum_\tau \pi(\tau, y) \le p(y)`.  Any such sub-coupling extends
    to a coupling of :math:`p` and :math:`q^{\otimes k}` with at least its
    value (the leftover masses of the two sides are equal, and are coupled
    independently), and every coupling restricts to one, so the optimum is
    the best acceptance; and
    :math:`\pi = 0` is feasible, so the program is never infeasible.  (The
    equality-constrained program over all :math:`V^{k} \cdot V` pairs, used
    before, has a redundant row and right-hand sides down to
    :math:`\min_v q(v)^k`; HiGHS's presolve declared it infeasible for
    :math:`q` with entries near :math:`10^{-7}`, e.g. :math:`V = 4, k = 2`.)
    Refused above :math:`10^5` variables (counted as :math:`V^{k+1}`).  Within
    the solver's tolerances the value may differ from the optimum by about
    :math:`10^{-9}`; measured against ``method="cut"`` on 20,000 random
    Dirichlet(0.7) pairs (:math:`V = 2..4, k = 1..3`): at most
    :math:`3 \times 10^{-14}`.

    ``method="cut"``: the max-flow/min-cut value
    :math:`\min_{B \subseteq [V]} \big[p(B) + 1 - q(B)^k\big]` (theorem 7,
    part 3), exact in float64, :math:`O(2^V V)`; refused for :math:`V > 20`.
    """
    owner = "optimal_acceptance"
    p, q = _as_pair(owner, p, q)
    if p.ndim != 1:
        raise InvalidArgumentError(f"{owner}: p and q must be 1-d, got shape {p.shape}")
    k = check_int(owner, "num_drafts", num_drafts, minimum=1)
    vocab_size = p.size
    if method == "cut":
        if vocab_size > 20:
            raise EnumerationTooLargeError(f"{owner}: method='cut' enumerates 2**V = 2**{vocab_size} subsets; "
                                           "use V <= 20 or method='lp'")
        members = (np.arange(2**vocab_size)[:, None] >> np.arange(vocab_size)[None, :]) & 1
        return float(np.min(members @ p + 1.0 - (members @ q) ** k))
    if method != "lp":
        raise InvalidArgumentError(f"{owner}: method must be 'lp' or 'cut', got {method!r}")
    if (k + 1) * math.log10(vocab_size) > 5:
        raise EnumerationTooLargeError(f"{owner}: the linear program has V**(k+1) = "
                                       f"10^{(k + 1) * math.log10(vocab_size):.1f} "
                                       "variables, over 100,000; use method='cut' or a smaller num_drafts")
    tuples = list(itertools.product(range(vocab_size), repeat=k))
    # one variable per (tuple, token of the tuple): the pairs that earn the reward
    pairs = [(index, y) for index, tau in enumerate(tuples) for y in sorted(set(tau))]
    tuple_of_pair = np.array([index for index, _ in pairs])
    token_of_pair = np.array([y for _, y in pairs])
    columns = np.arange(len(pairs))
    rows_tuple = np.zeros((len(tuples), len(pairs)))
    rows_tuple[tuple_of_pair, columns] = 1.0
    rows_target = np.zeros((vocab_size, len(pairs)))
    rows_target[token_of_pair, columns] = 1.0
    tuple_probs = np.array([np.prod(q[list(tau)]) for tau in tuples])
    result = linprog(-np.ones(len(pairs)), A_ub=np.vstack([rows_tuple, rows_target]),
                     b_ub=np.concatenate([tuple_probs, p]), bounds=(0, None), method="highs")
    if not result.success:  # pragma: no cover - pi = 0 is feasible and the value is bounded by 1
        raise RuntimeError(f"{owner}: linear program failed: {result.message}")
    return float(-result.fun)


# ---------------------------------------------------------------------------
# the sampler
# ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("target_static", "draft_static", "num_samples", "num_drafts",
                                   "draft_length", "fixed_rho"))
def _spectr(key, target_dynamic, target_static, draft_dynamic, draft_static, num_samples: int, num_drafts: int,
            draft_length: int, fixed_rho: float | None = None):
    target = join_static(target_dynamic, target_static)
    draft = join_static(draft_dynamic, draft_static)
    length, vocab_size = target.length, target.vocab_size
    n, k, gamma = num_samples, num_drafts, draft_length
    positions = jnp.arange(length)
    drafts_axis = jnp.arange(k)

    def round_(state):
        tokens, pos, round_index, calls, draft_calls, accepted = state
        active = pos < length
        span = jnp.minimum(gamma, length - pos)
        key_round = jax.random.fold_in(key, round_index)
        key_draft, key_accept, key_last = jax.random.split(key_round, 3)

        # k drafts of gamma tokens, left to right (one batched draft call per position); the k drafts
        # share the round's prefix, so the first position is scored once and broadcast
        drafts = jnp.broadcast_to(tokens[:, None, :], (n, k, length))
        log_q, drafted = [], []
        for j in range(gamma):
            where = jnp.minimum(pos + j, length - 1)
            if j == 0:
                q_row = row_log_probs(draft, tokens, positions[None, :] < pos[:, None], where)
                q_row = jnp.broadcast_to(q_row[:, None, :], (n, k, vocab_size))
            else:
                observed = jnp.broadcast_to((positions[None, :] < (pos + j)[:, None])[:, None, :], (n, k, length))
                q_row = row_log_probs(draft, drafts, observed, jnp.broadcast_to(where[:, None], (n, k)))
            token = categorical(jax.random.fold_in(key_draft, j), q_row).astype(jnp.int32)  # (n, k)
            if j + 1 < gamma:
                drafts = jnp.where((positions == pos[:, None, None] + j) & active[:, None, None],
                                   token[..., None], drafts)
            log_q.append(q_row)
            drafted.append(token)

        # k-SEQ position by position.  The target's answers are those of the round's single call on
        # every draft's prefixes, evaluated only for the prefix that matters (the accepted one, which
        # all surviving drafts share); the one token not taken from a draft (the residual at the
        # first miss, or the bonus) is drawn once at the end of the round.
        alive = jnp.broadcast_to(active[:, None], (n, k))  # (not a constant: keeps XLA from folding)
        running = active  # still accepting in this round
        count = jnp.zeros((n,), jnp.int32)
        residual_logits = jnp.zeros((n, vocab_size), log_q[0].dtype)
        uniforms = jax.random.uniform(key_accept, (gamma, n, k), dtype=log_q[0].dtype)
        for j in range(gamma):
            live = running & (j < span)
            where = jnp.minimum(pos + j, length - 1)
            p_row = jnp.exp(row_log_probs(target, tokens, positions[None, :] < (pos + j)[:, None], where))
            first = drafts_axis == jnp.argmax(alive, axis=1)[:, None]  # (n, k) one-hot
            q_row = jnp.exp(jnp.sum(jnp.where(first[..., None], log_q[j], 0), axis=1))  # (n, V)
            survivors = alive.sum(axis=1)
            rho = (jnp.full((n,), fixed_rho, p_row.dtype) if fixed_rho is not None
                   else _rho_jax(p_row, q_row, survivors, k))
            candidates = drafted[j]  # (n, k)
            p_c = jnp.take_along_axis(p_row, candidates, axis=1)
            q_c = jnp.take_along_axis(q_row, candidates, axis=1)
            threshold = jnp.minimum(1.0, p_c / (rho[:, None] * q_c))
            hits = alive & (uniforms[j] < threshold)
            any_hit = hits.any(axis=1)
            chosen = jnp.take_along_axis(candidates, jnp.argmax(hits, axis=1)[:, None], axis=1)[:, 0]
            miss = live & ~any_hit
            weights, _ = _residual_weights(p_row, q_row, rho, survivors.astype(p_row.dtype), jnp)
            residual_logits = jnp.where(miss[:, None], _log_positive_part(weights), residual_logits)
            taken = live & any_hit
            tokens = jnp.where((positions == pos[:, None] + j) & taken[:, None], chosen[:, None], tokens)
            alive = jnp.where(taken[:, None], alive & (candidates == chosen[:, None]), alive)
            count = count + taken
            running = running & ~miss
        # the token after the accepted ones: the residual of the miss, or (all gamma accepted) a bonus
        # from the target after the whole draft; fresh noise used once, the same law as separate draws
        bonus_at = pos + gamma
        bonus_logits = row_log_probs(target, tokens, positions[None, :] < bonus_at[:, None],
                                     jnp.minimum(bonus_at, length - 1))
        last = categorical(key_last, jnp.where(running[:, None], bonus_logits, residual_logits)).astype(jnp.int32)
        tokens = jnp.where((positions == pos[:, None] + count[:, None]) & active[:, None], last[:, None], tokens)
        new_pos = jnp.where(active, jnp.minimum(pos + count + 1, length), pos).astype(jnp.int32)
        calls = calls + active.astype(jnp.int32)
        draft_calls = draft_calls + jnp.where(active, span, 0).astype(jnp.int32)
        accepted = accepted + jnp.where(active, count, 0).astype(jnp.int32)
        return tokens, new_pos, round_index + 1, calls, draft_calls, accepted

    zeros = jnp.zeros((n,), jnp.int32)
    state = (jnp.full((n, length), vocab_size, jnp.int32), zeros, jnp.int32(0), zeros, zeros, zeros)
    tokens, _, _, calls, draft_calls, accepted = jax.lax.while_loop(lambda s: jnp.any(s[1] < length), round_, state)
    return tokens, SpecTrStats(nfe=calls, target_calls=calls, draft_calls=draft_calls, accepted=accepted)


def spectr(key, target, draft, num_samples: int, num_drafts: int, draft_length: int):
    """Draw ``num_samples`` sequences by SpecTr with ``num_drafts`` i.i.d. drafts of ``draft_length`` tokens.

    Parameters
    ----------
    key
        PRNG key.
    target, draft
        Conditional families or exact models over the same sequence space
        (left-to-right conditionals are used).
    num_samples
        Number of sequences.
    num_drafts
        :math:`k`, i.i.d. draft sequences per round (``1`` is speculative decoding).
    draft_length
        :math:`\\gamma`, tokens per draft.

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
        Distributed exactly as the target's left-to-right law (theorem 7).
    stats : SpecTrStats
    """
    owner = "spectr"
    target, draft = _families(owner, target, draft)
    num_drafts = check_int(owner, "num_drafts", num_drafts, minimum=1)
    key, num_samples = check_draw(owner, key, num_samples, target.length, target.vocab_size,
                                  per_sample=num_drafts + 1, per_sample_name="num_drafts")
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _run(key, target, draft, num_samples, num_drafts, draft_length, None)


def _run(key, target, draft, num_samples, num_drafts, draft_length, fixed_rho):
    target_dynamic, target_static = split_static(target)
    draft_dynamic, draft_static = split_static(draft)
    return _spectr(key, target_dynamic, target_static, draft_dynamic, draft_static, num_samples, num_drafts,
                   draft_length, fixed_rho)


# ---------------------------------------------------------------------------
# exact law: DP over (position, offset in the round, surviving drafts)
# ---------------------------------------------------------------------------


def _kseq_outcomes(p: np.ndarray, q: np.ndarray, k: int, fixed_rho: float | None):
    """Enumerate the k-SEQ step over all candidate tuples.

    Returns ``accept`` of shape ``(N, V, k+1)`` (P(accept token v and ``m``
    candidates carry v)) and ``reject`` ``(N, V)`` (P(no acceptance, residual v)).
    """
    size, vocab_size = p.shape
    rho = np.full(size, fixed_rho) if fixed_rho is not None else _rho_numpy(p, q, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold = np.minimum(1.0, np.nan_to_num(p / (rho[:, None] * q), nan=1.0, posinf=1.0))
    accept = np.zeros((size, vocab_size, k + 1))
    none = np.zeros(size)
    for tup in itertools.product(range(vocab_size), repeat=k):
        probability = np.prod(q[:, list(tup)], axis=1)
        surviving = probability.copy()
        for token in tup:
            accept[:, token, tup.count(token)] += surviving * threshold[:, token]
            surviving = surviving * (1.0 - threshold[:, token])
        none += surviving
    weights, _ = _residual_weights(p, q, rho, k, np)
    weights = np.maximum(weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    residual = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)
    return accept, none[:, None] * residual


def _spectr_dp(target, draft, num_drafts: int, draft_length: int, fixed_rho, max_entries: int, owner: str):
    vocab_size, length = target.vocab_size, target.length
    if num_drafts * math.log2(vocab_size) > 12:
        shown = f"{vocab_size ** num_drafts:,}" if num_drafts * math.log2(vocab_size) < 64 else \
            f"about 10^{num_drafts * math.log10(vocab_size):.1f}"
        raise EnumerationTooLargeError(f"{owner}: enumerating the candidate tuples needs V**num_drafts = "
                                       f"{shown} > 4,096 per position; use fewer drafts (num_drafts)")
    check_enumeration(owner, vocab_size, length, factor=length * (draft_length + 1) * (num_drafts + 1),
                      max_entries=max_entries, what="the SpecTr law")
    sequences = all_sequences(vocab_size, length)
    size = sequences.shape[0]
    rows = np.arange(size)
    p_all = np.exp(prefix_log_probs(target, sequences))
    q_all = np.exp(prefix_log_probs(draft, sequences))
    k, gamma = num_drafts, draft_length
    mass = {(0, 0, k): np.ones(size)}
    law = np.zeros(size)
    target_calls = draft_calls = accepted = 0.0
    outcomes = {}
    for t in range(length):
        token = sequences[:, t]
        repeats = vocab_size ** (length - t)
        for j in range(gamma + 1):
            for alive in range(1, k + 1):
                g = mass.pop((t, j, alive), None)
                if g is None:
                    continue
                if j == 0:
                    target_calls += g.sum() / repeats
                    draft_calls += min(gamma, length - t) * g.sum() / repeats
                if j == gamma:  # bonus token from the target
                    key = (t + 1, 0, k)
                    mass[key] = mass.get(key, 0.0) + g * p_all[rows, t, token]
                    continue
                if (t, alive) not in outcomes:
                    outcomes[(t, alive)] = _kseq_outcomes(p_all[:, t], q_all[:, t], alive, fixed_rho)
                accept, reject = outcomes[(t, alive)]
                for m in range(1, alive + 1):
                    step = g * accept[rows, token, m]
                    accepted += step.sum() / (repeats // vocab_size)
                    key = (t + 1, j + 1, m)
                    mass[key] = mass.get(key, 0.0) + step
                key = (t + 1, 0, k)
                mass[key] = mass.get(key, 0.0) + g * reject[rows, token]
    for g in mass.values():  # everything left is at t = length
        law += g
    return law, SpecTrCost(float(target_calls), float(draft_calls), float(accepted))


@refuses_nan_output
def spectr_law(target, draft, num_drafts: int, draft_length: int, *, max_entries: int = 2**26) -> np.ndarray:
    """Exact law of :func:`spectr`, float64 over all ``V**L`` sequences (lexicographic)."""
    owner = "spectr_law"
    target, draft = _families(owner, target, draft)
    num_drafts = check_int(owner, "num_drafts", num_drafts, minimum=1)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _spectr_dp(target, draft, num_drafts, draft_length, None, max_entries, owner)[0]


@refuses_nan_output
def spectr_cost(target, draft, num_drafts: int, draft_length: int, *, max_entries: int = 2**26) -> SpecTrCost:
    """Exact expected target calls, draft calls and accepted draft tokens per sequence."""
    owner = "spectr_cost"
    target, draft = _families(owner, target, draft)
    num_drafts = check_int(owner, "num_drafts", num_drafts, minimum=1)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _spectr_dp(target, draft, num_drafts, draft_length, None, max_entries, owner)[1]
