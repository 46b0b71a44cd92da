r"""Exact inference kernels for hidden Markov models, on log-potentials.

A hidden Markov model over :math:`T` steps and :math:`K` states is given here by
arrays of log-potentials, whatever the emission model: ``log_initial`` :math:`\log\pi`,
``log_transition`` :math:`\log A` and ``log_likelihoods`` :math:`\ell_t(k) = \log p(y_t \mid z_t = k)`,
plus optional per-step log prior weights :math:`\log w_t(k)` over states (``log_prior``; the ARPHMM
case), a ``mask`` of missing observations and a ``length`` for padded sequences (all described
under *Common parameters* below).

With the per-step potential :math:`\psi_t(k) = m_t \ell_t(k) + \log w_t(k)`
(:math:`m_t \in \{0, 1\}` the mask) and :math:`L` = ``length``, the kernels compute
quantities of the weighted joint

.. math::

    \tilde p(z_{0:L-1}, y) = \pi_{z_0} e^{\psi_0(z_0)} \prod_{t=1}^{L-1} A^{(t-1)}_{z_{t-1} z_t}
    e^{\psi_t(z_t)}, \qquad \log Z = \log \sum_{z} \tilde p(z, y),

which ``log_likelihood`` returns; the posterior over paths is
:math:`\tilde p(z, y) / Z`.  A constant prior :math:`\log w_t(k) = c_t` leaves
every posterior quantity unchanged and adds :math:`\sum_{t<L} c_t` to
:math:`\log Z` (so a uniform prior :math:`w_t = 1/K` adds :math:`-L \log K`).
A hard prior (``-inf`` entries) conditions the path posterior on the allowed
paths.  Steps ``t >= length`` are outside the model: their filtered, predicted,
smoothed and pairwise probabilities are exactly ``0``, their backward log-messages
``0``, and their Viterbi/sampled states ``-1``.

Bad input and impossible evidence (one convention for the kernels, :class:`~arprob.ARHMM`,
:mod:`arprob.prognostics` and :mod:`arprob.learning`; ``docs/concepts/hmm-inference.md``):

* ``-inf`` log-potentials are valid: an impossible initial state, transition, observation or prior
  state.  Evidence of probability zero (:math:`Z = 0`) gives ``log_likelihood = -inf``, never NaN.
  Every quantity that conditions on it has no law and is returned as exactly ``0``: the smoothed and
  pairwise probabilities and the expected counts everywhere, and the filtered (predicted)
  probabilities from the first step whose evidence (up to the step before) is impossible, the rows
  before it being the exact filtered laws.  The backward log-messages are the exact
  :math:`\log\beta_t`, ``-inf`` where the rest of the evidence is impossible.  The Viterbi path is
  ``-1`` at every step (no path has positive weight; its log-weight is ``-inf``).
  :func:`hmm_posterior_sample` raises :class:`~arprob.errors.ZeroProbabilityError` on concrete input
  (it has nothing to return that could carry the ``-inf``); under ``jit`` its draws are ``-1``.
* NaN and ``+inf`` log-potentials are refused (:class:`~arprob.errors.InvalidArgumentError` naming the
  array and the first offending index), as are strings, bools, wrong shapes and out-of-range
  ``length``; a missing observation is ``mask=False``, never a NaN log-likelihood.
* Observations (:class:`~arprob.ARHMM`, prognostics, :func:`~arprob.fit_em`, :func:`~arprob.fit_sgd`):
  a NaN anywhere in a row marks that observation missing, exactly as ``mask=False`` at that row
  (every term that involves it is dropped); ``±inf`` is refused.

Value checks run on concrete arrays only (one small device-to-host transfer per call); traced values
pass unchecked, so every kernel stays usable under ``jit``, ``vmap`` and ``grad``.

Each kernel is for one sequence; batch with ``jax.vmap`` (ragged batches: pad
to a common ``T`` and pass ``length``).  ``parallel=True`` selects the
parallel-in-time form built on ``jax.lax.associative_scan`` (depth
:math:`O(\log T)`, work :math:`O(T K^3)`, for accelerators); the default
sequential form is a ``lax.scan`` with :math:`O(T K^2)` work.  Both compute the
same quantities (agreement to 1e-8 in float64 is tested).  The kernels are differentiable:
the gradients of :math:`\log Z` with respect to :math:`\ell_t` and :math:`\log A^{(t)}` are the smoothed
and pairwise marginals (tested, both forms, hard priors included).

Common parameters (every kernel):

``log_initial``
    :math:`\log \pi`, shape ``(K,)``.
``log_transition``
    :math:`\log A`, shape ``(K, K)``, or time-varying ``(T-1, K, K)`` with ``log_transition[t]``
    linking step ``t`` to step ``t+1``.  Log-potentials: rows need not be normalised.  They are
    exponentiated after subtracting their largest entry (per step), so entries more than about
    87 (float32) or 708 (float64) nats below it count as zero (the Viterbi kernel works in log
    space and keeps them).
``log_likelihoods``
    :math:`\ell_t(k) = \log p(y_t \mid z_t = k)`, shape ``(T, K)``.
``log_prior`` (keyword, optional)
    Per-step log prior weights :math:`\log w_t(k)`, shape ``(T, K)``, added to the
    log-likelihoods as given (not renormalised); ``-inf`` forbids a state.
``mask`` (keyword, optional)
    Bool ``(T,)``; ``False`` drops the likelihood term of a missing observation.
``length`` (keyword, optional)
    Int (may be traced), ``1 <= length <= T``: steps ``t >= length`` are padding.
``parallel`` (keyword, default ``False``)
    ``False``: sequential ``lax.scan``; ``True``: ``lax.associative_scan`` form.

Inputs are cast to one float dtype (the result type of the arrays, at least the default float);
shapes and concrete values are validated at the boundary, traced values are not.

Accuracy.  Per-step log-normalisers (and the offsets of the parallel elements) are summed with
compensated (two-sum) arithmetic, so the float32 log-likelihood does not drift with :math:`T`: at
:math:`K = 8`, :math:`T = 10^5` (:math:`\log p \approx -1.7 \times 10^5`) both forms return the
float64 value rounded to float32 (errors 0.004-0.007 nats, the rounding floor), where a plain float32
running sum is off by 0.6-2.3 nats (``benchmarks/hmm_float32_accuracy.py``,
``docs/concepts/hmm-inference.md``).  In float64 the kernels agree with brute-force enumeration
to 1e-10 (tests).

References: L. R. Rabiner (1989), *A tutorial on hidden Markov models*;
S. Hassan, S. Särkkä, Á. F. García-Fernández (2021), *Temporal parallelization
of inference in hidden Markov models*, IEEE TSP 69.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jax.scipy.special import logsumexp
from jaxtyping import Array, Bool, Float, Int

from arprob._random import categorical
from arprob._validation import _show, check_bool, check_int, check_key, check_memory, is_concrete
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError, ZeroProbabilityError

__all__ = [
    "BackwardResult",
    "FilterResult",
    "SmootherResult",
    "hmm_backward",
    "hmm_expected_transitions",
    "hmm_filter",
    "hmm_log_likelihood",
    "hmm_pairwise_marginals",
    "hmm_posterior_sample",
    "hmm_smoother",
    "hmm_viterbi",
]


class FilterResult(NamedTuple):
    """Output of :func:`hmm_filter`."""

    log_likelihood: Float[Array, ""]
    filtered_probs: Float[Array, "T K"]
    predicted_probs: Float[Array, "T K"]


class BackwardResult(NamedTuple):
    """Output of :func:`hmm_backward`."""

    log_likelihood: Float[Array, ""]
    log_backward: Float[Array, "T K"]


class SmootherResult(NamedTuple):
    """Output of :func:`hmm_smoother`."""

    log_likelihood: Float[Array, ""]
    filtered_probs: Float[Array, "T K"]
    smoothed_probs: Float[Array, "T K"]


# ---------------------------------------------------------------- validation


_POTENTIALS_FIX = ("log-potentials are real numbers or -inf (an impossible state, transition or observation); "
                   "NaN usually comes from log of a negative number or 0 * inf upstream")


def _real_array(owner, name, value):
    """``value`` as a JAX array of a real dtype; strings, None, objects and bools are refused."""
    if value is None or isinstance(value, (str, bytes)):
        raise ArprobTypeError(f"{owner}: {name} must be an array of real log-potentials, got {_show(value)}")
    if not isinstance(value, (jax.Array, np.ndarray)):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as error:  # ragged lists and the like
            raise ArprobTypeError(f"{owner}: {name} must be an array of real log-potentials, got "
                                  f"{_show(value)} ({error})") from None
    dtype = value.dtype
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if jnp.issubdtype(dtype, jnp.bool_) or not real:
        raise ArprobTypeError(f"{owner}: {name} has dtype {dtype}, expected a real float array of log-potentials")
    return jnp.asarray(value)


@jax.jit
def _non_finite_flags(arrays):
    """Per array: does it hold NaN or +inf?  (One small transfer instead of every array.)"""
    return jnp.stack([jnp.any(jnp.isnan(a) | (a == jnp.inf)) for a in arrays])


def _check_log_potentials(owner: str, arrays: dict) -> None:
    """Refuse NaN and ``+inf`` in concrete log-potentials (``-inf`` is allowed: impossible evidence).

    Tracers pass unchecked.  The error names the array, the first offending index and its value.
    """
    concrete = {name: value for name, value in arrays.items() if is_concrete(value) and value.size}
    if not concrete:
        return
    with jax.ensure_compile_time_eval():  # concrete arrays captured by an outer jit are checked eagerly too
        flags = np.asarray(_non_finite_flags(tuple(concrete.values())))
    for (name, value), flag in zip(concrete.items(), flags):
        if flag:
            array = np.asarray(value)
            bad = np.isnan(array) | (array == np.inf)
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidArgumentError(
                f"{owner}: {name} has {int(bad.sum())} NaN or +inf value(s), the first {array[where]} at index "
                f"{where}; expected real log-potentials ({_POTENTIALS_FIX}; mark a missing observation with "
                "mask=False instead)")


def _check_mask(owner, mask, num_timesteps, name="mask"):
    """A bool ``(T,)`` array (False = missing), or None."""
    if mask is None:
        return None
    given = mask
    if not isinstance(mask, (jax.Array, np.ndarray)):
        try:
            mask = np.asarray(mask)
        except (TypeError, ValueError):
            raise ArprobTypeError(f"{owner}: {name} must be a bool array of shape ({num_timesteps},), got "
                                  f"{_show(mask)}") from None
    if mask.dtype != bool:
        raise ArprobTypeError(f"{owner}: {name} has dtype {mask.dtype} ({_show(given)}), expected a bool array of "
                              f"shape ({num_timesteps},) (False = missing); pass np.asarray(mask, bool)")
    if mask.shape != (num_timesteps,):
        raise ShapeError(f"{owner}: {name} has shape {mask.shape}, expected ({num_timesteps},), one entry per step "
                         "(False = missing); vmap over a batch")
    return jnp.asarray(mask)


def _check_length(owner, length, num_timesteps):
    """``length`` as an int32 array: a Python/NumPy int in ``[1, T]`` or a traced integer scalar."""
    if length is None:
        return jnp.asarray(num_timesteps, jnp.int32)
    if isinstance(length, jax.core.Tracer):
        if length.shape != () or not jnp.issubdtype(length.dtype, jnp.integer):
            raise ArprobTypeError(f"{owner}: length must be an integer scalar, got shape {length.shape} "
                                  f"dtype {length.dtype}")
        return length.astype(jnp.int32)
    length = check_int(owner, "length", length, minimum=1, maximum=num_timesteps,
                       fix=f"length is the number of valid steps of a sequence padded to T = {num_timesteps}")
    return jnp.asarray(length, jnp.int32)


def _prepare(owner, log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel=False):
    """Validate types, shapes and concrete values; return arrays in one float dtype.

    Returns ``(log_initial, log_transition, potentials, length)`` with the mask and the prior folded into
    the potentials.  ``parallel`` is only checked (the callers read it).
    """
    check_bool(owner, "parallel", parallel)
    arrays = {"log_initial": log_initial, "log_transition": log_transition, "log_likelihoods": log_likelihoods}
    if log_prior is not None:
        arrays["log_prior"] = log_prior
    arrays = {name: _real_array(owner, name, value) for name, value in arrays.items()}
    dtype = jnp.result_type(*arrays.values(), float)
    arrays = {name: value.astype(dtype) for name, value in arrays.items()}
    likelihoods = arrays["log_likelihoods"]
    if likelihoods.ndim != 2 or likelihoods.shape[0] < 1 or likelihoods.shape[1] < 1:
        raise ShapeError(f"{owner}: log_likelihoods has shape {likelihoods.shape}, expected (num_timesteps, "
                         "num_states) with both >= 1 (vmap over a batch axis)")
    num_timesteps, num_states = likelihoods.shape
    if arrays["log_initial"].shape != (num_states,):
        raise ShapeError(f"{owner}: log_initial has shape {arrays['log_initial'].shape}, expected ({num_states},) "
                         "to match log_likelihoods.shape[1]")
    transition_shape = arrays["log_transition"].shape
    if transition_shape not in ((num_states, num_states), (num_timesteps - 1, num_states, num_states)):
        raise ShapeError(f"{owner}: log_transition has shape {transition_shape}, expected ({num_states}, "
                         f"{num_states}) or time-varying ({num_timesteps - 1}, {num_states}, {num_states})")
    if "log_prior" in arrays and arrays["log_prior"].shape != likelihoods.shape:
        raise ShapeError(f"{owner}: log_prior has shape {arrays['log_prior'].shape}, expected "
                         f"{likelihoods.shape} like log_likelihoods")
    mask = _check_mask(owner, mask, num_timesteps)
    length = _check_length(owner, length, num_timesteps)
    _check_log_potentials(owner, arrays)
    potentials = likelihoods
    if mask is not None:
        potentials = jnp.where(mask[:, None], potentials, 0.0)
    if "log_prior" in arrays:
        potentials = potentials + arrays["log_prior"]
    return arrays["log_initial"], arrays["log_transition"], potentials, length


# ---------------------------------------------------------------- numerics

# Full float32 precision for matrix products: accelerators may otherwise use TF32 (10-bit mantissa).
_EXACT = lax.Precision.HIGHEST


def _two_sum(a, b):
    """Knuth's TwoSum: ``s + e == a + b`` exactly, with ``s = fl(a + b)``."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _accumulate(high, low, value):
    """Add ``value`` to the compensated pair ``(high, low)`` (sum = high + low).

    Compensation is only needed below float64: a float64 running sum over :math:`10^5` steps
    is already within :math:`10^{-11}` relative, so float64 uses the plain sum (3x faster per step).
    """
    if jnp.finfo(high.dtype).bits >= 64:
        return high + value, low
    high, error = _two_sum(high, value)
    return high, low + error


def _finite_or_zero(value):
    return jnp.where(jnp.isfinite(value), value, jnp.zeros_like(value))


def _safe_logsumexp(values, axis):
    """``logsumexp`` that is ``-inf`` with a zero (not NaN) gradient where all inputs are ``-inf``."""
    top = jax.lax.stop_gradient(_finite_or_zero(jnp.max(values, axis=axis, keepdims=True)))
    total = jnp.sum(jnp.exp(values - top), axis=axis)
    positive = total > 0
    safe_total = jnp.where(positive, total, 1.0)
    return jnp.where(positive, jnp.log(safe_total) + jnp.squeeze(top, axis), -jnp.inf)


def _normalize(probs, axis=-1):
    """Divide by the sum along ``axis``; an all-zero slice (no law: impossible evidence) stays zero."""
    total = jnp.sum(probs, axis=axis, keepdims=True)
    return jnp.where(total > 0, probs / jnp.where(total > 0, total, 1.0), 0.0)


def _softmax(logits, axis=-1):
    """``softmax`` whose all ``-inf`` slices are zero (not NaN)."""
    top = jax.lax.stop_gradient(_finite_or_zero(jnp.max(logits, axis=axis, keepdims=True)))
    return _normalize(jnp.exp(logits - top), axis=axis)


def _shifted_exp(log_matrix):
    """``(exp(M - g), g)`` with ``g`` the largest entry of each matrix (0 if not finite): no overflow."""
    shift = _finite_or_zero(jnp.max(log_matrix, axis=(-2, -1)))
    return jnp.exp(log_matrix - shift[..., None, None]), shift


def _transition_at(log_transition, num_timesteps):
    """Time-varying ``(T-1, K, K)`` view (broadcasts a homogeneous matrix)."""
    if log_transition.ndim == 3:
        return log_transition
    return jnp.broadcast_to(log_transition, (num_timesteps - 1,) + log_transition.shape)


def _valid(num_timesteps, length):
    return jnp.arange(num_timesteps) < length


# ---------------------------------------------------------------- sequential forward / backward


# The scans' vector-matrix products.  For one sequence and few states a dot call per step costs more than
# the arithmetic, so the product is written as a broadcast-multiply-sum that XLA fuses into the loop body
# (measured 1.8x faster at K = 8 on CPU).  Under ``vmap`` (a batch of sequences) that form would become an
# (N, K, K) product per step, slower than the GEMM a dot becomes; a custom batching rule therefore turns
# it back into a matmul, and a custom JVP (plain einsums) keeps it differentiable in both modes.  The
# products are exact float products either way (no TF32 on accelerators).
_FUSED_PRODUCT_MAX_STATES = 64


def _product(spec, fused):
    """``einsum(spec, vector, matrix)`` for one ``(K,)`` vector and a ``(K, K)`` matrix: ``fused`` unbatched,
    a matmul when batched (``spec`` is ``"i,ij->j"`` or ``"j,ij->i"``)."""
    inputs, output = spec.split("->")
    vector_index, matrix_index = inputs.split(",")

    @custom_vmap
    def unbatched(vector, matrix):
        return fused(vector, matrix)

    @unbatched.def_vmap
    def batched(axis_size, in_batched, vector, matrix):
        vector_batched, matrix_batched = in_batched
        if not (vector_batched or matrix_batched):
            return fused(vector, matrix), False
        if not matrix_batched:  # a batch of vectors times one matrix: one GEMM
            return jnp.einsum(f"n{vector_index},{matrix_index}->n{output}", vector, matrix,
                              precision=_EXACT), True
        if not vector_batched:
            vector = jnp.broadcast_to(vector, (axis_size,) + vector.shape)
        return jnp.einsum(f"n{vector_index},n{matrix_index}->n{output}", vector, matrix, precision=_EXACT), True

    @jax.custom_jvp
    def product(vector, matrix):
        return unbatched(vector, matrix)

    @product.defjvp
    def product_jvp(primals, tangents):
        (vector, matrix), (vector_dot, matrix_dot) = primals, tangents
        tangent = jnp.einsum(spec, vector_dot, matrix, precision=_EXACT) + jnp.einsum(spec, vector, matrix_dot,
                                                                                     precision=_EXACT)
        return product(vector, matrix), tangent

    return product


_fused_vecmat = _product("i,ij->j", lambda vector, matrix: jnp.sum(vector[:, None] * matrix, axis=0))
_fused_matvec = _product("j,ij->i", lambda vector, matrix: jnp.sum(matrix * vector[None, :], axis=1))


def _vecmat(vector, matrix):
    """``vector @ matrix`` for one ``(K,)`` vector and a ``(K, K)`` matrix."""
    if matrix.shape[-1] <= _FUSED_PRODUCT_MAX_STATES:
        return _fused_vecmat(vector, matrix)
    return jnp.matmul(vector, matrix, precision=_EXACT)


def _matvec(matrix, vector):
    """``matrix @ vector``."""
    if matrix.shape[-1] <= _FUSED_PRODUCT_MAX_STATES:
        return _fused_matvec(vector, matrix)
    return jnp.matmul(matrix, vector, precision=_EXACT)


def _accurate_sum(values):
    """Sum of a 1-d array: plain in float64; below float64, pairwise with the two-sum errors added back."""
    if jnp.finfo(values.dtype).bits >= 64:
        return jnp.sum(values)
    errors = jnp.zeros((), values.dtype)
    while values.shape[0] > 1:
        if values.shape[0] % 2:
            values = jnp.concatenate([values, jnp.zeros((1,), values.dtype)])
        values, error = _two_sum(values[0::2], values[1::2])
        errors = errors + jnp.sum(error)
    return values[0] + errors


def _scan_inputs(log_transition, potentials, length):
    """Everything the scans need, computed for all steps at once outside the loop.

    Returns ``(valid, shifted, tops, matrices, matrix_shifts)``: ``shifted[t] = exp(psi_t - tops[t])``
    (padded steps carry no evidence: ``psi = 0`` there, so the recursions stay finite and their
    gradients clean), and the transition matrices as ``exp(log A - shift)`` (one ``(K, K)`` matrix
    when homogeneous, else ``(T-1, K, K)``) with their ``(T-1,)`` shifts.
    """
    num_timesteps = potentials.shape[0]
    valid = _valid(num_timesteps, length)
    potentials = jnp.where(valid[:, None], potentials, 0.0)
    tops = _finite_or_zero(jnp.max(potentials, axis=-1))
    shifted = jnp.exp(potentials - tops[:, None])
    matrices, matrix_shift = _shifted_exp(log_transition)
    matrix_shifts = jnp.broadcast_to(matrix_shift, (num_timesteps - 1,))
    return valid, shifted, tops, matrices, matrix_shifts


def _advance(filtered, matrix, weights):
    """One forward step: ``(next filtered, unnormalised message, its sum c_t)``."""
    alpha = _vecmat(filtered, matrix) * weights
    total = jnp.sum(alpha)
    # impossible evidence (total = 0) gives the zero vector, which stays zero: every later filtered law is
    # then 0 (no law) and log Z is -inf, never NaN
    return jnp.where(total > 0, alpha / jnp.where(total > 0, total, 1.0), 0.0), alpha, total


def _forward_messages(log_initial, prepared, time_varying):
    r"""The forward loop with per-step output: ``(alphas (T, K), initial_scale)``.

    ``alphas[t]`` is :math:`\hat\alpha_{t-1}^\top A\, e^{\psi_t - \text{top}_t}` (shifted matrix) from the
    *normalised* previous filtered vector, so ``alphas[t] / alphas[t].sum()`` is the filtered law and
    ``alphas[t].sum()`` the step's normaliser (up to the known shifts).  The loop body is one
    vector-matrix product and one normalisation; everything else is done for all steps at once.
    """
    _, shifted, _, matrices, _ = prepared
    initial_scale = _initial_scale(log_initial)
    alpha0 = jnp.exp(log_initial - initial_scale) * shifted[0]

    def step(filtered, inputs):
        *matrix, weights = inputs
        new_filtered, alpha, _ = _advance(filtered, matrix[0] if matrix else matrices, weights)
        return new_filtered, alpha

    inputs = (matrices, shifted[1:]) if time_varying else (shifted[1:],)
    _, alphas = lax.scan(step, _normalize(alpha0), inputs)
    return jnp.concatenate([alpha0[None], alphas]), initial_scale


def _initial_scale(log_initial):
    """``logsumexp(log_initial)``, or 0 when every entry is ``-inf`` (then the first message is 0, not NaN)."""
    return _finite_or_zero(_safe_logsumexp(log_initial, axis=-1))


def _backward_messages(prepared, time_varying):
    r"""The backward loop: unnormalised messages ``(T-1, K)``,
    ``messages[t] = A^{(t)} (e^{\psi_{t+1} - \text{top}_{t+1}} \circ s_{t+1})`` with :math:`s_{t+1}` the
    normalised message of step ``t+1`` (all ones for ``t + 1 >= length - 1``); ``messages[t] / sum``
    is :math:`\beta_t` normalised for ``t < length - 1``."""
    valid, shifted, _, matrices, _ = prepared
    ones = jnp.ones(shifted.shape[1], shifted.dtype)

    def step(scaled, inputs):
        *matrix, weights, next_valid = inputs
        message = _matvec(matrix[0] if matrix else matrices, scaled * weights)
        total = jnp.sum(message)
        return jnp.where(next_valid & (total > 0), message / total, scaled), message

    inputs = (shifted[1:], valid[1:])
    if time_varying:
        inputs = (matrices,) + inputs
    return lax.scan(step, ones, inputs, reverse=True)[1]


def _log_normalisers(alphas, initial_scale, prepared):
    """``(log_likelihood, totals)`` from the forward messages (sum compensated below float64)."""
    valid, _, tops, _, matrix_shifts = prepared
    totals = jnp.sum(alphas, axis=-1)
    offsets = tops + jnp.concatenate([initial_scale[None], matrix_shifts])
    positive = totals > 0
    terms = jnp.where(valid & positive, jnp.log(jnp.where(positive, totals, 1.0)) + offsets, 0.0)
    # a valid step with c_t = 0 is impossible evidence: log Z = -inf (summed apart: -inf in the two-sum is NaN)
    possible = jnp.all(positive | ~valid)
    return jnp.where(possible, _accurate_sum(terms), -jnp.inf), totals


def _forward_scan(log_initial, log_transition, potentials, length, store: bool, predicted: bool = False):
    r"""Scaled forward recursion.

    ``store=False`` returns ``log_likelihood`` only (nothing per step is kept; the normalisers are
    summed in the loop, compensated below float64).  ``store=True`` returns
    ``(log_likelihood, filtered)`` and, with ``predicted=True``, also the predicted probabilities.
    """
    prepared = _scan_inputs(log_transition, potentials, length)
    valid, shifted, tops, matrices, matrix_shifts = prepared
    time_varying = log_transition.ndim == 3

    if not store:
        initial_scale = _initial_scale(log_initial)
        alpha0 = jnp.exp(log_initial - initial_scale) * shifted[0]
        # the known offsets (likelihood and matrix shifts) are summed outside the loop
        offsets = tops[0] + initial_scale + _accurate_sum(jnp.where(valid[1:], tops[1:] + matrix_shifts, 0.0))

        def step(carry, inputs):
            filtered, *sums = carry
            *matrix, weights, is_valid = inputs
            new_filtered, _, total = _advance(filtered, matrix[0] if matrix else matrices, weights)
            usable = is_valid & (total > 0)
            log_total = jnp.where(usable, jnp.log(jnp.where(usable, total, 1.0)), 0.0)
            # padded steps leave the vector as it is; an impossible valid step leaves it zero for good
            return (jnp.where(is_valid, new_filtered, filtered), *_accumulate(*sums, log_total)), None

        total0 = jnp.sum(alpha0)
        start = (_normalize(alpha0), jnp.log(jnp.where(total0 > 0, total0, 1.0)), jnp.zeros((), potentials.dtype))
        inputs = (matrices, shifted[1:]) if time_varying else (shifted[1:],)
        (last, high, low), _ = lax.scan(step, start, inputs + (valid[1:],))
        # the shift offsets joined exactly (TwoSum) before the compensation: one rounding at the end, so the
        # float32 result is the float32 number nearest the compensated sum
        joined, error = _two_sum(high, offsets)
        return jnp.where(jnp.sum(last) > 0, joined + (error + low), -jnp.inf)

    alphas, initial_scale = _forward_messages(log_initial, prepared, time_varying)
    log_likelihood, totals = _log_normalisers(alphas, initial_scale, prepared)
    positive = valid & (totals > 0)
    filtered = jnp.where(positive[:, None], alphas / jnp.where(positive, totals, 1.0)[:, None], 0.0)
    if not predicted:
        return log_likelihood, filtered
    if time_varying:
        ahead = jnp.einsum("ti,tij->tj", filtered[:-1], matrices, precision=_EXACT)
    else:
        ahead = jnp.matmul(filtered[:-1], matrices, precision=_EXACT)
    ahead = jnp.concatenate([_softmax(log_initial)[None], _normalize(ahead)])
    return log_likelihood, filtered, jnp.where(valid[:, None], ahead, 0.0)


def _backward_scan(log_initial, log_transition, potentials, length):
    r"""Scaled backward recursion.

    Returns ``(scaled, log_scale)`` with :math:`\log\beta_t = \log(\text{scaled}_t) + \text{log\_scale}_t`
    (up to rounding) and ``scaled`` summing to one for ``t < length - 1``; ``scaled = 1`` and
    ``log_scale = 0`` for ``t >= length - 1``.  The scales are formed after the loop (a reverse
    cumulative sum of the logs of the message sums).
    """
    prepared = _scan_inputs(log_transition, potentials, length)
    valid, _, tops, _, matrix_shifts = prepared
    messages = _backward_messages(prepared, log_transition.ndim == 3)
    totals = jnp.sum(messages, axis=-1)
    keep = valid[1:] & (totals > 0)
    scaled = jnp.where(keep[:, None], messages / jnp.where(keep, totals, 1.0)[:, None], 1.0)
    logs = jnp.where(valid[1:], jnp.log(totals) + tops[1:] + matrix_shifts, 0.0)
    log_scale = jnp.cumsum(logs[::-1])[::-1]
    ones = jnp.ones((1, potentials.shape[1]), potentials.dtype)
    return jnp.concatenate([scaled, ones]), jnp.concatenate([log_scale, jnp.zeros((1,), potentials.dtype)])


def _posterior_statistics(log_initial, log_transition, potentials, length):
    r"""The E-step's quantities from one forward and one backward loop sharing their inputs:
    ``(log_likelihood, filtered (T, K), smoothed (T, K), expected transition counts (K, K))``
    (homogeneous transitions).

    With the forward messages :math:`a_t` (normalised previous vector, unnormalised step) and the
    backward messages :math:`m_t = A (w_{t+1} \circ s_{t+1})`, both per-step rescalings cancel:
    :math:`\gamma_t = a_t \circ m_t / n_t` with :math:`n_t = a_t \cdot m_t` for :math:`t < L - 1`,
    :math:`\gamma_{L-1} = a_{L-1} / \sum a_{L-1}`, and
    :math:`\sum_t \xi_t = A \circ \sum_{t < L-1} a_t (w_{t+1} \circ s_{t+1})^\top / n_t`.
    """
    prepared = _scan_inputs(log_transition, potentials, length)
    valid, shifted, _, matrix, _ = prepared
    alphas, initial_scale = _forward_messages(log_initial, prepared, False)
    messages = _backward_messages(prepared, False)
    log_likelihood, totals = _log_normalisers(alphas, initial_scale, prepared)
    num_timesteps = potentials.shape[0]
    inner = valid[1:]  # t + 1 < length: the pair (t, t+1) is inside the sequence
    products = alphas[:-1] * messages
    norms = jnp.sum(products, axis=-1)
    usable = inner & (norms > 0)
    gamma_inner = products / jnp.where(usable, norms, 1.0)[:, None]
    gamma_last = alphas / jnp.where(totals > 0, totals, 1.0)[:, None]
    steps = jnp.arange(num_timesteps)
    smoothed = jnp.where((steps < length - 1)[:, None], jnp.concatenate([gamma_inner, gamma_last[-1:]]),
                         gamma_last)
    # impossible evidence (log Z = -inf): no posterior, every smoothed probability and count is 0
    possible = log_likelihood > -jnp.inf
    smoothed = jnp.where(valid[:, None] & possible, smoothed, 0.0)
    # s_{t+1}: the normalised message of step t+1 (ones at the last valid step)
    next_totals = jnp.sum(messages[1:], axis=-1)
    keep = valid[2:] & (next_totals > 0)
    next_scaled = jnp.where(keep[:, None], messages[1:] / jnp.where(keep, next_totals, 1.0)[:, None], 1.0)
    ahead = shifted[1:] * jnp.concatenate([next_scaled, jnp.ones((1, potentials.shape[1]), potentials.dtype)])
    weights = jnp.where(usable & possible, 1.0 / jnp.where(usable, norms, 1.0), 0.0)
    counts = matrix * jnp.matmul((alphas[:-1] * weights[:, None]).T, ahead, precision=_EXACT)
    positive = valid & (totals > 0)
    filtered = jnp.where(positive[:, None], alphas / jnp.where(positive, totals, 1.0)[:, None], 0.0)
    return log_likelihood, filtered, smoothed, counts


@jax.jit
def _fused_smoother_core(log_initial, log_transition, potentials, length):
    """``(log_likelihood, filtered, smoothed)`` by :func:`_posterior_statistics` (homogeneous, sequential)."""
    return _posterior_statistics(log_initial, log_transition, potentials, length)[:3]


@jax.jit
def _fused_counts_core(log_initial, log_transition, potentials, length):
    """Expected transition counts by :func:`_posterior_statistics` (homogeneous, sequential)."""
    return _posterior_statistics(log_initial, log_transition, potentials, length)[3]


# ---------------------------------------------------------------- parallel (associative) forms


def _semiring_combine(reduce):
    r"""Associative product of normalised log-matrix elements ``(M, high, low)``.

    An element stands for the matrix :math:`\exp(M + h + l)` with :math:`\max M = 0`.  The
    product is :math:`C_{ik} = \operatorname{reduce}_j (A_{ij} + B_{jk})` (``logsumexp``: the
    sum-product semiring; ``max``: max-plus), renormalised, with offsets added in two-sum
    arithmetic so that no precision is lost on the large running offset.
    """

    def combine(first, second):
        matrix_a, high_a, low_a = first
        matrix_b, high_b, low_b = second
        product = reduce(matrix_a[..., :, :, None] + matrix_b[..., None, :, :], axis=-2)
        top = _finite_or_zero(jnp.max(product, axis=(-2, -1)))
        high, error = _two_sum(high_a, high_b)
        high, error_top = _two_sum(high, top)
        return product - top[..., None, None], high, low_a + low_b + error + error_top

    return combine


_SUM_PRODUCT = _semiring_combine(_safe_logsumexp)
_MAX_PLUS = _semiring_combine(jnp.max)


def _elements(log_initial, log_transition, potentials, length):
    r"""Forward elements :math:`a_0(i, j) = \log\pi_j + \psi_0(j)`, :math:`a_t(i, j) = \log A^{(t-1)}_{ij} +
    \psi_t(j)`; the identity (0 on the diagonal, ``-inf`` elsewhere) for ``t >= length``."""
    num_timesteps, num_states = potentials.shape
    first = jnp.broadcast_to(log_initial + potentials[0], (num_states, num_states))
    rest = _transition_at(log_transition, num_timesteps) + potentials[1:, None, :]
    matrices = jnp.concatenate([first[None], rest])
    identity = jnp.where(jnp.eye(num_states, dtype=bool), 0.0, -jnp.inf).astype(potentials.dtype)
    matrices = jnp.where(_valid(num_timesteps, length)[:, None, None], matrices, identity)
    top = _finite_or_zero(jnp.max(matrices, axis=(-2, -1)))
    return matrices - top[:, None, None], top, jnp.zeros_like(top)


def _forward_parallel(log_initial, log_transition, potentials, length, reduce_combine=_SUM_PRODUCT):
    """Prefix products; row 0 of prefix ``t`` is the (normalised) forward log-message at ``t``."""
    matrices, high, low = lax.associative_scan(reduce_combine, _elements(log_initial, log_transition,
                                                                         potentials, length))
    return matrices[:, 0, :], high, low


def _backward_parallel(log_initial, log_transition, potentials, length):
    r"""Suffix products :math:`a_{t+1} \cdots a_{T-1}`; returns ``(log_likelihood, scaled, log_scale)`` like
    :func:`_backward_scan` (``scaled`` normalised to sum to one)."""
    matrices, high, low = _elements(log_initial, log_transition, potentials, length)
    num_states = potentials.shape[1]
    identity = jnp.where(jnp.eye(num_states, dtype=bool), 0.0, -jnp.inf).astype(potentials.dtype)
    zero = jnp.zeros((1,), potentials.dtype)
    shifted = (jnp.concatenate([matrices[1:], identity[None]]), jnp.concatenate([high[1:], zero]),
               jnp.concatenate([low[1:], zero]))
    suffix, high, low = lax.associative_scan(lambda later, earlier: _SUM_PRODUCT(earlier, later), shifted,
                                             reverse=True)
    log_beta = logsumexp(suffix, axis=-1)
    top = _finite_or_zero(jnp.max(log_beta, axis=-1))
    log_total = logsumexp(log_beta - top[:, None], axis=-1)
    # beta_t = 0 (the rest of the evidence is impossible): scaled = 1 and log_scale = -inf, as in the scan form
    some = jnp.isfinite(log_total)
    scaled = jnp.where(some[:, None], jnp.exp(log_beta - top[:, None] - jnp.where(some, log_total, 0.0)[:, None]),
                       1.0)
    log_likelihood = logsumexp(log_initial + potentials[0] + log_beta[0]) + high[0] + low[0]
    return log_likelihood, scaled, (high + low) + (top + log_total)


def _filter_parallel(log_initial, log_transition, potentials, length):
    num_timesteps = potentials.shape[0]
    valid = _valid(num_timesteps, length)
    rows, high, low = _forward_parallel(log_initial, log_transition, potentials, length)
    log_likelihood = high[-1] + (low[-1] + logsumexp(rows[-1]))
    filtered = jnp.where(valid[:, None], _softmax(rows, axis=-1), 0.0)
    matrices, _ = _shifted_exp(_transition_at(log_transition, num_timesteps))
    predicted = _normalize(jnp.einsum("ti,tij->tj", filtered[:-1], matrices, precision=_EXACT))
    predicted = jnp.concatenate([_softmax(log_initial)[None], predicted])
    return log_likelihood, filtered, jnp.where(valid[:, None], predicted, 0.0)


# ---------------------------------------------------------------- jitted cores


@partial(jax.jit, static_argnames=("parallel",))
def _log_likelihood_core(log_initial, log_transition, potentials, length, parallel):
    if parallel:
        rows, high, low = _forward_parallel(log_initial, log_transition, potentials, length)
        return high[-1] + (low[-1] + logsumexp(rows[-1]))
    return _forward_scan(log_initial, log_transition, potentials, length, store=False)


@partial(jax.jit, static_argnames=("parallel",))
def _filter_core(log_initial, log_transition, potentials, length, parallel):
    if parallel:
        return _filter_parallel(log_initial, log_transition, potentials, length)
    return _forward_scan(log_initial, log_transition, potentials, length, store=True, predicted=True)


@partial(jax.jit, static_argnames=("parallel",))
def _forward_backward_core(log_initial, log_transition, potentials, length, parallel):
    """One compiled forward-backward pass shared by the backward, smoother and pairwise kernels.

    Returns ``(log_likelihood, filtered, scaled_backward, log_scale)`` (see :func:`_backward_scan`).
    """
    if parallel:
        log_likelihood, filtered, _ = _filter_parallel(log_initial, log_transition, potentials, length)
        _, scaled, log_scale = _backward_parallel(log_initial, log_transition, potentials, length)
    else:
        log_likelihood, filtered = _forward_scan(log_initial, log_transition, potentials, length, store=True)
        scaled, log_scale = _backward_scan(log_initial, log_transition, potentials, length)
    return log_likelihood, filtered, scaled, log_scale


# The post-processing below is vectorised over t (no scan): run eagerly, or traced inside the caller's jit.


def _smoothed(log_likelihood, filtered, scaled, length):
    valid = _valid(filtered.shape[0], length)
    return jnp.where(valid[:, None] & (log_likelihood > -jnp.inf), _normalize(filtered * scaled), 0.0)


def _pairwise_terms(filtered, scaled, potentials, length):
    """``(filtered[:-1], forward-looking factor e^{psi_{t+1}} beta_{t+1} (T-1, K), pair_valid (T-1,))``."""
    next_potential = potentials[1:]
    top = _finite_or_zero(jnp.max(next_potential, axis=-1, keepdims=True))
    ahead = scaled[1:] * jnp.exp(next_potential - top)
    pair_valid = jnp.arange(1, potentials.shape[0]) < length
    return filtered[:-1], ahead, pair_valid


def _pairwise(log_likelihood, log_transition, filtered, scaled, potentials, length):
    behind, ahead, pair_valid = _pairwise_terms(filtered, scaled, potentials, length)
    matrices, _ = _shifted_exp(_transition_at(log_transition, potentials.shape[0]))
    joint = _normalize(behind[:, :, None] * matrices * ahead[:, None, :], axis=(-2, -1))
    return jnp.where(pair_valid[:, None, None] & (log_likelihood > -jnp.inf), joint, 0.0)


def _expected_transitions(log_likelihood, log_transition, filtered, scaled, potentials, length):
    if log_transition.ndim == 3:
        return jnp.sum(_pairwise(log_likelihood, log_transition, filtered, scaled, potentials, length), axis=0)
    behind, ahead, pair_valid = _pairwise_terms(filtered, scaled, potentials, length)
    # homogeneous: sum_t f_t(i) A_ij g_t(j) / n_t = A_ij (F^T diag(1/n) G)_ij, one matrix product
    matrix, _ = _shifted_exp(log_transition)
    norms = jnp.einsum("ti,ij,tj->t", behind, matrix, ahead, precision=_EXACT)
    usable = pair_valid & (norms > 0) & (log_likelihood > -jnp.inf)
    weights = jnp.where(usable, 1.0 / jnp.where(usable, norms, 1.0), 0.0)
    return matrix * jnp.matmul((behind * weights[:, None]).T, ahead, precision=_EXACT)


def _backpointers(log_transition, rows):
    """``pointer[t-1, j] = argmax_i (rows[t-1, i] + log A^{(t-1)}_{ij})`` (lowest i on ties)."""
    num_timesteps = rows.shape[0]
    scores = rows[:-1, :, None] + _transition_at(log_transition, num_timesteps)
    return jnp.argmax(scores, axis=-2).astype(jnp.int32)


def _compose_backwards(maps, last_state, valid):
    r"""``path[t] = (m_t \circ m_{t+1} \circ \dots)(last_state)`` with ``maps[t]: z_{t+1} -> z_t``,
    by a reverse associative scan over index maps; ``-1`` where not ``valid``."""
    num_states = maps.shape[-1]
    identity = jnp.arange(num_states, dtype=jnp.int32)
    maps = jnp.concatenate([maps, identity[None]])
    suffix = lax.associative_scan(lambda later, earlier: jnp.take_along_axis(earlier, later, axis=-1), maps,
                                  reverse=True)
    return jnp.where(valid, suffix[:, last_state], -1)


@partial(jax.jit, static_argnames=("parallel",))
def _viterbi_core(log_initial, log_transition, potentials, length, parallel):
    num_timesteps, num_states = potentials.shape
    valid = _valid(num_timesteps, length)
    if parallel:
        rows, high, low = _forward_parallel(log_initial, log_transition, potentials, length, _MAX_PLUS)
        last_row = rows[-1]
        log_prob = high[-1] + (low[-1] + jnp.max(last_row))
    else:
        first = log_initial + potentials[0]
        top0 = _finite_or_zero(jnp.max(first))
        time_varying = log_transition.ndim == 3

        def step(carry, inputs):
            row, high, low = carry
            if time_varying:
                log_matrix, potential, is_valid = inputs
            else:
                (potential, is_valid), log_matrix = inputs, log_transition
            best = jnp.max(row[:, None] + log_matrix, axis=0) + potential
            top = _finite_or_zero(jnp.max(best))
            new_high, new_low = _accumulate(high, low, top)
            carry = (jnp.where(is_valid, best - top, row), jnp.where(is_valid, new_high, high),
                     jnp.where(is_valid, new_low, low))
            return carry, carry[0]

        inputs = (potentials[1:], valid[1:])
        if time_varying:
            inputs = (log_transition,) + inputs
        zero = jnp.zeros((), potentials.dtype)
        (last_row, high, low), rest = lax.scan(step, (first - top0, top0, zero), inputs)
        rows = jnp.concatenate([(first - top0)[None], rest])
        log_prob = high + (low + jnp.max(last_row))
    pointers = _backpointers(log_transition, rows)
    pointers = jnp.where(valid[1:, None], pointers, jnp.arange(num_states, dtype=jnp.int32))
    last_state = jnp.argmax(last_row).astype(jnp.int32)
    if parallel:
        path = _compose_backwards(pointers, last_state, valid)
    else:
        def back(state, inputs):
            pointer, is_valid = inputs
            previous = pointer[state]
            return previous, jnp.where(is_valid, previous, -1)

        _, path = lax.scan(back, last_state, (pointers, valid[:-1]), reverse=True)
        path = jnp.concatenate([path, jnp.where(valid[-1], last_state, -1)[None]])
    # impossible evidence: every path has weight 0, none is the most likely one
    return jnp.where(log_prob > -jnp.inf, path, -1), log_prob


@partial(jax.jit, static_argnames=("num_samples", "parallel"))
def _sample_core(key, log_initial, log_transition, potentials, length, num_samples, parallel):
    num_timesteps, num_states = potentials.shape
    valid = _valid(num_timesteps, length)
    if parallel:
        log_likelihood, filtered, _ = _filter_parallel(log_initial, log_transition, potentials, length)
    else:
        log_likelihood, filtered = _forward_scan(log_initial, log_transition, potentials, length, store=True)
    log_filtered = jnp.where(valid[:, None], jnp.log(filtered), 0.0)
    log_transitions = _transition_at(log_transition, num_timesteps)
    last_log_filtered = lax.dynamic_index_in_dim(log_filtered, length - 1, keepdims=False)
    # logits[t, j, i] = log p(z_t = i | z_{t+1} = j, y) + const
    backward_logits = log_filtered[:-1, None, :] + jnp.swapaxes(log_transitions, -1, -2)

    def one_path(path_key):
        key_last, key_steps = jax.random.split(path_key)
        last_state = categorical(key_last, last_log_filtered).astype(jnp.int32)
        if parallel:
            maps = categorical(key_steps, backward_logits).astype(jnp.int32)
            maps = jnp.where(valid[1:, None], maps, jnp.arange(num_states, dtype=jnp.int32))
            return _compose_backwards(maps, last_state, valid)
        step_keys = jax.random.split(key_steps, num_timesteps - 1)

        def back(state, inputs):
            step_key, logits, next_valid = inputs
            previous = categorical(step_key, logits[state]).astype(jnp.int32)
            previous = jnp.where(next_valid, previous, state)
            return previous, previous

        _, path = lax.scan(back, last_state, (step_keys, backward_logits, valid[1:]), reverse=True)
        path = jnp.concatenate([path, last_state[None]])
        return jnp.where(valid, path, -1)

    paths = jax.vmap(one_path)(jax.random.split(key, num_samples))
    # impossible evidence: there is no posterior to draw from; every state is -1 (the caller raises if it can)
    return jnp.where(log_likelihood > -jnp.inf, paths, -1), log_likelihood


# ---------------------------------------------------------------- public kernels

def hmm_log_likelihood(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> Float[Array, ""]:
    r"""Log-likelihood :math:`\log Z` only, storing nothing per step (the fast path).

    The sequential form is a ``lax.scan`` with no per-step outputs: with predicted probabilities
    :math:`\hat\alpha_{t \mid t-1}` it accumulates the normalisers
    :math:`c_t = \sum_k \hat\alpha_{t \mid t-1}(k) e^{\psi_t(k)}` in compensated (two-sum) arithmetic,
    :math:`\log Z = \sum_{t<L} \log c_t`.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    Array
        Scalar :math:`\log Z` (see the module docstring; includes the prior weights).
    """
    arrays = _prepare("hmm_log_likelihood", log_initial, log_transition, log_likelihoods, log_prior, mask, length,
                      parallel)
    return _log_likelihood_core(*arrays, parallel=bool(parallel))


def hmm_filter(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> FilterResult:
    r"""Forward filter: log-likelihood, filtered and predicted state probabilities.

    With :math:`\hat\alpha_0^- = \pi / \sum\pi` and, for :math:`t \ge 1`, the unnormalised
    prediction :math:`\hat\alpha_t^- = \hat\alpha_{t-1}^\top A^{(t-1)}` (a probability vector when
    :math:`A` is stochastic), the recursion is

    .. math::

        c_t = \sum_k \hat\alpha_t^-(k)\, e^{\psi_t(k)}, \qquad
        \hat\alpha_t(k) = \hat\alpha_t^-(k)\, e^{\psi_t(k)} / c_t = p(z_t = k \mid \psi_{0:t}),

    and :math:`\log Z = \log\sum\pi + \sum_{t<L} \log c_t`, the sum taken in two-sum (compensated)
    arithmetic.  ``parallel=True`` computes the prefix products of the elements
    :math:`a_0(i, j) = \pi_j e^{\psi_0(j)}`, :math:`a_t(i, j) = A^{(t-1)}_{ij} e^{\psi_t(j)}` in the
    log-sum-exp semiring (row 0 of the prefix :math:`a_0 \cdots a_t` is the unnormalised forward
    message :math:`\alpha_t`), each element kept as a max-normalised log-matrix plus a compensated
    offset (Hassan et al., 2021).

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    FilterResult
        ``log_likelihood`` (scalar), ``filtered_probs`` :math:`p(z_t \mid \psi_{0:t})` and
        ``predicted_probs`` :math:`p(z_t \mid \psi_{0:t-1})`, both ``(T, K)``, exactly 0 for padded steps.
    """
    arrays = _prepare("hmm_filter", log_initial, log_transition, log_likelihoods, log_prior, mask, length,
                      parallel)
    return FilterResult(*_filter_core(*arrays, parallel=bool(parallel)))


def hmm_backward(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> BackwardResult:
    r"""Backward pass: log backward messages :math:`\log\beta_t(k) = \log \tilde p(\psi_{t+1:L-1} \mid z_t = k)`.

    .. math::

        \beta_{L-1} = 1, \qquad \beta_t(i) = \sum_j A^{(t)}_{ij}\, e^{\psi_{t+1}(j)}\, \beta_{t+1}(j),
        \qquad Z = \sum_k \pi_k e^{\psi_0(k)} \beta_0(k).

    Computed with scaled messages and compensated log-scales, in the same compiled forward-backward
    pass as the smoother (so it also pays for the forward pass); ``parallel=True`` uses suffix
    products :math:`a_{t+1} \cdots a_{L-1}` (reverse associative scan), whose row sums are
    :math:`\beta_t`.  In float32 the large values of :math:`\log\beta_t` carry their float32
    rounding; use the smoother for marginals.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    BackwardResult
        ``log_likelihood`` and ``log_backward`` ``(T, K)`` (0 for ``t >= length - 1``).
    """
    arrays = _prepare("hmm_backward", log_initial, log_transition, log_likelihoods, log_prior, mask, length,
                      parallel)
    log_likelihood, _, scaled, log_scale = _forward_backward_core(*arrays, parallel=bool(parallel))
    valid = _valid(scaled.shape[0], arrays[-1])
    return BackwardResult(log_likelihood, jnp.where(valid[:, None], jnp.log(scaled) + log_scale[:, None], 0.0))


def hmm_smoother(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> SmootherResult:
    r"""Forward-backward smoother: :math:`p(z_t = k \mid \text{all evidence}) \propto \hat\alpha_t(k)\,\beta_t(k)`.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    SmootherResult
        ``log_likelihood``, ``filtered_probs`` and ``smoothed_probs`` ``(T, K)`` (0 for padded steps).
    """
    arrays = _prepare("hmm_smoother", log_initial, log_transition, log_likelihoods, log_prior, mask, length,
                      parallel)
    if not parallel and arrays[1].ndim == 2:  # homogeneous: one fused pass, no normalisation of the messages
        return SmootherResult(*_fused_smoother_core(*arrays))
    log_likelihood, filtered, scaled, _ = _forward_backward_core(*arrays, parallel=bool(parallel))
    return SmootherResult(log_likelihood, filtered, _smoothed(log_likelihood, filtered, scaled, arrays[-1]))


def hmm_pairwise_marginals(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> Float[Array, "T1 K K"]:
    r"""Pairwise posterior marginals :math:`\xi_t(i, j) = p(z_t = i, z_{t+1} = j \mid \text{evidence})`.

    .. math::

        \xi_t(i, j) \propto \hat\alpha_t(i)\, A^{(t)}_{ij}\, e^{\psi_{t+1}(j)}\, \beta_{t+1}(j),

    normalised over :math:`(i, j)` for each :math:`t`.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    Array
        ``(T-1, K, K)``; exactly 0 for pairs with ``t + 1 >= length``.
    """
    arrays = _prepare("hmm_pairwise_marginals", log_initial, log_transition, log_likelihoods, log_prior, mask,
                      length, parallel)
    log_likelihood, filtered, scaled, _ = _forward_backward_core(*arrays, parallel=bool(parallel))
    return _pairwise(log_likelihood, arrays[1], filtered, scaled, arrays[2], arrays[3])


def hmm_expected_transitions(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> Float[Array, "K K"]:
    r"""Expected transition counts :math:`\sum_{t < L-1} \xi_t(i, j)` (the EM statistic).

    For a homogeneous :math:`A` the sum is one matrix product,
    :math:`A \odot (\hat\alpha^\top D\, G)` with :math:`G_t = e^{\psi_{t+1}} \beta_{t+1}` and
    :math:`D` the diagonal of per-step normalisers, without forming ``(T-1, K, K)``.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    Array
        ``(K, K)``, summing to ``length - 1``.
    """
    arrays = _prepare("hmm_expected_transitions", log_initial, log_transition, log_likelihoods, log_prior, mask,
                      length, parallel)
    if not parallel and arrays[1].ndim == 2:
        return _fused_counts_core(*arrays)
    log_likelihood, filtered, scaled, _ = _forward_backward_core(*arrays, parallel=bool(parallel))
    return _expected_transitions(log_likelihood, arrays[1], filtered, scaled, arrays[2], arrays[3])


def hmm_viterbi(
    log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"], log_likelihoods: Float[Array, "T K"],
    *, log_prior: Float[Array, "T K"] | None = None, mask: Bool[Array, " T"] | None = None,
    length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> tuple[Int[Array, " T"], Float[Array, ""]]:
    r"""Most likely path :math:`\arg\max_z \log\tilde p(z, y)` by max-product.

    .. math::

        \delta_0 = \log\pi + \psi_0, \qquad
        \delta_t(j) = \max_i \big(\delta_{t-1}(i) + \log A^{(t-1)}_{ij}\big) + \psi_t(j),

    :math:`z_{L-1} = \arg\max\delta_{L-1}`, :math:`z_{t-1} = \arg\max_i (\delta_{t-1}(i) + \log
    A^{(t-1)}_{i z_t})`.  Ties go to the lowest state id, at the last step and then at each
    back-pointer.  :math:`\delta_t` is kept max-normalised with a compensated offset.
    ``parallel=True`` computes the :math:`\delta_t` as prefix products in the max-plus semiring and
    backtracks by a reverse associative scan that composes the back-pointer maps.

    Parameters
    ----------
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.

    Returns
    -------
    tuple
        ``path`` int32 ``(T,)`` (``-1`` for padded steps, and at every step when the evidence is
        impossible) and its log-weight :math:`\log\tilde p(z^\star, y)` (not divided by :math:`Z`;
        ``-inf`` for impossible evidence).
    """
    arrays = _prepare("hmm_viterbi", log_initial, log_transition, log_likelihoods, log_prior, mask, length,
                      parallel)
    return _viterbi_core(*arrays, parallel=bool(parallel))


def hmm_posterior_sample(
    key, log_initial: Float[Array, " K"], log_transition: Float[Array, "*T1 K K"],
    log_likelihoods: Float[Array, "T K"], num_samples: int, *, log_prior: Float[Array, "T K"] | None = None,
    mask: Bool[Array, " T"] | None = None, length: int | Int[Array, ""] | None = None, parallel: bool = False,
) -> Int[Array, "num_samples T"]:
    r"""Exact posterior path samples by forward filtering, backward sampling.

    .. math::

        z_{L-1} \sim \hat\alpha_{L-1}, \qquad
        p(z_t = i \mid z_{t+1} = j, \text{evidence}) \propto \hat\alpha_t(i)\, A^{(t)}_{ij}.

    ``parallel=True`` draws, for every step :math:`t` and every value :math:`j` of
    :math:`z_{t+1}`, an independent :math:`z_t` from the conditional above (a random map
    :math:`j \mapsto z_t`) and composes the maps by a reverse associative scan; the maps of
    different steps are independent, so the path has the same law (the draws differ from the
    sequential form's).  Categorical draws use :func:`arprob._random.categorical`.

    Parameters
    ----------
    key
        PRNG key.
    log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel
        The HMM's log-potentials and options, described under *Common parameters* in
        :mod:`arprob.inference.hmm`.
    num_samples
        Number of independent paths.

    Returns
    -------
    Array
        int32 ``(num_samples, T)``, ``-1`` for padded steps.

    Raises
    ------
    ZeroProbabilityError
        When the evidence has probability zero (``log Z = -inf``) and the inputs are concrete; under
        ``jit`` the draws are ``-1`` at every step instead.  Requests whose draws would not fit in memory
        (``num_samples`` times ``T`` times the Gumbel noise per step) are refused before sampling.
    """
    return _posterior_sample("hmm_posterior_sample", key, log_initial, log_transition, log_likelihoods, num_samples,
                             log_prior=log_prior, mask=mask, length=length, parallel=parallel)


def _posterior_sample(owner, key, log_initial, log_transition, log_likelihoods, num_samples, *, log_prior, mask,
                      length, parallel):
    """:func:`hmm_posterior_sample` with errors in the name of ``owner`` (also serves ``ARHMM.posterior_sample``)."""
    check_key(owner, key)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    arrays = _prepare(owner, log_initial, log_transition, log_likelihoods, log_prior, mask, length, parallel)
    num_timesteps, num_states = arrays[2].shape
    # the draws: (n, T) states, and per path its Gumbel noise ((T, K) sequential, (T, K, K) parallel) in float64
    check_memory(owner, f"drawing num_samples={num_samples:,} paths of {num_timesteps} steps",
                 (num_samples, num_timesteps, num_states * (num_states if parallel else 1) + 1), itemsize=8,
                 fix="draw fewer paths per call (loop over calls with jax.random.split keys)")
    paths, log_likelihood = _sample_core(key, *arrays, num_samples=num_samples, parallel=bool(parallel))
    if is_concrete(log_likelihood) and not float(log_likelihood) > -np.inf:
        raise ZeroProbabilityError(
            f"{owner}: the evidence has probability zero (log Z = -inf: every path is ruled out by the -inf "
            "entries of log_initial, log_transition, log_likelihoods or log_prior), so there is no posterior to "
            "sample from; check for a step whose log-likelihoods (plus log_prior) are all -inf or a hard prior "
            "that no allowed transition can satisfy (under jit the draws are -1 at every step instead)")
    return paths
