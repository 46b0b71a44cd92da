"""Samplers: each a jit-compiled ``NAME(key, ..., num_samples, ...) -> (tokens, stats)``
beside its exact law ``NAME_law(...)`` (float64 over all ``V**L`` sequences)."""

from arprob.samplers.ancestral import AncestralStats, ancestral, ancestral_law

__all__ = ["AncestralStats", "ancestral", "ancestral_law"]
