r"""A small trained any-subset network: learned, honestly inconsistent conditionals.

:func:`neural` fits a multilayer perceptron to samples of a model (or to a data
set) with the *any-order* objective and returns it as a conditional family,
:class:`NeuralConditionals`.  Unlike :func:`~arprob.conditionals.perturbed`,
whose inconsistency is injected noise, this family's answers are fitted
separately for every question :math:`(i, S)` by gradient descent on finitely
many samples, so they are no joint's conditionals in general: the law of
ancestral sampling depends on the order, as it does for a real masked-diffusion
or any-order network.

The network reads the masked sequence

.. math::

    \tilde x_j = \begin{cases} x_j & j \in S \\ V & j \notin S \end{cases}
    \qquad (V = \text{mask id}),

as :math:`L` one-hot vectors of :math:`V + 1` classes, flattened, and outputs
:math:`L \times V` logits.  Row :math:`i` of the protocol answer is row
:math:`i` of the network run on the input with position :math:`i` masked as
well, so it sees exactly :math:`x_{S \setminus \{i\}}`:

.. math::

    \log q(x_i = v \mid x_{S \setminus \{i\}})
    = \operatorname{log\_softmax}\bigl(f_\theta(\widetilde{x}^{(S \setminus \{i\})})_{i}\bigr)_v .

Training (Uria et al., 2014, *A deep and tractable density estimator*;
Shih et al., 2022, *Training and inference on any-order autoregressive models
the right way*) minimises, over data :math:`x`, a size :math:`k` uniform on
:math:`\{1, \dots, L\}` and a masked set :math:`M` uniform among the subsets of
size :math:`k`,

.. math::

    \ell(x, M) = \frac{L}{k} \sum_{i \in M} -\log q(x_i \mid x_{\neg M}),

whose expectation over :math:`(k, M)` is the any-order negative
log-likelihood :math:`\mathbb{E}_\sigma[-\log q_\sigma(x)]`
(theorem 2, ``proofs/02-any-order-nll-subset-form.md``).  Every masked
position :math:`i \in M` is predicted from :math:`x_{\neg M}`, in which
:math:`i` is already masked, so one network pass gives all the terms of
:math:`\ell(x, M)`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import register_pytree_node_class
from jaxtyping import Array, Bool, Float, Int

from arprob._validation import (
    check_key,
    check_mask,
    check_memory,
    check_positive_int,
    check_shape,
    check_tokens,
    check_work,
    is_concrete,
)
from arprob.conditionals import as_conditionals, join_static, split_static
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError

__all__ = ["Dense", "NeuralConditionals", "any_order_loss", "neural", "train_neural"]


class Dense(NamedTuple):
    """One affine layer, ``inputs @ weight + bias``."""

    weight: Float[Array, "fan_in fan_out"]
    bias: Float[Array, " fan_out"]


@partial(jax.jit, static_argnames=("sizes", "dtype"))
def _init_layers(key, sizes: tuple[int, ...], dtype) -> tuple[Dense, ...]:
    """Dense layers ``sizes[0] -> sizes[1] -> ...``: LeCun-normal weights, zero biases."""
    # one normal draw cut into the weight matrices: several draws compile several times slower
    shapes = list(zip(sizes[:-1], sizes[1:]))
    noise = jax.random.normal(key, (sum(fan_in * fan_out for fan_in, fan_out in shapes),), dtype)
    layers, start = [], 0
    for fan_in, fan_out in shapes:
        # variance 1/fan_in keeps pre-activations of order one
        weight = noise[start : start + fan_in * fan_out].reshape(fan_in, fan_out) / math.sqrt(fan_in)
        layers.append(Dense(weight, jnp.zeros((fan_out,), dtype)))
        start += fan_in * fan_out
    return tuple(layers)


@register_pytree_node_class
class NeuralConditionals:
    r"""An MLP any-subset network as a conditional family.

    Immutable; a pytree whose leaves are the parameter arrays (``vocab_size``
    and ``length`` are static), so it passes through ``jax.jit`` as an ordinary
    argument and networks of the same shapes share one compilation.

    ``family(x, observed)`` returns normalized log-probabilities of shape
    ``(..., L, V)``,

    .. math::

        \mathrm{out}[\dots, i, v] = \log q(x_i = v \mid x_{S \setminus \{i\}}),
        \qquad S = \{j : \mathrm{observed}_j\},

    where row :math:`i` is computed from the input with position :math:`i`
    masked: it depends neither on ``x[..., i]`` nor on ``observed[..., i]``.
    This costs :math:`L` passes through the hidden layers per call (the output
    layer computes only the row it needs); the batch dimensions of ``x`` and
    ``observed`` broadcast.

    Parameters
    ----------
    layers
        Tuple of :class:`Dense` layers: hidden layers (GELU after each), then
        the output layer.  The first takes ``L * (V + 1)`` inputs (one-hot
        tokens, mask id ``V``), the last gives ``L * V`` logits (row-major
        ``(L, V)``).
    vocab_size, length
        :math:`V` and :math:`L`.

    See Also
    --------
    neural : train one on samples of a model or on data.
    NeuralConditionals.random : an untrained network.
    """

    __slots__ = ("layers", "vocab_size", "length")

    def __init__(self, layers, vocab_size: int, length: int):
        owner = "NeuralConditionals"
        vocab_size = check_positive_int(owner, "vocab_size", vocab_size)
        length = check_positive_int(owner, "length", length)
        layers = tuple(Dense(*layer) for layer in layers)
        if len(layers) < 2:
            raise ShapeError(f"{owner}: layers has {len(layers)} layer(s), expected at least 2 "
                             "(one hidden layer and the output layer)")
        fan_in = length * (vocab_size + 1)
        for index, layer in enumerate(layers):
            shape = np.shape(layer.weight)
            if len(shape) != 2 or shape[0] != fan_in or np.shape(layer.bias) != shape[1:]:
                raise ShapeError(
                    f"{owner}: layers[{index}] has weight shape {shape} and bias shape {np.shape(layer.bias)}, "
                    f"expected ({fan_in}, n) and (n,) (the previous layer gives {fan_in} features)"
                )
            fan_in = shape[1]
        if fan_in != length * vocab_size:
            raise ShapeError(f"{owner}: the output layer gives {fan_in} logits, expected "
                             f"length * vocab_size = {length * vocab_size}")
        self._set(layers, vocab_size, length)

    def _set(self, layers, vocab_size, length):
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "vocab_size", vocab_size)
        object.__setattr__(self, "length", length)

    def __setattr__(self, name, value):
        raise AttributeError(f"NeuralConditionals is immutable; cannot set {name!r} "
                             "(build a new one: NeuralConditionals(layers, vocab_size, length))")

    @classmethod
    def random(cls, key, length: int, vocab_size: int, *, hidden_size: int = 128,
               num_layers: int = 2) -> NeuralConditionals:
        """An untrained network: LeCun-normal weights, zero biases, float dtype of ``jnp.result_type(float)``."""
        owner = "NeuralConditionals.random"
        length = check_positive_int(owner, "length", length)
        vocab_size = check_positive_int(owner, "vocab_size", vocab_size)
        hidden_size = check_positive_int(owner, "hidden_size", hidden_size)
        num_layers = check_positive_int(owner, "num_layers", num_layers)
        sizes = (length * (vocab_size + 1),) + (hidden_size,) * num_layers + (length * vocab_size,)
        return cls(_init_layers(key, sizes, np.dtype(jnp.result_type(float))), vocab_size, length)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden layers (of the last one, if they differ)."""
        return int(np.shape(self.layers[-1].weight)[0])

    @property
    def num_layers(self) -> int:
        """Number of hidden layers."""
        return len(self.layers) - 1

    # -- the network --------------------------------------------------------
    def _features(self, masked_tokens):
        """Last hidden layer for masked inputs ``(..., L)`` with values in ``[0, V]``."""
        dtype = self.layers[0].weight.dtype
        inputs = jax.nn.one_hot(masked_tokens, self.vocab_size + 1, dtype=dtype)
        hidden = inputs.reshape(inputs.shape[:-2] + (-1,))
        for layer in self.layers[:-1]:
            hidden = jax.nn.gelu(hidden @ layer.weight + layer.bias)
        return hidden

    def _all_rows(self, masked_tokens):
        """All ``L`` rows of one pass, normalized, shape ``(..., L, V)``.

        Row ``i`` is a protocol answer only where ``masked_tokens[..., i] == V``
        (otherwise it has seen :math:`x_i`).
        """
        output = self.layers[-1]
        logits = self._features(masked_tokens) @ output.weight + output.bias
        logits = logits.reshape(logits.shape[:-1] + (self.length, self.vocab_size))
        return jax.nn.log_softmax(logits, axis=-1)

    def __call__(self, x: Int[Array, "*batch length"],
                 observed: Bool[Array, "*batch length"]) -> Float[Array, "*batch length vocab_size"]:
        owner = "NeuralConditionals"
        length, vocab_size = self.length, self.vocab_size
        if is_concrete(x, observed):
            check_shape(owner, "x", x, (length,))
            check_mask(owner, "observed", observed, length)
            try:
                np.broadcast_shapes(np.shape(x)[:-1], np.shape(observed)[:-1])
            except ValueError:
                raise ShapeError(
                    f"{owner}: x has shape {np.shape(x)} and observed has shape {np.shape(observed)}, "
                    f"whose batch dimensions do not broadcast together; expected broadcastable shapes "
                    f"(..., {length})"
                ) from None
            check_tokens(owner, "x", x, vocab_size, observed=observed)
        return _protocol_log_probs(self, jnp.asarray(x), jnp.asarray(observed, dtype=bool))

    # -- pytree -------------------------------------------------------------
    def tree_flatten(self):
        return (self.layers,), (self.vocab_size, self.length)

    @classmethod
    def tree_unflatten(cls, aux, children):
        instance = cls.__new__(cls)
        instance._set(children[0], *aux)
        return instance

    def __repr__(self):
        return (f"NeuralConditionals(vocab_size={self.vocab_size}, length={self.length}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers})")


@jax.jit
def _protocol_log_probs(family, x, observed):
    """``family(x, observed)`` after validation: row i from the input with i masked too."""
    length, vocab_size = family.length, family.vocab_size
    batch_shape = jnp.broadcast_shapes(x.shape[:-1], observed.shape[:-1])
    x = jnp.broadcast_to(x.astype(jnp.int32), batch_shape + (length,))
    observed = jnp.broadcast_to(observed, batch_shape + (length,))
    # context[..., i, j]: may row i read position j?  Observed, and not i itself.
    context = observed[..., None, :] & ~jnp.eye(length, dtype=bool)
    masked_tokens = jnp.where(context, x[..., None, :], vocab_size)  # (..., L_i, L_j)
    hidden = family._features(masked_tokens)  # (..., L_i, H)
    output = family.layers[-1]
    weight = output.weight.reshape(-1, length, vocab_size)  # (H, L_i, V)
    logits = jnp.einsum("...ih,hiv->...iv", hidden, weight) + output.bias.reshape(length, vocab_size)
    return jax.nn.log_softmax(logits, axis=-1)


# -- the any-order objective ------------------------------------------------------
def _weighted_nll(log_q, x, masked):
    r""":math:`(L/k) \sum_{i \in M} -\log q(x_i \mid x_{\neg M})` from rows ``log_q`` (..., L, V)."""
    length = x.shape[-1]
    picked = jnp.take_along_axis(log_q, x[..., None], axis=-1)[..., 0]
    size = jnp.maximum(masked.sum(axis=-1), 1)
    return -(length / size) * jnp.where(masked, picked, 0.0).sum(axis=-1)


def any_order_loss(conditionals, x: Int[Array, "*batch length"],
                   masked: Bool[Array, "*batch length"]) -> Float[Array, "*batch"]:
    r"""The any-order training loss of one masked set per sequence.

    .. math::

        \ell(x, M) = \frac{L}{k} \sum_{i \in M} -\log q(x_i \mid x_{\neg M}),
        \qquad k = |M| \ge 1 .

    With :math:`k` uniform on :math:`\{1, \dots, L\}` and :math:`M` uniform
    among the subsets of size :math:`k`, a set has probability
    :math:`1 / (L \binom{L}{k})`, so

    .. math::

        \mathbb{E}_{M}\, \ell(x, M)
        = \sum_{k=1}^{L} \frac{1}{k \binom{L}{k}} \sum_{|M| = k} \sum_{i \in M} -\log q(x_i \mid x_{\neg M})
        = \mathbb{E}_\sigma\bigl[-\log q_\sigma(x)\bigr],

    the negative log-likelihood averaged over the :math:`L!` generation orders
    (theorem 2, ``proofs/02-any-order-nll-subset-form.md``).  This is what
    :func:`neural` minimises, for any conditional family.

    Parameters
    ----------
    conditionals
        A conditional family or an exact model; its logits are normalized here.
    x
        Clean sequences, tokens in ``[0, V)``.
    masked
        Bool, ``True`` on :math:`M`; every sequence needs at least one masked
        position (under ``jit`` an empty set gives loss ``0``).

    Returns
    -------
    Array of shape ``broadcast(x.shape[:-1], masked.shape[:-1])``.
    """
    owner = "any_order_loss"
    family = as_conditionals(conditionals, owner)
    if is_concrete(x, masked):
        check_shape(owner, "x", x, (family.length,))
        check_mask(owner, "masked", masked, family.length)
        check_tokens(owner, "x", x, family.vocab_size)
        if not np.all(np.any(np.asarray(masked), axis=-1)):
            raise InvalidArgumentError(f"{owner}: masked has a row with no masked position; expected "
                                       "at least one True per sequence (the loss divides by |M|)")
    dynamic, static = split_static(family)
    return _any_order_loss(dynamic, static, jnp.asarray(x), jnp.asarray(masked, dtype=bool))


@partial(jax.jit, static_argnames=("static",))
def _any_order_loss(dynamic, static, x, masked):
    family = join_static(dynamic, static)
    batch_shape = jnp.broadcast_shapes(x.shape[:-1], masked.shape[:-1])
    x = jnp.broadcast_to(x.astype(jnp.int32), batch_shape + (family.length,))
    masked = jnp.broadcast_to(masked, batch_shape + (family.length,))
    log_q = jax.nn.log_softmax(family(x, ~masked), axis=-1)
    return _weighted_nll(log_q, x, masked)


@partial(jax.jit, static_argnames=("num_masks", "length"))
def _random_masks(key, num_masks: int, length: int):
    """``num_masks`` masked sets: size uniform on 1..L, then a uniform subset of that size.

    Positions are ranked by i.i.d. uniform scores (a uniform random order) and
    the ``size`` lowest ranks are masked.  Ranks are counted by pairwise
    comparison, cheaper than sorting for the short sequences arprob enumerates.
    """
    key_size, key_scores = jax.random.split(key)
    size = jax.random.randint(key_size, (num_masks, 1), 1, length + 1)
    scores = jax.random.uniform(key_scores, (num_masks, length))
    ranks = (scores[:, None, :] < scores[:, :, None]).sum(axis=-1)  # ranks[n, i] = #{j : s_j < s_i}
    return ranks < size


@partial(jax.jit, static_argnames=("num_steps", "batch_size"))
def _train(key, family, data, learning_rate, num_steps: int, batch_size: int):
    vocab_size, length = family.vocab_size, family.length
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))

    def batch_loss(layers, x, masked):
        network = NeuralConditionals.tree_unflatten((vocab_size, length), (layers,))
        # one pass: every i in M is predicted from x_{not M}, where i is already masked
        log_q = network._all_rows(jnp.where(masked, vocab_size, x))
        return jnp.mean(_weighted_nll(log_q, x, masked))

    def step(carry, step_key):
        layers, optimizer_state = carry
        key_rows, key_masks = jax.random.split(step_key)
        x = data[jax.random.randint(key_rows, (batch_size,), 0, data.shape[0])]
        masked = _random_masks(key_masks, batch_size, length)
        loss, grads = jax.value_and_grad(batch_loss)(layers, x, masked)
        updates, optimizer_state = optimizer.update(grads, optimizer_state, layers)
        return (optax.apply_updates(layers, updates), optimizer_state), loss

    layers = family.layers
    (layers, _), losses = jax.lax.scan(step, (layers, optimizer.init(layers)), jax.random.split(key, num_steps))
    return NeuralConditionals.tree_unflatten((vocab_size, length), (layers,)), losses


def _check_network_cost(owner, length, vocab_size, hidden_size, num_layers, num_steps, batch_size):
    """Refuse a network that cannot fit in memory or a training run that cannot finish, from the sizes."""
    parameters = (length * (vocab_size + 1) * hidden_size + (num_layers - 1) * hidden_size**2
                  + hidden_size * length * vocab_size)
    check_memory(owner, f"a network of hidden_size={hidden_size:,} and num_layers={num_layers:,} "
                 f"({parameters:,} weights, with Adam's two moments)", (parameters, 3), itemsize=4,
                 fix="use a smaller hidden_size or fewer num_layers")
    check_work(owner, f"num_steps={num_steps:,} Adam steps of batch_size={batch_size:,} on {parameters:,} weights",
               6.0 * num_steps * batch_size * parameters,
               fix="use fewer num_steps, a smaller batch_size or a smaller network")


def _training_data(owner, key, model, data, vocab_size, num_train):
    """Return ``(tokens (N, L) int32, vocab_size)`` from exactly one of model / data."""
    if (model is None) == (data is None):
        raise ArprobTypeError(
            f"{owner}: pass exactly one of model=... (an arprob model to sample from) or data=... "
            f"(an int array (num_examples, length)), got {'both' if model is not None else 'neither'}"
        )
    if model is not None:
        if not (hasattr(model, "sample") and hasattr(model, "vocab_size") and hasattr(model, "length")):
            raise ArprobTypeError(f"{owner}: model must be an arprob model with sample, vocab_size and "
                                  f"length (TabularJoint, MarkovChain, NGram, ...), got {type(model).__name__}")
        if getattr(model, "batch_shape", ()) != ():
            raise ArprobTypeError(f"{owner}: model has batch_shape {model.batch_shape}, expected () "
                                  "(index the batch first)")
        if vocab_size is not None and vocab_size != model.vocab_size:
            raise InvalidArgumentError(f"{owner}: vocab_size={vocab_size} but the model has "
                                       f"vocab_size={model.vocab_size}; leave vocab_size out with model=...")
        num_train = check_positive_int(owner, "num_train", num_train)
        tokens = model.sample(key, (num_train,))
        return jnp.asarray(tokens).astype(jnp.int32), int(model.vocab_size)
    if vocab_size is None:
        raise ArprobTypeError(f"{owner}: data=... needs vocab_size=... (tokens are in [0, vocab_size), "
                              "and vocab_size is the mask id)")
    vocab_size = check_positive_int(owner, "vocab_size", vocab_size)
    if not is_concrete(data):
        raise ArprobTypeError(f"{owner}: data must be concrete (not traced); train outside jit")
    array = np.asarray(data)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ShapeError(f"{owner}: data has shape {array.shape}, expected (num_examples, length) with "
                         "num_examples >= 1 and length >= 1 (one sequence per row)")
    check_tokens(owner, "data", array, vocab_size)
    return jnp.asarray(array).astype(jnp.int32), vocab_size


def train_neural(key, model=None, *, data=None, vocab_size: int | None = None, num_train: int = 20_000,
                 hidden_size: int = 128, num_layers: int = 2, num_steps: int = 2000, batch_size: int = 256,
                 learning_rate: float = 3e-3) -> tuple[NeuralConditionals, np.ndarray]:
    """Like :func:`neural`, and also return the training-loss history.

    Returns
    -------
    family : NeuralConditionals
    losses : numpy array of shape ``(num_steps,)``
        The mean of :func:`any_order_loss` over each step's minibatch, before
        that step's update (nats per sequence).
    """
    owner = "neural"
    num_steps = check_positive_int(owner, "num_steps", num_steps)
    batch_size = check_positive_int(owner, "batch_size", batch_size)
    hidden_size = check_positive_int(owner, "hidden_size", hidden_size)
    num_layers = check_positive_int(owner, "num_layers", num_layers)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.floating, np.integer)):
        raise ArprobTypeError(f"{owner}: learning_rate must be a number, got {type(learning_rate).__name__}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise InvalidArgumentError(f"{owner}: learning_rate must be a finite number > 0, got {learning_rate}")
    key = check_key(owner, key)
    if model is not None and data is None:
        num_train = check_positive_int(owner, "num_train", num_train)
        if hasattr(model, "length") and hasattr(model, "vocab_size"):
            check_memory(owner, f"num_train={num_train:,} training sequences", (num_train, model.length),
                         itemsize=4, fix="train on fewer sequences")
            _check_network_cost(owner, model.length, model.vocab_size, hidden_size, num_layers, num_steps,
                                batch_size)
    key_data, key_init, key_train = jax.random.split(key, 3)
    tokens, vocab_size = _training_data(owner, key_data, model, data, vocab_size, num_train)
    length = int(tokens.shape[1])
    _check_network_cost(owner, length, vocab_size, hidden_size, num_layers, num_steps, batch_size)
    initial = NeuralConditionals.random(key_init, length, vocab_size, hidden_size=hidden_size,
                                        num_layers=num_layers)
    rate = jnp.asarray(learning_rate, initial.layers[0].weight.dtype)
    family, losses = _train(key_train, initial, tokens, rate, num_steps, batch_size)
    return family, np.asarray(losses)


def neural(key, model=None, *, data=None, vocab_size: int | None = None, num_train: int = 20_000,
           hidden_size: int = 128, num_layers: int = 2, num_steps: int = 2000, batch_size: int = 256,
           learning_rate: float = 3e-3) -> NeuralConditionals:
    r"""Train a small any-subset network on samples of ``model`` (or on ``data``).

    The network (:class:`NeuralConditionals`: an MLP on one-hot masked
    tokens, GELU, ``num_layers`` hidden layers of ``hidden_size`` units) is
    fitted with Adam, learning rate ``learning_rate`` decayed to zero on a
    cosine schedule, for ``num_steps`` steps of ``batch_size`` sequences drawn
    with replacement from the training set.  Each sequence gets its own masked
    set :math:`M` (size :math:`k` uniform on :math:`\{1, \dots, L\}`, then
    :math:`M` uniform of that size) and the loss is

    .. math::

        \ell(x, M) = \frac{L}{k} \sum_{i \in M} -\log q(x_i \mid x_{\neg M}),

    an unbiased estimate of the any-order NLL
    :math:`\mathbb{E}_\sigma[-\log q_\sigma(x)]` (:func:`arprob.neural.any_order_loss`;
    theorem 2, ``proofs/02-any-order-nll-subset-form.md``).  The whole run is
    one jit-compiled ``lax.scan``: a few seconds on a CPU for the defaults at
    :math:`V \le 4`, :math:`L \le 6`.

    The result is deterministic given ``key``, and in general *inconsistent*:
    its answers are no joint's conditionals, so the law of ancestral sampling
    depends on the order (see ``docs/concepts/learned-conditionals.md``).

    Parameters
    ----------
    key
        PRNG key: training samples, initial weights, minibatches and masks.
    model
        An arprob model with ``sample``, ``vocab_size``, ``length`` and
        ``batch_shape == ()``; ``num_train`` sequences are drawn from it.
    data
        Instead of ``model``: integer array ``(num_examples, length)`` of
        tokens in ``[0, vocab_size)``; needs ``vocab_size``.
    vocab_size
        :math:`V`, with ``data`` only (the model fixes it otherwise).
    num_train
        Number of training sequences drawn from ``model`` (ignored with ``data``).
    hidden_size, num_layers
        Width and number of hidden layers.
    num_steps, batch_size, learning_rate
        Optimisation: Adam steps, sequences per step, initial learning rate.

    Returns
    -------
    NeuralConditionals
        Use :func:`arprob.neural.train_neural` to also get the loss history.

    Raises
    ------
    ArprobTypeError
        Both or neither of ``model`` and ``data``; ``data`` without ``vocab_size``;
        ``model`` not a model.
    ShapeError
        ``data`` not two-dimensional or empty.
    InvalidTokenError
        ``data`` has a token outside ``[0, vocab_size)``.
    InvalidArgumentError
        A size or step count below 1, a learning rate that is not > 0.
    """
    family, _ = train_neural(key, model, data=data, vocab_size=vocab_size, num_train=num_train,
                             hidden_size=hidden_size, num_layers=num_layers, num_steps=num_steps,
                             batch_size=batch_size, learning_rate=learning_rate)
    return family
