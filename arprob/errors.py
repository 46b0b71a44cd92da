"""Errors raised by arprob.

Every error the library raises on bad user input derives from
:class:`ArprobError`, and also from the matching built-in (``ValueError`` or
``TypeError``), so ``except ValueError`` keeps working in user code.  Messages
name the class or function, the argument, what was expected, what was given
and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ArprobError",
    "ArprobTypeError",
    "ArprobWarning",
    "EnumerationTooLargeError",
    "IncompatibleError",
    "InvalidArgumentError",
    "InvalidOrderError",
    "InvalidProbabilityError",
    "InvalidTokenError",
    "PrecisionWarning",
    "ShapeError",
    "ZeroProbabilityError",
]


class ArprobError(Exception):
    """Base class of every error arprob raises on bad input."""


class ArprobTypeError(ArprobError, TypeError):
    """An argument has the wrong type (for example, not a conditional family)."""


class InvalidProbabilityError(ArprobError, ValueError):
    """Probabilities that are negative, NaN/inf or do not sum to one."""


class ShapeError(ArprobError, ValueError):
    """An array has a shape other than the one the function needs."""


class InvalidTokenError(ArprobError, ValueError):
    """Tokens outside ``[0, vocab_size)``, or a mask token in clean data."""


class InvalidOrderError(ArprobError, ValueError):
    """A generation order that is not a permutation of ``range(length)``."""


class IncompatibleError(ArprobError, ValueError):
    """Two objects that must agree (vocabulary, length) do not."""


class EnumerationTooLargeError(ArprobError, ValueError):
    """An exact enumeration was refused because it would not fit the budget."""


class ZeroProbabilityError(ArprobError, ValueError):
    """A quantity was requested that conditions on a zero-probability event."""


class ArprobWarning(UserWarning):
    """Warnings arprob emits (the test suite turns them into errors)."""


class PrecisionWarning(ArprobWarning):
    """A computation that is exact in float64 runs in float32 (``jax_enable_x64`` is off)."""


class InvalidArgumentError(ArprobError, ValueError):
    """An argument outside its allowed range (a negative scale, alpha outside (0, 1), ...)."""
