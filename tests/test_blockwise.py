"""Blockwise parallel decoding (Stern et al. 2018): output == greedy decoding, exact iteration counts.

Every decoder call here uses V = 3, L = 4 and num_samples = 2, so that the few
compilations (one per family structure and block size) are shared by all tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arprob._enumerate import all_sequences
from arprob.conditionals import perturbed
from arprob.distributions import MarkovChain
from arprob.errors import ArprobTypeError, IncompatibleError, InvalidArgumentError
from arprob.samplers.blockwise import (
    BlockwiseStats,
    blockwise_parallel,
    blockwise_parallel_cost,
    blockwise_parallel_law,
    greedy,
)
from arprob.testing import strategies as ars

VOCAB, LENGTH, SAMPLES = 3, 4, 2
KEY = jax.random.key(0)


def cyclic_chain(step: int, start: int = 0) -> MarkovChain:
    """Peaked chain: x_0 = start w.p. 0.8, then x_t = x_{t-1} + step (mod 3) w.p. 0.8; else 0.1 each."""
    initial = np.full(VOCAB, 0.1)
    initial[start] = 0.8
    transition = np.full((VOCAB, VOCAB), 0.1)
    transition[np.arange(VOCAB), (np.arange(VOCAB) + step) % VOCAB] = 0.8
    return MarkovChain(initial, transition, LENGTH)


def random_model() -> MarkovChain:
    return MarkovChain.random(jax.random.key(2), LENGTH, VOCAB)


def heads_cases():
    model = random_model()
    return model, {
        "target": model,
        "perturbed": perturbed(model, jax.random.key(7), 1.0),
        "unrelated": MarkovChain.random(jax.random.key(11), LENGTH, VOCAB),
    }


def decode(target, heads, block_size):
    tokens, stats = blockwise_parallel(KEY, target, heads, SAMPLES, block_size)
    return np.asarray(tokens), BlockwiseStats(*(np.asarray(s) for s in stats))


def check_against_greedy(target, heads, block_size):
    """Output == greedy in every row; stats consistent; target calls == the simulated cost."""
    tokens, stats = decode(target, heads, block_size)
    reference = greedy(target)
    np.testing.assert_array_equal(tokens, np.broadcast_to(reference, (SAMPLES, LENGTH)))
    cost = blockwise_parallel_cost(target, heads, block_size)
    np.testing.assert_array_equal(stats.target_calls, cost)
    np.testing.assert_array_equal(stats.nfe, stats.target_calls + stats.head_calls)
    # L = accepted + (iterations ending at a mismatch), and at most one proposal is accepted per head call slot
    assert np.all((LENGTH - stats.target_calls <= stats.accepted) & (stats.accepted <= LENGTH))
    assert np.all(stats.head_calls <= stats.target_calls)
    assert np.all(stats.target_calls >= -(-LENGTH // block_size))
    return stats


@pytest.mark.parametrize("heads_name", ["target", "perturbed", "unrelated"])
def test_output_is_greedy_for_every_block_size(heads_name):
    target, heads = heads_cases()
    for block_size in range(1, LENGTH + 1):
        stats = check_against_greedy(target, heads[heads_name], block_size)
        if block_size == 1:
            np.testing.assert_array_equal(stats.target_calls, LENGTH)
            np.testing.assert_array_equal(stats.head_calls, 0)
            np.testing.assert_array_equal(stats.accepted, 0)


def test_greedy_is_the_argmax_of_the_prefix_conditionals():
    # a Markov chain's prefix conditional is the transition row: greedy = argmax of pi, then of P[x_{t-1}]
    target = cyclic_chain(1)
    np.testing.assert_array_equal(greedy(target), [0, 1, 2, 0])
    np.testing.assert_array_equal(greedy(cyclic_chain(2, start=1)), [1, 0, 2, 1])


def test_better_heads_need_fewer_target_calls():
    # heads = target: the marginal argmax at t+i is the greedy token (P^k peaks on the shift by k), every
    # proposal is accepted and each call settles a full block: ceil(L / b) calls.  Heads cycling the other
    # way from another start are wrong at every first proposal: one token per call, L calls.
    target, wrong = cyclic_chain(1), cyclic_chain(2, start=1)
    # (target calls, accepted proposals); a last block of one position is settled by the target alone
    expected_good = {1: (4, 0), 2: (2, 4), 3: (2, 3), 4: (1, 4)}
    for block_size, (calls, accepted) in expected_good.items():
        assert blockwise_parallel_cost(target, target, block_size) == calls
        assert blockwise_parallel_cost(target, wrong, block_size) == LENGTH
        good, bad = decode(target, target, block_size)[1], decode(target, wrong, block_size)[1]
        np.testing.assert_array_equal(good.target_calls, calls)
        np.testing.assert_array_equal(good.accepted, accepted)
        np.testing.assert_array_equal(bad.target_calls, LENGTH)
        np.testing.assert_array_equal(bad.accepted, 0)


def test_ties_go_to_the_lowest_token_id():
    # binary fractions: every row sums to 1 exactly, so the tied conditionals are exactly equal
    initial = np.array([0.25, 0.375, 0.375])
    transition = np.array([[0.25, 0.375, 0.375], [0.375, 0.25, 0.375], [0.5, 0.25, 0.25]])
    target = MarkovChain(initial, transition, LENGTH)
    expected = [1, 0, 1, 0]
    np.testing.assert_array_equal(greedy(target), expected)
    # heads that prefer the other member of each tie on the greedy path (token 2) must not change the output
    other = MarkovChain(np.array([0.2, 0.3, 0.5]), np.array([[0.2, 0.3, 0.5], [0.3, 0.2, 0.5], [0.6, 0.2, 0.2]]),
                        LENGTH)
    for heads in (target, other):
        for block_size in (1, 3, LENGTH):
            stats = check_against_greedy(target, heads, block_size)
    np.testing.assert_array_equal(stats.target_calls, LENGTH)  # `other` never agrees with greedy first


def test_ties_broken_by_rounding_go_to_the_lowest_token_id():
    # found by hypothesis: x_0 ties 0 and 2, row 0 ties 0 and 1, but row 0 does not sum to 1 exactly, so
    # forward-backward returns tied entries a few ulps apart, differently in the batched verify call and in
    # a one-row call.  A plain argmax gave [2, 0, 1, 0] in the decoder and [0, 0, 1, 0] in greedy.
    row = np.array([1.0, 1.0, 0.796875]) / 2.796875
    target = MarkovChain(np.array([0.4, 0.2, 0.4]), np.stack([row, np.full(3, 1 / 3), np.full(3, 1 / 3)]), LENGTH)
    np.testing.assert_array_equal(greedy(target), [0, 0, 0, 0])
    for block_size in (1, 2):
        check_against_greedy(target, target, block_size)


def test_law_is_the_point_mass_at_greedy():
    target, heads = heads_cases()
    tokens = decode(target, heads["perturbed"], 3)[0]
    for name, block_size in [("target", 1), ("perturbed", 3), ("unrelated", LENGTH)]:
        law = blockwise_parallel_law(target, heads[name], block_size)
        assert law.dtype == np.float64 and law.shape == (VOCAB**LENGTH,)
        assert law.sum() == 1.0 and np.count_nonzero(law) == 1
        np.testing.assert_array_equal(all_sequences(VOCAB, LENGTH)[np.argmax(law)], tokens[0])


def test_block_size_above_length_acts_as_length():
    target, heads = heads_cases()
    for name in ("target", "perturbed"):
        tokens, stats = decode(target, heads[name], LENGTH + 4)
        tokens_l, stats_l = decode(target, heads[name], LENGTH)
        np.testing.assert_array_equal(tokens, tokens_l)
        np.testing.assert_array_equal(stats.target_calls, stats_l.target_calls)


def test_bad_arguments_raise_clear_errors():
    target = random_model()
    for function, args in [
        (blockwise_parallel, (KEY, target, target, SAMPLES)),
        (blockwise_parallel_law, (target, target)),
        (blockwise_parallel_cost, (target, target)),
    ]:
        with pytest.raises(InvalidArgumentError, match="block_size must be >= 1, got 0"):
            function(*args, 0)
        with pytest.raises(ArprobTypeError, match="block_size must be an int"):
            function(*args, 2.0)
        swapped = list(args)
        swapped[args.index(target) + 1] = MarkovChain(np.full(4, 0.25), np.full((4, 4), 0.25), LENGTH)
        with pytest.raises(IncompatibleError, match="heads has vocab_size=4 but target has vocab_size=3"):
            function(*swapped, 2)
        swapped[args.index(target) + 1] = MarkovChain(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), 7)
        with pytest.raises(IncompatibleError, match="heads has length=7 but target has length=4"):
            function(*swapped, 2)
        swapped[args.index(target) + 1] = np.zeros(3)
        with pytest.raises(ArprobTypeError, match="expected a conditional family"):
            function(*swapped, 2)
    with pytest.raises(InvalidArgumentError, match="num_samples must be >= 1, got 0"):
        blockwise_parallel(KEY, target, target, 0, 2)


_TRACES = [0]


@jax.tree_util.register_pytree_node_class
class CountingFamily:
    """A strict exact family that counts its traces (its __call__ only runs while tracing).

    If any row of a call shows the mask id at an observed position, every answer of the call is NaN, so a
    decoder that feeds such rows (even rows it then ignores) returns wrong tokens.
    """

    def __init__(self, model):
        self.model = model

    vocab_size = property(lambda self: self.model.vocab_size)
    length = property(lambda self: self.model.length)

    def __call__(self, x, observed):
        _TRACES[0] += 1
        invalid = jnp.any(observed & (x >= self.vocab_size))
        return self.model.conditional_logits(x, observed) + jnp.where(invalid, jnp.nan, 0.0)

    def tree_flatten(self):
        return (self.model,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def test_jit_does_not_retrace_and_feeds_only_valid_rows():
    # block_size 3 with L = 4 ends on a block of 1 or 2 positions: the verify call has padding rows
    first, second = random_model(), MarkovChain.random(jax.random.key(5), LENGTH, VOCAB)
    tokens, stats = decode(CountingFamily(first), first, 3)
    np.testing.assert_array_equal(tokens[0], greedy(first))
    assert np.all(stats.target_calls == 2)
    traces = _TRACES[0]
    assert traces > 0
    np.testing.assert_array_equal(decode(CountingFamily(first), first, 3)[0], tokens)
    # new parameter values of the same structure reuse the compilation too
    np.testing.assert_array_equal(decode(CountingFamily(second), second, 3)[0][0], greedy(second))
    assert _TRACES[0] == traces


@settings(deadline=None, max_examples=25)
@given(
    target=ars.markov_chains(VOCAB, LENGTH),
    heads=ars.conditionals(base=ars.markov_chains(VOCAB, LENGTH)),
    block_size=st.integers(min_value=1, max_value=LENGTH),
)
def test_property_output_is_greedy(target, heads, block_size):
    check_against_greedy(target, heads, block_size)
    # greedy itself picks a maximizer of pi, then of P[x_{t-1}] (up to rounding of near-ties)
    sequence = greedy(target)
    rows = [np.asarray(target.initial_probs)] + [np.asarray(target.transition_probs)[a] for a in sequence[:-1]]
    for row, token in zip(rows, sequence):
        assert row[token] >= row.max() * (1 - 1e-12)
