r"""Gradient fitting of HMMs and ARHMMs through the exact likelihood (optax).

:func:`fit_sgd` maximizes the same weighted log-likelihood as :func:`~arprob.fit_em`
(theorem 12), by gradient ascent on unconstrained parameters:

* probability vectors and transition rows through ``softmax`` of free logits;
* covariances as :math:`Q_k = L_k L_k^\top + \epsilon I` with :math:`L_k` lower
  triangular, its diagonal through ``softplus``;
* AR weights and biases as they are.

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

from arprob._validation import check_positive_int
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.inference.hmm import hmm_log_likelihood
from arprob.learning.em import _ar_log_likelihoods, _as_batch

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
def _negative_log_likelihood(free, y, num_lags):
    log_initial = jax.nn.log_softmax(free["initial_logits"])
    log_transition = jax.nn.log_softmax(free["transition_logits"], axis=-1)
    log_lik = _ar_log_likelihoods(y, free["weights"], free["biases"], _covariances(free), num_lags)
    values = jax.vmap(lambda ll: hmm_log_likelihood(log_initial, log_transition, ll))(log_lik)
    return -jnp.sum(values)


def fit_sgd(model, data, *, num_steps: int = 500, learning_rate: float = 0.05, optimizer=None):
    r"""Fit an :class:`~arprob.ARHMM` by gradient descent on :math:`-\log p` (optax); returns ``(model, losses)``.

    Parameters
    ----------
    model
        The starting ARHMM (an array ``initial_probs``; the stationary convention is not
        supported here, use :func:`~arprob.fit_em`).
    data
        Observations ``(T, D)`` or ``(N, T, D)`` (equal lengths).
    num_steps, learning_rate
        Adam steps and step size (ignored when ``optimizer`` is given).
    optimizer
        Any ``optax.GradientTransformation``.

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
        raise ArprobTypeError(f"{owner}: expected an arprob.ARHMM, got {type(model).__name__}")
    if model.stationary:
        raise InvalidArgumentError(f"{owner}: initial_probs='stationary' is not supported; use fit_em")
    num_steps = check_positive_int(owner, "num_steps", num_steps)
    y, _ = _as_batch(owner, "data", data, 3, jnp.result_type(float))
    if np.any(~np.isfinite(np.asarray(y))):
        raise InvalidArgumentError(f"{owner}: data must be finite (missing values: use fit_em with mask=...)")
    optimizer = optimizer if optimizer is not None else optax.adam(learning_rate)
    free = _to_free(model)
    state = optimizer.init(free)
    loss_and_grad = jax.jit(jax.value_and_grad(_negative_log_likelihood), static_argnames=("num_lags",))

    @jax.jit
    def step(free, state):
        loss, grads = loss_and_grad(free, y, model.num_lags)
        updates, state = optimizer.update(grads, state, free)
        return optax.apply_updates(free, updates), state, loss

    losses = []
    for _ in range(num_steps):
        free, state, loss = step(free, state)
        losses.append(float(loss))
    losses.append(float(_negative_log_likelihood(free, y, model.num_lags)))
    fitted = ARHMM(jax.nn.softmax(free["initial_logits"]), jax.nn.softmax(free["transition_logits"], axis=-1),
                   free["weights"], free["biases"], _covariances(free), model.num_lags)
    return fitted, np.asarray(losses)
