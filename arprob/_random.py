r"""The two categorical-sampling primitives every arprob sampler uses.

Keeping two entry points, each with a stated law, lets the library fix sampling
precision in one place:

* :func:`categorical`, for logits computed on the fly (a network's or an exact
  oracle's answer inside a sampler): Gumbel-max sampling,
  :math:`\arg\max_i (l_i + G_i)`, like ``jax.random.categorical``, but with a
  Gumbel noise :func:`gumbel` that is not truncated where it matters.  Costs
  :math:`V` logarithms per draw.
* :func:`sampling_table` and :func:`table_categorical`, for *fixed* tables
  (model parameters: the rows of a Markov chain, an HMM, the cells of a
  :class:`~arprob.TabularJoint`): inverse-CDF sampling on integers.  The
  cumulative probabilities are rounded once per table to integers at
  :math:`B` bits, and a draw compares random words with them; its law is the
  quantized table, exactly (see :func:`quantize` for the law and its distance
  to the table).  Costs one or two random words and :math:`\lceil\log_2 V\rceil`
  integer comparisons (or :math:`V - 1` for short rows) per draw, no logarithm.

Gumbel-max.  Why not ``jax.random.gumbel``: it computes :math:`G = -\log(-\log u)` from a uniform
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

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError

__all__ = ["TABLE_TOLERANCE", "SamplingTable", "any_undecided", "categorical", "choose_bits", "gumbel",
           "quantization_bound", "quantize", "sampling_table", "search", "table_categorical", "uniform_words"]

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


# ----------------------------------------------------------------------------- fixed tables

#: Default total-variation budget of :func:`choose_bits`: the law of one whole sample (all its table
#: draws together) is within this TV of the float64 tables.
TABLE_TOLERANCE = 1e-9

#: Rows with at most this many thresholds are searched by comparing with all of them (vectorizes well);
#: longer rows by a branchless binary search, ``ceil(log2(n))`` gathers per draw.
_LINEAR_SEARCH_MAX = 32

_FLOAT64_EPSILON = 2.0**-53  # unit roundoff of float64


@partial(jax.tree_util.register_dataclass, data_fields=["high", "low", "guide"],
         meta_fields=["guide_bits", "guide_steps"])
@dataclasses.dataclass(frozen=True)
class SamplingTable:
    r"""Integer thresholds of fixed categorical laws, for :func:`table_categorical` (a pytree).

    For a row :math:`c_0, \dots, c_{n-1}` of quantized counts (:func:`quantize`, summing to
    :math:`2^B`), the thresholds are the cumulative counts :math:`T_j = \sum_{i \le j} c_i` for
    :math:`j < n - 1` (:math:`T_{n-1} = 2^B` is implicit).  With :math:`B = 31` they are ``high``
    itself (``low`` is ``None``); with :math:`B = 63`, :math:`T_j = \text{high}_j 2^{32} + \text{low}_j`.

    Attributes
    ----------
    high
        UInt32 array ``(*rows, n - 1)``.
    low
        UInt32 array of the same shape, or ``None`` (31-bit table).
    guide
        ``None``, or for long rows of a concrete table an int32 array ``(*rows, 2**g + 1)``,
        :math:`G_b = \#\{j : T_j < b\, 2^{B-g}\}` (the cutpoints of Chen and Asau, 1974): a uniform
        :math:`U` whose top :math:`g` bits are :math:`b` draws an entry in :math:`[G_b, G_{b+1}]`,
        so a binary search needs only ``guide_steps`` steps instead of :math:`\lceil\log_2 n\rceil`.
    guide_bits, guide_steps
        :math:`g`, and the bit length of :math:`\max_b (G_{b+1} - G_b)` (static).
    """

    high: jax.Array
    low: jax.Array | None = None
    guide: jax.Array | None = None
    guide_bits: int = 0
    guide_steps: int = 0

    @property
    def bits(self) -> int:
        """:math:`B`, the bits of each threshold (31 or 63)."""
        return 31 if self.low is None else 63

    @property
    def words(self) -> int:
        """Random 32-bit words per draw (1 or 2)."""
        return 1 if self.low is None else 2


#: Most guide bits :math:`g` of a :class:`SamplingTable` (a guide of 2**22 int32 = 16 MiB per row).
_GUIDE_BITS_MAX = 22


def _guide(thresholds: np.ndarray, bits: int):
    """Cutpoint table of nondecreasing uint64 thresholds ``(R, m)``; ``(guide, g, steps)``."""
    count = thresholds.shape[-1]
    guide_bits = min(_GUIDE_BITS_MAX, max(1, count.bit_length()))
    bucket = np.uint64(1) << np.uint64(bits - guide_bits)
    starts = np.arange(2**guide_bits + 1, dtype=np.uint64) * bucket
    guide = np.stack([np.searchsorted(row, starts, side="left") for row in thresholds.reshape(-1, count)])
    steps = int(np.max(np.diff(guide, axis=-1))).bit_length()
    return guide.astype(np.int32).reshape(thresholds.shape[:-1] + (-1,)), guide_bits, steps


def _float64_rows(owner: str, probs) -> np.ndarray:
    """Rows as float64, non-finite or negative entries as 0; rows without mass become uniform."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] < 1:
        raise ShapeError(f"{owner}: probs has shape {array.shape}, expected (..., n) with n >= 1")
    array = np.where(np.isfinite(array) & (array > 0), array, 0.0)
    total = array.sum(axis=-1, keepdims=True)
    empty = ~(total > 0)
    array = np.where(empty, 1.0, array)
    return array / np.where(empty, array.shape[-1], total)


def _check_bits(owner: str, bits) -> int:
    if bits not in (31, 63):
        raise InvalidArgumentError(f"{owner}: bits={bits!r}, expected 31 (one word per draw) or 63 (two words)")
    return int(bits)


def _counts(rows: np.ndarray, bits: int):
    """``(counts, deficit)``: uint64 counts summing to ``2**bits`` per row, and the signed correction."""
    scaled = np.floor(np.ldexp(rows, bits))  # exact: a power-of-two scaling, then floor
    counts = scaled.astype(np.uint64)
    full = np.uint64(1) << np.uint64(bits)
    # deficit in [-2^63, 2^63): two's-complement arithmetic in uint64 is exact here
    with np.errstate(over="ignore"):
        deficit = (full - counts.sum(axis=-1, dtype=np.uint64)).astype(np.int64)
        largest = np.argmax(rows, axis=-1)[..., None]
        absorber = np.take_along_axis(counts, largest, axis=-1) + deficit[..., None].astype(np.uint64)
    np.put_along_axis(counts, largest, absorber, axis=-1)
    return counts, deficit


def quantize(probs, bits: int = 63) -> np.ndarray:
    r"""The exact law that :func:`table_categorical` draws from, as integer counts out of :math:`2^B`.

    Each row :math:`p` (the float64 table normalized in float64; rows without positive mass are
    taken as uniform) becomes

    .. math::

        c_i = \lfloor p_i 2^B \rfloor \ (i \ne m), \qquad
        c_m = \lfloor p_m 2^B \rfloor + D, \qquad D = 2^B - \sum_i \lfloor p_i 2^B \rfloor,

    with :math:`m` the (first) largest entry, so that :math:`\sum_i c_i = 2^B` exactly and the
    sampler draws :math:`i` with probability :math:`q_i = c_i / 2^B`.  Hence

    * :math:`p_i = 0 \Rightarrow q_i = 0` exactly (also for trailing zeros: the last threshold is
      :math:`2^B` exactly, an integer sum);
    * :math:`p_i \ge 2^{-B} \Rightarrow q_i \ge 2^{-B} > 0`: every entry above the quantum is drawn;
    * :math:`|q_i - p_i| < 2^{-B}` for :math:`i \ne m` and the largest entry absorbs :math:`D`, so
      :math:`\mathrm{TV}(q, p) \le \tfrac12 (n_+ + |D|)\, 2^{-B}` (:func:`quantization_bound`),
      :math:`n_+` the number of positive entries; :math:`|D| \le n_+ + 2^B |1 - \sum_i p_i|` and
      the float64 normalization keeps :math:`|1 - \sum_i p_i| \le n\,2^{-52}`.

    Parameters
    ----------
    probs
        Array ``(..., n)`` of nonnegative weights (concrete; converted to float64 numpy).
    bits
        :math:`B`: 31 or 63.

    Returns
    -------
    UInt64 numpy array ``(..., n)``, each row summing to :math:`2^B`.
    """
    bits = _check_bits("quantize", bits)
    return _counts(_float64_rows("quantize", probs), bits)[0]


def quantization_bound(probs, bits: int = 63) -> float:
    r"""Upper bound on the TV distance of one draw's law to the exact row, maximized over rows.

    :math:`\tfrac12 (n_+ + |D|)\, 2^{-B} + \tfrac12 (n + 1)\, 2^{-53}`: the quantization of
    :func:`quantize` plus the float64 normalization of the row (relative error at most
    :math:`(n+1) 2^{-53}` per entry against the exactly normalized input).  A sequence made of
    ``d`` draws is within ``d`` times this of its exact law (couple the draws one by one).
    """
    bits = _check_bits("quantization_bound", bits)
    rows = _float64_rows("quantization_bound", probs)
    _, deficit = _counts(rows, bits)
    positive = np.count_nonzero(rows > 0, axis=-1)
    per_row = 0.5 * (positive + np.abs(deficit.astype(np.float64))) * 2.0**-bits
    return float(np.max(per_row) + 0.5 * (rows.shape[-1] + 1) * _FLOAT64_EPSILON)


def choose_bits(*tables, draws: int = 1, tolerance: float = TABLE_TOLERANCE) -> int:
    r"""31 when one word per draw keeps ``draws`` draws within ``tolerance`` TV of the tables, else 63.

    The bound is ``draws * max(quantization_bound(t, 31) for t in tables)``; with 63 bits it is
    below :math:`10^{-9}` for every practical size (``draws * n`` up to about :math:`10^{9}`).
    Traced tables always get 31 bits (see :func:`sampling_table`).
    """
    if not all(_is_concrete(table) for table in tables):
        return 31
    worst = max(quantization_bound(table, 31) for table in tables)
    return 31 if draws * worst <= tolerance else 63


def _is_concrete(value) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def _traced_thresholds(probs):
    r"""31-bit thresholds from float cumulative sums in the table's dtype (traced tables).

    :math:`T_j = \lfloor 2^{31} S_j / S_{n-1} \rfloor` with :math:`S` the float cumulative sums, and
    :math:`T_j = 2^{31}` from the last positive entry on.  A zero entry repeats the previous
    threshold exactly (adding zero does not move a float sum), so it is never drawn; each
    threshold is within :math:`2^{-31} + n\epsilon` of the exact cumulative probability
    (:math:`\epsilon` the unit roundoff of the dtype), and an entry below :math:`n\epsilon` may
    be lost to rounding.
    """
    probs = jnp.asarray(probs)
    dtype = jnp.result_type(probs.dtype, float)
    probs = probs.astype(dtype)
    probs = jnp.where(jnp.isfinite(probs) & (probs > 0), probs, 0.0)
    size = probs.shape[-1]
    total = jnp.sum(probs, axis=-1, keepdims=True)
    probs = jnp.where(total > 0, probs, 1.0)  # a row without mass: uniform
    cumulative = jnp.cumsum(probs, axis=-1)
    full = float(2**31)
    scaled = jnp.floor(cumulative[..., :-1] / cumulative[..., -1:] * full)
    positions = jnp.arange(size)
    last_positive = jnp.max(jnp.where(probs > 0, positions, 0), axis=-1, keepdims=True)
    scaled = jnp.where(positions[:-1] >= last_positive, full, jnp.clip(scaled, 0.0, full))
    return scaled.astype(jnp.uint32)


def sampling_table(probs, *, bits: int | None = None, draws: int = 1,
                   tolerance: float = TABLE_TOLERANCE) -> SamplingTable:
    r"""Thresholds for inverse-CDF sampling from the rows of a fixed table.

    Compute once per table, then draw with :func:`table_categorical` (or the models' scans).

    Parameters
    ----------
    probs
        Array ``(..., n)`` of nonnegative weights; each row is one categorical law (normalized
        here).  Concrete tables are quantized exactly in float64 numpy (:func:`quantize`); a
        traced table (inside ``jit`` with the table as an argument) is quantized at 31 bits from
        float cumulative sums (module function ``_traced_thresholds``: thresholds within
        :math:`2^{-31} + n\epsilon` of the exact ones).
    bits
        31 (one random word per draw) or 63 (two words).  Default: :func:`choose_bits` with
        ``draws`` and ``tolerance``.
    draws
        Table draws per sample, for the default choice of ``bits``.
    tolerance
        TV budget per sample, for the default choice of ``bits``.

    Returns
    -------
    SamplingTable
    """
    if not _is_concrete(probs):
        if bits not in (None, 31):
            raise InvalidArgumentError(f"sampling_table: bits={bits} needs a concrete table (traced tables "
                                       "are quantized at 31 bits); compute the table outside jit")
        return SamplingTable(_traced_thresholds(probs))
    bits = choose_bits(probs, draws=draws, tolerance=tolerance) if bits is None else _check_bits(
        "sampling_table", bits)
    counts = quantize(probs, bits)
    thresholds = np.cumsum(counts[..., :-1], axis=-1, dtype=np.uint64)
    guide, guide_bits, guide_steps = None, 0, 0
    rows, count = int(np.prod(thresholds.shape[:-1])), thresholds.shape[-1]
    # a guide for long rows, when it costs at most about twice the thresholds' memory
    if count > _LINEAR_SEARCH_MAX and rows * 2 ** min(_GUIDE_BITS_MAX, count.bit_length()) <= 2 * rows * count + 2**16:
        guide, guide_bits, guide_steps = _guide(thresholds, bits)
        guide = jnp.asarray(guide)
    if bits == 31:
        high, low = jnp.asarray(thresholds.astype(np.uint32)), None
    else:
        high = jnp.asarray((thresholds >> np.uint64(32)).astype(np.uint32))
        low = jnp.asarray((thresholds & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    return SamplingTable(high, low, guide, guide_bits, guide_steps)


def _at_most(threshold_high, threshold_low, u_high, u_low):
    """``(T <= U, undecided)`` for thresholds and uniforms split in (high, low) words.

    Without ``u_low`` (first pass of a 63-bit table), ``T <= U`` is decided by the high words
    alone, which is right unless they are equal (``undecided``).
    """
    if threshold_low is None:
        return threshold_high <= u_high, None
    if u_low is None:
        return threshold_high <= u_high, threshold_high == u_high
    return (threshold_high < u_high) | ((threshold_high == u_high) & (threshold_low <= u_low)), None


def search(table: SamplingTable, rows, u_high, u_low=None):
    r"""The drawn entry :math:`\#\{j < n-1 : T_j \le U\}` for uniforms :math:`U` and table rows ``rows``.

    ``table`` has thresholds ``(R, n - 1)``; ``rows``, ``u_high`` (and ``u_low``) have the shape of
    the draws.  :math:`U = u_\text{high}` (31 bits) or :math:`u_\text{high} 2^{32} + u_\text{low}`
    (63 bits) uniform on :math:`[0, 2^B)` gives entry :math:`i` with probability
    :math:`(T_i - T_{i-1}) / 2^B = c_i / 2^B` (:math:`T_{-1} = 0`, :math:`T_{n-1} = 2^B`).
    Short rows compare :math:`U` with every threshold; long rows use a branchless binary search
    (the thresholds are nondecreasing, so :math:`\{j : T_j \le U\}` is a prefix).

    Returns ``(index, undecided)``.  For a 63-bit table searched without ``u_low``, ``undecided``
    (bool, shape of the draws) marks the draws where a compared threshold had the same high word
    as :math:`U`, the only draws whose result may depend on ``u_low`` (probability at most
    :math:`(n-1) 2^{-31}` per draw); elsewhere ``index`` is the 63-bit result.  Otherwise
    ``undecided`` is ``None``.
    """
    count = table.high.shape[-1]
    if count == 0:
        return jnp.zeros(jnp.shape(u_high), jnp.int32), None
    if count <= _LINEAR_SEARCH_MAX:
        high = table.high[rows]
        low = None if table.low is None else table.low[rows]
        below, undecided = _at_most(high, low, u_high[..., None], None if u_low is None else u_low[..., None])
        return jnp.sum(below, axis=-1, dtype=jnp.int32), None if undecided is None else jnp.any(undecided, -1)
    flat_high = table.high.reshape(-1)
    flat_low = None if table.low is None else table.low.reshape(-1)
    base = rows.astype(jnp.int32) * count
    if table.guide is None:
        position, end = jnp.zeros(jnp.shape(u_high), jnp.int32), count
        step = 1 << (count.bit_length() - 1)
    else:  # the top g bits of U pick the bucket [G_b, G_b+1] that holds the answer
        width = table.guide.shape[-1]
        bucket = rows.astype(jnp.int32) * width + lax.shift_right_logical(
            u_high, jnp.uint32(31 - table.guide_bits)).astype(jnp.int32)
        flat_guide = table.guide.reshape(-1)
        position, end = flat_guide[bucket], flat_guide[bucket + 1]
        step = (1 << (table.guide_steps - 1)) if table.guide_steps else 0
    undecided = None
    while step:
        candidate = position + step
        valid = candidate <= end
        index = base + jnp.minimum(candidate, count) - 1
        low = None if flat_low is None else flat_low[index]
        below, tie = _at_most(flat_high[index], low, u_high, u_low)
        position = jnp.where(valid & below, candidate, position)
        if tie is not None:
            undecided = valid & tie if undecided is None else undecided | (valid & tie)
        step //= 2
    return position, undecided


def uniform_words(key, shape, run, words: int):
    r"""Run a sampler on random words, drawing the second word of a 63-bit draw only when it matters.

    ``run(u_high, u_low)`` takes uniforms of ``shape`` (``u_low`` ``None`` on the first pass) and
    returns ``(result, undecided)`` with ``undecided`` a bool scalar (any draw left undecided by
    :func:`search`).  With ``words == 1`` that is the result.  With ``words == 2`` the first pass
    uses the high words only; if any draw was undecided, the whole batch is rerun with the low
    words (``lax.cond``), so the result is always that of the full 63-bit comparisons -- the law
    is exactly the quantized one -- while the expected cost is about one word per draw (a rerun
    has probability at most ``draws * (n-1) * 2**-31`` per batch).  Under ``vmap`` both branches run.
    """
    key_high, key_low = jax.random.split(key)
    u_high = lax.shift_right_logical(jax.random.bits(key_high, shape, jnp.uint32), jnp.uint32(1))
    result, undecided = run(u_high, None)
    if words == 1:
        return result

    def exact():
        return run(u_high, jax.random.bits(key_low, shape, jnp.uint32))[0]

    return lax.cond(undecided, exact, lambda: result)


def any_undecided(*flags):
    """``True`` if any flag array (``None`` = decided) has a True entry; a bool scalar."""
    found = jnp.zeros((), bool)
    for flag in flags:
        if flag is not None:
            found = found | jnp.any(flag)
    return found


def table_categorical(key, table: SamplingTable, shape=None):
    r"""Draw entries from the rows of a :class:`SamplingTable`; the law is :func:`quantize`'s, exactly.

    Same shape contract as :func:`categorical`: ``table.high`` has shape ``batch_shape + (n - 1,)``
    and the result has shape ``shape`` (default ``batch_shape``), which must end with
    ``batch_shape``.  Random words from one ``jax.random.bits`` call (plus one for the low
    words when needed, :func:`uniform_words`).
    """
    batch_shape = table.high.shape[:-1]
    shape = batch_shape if shape is None else tuple(int(d) for d in shape)
    if len(shape) < len(batch_shape) or tuple(shape[len(shape) - len(batch_shape):]) != tuple(batch_shape):
        raise ShapeError(f"table_categorical: shape={shape} must end with the table's batch shape {batch_shape}")
    return _table_categorical(key, table, shape)


@partial(jax.jit, static_argnames=("shape",))
def _table_categorical(key, table, shape):
    batch_shape = table.high.shape[:-1]
    count = table.high.shape[-1]
    flat = dataclasses.replace(
        table, high=table.high.reshape(-1, count), low=None if table.low is None else table.low.reshape(-1, count),
        guide=None if table.guide is None else table.guide.reshape(-1, table.guide.shape[-1]))
    rows = jnp.broadcast_to(jnp.arange(int(np.prod(batch_shape)), dtype=jnp.int32).reshape(batch_shape), shape)

    def run(u_high, u_low):
        index, undecided = search(flat, rows, u_high, u_low)
        return index, any_undecided(undecided)

    return uniform_words(key, shape, run, table.words)
