r"""The one categorical-sampling primitive every arprob sampler uses.

Keeping a single entry point lets the library fix sampling precision in one
place.  :func:`categorical` is Gumbel-max sampling,
:math:`\arg\max_i (l_i + G_i)`, like ``jax.random.categorical``, but with a
Gumbel noise :func:`gumbel` that is not truncated where it matters.

Why.  ``jax.random.gumbel`` computes :math:`G = -\log(-\log u)` from a uniform
:math:`u` on the float grid of ``jax.random.uniform``.  In float32 (default
``mode="low"``) :math:`u \le 1 - 2^{-23}`, so :math:`G \le 15.94`: a token more
than about 16 nats below the best one is (almost) never drawn, whatever its
share of the mass (``proofs/13-float32-gumbel-max.md``, :mod:`arprob.precision`).

The construction (float32).  Per noise value, two 32-bit words
:math:`w_0, w_1`, and one word :math:`r` per row (shared by the ``V`` values of
one categorical draw).  The top bit :math:`\beta` of :math:`w_0` picks a half;
the other 95 bits form :math:`m = (w_0 \bmod 2^{31})\,2^{64} + w_1 2^{32} + r`
and :math:`X = \operatorname{trunc}_{24}(m\,2^{-96}) \in [2^{-96}, 1/2)`, the
value truncated to 24 significant bits (:math:`m = 0` gives :math:`2^{-97}`).
Then

.. math::

    E = \begin{cases} -\operatorname{log1p}(-X) & \beta = 0 \quad (E < \log 2)\\
                       -\log X & \beta = 1 \quad (E \ge \log 2)\end{cases},
    \qquad G = -\log E .

With :math:`Y` uniform on :math:`[0, 1/2)` in place of :math:`X` this is an
exact Exp(1) variable :math:`E` and an exact standard Gumbel :math:`G`; the
float value :math:`X` is :math:`Y` truncated to 24 bits (relative error below
:math:`2^{-23}`) whenever :math:`Y \ge 2^{-73}`, that is, except with
probability :math:`2^{-72}` per value.  Both tails are resolved:
:math:`G` reaches 50.6 at full precision (cap 67.2, floor :math:`-4.2`)
instead of :math:`[-4.47, 15.94]`.  The shared word :math:`r` only enters when
:math:`w_0 \bmod 2^{31} = 0` and :math:`w_1 < 2^{23}` (probability
:math:`2^{-40}`), so two values of one row share it with probability at most
:math:`\binom{V}{2} 2^{-80}`; it costs one word per row instead of one per
value.  The logarithm of the branch :math:`\beta = 1` is taken as
:math:`\log X = e \log 2 + \operatorname{log1p}(f)` from the exponent :math:`e`
and fraction :math:`f` of :math:`X`, so each value needs one ``log1p`` and one
``log``, like JAX's own sampler.

float64 logits use two 64-bit words per value (127 bits, 53 kept, no shared
word).  Half-precision logits are sampled in float32.  Logits are shifted by
their maximum before the noise is added, so the float sums stay small.
:mod:`arprob.precision` states the law and the bounds (theorem 13).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arprob.errors import ArprobTypeError, ShapeError

__all__ = ["categorical", "gumbel"]

# (unsigned word dtype, words per value, shared row word) for each noise dtype
_LAYOUT = {
    np.dtype("float32"): (np.dtype("uint32"), 2, True),
    np.dtype("float64"): (np.dtype("uint64"), 2, False),
}


def _truncated_float(words, dtype):
    r"""The number :math:`\sum_k w_k 2^{-B(k+1)}` truncated to the precision of ``dtype``.

    ``words`` are unsigned arrays of bit width :math:`B` (broadcastable), most
    significant first.  Returns ``(exponent, fraction_bits)`` with value
    :math:`(1 + \text{fraction\_bits}\, 2^{-p}) 2^{\text{exponent}}`, :math:`p` the
    number of stored mantissa bits.  The all-zero input gives exponent
    :math:`-B\,n - 1` and fraction 0 (half the smallest nonzero value).
    """
    info = jnp.finfo(dtype)
    width = info.bits
    uint = words[0].dtype
    count = len(words)
    top = jnp.broadcast_to(words[-1], jnp.broadcast_shapes(*[w.shape for w in words]))
    following = jnp.zeros_like(top)
    index = jnp.full(top.shape, count - 1, jnp.int32)
    for k in range(count - 2, -1, -1):  # pick the first nonzero word and the one after it
        nonzero = words[k] != 0
        following = jnp.where(nonzero, words[k + 1], following)
        top = jnp.where(nonzero, words[k], top)
        index = jnp.where(nonzero, k, index)
    leading = lax.clz(top)
    # shifts by `width` give 0 in XLA, which is what the formula needs at leading == 0
    normal = lax.shift_left(top, leading) | lax.shift_right_logical(following, jnp.asarray(width, uint) - leading)
    fraction = lax.shift_right_logical(normal, jnp.asarray(width - 1 - info.nmant, uint)) & jnp.asarray(
        (1 << info.nmant) - 1, uint)
    exponent = -1 - leading.astype(jnp.int32) - width * index
    exponent = jnp.where(top == 0, -width * count - 1, exponent)
    return exponent, fraction


def _gumbel_from_words(words, dtype):
    """Gumbel noise from explicit random words (see the module docstring).

    ``words`` is a list of unsigned arrays, most significant first: for float32
    ``[w0, w1, r]`` (uint32), for float64 ``[w0, w1]`` (uint64).  Deterministic;
    the tests and :mod:`arprob.precision` evaluate it on chosen bit patterns.
    """
    dtype = np.dtype(dtype)
    info = jnp.finfo(dtype)
    width = info.bits
    uint = words[0].dtype
    first = words[0]
    lower = lax.shift_right_logical(first, jnp.asarray(width - 1, uint)) == 0
    rest = first & jnp.asarray((1 << (width - 1)) - 1, uint)
    exponent, fraction = _truncated_float([rest, *words[1:]], dtype)
    biased = lax.shift_left((exponent + info.maxexp - 1).astype(uint), jnp.asarray(info.nmant, uint))
    value = lax.bitcast_convert_type(biased | fraction, dtype)  # X in [2^-(B n + 1), 1/2)
    fraction_value = fraction.astype(dtype) * jnp.asarray(2.0**-info.nmant, dtype)
    log_term = jnp.log1p(jnp.where(lower, -value, fraction_value))
    # E = -log1p(-X) on the lower half, E = -log X = -(e log 2 + log1p(f)) on the upper half
    exponential = jnp.where(lower, -log_term, -exponent.astype(dtype) * jnp.asarray(math.log(2.0), dtype) - log_term)
    return -jnp.log(exponential)


def _noise_dtype(dtype) -> np.dtype:
    return np.dtype("float64") if np.dtype(dtype) == np.dtype("float64") else np.dtype("float32")


@partial(jax.jit, static_argnames=("shape", "dtype"))
def _gumbel(key, shape, dtype):
    uint, per_value, shared = _LAYOUT[np.dtype(dtype)]
    if not shape:
        return _gumbel(key, (1,), dtype)[0]
    if not shared:
        words = jax.random.bits(key, (per_value, *shape), uint)
        return _gumbel_from_words([words[k] for k in range(per_value)], dtype)
    # one call with the row's words side by side, (w0 ..., w1 ..., r): faster to run than two calls,
    # and faster to compile than a leading axis of size 2
    size = shape[-1]
    words = jax.random.bits(key, (*shape[:-1], per_value * size + 1), uint)
    values = [words[..., k * size:(k + 1) * size] for k in range(per_value)]
    return _gumbel_from_words([*values, words[..., -1:]], dtype)


def gumbel(key, shape=(), dtype=None):
    """Standard Gumbel noise of ``shape``, not truncated where it matters.

    Parameters
    ----------
    key
        PRNG key.
    shape
        Output shape; the last axis is the "row" that shares one extra word
        (see the module docstring).
    dtype
        ``float32`` or ``float64`` (default: JAX's default float dtype).

    Returns
    -------
    Float[Array, "*shape"]
        Values in ``[gumbel_floor, gumbel_cap]`` of :func:`arprob.precision.gumbel_cap`
        with ``mode="arprob"``; law in ``proofs/13-float32-gumbel-max.md``.
    """
    dtype = np.dtype(jnp.result_type(float) if dtype is None else dtype)
    if dtype not in _LAYOUT:
        raise ArprobTypeError(f"gumbel: dtype={dtype}, expected float32 or float64")
    if dtype == np.dtype("float64") and not jax.config.jax_enable_x64:
        raise ArprobTypeError("gumbel: dtype=float64 needs jax_enable_x64 (or pass dtype=float32)")
    return _gumbel(key, tuple(int(d) for d in shape), dtype)


@partial(jax.jit, static_argnames=("shape",))
def _categorical(key, logits, shape):
    # A row of -inf gives NaN - NaN - ... and argmax returns 0, as jax.random.categorical does.  (A guard
    # with jnp.where here makes XLA fuse the whole noise computation into the argmax loop: 1.5-2x slower.)
    shifted = logits - jnp.max(logits, axis=-1, keepdims=True)
    noise = _gumbel(key, (*shape, logits.shape[-1]), np.dtype(logits.dtype))
    return jnp.argmax(noise + shifted, axis=-1)


def categorical(key, logits, shape=None):
    r"""Draw ``argmax(logits + G)`` over the last axis, with untruncated Gumbel noise.

    Same contract as ``jax.random.categorical(key, logits, axis=-1, shape=shape)``:
    the result has shape ``shape`` (default ``logits.shape[:-1]``), which must
    end with dimensions that broadcast with ``logits.shape[:-1]``; ties go to the
    first index.  The noise is :func:`gumbel` in float32 (float32 or
    half-precision logits) or float64 (float64 logits), so its law is
    :math:`\text{softmax}(l)` up to float rounding, without the tail cut of
    ``jax.random.categorical`` (theorem 13, part 6, ``proofs/13-float32-gumbel-max.md``):
    every token keeps its probability within a factor :math:`e^{\pm 2\eta}`, with
    :math:`\eta` the float rounding of the noise and of the sums (in float32 about
    :math:`2^{-20}` times the size of the winning value), outside an event of
    probability at most :math:`V\,2^{-72} + \binom{V}{2} 2^{-80}` (float32;
    :math:`V 2^{-75}` in float64).
    """
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(jnp.result_type(float))
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ShapeError(f"categorical: logits has shape {logits.shape}, expected (..., vocab_size) "
                         "with vocab_size >= 1")
    batch_shape = logits.shape[:-1]
    shape = batch_shape if shape is None else tuple(int(d) for d in shape)
    try:
        compatible = jnp.broadcast_shapes(shape, batch_shape) == shape
    except ValueError:
        compatible = False
    if not compatible:
        raise ShapeError(f"categorical: shape={shape} does not broadcast with the batch shape {batch_shape} "
                         "of logits (shape must end with dimensions compatible with logits.shape[:-1])")
    logits = logits.astype(_noise_dtype(logits.dtype))
    return _categorical(key, logits, shape)
