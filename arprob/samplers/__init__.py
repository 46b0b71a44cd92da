"""Samplers: each a jit-compiled ``NAME(key, ..., num_samples, ...) -> (tokens, stats)``
beside its exact law ``NAME_law(...)`` (float64 over all ``V**L`` sequences)."""

from arprob.samplers.ancestral import AncestralStats, ancestral, ancestral_law
from arprob.samplers.masked import (
    FirstHittingStats,
    MaskedStats,
    first_hitting,
    first_hitting_law,
    masked_euler,
    masked_euler_law,
    parallel_unmask,
    parallel_unmask_law,
)

__all__ = [
    "AncestralStats",
    "FirstHittingStats",
    "MaskedStats",
    "ancestral",
    "ancestral_law",
    "first_hitting",
    "first_hitting_law",
    "masked_euler",
    "masked_euler_law",
    "parallel_unmask",
    "parallel_unmask_law",
]
