r"""A learned token-level model: a small network trained with optax on encodings of a character chain.

:class:`TokenNetwork` predicts the next token (or the end of the text) from the last
``context_size`` tokens and the number of characters decoded so far:

.. math::

    q(t_{i} \mid t_{<i}) = \mathrm{softmax}\big(f_\theta(t_{i-K:i}, |\mathrm{decode}(t_{<i})|)\big),

an MLP on one-hot inputs (the character count lets it learn where the text ends).  It plays the
part of a real tokenized language model in the tokenization-bias experiments: trained on the
encodings of strings from a known character chain, its next-character laws can be compared,
method by method, with the exact ones (:func:`~arprob.tokenization.next_char_law`).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arprob._validation import _show, check_int, check_key, check_memory, check_real, check_work
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.markov.char_models import Dense
from arprob.tokenization.tokenizers import Tokenizer

__all__ = ["TokenNetwork", "sample_encodings", "train_token_network"]


class TokenNetwork:
    """A trained next-token network; ``next_token_probs(prefix)`` in float64 from float32 logits."""

    def __init__(self, layers, tokenizer: Tokenizer, context_size: int, max_chars: int):
        self.layers = layers
        self.tokenizer = tokenizer
        self.num_tokens = tokenizer.num_tokens
        self.context_size = context_size
        self.max_chars = max_chars

    def _inputs(self, prefixes) -> tuple[np.ndarray, np.ndarray]:
        pad = self.num_tokens + 1
        contexts = np.full((len(prefixes), self.context_size), pad, dtype=np.int32)
        counts = np.zeros(len(prefixes), dtype=np.int32)
        for row, prefix in enumerate(prefixes):
            tail = list(prefix)[-self.context_size:]
            if tail:
                contexts[row, self.context_size - len(tail):] = tail
            counts[row] = min(int(self.tokenizer.lengths[list(prefix)].sum()) if len(prefix) else 0, self.max_chars)
        return contexts, counts

    def next_token_probs(self, prefix) -> np.ndarray:
        """The law of the next token given a token prefix, shape ``(num_tokens + 1,)`` (last: end of text)."""
        prefix = self.tokenizer._check_ids("TokenNetwork.next_token_probs", "prefix", prefix)
        contexts, counts = self._inputs([prefix])
        log_p = np.asarray(_log_probs(self.layers, jnp.asarray(contexts), jnp.asarray(counts),
                                      self.num_tokens, self.context_size, self.max_chars)[0], np.float64)
        probs = np.exp(log_p - log_p.max())
        return probs / probs.sum()

    def __repr__(self):
        return f"TokenNetwork(num_tokens={self.num_tokens}, context_size={self.context_size})"


def _forward(layers, contexts, counts, num_tokens: int, context_size: int, max_chars: int):
    first = layers[0]
    inputs = num_tokens + 2  # tokens, the end id (unused as input) and the padding id
    embeddings = first.weight[: context_size * inputs].reshape(context_size, inputs, -1)
    count_rows = first.weight[context_size * inputs:]
    hidden = embeddings[jnp.arange(context_size), contexts].sum(axis=-2) + count_rows[counts] + first.bias
    hidden = jax.nn.gelu(hidden)
    for layer in layers[1:-1]:
        hidden = jax.nn.gelu(hidden @ layer.weight + layer.bias)
    return jax.nn.log_softmax(hidden @ layers[-1].weight + layers[-1].bias, axis=-1)


@partial(jax.jit, static_argnames=("num_tokens", "context_size", "max_chars"))
def _log_probs(layers, contexts, counts, num_tokens, context_size, max_chars):
    return _forward(layers, contexts, counts, num_tokens, context_size, max_chars)


@partial(jax.jit, static_argnames=("num_tokens", "context_size", "max_chars", "num_steps", "batch_size"))
def _train(key, layers, contexts, counts, targets, learning_rate, *, num_tokens, context_size, max_chars, num_steps,
           batch_size):
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))

    def loss(layers, rows):
        log_p = _forward(layers, contexts[rows], counts[rows], num_tokens, context_size, max_chars)
        return -jnp.mean(jnp.take_along_axis(log_p, targets[rows][:, None], axis=-1))

    def step(carry, step_key):
        layers, state = carry
        rows = jax.random.randint(step_key, (batch_size,), 0, targets.shape[0])
        value, grads = jax.value_and_grad(loss)(layers, rows)
        updates, state = optimizer.update(grads, state, layers)
        return (optax.apply_updates(layers, updates), state), value

    (layers, _), losses = jax.lax.scan(step, (layers, optimizer.init(layers)), jax.random.split(key, num_steps))
    return layers, losses


def sample_encodings(key, char_model, tokenizer: Tokenizer, num_chars: int, num_samples: int) -> list[list[int]]:
    """Encodings of ``num_samples`` strings of ``num_chars`` characters drawn from ``char_model``."""
    from arprob.tokenization.induced import _chain_parts

    owner = "sample_encodings"
    key = check_key(owner, key)
    if not isinstance(tokenizer, Tokenizer):
        raise ArprobTypeError(f"{owner}: tokenizer must be an arprob.tokenization tokenizer, got {_show(tokenizer)}")
    _chain_parts(owner, char_model, tokenizer.alphabet)
    num_chars = check_int(owner, "num_chars", num_chars, minimum=1, maximum=char_model.length,
                          fix="build the character model with length >= num_chars")
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1, maximum=10**7)
    chars = np.asarray(char_model.sample(key, (num_samples,)))[:, :num_chars]
    return [tokenizer.encode("".join(tokenizer.alphabet[c] for c in row)) for row in chars]


def train_token_network(key, encodings, tokenizer: Tokenizer, *, context_size: int = 4, hidden_size: int = 64,
                        num_layers: int = 2, num_steps: int = 2000, batch_size: int = 256,
                        learning_rate: float = 3e-3) -> TokenNetwork:
    r"""Train a :class:`TokenNetwork` by next-token cross-entropy (end of text included) on complete encodings.

    Adam (``learning_rate`` on a cosine decay) over ``num_steps`` minibatches of ``batch_size``
    (prefix, next token) pairs drawn uniformly from all pairs of all encodings; one jit-compiled
    ``lax.scan``.

    Parameters
    ----------
    key
        PRNG key (weights, minibatches).
    encodings
        Token-id lists (e.g. :func:`sample_encodings`), each a complete text.
    tokenizer
        Their tokenizer.
    context_size, hidden_size, num_layers, num_steps, batch_size, learning_rate
        Architecture and optimisation.
    """
    owner = "train_token_network"
    key = check_key(owner, key)
    if not isinstance(tokenizer, Tokenizer):
        raise ArprobTypeError(f"{owner}: tokenizer must be an arprob.tokenization tokenizer, got {_show(tokenizer)}")
    context_size = check_int(owner, "context_size", context_size, minimum=1, maximum=64)
    hidden_size = check_int(owner, "hidden_size", hidden_size, minimum=1, maximum=4096)
    num_layers = check_int(owner, "num_layers", num_layers, minimum=1, maximum=16)
    num_steps = check_int(owner, "num_steps", num_steps, minimum=1)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    learning_rate = check_real(owner, "learning_rate", learning_rate, low=0.0, low_open=True,
                               fix="pass a step size such as 3e-3")
    if isinstance(encodings, (str, bytes)) or not hasattr(encodings, "__iter__"):
        raise ArprobTypeError(f"{owner}: encodings must be a list of token-id lists, got {_show(encodings)}")
    encodings = [tokenizer._check_ids(owner, f"encodings[{i}]", e) for i, e in enumerate(encodings)]
    if not encodings or not any(encodings):
        raise InvalidArgumentError(f"{owner}: encodings is empty; pass the encodings of some texts "
                                   "(sample_encodings draws them from a character model)")
    max_chars = max(int(tokenizer.lengths[e].sum()) for e in encodings if e)
    num_tokens = tokenizer.num_tokens
    parameters = ((context_size * (num_tokens + 2) + max_chars + 1) + (num_layers - 1) * hidden_size
                  + num_tokens + 1) * hidden_size
    check_memory(owner, f"a network of {parameters:,} weights with Adam's two moments", (parameters, 3),
                 fix="use a smaller context_size, hidden_size or num_layers")
    check_memory(owner, f"the activations of a minibatch of batch_size={batch_size:,} rows",
                 (batch_size, (context_size + num_layers) * hidden_size + num_tokens + 1, 3),
                 fix="use a smaller batch_size")
    check_memory(owner, f"the keys and losses of num_steps={num_steps:,} steps", (num_steps, 3),
                 fix="use fewer num_steps")
    check_work(owner, f"num_steps={num_steps:,} steps of batch_size={batch_size:,} on {parameters:,} weights",
               6.0 * num_steps * batch_size * parameters, fix="use fewer num_steps, a smaller batch_size or network")
    network = TokenNetwork(None, tokenizer, context_size, max_chars)
    prefixes = [e[:i] for e in encodings for i in range(len(e) + 1)]
    targets = np.array([e[i] if i < len(e) else num_tokens for e in encodings for i in range(len(e) + 1)], np.int32)
    contexts, counts = network._inputs(prefixes)
    keys = jax.random.split(key, num_layers + 2)
    sizes = [(context_size * (num_tokens + 2) + max_chars + 1, hidden_size, 1.0 / (context_size + 1))]
    sizes += [(hidden_size, hidden_size, 1.0 / hidden_size)] * (num_layers - 1)
    sizes += [(hidden_size, num_tokens + 1, 1.0 / hidden_size)]
    layers = tuple(Dense(jax.random.normal(k, (fan_in, fan_out), jnp.float32) * math.sqrt(variance),
                         jnp.zeros((fan_out,), jnp.float32))
                   for k, (fan_in, fan_out, variance) in zip(keys, sizes))
    layers, _ = _train(keys[-1], layers, jnp.asarray(contexts), jnp.asarray(counts), jnp.asarray(targets),
                       jnp.float32(learning_rate), num_tokens=num_tokens, context_size=context_size,
                       max_chars=max_chars, num_steps=num_steps, batch_size=batch_size)
    network.layers = layers
    return network
