r"""Forward-backward with partial evidence over a finite-context chain.

A context-:math:`K` next-token model over vocabulary :math:`V` is a Markov chain
on *windows* :math:`w_t = (x_{t-K+1}, \dots, x_t)` of the last :math:`K` tokens,
where positions before the start hold the beginning-of-sequence id :math:`V`.
Windows are indexed in base :math:`V+1`, most significant token first, so the
``(V+1)**K`` windows index the rows of the flattened table
``log_table[w, v] = log p(x_t = v | w_{t-1} = w)``.  A first-order Markov chain
is the case :math:`K = 1` whose row :math:`V` is the initial law.

With evidence on a subset :math:`S` of positions (``observed``), the forward
variables are

.. math::

    \alpha_t(w) = \log p(x_{S \cap [0, t]},\, w_t = w), \qquad
    \beta_t(w) = \log p(x_{S \cap (t, L)} \mid w_t = w),

so that :math:`\log p(x_S) = \operatorname{logsumexp}_w \alpha_{L-1}(w)` and

.. math::

    p(x_i = v \mid x_{S \setminus \{i\}}) \propto
    \sum_w e^{\alpha_{i-1}(w)}\, p(v \mid w)\, e^{\beta_i(\mathrm{next}(w, v))}.

Each function here is for one sequence and one parameter set; batching is done
by the callers with ``jnp.vectorize``.  Cost: :math:`O(L (V+1)^K V)` time.

Bad input.  The public functions check their arguments at the boundary (shapes and dtypes always,
values when concrete; traced values pass): ``vocab_size`` and ``context_size`` are ints >= 1 with
:math:`(V+1)^K < 2^{31}` (window ids are int32), ``log_table`` has shape ``((V+1)**K, V)`` and no
NaN or ``+inf`` (``-inf`` is an impossible transition: a sequence that needs it has
:math:`\log p = -\infty`, and a conditional given an impossible event is the uniform law, see
:func:`chain_conditional_logits`), tokens are integers in ``[0, V)`` (or ``[0, V]`` where unobserved)
and ``observed`` is a bool mask of the tokens' shape.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from arprob._validation import check_int, check_table_size, check_tokens
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, ShapeError


def _check_sizes(owner: str, vocab_size, context_size) -> tuple[int, int]:
    """``(vocab_size, context_size)`` as ints, refusing window ids that would overflow int32."""
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    context_size = check_int(owner, "context_size", context_size, minimum=1)
    log2_windows = context_size * math.log2(vocab_size + 1)  # logarithms: never forms (V+1)**K
    if log2_windows >= 31:
        raise EnumerationTooLargeError(
            f"{owner}: (vocab_size + 1)**context_size = {vocab_size + 1}**{context_size} windows (about "
            f"2^{log2_windows:.1f}) do not fit the int32 window ids (at most 2^31); use a smaller vocab_size or "
            "context_size")
    return vocab_size, context_size


def _check_token_array(owner: str, name: str, tokens, vocab_size: int, *, single: bool = False,
                       values: bool = True):
    """Integer tokens (not bool, not float) of shape ``(L,)`` (``single``) or ``(..., L)`` with ``L >= 1``;
    with ``values``, concrete tokens must lie in ``[0, vocab_size)``."""
    if tokens is None or isinstance(tokens, (str, bytes)):
        raise ArprobTypeError(f"{owner}: {name} must be an array of integer token ids, got "
                              f"{type(tokens).__name__} {tokens!r:.60}")
    if not isinstance(tokens, (jax.Array, np.ndarray)):
        try:
            tokens = np.asarray(tokens)
        except (TypeError, ValueError):
            raise ArprobTypeError(f"{owner}: {name} must be an array of integer token ids, got "
                                  f"{type(tokens).__name__}") from None
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ArprobTypeError(f"{owner}: {name} has dtype {tokens.dtype}, expected integer token ids in "
                              f"[0, {vocab_size}) (cast with .astype(int) if the values are whole numbers)")
    if tokens.ndim < 1 or tokens.shape[-1] < 1 or (single and tokens.ndim != 1):
        expected = "(L,), one sequence with L >= 1 (vmap over a batch)" if single else "(..., L) with L >= 1"
        raise ShapeError(f"{owner}: {name} has shape {tokens.shape}, expected {expected}")
    if values:
        check_tokens(owner, name, tokens, vocab_size)
    return jnp.asarray(tokens)


def _check_table(owner: str, log_table, vocab_size: int, context_size: int):
    from arprob.inference.hmm import _check_log_potentials, _real_array

    log_table = _real_array(owner, "log_table", log_table)
    expected = ((vocab_size + 1) ** context_size, vocab_size)
    if log_table.shape != expected:
        raise ShapeError(f"{owner}: log_table has shape {log_table.shape}, expected ((vocab_size + 1)**context_size, "
                         f"vocab_size) = {expected} for vocab_size={vocab_size}, context_size={context_size} (row w: "
                         "the log-law of the next token after window w)")
    _check_log_potentials(owner, {"log_table": log_table})
    return log_table.astype(jnp.result_type(log_table, float))


def _check_observed(owner: str, observed, length: int):
    from arprob.inference.hmm import _check_mask

    if observed is None:
        raise ArprobTypeError(f"{owner}: observed must be a bool array of shape ({length},) (True = observed), "
                              "got None")
    if hasattr(observed, "shape") and tuple(observed.shape) != (length,):
        raise ShapeError(f"{owner}: observed has shape {tuple(observed.shape)} but tokens has shape ({length},); "
                         "expected one bool per token (True = observed)")
    return _check_mask(owner, observed, length, name="observed")


def next_window_index(vocab_size: int, context_size: int) -> np.ndarray:
    """``next[w, v]``: index of the window after emitting ``v`` from window ``w``."""
    vocab_size, context_size = _check_sizes("next_window_index", vocab_size, context_size)
    check_table_size("next_window_index", "the table of next windows", ((vocab_size + 1) ** context_size, vocab_size),
                     fix="use a smaller vocab_size or context_size", itemsize=4)
    base = vocab_size + 1
    num_windows = base**context_size
    rest = np.arange(num_windows) % (base ** (context_size - 1))
    return (rest[:, None] * base + np.arange(vocab_size)[None, :]).astype(np.int32)


def start_window_index(vocab_size: int, context_size: int) -> int:
    """Index of the all-BOS window that precedes the first token."""
    vocab_size, context_size = _check_sizes("start_window_index", vocab_size, context_size)
    base = vocab_size + 1
    return int(sum(vocab_size * base**j for j in range(context_size)))


def window_indices(tokens, vocab_size: int, context_size: int):
    """Index of the window *preceding* each position, shape ``(..., L)``."""
    vocab_size, context_size = _check_sizes("window_indices", vocab_size, context_size)
    tokens = _check_token_array("window_indices", "tokens", tokens, vocab_size)
    return _window_indices(tokens, vocab_size, context_size)


def _window_indices(tokens, vocab_size: int, context_size: int):
    base = vocab_size + 1
    padded = jnp.concatenate(
        [jnp.full(tokens.shape[:-1] + (context_size,), vocab_size, tokens.dtype), tokens], axis=-1
    )
    length = tokens.shape[-1]
    index = jnp.zeros(tokens.shape, jnp.int32)
    for j in range(context_size):
        index = index * base + padded[..., j : j + length].astype(jnp.int32)
    return index


def chain_log_prob(log_table, tokens, *, vocab_size: int, context_size: int):
    r"""Log-likelihood :math:`\sum_t \log p(x_t \mid w_{t-1})` of full sequences ``(..., L)``."""
    owner = "chain_log_prob"
    vocab_size, context_size = _check_sizes(owner, vocab_size, context_size)
    log_table = _check_table(owner, log_table, vocab_size, context_size)
    tokens = _check_token_array(owner, "tokens", tokens, vocab_size)
    return _chain_log_prob(log_table, tokens, vocab_size=vocab_size, context_size=context_size)


@partial(jax.jit, static_argnames=("vocab_size", "context_size"))
def _chain_log_prob(log_table, tokens, *, vocab_size: int, context_size: int):
    windows = _window_indices(tokens, vocab_size, context_size)
    return jnp.take_along_axis(log_table[windows], tokens[..., None].astype(jnp.int32), axis=-1)[
        ..., 0
    ].sum(axis=-1)


def _evidence(tokens, observed, vocab_size: int, dtype):
    """Evidence ``e_t(v)``: 1 where v agrees with an observed token (or t is unobserved), else 0."""
    hit = jax.nn.one_hot(tokens, vocab_size, dtype=bool)
    return jnp.where(observed[:, None], hit, True).astype(dtype)


def _safe_normalize(vector):
    """``(vector / sum, log sum)``; an all-zero vector stays zero with log sum -inf."""
    total = jnp.sum(vector)
    positive = total > 0
    return jnp.where(positive, vector / jnp.where(positive, total, 1.0), 0.0), jnp.where(
        positive, jnp.log(jnp.where(positive, total, 1.0)), -jnp.inf
    )


def _forward(table, evidence, *, vocab_size: int, context_size: int):
    """Scaled forward pass: normalized ``a[t] ∝ exp(alpha_t)`` (L, W) and ``log c[t]`` (L,).

    ``alpha_t = log a[t] + sum_{s <= t} log c[s]``; working with normalized
    probabilities instead of log-sum-exp keeps float64's relative precision and
    avoids a transcendental per entry.
    """
    base = vocab_size + 1
    num_windows = table.shape[0]
    rest = num_windows // base
    a0 = jnp.zeros((num_windows,), table.dtype).at[start_window_index(vocab_size, context_size)].set(1.0)
    bos_column = jnp.zeros((rest, 1), table.dtype)

    def step(a, evidence_t):
        joint = a[:, None] * table * evidence_t[None, :]  # (W, V)
        merged = joint.reshape(base, rest, vocab_size).sum(axis=0)  # (rest, V)
        new = jnp.concatenate([merged, bos_column], axis=1).reshape(num_windows)
        new, log_c = _safe_normalize(new)
        return new, (new, log_c)

    _, (scaled, log_c) = jax.lax.scan(step, a0, evidence)
    return scaled, log_c


def _backward(table, evidence, next_index, *, num_windows: int):
    """Scaled backward pass: ``b[t] ∝ exp(beta_t)`` (L, W), ``b[L-1] = 1``."""

    def step(b, evidence_next):
        new = jnp.sum(table * evidence_next[None, :] * b[next_index], axis=1)
        new, _ = _safe_normalize(new)
        return new, new

    last = jnp.ones((num_windows,), table.dtype)
    _, scaled = jax.lax.scan(step, last, evidence[1:], reverse=True)
    return jnp.concatenate([scaled, last[None]], axis=0)


def chain_marginal_log_prob(log_table, tokens, observed, *, vocab_size: int, context_size: int):
    r""":math:`\log p(x_S)` for one sequence; ``observed`` marks :math:`S` (``-inf`` if impossible)."""
    return _chain_marginal_log_prob(*_check_partial("chain_marginal_log_prob", log_table, tokens, observed,
                                                    vocab_size, context_size))


def _check_partial(owner, log_table, tokens, observed, vocab_size, context_size):
    """Validated ``(log_table, tokens, observed, vocab_size, context_size)`` for one sequence with evidence."""
    vocab_size, context_size = _check_sizes(owner, vocab_size, context_size)
    log_table = _check_table(owner, log_table, vocab_size, context_size)
    tokens = _check_token_array(owner, "tokens", tokens, vocab_size, single=True, values=False)
    observed = _check_observed(owner, observed, tokens.shape[0])
    # unobserved positions may hold anything in [0, vocab_size] (vocab_size: the mask token)
    check_tokens(owner, "tokens", tokens, vocab_size, observed=observed)
    return log_table, tokens, observed, vocab_size, context_size


@partial(jax.jit, static_argnums=(3, 4))
def _chain_marginal_log_prob(log_table, tokens, observed, vocab_size: int, context_size: int):
    table = jnp.exp(log_table)
    evidence = _evidence(tokens, observed, vocab_size, table.dtype)
    _, log_c = _forward(table, evidence, vocab_size=vocab_size, context_size=context_size)
    return jnp.sum(log_c)


def chain_conditional_logits(log_table, tokens, observed, *, vocab_size: int, context_size: int):
    r"""Normalized :math:`\log p(x_i = v \mid x_{S\setminus\{i\}})`, shape ``(L, V)``.

    A conditioning event of probability zero has no conditional; arprob returns
    the uniform law there (documented convention) so that no NaN escapes.
    """
    return _chain_conditional_logits(*_check_partial("chain_conditional_logits", log_table, tokens, observed,
                                                     vocab_size, context_size))


@partial(jax.jit, static_argnums=(3, 4))
def _chain_conditional_logits(log_table, tokens, observed, vocab_size: int, context_size: int):
    table = jnp.exp(log_table)
    num_windows = table.shape[0]
    evidence = _evidence(tokens, observed, vocab_size, table.dtype)
    next_index = jnp.asarray(next_window_index(vocab_size, context_size))
    scaled_alpha, _ = _forward(table, evidence, vocab_size=vocab_size, context_size=context_size)
    scaled_beta = _backward(table, evidence, next_index, num_windows=num_windows)
    start = jnp.zeros((1, num_windows), table.dtype).at[0, start_window_index(vocab_size, context_size)].set(1.0)
    previous = jnp.concatenate([start, scaled_alpha[:-1]], axis=0)  # a_{i-1}, (L, W)
    # mass[i, v] ∝ sum_w a_{i-1}(w) p(v | w) b_i(next(w, v)); the scale of row i cancels
    mass = jnp.einsum("iw,wv,iwv->iv", previous, table, scaled_beta[:, next_index])
    return normalize_or_uniform(jnp.log(mass))


def normalize_or_uniform(unnormalized):
    """Log-normalize the last axis; rows that are all -inf become uniform (NaN and +inf are refused)."""
    from arprob.inference.hmm import _check_log_potentials, _real_array

    owner = "normalize_or_uniform"
    unnormalized = _real_array(owner, "unnormalized", unnormalized)
    if unnormalized.ndim < 1 or unnormalized.shape[-1] < 1:
        raise ShapeError(f"{owner}: unnormalized has shape {unnormalized.shape}, expected (..., V) with V >= 1")
    _check_log_potentials(owner, {"unnormalized": unnormalized})
    unnormalized = unnormalized.astype(jnp.result_type(unnormalized, float))
    total = logsumexp(unnormalized, axis=-1, keepdims=True)
    impossible = jnp.isneginf(total)
    vocab_size = unnormalized.shape[-1]
    uniform = jnp.full_like(unnormalized, -jnp.log(vocab_size))
    safe_total = jnp.where(impossible, 0.0, total)
    return jnp.where(impossible, uniform, unnormalized - safe_total)
