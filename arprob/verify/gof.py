r"""Goodness-of-fit tests of samples against an exact law.

Given counts :math:`O_c` of :math:`n` samples over cells :math:`c` (full
sequences, or the values of a projection onto some positions) and the exact
cell probabilities :math:`p_c`, with expected counts :math:`E_c = n p_c`:

* **pearson**: :math:`X^2 = \sum_c (O_c - E_c)^2 / E_c`;
* **g** (likelihood ratio): :math:`G = 2 \sum_c O_c \log(O_c / E_c)`, divided by
  Williams' factor :math:`q = 1 + (\sum_c 1/p_c - 1) / (6 n (K - 1))`, without which
  :math:`G` overshoots its chi-square reference when many cells expect ~5 samples;
* **head**: Pearson's statistic on the ``head_size`` most likely cells kept
  separate and everything else pooled into one cell: few degrees of freedom,
  so it is the most sensitive to shifts of the bulk of the mass (temperature,
  a wrong top token), where the full statistics spread their power thin.

G pools to at least ``G_MIN_EXPECTED`` (10) expected samples per cell: with
cells of ~5 its reference tail is anti-conservative (measured: 17% false alarms
at nominal 5% with 10^4 degrees of freedom); even at 10 it stays slightly
anti-conservative at thousands of degrees of freedom, which is why
:func:`arprob.verify.check` uses Pearson and head statistics.

Calibration.  Before any statistic is computed, cells whose expected count is
below ``min_expected`` (5) are pooled, in ascending order of probability,
into groups that each expect at least ``min_expected`` samples; the statistic
is then referred to the chi-square tail with (groups - 1) degrees of freedom
(``scipy.stats.chi2.sf``: the regularized incomplete gamma function, accurate
at any number of degrees of freedom, unlike series expansions that break
above a few hundred).  Pooling keeps the asymptotic tail valid for supports
of :math:`10^5` outcomes and more with tiny expected counts; the test-suite
validates the calibration against exact Monte Carlo from the known target.

A sample on an outcome of probability zero is an immediate failure:
``p_value == 0`` and the offending outcomes are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from arprob._enumerate import decode_index
from arprob.errors import InvalidArgumentError, InvalidTokenError, ShapeError

__all__ = ["Counts", "GofResult", "gof", "projected_law", "STATISTICS"]

STATISTICS = ("pearson", "g", "head")
MIN_EXPECTED = 5.0
G_MIN_EXPECTED = 10.0
HEAD_SIZE = 16


@dataclass(frozen=True)
class Counts:
    """Counts of samples over the cells of a projection (lexicographic cell order)."""

    counts: np.ndarray
    vocab_size: int
    projection: tuple[int, ...] | None = None

    @property
    def num_samples(self) -> int:
        return int(np.sum(self.counts))


@dataclass
class GofResult:
    """Outcome of :func:`gof`."""

    statistic: str
    value: float
    df: int
    p_value: float
    method: str
    observed: np.ndarray = field(repr=False)
    expected: np.ndarray = field(repr=False)
    num_samples: int = 0
    projection: tuple[int, ...] | None = None
    zero_probability_hits: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "value": self.value,
            "df": self.df,
            "p_value": self.p_value,
            "method": self.method,
            "num_samples": self.num_samples,
            "projection": None if self.projection is None else list(self.projection),
            "zero_probability_hits": [list(map(int, hit)) for hit in self.zero_probability_hits],
        }


def _pool(expected: np.ndarray, min_expected: float) -> np.ndarray:
    """Group id per cell (-1 for zero-probability cells).

    Cells with expected count >= ``min_expected`` stand alone; the others are
    merged greedily in ascending order of probability until each group expects
    at least ``min_expected``.  A final short group joins the last complete
    group of small cells, or else the smallest large cell.
    """
    groups = np.full(expected.shape, -1, dtype=np.int64)
    positive = np.flatnonzero(expected > 0)
    large = positive[expected[positive] >= min_expected]
    large = large[np.argsort(expected[large], kind="stable")]
    small = positive[expected[positive] < min_expected]
    small = small[np.argsort(expected[small], kind="stable")]
    # greedy boundaries: close a group as soon as its running total reaches min_expected
    group_of_small = np.empty(small.size, dtype=np.int64)
    group, running = 0, 0.0
    for rank, cell in enumerate(small):
        group_of_small[rank] = group
        running += expected[cell]
        if running >= min_expected:
            group, running = group + 1, 0.0
    complete = group  # number of complete small groups
    if running > 0:  # the unfinished group
        if complete > 0:
            group_of_small[group_of_small == complete] = complete - 1
        elif large.size == 0:
            complete = 1  # everything in one group: the test is degenerate
        else:
            group_of_small[:] = complete  # joins the smallest large cell (next id)
    groups[small] = group_of_small
    groups[large] = complete + np.arange(large.size)
    return groups


def _chi_square(observed, expected, statistic: str) -> float:
    if statistic == "g":
        # Williams' correction divides G by q so that its mean matches the chi-square's
        hit = observed > 0
        value = 2.0 * np.sum(observed[hit] * np.log(observed[hit] / expected[hit]))
        total, cells = observed.sum(), observed.size
        q = 1.0 + (np.sum(total / expected) - 1.0) / (6.0 * total * (cells - 1))
        return float(value / q)
    return float(np.sum((observed - expected) ** 2 / expected))


def _test_counts(observed: np.ndarray, probs: np.ndarray, statistic: str,
                 min_expected: float = MIN_EXPECTED, head_size: int = HEAD_SIZE):
    """Return ``(value, df, p_value, method, zero_hit_cells)`` for counts vs probabilities."""
    observed = np.asarray(observed, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    num_samples = observed.sum()
    zero_hits = np.flatnonzero((probs <= 0) & (observed > 0))
    if zero_hits.size:
        return float("inf"), 0, 0.0, "zero-probability outcome sampled", zero_hits
    expected = num_samples * probs
    if statistic == "head":
        positive = np.flatnonzero(probs > 0)
        ranked = positive[np.argsort(-probs[positive], kind="stable")]
        eligible = ranked[expected[ranked] >= min_expected][:head_size]
        rest_expected = num_samples - expected[eligible].sum()
        if rest_expected < min_expected and eligible.size:
            eligible = eligible[:-1]
            rest_expected = num_samples - expected[eligible].sum()
        if eligible.size == 0:
            return 0.0, 0, 1.0, "degenerate: no cell expects enough samples", zero_hits
        pooled_observed = np.append(observed[eligible], num_samples - observed[eligible].sum())
        pooled_expected = np.append(expected[eligible], rest_expected)
        method = f"head: top {eligible.size} cells + rest, chi-square tail"
    else:
        # G's chi-square reference needs larger cells than Pearson's (see module docstring)
        groups = _pool(expected, max(min_expected, G_MIN_EXPECTED) if statistic == "g" else min_expected)
        used = groups >= 0
        num_groups = int(groups[used].max()) + 1 if used.any() else 0
        pooled_observed = np.bincount(groups[used], weights=observed[used], minlength=num_groups)
        pooled_expected = np.bincount(groups[used], weights=expected[used], minlength=num_groups)
        pooled = int(used.sum()) - num_groups
        method = f"{statistic}, chi-square tail" + (f" ({pooled} cells pooled)" if pooled else "")
    df = pooled_expected.size - 1
    if df < 1:
        return 0.0, 0, 1.0, "degenerate: fewer than two cells expect enough samples", zero_hits
    value = _chi_square(pooled_observed, pooled_expected, "g" if statistic == "g" else "pearson")
    return value, df, float(stats.chi2.sf(value, df)), method, zero_hits


def projected_law(law, vocab_size: int, length: int, projection) -> np.ndarray:
    """Exact law of the tokens at ``projection`` (a tuple of positions), lexicographic cells."""
    table = np.asarray(law, dtype=np.float64).reshape((vocab_size,) * length)
    projection = tuple(int(p) for p in projection)
    others = tuple(axis for axis in range(length) if axis not in projection)
    marginal = table.sum(axis=others) if others else table
    kept = sorted(projection)
    marginal = np.transpose(marginal, [kept.index(p) for p in projection])
    return marginal.ravel()


def _law_and_shape(law, vocab_size, length):
    if hasattr(law, "law") and callable(law.law):
        return np.asarray(law.law(), np.float64).ravel(), law.vocab_size, law.length
    array = np.asarray(law, dtype=np.float64)
    if vocab_size is None:
        if array.ndim > 1:
            vocab_size = array.shape[0]
        elif length:
            vocab_size = int(round(array.size ** (1.0 / length)))
    if vocab_size is None or vocab_size**length != array.size:
        raise ShapeError(
            f"gof: law has {array.size} entries, which is not vocab_size**length for "
            f"vocab_size={vocab_size}, length={length}; pass vocab_size=... or a law of shape (V,)*L"
        )
    return array.ravel(), vocab_size, length


def gof(samples, law, *, projection=None, statistic: str = "auto", vocab_size: int | None = None,
        min_expected: float = MIN_EXPECTED) -> GofResult:
    """Test whether ``samples`` come from ``law`` (optionally on a projection).

    Parameters
    ----------
    samples
        Integer tokens of shape ``(num_samples, L)``, or a :class:`Counts`.
    law
        The exact law: an array over all ``V**L`` sequences (flat lexicographic,
        or shape ``(V,)*L``), or an exact model (its ``law()`` is used).
    projection
        ``None`` for the full joint, or a tuple of positions: the test is then
        on the joint law of the tokens at those positions.
    statistic
        ``"pearson"``, ``"g"``, ``"head"`` or ``"auto"`` (= ``"pearson"``).
    vocab_size
        Needed only when it cannot be read from ``law``'s shape.
    min_expected
        Expected count below which cells are pooled (see module docstring).

    Returns
    -------
    GofResult
        statistic value, degrees of freedom, p-value, method, counts.
    """
    statistic = "pearson" if statistic == "auto" else statistic
    if statistic not in STATISTICS:
        raise InvalidArgumentError(f"gof: statistic={statistic!r}, expected one of {('auto',) + STATISTICS}")
    if isinstance(samples, Counts):
        counts = np.asarray(samples.counts, dtype=np.float64)
        projection = samples.projection if projection is None else projection
        length = None
        vocab_size = samples.vocab_size
        if projection is None:
            length = int(round(np.log(counts.size) / np.log(vocab_size)))
        flat_law, vocab_size, length = _law_and_shape(law, vocab_size, length or getattr(law, "length", None)
                                                      or int(round(np.log(np.size(law)) / np.log(vocab_size))))
    else:
        tokens = np.asarray(samples)
        if tokens.ndim != 2:
            raise ShapeError(f"gof: samples has shape {tokens.shape}, expected (num_samples, length)")
        flat_law, vocab_size, length = _law_and_shape(law, vocab_size, tokens.shape[1])
        if tokens.shape[1] != length:
            raise ShapeError(f"gof: samples have length {tokens.shape[1]} but the law has length {length}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
            raise InvalidTokenError(
                f"gof: samples contain token {tokens.min() if tokens.min() < 0 else tokens.max()}, "
                f"expected tokens in [0, {vocab_size})"
            )
        columns = tokens if projection is None else tokens[:, list(projection)]
        powers = vocab_size ** np.arange(columns.shape[1] - 1, -1, -1, dtype=np.int64)
        cells = vocab_size ** columns.shape[1]
        counts = np.bincount(columns.astype(np.int64) @ powers, minlength=cells).astype(np.float64)
    probs = flat_law if projection is None else projected_law(flat_law, vocab_size, length, projection)
    if counts.size != probs.size:
        raise ShapeError(f"gof: {counts.size} count cells but the (projected) law has {probs.size}")
    value, df, p_value, method, zero_hits = _test_counts(counts, probs, statistic, min_expected)
    width = length if projection is None else len(projection)
    hits = [tuple(int(t) for t in decode_index(cell, vocab_size, width)) for cell in zero_hits[:20]]
    return GofResult(statistic, value, df, p_value, method, counts, counts.sum() * probs,
                     int(counts.sum()), None if projection is None else tuple(projection), hits)
