"""Pure inference kernels on arrays (forward-backward over chains)."""

from arprob.inference.chain import (
    chain_conditional_logits,
    chain_log_prob,
    chain_marginal_log_prob,
    next_window_index,
    window_indices,
)

__all__ = [
    "chain_conditional_logits",
    "chain_log_prob",
    "chain_marginal_log_prob",
    "next_window_index",
    "window_indices",
]
