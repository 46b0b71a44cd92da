r"""Tokenization bias (Phan et al., 2024): tokenizers as exact objects, the induced token law, corrections."""

from arprob.tokenization.induced import InducedTokenModel, induced_token_model
from arprob.tokenization.tokenizers import Automaton, BPETokenizer, MaxPrefixTokenizer, Tokenizer

__all__ = ["Automaton", "BPETokenizer", "InducedTokenModel", "MaxPrefixTokenizer", "Tokenizer", "induced_token_model"]
from arprob.tokenization.correction import METHODS, char_prefix_log_prob, next_char_law  # noqa: E402

__all__ += ["METHODS", "char_prefix_log_prob", "next_char_law"]
from arprob.tokenization.sampling import SAMPLERS, continuation_law, sample_continuation  # noqa: E402

__all__ += ["SAMPLERS", "continuation_law", "sample_continuation"]
from arprob.tokenization.learned import TokenNetwork, sample_encodings, train_token_network  # noqa: E402

__all__ += ["TokenNetwork", "sample_encodings", "train_token_network"]
