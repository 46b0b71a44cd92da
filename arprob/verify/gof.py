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

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from arprob._enumerate import decode_index
from arprob._validation import (
    _show,
    check_choice,
    check_int,
    check_probs,
    check_real,
    check_real_array,
    input_dtype,
)
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError

__all__ = ["Counts", "GofResult", "check_projection", "gof", "projected_law", "STATISTICS"]

STATISTICS = ("pearson", "g", "head")
MIN_EXPECTED = 5.0
G_MIN_EXPECTED = 10.0
HEAD_SIZE = 16


# -- validation of what the tests are given --------------------------------------------------


def _is_integer(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return np.ndim(value) == 0 and hasattr(value, "dtype") and np.issubdtype(np.asarray(value).dtype, np.integer)


def check_projection(owner: str, name: str, projection, length: int | None) -> tuple[int, ...]:
    """Return ``projection`` as a tuple of distinct integer positions in ``[0, length)``.

    ``length=None`` checks only that the positions are distinct non-negative integers.  Used by
    :func:`gof`, :func:`projected_law`, :class:`Counts` and the parsing of ``projections=`` of
    :func:`~arprob.verify.check`.
    """
    example = "(0, 2)" if length is None or length > 2 else "(0,)"
    if isinstance(projection, (str, bytes)) or not hasattr(projection, "__iter__"):
        raise ArprobTypeError(f"{owner}: {name} must be a tuple of positions such as {example}, got "
                              f"{_show(projection)}")
    items = tuple(projection)
    if not items:
        raise InvalidArgumentError(f"{owner}: {name} is empty; expected at least one position"
                                   + (f" in [0, {length})" if length is not None else "")
                                   + " (pass None to test the whole sequence)")
    for item in items:
        if not _is_integer(item):
            raise ArprobTypeError(f"{owner}: {name} = {projection!r} holds {_show(item)}; expected integer "
                                  f"positions such as {example}")
    positions = tuple(int(item) for item in items)
    upper = "" if length is None else f", {length})"
    for position in positions:
        if position < 0 or (length is not None and position >= length):
            raise InvalidArgumentError(
                f"{owner}: {name} = {positions} holds position {position}, expected positions in "
                + (f"[0{upper}" if length is not None else "[0, length)")
                + (" (negative positions do not count from the end)" if position < 0 else ""))
    if len(set(positions)) != len(positions):
        repeated = next(p for p in positions if positions.count(p) > 1)
        raise InvalidArgumentError(f"{owner}: {name} = {positions} repeats position {repeated}; expected "
                                   "distinct positions")
    return positions


def _law_array(owner: str, name: str, law) -> np.ndarray:
    """A law given as an array: real, non-empty, finite, non-negative and summing to one (float64).

    The sum is checked at the tolerance of the precision the law was computed in (1e-9 in float64,
    1e-5 in float32 or with jax_enable_x64 off), then divided out, so that the expected counts
    ``n p`` of a law computed in float32 add up to ``n`` as the observed counts do.
    """
    array = check_real_array(owner, name, law, finite=False)
    if array.size == 0:
        raise ShapeError(f"{owner}: {name} is empty (shape {array.shape}); expected probabilities over all "
                         "vocab_size**length sequences")
    check_probs(owner, name, array.ravel(), dtype=input_dtype(law))
    return array / array.sum()


def _power_matches(size: int, vocab_size: int, length: int) -> bool:
    """``vocab_size**length == size``, compared on logarithms first so that huge powers are never formed."""
    if vocab_size == 1:
        return size == 1
    if abs(length * math.log2(vocab_size) - math.log2(max(size, 1))) > 1e-6:
        return False
    return vocab_size**length == size


def _tokens(owner: str, samples) -> np.ndarray:
    """Samples given as tokens: a non-empty integer array of shape ``(num_samples, length)``."""
    if isinstance(samples, (str, bytes)) or samples is None:
        raise ArprobTypeError(f"{owner}: samples must be integer tokens of shape (num_samples, length) or a "
                              f"Counts, got {_show(samples)}")
    try:
        tokens = np.asarray(samples)
    except (TypeError, ValueError) as error:  # ragged lists
        raise ArprobTypeError(f"{owner}: samples must be integer tokens of shape (num_samples, length), got "
                              f"{_show(samples)} ({error})") from None
    if tokens.ndim != 2:
        raise ShapeError(f"{owner}: samples has shape {tokens.shape}, expected (num_samples, length) integer "
                         "tokens (one row per sample)")
    if not np.issubdtype(tokens.dtype, np.integer):
        if np.issubdtype(tokens.dtype, np.floating) and np.isnan(tokens).any():
            what = "NaN"
        else:
            what = f"dtype {tokens.dtype}"
        raise InvalidTokenError(f"{owner}: samples has {what}, expected integer token ids (cast with "
                                ".astype(int) once they are known to be whole token ids)")
    if tokens.shape[0] == 0:
        raise InvalidArgumentError(f"{owner}: samples is empty (shape {tokens.shape}); a goodness-of-fit test "
                                   "needs at least one sample")
    if tokens.shape[1] == 0:
        raise ShapeError(f"{owner}: samples has shape {tokens.shape}, sequences of length 0; expected "
                         "(num_samples, length) with length >= 1")
    return tokens


@dataclass(frozen=True)
class Counts:
    """Counts of samples over the cells of a projection (lexicographic cell order).

    ``counts`` is 1-d, of non-negative whole numbers, with ``vocab_size ** len(projection)`` cells
    (``vocab_size ** length`` for ``projection=None``).
    """

    counts: np.ndarray
    vocab_size: int
    projection: tuple[int, ...] | None = None

    def __post_init__(self):
        owner = "Counts"
        counts = check_real_array(owner, "counts", self.counts, dtype=np.asarray(self.counts).dtype
                                  if isinstance(self.counts, np.ndarray) else np.float64)
        if counts.dtype == np.bool_:
            raise ArprobTypeError(f"{owner}: counts has dtype bool, expected counts (whole numbers >= 0)")
        if counts.ndim != 1 or counts.size == 0:
            raise ShapeError(f"{owner}: counts has shape {counts.shape}, expected a non-empty 1-d array of "
                             "counts over the cells (flatten it in lexicographic order)")
        if np.any(counts < 0) or np.any(counts != np.floor(counts)):
            bad = counts[(counts < 0) | (counts != np.floor(counts))][0]
            raise InvalidArgumentError(f"{owner}: counts holds {bad:g}, expected whole numbers >= 0 (numbers "
                                       "of samples per cell)")
        vocab_size = check_int(owner, "vocab_size", self.vocab_size, minimum=1)
        projection = None if self.projection is None else check_projection(
            owner, "projection", self.projection, None)
        if projection is not None:
            if not _power_matches(counts.size, vocab_size, len(projection)):
                raise ShapeError(f"{owner}: counts has {counts.size} cells, but vocab_size={vocab_size} and "
                                 f"projection={projection} give {vocab_size}**{len(projection)} cells")
        else:
            length = round(math.log(counts.size) / math.log(vocab_size)) if vocab_size > 1 else 1
            if not _power_matches(counts.size, vocab_size, length):
                raise ShapeError(f"{owner}: counts has {counts.size} cells, which is not a power of "
                                 f"vocab_size={vocab_size}; expected vocab_size**length cells for the whole "
                                 "sequence (or pass projection=...)")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "vocab_size", vocab_size)
        object.__setattr__(self, "projection", projection)

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


def _projected(table: np.ndarray, vocab_size: int, length: int, projection: tuple[int, ...]) -> np.ndarray:
    table = table.reshape((vocab_size,) * length)
    others = tuple(axis for axis in range(length) if axis not in projection)
    marginal = table.sum(axis=others) if others else table
    kept = sorted(projection)
    marginal = np.transpose(marginal, [kept.index(p) for p in projection])
    return marginal.ravel()


def projected_law(law, vocab_size: int, length: int, projection) -> np.ndarray:
    """Exact law of the tokens at ``projection`` (a tuple of positions), lexicographic cells.

    ``law`` holds the probabilities of all ``vocab_size**length`` sequences (flat lexicographic, or
    shape ``(V,)*L``); the positions of ``projection`` are distinct, in ``[0, length)``.
    """
    owner = "projected_law"
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    length = check_int(owner, "length", length, minimum=1)
    table = _law_array(owner, "law", law)
    if not _power_matches(table.size, vocab_size, length):
        raise ShapeError(f"{owner}: law has {table.size} entries, but vocab_size={vocab_size} and length={length} "
                         f"give {vocab_size}**{length} sequences; pass the law over all vocab_size**length "
                         "sequences (or fix vocab_size / length)")
    projection = check_projection(owner, "projection", projection, length)
    return _projected(table, vocab_size, length, projection)


def _law_and_shape(owner: str, law, vocab_size, length):
    """The flat law, its vocab_size and length; ``length`` is the samples' (None for Counts of a whole sequence)."""
    if hasattr(law, "law") and callable(law.law) and hasattr(law, "vocab_size") and hasattr(law, "length"):
        model_vocab, model_length = int(law.vocab_size), int(law.length)
        if vocab_size is not None and vocab_size != model_vocab:
            raise ShapeError(f"{owner}: vocab_size={vocab_size} but the law (a model) has vocab_size={model_vocab}")
        if length is not None and length != model_length:
            raise ShapeError(f"{owner}: samples have length {length} but the law (a model) has length "
                             f"{model_length}; expected samples of shape (num_samples, {model_length})")
        flat = _law_array(owner, "law", law.law())
        return flat.ravel(), model_vocab, model_length
    array = _law_array(owner, "law", law)
    if vocab_size is None:
        if array.ndim > 1:
            vocab_size = array.shape[0]
        elif length:
            vocab_size = max(1, int(round(array.size ** (1.0 / length))))
        else:
            raise ShapeError(f"{owner}: law has shape {array.shape}; cannot tell vocab_size from a flat law "
                             "and Counts of the whole sequence; pass vocab_size=...")
    if array.ndim > 1 and array.shape != (vocab_size,) * array.ndim:
        raise ShapeError(f"{owner}: law has shape {array.shape}, expected (V,)*L = ({vocab_size},)*{array.ndim} "
                         "or a flat array over all V**L sequences")
    if length is None:
        length = round(math.log(array.size) / math.log(vocab_size)) if vocab_size > 1 else 1
    if not _power_matches(array.size, vocab_size, length):
        raise ShapeError(
            f"{owner}: law has {array.size} entries but samples of length {length} over vocab_size={vocab_size} "
            f"have {vocab_size}**{length} possible sequences; pass samples of shape (num_samples, L) and a law over "
            "all V**L sequences (vocab_size=... when it cannot be read from the law's shape)"
        )
    return array.ravel(), vocab_size, length


def gof(samples, law, *, projection=None, statistic: str = "auto", vocab_size: int | None = None,
        min_expected: float = MIN_EXPECTED) -> GofResult:
    """Test whether ``samples`` come from ``law`` (optionally on a projection).

    Parameters
    ----------
    samples
        Integer tokens of shape ``(num_samples, L)``, or a :class:`Counts`; at
        least one sample.
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
    owner = "gof"
    statistic = check_choice(owner, "statistic", statistic, ("auto",) + STATISTICS)
    statistic = "pearson" if statistic == "auto" else statistic
    min_expected = check_real(owner, "min_expected", min_expected, low=0.0, low_open=True,
                              fix="pass the smallest expected count per cell, e.g. 5")
    if vocab_size is not None:
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    if isinstance(samples, Counts):
        if vocab_size is not None and vocab_size != samples.vocab_size:
            raise ShapeError(f"{owner}: vocab_size={vocab_size} but samples (Counts) has vocab_size="
                             f"{samples.vocab_size}")
        if projection is not None:
            projection = check_projection(owner, "projection", projection, None)
            if samples.projection is not None and projection != samples.projection:
                raise InvalidArgumentError(f"{owner}: projection={projection} but samples (Counts) counts the "
                                           f"cells of projection {samples.projection}; pass one of them")
        if samples.num_samples == 0:
            raise InvalidArgumentError(f"{owner}: samples (Counts) holds 0 samples; a goodness-of-fit test needs "
                                       "at least one sample")
        counts = np.asarray(samples.counts, dtype=np.float64)
        projection = samples.projection if projection is None else projection
        flat_law, vocab_size, length = _law_and_shape(owner, law, samples.vocab_size, None)
        if projection is None and flat_law.size != counts.size:
            raise ShapeError(f"{owner}: samples (Counts) has {counts.size} cells but the law has "
                             f"{flat_law.size} sequences; expected counts over every sequence of the law")
        if projection is not None:
            projection = check_projection(owner, "projection", projection, length)
            if counts.size != vocab_size ** len(projection):
                raise ShapeError(f"{owner}: samples (Counts) has {counts.size} cells but projection={projection} "
                                 f"has {vocab_size}**{len(projection)}")
    else:
        tokens = _tokens(owner, samples)
        flat_law, vocab_size, length = _law_and_shape(owner, law, vocab_size, tokens.shape[1])
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab_size:
            raise InvalidTokenError(
                f"{owner}: samples contain token {low if low < 0 else high}, "
                f"expected tokens in [0, {vocab_size}) (vocab_size={vocab_size})"
            )
        projection = None if projection is None else check_projection(owner, "projection", projection, length)
        columns = tokens if projection is None else tokens[:, list(projection)]
        powers = vocab_size ** np.arange(columns.shape[1] - 1, -1, -1, dtype=np.int64)
        cells = vocab_size ** columns.shape[1]
        counts = np.bincount(columns.astype(np.int64) @ powers, minlength=cells).astype(np.float64)
    probs = flat_law if projection is None else _projected(flat_law, vocab_size, length, projection)
    if counts.size != probs.size:
        raise ShapeError(f"{owner}: {counts.size} count cells but the (projected) law has {probs.size}")
    value, df, p_value, method, zero_hits = _test_counts(counts, probs, statistic, min_expected)
    width = length if projection is None else len(projection)
    hits = [tuple(int(t) for t in decode_index(cell, vocab_size, width)) for cell in zero_hits[:20]]
    return GofResult(statistic, value, df, p_value, method, counts, counts.sum() * probs,
                     int(counts.sum()), None if projection is None else tuple(projection), hits)
