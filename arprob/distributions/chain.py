r"""Finite-context chain models: :class:`MarkovChain` and :class:`NGram`.

Both are the same object underneath: a table ``p(x_t = v | w_{t-1})`` indexed
by the window :math:`w_{t-1}` of the previous :math:`K` tokens (beginning-of-
sequence id :math:`V` before the start), so that

.. math::

    p(x) = \prod_{t=0}^{L-1} p(x_t \mid x_{t-K}, \dots, x_{t-1}).

Marginals and conditionals on any observed subset are computed by
forward-backward over windows (:mod:`arprob.inference.chain`): cost
:math:`O(L (V+1)^K V)`, so lengths in the thousands are fine.
"""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from arprob._random import any_undecided, sampling_table, search, uniform_words
from arprob._validation import (
    check_int,
    check_key,
    check_positive_int,
    check_probs,
    check_real,
    check_shape,
    check_table_size,
    is_concrete,
)
from arprob.distributions.base import MAX_LENGTH, SequenceDistribution
from arprob.errors import InvalidProbabilityError, ShapeError
from arprob.inference.chain import (
    _evidence,
    _forward,
    chain_conditional_logits,
    chain_log_prob,
    chain_marginal_log_prob,
    normalize_or_uniform,
    start_window_index,
    window_indices,
)

_AXES_FIX = "a table with more axes cannot fit in memory (at most 2**28 entries)"


def reachable_windows(vocab_size: int, context_size: int) -> np.ndarray:
    """Bool mask over the ``(V+1)**K`` windows: BOS ids only as a leading run."""
    mask = np.zeros((vocab_size + 1) ** context_size, dtype=bool)
    base = vocab_size + 1
    for num_bos in range(context_size + 1):
        for tokens in itertools.product(range(vocab_size), repeat=context_size - num_bos):
            index = 0
            for token in (vocab_size,) * num_bos + tokens:
                index = index * base + token
            mask[index] = True
    return mask


@partial(jax.jit, static_argnames=("length", "vocab_size", "context_size", "num_samples", "num_tables"))
def _sample_chains(key, table, *, length, vocab_size, context_size, num_samples, num_tables):
    r"""``num_samples`` ancestral draws, shape ``(num_samples, length)``; sample ``r`` uses table ``r % num_tables``.

    ``table`` is a :class:`~arprob._random.SamplingTable` of ``num_tables * W`` rows (``W`` windows per
    table).  One ``jax.random.bits`` call for all (high) words, then one ``lax.scan`` over time on the
    whole batch carrying the window index: the next window drops the oldest token,
    :math:`w' = (w \bmod (V+1)^{K-1})(V+1) + x_t`.
    """
    base = vocab_size + 1
    num_windows = base**context_size
    keep = base ** (context_size - 1)
    offset = (jnp.arange(num_samples, dtype=jnp.int32) % num_tables) * num_windows
    start = jnp.full((num_samples,), start_window_index(vocab_size, context_size), jnp.int32)

    def run(u_high, u_low):
        def step(carry, uniforms):
            window, undecided = carry
            token, tie = search(table, offset + window, *uniforms)
            return ((window % keep) * base + token, undecided | any_undecided(tie)), token

        (_, undecided), tokens = jax.lax.scan(step, (start, jnp.zeros((), bool)), (u_high, u_low))
        return tokens.T, undecided

    return uniform_words(key, (length, num_samples), run, table.words)


_MARKOV_FIX = ("use a smaller vocab_size (the table has (V+1) x V entries per batch element), or an HMM "
               "with a few hidden states for a large vocabulary")
_NGRAM_FIX = ("use a smaller vocab_size or context_size (the table has (V+1)**K x V entries), or raise "
              "arprob._validation.MAX_TABLE_ENTRIES if the machine has the memory")


class _ChainModel(SequenceDistribution):
    """Shared implementation over a flattened window table ``log_table (..., W, V)``."""

    pytree_data_fields = ("log_table",)
    pytree_aux_fields = ("context_size",)

    def _setup(self, log_table, vocab_size, length, context_size, batch_shape, validate_args):
        self.context_size = int(context_size)
        self.log_table = log_table
        super().__init__(vocab_size, length, batch_shape, validate_args=validate_args)

    def _kernel_kwargs(self):
        return dict(vocab_size=self.vocab_size, context_size=self.context_size)

    def log_prob(self, value):
        """:math:`\\sum_t \\log p(x_t \\mid x_{t-K:t})` by table look-up; ``value`` has shape ``(..., L)``."""
        value, outside = self._off_support(self._check_clean(value, "value"))
        kwargs = self._kernel_kwargs()
        log_p = jnp.vectorize(lambda table, x: chain_log_prob(table, x, **kwargs),
                              signature="(w,v),(l)->()")(self.log_table, value)
        return jnp.where(outside, -jnp.inf, log_p)  # unchecked tokens outside the vocabulary: probability 0

    def marginal_log_prob(self, x, observed):
        r""":math:`\log p(x_S)` by the forward pass with evidence on :math:`S`."""
        x, observed = self._check_partial(x, observed)
        kwargs = self._kernel_kwargs()
        return jnp.vectorize(lambda t, xi, oi: chain_marginal_log_prob(t, xi, oi, **kwargs),
                             signature="(w,v),(l),(l)->()")(self.log_table, x, observed)

    def conditional_logits(self, x, observed):
        r""":math:`\log p(x_i = v \mid x_{S \setminus \{i\}})` by forward-backward, ``(..., L, V)``."""
        x, observed = self._check_partial(x, observed)
        kwargs = self._kernel_kwargs()
        return jnp.vectorize(lambda t, xi, oi: chain_conditional_logits(t, xi, oi, **kwargs),
                             signature="(w,v),(l),(l)->(l,v)")(self.log_table, x, observed)

    def prefix_conditional_logits(self, x):
        r""":math:`\log p(x_t = v \mid x_{<t})`, shape ``(..., L, V)``: rows of the table.

        Row :math:`t` is the table row of the window :math:`w_{t-1}` of the last :math:`K` tokens,
        also where the prefix has probability zero (what the model's forward pass gives).  Where
        ``x`` holds the mask id :math:`V` (an unknown token), the rows after it are
        :math:`\log p(x_t = v \mid x_j,\ j < t,\ x_j \ne V) = \log \sum_w
        p(w_{t-1} = w \mid \text{known } x_{<t})\, p(v \mid w)` by a forward pass over windows
        with evidence on the known tokens (:math:`O(L (V+1)^K V)`, uniform where that context has
        probability zero); rows whose window is fully known stay table rows.
        """
        x, known = self._check_masked(x)
        if is_concrete(x, known) and bool(np.all(np.asarray(known))):
            return self._table_rows(x)
        # traced: decided at run time (a select of both branches when vmapped by the caller)
        return jax.lax.cond(jnp.all(known), lambda x, known: self._table_rows(x),
                            self._masked_prefix_rows, x, known)

    def _table_rows(self, x):
        windows = window_indices(x, self.vocab_size, self.context_size)
        return jnp.vectorize(lambda table, w: table[w], signature="(w,v),(l)->(l,v)")(self.log_table, windows)

    def _masked_prefix_rows(self, x, known):
        """Rows of :meth:`prefix_conditional_logits` when some tokens are unknown (``known`` False)."""
        kwargs = self._kernel_kwargs()
        start = start_window_index(self.vocab_size, self.context_size)
        # row t reads only known x_{t-K:t}: its window is fully known iff no unknown token in the last K
        unknown = (~known).astype(jnp.int32)
        count = jnp.cumsum(jnp.pad(unknown, [(0, 0)] * (unknown.ndim - 1) + [(self.context_size, 0)]), axis=-1)
        window_known = (count[..., self.context_size:] - count[..., :-self.context_size]) == 0  # over [t-K, t)
        window_known = jnp.concatenate([jnp.ones_like(window_known[..., :1]), window_known[..., :-1]], axis=-1)

        def single(log_table, tokens, observed):
            table = jnp.exp(log_table)
            evidence = _evidence(tokens, observed, self.vocab_size, table.dtype)
            scaled, _ = _forward(table, evidence, **kwargs)  # p(w_t | known x_{<=t}), (L, W)
            first = jnp.zeros((1, table.shape[0]), table.dtype).at[0, start].set(1.0)
            previous = jnp.concatenate([first, scaled[:-1]], axis=0)  # p(w_{t-1} | known x_{<t})
            mass = jnp.matmul(previous, table, precision=jax.lax.Precision.HIGHEST)
            return normalize_or_uniform(jnp.log(mass))

        filtered = jnp.vectorize(single, signature="(w,v),(l),(l)->(l,v)")(self.log_table, x, known)
        return jnp.where(window_known[..., None], self._table_rows(x), filtered)

    def _next_token_kernel(self, tokens, lengths):
        r"""The table row of the window :math:`(x_{n-K}, \dots, x_{n-1})`, BOS before the start."""
        base = self.vocab_size + 1
        window = jnp.zeros(lengths.shape, jnp.int32)
        for j in range(self.context_size):
            position = lengths - self.context_size + j
            token = jnp.take_along_axis(tokens, jnp.clip(position, 0, self.length - 1)[..., None], axis=-1)[..., 0]
            window = window * base + jnp.where(position >= 0, token, self.vocab_size)
        return jnp.vectorize(lambda table, w: table[w], signature="(w,v),()->(v)")(self.log_table, window)

    def sampling_table(self):
        r"""The rows :math:`p(\cdot \mid w)` as a :class:`~arprob._random.SamplingTable`, computed once.

        ``batch_shape + (W,)`` rows flattened to ``(prod(batch_shape) * W, V - 1)`` thresholds,
        quantized in float64 from ``exp(log_table)`` with the bits that keep a whole sequence of
        :math:`L` draws within :data:`~arprob._random.TABLE_TOLERANCE` (1e-9) TV of :meth:`law`
        (:func:`~arprob._random.quantize`; traced tables: 31 bits, see
        :func:`~arprob._random.sampling_table`).
        """
        cached = getattr(self, "_sampling_table_cache", None)
        if cached is not None:
            return cached
        if not is_concrete(self.log_table):  # inside jit with the model as an argument
            return sampling_table(jnp.exp(self.log_table).reshape((-1, self.vocab_size)))
        with jax.ensure_compile_time_eval():  # a constant even when first asked inside a trace
            rows = np.exp(np.asarray(self.log_table, np.float64)).reshape((-1, self.vocab_size))
            self._sampling_table_cache = sampling_table(rows, draws=self.length)
        return self._sampling_table_cache

    def sample(self, key, sample_shape=()):
        r"""Ancestral draws of shape ``sample_shape + batch_shape + (L,)``, int32.

        Inverse-CDF draws from the quantized rows (:meth:`sampling_table`, law
        :func:`~arprob._random.quantize`, within 1e-9 TV of :meth:`law` per sequence): one
        ``jax.random.bits`` call, then one ``lax.scan`` over time on the whole batch.
        """
        key, sample_shape = self._check_sample_args(key, sample_shape)
        shape = tuple(sample_shape) + self.batch_shape
        count = int(np.prod(shape)) if shape else 1
        num_tables = int(np.prod(self.batch_shape)) if self.batch_shape else 1
        tokens = _sample_chains(key, self.sampling_table(), length=self.length, vocab_size=self.vocab_size,
                                context_size=self.context_size, num_samples=count, num_tables=num_tables)
        return tokens.reshape(shape + (self.length,))

    def entropy(self):
        r"""Exact entropy in nats, shape ``batch_shape``, by a forward pass over windows (no enumeration).

        By the chain rule, :math:`H(p) = \sum_{t=0}^{L-1} \sum_w P(w_{t-1} = w)\, H(p(\cdot \mid w))`:
        the window laws :math:`P(w_{t-1} = \cdot)` are propagated from the all-BOS window
        (:math:`P(w_t = (a_2, \dots, a_K, v)) = \sum_{a_1} P(w_{t-1} = (a_1, \dots, a_K))\, p(v \mid a_1, \dots, a_K)`),
        cost :math:`O(L (V+1)^K V)`, any length, traceable (``jit``/``vmap``).  Equal to
        ``-sum(law * log(law))`` to float64 rounding (tests/test_numpyro_enumeration.py).
        """
        vocab_size, context_size, length = self.vocab_size, self.context_size, self.length
        base = vocab_size + 1

        def single(log_table):
            probs = jnp.exp(log_table)
            row_entropy = -jnp.sum(jnp.where(probs > 0, probs * log_table, 0.0), axis=-1)  # (W,)
            if context_size == 0:
                return length * row_entropy[0]
            start = jnp.zeros(base**context_size, probs.dtype).at[start_window_index(vocab_size, context_size)].set(1)
            joint_shape = (base,) * context_size + (vocab_size,)
            pad = [(0, 0)] * (context_size - 1) + [(0, 1)]

            def step(window_law, _):
                term = jnp.sum(jnp.where(window_law > 0, window_law * row_entropy, 0.0))
                mass = jnp.where(window_law[:, None] > 0, window_law[:, None] * probs, 0.0)  # unreachable rows unread
                joint = mass.reshape(joint_shape).sum(axis=0)  # drop the oldest token
                return jnp.pad(joint, pad).reshape(-1), term  # the BOS id never follows a token

            _, terms = jax.lax.scan(step, start, None, length=length)
            return terms.sum()

        return jnp.vectorize(single, signature="(w,v)->()")(self.log_table)

    def _law_from_sequences(self, sequences):
        table = np.asarray(self.log_table, dtype=np.float64)
        base = self.vocab_size + 1
        padded = np.concatenate(
            [np.full((sequences.shape[0], self.context_size), self.vocab_size), sequences], axis=1
        )
        log_law = np.zeros(table.shape[:-2] + (sequences.shape[0],))
        for t in range(self.length):
            window = np.zeros(sequences.shape[0], dtype=np.int64)
            for j in range(self.context_size):
                window = window * base + padded[:, t + j]
            log_law = log_law + table[..., window, sequences[:, t]]
        return np.exp(log_law)

    def next_token_probs(self, context=()):
        """``p(x_t = . | previous tokens)`` for a context of up to ``K`` tokens (numpy)."""
        base = self.vocab_size + 1
        context = list(context)[-self.context_size :] if self.context_size else []
        window = [self.vocab_size] * (self.context_size - len(context)) + context
        index = 0
        for token in window:
            index = index * base + int(token)
        return np.exp(np.asarray(self.log_table, dtype=np.float64)[..., index, :])


class MarkovChain(_ChainModel):
    r"""A first-order Markov chain of ``length`` tokens.

    .. math::

        p(x) = \pi(x_0) \prod_{t=1}^{L-1} P(x_{t-1}, x_t).

    Parameters
    ----------
    initial_probs
        :math:`\pi`, shape ``(..., V)``.
    transition_probs
        :math:`P`, shape ``(..., V, V)``; row ``a`` is the law of the next token after ``a``.
    length
        Sequence length :math:`L` (thousands are fine).
    """

    pytree_data_fields = ("initial_probs", "transition_probs")

    def __init__(self, initial_probs, transition_probs, length: int, *, validate_args=None):
        owner = "MarkovChain"
        length = check_positive_int(owner, "length", length)
        checks = validate_args is not False
        if np.ndim(initial_probs) < 1:
            raise ShapeError(f"{owner}: initial_probs has shape {np.shape(initial_probs)}, expected (..., V)")
        vocab_size = int(np.shape(initial_probs)[-1])
        if vocab_size < 2:
            raise ShapeError(f"{owner}: initial_probs has {vocab_size} entries, expected V >= 2")
        batch_size = max(int(np.prod(np.shape(initial_probs)[:-1])), int(np.prod(np.shape(transition_probs)[:-2])))
        check_table_size(owner, "the window table", (batch_size, vocab_size + 1, vocab_size), fix=_MARKOV_FIX)
        if checks:
            check_shape(owner, "transition_probs", transition_probs, (vocab_size, vocab_size))
            check_probs(owner, "initial_probs", initial_probs)
            check_probs(owner, "transition_probs", transition_probs)
        initial = jnp.asarray(initial_probs)
        transition = jnp.asarray(transition_probs)
        dtype = jnp.result_type(initial.dtype, transition.dtype, float)
        initial, transition = initial.astype(dtype), transition.astype(dtype)
        try:
            batch_shape = jnp.broadcast_shapes(initial.shape[:-1], transition.shape[:-2])
        except ValueError:
            raise ShapeError(
                f"{owner}: initial_probs has shape {initial.shape} and transition_probs has shape "
                f"{transition.shape}; their batch dimensions {initial.shape[:-1]} and {transition.shape[:-2]} "
                "do not broadcast (expected (..., V) and (..., V, V) with broadcastable leading axes)"
            ) from None
        self.initial_probs = initial
        self.transition_probs = transition
        rows = jnp.concatenate(
            [jnp.broadcast_to(transition, batch_shape + (vocab_size, vocab_size)),
             jnp.broadcast_to(initial, batch_shape + (vocab_size,))[..., None, :]], axis=-2
        )
        self._setup(jnp.log(rows), vocab_size, length, 1, batch_shape, validate_args)

    @classmethod
    def random(cls, key, length: int, vocab_size: int, concentration: float = 1.0) -> MarkovChain:
        """Initial law and transition rows drawn from a symmetric Dirichlet.

        Raises
        ------
        EnumerationTooLargeError
            If the ``(V+1) x V`` table exceeds :data:`~arprob._validation.MAX_TABLE_ENTRIES`
            (checked before anything is drawn).
        """
        owner = "MarkovChain.random"
        key = check_key(owner, key)
        length = check_int(owner, "length", length, minimum=1, maximum=MAX_LENGTH, fix="positions are int32")
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
        concentration = check_real(owner, "concentration", concentration, low=0.0, low_open=True,
                                   fix="the Dirichlet concentration is a positive number")
        check_table_size(owner, "the window table", (vocab_size + 1, vocab_size), fix=_MARKOV_FIX)
        key_initial, key_transition = jax.random.split(key)
        shape = (vocab_size + 1, vocab_size)
        rows = jax.nn.softmax(jax.random.loggamma(key_transition, concentration, shape), axis=-1)
        rows = rows.at[-1].set(jax.nn.softmax(jax.random.loggamma(key_initial, concentration, (vocab_size,))))
        return cls(rows[-1], rows[:-1], length)

    def __repr__(self):
        return (f"MarkovChain(vocab_size={self.vocab_size}, length={self.length}, "
                f"batch_shape={self.batch_shape})")


class NGram(_ChainModel):
    r"""A context-:math:`K` next-token model ("an LLM with context window K").

    .. math::

        p(x) = \prod_{t=0}^{L-1} p(x_t \mid x_{t-K}, \dots, x_{t-1}),

    with positions before the start filled by the beginning-of-sequence id
    :math:`V`.  ``table[c_1, ..., c_K, v] = p(x_t = v | x_{t-K} = c_1, ..., x_{t-1} = c_K)``.

    Parameters
    ----------
    table
        Shape ``batch_shape + (V+1,)*K + (V,)``; each reachable context row
        (BOS ids only as a leading run) sums to one.  Unreachable rows are never
        used and may hold anything finite or not.
    length
        Sequence length :math:`L`.
    context_size
        :math:`K`.  Default: every axis but the last is a context axis (no batch).
    """

    pytree_data_fields = ("table",)

    def __init__(self, table, length: int, *, context_size: int | None = None, validate_args=None):
        owner = "NGram"
        length = check_positive_int(owner, "length", length)
        ndim = np.ndim(table)
        if ndim < 2:
            raise ShapeError(f"{owner}: table has shape {np.shape(table)}, expected (V+1,)*K + (V,) with K >= 1")
        if context_size is None:
            context_size = ndim - 1
        context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64,
                         fix=_AXES_FIX)
        shape = np.shape(table)
        vocab_size = int(shape[-1])
        expected = (vocab_size + 1,) * context_size + (vocab_size,)
        if ndim < context_size + 1 or tuple(shape[ndim - context_size - 1 :]) != expected:
            raise ShapeError(
                f"{owner}: table has shape {shape}, expected (..., {', '.join(map(str, expected))}) "
                f"for vocab_size={vocab_size} and context_size={context_size} "
                f"(index {vocab_size} along a context axis is the beginning-of-sequence padding)"
            )
        batch_shape = tuple(shape[: ndim - context_size - 1])
        check_table_size(owner, "the window table", batch_shape + expected, fix=_NGRAM_FIX)
        num_windows = (vocab_size + 1) ** context_size
        reachable = reachable_windows(vocab_size, context_size)
        flat = jnp.asarray(table)
        flat = flat.astype(jnp.result_type(flat.dtype, float)).reshape(batch_shape + (num_windows, vocab_size))
        if validate_args is not False and is_concrete(table):
            rows = np.asarray(flat)[..., reachable, :]
            try:
                check_probs(owner, "table", rows)
            except InvalidProbabilityError as error:
                raise InvalidProbabilityError(str(error) + " (checked on reachable context rows)") from None
        self.table = jnp.asarray(table)
        uniform = jnp.full_like(flat, 1.0 / vocab_size)
        flat = jnp.where(jnp.asarray(reachable)[:, None], flat, uniform)
        self._setup(jnp.log(flat), vocab_size, length, context_size, batch_shape, validate_args)

    @classmethod
    def random(cls, key, length: int, vocab_size: int, context_size: int,
               concentration: float = 1.0) -> NGram:
        """Every context row drawn from a symmetric Dirichlet(``concentration``).

        Raises
        ------
        EnumerationTooLargeError
            If the ``(V+1)**K x V`` table exceeds :data:`~arprob._validation.MAX_TABLE_ENTRIES`
            (checked from the sizes before anything is drawn).
        """
        owner = "NGram.random"
        key = check_key(owner, key)
        length = check_int(owner, "length", length, minimum=1, maximum=MAX_LENGTH, fix="positions are int32")
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
        context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64,
                         fix=_AXES_FIX)
        concentration = check_real(owner, "concentration", concentration, low=0.0, low_open=True,
                                   fix="the Dirichlet concentration is a positive number")
        shape = (vocab_size + 1,) * context_size + (vocab_size,)
        check_table_size(owner, "the window table", shape, fix=_NGRAM_FIX)
        table = jax.nn.softmax(jax.random.loggamma(key, concentration, shape), axis=-1)
        return cls(table, length, context_size=context_size)

    def __repr__(self):
        return (f"NGram(vocab_size={self.vocab_size}, context_size={self.context_size}, "
                f"length={self.length}, batch_shape={self.batch_shape})")
