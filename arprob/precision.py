r"""What floating-point Gumbel-max sampling does to a categorical law (theorem 13).

Gumbel-max sampling draws :math:`\arg\max_i (l_i + G_i)` with :math:`G_i` iid
standard Gumbel; its law is :math:`p = \text{softmax}(l)`.  ``jax.random.gumbel``
computes :math:`G = -\log(-\log u)` from a uniform :math:`u` on a float grid, so
the noise lies in a bounded range :math:`[a, b]`: in float32 with the default
``mode="low"``, :math:`u \in \{\text{tiny}\} \cup \{k 2^{-23}\}` and
:math:`b = -\log(-\log(1 - 2^{-23})) = 15.94`, :math:`a = -\log(-\log \text{tiny}) = -4.47`.
Modelling the noise as clamped, :math:`C_i = \min(\max(G_i, a), b)`, this module gives

* :func:`gumbel_cap`, :func:`gumbel_floor`: :math:`b` and :math:`a` for a dtype
  and mode, evaluated through JAX's own code (and for ``mode="arprob"``, for
  the library's sampler :func:`arprob.precision.categorical`);
* :func:`clamped_gumbel_law`: the exact law of :math:`\arg\max_i (l_i + C_i)`
  (first index on ties), in closed form, float64, :math:`O(V \log V)`;
* :func:`tv_bound`, :func:`worst_case_tv_bound`, :func:`suppression_bound`,
  :func:`library_tv_bound`: the bounds of theorem 13;
* :func:`entropy`, :func:`tempered`, :func:`effective_temperature`: the clamped
  law majorizes :math:`p`, so its entropy is lower; the effective temperature
  is the :math:`T \le 1` at which :math:`\text{softmax}(l/T)` has that entropy;
* :func:`masked_diffusion_token_law`, :func:`masked_diffusion_summary`: the law
  of the token that a naive masked-diffusion sampler finally writes at a
  position, when every reverse step is one clamped Gumbel-max draw over the
  :math:`V` tokens and the mask;
* :func:`jax_grouped_law`: the exact law of ``jax.random.categorical`` itself
  (its noise grid enumerated, float sums included) on logits made of groups of
  equal values, which the tests hold the clamped model and Monte Carlo against.

The proof is ``proofs/13-float32-gumbel-max.md``; the guide
``docs/guides/float32-sampling.md`` has the measured numbers.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from arprob import _random
from arprob._random import _gumbel_from_words
from arprob._validation import (
    _show,
    check_choice,
    check_int,
    check_key,
    check_logits,
    check_memory,
    check_probs,
    check_real,
    check_real_array,
    check_sample_shape,
    check_work,
    is_concrete,
)
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError

__all__ = [
    "MaskedDiffusionPrecision",
    "categorical",
    "clamped_gumbel_law",
    "effective_temperature",
    "entropy",
    "gumbel",
    "gumbel_cap",
    "gumbel_floor",
    "jax_grouped_law",
    "library_tv_bound",
    "masked_diffusion_summary",
    "masked_diffusion_token_law",
    "suppression_bound",
    "tempered",
    "tv_bound",
    "worst_case_tv_bound",
]

MODES = ("low", "high", "highest", "arprob")
_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


# ---------------------------------------------------------------------------
# the library's sampler, with its arguments checked
# ---------------------------------------------------------------------------


def _check_logits_argument(owner: str, logits):
    """Refuse strings, None, non-numeric dtypes; for concrete logits also NaN, +inf and rows of only -inf."""
    if isinstance(logits, (str, bytes)) or logits is None:
        raise ArprobTypeError(f"{owner}: logits must be an array of real log-weights, got {_show(logits)}")
    if not is_concrete(logits):
        if not jnp.issubdtype(logits.dtype, jnp.number) or jnp.issubdtype(logits.dtype, jnp.complexfloating):
            raise ArprobTypeError(f"{owner}: logits has dtype {logits.dtype}, expected real log-weights")
        return logits
    array = check_real_array(owner, "logits", logits, allow_neg_inf=True)
    if array.ndim < 1 or array.shape[-1] < 1:
        raise ShapeError(f"{owner}: logits has shape {array.shape}, expected (..., vocab_size) with vocab_size >= 1")
    check_logits(owner, "logits", array)
    return logits


def categorical(key, logits, shape=None):
    r"""Draw ``argmax(logits + G)`` over the last axis, with untruncated Gumbel noise.

    :func:`arprob._random.categorical` (the sampler every arprob sampler uses) with its
    arguments checked: ``key`` is one PRNG key; ``logits`` are real with ``-inf`` for impossible
    tokens, and concrete logits with NaN, ``+inf`` or a row of only ``-inf`` are refused (a draw
    from them has no law; ``jax.random.categorical`` returns token 0); ``shape`` is a tuple of
    non-negative ints ending with dimensions that broadcast with ``logits.shape[:-1]``, and the
    noise it needs must fit in memory.  Inside ``jit`` the values of traced logits are not checked.

    Same contract as ``jax.random.categorical(key, logits, axis=-1, shape=shape)``: the result
    has shape ``shape`` (default ``logits.shape[:-1]``); ties go to the first index.  The law is
    :math:`\text{softmax}(l)` up to float rounding, without the tail cut of
    ``jax.random.categorical`` (theorem 13, part 6, ``proofs/13-float32-gumbel-max.md``).
    """
    owner = "categorical"
    check_key(owner, key)
    _check_logits_argument(owner, logits)
    if shape is not None:
        shape = check_sample_shape(owner, shape, name="shape")
    logits = jnp.asarray(logits)
    if logits.ndim >= 1:
        batch = shape if shape is not None else logits.shape[:-1]
        check_memory(owner, f"drawing shape={tuple(batch)} over {logits.shape[-1]:,} tokens (two noise words "
                     "and a float per token)", (*batch, logits.shape[-1]), itemsize=24,
                     fix="draw fewer samples per call (split the draw in batches)")
    return _random.categorical(key, logits, shape)


def gumbel(key, shape=(), dtype=None):
    """Standard Gumbel noise of ``shape``, not truncated where it matters.

    :func:`arprob._random.gumbel` with its arguments checked: one PRNG ``key``, ``shape`` a
    tuple of non-negative ints whose noise fits in memory, ``dtype`` ``float32``, ``float64``
    or ``None`` (JAX's default float dtype).  Values lie in ``[gumbel_floor, gumbel_cap]``
    with ``mode="arprob"``; law in ``proofs/13-float32-gumbel-max.md``.
    """
    owner = "gumbel"
    check_key(owner, key)
    shape = check_sample_shape(owner, shape, name="shape")
    if dtype is not None:
        try:
            np.dtype(dtype)
        except TypeError:
            raise ArprobTypeError(f"{owner}: dtype={dtype!r} is not a dtype; expected float32, float64 or None "
                                  "(JAX's default float dtype)") from None
    check_memory(owner, f"noise of shape {shape}", shape, itemsize=24, fix="ask for less noise per call")
    return _random.gumbel(key, shape, dtype)


# ---------------------------------------------------------------------------
# the range of the noise
# ---------------------------------------------------------------------------


def _float_dtype(owner: str, dtype) -> np.dtype:
    if dtype is None or isinstance(dtype, (bool, int, float)):
        raise ArprobTypeError(f"{owner}: dtype={dtype!r} is not a dtype; expected a float dtype such as "
                              "'float32' (float16, bfloat16, float32, float64)")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise ArprobTypeError(f"{owner}: dtype={dtype!r} is not a dtype; expected a float dtype such as "
                              "'float32' (float16, bfloat16, float32, float64)") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ArprobTypeError(f"{owner}: dtype={dtype}, expected a float dtype (float16, bfloat16, float32, float64)")
    if dtype == jnp.dtype("float64") and not jax.config.jax_enable_x64:
        raise ArprobTypeError(f"{owner}: dtype=float64 needs jax_enable_x64 (JAX would silently use float32)")
    return dtype


@cache
def _constant_bits_impl():
    """A PRNG whose bits are all zeros (key 0) or all ones (key 1): JAX's extreme noise values."""
    from jax.extend.random import define_prng_impl

    def random_bits(key, bit_width, shape):
        dtype = _UINT[bit_width]
        ones = jnp.full(shape, jnp.iinfo(dtype).max, dtype)
        return jnp.where(key[0] != 0, ones, jnp.zeros(shape, dtype))

    return define_prng_impl(
        key_shape=(1,),
        seed=lambda seed: jnp.reshape(seed, (1,)).astype(jnp.uint32),
        split=lambda key, shape: jnp.broadcast_to(key, (*shape, 1)),
        random_bits=random_bits,
        fold_in=lambda key, data: key,
        name="arprob-constant-bits",
        tag="arprob_constant_bits",
    )


def _extremes(owner: str, dtype, mode: str) -> tuple[float, float]:
    dtype = _float_dtype(owner, dtype)
    check_choice(owner, "mode", mode, MODES)
    if mode == "arprob":
        noise_dtype = np.dtype("float64") if dtype == jnp.dtype("float64") else np.dtype("float32")
        uint = jnp.uint64 if noise_dtype == np.dtype("float64") else jnp.uint32
        count = 2 if noise_dtype == np.dtype("float64") else 3
        top_bit = 1 << (jnp.iinfo(uint).bits - 1)
        zeros = [jnp.zeros((), uint)] * count
        cap = _gumbel_from_words(zeros, noise_dtype)  # lower half, X = 2^-(B n + 1)
        floor = _gumbel_from_words([jnp.asarray(top_bit, uint), *zeros[1:]], noise_dtype)  # upper half, same X
        return float(floor), float(cap)
    impl = _constant_bits_impl()
    values = [
        float(jax.random.gumbel(jax.random.wrap_key_data(jnp.array([bit], jnp.uint32), impl=impl), (), dtype, mode))
        for bit in (0, 1)
    ]
    return min(values), max(values)


def gumbel_cap(dtype="float32", mode: str = "low") -> float:
    r"""Largest value that the Gumbel noise of ``dtype`` and ``mode`` can take.

    For JAX's modes (``"low"``, ``"high"``, ``"highest"``) the value is computed
    by running ``jax.random.gumbel`` on the all-zero and all-one random bits
    (a constant-bit PRNG implementation), where each mode's map from bits to
    noise is extreme.  ``mode="low"`` is the default of ``jax.random.categorical``:
    :math:`u \le 1 - 2^{-p}` (:math:`p` = mantissa bits: 23 in float32, 52 in
    float64, 10 in float16, 7 in bfloat16), so the cap is
    :math:`-\log(-\log(1 - 2^{-p})) \approx p \log 2`: 15.94 in float32, 36.04
    in float64, 6.93 in float16, 4.85 in bfloat16.  In ``mode="high"`` the
    cap 87.3 (float32) is an atom of probability :math:`2^{-46}`; the values
    below it stop at about 31.9.  ``mode="arprob"`` is the library's
    :func:`arprob.precision.gumbel` (67.2 in float32, 89.4 in float64; it is at
    full precision up to 50.6 and 52.7).
    """
    return _extremes("gumbel_cap", dtype, mode)[1]


def gumbel_floor(dtype="float32", mode: str = "low") -> float:
    r"""Smallest value that the Gumbel noise of ``dtype`` and ``mode`` can take.

    ``mode="low"``: :math:`-\log(-\log \text{tiny})` with ``tiny`` the smallest
    normal float (:math:`-4.47` in float32, :math:`-6.56` in float64).  Its
    effect on the law is at most :math:`\exp(-e^{-a})`, about :math:`10^{-38}` in
    float32 (theorem 13, part 2).  See :func:`gumbel_cap` for the modes.
    """
    return _extremes("gumbel_floor", dtype, mode)[0]


# ---------------------------------------------------------------------------
# the exact law of clamped Gumbel-max
# ---------------------------------------------------------------------------


_TOTAL_CLAMP = -700.0


def _check_range(owner: str, cap, floor) -> tuple[float, float]:
    fix = "use gumbel_cap/gumbel_floor, cap=math.inf for no upper clamp, floor=-math.inf for no lower clamp"
    cap = check_real(owner, "cap", cap, allow_inf=True, fix=fix)
    floor = check_real(owner, "floor", floor, allow_inf=True, fix=fix)
    if cap == -math.inf:
        raise InvalidArgumentError(f"{owner}: cap=-inf leaves no value for the noise; expected cap > -inf ({fix})")
    if floor == math.inf:
        raise InvalidArgumentError(f"{owner}: floor=+inf leaves no value for the noise; expected floor < +inf "
                                   f"({fix})")
    if not floor < cap:
        raise InvalidArgumentError(f"{owner}: floor={floor} is not below cap={cap}; expected floor < cap ({fix})")
    # Below -700 a clamp is total in float64 (P(G > -700) = 1 - exp(-e^700) rounds to 1, P(G < -700) to 0), so
    # such a cap acts as -700 and such a floor as no floor: same answers, and e^{-cap} does not overflow
    if floor < _TOTAL_CLAMP:
        floor = -math.inf
    return max(cap, _TOTAL_CLAMP), floor


def _as_logits(owner: str, logits) -> np.ndarray:
    array = check_real_array(owner, "logits", logits, allow_neg_inf=True)
    if array.ndim < 1 or array.shape[-1] < 1:
        raise ShapeError(f"{owner}: logits has shape {array.shape}, expected (..., vocab_size) with vocab_size >= 1")
    check_logits(owner, "logits", array)
    return array


def _plus(values: np.ndarray, shift: float) -> np.ndarray:
    """``values + shift`` with ``-inf + anything = -inf`` (so that ``-inf + inf`` is not NaN)."""
    return np.where(values == -np.inf, -np.inf, values + shift)


_LARGE = 1e300  # stands for an infinite cap or floor, so that no -inf + inf appears


def _clamped_law_sorted(logits: np.ndarray, order: np.ndarray, cap: float, floor: float) -> np.ndarray:
    r"""The clamped law on rows sorted by decreasing logit (ties by increasing index), float64.

    ``logits`` (R, V) is sorted and has a finite maximum; ``order`` holds the
    original indices.  Returns the law in the same sorted order.  ``-inf``
    entries get probability 0 and change nothing else.  Every step is a line of
    theorem 13, part 1 (``proofs/13-float32-gumbel-max.md``).
    """
    cap, floor = min(cap, _LARGE), max(floor, -_LARGE)
    num_rows, vocab_size = logits.shape
    logits = logits - logits[:, :1]  # the maximum is 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        weights = np.exp(logits)
        cumulative = np.cumsum(weights, axis=1)  # S_k, the weight of the k + 1 largest logits
        log_cumulative = np.log(cumulative)
        # interval k: y in (l_{k+1} + b, l_k + b], intersected with y > max_i l_i + a = a
        high = logits + cap
        low = np.empty_like(high)
        np.maximum(high[:, 1:], floor, out=low[:, :-1])
        low[:, -1] = floor
        valid = high > low
        x_high = np.exp(log_cumulative - high)  # e^{-y} S_k at both ends
        x_low = np.exp(log_cumulative - low)
        gap = x_low * -np.expm1(low - high)  # x_low - x_high, without cancellation
        # T_k = (1/S_k) [exp(-e^{-hi} S_k) - exp(-e^{-lo} S_k)]
        pieces = np.exp(-x_high) * -np.expm1(-gap) / cumulative
        pieces = np.where(valid, pieces, 0.0)
        law = weights * np.cumsum(pieces[:, ::-1], axis=1)[:, ::-1]

        # atom G_j >= b: larger logits i need C_i < b - (l_i - l_j), equal logits before j need C_i < b
        positions = np.arange(vocab_size)
        change = np.empty((num_rows, vocab_size), bool)
        change[:, 0] = True
        np.not_equal(logits[:, 1:], logits[:, :-1], out=change[:, 1:])
        group_start = np.maximum.accumulate(np.where(change, positions, 0), axis=1)
        above = np.take_along_axis(cumulative, np.maximum(group_start - 1, 0), axis=1)
        exponent = np.exp(np.log(above) - cap - logits) * (group_start > 0) + (positions - group_start) * math.exp(-cap)
        atom = -math.expm1(-math.exp(-cap)) * np.exp(-exponent)
        reachable = (high > floor) | ((high == floor) & (order < order[:, :1]))
        law += np.where(reachable & (weights > 0), atom, 0.0)

        # atom G_j <= a: only the first index of the largest logit can win there
        is_max = logits == 0
        lower = ~is_max & reachable & (weights > 0)
        total = is_max.sum(axis=1) + np.where(lower, weights, 0.0).sum(axis=1)
        law[:, 0] += np.exp(-np.exp(-floor) * total)
    return law


def _sort(logits: np.ndarray):
    order = np.argsort(-logits, axis=-1, kind="stable")
    return np.take_along_axis(logits, order, axis=-1), order


def _clamped_law_rows(flat: np.ndarray, cap: float, floor: float) -> np.ndarray:
    """:func:`clamped_gumbel_law` on rows ``(R, V)``.

    The logits are shifted by their maximum *before* sorting, as the samplers shift them before
    adding the noise: two logits that the shift makes equal (``1e-235`` and ``0`` below a maximum
    of ``1``) are then tied, and ties go to the first index, consistently in every term.
    """
    flat = flat - np.max(flat, axis=-1, keepdims=True)
    ordered, order = _sort(flat)
    law = np.empty_like(ordered)
    np.put_along_axis(law, order, _clamped_law_sorted(ordered, order, cap, floor), axis=1)
    return law


def clamped_gumbel_law(logits, cap: float, floor: float = -math.inf) -> np.ndarray:
    r"""Exact law of :math:`\arg\max_i (l_i + \min(\max(G_i, a), b))`, first index on ties.

    With :math:`G_i` iid standard Gumbel, :math:`a` = ``floor`` and :math:`b` =
    ``cap``.  Sort the logits, :math:`l_{(1)} \ge l_{(2)} \ge \dots`, and let
    :math:`S_k = \sum_{r \le k} e^{l_{(r)}}`.  On the interval
    :math:`y \in (l_{(k+1)} + b,\ l_{(k)} + b]` (above :math:`l_{(1)} + a`) the
    active tokens are the top :math:`k`, and token :math:`j` among them wins at
    height :math:`y` with density :math:`e^{l_j} e^{-y} \exp(-e^{-y} S_k)`, whose
    antiderivative is :math:`(e^{l_j}/S_k)\exp(-e^{-y} S_k)`; so

    .. math::

        P(j) = e^{l_j} \sum_{k \ge \text{rank}(j)} T_k
        + (1 - e^{-e^{-b}})\, e^{-e^{-b}\,(\sum_{l_i > l_j} e^{l_i - l_j} + n_j)}
        + [\text{lower atom}],

    with :math:`T_k = S_k^{-1}[\exp(-e^{-\text{hi}_k} S_k) - \exp(-e^{-\text{lo}_k} S_k)]`
    over the interval's ends, :math:`n_j` the number of earlier indices with the
    same logit, the second term the atom at :math:`G_j \ge b` (zero when
    :math:`l_j + b < \max_i l_i + a`), and the lower atom
    :math:`\exp(-e^{-a}(n_{\max} + \sum_{l_i + b > l_{\max} + a,\, l_i < l_{\max}} e^{l_i - l_{\max}}))`
    given to the first index of the largest logit.  Proof and checks:
    ``proofs/13-float32-gumbel-max.md``.

    Parameters
    ----------
    logits
        Float array ``(..., V)``; ``-inf`` allowed, NaN and ``+inf`` not.
    cap
        :math:`b`, the largest noise value (``math.inf`` for no upper clamp).
    floor
        :math:`a`, the smallest noise value (default ``-inf``: no lower clamp).

    Returns
    -------
    numpy.ndarray
        float64 probabilities of shape ``(..., V)``.  With ``cap=inf`` and
        ``floor=-inf`` this is ``softmax(logits)``.
    """
    owner = "clamped_gumbel_law"
    cap, floor = _check_range(owner, cap, floor)
    array = _as_logits(owner, logits)
    law = _clamped_law_rows(array.reshape(-1, array.shape[-1]), cap, floor)
    return law.reshape(array.shape)


# ---------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------


def _softmax(array: np.ndarray) -> np.ndarray:
    shifted = array - array.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def tv_bound(logits, cap: float, floor: float = -math.inf) -> np.ndarray:
    r"""Coupling bound on :math:`\text{TV}(\text{clamped law}, \text{softmax}(l))`.

    .. math::

        \sum_w p_w\,\bigl(1 - e^{-e^{-b}/p_w}\bigr) + e^{-e^{-a}/p_{\max}}
        \;\le\; 1 - e^{-V e^{-b}} + e^{-e^{-a}},

    the probability that the winner's own noise exceeds :math:`b` (given that
    :math:`w` wins, its noise is Gumbel with location :math:`-\log p_w`) plus the
    probability that the maximum falls below :math:`l_{\max} + a` (theorem 13,
    part 2).  Returns one bound per row, shape ``logits.shape[:-1]``.
    """
    owner = "tv_bound"
    cap, floor = _check_range(owner, cap, floor)
    probs = _softmax(_as_logits(owner, logits))
    with np.errstate(divide="ignore", over="ignore"):
        upper = np.where(probs > 0, probs * -np.expm1(-math.exp(-cap) / np.where(probs > 0, probs, 1.0)), 0.0)
        lower = np.exp(-math.exp(-floor) / probs.max(axis=-1)) if floor > -math.inf else 0.0
    return upper.sum(axis=-1) + lower


def worst_case_tv_bound(vocab_size: int, cap: float, floor: float = -math.inf) -> float:
    r""":math:`1 - \exp(-V e^{-b}) + \exp(-e^{-a})`, the bound of :func:`tv_bound` for every law on V tokens.

    The first term is the maximum of :math:`\sum_w p_w(1 - e^{-e^{-b}/p_w})` over
    the simplex (the summand is concave in :math:`p_w`, so the uniform law is
    the worst); it is at most :math:`V e^{-b}`.
    """
    owner = "worst_case_tv_bound"
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    cap, floor = _check_range(owner, cap, floor)
    return float(-math.expm1(-vocab_size * math.exp(-cap)) + (math.exp(-math.exp(-floor))
                                                             if floor > -math.inf else 0.0))


def library_tv_bound(vocab_size: int, dtype="float32") -> float:
    r"""Truncation part of the TV error of :func:`arprob.precision.categorical` (theorem 13, part 5).

    float32: :math:`V 2^{-72} + \binom{V}{2} 2^{-80}` (a value outside the
    full-precision range, or two values of a row sharing the extra word);
    float64: :math:`V 2^{-75}`.  Below :math:`10^{-12}` for :math:`V \le 10^6`.
    Float rounding of the noise and of the sums adds a relative error of a few
    :math:`10^{-6}` per token in float32 (part 4), which does not thin the tail.
    """
    owner = "library_tv_bound"
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    dtype = _float_dtype(owner, dtype)
    if dtype == jnp.dtype("float64"):
        return vocab_size * 2.0**-75
    return vocab_size * 2.0**-72 + vocab_size * (vocab_size - 1) / 2 * 2.0**-80


def suppression_bound(logits, cap: float, floor: float = -math.inf) -> np.ndarray:
    r"""Per-token upper bound on the clamped law (theorem 13, part 3).

    .. math::

        P_{\text{clamped}}(j) \le \exp\Bigl(-e^{-b} \sum_{i:\, l_i > l_j} e^{l_i - l_j}\Bigr),

    and :math:`P_{\text{clamped}}(j) = 0` when :math:`l_j + b < l_{\max} + a`.  A token
    :math:`b + c` nats below the top one is drawn with probability at most
    :math:`\exp(-e^{c})`, whatever its share of :math:`p`.
    """
    owner = "suppression_bound"
    cap, floor = _check_range(owner, cap, floor)
    array = _as_logits(owner, logits)
    flat = array.reshape(-1, array.shape[-1])
    ordered, order = _sort(flat)
    ordered = ordered - ordered[:, :1]
    weights = np.exp(ordered)
    cumulative = np.cumsum(weights, axis=1)
    positions = np.arange(ordered.shape[1])[None, :]
    change = np.concatenate([np.ones((ordered.shape[0], 1), bool), ordered[:, 1:] != ordered[:, :-1]], axis=1)
    group_start = np.maximum.accumulate(np.where(change, positions, 0), axis=1)
    above = np.where(group_start > 0, cumulative[np.arange(ordered.shape[0])[:, None], np.maximum(group_start - 1, 0)],
                     0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        bound = np.exp(-np.exp(np.log(above) - cap - ordered))
    bound = np.where(_plus(ordered, cap) < floor, 0.0, bound)
    out = np.empty_like(bound)
    np.put_along_axis(out, order, bound, axis=1)
    return out.reshape(array.shape)


# ---------------------------------------------------------------------------
# entropy and effective temperature
# ---------------------------------------------------------------------------


def _as_probs(owner: str, name: str, probs) -> np.ndarray:
    array = check_real_array(owner, name, probs, finite=False)
    if array.ndim < 1 or array.shape[-1] < 1:
        raise ShapeError(f"{owner}: {name} has shape {array.shape}, expected (..., vocab_size)")
    check_probs(owner, name, array)
    return array


def entropy(probs) -> np.ndarray:
    r"""Shannon entropy :math:`-\sum_v p_v \log p_v` in nats over the last axis (:math:`0 \log 0 = 0`)."""
    return _entropy(_as_probs("entropy", "probs", probs))


def _entropy(array: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(array > 0, -array * np.log(np.where(array > 0, array, 1.0)), 0.0)
    return terms.sum(axis=-1)


def tempered(probs, temperature: float) -> np.ndarray:
    r""":math:`\text{softmax}(\log p / T)`: zero entries stay zero; ``temperature`` in :math:`(0, \infty)`."""
    owner = "tempered"
    array = _as_probs(owner, "probs", probs)
    temperature = check_real(owner, "temperature", temperature, low=0.0, low_open=True,
                             fix="pass a finite temperature > 0 (1 leaves the law unchanged)")
    return _tempered(array, temperature)


def _tempered(array: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logits = np.log(array) / temperature
    return _softmax(logits)


def effective_temperature(probs, law) -> float:
    r"""The temperature :math:`T` with :math:`H(\text{softmax}(\log p / T)) = H(\text{law})`.

    :math:`T \mapsto H(p_T)` increases strictly (its derivative is
    :math:`\mathrm{Var}_{p_T}(\log p)/T^3`) from :math:`\log` (number of most
    likely tokens) to :math:`\log` (support size), so the root is unique;
    it is found with ``scipy.optimize.brentq`` (relative tolerance
    :math:`10^{-12}`).  ``0.0`` or ``inf`` is returned when :math:`H(\text{law})`
    is at or beyond those limits.  A law that majorizes :math:`p` (every clamped
    Gumbel-max law does, theorem 13 part 4) has :math:`T \le 1`.

    Parameters
    ----------
    probs
        The reference law :math:`p`, shape ``(V,)``; not uniform on its support.
    law
        The law whose entropy is matched (any shape; only its entropy is used).
    """
    owner = "effective_temperature"
    reference = _as_probs(owner, "probs", probs)
    if reference.ndim != 1:
        raise ShapeError(f"{owner}: probs has shape {reference.shape}, expected (vocab_size,)")
    target = float(_entropy(_as_probs(owner, "law", np.ravel(law) if np.ndim(law) > 1 else law)))
    return _effective_temperature(owner, reference, target)


def _effective_temperature(owner: str, reference: np.ndarray, target: float) -> float:
    support = reference[reference > 0]
    if np.allclose(support, support[0], rtol=1e-12, atol=0):
        raise InvalidArgumentError(
            f"{owner}: probs is uniform on its support, so tempering does not change it and no temperature "
            "matches another entropy; pass a non-uniform reference law"
        )
    lowest = math.log(int(np.sum(support == support.max())))
    highest = math.log(support.size)
    if target <= lowest + 1e-15:
        return 0.0
    if target >= highest - 1e-15:
        return math.inf

    def excess(log_temperature: float) -> float:
        return float(_entropy(_tempered(reference, math.exp(log_temperature)))) - target

    low, high = -1.0, 1.0
    while excess(low) > 0:  # temperatures e^-1, e^-2, e^-4, ...
        if low < -600:
            return 0.0  # H(law) within rounding of its limit at T -> 0
        low *= 2
    while excess(high) < 0:
        if high > 600:
            return math.inf
        high *= 2
    return math.exp(optimize.brentq(excess, low, high, xtol=1e-13, rtol=1e-12))


# ---------------------------------------------------------------------------
# masked diffusion
# ---------------------------------------------------------------------------


def masked_diffusion_token_law(probs, num_steps: int, cap: float, floor: float = -math.inf,
                               *, chunk: int = 32) -> np.ndarray:
    r"""Law of the token a naive masked-diffusion sampler writes at one position.

    The reverse process of absorbing diffusion with the linear schedule on
    ``num_steps`` :math:`= N` uniform steps goes from :math:`t = n/N` to
    :math:`s = (n-1)/N`, :math:`n = N, \dots, 1`: a masked position stays masked
    with probability :math:`s/t = (n-1)/n` and becomes token :math:`v` with
    probability :math:`p_v (t-s)/t = p_v/n` (MDLM, SEDD).  The naive sampler draws
    one categorical over the :math:`V + 1` outcomes, tokens first and the mask
    (id :math:`V`) last, by Gumbel-max with noise clamped to ``[floor, cap]``.
    With :math:`c_n` the clamped law of step :math:`n`
    (:func:`clamped_gumbel_law` of the logits
    :math:`(\log p_v - \log n)_v,\ \log((n-1)/n)`),

    .. math::

        q(v) = \sum_{n=N}^{1} \Bigl(\prod_{m=n+1}^{N} c_m(\text{mask})\Bigr)\, c_n(v).

    Without clamping :math:`c_m(\text{mask}) = (m-1)/m`, the product is
    :math:`n/N` and :math:`q = p`.  The clean-data law :math:`p` of the position
    is held fixed over the steps (the network's prediction for a position whose
    context does not change).  :math:`O(N V)` work, float64.

    Parameters
    ----------
    probs
        :math:`p`, shape ``(V,)``.
    num_steps
        :math:`N`.
    cap, floor
        The noise range (:func:`gumbel_cap`, :func:`gumbel_floor`).
    chunk
        Steps processed together in one compiled call (memory ``~ 10 * chunk * V`` floats).
    """
    owner = "masked_diffusion_token_law"
    reference = _as_probs(owner, "probs", probs)
    if reference.ndim != 1:
        raise ShapeError(f"{owner}: probs has shape {reference.shape}, expected (vocab_size,)")
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    chunk = check_int(owner, "chunk", chunk, minimum=1)
    cap, floor = _check_range(owner, cap, floor)
    return _token_law(owner, reference, num_steps, cap, floor, chunk)


#: Cost model of :func:`masked_diffusion_token_law`, in elementary operations (about a nanosecond each
#: on a CPU core): per step and outcome (V tokens and the mask), and per chunk (one pass of the loop).
_COST_PER_ENTRY, _COST_PER_CHUNK = 64, 10**5
#: Refused above this many operations (measured: 10**5 steps of V = 4 take 0.3 s, 10**4 steps of
#: V = 1000 take 0.6 s, so 10**12 operations is a quarter of an hour or more).
_MAX_TOKEN_LAW_WORK = 1e12


def _token_law(owner: str, reference: np.ndarray, num_steps: int, cap: float, floor: float,
               chunk: int) -> np.ndarray:
    """:func:`masked_diffusion_token_law` on checked arguments; refuses what would not finish."""
    chunk = min(chunk, num_steps)
    outcomes = reference.size + 1
    work = num_steps * outcomes * _COST_PER_ENTRY + math.ceil(num_steps / chunk) * _COST_PER_CHUNK
    check_work(owner, f"num_steps={num_steps:,} reverse steps over {outcomes:,} outcomes (chunk={chunk:,})", work,
               limit=_MAX_TOKEN_LAW_WORK, fix="use fewer steps (the law converges as num_steps grows: compare a "
               "few values), or a larger chunk")
    check_memory(owner, f"chunk={chunk:,} steps over {outcomes:,} outcomes", (chunk, outcomes, 16), itemsize=8,
                 fix="use a smaller chunk")
    vocab_size = reference.size
    with np.errstate(divide="ignore"):
        token_logits = np.log(reference)
    token_order = np.argsort(-token_logits, kind="stable")
    sorted_tokens = token_logits[token_order]
    columns = np.arange(vocab_size + 1)[None, :]
    token_columns = columns[:, :vocab_size]
    result = np.zeros(vocab_size)
    still_masked = 1.0
    for start in range(num_steps, 0, -chunk):
        steps = np.arange(start, max(start - chunk, 0), -1).astype(np.float64)
        rows = np.arange(steps.size)[:, None]
        shift = np.log(steps)[:, None]
        with np.errstate(divide="ignore"):
            mask_logit = np.log(steps - 1.0)[:, None] - shift  # -inf at the last step (n = 1)
        token_rows = sorted_tokens[None, :] - shift
        # the mask goes after every token whose logit is >= its own (tokens have smaller indices)
        slot = np.sum(token_rows >= mask_logit, axis=1, keepdims=True)
        is_mask = columns == slot
        source = np.minimum(columns - (columns > slot), vocab_size - 1)
        row_logits = np.where(is_mask, mask_logit, token_rows[rows, source])
        row_order = np.where(is_mask, vocab_size, token_order[source])
        law = _clamped_law_sorted(row_logits, row_order, cap, floor)
        mask_probability = law[rows, slot][:, 0]
        token_law = law[rows, token_columns + (token_columns >= slot)]  # tokens in sorted order
        reached = still_masked * np.concatenate([[1.0], np.cumprod(mask_probability)[:-1]])
        result += reached @ token_law
        still_masked *= float(np.prod(mask_probability))
    law = np.empty(vocab_size)
    law[token_order] = result
    return law


class MaskedDiffusionPrecision(NamedTuple):
    """What a naive low-precision masked-diffusion sampler does to one position's law.

    Attributes
    ----------
    entropy
        :math:`H(p)`, nats.
    sampler_entropy
        Entropy of the law the naive sampler writes (:func:`masked_diffusion_token_law`).
    temperature
        Its effective temperature (:func:`effective_temperature`).
    tv
        Total variation between that law and :math:`p`.
    law
        The law itself, shape ``(V,)``.
    """

    entropy: float
    sampler_entropy: float
    temperature: float
    tv: float
    law: np.ndarray


def masked_diffusion_summary(probs, num_steps: int, dtype="float32", mode: str = "low") -> MaskedDiffusionPrecision:
    """Entropy, effective temperature and TV of a naive masked-diffusion sampler.

    The sampler draws each reverse step with Gumbel noise of ``dtype`` and
    ``mode`` (``jax.random.categorical`` by default: float32, ``"low"``), modelled
    as clamped to ``[gumbel_floor(dtype, mode), gumbel_cap(dtype, mode)]``.
    """
    owner = "masked_diffusion_summary"
    reference = _as_probs(owner, "probs", probs)
    if reference.ndim != 1:
        raise ShapeError(f"{owner}: probs has shape {reference.shape}, expected (vocab_size,)")
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    floor, cap = _extremes(owner, dtype, mode)
    law = _token_law(owner, reference, num_steps, cap, floor, 32)
    return MaskedDiffusionPrecision(
        entropy=float(_entropy(reference)),
        sampler_entropy=float(_entropy(law)),
        temperature=_effective_temperature(owner, reference, float(_entropy(law))),
        tv=float(0.5 * np.abs(law - reference).sum()),
        law=law,
    )


# ---------------------------------------------------------------------------
# the exact law of jax.random.categorical itself
# ---------------------------------------------------------------------------


@cache
def _counter_impl():
    """A PRNG whose bits are ``(i << shift)`` for the i-th value: the whole uniform grid, in order."""
    from jax.extend.random import define_prng_impl

    def random_bits(key, bit_width, shape):
        dtype = _UINT[bit_width]
        size = math.prod(shape)
        counter = jax.lax.iota(dtype, size).reshape(shape)
        return jax.lax.shift_left(counter, key[0].astype(dtype))

    return define_prng_impl(
        key_shape=(1,),
        seed=lambda seed: jnp.reshape(seed, (1,)).astype(jnp.uint32),
        split=lambda key, shape: jnp.broadcast_to(key, (*shape, 1)),
        random_bits=random_bits,
        fold_in=lambda key, data: key,
        name="arprob-counter-bits",
        tag="arprob_counter_bits",
    )


_GRID_BITS = {  # dtype: (random bits per value, bits kept by jax.random.uniform)
    np.dtype("float32"): (32, 23),
    np.dtype(jnp.float16): (16, 10),
    np.dtype(jnp.bfloat16): (8, 7),
}


def _jax_noise_grid(dtype) -> np.ndarray:
    """Every value of ``jax.random.gumbel(..., dtype, mode="low")``, one per grid point (equally likely)."""
    dtype = np.dtype(dtype)
    bits, kept = _GRID_BITS[dtype]
    key = jax.random.wrap_key_data(jnp.array([bits - kept], jnp.uint32), impl=_counter_impl())
    return np.asarray(jax.random.gumbel(key, (2**kept,), dtype, mode="low"))


@jax.jit
def _shifted(noise, logit):
    return noise + logit


def jax_grouped_law(group_logits, group_sizes, dtype="float32") -> np.ndarray:
    r"""Exact law of ``jax.random.categorical`` (``mode="low"``) on logits made of equal-valued groups.

    The logits are ``group_sizes[0]`` copies of ``group_logits[0]``, then
    ``group_sizes[1]`` copies of ``group_logits[1]``, and so on (in that index
    order), in ``dtype``.  JAX's noise takes each of its :math:`2^p` grid values
    with probability :math:`2^{-p}` (:math:`p` = 23 in float32, 10 in float16, 7
    in bfloat16); the grid is evaluated through ``jax.random.gumbel`` itself
    (a counter PRNG feeds it every bit pattern) and added to the logits in
    ``dtype``, as ``jax.random.categorical`` does.  With :math:`M_g` the largest
    sum in group :math:`g` (CDF :math:`F_g^{n_g}`), group :math:`g` holds the
    first maximal index iff :math:`M_h < M_g` for earlier groups and
    :math:`M_h \le M_g` for later ones:

    .. math::

        P(g) = \sum_v P(M_g = v) \prod_{h < g} P(M_h < v) \prod_{h > g} P(M_h \le v).

    Returns the float64 probabilities of the groups.  Used to hold the clamped
    model (:func:`clamped_gumbel_law`) and Monte Carlo against JAX's sampler.
    """
    owner = "jax_grouped_law"
    dtype = _float_dtype(owner, dtype)
    if np.dtype(dtype) not in _GRID_BITS:
        raise ArprobTypeError(f"{owner}: dtype={dtype}, expected float32, float16 or bfloat16 (the grid of "
                              "float64 has 2**52 points)")
    logits = check_real_array(owner, "group_logits", group_logits)
    if logits.ndim != 1 or logits.size == 0:
        raise ShapeError(f"{owner}: group_logits has shape {logits.shape}, expected a non-empty 1-d array (one logit "
                         "per group)")
    check_real_array(owner, "group_sizes", group_sizes)  # numbers, finite
    sizes = np.asarray(group_sizes)
    if sizes.shape != logits.shape:
        raise ShapeError(f"{owner}: group_sizes has shape {sizes.shape} but group_logits has shape {logits.shape}; "
                         "expected one size per group")
    if not np.issubdtype(sizes.dtype, np.integer):
        raise ArprobTypeError(f"{owner}: group_sizes has dtype {sizes.dtype}, expected integers >= 1 (the number of "
                              "tokens in each group)")
    if np.any(sizes < 1):
        raise InvalidArgumentError(f"{owner}: group_sizes must be integers >= 1, got {sizes.tolist()}")
    bits = _GRID_BITS[np.dtype(dtype)][1]
    check_memory(owner, f"{logits.size:,} groups of 2**{bits} noise values", (logits.size, 2**bits, 3), itemsize=8,
                 fix="use fewer groups")
    grid = jnp.asarray(_jax_noise_grid(dtype))
    resolution = 2.0 ** -np.log2(grid.size)
    tables = []
    for logit in logits:
        sums = np.asarray(_shifted(grid, jnp.asarray(logit, dtype)), dtype=np.float64)
        if np.any(sums[1:] < sums[:-1]):  # the grid comes in increasing order; sort only if float log is not
            sums = np.sort(sums)
        starts = np.concatenate([[0], np.flatnonzero(sums[1:] != sums[:-1]) + 1])
        values, counts = sums[starts], np.diff(np.append(starts, sums.size))
        above = np.cumsum(counts[::-1])[::-1] * resolution  # P(Y >= v)
        tables.append((values, above))

    def log_cdf(table, size, value, strict: bool):
        """log P(max of `size` values < value) (strict) or <= value."""
        values, above = table
        index = np.searchsorted(values, value, side="left" if strict else "right")
        tail = np.where(index < values.size, above[np.minimum(index, values.size - 1)], 0.0)
        with np.errstate(divide="ignore"):
            return size * np.log1p(-tail)

    law = np.zeros(logits.size)
    for g, (table, size) in enumerate(zip(tables, sizes)):
        values = table[0]
        log_rest = np.zeros(values.size)
        for h, (other, other_size) in enumerate(zip(tables, sizes)):
            if h != g:
                log_rest += log_cdf(other, other_size, values, strict=h < g)
        at_most = np.exp(log_cdf(table, size, values, strict=False))
        below = np.exp(log_cdf(table, size, values, strict=True))
        law[g] = np.sum((at_most - below) * np.exp(log_rest))
    return law
