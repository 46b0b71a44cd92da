r"""The any-subset conditional protocol: the spine every sampler is written against.

A *conditional family* answers, for a batch of partially observed sequences,

.. math::

    \mathrm{logits}[\dots, i, v] = \log q(x_i = v \mid x_j,\ j \in S \setminus \{i\}),
    \qquad S = \{j : \mathrm{observed}_j\},

for every position :math:`i` at once: exactly what a masked-diffusion or
any-order network computes in one forward pass.  Exact models compute it by
summation or forward-backward (:func:`exact`); :func:`perturbed` makes a
controlled, *inconsistent* family from a consistent one, so that order
dependence and sampler errors can be studied exactly.

Values of ``x`` at unobserved positions are ignored; they may hold the mask
token id ``vocab_size``.

A family is *consistent* when some joint :math:`p` has all its answers as
conditionals; then ancestral sampling in every order draws from :math:`p`
(``proofs/01-chain-rule-any-order.md``).
"""

from __future__ import annotations

from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from arprob.errors import ArprobTypeError, IncompatibleError, InvalidArgumentError

__all__ = ["Conditionals", "ExactConditionals", "NeuralConditionals", "PerturbedConditionals",
           "as_conditionals", "exact", "neural", "perturbed"]


@runtime_checkable
class Conditionals(Protocol):
    """Anything with ``vocab_size``, ``length`` and ``__call__(x, observed) -> (..., L, V)``."""

    vocab_size: int
    length: int

    def __call__(self, x, observed):  # pragma: no cover - protocol signature
        ...


@register_pytree_node_class
class ExactConditionals:
    """The exact conditionals of a model: ``model.conditional_logits`` as a family.

    A pytree, so it can be passed through ``jax.jit`` as an ordinary argument.
    """

    def __init__(self, model):
        if getattr(model, "batch_shape", ()) != ():
            raise ArprobTypeError(
                f"exact: the model has batch_shape {model.batch_shape}, expected () "
                "(a conditional family describes one model; index the batch first)"
            )
        self.model = model

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def length(self) -> int:
        return self.model.length

    def __call__(self, x, observed):
        return self.model.conditional_logits(x, observed)

    def tree_flatten(self):
        return (self.model,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        instance = cls.__new__(cls)
        instance.model = children[0]
        return instance

    def __repr__(self):
        return f"exact({self.model!r})"


def exact(model) -> ExactConditionals:
    """The exact any-subset conditionals of an arprob model (no batch shape)."""
    if not hasattr(model, "conditional_logits"):
        raise ArprobTypeError(
            f"exact: expected an arprob model with conditional_logits (TabularJoint, "
            f"MarkovChain, NGram, ...), got {type(model).__name__}"
        )
    return ExactConditionals(model)


def as_conditionals(obj, owner: str = "arprob") -> Conditionals:
    """Accept a conditional family or an exact model (converted with :func:`exact`)."""
    if hasattr(obj, "conditional_logits"):
        return exact(obj)
    if isinstance(obj, Conditionals):
        return obj
    raise ArprobTypeError(
        f"{owner}: expected a conditional family (vocab_size, length, __call__(x, observed)) "
        f"or an exact model, got {type(obj).__name__}"
    )


def check_compatible(owner: str, first, second, first_name="sampler", second_name="target"):
    """Raise :class:`IncompatibleError` if vocabularies or lengths differ."""
    for attribute in ("vocab_size", "length"):
        a, b = getattr(first, attribute), getattr(second, attribute)
        if a != b:
            raise IncompatibleError(
                f"{owner}: {first_name} has {attribute}={a} but {second_name} has {attribute}={b}; "
                "they must describe the same sequence space"
            )


def split_static(family):
    """Split a family into ``(dynamic, static)`` for ``jax.jit``.

    Families that are pytrees of arrays (every arprob family) travel as dynamic
    arguments, so one compilation serves every parameter value; any other
    callable is passed as a static argument (hashed by identity).
    """
    leaves = jax.tree_util.tree_leaves(family)
    if all(isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)) for leaf in leaves) and not (
        len(leaves) == 1 and leaves[0] is family
    ):
        return family, None
    return None, family


def join_static(dynamic, static):
    """Inverse of :func:`split_static`."""
    return static if static is not None else dynamic


@partial(jax.jit, static_argnames=("static",))
def normalized_logits(dynamic, static, tokens, observed):
    """``log_softmax`` of a split family's answer (jitted once per family type and shapes)."""
    return jax.nn.log_softmax(join_static(dynamic, static)(tokens, observed), axis=-1)


# The context code folds base-(V+1) digits into the key in chunks small enough
# to be exact in int32, so distinct contexts always get distinct noise.
def _chunk_size(vocab_size: int) -> int:
    return max(1, int(np.floor(31 / np.log2(vocab_size + 1))))


@register_pytree_node_class
class PerturbedConditionals:
    r"""``log_softmax(base(x, S) + scale * noise(i, x_{S \ {i}}))``.

    The noise is a standard normal vector over the vocabulary drawn from a key
    that is a fixed, injective function of the position ``i`` and the observed
    context :math:`x_{S\setminus\{i\}}` (positions outside the context count as
    masked).  The family is therefore deterministic, answers the same question
    the same way every time, and is inconsistent for ``scale > 0``: it is no
    joint's conditionals, like an imperfect trained network.
    """

    def __init__(self, base, key_data, scale):
        self.base = base
        self.key_data = key_data
        self.scale = scale

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def length(self) -> int:
        return self.base.length

    def noise(self, x, observed):
        """The unscaled noise, shape ``(..., L, V)``."""
        vocab_size, length = self.vocab_size, self.length
        key = jax.random.wrap_key_data(self.key_data)
        chunk = _chunk_size(vocab_size)
        x = jnp.asarray(x)
        observed = jnp.asarray(observed, dtype=bool)
        batch_shape = jnp.broadcast_shapes(x.shape[:-1], observed.shape[:-1])
        x = jnp.broadcast_to(x, batch_shape + (length,)).astype(jnp.int32)
        observed = jnp.broadcast_to(observed, batch_shape + (length,))
        context_mask = observed[..., None, :] & ~jnp.eye(length, dtype=bool)  # (..., L_i, L_j)
        digits = jnp.where(context_mask, x[..., None, :], vocab_size)  # (..., L_i, L_j)
        codes = []
        for start in range(0, length, chunk):
            block = digits[..., start : start + chunk]
            powers = jnp.asarray((vocab_size + 1) ** np.arange(block.shape[-1]), jnp.int32)
            codes.append((block * powers).sum(axis=-1))  # (..., L_i)
        positions = jnp.broadcast_to(jnp.arange(length), batch_shape + (length,))

        def draw(position, *chunk_codes):
            k = jax.random.fold_in(key, position)
            for code in chunk_codes:
                k = jax.random.fold_in(k, code)
            return jax.random.normal(k, (vocab_size,), dtype=jnp.result_type(float))

        flat_codes = [c.reshape(-1) for c in codes]
        noise = jax.vmap(draw)(positions.reshape(-1), *flat_codes)
        return noise.reshape(batch_shape + (length, vocab_size))

    def __call__(self, x, observed):
        base = self.base(x, observed)
        return jax.nn.log_softmax(base + self.scale * self.noise(x, observed).astype(base.dtype), axis=-1)

    def tree_flatten(self):
        return (self.base, self.key_data, self.scale), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self):
        return f"perturbed({self.base!r}, scale={self.scale})"


def perturbed(base, key, scale):
    r"""An inconsistent family: ``base`` with deterministic noise of size ``scale`` on its logits.

    Parameters
    ----------
    base
        A conditional family or an exact model.
    key
        PRNG key that fixes the noise function.
    scale
        Standard deviation of the logit noise.  ``scale=0`` returns ``base``
        itself (exactly).
    """
    base = as_conditionals(base, "perturbed")
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if scale < 0 or not np.isfinite(scale):
            raise InvalidArgumentError(f"perturbed: scale must be a finite number >= 0, got {scale}")
        if scale == 0:
            return base
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key_data = jax.random.key_data(key)
    else:
        key_data = jax.random.key_data(jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32)))
    return PerturbedConditionals(base, key_data, scale)


# A trained network (arprob/neural.py imports this module, so this import stays last).
from arprob.neural import NeuralConditionals, neural  # noqa: E402
