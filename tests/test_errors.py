"""One test per kind of bad input: the error type and what its message says.

Every error arprob raises on bad input must derive from
:class:`arprob.errors.ArprobError` *and* from the matching built-in
(``ValueError`` or ``TypeError``), and its message must name the argument, the
expected value or shape and the given one (see ``arprob/errors.py``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from arprob import MarkovChain, NGram, TabularJoint
from arprob.conditionals import exact, perturbed
from arprob.errors import (
    ArprobError,
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidOrderError,
    InvalidProbabilityError,
    InvalidTokenError,
    ShapeError,
)
from arprob.samplers import ancestral, ancestral_law


def _expect(builtin, specific, call, *fragments: str) -> str:
    """Run ``call``; check that its error is a ``builtin``, a ``specific`` and an ArprobError.

    Then check that every fragment appears in the message.
    """
    with pytest.raises(builtin) as raised:
        call()
    error = raised.value
    assert isinstance(error, ArprobError), f"{type(error).__name__} does not derive from ArprobError: {error}"
    assert isinstance(error, specific), f"{type(error).__name__} is not a {specific.__name__}: {error}"
    message = str(error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} is not in the message {message!r}"
    return message


def _uniform_chain(vocab_size: int = 3, length: int = 3) -> MarkovChain:
    return MarkovChain(
        np.full(vocab_size, 1 / vocab_size), np.full((vocab_size, vocab_size), 1 / vocab_size), length
    )


# ------------------------------------------------------------------ probabilities


def test_negative_probs():
    probs = np.array([[0.5, 0.6], [-0.25, 0.15]])
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: TabularJoint(probs),
        "TabularJoint",
        "probs",
        "-0.25",
        "[0, 1]",
    )


def test_negative_transition_probs():
    transition = np.array([[1.1, -0.1], [0.5, 0.5]])
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: MarkovChain(np.array([0.5, 0.5]), transition, 2),
        "transition_probs",
        "-0.1",
    )


def test_probs_not_summing_to_one_report_the_sum():
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: TabularJoint(np.full((2, 2), 0.2)),
        "probs",
        "sums to 0.8",
        "expected 1",
        "-0.2",
    )


def test_initial_probs_not_summing_to_one_report_the_sum():
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: MarkovChain(np.array([0.5, 0.8]), np.full((2, 2), 0.5), 2),
        "initial_probs",
        "sums to 1.3",
        "expected 1",
    )


def test_ngram_reachable_row_not_summing_to_one():
    table = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.3]])  # row 2 = after BOS: reachable
    _expect(
        ValueError, InvalidProbabilityError, lambda: NGram(table, 2), "table", "sums to 1.2", "expected 1"
    )


@pytest.mark.parametrize(("value", "text"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_probs(value, text):
    probs = np.array([[0.25, 0.25], [0.25, value]])
    _expect(ValueError, InvalidProbabilityError, lambda: TabularJoint(probs), "probs", text, "finite")


def test_nan_logits():
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: TabularJoint(logits=np.array([[0.0, np.nan], [1.0, 2.0]])),
        "logits",
        "NaN",
    )


def test_logits_that_are_all_minus_infinity():
    _expect(
        ValueError,
        InvalidProbabilityError,
        lambda: TabularJoint(logits=np.full((2, 2), -np.inf)),
        "logits",
        "-inf",
    )


# ------------------------------------------------------------------------ shapes


def test_tabular_axes_of_different_sizes():
    _expect(
        ValueError, ShapeError, lambda: TabularJoint(np.full((2, 3), 1 / 6)), "TabularJoint", "(2, 3)", "V"
    )


def test_transition_shape_does_not_match_the_vocabulary():
    _expect(
        ValueError,
        ShapeError,
        lambda: MarkovChain(np.full(3, 1 / 3), np.full((3, 2), 0.5), 3),
        "transition_probs",
        "(3, 2)",
        "(..., 3, 3)",
    )


def test_ngram_table_shape():
    _expect(
        ValueError, ShapeError, lambda: NGram(np.full((3, 3), 1 / 3), 3), "table", "(3, 3)", "(..., 4, 3)"
    )


def test_one_token_vocabulary():
    _expect(
        ValueError, ShapeError, lambda: MarkovChain(np.ones(1), np.ones((1, 1)), 3), "initial_probs", "V >= 2"
    )


def test_log_prob_of_a_sequence_of_the_wrong_length():
    _expect(
        ValueError,
        ShapeError,
        lambda: _uniform_chain().log_prob(np.zeros(4, np.int32)),
        "value",
        "(4,)",
        "(..., 3)",
    )


def test_observed_of_the_wrong_length():
    model = _uniform_chain()
    _expect(
        ValueError,
        ShapeError,
        lambda: model.marginal_log_prob(np.zeros(3, np.int32), np.ones(2, bool)),
        "observed",
        "(2,)",
        "(..., 3)",
    )


def test_batches_of_x_and_observed_that_do_not_broadcast():
    model = _uniform_chain()
    message = _expect(
        ValueError,
        ShapeError,
        lambda: model.conditional_logits(np.zeros((2, 3), np.int32), np.ones((4, 3), bool)),
        "observed",
    )
    assert "(2, 3)" in message or "(2,)" in message, message


def test_parameter_batches_that_do_not_broadcast():
    message = _expect(
        ValueError,
        ShapeError,
        lambda: MarkovChain(np.full((2, 3), 1 / 3), np.full((4, 3, 3), 1 / 3), 2),
        "initial_probs",
        "transition_probs",
    )
    assert "(2, 3)" in message or "(2,)" in message, message


# ------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("token", [5, -1])
def test_log_prob_of_a_token_outside_the_vocabulary(token):
    x = np.array([0, token, 1])
    _expect(
        ValueError, InvalidTokenError, lambda: _uniform_chain().log_prob(x), "value", str(token), "[0, 3)"
    )


def test_log_prob_of_float_tokens():
    _expect(
        ValueError,
        InvalidTokenError,
        lambda: _uniform_chain().log_prob(np.zeros(3)),
        "value",
        "float64",
        "integer",
    )


@pytest.mark.parametrize(
    "model",
    [_uniform_chain(), TabularJoint(np.full((3, 3, 3), 1 / 27))],
    ids=lambda model: type(model).__name__,
)
def test_mask_token_in_clean_data(model):
    _expect(
        ValueError,
        InvalidTokenError,
        lambda: model.log_prob(np.array([0, 3, 1])),
        "value",
        "mask token 3",
        "[0, 3)",
    )


@pytest.mark.parametrize(
    "model",
    [_uniform_chain(), TabularJoint(np.full((3, 3, 3), 1 / 27))],
    ids=lambda model: type(model).__name__,
)
def test_out_of_range_token_at_an_observed_position_of_conditional_logits(model):
    observed = np.array([True, True, False])
    _expect(
        ValueError,
        InvalidTokenError,
        lambda: model.conditional_logits(np.array([0, 4, 3]), observed),
        "x",
        "4",
        "[0, 3)",
    )
    _expect(
        ValueError,
        InvalidTokenError,
        lambda: model.conditional_logits(np.array([0, 3, 3]), observed),
        "x",
        "mask token 3",
    )


@pytest.mark.parametrize(
    "model",
    [_uniform_chain(), TabularJoint(np.full((3, 3, 3), 1 / 27))],
    ids=lambda model: type(model).__name__,
)
def test_mask_token_at_unobserved_positions_is_accepted_but_nothing_above_it(model):
    observed = np.array([True, False, True])
    masked = np.asarray(model.conditional_logits(np.array([2, 3, 1]), observed))
    clean = np.asarray(model.conditional_logits(np.array([2, 0, 1]), observed))
    np.testing.assert_array_equal(masked, clean)
    assert float(model.marginal_log_prob(np.array([2, 3, 1]), observed)) == float(
        model.marginal_log_prob(np.array([2, 0, 1]), observed)
    )
    _expect(
        ValueError,
        InvalidTokenError,
        lambda: model.conditional_logits(np.array([2, 4, 1]), observed),
        "x",
        "4",
        "unobserved",
        "[0, 3]",
    )


def test_observed_mask_that_is_not_bool():
    model = _uniform_chain()
    _expect(
        (ValueError, TypeError),
        ArprobError,
        lambda: model.conditional_logits(np.zeros(3, np.int32), np.ones(3, np.int64)),
        "observed",
        "int64",
        "bool",
    )


# ------------------------------------------------------------------------ orders


@pytest.mark.parametrize("sampler", ["ancestral", "ancestral_law"])
def test_order_that_is_not_a_permutation(sampler):
    model = _uniform_chain()
    order = np.array([0, 0, 2])
    call = (
        (lambda: ancestral(jax.random.key(0), model, 2, order))
        if sampler == "ancestral"
        else (lambda: ancestral_law(model, order))
    )
    _expect(ValueError, InvalidOrderError, call, "order", "[0, 0, 2]", "permutation of range(3)")


def test_order_of_the_wrong_length():
    _expect(
        ValueError,
        InvalidOrderError,
        lambda: ancestral(jax.random.key(0), _uniform_chain(), 2, np.array([1, 0])),
        "order",
        "(2,)",
        "(..., 3)",
    )


def test_order_of_floats():
    _expect(
        ValueError,
        InvalidOrderError,
        lambda: ancestral_law(_uniform_chain(), np.array([0.0, 1.0, 2.0])),
        "order",
        "float64",
        "integers",
    )


@pytest.mark.parametrize("sampler", ["ancestral", "ancestral_law"])
def test_unknown_order_string(sampler):
    model = _uniform_chain()
    call = (
        (lambda: ancestral(jax.random.key(0), model, 2, "reverse"))
        if sampler == "ancestral"
        else (lambda: ancestral_law(model, "reverse"))
    )
    _expect(ValueError, InvalidOrderError, call, "order='reverse'", "'random'", "permutation")


# ------------------------------------------------------------------- enumeration


def test_law_too_large_to_enumerate():
    model = MarkovChain(np.full(10, 0.1), np.full((10, 10), 0.1), 10)
    _expect(ValueError, EnumerationTooLargeError, model.law, "10,000,000,000", "max_entries=67,108,864")


def test_ancestral_law_too_large_to_enumerate():
    model = MarkovChain(np.full(10, 0.1), np.full((10, 10), 0.1), 10)
    _expect(
        ValueError,
        EnumerationTooLargeError,
        lambda: ancestral_law(model),
        "ancestral_law",
        "100,000,000,000",
        "max_entries=67,108,864",
    )


# ------------------------------------------------------------------- constructors


@pytest.mark.parametrize("given", ["both", "neither"])
def test_tabular_joint_needs_exactly_one_of_probs_and_logits(given):
    table = np.full((2, 2), 0.25)
    kwargs = {"probs": table, "logits": np.log(table)} if given == "both" else {}
    _expect(TypeError, ArprobError, lambda: TabularJoint(**kwargs), "probs", "logits", given)


@pytest.mark.parametrize("length", [0, -2])
def test_length_below_one(length):
    _expect(ValueError, ArprobError, lambda: _uniform_chain(length=length), "length", ">= 1", str(length))


def test_length_that_is_not_an_int():
    _expect(TypeError, ArprobError, lambda: _uniform_chain(length=2.5), "length", "int", "2.5")


def test_zero_samples():
    _expect(
        ValueError,
        ArprobError,
        lambda: ancestral(jax.random.key(0), _uniform_chain(), 0),
        "num_samples",
        ">= 1",
        "0",
    )


@pytest.mark.parametrize("scale", [-1.0, float("nan")])
def test_perturbed_with_an_invalid_scale(scale):
    _expect(
        ValueError,
        ArprobError,
        lambda: perturbed(_uniform_chain(), jax.random.key(0), scale),
        "scale",
        ">= 0",
        str(scale),
    )


# --------------------------------------------------------------- not a family


@pytest.mark.parametrize(
    ("call", "given"),
    [
        (lambda: ancestral(jax.random.key(0), object(), 2), "object"),
        (lambda: ancestral_law(lambda x, observed: x), "function"),
        (lambda: perturbed(3, jax.random.key(0), 1.0), "int"),
        (lambda: exact(object()), "object"),
    ],
    ids=["ancestral", "ancestral_law", "perturbed", "exact"],
)
def test_object_that_is_not_a_conditional_family(call, given):
    _expect(TypeError, ArprobTypeError, call, given, "expected")


def test_exact_of_a_batched_model():
    batched = MarkovChain(np.full((2, 3), 1 / 3), np.full((3, 3), 1 / 3), 2)
    _expect(TypeError, ArprobTypeError, lambda: exact(batched), "batch_shape", "(2,)", "()")
