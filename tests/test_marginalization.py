"""arprob.marginalization: the Marginals protocol, conversions, self-consistency (theorem 9).

Oracles: the models' own ``conditional_logits`` and ``marginal_log_prob`` (independent code:
enumeration, forward passes) and a Python loop over the chain rule.  Every exact model must
pass self-consistency to 1e-10 in float64; :func:`perturbed_marginals` (the negative control)
must fail it by about its scale.  No statistical assertion: the sampled mode is deterministic
given its key, and its detection claim is checked at fixed seeds.

Shapes: V = 3, L = 4 (256 masked inputs) for the fixed-seed models, V = 2, L = 3 in the
hypothesis property, so that JAX compiles few shapes.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from error_checks import raises
from hypothesis import given, settings
from hypothesis import strategies as st

import arprob
from arprob.conditionals import exact, perturbed
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidOrderError
from arprob.marginalization import (
    Marginals,
    SelfConsistency,
    conditionals_from_marginals,
    marginals_from_conditionals,
    perturbed_marginals,
    self_consistency,
)
from arprob.samplers import ancestral_law
from arprob.testing import strategies

TOLERANCE = 1e-10  # float64: sums and logsumexps of at most V**L = 81 terms of moderate size
VOCAB_SIZE, LENGTH = 3, 4


def _models(seed: int = 0):
    rng = np.random.default_rng(seed)
    v, length = VOCAB_SIZE, LENGTH
    probs = rng.dirichlet(np.ones(v**length)).reshape((v,) * length)
    probs[0, 1] = 0.0  # zero cells: contexts of probability zero
    probs /= probs.sum()
    transition = rng.dirichlet(np.ones(v), size=v)
    transition[1, 2] = 0.0
    transition /= transition.sum(axis=1, keepdims=True)
    return {
        "tabular": arprob.TabularJoint(probs, length=length),
        "markov": arprob.MarkovChain(rng.dirichlet(np.ones(v)), transition, length),
        "ngram": arprob.NGram(rng.dirichlet(np.ones(v), size=(v + 1, v + 1)), length, context_size=2),
        "hmm": arprob.HMM(rng.dirichlet(np.ones(2)), rng.dirichlet(np.ones(2), size=2),
                          rng.dirichlet(np.ones(v), size=2), length),
    }


MODELS = _models()
QUERY_X = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [1, 0, 3, 3], [2, 1, 0, 2]])
QUERY_OBSERVED = np.array([[True, False, True, True], [False, True, False, True],
                           [True, True, False, False], [True, True, True, True]])


@pytest.fixture(params=sorted(MODELS), name="model")
def _model(request):
    return MODELS[request.param]


# ---------------------------------------------------------------------------
# self-consistency
# ---------------------------------------------------------------------------


def test_exact_models_are_marginals_and_self_consistent(model):
    assert isinstance(model, Marginals)
    result = self_consistency(model)
    assert isinstance(result, SelfConsistency) and result.exhaustive
    assert result.num_checks == LENGTH * (VOCAB_SIZE + 1) ** (LENGTH - 1)
    assert result.max_violation <= TOLERANCE, result


def test_sampled_mode_has_no_false_alarm(model):
    result = self_consistency(model, exact=False, key=jax.random.key(1), num_samples=300)
    assert not result.exhaustive and result.num_checks == 300
    assert result.max_violation <= TOLERANCE, result


def test_sampled_mode_at_given_sequences(model):
    x = np.asarray(model.sample(jax.random.key(2), (50,)))
    result = self_consistency(model, exact=False, key=jax.random.key(3), num_samples=50, x=x)
    assert result.max_violation <= TOLERANCE


@settings(max_examples=8, deadline=None)
@given(strategies.models(vocab_size=2, length=3, allow_zeros=True))
def test_self_consistency_property(model):
    assert self_consistency(model).max_violation <= TOLERANCE


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["hmm", "ising"]))
def test_self_consistency_property_hmm_ising(seed, kind):
    """HMM (2 states, V = 2, L = 3) and Ising (2 x 2 grid, random couplings and fields) from seeded draws."""
    rng = np.random.default_rng(seed)
    if kind == "hmm":
        model = arprob.HMM(rng.dirichlet(np.ones(2)), rng.dirichlet(np.ones(2), size=2),
                           rng.dirichlet(np.ones(2), size=2), 3)
    else:
        ising = pytest.importorskip("arprob.distributions.ising")
        model = ising.Ising(2, 2, coupling=rng.normal(size=(2, 2, 2)), bias=rng.normal(size=(2, 2)),
                            periodic=bool(seed % 2))
    assert self_consistency(model).max_violation <= TOLERANCE


def test_perturbed_marginals_fail_in_both_modes():
    scale = 0.1
    bad = perturbed_marginals(MODELS["tabular"], jax.random.key(4), scale)
    assert isinstance(bad, Marginals)
    exhaustive = self_consistency(bad)
    sampled = self_consistency(bad, exact=False, key=jax.random.key(5), num_samples=200)
    for result in (exhaustive, sampled):
        # residuals are differences of N(0, scale^2) noises (through a logsumexp): of order scale
        assert 0.2 * scale < result.mean_residual < 5 * scale, result
        assert result.max_residual > scale
    # the worst triple is reported, and its residual recomputes by hand
    observed, position, tokens = exhaustive.worst
    assert not observed[position]
    parent = bad.marginal_log_prob(tokens, observed)
    children = np.stack([np.where(np.arange(LENGTH) == position, v, tokens) for v in range(VOCAB_SIZE)])
    child_mask = observed | (np.arange(LENGTH) == position)
    values = np.asarray(bad.marginal_log_prob(children, np.broadcast_to(child_mask, children.shape)))
    assert abs(float(parent) - np.logaddexp.reduce(values)) == pytest.approx(exhaustive.max_residual, abs=1e-12)
    # scale 0 is the model itself
    assert self_consistency(perturbed_marginals(MODELS["tabular"], jax.random.key(4), 0.0)).max_violation \
        <= TOLERANCE


def test_perturbation_of_one_table_entry_is_found():
    """A marginal table off at a single (S, x_S) is caught by the exhaustive check."""
    model = MODELS["markov"]

    class OneBadEntry:
        vocab_size, length = model.vocab_size, model.length

        def marginal_log_prob(self, x, observed):
            value = model.marginal_log_prob(x, observed)
            hit = jnp.all(observed == jnp.array([True, False, True, False]), axis=-1) & \
                jnp.all(x[..., jnp.array([0, 2])] == 1, axis=-1)
            return value + jnp.where(hit, 1e-6, 0.0)

    result = self_consistency(OneBadEntry())
    assert result.max_residual == pytest.approx(1e-6, rel=1e-3)


# ---------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------


def test_conditionals_from_marginals_equal_exact_conditionals(model):
    family = conditionals_from_marginals(model)
    assert isinstance(family, arprob.Conditionals)
    assert (family.vocab_size, family.length) == (VOCAB_SIZE, LENGTH)
    expected = np.asarray(model.conditional_logits(np.where(QUERY_OBSERVED, QUERY_X, 0), QUERY_OBSERVED))
    got = np.asarray(family(QUERY_X, QUERY_OBSERVED))
    assert np.allclose(np.exp(got), np.exp(expected), atol=TOLERANCE, rtol=0)
    jitted = jax.jit(lambda f, x, o: f(x, o))(family, QUERY_X, QUERY_OBSERVED)
    assert np.allclose(np.asarray(jitted), got, atol=TOLERANCE, rtol=0)


def test_conditionals_from_marginals_plug_into_samplers():
    model = MODELS["tabular"]
    law = ancestral_law(conditionals_from_marginals(model), order="random")
    assert np.abs(law - np.asarray(model.law()).reshape(-1)).max() <= 1e-12


def test_conditionals_from_perturbed_marginals_are_normalised_but_inconsistent():
    family = conditionals_from_marginals(perturbed_marginals(MODELS["tabular"], jax.random.key(6), 0.3))
    logits = np.asarray(family(QUERY_X, QUERY_OBSERVED))
    assert np.allclose(np.exp(logits).sum(-1), 1.0, atol=1e-12)
    spread = marginals_from_conditionals(family).log_prob_spread(QUERY_X[3], QUERY_OBSERVED[3])
    assert float(spread.spread) > 1e-3


def _chain_rule_oracle(family, tokens, observed, order):
    """Python loop: reveal S in the order its positions appear in ``order``."""
    total, context = 0.0, np.zeros(len(tokens), bool)
    for position in order:
        if observed[position]:
            logits = np.asarray(jax.nn.log_softmax(family(np.where(context, tokens, 0), context), axis=-1))
            total += logits[position, tokens[position]]
            context[position] = True
    return total


def test_marginals_from_conditionals_equal_model_marginals(model):
    expected = np.asarray(model.marginal_log_prob(np.where(QUERY_OBSERVED, QUERY_X, 0), QUERY_OBSERVED))
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 0, 3, 1]):
        marginals = marginals_from_conditionals(model, order=order)
        assert isinstance(marginals, Marginals)
        got = np.asarray(marginals.marginal_log_prob(QUERY_X, QUERY_OBSERVED))
        finite = np.isfinite(expected)
        assert np.array_equal(np.isfinite(got), finite)
        assert np.abs(got[finite] - expected[finite]).max() <= TOLERANCE
    spread = marginals_from_conditionals(model).log_prob_spread(QUERY_X, QUERY_OBSERVED)
    assert float(np.max(spread.spread)) <= TOLERANCE
    assert self_consistency(marginals_from_conditionals(model, order=[1, 3, 0, 2])).max_violation <= TOLERANCE


def test_marginals_from_inconsistent_conditionals_depend_on_order():
    family = perturbed(MODELS["tabular"], jax.random.key(7), 0.5)
    orders = np.array(list(itertools.permutations(range(LENGTH))))
    spread = marginals_from_conditionals(family).log_prob_spread(QUERY_X, QUERY_OBSERVED, orders)
    values = []
    for order in orders:
        marginals = marginals_from_conditionals(family, order=order)
        values.append(np.asarray(marginals.marginal_log_prob(QUERY_X, QUERY_OBSERVED)))
        oracle = [_chain_rule_oracle(family, x, o, order) for x, o in zip(QUERY_X, QUERY_OBSERVED, strict=True)]
        assert np.abs(values[-1] - np.array(oracle)).max() <= TOLERANCE
    values = np.stack(values)
    assert np.abs(np.asarray(spread.spread) - (values.max(0) - values.min(0))).max() <= TOLERANCE
    sizes = QUERY_OBSERVED.sum(axis=1)
    assert np.all(np.asarray(spread.spread)[sizes >= 2] > 1e-3)  # order-dependent on |S| >= 2
    assert np.all(np.asarray(spread.spread)[sizes < 2] == 0)
    # the full-sequence spread is AnyOrderAR's
    full = np.ones(LENGTH, bool)
    ours = marginals_from_conditionals(family).log_prob_spread(QUERY_X[1], full)
    theirs = arprob.AnyOrderAR(family).log_prob_spread(QUERY_X[1])
    assert abs(float(ours.spread) - float(theirs.spread)) <= TOLERANCE
    # and chain-rule marginals of an inconsistent family are not self-consistent
    assert self_consistency(marginals_from_conditionals(family)).max_residual > 1e-3


def test_round_trip_through_conditionals(model):
    """marginals -> conditionals -> marginals along an order is the identity on an exact model."""
    marginals = marginals_from_conditionals(conditionals_from_marginals(model), order=[2, 3, 0, 1])
    expected = np.asarray(model.marginal_log_prob(np.where(QUERY_OBSERVED, QUERY_X, 0), QUERY_OBSERVED))
    got = np.asarray(marginals.marginal_log_prob(QUERY_X, QUERY_OBSERVED))
    finite = np.isfinite(expected)
    assert np.abs(got[finite] - expected[finite]).max() <= TOLERANCE


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_bad_inputs():
    model = MODELS["tabular"]
    raises(ArprobTypeError, lambda: self_consistency(exact(model)), "self_consistency", "marginals_from_conditionals")
    raises(ArprobTypeError, lambda: conditionals_from_marginals(np.zeros(3)), "conditionals_from_marginals")
    raises(ArprobTypeError, lambda: self_consistency(model, exact="yes"), "exact")
    raises(ArprobTypeError, lambda: self_consistency(model, exact=False), "needs a key")
    raises(EnumerationTooLargeError, lambda: self_consistency(model, exact=True, max_inputs=100),
           "4**4 = 256", "exact=False")
    raises(ArprobTypeError, lambda: self_consistency(model, max_inputs=100), "needs a key", "exceed")
    raises(ArprobTypeError, lambda: self_consistency(model, exact=False, key=jax.random.key(0), num_samples=3,
                                                     x=np.zeros((2, LENGTH), int)), "num_samples=3")
    raises(ArprobTypeError, lambda: perturbed_marginals(model, jax.random.key(0), -1.0), "scale")
    raises(InvalidOrderError, lambda: marginals_from_conditionals(model, order=[0, 0, 1, 2]), "permutation")
    raises(InvalidOrderError, lambda: marginals_from_conditionals(model).log_prob_spread(
        QUERY_X, QUERY_OBSERVED, orders=np.zeros((2, 3), int)), "orders has shape")
    raises(EnumerationTooLargeError, lambda: marginals_from_conditionals(model).log_prob_spread(
        QUERY_X, QUERY_OBSERVED, max_orders=10), "4! = 24")
    family = conditionals_from_marginals(model)
    raises(arprob.errors.ShapeError, lambda: family(QUERY_X[:, :3], QUERY_OBSERVED[:, :3]), "MarginalConditionals")
    batched = arprob.TabularJoint(np.full((2, 2, 2), 0.25), length=2)
    raises(ArprobTypeError, lambda: self_consistency(batched), "batch_shape")


def test_ising_is_self_consistent_exhaustive_and_sampled():
    """The Ising model (transfer matrix) passes; on a 4 x 4 grid (3**16 masked inputs) the check samples."""
    ising = pytest.importorskip("arprob.distributions.ising")
    small = ising.Ising(2, 3, coupling=0.4, bias=0.2)
    assert isinstance(small, Marginals)
    assert self_consistency(small).max_violation <= TOLERANCE
    large = ising.Ising(4, 4, coupling=(0.3, -0.5), bias=0.1, periodic=True)
    raises(ArprobTypeError, lambda: self_consistency(large), "3**16", "needs a key")
    result = self_consistency(large, key=jax.random.key(8), num_samples=100)
    assert not result.exhaustive and result.max_violation <= TOLERANCE, result
    bad = perturbed_marginals(large, jax.random.key(9), 0.1)
    assert self_consistency(bad, key=jax.random.key(8), num_samples=100).mean_residual > 0.02
