"""Sampler wrappers for :func:`arprob.verify.check`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from arprob._random import categorical
from arprob._validation import check_probs
from arprob.errors import InvalidArgumentError

__all__ = ["Sampler", "from_law"]


@dataclass(frozen=True)
class Sampler:
    """A sampling function ``fn(key, num_samples)`` with an optional exact law.

    ``fn`` returns tokens ``(num_samples, L)`` or ``(tokens, stats)``.  When
    ``law`` (an array over all ``V**L`` sequences, or a zero-argument callable
    returning one) is given, :func:`~arprob.verify.check` reports the exact
    TV distance to the target next to the statistical verdict.
    """

    fn: Callable[..., Any]
    law: Any = None
    name: str = "sampler"

    def __call__(self, key, num_samples: int):
        return self.fn(key, num_samples)


def from_law(law, vocab_size: int, length: int, *, name: str = "from_law") -> Sampler:
    """A sampler that draws i.i.d. sequences from an explicit law (lexicographic order).

    Used to build deliberately biased samplers for power studies, and mutants.
    """
    law = np.asarray(law, dtype=np.float64).ravel()
    check_probs("from_law", "law", law)
    if law.size != vocab_size**length:
        raise InvalidArgumentError(f"from_law: law has {law.size} entries, expected vocab_size**length = "
                         f"{vocab_size**length}")
    with np.errstate(divide="ignore"):
        logits = jnp.asarray(np.log(law))
    powers = jnp.asarray(vocab_size ** np.arange(length - 1, -1, -1))

    def fn(key, num_samples: int):
        index = categorical(key, logits, shape=(num_samples,))
        return ((index[:, None] // powers) % vocab_size).astype(jnp.int32)

    return Sampler(jax.jit(fn, static_argnums=1), law, name)
