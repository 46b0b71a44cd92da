"""Deterministic tests of TabularJoint, MarkovChain and NGram against numpy oracles.

Every oracle here is written independently of the library: laws by explicit
enumeration with ``itertools.product`` (``x[0]`` varies slowest), marginals
and conditionals by summing those laws, and long chains by a forward
algorithm with matrix powers over the gaps between observed positions.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.stats

from arprob import Ising, MarkovChain, NGram, TabularJoint
from arprob.errors import EnumerationTooLargeError
from arprob.samplers import ancestral_law

EXACT = 1e-10


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = rng.gamma(concentration, size=shape) + 1e-3  # keep every entry positive
    return draws / draws.sum(axis=-1, keepdims=True)


def _sequences(vocab_size: int, length: int) -> np.ndarray:
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int32)


def _all_masks(length: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=length)), dtype=bool)


# ----------------------------------------------------------------- numpy oracles


def _markov_law(initial, transition, length) -> np.ndarray:
    law = []
    for x in itertools.product(range(len(initial)), repeat=length):
        p = initial[x[0]]
        for a, b in itertools.pairwise(x):
            p *= transition[a, b]
        law.append(p)
    return np.array(law)


def _ngram_law(table, length, context_size) -> np.ndarray:
    vocab_size = table.shape[-1]
    law = []
    for x in itertools.product(range(vocab_size), repeat=length):
        padded = (vocab_size,) * context_size + x
        p = 1.0
        for t in range(length):
            p *= table[padded[t : t + context_size] + (x[t],)]
        law.append(p)
    return np.array(law)


def _log_marginal(law, vocab_size, x, observed) -> float:
    match = np.all(np.where(observed, _sequences(vocab_size, len(x)) == x, True), axis=-1)
    with np.errstate(divide="ignore"):
        return float(np.log(law[match].sum()))


def _conditional_logits(law, vocab_size, x, observed) -> np.ndarray:
    """log p(x_i = v | x_{S \\ i}) from the law; uniform where the context has probability zero."""
    length = len(x)
    rows = []
    for i in range(length):
        with_i = observed.copy()
        with_i[i] = True
        joint = []
        for v in range(vocab_size):
            y = np.array(x)
            y[i] = v
            joint.append(np.exp(_log_marginal(law, vocab_size, y, with_i)))
        joint = np.array(joint)
        total = joint.sum()
        with np.errstate(divide="ignore"):
            rows.append(np.log(joint / total) if total > 0 else np.full(vocab_size, -np.log(vocab_size)))
    return np.array(rows)


def _window_chain(table, context_size):
    """Windows of the last K tokens (BOS = V before the start) and their transition matrix."""
    vocab_size = table.shape[-1]
    symbols = range(vocab_size + 1)
    windows = [
        w
        for w in itertools.product(symbols, repeat=context_size)
        # a BOS id may only appear as a leading run
        if all(not (w[j] == vocab_size and w[j - 1] != vocab_size) for j in range(1, context_size))
    ]
    where = {w: k for k, w in enumerate(windows)}
    matrix = np.zeros((len(windows), len(windows)))
    for w in windows:
        for v in range(vocab_size):
            matrix[where[w], where[w[1:] + (v,)]] += table[w + (v,)]
    last = np.array([w[-1] for w in windows])
    start = np.zeros(len(windows))
    start[where[(vocab_size,) * context_size]] = 1.0
    return start, matrix, last


def _chain_log_marginal(table, context_size, x, observed) -> float:
    r"""log p(x_S) by the forward algorithm, jumping over unobserved stretches with matrix powers.

    The state after emitting :math:`x_t` is the window ending at :math:`x_t`; at an
    observed position the state is restricted to windows that end in :math:`x_t`
    and renormalized (the lost mass is accumulated in the log).
    """
    start, matrix, last = _window_chain(table, context_size)
    belief = start
    log_total = 0.0
    previous = -1
    for t in np.flatnonzero(observed):
        belief = belief @ np.linalg.matrix_power(matrix, int(t) - previous)
        kept = np.where(last == x[t], belief, 0.0)
        mass = kept.sum()
        if mass == 0:
            return -np.inf
        log_total += np.log(mass)
        belief = kept / mass
        previous = int(t)
    return log_total


def _chain_conditional_row(table, context_size, x, observed, i) -> np.ndarray:
    with_i = observed.copy()
    with_i[i] = True
    joint = []
    for v in range(table.shape[-1]):
        y = x.copy()
        y[i] = v
        joint.append(_chain_log_marginal(table, context_size, y, with_i))
    joint = np.array(joint)
    return joint - np.logaddexp.reduce(joint)


def _markov_table(initial, transition) -> np.ndarray:
    """A Markov chain as a context-1 n-gram table (row V = initial law)."""
    return np.concatenate([transition, initial[None, :]], axis=0)


# ------------------------------------------------------------------ small models


def _small_models():
    """(model, law oracle) pairs over a few shapes, the one-token edge case included."""
    cases = []
    for seed, (vocab_size, length) in enumerate([(2, 1), (3, 2), (2, 3)]):
        probs = _dirichlet(seed, vocab_size**length).reshape((vocab_size,) * length)
        cases.append((TabularJoint(probs), probs.reshape(-1)))
        initial = _dirichlet(10 + seed, vocab_size)
        transition = _dirichlet(20 + seed, (vocab_size, vocab_size))
        cases.append((MarkovChain(initial, transition, length), _markov_law(initial, transition, length)))
        for context_size in (1, 2):
            table = _dirichlet(30 + seed, (vocab_size + 1,) * context_size + (vocab_size,))
            cases.append((NGram(table, length), _ngram_law(table, length, context_size)))
    for height, width, coupling, bias, periodic in [(2, 3, 0.4, -0.3, False), (3, 3, -0.5, 0.2, True)]:
        cases.append((Ising(height, width, coupling, bias, periodic=periodic),
                      _ising_law(height, width, coupling, bias, periodic)))
    return cases


def _ising_law(height, width, coupling, bias, periodic):
    """Brute force over all 2**(H W) grids: exp(J sum_bonds s_i s_j + b sum_i s_i) / Z, s = 2x - 1, row-major,
    each nearest-neighbour bond once (axes of size >= 3 when periodic, so no bond is doubled)."""
    spins = 2 * _sequences(2, height * width) - 1
    log_f = bias * spins.sum(axis=1).astype(float)
    for row in range(height):
        for col in range(width):
            site = row * width + col
            if col + 1 < width or periodic:
                log_f += coupling * spins[:, site] * spins[:, row * width + (col + 1) % width]
            if row + 1 < height or periodic:
                log_f += coupling * spins[:, site] * spins[:, ((row + 1) % height) * width + col]
    weights = np.exp(log_f - log_f.max())
    return weights / weights.sum()


SMALL_MODELS = _small_models()
SMALL_IDS = [
    f"{type(m).__name__}-V{m.vocab_size}-L{m.length}-K{getattr(m, 'context_size', 0)}"
    for m, _ in SMALL_MODELS
]


@pytest.mark.parametrize(("model", "oracle"), SMALL_MODELS, ids=SMALL_IDS)
def test_law_and_log_prob_match_the_enumeration(model, oracle):
    np.testing.assert_allclose(model.law(), oracle, rtol=1e-12, atol=0)
    sequences = _sequences(model.vocab_size, model.length)
    np.testing.assert_allclose(np.asarray(model.log_prob(sequences)), np.log(oracle), rtol=0, atol=EXACT)


@pytest.mark.parametrize(("model", "oracle"), SMALL_MODELS, ids=SMALL_IDS)
def test_marginals_and_conditionals_on_every_mask_match_the_enumeration(model, oracle):
    vocab_size, length = model.vocab_size, model.length
    x = (np.arange(length) * 7 + 1) % vocab_size
    masks = _all_masks(length)
    marginals = np.asarray(model.marginal_log_prob(x, masks))
    logits = np.asarray(model.conditional_logits(x, masks))
    assert marginals.shape == (len(masks),)
    assert logits.shape == (len(masks), length, vocab_size)
    for k, observed in enumerate(masks):
        assert abs(marginals[k] - _log_marginal(oracle, vocab_size, x, observed)) < EXACT
        np.testing.assert_allclose(
            logits[k], _conditional_logits(oracle, vocab_size, x, observed), atol=EXACT
        )


def test_ngram_with_context_one_is_the_markov_chain():
    initial, transition = _dirichlet(1, 3), _dirichlet(2, (3, 3))
    chain = MarkovChain(initial, transition, 4)
    ngram = NGram(_markov_table(initial, transition), 4)
    np.testing.assert_allclose(ngram.law(), chain.law(), rtol=1e-12)
    x, observed = np.array([2, 0, 1, 1]), np.array([False, True, False, True])
    np.testing.assert_allclose(
        np.asarray(ngram.conditional_logits(x, observed)),
        np.asarray(chain.conditional_logits(x, observed)),
        atol=EXACT,
    )


# --------------------------------------------------------------- long sequences

LONG = 2000
SPARSE = np.array([3, 4, 250, 251, 900, 1500, 1999])


def _long_query(vocab_size: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab_size, LONG).astype(np.int32)
    observed = np.zeros(LONG, dtype=bool)
    observed[SPARSE] = True
    return x, observed


def test_long_markov_chain_marginal_and_log_prob_match_the_forward_algorithm():
    initial, transition = _dirichlet(3, 3), _dirichlet(4, (3, 3))
    model = MarkovChain(initial, transition, LONG)
    x, observed = _long_query(3, 5)
    expected = _chain_log_marginal(_markov_table(initial, transition), 1, x, observed)
    assert abs(float(model.marginal_log_prob(x, observed)) - expected) < 1e-9
    log_prob = np.log(initial[x[0]]) + np.log(transition[x[:-1], x[1:]]).sum()
    assert abs(float(model.log_prob(x)) - log_prob) < 1e-9


def test_long_markov_chain_conditionals_match_the_forward_algorithm():
    initial, transition = _dirichlet(6, 3), _dirichlet(7, (3, 3))
    model = MarkovChain(initial, transition, LONG)
    x, observed = _long_query(3, 8)
    logits = np.asarray(model.conditional_logits(x, observed))
    assert logits.shape == (LONG, 3)
    table = _markov_table(initial, transition)
    for i in [0, 2, 4, 5, 251, 1000, 1998, 1999]:  # observed and unobserved, at both ends
        np.testing.assert_allclose(logits[i], _chain_conditional_row(table, 1, x, observed, i), atol=1e-9)


def test_long_ngram_marginal_and_conditionals_match_the_forward_algorithm():
    table = _dirichlet(9, (4, 4, 3))
    model = NGram(table, LONG)
    x, observed = _long_query(3, 10)
    expected = _chain_log_marginal(table, 2, x, observed)
    assert abs(float(model.marginal_log_prob(x, observed)) - expected) < 1e-9
    logits = np.asarray(model.conditional_logits(x, observed))
    for i in [0, 1, 3, 5, 250, 252, 1999]:
        np.testing.assert_allclose(logits[i], _chain_conditional_row(table, 2, x, observed, i), atol=1e-9)
    padded = np.concatenate([[3, 3], x])
    log_prob = np.log(table[padded[:-2], padded[1:-1], x]).sum()
    assert abs(float(model.log_prob(x)) - log_prob) < 1e-9


def test_long_chain_runs_under_jit():
    model = MarkovChain(_dirichlet(11, 3), _dirichlet(12, (3, 3)), LONG)
    x, observed = _long_query(3, 13)
    jitted = jax.jit(lambda m, x, o: (m.marginal_log_prob(x, o), m.conditional_logits(x, o)))
    marginal, logits = jitted(model, x, observed)
    assert abs(float(marginal) - float(model.marginal_log_prob(x, observed))) < 1e-9
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(model.conditional_logits(x, observed)), atol=1e-9
    )


# ---------------------------------------------------------------------- batching


def test_markov_chain_broadcasts_a_batch_of_initial_laws_against_one_transition():
    initial = _dirichlet(14, (2, 3))
    transition = _dirichlet(15, (3, 3))
    model = MarkovChain(initial, transition, 3)
    assert model.batch_shape == (2,)
    assert model.event_shape == (3,)
    x, observed = np.array([1, 0, 2]), np.array([True, False, True])
    law = model.law()
    assert law.shape == (2, 27)
    log_probs = np.asarray(model.log_prob(x))
    marginals = np.asarray(model.marginal_log_prob(x, observed))
    logits = np.asarray(model.conditional_logits(x, observed))
    assert log_probs.shape == marginals.shape == (2,)
    assert logits.shape == (2, 3, 3)
    for b in range(2):
        oracle = _markov_law(initial[b], transition, 3)
        np.testing.assert_allclose(law[b], oracle, rtol=1e-12)
        assert abs(log_probs[b] - np.log(oracle[x[0] * 9 + x[1] * 3 + x[2]])) < EXACT
        assert abs(marginals[b] - _log_marginal(oracle, 3, x, observed)) < EXACT
        np.testing.assert_allclose(logits[b], _conditional_logits(oracle, 3, x, observed), atol=EXACT)
    samples = np.asarray(model.sample(jax.random.key(0), (5,)))
    assert samples.shape == (5, 2, 3)
    # a batch of sequences (4, L) against batch_shape (2,) needs an explicit axis: (4, 1, L) -> (4, 2)
    xs = _sequences(3, 3)[:4]
    assert np.asarray(model.log_prob(xs[:, None, :])).shape == (4, 2)


def test_markov_chain_broadcasts_a_batch_of_transitions_against_one_initial_law():
    initial = _dirichlet(16, 2)
    transition = _dirichlet(17, (3, 2, 2))
    model = MarkovChain(initial, transition, 2)
    assert model.batch_shape == (3,)
    law = model.law()
    for b in range(3):
        np.testing.assert_allclose(law[b], _markov_law(initial, transition[b], 2), rtol=1e-12)


# --------------------------------------------------------------- n-gram garbage


_jitted_answers = jax.jit(
    lambda model, x, observed: (
        model.log_prob(x),
        model.marginal_log_prob(x, observed),
        model.conditional_logits(x, observed),
        model.sample(jax.random.key(1), (6,)),
    )
)


def test_ngram_ignores_rows_of_unreachable_contexts():
    vocab_size = 3
    table = _dirichlet(18, (vocab_size + 1, vocab_size + 1, vocab_size))
    clean = NGram(table, 4)
    x, observed = np.array([2, 1, 0, 2]), np.array([True, False, False, True])
    expected = [np.asarray(a) for a in _jitted_answers(clean, x, observed)]
    for garbage in [np.nan, 0.0, -1.0, np.inf]:
        dirty_table = table.copy()
        dirty_table[:vocab_size, vocab_size, :] = garbage  # BOS after a real token never happens
        dirty = NGram(dirty_table, 4)  # accepted: only reachable rows are validated
        np.testing.assert_array_equal(dirty.law(), clean.law())
        assert np.isfinite(dirty.law()).all()
        for actual, wanted in zip(_jitted_answers(dirty, x, observed), expected, strict=True):
            np.testing.assert_array_equal(np.asarray(actual), wanted)
    assert float(dirty.marginal_log_prob(x, observed)) == float(expected[1])  # eager path too


# ------------------------------------------------------------ zero probabilities


def test_markov_chain_zero_probability_context_gives_uniform_conditional_and_minus_inf_marginal():
    transition = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    initial = np.array([0.4, 0.4, 0.2])
    model = MarkovChain(initial, transition, 3)
    x, observed = np.array([0, 1, 2]), np.array([True, True, False])
    assert np.isneginf(float(model.marginal_log_prob(x, observed)))
    assert np.isneginf(float(model.log_prob(x)))
    logits = np.asarray(model.conditional_logits(x, observed))
    assert not np.isnan(logits).any()
    np.testing.assert_allclose(
        logits[2], np.full(3, -np.log(3)), atol=EXACT
    )  # context {x0=0, x1=1} impossible
    oracle = _markov_law(initial, transition, 3)
    np.testing.assert_allclose(logits, _conditional_logits(oracle, 3, x, observed), atol=EXACT)
    np.testing.assert_allclose(np.exp(logits[1]), transition[0], atol=EXACT)  # p(x1 | x0 = 0)


def test_tabular_zero_probability_context_gives_uniform_conditional_and_minus_inf_marginal():
    probs = np.array([[0.0, 0.0], [0.3, 0.7]])  # x0 = 0 never happens
    model = TabularJoint(probs)
    x, observed = np.array([0, 1]), np.array([True, False])
    assert np.isneginf(float(model.marginal_log_prob(x, observed)))
    logits = np.asarray(model.conditional_logits(x, observed))
    np.testing.assert_allclose(logits[1], np.full(2, -np.log(2)), atol=EXACT)
    assert np.isneginf(logits[0, 0]) and abs(logits[0, 1]) < EXACT  # p(x0) = (0, 1)


def test_ngram_zero_probability_context_gives_uniform_conditional():
    table = _dirichlet(19, (3, 2))
    table[2] = [1.0, 0.0]  # the first token is always 0
    model = NGram(table, 2)
    x, observed = np.array([1, 0]), np.array([True, False])
    assert np.isneginf(float(model.marginal_log_prob(x, observed)))
    np.testing.assert_allclose(np.asarray(model.conditional_logits(x, observed))[1], -np.log(2), atol=EXACT)


# ---------------------------------------------------------- enumeration budget


def test_law_of_a_large_chain_is_refused_with_its_size():
    model = MarkovChain(np.full(10, 0.1), np.full((10, 10), 0.1), 10)
    with pytest.raises(EnumerationTooLargeError) as raised:
        model.law()
    message = str(raised.value)
    assert "10,000,000,000" in message
    assert "67,108,864" in message  # the default budget, 2**26
    assert "MarkovChain" in message


def test_law_respects_a_custom_budget():
    model = TabularJoint(np.full((4, 4, 4), 1 / 64))
    with pytest.raises(EnumerationTooLargeError, match="64"):
        model.law(max_entries=63)
    assert model.law(max_entries=64).shape == (64,)


# ---------------------------------------------------------------- sampling


def _chi_square_p_value(samples: np.ndarray, law: np.ndarray, vocab_size: int) -> float:
    index = (samples * vocab_size ** np.arange(samples.shape[-1] - 1, -1, -1)).sum(axis=-1)
    counts = np.bincount(index, minlength=law.size)
    return scipy.stats.chisquare(counts, law * counts.sum()).pvalue


@pytest.mark.parametrize("kind", ["tabular", "markov", "ngram"])
def test_samples_follow_the_law(kind):
    """Chi-square goodness of fit; false-alarm probability 1e-6 (and the seed is fixed)."""
    if kind == "tabular":
        model = TabularJoint(_dirichlet(20, 27).reshape(3, 3, 3))
    elif kind == "markov":
        model = MarkovChain(_dirichlet(21, 3), _dirichlet(22, (3, 3)), 3)
    else:
        model = NGram(_dirichlet(23, (4, 4, 3)), 3)
    samples = np.asarray(model.sample(jax.random.key(24), (50_000,)))
    assert _chi_square_p_value(samples, model.law(), 3) > 1e-6


@pytest.mark.parametrize("kind", ["tabular", "markov", "ngram"])
def test_same_key_same_samples_eager_and_under_jit(kind):
    if kind == "tabular":
        model = TabularJoint(_dirichlet(25, 8).reshape(2, 2, 2))
    elif kind == "markov":
        model = MarkovChain(_dirichlet(26, 2), _dirichlet(27, (2, 2)), 3)
    else:
        model = NGram(_dirichlet(28, (3, 3, 2)), 3)
    key = jax.random.key(29)
    jitted = jax.jit(model.sample, static_argnums=1)
    eager = np.asarray(model.sample(key, (16,)))
    assert eager.shape == (16, 3)
    np.testing.assert_array_equal(np.asarray(jitted(key, (16,))), eager)
    np.testing.assert_array_equal(np.asarray(jitted(key, (16,))), eager)
    assert not np.array_equal(np.asarray(jitted(jax.random.key(30), (16,))), eager)
    # vmap over keys equals one call per key
    keys = jax.random.split(key, 3)
    vmapped = np.asarray(jax.vmap(lambda k: model.sample(k, (2,)))(keys))
    for k in range(3):
        np.testing.assert_array_equal(vmapped[k], np.asarray(jitted(keys[k], (2,))))


def test_ancestral_law_of_a_long_ish_chain_matches_its_law():
    model = NGram(_dirichlet(31, (3, 3, 2)), 5)
    np.testing.assert_allclose(ancestral_law(model, np.array([4, 0, 2, 1, 3])), model.law(), atol=1e-12)


def test_importing_arprob_does_not_import_hypothesis():
    code = "import sys, arprob; assert 'hypothesis' not in sys.modules, 'hypothesis was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
