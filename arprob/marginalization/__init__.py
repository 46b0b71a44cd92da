r"""Marginal models: the :class:`Marginals` protocol, conversions to and from conditional
families, and the self-consistency residuals that characterise valid joints (theorem 9,
``proofs/09-marginalization.md``)."""

from arprob.marginalization.consistency import SELF_CONSISTENCY_MAX_INPUTS, SelfConsistency, self_consistency
from arprob.marginalization.protocol import (
    ConditionalMarginals,
    MarginalConditionals,
    Marginals,
    PerturbedMarginals,
    as_marginals,
    conditionals_from_marginals,
    marginals_from_conditionals,
    perturbed_marginals,
)

__all__ = ["SELF_CONSISTENCY_MAX_INPUTS", "ConditionalMarginals", "MarginalConditionals", "Marginals",
           "PerturbedMarginals", "SelfConsistency", "as_marginals", "conditionals_from_marginals",
           "marginals_from_conditionals", "perturbed_marginals", "self_consistency"]
