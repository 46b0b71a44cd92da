"""Tests of the categorical-emission HMM (arprob.distributions.hmm) against brute-force oracles.

Oracles are written independently of the library: the law by summing the joint over all ``K**L``
hidden paths and all ``V**L`` sequences (``itertools.product``), marginals and conditionals by
summing that law, constraint probabilities by running the DFA on every sequence.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import arprob
from arprob.distributions.hmm import DFA, HMM
from arprob.errors import (
    ArprobTypeError,
    InvalidArgumentError,
    InvalidProbabilityError,
    ShapeError,
    ZeroProbabilityError,
)
from arprob.inference import hmm_log_likelihood
from arprob.samplers import ancestral_law

EXACT = 1e-10
GOF_LEVEL = 1e-4  # each goodness-of-fit assertion is a false alarm with probability 1e-4 under a correct sampler


def _dirichlet(rng, shape):
    draws = rng.gamma(1.0, size=shape) + 1e-2  # every entry positive
    return draws / draws.sum(axis=-1, keepdims=True)


def _model(seed, num_states, vocab_size, length):
    rng = np.random.default_rng(seed)
    return HMM(_dirichlet(rng, num_states), _dirichlet(rng, (num_states, num_states)),
               _dirichlet(rng, (num_states, vocab_size)), length)


def _sequences(vocab_size, length):
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int32)


def _path_law(model):
    """p(x) = sum over all K**L hidden paths of the joint (independent of the model's own code)."""
    pi, a, e = (np.asarray(p, np.float64) for p in (model.initial_probs, model.transition_probs, model.emission_probs))
    length, num_states = model.length, model.num_states
    law = []
    for x in _sequences(model.vocab_size, length):
        total = 0.0
        for z in itertools.product(range(num_states), repeat=length):
            weight = pi[z[0]] * e[z[0], x[0]]
            for t in range(1, length):
                weight *= a[z[t - 1], z[t]] * e[z[t], x[t]]
            total += weight
        law.append(total)
    return np.array(law)


CASES = [(0, 2, 2, 4), (1, 3, 3, 3), (2, 3, 2, 5)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"K{c[1]}V{c[2]}L{c[3]}")
def case(request):
    seed, num_states, vocab_size, length = request.param
    model = _model(seed, num_states, vocab_size, length)
    return model, _path_law(model)


def test_log_prob_and_law_match_the_path_enumeration(case):
    model, oracle = case
    sequences = _sequences(model.vocab_size, model.length)
    assert abs(oracle.sum() - 1) < EXACT
    np.testing.assert_allclose(model.law(), oracle, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(model.log_prob(sequences)), np.log(oracle), rtol=0, atol=EXACT)


def test_marginals_and_conditionals_on_random_masks_match_the_enumeration(case):
    model, oracle = case
    vocab_size, length = model.vocab_size, model.length
    sequences = _sequences(vocab_size, length)
    table = oracle.reshape((vocab_size,) * length)
    rng = np.random.default_rng(7)
    masks = rng.random((6, length)) < 0.5
    masks[0], masks[1] = False, True
    for observed in masks:
        tokens = np.where(observed, sequences, vocab_size)  # unobserved positions hold the mask id
        marginal = np.asarray(model.marginal_log_prob(tokens, np.broadcast_to(observed, tokens.shape)))
        logits = np.asarray(model.conditional_logits(tokens, observed))
        for row, x in enumerate(sequences):
            expected = table[tuple(x[j] if observed[j] else slice(None) for j in range(length))].sum()
            assert abs(marginal[row] - np.log(expected)) < EXACT
            for i in range(length):
                context = [x[j] if observed[j] and j != i else slice(None) for j in range(length)]
                free = [j for j in range(length) if isinstance(context[j], slice)]  # axes left after indexing
                marg = np.moveaxis(table[tuple(context)], free.index(i), 0).reshape(vocab_size, -1).sum(axis=1)
                np.testing.assert_allclose(logits[row, i], np.log(marg / marg.sum()), rtol=0, atol=EXACT)


def test_prefix_conditionals_match_the_enumeration(case):
    model, oracle = case
    vocab_size, length = model.vocab_size, model.length
    table = oracle.reshape((vocab_size,) * length)
    sequences = _sequences(vocab_size, length)
    logits = np.asarray(model.prefix_conditional_logits(sequences))
    for row, x in enumerate(sequences[:: max(1, len(sequences) // 16)]):
        row = row * max(1, len(sequences) // 16)
        for t in range(length):
            marg = table[tuple(x[:t])].reshape(vocab_size, -1).sum(axis=1)
            np.testing.assert_allclose(logits[row, t], np.log(marg / marg.sum()), rtol=0, atol=EXACT)


@pytest.mark.parametrize("shape", [(2, 2, 3), (3, 3, 3)])
def test_ancestral_law_in_random_order_is_the_law(shape):
    """The conditionals are those of one joint: ancestral sampling in any order recovers it."""
    model = _model(11, *shape)
    assert arprob.verify.tv(ancestral_law(model, "random"), model.law()) < 1e-12


def test_samples_follow_the_law():
    model = _model(3, 3, 2, 4)
    tokens = np.asarray(model.sample(jax.random.PRNGKey(0), (20000,)))
    assert tokens.shape == (20000, 4) and tokens.dtype == np.int32
    assert arprob.verify.gof(tokens, model.law()).p_value > GOF_LEVEL


# ---------------------------------------------------------------- GeLaTo constraints


def _contains(token, vocab_size):
    transitions = np.zeros((2, vocab_size), np.int64)
    transitions[0, token] = 1
    transitions[1] = 1
    return DFA(transitions, 0, np.array([False, True])), lambda x: token in x


def _no_equal_neighbours(vocab_size):
    # state 0: start, 1 + v: last token v, vocab_size + 1: dead
    dead = vocab_size + 1
    transitions = np.zeros((vocab_size + 2, vocab_size), np.int64)
    for v in range(vocab_size):
        transitions[0, v] = 1 + v
        for last in range(vocab_size):
            transitions[1 + last, v] = dead if v == last else 1 + v
    transitions[dead] = dead
    accepting = np.ones(vocab_size + 2, bool)
    accepting[dead] = False
    return DFA(transitions, 0, accepting), lambda x: all(a != b for a, b in zip(x[:-1], x[1:]))


def _ends_in_zero(vocab_size):
    transitions = np.ones((2, vocab_size), np.int64)
    transitions[:, 0] = 0
    return DFA(transitions, 1, np.array([True, False])), lambda x: x[-1] == 0


def _dfas(vocab_size):
    return [_contains(1, vocab_size), _no_equal_neighbours(vocab_size), _ends_in_zero(vocab_size)]


def test_constraint_probability_matches_the_enumeration(case):
    model, oracle = case
    vocab_size, length = model.vocab_size, model.length
    sequences = _sequences(vocab_size, length)
    for dfa, accepts in _dfas(vocab_size):
        accepted = np.array([accepts(list(x)) for x in sequences])
        for prefix in ([], [0], [1, 0], list(sequences[-1])):
            match = np.all(sequences[:, : len(prefix)] == np.array(prefix, np.int32), axis=1)
            expected = oracle[match & accepted].sum() / oracle[match].sum()
            got = float(model.constraint_probability(dfa, prefix=prefix or None))
            assert abs(got - expected) < EXACT, (prefix, got, expected)
        log_got = float(model.constraint_log_probability(dfa))
        assert abs(log_got - np.log(oracle[accepted].sum())) < EXACT


@pytest.mark.parametrize("prefix", [None, [2]])
def test_constrained_samples_follow_the_conditional_law(prefix):
    model = _model(5, 2, 3, 4)
    dfa, accepts = _no_equal_neighbours(3)
    sequences = _sequences(3, 4)
    keep = np.array([accepts(list(x)) and (prefix is None or x[0] == prefix[0]) for x in sequences])
    target = np.where(keep, model.law(), 0.0)
    target /= target.sum()
    tokens = np.asarray(model.sample_constrained(jax.random.PRNGKey(4), dfa, 20000, prefix=prefix))
    assert tokens.shape == (20000, 4)
    result = arprob.verify.gof(tokens, target)
    assert not result.zero_probability_hits
    assert result.p_value > GOF_LEVEL


def test_constraint_of_probability_zero_is_refused():
    model = _model(0, 2, 2, 3)
    never = DFA(np.zeros((1, 2), np.int64), 0, np.array([False]))
    assert float(model.constraint_probability(never)) == 0.0
    with pytest.raises(ZeroProbabilityError, match="probability 0"):
        model.sample_constrained(jax.random.PRNGKey(0), never, 10)
    # prefix [0, 0] already has two equal neighbours
    with pytest.raises(ZeroProbabilityError, match="probability 0"):
        model.sample_constrained(jax.random.PRNGKey(0), _no_equal_neighbours(2)[0], 10, prefix=[0, 0])


def test_prefix_of_probability_zero_is_refused():
    model = HMM(np.array([1.0, 0.0]), np.eye(2), np.array([[1.0, 0.0], [0.0, 1.0]]), 3)
    with pytest.raises(ZeroProbabilityError, match="prefix"):
        model.constraint_probability(_contains(1, 2)[0], prefix=[1])


def test_bad_dfas_are_refused():
    model = _model(0, 2, 2, 3)
    accepting = np.array([False, True])
    with pytest.raises(ShapeError, match="transitions"):
        model.constraint_probability(DFA(np.zeros((2, 3), np.int64), 0, accepting))
    with pytest.raises(InvalidArgumentError, match="states in"):
        model.constraint_probability(DFA(np.full((2, 2), 2), 0, accepting))
    with pytest.raises(InvalidArgumentError, match="start"):
        model.constraint_probability(DFA(np.zeros((2, 2), np.int64), 5, accepting))
    with pytest.raises(ShapeError, match="accepting"):
        model.constraint_probability(DFA(np.zeros((2, 2), np.int64), 0, np.array([True])))
    with pytest.raises(ArprobTypeError, match="DFA"):
        model.constraint_probability(np.zeros((2, 2)))
    with pytest.raises(ShapeError, match="prefix"):
        model.constraint_probability(_contains(1, 2)[0], prefix=[0, 0, 0, 0])


# ---------------------------------------------------------------- numpyro, validation, zero-probability contexts


def test_numpyro_observation_adds_log_prob():
    model = _model(1, 3, 3, 6)
    x = jnp.array([0, 2, 1, 1, 0, 2])

    def program():
        numpyro.sample("x", model, obs=x)

    trace = numpyro.handlers.trace(numpyro.handlers.seed(program, 0)).get_trace()
    site = trace["x"]
    assert abs(float(site["fn"].log_prob(site["value"])) - float(model.log_prob(x))) < EXACT
    log_density, _ = numpyro.infer.util.log_density(program, (), {}, {})
    assert abs(float(log_density) - np.log(_path_law(_model(1, 3, 3, 6))[np.ravel_multi_index(x, (3,) * 6)])) < EXACT


def test_jit_and_pytree_round_trip():
    model = _model(2, 2, 3, 5)
    x = jnp.array([0, 1, 2, 2, 1])
    observed = jnp.array([True, False, True, True, False])
    jitted = jax.jit(lambda m, x, o: m.conditional_logits(x, o))
    np.testing.assert_allclose(jitted(model, x, observed), model.conditional_logits(x, observed), atol=1e-14)


def test_invalid_parameters_are_refused():
    pi, a, e = np.array([0.5, 0.5]), np.full((2, 2), 0.5), np.full((2, 3), 1 / 3)
    with pytest.raises(InvalidProbabilityError, match="initial_probs"):
        HMM(np.array([0.5, 0.6]), a, e, 3)
    with pytest.raises(InvalidProbabilityError, match="emission_probs"):
        HMM(pi, a, np.full((2, 3), 0.3), 3)
    with pytest.raises(ShapeError, match="transition_probs"):
        HMM(pi, np.full((3, 3), 1 / 3), e, 3)
    with pytest.raises(ShapeError, match="emission_probs"):
        HMM(pi, a, np.full((3, 3), 1 / 3), 3)
    with pytest.raises(ShapeError, match="no batch"):
        HMM(np.full((4, 2), 0.5), a, e, 3)
    with pytest.raises(InvalidArgumentError, match="length"):
        HMM(pi, a, e, 0)
    model = HMM(pi, a, e, 3)
    with pytest.raises(arprob.errors.InvalidTokenError):
        model.log_prob(np.array([0, 3, 1]))
    with pytest.raises(ShapeError):
        model.marginal_log_prob(np.array([0, 1]), np.array([True, True]))


def test_zero_probability_context_gives_uniform_conditional_and_minus_inf_marginal():
    # state 0 emits only token 0 and never leaves; state 1 is unreachable
    model = HMM(np.array([1.0, 0.0]), np.eye(2), np.array([[1.0, 0.0], [0.0, 1.0]]), 3)
    x = np.array([1, 0, 0])
    observed = np.array([True, False, True])
    assert float(model.marginal_log_prob(x, observed)) == -np.inf
    logits = np.asarray(model.conditional_logits(x, observed))
    assert np.all(np.isfinite(logits[1])) and np.allclose(logits[1], np.log(0.5))
    np.testing.assert_allclose(logits[0], [0.0, -np.inf])  # context x_2 = 0 is possible


# ---------------------------------------------------------------- long sequences

LONG = 2000


def test_long_sequence_oracle_is_normalised_and_matches_marginal_differences():
    model = _model(9, 3, 3, LONG)
    rng = np.random.default_rng(0)
    x = np.asarray(model.sample(jax.random.PRNGKey(9)))
    observed = rng.random(LONG) < 0.7
    log_p = float(model.log_prob(x))
    kernel = float(hmm_log_likelihood(model.log_initial, model.log_transition, model.log_emission.T[x]))
    assert np.isfinite(log_p) and log_p == kernel
    logits = np.asarray(model.conditional_logits(x, observed))
    assert logits.shape == (LONG, 3)
    np.testing.assert_allclose(np.exp(logits).sum(axis=-1), 1.0, atol=1e-12)
    for i in (0, 1, 777, 1500, LONG - 1):
        context = observed.copy()
        context[i] = False
        base = float(model.marginal_log_prob(x, context))
        for v in range(3):
            with_v = x.copy()
            with_v[i] = v
            context[i] = True
            assert abs(float(model.marginal_log_prob(with_v, context)) - base - logits[i, v]) < 1e-9
            context[i] = False
    prefix = np.asarray(model.prefix_conditional_logits(x))
    np.testing.assert_allclose(np.exp(prefix).sum(axis=-1), 1.0, atol=1e-12)
    dfa, _ = _ends_in_zero(3)
    probability = float(model.constraint_probability(dfa, prefix=x[:1000]))
    assert 0 < probability < 1
    tokens = np.asarray(model.sample_constrained(jax.random.PRNGKey(1), dfa, 4, prefix=x[:1000]))
    assert np.all(tokens[:, -1] == 0) and np.all(tokens[:, :1000] == x[:1000])
