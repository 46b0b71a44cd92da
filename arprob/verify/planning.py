r"""Sample-size planning for goodness-of-fit tests against an exact law.

Under a law :math:`q` the Pearson statistic on :math:`K` cells with target
:math:`p` is asymptotically noncentral chi-square,

.. math::

    X^2 \sim \chi^2_{K-1}(\lambda), \qquad \lambda = n\, \chi^2(q \| p).

By Cauchy-Schwarz, :math:`\sum_x |q - p| = \sum_x \frac{|q-p|}{\sqrt p}\sqrt p
\le \sqrt{\chi^2(q\|p)}`, so every :math:`q` at total-variation distance
:math:`d` from :math:`p` has :math:`\chi^2(q \| p) \ge 4 d^2`: the worst case
(least detectable) alternative has :math:`\lambda = 4 n d^2`, and the bound is
attained by a deviation spread proportionally to :math:`p`.  Since the power
of the test increases with :math:`\lambda`, the smallest :math:`n` with

.. math::

    P\big(\chi^2_{K-1}(4 n d^2) > \chi^2_{K-1,\,1-\alpha}\big) \ge \text{power}

guarantees power against *every* alternative at distance :math:`\ge d`
(asymptotically; the test-suite measures it on biased samplers).
Using :math:`K-1` degrees of freedom is conservative when cells are pooled
(fewer degrees of freedom means more power at the same :math:`\lambda`).
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from arprob.errors import ArprobTypeError, InvalidArgumentError

__all__ = ["detectable", "plan", "power_of"]


def _check(owner: str, support_size, alpha, power):
    if not isinstance(support_size, (int,)) and not float(support_size).is_integer():
        raise ArprobTypeError(f"{owner}: support_size must be an integer, got {support_size!r}")
    if support_size < 2:
        raise InvalidArgumentError(f"{owner}: support_size must be >= 2 (cells of the test), got {support_size}")
    if not 0 < alpha < 1:
        raise InvalidArgumentError(f"{owner}: alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise InvalidArgumentError(f"{owner}: power must be in (0, 1), got {power}")


def _required_noncentrality(df: int, alpha: float, power: float) -> float:
    """Smallest noncentrality at which the level-``alpha`` test reaches ``power``."""
    critical = stats.chi2.isf(alpha, df)

    def shortfall(lam):
        return stats.ncx2.sf(critical, df, lam) - power

    upper = 1.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-10, rtol=1e-12))


def power_of(num_samples: float, deviation: float, support_size: int, alpha: float = 1e-4) -> float:
    """Worst-case asymptotic power at TV distance ``deviation`` with ``num_samples`` samples."""
    df = int(support_size) - 1
    critical = stats.chi2.isf(alpha, df)
    return float(stats.ncx2.sf(critical, df, 4.0 * num_samples * deviation**2))


def plan(deviation: float, support_size: int, alpha: float = 1e-4, power: float = 0.99) -> int:
    """Samples needed to reject every law at TV distance ``deviation`` w.p. ``power`` at level ``alpha``.

    Parameters
    ----------
    deviation
        Total-variation distance :math:`d \\in (0, 1]` to detect.
    support_size
        Number of cells :math:`K` of the test (``V**L`` for the full joint).
    alpha
        Significance level (false-alarm probability).
    power
        Required probability of rejecting any law at distance :math:`\\ge d`.

    Returns
    -------
    int
        The smallest :math:`n` with worst-case asymptotic power :math:`\\ge` ``power``
        (see the module docstring for the derivation).
    """
    _check("plan", support_size, alpha, power)
    if not 0 < deviation <= 1:
        raise InvalidArgumentError(f"plan: deviation must be a TV distance in (0, 1], got {deviation}")
    lam = _required_noncentrality(int(support_size) - 1, alpha, power)
    return int(math.ceil(lam / (4.0 * deviation**2)))


def detectable(num_samples: int, support_size: int, alpha: float = 1e-4, power: float = 0.99) -> float:
    """Smallest TV distance detected with probability ``power`` from ``num_samples`` samples.

    The inverse of :func:`plan`: :math:`d = \\sqrt{\\lambda^* / (4n)}` where
    :math:`\\lambda^*` is the noncentrality that reaches ``power``.
    """
    _check("detectable", support_size, alpha, power)
    if num_samples < 1:
        raise InvalidArgumentError(f"detectable: num_samples must be >= 1, got {num_samples}")
    lam = _required_noncentrality(int(support_size) - 1, alpha, power)
    return float(min(1.0, math.sqrt(lam / (4.0 * num_samples))))
