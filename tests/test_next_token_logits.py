"""``next_token_logits`` and the masked-padding reading of ``prefix_conditional_logits``.

Oracle: the model's own law (``law()``, an independent numpy float64 computation for chain
models and the HMM) summed over completions by enumeration,

    p(v | prefix) = sum_{y: y_{<n} = prefix, y_n = v} p(y) / sum_{y: y_{<n} = prefix} p(y),

held to 1e-10.  Then: the fast kernels (table row, HMM filter, table sum) against the generic
base kernel, jit against eager, and the bad inputs.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from error_checks import raises

import arprob
from arprob.anyorder import AnyOrderAR
from arprob.conditionals import perturbed
from arprob.distributions.base import SequenceDistribution
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError

EXACT = 1e-10
LENGTH, VOCAB = 4, 3


def _models():
    keys = jax.random.split(jax.random.PRNGKey(17), 4)
    return {
        "TabularJoint": arprob.TabularJoint.random(keys[0], LENGTH, VOCAB),
        "MarkovChain": arprob.MarkovChain.random(keys[1], LENGTH, VOCAB),
        "NGram": arprob.NGram.random(keys[2], LENGTH, VOCAB, context_size=2),
        "HMM": arprob.HMM.random(keys[3], LENGTH, 3, VOCAB),
    }


MODELS = _models()


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]


def _oracle(model, prefix):
    """``log p(x_n = . | x_{<n} = prefix)`` by enumeration of the law (numpy float64)."""
    law = np.asarray(model.law(), np.float64).reshape((model.vocab_size,) * model.length)
    block = law[tuple(prefix)]  # (V,)*(L - n)
    mass = block.reshape(model.vocab_size, -1).sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.log(mass / mass.sum())


def _conditional_oracle(model, x, known, t):
    """``log p(x_t = . | x_j, j < t, known_j)`` by enumeration of the law."""
    law = np.asarray(model.law(), np.float64)
    sequences = np.array(list(itertools.product(range(model.vocab_size), repeat=model.length)))
    match = np.all((sequences[:, :t] == x[:t]) | ~known[:t], axis=1)
    mass = np.bincount(sequences[match, t], weights=law[match], minlength=model.vocab_size)
    return np.log(mass / mass.sum())


def _batch(seed=0, width=LENGTH):
    """Prefixes of every length 0..L-1 (twice), padding filled with garbage, incl. the mask id and out of range."""
    rng = np.random.default_rng(seed)
    lengths = np.array([n for n in range(min(width, LENGTH - 1) + 1) for _ in range(2)])
    prefixes = rng.integers(0, VOCAB, size=(lengths.size, width))
    garbage = rng.choice([0, 1, VOCAB - 1, VOCAB, -1, 99], size=prefixes.shape)
    padding = np.arange(width) >= lengths[:, None]
    return np.where(padding, garbage, prefixes), lengths


def test_exact_against_enumeration(model):
    prefixes, lengths = _batch()
    got = np.asarray(model.next_token_logits(prefixes, lengths))
    assert got.shape == (lengths.size, VOCAB)
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(got[row], _oracle(model, prefixes[row, :n]), atol=EXACT, rtol=0)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(got, axis=-1), 0.0, atol=EXACT)


def test_narrow_prefixes_are_padded_inside(model):
    prefixes, lengths = _batch(seed=1, width=2)
    got = np.asarray(model.next_token_logits(prefixes, lengths))
    wide = np.concatenate([prefixes, np.full((lengths.size, LENGTH - 2), VOCAB)], axis=1)
    np.testing.assert_array_equal(got, np.asarray(model.next_token_logits(wide, lengths)))


def test_fast_kernel_equals_generic_kernel(model):
    prefixes, lengths = _batch(seed=2)
    tokens = jnp.asarray(np.where(np.arange(LENGTH) < lengths[:, None], prefixes, 0), jnp.int32)
    generic = SequenceDistribution._next_token_kernel(model, tokens, jnp.asarray(lengths, jnp.int32))
    np.testing.assert_allclose(model.next_token_logits(prefixes, lengths), generic, atol=EXACT, rtol=0)


def test_jit_equals_eager_and_traced_values_pass(model):
    prefixes, lengths = _batch(seed=3)
    eager = model.next_token_logits(prefixes, lengths)
    jitted = jax.jit(lambda p, n: model.next_token_logits(p, n))(prefixes, lengths)
    # equal up to rounding (XLA folds the closed-over parameters differently: 1 ulp at most here)
    np.testing.assert_allclose(jitted, eager, atol=1e-14, rtol=0)
    # the model itself as a traced argument
    as_argument = jax.jit(lambda m, p, n: m.next_token_logits(p, n))(model, prefixes, lengths)
    np.testing.assert_allclose(as_argument, eager, atol=EXACT, rtol=0)


def test_single_prefix(model):
    prefix = np.array([2, 0])
    expected = _oracle(model, prefix)
    for got in (model.next_token_logits(prefix), model.next_token_logits(prefix, 2),
                model.next_token_logits(np.array([2, 0, VOCAB, -4]), np.int32(2)),
                model.next_token_logits([2, 0])):
        assert got.shape == (VOCAB,)
        np.testing.assert_allclose(got, expected, atol=EXACT, rtol=0)
    np.testing.assert_allclose(model.next_token_logits([]), _oracle(model, []), atol=EXACT, rtol=0)


def test_agrees_with_prefix_conditional_rows(model):
    x = np.array([[1, 2, 0, 1], [0, 0, 2, 2]])
    rows = np.asarray(model.prefix_conditional_logits(x))
    for n in range(LENGTH):
        got = model.next_token_logits(x, np.full(2, n))
        np.testing.assert_allclose(got, rows[:, n], atol=EXACT, rtol=0)


def test_impossible_prefix_is_never_nan():
    """Zero-probability prefixes: the uniform law (library convention), chain models their table row."""
    probs = np.zeros((2, 2, 2))
    probs[0, 0, 0], probs[0, 1, 1], probs[1, 1, 0] = 0.5, 0.25, 0.25  # prefix (1, 0) is impossible
    joint = arprob.TabularJoint(probs=probs)
    np.testing.assert_allclose(joint.next_token_logits([1, 0]), np.log([0.5, 0.5]), atol=EXACT)
    np.testing.assert_allclose(joint.next_token_logits([0, 1]), [-np.inf, 0.0], atol=EXACT)  # -inf kept
    transition = np.array([[0.0, 1.0], [0.3, 0.7]])
    chain = arprob.MarkovChain(np.array([1.0, 0.0]), transition, 3)  # x_0 = 1 is impossible
    np.testing.assert_allclose(chain.next_token_logits([1]), np.log(transition[1]), atol=EXACT)
    np.testing.assert_allclose(chain.next_token_logits([0, 0]), [-np.inf, 0.0], atol=EXACT)
    hmm = arprob.HMM(np.array([1.0, 0.0]), np.eye(2), np.array([[1.0, 0.0], [0.5, 0.5]]), 3)
    np.testing.assert_allclose(hmm.next_token_logits([1]), np.log([0.5, 0.5]), atol=EXACT)
    np.testing.assert_allclose(hmm.next_token_logits([0]), [0.0, -np.inf], atol=EXACT)


@pytest.mark.parametrize("name", ["TabularJoint", "HMM"])
def test_any_order_view(name):
    model = MODELS[name]
    prefixes, lengths = _batch(seed=4)
    exact_view = AnyOrderAR(model)
    np.testing.assert_array_equal(exact_view.next_token_logits(prefixes, lengths),
                                  model.next_token_logits(prefixes, lengths))
    family = perturbed(model, jax.random.PRNGKey(1), 0.5)
    view = AnyOrderAR(family)
    got = view.next_token_logits(prefixes, lengths)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(got, axis=-1), 0.0, atol=EXACT)
    sequence = np.array([1, 0, 2, 1])  # the identity-order log_prob is the sum of the factors
    factors = sum(float(view.next_token_logits(sequence[:t])[sequence[t]]) for t in range(LENGTH))
    np.testing.assert_allclose(factors, float(view.log_prob(sequence, np.arange(LENGTH))), atol=EXACT)
    np.testing.assert_allclose(jax.jit(view.next_token_logits)(prefixes, lengths), got, atol=1e-14, rtol=0)


def test_bad_inputs_name_the_argument():
    model = MODELS["HMM"]
    owner = "HMM.next_token_logits"
    prefixes = np.zeros((2, LENGTH), int)
    raises(InvalidArgumentError, lambda: model.next_token_logits(prefixes, np.array([1, LENGTH])),
           owner, "lengths[1] is 4", "no next token")
    raises(InvalidArgumentError, lambda: model.next_token_logits(prefixes), owner, "complete sequence")
    raises(InvalidArgumentError, lambda: model.next_token_logits(prefixes, np.array([-1, 0])),
           owner, "lengths[0] is -1", "negative")
    raises(InvalidArgumentError, lambda: model.next_token_logits(prefixes[:, :2], np.array([3, 0])),
           owner, "lengths[0] is 3", "prefix width 2")
    raises(ShapeError, lambda: model.next_token_logits(prefixes, np.array([1, 1, 1])),
           owner, "lengths has shape (3,)", "expected lengths of shape (2,)")
    raises(ShapeError, lambda: model.next_token_logits(np.zeros((2, LENGTH + 1), int), np.array([1, 1])),
           owner, "prefixes has shape (2, 5)")
    raises(ShapeError, lambda: model.next_token_logits(np.int32(1)), owner, "prefixes is a scalar")
    raises(InvalidTokenError, lambda: model.next_token_logits(prefixes.astype(float), np.array([1, 1])),
           owner, "prefixes has dtype float64", "integer")
    raises(ArprobTypeError, lambda: model.next_token_logits(prefixes, np.array([1.0, 1.0])),
           owner, "lengths has dtype float64")
    raises(InvalidTokenError, lambda: model.next_token_logits(np.array([[0, 7, 0, 0]]), np.array([2])),
           owner, "prefixes[0, 1] holds token 7 inside its prefix", f"[0, {VOCAB})")
    raises(InvalidTokenError, lambda: model.next_token_logits(np.array([[0, VOCAB, 0, 0]]), np.array([2])),
           owner, f"the mask id {VOCAB}")
    # the same values after the prefix are padding: accepted
    assert model.next_token_logits(np.array([[0, 7, VOCAB, -1]]), np.array([1])).shape == (1, VOCAB)


# -- prefix_conditional_logits with the mask id --------------------------------------------------


def test_prefix_conditional_logits_accepts_mask_padding(model):
    x = np.array([[2, 1, VOCAB, VOCAB], [0, VOCAB, 1, VOCAB], [VOCAB] * LENGTH])
    got = np.asarray(model.prefix_conditional_logits(x))
    generic = np.asarray(SequenceDistribution.prefix_conditional_logits(model, x))
    np.testing.assert_allclose(got, generic, atol=EXACT, rtol=0)
    known = x != VOCAB
    for row in range(x.shape[0]):
        for t in range(LENGTH):
            np.testing.assert_allclose(got[row, t], _conditional_oracle(model, x[row], known[row], t),
                                       atol=EXACT, rtol=0)
    # after a prefix padded with masks, the row at its end is the next-token law
    np.testing.assert_allclose(got[0, 2], model.next_token_logits([2, 1]), atol=EXACT, rtol=0)
    jitted = jax.jit(lambda x: model.prefix_conditional_logits(x))(x)
    np.testing.assert_allclose(jitted, got, atol=EXACT, rtol=0)


def test_prefix_conditional_logits_errors():
    model = MODELS["NGram"]
    raises(InvalidTokenError, lambda: model.prefix_conditional_logits(np.array([0, 1, VOCAB + 1, 0])),
           "NGram.prefix_conditional_logits", "x[2] is 4", f"or the mask id {VOCAB}")
    raises(InvalidTokenError, lambda: model.prefix_conditional_logits(np.array([0, -1, 0, 0])), "x[1] is -1")
    raises(ShapeError, lambda: model.prefix_conditional_logits(np.zeros(LENGTH + 1, int)), "x has shape (5,)")
    # log_prob still refuses the mask id in clean data, pointing at marginal_log_prob
    raises(InvalidTokenError, lambda: model.log_prob(np.array([0, VOCAB, 0, 0])), "marginal_log_prob")
