r"""Expectation–maximization (Baum–Welch) for HMMs and autoregressive HMMs, with partial knowledge.

:func:`fit_em` maximizes the weighted log-likelihood of theorem 12
(``proofs/12-arhmm-forward-em.md``),

.. math::

    F(\theta) = \sum_n \log \sum_{z} \prod_t w^{(n)}_t(z_t)\; p_\theta(z, y^{(n)}),

over many sequences of different lengths, where :math:`w^{(n)}_t` are per-step
prior weights over the states (``state_prior``: soft knowledge, or hard with
zeros: the ARPHMM "weighted distribution" integration) and missing observations
drop their emission terms.  Each iteration runs one batched forward–backward
(:mod:`arprob.inference.hmm`, ``vmap`` over sequences with traced lengths) for
the weighted posterior's one- and two-step marginals :math:`\gamma, \xi`, then
the closed-form M-step:

* initial law :math:`\pi \propto \sum_n \gamma^{(n)}_0`, transitions
  :math:`A_{ij} \propto \sum_{n,t} \xi^{(n)}_t(i, j) + (\alpha - 1)` (a symmetric
  Dirichlet(:math:`\alpha`) prior on each row gives the MAP step; :math:`\alpha = 1` is plain EM);
* categorical emissions (:class:`~arprob.HMM`): :math:`B_{kv} \propto \sum \gamma_t(k) 1[x_t = v]`
  over observed steps;
* AR-Gaussian emissions (:class:`~arprob.ARHMM`): per state, weighted least squares of
  :math:`y_t` on :math:`(y_{t-1}, \dots, y_{t-p}, 1)` with weights :math:`\gamma_t(k)` and the
  weighted residual covariance (tied across states with ``tied_covariance=True``), floored at
  ``covariance_floor`` times the identity (eigenvalue floor).

By theorem 12 no iteration decreases :math:`F` (the tests check every iteration).
A state that receives no weight keeps its parameters (the M-step's objective does
not depend on them).  With ``initial_probs="stationary"`` the law of the first
modelled state is tied to the transitions: the transition step is then taken as a
generalized EM step with step halving toward the previous matrix until :math:`F`
does not decrease, and the model keeps the convention.

Compiled once: the E-step and M-step are jit-compiled functions of arrays, so
repeated calls with the same shapes do not recompile.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import check_positive_int
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.inference.hmm import hmm_expected_transitions, hmm_smoother

__all__ = ["fit_em"]

_FREEZABLE = ("initial_probs", "transition_probs", "emission_probs", "weights", "biases", "covariances")


# ----------------------------------------------------------------------------------- E-step


@jax.jit
def _e_step(log_initial, log_transition, log_likelihoods, log_prior, mask, lengths):
    """Batched weighted forward-backward: ``(log_likelihoods (N,), gamma (N,S,K), transitions (K,K))``."""

    def one(log_lik, prior, observed, length):
        result = hmm_smoother(log_initial, log_transition, log_lik, log_prior=prior, mask=observed, length=length)
        counts = hmm_expected_transitions(log_initial, log_transition, log_lik, log_prior=prior, mask=observed,
                                          length=length)
        return result.log_likelihood, result.smoothed_probs, counts

    values, gamma, counts = jax.vmap(one)(log_likelihoods, log_prior, mask, lengths)
    return values, gamma, counts.sum(axis=0)


def _normalize_rows(counts, fallback):
    totals = counts.sum(axis=-1, keepdims=True)
    return jnp.where(totals > 0, counts / jnp.where(totals > 0, totals, 1.0), fallback)


# ----------------------------------------------------------------------------------- emissions


def _ar_features(y, num_lags):
    """``(N, S, p*D + 1)`` regressors ``(y_{t-1}, ..., y_{t-p}, 1)`` for the modelled steps."""
    steps = y.shape[1] - num_lags
    lags = [y[:, num_lags - lag : num_lags - lag + steps] for lag in range(1, num_lags + 1)]
    return jnp.concatenate(lags + [jnp.ones(y.shape[:1] + (steps, 1), y.dtype)], axis=-1)


@partial(jax.jit, static_argnames=("num_lags",))
def _ar_log_likelihoods(y, weights, biases, covariances, num_lags):
    features = _ar_features(y, num_lags)  # (N, S, F)
    coefficients = jnp.concatenate([weights[:, lag] for lag in range(num_lags)] + [biases[:, :, None]], axis=-1)
    means = jnp.einsum("kdf,nsf->nskd", coefficients, features)
    residuals = y[:, num_lags:, None, :] - means  # (N, S, K, D)
    trils = jnp.linalg.cholesky(covariances)
    whitened = jax.scipy.linalg.solve_triangular(trils[None, None], residuals[..., None], lower=True)[..., 0]
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(trils, axis1=-2, axis2=-1)), axis=-1)
    dimension = y.shape[-1]
    return -0.5 * jnp.sum(whitened**2, axis=-1) - half_log_det - 0.5 * dimension * jnp.log(2 * jnp.pi)


@partial(jax.jit, static_argnames=("num_lags", "tied", "fit_weights", "fit_biases", "fit_covariances"))
def _ar_m_step(y, gamma, mask, weights, biases, covariances, floor, num_lags, tied, fit_weights, fit_biases,
               fit_covariances):
    features = _ar_features(y, num_lags)
    targets = y[:, num_lags:]
    dimension = y.shape[-1]
    g = gamma * mask[..., None]  # (N, S, K): missing observations carry no emission term
    mass = g.sum(axis=(0, 1))  # (K,)
    coefficients = jnp.concatenate([weights[:, lag] for lag in range(num_lags)] + [biases[:, :, None]], axis=-1)
    if fit_weights or fit_biases:
        if fit_weights and fit_biases:
            free = jnp.arange(features.shape[-1])
        elif fit_weights:
            free = jnp.arange(features.shape[-1] - 1)
        else:
            free = jnp.array([features.shape[-1] - 1])
        fixed_part = jnp.einsum("kdf,nsf->nskd", coefficients.at[:, :, free].set(0.0), features)
        x = features[..., free]  # (N, S, F')
        gram = jnp.einsum("nsk,nsf,nsg->kfg", g, x, x)
        cross = jnp.einsum("nsk,nskd,nsf->kdf", g, targets[:, :, None, :] - fixed_part, x)
        solved = jnp.linalg.solve(gram + 1e-300 * jnp.eye(x.shape[-1]), jnp.swapaxes(cross, -1, -2))
        updated = coefficients.at[:, :, free].set(jnp.swapaxes(solved, -1, -2))
        coefficients = jnp.where((mass > 0)[:, None, None], updated, coefficients)
    new_weights = jnp.stack([coefficients[:, :, lag * dimension : (lag + 1) * dimension]
                             for lag in range(num_lags)], axis=1) if num_lags else weights
    new_biases = coefficients[:, :, -1]
    if fit_covariances:
        residuals = targets[:, :, None, :] - jnp.einsum("kdf,nsf->nskd", coefficients, features)
        scatter = jnp.einsum("nsk,nskd,nske->kde", g, residuals, residuals)
        if tied:
            pooled = scatter.sum(axis=0) / mass.sum()
            estimate = jnp.broadcast_to(pooled, covariances.shape)
        else:
            estimate = scatter / jnp.where(mass > 0, mass, 1.0)[:, None, None]
        values, vectors = jnp.linalg.eigh(0.5 * (estimate + jnp.swapaxes(estimate, -1, -2)))
        floored = jnp.einsum("kde,ke,kfe->kdf", vectors, jnp.maximum(values, floor), vectors)
        keep = (mass > 0) if not tied else jnp.ones_like(mass, bool)
        covariances = jnp.where(keep[:, None, None], floored, covariances)
    return new_weights, new_biases, covariances


# ----------------------------------------------------------------------------------- data


def _as_batch(owner, name, array, ndim, dtype=None):
    array = jnp.asarray(array) if dtype is None else jnp.asarray(array, dtype)
    if array.ndim == ndim - 1:
        return array[None], False
    if array.ndim != ndim:
        raise ShapeError(f"{owner}: {name} has shape {array.shape}, expected {ndim - 1} axes for one sequence or "
                         f"{ndim} for a batch")
    return array, True


def _prepare_common(owner, num_sequences, num_timesteps, num_states, state_prior, mask, lengths, batched):
    if lengths is None:
        lengths = np.full(num_sequences, num_timesteps)
    lengths = np.atleast_1d(np.asarray(lengths))
    if lengths.shape != (num_sequences,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ShapeError(f"{owner}: lengths must be integers of shape ({num_sequences},), got {lengths!r}")
    if np.any(lengths < 1) or np.any(lengths > num_timesteps):
        raise InvalidArgumentError(f"{owner}: lengths must be in [1, {num_timesteps}], got {lengths}")
    if mask is None:
        mask = np.ones((num_sequences, num_timesteps), bool)
    else:
        mask = np.asarray(mask, bool)
        mask = mask if batched else mask[None]
        if mask.shape != (num_sequences, num_timesteps):
            raise ShapeError(f"{owner}: mask has shape {mask.shape}, expected {(num_sequences, num_timesteps)}")
    if state_prior is None:
        log_prior = np.zeros((num_sequences, num_timesteps, num_states))
    else:
        prior = np.asarray(state_prior, np.float64)
        prior = prior if batched else prior[None]
        if prior.shape != (num_sequences, num_timesteps, num_states):
            raise ShapeError(f"{owner}: state_prior has shape {prior.shape}, expected "
                             f"{(num_sequences, num_timesteps, num_states)} (weights over states per step)")
        if np.any(~np.isfinite(prior)) or np.any(prior < 0):
            raise InvalidArgumentError(f"{owner}: state_prior must hold finite weights >= 0 (0 forbids a state)")
        with np.errstate(divide="ignore"):
            log_prior = np.log(prior)
    return lengths, mask, log_prior


# ----------------------------------------------------------------------------------- driver


def _check_freeze(owner, freeze, allowed):
    freeze = tuple(freeze)
    for name in freeze:
        if name not in allowed:
            raise InvalidArgumentError(f"{owner}: cannot freeze {name!r}; expected some of {allowed}")
    return freeze


def fit_em(model, data, *, state_prior=None, mask=None, lengths=None, max_iters: int = 100, tol: float = 1e-6,
           num_restarts: int = 1, key=None, tied_covariance: bool = False, covariance_floor: float = 1e-6,
           transition_concentration: float = 1.0, freeze=()):
    r"""Fit an :class:`~arprob.ARHMM` or :class:`~arprob.HMM` by EM; returns ``(fitted_model, log_likelihoods)``.

    Parameters
    ----------
    model
        The starting model; its conventions (``num_lags``, ``initial_probs="stationary"``)
        are kept.
    data
        ARHMM: observations ``(T, D)`` or a padded batch ``(N, T, D)``.  HMM: tokens
        ``(L,)`` or ``(N, L)``.
    state_prior
        Optional weights over states per step, ``(T, K)`` or ``(N, T, K)``, non-negative
        (0 forbids a state, a one-hot row fixes it).  For an ARHMM, rows ``t < num_lags``
        are ignored (those steps are not modelled).
    mask
        Optional bool ``(T,)`` / ``(N, T)``, aligned with ``data``; ``False`` marks a missing
        observation.  For an ARHMM a modelled step whose value *or any of its lags* is missing
        drops its emission term (missing values are not imputed; they may hold NaN).  Note the
        difference with :meth:`ARHMM.log_prob`, whose ``mask`` has one entry per *modelled*
        step ``(T - num_lags,)`` and drops only that step's term.
    lengths
        Optional ``(N,)`` numbers of valid steps for a padded batch.
    max_iters, tol
        At most ``max_iters`` iterations; stop when the relative change of the
        log-likelihood is below ``tol``.
    num_restarts, key
        With ``num_restarts > 1`` (``key`` required), restart from randomly perturbed
        transition rows and biases/emission rows, and keep the best fit.
    tied_covariance
        ARHMM: one covariance shared by all states (always so for a model built with a
        tied ``(D, D)`` covariance).
    covariance_floor
        ARHMM: smallest eigenvalue of a fitted covariance.
    transition_concentration
        Symmetric Dirichlet prior :math:`\alpha \ge 1` on each transition row (MAP step);
        ``1`` is maximum likelihood.  The returned values are then the log-likelihood,
        and the penalized objective is what cannot decrease.
    freeze
        Names of parameters kept fixed: ``initial_probs``, ``transition_probs`` and
        ``emission_probs`` (HMM) or ``weights``, ``biases``, ``covariances`` (ARHMM).

    Returns
    -------
    fitted_model
        A new model of the same class.
    log_likelihoods
        ``numpy`` array: :math:`F` at the start of every iteration and at the end
        (the weighted log-likelihood summed over sequences).
    """
    owner = "fit_em"
    from arprob.distributions.arhmm import ARHMM
    from arprob.distributions.hmm import HMM

    max_iters = check_positive_int(owner, "max_iters", max_iters)
    num_restarts = check_positive_int(owner, "num_restarts", num_restarts)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise InvalidArgumentError(f"{owner}: tol must be a number >= 0, got {tol!r}")
    if not transition_concentration >= 1:
        raise InvalidArgumentError(f"{owner}: transition_concentration must be >= 1, got {transition_concentration}")
    if num_restarts > 1 and key is None:
        raise ArprobTypeError(f"{owner}: num_restarts={num_restarts} needs key=... for the random restarts")
    if isinstance(model, ARHMM):
        problem = _ARProblem(owner, model, data, state_prior, mask, lengths, tied_covariance, covariance_floor,
                             _check_freeze(owner, freeze, _FREEZABLE[:2] + _FREEZABLE[3:]))
    elif isinstance(model, HMM):
        problem = _CategoricalProblem(owner, model, data, state_prior, mask, lengths,
                                      _check_freeze(owner, freeze, _FREEZABLE[:3]))
    else:
        raise ArprobTypeError(f"{owner}: expected an arprob.ARHMM or arprob.HMM, got {type(model).__name__}")
    best = None
    for restart in range(num_restarts):
        params = problem.initial_params(jax.random.fold_in(key, restart) if restart else None)
        fitted, values = _iterate(problem, params, max_iters, tol, transition_concentration)
        if best is None or values[-1] > best[1][-1]:
            best = (fitted, values)
    return problem.build(best[0]), best[1]


def _iterate(problem, params, max_iters, tol, concentration):
    values = []
    frozen = problem.freeze
    for _ in range(max_iters + 1):
        value, gamma, counts = problem.e_step(params)
        values.append(value)
        if len(values) > 1 and abs(values[-1] - values[-2]) <= tol * abs(values[-2]):
            break
        if len(values) == max_iters + 1:
            break
        new = dict(params)
        first = gamma[:, 0].sum(axis=0)
        if "initial_probs" not in frozen and not problem.stationary:
            new["initial_probs"] = first / first.sum()
        if "transition_probs" not in frozen:
            new["transition_probs"] = _normalize_rows(counts + (concentration - 1.0), params["transition_probs"])
        new.update(problem.m_step_emissions(params, gamma))
        if problem.stationary and "transition_probs" not in frozen:
            new = problem.halve_until_monotone(params, new, value)
        params = new
    return params, np.asarray(values)


class _Problem:
    stationary = False

    def e_step(self, params):
        log_lik = self.log_likelihoods(params)
        initial = params["initial_probs"]
        if self.stationary:
            from arprob.distributions.arhmm import stationary_distribution

            initial = stationary_distribution(params["transition_probs"])
        values, gamma, counts = _e_step(jnp.log(initial), jnp.log(params["transition_probs"]), log_lik,
                                        self.log_prior, self.mask, self.lengths)
        return float(np.sum(np.asarray(values, np.float64))), gamma, counts

    def halve_until_monotone(self, old, new, value):
        """Generalized EM for the stationary convention: shrink the transition step until F does not drop."""
        candidate = dict(new)
        for _ in range(30):
            if self.e_step(candidate)[0] >= value - 1e-12 * abs(value):
                return candidate
            candidate["transition_probs"] = 0.5 * (candidate["transition_probs"] + old["transition_probs"])
        return {**new, "transition_probs": old["transition_probs"]}


class _ARProblem(_Problem):
    def __init__(self, owner, model, data, state_prior, mask, lengths, tied, floor, freeze):
        y, batched = _as_batch(owner, "data", data, 3, jnp.result_type(float))
        num_sequences, num_timesteps, dimension = y.shape
        if dimension != model.dimension:
            raise ShapeError(f"{owner}: data has dimension {dimension}, the model {model.dimension}")
        p = model.num_lags
        if num_timesteps <= p:
            raise ShapeError(f"{owner}: sequences of {num_timesteps} steps leave nothing to model with "
                             f"num_lags={p}")
        lengths, mask, log_prior = _prepare_common(owner, num_sequences, num_timesteps, model.num_states,
                                                   state_prior, mask, lengths, batched)
        usable = mask & ~np.any(np.isnan(np.asarray(y)), axis=-1)
        modelled = usable[:, p:].copy()
        for lag in range(1, p + 1):
            modelled &= usable[:, p - lag : num_timesteps - lag]
        self.y = jnp.where(jnp.asarray(usable)[..., None], y, 0.0)
        self.mask = jnp.asarray(modelled)
        self.log_prior = jnp.asarray(log_prior[:, p:])
        self.lengths = jnp.asarray(lengths - p)
        if np.any(lengths - p < 1):
            raise InvalidArgumentError(f"{owner}: every length must exceed num_lags={p}, got {lengths}")
        self.model, self.floor, self.freeze = model, float(floor), freeze
        self.tied = bool(tied) or bool(getattr(model, "tied", False))  # a tied model stays tied
        self.stationary = model.stationary

    def initial_params(self, key):
        m = self.model
        params = {"initial_probs": m.initial_probs, "transition_probs": m.transition_probs, "weights": m.weights,
                  "biases": m.biases, "covariances": m.covariances}
        if key is not None:
            key_rows, key_bias = jax.random.split(key)
            params["transition_probs"] = jax.random.dirichlet(key_rows, jnp.ones(m.num_states) * 2,
                                                              (m.num_states,)).astype(m.transition_probs.dtype)
            spread = jnp.sqrt(jnp.diagonal(m.covariances, axis1=-2, axis2=-1))
            params["biases"] = m.biases + spread * jax.random.normal(key_bias, m.biases.shape, m.biases.dtype)
        return params

    def log_likelihoods(self, params):
        return _ar_log_likelihoods(self.y, params["weights"], params["biases"], params["covariances"],
                                   self.model.num_lags)

    def m_step_emissions(self, params, gamma):
        steps = jnp.arange(gamma.shape[1])
        inside = (steps[None, :] < self.lengths[:, None]) & self.mask
        weights, biases, covariances = _ar_m_step(
            self.y, gamma, inside, params["weights"], params["biases"], params["covariances"], self.floor,
            self.model.num_lags, self.tied, "weights" not in self.freeze, "biases" not in self.freeze,
            "covariances" not in self.freeze)
        return {"weights": weights, "biases": biases, "covariances": covariances}

    def build(self, params):
        from arprob.distributions.arhmm import ARHMM

        initial = "stationary" if self.stationary else params["initial_probs"]
        covariances = params["covariances"][0] if self.tied else params["covariances"]  # (D, D): tied
        return ARHMM(initial, params["transition_probs"], params["weights"], params["biases"], covariances,
                     self.model.num_lags)


class _CategoricalProblem(_Problem):
    def __init__(self, owner, model, data, state_prior, mask, lengths, freeze):
        x, batched = _as_batch(owner, "data", data, 2)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ArprobTypeError(f"{owner}: HMM data must be integer tokens, got dtype {x.dtype}")
        num_sequences, num_timesteps = x.shape
        num_states = model.initial_probs.shape[-1]
        lengths, mask, log_prior = _prepare_common(owner, num_sequences, num_timesteps, num_states, state_prior,
                                                   mask, lengths, batched)
        vocab_size = model.emission_probs.shape[-1]
        tokens = np.asarray(x)
        if np.any(mask & ((tokens < 0) | (tokens >= vocab_size))):
            raise InvalidArgumentError(f"{owner}: observed tokens must be in [0, {vocab_size})")
        self.x = jnp.asarray(np.where(mask, tokens, 0))
        self.mask, self.log_prior, self.lengths = jnp.asarray(mask), jnp.asarray(log_prior), jnp.asarray(lengths)
        self.model, self.freeze, self.vocab_size = model, freeze, vocab_size

    def initial_params(self, key):
        m = self.model
        params = {"initial_probs": m.initial_probs, "transition_probs": m.transition_probs,
                  "emission_probs": m.emission_probs}
        if key is not None:
            key_rows, key_emission = jax.random.split(key)
            k, v = m.emission_probs.shape
            params["transition_probs"] = jax.random.dirichlet(key_rows, jnp.ones(k) * 2, (k,))
            params["emission_probs"] = jax.random.dirichlet(key_emission, jnp.ones(v) * 2, (k,))
        return params

    def log_likelihoods(self, params):
        return jnp.log(params["emission_probs"]).T[self.x]  # (N, T, K)

    def m_step_emissions(self, params, gamma):
        if "emission_probs" in self.freeze:
            return {}
        steps = jnp.arange(gamma.shape[1])
        inside = ((steps[None, :] < self.lengths[:, None]) & self.mask)[..., None]
        counts = jnp.einsum("ntk,ntv->kv", gamma * inside, jax.nn.one_hot(self.x, self.vocab_size))
        return {"emission_probs": _normalize_rows(counts, params["emission_probs"])}

    def build(self, params):
        from arprob.distributions.hmm import HMM

        return HMM(params["initial_probs"], params["transition_probs"], params["emission_probs"], self.model.length)
