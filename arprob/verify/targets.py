r"""Targets known only through their conditionals: the adapters :func:`~arprob.verify.check` accepts.

A target is often a network, not an enumerable table.  What the Rosenblatt and
calibration tests need is the left-to-right factorization

.. math::

    p(x) = \prod_{t=0}^{L-1} p(x_t \mid x_{<t}),

one ``(V,)`` vector of next-token logits per position.  :func:`left_to_right`
wraps a user's callable ``logits(prefix) -> (V,)``; an any-subset family
(:class:`~arprob.Conditionals`, e.g. :func:`arprob.conditionals.neural`) is
adapted by asking it, for each position :math:`t`, the conditional of
:math:`x_t` with the prefix :math:`x_{<t}` observed (one call on a batch of
:math:`L` masks).  For an inconsistent any-subset family this *defines* the
target as the family's left-to-right ancestral law, which is what
``ancestral(key, family, n)`` samples.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from arprob._validation import check_bool, check_int, check_positive_int, check_table_size
from arprob.errors import ArprobTypeError

__all__ = ["LeftToRight", "left_to_right"]


@register_pytree_node_class
class LeftToRight:
    r"""A target given by its next-token logits :math:`\log p(x_t = \cdot \mid x_{<t})`.

    Build with :func:`left_to_right`.  ``prefix_conditional_logits(x)`` returns
    shape ``(..., L, V)``; ``log_prob(x)`` the chain-rule sum.
    """

    def __init__(self, logits_fn: Callable, vocab_size: int, length: int, batched: bool):
        self.logits_fn = logits_fn
        self.vocab_size = vocab_size
        self.length = length
        self.batched = batched

    def prefix_conditional_logits(self, x):
        x = jnp.asarray(x).astype(jnp.int32)
        batch_shape = x.shape[:-1]
        flat = x.reshape((-1, self.length))
        rows = []
        for t in range(self.length):
            prefix = flat[:, :t]
            logits = self.logits_fn(prefix) if self.batched else jax.vmap(self.logits_fn)(prefix)
            rows.append(jnp.asarray(logits))
        out = jnp.stack(rows, axis=1)
        return jax.nn.log_softmax(out.reshape(batch_shape + (self.length, self.vocab_size)), axis=-1)

    def log_prob(self, x):
        x = jnp.asarray(x).astype(jnp.int32)
        logits = self.prefix_conditional_logits(x)
        return jnp.take_along_axis(logits, x[..., None], axis=-1)[..., 0].sum(axis=-1)

    def tree_flatten(self):
        return (), (self.logits_fn, self.vocab_size, self.length, self.batched)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux)

    def __repr__(self):
        name = getattr(self.logits_fn, "__name__", type(self.logits_fn).__name__)
        return f"left_to_right({name}, vocab_size={self.vocab_size}, length={self.length})"


def left_to_right(logits_fn: Callable, vocab_size: int, length: int, *, batched: bool = False) -> LeftToRight:
    r"""Wrap a next-token function as a :func:`~arprob.verify.check` target.

    Parameters
    ----------
    logits_fn
        ``logits_fn(prefix)`` with ``prefix`` an int32 array of shape ``(t,)``,
        :math:`0 \le t < L`, returning the ``(V,)`` logits of
        :math:`x_t \mid x_{<t} = \texttt{prefix}` (unnormalized is fine).  With
        ``batched=True`` it takes ``(n, t)`` and returns ``(n, V)``.  It must be
        a JAX function (it is traced once per prefix length).
    vocab_size, length
        :math:`V` and :math:`L`.
    batched
        Whether ``logits_fn`` handles a batch itself (faster for networks).

    Returns
    -------
    LeftToRight
        A target for :func:`~arprob.verify.check` (Rosenblatt and calibration
        tests) and :func:`~arprob.verify.resolution`.
    """
    owner = "left_to_right"
    if not callable(logits_fn):
        raise ArprobTypeError(f"{owner}: logits_fn must be callable as logits_fn(prefix) -> (vocab_size,) logits, "
                              f"got {type(logits_fn).__name__}")
    vocab_size = check_positive_int(owner, "vocab_size", vocab_size, minimum=2)
    length = check_int(owner, "length", length, minimum=1, maximum=2**31 - 1, fix="positions are int32")
    batched = check_bool(owner, "batched", batched)
    check_table_size(owner, "one batch of next-token logits (vocab_size x length)", (vocab_size, length),
                     fix="the next-token logits of every position must fit in memory")
    return LeftToRight(logits_fn, vocab_size, length, batched)


@register_pytree_node_class
class _AnySubsetPrefix:
    """Left-to-right view of an any-subset family: row t of family(x, {j < t})."""

    def __init__(self, family):
        self.family = family

    @property
    def vocab_size(self) -> int:
        return self.family.vocab_size

    @property
    def length(self) -> int:
        return self.family.length

    def prefix_conditional_logits(self, x):
        x = jnp.asarray(x).astype(jnp.int32)
        length = self.length
        prefix = jnp.asarray(np.tril(np.ones((length, length), bool), k=-1))  # [t, j]: j < t
        repeated = jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (length, length))
        logits = jax.nn.log_softmax(self.family(jnp.where(prefix, repeated, self.vocab_size), prefix), axis=-1)
        index = jnp.arange(length)
        return logits[..., index, index, :]

    def log_prob(self, x):
        logits = self.prefix_conditional_logits(x)
        return jnp.take_along_axis(logits, jnp.asarray(x)[..., None].astype(jnp.int32), axis=-1)[..., 0].sum(-1)

    def tree_flatten(self):
        return (self.family,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0])

    def __repr__(self):
        return f"left-to-right view of {self.family!r}"


def resolve_target(owner: str, target):
    """Return ``(model, exact)``: the object the counters query, and whether it has exact marginals."""
    model = getattr(target, "model", target)  # an ExactConditionals family stands for its model
    exact_needed = ("vocab_size", "length", "marginal_log_prob", "prefix_conditional_logits", "law")
    if all(hasattr(model, attribute) for attribute in exact_needed):
        if getattr(model, "batch_shape", ()) != ():
            from arprob.errors import ShapeError

            raise ShapeError(f"{owner}: target has batch_shape {model.batch_shape}, expected () (one model; "
                             "index the batch first)")
        return model, True
    if all(hasattr(target, attribute) for attribute in ("vocab_size", "length", "prefix_conditional_logits")):
        return target, False
    from arprob.conditionals import Conditionals

    if isinstance(target, Conditionals) and callable(target):
        from arprob.conditionals import as_conditionals

        return _AnySubsetPrefix(as_conditionals(target, owner, "target")), False
    raise ArprobTypeError(
        f"{owner}: target must be an exact arprob model (TabularJoint, MarkovChain, NGram, HMM, ...), a conditional "
        f"family, or a next-token function wrapped with arprob.verify.left_to_right(fn, vocab_size, length); "
        f"got {type(target).__name__}")
