"""Samplers: each a jit-compiled ``NAME(key, ..., num_samples, ...) -> (tokens, stats)``
beside its exact law ``NAME_law(...)`` (float64 over all ``V**L`` sequences).

Broken variants for testing verifiers live in :mod:`arprob.samplers.mutants`;
ARDM step budgeting in :mod:`arprob.samplers.budget`.
"""

from arprob.samplers.ancestral import AncestralStats, ancestral, ancestral_law
from arprob.samplers.any_subset import (
    AnySubsetStats,
    SigmaGPTStats,
    any_subset_speculative,
    any_subset_speculative_cost,
    any_subset_speculative_law,
    sigma_gpt_rejection,
    sigma_gpt_rejection_cost,
    sigma_gpt_rejection_law,
)
from arprob.samplers.blockwise import (
    BlockwiseStats,
    blockwise_parallel,
    blockwise_parallel_cost,
    blockwise_parallel_law,
    greedy,
)
from arprob.samplers.masked import (
    FirstHittingStats,
    MaskedStats,
    first_hitting,
    first_hitting_law,
    masked_euler,
    masked_euler_law,
    parallel_unmask,
    parallel_unmask_law,
)
from arprob.samplers.sharding import sample_sharded
from arprob.samplers.spectr import (
    SpecTrCost,
    SpecTrStats,
    kseq_acceptance,
    kseq_rho,
    optimal_acceptance,
    spectr,
    spectr_cost,
    spectr_law,
)
from arprob.samplers.speculative import (
    SpeculativeCost,
    SpeculativeStats,
    expected_tokens_per_call,
    speculative,
    speculative_cost,
    speculative_law,
)
from arprob.samplers.speculative_with import (
    ensemble_rule,
    exact_rule,
    speculative_with,
    speculative_with_cost,
    speculative_with_law,
    transformers_rule,
)

__all__ = [
    "AncestralStats",
    "AnySubsetStats",
    "BlockwiseStats",
    "FirstHittingStats",
    "MaskedStats",
    "SigmaGPTStats",
    "SpecTrCost",
    "SpecTrStats",
    "SpeculativeCost",
    "SpeculativeStats",
    "ancestral",
    "ancestral_law",
    "any_subset_speculative",
    "any_subset_speculative_cost",
    "any_subset_speculative_law",
    "blockwise_parallel",
    "blockwise_parallel_cost",
    "blockwise_parallel_law",
    "ensemble_rule",
    "exact_rule",
    "expected_tokens_per_call",
    "first_hitting",
    "first_hitting_law",
    "greedy",
    "kseq_acceptance",
    "kseq_rho",
    "masked_euler",
    "masked_euler_law",
    "optimal_acceptance",
    "parallel_unmask",
    "parallel_unmask_law",
    "sample_sharded",
    "sigma_gpt_rejection",
    "sigma_gpt_rejection_cost",
    "sigma_gpt_rejection_law",
    "speculative",
    "speculative_cost",
    "speculative_law",
    "speculative_with",
    "speculative_with_cost",
    "speculative_with_law",
    "spectr",
    "spectr_cost",
    "spectr_law",
    "transformers_rule",
]
