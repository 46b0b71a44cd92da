r"""Finite-context next-token models as the window chain sees them, and the decoding rules.

A *next-token model with context size* :math:`K` over :math:`T` tokens is anything that maps a
window of the last :math:`K` tokens to a law over the next one.  :class:`MarkovView` consumes it
through one small protocol, :class:`NextTokenModel`:

* ``vocab_size`` (:math:`T`) and ``context_size`` (:math:`K`);
* ``next_token_logits(windows)``: ``windows`` is an int array ``(batch, K)`` with entries in
  :math:`[0, T]`; id :math:`T` is beginning-of-text padding and appears only as a leading run (a
  window with :math:`j` padding ids is a context of :math:`K - j` real tokens: the chain's states
  shorter than :math:`K`); the answer is ``(batch, T)`` logits, :math:`-\infty` for probability 0;
* optionally ``window_logits()``: the ``(T**K, T)`` logits of every full window at once, rows in
  base-:math:`T` order (window :math:`(a_1, \dots, a_K)`, :math:`a_1` the oldest token, is row
  :math:`\sum_i a_i T^{K-i}`), a fast path for models that hold a table.

:func:`as_next_token_model` adapts :class:`~arprob.NGram` and :class:`~arprob.MarkovChain` (their
beginning-of-sequence id is the padding id), any object with the protocol, and a plain callable
``logits(windows) -> (batch, T)`` given with ``vocab_size`` and ``context_size``.

The decoding rule turns logits :math:`\ell` into next-token probabilities, in the order the
HuggingFace ``generate`` warpers apply them (:func:`decode_probs`):

1. temperature :math:`\tau`: :math:`\ell / \tau`; :math:`\tau = 0` is greedy decoding (all mass on
   the first token with the largest logit);
2. top-:math:`k`: keep the :math:`k` largest (ties broken towards the lower token id);
3. top-:math:`p`: keep the smallest set of most probable tokens whose probability (after top-:math:`k`)
   reaches :math:`p`; the most probable token is always kept;

then renormalise.  Truncation puts zeros into the transition matrix, which is what can break
irreducibility (proofs/10-markov-view.md).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from arprob._validation import check_int, check_logits, check_memory, check_probs, check_real, check_real_array
from arprob.errors import ArprobError, ArprobTypeError, InvalidArgumentError, InvalidProbabilityError, ShapeError

__all__ = ["CallableModel", "NextTokenModel", "TableModel", "as_next_token_model", "decode_probs"]

#: Rows of windows handed to a model per call when a table is built.
CHUNK_ROWS = 1 << 16


@runtime_checkable
class NextTokenModel(Protocol):
    """What :class:`MarkovView` needs from a model: see the module docstring."""

    vocab_size: int
    context_size: int

    def next_token_logits(self, windows) -> np.ndarray: ...


class CallableModel:
    """Adapter for a plain callable ``logits(windows) -> (batch, T)`` (the protocol's one method).

    Parameters
    ----------
    logits
        Called with int arrays ``(batch, K)`` (padding id ``vocab_size`` as a leading run for short
        contexts); must return ``(batch, vocab_size)`` real logits.  NumPy or JAX both work.
    vocab_size, context_size
        :math:`T \\ge 2` and :math:`K \\ge 1`.
    """

    def __init__(self, logits, vocab_size: int, context_size: int, *, _owner: str = "CallableModel"):
        owner = _owner
        if not callable(logits):
            raise ArprobTypeError(f"{owner}: logits must be a callable logits(windows) -> (batch, T), "
                                  f"got {type(logits).__name__}")
        self.logits = logits
        self.vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
        self.context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64,
                                      fix="a window chain has T**K states")

    def next_token_logits(self, windows) -> np.ndarray:
        return np.asarray(self.logits(np.asarray(windows, dtype=np.int32)))

    def __repr__(self):
        return f"CallableModel({self.logits!r}, vocab_size={self.vocab_size}, context_size={self.context_size})"


class TableModel:
    r"""A model given by its next-token table on full windows: ``probs (T**K, T)`` or ``(T,)*K + (T,)``.

    Rows in base-:math:`T` order (oldest token most significant), each a law.  It has no predictions
    for contexts shorter than :math:`K`, so prompts must have at least :math:`K` tokens (or start
    from a law over windows).  Used for chains defined directly by their windows, such as the
    :math:`2^{24}`-window benchmarks.
    """

    def __init__(self, probs, context_size: int | None = None, *, _owner: str = "TableModel"):
        owner = _owner
        probs = check_real_array(owner, "probs", probs)
        if probs.ndim > 2:
            context_size = probs.ndim - 1 if context_size is None else context_size
            if probs.shape != (probs.shape[-1],) * probs.ndim:
                raise ShapeError(f"{owner}: probs has shape {probs.shape}, expected (T,)*K + (T,)")
            probs = probs.reshape(-1, probs.shape[-1])
        if probs.ndim != 2 or probs.shape[1] < 2:
            raise ShapeError(f"{owner}: probs has shape {probs.shape}, expected (T**K, T) with T >= 2")
        vocab_size = probs.shape[1]
        if context_size is None:
            context_size = round(math.log(probs.shape[0], vocab_size))
        context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64,
                                 fix="a window chain has T**K states")
        if probs.shape[0] != vocab_size**context_size:
            raise ShapeError(f"{owner}: probs has {probs.shape[0]} rows, expected T**K = {vocab_size}**{context_size}"
                             f" = {vocab_size**context_size}")
        check_probs(owner, "probs", probs)
        self.probs = probs
        self.vocab_size = vocab_size
        self.context_size = context_size

    def window_logits(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.probs)

    def next_token_logits(self, windows) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.int64)
        if np.any(windows == self.vocab_size):
            raise InvalidArgumentError(
                "TableModel: the model has no predictions for contexts shorter than K (a window with padding "
                f"was asked for); start from a prompt of at least K = {self.context_size} tokens or from a law")
        index = np.zeros(windows.shape[0], dtype=np.int64)
        for column in range(self.context_size):
            index = index * self.vocab_size + windows[:, column]
        with np.errstate(divide="ignore"):
            return np.log(self.probs[index])

    def __repr__(self):
        return f"TableModel(T={self.vocab_size}, K={self.context_size})"


class _ChainTableModel:
    """:class:`~arprob.NGram` / :class:`~arprob.MarkovChain` read through their window table."""

    def __init__(self, model):
        if model.batch_shape:
            raise ShapeError(f"MarkovView: the model has batch_shape {model.batch_shape}, expected a single "
                             "model (index the batch first, e.g. model[0])")
        self.model = model
        self.vocab_size = int(model.vocab_size)
        self.context_size = int(model.context_size)
        self._log_table = np.asarray(model.log_table, dtype=np.float64)  # ((T+1)**K, T), padding id T

    def next_token_logits(self, windows) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.int64)
        index = np.zeros(windows.shape[0], dtype=np.int64)
        for column in range(self.context_size):
            index = index * (self.vocab_size + 1) + windows[:, column]
        return self._log_table[index]

    def window_logits(self) -> np.ndarray:
        T, K = self.vocab_size, self.context_size
        table = self._log_table.reshape((T + 1,) * K + (T,))
        return table[(slice(0, T),) * K].reshape(T**K, T)

    def __repr__(self):
        return f"{self.model!r} (as a next-token model)"


def as_next_token_model(model, *, vocab_size: int | None = None, context_size: int | None = None,
                        owner: str = "MarkovView"):
    """Adapt ``model`` to the :class:`NextTokenModel` protocol (see the module docstring).

    ``NGram`` and ``MarkovChain`` (context size 1) are read through their tables; an object with
    the protocol is used as is; a callable needs ``vocab_size`` and ``context_size``.  Sizes given
    next to a model that has its own must agree with them.
    """
    from arprob.distributions.chain import _ChainModel

    sizes_fix = "a window chain has vocab_size**context_size states"
    if vocab_size is not None:
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
    if context_size is not None:
        context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64, fix=sizes_fix)
    if isinstance(model, _ChainModel):
        adapted = _ChainTableModel(model)
    elif isinstance(model, NextTokenModel):
        check_int(owner, "model.vocab_size", model.vocab_size, minimum=2)
        check_int(owner, "model.context_size", model.context_size, minimum=1, maximum=64, fix=sizes_fix)
        adapted = model
    elif callable(model):
        if vocab_size is None or context_size is None:
            raise InvalidArgumentError(
                f"{owner}: model is a plain callable, so vocab_size and context_size are needed "
                f"(got vocab_size={vocab_size!r}, context_size={context_size!r}); pass "
                "MarkovView.from_logits(fn, vocab_size=T, context_size=K)")
        return CallableModel(model, vocab_size, context_size, _owner=owner)
    else:
        what = "logits" if owner.endswith("from_logits") else "model"
        raise ArprobTypeError(
            f"{owner}: {what} must be an NGram, a MarkovChain, an object with vocab_size, context_size and "
            f"next_token_logits(windows), or a callable logits(windows); got {type(model).__name__}")
    for name, given, own in (("vocab_size", vocab_size, adapted.vocab_size),
                             ("context_size", context_size, adapted.context_size)):
        if given is not None and given != own:
            raise InvalidArgumentError(f"{owner}: {name}={given} disagrees with the model's own {name}={own}; "
                                       f"leave {name} out (it is only needed for a plain callable)")
    return adapted


def check_decoding(owner: str, temperature, top_k, top_p, vocab_size: int | None):
    """Validate the decoding rule; returns ``(temperature, top_k, top_p)`` (None for no truncation)."""
    temperature = check_real(owner, "temperature", temperature, low=0.0,
                             fix="pass a temperature >= 0 (0 is greedy decoding, 1 leaves the model unchanged)")
    if top_k is not None:
        top_k = check_int(owner, "top_k", top_k, minimum=1,
                          fix="top_k keeps the k most probable tokens (None keeps all)")
        top_k = None if vocab_size is not None and top_k >= vocab_size else top_k
    if top_p is not None:
        top_p = check_real(owner, "top_p", top_p, low=0.0, high=1.0, low_open=True,
                           fix="top_p is a probability mass in (0, 1] (None or 1 keeps all)")
        top_p = None if top_p == 1.0 else top_p
    return temperature, top_k, top_p


def decode_probs(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    r"""Next-token probabilities ``(batch, T)`` from logits under temperature, top-:math:`k`, top-:math:`p`.

    Float64 throughout; see the module docstring for the rule and its tie-breaking.  Rows whose
    logits are all :math:`-\infty` or that hold NaN/:math:`+\infty` are refused.
    """
    owner = "decode_probs"
    logits = check_real_array(owner, "logits", logits, finite=False)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ShapeError(f"{owner}: logits has shape {logits.shape}, expected (batch, vocab_size)")
    temperature, top_k, top_p = check_decoding(owner, temperature, top_k, top_p, logits.shape[1])
    check_logits(owner, "logits", logits)
    return _decode(logits, temperature, top_k, top_p)


def _decode(logits: np.ndarray, temperature: float, top_k, top_p) -> np.ndarray:
    """:func:`decode_probs` on validated float64 logits."""
    if temperature == 0.0:
        probs = np.zeros_like(logits)
        probs[np.arange(logits.shape[0]), np.argmax(logits, axis=1)] = 1.0
        return probs
    scaled = (logits - logits.max(axis=1, keepdims=True)) / temperature
    if top_k is not None or top_p is not None:
        order = np.argsort(-scaled, axis=1, kind="stable")  # most probable first, lower id first on ties
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(logits.shape[1])[None, :].repeat(logits.shape[0], 0), axis=1)
        if top_k is not None:
            scaled = np.where(rank < top_k, scaled, -np.inf)
        if top_p is not None:
            probs = np.exp(scaled)
            probs /= probs.sum(axis=1, keepdims=True)
            sorted_probs = np.take_along_axis(probs, order, axis=1)
            before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of the more probable tokens
            keep_sorted = before < top_p
            keep_sorted[:, 0] = True
            keep = np.take_along_axis(keep_sorted, rank, axis=1)
            scaled = np.where(keep, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def window_tokens(indices, vocab_size: int, length: int) -> np.ndarray:
    """Tokens ``(n, length)`` of base-``vocab_size`` window indices (oldest token first)."""
    indices = np.asarray(indices, dtype=np.int64)
    powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (indices[:, None] // powers[None, :]) % vocab_size


def window_table(owner: str, model, temperature, top_k, top_p, dtype=np.float64) -> np.ndarray:
    """``(T**K, T)`` next-token probabilities of every full window under the decoding rule, built in chunks."""
    T, K = model.vocab_size, model.context_size
    check_memory(owner, f"the window table of vocab_size**context_size = {T}**{K} windows x {T} tokens",
                 (float(T) ** K, T, 2),
                 itemsize=np.dtype(dtype).itemsize,
                 fix="use a smaller context_size, or dtype=np.float32 for the largest chains")
    if isinstance(model, TableModel) and temperature == 1.0 and top_k is None and top_p is None:
        return model.probs.astype(dtype, copy=False)  # the identity rule: the table as given (shared)
    fast = getattr(model, "window_logits", None)
    if fast is not None:
        logits = _called(owner, "model.window_logits()", fast)
        if logits.shape != (T**K, T):
            raise ShapeError(f"{owner}: model.window_logits() has shape {logits.shape}, expected ({T**K}, {T})")
        chunks = (_checked(owner, "model.window_logits()", logits[start:start + CHUNK_ROWS])
                  for start in range(0, T**K, CHUNK_ROWS))
    else:
        chunks = (_model_logits(owner, model, window_tokens(np.arange(start, min(start + CHUNK_ROWS, T**K)), T, K))
                  for start in range(0, T**K, CHUNK_ROWS))
    table = np.empty((T**K, T), dtype=dtype)
    start = 0
    for chunk in chunks:
        table[start:start + chunk.shape[0]] = _decode(chunk, temperature, top_k, top_p)
        start += chunk.shape[0]
    return table


def _called(owner: str, what: str, function, *args) -> np.ndarray:
    """``function(*args)`` as a float64 array; a failure inside the user's model is reported as such."""
    try:
        return np.asarray(function(*args), dtype=np.float64)
    except ArprobError:
        raise  # the model's own clear refusal (e.g. a table model asked for a short context)
    except Exception as error:
        raise ArprobTypeError(f"{owner}: {what} failed with {type(error).__name__}: {error} (the model must "
                              "map int windows (batch, K), padding id T, to (batch, T) logits)") from error


def _checked(owner: str, what: str, logits: np.ndarray) -> np.ndarray:
    """Refuse NaN, +inf and all -inf rows in a model's answer, naming the first bad row."""
    bad = np.isnan(logits) | (logits == np.inf)
    bad |= np.all(logits == -np.inf, axis=1, keepdims=True)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InvalidProbabilityError(
            f"{owner}: {what} gave {logits[row][:8]} for row {row}, expected real logits with a finite maximum "
            "(NaN, +inf or an all -inf row is no law; -inf alone is an impossible token)")
    return logits


def _model_logits(owner: str, model, windows: np.ndarray) -> np.ndarray:
    what = f"model.next_token_logits(windows of shape {windows.shape})"
    logits = _called(owner, what, model.next_token_logits, windows)
    if logits.shape != (windows.shape[0], model.vocab_size):
        raise ShapeError(f"{owner}: {what} returned shape {logits.shape}, expected "
                         f"({windows.shape[0]}, {model.vocab_size})")
    return _checked(owner, what, logits)


def context_probs(owner: str, model, contexts, temperature, top_k, top_p) -> np.ndarray:
    """Next-token probabilities for contexts of fewer than ``K`` tokens (``(n, k)`` ints, ``k < K``), padded."""
    contexts = np.asarray(contexts, dtype=np.int64).reshape(len(contexts), -1)
    T, K = model.vocab_size, model.context_size
    padded = np.concatenate([np.full((contexts.shape[0], K - contexts.shape[1]), T, np.int64), contexts], axis=1)
    rows = []
    for start in range(0, padded.shape[0], CHUNK_ROWS):
        rows.append(_decode(_model_logits(owner, model, padded[start:start + CHUNK_ROWS]), temperature, top_k, top_p))
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, T))
