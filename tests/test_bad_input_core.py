"""Bad input at the core's boundary: families that break the protocol, sizes refused up front, clamped sizes.

The hostile-input suite (tests/hostile/) tries every argument of every entry point with hostile values;
these tests pin the behaviours it cannot see from outside: where a bad family answer is reported, that
refusals happen before any work, and that clamping keeps the law exactly.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arprob import MarkovChain, verify
from arprob.conditionals import tabulate
from arprob.errors import ArprobError, EnumerationTooLargeError, InvalidProbabilityError, ShapeError
from arprob.samplers import ancestral, ancestral_law, spectr_law, speculative_law

CHAIN = MarkovChain(np.array([0.3, 0.7]), np.array([[0.6, 0.4], [0.2, 0.8]]), length=3)
DRAFT = MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]]), length=3)


class _Family:
    """A conditional family over V=2, L=3 whose answer is uniform except where ``poison`` says."""

    vocab_size, length = 2, 3

    def __init__(self, poison):
        self.poison = poison

    def __call__(self, tokens, observed):
        return self.poison(tokens, observed, jnp.zeros(tokens.shape + (2,)))


def test_a_family_with_a_mask_logit_is_refused_before_sampling():
    family = _Family(lambda tokens, observed, logits: jnp.zeros(tokens.shape + (3,)))
    with pytest.raises(ShapeError, match=r"ancestral: conditionals \(_Family\) answered shape \(1, 3, 3\)"):
        ancestral(jax.random.key(0), family, 10)


def test_nan_at_one_context_is_reported_with_the_context_and_position():
    # NaN only when position 0 is observed as token 1: the all-masked probe passes, the table check does not
    def poison(tokens, observed, logits):
        bad = (observed[..., 0] & (tokens[..., 0] == 1))[..., None, None]
        return jnp.where(bad & (jnp.arange(3)[:, None] == 2), jnp.nan, logits)

    family = _Family(poison)  # a plain callable: probed on one input, not tabulated automatically
    with pytest.raises(InvalidProbabilityError, match="^ancestral_law: the result came out NaN"):
        ancestral_law(family)
    with pytest.raises(InvalidProbabilityError) as raised:  # tabulate checks every input and names it
        tabulate(family)
    message = str(raised.value)
    assert "tabulate: family (_Family) answered nan at position 2" in message
    assert "given the context [1 0 0]" in message  # the first such input in lexicographic order


def test_all_minus_inf_answers_are_refused():
    family = _Family(lambda tokens, observed, logits: jnp.full(logits.shape, -jnp.inf))
    with pytest.raises(InvalidProbabilityError, match="answered -inf for every token at position 0"):
        ancestral(jax.random.key(0), family, 4)


@pytest.mark.parametrize("call", [
    lambda: MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]]), length=10**9).law(),
    lambda: ancestral(jax.random.key(0), CHAIN, 10**12),
    lambda: CHAIN.sample(jax.random.key(0), (10**12,)),
    lambda: spectr_law(CHAIN, DRAFT, num_drafts=10**6, draft_length=2),
    lambda: verify.check(lambda k, n: ancestral(k, CHAIN, n), CHAIN, num_samples=10**12),
    lambda: verify.check(lambda k, n: ancestral(k, CHAIN, n), CHAIN, deviation=1e-9),
], ids=["law-1e9-tokens", "ancestral-1e12", "sample-1e12", "spectr-law-1e6-drafts", "check-1e12", "check-1e-9"])
def test_impossible_sizes_are_refused_up_front(call):
    start = time.perf_counter()
    with pytest.raises(EnumerationTooLargeError):
        call()
    assert time.perf_counter() - start < 5.0  # refused from the arguments, before any work


def test_check_names_deviation_when_it_cannot_be_planned():
    with pytest.raises(ArprobError, match=r"^check: deviation=1e-09 cannot be planned"):
        verify.check(lambda k, n: ancestral(k, CHAIN, n), CHAIN, deviation=1e-9)


def test_draft_lengths_above_the_length_are_clamped_exactly():
    np.testing.assert_array_equal(speculative_law(CHAIN, DRAFT, draft_length=10**12),
                                  speculative_law(CHAIN, DRAFT, draft_length=3))
