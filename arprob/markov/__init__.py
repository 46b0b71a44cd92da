r"""Language models as Markov chains (Zekri et al., 2024): :class:`MarkovView` and its parts.

* :mod:`arprob.markov.models`: the next-token model protocol, adapters, the decoding rule
  (temperature, top-k, top-p);
* :mod:`arprob.markov.operators`: the window step as a reshape and a sum (JAX), CSR, min-plus;
* :mod:`arprob.markov.structure`: communicating classes, periods, absorbing loops;
* :mod:`arprob.markov.mixing`: mixing times, :math:`|\lambda_2|`, Zekri's bound;
* :mod:`arprob.markov.propagation`: laws from a prompt, the DFA x window-chain programme;
* :mod:`arprob.markov.view`: :class:`MarkovView`, which ties them together.
"""

from arprob.markov.models import CallableModel, NextTokenModel, TableModel, as_next_token_model, decode_probs
from arprob.markov.propagation import contains_pattern
from arprob.markov.structure import ChainClass, ChainStructure
from arprob.markov.view import MarkovView, MixingTime, RecurrentLaw, StationaryLaw, ZekriBound

__all__ = [
    "CallableModel",
    "ChainClass",
    "ChainStructure",
    "MarkovView",
    "MixingTime",
    "NextTokenModel",
    "RecurrentLaw",
    "StationaryLaw",
    "TableModel",
    "ZekriBound",
    "as_next_token_model",
    "contains_pattern",
    "decode_probs",
]
