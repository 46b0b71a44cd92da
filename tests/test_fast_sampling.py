"""Fast sampling paths with exactly known laws (issue 11, section 1).

* the table sampler of :mod:`arprob._random`: its quantized law against the table (exact, float64)
  and its samples against that law;
* ``sample`` of every exact token model against ``law()``; zero-probability entries never drawn;
* ``ancestral`` left to right on chain models and HMMs: the O(L) path, its law, no any-subset query;
* :func:`arprob.conditionals.tabulate`: an exact memo of exact, perturbed and neural families;
* jit / vmap determinism; size refusals before any allocation.

Statistical assertions use :func:`arprob.verify.gof` at fixed seeds with the threshold
``p > ALPHA`` (``ALPHA = 1e-6``): each such assertion has false-alarm probability 1e-6 for an
exact sampler (about 2e-5 over the file's < 20 statistical assertions).  With ``N = 200_000``
samples, ``detectable(N, cells, alpha=1e-6)`` gives the TV each test detects with power 0.99:
about 0.014 on 81 cells, 0.017 on 243, 0.006 on 6 (the docstrings give each case's number).
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arprob._validation as validation
from arprob import HMM, MarkovChain, NGram, TabularJoint
from arprob._random import (
    choose_bits,
    quantization_bound,
    quantize,
    sampling_table,
    table_categorical,
)
from arprob.conditionals import (
    TABULATE_MAX_ENTRIES,
    ExactConditionals,
    TabulatedConditionals,
    as_conditionals,
    exact,
    masked_index,
    perturbed,
    tabulate,
)
from arprob.errors import ArprobError, EnumerationTooLargeError
from arprob.samplers import ancestral, ancestral_law
from arprob.verify import detectable, gof

ALPHA = 1e-6
N = 200_000


def _models():
    """The suite's four targets (small, one compilation each)."""
    return {
        "tabular": TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5),
        "markov": MarkovChain.random(jax.random.key(2), 5, 3),
        "ngram": NGram.random(jax.random.key(3), 6, 2, 2),
        "hmm": HMM.random(jax.random.key(4), 4, 3, 3),
    }


# --------------------------------------------------------------------------- quantization (exact)

_TABLES = [
    np.array([0.1, 0.0, 0.5, 0.4, 0.0, 0.0]),  # inner and trailing zeros
    np.array([0.0, 0.0, 1.0, 0.0]),  # a point mass after leading zeros
    np.array([1e-30, 1e-12, 1 - 1e-12 - 1e-30, 0.0]),  # entries below the 31- and 63-bit quanta
    np.random.default_rng(0).dirichlet(np.full(1000, 0.2)),  # a long row (binary search + guide)
    np.array([[0.3, 0.3, 0.4], [0.0, 0.0, 0.0], [2.0, 0.0, 6.0]]),  # rows: empty -> uniform, unnormalized
]


@pytest.mark.parametrize("bits", [31, 63])
@pytest.mark.parametrize("index", range(len(_TABLES)))
def test_quantized_law_is_exact_and_within_its_bound(index, bits):
    """Counts sum to 2**B exactly (Python ints), zeros stay zero, entries >= 2**-B stay positive, and the
    TV to the (float64-normalized) table is at most ``quantization_bound`` (Fractions: exact arithmetic)."""
    probs = np.atleast_2d(_TABLES[index])
    counts = np.atleast_2d(quantize(probs, bits))
    bound = quantization_bound(probs, bits)
    for row, count in zip(probs, counts):
        exact_counts = [int(c) for c in count]
        assert sum(exact_counts) == 2**bits
        total = row.sum()
        normalized = row / total if total > 0 else np.full(row.shape, 1 / row.size)
        assert all(c == 0 for c, p in zip(exact_counts, normalized) if p == 0)
        assert all(c >= 1 for c, p in zip(exact_counts, normalized) if p >= 2.0**-bits)
        tv = sum(abs(Fraction(c, 2**bits) - Fraction(float(p))) for c, p in zip(exact_counts, normalized)) / 2
        assert tv <= bound
    assert bound <= (1e-9 if bits == 63 else 1e-5)


def test_bits_are_chosen_for_the_tolerance():
    small = np.array([0.25, 0.75])
    assert choose_bits(small, draws=1) == 31  # (2 + 1) / 2 * 2**-31 < 1e-9
    assert choose_bits(small, draws=8) == 63
    assert choose_bits(_TABLES[3]) == 63
    assert sampling_table(_TABLES[3]).bits == 63 and sampling_table(_TABLES[3]).words == 2


@pytest.mark.parametrize("bits", [31, 63])
def test_table_sampler_matches_its_quantized_law(bits):
    """1000 cells (guided binary search) and 6 cells (comparison with every threshold), pooled cells.

    detectable(200_000, 1000, alpha=1e-6) = 0.05 and detectable(200_000, 6, alpha=1e-6) = 0.006 TV."""
    for index, probs in ((3, _TABLES[3]), (0, _TABLES[0])):
        table = sampling_table(probs, bits=bits)
        draws = np.asarray(table_categorical(jax.random.key(10 + index), table, (N,)))
        law = quantize(probs, bits).astype(np.float64) / 2.0**bits
        assert draws.dtype == np.int32 and draws.shape == (N,)
        assert np.all(law[draws] > 0)
        result = gof(draws[:, None], law, vocab_size=probs.size)
        assert result.p_value > ALPHA, (index, bits, result)


def test_traced_table_keeps_zeros_and_the_law():
    """A table traced under jit is quantized at 31 bits from float sums: zeros still never drawn."""
    probs = jnp.asarray(_TABLES[0])
    draws = np.asarray(jax.jit(lambda p, k: table_categorical(k, sampling_table(p), (N,)))(probs, jax.random.key(5)))
    assert set(np.unique(draws)) <= {0, 2, 3}
    assert gof(draws[:, None], _TABLES[0], vocab_size=6).p_value > ALPHA


@given(st.lists(st.sampled_from([0.0, 0.0, 1e-300, 1e-12, 0.1, 1.0, 3.0]), min_size=6, max_size=6)
       .filter(lambda weights: sum(weights) > 0), st.sampled_from([31, 63]), st.booleans())
def test_zero_probability_entries_are_never_drawn(weights, bits, traced):
    """Also trailing zeros, and entries beside huge ones (fixed shape: one compilation per case)."""
    probs = np.asarray(weights)
    if traced:
        draws = _traced_draws(jnp.asarray(probs), jax.random.key(sum(weights).hex().__hash__() % 1000))
    else:
        draws = table_categorical(jax.random.key(7), sampling_table(probs, bits=bits), (4096,))
    assert np.all(probs[np.asarray(draws)] > 0)


_traced_draws = jax.jit(lambda p, k: table_categorical(k, sampling_table(p), (4096,)))


def test_models_never_draw_zero_probability_transitions():
    transition = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
    model = MarkovChain(np.array([0.0, 1.0, 0.0]), transition, 5)
    tokens = model.sample(jax.random.key(0), (20_000,))
    assert np.all(np.isfinite(np.asarray(model.log_prob(tokens))))
    emission = np.array([[1.0, 0.0, 0.0], [0.0, 0.3, 0.7]])
    hmm = HMM(np.array([0.5, 0.5]), np.array([[0.0, 1.0], [1.0, 0.0]]), emission, 4)
    tokens = hmm.sample(jax.random.key(1), (20_000,))
    assert np.all(np.isfinite(np.asarray(hmm.log_prob(tokens))))


# --------------------------------------------------------------------------- models against their laws


@pytest.mark.parametrize("name", ["tabular", "markov", "ngram", "hmm"])
def test_model_samples_follow_the_law(name):
    """Full joint, 81/243/64/27 cells: detects TV 0.014 / 0.017 / 0.013 / 0.011 at power 0.99 (alpha 1e-6).

    The sampler's exact law is the quantized one, within 1e-9 TV of ``law()`` (undetectable here)."""
    model = _models()[name]
    tokens = np.asarray(model.sample(jax.random.key(20), (N,)))
    assert tokens.shape == (N, model.length) and tokens.dtype == np.int32
    law = model.law()
    assert np.all(law[(tokens * model.vocab_size ** np.arange(model.length - 1, -1, -1)).sum(1)] > 0)
    assert detectable(N, law.size, alpha=ALPHA) < 0.02
    assert gof(tokens, law).p_value > ALPHA


def test_batched_chain_samples_follow_each_law():
    """batch_shape (2,): sample_shape + batch_shape + (L,), each column its own law (27 cells each)."""
    initial = np.array([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    transition = np.array([[0.1, 0.1, 0.8], [0.5, 0.0, 0.5], [0.3, 0.3, 0.4]])
    model = MarkovChain(initial, transition, 3)
    tokens = np.asarray(model.sample(jax.random.key(21), (N,)))
    assert tokens.shape == (N, 2, 3)
    law = model.law()
    for b in range(2):
        assert gof(tokens[:, b], law[b]).p_value > ALPHA


def test_sample_shape_and_determinism_under_jit_and_vmap():
    model = _models()["markov"]
    key = jax.random.key(22)
    eager = np.asarray(model.sample(key, (3, 4)))
    assert eager.shape == (3, 4, 5) and np.asarray(model.sample(key)).shape == (5,)
    jitted = jax.jit(model.sample, static_argnums=1)
    np.testing.assert_array_equal(np.asarray(jitted(key, (3, 4))), eager)
    keys = jax.random.split(key, 3)
    vmapped = np.asarray(jax.vmap(lambda k: model.sample(k, (4,)))(keys))
    for k in range(3):
        np.testing.assert_array_equal(vmapped[k], np.asarray(model.sample(keys[k], (4,))))
    # the model as a traced argument: 31-bit tables from float sums, same shapes, deterministic
    as_argument = jax.jit(lambda m, k: m.sample(k, (6,)))
    first = np.asarray(as_argument(model, key))
    assert first.shape == (6, 5) and first.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(as_argument(model, key)), first)


# --------------------------------------------------------------------------- ancestral fast path


@pytest.mark.parametrize("name", ["markov", "hmm"])
def test_left_to_right_ancestral_law_is_ancestral_law(name):
    """Samples of the O(L) path against ``ancestral_law`` (243 / 81 cells: TV 0.017 / 0.014 detectable)."""
    model = _models()[name]
    tokens, stats = ancestral(jax.random.key(30), exact(model), N)
    np.testing.assert_array_equal(np.asarray(stats.nfe), model.length)
    assert gof(np.asarray(tokens), ancestral_law(model)).p_value > ALPHA


def test_left_to_right_ancestral_does_not_query_the_oracle(monkeypatch):
    """Too long to tabulate, so the any-subset path would call conditional_logits: the fast path does not."""
    model = MarkovChain.random(jax.random.key(31), 20, 3)
    calls = []
    original = MarkovChain.conditional_logits

    def counting(self, x, observed):
        calls.append(1)
        return original(self, x, observed)

    monkeypatch.setattr(MarkovChain, "conditional_logits", counting)
    tokens, stats = ancestral(jax.random.key(32), model, 64)
    assert tokens.shape == (64, 20) and not calls
    tokens, _ = ancestral(jax.random.key(32), model, 64, order=np.arange(20))
    assert not calls
    ancestral(jax.random.key(32), model, 4, order=np.arange(20)[::-1].copy())  # control: the any-subset path
    assert calls


# --------------------------------------------------------------------------- tabulated families


def _all_masked_inputs(vocab_size, length):
    digits = np.arange((vocab_size + 1) ** length)
    powers = (vocab_size + 1) ** np.arange(length - 1, -1, -1)
    tokens = ((digits[:, None] // powers) % (vocab_size + 1)).astype(np.int32)
    return tokens, tokens < vocab_size


def _tiny_neural():
    from arprob.neural import neural

    return neural(jax.random.key(40), _models()["tabular"], num_train=256, hidden_size=8, num_layers=1,
                  num_steps=5, batch_size=32)


@pytest.mark.parametrize("kind", ["exact", "perturbed", "neural"])
def test_tabulate_reproduces_the_family_on_every_input(kind):
    base = _models()["tabular"]
    family = {"exact": lambda: exact(base), "perturbed": lambda: perturbed(exact(base), jax.random.key(41), 0.3),
              "neural": _tiny_neural}[kind]()
    table = tabulate(family)
    assert isinstance(table, ExactConditionals if kind == "exact" else TabulatedConditionals)
    tokens, observed = _all_masked_inputs(3, 4)
    # bit for bit the family's answers under jit (eager op-by-op evaluation may differ in the last bit)
    answers = jax.jit(lambda f, x, o: f(x, o))(family, tokens, observed)
    np.testing.assert_array_equal(np.asarray(table(tokens, observed)), np.asarray(answers))
    np.testing.assert_allclose(np.asarray(table(tokens, observed)), np.asarray(family(tokens, observed)),
                               rtol=1e-14, atol=1e-14)
    # unobserved positions may hold anything in [0, V]; index = base-(V+1) digits of where(observed, x, V)
    scrambled = np.where(observed, tokens, (tokens + 1) % 4)
    np.testing.assert_array_equal(np.asarray(table(scrambled, observed)), np.asarray(table(tokens, observed)))
    np.testing.assert_array_equal(np.asarray(masked_index(tokens, observed, 3, 4)), np.arange(256))
    # batched, and under jit as a pytree argument
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda f, x, o: f(x, o))(table, tokens[:7], observed[:7])),
                                  np.asarray(table(tokens[:7], observed[:7])))


def test_as_conditionals_tabulates_small_concrete_families_once():
    model = _models()["ngram"]
    first, second = as_conditionals(model), as_conditionals(model)
    assert isinstance(first, ExactConditionals) and first.table is not None
    assert second.table is first.table  # cached per object
    assert as_conditionals(exact(model)).table is first.table
    long = MarkovChain.random(jax.random.key(42), 12, 3)  # 4**12 * 36 entries > TABULATE_MAX_ENTRIES
    assert 4**12 * 36 > TABULATE_MAX_ENTRIES and as_conditionals(long).table is None
    seen = []

    @jax.jit
    def traced(m):
        seen.append(as_conditionals(m).table is None)
        return m.log_table

    traced(model)
    assert seen == [True]  # traced parameters: not tabulated (no tracer in any cache)


def test_tabulated_samplers_keep_their_laws():
    """ancestral in random order through the table: law unchanged (81 cells, TV 0.014 detectable)."""
    model = _models()["tabular"]
    tokens, _ = ancestral(jax.random.key(43), model, N, order="random")
    assert gof(np.asarray(tokens), ancestral_law(model, "random")).p_value > ALPHA


# --------------------------------------------------------------------------- size refusals


@pytest.mark.parametrize("build", [
    lambda key: NGram.random(key, 200, 50, 5),  # used to abort the process inside XLA
    lambda key: NGram.random(key, 200, 50, 4),  # used to raise a raw out-of-memory error
    lambda key: MarkovChain.random(key, 3, 10**6),
    lambda key: HMM.random(key, 3, 20_000, 20_000),
    lambda key: TabularJoint.random(key, 30, 4),
])
def test_random_refuses_tables_that_cannot_fit(build):
    with pytest.raises(EnumerationTooLargeError) as raised:
        build(jax.random.key(0))
    message = str(raised.value)
    assert "entries" in message and "bytes" in message or "B at" in message
    assert "MAX_TABLE_ENTRIES" in message and ".random" in message
    assert isinstance(raised.value, ArprobError) and isinstance(raised.value, ValueError)


def test_constructors_refuse_from_shapes_without_allocating():
    """Zero-stride views of huge shapes: the check reads the shape, never converts the array."""
    huge = lambda shape: np.broadcast_to(np.float64(0.5), shape)  # noqa: E731
    with pytest.raises(EnumerationTooLargeError, match="TabularJoint: the table would hold 16\\*\\*8"):
        TabularJoint(huge((16,) * 8))
    with pytest.raises(EnumerationTooLargeError, match="MarkovChain"):
        MarkovChain(huge((2**15,)), huge((2**15, 2**15)), 3)
    with pytest.raises(EnumerationTooLargeError, match="51\\*\\*4 x 50"):
        NGram(huge((51,) * 4 + (50,)), 3)
    with pytest.raises(EnumerationTooLargeError, match="HMM"):
        HMM(huge((2**14,)), huge((2**14, 2**14)), huge((2**14, 4)), 3)


def test_limit_is_a_module_constant(monkeypatch):
    monkeypatch.setattr(validation, "MAX_TABLE_ENTRIES", 100)
    with pytest.raises(EnumerationTooLargeError, match="100"):
        MarkovChain.random(jax.random.key(0), 3, 10)
    MarkovChain.random(jax.random.key(0), 3, 9)  # 10 x 9 = 90 entries


def test_law_of_a_very_long_chain_is_refused_at_once():
    """check_enumeration compares logarithms: 3**(10**9) is never formed."""
    model = MarkovChain(np.full(3, 1 / 3), np.full((3, 3), 1 / 3), 10**9)
    with pytest.raises(EnumerationTooLargeError, match="10\\^477121254"):
        model.law()
