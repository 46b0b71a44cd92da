"""The one categorical-sampling primitive every arprob sampler uses.

Keeping a single entry point lets the library fix sampling precision in one
place (see DESIGN.md theorem 13 on float32 Gumbel-max truncation).
"""

from __future__ import annotations

import jax


def categorical(key, logits, shape=None):
    """Draw ``argmax(logits + Gumbel noise)`` over the last axis.

    Exact in distribution up to the dtype's resolution of the uniform draws;
    with ``jax_enable_x64`` the noise is drawn in float64.
    """
    return jax.random.categorical(key, logits, axis=-1, shape=shape)
