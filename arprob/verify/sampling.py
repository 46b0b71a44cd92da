"""Sampler wrappers for :func:`arprob.verify.check`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from arprob._random import categorical
from arprob._validation import _show, check_int, check_key, check_memory, check_probs, check_real_array, input_dtype
from arprob.errors import ArprobTypeError, ShapeError
from arprob.verify.gof import _power_matches

__all__ = ["Sampler", "from_law"]


def _check_law(owner: str, law) -> np.ndarray:
    # the sum is held to the tolerance of the precision the law was computed in: 1e-9 in float64,
    # 1e-5 in float32 or with jax_enable_x64 off (arprob._validation.sum_tolerance)
    array = check_real_array(owner, "law", law, finite=False)
    if array.size == 0:
        raise ShapeError(f"{owner}: law is empty (shape {array.shape}); expected probabilities over all "
                         "vocab_size**length sequences")
    check_probs(owner, "law", array.ravel(), dtype=input_dtype(law))
    return array


@dataclass(frozen=True)
class Sampler:
    """A sampling function ``fn(key, num_samples)`` with an optional exact law.

    ``fn`` returns tokens ``(num_samples, L)`` or ``(tokens, stats)``.  When
    ``law`` (an array over all ``V**L`` sequences, or a zero-argument callable
    returning one) is given, :func:`~arprob.verify.check` reports the exact
    TV distance to the target next to the statistical verdict.  A ``law`` given
    as an array is checked here (finite, non-negative, summing to one).
    ``jax=True`` says ``fn`` is a JAX function (``check`` then runs a fixed-n
    test by default, compiled with the counting); ``False`` or ``None`` (not
    known) make ``check`` sequential by default.
    """

    fn: Callable[..., Any]
    law: Any = None
    name: str = "sampler"
    jax: bool | None = None

    def __post_init__(self):
        owner = "Sampler"
        if not callable(self.fn):
            raise ArprobTypeError(f"{owner}: fn must be callable as fn(key, num_samples), got {_show(self.fn)}")
        if self.jax is not None and not isinstance(self.jax, bool):
            raise ArprobTypeError(f"{owner}: jax must be True, False or None, got {_show(self.jax)}")
        if not isinstance(self.name, str):
            raise ArprobTypeError(f"{owner}: name must be a string, got {_show(self.name)}")
        if self.law is not None and not callable(self.law):
            _check_law(owner, self.law)

    def __call__(self, key, num_samples: int):
        owner = f"Sampler {self.name!r}"
        check_key(owner, key)
        num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
        return self.fn(key, num_samples)


def from_law(law, vocab_size: int, length: int, *, name: str = "from_law") -> Sampler:
    """A sampler that draws i.i.d. sequences from an explicit law (lexicographic order).

    Used to build deliberately biased samplers for power studies, and mutants.  ``law`` holds
    the probabilities of all ``vocab_size**length`` sequences.
    """
    owner = "from_law"
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    length = check_int(owner, "length", length, minimum=1)
    if not isinstance(name, str):
        raise ArprobTypeError(f"{owner}: name must be a string, got {_show(name)}")
    law = np.asarray(_check_law(owner, law), np.float64).ravel()
    law = law / law.sum()  # a float32 law sums to one only within float32's rounding
    if not _power_matches(law.size, vocab_size, length):
        raise ShapeError(f"{owner}: law has {law.size} entries, but vocab_size={vocab_size} and length={length} give "
                         f"{vocab_size}**{length} sequences; pass the law over all vocab_size**length sequences")
    with np.errstate(divide="ignore"):
        logits = jnp.asarray(np.log(law))
    powers = jnp.asarray(vocab_size ** np.arange(length - 1, -1, -1))
    draw = jax.jit(lambda key, num_samples: ((categorical(key, logits, shape=(num_samples,))[:, None] // powers)
                                             % vocab_size).astype(jnp.int32), static_argnums=1)

    def fn(key, num_samples: int):
        # the Gumbel-max draw holds num_samples x V**L noise values (two words and a float each)
        check_memory(f"Sampler {name!r}", f"drawing num_samples={num_samples:,} from a law over {law.size:,} "
                     "sequences", (num_samples, law.size), itemsize=16,
                     fix="draw fewer samples per call (check draws in batches: pass batch_size=...)")
        return draw(key, num_samples)

    return Sampler(fn, law, name, jax=True)
