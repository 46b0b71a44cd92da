r"""The token-level law induced by a character process: the "ideal token-level language model".

Draw a string :math:`S` of :math:`N` characters from a character chain (:class:`~arprob.MarkovChain`
or :class:`~arprob.NGram` over the tokenizer's alphabet) and encode it.  The law of the token
sequence is

.. math::

    P(\mathrm{encode}(S) = t) = P_{\mathrm{char}}(\mathrm{decode}(t))\,
        \mathbf 1[t \text{ is an encoding}]\, \mathbf 1[|\mathrm{decode}(t)| = N],

because the encoding is a bijection between strings and encodings.  Its prefix probabilities
factor the same way: for a token prefix :math:`c` with :math:`m = |\mathrm{decode}(c)|` characters,
the automaton in state :math:`s` and the character chain in context window :math:`w` after it,

.. math::

    P(\mathrm{encode}(S) \text{ starts with } c) = P_{\mathrm{char}}(\mathrm{decode}(c))\, F_{N-m}(s, w),

where :math:`F_r(s, w)` is the probability that :math:`r` more characters drawn from window
:math:`w` continue :math:`c` into an encoding.  :math:`F` obeys a backward recursion over the
tokens (a transducer dynamic programme over characters x automaton states x chain windows):

.. math::

    F_0 = 1, \qquad F_r(s, w) = \sum_{v:\,|v| \le r,\ \delta(s, v) \ne \bot}
        P_{\mathrm{char}}(v \mid w)\, F_{r-|v|}(\delta(s, v), w \cdot v).

The next-token conditionals are ratios of these (:meth:`InducedTokenModel.next_token_probs`);
the character probability of the prefix cancels, so nothing underflows.  Cost:
:math:`O(N \cdot |S| \cdot |W| \cdot V)` once; then :math:`O(V)` per conditional.
Checked against enumeration of all :math:`A^N` strings in ``tests/test_tokenization.py`` and
``proofs/check_11_tokenization_bias.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arprob._validation import _show, check_int, check_table_size
from arprob.errors import ArprobTypeError, IncompatibleError, ZeroProbabilityError
from arprob.tokenization.tokenizers import Tokenizer

__all__ = ["InducedTokenModel", "induced_token_model"]


def _chain_parts(owner: str, char_model, alphabet: str):
    """``(probs (W, A), context_size)`` of a MarkovChain/NGram over ``alphabet``."""
    from arprob.distributions import MarkovChain, NGram

    if not isinstance(char_model, (MarkovChain, NGram)):
        raise ArprobTypeError(f"{owner}: char_model must be an arprob MarkovChain or NGram over the alphabet's "
                              f"character ids, got {_show(char_model)}")
    if char_model.batch_shape != ():
        raise IncompatibleError(f"{owner}: char_model has batch_shape {char_model.batch_shape}, expected (); "
                                "index the batch to one model first")
    if char_model.vocab_size != len(alphabet):
        raise IncompatibleError(f"{owner}: char_model has vocab_size {char_model.vocab_size} but the tokenizer's "
                                f"alphabet {alphabet!r} has {len(alphabet)} characters; character id i must be "
                                "alphabet[i]")
    probs = np.exp(np.asarray(char_model.log_table, np.float64))
    return probs, int(char_model.context_size)


def start_window(vocab_size: int, context_size: int) -> int:
    """The window index of an empty context (every slot the beginning-of-sequence id ``vocab_size``)."""
    base = vocab_size + 1
    return sum(vocab_size * base**j for j in range(context_size))


def token_reads(probs: np.ndarray, context_size: int, tokenizer: Tokenizer):
    """``P(v | w)`` and the window after reading token ``v`` from window ``w``: two ``(W, V)`` arrays."""
    num_windows, vocab_size = probs.shape
    modulus = (vocab_size + 1) ** context_size
    windows = np.arange(num_windows)
    read = np.ones((num_windows, tokenizer.num_tokens))
    after = np.empty((num_windows, tokenizer.num_tokens), dtype=np.int64)
    for token_id, token in enumerate(tokenizer.tokens):
        current, mass = windows.copy(), np.ones(num_windows)
        for char in token:
            char_id = tokenizer.alphabet.index(char)
            mass = mass * probs[current, char_id]
            current = (current * (vocab_size + 1) + char_id) % modulus
        read[:, token_id], after[:, token_id] = mass, current
    return read, after


def continuation_table(read: np.ndarray, after: np.ndarray, transitions: np.ndarray, lengths: np.ndarray,
                       num_chars: int) -> np.ndarray:
    r""":math:`F_r(s, w)` for :math:`r = 0..N`, shape ``(N + 1, num_states, num_windows)`` (module docstring)."""
    num_states = transitions.shape[0]
    num_windows = read.shape[0]
    table = np.zeros((num_chars + 1, num_states, num_windows))
    table[0] = 1.0
    groups = {int(size): np.flatnonzero(lengths == size) for size in np.unique(lengths)}
    for remaining in range(1, num_chars + 1):
        total = np.zeros((num_states, num_windows))
        for size, tokens in groups.items():
            if size > remaining:
                continue
            targets = transitions[:, tokens]  # (S, n)
            allowed = targets >= 0
            previous = table[remaining - size][np.where(allowed, targets, 0)]  # (S, n, W)
            gathered = np.take_along_axis(previous, after[:, tokens].T[None, :, :], axis=2)  # (S, n, W)
            total += np.einsum("snw,wn,sn->sw", gathered, read[:, tokens], allowed)
        table[remaining] = total
    return table


class InducedTokenModel:
    r"""The exact law of the encoding of :math:`N` characters drawn from a character chain.

    Build it with :func:`induced_token_model`.  Token ids are the tokenizer's; id ``num_tokens``
    (:attr:`end`) is the end of the text, which follows exactly when :math:`N` characters have been
    emitted.  Conditionals, prefix probabilities and sequence probabilities are exact (float64).

    Attributes
    ----------
    tokenizer, num_chars, num_tokens, end
    """

    def __init__(self, probs: np.ndarray, context_size: int, tokenizer: Tokenizer, num_chars: int):
        self.tokenizer = tokenizer
        self.num_chars = num_chars
        self.num_tokens = tokenizer.num_tokens
        self.end = tokenizer.num_tokens
        self.context_size = context_size
        self._probs = probs
        self._start = start_window(probs.shape[1], context_size)
        self._read, self._after = token_reads(probs, context_size, tokenizer)
        self._transitions = tokenizer.automaton().transitions
        self._table = continuation_table(self._read, self._after, self._transitions, tokenizer.lengths, num_chars)

    def _walk(self, owner: str, prefix, name: str = "prefix") -> tuple[float, int, int, int]:
        """``(log P_char(decode(prefix)), state, window, chars)``; state -1 if the prefix is no encoding prefix."""
        ids = self.tokenizer._check_ids(owner, name, prefix)
        state, window, chars, log_mass = 0, self._start, 0, 0.0
        for token in ids:
            chars += int(self.tokenizer.lengths[token])
            state = int(self._transitions[state, token]) if state >= 0 else -1
            if state < 0 or chars > self.num_chars:
                return -np.inf, -1, window, chars
            with np.errstate(divide="ignore"):  # a character of probability 0: log-mass -inf
                log_mass += np.log(self._read[window, token])
            window = int(self._after[window, token])
        return log_mass, state, window, chars

    def prefix_log_prob(self, prefix: Sequence[int]) -> float:
        r""":math:`\log P(\mathrm{encode}(S) \text{ starts with prefix})`; ``-inf`` when impossible."""
        log_mass, state, window, chars = self._walk("InducedTokenModel.prefix_log_prob", prefix)
        if state < 0:
            return -np.inf
        with np.errstate(divide="ignore"):
            return float(log_mass + np.log(self._table[self.num_chars - chars, state, window]))

    def log_prob(self, ids: Sequence[int]) -> float:
        r""":math:`\log P(\mathrm{encode}(S) = \text{ids})` of a complete token sequence; ``-inf`` off the support."""
        log_mass, state, _, chars = self._walk("InducedTokenModel.log_prob", ids, "ids")
        return float(log_mass) if state >= 0 and chars == self.num_chars else -np.inf

    def next_token_probs(self, prefix: Sequence[int]) -> np.ndarray:
        r"""The law of the next token given a token prefix, shape ``(num_tokens + 1,)`` (last entry: end of text).

        .. math::

            P(v \mid c) = \frac{P_{\mathrm{char}}(v \mid w)\, F_{N-m-|v|}(\delta(s, v), w \cdot v)}{F_{N-m}(s, w)}.

        Raises
        ------
        ZeroProbabilityError
            If no string of ``num_chars`` characters has an encoding starting with ``prefix``.
        """
        owner = "InducedTokenModel.next_token_probs"
        _, state, window, chars = self._walk(owner, prefix)
        remaining = self.num_chars - chars
        base = self._table[remaining, state, window] if state >= 0 else 0.0
        if base <= 0.0:
            raise ZeroProbabilityError(
                f"{owner}: no string of {self.num_chars} characters has an encoding that starts with prefix "
                f"{list(prefix)!r} (decoded {self.tokenizer.decode(prefix)!r}); condition on a prefix of an encoding")
        out = np.zeros(self.num_tokens + 1)
        if remaining == 0:
            out[self.end] = 1.0
            return out
        targets = self._transitions[state]
        fits = (targets >= 0) & (self.tokenizer.lengths <= remaining)
        tokens = np.flatnonzero(fits)
        out[tokens] = (self._read[window, tokens]
                       * self._table[remaining - self.tokenizer.lengths[tokens], targets[tokens],
                                     self._after[window, tokens]] / base)
        return out

    def __repr__(self):
        return (f"InducedTokenModel(num_tokens={self.num_tokens}, num_chars={self.num_chars}, "
                f"tokenizer={self.tokenizer!r})")


def induced_token_model(char_model, tokenizer: Tokenizer, num_chars: int) -> InducedTokenModel:
    r"""The exact token-level law of :math:`N` = ``num_chars`` characters from ``char_model``, encoded by ``tokenizer``.

    Parameters
    ----------
    char_model
        A :class:`~arprob.MarkovChain` or :class:`~arprob.NGram` over the character ids
        ``0 .. len(tokenizer.alphabet) - 1`` (its ``length`` is not used: the first ``num_chars``
        characters of an autoregressive chain have the same law for any longer length).
    tokenizer
        A :class:`~arprob.tokenization.MaxPrefixTokenizer` or :class:`~arprob.tokenization.BPETokenizer`.
    num_chars
        :math:`N`, the number of characters of the text.

    Returns
    -------
    InducedTokenModel
        Exact next-token conditionals (with an end-of-text id), prefix and sequence probabilities,
        by the transducer dynamic programme in this module's docstring (no enumeration of strings).
    """
    owner = "induced_token_model"
    if not isinstance(tokenizer, Tokenizer):
        raise ArprobTypeError(f"{owner}: tokenizer must be an arprob.tokenization tokenizer "
                              f"(MaxPrefixTokenizer or BPETokenizer), got {_show(tokenizer)}")
    num_chars = check_int(owner, "num_chars", num_chars, minimum=1, maximum=100_000)
    probs, context_size = _chain_parts(owner, char_model, tokenizer.alphabet)
    automaton = tokenizer.automaton()
    check_table_size(owner, "the continuation table F (characters x automaton states x windows)",
                     (num_chars + 1, automaton.num_states, probs.shape[0]),
                     fix="use fewer characters, a smaller vocabulary or a shorter context")
    return InducedTokenModel(probs, context_size, tokenizer, num_chars)
