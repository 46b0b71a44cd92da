r"""Masked-diffusion samplers and their exact laws.

All three start from the fully masked sequence (token id ``V``) and reveal
positions using a conditional family :math:`q` (a denoiser; RADD shows the
clean-data conditionals are all a masked-diffusion network needs,
``proofs/03-absorbing-concrete-score.md``).

* :func:`masked_euler` -- the standard MDLM/SEDD reverse process on a uniform
  grid of ``num_steps`` times :math:`1 = t_N > \dots > t_0 = 0`: going from
  :math:`t` to :math:`s`, each masked position is revealed with probability
  :math:`(m(t) - m(s))/m(t)` and, if revealed, draws its token from
  :math:`q(\cdot \mid x_t)`.  Several tokens revealed in one step are drawn
  *independently* given the same :math:`x_t` (tau-leaping), so the law is
  approximate: exact as ``num_steps`` grows, not for finite grids.  With
  ``cache=True`` the network is not called again while the sequence has not
  changed (RADD's caching): the logits would be identical, so the law and even
  the draws for a given key are the same, and the expected number of calls for
  the linear schedule is :math:`N(1-(1-1/N)^L)`.
* :func:`parallel_unmask` -- a uniformly random order revealed ``k`` positions
  per call, each drawn independently from its conditional given the tokens
  revealed so far: :math:`\lceil L/k\rceil` calls, exact only for ``k = 1``.
* :func:`first_hitting` -- the time-agnostic first-hitting sampler
  (Zheng et al. 2024): with :math:`n` masked positions at time :math:`t`, the
  next reveal happens at :math:`s = t\,u^{1/n}`, at a uniformly chosen masked
  position, whose token is drawn from :math:`q(\cdot\mid x_t)`.  Theorem 5
  (``proofs/05-first-hitting-any-order.md``): its law is exactly random-order
  ancestral sampling, :math:`\bar q`.

Each ``NAME_law`` computes the sampler's law by an exact dynamic program over
the :math:`(V+1)^L` partially masked sequences (``masked_euler``,
``first_hitting``) or over revealed subsets (``parallel_unmask``) in float64,
independently of the sampler.
"""

from __future__ import annotations

import math
from functools import partial
from itertools import combinations
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob._random import categorical, gumbel
from arprob._validation import (
    check_bool,
    check_draw,
    check_enumeration,
    check_int,
    check_memory,
    check_within_length,
    check_work,
    refuses_nan_output,
)
from arprob.conditionals import as_conditionals, join_static, normalized_logits, split_static
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.samplers.ancestral import _log_conditionals_on
from arprob.schedules import Schedule

__all__ = [
    "FirstHittingStats",
    "MaskedStats",
    "first_hitting",
    "first_hitting_law",
    "masked_euler",
    "masked_euler_law",
    "parallel_unmask",
    "parallel_unmask_law",
]


class MaskedStats(NamedTuple):
    """Per-sample statistics of :func:`masked_euler` and :func:`parallel_unmask`.

    Attributes
    ----------
    nfe
        Network calls per sample, shape ``(num_samples,)``.
    """

    nfe: jax.Array


class FirstHittingStats(NamedTuple):
    """Per-sample statistics of :func:`first_hitting`.

    Attributes
    ----------
    nfe
        Network calls per sample (always ``L``).
    times
        The reveal times, shape ``(num_samples, L)``, decreasing from the first reveal.
    """

    nfe: jax.Array
    times: jax.Array


def _check_steps(owner: str, num_steps, work_per_step: float) -> int:
    """``num_steps`` as an int >= 1 whose total work (steps x work per step) is feasible."""
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    check_memory(owner, f"num_steps={num_steps:,}", (num_steps + 1, 64), itemsize=8,
                 fix="use fewer steps (each token is revealed once, so many more steps than tokens add nothing)")
    check_work(owner, f"num_steps={num_steps:,} denoising steps", float(num_steps) * max(work_per_step, 1.0),
               fix="use fewer steps (beyond a few times the length, extra steps reveal nothing: "
                   "each token is revealed once)")
    return num_steps


def _check_schedule(owner: str, schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise ArprobTypeError(
            f"{owner}: schedule must be an arprob.schedules.Schedule (schedules.linear(), cosine(), "
            f"log_linear(eps)), got {type(schedule).__name__}"
        )
    return schedule


def _reveal_probs(schedule: Schedule, num_steps: int) -> np.ndarray:
    """``(m(t_n) - m(t_{n-1})) / m(t_n)`` for the steps n = N..1, in the order they are taken."""
    times = np.arange(num_steps, -1, -1) / num_steps  # 1, ..., 0
    mask = np.asarray(schedule.mask_prob(times), np.float64)
    return (mask[:-1] - mask[1:]) / mask[:-1]


# -- masked Euler / tau-leaping --------------------------------------------------------
def _gumbel_argmax(noise, logits):
    r"""``argmax(noise + logits - max(logits))`` over the last axis: :func:`arprob._random.categorical`'s draw.

    With ``noise`` from :func:`arprob._random.gumbel` this is exactly what
    ``categorical`` computes (theorem 13), the noise drawn ahead of time.
    """
    return jnp.argmax(noise + (logits - jnp.max(logits, axis=-1, keepdims=True)), axis=-1)


@partial(jax.jit, static_argnames=("static", "num_samples", "cache", "invalidate"))
def _masked_euler(key, dynamic, static, reveal_probs, num_samples: int, cache: bool, invalidate: bool = True):
    # invalidate=False is the stale-cache mutant (arprob.samplers.mutants): the cache is never marked stale
    # after a reveal, so every token is drawn from the first call's logits
    #
    # Every position is revealed exactly once, so its token needs one Gumbel vector, drawn here for all
    # positions at once: the vector of position i is used only at i's reveal step, and is independent of
    # the reveal steps and of every other position's noise (hence of the logits at that step), so the
    # token has the categorical law of those logits, as with a fresh categorical draw per step; the
    # per-step work is the family call, an add and an argmax instead of L fresh Gumbel vectors.
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    key_reveal, key_tokens = jax.random.split(key)
    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    float_dtype = jnp.result_type(float)
    noise = gumbel(key_tokens, (num_samples, length, vocab_size), float_dtype)
    logits = jnp.zeros((num_samples, length, vocab_size), float_dtype)
    stale = jnp.ones((num_samples,), bool)  # the cached logits do not describe the current tokens
    nfe = jnp.zeros((num_samples,), jnp.int32)

    def step(j, carry):
        tokens, logits, stale, nfe = carry
        masked = tokens == vocab_size
        if cache:
            call = stale & masked.any(axis=-1)
            fresh = jax.lax.cond(call.any(), lambda: family(tokens, ~masked).astype(float_dtype),
                                 lambda: logits)
            logits = jnp.where(call[:, None, None], fresh, logits)
        else:
            call = jnp.ones((num_samples,), bool)
            logits = family(tokens, ~masked).astype(float_dtype)
        reveal = masked & (jax.random.uniform(jax.random.fold_in(key_reveal, j), masked.shape) < reveal_probs[j])
        drawn = _gumbel_argmax(noise, logits).astype(jnp.int32)
        tokens = jnp.where(reveal, drawn, tokens)
        stale = jnp.where(call, False, stale) | (reveal.any(axis=-1) & invalidate)
        return tokens, logits, stale, nfe + call.astype(jnp.int32)

    tokens, _, _, nfe = jax.lax.fori_loop(0, reveal_probs.shape[0], step, (tokens, logits, stale, nfe))
    return tokens, MaskedStats(nfe=nfe)


def masked_euler(key, conditionals, num_samples: int, num_steps: int, schedule, cache: bool = False):
    r"""The MDLM/SEDD reverse process on ``num_steps`` uniform steps (tau-leaping; see the module docstring).

    Parameters
    ----------
    key
        PRNG key.
    conditionals
        The denoiser: a conditional family or an exact model.
    num_samples, num_steps
        Number of sequences, and of time steps :math:`N`.
    schedule
        A :class:`arprob.schedules.Schedule`.
    cache
        Skip the network call while the sequence is unchanged (RADD); same
        law and, for a given ``key``, the same tokens.

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : MaskedStats
        ``nfe`` is ``num_steps`` without the cache; with it, the number of
        distinct partially masked states visited (expected
        :math:`N(1-(1-1/N)^L)` for ``schedules.linear()``).
    """
    owner = "masked_euler"
    family = as_conditionals(conditionals, owner)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size)
    num_steps = _check_steps(owner, num_steps, num_samples * family.length * family.vocab_size)
    cache = check_bool(owner, "cache", cache)
    schedule = _check_schedule(owner, schedule)
    reveal_probs = jnp.asarray(_reveal_probs(schedule, num_steps), jnp.result_type(float))
    dynamic, static = split_static(family)
    return _masked_euler(key, dynamic, static, reveal_probs, num_samples, bool(cache))


def _noisy_states(vocab_size: int, length: int) -> np.ndarray:
    """All ``(V+1)**L`` partially masked sequences, lexicographic in base ``V+1``."""
    return all_sequences(vocab_size + 1, length)


def _state_log_conditionals(family, states: np.ndarray) -> np.ndarray:
    """``log q(v | x_S)`` for every noisy state and position, shape ``(S, L, V)`` (float64)."""
    dynamic, static = split_static(family)
    masked = states == family.vocab_size
    outputs = []
    for start in range(0, states.shape[0], 4096):
        block = jnp.asarray(states[start : start + 4096])
        logits = normalized_logits(dynamic, static, block, jnp.asarray(~masked[start : start + 4096]))
        outputs.append(np.asarray(logits, np.float64))
    return np.concatenate(outputs)



def _clean_law(law_over_states: np.ndarray, vocab_size: int, length: int) -> np.ndarray:
    """Restrict a law over noisy states to the clean ones, re-indexed in base ``V``."""
    clean = all_sequences(vocab_size, length)
    index = clean @ ((vocab_size + 1) ** np.arange(length - 1, -1, -1))
    return law_over_states[index]


@refuses_nan_output
def masked_euler_law(conditionals, num_steps: int, schedule, cache: bool = False, *,
                     max_entries: int = 2**22) -> np.ndarray:
    r"""Exact law of :func:`masked_euler` over all ``V**L`` sequences (float64, lexicographic).

    A forward dynamic program over the :math:`(V+1)^L` partially masked
    states: from state :math:`y` with masked set :math:`M`, a step with reveal
    probability :math:`r` moves each :math:`i\in M` independently to the mask
    (probability :math:`1-r`) or to token :math:`v` (probability
    :math:`r\,q(v\mid y)`).  ``cache`` does not change the law (the cached
    logits equal the fresh ones), so it is accepted for symmetry and ignored.
    Cost: :math:`N (V+1)^{2L}`; refused when :math:`(V+1)^{2L}` exceeds ``max_entries``.
    """
    owner = "masked_euler_law"
    family = as_conditionals(conditionals, owner)
    num_steps = _check_steps(owner, num_steps, family.vocab_size ** min(family.length, 40))
    cache = check_bool(owner, "cache", cache)
    max_entries = check_int(owner, "max_entries", max_entries, minimum=1)
    schedule = _check_schedule(owner, schedule)
    del cache
    vocab_size, length = family.vocab_size, family.length
    check_enumeration(owner, vocab_size + 1, 2 * length, max_entries=max_entries,
                      what="the transition matrix over partially masked states")
    states = _noisy_states(vocab_size, length)
    probs = np.exp(_state_log_conditionals(family, states))  # (S, L, V)
    masked = states == vocab_size  # (S, L)
    law = np.zeros(states.shape[0])
    law[-1] = 1.0  # the all-mask state is the last one
    for r in _reveal_probs(schedule, num_steps):
        # kernel[y, i, c]: probability that position i of y becomes c (c = V is the mask)
        kernel = np.zeros(states.shape + (vocab_size + 1,))
        kernel[..., :vocab_size] = np.where(masked[..., None], r * probs, 0.0)
        kernel[..., vocab_size] = np.where(masked, 1.0 - r, 0.0)
        np.put_along_axis(kernel, np.where(masked, vocab_size, states)[..., None],
                          np.where(masked, 1.0 - r, 1.0)[..., None], axis=-1)
        law = _apply_product_kernel(law, kernel)
    return _clean_law(law, vocab_size, length)


def _apply_product_kernel(law: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``law'(y') = sum_y law(y) prod_i kernel[y, i, y'_i]``."""
    live = law > 0
    joint = law[live][:, None]
    for i in range(kernel.shape[1]):
        joint = (joint[:, :, None] * kernel[live, i][:, None, :]).reshape(joint.shape[0], -1)
    return joint.sum(axis=0)


# -- parallel unmasking ----------------------------------------------------------------
def _block_sizes(owner: str, k, length: int) -> tuple[int, ...]:
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        k = check_within_length(owner, "k", k, length)
        return tuple([k] * (length // k) + ([length % k] if length % k else []))
    is_int = lambda value: isinstance(value, (int, np.integer)) and not isinstance(value, bool)  # noqa: E731
    if isinstance(k, (str, bytes)) or not hasattr(k, "__iter__") or not all(is_int(s) for s in k):
        raise InvalidArgumentError(
            f"{owner}: k must be a positive int or a sequence of positive int block sizes summing to "
            f"length={length}, got {k!r}"
        )
    sizes = tuple(int(s) for s in k)
    if not sizes or any(s < 1 for s in sizes) or sum(sizes) != length:
        raise InvalidArgumentError(
            f"{owner}: k must be a positive int or a sequence of positive block sizes summing to "
            f"length={length}, got {k!r}"
        )
    return sizes


@partial(jax.jit, static_argnames=("static", "num_samples", "sizes"))
def _parallel_unmask(key, dynamic, static, num_samples: int, sizes: tuple[int, ...]):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    key_order, key_tokens = jax.random.split(key)
    keys = jax.random.split(key_order, num_samples)
    orders = jax.vmap(lambda k: jax.random.permutation(k, length))(keys)
    rank = jnp.argsort(orders, axis=1)
    block_of_rank = jnp.asarray(np.repeat(np.arange(len(sizes)), sizes), jnp.int32)
    block = block_of_rank[rank]  # (n, L): the block in which each position is revealed

    def step(b, tokens):
        observed = tokens != vocab_size
        drawn = categorical(jax.random.fold_in(key_tokens, b), family(tokens, observed)).astype(jnp.int32)
        return jnp.where(block == b, drawn, tokens)

    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    tokens = jax.lax.fori_loop(0, len(sizes), step, tokens)
    return tokens, MaskedStats(nfe=jnp.full((num_samples,), len(sizes), jnp.int32))


def parallel_unmask(key, conditionals, num_samples: int, k):
    r"""Reveal a uniformly random order ``k`` positions per network call (conditional-independence shortcut).

    Parameters
    ----------
    key
        PRNG key.
    conditionals
        A conditional family or an exact model.
    num_samples
        Number of sequences.
    k
        Tokens per call (the last block takes the remainder), or a sequence
        of block sizes summing to ``L`` (e.g. from
        :func:`arprob.samplers.budget.budgeted_blocks`).

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : MaskedStats
        ``nfe`` is the number of blocks, :math:`\lceil L/k\rceil`.
    """
    owner = "parallel_unmask"
    family = as_conditionals(conditionals, owner)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size)
    sizes = _block_sizes(owner, k, family.length)
    dynamic, static = split_static(family)
    return _parallel_unmask(key, dynamic, static, num_samples, sizes)


@refuses_nan_output
def parallel_unmask_law(conditionals, k, *, max_entries: int = 2**26) -> np.ndarray:
    r"""Exact law of :func:`parallel_unmask` (float64, lexicographic over ``V**L``).

    With block sizes :math:`b_1, b_2, \dots`, the revealed set grows
    :math:`\emptyset = S_0 \subset S_1 \subset \cdots` with each new block a
    uniform subset of the still-masked positions, so

    .. math::

        f(S \cup B) \mathrel{+}= f(S)\, \binom{L-|S|}{|B|}^{-1} \prod_{i\in B} q(x_i \mid x_S),
        \qquad \text{law}(x) = f([L]).

    For ``k = 1`` this is the random-order ancestral law; for ``k > 1`` it
    differs from it whenever tokens revealed together are dependent.
    """
    owner = "parallel_unmask_law"
    family = as_conditionals(conditionals, owner)
    vocab_size, length = family.vocab_size, family.length
    sizes = _block_sizes(owner, k, length)
    check_enumeration(owner, vocab_size, length, factor=2**length, max_entries=max_entries,
                      what="the parallel-unmasking law")
    sequences = all_sequences(vocab_size, length)
    log_f = {0: np.zeros(sequences.shape[0])}
    for size in sizes:
        next_f: dict[int, np.ndarray] = {}
        for subset, values in log_f.items():
            observed = np.array([(subset >> i) & 1 for i in range(length)], dtype=bool)
            log_q = _log_conditionals_on(family, sequences, observed)  # (N, L)
            free = [i for i in range(length) if not observed[i]]
            log_choice = -math.log(math.comb(len(free), size))
            for block in combinations(free, size):
                code = subset | sum(1 << i for i in block)
                term = values + log_choice + log_q[:, list(block)].sum(axis=1)
                next_f[code] = np.logaddexp(next_f[code], term) if code in next_f else term
        log_f = next_f
    return np.exp(log_f[2**length - 1])


# -- first hitting -----------------------------------------------------------------------
@partial(jax.jit, static_argnames=("static", "num_samples"))
def _first_hitting(key, dynamic, static, num_samples: int):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    key_time, key_position, key_tokens = jax.random.split(key, 3)
    rows = jnp.arange(num_samples)
    float_dtype = jnp.result_type(float)

    def step(j, carry):
        tokens, time, times = carry
        masked = tokens == vocab_size
        remaining = (length - j).astype(float_dtype)
        u = jax.random.uniform(jax.random.fold_in(key_time, j), (num_samples,), float_dtype)
        time = time * u ** (1.0 / remaining)
        # a uniformly random masked position: Gumbel-max over equal weights restricted to the masked set
        position = categorical(jax.random.fold_in(key_position, j),
                               jnp.where(masked, 0.0, -jnp.inf).astype(float_dtype))
        logits = family(tokens, ~masked)[rows, position]
        token = categorical(jax.random.fold_in(key_tokens, j), logits).astype(jnp.int32)
        return tokens.at[rows, position].set(token), time, times.at[:, j].set(time)

    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    carry = (tokens, jnp.ones((num_samples,), float_dtype), jnp.zeros((num_samples, length), float_dtype))
    tokens, _, times = jax.lax.fori_loop(0, length, step, carry)
    return tokens, FirstHittingStats(nfe=jnp.full((num_samples,), length, jnp.int32), times=times)


def first_hitting(key, conditionals, num_samples: int):
    r"""The first-hitting sampler of masked diffusion (linear schedule; exact, see theorem 5).

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : FirstHittingStats
        ``nfe`` (= ``L``) and the reveal ``times``.
    """
    owner = "first_hitting"
    family = as_conditionals(conditionals, owner)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size)
    dynamic, static = split_static(family)
    return _first_hitting(key, dynamic, static, num_samples)


@refuses_nan_output
def first_hitting_law(conditionals, *, max_entries: int = 2**24) -> np.ndarray:
    r"""Exact law of :func:`first_hitting` (float64, lexicographic over ``V**L``).

    A forward dynamic program over the :math:`(V+1)^L` partially masked
    states, one reveal per step: from :math:`y` with masked set :math:`M`, go
    to :math:`y^{i\leftarrow v}` with probability :math:`q(v\mid y)/|M|`.  The
    reveal times are independent of the tokens and do not enter.  This is a
    different computation from :func:`arprob.samplers.ancestral_law` (a
    subset DP over clean sequences); theorem 5 says they agree.
    """
    owner = "first_hitting_law"
    family = as_conditionals(conditionals, owner)
    vocab_size, length = family.vocab_size, family.length
    check_enumeration(owner, vocab_size + 1, length, factor=length * vocab_size, max_entries=max_entries,
                      what="the first-hitting law")
    states = _noisy_states(vocab_size, length)
    probs = np.exp(_state_log_conditionals(family, states))  # (S, L, V)
    masked = states == vocab_size
    num_masked = masked.sum(axis=1)
    powers = (vocab_size + 1) ** np.arange(length - 1, -1, -1)
    index = states @ powers
    law = np.zeros(states.shape[0])
    law[-1] = 1.0
    for _ in range(length):
        moved = np.zeros_like(law)
        weight = np.where(num_masked > 0, law / np.maximum(num_masked, 1), 0.0)  # (S,)
        for i in range(length):
            live = masked[:, i] & (weight > 0)
            for v in range(vocab_size):
                target = index[live] + (v - vocab_size) * powers[i]
                np.add.at(moved, target, weight[live] * probs[live, i, v])
        law = moved
    return _clean_law(law, vocab_size, length)
