"""Exact sequence models (numpyro distributions), and the autoregressive HMM for time series."""

from arprob.distributions.arhmm import ARHMM
from arprob.distributions.base import SequenceDistribution
from arprob.distributions.chain import MarkovChain, NGram
from arprob.distributions.hmm import DFA, HMM
from arprob.distributions.ising import Ising
from arprob.distributions.tabular import TabularJoint

__all__ = ["ARHMM", "DFA", "HMM", "Ising", "MarkovChain", "NGram", "SequenceDistribution", "TabularJoint"]
