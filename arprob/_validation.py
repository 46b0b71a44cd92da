"""Tracer-aware validation helpers used at the library's boundary.

Checks run on concrete values only: inside ``jit``/``vmap`` the arguments are
tracers and are passed through unchecked (numpyro's convention), so the checks
never force a device sync or break tracing.
"""

from __future__ import annotations

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


def check_enumeration(owner: str, vocab_size: int, length: int, *, factor: int = 1,
                      max_entries: int = 2**26, what: str = "the law") -> int:
    """Refuse an enumeration of ``factor * vocab_size**length`` entries over budget."""
    from arprob.errors import EnumerationTooLargeError

    size = vocab_size**length
    total = size * factor
    if total > max_entries:
        megabytes = total * 8 / 2**20
        raise EnumerationTooLargeError(
            f"{owner}: computing {what} needs {total:,} float64 entries "
            f"({vocab_size}**{length}" + (f" x {factor}" if factor > 1 else "")
            + f", about {megabytes:,.0f} MiB), over the budget of max_entries={max_entries:,}; "
            "use a smaller vocabulary or length, raise max_entries if memory allows, "
            "or verify on projections (arprob.verify.check does this automatically)"
        )
    return size
