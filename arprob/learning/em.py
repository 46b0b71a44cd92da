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

Bad input (the convention of :mod:`arprob.inference.hmm`): a NaN in a row of ARHMM data marks that
observation missing, exactly as ``mask=False`` there; ``±inf`` data are refused; every number and count
is checked for type and range (``covariance_floor > 0``, concentrations ``>= 1``, ...) and the work of
``max_iters x num_restarts`` iterations is estimated before the first one.  A ``state_prior`` row of
zeros, or a prior that no state path allowed by the starting model satisfies, raises
:class:`~arprob.errors.ZeroProbabilityError` naming it (the data would have probability zero).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import _show, check_bool, check_int, check_key, check_memory, check_real, check_work
from arprob.distributions.arhmm import _emission_log_likelihoods
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError, ZeroProbabilityError
from arprob.inference.hmm import _posterior_statistics, _prepare, hmm_log_likelihood

__all__ = ["fit_em"]

_FREEZABLE = ("initial_probs", "transition_probs", "emission_probs", "weights", "biases", "covariances")


# ----------------------------------------------------------------------------------- E-step


@jax.jit
def _e_step(log_initial, log_transition, log_likelihoods, log_prior, mask, lengths):
    """Batched weighted forward-backward: ``(log_likelihoods (N,), gamma (N,S,K), transitions (K,K))``.

    One forward and one backward loop per sequence serve both the smoothed marginals and the
    expected transition counts (``arprob.inference.hmm._posterior_statistics``).
    """

    def one(log_lik, prior, observed, length):
        value, _, smoothed, counts = _posterior_statistics(*_prepare("fit_em", log_initial, log_transition, log_lik,
                                                                     prior, observed, length))
        return value, smoothed, counts

    values, gamma, counts = _map_sequences(one, log_likelihoods, log_prior, mask, lengths)
    return values, gamma, counts.sum(axis=0)  # values per sequence (N,)


@jax.jit
def _evaluate(log_initial, log_transition, log_likelihoods, log_prior, mask, lengths):
    """Batched likelihood-only pass (the fast path): the weighted log-likelihood of each sequence."""

    def one(log_lik, prior, observed, length):
        return hmm_log_likelihood(log_initial, log_transition, log_lik, log_prior=prior, mask=observed,
                                  length=length)

    return _map_sequences(one, log_likelihoods, log_prior, mask, lengths)


def _map_sequences(function, *batched):
    """``vmap`` over the sequence axis; a single sequence is run unbatched (a batch of one makes the
    scans carry ``(1, K)`` arrays, measured 1.3-2x slower on CPU)."""
    if batched[0].shape[0] == 1:
        return jax.tree_util.tree_map(lambda leaf: leaf[None], function(*(array[0] for array in batched)))
    return jax.vmap(function)(*batched)


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
    """Emission log-densities ``(N, S, K)`` of a padded batch ``(N, T, D)``: the ARHMM's own, per sequence."""
    trils = jnp.linalg.cholesky(covariances)
    return jax.vmap(lambda sequence: _emission_log_likelihoods(sequence, weights, biases, trils, num_lags))(y)


def _weighted_scatter(residuals, g):
    """``S[k] = sum_n g[n, k] r[n, k] r[n, k]^T`` for ``residuals (n, K, D)``.  For small ``K * D`` one flat
    GEMM over all state pairs (keeping the diagonal blocks) is ~2.5x faster on CPU than the batched product."""
    num, num_states, dimension = residuals.shape
    if num_states * dimension > 64:
        return jnp.einsum("nkd,nke->kde", residuals * g[..., None], residuals)
    flat = residuals.reshape(num, num_states * dimension)
    full = ((residuals * g[..., None]).reshape(num, -1).T @ flat).reshape(num_states, dimension, num_states, dimension)
    states = jnp.arange(num_states)
    return full[states, :, states, :]


@partial(jax.jit, static_argnames=("num_lags", "fit_weights", "fit_biases"))
def _ar_coefficient_step(y, gamma, mask, weights, biases, weights_precision, num_lags, fit_weights, fit_biases):
    r"""Weighted (ridge) least squares for the AR coefficients :math:`C_k = [A_{k,1} \dots A_{k,p}\; b_k]`.

    Maximizes :math:`\sum_t \gamma_t(k) \log\mathcal N(y_t; C_k x_t, Q_k) - \tfrac{\lambda}{2}\operatorname{tr}
    (A_k^\top Q_k^{-1} A_k)` over :math:`C_k`: the normal equations :math:`C_k (S^{xx}_k + \Lambda) =
    S^{yx}_k` with :math:`\Lambda = \operatorname{diag}(\lambda, \dots, \lambda, 0)` (biases unpenalised),
    whatever :math:`Q_k` is; frozen columns move to the right-hand side.  Returns ``(coefficients (K, D, F),
    residuals (N*S, K, D), g (N*S, K), mass (K,))`` with ``g`` the emission weights of the modelled steps.
    """
    features = _ar_features(y, num_lags)
    dimension, num_features = y.shape[-1], features.shape[-1]
    num_states = gamma.shape[-1]
    x = features.reshape(-1, num_features)  # (N*S, F): every modelled step of every sequence
    targets = y[:, num_lags:].reshape(-1, dimension)
    g = (gamma * mask[..., None]).reshape(-1, num_states)  # missing observations carry no emission term
    mass = g.sum(axis=0)  # (K,)
    coefficients = jnp.concatenate([weights[:, lag] for lag in range(num_lags)] + [biases[:, :, None]], axis=-1)
    if fit_weights or fit_biases:
        # weighted sufficient statistics as two GEMMs over all steps: S_xx[k] = sum g_k x x^T, S_yx[k] = sum g_k y x^T
        weighted = (g[:, :, None] * x[:, None, :]).reshape(x.shape[0], num_states * num_features)
        s_xx = (weighted.T @ x).reshape(num_states, num_features, num_features)
        s_yx = jnp.swapaxes((weighted.T @ targets).reshape(num_states, num_features, dimension), -1, -2)
        penalty = jnp.where(jnp.arange(num_features) < num_features - 1, weights_precision, 0.0)
        s_xx = s_xx + jnp.diag(penalty)
        if fit_weights and fit_biases:
            free = jnp.arange(num_features)
        elif fit_weights:
            free = jnp.arange(num_features - 1)
        else:
            free = jnp.array([num_features - 1])
        frozen_part = coefficients.at[:, :, free].set(0.0)
        cross = (s_yx - jnp.einsum("kdf,kfg->kdg", frozen_part, s_xx))[:, :, free]
        gram = s_xx[:, free][:, :, free]
        # pseudo-inverse: a state seen on fewer distinct regressors than coefficients (a singular Gram
        # matrix) gets the minimum-norm solution instead of NaN; otherwise this is the exact solve
        solved = jnp.linalg.pinv(gram, hermitian=True) @ jnp.swapaxes(cross, -1, -2)
        updated = coefficients.at[:, :, free].set(jnp.swapaxes(solved, -1, -2))
        coefficients = jnp.where((mass > 0)[:, None, None], updated, coefficients)
    means = (x @ coefficients.reshape(-1, num_features).T).reshape(-1, num_states, dimension)
    return coefficients, targets[:, None, :] - means, g, mass


# A separate compiled call on purpose: fused into the coefficient step, XLA CPU ran this GEMM 3-4x slower.
@partial(jax.jit, static_argnames=("tied",))
def _ar_covariance_step(residuals, g, mass, coefficients, covariances, floor, weights_precision, prior_scale,
                        prior_count, tied):
    r"""MAP covariances given the coefficients:
    :math:`Q_k = (\sum_t \gamma_t(k) r_{tk} r_{tk}^\top + \lambda A_k A_k^\top + \Psi_0) / (N_k + n_0 + r)`
    with :math:`r = pD` when :math:`\lambda > 0` (the matrix-normal prior's :math:`|Q_k|^{-pD/2}`), pooled over
    states when tied, symmetrized and eigenvalue-floored; a state with no weight keeps its covariance."""
    num_states = covariances.shape[0]
    weights_part = coefficients[:, :, :-1]  # (K, D, pD)
    penalised = jnp.where(weights_precision > 0, weights_part.shape[-1], 0)
    scatter = _weighted_scatter(residuals, g) + weights_precision * weights_part @ jnp.swapaxes(weights_part, -1, -2)
    if tied:
        pooled = (scatter.sum(axis=0) + prior_scale) / (mass.sum() + prior_count + num_states * penalised)
        estimate = jnp.broadcast_to(pooled, covariances.shape)
        keep = jnp.ones_like(mass, bool)
    else:
        counts = mass + prior_count + penalised
        estimate = (scatter + prior_scale) / jnp.where(mass > 0, counts, 1.0)[:, None, None]
        keep = mass > 0
    values, vectors = jnp.linalg.eigh(0.5 * (estimate + jnp.swapaxes(estimate, -1, -2)))
    floored = jnp.einsum("kde,ke,kfe->kdf", vectors, jnp.maximum(values, floor), vectors)
    return jnp.where(keep[:, None, None], floored, covariances)


# ----------------------------------------------------------------------------------- data


def _as_batch(owner, name, array, ndim, dtype=None):
    """``(batch, batched)``: one sequence (``ndim - 1`` axes) gets a batch axis of 1."""
    if array is None or isinstance(array, (str, bytes)):
        raise ArprobTypeError(f"{owner}: {name} must be an array of observations, got {_show(array)}")
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as error:
        raise ArprobTypeError(f"{owner}: {name} must be an array of observations, got {_show(array)} "
                              f"({error})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ArprobTypeError(f"{owner}: {name} has dtype {array.dtype}, expected numbers")
    array = jnp.asarray(array) if dtype is None else jnp.asarray(array, dtype)
    if array.ndim == ndim - 1:
        array, batched = array[None], False
    elif array.ndim == ndim:
        batched = True
    else:
        raise ShapeError(f"{owner}: {name} has shape {array.shape}, expected {ndim - 1} axes for one sequence or "
                         f"{ndim} for a batch")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ShapeError(f"{owner}: {name} has shape {array.shape if batched else array.shape[1:]}, which holds no "
                         "observation; expected at least one sequence of at least one step")
    return array, batched


def _check_observations(owner, name, y):
    """ARHMM data: NaN marks a missing observation; ``±inf`` is refused."""
    array = np.asarray(y)
    infinite = np.isinf(array)
    if infinite.any():
        where = tuple(int(i) for i in np.argwhere(infinite)[0])
        raise InvalidArgumentError(f"{owner}: {name} has {int(infinite.sum())} infinite value(s), the first "
                                   f"{array[where]} at index {where}; expected finite observations (mark a missing "
                                   "observation with NaN or mask=False)")


def _check_mask_array(owner, mask):
    given = mask
    if not isinstance(mask, (np.ndarray, jax.Array)):
        try:
            mask = np.asarray(mask)
        except (TypeError, ValueError):
            raise ArprobTypeError(f"{owner}: mask must be a bool array, got {_show(mask)}") from None
    if mask.dtype != bool:
        raise ArprobTypeError(f"{owner}: mask has dtype {mask.dtype} ({_show(given)}), expected bool (False = "
                              "missing); pass np.asarray(mask, bool)")
    return np.asarray(mask)


def _prepare_common(owner, num_sequences, num_timesteps, num_states, state_prior, mask, lengths, batched,
                    num_lags=0):
    """Validated ``(lengths, mask (N, T), log_prior (N, T, K), term_mask (N, T - p) or None)``.

    ``state_prior`` and ``mask`` are aligned with the data (``T`` rows) or, for an ARHMM with
    ``num_lags = p > 0``, with its modelled steps (``T - p`` rows, as :class:`~arprob.ARHMM` takes
    them): such a prior gets ``p`` neutral rows in front, and such a mask is returned as
    ``term_mask`` (it drops the terms it marks, not observations).
    """
    if lengths is None:
        lengths = np.full(num_sequences, num_timesteps)
    if isinstance(lengths, (str, bytes)):
        raise ArprobTypeError(f"{owner}: lengths must be integers of shape ({num_sequences},), got {_show(lengths)}")
    lengths = np.atleast_1d(np.asarray(lengths))
    if not np.issubdtype(lengths.dtype, np.integer):
        raise ArprobTypeError(f"{owner}: lengths has dtype {lengths.dtype}, expected integers of shape "
                              f"({num_sequences},), the valid steps of each padded sequence")
    if lengths.shape != (num_sequences,):
        raise ShapeError(f"{owner}: lengths has shape {lengths.shape}, expected ({num_sequences},), one per sequence "
                         "of the data")
    if np.any(lengths < 1) or np.any(lengths > num_timesteps):
        raise InvalidArgumentError(f"{owner}: lengths must be in [1, {num_timesteps}], got {lengths}")
    steps_allowed = (num_timesteps,) if num_lags == 0 else (num_timesteps, num_timesteps - num_lags)
    term_mask = None
    if mask is None:
        mask = np.ones((num_sequences, num_timesteps), bool)
    else:
        mask = _check_mask_array(owner, mask)
        given = mask.shape
        mask = mask if batched else mask[None]
        if mask.ndim != 2 or mask.shape[0] != num_sequences or mask.shape[1] not in steps_allowed:
            expected = [(num_sequences, num_timesteps)] + ([(num_sequences, num_timesteps - num_lags)] if num_lags
                                                           else [])
            if not batched:
                expected = [shape[1:] for shape in expected]
            raise ShapeError(f"{owner}: mask has shape {given}, expected {expected[0]} aligned with the data"
                             + (f" or {expected[1]} aligned with the modelled steps" if num_lags else "")
                             + f" (the data hold {num_sequences} sequence(s) of {num_timesteps} steps)")
        if mask.shape[1] != num_timesteps:
            term_mask, mask = mask, np.ones((num_sequences, num_timesteps), bool)
    if state_prior is None:
        log_prior = np.zeros((num_sequences, num_timesteps, num_states))
    else:
        if isinstance(state_prior, (str, bytes)):
            raise ArprobTypeError(f"{owner}: state_prior must be an array of weights over the states per step, got "
                                  f"{_show(state_prior)}")
        try:
            prior = np.asarray(state_prior, np.float64)
        except (TypeError, ValueError):
            raise ArprobTypeError(f"{owner}: state_prior must be an array of weights over the states per step, got "
                                  f"{_show(state_prior)}") from None
        given = prior.shape
        prior = prior if batched else prior[None]
        if prior.ndim != 3 or prior.shape[0] != num_sequences or prior.shape[1] not in steps_allowed \
                or prior.shape[2] != num_states:
            expected = [(num_sequences, num_timesteps, num_states), (num_sequences, num_timesteps - num_lags,
                                                                     num_states)]
            if not batched:
                expected = [shape[1:] for shape in expected]
            raise ShapeError(f"{owner}: state_prior has shape {given}, expected {expected[0]}, weights over the "
                             "states per step of the data"
                             + (f", or {expected[1]} aligned with the modelled steps" if num_lags else "")
                             + f" (the data hold {num_sequences} sequence(s) of {num_timesteps} steps)")
        if np.any(~np.isfinite(prior)) or np.any(prior < 0):
            bad = ~np.isfinite(prior) | (prior < 0)
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidArgumentError(f"{owner}: state_prior must hold finite weights >= 0 (0 forbids a state), "
                                       f"got {prior[where]} at index {where if batched else where[1:]}")
        if prior.shape[1] != num_timesteps:
            prior = np.concatenate([np.ones((num_sequences, num_lags, num_states)), prior], axis=1)
        # a modelled, valid step whose weights are all 0 forbids every state: no path, probability zero
        steps = np.arange(num_timesteps)
        inside = (steps[None, :] >= num_lags) & (steps[None, :] < lengths[:, None])
        empty = inside & np.all(prior == 0, axis=-1)
        if np.any(empty):
            sequence, step = (int(i) for i in np.argwhere(empty)[0])
            where = f"state_prior[{sequence}, {step}]" if batched else f"state_prior[{step}]"
            raise ZeroProbabilityError(f"{owner}: {where} is 0 for every state: that step forbids every state, so "
                                       "the data have probability zero and there is nothing to fit; give at least "
                                       "one state a positive weight at every step (a one-hot row fixes the state)")
        with np.errstate(divide="ignore"):
            log_prior = np.log(prior)
    return lengths, mask, log_prior, term_mask


# ----------------------------------------------------------------------------------- driver


def _check_freeze(owner, freeze, allowed):
    freeze = tuple(freeze)
    for name in freeze:
        if name not in allowed:
            raise InvalidArgumentError(f"{owner}: cannot freeze {name!r}; expected some of {allowed}")
    return freeze


def fit_em(model, data, *, state_prior=None, mask=None, lengths=None, max_iters: int = 100, tol: float = 1e-6,
           num_restarts: int = 1, key=None, tied_covariance: bool = False, covariance_floor: float = 1e-6,
           transition_concentration: float = 1.0, emission_concentration: float = 1.0,
           weights_precision: float = 0.0, covariance_prior_scale=0.0, covariance_prior_count: float = 0.0,
           freeze=()):
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
        are ignored (those steps are not modelled); rows aligned with the modelled steps,
        ``(T - num_lags, K)`` as :meth:`ARHMM.log_prob` takes them, are accepted too.
    mask
        Optional bool ``(T,)`` / ``(N, T)``, aligned with ``data``; ``False`` marks a missing
        observation.  For an ARHMM a modelled step whose value *or any of its lags* is missing
        drops its emission term (missing values are not imputed; they may hold NaN).  Aligned
        with the modelled steps instead, ``(T - num_lags,)``, ``False`` drops exactly that
        step's term (the convention of :meth:`ARHMM.log_prob` for such a mask).
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
        ``1`` is maximum likelihood.
    emission_concentration
        HMM: symmetric Dirichlet prior :math:`\ge 1` on each emission row (MAP step).
    weights_precision
        ARHMM: precision :math:`\lambda \ge 0` of a zero-mean matrix-normal prior on each state's
        AR weights, :math:`A_k \mid Q_k \sim \mathcal{MN}(0, Q_k, I_{pD} / \lambda)` (the conjugate
        ridge prior: log-density :math:`-\tfrac{\lambda}{2}\operatorname{tr}(A_k^\top Q_k^{-1} A_k)
        - \tfrac{pD}{2}\log|Q_k|` up to a constant); biases are unpenalised.  ``0``: no prior.
    covariance_prior_scale, covariance_prior_count
        ARHMM: an inverse-Wishart prior on each covariance (on the shared one when tied) with
        scale :math:`\Psi_0` (a number ``s`` for :math:`sI`, or a ``(D, D)`` positive semi-definite
        matrix) and :math:`\nu_0 = n_0 - D - 1` degrees of freedom, :math:`n_0` =
        ``covariance_prior_count``: log-density :math:`-\tfrac{n_0}{2}\log|Q| - \tfrac12
        \operatorname{tr}(\Psi_0 Q^{-1})` up to a constant (proper for :math:`n_0 > 2D`).  The MAP step
        is :math:`Q_k = (S_k + \lambda A_k A_k^\top + \Psi_0) / (N_k + n_0 + pD\,[\lambda > 0])` with
        :math:`S_k` the weighted residual scatter and :math:`N_k` the state's weight.  Defaults: none.

        With any prior the iteration is MAP-EM: the returned values are still the
        log-likelihood :math:`F`, and :math:`F` plus the log prior density is what cannot decrease.
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

    if not isinstance(model, (ARHMM, HMM)):
        raise ArprobTypeError(f"{owner}: model must be an arprob.ARHMM or arprob.HMM (the starting point), got "
                              f"{_show(model)}")
    max_iters = check_int(owner, "max_iters", max_iters, minimum=1)
    num_restarts = check_int(owner, "num_restarts", num_restarts, minimum=1)
    tol = check_real(owner, "tol", tol, low=0.0, fix="tol is a relative change of the log-likelihood, e.g. 1e-6")
    if key is not None:
        check_key(owner, key)
    elif num_restarts > 1:
        raise ArprobTypeError(f"{owner}: num_restarts={num_restarts} needs key=... for the random restarts "
                              "(pass key=jax.random.key(seed))")
    check_bool(owner, "tied_covariance", tied_covariance)
    covariance_floor = check_real(owner, "covariance_floor", covariance_floor, low=0.0, low_open=True,
                                  fix="the smallest eigenvalue a fitted covariance may have, e.g. 1e-6")
    transition_concentration = check_real(owner, "transition_concentration", transition_concentration, low=1.0,
                                          fix="1 is maximum likelihood; larger values smooth the rows")
    emission_concentration = check_real(owner, "emission_concentration", emission_concentration, low=1.0,
                                        fix="1 is maximum likelihood; larger values smooth the rows")
    weights_precision = check_real(owner, "weights_precision", weights_precision, low=0.0,
                                   fix="0 means no prior on the AR weights")
    covariance_prior_count = check_real(owner, "covariance_prior_count", covariance_prior_count, low=0.0,
                                        fix="0 means no inverse-Wishart prior")
    if covariance_prior_scale is None or isinstance(covariance_prior_scale, (str, bytes, bool)):
        raise ArprobTypeError(f"{owner}: covariance_prior_scale must be a number >= 0 or a (D, D) positive "
                              f"semi-definite matrix, got {_show(covariance_prior_scale)}")
    if isinstance(freeze, (str, bytes)) or not isinstance(freeze, (tuple, list, set, frozenset)):
        raise ArprobTypeError(f"{owner}: freeze must be a tuple of parameter names such as ('weights',), got "
                              f"{_show(freeze)}")
    ar_prior_given = weights_precision != 0 or not np.all(np.asarray(covariance_prior_scale) == 0) \
        or covariance_prior_count != 0
    if isinstance(model, ARHMM):
        if emission_concentration != 1:
            raise InvalidArgumentError(f"{owner}: emission_concentration is for an HMM's categorical emissions; "
                                       "an ARHMM takes weights_precision and covariance_prior_scale/_count")
        prior = _ar_prior(owner, model.dimension, weights_precision, covariance_prior_scale, covariance_prior_count)
        problem = _ARProblem(owner, model, data, state_prior, mask, lengths, tied_covariance, covariance_floor,
                             _check_freeze(owner, freeze, _FREEZABLE[:2] + _FREEZABLE[3:]), prior)
    elif isinstance(model, HMM):
        if ar_prior_given:
            raise InvalidArgumentError(f"{owner}: weights_precision and covariance_prior_scale/_count are for an "
                                       "ARHMM; an HMM takes emission_concentration")
        problem = _CategoricalProblem(owner, model, data, state_prior, mask, lengths,
                                      _check_freeze(owner, freeze, _FREEZABLE[:3]), emission_concentration)
    # every iteration: one batched forward-backward (N T K^2) and the M-step (N T K (pD + 1)^2), plus the
    # dispatch of a few compiled calls (~0.1 ms, counted as 10^5 operations)
    num_sequences, num_timesteps = problem.mask.shape
    num_states = problem.num_states
    features = problem.num_features
    check_memory(owner, f"the E-step on {num_sequences:,} sequence(s) of {num_timesteps:,} steps",
                 (num_sequences, num_timesteps, num_states * (num_states + 4) + features), itemsize=8,
                 fix="fit on fewer or shorter sequences per call")
    check_work(owner, f"max_iters={max_iters:,} iterations x num_restarts={num_restarts:,}",
               float(max_iters) * num_restarts * (num_sequences * num_timesteps * num_states
                                                  * (num_states + features**2) + 1e5),
               fix="lower max_iters (tol stops the iterations earlier once the fit has converged)")
    best = None
    for restart in range(num_restarts):
        params = problem.initial_params(jax.random.fold_in(key, restart) if restart else None)
        fitted, values = _iterate(problem, params, max_iters, tol, transition_concentration)
        if best is None or values[-1] > best[1][-1]:
            best = (fitted, values)
    return problem.build(best[0]), best[1]


def _ar_prior(owner, dimension, weights_precision, scale, count):
    """Validated ``(lambda, Psi_0 (D, D), n_0)`` of the ARHMM's conjugate priors (numbers checked by fit_em)."""
    try:
        scale = np.asarray(scale, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArprobTypeError(f"{owner}: covariance_prior_scale must be a number >= 0 or a ({dimension}, "
                              f"{dimension}) positive semi-definite matrix, got {_show(scale)}") from None
    if scale.ndim == 0:
        if not (np.isfinite(scale) and scale >= 0):
            raise InvalidArgumentError(f"{owner}: covariance_prior_scale must be a finite number >= 0 (or a "
                                       f"matrix), got {float(scale)}")
        scale = float(scale) * np.eye(dimension)
    elif scale.shape != (dimension, dimension):
        raise ShapeError(f"{owner}: covariance_prior_scale has shape {scale.shape}, expected a number or "
                         f"({dimension}, {dimension})")
    elif not (np.all(np.isfinite(scale)) and np.allclose(scale, scale.T)
              and np.linalg.eigvalsh(0.5 * (scale + scale.T)).min() >= -1e-12 * max(1.0, np.abs(scale).max())):
        raise InvalidArgumentError(f"{owner}: covariance_prior_scale must be a symmetric positive semi-definite "
                                   "matrix")
    return float(weights_precision), jnp.asarray(scale), float(count)


def _iterate(problem, params, max_iters, tol, concentration):
    values = []
    frozen = problem.freeze
    for iteration in range(max_iters + 1):
        if iteration == max_iters:  # the value after the last M-step: the likelihood-only pass suffices
            values.append(problem.evaluate(params))
            if not np.isfinite(values[-1]):
                problem.explain(values[-1], iteration)
            break
        value, gamma, counts = problem.e_step(params)
        if not np.isfinite(value):
            problem.explain(value, iteration)
        values.append(value)
        if len(values) > 1 and abs(values[-1] - values[-2]) <= tol * abs(values[-2]):
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

    def _log_potentials(self, params):
        initial = params["initial_probs"]
        if self.stationary:
            from arprob.distributions.arhmm import stationary_distribution

            initial = stationary_distribution(params["transition_probs"])
        return (jnp.log(initial), jnp.log(params["transition_probs"]), self.log_likelihoods(params),
                self.log_prior, self.mask, self.lengths)

    def e_step(self, params):
        values, gamma, counts = _e_step(*self._log_potentials(params))
        self.last_values = np.asarray(values, np.float64)
        return float(np.sum(self.last_values)), gamma, counts

    def explain(self, value, iteration):
        """Raise the error that a non-finite objective means (the arguments' fault, named, or a breakdown)."""
        owner = "fit_em"
        values = self.last_values
        if iteration == 0 and np.isneginf(value) and not np.any(np.isnan(values)):
            sequences = np.flatnonzero(np.isneginf(values)).tolist()
            raise ZeroProbabilityError(
                f"{owner}: the data have probability zero under the starting model (log-likelihood -inf for "
                f"sequence(s) {sequences[:10]}): state_prior (or a zero in the model's initial_probs or "
                "transition_probs) forbids every state path; check state_prior against the allowed transitions "
                "(a left-to-right chain cannot go back) or start from a model that allows the known states")
        raise InvalidArgumentError(
            f"{owner}: the log-likelihood became {value} at iteration {iteration} (per sequence: "
            f"{values[:10].tolist()}); the fit broke down numerically; raise covariance_floor (now "
            f"{getattr(self, 'floor', 'n/a')}) or add a prior (weights_precision, covariance_prior_scale/_count, "
            "transition_concentration)")

    def evaluate(self, params):
        """The objective F only (likelihood-only kernel, no smoothing)."""
        self.last_values = np.asarray(_evaluate(*self._log_potentials(params)), np.float64)
        return float(np.sum(self.last_values))

    def halve_until_monotone(self, old, new, value):
        """Generalized EM for the stationary convention: shrink the transition step until F does not drop."""
        candidate = dict(new)
        for _ in range(30):
            if self.evaluate(candidate) >= value - 1e-12 * abs(value):
                return candidate
            candidate["transition_probs"] = 0.5 * (candidate["transition_probs"] + old["transition_probs"])
        return {**new, "transition_probs": old["transition_probs"]}


class _ARProblem(_Problem):
    def __init__(self, owner, model, data, state_prior, mask, lengths, tied, floor, freeze, prior=None):
        y, batched = _as_batch(owner, "data", data, 3, jnp.result_type(float))
        num_sequences, num_timesteps, dimension = y.shape
        if dimension != model.dimension:
            raise ShapeError(f"{owner}: data has dimension {dimension} (shape {y.shape if batched else y.shape[1:]}), "
                             f"the model {model.dimension}; expected (T, D) or (N, T, D) with D = {model.dimension}")
        p = model.num_lags
        if num_timesteps <= p:
            raise ShapeError(f"{owner}: data has sequences of {num_timesteps} steps, which leave nothing to model "
                             f"with num_lags={p}; expected T > {p}")
        _check_observations(owner, "data", y)
        lengths, mask, log_prior, term_mask = _prepare_common(owner, num_sequences, num_timesteps,
                                                              model.num_states, state_prior, mask, lengths,
                                                              batched, num_lags=p)
        usable = mask & ~np.any(np.isnan(np.asarray(y)), axis=-1)
        modelled = usable[:, p:].copy()
        for lag in range(1, p + 1):
            modelled &= usable[:, p - lag : num_timesteps - lag]
        if term_mask is not None:
            modelled &= term_mask
        self.y = jnp.where(jnp.asarray(usable)[..., None], y, 0.0)
        self.mask = jnp.asarray(modelled)
        self.log_prior = jnp.asarray(log_prior[:, p:])
        self.lengths = jnp.asarray(lengths - p)
        if np.any(lengths - p < 1):
            raise InvalidArgumentError(f"{owner}: every length must exceed num_lags={p}, got {lengths}")
        self.model, self.floor, self.freeze = model, float(floor), freeze
        self.num_states, self.num_features = model.num_states, dimension * (p + 1) + 1
        dtype = self.y.dtype
        self.prior = prior if prior is not None else (0.0, jnp.zeros((dimension, dimension), dtype), 0.0)
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
        precision, scale, count = self.prior
        coefficients, residuals, g, mass = _ar_coefficient_step(
            self.y, gamma, inside, params["weights"], params["biases"], precision, self.model.num_lags,
            "weights" not in self.freeze, "biases" not in self.freeze)
        covariances = params["covariances"]
        if "covariances" not in self.freeze:
            covariances = _ar_covariance_step(residuals, g, mass, coefficients, covariances, self.floor, precision,
                                              scale, count, self.tied)
        dimension, num_lags = self.model.dimension, self.model.num_lags
        weights = jnp.stack([coefficients[:, :, lag * dimension:(lag + 1) * dimension] for lag in range(num_lags)],
                            axis=1) if num_lags else params["weights"]
        return {"weights": weights, "biases": coefficients[:, :, -1], "covariances": covariances}

    def build(self, params):
        from arprob.distributions.arhmm import ARHMM

        initial = "stationary" if self.stationary else params["initial_probs"]
        covariances = params["covariances"][0] if self.tied else params["covariances"]  # (D, D): tied
        return ARHMM(initial, params["transition_probs"], params["weights"], params["biases"], covariances,
                     self.model.num_lags)


class _CategoricalProblem(_Problem):
    def __init__(self, owner, model, data, state_prior, mask, lengths, freeze, concentration=1.0):
        x, batched = _as_batch(owner, "data", data, 2)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ArprobTypeError(f"{owner}: data for an HMM must be integer tokens, got dtype {x.dtype}; mark "
                                  "missing tokens with mask=False (any integer there)")
        num_sequences, num_timesteps = x.shape
        num_states = model.initial_probs.shape[-1]
        lengths, mask, log_prior, _ = _prepare_common(owner, num_sequences, num_timesteps, num_states,
                                                      state_prior, mask, lengths, batched)
        vocab_size = model.emission_probs.shape[-1]
        tokens = np.asarray(x)
        bad = mask & ((tokens < 0) | (tokens >= vocab_size))
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidArgumentError(f"{owner}: data holds token {tokens[where]} at index "
                                       f"{where if batched else where[1:]}; observed tokens must be in "
                                       f"[0, {vocab_size}) (vocab_size of the model's emission_probs)")
        self.x = jnp.asarray(np.where(mask, tokens, 0))
        self.mask, self.log_prior, self.lengths = jnp.asarray(mask), jnp.asarray(log_prior), jnp.asarray(lengths)
        self.model, self.freeze, self.vocab_size = model, freeze, vocab_size
        self.num_states, self.num_features = num_states, 1
        self.concentration = float(concentration)

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
        return {"emission_probs": _normalize_rows(counts + (self.concentration - 1.0), params["emission_probs"])}

    def build(self, params):
        from arprob.distributions.hmm import HMM

        return HMM(params["initial_probs"], params["transition_probs"], params["emission_probs"], self.model.length)
