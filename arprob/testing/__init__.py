"""Test helpers for users of arprob: hypothesis strategies over exact models.

Requires the ``test`` extra (``pip install arprob[test]``), which brings
hypothesis; ``import arprob`` alone never imports it.

See :mod:`arprob.testing.strategies`.
"""

from arprob.testing import strategies
from arprob.testing.strategies import (
    conditionals,
    lengths,
    markov_chains,
    models,
    ngrams,
    observed_masks,
    orders,
    sequences,
    tabular_joints,
    vocab_sizes,
)

__all__ = [
    "conditionals",
    "lengths",
    "markov_chains",
    "models",
    "ngrams",
    "observed_masks",
    "orders",
    "sequences",
    "strategies",
    "tabular_joints",
    "vocab_sizes",
]
