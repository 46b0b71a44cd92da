"""Hostile-input catalogue of :mod:`arprob.markov`: :class:`~arprob.markov.MarkovView` (constructors and
methods), the decoding rule and model adapters, and the character-text helpers of
:mod:`arprob.markov.text` and :mod:`arprob.markov.char_models` (see :mod:`hostile.framework` for the vocabulary).

Every ``build()`` is a tiny valid call: an :class:`~arprob.NGram` with ``V = 2`` tokens and context size
``K = 2`` (4 windows, 6 states) seen as a window chain.  Owners with a ``#suffix`` are a second entry for
the same function (the suffix is not part of the messages).  ``skip`` lists the hostile specs that are
valid input for that argument, each with the reason; the valid-but-extreme inputs among them come back as
:data:`EDGES` with their known answer.

Values inside specs travel to the worker by pickling, so the bad callables, models and DFAs used as
``extra`` specs are module-level (functions, classes, plain tuples of arrays).
"""

from __future__ import annotations

import numpy as np

from hostile.framework import Edge, Entry

V, K, L = 2, 2, 3
W = V**K  # full windows



def _contains_pattern():
    from arprob.markov import contains_pattern

    return contains_pattern


def huge(name):
    """Both the fixed and the hypothesis-drawn huge value of ``name`` (for skips where a huge value is valid)."""
    return ((name, "huge"), (name, "random-huge"))

def _key():
    import jax

    return jax.random.key(0)


def _ngram():
    from arprob import NGram

    return NGram(np.full((V + 1, V + 1, V), 1.0 / V), length=L, context_size=K)


def _random_ngram(seed=1):
    import jax

    from arprob import NGram

    return NGram.random(jax.random.key(seed), length=L, vocab_size=V, context_size=K)


def _view(**kwargs):
    from arprob.markov import MarkovView

    return MarkovView(_ngram(), **kwargs)


def _table():
    """``(T**K, T)`` next-token table of a full-support chain (rows in base-T window order)."""
    return np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.2, 0.8]])


def _copy_table():
    """The next token repeats the last one with probability 0.7: greedy decoding makes (0, 0) and (1, 1)
    two absorbing loops."""
    return np.array([[0.7, 0.3], [0.3, 0.7], [0.7, 0.3], [0.3, 0.7]])


def _prompt():
    return np.array([0, 1])


def _text_ids():
    return np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0])


# -- module-level bad callables, models and DFAs (picklable extras) -----------------------------

def zero_logits(windows):
    return np.zeros((np.shape(windows)[0], V))


def nan_logits(windows):
    out = np.zeros((np.shape(windows)[0], V))
    out[:, 0] = np.nan
    return out


def wrong_width_logits(windows):
    return np.zeros((np.shape(windows)[0], V + 1))


def minus_inf_logits(windows):
    return np.full((np.shape(windows)[0], V), -np.inf)


def raising_logits(windows):
    raise RuntimeError("the user's model failed")


#: extra hostile values of a logits callable (the harness's "callable" kind is none / str / int)
BAD_LOGITS_FN = (("nan-logits", "const", nan_logits), ("wrong-width", "const", wrong_width_logits),
                 ("all-minus-inf", "const", minus_inf_logits), ("raises", "const", raising_logits))


class NanModel:
    """A next-token model (the protocol) whose logits are NaN."""

    vocab_size, context_size = V, K

    def next_token_logits(self, windows):
        return np.full((np.shape(windows)[0], V), np.nan)


class WrongSizeModel:
    """A protocol object whose sizes are not ints."""

    vocab_size, context_size = 2.5, K

    def next_token_logits(self, windows):
        return np.zeros((np.shape(windows)[0], V))


BAD_MODELS = (("nan-model", "const", NanModel()), ("float-vocab-model", "const", WrongSizeModel()))

#: extra hostile DFAs (a DFA is any 3-tuple (transitions (Q, V) ints, start, accepting (Q,) bools))
BAD_DFAS = (
    ("state-out-of-range", "const", (np.array([[0, 5], [1, 1]]), 0, np.array([False, True]))),
    ("wrong-width", "const", (np.array([[0, 1, 1], [1, 1, 1]]), 0, np.array([False, True]))),
    ("start-out-of-range", "const", (np.array([[0, 1], [1, 1]]), 7, np.array([False, True]))),
    ("float-transitions", "const", (np.array([[0.0, 1.0], [1.0, 1.0]]), 0, np.array([False, True]))),
    ("int-accepting", "const", (np.array([[0, 1], [1, 1]]), 0, np.array([0, 1]))),
    ("two-tuple", "const", (np.array([[0, 1], [1, 1]]), 0)),
)


def _dfa():
    """Accept once token 1 has been read."""
    from arprob import DFA

    return DFA(np.array([[0, 1], [1, 1]]), 0, np.array([False, True]))


BAD_DTYPES = (("int64", "const", np.int64), ("float16", "const", np.float16), ("complex", "const", np.complex128))
#: window-index arrays (starts=) that are not int arrays of indices in [0, T**K)
BAD_STARTS = (("float-list", "const", [0.5, 1.5]), ("nested", "const", [[0], [1, 2]]))
#: a context size the window table of which cannot fit (2**40 windows)
CONTEXT_40 = (("forty", "const", 40),)


def _and_table(view):
    """Build the view's table as well: the constructor is lazy, so a bad model shows at the first use."""
    return view, view.probs


# -- MarkovView: constructors ------------------------------------------------------------------

def _view_entries():
    from arprob.markov import MarkovView

    def construct(**kwargs):
        return _and_table(MarkovView(**kwargs))

    def from_logits(**kwargs):
        return _and_table(MarkovView.from_logits(**kwargs))

    def from_table(**kwargs):
        return _and_table(MarkovView.from_table(**kwargs))

    count = "count"
    decoding = {"temperature": "nonnegative", "top_k": count, "top_p": "unit-open"}
    #: None is "no truncation" (the default); a top_k of at least V keeps every token (it is then None), as
    #: top_p = 1 keeps every token: both valid, equal to no truncation (edges below)
    decoding_skip = {("top_k", "none"), *huge("top_k"), ("top_p", "none"), ("top_p", "one")}
    return [
        Entry("MarkovView", lambda: (construct, dict(model=_ngram(), temperature=1.0, top_k=None, top_p=None,
                                                     dtype=np.float64)),
              {"model": "model", **decoding, "dtype": "choice", "vocab_size": count, "context_size": count},
              extra={"model": BAD_MODELS, "dtype": BAD_DTYPES},
              # None: np.dtype(None) is float64, the default; vocab_size/context_size None are the default
              # (read from the model)
              skip=frozenset(decoding_skip | {("dtype", "none"), ("vocab_size", "none"),
                                              ("context_size", "none")})),
        # a plain callable: vocab_size and context_size are needed and checked
        Entry("MarkovView#2", lambda: (construct, dict(model=zero_logits, vocab_size=V, context_size=K)),
              {"model": "callable", "vocab_size": count, "context_size": count},
              extra={"model": BAD_LOGITS_FN, "context_size": CONTEXT_40}),
        Entry("MarkovView.from_logits", lambda: (from_logits, dict(logits=zero_logits, vocab_size=V,
                                                                   context_size=K)),
              {"logits": "callable", "vocab_size": count, "context_size": count, **decoding},
              extra={"logits": BAD_LOGITS_FN, "context_size": CONTEXT_40},
              skip=frozenset(decoding_skip)),
        Entry("MarkovView.from_table", lambda: (from_table, dict(probs=_table(), context_size=K)),
              {"probs": "probs", "context_size": count, **decoding},
              # context_size=None is the default (read from the table's shape)
              skip=frozenset(decoding_skip | {("context_size", "none")})),
    ]


# -- MarkovView: methods -----------------------------------------------------------------------

#: any prompt length is valid (shorter than K: a short state; longer: its last K tokens count), and the
#: empty prompt is the beginning of text
PROMPT_VALID = frozenset({("start", "wrong-length"), ("start", "empty")})


def _method_entries():
    def method(name, **kwargs):
        return lambda: (getattr(_view(), name), dict(kwargs))

    def uniform_law():
        return np.full(W, 1.0 / W)

    count = "count"
    return [
        Entry("MarkovView.n_step_law", method("n_step_law", steps=3, start=_prompt()),
              {"steps": "natural", "start": "tokens"},
              # a huge step count is valid on a small chain (dense matrix powers): the answer is pi (edge)
              skip=PROMPT_VALID | {*huge("steps")}),
        Entry("MarkovView.n_step_law#2", method("n_step_law", steps=3, start=uniform_law()),
              {"start": "law"},
              # an empty float array is the empty prompt (NumPy's default dtype for [] is float64)
              skip=frozenset({("start", "empty")})),
        Entry("MarkovView.tv_to_stationary", method("tv_to_stationary", steps=np.array([0, 1, 5]),
                                                    start=_prompt()),
              {"steps": "tokens", "start": "tokens"},
              extra={"steps": (("scalar", "const", 3), ("float-list", "const", [0.5, 2.0]))},
              # steps are counts >= 0 of any size (10**6 is cheap by matrix powers); any number of them
              skip=PROMPT_VALID | {("steps", "too-large"), ("steps", "wrong-length")}),
        Entry("MarkovView.mixing_time", method("mixing_time", eps=0.25, starts=np.array([0, 3]), max_steps=1000),
              {"eps": "unit-open", "starts": "tokens", "max_steps": count},
              extra={"starts": BAD_STARTS},
              # starts=None is the default (default_starts); any non-empty subset of windows is valid;
              # max_steps of 10**12 is under MAX_MIXING_STEPS = 2**40 and only bounds the search
              skip=frozenset({("starts", "none"), ("starts", "wrong-length"), *huge("max_steps")})),
        Entry("MarkovView.zekri_bound", method("zekri_bound", steps=4, starts=np.array([0, 3])),
              {"steps": "natural", "starts": "tokens"},
              extra={"starts": BAD_STARTS},
              # as for mixing_time; 10**12 steps are cheap on 4 windows (dense matrix power)
              skip=frozenset({("starts", "none"), ("starts", "wrong-length"), *huge("steps")})),
        Entry("MarkovView.stationary", method("stationary", tol=1e-12, max_iterations=1000),
              {"tol": "positive", "max_iterations": count},
              # max_iterations only bounds the power iteration
              skip=frozenset({*huge("max_iterations")})),
        Entry("MarkovView.constraint_probability",
              lambda: (_view().constraint_probability, dict(dfa=_dfa(), steps=3, prompt=np.array([0]),
                                                            mode="within")),
              {"dfa": "model", "steps": "natural", "prompt": "tokens", "mode": "choice"},
              extra={"dfa": BAD_DFAS},
              # any prompt length is valid; a huge step count on a small product chain is renormalised
              # repeated squaring of its dense matrix (cheap and exact to rounding; a large chain refuses it)
              skip=frozenset({("prompt", "wrong-length"), ("prompt", "empty"), *huge("steps")})),
        Entry("contains_pattern", lambda: (_contains_pattern(), dict(pattern=np.array([0, 1]), vocab_size=V)),
              {"pattern": "tokens", "vocab_size": "count"},
              skip=frozenset({("pattern", "wrong-length")})),  # a pattern of any length is valid
        Entry("MarkovView.transition", method("transition", states="all"), {"states": "choice"}),
        Entry("MarkovView.to_networkx", method("to_networkx", states="windows"), {"states": "choice"}),
        Entry("MarkovView.window", method("window", index=3), {"index": "natural"}),
        Entry("MarkovView.window_index", method("window_index", tokens=_prompt()), {"tokens": "tokens"}),
        Entry("MarkovView.state_index", method("state_index", tokens=_prompt()), {"tokens": "tokens"},
              # a state has 1..K tokens: the prompt without its last token is a valid state
              skip=frozenset({("tokens", "wrong-length")})),
        Entry("MarkovView.default_starts", method("default_starts", num_spread=2), {"num_spread": "natural"}),
    ]


# -- decoding and adapters ---------------------------------------------------------------------

def _model_entries():
    from arprob.markov import CallableModel, TableModel, decode_probs

    count = "count"
    return [
        Entry("decode_probs", lambda: (decode_probs, dict(logits=np.array([[0.0, -1.0, 2.0], [1.0, 1.0, -np.inf]]),
                                                          temperature=0.7, top_k=2, top_p=0.9)),
              {"logits": "logits", "temperature": "nonnegative", "top_k": count, "top_p": "unit-open"},
              # any vocabulary size is valid (dropping the last column leaves logits over 2 tokens); None is
              # no truncation; top_k >= V and top_p = 1 keep every token
              skip=frozenset({("logits", "drop-last"), ("top_k", "none"), *huge("top_k"), ("top_p", "none"),
                              ("top_p", "one")})),
        Entry("TableModel", lambda: (TableModel, dict(probs=_table(), context_size=K)),
              {"probs": "probs", "context_size": count},
              # context_size=None is the default (read from the table's shape)
              skip=frozenset({("context_size", "none")})),
        Entry("CallableModel", lambda: (CallableModel, dict(logits=zero_logits, vocab_size=V, context_size=K)),
              {"logits": "callable", "vocab_size": count, "context_size": count},
              extra={"logits": (("not-callable-array", "const", np.zeros((4, 2))),)},
              # the adapter allocates nothing: a huge vocabulary is refused where a table of it would be built
              # (MarkovView, covered there)
              skip=frozenset({*huge("vocab_size")})),
    ]


# -- text --------------------------------------------------------------------------------------

BAD_ALPHABETS = (("repeated", "const", "aab "), ("one-char", "const", " "), ("list", "const", ["a", " "]))
#: any str is valid text
TEXT_VALID = frozenset({("text", "str")})
#: ids of any length are valid text for decode (the empty text decodes to "")
IDS_VALID = frozenset({("ids", "wrong-length"), ("ids", "empty")})


def _text_entries():
    from arprob.markov import char_models, text

    count = "count"
    return [
        Entry("reduce_alphabet", lambda: (text.reduce_alphabet, dict(text="Hello, World!", alphabet="abcdehlorw ")),
              {"text": "model", "alphabet": "choice"},
              extra={"text": (("bytes", "const", b"abc"),),
                     "alphabet": BAD_ALPHABETS + (("no-space", "const", "ab"), ("uppercase", "const", "AB "))},
              skip=TEXT_VALID),
        Entry("encode", lambda: (text.encode, dict(text="ab ba", alphabet="ab ")),
              {"text": "model", "alphabet": "choice"},
              extra={"text": (("bytes", "const", b"ab"), ("not-in-alphabet", "const", "abc!")),
                     "alphabet": BAD_ALPHABETS},
              skip=TEXT_VALID),
        Entry("decode", lambda: (text.decode, dict(ids=np.array([0, 1, 2, 1]), alphabet="ab ")),
              {"ids": "tokens", "alphabet": "choice"},
              extra={"ids": (("2d", "const", np.array([[0, 1]])),), "alphabet": BAD_ALPHABETS},
              # decode needs no space in the alphabet: any distinct characters ("bogus") map ids back
              skip=IDS_VALID | {("alphabet", "bogus")}),
        Entry("fit_char_ngram", lambda: (char_models.fit_char_ngram, dict(ids=_text_ids(), vocab_size=V, context_size=K,
                                                                  add_k=1.0)),
              {"ids": "tokens", "vocab_size": count, "context_size": count, "add_k": "positive"},
              extra={"ids": (("2d", "const", np.array([[0, 1, 0, 1]])),)},
              # a shorter text is still valid while it holds K + 1 tokens
              skip=frozenset({("ids", "wrong-length")})),
        Entry("train_char_network",
              lambda: (char_models.train_char_network, dict(key=_key(), ids=_text_ids(), vocab_size=V, context_size=K,
                                                     hidden_size=4, num_layers=1, num_steps=2, batch_size=8,
                                                     learning_rate=1e-2, short_fraction=0.25)),
              {"key": "key", "ids": "tokens", "vocab_size": count, "context_size": count, "hidden_size": count,
               "num_layers": count, "num_steps": count, "batch_size": count, "learning_rate": "positive",
               "short_fraction": "unit"},
              skip=frozenset({("ids", "wrong-length")})),
        Entry("cross_entropy",
              lambda: (char_models.cross_entropy,
                       dict(model=char_models.fit_char_ngram(_text_ids(), V, K), ids=_text_ids())),
              {"model": "model", "ids": "tokens"},
              extra={"model": BAD_MODELS},
              # any non-empty text is valid
              skip=frozenset({("ids", "wrong-length")})),
    ]


# -- edges -------------------------------------------------------------------------------------

def _close(a, b, atol=1e-12):
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=0.0, atol=atol)


def _greedy_copy():
    from arprob.markov import MarkovView

    return MarkovView.from_table(_copy_table(), K, temperature=0.0)


def _edges():
    from arprob.errors import ArprobError
    from arprob.markov import MarkovView

    edges = []

    def greedy_closed_classes():
        view = _greedy_copy()
        result = view.stationary()
        return result.law, len(result.classes), view.mixing_time().steps

    edges.append(Edge("markov-greedy-two-absorbing-loops", greedy_closed_classes,
                      check=lambda r: r[0] is None and r[1] == 2 and r[2] is None))

    def greedy_zekri():  # no unique stationary law: refused, naming the method
        return _greedy_copy().zekri_bound(4)

    edges.append(Edge("markov-greedy-zekri-refused", greedy_zekri, check=lambda r: False,
                      raises=ArprobError, owner="MarkovView.zekri_bound"))

    def greedy_tv():
        return _greedy_copy().tv_to_stationary(np.array([0, 1]))

    edges.append(Edge("markov-greedy-tv-refused", greedy_tv, check=lambda r: False,
                      raises=ArprobError, owner="MarkovView.tv_to_stationary"))

    def greedy_point_mass():  # greedy generation is deterministic: a point mass after any number of steps
        return MarkovView.from_table(_table(), K, temperature=0.0).n_step_law(5, start=np.array([0, 0]))

    edges.append(Edge("markov-greedy-law-is-a-point-mass", greedy_point_mass,
                      check=lambda r: np.isclose(np.max(r), 1.0) and np.isclose(np.sum(r), 1.0)))

    def top_p_one():
        model = _random_ngram()
        return MarkovView(model, top_p=1.0).probs, MarkovView(model).probs

    edges.append(Edge("markov-top-p-one-is-no-truncation", top_p_one, check=lambda r: _close(r[0], r[1])))

    def top_k_vocab():
        model = _random_ngram()
        return MarkovView(model, top_k=V).probs, MarkovView(model).probs

    edges.append(Edge("markov-top-k-vocab-is-no-truncation", top_k_vocab, check=lambda r: _close(r[0], r[1])))

    def long_prompt():
        view = MarkovView(_random_ngram())
        return view.n_step_law(3, start=np.array([1, 1, 0, 1])), view.n_step_law(3, start=np.array([0, 1]))

    edges.append(Edge("markov-long-prompt-keeps-last-K", long_prompt, check=lambda r: _close(r[0], r[1])))

    def zero_steps_prompt():
        view = MarkovView(_random_ngram())
        return view.n_step_law(0, start=np.array([1, 0])), view.window_index(np.array([1, 0]))

    edges.append(Edge("markov-zero-steps-is-the-start", zero_steps_prompt,
                      check=lambda r: _close(r[0], np.eye(W)[r[1]])))

    def zero_steps_law():
        law = np.array([0.1, 0.2, 0.3, 0.4])
        return MarkovView(_random_ngram()).n_step_law(0, start=law), law

    edges.append(Edge("markov-zero-steps-is-the-start-law", zero_steps_law, check=lambda r: _close(r[0], r[1])))

    def huge_steps():
        view = MarkovView(_random_ngram())
        return view.n_step_law(10**12, start=np.array([0, 1])), view.stationary().law

    edges.append(Edge("markov-trillion-steps-is-stationary", huge_steps,
                      check=lambda r: _close(r[0], r[1], atol=1e-9)))

    def huge_steps_tv():  # d(n) is non-increasing, and 0 to rounding long before 10**15 steps
        view = MarkovView(_random_ngram())
        return view.tv_to_stationary(np.array([10**4, 10**15]), start=np.array([0, 1]))

    edges.append(Edge("markov-tv-after-1e15-steps-is-zero", huge_steps_tv, check=lambda r: np.all(r < 1e-9)))

    def huge_steps_zekri():  # the exact side of Prop. 3.4 is max |Q^n - pi|: 0 to rounding at n = 10**15
        return MarkovView(_random_ngram()).zekri_bound(10**15).exact

    edges.append(Edge("markov-zekri-exact-after-1e15-steps-is-zero", huge_steps_zekri, check=lambda r: r < 1e-9))

    def start_accepting():
        from arprob import DFA

        dfa = DFA(np.array([[0, 0], [1, 1]]), 0, np.array([True, False]))
        return MarkovView(_random_ngram()).constraint_probability(dfa, 5, np.array([0, 1]), mode="within")

    edges.append(Edge("markov-dfa-start-accepting-within-is-one", start_accepting, check=lambda r: r == 1.0))

    def zero_steps_end():  # mode "end" with steps=0: the DFA state after the prompt alone
        return (MarkovView(_random_ngram()).constraint_probability(_dfa(), 0, np.array([0, 1]), mode="end"),
                MarkovView(_random_ngram()).constraint_probability(_dfa(), 0, np.array([0, 0]), mode="end"))

    edges.append(Edge("markov-dfa-zero-steps-end-reads-the-prompt", zero_steps_end,
                      check=lambda r: r == (1.0, 0.0)))

    def ergodic_mixing():
        return MarkovView.from_table(_table(), K).mixing_time(0.25).steps

    edges.append(Edge("markov-full-support-mixes", ergodic_mixing, check=lambda r: isinstance(r, int) and r >= 1))

    def huge_context():
        return MarkovView.from_logits(zero_logits, V, 40).probs

    from arprob.errors import EnumerationTooLargeError

    edges.append(Edge("markov-window-table-of-2-to-the-40-refused", huge_context, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="MarkovView"))
    return edges


ENTRIES = _view_entries() + _method_entries() + _model_entries() + _text_entries()
EDGES = _edges()
