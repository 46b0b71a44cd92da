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
"""

from __future__ import annotations

import sys

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
from arprob.errors import ArprobTypeError, ShapeError

DEFAULT_MAX_ENTRIES = 2**26

#: Longest sequence a model accepts: positions are int32 indices.
MAX_LENGTH = 2**31 - 1


def law_entropy(law) -> np.ndarray:
    """``-sum p log p`` over the last axis of float64 probabilities, with ``0 log 0 = 0``."""
    law = np.asarray(law, dtype=np.float64)
    terms = np.where(law > 0, law * np.log(np.where(law > 0, law, 1.0)), 0.0)
    return -terms.sum(axis=-1)


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
        :func:`arprob.verify.check`).  Generic version: one any-subset query per
        position with the prefix observed.
        """
        x = self._check_clean(x)
        prefix = jnp.tril(jnp.ones((self.length, self.length), bool), k=-1)  # [t, j]: j < t
        logits = self.conditional_logits(jnp.asarray(x)[..., None, :], prefix)  # (..., L_t, L, V)
        index = jnp.arange(self.length)
        return logits[..., index, index, :]

    def conditionals(self):
        """This model as a :class:`~arprob.Conditionals` family (exact)."""
        from arprob.conditionals import exact

        return exact(self)
