"""Tests of the trained any-subset network (arprob/neural.py).

One small network is trained once for the module (float64, conftest turns on
x64) on a random TabularJoint with V=3, L=4 (81 sequences), so every law is
exact.  Statistical assertions use fixed seeds and state their false-alarm
probability.
"""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

import arprob
from arprob._enumerate import sequence_index
from arprob.conditionals import NeuralConditionals, exact, neural, split_static
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError
from arprob.neural import _random_masks, _weighted_nll, any_order_loss, train_neural
from arprob.samplers.ancestral import ancestral, ancestral_law
from arprob.verify import tv
from arprob.verify.gof import gof

LENGTH, VOCAB = 4, 3
HIDDEN = 64
NUM_STEPS = 1000


@pytest.fixture(scope="module")
def model():
    return arprob.TabularJoint.random(jax.random.key(0), LENGTH, VOCAB, concentration=0.5)


@pytest.fixture(scope="module")
def trained(model):
    family, losses = train_neural(jax.random.key(1), model, hidden_size=HIDDEN, num_steps=NUM_STEPS)
    return family, losses


@pytest.fixture(scope="module")
def untrained():
    return NeuralConditionals.random(jax.random.key(1), LENGTH, VOCAB, hidden_size=HIDDEN)


def _random_inputs(key, batch=64):
    # one batch size throughout, so each function compiles once for the module
    key_x, key_observed = jax.random.split(key)
    x = jax.random.randint(key_x, (batch, LENGTH), 0, VOCAB)
    observed = jax.random.bernoulli(key_observed, 0.5, (batch, LENGTH))
    return np.asarray(x), np.asarray(observed)


# -- the protocol ---------------------------------------------------------------------
def test_row_i_ignores_x_i_and_observed_i_exactly(trained):
    family, _ = trained
    x, observed = _random_inputs(jax.random.key(2))
    reference = np.asarray(family(x, observed))
    for i in range(LENGTH):
        other_x = x.copy()
        other_x[:, i] = (other_x[:, i] + 1) % VOCAB
        other_observed = observed.copy()
        other_observed[:, i] = ~other_observed[:, i]
        for new_x, new_observed in [(other_x, observed), (x, other_observed), (other_x, other_observed)]:
            changed = np.asarray(family(new_x, new_observed))
            np.testing.assert_array_equal(changed[:, i], reference[:, i])
        # negative control: flipping observed[i] changes the context of every other row
        changed = np.asarray(family(x, other_observed))
        others = [j for j in range(LENGTH) if j != i]
        assert np.abs(changed[:, others] - reference[:, others]).max() > 1e-3


def test_unobserved_values_are_ignored_and_rows_normalized(trained):
    family, _ = trained
    x, observed = _random_inputs(jax.random.key(3))
    with_masks = np.where(observed, x, VOCAB)
    scrambled = np.where(observed, x, (x + 1) % VOCAB)
    reference = np.asarray(family(with_masks, observed))
    np.testing.assert_array_equal(np.asarray(family(scrambled, observed)), reference)
    np.testing.assert_allclose(np.asarray(jax.scipy.special.logsumexp(reference, axis=-1)), 0.0, atol=1e-12)
    assert reference.shape == (64, LENGTH, VOCAB) and reference.dtype == np.float64


def test_batch_dimensions_broadcast(trained):
    family, _ = trained
    x, observed = _random_inputs(jax.random.key(4))
    one_mask = observed[0]
    broadcast = np.asarray(family(x, one_mask))
    assert broadcast.shape == (64, LENGTH, VOCAB)
    explicit = np.asarray(family(x, np.broadcast_to(one_mask, x.shape)))
    np.testing.assert_allclose(broadcast, explicit, rtol=0, atol=1e-12)


def test_protocol_rows_equal_the_training_pass(trained):
    """Rows at masked positions of family(x, ~M) are what training fits (one pass on x_{not M})."""
    family, _ = trained
    x, _ = _random_inputs(jax.random.key(5))
    masked = np.asarray(_random_masks(jax.random.key(6), 64, LENGTH))
    protocol = np.asarray(family(x, ~masked))
    single_pass = np.asarray(jax.jit(lambda f, tokens: f._all_rows(tokens))(family, np.where(masked, VOCAB, x)))
    np.testing.assert_allclose(protocol[masked], single_pass[masked], rtol=0, atol=1e-12)
    # ... and only there: at observed positions the single pass has seen x_i
    assert np.abs(protocol[~masked] - single_pass[~masked]).max() > 1e-3
    np.testing.assert_allclose(np.asarray(any_order_loss(family, x, masked)),
                               np.asarray(jax.jit(_weighted_nll)(single_pass, x, masked)),
                               rtol=1e-12)


# -- the objective ----------------------------------------------------------------------
def test_expected_loss_is_the_any_order_nll(trained):
    r"""E over (k, M) of any_order_loss = mean over the L! orders of -log q_sigma(x) (theorem 2)."""
    family, _ = trained
    subsets = [np.array([i in subset for i in range(LENGTH)])
               for size in range(1, LENGTH + 1) for subset in itertools.combinations(range(LENGTH), size)]
    masks = np.stack(subsets)  # (15, L)
    probability = np.array([1 / (LENGTH * math.comb(LENGTH, m.sum())) for m in masks])
    assert abs(probability.sum() - 1) < 1e-12
    sequences = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [1, 0, 0, 2]])
    losses = np.asarray(any_order_loss(family, sequences[:, None, :], masks[None]))  # (3, 15)
    expected = losses @ probability
    index = np.asarray(sequence_index(sequences, VOCAB))
    orders = list(itertools.permutations(range(LENGTH)))
    nll_by_order = np.array([-np.log(ancestral_law(family, list(order))[index]) for order in orders])
    np.testing.assert_allclose(expected, nll_by_order.mean(axis=0), rtol=1e-10)
    # negative control: uniform weights over the 15 subsets do not give the NLL
    assert np.abs(losses.mean(axis=1) - nll_by_order.mean(axis=0)).max() > 1e-3
    # the bound of theorem 2: at least -log of the order mixture (random-order law)
    mixture = ancestral_law(family, "random")[index]
    assert np.all(expected >= -np.log(mixture) - 1e-12)


def test_masked_sets_have_the_any_order_law():
    """Chi-square goodness of fit of 60,000 masks: P(M) = 1 / (L C(L, |M|)).

    False-alarm probability 1e-3 (fixed seed, so the outcome is deterministic).
    """
    num = 60_000
    masks = np.asarray(_random_masks(jax.random.key(7), num, LENGTH))
    codes = (masks * (2 ** np.arange(LENGTH))).sum(axis=1)
    counts = np.bincount(codes, minlength=2**LENGTH)
    assert counts[0] == 0
    sizes = np.array([bin(code).count("1") for code in range(1, 2**LENGTH)])
    probs = 1 / (LENGTH * np.array([math.comb(LENGTH, s) for s in sizes]))
    assert stats.chisquare(counts[1:], num * probs).pvalue > 1e-3
    # negative control: subsets uniform over the 15 nonempty sets are rejected
    uniform = np.full(2**LENGTH - 1, num / (2**LENGTH - 1))
    assert stats.chisquare(counts[1:], uniform).pvalue < 1e-3


def test_training_reduces_loss_and_fits_the_model(trained, untrained, model):
    family, losses = trained
    assert losses.shape == (NUM_STEPS,) and np.all(np.isfinite(losses))
    initial, final = losses[:20].mean(), losses[-100:].mean()
    assert final < initial - 0.3, (initial, final)
    target = model.law()
    tv_trained = tv(target, ancestral_law(family, "random"))
    tv_untrained = tv(target, ancestral_law(untrained, "random"))
    print(f"loss {initial:.3f} -> {final:.3f}; TV to the model: trained {tv_trained:.4f}, "
          f"untrained {tv_untrained:.4f}")
    assert tv_trained < 0.1
    assert tv_untrained > 0.3
    assert tv_trained < tv_untrained / 4


def test_learned_family_is_inconsistent_exact_is_not(trained, model):
    family, _ = trained
    reverse = list(range(LENGTH))[::-1]
    learned_gap = tv(ancestral_law(family), ancestral_law(family, reverse))
    exact_gap = tv(ancestral_law(exact(model)), ancestral_law(exact(model), reverse))
    print(f"TV(left-to-right, right-to-left): learned {learned_gap:.3g}, exact {exact_gap:.3g}")
    assert learned_gap > 1e-6
    assert exact_gap < 1e-12


# -- samplers -----------------------------------------------------------------------
def test_random_order_ancestral_sampling_draws_its_law(trained):
    """Goodness of fit of 10,000 random-order samples to ancestral_law; false-alarm probability 1e-3."""
    family, _ = trained
    law = ancestral_law(family, "random")
    assert abs(law.sum() - 1) < 1e-12
    tokens, info = ancestral(jax.random.key(8), family, 10_000, order="random")
    tokens = np.asarray(tokens)
    assert tokens.shape == (10_000, LENGTH) and tokens.min() >= 0 and tokens.max() < VOCAB
    assert np.all(np.asarray(info.nfe) == LENGTH)
    assert gof(tokens, law, vocab_size=VOCAB).p_value > 1e-3


# -- jit and determinism -------------------------------------------------------------------
def test_same_key_same_network(model, trained):
    """Training again with the fixture's key and settings gives the same network, exactly.

    This run passes ``data=``: the very samples ``neural`` drew from the model
    (it draws them with the first of three subkeys), so the two entry points
    must agree too.  Same shapes and settings as the fixture: no recompilation.
    """
    family, losses = trained
    key_data = jax.random.split(jax.random.key(1), 3)[0]
    data = np.array(model.sample(key_data, (20_000,)))
    again, again_losses = train_neural(jax.random.key(1), data=data, vocab_size=VOCAB, hidden_size=HIDDEN,
                                       num_steps=NUM_STEPS)
    for a, b in zip(jax.tree_util.tree_leaves(family), jax.tree_util.tree_leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(losses, again_losses)
    # negative control: other data (one sequence changed) gives another network
    data[0] = (data[0] + 1) % VOCAB
    other = neural(jax.random.key(1), data=data, vocab_size=VOCAB, hidden_size=HIDDEN, num_steps=NUM_STEPS)
    assert not np.array_equal(np.asarray(other.layers[0].weight), np.asarray(family.layers[0].weight))


def test_family_is_a_dynamic_jit_argument(trained):
    family, _ = trained
    assert split_static(family) == (family, None)
    traces = []

    @jax.jit
    def evaluate(conditionals, x, observed):
        traces.append(1)
        return conditionals(x, observed)

    x, observed = _random_inputs(jax.random.key(12))
    jitted = evaluate(family, x, observed)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(family(x, observed)), rtol=0, atol=1e-12)
    same_shapes = NeuralConditionals.random(jax.random.key(13), LENGTH, VOCAB, hidden_size=HIDDEN)
    evaluate(same_shapes, x, observed)
    assert len(traces) == 1
    # negative control: other shapes do retrace
    evaluate(NeuralConditionals.random(jax.random.key(13), LENGTH, VOCAB, hidden_size=HIDDEN // 2), x, observed)
    assert len(traces) == 2


def test_family_is_immutable(trained):
    family, _ = trained
    with pytest.raises(AttributeError, match="immutable"):
        family.length = 3
    assert (family.vocab_size, family.length, family.hidden_size, family.num_layers) == (VOCAB, LENGTH, HIDDEN, 2)


# -- errors -----------------------------------------------------------------------------
def _data():
    return np.zeros((10, LENGTH), np.int32)


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        (dict(data=np.array([[0, 1, 3, 0]]), vocab_size=3), InvalidTokenError, "data"),
        (dict(data=np.array([[0, -1, 2, 0]]), vocab_size=3), InvalidTokenError, "data"),
        (dict(data=np.zeros(4, np.int32), vocab_size=3), ShapeError, "data"),
        (dict(data=np.zeros((2, 2, 4), np.int32), vocab_size=3), ShapeError, "data"),
        (dict(data=np.zeros((2, 4)), vocab_size=3), InvalidTokenError, "data"),
        (dict(data=_data()), ArprobTypeError, "vocab_size"),
        (dict(), ArprobTypeError, "model"),
        (dict(data=_data(), vocab_size=3, num_steps=0), InvalidArgumentError, "num_steps"),
        (dict(data=_data(), vocab_size=3, num_steps=-5), InvalidArgumentError, "num_steps"),
        (dict(data=_data(), vocab_size=3, num_steps=2.5), ArprobTypeError, "num_steps"),
        (dict(data=_data(), vocab_size=3, batch_size=0), InvalidArgumentError, "batch_size"),
        (dict(data=_data(), vocab_size=3, learning_rate=-1.0), InvalidArgumentError, "learning_rate"),
        (dict(data=_data(), vocab_size=3, learning_rate=float("nan")), InvalidArgumentError, "learning_rate"),
    ],
)
def test_bad_arguments_raise_named_errors(arguments, error, named):
    with pytest.raises(error, match=named):
        neural(jax.random.key(0), **arguments)


def test_model_and_data_together_or_bad_model(model):
    with pytest.raises(ArprobTypeError, match="model=.*data=.*both"):
        neural(jax.random.key(0), model, data=_data())
    with pytest.raises(ArprobTypeError, match="neither"):
        neural(jax.random.key(0))
    with pytest.raises(ArprobTypeError, match="model"):
        neural(jax.random.key(0), exact(model))
    with pytest.raises(InvalidArgumentError, match="vocab_size"):
        neural(jax.random.key(0), model, vocab_size=VOCAB + 1)


def test_bad_calls_and_layers_raise(trained):
    family, _ = trained
    with pytest.raises(ShapeError, match="x"):
        family(np.zeros((2, LENGTH + 1), np.int32), np.ones((2, LENGTH + 1), bool))
    with pytest.raises(ShapeError, match="observed"):
        family(np.zeros((2, LENGTH), np.int32), np.ones((2, LENGTH), np.int32))
    with pytest.raises(InvalidTokenError, match="x"):
        family(np.full((2, LENGTH), VOCAB), np.ones((2, LENGTH), bool))
    with pytest.raises(ShapeError, match="layers"):
        NeuralConditionals(family.layers[1:], VOCAB, LENGTH)
    with pytest.raises(InvalidArgumentError, match="masked"):
        any_order_loss(family, np.zeros((1, LENGTH), np.int32), np.zeros((1, LENGTH), bool))
