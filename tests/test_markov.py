"""MarkovView: a finite-context model as a Markov chain on its windows, checked exactly.

Oracles are written independently of the package's index arithmetic: transition matrices built by
looping over token tuples, laws of generated windows by enumerating every sequence of an NGram,
constraint probabilities by enumerating every continuation, mixing times by stepping dense powers one
at a time.  Exact claims at 1e-10 in float64.
"""

import itertools
import math

import jax
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arprob import MarkovChain, NGram, TabularJoint
from arprob.errors import ArprobError, InvalidArgumentError
from arprob.markov import MarkovView, TableModel, contains_pattern, decode_probs, mixing, view
from arprob.precision import tempered

TOL = 1e-10


def _ngram(seed, vocab_size=2, context_size=3, length=6, concentration=1.0):
    return NGram.random(jax.random.key(seed), length, vocab_size, context_size, concentration)


def _next_probs(model, context):
    """p(. | context) read from the NGram table, context padded with BOS on the left."""
    table = np.asarray(model.table)
    padded = (model.vocab_size,) * (model.context_size - len(context)) + tuple(context)
    return table[padded]


def _oracle_matrix(model):
    """The paper's |V_K*| x |V_K*| matrix by loops over state tuples (short states first, by length)."""
    T, K = model.vocab_size, model.context_size
    states = [s for k in range(1, K + 1) for s in itertools.product(range(T), repeat=k)]
    index = {s: i for i, s in enumerate(states)}
    matrix = np.zeros((len(states), len(states)))
    for s in states:
        probs = _next_probs(model, s)
        for v in range(T):
            nxt = (s + (v,))[-K:]
            matrix[index[s], index[nxt]] += probs[v]
    return states, matrix


def _oracle_window_matrix(model):
    states, matrix = _oracle_matrix(model)
    full = [i for i, s in enumerate(states) if len(s) == model.context_size]
    return [states[i] for i in full], matrix[np.ix_(full, full)]


def test_state_space_size_density_and_transition_match_the_loop_oracle():
    model = _ngram(0, vocab_size=3, context_size=2)
    chain = MarkovView(model)
    assert chain.num_states == 3 * (3**2 - 1) // 2 == 12
    assert chain.density == pytest.approx(2 / 8)
    states, oracle = _oracle_matrix(model)
    matrix = chain.transition().toarray()
    np.testing.assert_allclose(matrix, oracle, atol=TOL)
    assert chain.transition().nnz == chain.num_states * chain.vocab_size
    np.testing.assert_allclose(chain.transition("windows").toarray(), _oracle_window_matrix(model)[1], atol=TOL)
    for i, s in enumerate(states):
        assert chain.state_index(s) == i


@pytest.mark.parametrize("seed,vocab_size,context_size", [(1, 2, 3), (2, 3, 2), (3, 2, 5)])
def test_stationary_law_solves_pi_q_equals_pi_on_the_oracle_matrix(seed, vocab_size, context_size):
    model = _ngram(seed, vocab_size, context_size, concentration=0.5)
    chain = MarkovView(model)
    result = chain.stationary()
    _, matrix = _oracle_window_matrix(model)
    assert result.law is not None and len(result.classes) == 1
    np.testing.assert_allclose(result.law @ matrix, result.law, atol=TOL)
    assert abs(result.law.sum() - 1) < TOL and result.law.min() >= 0
    # the oracle's own answer: the left eigenvector of eigenvalue 1
    values, vectors = np.linalg.eig(matrix.T)
    oracle = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    np.testing.assert_allclose(result.law, oracle / oracle.sum(), atol=TOL)
    np.testing.assert_allclose(chain.token_marginal(), result.law.reshape(-1, vocab_size).sum(0), atol=TOL)


def test_power_iteration_path_agrees_with_the_direct_solve(monkeypatch):
    model = _ngram(4, 2, 6, concentration=0.7)
    direct = MarkovView(model).stationary()
    monkeypatch.setattr(view, "DIRECT_SOLVE", 0)
    iterated = MarkovView(model).stationary(tol=1e-14)
    assert iterated.iterations > 0 and direct.iterations == 0
    np.testing.assert_allclose(iterated.law, direct.law, atol=1e-12)
    assert iterated.residual < 1e-12


def _exact_stationary(matrix):
    """Stationary law of a float matrix read as exact rationals: pi (Q - I) = 0 with the last equation
    replaced by sum(pi) = 1, solved in sympy's exact arithmetic."""
    import sympy

    size = len(matrix)
    system = sympy.Matrix(size, size, lambda i, j: 1 if i == size - 1 else
                          sympy.Rational(float(matrix[j][i])) - (1 if i == j else 0))
    right = sympy.Matrix([0] * (size - 1) + [1])
    return np.array([float(x) for x in system.LUsolve(right)])


def test_slowly_mixing_chains_are_solved_to_full_relative_accuracy():
    """A near-deterministic table at low temperature: entries of pi span 90 orders of magnitude; GTH
    elimination keeps every one of them to 1e-9 relative (a plain linear solve only has absolute accuracy)."""
    model = _ngram(21, 2, 3, concentration=0.05)
    chain = MarkovView(model, temperature=0.3)
    exact = _exact_stationary(chain.transition("windows").toarray())
    direct = chain.stationary()
    np.testing.assert_allclose(direct.law, exact, rtol=1e-9, atol=0)


def test_the_iteration_does_not_stop_on_a_chain_that_barely_moves(monkeypatch):
    """Two wells, 000 and 111, left with probabilities 1e-6 and 3e-6: from the uniform start the law
    barely changes per step (a change-only criterion stops at once, wrongly); the rate estimate keeps
    the iteration going, and past its budget the class is solved by elimination."""
    probs = np.full((8, 2), 0.5)
    probs[0] = [1 - 1e-6, 1e-6]
    probs[7] = [3e-6, 1 - 3e-6]
    chain = MarkovView.from_table(probs)
    exact = _exact_stationary(chain.transition("windows").toarray())
    assert exact[0] == pytest.approx(0.75, abs=1e-5) and chain.spectral_gap() < 1e-5
    monkeypatch.setattr(view, "DIRECT_SOLVE", 0)
    monkeypatch.setattr(view, "FALLBACK_ITERATIONS", 64)
    fallback = MarkovView.from_table(probs).stationary()
    assert fallback.iterations == 64
    np.testing.assert_allclose(fallback.law, exact, rtol=1e-9, atol=0)
    monkeypatch.setattr(view, "DENSE_FALLBACK", 0)  # iteration only: it runs until it is within tol
    iterated = MarkovView.from_table(probs).stationary(tol=1e-10, max_iterations=200_000)
    assert iterated.iterations == 200_000  # never stopped early on a small change
    actual = np.abs(iterated.law - exact).sum()
    assert actual > 1e-3 and iterated.error > 0.5 * actual  # and says it is not there yet


@pytest.mark.parametrize("prompt", [(), (1,), (0, 1), (1, 0, 1), (0, 0, 1, 1, 0)])
@pytest.mark.parametrize("steps", [0, 1, 2, 4])
def test_n_step_law_is_the_law_of_the_last_tokens_of_ancestral_generation(prompt, steps):
    """Enumerate every continuation of the prompt under the NGram's own law (its log_prob)."""
    model = _ngram(5, 2, 3)
    K = model.context_size
    total = len(prompt) + steps
    chain = MarkovView(model)
    got = chain.n_step_law(steps, prompt)
    if total == 0:
        return
    length = min(K, total)
    assert got.shape == (2**length,)
    expected = np.zeros(2**length)
    full = NGram(model.table, total)
    for continuation in itertools.product(range(2), repeat=steps):
        sequence = tuple(prompt) + continuation
        # p(continuation | prompt) = p(sequence) / p(prompt) under the model of this length
        probability = float(np.exp(full.log_prob(np.array(sequence))))
        if prompt:
            probability /= float(np.exp(full.marginal_log_prob(
                np.array(sequence), np.arange(total) < len(prompt))))
        state = sequence[-length:]
        expected[int("".join(map(str, state)), 2)] += probability
    np.testing.assert_allclose(got, expected, atol=TOL)


def test_n_step_law_from_a_law_and_many_steps_uses_dense_powers_consistently():
    model = _ngram(6, 2, 2)
    chain = MarkovView(model)
    start = np.full(4, 0.25)
    _, matrix = _oracle_window_matrix(model)
    for steps in (1, 3, 10, 5000):
        np.testing.assert_allclose(chain.n_step_law(steps, start), start @ np.linalg.matrix_power(matrix, steps),
                                   atol=TOL)


def test_tv_curve_is_the_distance_of_the_n_step_law_and_never_increases():
    model = _ngram(7, 2, 3)
    chain = MarkovView(model)
    pi = chain.stationary().law
    counts = np.array([40, 0, 1, 2, 3, 7, 20])
    curve = chain.tv_to_stationary(counts, (1,))
    for count, distance in zip(counts, curve):
        law = chain.n_step_law(int(count), (1,))
        expected = 1.0 if len(law) < chain.num_windows else 0.5 * np.abs(law - pi).sum()
        assert distance == pytest.approx(expected, abs=TOL)
    ordered = curve[np.argsort(counts)]
    assert np.all(np.diff(ordered) <= TOL)


def _oracle_mixing_time(matrix, pi, eps):
    power = np.eye(len(pi))
    for n in range(100_000):
        if np.max(0.5 * np.abs(power - pi).sum(axis=1)) <= eps:
            return n
        power = power @ matrix
    raise AssertionError("no mixing within 1e5 steps")


@pytest.mark.parametrize("seed", [8, 9])
def test_mixing_time_dense_and_stepped_agree_with_one_step_at_a_time(seed):
    model = _ngram(seed, 2, 4, concentration=0.3)
    chain = MarkovView(model)
    pi = chain.stationary().law
    _, matrix = _oracle_window_matrix(model)
    for eps in (0.25, 0.01, 1e-6):
        expected = _oracle_mixing_time(matrix, pi, eps)
        dense = chain.mixing_time(eps)
        stepped = chain.mixing_time(eps, starts=np.arange(chain.num_windows))
        assert dense.steps == stepped.steps == expected
        assert dense.exhaustive and stepped.exhaustive


def test_second_eigenvalue_dense_and_arpack_agree(monkeypatch):
    model = _ngram(10, 2, 5, concentration=0.5)
    dense = MarkovView(model).second_eigenvalue_modulus()
    _, matrix = _oracle_window_matrix(model)
    moduli = np.sort(np.abs(np.linalg.eigvals(matrix)))[::-1]
    assert dense == pytest.approx(moduli[1], abs=1e-10)
    monkeypatch.setattr(mixing, "DENSE_WINDOWS", 4)
    assert MarkovView(model).second_eigenvalue_modulus() == pytest.approx(moduli[1], abs=1e-7)


@pytest.mark.parametrize("seed,vocab_size,context_size", [(11, 2, 2), (12, 2, 3), (13, 3, 2)])
def test_zekri_bound_holds_and_its_epsilon_is_the_smallest_entry_of_q_to_the_k(seed, vocab_size, context_size):
    model = _ngram(seed, vocab_size, context_size, concentration=2.0)
    chain = MarkovView(model)
    _, matrix = _oracle_window_matrix(model)
    q_k = np.linalg.matrix_power(matrix, context_size)
    assert chain.epsilon() == pytest.approx(math.log(q_k.min()), abs=1e-10)
    pi = chain.stationary().law
    for steps in (context_size, 2 * context_size, 5 * context_size + 1, 60):
        report = chain.zekri_bound(steps)
        exact = np.max(np.abs(np.linalg.matrix_power(matrix, steps) - pi))
        assert report.exact == pytest.approx(exact, abs=TOL)
        assert report.exact <= report.bound + TOL  # the proposition holds
        exponent = steps // context_size - 1
        expected_bound = (1 - 2 * q_k.min()) ** exponent if exponent >= 1 else 1.0
        assert report.bound == pytest.approx(expected_bound, rel=1e-10)


def test_temperature_top_k_top_p_against_direct_definitions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 6)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(decode_probs(logits, 0.5), tempered(probs, 0.5), atol=TOL)
    greedy = decode_probs(logits, 0.0)
    assert np.all(greedy.sum(1) == 1) and np.all(greedy[np.arange(50), logits.argmax(1)] == 1)
    for k in (1, 2, 5):
        kept = decode_probs(logits, 1.0, top_k=k)
        for row, out in zip(probs, kept):
            top = np.argsort(-row)[:k]
            expected = np.zeros(6)
            expected[top] = row[top] / row[top].sum()
            np.testing.assert_allclose(out, expected, atol=TOL)
    for p in (0.3, 0.9):
        kept = decode_probs(logits, 1.0, top_p=p)
        for row, out in zip(probs, kept):
            order = np.argsort(-row)
            size = 1 + int(np.searchsorted(np.cumsum(row[order]), p))  # smallest prefix with mass >= p
            expected = np.zeros(6)
            expected[order[:size]] = row[order[:size]] / row[order[:size]].sum()
            np.testing.assert_allclose(out, expected, atol=TOL)


def _parity_logits(gap):
    """T = 2, K = 3: the next token is the parity of the last three; logit ``gap`` on it, 0 on the other."""

    def logits(windows):
        windows = np.asarray(windows)
        real = np.where(windows < 2, windows, 0)
        parity = real.sum(axis=1) % 2
        out = np.zeros((len(windows), 2))
        out[np.arange(len(windows)), parity] = gap
        return out

    return logits


def test_greedy_decoding_makes_absorbing_loops_that_networkx_confirms():
    chain = MarkovView.from_logits(_parity_logits(3.0), vocab_size=2, context_size=3, temperature=0.0)
    structure = chain.structure()
    graph = chain.to_networkx("windows")
    attracting = sorted(sorted(c) for c in nx.attracting_components(graph))
    ours = sorted(sorted(chain.window(int(s)) for s in c.states) for c in structure.recurrent)
    assert attracting == ours
    for chain_class in structure.recurrent:
        sub = graph.subgraph([chain.window(int(s)) for s in chain_class.states])
        periods = {len(cycle) for cycle in nx.simple_cycles(sub)}
        assert chain_class.period == math.gcd(*periods)
    assert not structure.ergodic and structure.absorbing_loops
    stationary = chain.stationary()
    assert stationary.law is None or len(stationary.classes) == 1
    for law_class in stationary.classes:
        full = np.zeros(chain.num_windows)
        full[law_class.states] = law_class.law
        assert np.abs(chain.n_step_law(1, full) - full).sum() < TOL
    assert chain.mixing_time().steps is None
    # parity under greedy decoding: 000 and 111 absorb, 010 <-> 101, and 001 -> 011 -> 110 -> 100 -> 001
    assert sorted((len(c.states), c.period) for c in structure.recurrent) == [(1, 1), (1, 1), (2, 2), (4, 4)]
    with pytest.raises(InvalidArgumentError, match="closed classes"):
        chain.token_marginal()


def test_top_k_creates_several_closed_classes_with_their_own_laws():
    model = _ngram(14, 3, 2, concentration=0.3)
    chain = MarkovView(model, top_k=1)
    structure = chain.structure()
    graph = chain.to_networkx("windows")
    assert len(structure.recurrent) == len(list(nx.attracting_components(graph)))
    assert structure.irreducible == nx.is_strongly_connected(graph)
    full_support = MarkovView(model)
    assert full_support.structure().ergodic and nx.is_aperiodic(full_support.to_networkx("windows"))


def test_contains_pattern_accepts_exactly_the_texts_that_contain_the_pattern():
    """Every text of up to 8 tokens, against Python's own subsequence search (overlaps included)."""
    for pattern in ((1, 0, 1), (0, 0, 1), (1, 1), (2, 0, 2, 0)):
        vocab_size = max(pattern) + 1
        dfa = contains_pattern(pattern, vocab_size)
        needle = "".join(map(str, pattern))
        for length in range(9):
            for text in itertools.product(range(vocab_size), repeat=length):
                state = dfa.start
                for token in text:
                    state = int(dfa.transitions[state, token])
                assert bool(dfa.accepting[state]) == (needle in "".join(map(str, text)))
    with pytest.raises(ArprobError, match="pattern"):
        contains_pattern([], 2)
    with pytest.raises(ArprobError, match="pattern"):
        contains_pattern([0, 3], 2)


@pytest.mark.parametrize("prompt", [(), (1,), (0, 1, 1, 0)])
def test_constraint_probability_against_enumerating_every_continuation(prompt):
    model = _ngram(15, 2, 2)
    chain = MarkovView(model)
    dfa = contains_pattern((1, 0, 1), 2)
    steps = 6
    total = len(prompt) + steps
    full = NGram(model.table, total)
    within, end = 0.0, 0.0
    for continuation in itertools.product(range(2), repeat=steps):
        sequence = np.array(tuple(prompt) + continuation)
        probability = float(np.exp(full.log_prob(sequence)))
        if prompt:
            probability /= float(np.exp(full.marginal_log_prob(sequence, np.arange(total) < len(prompt))))
        state, hit = 0, False
        for token in sequence:
            state = int(dfa.transitions[state, token])
            hit |= bool(dfa.accepting[state])
        within += probability * hit
        end += probability * bool(dfa.accepting[state])
    assert chain.constraint_probability(dfa, steps, prompt) == pytest.approx(within, abs=TOL)
    assert chain.constraint_probability(dfa, steps, prompt, mode="end") == pytest.approx(end, abs=TOL)


def test_constraint_probability_over_many_counts_equals_one_call_per_count(monkeypatch):
    from arprob.markov import propagation

    model = _ngram(22, 2, 3)
    dfa = contains_pattern((0, 1, 1), 2)
    counts = np.array([7, 0, 1, 2, 40, 3, 13, 2])
    for dense in (True, False):
        with monkeypatch.context() as patch:
            if not dense:
                patch.setattr(propagation, "DENSE_PRODUCT", 0)
            for mode in ("within", "end"):
                for prompt in ((), (1,), (0, 1, 1, 0)):
                    chain = MarkovView(model)
                    many = chain.constraint_probability(dfa, counts, prompt, mode=mode)
                    one = [chain.constraint_probability(dfa, int(c), prompt, mode=mode) for c in counts]
                    np.testing.assert_allclose(many, one, atol=TOL)
                    if mode == "within":
                        ordered = many[np.argsort(counts, kind="stable")]
                        assert np.all(np.diff(ordered) >= -TOL)  # satisfied within n only grows with n


def test_constraint_probability_dense_squaring_equals_stepping(monkeypatch):
    from arprob.markov import propagation

    model = _ngram(19, 2, 2)
    dfa = contains_pattern((1, 1, 0), 2)
    for mode in ("within", "end"):
        dense = MarkovView(model).constraint_probability(dfa, 40, (0,), mode=mode)
        with monkeypatch.context() as patch:
            patch.setattr(propagation, "DENSE_PRODUCT", 0)
            stepped = MarkovView(model).constraint_probability(dfa, 40, (0,), mode=mode)
        assert dense == pytest.approx(stepped, abs=TOL)
    assert 0.99 < MarkovView(model).constraint_probability(dfa, 10**15, (0,)) <= 1 + TOL  # found eventually


def test_huge_step_counts_keep_laws_normalised():
    chain = MarkovView(_ngram(20, 2, 2))
    law = chain.n_step_law(10**18, (0, 1))
    assert abs(law.sum() - 1) < 1e-12
    np.testing.assert_allclose(law, chain.stationary().law, atol=1e-12)
    assert chain.zekri_bound(10**15).exact < 1e-12


def test_markov_chain_and_table_model_and_callables_give_the_same_chain():
    base = MarkovChain.random(jax.random.key(16), 4, 3)
    first = MarkovView(base)
    table = np.asarray(base.transition_probs)
    second = MarkovView.from_table(table)
    np.testing.assert_allclose(first.stationary().law, second.stationary().law, atol=TOL)
    third = MarkovView.from_logits(lambda w: np.log(table[np.asarray(w)[:, 0]]), vocab_size=3, context_size=1)
    np.testing.assert_allclose(third.stationary().law, second.stationary().law, atol=TOL)
    jax_fn = MarkovView.from_logits(lambda w: jax.numpy.log(jax.numpy.asarray(table)[w[:, 0]]), 3, 1)
    np.testing.assert_allclose(jax_fn.stationary().law, second.stationary().law, atol=TOL)
    with pytest.raises(InvalidArgumentError, match="shorter than K"):
        second.n_step_law(2, ())


def test_check_agrees_with_the_n_step_law_on_a_larger_chain():
    """Statistical layer: ancestral NGram draws' last K tokens against n_step_law as a TabularJoint.

    False-alarm probability alpha = 1e-4 (fixed seed); resolution: laws further than the planned
    deviation 0.02 TV are rejected with power 0.99.
    """
    from arprob.verify import check

    model = _ngram(17, 3, 4, length=9)
    chain = MarkovView(model)
    law = chain.n_step_law(9, ())
    target = TabularJoint(law.reshape((3,) * 4))

    def sampler(key, num_samples):
        return model.sample(key, (num_samples,))[:, -4:]

    report = check(sampler, target, deviation=0.02, alpha=1e-4, seed=3)
    assert report.passed, report


def test_bad_input_is_refused_at_the_boundary():
    model = _ngram(18)
    with pytest.raises(ArprobError, match="temperature"):
        MarkovView(model, temperature=-1)
    with pytest.raises(ArprobError, match="top_p"):
        MarkovView(model, top_p=0.0)
    with pytest.raises(ArprobError, match="top_k"):
        MarkovView(model, top_k=0)
    chain = MarkovView(model)
    with pytest.raises(ArprobError, match="start"):
        chain.n_step_law(3, (0, 5))
    with pytest.raises(ArprobError, match="string"):
        chain.n_step_law(3, "ab")
    with pytest.raises(ArprobError, match="steps"):
        chain.n_step_law(-1)
    with pytest.raises(ArprobError, match="eps"):
        chain.mixing_time(1.5)
    with pytest.raises(ArprobError, match="vocab_size and context_size"):
        MarkovView(lambda w: w)
    with pytest.raises(ArprobError, match="model must be"):
        MarkovView(3)
    with pytest.raises(ArprobError, match="rows"):
        TableModel(np.full((7, 2), 0.5))


@given(seed=st.integers(0, 2**31 - 1), vocab_size=st.integers(2, 3), context_size=st.integers(1, 3),
       temperature=st.sampled_from([0.0, 0.3, 1.0, 3.0]), top_k=st.sampled_from([None, 1, 2]),
       concentration=st.sampled_from([0.2, 1.0]))
@settings(deadline=None)
def test_property_every_closed_class_law_is_stationary_and_laws_stay_laws(seed, vocab_size, context_size,
                                                                            temperature, top_k, concentration):
    """Any model, any decoding rule: each closed class carries a stationary law of the oracle matrix, the
    classes partition the recurrent windows as networkx's attracting components do, n-step laws are laws."""
    model = _ngram(seed, vocab_size, context_size, concentration=concentration)
    chain = MarkovView(model, temperature=temperature, top_k=top_k)
    windows, _ = _oracle_window_matrix(model)
    matrix = chain.transition("windows").toarray()
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=TOL)
    graph = chain.to_networkx("windows")
    structure = chain.structure()
    assert sorted(sorted(c) for c in nx.attracting_components(graph)) == sorted(
        sorted(chain.window(int(s)) for s in c.states) for c in structure.recurrent)
    for law_class in chain.stationary().classes:
        full = np.zeros(chain.num_windows)
        full[law_class.states] = law_class.law
        np.testing.assert_allclose(full @ matrix, full, atol=TOL)
        assert abs(full.sum() - 1) < TOL
    law = chain.n_step_law(2 * context_size + 1, ())
    assert abs(law.sum() - 1) < TOL and law.min() >= -TOL
