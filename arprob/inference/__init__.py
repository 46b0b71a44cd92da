"""Pure inference kernels on arrays: forward-backward over window chains, and HMM kernels
(filter, smoother, pairwise marginals, Viterbi, posterior sampling; sequential and parallel-in-time)."""

from arprob.inference.chain import (
    chain_conditional_logits,
    chain_log_prob,
    chain_marginal_log_prob,
    next_window_index,
    window_indices,
)
from arprob.inference.hmm import (
    BackwardResult,
    FilterResult,
    SmootherResult,
    hmm_backward,
    hmm_expected_transitions,
    hmm_filter,
    hmm_log_likelihood,
    hmm_pairwise_marginals,
    hmm_posterior_sample,
    hmm_smoother,
    hmm_viterbi,
)

__all__ = [
    "BackwardResult",
    "FilterResult",
    "SmootherResult",
    "chain_conditional_logits",
    "chain_log_prob",
    "chain_marginal_log_prob",
    "hmm_backward",
    "hmm_expected_transitions",
    "hmm_filter",
    "hmm_log_likelihood",
    "hmm_pairwise_marginals",
    "hmm_posterior_sample",
    "hmm_smoother",
    "hmm_viterbi",
    "next_window_index",
    "window_indices",
]
