"""Tracer-aware validation helpers used at the library's boundary.

Checks run on concrete values only: inside ``jit``/``vmap`` the arguments are
tracers and are passed through unchecked (numpyro's convention), so the checks
never force a device sync or break tracing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from arprob.errors import (
    ArprobTypeError,
    InvalidArgumentError,
    InvalidOrderError,
    InvalidProbabilityError,
    InvalidTokenError,
    ShapeError,
)

# Relative tolerance on "sums to one" for float64 and float32 inputs.
_SUM_TOLERANCE = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-5}


def is_concrete(*values) -> bool:
    """True when none of ``values`` (nor their leaves) is a JAX tracer."""
    leaves = jax.tree_util.tree_leaves(values)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def _describe(values: np.ndarray, limit: int = 4) -> str:
    flat = np.asarray(values).ravel()
    shown = ", ".join(f"{v:.6g}" for v in flat[:limit])
    return shown + (", ..." if flat.size > limit else "")


def check_probs(owner: str, name: str, probs, num_axes: int = 1) -> None:
    """Check that ``probs`` is finite, non-negative and sums to one.

    The sum is taken over the trailing ``num_axes`` axes.  Skipped for tracers.
    """
    if not is_concrete(probs):
        return
    array = np.asarray(probs)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)]
        raise InvalidProbabilityError(
            f"{owner}: {name} contains {bad.size} non-finite value(s) ({_describe(bad)}); "
            "expected finite probabilities in [0, 1] (check the computation that produced them)"
        )
    if np.any(array < 0):
        bad = array[array < 0]
        raise InvalidProbabilityError(
            f"{owner}: {name} contains {bad.size} negative value(s) ({_describe(bad)}); "
            "expected probabilities in [0, 1] (pass logits=... for unnormalized log-weights)"
        )
    axes = tuple(range(array.ndim - num_axes, array.ndim))
    sums = array.sum(axis=axes, dtype=np.float64)
    tolerance = _SUM_TOLERANCE.get(array.dtype, 1e-5)
    worst = np.max(np.abs(sums - 1.0)) if sums.size else 0.0
    if worst > tolerance:
        offender = np.ravel(sums)[np.argmax(np.abs(np.ravel(sums) - 1.0))]
        where = "along the last axis" if num_axes == 1 else f"over the last {num_axes} axes"
        raise InvalidProbabilityError(
            f"{owner}: {name} sums to {offender:.6g} {where}, expected 1 "
            f"(off by {offender - 1.0:+.3g}; normalize it, or pass logits=... instead)"
        )


def check_logits(owner: str, name: str, logits, num_axes: int = 1) -> None:
    """Check that logits have no NaN / +inf and that no row is entirely -inf."""
    if not is_concrete(logits):
        return
    array = np.asarray(logits, dtype=np.float64)
    if np.any(np.isnan(array)) or np.any(array == np.inf):
        raise InvalidProbabilityError(
            f"{owner}: {name} contains NaN or +inf; expected real log-weights "
            "(-inf is allowed for impossible outcomes)"
        )
    axes = tuple(range(array.ndim - num_axes, array.ndim))
    if array.size and np.any(np.all(array == -np.inf, axis=axes)):
        raise InvalidProbabilityError(
            f"{owner}: {name} has a distribution whose every log-weight is -inf; "
            "expected at least one finite entry per distribution"
        )


def check_shape(owner: str, name: str, array, expected: Sequence[int | None]) -> None:
    """Check the trailing dimensions of ``array`` against ``expected`` (None = any)."""
    shape = tuple(np.shape(array))
    expected = tuple(expected)
    ok = len(shape) >= len(expected) and all(
        e is None or s == e for s, e in zip(shape[len(shape) - len(expected) :], expected)
    )
    if not ok:
        pretty = "(..., " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise ShapeError(f"{owner}: {name} has shape {shape}, expected {pretty}")


def check_tokens(owner: str, name: str, tokens, vocab_size: int, *, observed=None) -> None:
    """Check integer tokens in ``[0, vocab_size)``.

    Where ``observed`` is given, unobserved positions may hold any value in
    ``[0, vocab_size]`` (``vocab_size`` is the mask token id).
    """
    if not is_concrete(tokens, observed):
        return
    array = np.asarray(tokens)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InvalidTokenError(
            f"{owner}: {name} has dtype {array.dtype}, expected integer token ids "
            f"in [0, {vocab_size})"
        )
    if observed is None:
        relevant = array
    else:
        mask = np.broadcast_to(np.asarray(observed, dtype=bool), np.broadcast_shapes(array.shape, np.shape(observed)))
        values = np.broadcast_to(array, mask.shape)
        unobserved = values[~mask]
        if unobserved.size and (unobserved.min() < 0 or unobserved.max() > vocab_size):
            raise InvalidTokenError(
                f"{owner}: {name} holds {int(unobserved.min()) if unobserved.min() < 0 else int(unobserved.max())} "
                f"at an unobserved position; expected a token in [0, {vocab_size}] "
                f"({vocab_size} is the mask token)"
            )
        relevant = values[mask]
    if relevant.size == 0:
        return
    low, high = int(relevant.min()), int(relevant.max())
    if low < 0 or high >= vocab_size:
        offending = low if low < 0 else high
        if offending == vocab_size:
            raise InvalidTokenError(
                f"{owner}: {name} contains the mask token {vocab_size} in clean data; "
                f"expected tokens in [0, {vocab_size}) (mark unknown positions with observed=False "
                "and use marginal_log_prob)"
            )
        raise InvalidTokenError(
            f"{owner}: {name} contains token {offending}, expected tokens in [0, {vocab_size})"
        )


def check_mask(owner: str, name: str, observed, length: int) -> None:
    """Check a boolean mask whose last dimension is ``length``."""
    check_shape(owner, name, observed, (length,))
    if not is_concrete(observed):
        return
    dtype = np.asarray(observed).dtype
    if dtype != np.bool_:
        raise ShapeError(
            f"{owner}: {name} has dtype {dtype}, expected a bool mask of shape (..., {length}) "
            "(True = observed)"
        )


def check_order(owner: str, order, length: int) -> None:
    """Check that ``order`` is a permutation of ``range(length)`` (last axis)."""
    if not is_concrete(order):
        return
    array = np.asarray(order)
    if array.ndim < 1 or array.shape[-1] != length:
        raise InvalidOrderError(
            f"{owner}: order has shape {array.shape}, expected (..., {length}): "
            f"a permutation of range({length})"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidOrderError(f"{owner}: order has dtype {array.dtype}, expected integers")
    rows = array.reshape(-1, length)
    reference = np.arange(length)
    for row in rows:
        if not np.array_equal(np.sort(row), reference):
            raise InvalidOrderError(
                f"{owner}: order {row.tolist()} is not a permutation of range({length}) "
                "(every position must appear exactly once)"
            )


def check_positive_int(owner: str, name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArprobTypeError(f"{owner}: {name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise InvalidArgumentError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _format_size(log2_entries: float, entries: int | None, itemsize: int) -> str:
    """``'1,234 entries (9.6 KiB as float64)'``, or powers of ten when the count is astronomically large."""
    if entries is None:
        log10 = log2_entries * math.log10(2.0)
        return f"about 10^{log10:.1f} entries (about 10^{log10 + math.log10(itemsize):.1f} bytes)"
    size = float(entries) * itemsize
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    return f"{entries:,} entries ({size:,.1f} {unit} at {itemsize} bytes each)"


def _exact_product(factors: Sequence[int], log2_total: float) -> int | None:
    """The exact product when it has at most ~128 bits (cheap), else None (never forms huge integers)."""
    if log2_total > 128:
        return None
    total = 1
    for factor in factors:
        total *= int(factor)
    return total


def _log2_product(factors: Sequence[int]) -> float:
    return float(sum(math.log2(int(f)) if int(f) > 0 else -math.inf for f in factors))


#: Largest parameter table, in entries, that a model constructor or ``random`` accepts
#: (``2**28`` entries: 1 GiB in float32, 2 GiB in float64, plus 8 bytes per entry of
#: sampling thresholds).  Checked from the shapes before anything is allocated.
MAX_TABLE_ENTRIES = 2**28


def check_table_size(owner: str, what: str, factors: Sequence[int], *, fix: str,
                     max_entries: int | None = None, itemsize: int = 8) -> None:
    """Refuse a table of ``prod(factors)`` entries over ``max_entries`` (default :data:`MAX_TABLE_ENTRIES`).

    Compares logarithms, so it never forms a huge integer and never allocates.
    """
    from arprob.errors import EnumerationTooLargeError

    limit = MAX_TABLE_ENTRIES if max_entries is None else int(max_entries)
    log2_total = _log2_product(factors)
    if log2_total <= math.log2(limit) - 1e-9:
        return
    total = _exact_product(factors, log2_total)
    if total is not None and total <= limit:
        return
    groups = []  # runs of equal factors as powers: (V+1)**K x V reads 51**4 x 50
    for factor in (int(f) for f in factors):
        if groups and groups[-1][0] == factor:
            groups[-1][1] += 1
        else:
            groups.append([factor, 1])
    shape = " x ".join(str(f) if n == 1 else f"{f}**{n}" for f, n in groups)
    raise EnumerationTooLargeError(
        f"{owner}: {what} would hold {shape} = {_format_size(log2_total, total, itemsize)}, over the limit of "
        f"{limit:,} entries (arprob._validation.MAX_TABLE_ENTRIES = 2**{int(math.log2(MAX_TABLE_ENTRIES))}); "
        f"{fix}"
    )


def check_enumeration(owner: str, vocab_size: int, length: int, *, factor: int = 1,
                      max_entries: int = 2**26, what: str = "the law") -> int:
    """Refuse an enumeration of ``factor * vocab_size**length`` entries over budget; return ``vocab_size**length``.

    The comparison is on logarithms: ``vocab_size**length`` is formed only once it is known to fit.
    """
    from arprob.errors import EnumerationTooLargeError

    log2_total = length * math.log2(vocab_size) + math.log2(max(factor, 1)) if vocab_size > 0 else 0.0
    if vocab_size <= 1 or log2_total <= math.log2(max_entries) - 1e-9:
        return vocab_size**length
    total = max(factor, 1) * vocab_size**length if log2_total <= 128 else None
    if total is not None and total <= max_entries:
        return vocab_size**length
    size = _format_size(log2_total, total, 8)
    raise EnumerationTooLargeError(
        f"{owner}: computing {what} needs {size} in float64 "
        f"({vocab_size}**{length}" + (f" x {factor}" if factor > 1 else "")
        + f"), over the budget of max_entries={max_entries:,}; "
        "use a smaller vocabulary or length, raise max_entries if memory allows, "
        "or verify on projections (arprob.verify.check does this automatically)"
    )
