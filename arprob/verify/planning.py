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

from arprob._validation import check_int, check_real
from arprob.errors import InvalidArgumentError

__all__ = ["detectable", "plan", "power_of"]

#: Largest sample size :func:`plan` returns, and largest ``support_size``: counts and cell indices are
#: signed 64-bit integers.
MAX_PLANNED_SAMPLES = 2**63 - 1
#: Above this many degrees of freedom the noncentral chi-square tail is its normal approximation
#: :math:`N(K - 1 + \lambda,\ 2(K - 1 + 2\lambda))` (skewness below :math:`\sqrt{8/10^9} \approx 10^{-4}`),
#: where scipy's series for ``ncx2`` stop converging (from about :math:`10^{11}` degrees of freedom).
NORMAL_DF = 1e9


def _tail(critical: float, df: float, lam: float) -> float:
    r""":math:`P(\chi^2_{df}(\lambda) > \text{critical})`."""
    if df <= NORMAL_DF:
        return float(stats.ncx2.sf(critical, df, lam))
    return float(stats.norm.sf((critical - df - lam) / math.sqrt(2.0 * (df + 2.0 * lam))))


_NO_POWER = object()


def _check(owner: str, support_size, alpha, power=_NO_POWER):
    support_size = check_int(owner, "support_size", support_size, minimum=2, maximum=MAX_PLANNED_SAMPLES,
                             fix="the number of cells of the test (V**L for the whole joint), at least 2 and "
                                 "indexable by a 64-bit integer")
    alpha = check_real(owner, "alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True,
                       fix="alpha is a false-alarm probability, e.g. 1e-4")
    if power is not _NO_POWER:
        power = check_real(owner, "power", power, low=0.0, high=1.0, low_open=True, high_open=True,
                           fix="power is a probability of detection, e.g. 0.99")
    return support_size, alpha, power


def _check_deviation(owner: str, deviation) -> float:
    return check_real(owner, "deviation", deviation, low=0.0, high=1.0, low_open=True,
                      fix="deviation is the total-variation distance to detect, e.g. 0.01")


def _required_noncentrality(owner: str, df: int, alpha: float, power: float) -> float:
    """Smallest noncentrality at which the level-``alpha`` test reaches ``power``."""
    df = float(df)  # scipy's chi-square functions take C doubles: 10**30 cells must not overflow a C long
    critical = stats.chi2.isf(alpha, df)

    def shortfall(lam):
        return _tail(critical, df, lam) - power

    upper = 1.0
    for _ in range(2100):  # 2**2100 overflows: the loop always ends
        value = shortfall(upper)
        if not math.isfinite(upper) or math.isnan(value) or value >= 0:
            break
        upper *= 2
    if not (math.isfinite(critical) and math.isfinite(upper) and shortfall(upper) >= 0 and shortfall(0.0) <= 0):
        raise InvalidArgumentError(
            f"{owner}: the chi-square tails at alpha={alpha:g}, power={power:g} and {int(df) + 1:,} cells "
            "(support_size) are beyond double precision; use an alpha above 1e-300 and a power below 1 - 1e-15")
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-10, rtol=1e-12))


def power_of(num_samples: int, deviation: float, support_size: int, alpha: float = 1e-4) -> float:
    """Worst-case asymptotic power at TV distance ``deviation`` with ``num_samples`` samples.

    ``num_samples >= 1`` (an int), ``deviation`` in :math:`(0, 1]`, ``support_size >= 2`` cells,
    ``alpha`` in :math:`(0, 1)`.
    """
    owner = "power_of"
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    deviation = _check_deviation(owner, deviation)
    support_size, alpha, _ = _check(owner, support_size, alpha)
    df = float(support_size - 1)
    critical = stats.chi2.isf(alpha, df)
    return _tail(critical, df, 4.0 * num_samples * deviation**2)


def plan(deviation: float, support_size: int, alpha: float = 1e-4, power: float = 0.99) -> int:
    """Samples needed to reject every law at TV distance ``deviation`` w.p. ``power`` at level ``alpha``.

    Parameters
    ----------
    deviation
        Total-variation distance :math:`d \\in (0, 1]` to detect.
    support_size
        Number of cells :math:`K \\ge 2` of the test (``V**L`` for the full joint).
    alpha
        Significance level (false-alarm probability), in :math:`(0, 1)`.
    power
        Required probability of rejecting any law at distance :math:`\\ge d`, in :math:`(0, 1)`.

    Returns
    -------
    int
        The smallest :math:`n` with worst-case asymptotic power :math:`\\ge` ``power``
        (see the module docstring for the derivation).  A plan over :data:`MAX_PLANNED_SAMPLES`
        (``2**63 - 1``) is refused, with the size it would need.
    """
    owner = "plan"
    deviation = _check_deviation(owner, deviation)
    support_size, alpha, power = _check(owner, support_size, alpha, power)
    lam = _required_noncentrality(owner, support_size - 1, alpha, power)
    log10_n = (math.log(lam) - math.log(4.0) - 2.0 * math.log(deviation)) / math.log(10.0)
    if log10_n > math.log10(MAX_PLANNED_SAMPLES):
        raise InvalidArgumentError(
            f"{owner}: deviation={deviation:g} needs about 10^{log10_n:.1f} samples (support_size={support_size:,}, "
            f"alpha={alpha:g}, power={power:g}), over the limit of 2**63 - 1 (about 9.2e18) that any sample "
            "counter holds; pass a larger deviation (the samples needed grow as 1/deviation**2)")
    return int(math.ceil(lam / (4.0 * deviation**2)))


def detectable(num_samples: int, support_size: int, alpha: float = 1e-4, power: float = 0.99) -> float:
    """Smallest TV distance detected with probability ``power`` from ``num_samples`` samples.

    The inverse of :func:`plan`: :math:`d = \\sqrt{\\lambda^* / (4n)}` where
    :math:`\\lambda^*` is the noncentrality that reaches ``power``.
    """
    owner = "detectable"
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    support_size, alpha, power = _check(owner, support_size, alpha, power)
    lam = _required_noncentrality(owner, support_size - 1, alpha, power)
    return float(min(1.0, math.sqrt(lam / (4.0 * num_samples))))
