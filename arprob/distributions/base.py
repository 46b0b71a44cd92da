r"""Shared behaviour of arprob's exact sequence models.

Every model is a :class:`numpyro.distributions.Distribution` over integer
sequences of ``length`` tokens in ``[0, vocab_size)`` (``event_shape ==
(length,)``) and answers the any-subset conditional protocol exactly:

* ``log_prob(x)`` -- :math:`\log p(x)`;
* ``marginal_log_prob(x, observed)`` -- :math:`\log p(x_S)` with
  :math:`S = \{i : \mathrm{observed}_i\}`;
* ``conditional_logits(x, observed)`` -- :math:`\log p(x_i = v \mid x_{S\setminus\{i\}})`
  for every position :math:`i` and token :math:`v`, shape ``(..., L, V)``;
* ``law()`` -- the float64 probabilities of all :math:`V^L` sequences in
  lexicographic order (``x[0]`` varies slowest);
* ``enumerate_support(expand)`` and ``entropy()`` -- numpyro's enumeration protocol
  (``has_enumerate_support = True``), within the same enumeration budget as ``law()``.

Conditioning on an event of probability zero has no defined answer; arprob
returns the uniform law there, so that no NaN reaches a sampler, and
``marginal_log_prob`` returns ``-inf`` for the event itself.

Left-to-right access, what an engine's forward pass returns:

* ``prefix_conditional_logits(x)`` -- :math:`\log p(x_t = v \mid x_{<t})` for every
  :math:`t` of full-length inputs, shape ``(..., L, V)``; the mask id :math:`V` marks
  unknown tokens, left out of the context of later rows;
* ``next_token_logits(prefixes, lengths)`` -- :math:`\log p(x_{n_b} = v \mid x_{<n_b})` for a
  batch of padded prefixes of lengths :math:`n_b`, shape ``(..., V)``, one compiled function.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints

from arprob._enumerate import all_sequences
from arprob._validation import (
    check_enumeration,
    check_int,
    check_key,
    check_mask,
    check_memory,
    check_sample_shape,
    check_shape,
    check_tokens,
    is_concrete,
)
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError

DEFAULT_MAX_ENTRIES = 2**26

#: Longest sequence a model accepts: positions are int32 indices.
MAX_LENGTH = 2**31 - 1


def law_entropy(law) -> np.ndarray:
    """``-sum p log p`` over the last axis of float64 probabilities, with ``0 log 0 = 0``."""
    law = np.asarray(law, dtype=np.float64)
    terms = np.where(law > 0, law * np.log(np.where(law > 0, law, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def check_prefixes(owner: str, prefixes, lengths, *, vocab_size: int, length: int, check_values: bool = True):
    """Validated ``(prefixes (..., P), lengths (...))`` of a ``next_token_logits`` method.

    Shapes and dtypes are checked always (they are static under ``jit``); values only when
    concrete and ``check_values``.  Entries at or beyond ``lengths`` are padding
    and are not checked.
    """
    if not hasattr(prefixes, "dtype"):
        prefixes = np.asarray(prefixes)
        if prefixes.size == 0:
            prefixes = prefixes.astype(np.int32)  # [] or [[], []]: empty prefixes
    if prefixes.ndim < 1:
        raise ShapeError(f"{owner}: prefixes is a scalar, expected shape (P,) or (..., P) with P <= length="
                         f"{length} (one row per prefix, padded to a common width P)")
    width = prefixes.shape[-1]
    if width > length:
        raise ShapeError(f"{owner}: prefixes has shape {tuple(prefixes.shape)}, expected (..., P) with P <= "
                         f"length={length} (padding beyond the sequence length is not needed)")
    if not jnp.issubdtype(prefixes.dtype, jnp.integer) and prefixes.size:
        raise InvalidTokenError(f"{owner}: prefixes has dtype {prefixes.dtype}, expected integer token ids in "
                                f"[0, {vocab_size}) (convert with .astype(int))")
    batch = tuple(prefixes.shape[:-1])
    if lengths is None:
        if width >= length:
            raise InvalidArgumentError(
                f"{owner}: prefixes has width {width} = length and lengths was not given, so every prefix is "
                f"a complete sequence, which has no next token; pass lengths=... (each < {length}) or "
                "shorter prefixes")
        lengths = np.full(batch, width, np.int32)
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer) or lengths.dtype == bool:
        raise ArprobTypeError(f"{owner}: lengths has dtype {lengths.dtype}, expected integers (the number of "
                              "known tokens of each prefix)")
    try:
        shape = np.broadcast_shapes(tuple(lengths.shape), batch)
    except ValueError:
        shape = None
    if shape != batch:
        raise ShapeError(f"{owner}: lengths has shape {tuple(lengths.shape)} and prefixes has shape "
                         f"{tuple(prefixes.shape)}; expected lengths of shape {batch} (one length per prefix "
                         "row, i.e. prefixes.shape[:-1])")
    if check_values and is_concrete(lengths):
        values = np.broadcast_to(np.asarray(lengths), batch)
        for bad, what in ((values < 0, "negative"), (values >= length, f">= length={length}"),
                          (values > width, f"> the prefix width {width}")):
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                where = f"lengths[{', '.join(map(str, index))}]" if index else "lengths"
                hint = (" (a complete sequence has no next token; use log_prob to score it)"
                        if values[index] >= length else "")
                raise InvalidArgumentError(
                    f"{owner}: {where} is {int(values[index])} ({what}); expected 0 <= lengths <= "
                    f"min(prefixes.shape[-1], length - 1) = {min(width, length - 1)}{hint}")
        if is_concrete(prefixes) and width:
            array = np.asarray(prefixes)
            inside = np.arange(width) < values[..., None]
            bad = inside & ((array < 0) | (array >= vocab_size))
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                value = int(array[index])
                what = (f"the mask id {vocab_size}" if value == vocab_size else f"token {value}")
                raise InvalidTokenError(
                    f"{owner}: prefixes[{', '.join(map(str, index))}] holds {what} inside its prefix "
                    f"(lengths[{', '.join(map(str, index[:-1]))}] = {int(values[index[:-1]])}); expected "
                    f"tokens in [0, {vocab_size}) before lengths (entries from lengths on are padding and may "
                    "hold anything; condition on scattered known tokens with conditional_logits)")
    return jnp.asarray(prefixes), jnp.broadcast_to(jnp.asarray(lengths), batch)


@jax.jit
def _next_token_logits(model, prefixes, lengths):
    """One compiled function per model type and shapes: pad to ``L``, blank the padding, call the kernel."""
    length = model.length
    padded = jnp.pad(prefixes, [(0, 0)] * (prefixes.ndim - 1) + [(0, length - prefixes.shape[-1])])
    inside = jnp.arange(length) < lengths[..., None]
    tokens = jnp.where(inside, padded, 0).astype(jnp.int32)  # padding holds anything: never read
    return model._next_token_kernel(tokens, lengths.astype(jnp.int32))


def _pick_row(logits, lengths):
    """``logits[..., lengths, :]`` for ``(..., L, V)`` logits, broadcasting ``lengths (...)`` (no NaN from -inf)."""
    rows = jnp.arange(logits.shape[-2]) == lengths[..., None]  # (..., L)
    return jnp.sum(jnp.where(rows[..., None], logits, 0.0), axis=-2)


class SequenceDistribution(Distribution):
    """Base class: a distribution over sequences with an exact any-subset oracle."""

    pytree_aux_fields = ("vocab_size", "length")
    has_enumerate_support = True

    def __init__(self, vocab_size: int, length: int, batch_shape=(), *, validate_args=None):
        self.vocab_size = int(vocab_size)
        self.length = check_int(type(self).__name__, "length", length, minimum=1, maximum=MAX_LENGTH,
                                fix="token positions are int32 indices")
        super().__init__(batch_shape=tuple(batch_shape), event_shape=(self.length,),
                         validate_args=validate_args)

    # -- numpyro protocol -------------------------------------------------
    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.vocab_size - 1), 1)

    @property
    def _checks_on(self) -> bool:
        return self._validate_args is not False

    def _owner(self, depth: int = 2) -> str:
        """``'Class.method'`` for the public method that called the check (named in error messages)."""
        return f"{type(self).__name__}.{sys._getframe(depth).f_code.co_name}"

    def _check_sample_args(self, key, sample_shape):
        """Validated ``(key, sample_shape)`` of :meth:`sample`; refuses draws that cannot fit in memory."""
        owner = self._owner()
        key = check_key(owner, key)
        shape = check_sample_shape(owner, sample_shape)
        check_memory(owner, f"sample_shape={shape}: {int(np.prod(shape, dtype=float)):,} sequences of "
                     f"length {self.length}",
                     tuple(shape) + tuple(self.batch_shape) + (self.length, 4), itemsize=4,
                     fix="draw in batches (one call per jax.random.split key), or let arprob.verify.check "
                         "stream the draws")
        return key, shape

    def _check_clean(self, tokens, name: str = "x"):
        owner = self._owner()
        if self._checks_on:
            check_shape(owner, name, tokens, (self.length,))
            check_tokens(owner, name, tokens, self.vocab_size)
        return jnp.asarray(tokens)

    def _off_support(self, value):
        r"""``(clipped, outside)``: tokens clipped into ``[0, V)`` and, per sequence, whether any was outside.

        Values that reach a model unchecked (traced, or ``validate_args=False``) would otherwise be clipped
        or wrapped by the gathers; ``log_prob`` gives them :math:`-\infty` instead, so an enumeration-based
        or Gibbs sampler in numpyro that proposes a token outside the vocabulary sees probability zero.
        """
        value = jnp.asarray(value).astype(jnp.int32)
        outside = jnp.any((value < 0) | (value >= self.vocab_size), axis=-1)
        return jnp.clip(value, 0, self.vocab_size - 1), outside

    def _check_partial(self, tokens, observed):
        owner = self._owner()
        if self._checks_on:
            check_shape(owner, "x", tokens, (self.length,))
            check_mask(owner, "observed", observed, self.length)
            try:
                np.broadcast_shapes(np.shape(tokens)[:-1], np.shape(observed)[:-1], self.batch_shape)
            except ValueError:
                raise ShapeError(
                    f"{owner}: x has shape {np.shape(tokens)} and observed has shape {np.shape(observed)}, "
                    f"whose batch dimensions do not broadcast together (nor with batch_shape "
                    f"{self.batch_shape}); expected broadcastable shapes (..., {self.length})"
                ) from None
            check_tokens(owner, "x", tokens, self.vocab_size, observed=observed)
        tokens = jnp.asarray(tokens)
        observed = jnp.asarray(observed, dtype=bool)
        # unobserved positions may hold the mask id; replace it by a valid token
        return jnp.where(observed, tokens, 0).astype(jnp.int32), observed

    def _check_masked(self, tokens, name: str = "x"):
        """Full-length tokens in ``[0, V]`` (``V``: the mask id, an unknown token); returns ``(tokens, known)``.

        ``tokens`` has the mask id replaced by 0 (a valid token that is never read) and ``known`` is
        ``tokens != V``.
        """
        owner = self._owner()
        if self._checks_on:
            check_shape(owner, name, tokens, (self.length,))
            if is_concrete(tokens):
                array = np.asarray(tokens)
                if not np.issubdtype(array.dtype, np.integer):
                    check_tokens(owner, name, array, self.vocab_size)  # raises the dtype error
                bad = (array < 0) | (array > self.vocab_size)
                if bad.any():
                    index = tuple(int(i) for i in np.argwhere(bad)[0])
                    raise InvalidTokenError(
                        f"{owner}: {name}[{', '.join(map(str, index))}] is {int(array[index])}; expected a token "
                        f"in [0, {self.vocab_size}) or the mask id {self.vocab_size} (an unknown token, left out "
                        "of the context of later positions)")
        tokens = jnp.asarray(tokens)
        known = tokens != self.vocab_size
        return jnp.where(known, tokens, 0).astype(jnp.int32), known

    def _check_prefixes(self, prefixes, lengths):
        return check_prefixes(f"{type(self).__name__}.next_token_logits", prefixes, lengths,
                              vocab_size=self.vocab_size, length=self.length, check_values=self._checks_on)

    def next_token_logits(self, prefixes, lengths=None):
        r"""Next-token log-probabilities after a batch of padded prefixes, shape ``(..., V)``.

        .. math::

            \mathrm{logits}[b, v] = \log p(x_{n_b} = v \mid x_{<n_b} = \mathrm{prefixes}[b, :n_b])
            = \log rac{\sum_{y:\ y_{<n_b} = \mathrm{prefix}_b,\ y_{n_b} = v} p(y)}
                        {\sum_{y:\ y_{<n_b} = \mathrm{prefix}_b} p(y)},
            \qquad n_b = \mathrm{lengths}[b],

        what an engine's forward pass returns for a batch of prompts.  Normalised: ``logsumexp``
        over ``v`` is 0, ``-inf`` marks an impossible next token.

        Parameters
        ----------
        prefixes : Int[Array, "*batch P"]
            Row ``b`` holds its prefix in its first ``lengths[b]`` entries, tokens in ``[0, V)``.  The
            rest of the row is padding, ignored whatever it holds (any integer: the mask id ``V``, a
            pad id, -1); it is not checked.  ``P <= length`` (rows are padded to ``length`` inside).
            A 1-d ``prefixes`` is one prefix.
        lengths : Int[Array, "*batch"], optional
            :math:`n_b`, with ``0 <= lengths[b] <= min(P, length - 1)`` (a complete sequence has no
            next token).  Default: ``P`` for every row (unpadded prefixes).

        Returns
        -------
        Float[Array, "*batch V"]
            Broadcast with the model's ``batch_shape``; ``(V,)`` for one prefix.

        Notes
        -----
        A prefix of probability zero has no conditional: the library's convention applies (the
        uniform law, ``-log V`` everywhere, never NaN), except for chain models
        (:class:`~arprob.MarkovChain`, :class:`~arprob.NGram`), whose answer is the table row of the
        last :math:`K` tokens, as for :meth:`prefix_conditional_logits`.

        Validation: shapes and dtypes always; values (lengths in range, tokens inside the prefixes)
        when concrete and ``validate_args`` is not ``False``.  Under ``jax.jit`` the values pass
        unchecked.  Generic version: one :meth:`conditional_logits` query per row with the prefix
        observed, ``O(L)`` times the cost of a single position; :class:`~arprob.TabularJoint`,
        :class:`~arprob.MarkovChain`, :class:`~arprob.NGram` and :class:`~arprob.HMM` override
        the kernel (a table sum, a table row, a forward filter).  Equal to the row
        ``prefix_conditional_logits(x)[..., n, :]`` of any completion ``x`` of the prefix
        (tests/test_next_token_logits.py).
        """
        prefixes, lengths = self._check_prefixes(prefixes, lengths)
        return _next_token_logits(self, prefixes, lengths)

    def _next_token_kernel(self, tokens, lengths):
        """Generic kernel: ``conditional_logits`` with the prefix observed, row ``lengths``.

        ``tokens (..., L)`` int32 with the padding already replaced by 0; ``lengths (...)`` int32.
        """
        observed = jnp.arange(self.length) < lengths[..., None]
        return _pick_row(self.conditional_logits(tokens, observed), lengths)

    # -- exact laws -------------------------------------------------------
    def law(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> np.ndarray:
        """Float64 probabilities of all ``V**L`` sequences, lexicographic order.

        Shape ``batch_shape + (V**L,)``.  Refused with
        :class:`~arprob.errors.EnumerationTooLargeError` when
        ``prod(batch_shape) * V**L`` exceeds ``max_entries``.
        """
        if not is_concrete(self):
            raise ArprobTypeError(f"{type(self).__name__}.law() needs concrete parameters, not tracers")
        batch = int(np.prod(self.batch_shape)) if self.batch_shape else 1
        check_enumeration(type(self).__name__ + ".law", self.vocab_size, self.length,
                          factor=batch, max_entries=max_entries)
        sequences = all_sequences(self.vocab_size, self.length, max_entries=max_entries * 8)
        law = self._law_from_sequences(sequences)
        return law

    def enumerate_support(self, expand: bool = True, *, max_entries: int = DEFAULT_MAX_ENTRIES):
        """All ``V**L`` sequences, lexicographic order (the order of :meth:`law`), as numpyro enumerates.

        Shape ``(V**L,) + batch_shape + (L,)`` with ``expand=True``, else ``(V**L,) + (1,) * len(batch_shape)
        + (L,)`` (numpyro's convention: the enumerated values on a new leftmost axis, the event last).
        Int32.  Refused with :class:`~arprob.errors.EnumerationTooLargeError` when the array would hold
        more than ``max_entries`` tokens.  The values depend only on ``vocab_size``, ``length`` and
        ``batch_shape``, so this works inside ``jit`` too.

        numpyro's own enumerating inference reads only the *size* of this array and treats each element
        of a site as an index below it (parallel enumeration in ``numpyro.contrib.funsor`` hands the site
        ``arange(V**L)``; ``DiscreteHMCGibbs`` proposes every value below ``V**L`` for each token), which
        fits index-valued sites such as ``Categorical``, not a sequence.  Enumerate a latent sequence
        through its index instead: ``index = numpyro.sample("i", Categorical(logits=model.log_prob(support)))``,
        then ``support[index]`` (tests/test_numpyro_enumeration.py), or sum it out by hand with
        ``logsumexp`` and ``numpyro.factor``.
        """
        owner = type(self).__name__ + ".enumerate_support"
        batch = int(np.prod(self.batch_shape)) if self.batch_shape and expand else 1
        check_enumeration(owner, self.vocab_size, self.length, factor=batch * self.length,
                          max_entries=max_entries, what="the support")
        sequences = all_sequences(self.vocab_size, self.length, max_entries=max_entries, owner=owner)
        values = jnp.asarray(sequences).reshape((-1,) + (1,) * len(self.batch_shape) + (self.length,))
        if expand:
            values = jnp.broadcast_to(values, values.shape[:1] + self.batch_shape + (self.length,))
        return values

    def entropy(self, *, max_entries: int = DEFAULT_MAX_ENTRIES):
        r"""Exact entropy :math:`H(p) = -\sum_x p(x) \log p(x)` in nats, shape ``batch_shape``.

        Generic version: summed over :meth:`law` in float64 (:math:`0 \log 0 = 0`), so it needs concrete
        parameters and is refused like :meth:`law` when ``V**L`` is over ``max_entries``.  Chain models and
        :class:`~arprob.TabularJoint` override it with formulas that need no enumeration.
        """
        return jnp.asarray(law_entropy(self.law(max_entries=max_entries)))

    def prefix_conditional_logits(self, x):
        r"""Next-token log-probabilities :math:`\log p(x_t = v \mid x_{<t})`, shape ``(..., L, V)``.

        The left-to-right chain-rule factors (used by the Rosenblatt test in
        :func:`arprob.verify.check`).  Row :math:`t` reads only :math:`x_{<t}`.  ``x`` may hold the
        mask id :math:`V` (an unknown token, e.g. as padding after a prefix): masked positions are
        left out of the context, so row :math:`t` is
        :math:`\log p(x_t = v \mid x_j,\ j < t,\ x_j \ne V)` -- after a prefix of :math:`n`
        tokens padded with masks, row :math:`n` is the next-token law and rows beyond it are
        :math:`\log p(x_t = v \mid x_{<n})`.  Rows whose context has probability zero follow
        the model's convention (see :meth:`next_token_logits`).  Generic version: one
        any-subset query per position with the known prefix observed.
        """
        x, known = self._check_masked(x)
        prefix = jnp.tril(jnp.ones((self.length, self.length), bool), k=-1)  # [t, j]: j < t
        observed = prefix & known[..., None, :]
        logits = self.conditional_logits(x[..., None, :], observed)  # (..., L_t, L, V)
        index = jnp.arange(self.length)
        return logits[..., index, index, :]

    def conditionals(self):
        """This model as a :class:`~arprob.Conditionals` family (exact)."""
        from arprob.conditionals import exact

        return exact(self)
