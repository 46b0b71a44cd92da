r"""Two next-character models of real text: an add-:math:`k` n-gram and a small network.

Both implement the next-token protocol of
:class:`~arprob.markov.models.NextTokenModel` with context size :math:`K`
(windows ``(batch, K)``, padding id :math:`T` as a leading run for contexts of
fewer than :math:`K` tokens, plus the ``window_logits()`` fast path over the
:math:`T^K` full windows, row :math:`\sum_i a_i T^{K-i}` for the window
:math:`(a_1, \dots, a_K)`, :math:`a_1` the oldest token):

* :class:`CharNGram` (:func:`fit_char_ngram`): add-:math:`k` smoothed counts,
  exact in float64;
* :class:`CharNetwork` (:func:`train_char_network`): a small MLP trained with
  Adam (optax) on random windows of the text, float32 parameters, float64 answers.

Padded windows (short contexts) follow one convention in both: a window with
:math:`j < K` real tokens is the context "the last :math:`j` tokens", wherever
it occurs in the text.  The n-gram answers it with its order-:math:`j` model
(a back-off, counted over the whole text); the network is trained on windows
truncated at random to :math:`j` tokens.  The start of the text is not a
special context (one document has one start: too little data to learn from).
The text itself comes from :mod:`arprob.markov.text`.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import register_pytree_node_class
from jaxtyping import Float, Int

from arprob._validation import (
    check_int,
    check_key,
    check_logits,
    check_memory,
    check_real,
    check_work,
    is_concrete,
)
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError
from arprob.markov.text import _check_ids
from arprob.neural import Dense

__all__ = ["CharNGram", "CharNetwork", "cross_entropy", "fit_char_ngram", "train_char_network"]

#: Windows evaluated per call of a network (bounds the memory of one pass: ``CHUNK_ROWS x hidden_size``).
CHUNK_ROWS = 1 << 16


# -- validation shared by the two models ------------------------------------------------------
def _check_model_sizes(owner: str, vocab_size, context_size) -> tuple[int, int]:
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2,
                           fix="the alphabet needs at least two symbols")
    context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64,
                             fix="a window chain has vocab_size**context_size states")
    return vocab_size, context_size


def _check_windows(owner: str, windows, vocab_size: int, context_size: int) -> np.ndarray:
    """``windows`` as ``(batch, K)`` int64 in ``[0, T]``, the padding id ``T`` only as a leading run."""
    if not is_concrete(windows):
        raise ArprobTypeError(f"{owner}: windows is a JAX tracer; call next_token_logits outside jit "
                              "(it answers NumPy arrays)")
    if isinstance(windows, (str, bytes)):
        raise ArprobTypeError(f"{owner}: windows must be an int array (batch, {context_size}), got a str")
    array = np.asarray(windows)
    if array.ndim != 2 or array.shape[1] != context_size:
        hint = " (one window: windows[None])" if array.shape == (context_size,) else ""
        raise ShapeError(f"{owner}: windows has shape {array.shape}, expected (batch, {context_size}): one "
                         f"window of context_size={context_size} tokens per row{hint}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InvalidTokenError(f"{owner}: windows has dtype {array.dtype}, expected integer token ids in "
                                f"[0, {vocab_size}] ({vocab_size} is the padding id)")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > vocab_size:
            raise InvalidTokenError(f"{owner}: windows holds {low if low < 0 else high}, expected token ids in "
                                    f"[0, {vocab_size - 1}] or the padding id {vocab_size}")
    padding = array == vocab_size
    late = padding[:, 1:] & ~padding[:, :-1]
    if late.any():
        row = int(np.argwhere(late)[0][0])
        raise InvalidTokenError(f"{owner}: windows[{row}] = {array[row].tolist()} has the padding id {vocab_size} "
                                "after a real token; padding is beginning-of-text and may only be a leading run")
    return array.astype(np.int64)


def _check_dtype(owner: str, dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ArprobTypeError(f"{owner}: dtype must be np.float64 or np.float32, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise InvalidArgumentError(f"{owner}: dtype must be np.float64 or np.float32, got {dtype}")
    return dtype


def _check_window_table(owner: str, vocab_size: int, context_size: int, itemsize: int) -> int:
    check_memory(owner, f"the logits of all {vocab_size}**{context_size} windows x {vocab_size} tokens",
                 (float(vocab_size) ** context_size, vocab_size), itemsize=itemsize,
                 fix="use a smaller context_size, dtype=np.float32, or next_token_logits on the windows needed")
    return vocab_size**context_size


# -- the n-gram -------------------------------------------------------------------------------
def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``keys[i] == query`` (``keys`` sorted), else 0."""
    position = np.minimum(np.searchsorted(keys, queries), keys.size - 1)
    return np.where(keys[position] == queries, values[position], 0)


class CharNGram:
    r"""An add-:math:`k` smoothed character n-gram with context size :math:`K`.

    For a context :math:`w` of :math:`j \le K` tokens (a full window, :math:`j = K`, or a
    padded one with :math:`K - j` leading padding ids),

    .. math::

        p(v \mid w) = \frac{c_j(w, v) + k}{c_j(w) + k T}, \qquad c_j(w) = \sum_{u} c_j(w, u),

    where :math:`c_j(w, v)` counts the positions :math:`t \ge j` of the text with
    :math:`x_{t-j:t} = w` and :math:`x_t = v`.  Short contexts therefore back off to the
    order-:math:`j` model counted over the whole text (:math:`j = 0`: the unigram law,
    smoothed); the start of the text is not a special context.  Unseen contexts get the
    uniform law :math:`1/T`.

    The counts are kept sparse: for each order :math:`j = 0, \dots, K`, the sorted distinct
    :math:`(j+1)`-grams as base-:math:`T` integers and their counts, so memory grows with
    the text, not with :math:`T^{K+1}`.  Build it with :func:`fit_char_ngram`.

    Attributes
    ----------
    vocab_size, context_size
        :math:`T` and :math:`K`.
    add_k
        The pseudo-count :math:`k > 0`.
    grams
        Per order :math:`j`: ``(gram_keys, gram_counts, context_keys, context_counts)``, int64,
        keys sorted; the :math:`(j+1)`-gram :math:`(a_1, \dots, a_j, v)` has key
        :math:`\sum_i a_i T^{j+1-i} + v`.
    """

    __slots__ = ("vocab_size", "context_size", "add_k", "grams")

    def __init__(self, vocab_size: int, context_size: int, add_k: float, grams):
        owner = "CharNGram"
        self.vocab_size, self.context_size = _check_model_sizes(owner, vocab_size, context_size)
        self.add_k = check_real(owner, "add_k", add_k, low=0.0, low_open=True,
                                fix="add_k is the pseudo-count added to every (context, token) pair")
        grams = tuple(tuple(np.asarray(part, dtype=np.int64) for part in order) for order in grams)
        if len(grams) != self.context_size + 1 or any(len(order) != 4 for order in grams):
            raise ShapeError(f"{owner}: grams must hold context_size + 1 = {self.context_size + 1} tuples "
                             "(gram_keys, gram_counts, context_keys, context_counts); build it with fit_char_ngram")
        self.grams = grams

    def _logits_of_contexts(self, contexts: np.ndarray, order: int) -> np.ndarray:
        """Normalized log-probabilities ``(n, T)`` for base-``T`` context keys of ``order`` tokens."""
        T, k = self.vocab_size, self.add_k
        gram_keys, gram_counts, context_keys, context_counts = self.grams[order]
        joint = _lookup(gram_keys, gram_counts, contexts[:, None] * T + np.arange(T))
        total = _lookup(context_keys, context_counts, contexts)
        return np.log(joint + k) - np.log(total + k * T)[:, None]

    def next_token_logits(self, windows: Int[np.ndarray, "batch context_size"]
                          ) -> Float[np.ndarray, "batch vocab_size"]:
        r""":math:`\log p(v \mid w)` for each window (float64, normalized; padded rows back off)."""
        T, K = self.vocab_size, self.context_size
        windows = _check_windows("CharNGram.next_token_logits", windows, T, K)
        logits = np.empty((windows.shape[0], T), dtype=np.float64)
        num_real = K - (windows == T).sum(axis=1)
        for order in range(K + 1):
            rows = np.flatnonzero(num_real == order)
            for start in range(0, rows.size, CHUNK_ROWS):
                chunk = rows[start:start + CHUNK_ROWS]
                contexts = np.zeros(chunk.size, dtype=np.int64)
                for column in range(K - order, K):
                    contexts = contexts * T + windows[chunk, column]
                logits[chunk] = self._logits_of_contexts(contexts, order)
        return logits

    def window_logits(self, dtype=np.float64) -> Float[np.ndarray, "windows vocab_size"]:
        r"""The ``(T**K, T)`` log-probabilities of every full window, built sparsely.

        The table is filled with :math:`\log(1/T)` (unseen windows), then the rows of the
        seen windows are set to :math:`\log k - \log(c(w) + kT)` and their seen entries to
        :math:`\log(c(w, v) + k) - \log(c(w) + kT)`: one pass over the table plus work
        proportional to the number of distinct n-grams.  Equal to :meth:`next_token_logits`
        on the same windows.  ``dtype=np.float32`` halves the memory (1.5 GiB at
        :math:`T = 27, K = 5`, against 3.1 GiB in float64).
        """
        owner = "CharNGram.window_logits"
        T, K, k = self.vocab_size, self.context_size, self.add_k
        dtype = _check_dtype(owner, dtype)
        num_windows = _check_window_table(owner, T, K, dtype.itemsize)
        gram_keys, gram_counts, context_keys, context_counts = self.grams[K]
        log_k = np.log(np.float64(k))
        table = np.full((num_windows, T), log_k - np.log(np.float64(k * T)), dtype=dtype)
        log_total = np.log(context_counts + k * T)
        table[context_keys] = (log_k - log_total)[:, None]
        rows = np.searchsorted(context_keys, gram_keys // T)
        table.reshape(-1)[gram_keys] = np.log(gram_counts + k) - log_total[rows]
        return table

    def __repr__(self):
        return f"CharNGram(vocab_size={self.vocab_size}, context_size={self.context_size}, add_k={self.add_k})"


def fit_char_ngram(ids: Int[np.ndarray, " length"], vocab_size: int, context_size: int,
                   add_k: float = 1.0) -> CharNGram:
    r"""Count the :math:`(j+1)`-grams of ``ids`` for :math:`j = 0, \dots, K`: a :class:`CharNGram`.

    Each order is one pass: the :math:`(j+1)`-grams as base-:math:`T` integers (a rolling
    ``key * T + next``), then :func:`numpy.unique` with counts, and the context counts
    :math:`c_j(w) = \sum_v c_j(w, v)` by summing runs of equal ``key // T``.  No dense table
    is formed: at :math:`T = 27, K = 5` on the 639,000 characters of the reduced :func:`stdlib_text`
    this takes well under a second.

    Parameters
    ----------
    ids
        The text as token ids, 1-D ints in ``[0, vocab_size)``, at least ``context_size + 1``.
    vocab_size, context_size
        :math:`T \ge 2` and :math:`K \ge 1`, with :math:`T^{K+1} < 2^{62}` (the keys are int64).
    add_k
        Pseudo-count :math:`k > 0` (1 is Laplace smoothing).
    """
    owner = "fit_char_ngram"
    vocab_size, context_size = _check_model_sizes(owner, vocab_size, context_size)
    add_k = check_real(owner, "add_k", add_k, low=0.0, low_open=True,
                       fix="add_k is the pseudo-count added to every (context, token) pair (1 is Laplace)")
    if (context_size + 1) * math.log2(vocab_size) >= 62:
        raise InvalidArgumentError(
            f"{owner}: vocab_size**(context_size + 1) = {vocab_size}**{context_size + 1} n-gram keys overflow "
            "int64; use a smaller context_size")
    ids = _check_ids(owner, ids, vocab_size, minimum_length=context_size + 1)
    grams = []
    keys = ids
    for order in range(context_size + 1):
        if order:
            keys = keys[:-1] * vocab_size + ids[order:]  # keys[i]: the (order+1)-gram starting at i
        gram_keys, gram_counts = np.unique(keys, return_counts=True)
        context_keys, starts = np.unique(gram_keys // vocab_size, return_index=True)
        grams.append((gram_keys, gram_counts, context_keys, np.add.reduceat(gram_counts, starts)))
    return CharNGram(vocab_size, context_size, add_k, grams)


# -- the network ------------------------------------------------------------------------------
@register_pytree_node_class
class CharNetwork:
    r"""A next-character MLP with context size :math:`K`.

    The window :math:`(a_1, \dots, a_K)`, tokens in :math:`[0, T]` (:math:`T` the padding
    id), goes through one embedding per position, summed (the first layer on the
    concatenated one-hot tokens), then ``num_layers`` hidden layers with GELU:

    .. math::

        h_1 = \mathrm{gelu}\Bigl(b_1 + \sum_{i=1}^{K} E_i[a_i]\Bigr), \quad
        h_{l+1} = \mathrm{gelu}(h_l W_{l+1} + b_{l+1}), \quad
        \log p(\cdot \mid a) = \operatorname{log\_softmax}(h W_{\mathrm{out}} + b_{\mathrm{out}}).

    A pytree (the layers are its leaves, the sizes static).  Parameters are float32; the
    answers of :meth:`next_token_logits` and :meth:`window_logits` are float64 numpy arrays
    (normalized in float32: rows sum to one within about ``1e-6``).

    Parameters
    ----------
    layers
        :class:`~arprob.neural.Dense` layers: the first of weight ``(K * (T + 1), H)`` (row
        ``i * (T + 1) + a`` is :math:`E_{i+1}[a]`), hidden ones ``(H, H)``, the output ``(H, T)``.
    vocab_size, context_size
        :math:`T` and :math:`K`.
    """

    __slots__ = ("layers", "vocab_size", "context_size")

    def __init__(self, layers, vocab_size: int, context_size: int):
        owner = "CharNetwork"
        vocab_size, context_size = _check_model_sizes(owner, vocab_size, context_size)
        layers = tuple(Dense(*layer) for layer in layers)
        fan_in = context_size * (vocab_size + 1)
        if len(layers) < 2:
            raise ShapeError(f"{owner}: layers has {len(layers)} layer(s), expected at least 2 "
                             "(the embedding layer and the output layer)")
        for index, layer in enumerate(layers):
            shape = np.shape(layer.weight)
            if len(shape) != 2 or shape[0] != fan_in or np.shape(layer.bias) != shape[1:]:
                raise ShapeError(f"{owner}: layers[{index}] has weight shape {shape} and bias shape "
                                 f"{np.shape(layer.bias)}, expected ({fan_in}, n) and (n,)")
            fan_in = shape[1]
        if fan_in != vocab_size:
            raise ShapeError(f"{owner}: the output layer gives {fan_in} logits, expected vocab_size = {vocab_size}")
        self._set(layers, vocab_size, context_size)

    def _set(self, layers, vocab_size, context_size):
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "vocab_size", vocab_size)
        object.__setattr__(self, "context_size", context_size)

    def __setattr__(self, name, value):
        raise AttributeError(f"CharNetwork is immutable; cannot set {name!r}")

    @classmethod
    def random(cls, key, vocab_size: int, context_size: int, *, hidden_size: int = 64,
               num_layers: int = 2) -> CharNetwork:
        r"""An untrained float32 network.

        Embeddings :math:`\mathcal N(0, 1/K)` (:math:`K` of them are summed), dense weights
        :math:`\mathcal N(0, 1/\text{fan-in})`, zero biases.
        """
        owner = "CharNetwork.random"
        key = check_key(owner, key)
        vocab_size, context_size = _check_model_sizes(owner, vocab_size, context_size)
        hidden_size = check_int(owner, "hidden_size", hidden_size, minimum=1)
        num_layers = check_int(owner, "num_layers", num_layers, minimum=1)
        return cls(_init_layers(key, vocab_size, context_size, hidden_size, num_layers), vocab_size, context_size)

    @property
    def hidden_size(self) -> int:
        return int(np.shape(self.layers[0].weight)[1])

    @property
    def num_layers(self) -> int:
        return len(self.layers) - 1

    def next_token_logits(self, windows: Int[np.ndarray, "batch context_size"]
                          ) -> Float[np.ndarray, "batch vocab_size"]:
        """Log-probabilities of the next token for each window, float64 ``(batch, T)``, in chunks."""
        windows = _check_windows("CharNetwork.next_token_logits", windows, self.vocab_size, self.context_size)
        batch = windows.shape[0]
        out = np.empty((batch, self.vocab_size), dtype=np.float64)
        # one compiled shape for batches of at most CHUNK_ROWS: a power of two >= 256
        chunk = CHUNK_ROWS if batch > CHUNK_ROWS else max(256, 1 << max(batch - 1, 0).bit_length())
        for start in range(0, batch, chunk):
            part = windows[start:start + chunk]
            padded = np.full((chunk, self.context_size), self.vocab_size, dtype=np.int32)
            padded[: part.shape[0]] = part
            out[start:start + part.shape[0]] = np.asarray(_log_probs(self, jnp.asarray(padded)))[: part.shape[0]]
        return out

    def window_logits(self, dtype=np.float64) -> Float[np.ndarray, "windows vocab_size"]:
        """The ``(T**K, T)`` log-probabilities of every full window (base-``T`` rows), in chunks."""
        owner = "CharNetwork.window_logits"
        dtype = _check_dtype(owner, dtype)
        num_windows = _check_window_table(owner, self.vocab_size, self.context_size, dtype.itemsize)
        table = np.empty((num_windows, self.vocab_size), dtype=dtype)
        chunk = min(CHUNK_ROWS, 1 << max(num_windows - 1, 0).bit_length())
        for start in range(0, num_windows, chunk):
            stop = min(start + chunk, num_windows)
            rows = _window_chunk(self, jnp.asarray(start, jnp.int32), chunk, num_windows)
            table[start:stop] = np.asarray(rows)[: stop - start]
        return table

    def tree_flatten(self):
        return (self.layers,), (self.vocab_size, self.context_size)

    @classmethod
    def tree_unflatten(cls, aux, children):
        instance = cls.__new__(cls)
        instance._set(children[0], *aux)
        return instance

    def __repr__(self):
        return (f"CharNetwork(vocab_size={self.vocab_size}, context_size={self.context_size}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers})")


@partial(jax.jit, static_argnames=("vocab_size", "context_size", "hidden_size", "num_layers"))
def _init_layers(key, vocab_size, context_size, hidden_size, num_layers):
    keys = jax.random.split(key, num_layers + 1)
    # K one-hot entries are active in the first layer's input: variance 1/K keeps h_1 of order one
    sizes = [(context_size * (vocab_size + 1), hidden_size, 1.0 / context_size)]
    sizes += [(hidden_size, hidden_size, 1.0 / hidden_size)] * (num_layers - 1)
    sizes += [(hidden_size, vocab_size, 1.0 / hidden_size)]
    return tuple(Dense(jax.random.normal(k, (fan_in, fan_out), jnp.float32) * math.sqrt(variance),
                       jnp.zeros((fan_out,), jnp.float32))
                 for k, (fan_in, fan_out, variance) in zip(keys, sizes))


def _forward(layers, windows, vocab_size: int, context_size: int):
    """Normalized log-probabilities ``(batch, T)`` (float32) for windows ``(batch, K)`` in ``[0, T]``."""
    first = layers[0]
    embeddings = first.weight.reshape(context_size, vocab_size + 1, -1)
    hidden = jax.nn.gelu(embeddings[jnp.arange(context_size), windows].sum(axis=-2) + first.bias)
    for layer in layers[1:-1]:
        hidden = jax.nn.gelu(hidden @ layer.weight + layer.bias)
    return jax.nn.log_softmax(hidden @ layers[-1].weight + layers[-1].bias, axis=-1)


@jax.jit
def _log_probs(network, windows):
    return _forward(network.layers, windows, network.vocab_size, network.context_size)


@partial(jax.jit, static_argnames=("chunk", "num_windows"))
def _window_chunk(network, start, chunk: int, num_windows: int):
    """Rows ``start .. start + chunk`` of the window table (indices past the end repeat the last window)."""
    T, K = network.vocab_size, network.context_size
    index = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), num_windows - 1)
    powers = jnp.asarray([T ** (K - 1 - i) for i in range(K)], jnp.int32)
    windows = (index[:, None] // powers) % T
    return _forward(network.layers, windows, T, K)


@partial(jax.jit, static_argnames=("vocab_size", "context_size", "num_steps", "batch_size"))
def _train(key, layers, padded_ids, learning_rate, short_fraction, *, vocab_size, context_size, num_steps,
           batch_size):
    """Adam on the cross-entropy of random windows; ``padded_ids`` is the text after ``K`` padding ids."""
    T, K = vocab_size, context_size
    length = padded_ids.shape[0] - K
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
    offsets = jnp.arange(K)

    def loss(layers, windows, targets):
        log_p = _forward(layers, windows, T, K)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[:, None], axis=-1))

    def step(carry, step_key):
        layers, optimizer_state = carry
        key_position, key_short, key_keep = jax.random.split(step_key, 3)
        position = jax.random.randint(key_position, (batch_size,), 0, length)  # the target's index in ids
        windows = padded_ids[position[:, None] + offsets]  # the K tokens before it, padded at the text start
        targets = padded_ids[position + K]
        short = jax.random.uniform(key_short, (batch_size,)) < short_fraction
        keep = jnp.where(short, jax.random.randint(key_keep, (batch_size,), 0, K), K)  # real tokens kept
        windows = jnp.where(offsets >= K - keep[:, None], windows, T)
        value, grads = jax.value_and_grad(loss)(layers, windows, targets)
        updates, optimizer_state = optimizer.update(grads, optimizer_state, layers)
        return (optax.apply_updates(layers, updates), optimizer_state), value

    (layers, _), losses = jax.lax.scan(step, (layers, optimizer.init(layers)), jax.random.split(key, num_steps))
    return layers, losses


def train_char_network(key, ids: Int[np.ndarray, " length"], vocab_size: int, context_size: int, *,
                       hidden_size: int = 64, num_layers: int = 2, num_steps: int = 500, batch_size: int = 512,
                       learning_rate: float = 1e-2, short_fraction: float = 0.25) -> CharNetwork:
    r"""Train a :class:`CharNetwork` on the text ``ids`` by next-character cross-entropy.

    Each of ``num_steps`` Adam steps (learning rate ``learning_rate`` decayed to zero on a
    cosine schedule) draws ``batch_size`` target positions :math:`t` uniformly in the text
    and minimises the mean of :math:`-\log q(x_t \mid x_{t-K:t})`, the window padded with
    the id :math:`T` before the text start.  A fraction ``short_fraction`` of the windows is
    truncated to its last :math:`j` tokens, :math:`j` uniform on :math:`\{0, \dots, K-1\}`,
    the rest padded, so the short contexts (the chain's transient states) get the back-off
    predictions of the n-gram's convention.  The whole run is one jit-compiled
    ``lax.scan``: 0.2 s on 2 CPU cores at :math:`T = 27, K = 3`, 64 hidden units
    and 300 steps, plus about 2 s of compilation.

    Parameters
    ----------
    key
        PRNG key (initial weights, batches).
    ids
        The text as token ids, 1-D ints in ``[0, vocab_size)``, at least ``context_size + 1``.
    vocab_size, context_size
        :math:`T \ge 2` and :math:`K \ge 1`.
    hidden_size, num_layers
        Width and number of the hidden layers (the first is the embedding layer).
    num_steps, batch_size, learning_rate
        Optimisation.
    short_fraction
        Fraction in :math:`[0, 1]` of training windows truncated to a short context.

    Returns
    -------
    CharNetwork
    """
    owner = "train_char_network"
    key = check_key(owner, key)
    vocab_size, context_size = _check_model_sizes(owner, vocab_size, context_size)
    hidden_size = check_int(owner, "hidden_size", hidden_size, minimum=1)
    num_layers = check_int(owner, "num_layers", num_layers, minimum=1)
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    learning_rate = check_real(owner, "learning_rate", learning_rate, low=0.0, low_open=True,
                               fix="pass a step size such as 3e-3")
    short_fraction = check_real(owner, "short_fraction", short_fraction, low=0.0, high=1.0,
                                fix="the fraction of training windows truncated to a short context")
    ids = _check_ids(owner, ids, vocab_size, minimum_length=context_size + 1)
    parameters = (context_size * (vocab_size + 1) + (num_layers - 1) * hidden_size + vocab_size) * hidden_size
    sizes = (f"vocab_size={vocab_size:,}, context_size={context_size}, hidden_size={hidden_size:,}, "
             f"num_layers={num_layers}")
    check_memory(owner, f"a network of {parameters:,} weights ({sizes}) with Adam's two moments", (parameters, 3),
                 fix="use a smaller vocab_size, context_size or hidden_size, or fewer num_layers")
    check_work(owner, f"num_steps={num_steps:,} steps of batch_size={batch_size:,} on {parameters:,} weights ({sizes})",
               6.0 * num_steps * batch_size * parameters, fix="use fewer num_steps, a smaller batch_size or network")
    key_init, key_train = jax.random.split(key)
    initial = CharNetwork.random(key_init, vocab_size, context_size, hidden_size=hidden_size,
                                 num_layers=num_layers)
    padded_ids = jnp.asarray(np.concatenate([np.full(context_size, vocab_size), ids]), jnp.int32)
    layers, _ = _train(key_train, initial.layers, padded_ids, jnp.float32(learning_rate),
                       jnp.float32(short_fraction), vocab_size=vocab_size, context_size=context_size,
                       num_steps=num_steps, batch_size=batch_size)
    return CharNetwork(layers, vocab_size, context_size)


# -- evaluation -------------------------------------------------------------------------------
def cross_entropy(model, ids: Int[np.ndarray, " length"]) -> float:
    r"""Mean next-token log-loss of ``model`` on the text ``ids``, in nats per token.

    .. math::

        \frac{1}{N} \sum_{t=0}^{N-1} -\log p(x_t \mid x_{t-K:t}),

    the window padded with the id :math:`T` before the text start, the model's logits
    normalized per row in float64.  ``model`` is any object with ``vocab_size``,
    ``context_size`` and ``next_token_logits`` (:class:`CharNGram`, :class:`CharNetwork`).
    """
    owner = "cross_entropy"
    if not all(hasattr(model, name) for name in ("vocab_size", "context_size", "next_token_logits")):
        raise ArprobTypeError(f"{owner}: model must have vocab_size, context_size and next_token_logits(windows) "
                              f"(a CharNGram or CharNetwork), got {type(model).__name__}")
    T = check_int(owner, "model.vocab_size", model.vocab_size, minimum=2)
    K = check_int(owner, "model.context_size", model.context_size, minimum=1, maximum=64)
    ids = _check_ids(owner, ids, T, minimum_length=1)
    padded = np.concatenate([np.full(K, T, dtype=np.int64), ids])
    total = 0.0
    for start in range(0, ids.size, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, ids.size)
        windows = np.lib.stride_tricks.sliding_window_view(padded[start:stop + K - 1], K)
        logits = np.asarray(model.next_token_logits(windows), dtype=np.float64)
        check_logits(owner, "model.next_token_logits(windows)", logits)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        total += float(np.sum(log_norm - logits[np.arange(stop - start), ids[start:stop]]))
    return total / ids.size
