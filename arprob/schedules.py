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
inside jitted samplers alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from arprob.errors import InvalidArgumentError

__all__ = ["Schedule", "cosine", "linear", "log_linear"]


def _xp(t):
    return np if isinstance(t, (float, int, np.ndarray, np.generic)) else jnp


@dataclass(frozen=True)
class Schedule:
    """A masking schedule: ``kind`` in {"linear", "cosine", "log_linear"} and its ``eps``.

    Use the constructors :func:`linear`, :func:`cosine`, :func:`log_linear`.
    """

    kind: str
    eps: float = 0.0

    def mask_prob(self, t):
        r""":math:`m(t) = 1 - e^{-\bar\sigma(t)}`, the probability that a token is masked at time ``t``."""
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
        return 1.0 - self.mask_prob(t)

    def total(self, t):
        r""":math:`\bar\sigma(t) = \int_0^t \sigma(s)\,ds = -\log(1 - m(t))` (``inf`` where everything is masked)."""
        xp = _xp(t)
        with np.errstate(divide="ignore"):
            return -xp.log(self.alpha(t))

    def mask_rate(self, t):
        r""":math:`m'(t) = \sigma(t)\,\alpha(t)`, the density in time of a token's masking event."""
        xp = _xp(t)
        t = xp.asarray(t) * 1.0
        if self.kind == "linear":
            return xp.ones_like(t)
        if self.kind == "log_linear":
            return (1.0 - self.eps) * xp.ones_like(t)
        return 0.5 * xp.pi * xp.sin(0.5 * xp.pi * t)

    def rate(self, t):
        r""":math:`\sigma(t) = \frac{d}{dt}\bar\sigma(t) = m'(t) / (1 - m(t))`."""
        with np.errstate(divide="ignore"):
            return self.mask_rate(t) / self.alpha(t)

    def elbo_weight(self, t):
        r""":math:`w(t) = \sigma(t)\,\alpha(t) / m(t) = m'(t)/m(t)`, the ELBO weight on the masked tokens' loss."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.mask_rate(t) / self.mask_prob(t)

    @property
    def final_mask_prob(self) -> float:
        """:math:`m(1)`: 1 for schedules that mask everything."""
        return float(self.mask_prob(1.0))

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
    if not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise InvalidArgumentError(f"schedules.log_linear: eps must be a number in [0, 1), got {eps!r}")
    return Schedule("log_linear", float(eps))


def cosine() -> Schedule:
    r"""Cosine masking: :math:`\alpha(t) = \cos(\pi t/2)`.

    So :math:`m(t) = 1 - \cos(\pi t / 2)` and :math:`\sigma(t) = \frac{\pi}{2}\tan(\pi t/2)`.
    """
    return Schedule("cosine")
