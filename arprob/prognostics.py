r"""Prognostics with a degradation ARHMM: degradation level and remaining useful life (RUL).

The model is an :class:`~arprob.ARHMM` whose states :math:`0, \dots, K-1` are health levels, usually
*left to right* (:math:`P_{ij} = 0` unless :math:`j \in \{i, i+1\}`; the last state, failure, absorbing),
as in the autoregressive partially-hidden Markov model (ARPHMM) of aero-engine prognostics
(P. Juesas and E. Ramasso, *Autoregressive hidden Markov models with partial knowledge on latent
space applied to aero-engines prognostics*, PHM Society European Conference 2016, arXiv:2105.00211).
Known states from inspections enter the fit as per-step prior weights over states (``state_prior`` of
:func:`~arprob.fit_em`, theorem 12, ``proofs/12-arhmm-forward-em.md``) and the filters here as
``log_prior``.

For an observed record :math:`y_{0:T-1}` (last modelled step :math:`T-1`) and a threshold state
:math:`\theta`:

* :func:`degradation_level`: :math:`\bar\ell_t = \sum_k p(z_t = k \mid y_{0:t})\, \ell_k` (filtered,
  online) and :math:`\sum_k p(z_t = k \mid y_{0:T-1})\, \ell_k` (smoothed), with levels :math:`\ell_k`
  (default :math:`\ell_k = k`);
* the remaining useful life :math:`R = \min\{h \ge 0 : z_{T-1+h} \ge \theta\}`, the first hitting time of
  the failure set :math:`F = \{\theta, \dots, K-1\}` counted from the last observed step (:math:`R = 0`
  when the engine is already there).  Given :math:`y_{0:T-1}`, the future states form a Markov chain with
  initial law :math:`\hat\alpha = p(z_{T-1} \mid y_{0:T-1})` and transitions :math:`P`; the future
  *observations* do not enter the event :math:`\{R = h\}`, so only the latent chain is needed (the
  emission parameters matter only through :math:`\hat\alpha`).
  :func:`time_to_threshold` simulates the chain; :func:`rul_distribution` computes the law exactly by
  the absorbing-chain recursion, with :math:`S = \{0, \dots, \theta-1\}` the transient states,

  .. math::

      a_0 = \hat\alpha|_S, \qquad a_h = a_{h-1} P_{SS}, \qquad
      P(R = 0) = 1 - a_0 \mathbf 1, \qquad P(R = h) = a_{h-1} P_{SF} \mathbf 1 \ (h \ge 1), \qquad
      P(R > H) = a_H \mathbf 1.

  Both work for any transition matrix (the first hitting time of :math:`F`); for a left-to-right chain
  it is the time of the first passage to :math:`\theta`.

Bad input follows the convention of :mod:`arprob.inference.hmm`: a NaN in a row of ``y`` marks that
observation missing (exactly ``mask=False`` there), ``±inf`` is refused, and a record of probability zero
(a ``log_prior`` that no state path allowed by the transitions satisfies) raises
:class:`~arprob.errors.ZeroProbabilityError`, since every answer here conditions on it.  Horizons and
sample counts are checked against the memory and work they need before anything runs
(``rul_distribution(..., max_horizon=10**9)`` is refused).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from arprob._random import categorical
from arprob._validation import check_int, check_key, check_memory, check_work, is_concrete
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError, ZeroProbabilityError

__all__ = [
    "DegradationLevel",
    "RULDistribution",
    "RULSamples",
    "degradation_level",
    "rul_distribution",
    "time_to_threshold",
]


class DegradationLevel(NamedTuple):
    """Posterior mean degradation level per modelled step ``t = p..T-1`` (``T - p`` rows)."""

    filtered: Float[Array, " S"]
    smoothed: Float[Array, " S"]


class RULSamples(NamedTuple):
    """Draws of the remaining useful life: ``times`` (``max_horizon`` where ``censored``) and ``censored``."""

    times: Int[Array, " n"]
    censored: Bool[Array, " n"]


class RULDistribution(NamedTuple):
    r"""Exact RUL law: ``probs[h]`` :math:`= P(R = h)` for ``h = 0..H`` and ``censored_prob`` :math:`= P(R > H)`."""

    probs: Float[Array, " H1"]
    censored_prob: Float[Array, ""]

    def cdf(self) -> np.ndarray:
        """:math:`P(R \\le h)` for ``h = 0..H`` (float64 numpy)."""
        return np.cumsum(np.asarray(self.probs, dtype=np.float64))

    def quantile(self, q) -> np.ndarray:
        r"""Smallest :math:`h` with :math:`P(R \le h) \ge q`, elementwise; ``inf`` where it lies beyond ``H``.

        A tolerance of :math:`10^{-12}` absorbs the rounding of the cumulative sums.
        """
        owner = "RULDistribution.quantile"
        if q is None or isinstance(q, (str, bytes, bool, np.bool_)):
            raise ArprobTypeError(f"{owner}: q must be a probability level in (0, 1] (or an array of them), got "
                                  f"{type(q).__name__} {q!r}")
        try:
            levels = np.asarray(q, dtype=np.float64)
        except (TypeError, ValueError):
            raise ArprobTypeError(f"{owner}: q must be a probability level in (0, 1] (or an array of them), got "
                                  f"{type(q).__name__} {q!r}") from None
        if np.any((levels <= 0) | (levels > 1)) or not np.all(np.isfinite(levels)):
            raise InvalidArgumentError(f"{owner}: q must lie in (0, 1], got {q!r} (0.5 is the median)")
        cdf = self.cdf()
        index = np.searchsorted(cdf, levels - 1e-12, side="left")
        return np.where(index < cdf.size, index, np.inf).astype(np.float64)

    def mean_lower_bound(self) -> float:
        """:math:`E[\\min(R, H+1)]`, a lower bound of :math:`E[R]` (equal to it when ``censored_prob`` is 0)."""
        probs = np.asarray(self.probs, dtype=np.float64)
        return float(probs @ np.arange(probs.size) + (probs.size) * float(self.censored_prob))


# ------------------------------------------------------------------------------------- checks


def _check_model(owner, model):
    from arprob.distributions.arhmm import ARHMM

    if not isinstance(model, ARHMM):
        raise ArprobTypeError(f"{owner}: model must be an arprob.ARHMM, got {type(model).__name__} "
                              "(fit one with arprob.fit_em)")


def _check_threshold(owner, model, threshold_state):
    threshold_state = check_int(owner, "threshold_state", threshold_state)
    if not 1 <= threshold_state <= model.num_states - 1:
        raise InvalidArgumentError(f"{owner}: threshold_state={threshold_state} is out of range, expected "
                                   f"1 <= threshold_state <= K - 1 = {model.num_states - 1} (states >= threshold_state "
                                   "form the failure set; 0 would make every RUL 0)")
    return int(threshold_state)


def _last_filtered(owner, model, y, log_prior, mask, length):
    r""":math:`p(z_{T-1} \mid y_{0:T-1})`, the filtered law at the last (valid) modelled step.

    NaN rows of ``y`` are missing observations (the ARHMM's convention); a record of probability zero
    (``log_prior`` that no path satisfies) raises :class:`~arprob.errors.ZeroProbabilityError` on concrete
    input, since the RUL conditions on it.
    """
    y = model._single(owner, y)  # the ARHMM's own checks, in the name of owner
    total = y.shape[0]
    if length is None:
        length = total
    length = check_int(owner, "length", length, minimum=model.num_lags + 1, maximum=total,
                       fix=f"length counts the valid rows of y, history included: num_lags < length <= T, i.e. "
                           f"{model.num_lags} < length <= {total}")
    y, log_prior, mask = model._one_sequence(owner, y, log_prior, mask)
    filtered = _filtered_at(model, y, log_prior, mask, jnp.asarray(length - model.num_lags))
    if is_concrete(filtered) and not float(jnp.sum(filtered)) > 0:
        raise ZeroProbabilityError(
            f"{owner}: the record has probability zero under the model (log-likelihood -inf: log_prior forbids "
            "every state path the transitions allow), so there is no filtered law to start the remaining life "
            "from; check log_prior against the model's transition_probs (a left-to-right chain cannot go back)")
    return filtered


@jax.jit
def _filtered_at(model, y, log_prior, mask, steps):
    """Filtered law at modelled step ``steps - 1`` of a padded record (one compilation for every cut)."""
    from arprob.inference.hmm import hmm_filter

    result = hmm_filter(jnp.log(model.initial_probs), jnp.log(model.transition_probs),
                        model.emission_log_likelihoods(y), log_prior=log_prior, mask=mask, length=steps)
    return result.filtered_probs[steps - 1]


# ------------------------------------------------------------------------------------- degradation level


def degradation_level(model, y: Float[Array, "T D"], *, levels=None, log_prior=None,
                      mask=None) -> DegradationLevel:
    r"""Posterior mean degradation level, filtered (online) and smoothed, at every modelled step.

    .. math::

        \bar\ell^{\,\mathrm{filt}}_t = \sum_k p(z_t = k \mid y_{0:t})\, \ell_k, \qquad
        \bar\ell^{\,\mathrm{smooth}}_t = \sum_k p(z_t = k \mid y_{0:T-1})\, \ell_k, \qquad t = p, \dots, T-1.

    Parameters
    ----------
    model
        An :class:`~arprob.ARHMM` whose states are ordered health levels.
    y
        One record ``(T, D)``; the first ``num_lags`` rows are the conditioning history.
    levels
        :math:`\ell`, shape ``(K,)``, finite (default ``arange(K)``: the expected state index).
    log_prior, mask
        Optional per-step knowledge and missing-data mask, ``(T-p, K)`` and ``(T-p,)``, as in
        :meth:`ARHMM.filter` (inspections: ``log`` of a one-hot row, i.e. 0 and ``-inf``).

    Returns
    -------
    DegradationLevel
        ``filtered`` and ``smoothed``, each ``(T-p,)``; row ``i`` is step ``p + i``.
    """
    owner = "degradation_level"
    _check_model(owner, model)
    from arprob.distributions.arhmm import _real
    from arprob.inference.hmm import hmm_smoother

    if levels is None:
        levels = jnp.arange(model.num_states, dtype=model.biases.dtype)
    else:
        levels = _real(owner, "levels", levels, "levels (one real number per state)")
        if levels.shape != (model.num_states,):
            raise ShapeError(f"{owner}: levels has shape {levels.shape}, expected (K,) = ({model.num_states},), "
                             "one level per state")
        if is_concrete(levels) and not np.all(np.isfinite(np.asarray(levels, dtype=np.float64))):
            raise InvalidArgumentError(f"{owner}: levels must be finite, got {np.asarray(levels)}")
        levels = levels.astype(model.biases.dtype)
    args, kwargs = model._kernel_args(owner, y, log_prior, mask)
    result = hmm_smoother(*args, **kwargs)
    if is_concrete(result.log_likelihood) and not float(result.log_likelihood) > -np.inf:
        raise ZeroProbabilityError(
            f"{owner}: the record has probability zero under the model (log-likelihood -inf: log_prior forbids "
            "every state path the transitions allow), so no degradation level is defined; check log_prior "
            "against the model's transition_probs")
    return DegradationLevel(result.filtered_probs @ levels, result.smoothed_probs @ levels)


# ------------------------------------------------------------------------------------- RUL by simulation

#: Cost of one step of a sequential loop (``lax.scan``), in elementary operations, for the work estimates
#: (:func:`~arprob._validation.check_work`, limit 10^13).  A loop iteration costs from ~20 ns (CPU, the
#: exact RUL recursion at K = 3: 0.018 s for 10^6 steps) to ~10 us (an accelerator's loop overhead);
#: counting 10^4 operations per step caps a call at about 10^9 sequential steps (hours on an accelerator).
_STEP_COST = 10**4


def _check_simulation_cost(owner, num_states, num_samples, max_horizon):
    """Refuse simulations that would not fit in memory or finish (sizes only, before anything runs)."""
    fix = "use fewer samples or a smaller max_horizon (draws beyond it are returned as censored)"
    # per step one key (2 words), per sample its state, hit flag and time, and per draw K Gumbel values
    check_memory(owner, f"simulating num_samples={num_samples:,} chains over max_horizon={max_horizon:,} steps",
                 (float(max_horizon) * 2 + float(num_samples) * (num_states + 3),), itemsize=8, fix=fix)
    check_work(owner, f"simulating num_samples={num_samples:,} chains over max_horizon={max_horizon:,} steps",
               float(max_horizon) * (float(num_samples) * num_states * 10 + _STEP_COST), fix=fix)



@partial(jax.jit, static_argnames=("num_samples", "max_horizon"))
def _simulate_hitting_times(key, state_probs, transition_probs, threshold_state, num_samples, max_horizon):
    """First ``h`` in ``0..max_horizon`` with ``z_h >= threshold`` for chains started from ``state_probs``."""
    key_start, key_steps = jax.random.split(key)
    states = categorical(key_start, jnp.log(state_probs), shape=(num_samples,))
    hit = states >= threshold_state
    times = jnp.where(hit, 0, max_horizon)
    log_transition = jnp.log(transition_probs)

    def step(carry, inputs):
        states, hit, times = carry
        step_key, horizon = inputs
        states = categorical(step_key, log_transition[states])
        newly = (~hit) & (states >= threshold_state)
        return (states, hit | newly, jnp.where(newly, horizon, times)), None

    inputs = (jax.random.split(key_steps, max_horizon), jnp.arange(1, max_horizon + 1))
    (_, hit, times), _ = jax.lax.scan(step, (states, hit, times), inputs)
    return times.astype(jnp.int32), ~hit


def time_to_threshold(key, model, y: Float[Array, "T D"], threshold_state: int, num_samples: int,
                      max_horizon: int, *, log_prior=None, mask=None, length: int | None = None) -> RULSamples:
    r"""Draws of the remaining useful life :math:`R` after the record ``y``, by simulating the latent chain.

    :math:`z_{T-1} \sim p(z_{T-1} \mid y_{0:T-1})` (the filter), then :math:`z_{T-1+h} \sim P_{z_{T-2+h}}`
    for :math:`h = 1, \dots, H` (``H = max_horizon``); :math:`R` is the first :math:`h` with
    :math:`z_{T-1+h} \ge \theta`.  Only the chain is simulated: :math:`R` is a function of the future states
    alone, and given :math:`y_{0:T-1}` they are a Markov chain that does not depend on the unobserved
    future observations.  Draws are exact (categorical sampling with untruncated Gumbel noise); their law
    is :func:`rul_distribution` (checked by a goodness-of-fit test in ``tests/test_prognostics.py``).

    Parameters
    ----------
    key
        PRNG key.
    model
        The fitted :class:`~arprob.ARHMM`.
    y
        The record so far ``(T, D)``.
    threshold_state
        :math:`\theta` with :math:`1 \le \theta \le K-1`; states :math:`\ge \theta` are "failed".
    num_samples, max_horizon
        Number of draws; the horizon :math:`H \ge 1` at which the simulation stops.
    log_prior, mask
        Optional per-step knowledge and missing-data mask for the filter (see :meth:`ARHMM.filter`).
    length
        Optional number of valid rows of ``y`` (history included) for a padded record: the RUL is then
        counted from row ``length - 1`` and rows beyond it are ignored.  Records cut at many points can
        share one padded shape, so the filter compiles once.

    Returns
    -------
    RULSamples
        ``times`` int32 ``(num_samples,)`` and ``censored`` bool: ``True`` where :math:`R > H`
        (``times`` is then ``H``).
    """
    owner = "time_to_threshold"
    check_key(owner, key)
    _check_model(owner, model)
    threshold_state = _check_threshold(owner, model, threshold_state)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    max_horizon = check_int(owner, "max_horizon", max_horizon, minimum=1)
    _check_simulation_cost(owner, model.num_states, num_samples, max_horizon)
    state_probs = _last_filtered(owner, model, y, log_prior, mask, length)
    times, censored = _simulate_hitting_times(key, state_probs, model.transition_probs, threshold_state,
                                              num_samples=num_samples, max_horizon=max_horizon)
    return RULSamples(times, censored)


# ------------------------------------------------------------------------------------- exact RUL law


@partial(jax.jit, static_argnames=("max_horizon",))
def _hitting_time_law(state_probs, transition_probs, threshold_state, max_horizon):
    """Absorbing-chain recursion on the sub-stochastic block of the transient states."""
    transient = jnp.arange(state_probs.shape[0]) < threshold_state
    alive = jnp.where(transient, state_probs, 0.0)
    block = jnp.where(transient[:, None] & transient[None, :], transition_probs, 0.0)

    def step(alive, _):
        following = alive @ block
        return following, jnp.sum(alive) - jnp.sum(following)

    last, later = jax.lax.scan(step, alive, None, length=max_horizon)
    first = jnp.sum(jnp.where(transient, 0.0, state_probs))
    return jnp.concatenate([first[None], later]), jnp.sum(last)


def rul_distribution(model, y: Float[Array, "T D"], threshold_state: int, max_horizon: int, *, log_prior=None,
                     mask=None, length: int | None = None) -> RULDistribution:
    r"""Exact law of the remaining useful life :math:`R` after ``y``, up to ``max_horizon``, without simulation.

    With :math:`\hat\alpha = p(z_{T-1} \mid y_{0:T-1})`, :math:`S = \{0..\theta-1\}`,
    :math:`F = \{\theta..K-1\}` and :math:`a_h(i) = P(z_{T-1+h} = i, R > h)` for :math:`i \in S`:

    .. math::

        a_0 = \hat\alpha|_S,\quad a_h = a_{h-1} P_{SS},\quad P(R = 0) = \hat\alpha(F),\quad
        P(R = h) = a_{h-1}\mathbf 1 - a_h \mathbf 1 = a_{h-1} P_{SF}\mathbf 1,\quad P(R > H) = a_H \mathbf 1.

    Equivalently (the test's brute-force check) with :math:`\tilde P` equal to :math:`P` except that the
    rows of :math:`F` are made absorbing, :math:`P(R \le h) = (\hat\alpha \tilde P^h)(F)`.  Exact up to
    float rounding (float64: 1e-12); cost :math:`O(H K^2)`.

    Parameters
    ----------
    model, y, threshold_state, max_horizon, log_prior, mask, length
        As in :func:`time_to_threshold`.

    Returns
    -------
    RULDistribution
        ``probs`` ``(H+1,)`` with ``probs[h]`` :math:`= P(R = h)` and ``censored_prob`` :math:`= P(R > H)`;
        they sum to 1.  ``quantile(q)`` gives medians and intervals (``inf`` beyond ``H``).
    """
    owner = "rul_distribution"
    _check_model(owner, model)
    threshold_state = _check_threshold(owner, model, threshold_state)
    max_horizon = check_int(owner, "max_horizon", max_horizon, minimum=1)
    # the law (H + 1 float64 values, the scan's stacked outputs and the concatenated copy) and H sequential
    # steps of a K x K product
    check_memory(owner, f"the law up to max_horizon={max_horizon:,}", (max_horizon + 1, 3), itemsize=8,
                 fix="use a smaller max_horizon (P(R > max_horizon) is returned as censored_prob)")
    check_work(owner, f"the recursion over max_horizon={max_horizon:,} sequential steps",
               float(max_horizon) * (model.num_states**2 + _STEP_COST),
               fix="use a smaller max_horizon (P(R > max_horizon) is returned as censored_prob)")
    state_probs = _last_filtered(owner, model, y, log_prior, mask, length)
    probs, censored = _hitting_time_law(state_probs, model.transition_probs, threshold_state,
                                        max_horizon=max_horizon)
    return RULDistribution(probs, censored)
