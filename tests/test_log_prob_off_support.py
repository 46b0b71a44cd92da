"""Tokens outside the vocabulary that reach log_prob unchecked (under jit, or validate_args=False) have
probability zero, not the probability of a clipped or wrapped sequence (numpyro's Gibbs and enumeration
samplers may propose them)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arprob import HMM, MarkovChain, NGram, TabularJoint

MODELS = {
    "TabularJoint": lambda: TabularJoint.random(jax.random.key(0), 3, 3),
    "MarkovChain": lambda: MarkovChain.random(jax.random.key(1), length=3, vocab_size=3),
    "NGram": lambda: NGram.random(jax.random.key(2), vocab_size=3, context_size=2, length=3),
    "HMM": lambda: HMM.random(jax.random.key(3), length=3, num_states=2, vocab_size=3),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tokens_outside_the_vocabulary_get_minus_infinity_under_jit(name):
    model = MODELS[name]()
    tokens = jnp.array([[0, 1, 2], [0, 3, 1], [-1, 0, 0], [2, 2, 2]])
    log_p = jax.jit(model.log_prob)(tokens)
    assert np.isneginf(np.asarray(log_p[1])) and np.isneginf(np.asarray(log_p[2]))
    law = np.asarray(model.law()).reshape((3,) * 3)
    for row in (0, 3):
        assert float(log_p[row]) == pytest.approx(float(np.log(law[tuple(np.asarray(tokens[row]))])), rel=1e-12)
