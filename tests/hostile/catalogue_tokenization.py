"""Hostile-input catalogue of :mod:`arprob.tokenization`: the two tokenizers (constructors, the HuggingFace
reader, encode / decode / is_valid / covers), the induced token model and its methods, the next-character
laws, the samplers and the learned token network (see :mod:`hostile.framework` for the vocabulary).

Every ``build()`` is a tiny valid call: the alphabet ``'ab'``, the vocabulary ``['a', 'b', 'aa']`` (maximum
prefix encoding, or BPE with the one merge ``('a', 'a')``), a first-order character chain of ``N = 6``
characters, and a network trained for one step.  Owners with a ``#suffix`` are a second entry for the same
function (the suffix is not part of the messages).  ``skip`` lists the hostile specs that are valid input
for that argument, each with the reason; the valid-but-extreme inputs come back as :data:`EDGES` with their
known answer.

Values inside specs travel to the worker by pickling, so the bad token models and HuggingFace stand-ins
used as ``extra`` specs are module-level classes; the bad tokenizers and character models are built from
arprob when the catalogue is loaded (both pickle).
"""

from __future__ import annotations

import json

import numpy as np

from hostile.framework import Edge, Entry

ALPHABET = "ab"
VOCAB = ["a", "b", "aa"]
N = 6  # characters of text the induced model describes
T = len(VOCAB)  # tokens (id T is the end of the text)


def huge(name):
    """Both the fixed and the hypothesis-drawn huge value of ``name`` (for skips where a huge value is valid).

    Unused so far: every count of this package has a maximum, or a memory or work estimate that refuses a huge
    value, so no huge value is valid input here."""
    return ((name, "huge"), (name, "random-huge"))


def _key():
    import jax

    return jax.random.key(0)


def _chain(length=N):
    """First-order chain on {a, b}: P(a -> a) = 0.6, P(b -> a) = 0.3, uniform start."""
    from arprob import MarkovChain

    return MarkovChain(np.array([0.5, 0.5]), np.array([[0.6, 0.4], [0.3, 0.7]]), length)


def _max_prefix():
    from arprob.tokenization import MaxPrefixTokenizer

    return MaxPrefixTokenizer(VOCAB, ALPHABET)


def _bpe():
    from arprob.tokenization import BPETokenizer

    return BPETokenizer([("a", "a")], ALPHABET)


def _exact(tokenizer=None):
    from arprob.tokenization import induced_token_model

    return induced_token_model(_chain(), tokenizer or _max_prefix(), N)


def _hf():
    from tokenizers import Tokenizer, models

    return Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "aa": 2}, merges=[("a", "a")]))


#: encodings of 'aaba', 'baab' and 'abaa' (three tokens each, so also a rectangular int array)
ENCODINGS = [[2, 1, 0], [1, 2, 1], [0, 1, 2]]


def _network():
    from arprob.tokenization import train_token_network

    return train_token_network(_key(), ENCODINGS, _max_prefix(), context_size=1, hidden_size=4, num_layers=1,
                               num_steps=1, batch_size=8, learning_rate=1e-2)


# -- module-level bad token models and HuggingFace stand-ins (picklable extras) -------------------

class _TokenModel:
    num_tokens = T

    def next_token_probs(self, prefix):
        return np.full(T + 1, 1.0 / (T + 1))


class UniformTokenModel(_TokenModel):
    """A valid token model that never ends the text and has no ``num_chars`` (so no length limit)."""

    def next_token_probs(self, prefix):
        return np.append(np.full(T, 1.0 / T), 0.0)


class NanTokenModel(_TokenModel):
    def next_token_probs(self, prefix):
        return np.full(T + 1, np.nan)


class WrongShapeTokenModel(_TokenModel):
    def next_token_probs(self, prefix):
        return np.full(T, 1.0 / T)  # no end-of-text entry


class UnnormalisedTokenModel(_TokenModel):
    def next_token_probs(self, prefix):
        return np.full(T + 1, 0.5)


class StringTokenModel(_TokenModel):
    def next_token_probs(self, prefix):
        return "probs"


class RaisingTokenModel(_TokenModel):
    def next_token_probs(self, prefix):
        raise RuntimeError("the user's model failed")


class NoneSizeTokenModel(_TokenModel):
    num_tokens = None


class FloatSizeTokenModel(_TokenModel):
    num_tokens = T + 0.5


class WrongSizeTokenModel(_TokenModel):
    num_tokens = T + 1

    def next_token_probs(self, prefix):
        return np.full(T + 2, 1.0 / (T + 2))


class OtherTokenizerModel(_TokenModel):
    """A token model built for another tokenizer of the same size (['a', 'b', 'bb'])."""

    @property
    def tokenizer(self):
        from arprob.tokenization import MaxPrefixTokenizer

        return MaxPrefixTokenizer(["a", "b", "bb"], ALPHABET)


BAD_TOKEN_MODELS = tuple((label, "const", cls()) for label, cls in (
    ("nan-probs", NanTokenModel), ("wrong-shape", WrongShapeTokenModel), ("unnormalised", UnnormalisedTokenModel),
    ("str-probs", StringTokenModel), ("raises", RaisingTokenModel), ("none-num-tokens", NoneSizeTokenModel),
    ("float-num-tokens", FloatSizeTokenModel), ("wrong-num-tokens", WrongSizeTokenModel),
    ("other-tokenizer", OtherTokenizerModel)))


class _HF:
    """A stand-in for a ``tokenizers.Tokenizer`` whose JSON is ``text``."""

    text = "{}"

    def to_str(self):
        return self.text


class NotJsonHF(_HF):
    text = "not json"


class NoModelHF(_HF):
    text = json.dumps({"version": "1.0"})


class ModelNotDictHF(_HF):
    text = json.dumps({"model": 3})


class WordPieceHF(_HF):
    text = json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}})


class NoMergesHF(_HF):
    text = json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}})


class BadMergeHF(_HF):
    text = json.dumps({"model": {"type": "BPE", "merges": [["a", "c"]]}})


class NonStringMergeHF(_HF):
    text = json.dumps({"model": {"type": "BPE", "merges": [[1, 2]]}})


class PreTokenizerHF(_HF):
    """A BPE whose words are split first: its encodings are not those of the merges on the whole text."""

    text = json.dumps({"pre_tokenizer": {"type": "Whitespace"},
                       "model": {"type": "BPE", "merges": [["a", "a"]]}})


class DropoutHF(_HF):
    """A BPE with dropout: a random encoder, not a deterministic one."""

    text = json.dumps({"model": {"type": "BPE", "dropout": 0.1, "merges": [["a", "a"]]}})


class RaisingHF(_HF):
    def to_str(self):
        raise RuntimeError("cannot serialise")


BAD_HF = tuple((label, "const", cls()) for label, cls in (
    ("not-json", NotJsonHF), ("no-model", NoModelHF), ("model-not-dict", ModelNotDictHF),
    ("wordpiece", WordPieceHF), ("no-merges", NoMergesHF), ("unknown-merge-part", BadMergeHF),
    ("non-string-merge", NonStringMergeHF), ("pre-tokenizer", PreTokenizerHF), ("dropout", DropoutHF),
    ("to-str-raises", RaisingHF)))

BAD_ALPHABETS = (("repeated", "const", "aab"), ("empty", "const", ""), ("list", "const", ["a", "b"]),
                 ("bytes", "const", b"ab"))
BAD_VOCABS = (("non-string-token", "const", ["a", "b", 3]), ("empty-token", "const", ["a", "b", ""]),
              ("repeated", "const", ["a", "b", "a"]), ("bytes", "const", b"ab"))
#: bad only against the alphabet 'ab' (read from the vocabulary, they are valid over 'a' and 'abc')
BAD_VOCABS_FOR_AB = (("missing-char", "const", ["a", "aa"]), ("outside-alphabet", "const", ["a", "b", "c"]))
BAD_MERGES = (("unknown-part", "const", [("a", "c")]), ("triple", "const", [("a", "a", "a")]),
              ("repeated", "const", [("a", "a"), ("a", "a")]), ("non-string", "const", [(1, 2)]),
              ("remakes-a-char", "const", [("a", "b"), ("a", "b")]))
#: text for encode / covers / char_prefix_log_prob (the "model" kind gives None, a str outside the alphabet, 3)
BAD_TEXTS = (("bytes", "const", b"ab"), ("not-in-alphabet", "const", "abc"), ("list", "const", ["a", "b"]))
#: a prompt longer than the N = 6 characters the exact model describes: no next character is defined
LONG_PROMPTS = (("longer-than-text", "const", "a" * (N + 1)), ("far-longer-than-text", "const", "ab" * N))
BAD_IDS = (("2d", "const", np.array([[0, 1]])), ("str-list", "const", ["a", "b"]))


def _tokenizer_extras():
    """Tokenizers the valid token model was not built for (built when the catalogue loads; they pickle)."""
    from arprob.tokenization import MaxPrefixTokenizer

    return (("other-alphabet", "const", MaxPrefixTokenizer(["a", "b", "c"], "abc")),
            ("other-vocab", "const", MaxPrefixTokenizer(["a", "b", "bb"], ALPHABET)),
            ("bigger-vocab", "const", MaxPrefixTokenizer(["a", "b", "aa", "ab"], ALPHABET)))


def _char_model_extras():
    from arprob import MarkovChain, NGram

    return (("three-chars", "const", NGram(np.full((4, 3), 1.0 / 3), length=N, context_size=1)),
            ("batched", "const", MarkovChain(np.full((2, 2), 0.5), np.full((2, 2, 2), 0.5), N)),
            ("tokenizer-instead", "const", _max_prefix()))


# -- tokenizers ---------------------------------------------------------------------------------

#: ids of any length are valid (a shorter sequence; the empty sequence decodes to "" and is an encoding)
IDS_VALID = frozenset({("ids", "wrong-length"), ("ids", "empty")})


def _tokenizer_entries():
    from arprob.tokenization import BPETokenizer, MaxPrefixTokenizer

    entries = [
        Entry("MaxPrefixTokenizer", lambda: (MaxPrefixTokenizer, dict(vocab=VOCAB, alphabet=ALPHABET)),
              {"vocab": "model", "alphabet": "choice"},
              extra={"vocab": BAD_VOCABS + BAD_VOCABS_FOR_AB, "alphabet": BAD_ALPHABETS},
              # alphabet=None is the default (read from the single-character tokens)
              skip=frozenset({("alphabet", "none")})),
        # the alphabet read from the vocabulary: a bad vocabulary must still be named as such
        Entry("MaxPrefixTokenizer#2", lambda: (MaxPrefixTokenizer, dict(vocab=VOCAB)),
              {"vocab": "model"}, extra={"vocab": BAD_VOCABS + (("no-single-chars", "const", ["aa", "ab"]),)}),
        Entry("BPETokenizer", lambda: (BPETokenizer, dict(merges=[("a", "a")], alphabet=ALPHABET)),
              {"merges": "model", "alphabet": "choice"},
              extra={"merges": BAD_MERGES, "alphabet": BAD_ALPHABETS}),
        Entry("BPETokenizer.from_huggingface",
              lambda: (BPETokenizer.from_huggingface, dict(tokenizer=_hf(), alphabet=ALPHABET)),
              {"tokenizer": "model", "alphabet": "choice"},
              extra={"tokenizer": BAD_HF, "alphabet": BAD_ALPHABETS + (("missing-merged-char", "const", "b"),)}),
    ]
    for name, make in (("MaxPrefixTokenizer", _max_prefix), ("BPETokenizer", _bpe)):
        def method(method_name, make=make, **kwargs):
            return lambda: (getattr(make(), method_name), dict(kwargs))

        entries += [
            Entry(f"{name}.encode", method("encode", text="aababb"), {"text": "model"}, extra={"text": BAD_TEXTS}),
            Entry(f"{name}.decode", method("decode", ids=[2, 1, 0, 1, 1]), {"ids": "tokens"},
                  extra={"ids": BAD_IDS}, skip=IDS_VALID),
            Entry(f"{name}.is_valid", method("is_valid", ids=[2, 1, 0, 1, 1]), {"ids": "tokens"},
                  extra={"ids": BAD_IDS}, skip=IDS_VALID),
            Entry(f"{name}.covers", method("covers", text="aab", valid_only=True),
                  {"text": "model", "valid_only": "bool"}, extra={"text": BAD_TEXTS}),
        ]
    return entries


# -- the induced token model --------------------------------------------------------------------

#: a token prefix of any length is valid (a shorter prefix; the empty prefix is the start of the text)
PREFIX_VALID = frozenset({("prefix", "wrong-length"), ("prefix", "empty")})


def _induced_entries():
    from arprob.tokenization import induced_token_model

    def method(name, **kwargs):
        return lambda: (getattr(_exact(), name), dict(kwargs))

    return [
        Entry("induced_token_model", lambda: (induced_token_model, dict(char_model=_chain(), tokenizer=_max_prefix(),
                                                                        num_chars=N)),
              {"char_model": "model", "tokenizer": "model", "num_chars": "count"},
              extra={"char_model": _char_model_extras(), "tokenizer": _tokenizer_extras()[:1]}),
        Entry("InducedTokenModel.next_token_probs", method("next_token_probs", prefix=[2, 1]),
              {"prefix": "tokens"}, extra={"prefix": BAD_IDS + (("not-an-encoding", "const", [0, 0]),)},
              skip=PREFIX_VALID),
        Entry("InducedTokenModel.prefix_log_prob", method("prefix_log_prob", prefix=[2, 1]),
              {"prefix": "tokens"}, extra={"prefix": BAD_IDS}, skip=PREFIX_VALID),
        # a shorter or empty sequence is valid (it is not a text of N characters: log-probability -inf, an edge)
        Entry("InducedTokenModel.log_prob", method("log_prob", ids=[2, 1, 0, 1, 1]),
              {"ids": "tokens"}, extra={"ids": BAD_IDS}, skip=IDS_VALID),
    ]


# -- next-character laws and samplers -----------------------------------------------------------

def _law_entries():
    from arprob.tokenization import (
        char_prefix_log_prob,
        continuation_law,
        next_char_law,
        sample_continuation,
    )

    model_args = {"token_model": "model", "tokenizer": "model"}

    def extras(**more):
        return {"token_model": BAD_TOKEN_MODELS, "tokenizer": _tokenizer_extras(), **more}

    def law(method):
        return lambda: (next_char_law, dict(token_model=_exact(), tokenizer=_max_prefix(), prompt="a", method=method))

    prompt_extras = BAD_TEXTS + LONG_PROMPTS
    entries = [
        Entry("next_char_law", law("corrected"), {**model_args, "prompt": "model", "method": "choice"},
              extra=extras(prompt=prompt_extras)),
        # the other three readings fail in their own ways on a prompt the model cannot reach
        *(Entry(f"next_char_law#{i}", law(method), {**model_args, "prompt": "model"},
                extra=extras(prompt=prompt_extras))
          for i, method in enumerate(("naive", "token_healing", "byte"), start=2)),
        # a text longer than N is valid (probability 0: log-probability -inf, an edge)
        Entry("char_prefix_log_prob", lambda: (char_prefix_log_prob, dict(token_model=_exact(), tokenizer=_max_prefix(),
                                                                          text="aab", method="corrected")),
              {**model_args, "text": "model", "method": "choice"}, extra=extras(text=BAD_TEXTS)),
    ]
    for method in ("cover", "naive"):
        suffix = "" if method == "cover" else "#2"
        entries += [
            Entry(f"sample_continuation{suffix}",
                  lambda method=method: (sample_continuation, dict(key=_key(), token_model=_exact(),
                                                                   tokenizer=_max_prefix(), prompt="a", num_chars=3,
                                                                   num_samples=5, method=method)),
                  {"key": "key", **model_args, "prompt": "model", "num_chars": "count", "num_samples": "count",
                   "method": "choice"},
                  extra=extras(prompt=BAD_TEXTS + LONG_PROMPTS,
                               num_chars=(("past-the-text", "const", N),))),
            Entry(f"continuation_law{suffix}",
                  lambda method=method: (continuation_law, dict(token_model=_exact(), tokenizer=_max_prefix(),
                                                                prompt="a", num_chars=3, method=method)),
                  {**model_args, "prompt": "model", "num_chars": "count", "method": "choice"},
                  extra=extras(prompt=BAD_TEXTS + LONG_PROMPTS,
                               num_chars=(("past-the-text", "const", N),))),
        ]
    return entries


# -- the learned model --------------------------------------------------------------------------

def _learned_entries():
    from arprob.tokenization import sample_encodings, train_token_network

    count = "count"
    return [
        Entry("sample_encodings", lambda: (sample_encodings, dict(key=_key(), char_model=_chain(),
                                                                  tokenizer=_max_prefix(), num_chars=N,
                                                                  num_samples=4)),
              {"key": "key", "char_model": "model", "tokenizer": "model", "num_chars": count, "num_samples": count},
              extra={"char_model": _char_model_extras(), "tokenizer": _tokenizer_extras()[:1],
                     "num_chars": (("past-the-chain", "const", N + 1),)}),
        Entry("train_token_network",
              lambda: (train_token_network, dict(key=_key(), encodings=ENCODINGS, tokenizer=_max_prefix(),
                                                 context_size=1, hidden_size=4, num_layers=1, num_steps=1,
                                                 batch_size=8, learning_rate=1e-2)),
              {"key": "key", "encodings": "tokens", "tokenizer": "model", "context_size": count,
               "hidden_size": count, "num_layers": count, "num_steps": count, "batch_size": count,
               "learning_rate": "positive"},
              extra={"encodings": (("all-empty", "const", [[], []]), ("string-row", "const", [[0, 1], "ab"]),
                                   ("float-row", "const", [[0, 1], [0.5]]))},
              # shorter encodings are valid (any complete texts)
              skip=frozenset({("encodings", "wrong-length")})),
        Entry("TokenNetwork.next_token_probs", lambda: (_network().next_token_probs, dict(prefix=[2, 1])),
              {"prefix": "tokens"}, extra={"prefix": BAD_IDS},
              # any token sequence is a valid context of the network (it gives every sequence a law)
              skip=PREFIX_VALID),
    ]


# -- edges --------------------------------------------------------------------------------------

#: the chain's conditionals: first character, after 'a', after 'b'
FIRST, AFTER_A, AFTER_B = np.array([0.5, 0.5]), np.array([0.6, 0.4]), np.array([0.3, 0.7])


def _close(a, b, atol=1e-12):
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=0.0, atol=atol)


def _edges():
    from arprob.errors import EnumerationTooLargeError, ZeroProbabilityError
    from arprob.tokenization import (
        char_prefix_log_prob,
        continuation_law,
        next_char_law,
        sample_continuation,
    )

    edges = []

    def law_after(prompt, method, tokenizer=None):
        tokenizer = tokenizer or _max_prefix()
        return next_char_law(_exact(tokenizer), tokenizer, prompt, method)

    for method in ("corrected", "byte"):  # theorem 11: both corrections give the chain's conditionals exactly
        for name, make in (("max-prefix", _max_prefix), ("bpe", _bpe)):
            edges.append(Edge(f"tokenization-{method}-{name}-empty-prompt-is-the-first-char-law",
                              lambda method=method, make=make: law_after("", method, make()),
                              check=lambda r: _close(r, FIRST)))
            edges.append(Edge(f"tokenization-{method}-{name}-after-a",
                              lambda method=method, make=make: law_after("aba", method, make()),
                              check=lambda r: _close(r, AFTER_A)))
    # the naive reading after 'a' conditions on a token boundary: 'a' then 'a' would have been 'aa'
    edges.append(Edge("tokenization-naive-after-a-is-biased", lambda: law_after("a", "naive"),
                      check=lambda r: _close(r, np.array([0.0, 1.0]))))

    def full_prompt(method):
        return lambda: law_after("ab" * (N // 2), method)

    for method in ("naive", "token_healing", "corrected", "byte"):  # N characters: the text has ended
        edges.append(Edge(f"tokenization-{method}-prompt-of-N-chars-refused", full_prompt(method),
                          check=lambda r: False, raises=ZeroProbabilityError, owner="next_char_law"))

    def prefix_log_prob(text, method="corrected"):
        return lambda: char_prefix_log_prob(_exact(), _max_prefix(), text, method)

    edges.append(Edge("tokenization-empty-text-prefix-log-prob-is-zero", prefix_log_prob(""), check=lambda r: r == 0.0))
    for method in ("corrected", "byte"):
        for size in (N + 1, 2 * N):  # longer than the text: probability 0
            edges.append(Edge(f"tokenization-{method}-text-of-{size}-chars-is-minus-inf",
                              prefix_log_prob("a" * size, method), check=lambda r: r == -np.inf))
            edges.append(Edge(f"tokenization-{method}-text-ab-{size}-chars-is-minus-inf",
                              prefix_log_prob(("ab" * size)[:size], method), check=lambda r: r == -np.inf))

    def exact_log_prob(ids):
        return lambda: _exact().log_prob(ids)

    edges.append(Edge("tokenization-log-prob-of-a-non-encoding-is-minus-inf", exact_log_prob([0, 0, 1, 0, 1, 1]),
                      check=lambda r: r == -np.inf))
    edges.append(Edge("tokenization-log-prob-of-a-short-text-is-minus-inf", exact_log_prob([2, 1]),
                      check=lambda r: r == -np.inf))
    edges.append(Edge("tokenization-log-prob-of-the-empty-text-is-minus-inf", exact_log_prob([]),
                      check=lambda r: r == -np.inf))
    edges.append(Edge("tokenization-prefix-log-prob-of-the-empty-prefix-is-zero",
                      lambda: _exact().prefix_log_prob([]), check=lambda r: abs(r) < 1e-12))
    edges.append(Edge("tokenization-next-token-after-a-non-encoding-refused",
                      lambda: _exact().next_token_probs([0, 0]), check=lambda r: False,
                      raises=ZeroProbabilityError, owner="InducedTokenModel.next_token_probs"))
    edges.append(Edge("tokenization-next-token-after-N-chars-is-the-end",
                      lambda: _exact().next_token_probs([2, 2, 2]), check=lambda r: _close(r, np.eye(T + 1)[T])))
    edges.append(Edge("tokenization-covers-of-empty-text-are-none", lambda: _max_prefix().covers(""),
                      check=lambda r: r == []))
    edges.append(Edge("tokenization-decode-of-nothing-is-empty", lambda: _bpe().decode([]), check=lambda r: r == ""))
    edges.append(Edge("tokenization-encode-of-empty-text-is-empty", lambda: _bpe().encode(""), check=lambda r: r == []))

    def cover_law():
        return continuation_law(_exact(), _max_prefix(), "a", 2)

    edges.append(Edge("tokenization-cover-law-is-the-chain", cover_law,
                      check=lambda r: _close(r, AFTER_A[:, None] * np.array([AFTER_A, AFTER_B]))))
    edges.append(Edge("tokenization-cover-law-up-to-the-last-char",
                      lambda: continuation_law(_exact(), _max_prefix(), "ab" * 2 + "a", 1),
                      check=lambda r: _close(r, AFTER_A)))
    edges.append(Edge("tokenization-sample-of-one-char-up-to-the-end",
                      lambda: sample_continuation(_key(), _exact(), _max_prefix(), "aaaaa", 1, 3),
                      check=lambda r: np.shape(r) == (3, 1)))

    def impossible_prompt(function, method):
        """A chain that never follows 'a' by 'b': the prompt 'ab' has probability 0."""
        from arprob import MarkovChain
        from arprob.tokenization import induced_token_model

        chain = MarkovChain(np.array([0.5, 0.5]), np.array([[1.0, 0.0], [0.5, 0.5]]), N)
        model = induced_token_model(chain, _max_prefix(), N)
        if function is next_char_law:
            return lambda: next_char_law(model, _max_prefix(), "ab", method)
        if function is continuation_law:
            return lambda: continuation_law(model, _max_prefix(), "ab", 2, method=method)
        return lambda: sample_continuation(_key(), model, _max_prefix(), "ab", 2, 4, method=method)

    for method in ("naive", "token_healing", "corrected", "byte"):
        edges.append(Edge(f"tokenization-{method}-impossible-prompt-refused",
                          lambda method=method: impossible_prompt(next_char_law, method)(), check=lambda r: False,
                          raises=ZeroProbabilityError, owner="next_char_law"))
    for function in (continuation_law, sample_continuation):
        for method in ("cover", "naive"):
            edges.append(Edge(f"tokenization-{function.__name__}-{method}-impossible-prompt-refused",
                              lambda function=function, method=method: impossible_prompt(function, method)(),
                              check=lambda r: False, raises=ZeroProbabilityError, owner=function.__name__))

    def huge_draw():  # 10**4 characters x 10**8 samples of uniforms: terabytes, refused before they are drawn
        return sample_continuation(_key(), UniformTokenModel(), _max_prefix(), "a", 10_000, 10**8)

    edges.append(Edge("tokenization-sample-of-terabytes-refused", huge_draw, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="sample_continuation"))

    def huge_batch():  # one step of a 10**10-row minibatch: refused before the batch is drawn
        from arprob.tokenization import train_token_network

        return train_token_network(_key(), ENCODINGS, _max_prefix(), context_size=1, hidden_size=4, num_layers=1,
                                   num_steps=1, batch_size=10**10)

    edges.append(Edge("tokenization-train-batch-of-1e10-refused", huge_batch, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="train_token_network"))
    return edges


ENTRIES = _tokenizer_entries() + _induced_entries() + _law_entries() + _learned_entries()
EDGES = _edges()
