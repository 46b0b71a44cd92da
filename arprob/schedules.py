r"""Noise schedules of absorbing (masked) diffusion.

Each token of a clean sequence :math:`x_0` is replaced by the mask
independently, with a rate :math:`\sigma(t)` on :math:`t\in[0,1]`; with the
total noise :math:`\bar\sigma(t) = \int_0^t \sigma(s)\,ds`, a token is still
clean at time :math:`t` with probability :math:`\alpha(t) = e^{-\bar\sigma(t)}`
and masked with probability

.. math::

    m(t) = 1 - e^{-\bar\sigma(t)}.

A schedule *masks everything by* :math:`t = 1` when :math:`m(1) = 1`
(:func:`linear`, :func:`cosine`); :func:`log_linear` with ``eps > 0`` stops at
:math:`m(1) = 1 - \varepsilon` (SEDD, RADD), which changes the ELBO by an
analytic amount (see :meth:`arprob.AbsorbingDiffusion.elbo`).

Every method accepts floats, numpy or JAX arrays and returns the same kind
(numpy in, numpy out), so schedules can be used in ``scipy.integrate.quad`` and
inside jitted samplers alike.  Concrete times are checked to lie in
:math:`[0, 1]` (a NaN, a string or :math:`t = 1.5` is refused); traced times
inside ``jit`` are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import _show, check_choice
from arprob.errors import ArprobTypeError, InvalidArgumentError

__all__ = ["Schedule", "cosine", "linear", "log_linear"]

KINDS = ("linear", "cosine", "log_linear")


def _xp(t):
    return np if isinstance(t, (float, int, np.ndarray, np.generic)) else jnp


def _check_eps(owner: str, eps) -> float:
    """``eps`` as a float in ``[0, 1)``; anything else (NaN, a string, None, a bool) is an InvalidArgumentError."""
    number = isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, (bool, np.bool_))
    if not (number and 0.0 <= float(eps) < 1.0):
        raise InvalidArgumentError(f"{owner}: eps must be a number in [0, 1), got {eps!r}; eps is the probability "
                                   "that a token is still clean at t = 1, e.g. 1e-3")
    return float(eps)


def _check_time(owner: str, t):
    """Refuse concrete times outside ``[0, 1]``, NaN, strings and bools; tracers pass unchecked."""
    if isinstance(t, jax.core.Tracer):
        return t
    if isinstance(t, (bool, np.bool_)) or isinstance(t, (str, bytes)) or t is None:
        raise ArprobTypeError(f"{owner}: t must be a time in [0, 1] (a float or an array of floats), got {_show(t)}")
    array = np.asarray(t)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ArprobTypeError(f"{owner}: t must be a time in [0, 1] (a float or an array of floats), got {_show(t)}")
    bad = ~((array >= 0.0) & (array <= 1.0))  # NaN is bad too
    if np.any(bad):
        value = array[bad].ravel()[0] if array.ndim else array
        where = f" at index {tuple(int(i) for i in np.argwhere(bad)[0])}" if array.ndim else ""
        raise InvalidArgumentError(f"{owner}: t must lie in [0, 1], got {float(value):g}{where}; times of the "
                                   "diffusion run from 0 (clean) to 1 (noised)")
    return t


@dataclass(frozen=True)
class Schedule:
    """A masking schedule: ``kind`` in {"linear", "cosine", "log_linear"} and its ``eps``.

    Use the constructors :func:`linear`, :func:`cosine`, :func:`log_linear`.
    """

    kind: str
    eps: float = 0.0

    def __post_init__(self):
        owner = "Schedule"
        check_choice(owner, "kind", self.kind, KINDS)
        eps = _check_eps(owner, self.eps)
        if self.kind != "log_linear" and eps != 0.0:
            raise InvalidArgumentError(f"{owner}: eps={eps:g} only applies to kind='log_linear', got kind="
                                       f"{self.kind!r}; drop eps or use log_linear(eps)")
        object.__setattr__(self, "eps", eps)

    def mask_prob(self, t):
        r""":math:`m(t) = 1 - e^{-\bar\sigma(t)}`, the probability that a token is masked at time ``t``."""
        return self._mask_prob(_check_time("Schedule.mask_prob", t))

    def _mask_prob(self, t):
        xp = _xp(t)
        if self.kind == "linear":
            return xp.asarray(t) * 1.0
        if self.kind == "log_linear":
            return (1.0 - self.eps) * xp.asarray(t)
        # 2 sin^2(pi t / 4) = 1 - cos(pi t / 2) without cancellation at small t
        # (and exactly 1 at t = 1, where cos(pi/2) is not exactly 0 in floating point)
        t = xp.asarray(t)
        return xp.where(t >= 1.0, 1.0, xp.minimum(2.0 * xp.sin(0.25 * xp.pi * t) ** 2, 1.0))

    def alpha(self, t):
        r""":math:`\alpha(t) = e^{-\bar\sigma(t)} = 1 - m(t)`, the probability a token is still clean."""
        return self._alpha(_check_time("Schedule.alpha", t))

    def _alpha(self, t):
        return 1.0 - self._mask_prob(t)

    def total(self, t):
        r""":math:`\bar\sigma(t) = \int_0^t \sigma(s)\,ds = -\log(1 - m(t))` (``inf`` where everything is masked)."""
        t = _check_time("Schedule.total", t)
        xp = _xp(t)
        with np.errstate(divide="ignore"):
            return -xp.log(self._alpha(t))

    def mask_rate(self, t):
        r""":math:`m'(t) = \sigma(t)\,\alpha(t)`, the density in time of a token's masking event."""
        return self._mask_rate(_check_time("Schedule.mask_rate", t))

    def _mask_rate(self, t):
        xp = _xp(t)
        t = xp.asarray(t) * 1.0
        if self.kind == "linear":
            return xp.ones_like(t)
        if self.kind == "log_linear":
            return (1.0 - self.eps) * xp.ones_like(t)
        return 0.5 * xp.pi * xp.sin(0.5 * xp.pi * t)

    def rate(self, t):
        r""":math:`\sigma(t) = \frac{d}{dt}\bar\sigma(t) = m'(t) / (1 - m(t))`."""
        t = _check_time("Schedule.rate", t)
        with np.errstate(divide="ignore"):
            return self._mask_rate(t) / self._alpha(t)

    def elbo_weight(self, t):
        r""":math:`w(t) = \sigma(t)\,\alpha(t) / m(t) = m'(t)/m(t)`, the ELBO weight on the masked tokens' loss."""
        t = _check_time("Schedule.elbo_weight", t)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._mask_rate(t) / self._mask_prob(t)

    @property
    def final_mask_prob(self) -> float:
        """:math:`m(1)`: 1 for schedules that mask everything."""
        return float(self._mask_prob(1.0))

    def __repr__(self):
        return f"schedules.{self.kind}(eps={self.eps})" if self.kind == "log_linear" else f"schedules.{self.kind}()"


def linear() -> Schedule:
    r"""Linear masking (MDLM, ARDM): :math:`m(t) = t`, :math:`\bar\sigma(t) = -\log(1-t)`, :math:`\sigma = 1/(1-t)`."""
    return Schedule("linear")


def log_linear(eps: float = 1e-3) -> Schedule:
    r"""Log-linear noise of SEDD/RADD: :math:`\bar\sigma(t) = -\log(1 - (1-\varepsilon)t)`.

    So :math:`m(t) = (1-\varepsilon)t`.

    :math:`\sigma(t) = (1-\varepsilon)/(1-(1-\varepsilon)t)`.  With
    ``eps > 0`` the schedule stops short of masking everything: a token is still
    clean at :math:`t=1` with probability :math:`\varepsilon`.
    """
    return Schedule("log_linear", _check_eps("schedules.log_linear", eps))


def cosine() -> Schedule:
    r"""Cosine masking: :math:`\alpha(t) = \cos(\pi t/2)`.

    So :math:`m(t) = 1 - \cos(\pi t / 2)` and :math:`\sigma(t) = \frac{\pi}{2}\tan(\pi t/2)`.
    """
    return Schedule("cosine")
