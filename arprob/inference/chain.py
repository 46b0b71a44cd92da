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
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp


def next_window_index(vocab_size: int, context_size: int) -> np.ndarray:
    """``next[w, v]``: index of the window after emitting ``v`` from window ``w``."""
    base = vocab_size + 1
    num_windows = base**context_size
    rest = np.arange(num_windows) % (base ** (context_size - 1))
    return (rest[:, None] * base + np.arange(vocab_size)[None, :]).astype(np.int32)


def start_window_index(vocab_size: int, context_size: int) -> int:
    """Index of the all-BOS window that precedes the first token."""
    base = vocab_size + 1
    return int(sum(vocab_size * base**j for j in range(context_size)))


def window_indices(tokens, vocab_size: int, context_size: int):
    """Index of the window *preceding* each position, shape ``(..., L)``."""
    base = vocab_size + 1
    padded = jnp.concatenate(
        [jnp.full(tokens.shape[:-1] + (context_size,), vocab_size, tokens.dtype), tokens], axis=-1
    )
    length = tokens.shape[-1]
    index = jnp.zeros(tokens.shape, jnp.int32)
    for j in range(context_size):
        index = index * base + padded[..., j : j + length].astype(jnp.int32)
    return index


@partial(jax.jit, static_argnames=("vocab_size", "context_size"))
def chain_log_prob(log_table, tokens, *, vocab_size: int, context_size: int):
    r"""Log-likelihood :math:`\sum_t \log p(x_t \mid w_{t-1})` of full sequences."""
    windows = window_indices(tokens, vocab_size, context_size)
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


@partial(jax.jit, static_argnames=("vocab_size", "context_size"))
def chain_marginal_log_prob(log_table, tokens, observed, *, vocab_size: int, context_size: int):
    r""":math:`\log p(x_S)` for one sequence; ``observed`` marks :math:`S`."""
    table = jnp.exp(log_table)
    evidence = _evidence(tokens, observed, vocab_size, table.dtype)
    _, log_c = _forward(table, evidence, vocab_size=vocab_size, context_size=context_size)
    return jnp.sum(log_c)


@partial(jax.jit, static_argnames=("vocab_size", "context_size"))
def chain_conditional_logits(log_table, tokens, observed, *, vocab_size: int, context_size: int):
    r"""Normalized :math:`\log p(x_i = v \mid x_{S\setminus\{i\}})`, shape ``(L, V)``.

    A conditioning event of probability zero has no conditional; arprob returns
    the uniform law there (documented convention) so that no NaN escapes.
    """
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
    """Log-normalize the last axis; rows that are all -inf become uniform."""
    total = logsumexp(unnormalized, axis=-1, keepdims=True)
    impossible = jnp.isneginf(total)
    vocab_size = unnormalized.shape[-1]
    uniform = jnp.full_like(unnormalized, -jnp.log(vocab_size))
    safe_total = jnp.where(impossible, 0.0, total)
    return jnp.where(impossible, uniform, unnormalized - safe_total)
