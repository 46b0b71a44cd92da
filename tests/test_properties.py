"""Hypothesis properties of the exact models, conditional families and ancestral sampler.

Oracles are written here, independently of the library: the law is checked
against an explicit enumeration of ``[0, V)^L`` (``itertools.product``, so
``x[0]`` varies slowest), and marginals are held against sums of that law.

Compilation budget: JAX compiles every jitted call site once per pytree
structure (model class, V, L, K, batch shape) and argument shape, and on a
small CPU that costs about a second each.  So the (V, L) pairs come from the
two-element list ``SHAPES`` (one pair, ``ONE_SHAPE``, for the batching and
sampling properties), and the library is called through a few module-level
jitted wrappers that every property shares.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import numpyro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.scipy.special import logsumexp
from numpyro.infer.util import log_density

import arprob
from arprob.conditionals import ExactConditionals, PerturbedConditionals, exact, perturbed
from arprob.errors import ArprobError, InvalidProbabilityError
from arprob.samplers import ancestral, ancestral_law
from arprob.testing import strategies as ars

EXACT = 1e-10  # tolerance of claims that are exact in float64

# V != L in both pairs, so that a swapped axis cannot go unnoticed.
SHAPES = st.sampled_from([(3, 2), (2, 3)])
ONE_SHAPE = (3, 2)
BATCH = 3


@jax.jit
def _answers(family, x, observed):
    """``family(x, observed)``, plus the marginal and log_prob when the family is exact."""
    logits = family(x, observed)
    if isinstance(family, ExactConditionals):
        return logits, family.model.marginal_log_prob(x, observed), family.model.log_prob(x)
    return logits, None, None


@jax.jit
def _model_answers(model, x, observed):
    """The same for a (possibly batched) model."""
    return model.conditional_logits(x, observed), model.marginal_log_prob(x, observed), model.log_prob(x)


_vmapped_over_x = jax.jit(jax.vmap(lambda family, x, observed: family(x, observed), in_axes=(None, 0, None)))
_sample = jax.jit(lambda model, key, sample_shape: model.sample(key, sample_shape), static_argnums=2)


def _conditional(family, x, observed) -> np.ndarray:
    return np.asarray(_answers(family, x, observed)[0])


def _marginal(model, x, observed) -> float:
    return float(_answers(exact(model), x, observed)[1])


def _log_prob(model, x) -> float:
    return float(_answers(exact(model), x, np.ones(model.length, dtype=bool))[2])


def _sequences(vocab_size: int, length: int) -> np.ndarray:
    """All sequences, lexicographic with x[0] slowest (independent of arprob._enumerate)."""
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int32)


def _oracle_log_marginal(model, x: np.ndarray, observed: np.ndarray) -> float:
    """log of the law summed over every sequence that agrees with x on the observed positions."""
    law = model.law()
    match = np.all(np.where(observed, _sequences(model.vocab_size, model.length) == x, True), axis=-1)
    with np.errstate(divide="ignore"):
        return float(np.log(law[match].sum()))


@st.composite
def model_and_query(draw, allow_zeros: bool = False):
    """A model with (V, L) from SHAPES, a clean sequence x and an observed mask."""
    vocab_size, length = draw(SHAPES)
    model = draw(ars.models(vocab_size, length, allow_zeros=allow_zeros))
    return model, draw(ars.sequences(vocab_size, length)), draw(ars.observed_masks(length))


def _perturbable(vocab_size: int, length: int):
    """Bases for perturbed families (two model classes keep the compilations few)."""
    return ars.tabular_joints(vocab_size, length) | ars.markov_chains(vocab_size, length)


def _batch_families():
    vocab_size, length = ONE_SHAPE
    return ars.conditionals(base=ars.tabular_joints(vocab_size, length)) | ars.markov_chains(
        vocab_size, length
    ).map(exact)


# --------------------------------------------------------------------------- laws


@settings(max_examples=25)
@given(st.data())
def test_law_is_normalized_and_nonnegative(data):
    vocab_size, length = data.draw(SHAPES | st.just((2, 1)))
    model = data.draw(ars.models(vocab_size, length, allow_zeros=data.draw(st.booleans())))
    law = model.law()
    assert law.shape == (vocab_size**length,)
    assert law.dtype == np.float64
    assert np.all(law >= 0)
    assert abs(law.sum() - 1.0) < 1e-12


@settings(max_examples=25)
@given(st.data())
def test_log_prob_is_log_of_law_on_every_sequence(data):
    vocab_size, length = data.draw(SHAPES)
    model = data.draw(ars.models(vocab_size, length))
    log_probs = [_log_prob(model, x) for x in _sequences(vocab_size, length)]
    np.testing.assert_allclose(log_probs, np.log(model.law()), rtol=0, atol=EXACT)


@settings(max_examples=20)
@given(st.data())
def test_tabular_logits_and_probs_give_the_same_joint(data):
    vocab_size, length = data.draw(SHAPES | st.just((2, 1)))
    model = data.draw(ars.tabular_joints(vocab_size, length))
    shift = data.draw(st.floats(-50.0, 50.0))
    probs = np.asarray(model.probs)
    from_logits = arprob.TabularJoint(logits=np.log(probs) + shift)
    np.testing.assert_allclose(from_logits.law(), probs.reshape(-1), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- marginals


@settings(max_examples=25)
@given(model_and_query(allow_zeros=True))
def test_marginal_sums_the_law_over_unobserved_positions(case):
    model, x, observed = case
    expected = _oracle_log_marginal(model, x, observed)
    actual = _marginal(model, x, observed)
    if np.isneginf(expected):
        assert np.isneginf(actual)
    else:
        assert abs(actual - expected) < EXACT


@settings(max_examples=25)
@given(model_and_query())
def test_marginal_with_all_observed_is_log_prob_and_with_none_is_zero(case):
    model, x, _ = case
    everything = np.ones(model.length, dtype=bool)
    nothing = np.zeros(model.length, dtype=bool)
    assert abs(_marginal(model, x, everything) - _log_prob(model, x)) < EXACT
    assert abs(_marginal(model, x, nothing)) < EXACT


# ------------------------------------------------------------------- conditionals


@settings(max_examples=25)
@given(model_and_query())
def test_conditionals_are_normalized_ratios_of_marginals(case):
    model, x, observed = case
    vocab_size, length = model.vocab_size, model.length
    logits = _conditional(exact(model), x, observed)
    assert logits.shape == (length, vocab_size)
    np.testing.assert_allclose(np.asarray(logsumexp(logits, axis=-1)), 0.0, atol=EXACT)
    for i in range(length):
        context = observed.copy()
        context[i] = False
        with_i = observed.copy()
        with_i[i] = True
        denominator = _marginal(model, x, context)
        for v in range(vocab_size):
            y = x.copy()
            y[i] = v
            assert abs(logits[i, v] - (_marginal(model, y, with_i) - denominator)) < EXACT, (i, v)


@settings(max_examples=25)
@given(st.data())
def test_conditional_at_a_position_ignores_the_token_there(data):
    vocab_size, length = data.draw(SHAPES)
    family = data.draw(
        ars.conditionals(vocab_size, length) | ars.conditionals(base=_perturbable(vocab_size, length))
    )
    x = data.draw(ars.sequences(vocab_size, length))
    observed = data.draw(ars.observed_masks(length))
    position = data.draw(st.integers(0, length - 1))
    observed[position] = True
    changed = x.copy()
    changed[position] = data.draw(st.integers(0, vocab_size - 1))
    before = _conditional(family, x, observed)[position]
    after = _conditional(family, changed, observed)[position]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)


@settings(max_examples=25)
@given(st.data())
def test_chain_rule_holds_in_every_order(data):
    model, x, _ = data.draw(model_and_query())
    order = data.draw(ars.orders(model.length))
    observed = np.zeros(model.length, dtype=bool)
    total = 0.0
    for position in order:
        total += _conditional(exact(model), x, observed)[position, x[position]]
        observed[position] = True
    assert abs(total - _log_prob(model, x)) < EXACT


@settings(max_examples=25)
@given(model_and_query(allow_zeros=True))
def test_zero_probability_contexts_give_uniform_conditionals(case):
    model, x, observed = case
    logits = _conditional(exact(model), x, observed)
    for i in range(model.length):
        context = observed.copy()
        context[i] = False
        if np.isneginf(_oracle_log_marginal(model, x, context)):
            np.testing.assert_allclose(logits[i], -np.log(model.vocab_size), rtol=0, atol=EXACT)
        else:
            assert abs(float(logsumexp(logits[i]))) < EXACT


# ---------------------------------------------------------------- perturbed families


@settings(max_examples=20)
@given(st.data())
def test_perturbed_family_is_deterministic_and_ignores_unobserved_values(data):
    vocab_size, length = data.draw(SHAPES)
    model = data.draw(_perturbable(vocab_size, length))
    seed = data.draw(st.integers(0, 2**32 - 1))
    scale = data.draw(st.floats(0.1, 3.0))
    x = data.draw(ars.sequences(vocab_size, length))
    observed = data.draw(ars.observed_masks(length))
    # other values where unobserved, the mask token V included
    other = np.where(observed, x, data.draw(ars.sequences(vocab_size + 1, length)))
    first = perturbed(model, jax.random.key(seed), scale)
    second = perturbed(model, jax.random.key(seed), scale)
    assert isinstance(first, PerturbedConditionals)
    answer = _conditional(first, x, observed)
    np.testing.assert_array_equal(_conditional(first, x, observed), answer)
    np.testing.assert_array_equal(_conditional(second, x, observed), answer)
    np.testing.assert_array_equal(_conditional(first, other, observed), answer)
    np.testing.assert_allclose(np.asarray(logsumexp(answer, axis=-1)), 0.0, atol=EXACT)
    # and the noise does move the logits away from the exact conditionals
    assert np.max(np.abs(answer - _conditional(exact(model), x, observed))) > 1e-6


@settings(max_examples=15)
@given(st.data())
def test_perturbed_with_zero_scale_returns_the_base(data):
    vocab_size, length = data.draw(SHAPES)
    model = data.draw(ars.models(vocab_size, length))
    key = jax.random.key(data.draw(st.integers(0, 2**32 - 1)))
    family = exact(model)
    assert perturbed(family, key, 0.0) is family
    assert perturbed(family, key, 0) is family
    from_model = perturbed(model, key, 0.0)
    assert isinstance(from_model, ExactConditionals)
    assert from_model.model is model


# ------------------------------------------------------------------------ ancestral


@settings(max_examples=20)
@given(st.data())
def test_ancestral_law_of_a_model_is_its_law_in_every_order(data):
    vocab_size, length = data.draw(SHAPES)
    model = data.draw(ars.models(vocab_size, length))
    order = data.draw(ars.orders(length) | st.just("random") | st.none())
    np.testing.assert_allclose(ancestral_law(model, order), model.law(), rtol=0, atol=1e-12)


@settings(max_examples=20)
@given(st.data())
def test_ancestral_law_of_any_family_is_a_distribution(data):
    vocab_size, length = data.draw(SHAPES)
    family = data.draw(ars.conditionals(base=ars.tabular_joints(vocab_size, length)))
    order = data.draw(ars.orders(length) | st.just("random"))
    law = ancestral_law(family, order)
    assert law.shape == (vocab_size**length,)
    assert np.all(law >= 0)
    assert abs(law.sum() - 1.0) < 1e-12


@settings(max_examples=10)
@given(st.data())
def test_ancestral_with_the_same_key_gives_the_same_tokens(data):
    vocab_size, length = ONE_SHAPE
    family = data.draw(ars.conditionals(base=ars.tabular_joints(vocab_size, length)))
    key = jax.random.key(data.draw(st.integers(0, 2**32 - 1)))
    order = data.draw(ars.orders(length) | st.just("random") | st.none())
    tokens, stats = ancestral(key, family, 4, order)
    again, _ = ancestral(key, family, 4, order)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(again))
    assert tokens.shape == (4, length)
    assert np.all((np.asarray(tokens) >= 0) & (np.asarray(tokens) < vocab_size))
    np.testing.assert_array_equal(np.asarray(stats.nfe), length)


# ------------------------------------------------------------- shapes and batching


@settings(max_examples=15)
@given(st.data())
def test_batches_of_x_and_of_observed_broadcast_like_single_calls(data):
    vocab_size, length = ONE_SHAPE
    family = data.draw(_batch_families())
    xs = data.draw(ars.sequences(vocab_size, length, batch_shape=(BATCH,)))
    observed = data.draw(ars.observed_masks(length))
    observeds = data.draw(ars.observed_masks(length, batch_shape=(BATCH,)))
    over_x = _answers(family, xs, observed)
    over_observed = _answers(family, xs[0], observeds)
    assert over_x[0].shape == over_observed[0].shape == (BATCH, length, vocab_size)
    for b in range(BATCH):
        single = _answers(family, xs[b], observed)
        np.testing.assert_allclose(np.asarray(over_x[0][b]), np.asarray(single[0]), rtol=0, atol=EXACT)
        single = _answers(family, xs[0], observeds[b])
        np.testing.assert_allclose(np.asarray(over_observed[0][b]), np.asarray(single[0]), rtol=0, atol=EXACT)
    if isinstance(family, ExactConditionals):  # marginals and log_probs broadcast too
        assert over_x[1].shape == over_x[2].shape == over_observed[1].shape == (BATCH,)
        for b in range(BATCH):
            single = _answers(family, xs[b], observed)
            assert abs(float(over_x[1][b]) - float(single[1])) < EXACT
            assert abs(float(over_x[2][b]) - float(single[2])) < EXACT
            assert abs(float(over_observed[1][b]) - float(_answers(family, xs[0], observeds[b])[1])) < EXACT


@settings(max_examples=15)
@given(st.data())
def test_vmap_over_x_equals_the_batched_call(data):
    vocab_size, length = ONE_SHAPE
    family = data.draw(_batch_families())
    xs = data.draw(ars.sequences(vocab_size, length, batch_shape=(BATCH,)))
    observed = data.draw(ars.observed_masks(length))
    np.testing.assert_allclose(
        np.asarray(_vmapped_over_x(family, xs, observed)),
        np.asarray(_answers(family, xs, observed)[0]),
        rtol=0,
        atol=EXACT,
    )


@settings(max_examples=15)
@given(st.data())
def test_batched_models_agree_with_their_members(data):
    vocab_size, length = ONE_SHAPE
    kind = data.draw(st.sampled_from(["tabular", "markov", "ngram"]))
    if kind == "tabular":
        batched = data.draw(ars.tabular_joints(vocab_size, length, batch_shape=(2,)))
        members = [arprob.TabularJoint(np.asarray(batched.probs[b])) for b in range(2)]
    elif kind == "markov":
        batched = data.draw(ars.markov_chains(vocab_size, length, batch_shape=(2,)))
        members = [
            arprob.MarkovChain(
                np.asarray(batched.initial_probs[b]), np.asarray(batched.transition_probs[b]), length
            )
            for b in range(2)
        ]
    else:
        batched = data.draw(ars.ngrams(vocab_size, length, batch_shape=(2,), context_sizes=(2,)))
        members = [arprob.NGram(np.asarray(batched.table[b]), length, context_size=2) for b in range(2)]
    assert batched.batch_shape == (2,)
    assert batched.event_shape == (length,)
    x = data.draw(ars.sequences(vocab_size, length))
    observed = data.draw(ars.observed_masks(length))
    law = batched.law()
    logits, marginals, log_probs = (np.asarray(a) for a in _model_answers(batched, x, observed))
    assert law.shape == (2, vocab_size**length)
    assert logits.shape == (2, length, vocab_size)
    assert marginals.shape == log_probs.shape == (2,)
    for b, member in enumerate(members):
        np.testing.assert_allclose(law[b], member.law(), rtol=1e-12, atol=0)
        member_logits, member_marginal, member_log_prob = _answers(exact(member), x, observed)
        np.testing.assert_allclose(logits[b], np.asarray(member_logits), rtol=0, atol=EXACT)
        assert abs(marginals[b] - float(member_marginal)) < EXACT
        assert abs(log_probs[b] - float(member_log_prob)) < EXACT


@settings(max_examples=10)
@given(st.data())
def test_sample_shapes_token_range_and_same_key_same_tokens(data):
    vocab_size, length = ONE_SHAPE
    batch_shape, sample_shape = data.draw(st.sampled_from([((), (4,)), ((2,), (2, 3))]))
    model = data.draw(
        ars.tabular_joints(vocab_size, length, batch_shape=batch_shape)
        | ars.markov_chains(vocab_size, length, batch_shape=batch_shape)
    )
    key = jax.random.key(data.draw(st.integers(0, 2**32 - 1)))
    tokens = np.asarray(_sample(model, key, sample_shape))
    assert tokens.shape == sample_shape + batch_shape + (length,)
    assert np.issubdtype(tokens.dtype, np.integer)
    assert np.all((tokens >= 0) & (tokens < vocab_size))
    np.testing.assert_array_equal(np.asarray(_sample(model, key, sample_shape)), tokens)
    # every drawn sequence is possible under the member of the batch that drew it
    law = model.law().reshape(batch_shape + (-1,))
    index = (tokens * vocab_size ** np.arange(length - 1, -1, -1)).sum(axis=-1)
    assert np.all(
        np.take_along_axis(np.broadcast_to(law, sample_shape + law.shape), index[..., None], -1) > 0
    )


# ------------------------------------------------------------------------- numpyro


@settings(max_examples=15)
@given(model_and_query())
def test_numpyro_log_density_is_log_prob(case):
    model, x, _ = case

    def numpyro_model():
        numpyro.sample("x", model, obs=x)

    density, trace = log_density(numpyro_model, (), {}, {})
    assert abs(float(density) - _log_prob(model, x)) < EXACT
    np.testing.assert_array_equal(np.asarray(trace["x"]["value"]), x)


# ---------------------------------------------------------------------- validation


@settings(max_examples=25)
@given(st.data())
def test_bad_probabilities_are_refused_with_the_discrepancy(data):
    vocab_size = data.draw(st.sampled_from([2, 3]))
    kind = data.draw(st.sampled_from(["tabular", "initial", "transition", "ngram"]))
    defect = data.draw(st.sampled_from(["negative", "unnormalized", "nan"]))
    if kind == "tabular":
        probs = np.asarray(data.draw(ars.tabular_joints(vocab_size, 2)).probs)
        name = "probs"
    elif kind == "ngram":
        probs = np.asarray(data.draw(ars.ngrams(vocab_size, 2, context_sizes=(1,))).table)
        name = "table"
    else:
        chain = data.draw(ars.markov_chains(vocab_size, 2))
        probs = np.asarray(chain.initial_probs if kind == "initial" else chain.transition_probs)
        name = f"{kind}_probs"
    # one distribution per row: the whole table for TabularJoint, a context row otherwise
    rows = probs.reshape(1, -1).copy() if kind == "tabular" else probs.reshape(-1, vocab_size).copy()
    row = data.draw(st.integers(0, rows.shape[0] - 1))
    column = data.draw(st.integers(0, rows.shape[1] - 1))
    if defect == "negative":
        amount = data.draw(st.floats(1e-3, 2.0))
        rows[row, column] = -amount
        expected_text = f"{-amount:.6g}"
    elif defect == "unnormalized":
        rows[row] *= data.draw(st.floats(0.2, 0.99) | st.floats(1.01, 5.0))
        expected_text = f"sums to {rows[row].sum():.6g}"
    else:
        rows[row, column] = np.nan
        expected_text = "nan"
    bad = rows.reshape(probs.shape)
    with pytest.raises(InvalidProbabilityError) as raised:
        if kind == "tabular":
            arprob.TabularJoint(bad)
        elif kind == "ngram":
            arprob.NGram(bad, 2)
        elif kind == "initial":
            arprob.MarkovChain(bad, chain.transition_probs, 2)
        else:
            arprob.MarkovChain(chain.initial_probs, bad, 2)
    assert isinstance(raised.value, ArprobError) and isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert expected_text in message, message
    assert name in message, message
