r"""Tokenizers as exact objects: maximum prefix encoding and merge-list BPE.

A tokenizer here is a deterministic map ``encode`` from strings over a finite
alphabet to token ids, with ``decode`` its left inverse.  Two facts make the
exact computations of :mod:`arprob.tokenization` possible, and both are checked
exhaustively in ``proofs/check_11_tokenization_bias.py``:

* **prefixes of encodings are encodings**: if ``encode(s) = t`` then
  ``encode(decode(t[:i])) == t[:i]`` for every ``i`` (proved in
  ``proofs/11-tokenization-bias.md`` for both encoders);
* **validity is read by a finite automaton over tokens**
  (:meth:`Tokenizer.automaton`): a token sequence is an encoding (the encoder
  would produce it) iff the automaton accepts it.  For maximum prefix encoding
  the state is the set of strings that the rest of the text must not start
  with (a longer token would have matched); for BPE it is the last token, since
  a sequence is an encoding iff each token and each adjacent pair is
  (Berglund & van der Merwe, "Formalizing BPE Tokenization", 2023; Phan et al.,
  "Exact Byte-Level Probabilities from Tokenized Language Models", 2024).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from arprob._validation import _show, check_bool
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidArgumentError, InvalidTokenError

__all__ = ["Automaton", "BPETokenizer", "MaxPrefixTokenizer", "Tokenizer"]

#: Automata with more states than this are refused (the induced-model tables grow with them).
MAX_AUTOMATON_STATES = 100_000


class Automaton(NamedTuple):
    """A deterministic automaton over token ids: ``transitions[state, token]`` is the next state, -1 = reject.

    Every state is accepting (an encoding may end anywhere); the start state is 0.
    """

    transitions: np.ndarray  # (num_states, num_tokens) int64
    num_states: int


def _check_alphabet(owner: str, alphabet) -> str:
    if not isinstance(alphabet, str):
        raise ArprobTypeError(f"{owner}: alphabet must be a string of distinct characters such as 'ab', "
                              f"got {_show(alphabet)}")
    if len(alphabet) < 1 or len(set(alphabet)) != len(alphabet):
        raise InvalidArgumentError(f"{owner}: alphabet must hold at least one character, each once; got "
                                   f"{alphabet!r}; pass the distinct characters of the text, e.g. 'ab'")
    return alphabet


class Tokenizer(ABC):
    """Shared behaviour: ids, decoding, validity, covers.  Subclasses define :meth:`encode` and the automaton."""

    alphabet: str
    tokens: tuple[str, ...]

    def _setup(self, alphabet: str, tokens: Sequence[str]):
        self.alphabet = alphabet
        self.tokens = tuple(tokens)
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.char_ids = np.array([alphabet.index(token[0]) for token in self.tokens], dtype=np.int64)
        self.lengths = np.array([len(token) for token in self.tokens], dtype=np.int64)
        self._automaton = None

    @property
    def num_tokens(self) -> int:
        """The vocabulary size (token ids are ``0 .. num_tokens - 1``)."""
        return len(self.tokens)

    @property
    def max_token_length(self) -> int:
        """The number of characters of the longest token."""
        return int(self.lengths.max())

    # -- boundary checks ---------------------------------------------------------------------
    def _check_text(self, owner: str, name: str, text) -> str:
        if not isinstance(text, str):
            raise ArprobTypeError(f"{owner}: {name} must be a string, got {_show(text)}")
        stray = sorted(set(text) - set(self.alphabet))
        if stray:
            raise InvalidTokenError(f"{owner}: {name} holds characters {''.join(stray)!r} outside the alphabet "
                                    f"{self.alphabet!r}; reduce the text to the alphabet first")
        return text

    def _check_ids(self, owner: str, name: str, ids) -> list[int]:
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise ArprobTypeError(f"{owner}: {name} must be a sequence of token ids, got {_show(ids)}")
        out = []
        for position, token in enumerate(ids):
            if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
                raise ArprobTypeError(f"{owner}: {name}[{position}] must be an int token id, got {_show(token)}")
            if not 0 <= int(token) < self.num_tokens:
                raise InvalidTokenError(f"{owner}: {name}[{position}] = {int(token)} is outside the vocabulary "
                                        f"[0, {self.num_tokens}); ids come from encode()")
            out.append(int(token))
        return out

    # -- the public maps ---------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""

    def decode(self, ids) -> str:
        """The string of a token sequence (concatenation of the tokens' strings)."""
        ids = self._check_ids(f"{type(self).__name__}.decode", "ids", ids)
        return "".join(self.tokens[i] for i in ids)

    def is_valid(self, ids) -> bool:
        """Whether ``ids`` is an encoding: ``encode(decode(ids)) == ids`` (read by the automaton)."""
        ids = self._check_ids(f"{type(self).__name__}.is_valid", "ids", ids)
        return self._accepts(ids)

    def _accepts(self, ids: Sequence[int], state: int = 0) -> bool:
        return self._run(ids, state) >= 0

    def _run(self, ids: Sequence[int], state: int = 0) -> int:
        transitions = self.automaton().transitions
        for token in ids:
            state = int(transitions[state, token])
            if state < 0:
                return -1
        return state

    def covers(self, text: str, *, valid_only: bool = True) -> list[list[int]]:
        r"""The encodings that cover ``text``: every ``c`` with ``decode(c[:-1])`` a proper prefix of ``text``
        and ``decode(c)`` starting with it (the last token may overhang).

        Every string that starts with ``text`` has exactly one encoding prefix among them (the shortest
        prefix of its encoding that reaches past ``text``), so for any law on strings
        :math:`P(\text{text}\ \text{prefix}) = \sum_c P(\text{encoding starts with } c)`.  Because prefixes of
        encodings are encodings, ``c[:-1]`` is always ``encode(text[:j])``; with ``valid_only`` (the default)
        only covers that are encodings themselves are kept (the others have probability zero under the
        tokenizer's own law).  Sorted by split point ``j``, then token id.  Empty text has no covers.
        """
        owner = f"{type(self).__name__}.covers"
        text = self._check_text(owner, "text", text)
        valid_only = check_bool(owner, "valid_only", valid_only)
        return [prefix + [token] for prefix, token in self._covers(text, valid_only)]

    def _covers(self, text: str, valid_only: bool):
        out = []
        for start in range(max(0, len(text) - self.max_token_length), len(text)):
            rest = text[start:]
            candidates = [i for i, token in enumerate(self.tokens) if token.startswith(rest)]
            if not candidates:
                continue
            prefix = self.encode(text[:start])
            state = self._run(prefix) if valid_only else 0
            transitions = self.automaton().transitions
            for token in candidates:
                if not valid_only or transitions[state, token] >= 0:
                    out.append((prefix, token))
        return out

    def automaton(self) -> Automaton:
        """The validity automaton (built once, on first use)."""
        if self._automaton is None:
            self._automaton = self._build_automaton()
        return self._automaton

    @abstractmethod
    def _build_automaton(self) -> Automaton:
        """The validity automaton of this encoder."""


def _check_vocab(owner: str, vocab, alphabet: str) -> list[str]:
    if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
        raise ArprobTypeError(f"{owner}: vocab must be a list of strings such as ['a', 'b', 'ab'], got {_show(vocab)}")
    vocab = list(vocab)
    for position, token in enumerate(vocab):
        if not isinstance(token, str) or not token:
            raise ArprobTypeError(f"{owner}: vocab[{position}] must be a non-empty string, got {_show(token)}")
        stray = sorted(set(token) - set(alphabet))
        if stray:
            raise InvalidTokenError(f"{owner}: vocab[{position}] = {token!r} holds {''.join(stray)!r}, outside the "
                                    f"alphabet {alphabet!r}")
    seen = set()
    for position, token in enumerate(vocab):
        if token in seen:
            raise InvalidArgumentError(f"{owner}: vocab[{position}] = {token!r} appears twice; list each token once")
        seen.add(token)
    missing = [c for c in alphabet if c not in seen]
    if missing:
        raise InvalidArgumentError(f"{owner}: vocab lacks the single characters {''.join(missing)!r}; every character "
                                   "of the alphabet must be a token so that every string has an encoding")
    return vocab


class MaxPrefixTokenizer(Tokenizer):
    r"""Maximum prefix encoding (greedy longest match, as WordPiece applies it).

    At each position the encoder emits the longest token that is a prefix of the rest of the text.

    Parameters
    ----------
    vocab
        The tokens, a list of distinct non-empty strings holding every single character of the
        alphabet; token id ``i`` is ``vocab[i]``.
    alphabet
        The characters, as a string; character id ``i`` is ``alphabet[i]`` (the id a character
        model over the alphabet uses).  Default: the single-character tokens, in vocabulary order.

    Notes
    -----
    Validity automaton: the state after a token sequence is the set of strings :math:`z` such that
    a token :math:`u = t z` (with :math:`t` a recent token) exists; the rest of the text must not
    start with any of them, otherwise the encoder would have emitted :math:`u`.  A token :math:`v`
    is rejected when some :math:`z` in the state is a prefix of :math:`v`.
    """

    def __init__(self, vocab, alphabet: str | None = None):
        owner = "MaxPrefixTokenizer"
        if alphabet is None:
            if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
                raise ArprobTypeError(f"{owner}: vocab must be a list of strings such as ['a', 'b', 'ab'], "
                                      f"got {_show(vocab)}")
            vocab = list(vocab)
            singles = [t for t in vocab if isinstance(t, str) and len(t) == 1]
            alphabet = "".join(dict.fromkeys(singles))
            if not alphabet:
                raise InvalidArgumentError(f"{owner}: vocab {_show(vocab)} has no single-character token, so the "
                                           "alphabet cannot be read from it; add every character as a token, or "
                                           "pass alphabet=")
        alphabet = _check_alphabet(owner, alphabet)
        vocab = _check_vocab(owner, vocab, alphabet)
        self._setup(alphabet, vocab)
        self._longer = [[u for u in vocab if len(u) > len(t) and u.startswith(t)] for t in vocab]

    def encode(self, text: str) -> list[int]:
        """Greedy longest-match token ids of ``text``."""
        text = self._check_text("MaxPrefixTokenizer.encode", "text", text)
        out, position, longest = [], 0, self.max_token_length
        while position < len(text):
            for size in range(min(longest, len(text) - position), 0, -1):
                token = self.ids.get(text[position:position + size])
                if token is not None:
                    out.append(token)
                    position += size
                    break
        return out

    def _build_automaton(self) -> Automaton:
        index = {frozenset(): 0}
        states = [frozenset()]
        rows = []
        while len(rows) < len(states):
            forbidden = states[len(rows)]
            row = np.full(self.num_tokens, -1, dtype=np.int64)
            for token_id, token in enumerate(self.tokens):
                if any(token.startswith(z) for z in forbidden):
                    continue
                carried = {z[len(token):] for z in forbidden if len(z) > len(token) and z.startswith(token)}
                carried |= {u[len(token):] for u in self._longer[token_id]}
                target = frozenset(carried)
                if target not in index:
                    if len(states) >= MAX_AUTOMATON_STATES:
                        raise EnumerationTooLargeError(
                            f"MaxPrefixTokenizer: the validity automaton passed {MAX_AUTOMATON_STATES:,} states; "
                            "use a smaller vocabulary")
                    index[target] = len(states)
                    states.append(target)
                row[token_id] = index[target]
            rows.append(row)
        return Automaton(np.stack(rows), len(states))

    def __repr__(self):
        return f"MaxPrefixTokenizer(num_tokens={self.num_tokens}, alphabet={self.alphabet!r})"


def _check_merges(owner: str, merges, alphabet: str, name: str = "merges",
                  fix: str = "list merges in the order they were learned") -> list[tuple[str, str]]:
    if isinstance(merges, (str, bytes)) or not hasattr(merges, "__iter__"):
        raise ArprobTypeError(f"{owner}: {name} must be a list of (left, right) string pairs, got {_show(merges)}")
    known = set(alphabet)
    out = []
    for rank, merge in enumerate(merges):
        if isinstance(merge, str) and merge.count(" ") == 1:  # the "left right" form of older merge files
            merge = tuple(merge.split(" "))
        if not isinstance(merge, (tuple, list)) or len(merge) != 2 or not all(isinstance(p, str) for p in merge):
            raise ArprobTypeError(f"{owner}: {name}[{rank}] must be a pair of strings such as ('a', 'b'), "
                                  f"got {_show(merge)}")
        left, right = merge
        for part in (left, right):
            if part not in known:
                raise InvalidArgumentError(
                    f"{owner}: {name}[{rank}] = {merge!r} uses {part!r}, which is neither a character of the alphabet "
                    f"{alphabet!r} nor made by an earlier merge; {fix}")
        if left + right in known:
            raise InvalidArgumentError(f"{owner}: {name}[{rank}] = {merge!r} makes {left + right!r}, which already "
                                       "exists; each merge must make a new token")
        known.add(left + right)
        out.append((left, right))
    return out


class BPETokenizer(Tokenizer):
    r"""Merge-list byte-pair encoding, applied as GPT-2-style tokenizers (and HuggingFace ``tokenizers``) do.

    Start from the characters; repeatedly take the adjacent pair with the lowest merge rank and
    merge it (the leftmost occurrence first, then the others left to right); stop when no
    adjacent pair is a merge.  The whole text is one "word" (no pre-tokenizer).

    Parameters
    ----------
    merges
        ``(left, right)`` pairs in rank order (earlier = applied first); each part is a character
        or the result of an earlier merge.
    alphabet
        The characters; token ids are the characters in alphabet order, then the merges in rank order.
    """

    def __init__(self, merges, alphabet: str):
        owner = "BPETokenizer"
        alphabet = _check_alphabet(owner, alphabet)
        self.merges = _check_merges(owner, merges, alphabet)
        self._ranks = {merge: rank for rank, merge in enumerate(self.merges)}
        self._setup(alphabet, list(alphabet) + [left + right for left, right in self.merges])

    @classmethod
    def from_huggingface(cls, tokenizer, alphabet: str) -> BPETokenizer:
        """The merge list of a HuggingFace ``tokenizers.Tokenizer`` whose model is BPE (read from its JSON)."""
        owner = "BPETokenizer.from_huggingface"
        if not hasattr(tokenizer, "to_str"):
            raise ArprobTypeError(f"{owner}: tokenizer must be a tokenizers.Tokenizer, got {_show(tokenizer)}")
        alphabet = _check_alphabet(owner, alphabet)
        try:
            config = json.loads(tokenizer.to_str())
        except Exception as error:
            raise ArprobTypeError(f"{owner}: tokenizer.to_str() did not give a tokenizer's JSON "
                                  f"({type(error).__name__}: {error}); pass a tokenizers.Tokenizer") from error
        model = config.get("model") if isinstance(config, dict) else None
        if not isinstance(model, dict):
            raise InvalidArgumentError(f"{owner}: the tokenizer's JSON has no model section (got {_show(model)}); "
                                       "pass a tokenizers.Tokenizer whose model is BPE")
        if model.get("type") != "BPE":
            raise InvalidArgumentError(f"{owner}: the tokenizer's model is {model.get('type')!r}, expected 'BPE'")
        merges = model.get("merges")
        if not isinstance(merges, list):
            raise InvalidArgumentError(f"{owner}: the tokenizer's BPE model has no merge list "
                                       f"(merges = {_show(merges)}); pass a trained tokenizers.Tokenizer")
        # settings under which HuggingFace's encodings are not those of the merges applied to the whole text
        changes = {"normalizer": config.get("normalizer"), "pre_tokenizer": config.get("pre_tokenizer"),
                   "dropout": model.get("dropout") or None,
                   "continuing_subword_prefix": model.get("continuing_subword_prefix"),
                   "end_of_word_suffix": model.get("end_of_word_suffix"),
                   "ignore_merges": model.get("ignore_merges") or None}
        changes = {name: value for name, value in changes.items() if value not in (None, "")}
        if changes:
            raise InvalidArgumentError(
                f"{owner}: the tokenizer sets {', '.join(f'{k}={v!r}' for k, v in changes.items())}"[:300]
                + "; BPETokenizer applies the merges to the whole text, so its encodings would differ; pass a "
                "tokenizer without a normalizer or pre-tokenizer, dropout, subword prefix or suffix, or ignore_merges")
        merges = [tuple(m) if isinstance(m, list) else m for m in merges]
        _check_merges(owner, merges, alphabet, name="the tokenizer's merges",
                      fix="pass the alphabet the tokenizer was trained on")
        return cls(merges, alphabet)

    def encode(self, text: str) -> list[int]:
        """BPE token ids of ``text``."""
        text = self._check_text("BPETokenizer.encode", "text", text)
        return [self.ids[piece] for piece in self._pieces(text)]

    def _pieces(self, text: str) -> list[str]:
        pieces = list(text)
        ranks = self._ranks
        while len(pieces) > 1:
            best = None
            for i in range(len(pieces) - 1):
                rank = ranks.get((pieces[i], pieces[i + 1]))
                if rank is not None and (best is None or rank < best):
                    best = rank
            if best is None:
                break
            left, right = self.merges[best]
            merged, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == left and pieces[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        return pieces

    def _build_automaton(self) -> Automaton:
        # state 0: start; state 1 + v: the last token was v
        size = self.num_tokens
        single = np.array([self._pieces(t) == [t] for t in self.tokens])
        transitions = np.full((size + 1, size), -1, dtype=np.int64)
        transitions[0, single] = 1 + np.flatnonzero(single)
        for u in np.flatnonzero(single):
            for v in np.flatnonzero(single):
                if self._pieces(self.tokens[u] + self.tokens[v]) == [self.tokens[u], self.tokens[v]]:
                    transitions[1 + u, v] = 1 + v
        return Automaton(transitions, size + 1)

    def __repr__(self):
        return f"BPETokenizer(num_tokens={self.num_tokens}, alphabet={self.alphabet!r})"
