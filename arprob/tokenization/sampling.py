r"""Generating characters from a token-level model, with and without tokenization bias.

Two samplers continue a character prompt :math:`x` (length :math:`n`) by :math:`m` characters:

``"cover"`` (unbiased; Phan et al., 2024)
    Draw a cover :math:`c` of :math:`x` (:meth:`~arprob.tokenization.Tokenizer.covers`, the encodings
    whose last token reaches past :math:`x`) with probability :math:`\propto P(c)`, continue with
    tokens from the model until :math:`n + m` characters are decoded, return characters
    :math:`n+1 .. n+m`.  Given the exact token model its law is the character chain's
    :math:`P(x_{n+1:n+m} \mid x)`: the covers partition the strings that start with :math:`x`
    (theorem 11, part 2), so the pair (cover, continuation) is a draw of the encoding of a string
    conditioned to start with :math:`x`.
``"naive"`` (biased)
    Encode :math:`x` and continue from :math:`\mathrm{encode}(x)`: the law conditioned on a token
    boundary after :math:`x` (theorem 11, part 3).

The end-of-text token is never drawn here (the continuation is conditioned on the text going
on; the exact token model never ends a text before its :math:`N` characters).

Both samplers run on the batch at once: samples that share a token prefix share one model call,
and each round draws one token for every unfinished sample by inverse CDF on uniforms from
``key``.  :func:`continuation_law` computes the exact law of either sampler by expanding the
same token tree, in float64.
"""

from __future__ import annotations

import jax
import numpy as np

from arprob._validation import check_choice, check_enumeration, check_int, check_key, check_memory
from arprob.errors import InvalidArgumentError, ZeroProbabilityError
from arprob.tokenization.correction import TokenModelCalls, _check_tokenizer
from arprob.tokenization.tokenizers import Tokenizer

__all__ = ["SAMPLERS", "continuation_law", "sample_continuation"]

#: The samplers of :func:`sample_continuation`.
SAMPLERS = ("cover", "naive")


def _check_args(owner: str, token_model, tokenizer, prompt, num_chars, method):
    tokenizer = _check_tokenizer(owner, tokenizer)
    prompt = tokenizer._check_text(owner, "prompt", prompt)
    num_chars = check_int(owner, "num_chars", num_chars, minimum=1, maximum=10_000)
    method = check_choice(owner, "method", method, SAMPLERS)
    calls = TokenModelCalls(owner, token_model, tokenizer)
    total = getattr(token_model, "num_chars", None)
    if isinstance(total, int) and len(prompt) + num_chars > total:
        room = total - len(prompt)
        fix = f"ask for at most num_chars={room}" if room >= 1 else f"use a prompt of fewer than {total} characters"
        raise InvalidArgumentError(
            f"{owner}: the prompt ({len(prompt)} characters) plus num_chars={num_chars} exceeds the "
            f"{total} characters of text the token model describes; {fix}")
    return tokenizer, prompt, num_chars, method, calls


def _starts(calls: TokenModelCalls, tokenizer: Tokenizer, prompt: str, method: str):
    """Start prefixes and their probabilities: the covers of ``prompt`` (or its encoding, for ``"naive"``)."""
    if method == "naive" or not prompt:
        encoding = tuple(tokenizer.encode(prompt))
        if calls.prefix_log_prob(encoding) == -np.inf:
            raise ZeroProbabilityError(f"{calls.owner}: the encoded prompt {prompt!r} has probability 0 under the "
                                       "token model; no continuation is defined")
        return [encoding], np.ones(1)
    starts, logs = [], []
    for prefix, token in tokenizer._covers(prompt, valid_only=True):
        base = calls.prefix_log_prob(prefix)
        mass = calls.probs(prefix)[token] if base > -np.inf else 0.0
        if mass > 0:
            starts.append(tuple(prefix) + (token,))
            logs.append(base + np.log(mass))
    if not starts:
        raise ZeroProbabilityError(f"{calls.owner}: the prompt {prompt!r} has probability 0 under the token model "
                                   "(no cover of it has positive probability)")
    logs = np.array(logs)
    weights = np.exp(logs - logs.max())
    return starts, weights / weights.sum()


def _next(calls: TokenModelCalls, prefix) -> np.ndarray:
    """The next-token law without the end of text, renormalised."""
    probs = calls.probs(prefix)[:-1]
    total = probs.sum()
    if not total > 0:
        raise ZeroProbabilityError(f"{calls.owner}: the token model ends the text after {list(prefix)} with "
                                   "probability 1; ask for fewer characters")
    return probs / total


def _chars(tokenizer: Tokenizer, prefix, start: int, num_chars: int) -> np.ndarray:
    text = tokenizer.decode(prefix)[start:start + num_chars]
    return np.array([tokenizer.alphabet.index(c) for c in text], dtype=np.int32)


def sample_continuation(key, token_model, tokenizer: Tokenizer, prompt: str, num_chars: int, num_samples: int, *,
                        method: str = "cover") -> np.ndarray:
    r"""Draw ``num_samples`` continuations of ``num_chars`` characters after ``prompt`` from a token-level model.

    Parameters
    ----------
    key
        A PRNG key.
    token_model
        ``num_tokens`` and ``next_token_probs(prefix) -> (num_tokens + 1,)`` (last entry: end of text),
        e.g. :func:`~arprob.tokenization.induced_token_model` or a trained
        :class:`~arprob.tokenization.TokenNetwork`.
    tokenizer, prompt, num_chars
        The tokenizer of the model's tokens; the prompt (may be empty); :math:`m`.
    num_samples
        Number of continuations.
    method
        ``"cover"`` (unbiased: its law is the character chain's conditional when the model is exact)
        or ``"naive"`` (continue from the prompt's encoding; biased). See the module docstring.

    Returns
    -------
    numpy.ndarray
        Character ids, shape ``(num_samples, num_chars)``, int32.  Uniforms are drawn with
        :func:`jax.random.uniform` in the default float dtype (float32 unless x64 is on: a bias of
        at most :math:`2^{-24}` per draw).
    """
    owner = "sample_continuation"
    key = check_key(owner, key)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1, maximum=10**8)
    tokenizer, prompt, num_chars, method, calls = _check_args(owner, token_model, tokenizer, prompt, num_chars,
                                                              method)
    check_memory(owner, f"the uniforms of num_samples={num_samples:,} samples of num_chars={num_chars:,} characters",
                 (num_chars + 1, num_samples), itemsize=12,
                 fix="draw fewer samples per call (one call per jax.random.split key) or fewer characters")
    starts, weights = _starts(calls, tokenizer, prompt, method)
    target = len(prompt) + num_chars
    uniforms = np.asarray(jax.random.uniform(key, (num_chars + 1, num_samples)), np.float64)

    nodes: dict[tuple[int, ...], int] = {}
    prefixes: list[tuple[int, ...]] = []
    lengths: list[int] = []

    def node(prefix):
        index = nodes.get(prefix)
        if index is None:
            index = nodes[prefix] = len(prefixes)
            prefixes.append(prefix)
            lengths.append(len(tokenizer.decode(prefix)))
        return index

    start_ids = np.array([node(s) for s in starts])
    current = start_ids[np.minimum(np.searchsorted(np.cumsum(weights), uniforms[0], side="right"), len(starts) - 1)]
    for round_ in range(1, num_chars + 1):
        active = np.flatnonzero(np.array(lengths)[current] < target)
        if active.size == 0:
            break
        unique, inverse = np.unique(current[active], return_inverse=True)
        cdfs = np.cumsum(np.stack([_next(calls, prefixes[u]) for u in unique]), axis=1)
        rows = cdfs[inverse]
        tokens = np.minimum((uniforms[round_, active][:, None] >= rows).sum(axis=1), tokenizer.num_tokens - 1)
        pairs, pair_inverse = np.unique(np.stack([current[active], tokens], axis=1), axis=0, return_inverse=True)
        children = np.array([node(prefixes[parent] + (int(token),)) for parent, token in pairs])
        current[active] = children[pair_inverse.ravel()]
    finals, final_inverse = np.unique(current, return_inverse=True)
    table = np.stack([_chars(tokenizer, prefixes[f], len(prompt), num_chars) for f in finals])
    return table[final_inverse.ravel()]


def continuation_law(token_model, tokenizer: Tokenizer, prompt: str, num_chars: int, *,
                     method: str = "cover") -> np.ndarray:
    r"""The exact law of :func:`sample_continuation`, shape ``(A,) * num_chars`` over character ids (float64).

    Expands the token tree from the start prefixes (covers, or the prompt's encoding) until every
    branch has decoded ``len(prompt) + num_chars`` characters.  Refused up front when
    :math:`A^m` would not fit (:func:`~arprob._validation.check_enumeration`).
    """
    owner = "continuation_law"
    tokenizer, prompt, num_chars, method, calls = _check_args(owner, token_model, tokenizer, prompt, num_chars,
                                                              method)
    size = len(tokenizer.alphabet)
    check_enumeration(owner, size, num_chars)
    law = np.zeros(size**num_chars)
    powers = size ** np.arange(num_chars - 1, -1, -1)
    target = len(prompt) + num_chars
    starts, weights = _starts(calls, tokenizer, prompt, method)
    stack = [(s, w, len(tokenizer.decode(s))) for s, w in zip(starts, weights)]
    while stack:
        prefix, weight, length = stack.pop()
        if length >= target:
            law[int(_chars(tokenizer, prefix, len(prompt), num_chars) @ powers)] += weight
            continue
        probs = _next(calls, prefix)
        for token in np.flatnonzero(probs > 0):
            stack.append((prefix + (int(token),), weight * probs[token], length + int(tokenizer.lengths[token])))
    return law.reshape((size,) * num_chars)
