r"""Speculative decoding (Leviathan, Kalman & Matias 2023; Chen et al. 2023) and its exact law.

A cheap *draft* family :math:`q` proposes :math:`\gamma` tokens left to right,
:math:`d_j \sim q(\cdot \mid x_{<t}, d_{<j})`; the *target* :math:`p` scores all
of them in one call (the :math:`\gamma + 1` prefix conditionals a causal
network computes in one pass).  Token :math:`j` is accepted with probability
:math:`\min(1, p_j(d_j) / q_j(d_j))`; at the first rejection the token is
redrawn from the residual

.. math::

    r_j(v) = \frac{(p_j(v) - q_j(v))_+}{\sum_w (p_j(w) - q_j(w))_+}
           = \frac{(p_j(v) - q_j(v))_+}{\mathrm{TV}(p_j, q_j)}

and the round ends; when all :math:`\gamma` drafts are accepted, a *bonus*
token is drawn from :math:`p_\gamma`.  Theorem 6
(``proofs/06-speculative-decoding.md``): whatever the draft, the output is
distributed as the target's left-to-right law
:math:`p(x) = \prod_t p(x_t \mid x_{<t})`; each drafted token is accepted with
probability :math:`1 - \mathrm{TV}(p_t, q_t)`, and with a constant acceptance
:math:`\alpha` a round yields :math:`(1 - \alpha^{\gamma+1}) / (1 - \alpha)`
tokens in expectation (:func:`expected_tokens_per_call`).

:func:`speculative` is the jit-compiled sampler; :func:`speculative_law` and
:func:`speculative_cost` compute the algorithm's law and its exact expected
numbers of calls by a dynamic program over round starts that multiplies the
algorithm's own factors (accept :math:`\min(q, p)`, reject-and-resample
:math:`(p - q)_+`, bonus :math:`p`), independently of the sampler, so that
"law = target" is a check and not an assumption.  The same factors, wrong in
one place, give the law of each broken variant in
:mod:`arprob.samplers.mutants`.
"""

from __future__ import annotations

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
    check_real_array,
    check_within_length,
    refuses_nan_output,
)
from arprob.conditionals import as_conditionals, check_compatible, join_static, normalized_logits, split_static
from arprob.errors import InvalidArgumentError

__all__ = [
    "SpeculativeCost",
    "SpeculativeStats",
    "expected_tokens_per_call",
    "speculative",
    "speculative_cost",
    "speculative_law",
]


class SpeculativeStats(NamedTuple):
    r"""Per-sample statistics of :func:`speculative`.

    Attributes
    ----------
    nfe
        Target calls (the expensive network), shape ``(num_samples,)``.
    target_calls
        Same as ``nfe``: one per round.
    draft_calls
        Draft-network calls (one per drafted token).
    drafted
        Drafted tokens sent to the target (``min(draft_length, remaining)`` per round).
    accepted
        Drafted tokens that were accepted.
    rejected
        Rounds that ended with a rejection (the drafts after it are never examined).
        Tokens per target call is ``length / target_calls``; the per-token
        acceptance rate is ``accepted / (accepted + rejected)``, which estimates
        :math:`1 - \mathrm{TV}(p, q)` when it is the same at every position.
    """

    nfe: jax.Array
    target_calls: jax.Array
    draft_calls: jax.Array
    drafted: jax.Array
    accepted: jax.Array
    rejected: jax.Array


class SpeculativeCost(NamedTuple):
    """Exact expected numbers per sequence (:func:`speculative_cost`)."""

    target_calls: float
    draft_calls: float
    drafted: float
    accepted: float
    rejected: float

    @property
    def acceptance_rate(self) -> float:
        r"""``accepted / (accepted + rejected)``: the per-token acceptance over examined drafts.

        A ratio of expectations (what a long run measures).  By Wald's identity
        it equals :math:`1 - \mathrm{TV}(p, q)` when that is the same at every
        position (theorem 6).
        """
        examined = self.accepted + self.rejected
        return self.accepted / examined if examined > 0 else float("nan")


class _Variant(NamedTuple):
    """How one round is carried out.  The default is the correct algorithm;
    :mod:`arprob.samplers.mutants` sets one field wrong at a time."""

    ratio: str = "p/q"  # acceptance min(1, p/q); "q/p" is the inverted mutant
    residual: str = "normalized"  # or "target", "swapped", "unnormalized", "reused_uniform", "rejected_draft"
    bonus: str = "target"  # or "draft": the last token of an all-accepted round drawn from the draft
    draft_top_k: int = 0  # > 0: drafts drawn from top-k of q, ratio computed with the raw q
    target_power: float = 1.0  # p**power, unnormalized, in the ratio and the residual



def expected_tokens_per_call(acceptance, draft_length: int):
    r"""Expected tokens per target call, :math:`\sum_{j=0}^{\gamma} \alpha^j = (1 - \alpha^{\gamma+1})/(1 - \alpha)`.

    For a constant per-token acceptance :math:`\alpha = 1 - \mathrm{TV}(p, q)`
    and no end of sequence in sight: a round keeps the accepted prefix of
    the :math:`\gamma` drafts and adds one token (the resampled or the bonus
    one), so it yields :math:`1 + \sum_{j=1}^{\gamma} \alpha^j` tokens in
    expectation (theorem 6).  Vectorized over ``acceptance``.
    """
    owner = "expected_tokens_per_call"
    gamma = check_int(owner, "draft_length", draft_length, minimum=1, maximum=10**5,
                      fix="the sum converges geometrically; 10**5 terms is the limit")
    alpha = check_real_array(owner, "acceptance", acceptance)
    if np.any(~np.isfinite(alpha)) or np.any(alpha < 0) or np.any(alpha > 1):
        raise InvalidArgumentError(f"expected_tokens_per_call: acceptance must be in [0, 1], got {acceptance}")
    return sum(alpha**j for j in range(gamma + 1))


def _top_k_mask(logits, top_k: int):
    """Keep the ``top_k`` largest entries of the last axis (ties: lowest index), the rest -inf."""
    ranks = jnp.argsort(jnp.argsort(-logits, axis=-1, stable=True), axis=-1, stable=True)
    return jnp.where(ranks < top_k, logits, -jnp.inf)


def _log_positive_part(values):
    return jnp.where(values > 0, jnp.log(jnp.where(values > 0, values, 1.0)), -jnp.inf)


def _inverse_cdf(weights, uniform):
    """First index whose cumulative weight exceeds ``uniform`` (clipped to the last index)."""
    cumulative = jnp.cumsum(weights, axis=-1)
    index = jnp.sum(cumulative <= uniform[..., None], axis=-1)
    return jnp.minimum(index, weights.shape[-1] - 1)


def _gather_rows(values, index):
    """``values[b, index[b]]`` for a leading batch axis (a one-hot sum over the short second axis)."""
    hit = jnp.arange(values.shape[1]) == index[:, None]
    if values.ndim == 3:
        return jnp.sum(jnp.where(hit[..., None], values, 0), axis=1)
    return jnp.sum(jnp.where(hit, values, 0), axis=1)


def row_log_probs(family, tokens, observed, index):
    r"""``log_softmax(family(tokens, observed))`` at position ``index`` only: shape ``(..., V)``.

    ``tokens`` and ``observed`` are ``(..., L)``, ``index`` is ``(...)``.  The
    family answers every position; the row at ``index`` is taken *before*
    normalizing, which gives the same values as normalizing all ``L`` rows
    and taking one (``log_softmax`` works row by row) at ``1/L`` of the cost.
    """
    logits = family(tokens, observed)
    row = jnp.take_along_axis(logits, index[..., None, None], axis=-2)[..., 0, :]
    return jax.nn.log_softmax(row, axis=-1)


def _write(tokens, positions, at, value, where):
    """``tokens[b, at[b]] = value[b]`` where ``where[b]``: a one-hot select, not a scatter."""
    return jnp.where((positions[None, :] == at[:, None]) & where[:, None], value[:, None], tokens)


@partial(jax.jit, static_argnames=("target_static", "draft_static", "num_samples", "draft_length", "variant"))
def _speculative(key, target_dynamic, target_static, draft_dynamic, draft_static, num_samples: int,
                 draft_length: int, variant: _Variant):
    target = join_static(target_dynamic, target_static)
    draft = join_static(draft_dynamic, draft_static)
    length, vocab_size = target.length, target.vocab_size
    gamma = draft_length
    draft_steps = gamma + (variant.bonus == "draft")
    n = num_samples
    positions = jnp.arange(length)
    offsets = jnp.arange(gamma + 1)
    # the residual and the bonus token are one categorical draw from logits picked per sample
    merged_draw = variant.residual in ("normalized", "target", "swapped") and variant.bonus == "target"

    def round_(state):
        tokens, pos, round_index, calls, draft_calls, drafted, accepted, rejections = state
        active = pos < length
        span = jnp.minimum(gamma, length - pos)  # drafts scored this round
        key_round = jax.random.fold_in(key, round_index)
        key_draft, key_accept, key_residual, key_bonus = jax.random.split(key_round, 4)

        # draft left to right: one draft call per token, only the drafted position normalized
        draft_log_probs, draft_tokens = [], []
        for j in range(draft_steps):
            where = jnp.minimum(pos + j, length - 1)
            q_row = row_log_probs(draft, tokens, positions[None, :] < (pos + j)[:, None], where)  # (n, V)
            sampling = _top_k_mask(q_row, variant.draft_top_k) if variant.draft_top_k else q_row
            token = categorical(jax.random.fold_in(key_draft, j), sampling).astype(jnp.int32)
            tokens = _write(tokens, positions, pos + j, token, active)  # no position matches past the end
            draft_log_probs.append(q_row)
            draft_tokens.append(token)
        log_q = jnp.stack(draft_log_probs, axis=1)  # (n, steps, V)
        drafts = jnp.stack(draft_tokens[:gamma], axis=1)  # (n, gamma)

        # one target call scores the gamma + 1 prefixes; only the scored row of each is normalized
        masks = positions[None, None, :] < (pos[:, None] + offsets[None, :])[..., None]  # (n, gamma+1, L)
        where = jnp.minimum(pos[:, None] + offsets[None, :], length - 1)  # (n, gamma+1)
        log_p = row_log_probs(target, jnp.broadcast_to(tokens[:, None, :], masks.shape), masks, where)
        log_p_tilde = variant.target_power * log_p if variant.target_power != 1.0 else log_p

        log_p_draft = jnp.take_along_axis(log_p_tilde[:, :gamma], drafts[..., None], axis=-1)[..., 0]
        log_q_draft = jnp.take_along_axis(log_q[:, :gamma], drafts[..., None], axis=-1)[..., 0]
        log_ratio = log_p_draft - log_q_draft if variant.ratio == "p/q" else log_q_draft - log_p_draft
        acceptance = jnp.exp(jnp.minimum(log_ratio, 0.0))
        uniforms = jax.random.uniform(key_accept, (n, gamma), dtype=acceptance.dtype)
        ok = (uniforms < acceptance) & (offsets[None, :gamma] < span[:, None])
        num_accepted = jnp.sum(jnp.cumprod(ok, axis=1), axis=1).astype(jnp.int32)  # leading accepted drafts
        rejected = num_accepted < span

        # the token after the accepted prefix: resampled (rejection) or bonus (all accepted)
        at = jnp.minimum(num_accepted, gamma)
        p_at = _gather_rows(log_p_tilde, at)  # (n, V)
        q_at = _gather_rows(log_q, jnp.minimum(at, draft_steps - 1))
        difference = jnp.exp(p_at) - jnp.exp(q_at)
        if variant.residual == "normalized":
            residual_logits = _log_positive_part(difference)
        elif variant.residual == "target":
            residual_logits = p_at
        elif variant.residual == "swapped":
            residual_logits = _log_positive_part(-difference)
        elif variant.residual == "unnormalized":
            fresh = jax.random.uniform(key_residual, (n,), dtype=difference.dtype)
            resampled = _inverse_cdf(jnp.maximum(difference, 0.0), fresh)
        elif variant.residual == "reused_uniform":
            positive = jnp.maximum(difference, 0.0)
            normalized = positive / jnp.maximum(positive.sum(axis=-1, keepdims=True), 1e-300)
            resampled = _inverse_cdf(normalized, _gather_rows(uniforms, jnp.minimum(at, gamma - 1)))
        else:  # "rejected_draft": the first rejected draft is kept (accepted prefix off by one)
            resampled = _gather_rows(drafts, jnp.minimum(at, gamma - 1))
        if merged_draw:  # fresh noise, used by exactly one of the two laws: the same law as two draws
            next_token = categorical(key_residual, jnp.where(rejected[:, None], residual_logits, p_at))
        else:
            if variant.residual in ("normalized", "target", "swapped"):
                resampled = categorical(key_residual, residual_logits)
            if variant.bonus == "target":
                bonus = categorical(key_bonus, p_at)
            else:  # the extra draft token at pos + gamma
                bonus = _gather_rows(jnp.stack(draft_tokens, axis=1), jnp.minimum(at, draft_steps - 1))
            next_token = jnp.where(rejected, resampled, bonus)
        next_position = pos + num_accepted
        tokens = _write(tokens, positions, next_position, next_token.astype(jnp.int32), active)
        new_pos = jnp.where(active, jnp.minimum(next_position + 1, length), pos).astype(jnp.int32)

        calls = calls + active.astype(jnp.int32)
        extra = (variant.bonus == "draft") & (pos + span < length)
        draft_calls = draft_calls + jnp.where(active, span + extra, 0).astype(jnp.int32)
        drafted = drafted + jnp.where(active, span, 0).astype(jnp.int32)
        accepted = accepted + jnp.where(active, num_accepted, 0).astype(jnp.int32)
        rejections = rejections + (active & rejected).astype(jnp.int32)
        return tokens, new_pos, round_index + 1, calls, draft_calls, drafted, accepted, rejections

    zeros = jnp.zeros((n,), jnp.int32)
    state = (jnp.full((n, length), vocab_size, jnp.int32), zeros, jnp.int32(0), zeros, zeros, zeros, zeros, zeros)
    tokens, _, _, calls, draft_calls, drafted, accepted, rejections = jax.lax.while_loop(
        lambda s: jnp.any(s[1] < length), round_, state)
    return tokens, SpeculativeStats(nfe=calls, target_calls=calls, draft_calls=draft_calls, drafted=drafted,
                                    accepted=accepted, rejected=rejections)


def _families(owner: str, target, draft):
    target = as_conditionals(target, owner, "target")
    draft = as_conditionals(draft, owner, "draft")
    check_compatible(owner, draft, target, "draft", "target")
    return target, draft


def speculative(key, target, draft, num_samples: int, draft_length: int):
    """Draw ``num_samples`` sequences by speculative decoding (see the module docstring).

    Parameters
    ----------
    key
        PRNG key.
    target, draft
        Conditional families or exact models over the same sequence space; only
        their left-to-right (prefix) conditionals are used.
    num_samples
        Number of sequences.
    draft_length
        :math:`\\gamma`, drafted tokens per round (the last round drafts at most
        the remaining positions and takes no bonus token past the end).

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
        Distributed exactly as the target's left-to-right law (theorem 6).
    stats : SpeculativeStats
    """
    owner = "speculative"
    target, draft = _families(owner, target, draft)
    key, num_samples = check_draw(owner, key, num_samples, target.length, target.vocab_size, per_sample=2)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _run(key, target, draft, num_samples, draft_length, _Variant())


def _run(key, target, draft, num_samples: int, draft_length: int, variant: _Variant):
    target_dynamic, target_static = split_static(target)
    draft_dynamic, draft_static = split_static(draft)
    return _speculative(key, target_dynamic, target_static, draft_dynamic, draft_static, num_samples,
                        draft_length, variant)


# ---------------------------------------------------------------------------
# exact law and cost: a dynamic program over round starts
# ---------------------------------------------------------------------------


def prefix_log_probs(family, sequences: np.ndarray, chunk: int = 4096) -> np.ndarray:
    r"""``log q(v | y_{<t})`` at every position ``t`` for every row ``y``, float64 ``(N, L, V)``."""
    dynamic, static = split_static(family)
    length = family.length
    out = np.empty(sequences.shape + (family.vocab_size,))
    for t in range(length):
        observed = np.arange(length) < t
        for start in range(0, sequences.shape[0], chunk):
            block = jnp.asarray(sequences[start : start + chunk])
            mask = jnp.broadcast_to(jnp.asarray(observed), block.shape)
            logits = normalized_logits(dynamic, static, block, mask)
            out[start : start + chunk, t] = np.asarray(logits[:, t], np.float64)
    return out


def _token_factors(log_p: np.ndarray, log_q: np.ndarray, variant: _Variant):
    """Per-position factors of one round, as functions of the output token ``v``.

    ``log_p``, ``log_q``: ``(N, V)`` target and draft log-probabilities at one
    position.  Returns ``(accept, reject, bonus_target, bonus_draft)``, each
    ``(N, V)``: P(draft v and accept it), P(reject and output v), the bonus
    laws.
    """
    p, q = np.exp(log_p), np.exp(log_q)
    p_tilde = p**variant.target_power if variant.target_power != 1.0 else p
    if variant.draft_top_k:
        ranks = np.argsort(np.argsort(-log_q, axis=-1, kind="stable"), axis=-1, kind="stable")
        q_sampling = np.where(ranks < variant.draft_top_k, q, 0.0)
        q_sampling = q_sampling / q_sampling.sum(axis=-1, keepdims=True)
    else:
        q_sampling = q
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = p_tilde / q if variant.ratio == "p/q" else q / p_tilde
    acceptance = np.minimum(1.0, np.nan_to_num(ratio, nan=1.0, posinf=1.0))
    accept = q_sampling * acceptance
    reject_mass = np.sum(q_sampling * (1.0 - acceptance), axis=-1, keepdims=True)
    difference = p_tilde - q
    positive = np.maximum(difference, 0.0)

    def normalize(weights):
        total = weights.sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)

    residual = variant.residual
    if residual == "normalized":
        reject = reject_mass * normalize(positive)
    elif residual == "target":
        reject = reject_mass * normalize(p_tilde)
    elif residual == "swapped":
        reject = reject_mass * normalize(np.maximum(-difference, 0.0))
    elif residual == "unnormalized":
        law = positive.copy()
        law[:, -1] += 1.0 - positive.sum(axis=-1)
        reject = reject_mass * law
    elif residual == "reused_uniform":
        # the rejecting uniform is U[a(d), 1) given the draft d; inverse CDF on the residual
        cumulative = np.cumsum(normalize(positive), axis=-1)
        cumulative[:, -1] = np.inf  # the clip to the last index
        lower = np.concatenate([np.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], axis=-1)
        reject = np.zeros_like(p)
        for d in range(p.shape[-1]):
            start = acceptance[:, d : d + 1]
            overlap = np.clip(np.minimum(cumulative, 1.0) - np.maximum(lower, start), 0.0, None)
            reject += q_sampling[:, d : d + 1] * overlap
    else:  # rejected_draft
        reject = q_sampling * (1.0 - acceptance)
    return accept, reject, normalize(p_tilde), q_sampling


def enumerated_prefix_log_probs(target, draft, max_entries: int, owner: str, what: str):
    """All ``V**L`` sequences and the target's and the draft's log-probabilities of each token after its prefix.

    Refused up front (:func:`check_enumeration`) when the tables would not fit in ``max_entries``.
    """
    vocab_size, length = target.vocab_size, target.length
    check_enumeration(owner, vocab_size, length, factor=2 * length * vocab_size, max_entries=max_entries, what=what)
    sequences = all_sequences(vocab_size, length)
    return sequences, prefix_log_probs(target, sequences), prefix_log_probs(draft, sequences)


def _round_dp(target, draft, draft_length: int, variant: _Variant, max_entries: int, owner: str):
    """Law and expected counts of the speculative algorithm with ``variant``."""
    vocab_size, length = target.vocab_size, target.length
    sequences, log_p, log_q = enumerated_prefix_log_probs(target, draft, max_entries, owner,
                                                          "the speculative-decoding law")
    size = sequences.shape[0]
    rows = np.arange(size)
    factors = []
    for t in range(length):
        accept, reject, bonus_p, bonus_q = _token_factors(log_p[:, t], log_q[:, t], variant)
        token = sequences[:, t]
        factors.append((accept[rows, token], reject[rows, token],
                        (bonus_p if variant.bonus == "target" else bonus_q)[rows, token]))
    reach = np.zeros((length + 1, size))
    reach[0] = 1.0
    target_calls = draft_calls = drafted = accepted = rejected = 0.0
    for start in range(length):
        if not reach[start].any():
            continue
        span = min(draft_length, length - start)
        weight = reach[start] / vocab_size ** (length - start)  # each prefix is repeated that often
        mass = weight.sum()
        target_calls += mass
        drafted += span * mass
        draft_calls += (span + (variant.bonus == "draft" and start + span < length)) * mass
        running = reach[start].copy()
        for j in range(span):
            accept, reject, _ = factors[start + j]
            reach[start + j + 1] += running * reject
            rejected += (running * reject).sum() / vocab_size ** (length - start - j - 1)
            running = running * accept
            accepted += running.sum() / vocab_size ** (length - start - j - 1)
        if start + span < length:
            reach[start + span + 1] += running * factors[start + span][2]
        else:
            reach[length] += running
    return reach[length], SpeculativeCost(float(target_calls), float(draft_calls), float(drafted), float(accepted),
                                          float(rejected))


@refuses_nan_output
def speculative_law(target, draft, draft_length: int, *, max_entries: int = 2**26) -> np.ndarray:
    """Exact law of :func:`speculative`, float64 over all ``V**L`` sequences (lexicographic).

    Computed by a dynamic program over round starts from the algorithm's
    factors (module docstring), independently of the sampler; theorem 6 says
    it equals the target's left-to-right law, and the proofs check that it does.
    """
    owner = "speculative_law"
    target, draft = _families(owner, target, draft)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _round_dp(target, draft, draft_length, _Variant(), max_entries, owner)[0]


@refuses_nan_output
def speculative_cost(target, draft, draft_length: int, *, max_entries: int = 2**26) -> SpeculativeCost:
    """Exact expected target calls, draft calls, drafted, accepted and rejected drafts per sequence.

    From the same dynamic program as :func:`speculative_law`: the probability
    that a round starts at position ``t`` is summed over ``t`` for the target
    calls; accepted tokens sum the probabilities that the first ``j`` drafts
    of a round are accepted.
    """
    owner = "speculative_cost"
    target, draft = _families(owner, target, draft)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    return _round_dp(target, draft, draft_length, _Variant(), max_entries, owner)[1]
