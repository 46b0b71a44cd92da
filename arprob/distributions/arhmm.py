r"""Autoregressive hidden Markov model with Gaussian vector-autoregressive emissions: :class:`ARHMM`.

A hidden Markov chain :math:`z_t \in \{0, \dots, K-1\}` selects, at every step, one of :math:`K`
vector autoregressions of order :math:`p` (``num_lags``) in :math:`\mathbb{R}^D`:

.. math::

    x_t \mid z_t = k,\ x_{<t} \sim \mathcal N\Big(\sum_{l=1}^{p} A_{k,l}\, x_{t-l} + b_k,\ Q_k\Big),
    \qquad p(z_{t+1} = j \mid z_t = i) = P_{ij}.

Conventions (fixed, tested in ``tests/test_arhmm.py``):

* ``weights`` has shape ``(K, p, D, D)`` and ``weights[k, l-1]`` is :math:`A_{k,l}`, the matrix that
  multiplies :math:`x_{t-l}` (``weights[k, 0]`` multiplies the most recent value :math:`x_{t-1}`).
  dynamax stacks the lags the other way in places (see ``docs/concepts/arhmm.md``);
* ``biases`` ``(K, D)``; ``covariances`` ``(K, D, D)``, or ``(D, D)`` tied (shared by all states);
* ``log_prob(y)`` for ``y`` of shape ``(T, D)`` is the likelihood *conditional on the first p
  observations*, :math:`\log p(y_{p:T-1} \mid y_{0:p-1})`, and ``initial_probs`` is the law of the
  first modelled state :math:`z_p`: an array ``(K,)``, or the string ``"stationary"`` for the
  stationary law :math:`\pi = \pi P` of ``transition_probs`` (the econometric Markov-switching
  convention), computed by one linear solve (see :func:`stationary_distribution`);
* every per-step output (filtered/smoothed probabilities, Viterbi paths) has ``T - p`` rows, row ``i``
  referring to the modelled step :math:`t = p + i`; the per-step inputs ``log_prior`` and ``mask`` take
  that alignment too, or the data's ``T`` rows (the first ``p`` rows of ``log_prior`` ignored; a ``T``-row
  ``mask`` marks missing observations, as in :func:`~arprob.fit_em`);
* a NaN anywhere in a row of the observations marks that observation missing, exactly as ``mask=False``
  at that row in the data alignment (every term that involves it is dropped; works under ``jit``);
  ``±inf`` observations are refused.  ``-inf`` in ``log_prior`` forbids a state; a prior that forbids every
  path gives ``log_prob = -inf`` (the convention of :mod:`arprob.inference.hmm` for impossible evidence).

The emission log-densities are Gaussian log-densities computed with the Cholesky factors of the
:math:`Q_k`; everything else is done by the kernels of :mod:`arprob.inference.hmm` (compensated sums,
exact in float64 to 1e-10 against enumeration of all :math:`K^{T-p}` state paths in the tests).

References: J. D. Hamilton (1989), *A new approach to the economic analysis of nonstationary time
series and the business cycle*, Econometrica 57; K. P. Murphy (2012), *Machine Learning: a
Probabilistic Perspective*, §17.6.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, Float, Int
from numpyro.distributions import Distribution, constraints

from arprob._random import categorical
from arprob._validation import (
    _show,
    check_int,
    check_key,
    check_memory,
    check_probs,
    check_real,
    check_sample_shape,
    check_table_size,
    is_concrete,
)
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.inference.hmm import (
    FilterResult,
    SmootherResult,
    _check_log_potentials,
    _posterior_sample,
    hmm_filter,
    hmm_log_likelihood,
    hmm_smoother,
    hmm_viterbi,
)

__all__ = ["ARHMM", "ForecastResult", "stationary_distribution"]

_OWNER = "ARHMM"


class ForecastResult(NamedTuple):
    """Output of :meth:`ARHMM.forecast` (``h`` = horizon, ``n`` = num_samples)."""

    mean: Float[Array, "h D"]
    covariance: Float[Array, "h D D"]
    samples: Float[Array, "n h D"]
    states: Int[Array, "n h"]


def stationary_distribution(transition_probs: Float[Array, "K K"]) -> Float[Array, " K"]:
    r"""The stationary law :math:`\pi = \pi P` of a stochastic matrix, by one linear solve.

    With :math:`\mathbf 1` the all-ones matrix, :math:`\pi (I - P + \mathbf 1) = \mathbf 1^\top`
    (because :math:`\pi \mathbf 1 = \mathbf 1^\top` for a probability vector), and
    :math:`I - P + \mathbf 1` is invertible exactly when :math:`P` has a unique stationary law
    (one closed communicating class).  Differentiable in :math:`P`.  On concrete values a
    singular system (no unique stationary law) raises :class:`~arprob.errors.InvalidArgumentError`;
    round-off negatives (:math:`\sim 10^{-16}`) are clipped to 0 and the result renormalised.
    """
    owner = "stationary_distribution"
    transition = _real(owner, "transition_probs", transition_probs, "transition probabilities")
    if transition.ndim != 2 or transition.shape[0] != transition.shape[1] or transition.shape[0] < 1:
        raise ShapeError(f"{owner}: transition_probs has shape {transition.shape}, expected (K, K) (square, "
                         "row i the law of the next state after state i)")
    transition = transition.astype(jnp.result_type(transition, float))
    check_probs(owner, "transition_probs", transition)
    return _stationary(owner, transition, "pass a transition matrix with one closed communicating class")


def _stationary(owner, transition, fix):
    """The stationary law of a validated stochastic matrix; errors in the name of ``owner``."""
    num_states = transition.shape[-1]
    system = jnp.eye(num_states, dtype=transition.dtype) - transition + 1.0
    if is_concrete(transition):
        singular_values = np.linalg.svd(np.asarray(system, dtype=np.float64), compute_uv=False)
        eps = float(jnp.finfo(transition.dtype).eps)
        if singular_values[-1] <= 1e3 * eps * num_states * singular_values[0]:
            raise InvalidArgumentError(
                f"{owner}: transition_probs has no unique stationary law (I - P + 1 is singular, smallest "
                f"singular value {singular_values[-1]:.3g}): the chain has several closed classes; {fix}"
            )
    probs = jnp.linalg.solve(system.T, jnp.ones(num_states, transition.dtype))
    probs = jnp.clip(probs, 0.0, None)
    return probs / jnp.sum(probs)


def _real(owner, name, value, what="real numbers"):
    """``value`` as a JAX array of a real (float or integer) dtype; None, strings, objects and bools refused."""
    if value is None or isinstance(value, (str, bytes)):
        raise ArprobTypeError(f"{owner}: {name} must be an array of {what}, got {_show(value)}")
    if not isinstance(value, (jax.Array, np.ndarray)):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise ArprobTypeError(f"{owner}: {name} must be an array of {what}, got {_show(value)} ({error})") from None
    if jnp.issubdtype(value.dtype, jnp.bool_) or not (jnp.issubdtype(value.dtype, jnp.floating)
                                   or jnp.issubdtype(value.dtype, jnp.integer)):
        raise ArprobTypeError(f"{owner}: {name} has dtype {value.dtype}, expected {what} (a float array)")
    return jnp.asarray(value)


def _check_finite(owner, name, value, fix):
    """Refuse NaN and ±inf in a concrete array."""
    if not is_concrete(value):
        return
    array = np.asarray(value)
    bad = ~np.isfinite(array)
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgumentError(f"{owner}: {name} has {int(bad.sum())} non-finite value(s), the first "
                                   f"{array[where]} at index {where}; expected finite values ({fix})")


# ---------------------------------------------------------------- pure functions


def _lag_stack(y, num_lags):
    """``lags[i, l-1] = y[p + i - l]`` for the ``T - p`` modelled steps: shape ``(T-p, p, D)``."""
    num_timesteps = y.shape[0]
    return jnp.stack([y[num_lags - lag: num_timesteps - lag] for lag in range(1, num_lags + 1)], axis=1) \
        if num_lags else jnp.zeros((num_timesteps, 0, y.shape[1]), y.dtype)


def _inverse_trils(scale_trils):
    """``L_k^{-1}`` for each state (K small triangular solves); whitening ``L_k^{-1} r`` is then one einsum
    over all steps, far cheaper than a triangular solve per step."""
    identity = jnp.eye(scale_trils.shape[-1], dtype=scale_trils.dtype)
    return jax.vmap(lambda tril: solve_triangular(tril, identity, lower=True))(scale_trils)


@partial(jax.jit, static_argnames=("num_lags",))
def _emission_log_likelihoods(y, weights, biases, scale_trils, num_lags):
    r""":math:`\log \mathcal N(y_t; \sum_l A_{k,l} y_{t-l} + b_k, L_k L_k^\top)`, shape ``(T-p, K)``.

    The whitened residuals :math:`L_k^{-1}(y_t - \sum_l A_{k,l} y_{t-l} - b_k)` of all states come from one
    matrix product of the regressors :math:`(y_t, y_{t-1}, \dots, y_{t-p})` with the stacked
    :math:`[L_k^{-1}, -L_k^{-1} A_{k,1}, \dots]`, minus :math:`L_k^{-1} b_k`.
    """
    num_states, dimension = biases.shape
    steps = y.shape[0] - num_lags
    inverse = _inverse_trils(scale_trils)  # (K, D, D)
    lags = _lag_stack(y, num_lags).reshape(steps, num_lags * dimension)  # column (l-1)*D + m is y_{t-l}[m]
    regressors = jnp.concatenate([y[num_lags:], lags], axis=-1)  # (T-p, D + pD)
    lag_part = -jnp.einsum("kij,kljm->kilm", inverse, weights).reshape(num_states, dimension, num_lags * dimension)
    stacked = jnp.concatenate([inverse, lag_part], axis=-1)  # (K, D, D + pD)
    whitened = (regressors @ stacked.reshape(num_states * dimension, -1).T).reshape(steps, num_states, dimension)
    whitened = whitened - jnp.einsum("kij,kj->ki", inverse, biases)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(scale_trils, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(whitened**2, axis=-1) - half_log_det - 0.5 * dimension * jnp.log(2 * jnp.pi)


@partial(jax.jit, static_argnames=("num_lags",))
def _log_prob_core(y, log_prior, mask, log_initial, log_transition, weights, biases, scale_trils, num_lags):
    """``log p(y_{p:T-1} | y_{0:p-1})`` broadcast over leading axes of ``y``, ``log_prior`` and ``mask``."""

    def single(sequence, prior, observed):
        log_likelihoods = _emission_log_likelihoods(sequence, weights, biases, scale_trils, num_lags)
        return hmm_log_likelihood(log_initial, log_transition, log_likelihoods, log_prior=prior, mask=observed)

    return jnp.vectorize(single, signature="(t,d),(s,k),(s)->()")(y, log_prior, mask)


@partial(jax.jit, static_argnames=("num_steps",))
def _simulate(keys, initial_probs, transition_probs, weights, biases, scale_trils, history, num_steps):
    """One path per key: ``(states (n, num_steps), observations (n, num_steps, D))`` after ``history``."""
    log_initial = jnp.log(initial_probs)
    log_transition = jnp.log(transition_probs)
    dimension = biases.shape[-1]

    def one_path(key):
        key_first, key_steps = jax.random.split(key)
        first = categorical(key_first, log_initial).astype(jnp.int32)
        recent_first = history[::-1]  # recent_first[l-1] = x_{t-l}

        def step(carry, step_key):
            state, recent = carry
            key_noise, key_next = jax.random.split(step_key)
            mean = jnp.einsum("lij,lj->i", weights[state], recent) + biases[state]
            noise = jax.random.normal(key_noise, (dimension,), dtype=biases.dtype)
            value = mean + scale_trils[state] @ noise
            recent = jnp.concatenate([value[None], recent[:-1]], axis=0)[: recent.shape[0]]  # (p, D), p may be 0
            next_state = categorical(key_next, log_transition[state]).astype(jnp.int32)
            return (next_state, recent), (state, value)

        _, (states, values) = jax.lax.scan(step, (first, recent_first), jax.random.split(key_steps, num_steps))
        return states, values

    return jax.vmap(one_path)(keys)


@jax.jit
def _forecast_moments(samples, probs, weights, biases, covariances, history):
    """Exact mixture moments at step 1, sample moments (divisor ``n - 1``) at later steps."""
    means = jnp.einsum("klij,lj->ki", weights, history[::-1]) + biases  # (K, D)
    first_mean = probs @ means
    second = jnp.einsum("k,kij->ij", probs, covariances + means[:, :, None] * means[:, None, :])
    first_cov = second - jnp.outer(first_mean, first_mean)
    sample_mean = jnp.mean(samples, axis=0)
    centred = samples - sample_mean
    covariance = jnp.einsum("nhi,nhj->hij", centred, centred) / (samples.shape[0] - 1)
    return sample_mean.at[0].set(first_mean), covariance.at[0].set(first_cov)


# ---------------------------------------------------------------- the distribution


class ARHMM(Distribution):
    r"""Autoregressive HMM (Markov-switching vector autoregression), a numpyro distribution.

    .. math::

        p(y_{p:T-1} \mid y_{0:p-1}) = \sum_{z_{p:T-1}} \pi_{z_p} \prod_{t=p+1}^{T-1} P_{z_{t-1} z_t}
        \prod_{t=p}^{T-1} \mathcal N\Big(y_t;\ \sum_{l=1}^{p} A_{z_t,l}\, y_{t-l} + b_{z_t},\ Q_{z_t}\Big).

    Event shape ``(T, D)``, real support, no batch shape (the parameters are one model;
    ``log_prob`` broadcasts over leading axes of the value).  ``T`` is read from the value at
    ``log_prob`` time (any ``T > p``).  ``length`` is optional: given, the event shape is
    ``(length, D)`` and :meth:`sample` draws that many rows; omitted, :meth:`sample` refuses and the
    event shape is the placeholder ``(1, D)``, which broadcasts against observations of any length, so
    ``numpyro.sample("y", ARHMM(...), obs=y)`` works (with or without plates) for any ``T``.

    Parameters
    ----------
    initial_probs
        Law of the first modelled state :math:`z_p`, shape ``(K,)``, or ``"stationary"`` for the
        stationary law of ``transition_probs`` (:func:`stationary_distribution`; an error if it is
        not unique).
    transition_probs
        :math:`P`, shape ``(K, K)``; row ``i`` is the law of :math:`z_{t+1}` given :math:`z_t = i`.
    weights
        :math:`A`, shape ``(K, p, D, D)``; ``weights[k, l-1]`` multiplies :math:`x_{t-l}`.
    biases
        :math:`b`, shape ``(K, D)``.
    covariances
        :math:`Q`, shape ``(K, D, D)`` (one per state) or ``(D, D)`` (tied); symmetric positive definite.
        Stored as ``(K, D, D)`` in both cases (a tied one broadcast), with ``tied`` recording which was given.
    num_lags
        :math:`p \ge 0` (``0`` is a Gaussian HMM).
    length
        Optional ``T``: event shape ``(T, D)`` and the length of :meth:`sample` draws (history included).
    validate_args
        ``False`` skips the checks of concrete values (shapes are always checked).
    """

    arg_constraints = {}
    pytree_data_fields = ("initial_probs", "transition_probs", "weights", "biases", "covariances", "scale_trils")
    pytree_aux_fields = ("num_lags", "length", "stationary", "tied", "num_states", "dimension")

    def __init__(self, initial_probs, transition_probs, weights, biases, covariances, num_lags: int, *,
                 length: int | None = None, validate_args=None):
        num_lags = check_int(_OWNER, "num_lags", num_lags, minimum=0)
        checks = validate_args is not False
        transition = _real(_OWNER, "transition_probs", transition_probs, "transition probabilities")
        if transition.ndim != 2 or transition.shape[0] != transition.shape[1] or transition.shape[0] < 1:
            raise ShapeError(f"{_OWNER}: transition_probs has shape {transition.shape}, expected (K, K) "
                             "(square; row i is the law of the next state after state i)")
        num_states = transition.shape[0]
        biases = _real(_OWNER, "biases", biases)
        if biases.ndim != 2 or biases.shape[0] != num_states or biases.shape[1] < 1:
            raise ShapeError(f"{_OWNER}: biases has shape {biases.shape}, expected (K, D) = ({num_states}, D) "
                             "with K from transition_probs and D >= 1")
        dimension = biases.shape[1]
        weights = _real(_OWNER, "weights", weights)
        expected = (num_states, num_lags, dimension, dimension)
        if weights.shape != expected:
            raise ShapeError(f"{_OWNER}: weights has shape {weights.shape}, expected (K, num_lags, D, D) = "
                             f"{expected} (K from transition_probs, num_lags={num_lags:,}, D from biases; "
                             "weights[k, l-1] multiplies x[t-l])")
        covariances = _real(_OWNER, "covariances", covariances)
        tied = covariances.shape == (dimension, dimension)
        if tied:
            covariances = jnp.broadcast_to(covariances, (num_states, dimension, dimension))
        elif covariances.shape != (num_states, dimension, dimension):
            raise ShapeError(f"{_OWNER}: covariances has shape {covariances.shape}, expected (K, D, D) = "
                             f"{(num_states, dimension, dimension)} or tied (D, D) = {(dimension, dimension)}")
        stationary = isinstance(initial_probs, str)
        if stationary and initial_probs != "stationary":
            raise InvalidArgumentError(f"{_OWNER}: initial_probs={initial_probs!r}, expected an array of shape "
                                       f"({num_states},) or the string 'stationary'")
        if not stationary:
            initial = _real(_OWNER, "initial_probs", initial_probs, "probabilities")
            if initial.shape != (num_states,):
                raise ShapeError(f"{_OWNER}: initial_probs has shape {initial.shape}, expected ({num_states},) "
                                 "(the law of the first modelled state z_p), or the string 'stationary'")
        arrays = [transition, weights, biases, covariances] + ([] if stationary else [initial])
        dtype = jnp.result_type(*arrays, float)
        transition, weights, biases, covariances = (a.astype(dtype) for a in (transition, weights, biases,
                                                                                covariances))
        if checks:
            check_probs(_OWNER, "transition_probs", transition)
            if not stationary:
                check_probs(_OWNER, "initial_probs", initial)
            _check_covariances(covariances)
            fix = "the AR parameters must be real numbers"
            _check_finite(_OWNER, "weights", weights, fix)
            _check_finite(_OWNER, "biases", biases, fix)
        initial = _stationary(_OWNER, transition, "pass initial_probs as an array instead") if stationary \
            else initial.astype(dtype)
        if length is not None:
            length = check_int(_OWNER, "length", length, minimum=num_lags + 1,
                               fix="length is T, the rows of one sequence, history included")
            check_memory(_OWNER, f"one sequence of length={length:,}", (length, dimension), itemsize=8,
                         fix="pass a shorter length")
        self.initial_probs = initial
        self.transition_probs = transition
        self.weights = weights
        self.biases = biases
        self.covariances = covariances
        self.scale_trils = jnp.linalg.cholesky(covariances)
        self.num_lags = num_lags
        self.length = length
        self.stationary = stationary
        self.tied = tied
        self.num_states = num_states
        self.dimension = dimension
        # Without a length, (1, D) is a placeholder that broadcasts against any number of steps, so that
        # numpyro's shape checks (log_density, plates) accept observations of any length T.
        event_shape = (length if length is not None else 1, dimension)
        super().__init__(batch_shape=(), event_shape=event_shape, validate_args=validate_args)

    @classmethod
    def random(cls, key, num_states: int, dimension: int, num_lags: int = 1, *, length: int | None = None,
               concentration: float = 1.0, stability: float = 0.5, noise_scale: float = 0.5) -> ARHMM:
        r"""A random ARHMM whose every regime is a stable vector autoregression.

        Drawn from ``key`` (split into one subkey per parameter block):

        * ``initial_probs`` and each row of ``transition_probs``: symmetric
          Dirichlet(``concentration``), as in :meth:`~arprob.HMM.random`;
        * ``weights``: for each state :math:`k`, standard normal matrices :math:`G_{k,l}` rescaled so
          that :math:`\sum_{l=1}^{p} \|A_{k,l}\|_2 = \text{stability}`
          (:math:`\|\cdot\|_2` the spectral norm).  With ``stability < 1`` every regime is a stable
          VAR, and so is any switching between them: :math:`\|x_t\| \le \text{stability}\cdot
          \max_{l \le p}\|x_{t-l}\| + \|b_{z_t} + \varepsilon_t\|`, a contraction of the last :math:`p`
          values whatever the state path;
        * ``biases``: standard normal, shape ``(K, D)``;
        * ``covariances``: :math:`Q_k = s^2 (I + H_k H_k^\top / D) / 2` with :math:`H_k` standard normal
          ``(D, D)`` and :math:`s` = ``noise_scale``, so every eigenvalue of :math:`Q_k` is at least
          :math:`s^2/2` (symmetric positive definite; :math:`\mathbb E\, Q_k = s^2 I`).

        Parameters
        ----------
        key
            A PRNG key (``jax.random.key(seed)``).
        num_states, dimension, num_lags
            :math:`K \ge 1`, :math:`D \ge 1`, :math:`p \ge 0` (``0`` is a Gaussian HMM).
        length
            Optional ``T``, as in the constructor (the length of :meth:`sample` draws).
        concentration
            Dirichlet concentration, ``> 0``: small values give sparse, nearly deterministic rows.
        stability
            Sum of the spectral norms of each state's lag matrices, in ``[0, 1)``.
        noise_scale
            :math:`s > 0`, the typical standard deviation of the innovations.

        Examples
        --------
        >>> model = ARHMM.random(jax.random.key(0), num_states=2, dimension=3, num_lags=2, length=100)
        >>> y = model.sample(jax.random.key(1))
        >>> y.shape
        (100, 3)
        >>> log_p = model.log_prob(y)                  # log p(y[2:] | y[:2])
        """
        owner = "ARHMM.random"
        key = check_key(owner, key)
        num_states = check_int(owner, "num_states", num_states, minimum=1)
        dimension = check_int(owner, "dimension", dimension, minimum=1)
        num_lags = check_int(owner, "num_lags", num_lags, minimum=0)
        concentration = check_real(owner, "concentration", concentration, low=0.0, low_open=True,
                                   fix="the Dirichlet concentration is a positive number")
        stability = check_real(owner, "stability", stability, low=0.0, high=1.0, high_open=True,
                               fix="the sum of the spectral norms of a state's lag matrices must be below 1 "
                                   "for a stable autoregression")
        noise_scale = check_real(owner, "noise_scale", noise_scale, low=0.0, low_open=True,
                                 fix="noise_scale is a standard deviation")
        check_table_size(owner, "the AR weights (num_states x num_lags x dimension x dimension)",
                         (num_states, max(num_lags, 1), dimension, dimension),
                         fix="pass fewer states, lags or dimensions")
        key_initial, key_transition, key_weights, key_biases, key_covariances = jax.random.split(key, 5)
        dtype = jnp.result_type(float)

        def dirichlet(key, shape):
            return jax.nn.softmax(jax.random.loggamma(key, concentration, shape, dtype), axis=-1)

        raw = jax.random.normal(key_weights, (num_states, num_lags, dimension, dimension), dtype)
        norms = jnp.linalg.norm(raw, ord=2, axis=(-2, -1)).sum(axis=1) if num_lags else jnp.ones(num_states, dtype)
        weights = raw * (stability / norms)[:, None, None, None]
        factors = jax.random.normal(key_covariances, (num_states, dimension, dimension), dtype)
        covariances = 0.5 * noise_scale**2 * (jnp.eye(dimension, dtype=dtype)
                                              + factors @ jnp.swapaxes(factors, -1, -2) / dimension)
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))  # exactly symmetric
        return cls(dirichlet(key_initial, (num_states,)), dirichlet(key_transition, (num_states, num_states)),
                   weights, jax.random.normal(key_biases, (num_states, dimension), dtype), covariances, num_lags,
                   length=length)

    support = constraints.independent(constraints.real, 2)

    def __repr__(self):
        initial = "'stationary'" if self.stationary else "array"
        return (f"ARHMM(num_states={self.num_states}, dimension={self.dimension}, num_lags={self.num_lags}, "
                f"initial_probs={initial}, length={self.length})")

    # -- checks -------------------------------------------------------------
    def _check_value(self, owner, y, name="y"):
        """Observations ``(..., T, D)`` as a float array; NaN allowed (missing), ``±inf`` refused."""
        y = _real(owner, name, y, "observations")
        if y.ndim < 2 or y.shape[-1] != self.dimension or y.shape[-2] <= self.num_lags:
            raise ShapeError(f"{owner}: {name} has shape {y.shape}, expected (..., T, D) with D = {self.dimension} "
                             f"and T > num_lags = {self.num_lags} (the first {self.num_lags} rows are the "
                             "conditioning history)")
        if not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(self.biases.dtype)
        if is_concrete(y):
            array = np.asarray(y)
            if np.isinf(array).any():
                where = tuple(int(i) for i in np.argwhere(np.isinf(array))[0])
                raise InvalidArgumentError(
                    f"{owner}: {name} has {int(np.isinf(array).sum())} infinite value(s), the first {array[where]} at "
                    f"index {where}; expected finite observations (mark a missing observation with NaN or "
                    "mask=False)")
        return y

    def _per_step(self, owner, y, log_prior, mask):
        """Validated ``(y, log_prior, mask)`` for the ``T - p`` modelled steps (defaults: 0 and True).

        Either alignment is accepted (they coincide when ``num_lags = 0``):

        * with the modelled steps, ``(..., T - p)``: row ``i`` is step ``t = p + i``; ``mask=False``
          drops that step's emission term;
        * with the data, ``(..., T)`` (as :func:`~arprob.fit_em` takes them): the first ``p`` rows of
          ``log_prior`` are ignored, and ``mask=False`` marks a *missing observation*: every modelled
          step whose value or any of whose lags is missing drops its term, and missing values are
          replaced by 0 so that nothing non-finite reaches the computation.

        A row of ``y`` holding NaN (in any component) is a missing observation, exactly as ``mask=False``
        at that row in the data alignment (works under ``jit`` too).
        """
        num_timesteps, p = y.shape[-2], self.num_lags
        steps = num_timesteps - p
        batch = y.shape[:-2]
        if log_prior is None:
            log_prior = jnp.zeros(batch + (steps, self.num_states), y.dtype)
        else:
            log_prior = _real(owner, "log_prior", log_prior, "log prior weights")
            if log_prior.ndim < 2 or log_prior.shape[-1] != self.num_states or log_prior.shape[-2] not in (
                    steps, num_timesteps):
                raise ShapeError(f"{owner}: log_prior has shape {log_prior.shape}, expected (..., T - num_lags, "
                                 f"K) = (..., {steps}, {self.num_states}) (row i is step t = num_lags + i) or "
                                 f"(..., T, K) = (..., {num_timesteps}, {self.num_states}) aligned with the data")
            _check_log_potentials(owner, {"log_prior": log_prior})
            log_prior = log_prior[..., log_prior.shape[-2] - steps:, :]
        observed = ~jnp.any(jnp.isnan(y), axis=-1)  # (..., T): NaN marks a missing observation
        term_mask = None
        if mask is not None:
            given = mask
            if not isinstance(mask, (jax.Array, np.ndarray)):
                try:
                    mask = np.asarray(mask)
                except (TypeError, ValueError):
                    raise ArprobTypeError(f"{owner}: mask must be a bool array, got {_show(mask)}") from None
            if mask.dtype != jnp.bool_:
                raise ArprobTypeError(f"{owner}: mask has dtype {mask.dtype} ({_show(given)}), expected bool "
                                      "(False = missing); pass np.asarray(mask, bool)")
            if mask.ndim < 1 or mask.shape[-1] not in (steps, num_timesteps):
                raise ShapeError(f"{owner}: mask has shape {mask.shape}, expected (..., T - num_lags) = "
                                 f"(..., {steps}) (entry i is step t = num_lags + i) or (..., T) = "
                                 f"(..., {num_timesteps}) aligned with the data")
            try:
                np.broadcast_shapes(mask.shape[:-1], batch)
            except ValueError:
                raise ShapeError(f"{owner}: mask has shape {mask.shape}, whose leading axes do not broadcast "
                                 f"against those of the observations, {batch}") from None
            mask = jnp.asarray(mask)
            if mask.shape[-1] == num_timesteps:
                observed = observed & mask
            else:
                term_mask = mask
        y = jnp.where(observed[..., None], y, 0.0)
        modelled = observed[..., p:]
        for lag in range(1, p + 1):
            modelled = modelled & observed[..., p - lag:num_timesteps - lag]
        if term_mask is not None:
            modelled = modelled & term_mask
        return y, log_prior, modelled

    def _single(self, owner, y, name="y"):
        y = self._check_value(owner, y, name)
        if y.ndim != 2:
            raise ShapeError(f"{owner}: {name} has shape {y.shape}, expected one sequence (T, D); "
                             "use jax.vmap over a batch")
        return y

    def _log_potentials(self):
        return jnp.log(self.initial_probs), jnp.log(self.transition_probs)

    # -- densities ----------------------------------------------------------
    def emission_log_likelihoods(self, y: Float[Array, "*batch T D"]) -> Float[Array, "*batch S K"]:
        r""":math:`\log \mathcal N(y_t; \sum_l A_{k,l} y_{t-l} + b_k, Q_k)` for ``t = p..T-1``: ``(..., T-p, K)``.

        A step whose value or one of whose lags is missing (a NaN row) gets 0 for every state: its term is
        dropped, as ``mask=False`` does in the kernels.
        """
        owner = "ARHMM.emission_log_likelihoods"
        y, _, modelled = self._per_step(owner, self._check_value(owner, y), None, None)

        def single(sequence):
            return _emission_log_likelihoods(sequence, self.weights, self.biases, self.scale_trils, self.num_lags)

        values = jnp.vectorize(single, signature="(t,d)->(s,k)")(y)
        return jnp.where(modelled[..., None], values, 0.0)

    def log_prob(self, value: Float[Array, "*batch T D"], *, log_prior=None, mask=None) -> Float[Array, "*batch"]:
        r""":math:`\log p(y_{p:T-1} \mid y_{0:p-1})` by the forward pass (:func:`hmm_log_likelihood`).

        ``log_prior`` ``(..., T-p, K)`` adds per-step log weights :math:`\log w_t(k)` over the states (the
        result is then :math:`\log Z` of the weighted joint, see :mod:`arprob.inference.hmm`; ``-inf``
        forbids a state, and a prior that forbids every path gives ``-inf``); ``mask``
        bool ``(..., T-p)``, ``False`` drops that step's emission term (a value that serves as a lag of
        later steps is still used there as given).  Both may instead be aligned with the data,
        ``(..., T, K)`` and ``(..., T)``, as :func:`~arprob.fit_em` takes them: the first ``num_lags``
        rows of ``log_prior`` are then ignored, and ``mask=False`` marks a missing observation, which
        drops every term that involves it (its own and those it is a lag of).  A NaN in a row of
        ``value`` marks that observation missing in the same way (exactly the same numbers as the
        data-aligned mask); ``±inf`` is refused.
        Broadcasts over leading axes of ``value``, ``log_prior`` and ``mask``.
        """
        owner = "ARHMM.log_prob"
        y = self._check_value(owner, value, "value")
        y, log_prior, mask = self._per_step(owner, y, log_prior, mask)
        return _log_prob_core(y, log_prior, mask, *self._log_potentials(), self.weights, self.biases,
                              self.scale_trils, num_lags=self.num_lags)

    def _one_sequence(self, owner, y, log_prior, mask):
        """``_per_step`` for one sequence ``(T, D)``: ``log_prior`` and ``mask`` without batch axes."""
        y, log_prior, mask = self._per_step(owner, self._single(owner, y), log_prior, mask)
        if log_prior.ndim != 2 or mask.ndim != 1:
            raise ShapeError(f"{owner}: log_prior and mask must be for one sequence, got shapes "
                             f"{log_prior.shape} and {mask.shape}; use jax.vmap over a batch")
        return y, log_prior, mask

    def _kernel_args(self, owner, y, log_prior, mask):
        y, log_prior, mask = self._one_sequence(owner, y, log_prior, mask)
        log_initial, log_transition = self._log_potentials()
        log_likelihoods = _emission_log_likelihoods(y, self.weights, self.biases, self.scale_trils, self.num_lags)
        return (log_initial, log_transition, log_likelihoods), dict(log_prior=log_prior, mask=mask)

    def filter(self, y: Float[Array, "T D"], *, log_prior=None, mask=None) -> FilterResult:
        """:func:`~arprob.inference.hmm.hmm_filter` on ``y``: probabilities ``(T-p, K)``, row ``i`` = step ``p+i``.

        NaN rows of ``y`` are missing observations (as in :meth:`log_prob`).  Impossible evidence gives
        ``log_likelihood = -inf`` and zero rows from the first step that cannot be explained.
        """
        args, kwargs = self._kernel_args("ARHMM.filter", y, log_prior, mask)
        return hmm_filter(*args, **kwargs)

    def smooth(self, y: Float[Array, "T D"], *, log_prior=None, mask=None) -> SmootherResult:
        """:func:`~arprob.inference.hmm.hmm_smoother` on ``y``: :math:`p(z_t \\mid y)` for ``t = p..T-1``.

        NaN rows of ``y`` are missing observations; impossible evidence gives ``log_likelihood = -inf`` and
        ``smoothed_probs`` all 0 (no posterior).
        """
        args, kwargs = self._kernel_args("ARHMM.smooth", y, log_prior, mask)
        return hmm_smoother(*args, **kwargs)

    def viterbi(self, y: Float[Array, "T D"], *, log_prior=None,
                mask=None) -> tuple[Int[Array, " S"], Float[Array, ""]]:
        """:func:`~arprob.inference.hmm.hmm_viterbi`: most likely states ``(T-p,)`` and their log joint weight.

        NaN rows of ``y`` are missing observations; impossible evidence gives the path ``-1`` everywhere and
        the log-weight ``-inf``.
        """
        args, kwargs = self._kernel_args("ARHMM.viterbi", y, log_prior, mask)
        return hmm_viterbi(*args, **kwargs)

    def posterior_sample(self, key, y: Float[Array, "T D"], num_samples: int, *, log_prior=None,
                         mask=None) -> Int[Array, "n S"]:
        """:func:`~arprob.inference.hmm.hmm_posterior_sample`: exact draws of :math:`z_{p:T-1} \\mid y`.

        Impossible evidence raises :class:`~arprob.errors.ZeroProbabilityError` (states ``-1`` under ``jit``).
        """
        owner = "ARHMM.posterior_sample"
        check_key(owner, key)
        args, kwargs = self._kernel_args(owner, y, log_prior, mask)
        return _posterior_sample(owner, key, *args, num_samples, length=None, parallel=False, **kwargs)

    # -- simulation ---------------------------------------------------------
    def _history(self, owner, history):
        if history is None:
            return jnp.zeros((self.num_lags, self.dimension), self.biases.dtype)
        history = _real(owner, "history", history, "observations").astype(self.biases.dtype)
        if history.shape != (self.num_lags, self.dimension):
            raise ShapeError(f"{owner}: history has shape {history.shape}, expected (num_lags, D) = "
                             f"{(self.num_lags, self.dimension)}, oldest first (history[-1] is the most recent)")
        _check_finite(owner, "history", history, "the last num_lags observations, with no missing value")
        return history

    def _draw(self, owner, key, sample_shape, history, length):
        check_key(owner, key)
        shape = check_sample_shape(owner, sample_shape)
        length = self.length if length is None else length
        if length is None:
            raise InvalidArgumentError(f"{owner}: sampling needs the sequence length T; pass length=T to the "
                                       "constructor or to this method")
        length = check_int(owner, "length", length, minimum=self.num_lags + 1,
                           fix="length is T, the rows of one sequence, history included")
        history = self._history(owner, history)
        count = int(np.prod(shape)) if shape else 1
        # per path and step: the value (D), its state and two split keys, in 8-byte words
        check_memory(owner, f"drawing sample_shape={shape} ({count:,} sequence(s)) of length={length:,}",
                     (max(count, 1), length, self.dimension + 4), itemsize=8,
                     fix="draw fewer or shorter sequences per call (loop with jax.random.split keys)")
        states, values = _simulate(jax.random.split(key, count), self.initial_probs, self.transition_probs,
                                   self.weights, self.biases, self.scale_trils, history,
                                   num_steps=length - self.num_lags)
        values = jnp.concatenate([jnp.broadcast_to(history, (count,) + history.shape), values], axis=1)
        return (states.reshape(shape + (length - self.num_lags,)),
                values.reshape(shape + (length, self.dimension)))

    def sample_with_states(self, key, sample_shape=(), *, history=None, length: int | None = None):
        r"""Draws ``(states, observations)``: shapes ``sample_shape + (T-p,)`` and ``sample_shape + (T, D)``.

        The first ``p`` rows of every observation array are ``history`` (shape ``(p, D)``, oldest first;
        zeros if not given) and rows ``p..T-1`` are simulated: :math:`z_p \sim` ``initial_probs``, then
        :math:`x_t \sim \mathcal N(\sum_l A_{z_t,l} x_{t-l} + b_{z_t}, Q_{z_t})` and
        :math:`z_{t+1} \sim P_{z_t}`.  So ``log_prob`` of a draw is the log-density of the law that
        generated it.  ``length`` (default: the constructor's) is ``T``, history included.  Requests that
        would not fit in memory are refused before anything is drawn.
        """
        return self._draw("ARHMM.sample_with_states", key, sample_shape, history, length)

    def sample(self, key, sample_shape=(), *, history=None, length: int | None = None):
        """Observations only, ``sample_shape + (T, D)`` (see :meth:`sample_with_states`)."""
        return self._draw("ARHMM.sample", key, sample_shape, history, length)[1]

    def forecast(self, key, history: Float[Array, "p D"], horizon: int, num_samples: int, *,
                 state_probs: Float[Array, " K"] | None = None) -> ForecastResult:
        r"""Predictive mean, covariance and samples of :math:`x_{p}, \dots, x_{p+h-1}` after ``history``.

        ``history`` ``(p, D)`` holds the last ``p`` observations, oldest first; ``state_probs`` is the law
        of the state of the *first forecast step* (default ``initial_probs``; after ``filter(y)`` pass
        ``filtered_probs[-1] @ transition_probs``).  Step 1 is exact, a Gaussian mixture:
        :math:`\mu = \sum_k w_k \mu_k`, :math:`\Sigma = \sum_k w_k (Q_k + \mu_k \mu_k^\top) - \mu\mu^\top`.
        Later steps (the law is a mixture of :math:`K^h` Gaussians) are Monte Carlo estimates from the
        ``num_samples`` simulated paths (sample mean, covariance with divisor ``n - 1``; standard error
        of the mean :math:`\sqrt{\Sigma_{ii}/n}`).  The samples are returned too.
        """
        owner = "ARHMM.forecast"
        check_key(owner, key)
        if history is None:
            raise ArprobTypeError(f"{owner}: history must be the last num_lags observations, an array of shape "
                                  f"(num_lags, D) = {(self.num_lags, self.dimension)}, got None")
        history = self._history(owner, history)
        horizon = check_int(owner, "horizon", horizon, minimum=1)
        num_samples = check_int(owner, "num_samples", num_samples, minimum=2,
                                fix="the sample covariance needs at least 2 paths")
        check_memory(owner, f"simulating num_samples={num_samples:,} paths over horizon={horizon:,} steps",
                     (num_samples, horizon, self.dimension + 4), itemsize=8,
                     fix="use fewer samples or a shorter horizon")
        if state_probs is None:
            probs = self.initial_probs
        else:
            probs = _real(owner, "state_probs", state_probs, "probabilities").astype(self.biases.dtype)
            if probs.shape != (self.num_states,):
                raise ShapeError(f"{owner}: state_probs has shape {probs.shape}, expected ({self.num_states},)")
            check_probs(owner, "state_probs", probs)
        states, samples = _simulate(jax.random.split(key, num_samples), probs, self.transition_probs,
                                    self.weights, self.biases, self.scale_trils, history, num_steps=horizon)
        mean, covariance = _forecast_moments(samples, probs, self.weights, self.biases, self.covariances, history)
        return ForecastResult(mean, covariance, samples, states)


def _check_covariances(covariances):
    """Symmetric positive definite, by a Cholesky factorisation (concrete values only).

    Symmetric to 1e-8 relative in float64, 1e-5 in float32 (a covariance that ``fit_em`` computes
    with x64 off is symmetric only up to float32's rounding, a few 1e-8 relative).
    """
    if not is_concrete(covariances):
        return
    single = np.dtype(getattr(covariances, "dtype", np.float64)) != np.dtype(np.float64)
    array = np.asarray(covariances, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError(f"{_OWNER}: covariances contain non-finite values; expected symmetric positive "
                                   "definite matrices")
    asymmetry = np.max(np.abs(array - np.swapaxes(array, -1, -2)), axis=(-2, -1))
    scale = np.max(np.abs(array), axis=(-2, -1))
    for k in range(array.shape[0]):
        if asymmetry[k] > (1e-5 if single else 1e-8) * max(scale[k], 1e-300):
            raise InvalidArgumentError(f"{_OWNER}: covariances[{k}] is not symmetric (max |Q - Q^T| = "
                                       f"{asymmetry[k]:.3g}); pass (Q + Q^T) / 2")
        try:
            np.linalg.cholesky(array[k])
        except np.linalg.LinAlgError:
            eigenvalue = float(np.linalg.eigvalsh(array[k])[0])
            raise InvalidArgumentError(f"{_OWNER}: covariances[{k}] is not positive definite (smallest eigenvalue "
                                       f"{eigenvalue:.3g}); expected a symmetric positive definite matrix "
                                       "(add a small multiple of the identity)") from None

