r"""Next-character laws from a token-level model: the naive reading, token healing, and two exact corrections.

A token model here is any object with ``num_tokens`` and ``next_token_probs(prefix)`` returning
the law of the next token given a token prefix, shape ``(num_tokens + 1,)``, whose last entry is
the end of the text (:class:`~arprob.tokenization.InducedTokenModel` is the exact one; a learned
network is another).  :func:`next_char_law` reads the law of the character after a prompt from
it in four ways:

``"naive"``
    Encode the prompt, read the first character of the next token.  Biased: it conditions on a
    token boundary at the end of the prompt (Phan et al., 2024, "Understanding and Mitigating
    Tokenization Bias in Language Models"; theorem 11 says exactly when).
``"token_healing"``
    Back off the prompt's last token :math:`r` and constrain the next token to start with it; a
    token longer than :math:`r` gives the character after :math:`r`, the token :math:`r` itself
    hands over to the naive law after it.  The practitioners' heuristic: it removes part of the bias.
``"corrected"``
    Phan et al.'s branch-and-pass computation of the string-prefix probability,

    .. math::

        P(x_{1:n}) = \sum_{j \in J(x)} P(e_j) \sum_{v:\ \mathrm{decode}(v) \sqsupseteq x_{j+1:n}} P(v \mid e_j),
        \qquad e_j = \mathrm{encode}(x_{1:j}),

    where the pass points :math:`J(x)` are the token boundaries of :math:`\mathrm{encode}(x)` for
    maximum prefix encoding (the only split points an encoding of a longer string can have, so
    model calls are linear in the length) and every split point within a token's length of the end
    for BPE.  The next-character law is :math:`P(x a) / \sum_{a'} P(x a')`.
``"byte"``
    The cover-encoding method of Phan et al. (2024, "Exact Byte-Level Probabilities from Tokenized
    Language Models"): the same sum over the covers of :math:`x` that are encodings
    (:meth:`~arprob.tokenization.Tokenizer.covers`).

With the exact token model both corrections return the character chain's conditionals exactly
(theorem 11, ``proofs/11-tokenization-bias.md``); with a learned model they differ in which
probability mass on non-encodings they count.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from arprob._validation import _show, check_choice, check_int
from arprob.errors import (
    ArprobError,
    ArprobTypeError,
    IncompatibleError,
    InvalidProbabilityError,
    ZeroProbabilityError,
)
from arprob.tokenization.tokenizers import MaxPrefixTokenizer, Tokenizer

__all__ = ["METHODS", "TokenModelCalls", "char_prefix_log_prob", "next_char_law"]

#: The methods of :func:`next_char_law`.
METHODS = ("naive", "token_healing", "corrected", "byte")


class TokenModelCalls:
    """A token model behind a cache that validates each answer and counts distinct calls (:attr:`calls`)."""

    def __init__(self, owner: str, token_model, tokenizer: Tokenizer):
        if not hasattr(token_model, "next_token_probs") or not hasattr(token_model, "num_tokens"):
            raise ArprobTypeError(f"{owner}: token_model must have num_tokens and next_token_probs(prefix) "
                                  f"(an InducedTokenModel or a TokenNetwork), got {_show(token_model)}")
        num_tokens = check_int(owner, "token_model.num_tokens", token_model.num_tokens, minimum=1)
        if num_tokens != tokenizer.num_tokens:
            raise IncompatibleError(f"{owner}: token_model has num_tokens {num_tokens} but the tokenizer "
                                    f"has {tokenizer.num_tokens} tokens; use the tokenizer the model was built for")
        built_for = getattr(token_model, "tokenizer", None)
        if isinstance(built_for, Tokenizer) and not _same_tokenizer(built_for, tokenizer):
            raise IncompatibleError(
                f"{owner}: token_model was built for {built_for!r} with tokens {_show(built_for.tokens)}, but the "
                f"tokenizer passed is {tokenizer!r} with tokens {_show(tokenizer.tokens)}; pass "
                "tokenizer=token_model.tokenizer")
        self.owner = owner
        self.model = token_model
        self.num_tokens = tokenizer.num_tokens
        self.cache: dict[tuple[int, ...], np.ndarray] = {}
        self.log_prefix: dict[tuple[int, ...], float] = {(): 0.0}

    @property
    def calls(self) -> int:
        """The number of distinct prefixes the model was asked about."""
        return len(self.cache)

    def probs(self, prefix) -> np.ndarray:
        prefix = tuple(prefix)
        cached = self.cache.get(prefix)
        if cached is None:
            what = f"token_model.next_token_probs({list(prefix)})"
            try:
                cached = np.asarray(self.model.next_token_probs(list(prefix)), dtype=np.float64)
            except ArprobError as error:  # the model's own refusal, named as this call's
                raise type(error)(f"{self.owner}: {what} refused: {error}") from error
            except Exception as error:
                raise ArprobTypeError(f"{self.owner}: {what} failed with {type(error).__name__}: {error} (the model "
                                      "must map a list of token ids to the law of the next token, shape "
                                      f"({self.num_tokens + 1},))") from error
            if cached.shape != (self.num_tokens + 1,):
                raise IncompatibleError(f"{self.owner}: token_model.next_token_probs returned shape {cached.shape}, "
                                        f"expected ({self.num_tokens + 1},) (the tokens, then the end of text)")
            if not np.all(np.isfinite(cached)) or np.any(cached < 0) or abs(cached.sum() - 1.0) > 1e-6:
                raise InvalidProbabilityError(
                    f"{self.owner}: token_model.next_token_probs({list(prefix)}) is not a probability vector "
                    f"(sum {float(cached.sum()):.6g}, min {float(np.min(cached)):.6g}); the model must return a "
                    "normalised law")
            self.cache[prefix] = cached
        return cached

    def prefix_log_prob(self, prefix) -> float:
        """:math:`\\log P(\\text{tokens start with prefix})` as the sum of the conditionals' logs."""
        prefix = tuple(prefix)
        known = self.log_prefix.get(prefix)
        if known is None:
            known = self.prefix_log_prob(prefix[:-1])
            if known > -np.inf:  # the model is never asked about a prefix of probability 0
                with np.errstate(divide="ignore"):
                    known += float(np.log(self.probs(prefix[:-1])[prefix[-1]]))
            self.log_prefix[prefix] = known
        return known


def _same_tokenizer(first: Tokenizer, second: Tokenizer) -> bool:
    """Whether two tokenizers encode alike (the same class, alphabet, tokens and merges)."""
    return first is second or (type(first) is type(second) and first.alphabet == second.alphabet
                               and first.tokens == second.tokens
                               and getattr(first, "merges", None) == getattr(second, "merges", None))


def _check_tokenizer(owner: str, tokenizer) -> Tokenizer:
    if not isinstance(tokenizer, Tokenizer):
        raise ArprobTypeError(f"{owner}: tokenizer must be an arprob.tokenization tokenizer (MaxPrefixTokenizer or "
                              f"BPETokenizer), got {_show(tokenizer)}")
    return tokenizer


def _split_points(tokenizer: Tokenizer, text: str, method: str):
    """``(j, encode(text[:j]), candidate next tokens)`` for the cover sum of ``method``."""
    n = len(text)
    if method == "corrected" and isinstance(tokenizer, MaxPrefixTokenizer):
        encoding = tokenizer.encode(text)
        starts = np.concatenate([[0], np.cumsum(tokenizer.lengths[encoding])])[:-1]
        points = [(int(j), encoding[:i]) for i, j in enumerate(starts)]
    else:
        points = [(j, None) for j in range(max(0, n - tokenizer.max_token_length), n)]
    out = []
    for j, prefix in points:
        rest = text[j:]
        candidates = [i for i, token in enumerate(tokenizer.tokens) if token.startswith(rest)]
        if candidates:
            out.append((prefix if prefix is not None else tokenizer.encode(text[:j]), candidates))
    return out


def _log_prefix_mass(calls: TokenModelCalls, tokenizer: Tokenizer, text: str, method: str) -> float:
    """:math:`\\log P(\\text{text is a prefix of the string})` by the cover sum of ``method``."""
    if not text:
        return 0.0
    transitions = tokenizer.automaton().transitions
    terms = []
    for prefix, candidates in _split_points(tokenizer, text, method):
        if method == "byte":
            state = tokenizer._run(prefix)
            candidates = [v for v in candidates if transitions[state, v] >= 0]
            if not candidates:
                continue
        base = calls.prefix_log_prob(prefix)
        if base == -np.inf:
            continue
        mass = calls.probs(prefix)[candidates].sum()
        if mass > 0:
            terms.append(base + np.log(mass))
    return float(logsumexp(terms)) if terms else -np.inf


def char_prefix_log_prob(token_model, tokenizer: Tokenizer, text: str, method: str = "corrected") -> float:
    r""":math:`\log P(\text{the string starts with text})` from a token-level model, by ``"corrected"`` or ``"byte"``.

    Exact for the exact token model (theorem 11); see the module docstring for the two sums.
    """
    owner = "char_prefix_log_prob"
    tokenizer = _check_tokenizer(owner, tokenizer)
    text = tokenizer._check_text(owner, "text", text)
    method = check_choice(owner, "method", method, ("corrected", "byte"))
    return _log_prefix_mass(TokenModelCalls(owner, token_model, tokenizer), tokenizer, text, method)


def _first_chars(tokenizer: Tokenizer, probs: np.ndarray) -> np.ndarray:
    return np.bincount(tokenizer.char_ids, weights=probs[: tokenizer.num_tokens], minlength=len(tokenizer.alphabet))


def _normalised(owner: str, masses: np.ndarray, what: str) -> np.ndarray:
    total = masses.sum()
    if not total > 0:
        raise ZeroProbabilityError(f"{owner}: {what} has probability 0 under the token model; no next character "
                                   "is defined (the model ends the text there, or never reaches the prompt)")
    return masses / total


def _reachable(owner: str, calls: TokenModelCalls, prefix, what: str) -> None:
    """Refuse a token prefix of probability 0 (its next-token law is undefined)."""
    if calls.prefix_log_prob(prefix) == -np.inf:
        raise ZeroProbabilityError(f"{owner}: {what} has probability 0 under the token model; no next character "
                                   "is defined")


def _law(owner: str, calls: TokenModelCalls, tokenizer: Tokenizer, prompt: str, method: str) -> np.ndarray:
    if method == "naive" or (method == "token_healing" and not prompt):
        encoding = tokenizer.encode(prompt)
        _reachable(owner, calls, encoding, f"the encoded prompt {prompt!r}")
        return _normalised(owner, _first_chars(tokenizer, calls.probs(encoding)),
                           f"a next token after the encoded prompt {prompt!r}")
    if method == "token_healing":
        encoding = tokenizer.encode(prompt)
        last = tokenizer.tokens[encoding[-1]]
        _reachable(owner, calls, encoding[:-1], f"the prompt {prompt!r} without its last token {last!r}")
        probs = calls.probs(encoding[:-1])
        masses = np.zeros(len(tokenizer.alphabet))
        for token_id, token in enumerate(tokenizer.tokens):
            if len(token) > len(last) and token.startswith(last):
                masses[tokenizer.alphabet.index(token[len(last)])] += probs[token_id]
        if probs[encoding[-1]] > 0:
            masses += probs[encoding[-1]] * _law(owner, calls, tokenizer, prompt, "naive")
        return _normalised(owner, masses, f"a token extending the backed-off token {last!r} of the prompt {prompt!r}")
    logs = np.array([_log_prefix_mass(calls, tokenizer, prompt + char, method) for char in tokenizer.alphabet])
    if not np.any(np.isfinite(logs)):
        raise ZeroProbabilityError(f"{owner}: the prompt {prompt!r} followed by any character has probability 0 "
                                   "under the token model; no next character is defined")
    return np.exp(logs - logsumexp(logs))


def next_char_law(token_model, tokenizer: Tokenizer, prompt: str, method: str = "corrected") -> np.ndarray:
    r"""The law of the character after ``prompt``, read from a token-level model, shape ``(len(alphabet),)``.

    Parameters
    ----------
    token_model
        ``num_tokens`` and ``next_token_probs(prefix) -> (num_tokens + 1,)`` (last entry: end of text).
    tokenizer
        The tokenizer the model's tokens come from.
    prompt
        A string over the tokenizer's alphabet (may be empty).
    method
        ``"naive"``, ``"token_healing"``, ``"corrected"`` or ``"byte"`` (module docstring).
        Given the exact token model (:func:`~arprob.tokenization.induced_token_model`), the last two
        equal the character chain's conditional :math:`P(x_{n+1} \mid x_{1:n})` (theorem 11); the
        first two do not in general.

    Raises
    ------
    ZeroProbabilityError
        If the prompt has probability 0 under the model's reading, so no next character is defined.
    """
    owner = "next_char_law"
    tokenizer = _check_tokenizer(owner, tokenizer)
    prompt = tokenizer._check_text(owner, "prompt", prompt)
    method = check_choice(owner, "method", method, METHODS)
    return _law(owner, TokenModelCalls(owner, token_model, tokenizer), tokenizer, prompt, method)
