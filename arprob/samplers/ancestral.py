r"""Ancestral sampling in a given, fixed or uniformly random order.

Given a conditional family :math:`q` and an order :math:`\sigma`, ancestral
sampling draws

.. math::

    x_{\sigma(t)} \sim q(\,\cdot \mid x_{\sigma(<t)}), \qquad t = 0, \dots, L-1,

so its law is :math:`q_\sigma(x) = \prod_t q(x_{\sigma(t)} \mid x_{\sigma(<t)})`, and
with a fresh uniform order per sample it is the order mixture
:math:`\frac{1}{L!}\sum_\sigma q_\sigma(x)`.  For the exact conditionals of a
joint :math:`p` every :math:`q_\sigma = p` (chain rule in any order,
``proofs/01-chain-rule-any-order.md``).

:func:`ancestral` is the jit-compiled sampler (one network call per token).  Left to
right on an exact :class:`~arprob.MarkovChain`, :class:`~arprob.NGram` or
:class:`~arprob.HMM` it takes the model's own :math:`O(L)` scan instead
(``model.sample``: the prefix conditionals are table rows, or the filtered
latent state, carried along), which draws from the same law up to the
quantization of the model's sampling tables (within 1e-9 in total variation per
sequence, :func:`arprob._random.quantize`); ``stats.nfe`` still counts one
conditional per token.
:func:`ancestral_law` computes its law by enumeration, independently: for a
fixed order, by the product formula on every sequence; for ``"random"``, by a
dynamic program over revealed subsets,

.. math::

    f(\emptyset) = 1, \quad
    f(S) = \sum_{i \in S} f(S \setminus \{i\})\, q(x_i \mid x_{S\setminus\{i\}}), \quad
    \text{law}(x) = f([L]) / L!,

which sums over all :math:`L!` orders in :math:`O(2^L L)` conditional look-ups.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob._random import categorical
from arprob._validation import check_draw, check_enumeration, check_int, check_order, is_concrete, refuses_nan_output
from arprob.conditionals import ExactConditionals, as_conditionals, join_static, split_static
from arprob.distributions import HMM, MarkovChain, NGram
from arprob.errors import ArprobTypeError, InvalidOrderError


class AncestralStats(NamedTuple):
    """Per-sample statistics of :func:`ancestral`.

    Attributes
    ----------
    nfe
        Network (conditional-family) evaluations per sample, shape ``(num_samples,)``.
    """

    nfe: jax.Array


def _resolve_order(owner: str, order, length: int):
    """Return ``(random, fixed_order)`` from the user's ``order`` argument."""
    if order is None:
        return False, jnp.arange(length, dtype=jnp.int32)
    if isinstance(order, str):
        if order != "random":  # any other string
            raise InvalidOrderError(
                f"{owner}: order={order!r} is not understood; expected None (left to right), "
                f"'random' (uniform order per sample) or a permutation of range({length})"
            )
        return True, jnp.arange(length, dtype=jnp.int32)
    if isinstance(order, (bool, int, float, np.number)) or (
            is_concrete(order) and not isinstance(order, (jax.Array, np.ndarray, list, tuple))):
        raise InvalidOrderError(f"{owner}: order={order!r} is not understood; expected None (left to right), "
                                f"'random' or a permutation of range({length})")
    if is_concrete(order):
        check_order(owner, order, length)
        if np.ndim(order) != 1:
            raise InvalidOrderError(f"{owner}: order has shape {np.shape(order)}, expected ({length},)")
    return False, jnp.asarray(order, dtype=jnp.int32)


@partial(jax.jit, static_argnames=("static", "num_samples", "random_order"))
def _ancestral(key, dynamic, static, order, num_samples: int, random_order: bool):
    conditionals = join_static(dynamic, static)
    length, vocab_size = conditionals.length, conditionals.vocab_size
    key_order, key_tokens = jax.random.split(key)
    if random_order:
        keys = jax.random.split(key_order, num_samples)
        orders = jax.vmap(lambda k: jax.random.permutation(k, length))(keys).astype(jnp.int32)
    else:
        orders = jnp.broadcast_to(order, (num_samples, length))
    rows = jnp.arange(num_samples)

    def step(t, carry):
        tokens, observed = carry
        position = orders[:, t]
        logits = conditionals(tokens, observed)  # (n, L, V)
        chosen = logits[rows, position]  # (n, V)
        token = categorical(jax.random.fold_in(key_tokens, t), chosen)
        tokens = tokens.at[rows, position].set(token.astype(jnp.int32))
        observed = observed.at[rows, position].set(True)
        return tokens, observed

    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)
    observed = jnp.zeros((num_samples, length), bool)
    tokens, _ = jax.lax.fori_loop(0, length, step, (tokens, observed))
    return tokens, AncestralStats(nfe=jnp.full((num_samples,), length, jnp.int32))


def ancestral(key, conditionals, num_samples: int, order=None):
    """Draw ``num_samples`` sequences by ancestral sampling.

    Parameters
    ----------
    key
        PRNG key.
    conditionals
        A conditional family (:class:`~arprob.Conditionals`) or an exact model.
    num_samples
        Number of sequences.
    order
        ``None`` (left to right), ``"random"`` (a fresh uniform permutation per
        sample) or a permutation of ``range(length)``.

    Returns
    -------
    tokens : Int[Array, "num_samples length"]
    stats : AncestralStats
        ``stats.nfe`` is ``length`` for every sample (one call per token).

    Notes
    -----
    Left to right (``order=None`` or the identity) on an exact ``MarkovChain``, ``NGram`` or
    ``HMM`` (directly or through :func:`~arprob.conditionals.exact`), the draw is
    ``model.sample(key, (num_samples,))``: an :math:`O(L)` scan over time on the whole batch with
    no any-subset query (see the module docstring).  Other orders and families take the
    any-subset path, one conditional-family call per token.
    """
    owner = "ancestral"
    family = as_conditionals(conditionals, owner)
    key, num_samples = check_draw(owner, key, num_samples, family.length, family.vocab_size)
    random_order, fixed = _resolve_order(owner, order, family.length)
    model = _left_to_right_model(family, order, random_order, fixed)
    if model is not None:  # the model's O(L) scan over time
        tokens = model.sample(key, (num_samples,))
        return tokens, AncestralStats(nfe=jnp.full((num_samples,), family.length, jnp.int32))
    dynamic, static = split_static(family)
    return _ancestral(key, dynamic, static, fixed, num_samples, random_order)


def _left_to_right_model(family, order, random_order: bool, fixed):
    """The exact chain model or HMM behind ``family`` when the order is left to right, else ``None``."""
    if random_order or not isinstance(family, ExactConditionals):
        return None
    if not isinstance(family.model, (MarkovChain, NGram, HMM)):
        return None
    if order is not None and not (is_concrete(fixed) and np.array_equal(np.asarray(fixed), np.arange(family.length))):
        return None
    return family.model


@partial(jax.jit, static_argnames=("static",))
def _gathered_log_conditionals(dynamic, static, sequences, observed):
    """``log q(y_i | y_S)`` for every row y and position i, shape (N, L)."""
    family = join_static(dynamic, static)
    logits = jax.nn.log_softmax(family(sequences, observed), axis=-1)
    return jnp.take_along_axis(logits, sequences[..., None], axis=-1)[..., 0]


def _log_conditionals_on(family, sequences, observed_row, chunk: int = 4096):
    dynamic, static = split_static(family)
    outputs = []
    for start in range(0, sequences.shape[0], chunk):
        block = jnp.asarray(sequences[start : start + chunk])
        mask = jnp.broadcast_to(jnp.asarray(observed_row), block.shape)
        outputs.append(np.asarray(_gathered_log_conditionals(dynamic, static, block, mask), np.float64))
    return np.concatenate(outputs, axis=0)


@refuses_nan_output
def ancestral_law(conditionals, order=None, *, max_entries: int = 2**26) -> np.ndarray:
    """Exact law of :func:`ancestral`, float64 over all ``V**L`` sequences (lexicographic).

    Computed by enumeration, independently of the sampler: the product
    formula for a fixed order, and the subset dynamic program for
    ``order="random"`` (see the module docstring).  Refused when the
    enumeration exceeds ``max_entries``.
    """
    owner = "ancestral_law"
    family = as_conditionals(conditionals, owner)
    vocab_size, length = family.vocab_size, family.length
    random_order, fixed = _resolve_order(owner, order, length)
    max_entries = check_int(owner, "max_entries", max_entries, minimum=1)
    if not is_concrete(fixed):
        raise ArprobTypeError(f"{owner}: order must be concrete (not traced)")
    factor = 2**length if random_order else length
    check_enumeration(owner, vocab_size, length, factor=factor, max_entries=max_entries,
                      what="the ancestral law")
    sequences = all_sequences(vocab_size, length)
    if not random_order:
        sigma = np.asarray(fixed)
        log_law = np.zeros(sequences.shape[0])
        observed = np.zeros(length, dtype=bool)
        for position in sigma:
            log_q = _log_conditionals_on(family, sequences, observed)
            log_law += log_q[:, position]
            observed[position] = True
        return np.exp(log_law)
    # subset dynamic program over revealed sets, encoded as bitmasks
    num_subsets = 2**length
    log_f = np.full((num_subsets, sequences.shape[0]), -np.inf)
    log_f[0] = 0.0
    for subset in range(num_subsets - 1):
        observed = np.array([(subset >> i) & 1 for i in range(length)], dtype=bool)
        if not np.isfinite(log_f[subset]).any():
            continue
        log_q = _log_conditionals_on(family, sequences, observed)
        for i in range(length):
            if not observed[i]:
                target = subset | (1 << i)
                log_f[target] = np.logaddexp(log_f[target], log_f[subset] + log_q[:, i])
    return np.exp(log_f[-1] - math.lgamma(length + 1))
