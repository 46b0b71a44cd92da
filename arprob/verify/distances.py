r"""Distances and divergences between two laws on the same finite space.

All take arrays of probabilities (float64 or float32) over the same outcomes (any shape;
compared elementwise) and return Python floats:

.. math::

    \mathrm{TV}(p, q) = \tfrac12 \sum_x |p(x) - q(x)|, \qquad
    \mathrm{KL}(p \| q) = \sum_x p(x) \log \frac{p(x)}{q(x)},

.. math::

    H(p, q) = \sqrt{1 - \sum_x \sqrt{p(x) q(x)}}
            = \sqrt{\tfrac12 \sum_x \bigl(\sqrt{p(x)} - \sqrt{q(x)}\bigr)^2}, \qquad
    \chi^2(p \| q) = \sum_x \frac{(p(x) - q(x))^2}{q(x)}.

Conventions: :math:`0 \log 0 = 0`; KL and :math:`\chi^2` are :math:`+\infty`
when :math:`p` puts mass where :math:`q` has none.  Useful inequalities (all
checked in the tests): :math:`H^2 \le \mathrm{TV} \le \sqrt{2} H`,
:math:`\mathrm{TV} \le \sqrt{\mathrm{KL}/2}` (Pinsker) and
:math:`4\,\mathrm{TV}^2 \le \chi^2` (Cauchy-Schwarz; the bound behind
:func:`arprob.verify.plan`).

Precision.  A law's sum is checked against one at the tolerance of the precision it was computed in
(:func:`arprob._validation.sum_tolerance`: 1e-9 in float64; 1e-5 in float32, and for every law when
``jax_enable_x64`` is off, since the laws are then computed from float32 values), and each law is
then divided by its sum, so that the distances are between probability laws: a law computed in
float32 is at distance 0 from itself, and its distances are accurate to about 1e-7.  Hellinger is
computed from the sum of squares, which has no cancellation (:math:`1 - \sum \sqrt{pq}` cannot
resolve :math:`H < 10^{-8}` in float64).
"""

from __future__ import annotations

import numpy as np

from arprob._validation import check_probs, check_real_array, input_dtype
from arprob.errors import ShapeError

__all__ = ["chi2_divergence", "hellinger", "kl", "tv"]


def _law(owner: str, name: str, value) -> np.ndarray:
    """``value`` as a float64 law: real numbers, non-empty, finite, non-negative, summing to one.

    The sum is held to the tolerance of the precision ``value`` was computed in
    (:func:`arprob._validation.sum_tolerance`: 1e-9 in float64, 1e-5 in float32 or with x64 off).
    """
    array = check_real_array(owner, name, value, finite=False)
    if array.size == 0:
        raise ShapeError(f"{owner}: {name} is empty (shape {array.shape}); expected a law over at least one outcome")
    check_probs(owner, name, array.ravel(), dtype=input_dtype(value))
    return array


def _pair(owner: str, p, q):
    p = _law(owner, "p", p)
    q = _law(owner, "q", q)
    if p.shape != q.shape:
        raise ShapeError(f"{owner}: p has shape {p.shape} but q has shape {q.shape}; expected two laws of the same "
                         "shape over the same outcomes (check that both enumerate the same space)")
    p, q = p.ravel(), q.ravel()
    return p / p.sum(), q / q.sum()


def tv(p, q) -> float:
    """Total variation distance :math:`\\frac12 \\sum |p - q|` (in [0, 1])."""
    p, q = _pair("tv", p, q)
    return float(0.5 * np.abs(p - q).sum())


def kl(p, q) -> float:
    """Kullback-Leibler divergence :math:`KL(p \\| q)` in nats (+inf if p is not << q)."""
    p, q = _pair("kl", p, q)
    support = p > 0
    if np.any(q[support] == 0):
        return float("inf")
    return float(max(0.0, np.sum(p[support] * (np.log(p[support]) - np.log(q[support])))))


def hellinger(p, q) -> float:
    """Hellinger distance :math:`\\sqrt{1 - \\sum \\sqrt{p q}}` (in [0, 1])."""
    p, q = _pair("hellinger", p, q)
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


def chi2_divergence(p, q) -> float:
    """Pearson :math:`\\chi^2(p \\| q) = \\sum (p - q)^2 / q` (+inf if p is not << q)."""
    p, q = _pair("chi2_divergence", p, q)
    zero = q == 0
    if np.any(p[zero] > 0):
        return float("inf")
    keep = ~zero
    return float(np.sum((p[keep] - q[keep]) ** 2 / q[keep]))
