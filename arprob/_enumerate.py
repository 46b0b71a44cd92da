"""Lexicographic enumeration of all sequences in ``[0, V)^L``.

Index ``k`` of a law corresponds to the sequence whose base-``V`` digits,
most significant first, are ``k``; i.e. ``x[0]`` varies slowest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import check_enumeration


def all_sequences(vocab_size: int, length: int, *, max_entries: int = 2**26,
                  owner: str = "all_sequences") -> np.ndarray:
    """All ``vocab_size**length`` sequences in lexicographic order, shape ``(V**L, L)``."""
    size = check_enumeration(owner, vocab_size, length, factor=max(length, 1),
                             max_entries=max_entries, what="all sequences")
    index = np.arange(size, dtype=np.int64)
    powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return ((index[:, None] // powers[None, :]) % vocab_size).astype(np.int32)


def sequence_index(tokens, vocab_size: int):
    """Lexicographic index of each sequence (last axis), as int64 in numpy or jnp."""
    length = tokens.shape[-1]
    if isinstance(tokens, np.ndarray):
        powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
        return (tokens.astype(np.int64) * powers).sum(axis=-1)
    dtype = jax.dtypes.canonicalize_dtype(jnp.int64)  # int32 when x64 is off, without a warning
    powers = jnp.asarray(vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64), dtype)
    return (tokens.astype(dtype) * powers).sum(axis=-1)


def decode_index(index, vocab_size: int, length: int) -> np.ndarray:
    """Inverse of :func:`sequence_index` (numpy)."""
    index = np.asarray(index, dtype=np.int64)
    powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return ((index[..., None] // powers) % vocab_size).astype(np.int32)
