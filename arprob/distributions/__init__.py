"""Exact sequence models (numpyro distributions)."""

from arprob.distributions.base import SequenceDistribution
from arprob.distributions.chain import MarkovChain, NGram
from arprob.distributions.tabular import TabularJoint

__all__ = ["MarkovChain", "NGram", "SequenceDistribution", "TabularJoint"]
