"""arprob: explicit, exactly checkable probability for autoregressive-style generation.

Exact sequence models (numpyro distributions) answer the any-subset
conditional protocol; samplers are written against that protocol and each has
an exact law; :mod:`arprob.verify` tells whether a sampler draws from the law
it claims.
"""

from arprob import (
    conditionals,
    errors,
    inference,
    learning,
    marginalization,
    markov,
    precision,
    prognostics,
    samplers,
    schedules,
    tokenization,
    verify,
)
from arprob.anyorder import AnyOrderAR
from arprob.conditionals import Conditionals
from arprob.diffusion import AbsorbingDiffusion
from arprob.distributions import ARHMM, DFA, HMM, Ising, MarkovChain, NGram, SequenceDistribution, TabularJoint
from arprob.errors import ArprobError
from arprob.learning import fit_em, fit_sgd
from arprob.marginalization import (
    Marginals,
    conditionals_from_marginals,
    marginals_from_conditionals,
    self_consistency,
)
from arprob.markov import MarkovView

__version__ = "0.1.0"

__all__ = [
    "ARHMM",
    "AbsorbingDiffusion",
    "AnyOrderAR",
    "ArprobError",
    "Conditionals",
    "DFA",
    "HMM",
    "Ising",
    "Marginals",
    "MarkovChain",
    "MarkovView",
    "NGram",
    "SequenceDistribution",
    "TabularJoint",
    "conditionals",
    "conditionals_from_marginals",
    "errors",
    "fit_em",
    "fit_sgd",
    "inference",
    "learning",
    "marginalization",
    "marginals_from_conditionals",
    "markov",
    "precision",
    "prognostics",
    "samplers",
    "schedules",
    "self_consistency",
    "tokenization",
    "verify",
]
