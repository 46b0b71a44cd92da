r"""An arbitrary joint law over :math:`V^L` sequences, stored as a table."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from arprob._enumerate import all_sequences, sequence_index
from arprob._random import any_undecided, sampling_table, search, uniform_words
from arprob._validation import (
    check_int,
    check_key,
    check_logits,
    check_positive_int,
    check_probs,
    check_real,
    check_real_array,
    check_sample_shape,
    check_table_size,
    is_concrete,
)
from arprob.distributions.base import SequenceDistribution
from arprob.errors import ArprobTypeError, ShapeError
from arprob.inference.chain import normalize_or_uniform

_TABLE_FIX = ("a TabularJoint stores all V**L cells: use a smaller vocabulary or length, or a model with "
              "structure (MarkovChain, NGram, HMM) for long sequences")

_AXES_FIX = "a table with more axes cannot fit in memory (at most 2**28 entries)"


@partial(jax.jit, static_argnames=("shape", "vocab_size", "length"))
def _sample_cells(key, table, *, shape, vocab_size, length):
    """Inverse-CDF draws of whole sequences: cell indices from the quantized table, then base-V digits."""
    count = int(np.prod(shape)) if shape else 1
    rows = jnp.arange(count, dtype=jnp.int32) % table.high.shape[0]  # the batch axes are the trailing ones

    def run(u_high, u_low):
        index, undecided = search(table, rows, u_high, u_low)
        return index, any_undecided(undecided)

    index = uniform_words(key, (count,), run, table.words)
    powers = jnp.asarray(vocab_size ** np.arange(length - 1, -1, -1), jnp.int32)
    tokens = (index[:, None] // powers) % vocab_size
    return tokens.astype(jnp.int32).reshape(shape + (length,))


class TabularJoint(SequenceDistribution):
    r"""Any joint law :math:`p(x_0, \dots, x_{L-1})` given as a ``(V,)*L`` table.

    The most general exact model: every marginal and conditional is computed by
    summation over the table,

    .. math::

        p(x_S) = \sum_{y:\, y_S = x_S} p(y), \qquad
        p(x_i = v \mid x_{S \setminus \{i\}}) =
        \frac{p(x_{S\setminus\{i\}}, x_i = v)}{p(x_{S\setminus\{i\}})},

    at cost :math:`O(V^L L)` per query, so it is meant for small spaces
    (the ground truth that tests and examples hold samplers against).

    Parameters
    ----------
    probs, logits
        Exactly one.  ``probs`` has shape ``batch_shape + (V,)*L`` and sums to
        one over the last ``L`` axes; ``logits`` are unnormalized log-weights of
        the same shape (normalized here).
    length
        Number of trailing axes that form one sequence.  Default: all axes
        (no batch); pass it to give a batch of joints.
    validate_args
        arprob checks concrete arguments unless this is ``False``.
    """

    pytree_data_fields = ("logits",)

    def __init__(self, probs=None, logits=None, *, length: int | None = None, validate_args=None):
        owner = "TabularJoint"
        if (probs is None) == (logits is None):
            raise ArprobTypeError(f"{owner}: pass exactly one of probs=... or logits=..., got "
                            f"{'both' if probs is not None else 'neither'}")
        table = probs if probs is not None else logits
        name = "probs" if probs is not None else "logits"
        if is_concrete(table) and not hasattr(table, "shape"):  # lists, strings, None
            table = check_real_array(owner, name, table, finite=False)
        elif is_concrete(table):
            check_real_array(owner, name, np.asarray(table).reshape(-1)[:1], finite=False)
        ndim = np.ndim(table)
        if ndim == 0:
            raise ShapeError(f"{owner}: {name} is a scalar, expected an array of shape (V,)*L (one axis per "
                             "position)")
        if length is None:
            length = ndim
        length = check_positive_int(owner, "length", length)
        if ndim < length:
            raise ShapeError(f"{owner}: {name} has {ndim} axes, expected at least length={length}")
        event = np.shape(table)[ndim - length :]
        if len(set(event)) != 1 or event[0] < 2:
            raise ShapeError(
                f"{owner}: {name} has shape {np.shape(table)}: its last {length} axes have sizes {event}, expected "
                f"({', '.join(['V'] * length)}) with one vocabulary size V >= 2 (pass length=... if leading axes "
                "are a batch)"
            )
        vocab_size = int(event[0])
        check_table_size(owner, "the table", np.shape(table), fix=_TABLE_FIX)
        checks = validate_args is not False
        if probs is not None:
            if checks:
                check_probs(owner, "probs", probs, num_axes=length)
            probs = jnp.asarray(probs)
            if not jnp.issubdtype(probs.dtype, jnp.floating):
                probs = probs.astype(jnp.result_type(float))
            self.logits = jnp.log(probs)
        else:
            if checks:
                check_logits(owner, "logits", logits, num_axes=length)
            logits = jnp.asarray(logits)
            if not jnp.issubdtype(logits.dtype, jnp.floating):
                logits = logits.astype(jnp.result_type(float))
            axes = tuple(range(ndim - length, ndim))
            self.logits = logits - logsumexp(logits, axis=axes, keepdims=True)
        super().__init__(vocab_size, length, np.shape(table)[: ndim - length],
                         validate_args=validate_args)

    @classmethod
    def random(cls, key, length: int, vocab_size: int, concentration: float = 1.0,
               *, batch_shape=()) -> TabularJoint:
        r"""A joint drawn from a symmetric Dirichlet(``concentration``) over :math:`V^L` cells.

        Small ``concentration`` gives peaked laws (a few sequences carry most
        mass), large gives near-uniform ones.  Drawn through log-gamma variates
        so that tiny concentrations do not underflow to exact zeros.  A table over
        :data:`~arprob._validation.MAX_TABLE_ENTRIES` entries is refused
        (:class:`~arprob.errors.EnumerationTooLargeError`) before anything is drawn.
        """
        owner = "TabularJoint.random"
        key = check_key(owner, key)
        length = check_int(owner, "length", length, minimum=1, maximum=64,
                         fix=_AXES_FIX)
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
        concentration = check_real(owner, "concentration", concentration, low=0.0, low_open=True,
                                   fix="the Dirichlet concentration is a positive number")
        batch_shape = check_sample_shape(owner, batch_shape, "batch_shape")
        check_table_size(owner, "the table (vocab_size**length)", tuple(batch_shape) + (vocab_size,) * length,
                         fix=_TABLE_FIX)
        shape = tuple(batch_shape) + (vocab_size,) * length
        log_gammas = jax.random.loggamma(key, concentration, shape)
        return cls(logits=log_gammas, length=length)

    @property
    def probs(self):
        return jnp.exp(self.logits)

    def _flat_logits(self):
        return self.logits.reshape(self.batch_shape + (self.vocab_size**self.length,))

    def log_prob(self, value):
        """:math:`\\log p(x)` by table look-up; ``value`` has shape ``(..., L)``."""
        value, outside = self._off_support(self._check_clean(value, "value"))
        index = sequence_index(value, self.vocab_size)
        log_p = jnp.vectorize(lambda table, i: table[i], signature="(n),()->()")(self._flat_logits(), index)
        return jnp.where(outside, -jnp.inf, log_p)  # unchecked tokens outside the vocabulary: probability 0

    def sampling_table(self):
        """The table as a :class:`~arprob._random.SamplingTable` of ``prod(batch_shape)`` rows, computed once.

        Quantized in float64 from ``exp(logits)`` (:func:`~arprob._random.quantize`) with the bits
        that keep one draw within :data:`~arprob._random.TABLE_TOLERANCE` (1e-9) TV of :meth:`law`:
        63 bits (two words) unless the table has only a few positive cells.  Traced tables
        (inside ``jit`` with the model as an argument): 31 bits, see
        :func:`~arprob._random.sampling_table`.
        """
        cached = getattr(self, "_sampling_table_cache", None)
        if cached is not None:
            return cached
        size = self.vocab_size**self.length
        if not is_concrete(self.logits):
            return sampling_table(jnp.exp(self.logits).reshape((-1, size)))
        with jax.ensure_compile_time_eval():  # a constant even when first asked inside a trace
            rows = np.exp(np.asarray(self.logits, np.float64)).reshape((-1, size))
            self._sampling_table_cache = sampling_table(rows)
        return self._sampling_table_cache

    def sample(self, key, sample_shape=()):
        r"""Draw sequences of shape ``sample_shape + batch_shape + (L,)``, int32.

        One inverse-CDF draw of a whole sequence per sample (binary search over the cumulative
        quantized table, :meth:`sampling_table`; law :func:`~arprob._random.quantize`, within 1e-9
        TV of :meth:`law`), then its base-:math:`V` digits.
        """
        key, sample_shape = self._check_sample_args(key, sample_shape)
        shape = tuple(sample_shape) + self.batch_shape
        return _sample_cells(key, self.sampling_table(), shape=shape, vocab_size=self.vocab_size,
                             length=self.length)

    def _enumerated(self):
        return jnp.asarray(all_sequences(self.vocab_size, self.length))

    def marginal_log_prob(self, x, observed):
        r""":math:`\log p(x_S)` by summation over the table; ``observed`` marks :math:`S`."""
        x, observed = self._check_partial(x, observed)
        sequences = self._enumerated()

        def single(table, tokens, mask):
            match = jnp.all(jnp.where(mask, sequences == tokens, True), axis=-1)
            return logsumexp(jnp.where(match, table, -jnp.inf))

        return jnp.vectorize(single, signature="(n),(l),(l)->()")(self._flat_logits(), x, observed)

    def conditional_logits(self, x, observed):
        r""":math:`\log p(x_i = v \mid x_{S\setminus\{i\}})` for all i, v; shape ``(..., L, V)``."""
        x, observed = self._check_partial(x, observed)
        sequences = self._enumerated()
        one_hot = jax.nn.one_hot(sequences, self.vocab_size, dtype=self.logits.dtype)  # (N, L, V)
        not_self = ~jnp.eye(self.length, dtype=bool)

        def single(table, tokens, mask):
            context = mask[None, :] & not_self  # (L_i, L_j)
            agree = sequences == tokens  # (N, L_j)
            match = jnp.all(jnp.where(context[:, None, :], agree[None], True), axis=-1)  # (L_i, N)
            shift = jnp.max(table)
            weights = jnp.where(match, jnp.exp(table - shift)[None, :], 0.0)
            mass = jnp.einsum("in,niv->iv", weights, one_hot)
            return normalize_or_uniform(jnp.log(mass) + shift)

        return jnp.vectorize(single, signature="(n),(l),(l)->(l,v)")(self._flat_logits(), x, observed)

    def _next_token_kernel(self, tokens, lengths):
        r"""One pass over the table per prefix: :math:`\sum_{y:\ y_{<n} = x_{<n}} p(y)\, [y_n = v]`, normalised.

        :math:`O(V^L L)` per prefix (the generic kernel pays :math:`O(V^L L^2)`).
        """
        sequences = self._enumerated()  # (N, L)

        def single(table, x, length):
            match = jnp.all(jnp.where(jnp.arange(self.length) < length, sequences == x, True), axis=-1)  # (N,)
            shift = jnp.max(table)
            weights = jnp.where(match, jnp.exp(table - shift), 0.0)
            next_tokens = jnp.take(sequences, length, axis=1)  # (N,)
            mass = jnp.zeros(self.vocab_size, weights.dtype).at[next_tokens].add(weights)
            return normalize_or_uniform(jnp.log(mass) + shift)

        return jnp.vectorize(single, signature="(n),(l),()->(v)")(self._flat_logits(), tokens, lengths)

    def entropy(self):
        r"""Exact entropy :math:`-\sum_x p(x) \log p(x)` in nats over the table, shape ``batch_shape``.

        Traceable (``jit``/``vmap``); :math:`0 \log 0 = 0`.
        """
        log_probs = jax.nn.log_softmax(self._flat_logits(), axis=-1)
        probs = jnp.exp(log_probs)
        return -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)

    def _law_from_sequences(self, sequences):
        logits = np.asarray(self.logits, dtype=np.float64)
        flat = logits.reshape(self.batch_shape + (-1,))
        law = np.exp(flat - np.max(flat, axis=-1, keepdims=True))
        return law / law.sum(axis=-1, keepdims=True)

    def __repr__(self):
        return (f"TabularJoint(vocab_size={self.vocab_size}, length={self.length}, "
                f"batch_shape={self.batch_shape})")
