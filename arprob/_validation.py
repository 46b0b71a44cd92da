"""Tracer-aware validation helpers used at the library's boundary.

Checks run on concrete values only: inside ``jit``/``vmap`` the arguments are
tracers and are passed through unchecked (numpyro's convention), so the checks
never force a device sync or break tracing.
"""

from __future__ import annotations

import math
import os
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

# Tolerance on |sum - 1| of a distribution held in float64 or float32.  float32 rounds each
# probability to within 6e-8 of its value; a law over V**L sequences built from float32 parameters
# and conditionals (a product of L factors, each a softmax) carries up to a few dozen such
# roundings, 1e-6 in practice, so 1e-5 accepts rounding and refuses a law that is really off.
_SUM_TOLERANCE = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-5}


def x64_enabled() -> bool:
    """True when JAX creates float64 arrays (``jax_enable_x64`` on, globally or in a context)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.dtype(np.float64)


def input_dtype(value):
    """The dtype ``value`` arrives in (before any conversion to float64), or None for lists and scalars."""
    dtype = getattr(value, "dtype", None)
    try:
        return None if dtype is None else np.dtype(dtype)
    except TypeError:  # typed PRNG keys and other non-numeric dtypes
        return None


def sum_tolerance(dtype=None) -> float:
    """Tolerance on ``|sum - 1|`` for probabilities computed in ``dtype`` (None: float64).

    1e-9 for float64 and 1e-5 for float32 (:data:`_SUM_TOLERANCE`).  With ``jax_enable_x64``
    off, JAX computes in float32 and every float64 array a law function returns was computed from
    float32 values, so float64 gets float32's tolerance too.  Dtypes coarser than float32
    (float16, bfloat16) get eight of their machine epsilons.
    """
    dtype = np.dtype(np.float64) if dtype is None else np.dtype(dtype)
    if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        dtype = np.dtype(np.float64)  # integer or boolean probabilities (one-hot laws) are exact
    epsilon = float(jax.numpy.finfo(dtype).eps)
    if epsilon <= np.finfo(np.float64).eps:
        return _SUM_TOLERANCE[np.dtype("float64")] if x64_enabled() else _SUM_TOLERANCE[np.dtype("float32")]
    return max(_SUM_TOLERANCE[np.dtype("float32")], 8 * epsilon)


def format_sum(total: float) -> str:
    """``total`` with enough significant digits to show how far it is from 1.

    Six significant digits when the gap is 1e-4 or more (``0.8``, ``1.3``), else three digits of the
    gap (``0.99999999844``, ``1.0000000218``; never the self-contradicting ``sums to 1``).
    """
    total = float(total)
    gap = abs(total - 1.0)
    if not math.isfinite(total) or gap == 0.0:
        return f"{total:.6g}"
    # the gap's first digit is decimal place ceil(-log10(gap)); a total >= 1 spends one more on its "1."
    digits = max(6, math.ceil(-math.log10(gap)) + 2 + (total >= 1.0))
    return f"{total:.{min(digits, 17)}g}"


def is_concrete(*values) -> bool:
    """True when none of ``values`` (nor their leaves) is a JAX tracer."""
    leaves = jax.tree_util.tree_leaves(values)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def _describe(values: np.ndarray, limit: int = 4) -> str:
    flat = np.asarray(values).ravel()
    shown = ", ".join(f"{v:.6g}" for v in flat[:limit])
    return shown + (", ..." if flat.size > limit else "")


def check_probs(owner: str, name: str, probs, num_axes: int = 1, *, dtype=None) -> None:
    """Check that ``probs`` is finite, non-negative and sums to one.

    The sum is taken over the trailing ``num_axes`` axes, in float64, and compared with 1 at
    :func:`sum_tolerance` of ``dtype``: the precision the values were computed in, when ``probs``
    has already been converted (default: the dtype of ``probs``).  Skipped for tracers.
    """
    if not is_concrete(probs):
        return
    if dtype is None:
        dtype = input_dtype(probs)
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
    tolerance = sum_tolerance(dtype)
    worst = np.max(np.abs(sums - 1.0)) if sums.size else 0.0
    if worst > tolerance:
        offender = np.ravel(sums)[np.argmax(np.abs(np.ravel(sums) - 1.0))]
        where = "along the last axis" if num_axes == 1 else f"over the last {num_axes} axes"
        if tolerance > _SUM_TOLERANCE[np.dtype("float64")]:
            precision = " (float32's rounding" + ("; jax_enable_x64 is off" if not x64_enabled() else "") + ")"
        else:
            precision = ""
        hint = ""
        if worst < 1e-4:  # close to one: rounding in a lower precision, not a wrong law
            hint = ("; a law computed from float32 values is off by up to about 1e-6: "
                    + ("build it from float64 values" if tolerance < 1e-6 else
                       "enable float64 with jax.config.update('jax_enable_x64', True) before creating arrays"))
        raise InvalidProbabilityError(
            f"{owner}: {name} sums to {format_sum(offender)} {where}, expected 1 within {tolerance:.0e}"
            f"{precision} (off by {offender - 1.0:+.3g}; normalize it, or pass logits=... instead{hint})"
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
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidTokenError(
            f"{owner}: {name} has dtype {array.dtype}, expected integer token ids "
            f"in [0, {vocab_size})" + (" (convert with .astype(int) if the booleans are tokens 0 and 1)"
                                       if array.dtype == bool else "")
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

    limit = MAX_TABLE_ENTRIES if max_entries is None else check_int(owner, "max_entries", max_entries, minimum=1)
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

    max_entries = check_int(owner, "max_entries", max_entries, minimum=1)
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


# -- arguments of every public entry point --------------------------------------------------
#
# The helpers below are the one validation layer behind arprob's public functions.  Each names
# the function (``owner``), the argument, what was expected, what was given and how to fix it.
# Tracers pass unchecked where a check needs values; checks on shapes and dtypes also run on
# tracers, since those are known while tracing.


def _show(value, limit: int = 60) -> str:
    """A short description of a user's value for an error message."""
    if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(np.shape(value))} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def check_key(owner: str, key, name: str = "key"):
    """Check a single PRNG key: a typed key of shape ``()`` or a legacy ``uint32`` key of shape ``(2,)``.

    Returns the key unchanged.  Batched keys, integers, floats and other arrays are refused with
    the fix (``jax.random.key(seed)``; ``jax.random.split`` for several draws).
    """
    fix = "pass jax.random.key(seed) (or the legacy jax.random.PRNGKey(seed))"
    if not hasattr(key, "dtype") or not hasattr(key, "shape") or isinstance(key, (bool, int, float, np.generic)):
        raise ArprobTypeError(f"{owner}: {name} must be a PRNG key, got {_show(key)}; {fix}")
    shape = tuple(key.shape)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ShapeError(
                f"{owner}: {name} is a batch of keys of shape {shape}, expected one key of shape (); "
                "pass a single key (the function splits it itself), or map over the batch with jax.vmap"
            )
        return key
    if np.dtype(key.dtype) == np.uint32:
        if shape == (2,):
            return key
        if len(shape) >= 2 and shape[-1] == 2:
            raise ShapeError(
                f"{owner}: {name} is a batch of {int(np.prod(shape[:-1]))} legacy keys of shape {shape}, "
                "expected one key of shape (2,); pass a single key (the function splits it itself), "
                "or map over the batch with jax.vmap"
            )
    raise ArprobTypeError(f"{owner}: {name} must be a PRNG key, got {_show(key)}; {fix}")


def check_int(owner: str, name: str, value, minimum: int | None = None, maximum: int | None = None,
              *, fix: str = "") -> int:
    """Return ``value`` as an int, or raise if it is not an integer in ``[minimum, maximum]``.

    Python and NumPy integers (and 0-d integer arrays) are accepted; ``bool``, floats (even
    ``3.0``) and strings are refused, so a mistyped argument never rounds silently.
    """
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0 and is_concrete(value) \
            and np.issubdtype(np.asarray(value).dtype, np.integer):
        value = int(np.asarray(value))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        hint = f" (use {int(value)})" if isinstance(value, (float, np.floating)) and float(value).is_integer() else ""
        raise ArprobTypeError(f"{owner}: {name} must be an int, got {_show(value)}{hint}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(
            f"{owner}: {name} must be >= {minimum}, got {value}" + (f"; {fix}" if fix else ""))
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(
            f"{owner}: {name} must be <= {maximum:,}, got {value:,}" + (f"; {fix}" if fix else ""))
    return value


def check_real(owner: str, name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, allow_inf: bool = False,
               fix: str = "") -> float:
    """Return ``value`` as a float, or raise if it is not a real number in the stated interval.

    NaN is always refused; ``±inf`` only passes with ``allow_inf``.  Tracers pass unchecked
    (returned as they are).
    """
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
        value = np.asarray(value)[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArprobTypeError(f"{owner}: {name} must be a real number, got {_show(value)}")
    number = float(value)
    if low is not None and high is not None:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        interval = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        interval = f"{'<' if high_open else '<='} {high:g}"
    else:
        interval = ""
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise InvalidArgumentError(f"{owner}: {name} must be a finite real number {interval}, got {number}".replace(
            "  ", " ").replace(" ,", ",") + (f"; {fix}" if fix else ""))
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and (number >= high if high_open else number > high)
    if bad_low or bad_high:
        raise InvalidArgumentError(f"{owner}: {name} must be {interval}, got {number!r}"
                                   + (f"; {fix}" if fix else ""))
    return number


def check_choice(owner: str, name: str, value, choices: Sequence) -> object:
    """Raise unless ``value`` is one of ``choices`` (compared with ``==``, strings case-sensitive)."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
        if value is None and choice is None:
            return value
    listed = ", ".join(repr(c) for c in choices)
    raise InvalidArgumentError(f"{owner}: {name} must be one of {listed}; got {_show(value)}")


def check_bool(owner: str, name: str, value) -> bool:
    """Return ``value`` as a bool, refusing strings, numbers other than 0/1 and None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArprobTypeError(f"{owner}: {name} must be True or False, got {_show(value)}")


def check_sample_shape(owner: str, sample_shape, name: str = "sample_shape") -> tuple[int, ...]:
    """Return ``sample_shape`` as a tuple of non-negative ints (an int is read as ``(n,)``)."""
    if isinstance(sample_shape, (int, np.integer)) and not isinstance(sample_shape, (bool, np.bool_)):
        sample_shape = (sample_shape,)
    if not isinstance(sample_shape, (tuple, list)):
        raise ArprobTypeError(f"{owner}: {name} must be a tuple of ints such as (1000,), got {_show(sample_shape)}")
    return tuple(check_int(owner, f"{name}[{i}]", d, minimum=0) for i, d in enumerate(sample_shape))


def _physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


#: Largest working memory, in bytes, that one call may plan to allocate: half the machine's
#: physical memory, at most 64 GiB.  Checked from the arguments before anything is allocated.
MAX_WORKING_BYTES = min(_physical_memory_bytes() // 2, 64 * 2**30)


def _format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024 or unit == "EiB":
            break
        size /= 1024
    if size >= 1e6:
        return f"10^{math.log10(size):.1f} {unit}"
    return f"{size:,.1f} {unit}"


def check_memory(owner: str, what: str, factors: Sequence[float], *, itemsize: int = 4, fix: str,
                 limit: int | None = None) -> None:
    """Refuse a call whose working memory ``prod(factors) * itemsize`` bytes exceeds the limit.

    ``limit`` defaults to :data:`MAX_WORKING_BYTES`.  Compares logarithms, so astronomically large
    arguments never form huge integers.
    """
    from arprob.errors import EnumerationTooLargeError

    limit = MAX_WORKING_BYTES if limit is None else int(limit)
    if any(float(f) <= 0 for f in factors):
        return
    log2_bytes = sum(math.log2(float(f)) for f in factors) + math.log2(itemsize)
    if log2_bytes <= math.log2(limit):
        return
    size = _format_bytes(2.0**log2_bytes) if log2_bytes < 1000 else f"2^{log2_bytes:.0f} B"
    raise EnumerationTooLargeError(
        f"{owner}: {what} would need about {size}, over the limit of {_format_bytes(limit)} "
        f"(arprob._validation.MAX_WORKING_BYTES, half this machine's memory); {fix}"
    )


def check_work(owner: str, what: str, operations: float, *, limit: float = 1e13, fix: str) -> None:
    """Refuse a computation of about ``operations`` elementary steps over ``limit`` (hours of work)."""
    from arprob.errors import EnumerationTooLargeError

    if operations > limit:
        raise EnumerationTooLargeError(
            f"{owner}: {what} would take about 10^{math.log10(operations):.1f} steps, over the limit of "
            f"10^{math.log10(limit):.0f}; {fix}"
        )


def check_real_array(owner: str, name: str, value, *, finite: bool = True, allow_neg_inf: bool = False,
                     allow_nan: bool = False, dtype=np.float64) -> np.ndarray:
    """Convert ``value`` to a real NumPy array, refusing strings, objects and non-finite entries.

    ``allow_neg_inf`` lets ``-inf`` through (log-probabilities of impossible outcomes);
    ``allow_nan`` lets NaN through (documented as missing data).
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise ArprobTypeError(f"{owner}: {name} must be an array of real numbers, got {_show(value)}")
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise ArprobTypeError(
            f"{owner}: {name} must be an array of real numbers, got {_show(value)} ({error})") from None
    if array.dtype != object and jax.numpy.issubdtype(array.dtype, jax.numpy.floating) \
            and not np.issubdtype(array.dtype, np.number):  # bfloat16 / float16 of ml_dtypes
        array = array.astype(np.float64)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ArprobTypeError(f"{owner}: {name} must be an array of real numbers, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise ArprobTypeError(f"{owner}: {name} must be real, got complex dtype {array.dtype}")
    array = array.astype(dtype, copy=False)
    if finite:
        bad = np.isnan(array) if not allow_nan else np.zeros(array.shape, bool)
        bad |= array == np.inf
        if not allow_neg_inf:
            bad |= array == -np.inf
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            allowed = " (-inf is allowed: an impossible outcome)" if allow_neg_inf else ""
            nan_note = " (NaN marks missing data here)" if allow_nan else ""
            raise InvalidArgumentError(
                f"{owner}: {name} has {int(bad.sum())} non-finite value(s), the first {array[where]} at index "
                f"{where}; expected finite values{allowed}{nan_note}"
            )
    return array


def check_draw(owner: str, key, num_samples, length: int, vocab_size: int, *, per_sample: float = 1.0,
               name: str = "num_samples", per_sample_name: str = ""):
    """Validate ``key`` and ``num_samples`` of a sampler and refuse a draw that cannot fit in memory.

    The estimate is the sampler's largest live array: ``num_samples x length x (vocab_size + 1)``
    32-bit entries (one network answer per position) times ``per_sample`` (drafts, orders ...).
    Returns ``(key, num_samples)``.
    """
    key = check_key(owner, key)
    num_samples = check_int(owner, name, num_samples, minimum=1)
    what = f"drawing {name}={num_samples:,} sequences at once" + (
        f" with {per_sample_name}={int(per_sample):,}" if per_sample_name else "")
    check_memory(owner, what, (num_samples, length, vocab_size + 1, per_sample),
                 fix="draw in batches (one call per jax.random.split key), or use "
                     "arprob.samplers.sample_sharded or arprob.verify.check, which stream in batches")
    return key, num_samples


def check_count_at_most(owner: str, name: str, value, maximum: int, why: str) -> int:
    """An int in ``[1, maximum]``; ``why`` explains the upper limit in the message."""
    return check_int(owner, name, value, minimum=1, maximum=maximum, fix=why)


def check_within_length(owner: str, name: str, value, length: int) -> int:
    """An int >= 1, returned as ``min(value, length)``: a draft, block or reveal size longer than the
    sequence acts as the whole sequence (the sequence ends first), so it is clamped, never allocated."""
    return min(check_int(owner, name, value, minimum=1), length)


def refuses_nan_output(function):
    """Decorate an exact-law or cost function: a NaN in its result is raised, never returned.

    The families a law is computed from are checked when they arrive (``as_conditionals``), but a
    family that is not tabulated is probed on one input only; a NaN it answers elsewhere reaches the
    enumeration.  The error names the function and points at :func:`arprob.conditionals.tabulate`,
    which checks every input and names the first bad context.
    """
    import functools

    from arprob.errors import InvalidProbabilityError

    @functools.wraps(function)
    def checked(*args, **kwargs):
        result = function(*args, **kwargs)
        for leaf in jax.tree_util.tree_leaves(tuple(result) if isinstance(result, tuple) else result):
            if isinstance(leaf, (float, np.floating, np.ndarray)) and np.any(np.isnan(leaf)):
                raise InvalidProbabilityError(
                    f"{function.__name__}: the result came out NaN because a conditional family answered NaN on "
                    "some input (families that are not tabulated are only probed on the all-masked input); "
                    "call arprob.conditionals.tabulate(family) to find the context and position, and fix the family"
                )
        return result

    return checked
