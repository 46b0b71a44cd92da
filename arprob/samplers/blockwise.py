r"""Blockwise parallel decoding: greedy decoding accelerated by proposal heads.

Stern, Shazeer & Uszkoreit (2018), *Blockwise parallel decoding for deep
autoregressive models* (NeurIPS).  The output is the target's **greedy**
sequence,

.. math::

    x_t = \operatorname*{arg\,max}_v \; p(v \mid x_{<t}), \qquad t = 0, \dots, L-1

(ties go to the lowest token id; see *Ties* below), but several tokens are
settled per target call.  With the accepted prefix
:math:`x_{<t}` and :math:`b' = \min(b, L - t)` positions left in the block,
one iteration is

1. **predict**: the heads propose :math:`\hat y_{t+i} = \arg\max_v h(v \mid x_{<t})`
   at position :math:`t+i`, :math:`i < b'` (one call of the any-subset family
   ``heads`` with the prefix observed answers every later position at once:
   exactly what Stern et al.'s :math:`k` heads compute);
2. **verify**: one batched target call over the :math:`b'` prefix masks gives
   :math:`g_i = \arg\max_v p(v \mid x_{<t}, \hat y_t, \dots, \hat y_{t+i-1})`;
3. **accept**: the longest run :math:`\hat y_{t+i} = g_i`, :math:`i < m`, and
   then :math:`g_m` at the first mismatch (the greedy token given the accepted
   prefix, free from the same call); :math:`t` advances by
   :math:`\min(m + 1, b')`.

**Claim.** The output equals greedy decoding of the target, whatever the
heads.  By induction on iterations: if :math:`x_{<t}` is the greedy prefix and
:math:`\hat y_{t..t+i-1}` all matched, then :math:`g_i` is the target's
argmax given the greedy prefix :math:`x_{<t+i}`, i.e. the greedy token
:math:`x_{t+i}`; every token written (:math:`g_0, \dots, g_{\min(m, b'-1)}`)
is therefore greedy.  The law is the point mass at the greedy sequence; the
heads only change the number of iterations.  There is no randomness: the
``key`` argument of :func:`blockwise_parallel` is unused (it is there so that
every sampler has the same signature) and every sample is identical.

:func:`blockwise_parallel` is the jit-compiled batched decoder;
:func:`blockwise_parallel_law` computes the point mass independently, from
:func:`greedy` (plain left-to-right greedy decoding of the target alone), and
:func:`blockwise_parallel_cost` simulates the acceptance rule against that
greedy sequence to count iterations exactly.

**Ties.** Tied probabilities rarely come out of a family as exactly equal
floats: a Markov chain's conditionals are computed by forward-backward, and
two tied entries can differ in the last bits, differently for different batch
shapes (the decoder's batched verify call and a one-row greedy call).  A plain
``argmax`` would break such ties by rounding noise.  Every argmax here
therefore counts as tied the logits within ``TIE_ULPS = 64`` machine epsilons
of the largest (relative to :math:`\max(1, |\text{largest}|)`: about
:math:`1.4\times 10^{-14}` in float64, :math:`7.6\times 10^{-6}` in float32)
and takes the lowest token id among them.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import sequence_index
from arprob._validation import check_draw, check_enumeration, check_within_length
from arprob.conditionals import as_conditionals, check_compatible, join_static, split_static

__all__ = [
    "TIE_ULPS",
    "BlockwiseStats",
    "blockwise_parallel",
    "blockwise_parallel_cost",
    "blockwise_parallel_law",
    "greedy",
]


#: Logits within ``TIE_ULPS`` machine epsilons of the largest, relative to ``max(1, |largest|)``, are tied.
TIE_ULPS = 64


def _first_argmax(logits):
    """Lowest token id among the logits tied (within ``TIE_ULPS`` epsilons) with the largest; jnp."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    tolerance = TIE_ULPS * jnp.finfo(logits.dtype).eps * jnp.maximum(1.0, jnp.abs(top))
    return jnp.argmax(logits >= top - tolerance, axis=-1).astype(jnp.int32)


def _first_argmax_numpy(logits: np.ndarray) -> np.ndarray:
    """:func:`_first_argmax` in float64 numpy, with the epsilon of the family's own dtype."""
    eps = np.finfo(logits.dtype).eps
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    tolerance = TIE_ULPS * eps * np.maximum(1.0, np.abs(top))
    return np.argmax(logits >= top - tolerance, axis=-1)


class BlockwiseStats(NamedTuple):
    """Per-sample statistics of :func:`blockwise_parallel`, each of shape ``(num_samples,)``.

    Attributes
    ----------
    nfe
        ``target_calls + head_calls``: every family evaluation made for the sample.
    target_calls
        Target calls, one per iteration.  Stern et al. fuse the heads into the
        target's forward pass (the verify pass of one iteration also computes
        the next proposals), so this is the figure of merit: the number of
        sequential model passes.  The mean accepted block size is
        ``length / target_calls``; plain greedy decoding needs ``length``.
    head_calls
        Heads calls: one per iteration with at least two positions left in the
        block (with one position left the proposal cannot change the outcome,
        so none is made; ``block_size=1`` never calls the heads).
    accepted
        Head proposals confirmed by the target, summed over iterations.  The
        other ``length - accepted`` tokens came from the target at a mismatch.
    """

    nfe: jax.Array
    target_calls: jax.Array
    head_calls: jax.Array
    accepted: jax.Array


@partial(jax.jit, static_argnames=("target_static", "heads_static", "num_samples", "block_size"))
def _blockwise_parallel(target_dynamic, target_static, heads_dynamic, heads_static,
                        num_samples: int, block_size: int):
    target = join_static(target_dynamic, target_static)
    heads = join_static(heads_dynamic, heads_static)
    length, vocab_size = target.length, target.vocab_size
    positions = jnp.arange(length, dtype=jnp.int32)
    offsets = jnp.arange(block_size, dtype=jnp.int32)
    rows = jnp.arange(num_samples)[:, None]

    def body(state):
        tokens, t, target_calls, head_calls, accepted = state  # tokens hold the mask id V beyond t
        active = t < length
        width = jnp.clip(length - t, 0, block_size)  # b' per sample; 0 once finished
        prefix = positions[None, :] < t[:, None]  # (n, L)
        in_block = offsets[None, :] < width[:, None]  # (n, b)
        block_positions = t[:, None] + offsets[None, :]  # (n, b), may run past L - 1
        read_positions = jnp.minimum(block_positions, length - 1)
        needs_heads = active & (width >= 2)
        if block_size > 1:
            # predict: the heads' argmax at every position given the prefix; skipped when no sample needs it
            proposals = jax.lax.cond(
                jnp.any(needs_heads),
                lambda: _first_argmax(heads(tokens, prefix)),
                lambda: jnp.full((num_samples, length), vocab_size, jnp.int32),
            )
            in_draft = (positions[None, :] >= t[:, None]) & (positions[None, :] < t[:, None] + width[:, None])
            in_draft = in_draft & needs_heads[:, None]  # with one position left, no proposal is used
            draft = jnp.where(in_draft, proposals, tokens)
        else:
            draft = tokens
        # verify: row i observes positions < t + i (accepted prefix, then the first i proposals); padding rows
        # i >= b' repeat row b' - 1, so that no row shows the mask id at an observed position
        limits = t[:, None] + jnp.minimum(offsets[None, :], jnp.maximum(width - 1, 0)[:, None])  # (n, b)
        verify_observed = positions[None, None, :] < limits[:, :, None]  # (n, b, L)
        verify_tokens = jnp.where(verify_observed, draft[:, None, :], vocab_size)
        logits = target(verify_tokens.reshape(num_samples * block_size, length),
                        verify_observed.reshape(num_samples * block_size, length))
        logits = logits.reshape(num_samples, block_size, length, vocab_size)
        chosen = jnp.take_along_axis(logits, read_positions[:, :, None, None], axis=2)[:, :, 0]  # (n, b, V)
        greedy_tokens = _first_argmax(chosen)  # g_i, (n, b)
        proposed = jnp.take_along_axis(draft, read_positions, axis=1)
        match = (proposed == greedy_tokens) & in_block
        matches = jnp.sum(jnp.cumprod(match.astype(jnp.int32), axis=1), axis=1, dtype=jnp.int32)  # m
        advance = jnp.minimum(matches + 1, width)  # 0 for finished samples
        # accept: write g_i at t + i for i < advance (g_i equals the proposal for i < m)
        write = offsets[None, :] < advance[:, None]
        targets = jnp.where(write, block_positions, length)  # index L is out of bounds: dropped
        tokens = tokens.at[rows, targets].set(greedy_tokens, mode="drop")
        head_used = needs_heads if block_size > 1 else jnp.zeros_like(needs_heads)
        return tokens, t + advance, target_calls + active, head_calls + head_used, accepted + matches

    zeros = jnp.zeros((num_samples,), jnp.int32)
    initial = (jnp.full((num_samples, length), vocab_size, jnp.int32), zeros, zeros, zeros, zeros)
    tokens, _, target_calls, head_calls, accepted = jax.lax.while_loop(
        lambda state: jnp.any(state[1] < length), body, initial
    )
    stats = BlockwiseStats(nfe=target_calls + head_calls, target_calls=target_calls,
                           head_calls=head_calls, accepted=accepted)
    return tokens, stats


def _families(owner: str, target, heads, block_size):
    target = as_conditionals(target, owner, "target")
    heads = as_conditionals(heads, owner, "heads")
    check_compatible(owner, heads, target, "heads", "target")
    block_size = check_within_length(owner, "block_size", block_size, target.length)
    return target, heads, block_size


def blockwise_parallel(key, target, heads, num_samples: int, block_size: int):
    r"""Greedy decoding of ``target`` with proposals from ``heads``, ``block_size`` tokens per block.

    Stern, Shazeer & Uszkoreit (2018).  See the module docstring for the
    algorithm and the one-line proof that the output is the target's greedy
    sequence (:func:`greedy`) whatever the heads.

    Parameters
    ----------
    key
        PRNG key.  **Unused**: the decoder is deterministic; the argument keeps
        the signature uniform with the other samplers.
    target
        The model being decoded: a conditional family or an exact model.
        Only its prefix conditionals :math:`p(\cdot \mid x_{<t})` are used.
    heads
        The proposal family (same vocabulary and length): the proposal for
        position :math:`t + i` is the argmax of ``heads(x, observed)`` at that
        position with the accepted prefix :math:`x_{<t}` observed.
    num_samples
        Number of (identical) output rows.
    block_size
        :math:`b \ge 1`, the most tokens settled per target call.  ``1`` is
        plain greedy decoding; values above ``length`` act as ``length``.

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
        The greedy sequence in every row.  Ties in the argmax (within
        ``TIE_ULPS`` epsilons, module docstring) go to the lowest token id; a
        float32 family may see ties that float64 resolves, or the reverse.
    stats : BlockwiseStats
        ``target_calls`` (iterations), ``head_calls``, ``nfe`` and ``accepted``
        per sample; :func:`blockwise_parallel_cost` predicts ``target_calls``.
    """
    owner = "blockwise_parallel"
    target, heads, block_size = _families(owner, target, heads, block_size)
    key, num_samples = check_draw(owner, key, num_samples, target.length, target.vocab_size, per_sample=2)
    del key  # deterministic; kept (and checked) for the uniform sampler signature
    target_dynamic, target_static = split_static(target)
    # block_size = 1 never calls the heads: drop them so that every heads family shares one compilation
    heads_dynamic, heads_static = split_static(heads) if block_size > 1 else (None, None)
    return _blockwise_parallel(target_dynamic, target_static, heads_dynamic, heads_static,
                               num_samples, block_size)


@partial(jax.jit, static_argnames=("static",))
def _answer(dynamic, static, tokens, observed):
    """A family's raw logits ``(L, V)`` for one partially observed sequence."""
    return join_static(dynamic, static)(tokens[None], observed[None])[0]


def _argmax_at(family, tokens: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``argmax_v`` of the family's answer at every position, in float64 numpy (ties: lowest id)."""
    dynamic, static = split_static(family)
    masked = np.where(observed, tokens, family.vocab_size).astype(np.int32)
    return _first_argmax_numpy(np.asarray(_answer(dynamic, static, jnp.asarray(masked), jnp.asarray(observed))))


def greedy(target) -> np.ndarray:
    r"""Plain greedy decoding: :math:`x_t = \arg\max_v p(v \mid x_{<t})`, left to right.

    ``length`` sequential calls of the family, argmax in float64 numpy, ties
    (within ``TIE_ULPS`` epsilons, module docstring) to the lowest token id.
    The reference that :func:`blockwise_parallel` must reproduce exactly.

    Parameters
    ----------
    target
        A conditional family or an exact model.

    Returns
    -------
    numpy.ndarray
        int32 tokens, shape ``(length,)``.
    """
    family = as_conditionals(target, "greedy", "target")
    length = family.length
    tokens = np.zeros(length, dtype=np.int32)
    for t in range(length):
        tokens[t] = _argmax_at(family, tokens, np.arange(length) < t)[t]
    return tokens


def blockwise_parallel_cost(target, heads, block_size: int) -> int:
    """Exact number of iterations (target calls) of :func:`blockwise_parallel`.

    Simulated in numpy against the greedy sequence :math:`x` of :func:`greedy`:
    at prefix length :math:`t` the heads' proposals for :math:`t, \\dots, t+b'-1`
    are compared with :math:`x_{t..t+b'-1}` (which, by the induction of the
    module docstring, are the target's verdicts :math:`g_i` up to the first
    mismatch); with :math:`m` leading matches, :math:`t` advances by
    :math:`\\min(m+1, b')`.  No target call with proposals is made, so this is an
    independent check of the decoder's bookkeeping.
    """
    owner = "blockwise_parallel_cost"
    target, heads, block_size = _families(owner, target, heads, block_size)
    length = target.length
    sequence = greedy(target)
    t = calls = 0
    while t < length:
        width = min(block_size, length - t)
        matches = 0
        if width >= 2:
            proposals = _argmax_at(heads, sequence, np.arange(length) < t)[t : t + width]
            while matches < width and proposals[matches] == sequence[t + matches]:
                matches += 1
        t += min(matches + 1, width)
        calls += 1
    return calls


def blockwise_parallel_law(target, heads, block_size: int, *, max_entries: int = 2**26) -> np.ndarray:
    """Exact law of :func:`blockwise_parallel`: the point mass at :func:`greedy` ``(target)``.

    Float64 over all ``V**L`` sequences in lexicographic order
    (:func:`arprob._enumerate.all_sequences`).  Computed from plain greedy
    decoding of the target alone, independently of the decoder; ``heads`` and
    ``block_size`` are validated but cannot move the mass (module docstring).
    Refused when ``V**L`` exceeds ``max_entries``.
    """
    owner = "blockwise_parallel_law"
    target, heads, block_size = _families(owner, target, heads, block_size)
    vocab_size, length = target.vocab_size, target.length
    size = check_enumeration(owner, vocab_size, length, max_entries=max_entries, what="the blockwise parallel law")
    law = np.zeros(size, dtype=np.float64)
    law[int(sequence_index(greedy(target), vocab_size))] = 1.0
    return law
