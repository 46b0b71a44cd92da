r"""Gradient fitting of HMMs and ARHMMs through the exact likelihood (optax).

:func:`fit_sgd` maximizes the same weighted log-likelihood as :func:`~arprob.fit_em`
(theorem 12), by gradient ascent on unconstrained parameters:

* probability vectors and transition rows through ``softmax`` of free logits;
* covariances as :math:`Q_k = L_k L_k^\top + \epsilon I` with :math:`L_k` lower
  triangular, its diagonal through ``softplus``;
* AR weights and biases as they are.

Missing data follow the library's convention: a NaN in a row of ``data`` marks that observation
missing, exactly as ``mask=False`` does in :func:`~arprob.fit_em` and :meth:`~arprob.ARHMM.log_prob`
(every term that involves it is dropped); ``±inf`` is refused.

The gradient flows through the forward filter (:func:`arprob.inference.hmm_log_likelihood`);
its gradient with respect to the log-potentials is the smoother's output, so this is the
"gradient path" through the same computation that EM's E-step uses.  Useful when the model
is part of a larger differentiable program, or with penalties EM cannot handle in closed
form; for plain maximum likelihood EM is faster and monotone.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arprob._validation import _show, check_int, check_memory, check_real, check_work
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError
from arprob.inference.hmm import hmm_log_likelihood
from arprob.learning.em import _ar_log_likelihoods, _as_batch, _check_observations

__all__ = ["fit_sgd"]

_JITTER = 1e-6  # added to every fitted covariance's diagonal (keeps it positive definite)


def _to_free(model):
    trils = jnp.linalg.cholesky(model.covariances - _JITTER * jnp.eye(model.dimension))
    diagonal = jnp.diagonal(trils, axis1=-2, axis2=-1)
    inverse_softplus = jnp.log(jnp.expm1(diagonal))
    return {
        "initial_logits": jnp.log(model.initial_probs),
        "transition_logits": jnp.log(model.transition_probs),
        "weights": model.weights,
        "biases": model.biases,
        "tril_offdiagonal": jnp.tril(trils, -1),
        "tril_log_diagonal": inverse_softplus,
    }


def _covariances(free):
    trils = jnp.tril(free["tril_offdiagonal"], -1) + jax.vmap(jnp.diag)(jax.nn.softplus(free["tril_log_diagonal"]))
    return trils @ jnp.swapaxes(trils, -1, -2) + _JITTER * jnp.eye(trils.shape[-1])


@partial(jax.jit, static_argnames=("num_lags",))
def _negative_log_likelihood(free, y, mask, num_lags):
    """``-sum_n log p(y_n)``; ``mask`` ``(N, T - p)`` drops the terms of the steps that involve a missing value."""
    log_initial = jax.nn.log_softmax(free["initial_logits"])
    log_transition = jax.nn.log_softmax(free["transition_logits"], axis=-1)
    log_lik = _ar_log_likelihoods(y, free["weights"], free["biases"], _covariances(free), num_lags)
    values = jax.vmap(lambda ll, observed: hmm_log_likelihood(log_initial, log_transition, ll, mask=observed))(
        log_lik, mask)
    return -jnp.sum(values)


def _missing(y, num_lags):
    """``(y with missing rows set to 0, term mask (N, T - p))``: a NaN row is a missing observation, and every
    modelled step whose value or any of whose lags is missing drops its term (as in ``ARHMM.log_prob``)."""
    observed = ~jnp.any(jnp.isnan(y), axis=-1)
    num_timesteps = y.shape[1]
    modelled = observed[:, num_lags:]
    for lag in range(1, num_lags + 1):
        modelled = modelled & observed[:, num_lags - lag:num_timesteps - lag]
    return jnp.where(observed[..., None], y, 0.0), modelled


def fit_sgd(model, data, *, num_steps: int = 500, learning_rate: float = 0.05, optimizer=None):
    r"""Fit an :class:`~arprob.ARHMM` by gradient descent on :math:`-\log p` (optax); returns ``(model, losses)``.

    Parameters
    ----------
    model
        The starting ARHMM (an array ``initial_probs``; the stationary convention is not
        supported here, use :func:`~arprob.fit_em`).
    data
        Observations ``(T, D)`` or ``(N, T, D)`` (equal lengths, ``T > num_lags``); NaN marks a missing
        observation (see the module docstring), ``±inf`` is refused.
    num_steps, learning_rate
        Adam steps (an int >= 1) and step size (a finite number > 0; not used when ``optimizer`` is given).
    optimizer
        Any ``optax.GradientTransformation`` (an object with ``init`` and ``update``), e.g.
        ``optax.adam(1e-2)``; not a name such as ``"adam"``.

    Returns
    -------
    model
        The fitted ARHMM (covariances include a :math:`10^{-6}` jitter on the diagonal).
    losses
        ``numpy`` array of :math:`-\sum_n \log p(y^{(n)})` before every step and after the last.
    """
    owner = "fit_sgd"
    from arprob.distributions.arhmm import ARHMM

    if not isinstance(model, ARHMM):
        raise ArprobTypeError(f"{owner}: model must be an arprob.ARHMM (the starting point), got {_show(model)}")
    if model.stationary:
        raise InvalidArgumentError(f"{owner}: model has initial_probs='stationary', which is not supported here; "
                                   "use fit_em")
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    if optimizer is None:
        learning_rate = check_real(owner, "learning_rate", learning_rate, low=0.0, low_open=True,
                                   fix="a step size such as 0.05")
        optimizer = optax.adam(learning_rate)
    elif not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise ArprobTypeError(f"{owner}: optimizer must be an optax.GradientTransformation such as "
                              f"optax.adam(0.05), got {_show(optimizer)}; or leave optimizer=None and set "
                              "learning_rate")
    y, _ = _as_batch(owner, "data", data, 3, jnp.result_type(float))
    num_sequences, num_timesteps, dimension = y.shape
    if dimension != model.dimension:
        raise ShapeError(f"{owner}: data has dimension {dimension}, the model {model.dimension}; expected (T, D) or "
                         f"(N, T, D) with D = {model.dimension}")
    if num_timesteps <= model.num_lags:
        raise ShapeError(f"{owner}: data has sequences of {num_timesteps} step(s), which leave nothing to model "
                         f"with num_lags={model.num_lags}; expected T > {model.num_lags} (the first num_lags rows "
                         "of each sequence are its history)")
    _check_observations(owner, "data", y)
    features = dimension * (model.num_lags + 1) + 1
    check_memory(owner, f"the gradient on {num_sequences:,} sequence(s) of {num_timesteps:,} steps",
                 (num_sequences, num_timesteps, model.num_states * (model.num_states + 4 + dimension * features)),
                 itemsize=8, fix="fit on fewer or shorter sequences")
    check_work(owner, f"num_steps={num_steps:,} gradient steps",
               float(num_steps) * (num_sequences * num_timesteps * model.num_states
                                   * (model.num_states + features**2) * 3 + 1e5),
               fix="use fewer steps")
    y, mask = _missing(y, model.num_lags)
    free = _to_free(model)
    state = optimizer.init(free)
    loss_and_grad = jax.jit(jax.value_and_grad(_negative_log_likelihood), static_argnames=("num_lags",))

    @jax.jit
    def step(free, state):
        loss, grads = loss_and_grad(free, y, mask, model.num_lags)
        updates, state = optimizer.update(grads, state, free)
        return optax.apply_updates(free, updates), state, loss

    losses = []
    for _ in range(num_steps):
        free, state, loss = step(free, state)
        losses.append(float(loss))
    losses.append(float(_negative_log_likelihood(free, y, mask, model.num_lags)))
    fitted = ARHMM(jax.nn.softmax(free["initial_logits"]), jax.nn.softmax(free["transition_logits"], axis=-1),
                   free["weights"], free["biases"], _covariances(free), model.num_lags)
    return fitted, np.asarray(losses)
