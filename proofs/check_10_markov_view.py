r"""Machine check of theorem 10 (``proofs/10-markov-view.md``).

(a) exact rationals (``fractions.Fraction`` and sympy ``Rational``, ``==``): for every (T, K) in
    {(2,1), (2,2), (2,3), (3,1), (3,2)}, random rational next-token tables (full support, and with
    zeros), the chain over all states built by loops; rows, sparsity, the product formula for Q^K,
    transience of short states via the exact nullspace, epsilon <= T^-K, and the TV chain of
    inequalities of part 4 for n <= 4K.
(b) sympy: the tau -> infinity limit of the softmax; Q^K = U for the uniform chain.
(c) float64 through the library (1e-12): MarkovView's stationary law against (a), greedy decoding's
    closed classes, zekri_bound.
Negative controls: the bound without the 1/K in its exponent fails on some chain; a greedy (periodic)
chain does not converge; a zero in the table breaks positivity of Q^K.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest
import sympy

from arprob.markov import MarkovView

SIZES = [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]
LAW_TOLERANCE = 1e-12


def rational_model(vocab_size, context_size, seed, zeros=False, weights_range=(1, 4)):
    """A next-token law for every context of 0..K tokens, with small rational entries."""
    rng = random.Random(seed)
    model = {}
    for length in range(context_size + 1):
        for context in itertools.product(range(vocab_size), repeat=length):
            weights = [rng.randint(*weights_range) for _ in range(vocab_size)]
            if zeros and length == context_size and rng.random() < 0.4:
                weights[rng.randrange(vocab_size)] = 0
            total = sum(weights)
            model[context] = [Fraction(w, total) for w in weights]
    return model


def states_of(vocab_size, context_size):
    return [s for k in range(1, context_size + 1) for s in itertools.product(range(vocab_size), repeat=k)]


def chain_matrix(model, vocab_size, context_size):
    """Q over all states by the definition: Q(s, s + v) = p(v | s), s + v keeping the last K tokens."""
    states = states_of(vocab_size, context_size)
    index = {s: i for i, s in enumerate(states)}
    matrix = [[Fraction(0)] * len(states) for _ in states]
    for s in states:
        for v in range(vocab_size):
            matrix[index[s]][index[(s + (v,))[-context_size:]]] += model[s][v]
    return states, matrix


def matmul(a, b):
    return [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]


def power(matrix, n):
    result = [[Fraction(int(i == j)) for j in range(len(matrix))] for i in range(len(matrix))]
    for _ in range(n):
        result = matmul(result, matrix)
    return result


def window_block(states, matrix, context_size):
    full = [i for i, s in enumerate(states) if len(s) == context_size]
    return [states[i] for i in full], [[matrix[i][j] for j in full] for i in full]


def exact_stationary(matrix):
    """All stationary laws: the nullspace of (Q - I)^T, in exact rationals."""
    size = len(matrix)
    system = sympy.Matrix(size, size, lambda i, j: sympy.Rational(matrix[j][i].numerator, matrix[j][i].denominator)
                          - (1 if i == j else 0))
    return system.nullspace()


@pytest.mark.parametrize("vocab_size,context_size", SIZES)
@pytest.mark.parametrize("zeros", [False, True])
def test_parts_1_2_3_exactly(vocab_size, context_size, zeros):
    for seed in range(3):
        model = rational_model(vocab_size, context_size, seed, zeros)
        states, matrix = chain_matrix(model, vocab_size, context_size)
        assert len(states) == vocab_size * (vocab_size**context_size - 1) // (vocab_size - 1)
        for row in matrix:
            assert sum(row) == 1 and sum(1 for x in row if x) <= vocab_size  # part 1
        windows, block = window_block(states, matrix, context_size)
        q_k = power(block, context_size)
        for i, w in enumerate(windows):  # part 3: the product formula, term by term
            for j, w2 in enumerate(windows):
                product = Fraction(1)
                for step in range(context_size):
                    context = (w + w2[:step])[step:step + context_size]
                    product *= model[context][w2[step]]
                assert q_k[i][j] == product
        epsilon = min(min(row) for row in q_k)
        assert epsilon <= Fraction(1, vocab_size**context_size)
        if not zeros:
            assert epsilon > 0
        # part 2: every stationary law puts exactly zero on short states
        for vector in exact_stationary(matrix):
            for i, s in enumerate(states):
                if len(s) < context_size:
                    assert vector[i] == 0
        if zeros and any(0 in model[w] for w in windows):
            assert epsilon == 0  # negative control: a zero in the table breaks positivity of Q^K


@pytest.mark.parametrize("vocab_size,context_size", SIZES)
def test_part_4_bound_chain_exactly_and_the_negative_control(vocab_size, context_size):
    violated_without_k = False
    for seed in range(4):
        # seeds 0, 1: weights in 1..4; seeds 2, 3: nearly uniform (N epsilon close to 1), where a bound
        # that forgets the 1/K in the exponent must fail after one step
        model = rational_model(vocab_size, context_size, 100 + seed,
                               weights_range=(1, 4) if seed < 2 else (10, 12))
        states, matrix = chain_matrix(model, vocab_size, context_size)
        windows, block = window_block(states, matrix, context_size)
        (vector,) = exact_stationary(block)
        pi = [Fraction(int(sympy.fraction(x)[0]), int(sympy.fraction(x)[1])) for x in vector / sum(vector)]
        n_windows = len(windows)
        epsilon = min(min(row) for row in power(block, context_size))
        current = [[Fraction(int(i == j)) for j in range(n_windows)] for i in range(n_windows)]
        for n in range(4 * context_size + 1):
            for row in current:
                entry = max(abs(a - b) for a, b in zip(row, pi))
                tv = sum(abs(a - b) for a, b in zip(row, pi)) / 2
                m = n // context_size
                doeblin = (1 - n_windows * epsilon) ** m
                assert entry <= tv <= doeblin
                if m >= 1:
                    assert doeblin <= (1 - 2 * epsilon) ** (m - 1)  # Zekri et al., Prop. 3.4
                violated_without_k |= entry > (1 - n_windows * epsilon) ** n
            current = matmul(current, block)
    if context_size > 1:
        assert violated_without_k  # the exponent needs the 1/K: the check can fail


def test_part_6_temperature_limit_symbolically():
    tau = sympy.symbols("tau", positive=True)
    logits = [sympy.Rational(3, 2), sympy.Rational(-1, 3), 2]
    total = sum(sympy.exp(x / tau) for x in logits)
    for x in logits:
        assert sympy.limit(sympy.exp(x / tau) / total, tau, sympy.oo) == sympy.Rational(1, 3)
    for vocab_size, context_size in SIZES:
        uniform = {c: [Fraction(1, vocab_size)] * vocab_size for k in range(context_size + 1)
                   for c in itertools.product(range(vocab_size), repeat=k)}
        states, matrix = chain_matrix(uniform, vocab_size, context_size)
        _, block = window_block(states, matrix, context_size)
        q_k = power(block, context_size)
        assert all(x == Fraction(1, vocab_size**context_size) for row in q_k for x in row)


@pytest.mark.parametrize("vocab_size,context_size", SIZES)
def test_library_stationary_law_against_the_exact_one(vocab_size, context_size):
    model = rational_model(vocab_size, context_size, 7)
    states, matrix = chain_matrix(model, vocab_size, context_size)
    windows, block = window_block(states, matrix, context_size)
    (vector,) = exact_stationary(block)
    exact = np.array([float(x) for x in vector / sum(vector)])

    def logits(batch):
        rows = []
        for window in np.asarray(batch):
            context = tuple(int(t) for t in window if t < vocab_size)
            rows.append(np.log([float(p) for p in model[context]]))
        return np.array(rows)

    chain = MarkovView.from_logits(logits, vocab_size, context_size)
    np.testing.assert_allclose(chain.stationary().law, exact, atol=LAW_TOLERANCE)
    np.testing.assert_allclose(chain.transition().toarray(), np.array(matrix, dtype=float), atol=LAW_TOLERANCE)
    for steps in range(0, 4 * context_size + 1, max(context_size, 1)):
        report = chain.zekri_bound(steps)
        assert report.exact <= report.bound + LAW_TOLERANCE


def test_part_5_greedy_classes_are_cycles_and_do_not_converge():
    for vocab_size, context_size in SIZES:
        for seed in range(3):
            model = rational_model(vocab_size, context_size, 200 + seed)

            def logits(batch, model=model, vocab_size=vocab_size):
                return np.array([[float(p) for p in model[tuple(int(t) for t in w if t < vocab_size)]]
                                 for w in np.asarray(batch)])

            chain = MarkovView.from_logits(logits, vocab_size, context_size, temperature=0.0)
            successor = {}
            for index in range(chain.num_windows):
                w = chain.window(index)
                row = logits(np.array([w]))[0]
                successor[w] = (w + (int(np.argmax(row)),))[-context_size:]
            cycles = set()
            for start in successor:
                seen, w = [], start
                while w not in seen:
                    seen.append(w)
                    w = successor[w]
                cycles.add(frozenset(seen[seen.index(w):]))
            structure = chain.structure()
            ours = {frozenset(chain.window(int(s)) for s in c.states) for c in structure.recurrent}
            assert ours == cycles
            for chain_class in structure.recurrent:
                assert chain_class.period == len(chain_class.states)
            for law_class in chain.stationary().classes:
                np.testing.assert_allclose(law_class.law, 1 / len(law_class.states), atol=LAW_TOLERANCE)
            if any(len(c) > 1 for c in cycles):  # negative control: a periodic class never converges
                assert chain.mixing_time().steps is None
