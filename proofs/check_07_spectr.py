r"""Machine check of theorem 7 (``proofs/07-spectr.md``).

(a) exact rationals (``fractions.Fraction``, ``==``).  k-SEQ on every pair of
    small rational laws, k = 1..3, several rational rho: the residual's mass,
    the feasibility criterion, rho = k feasible, feasibility monotone in rho;
    for feasible rho the law enumerated over all candidate tuples is p, with
    acceptance 1 - (1 - beta)^k; for infeasible rho the acceptance branch
    alone exceeds p somewhere.  The min-cut value of the optimal coupling.
    Draft trees: the alive drafts' next tokens are i.i.d. given the past;
    SpecTr on rational left-to-right tables, enumerated as it runs, has the
    chain-rule law; rho = 1 with several alive drafts does not.
(b) float64 through the library: ``kseq_rho`` feasible, minimal and in
    agreement with the exact feasibility of rational rho; ``kseq_acceptance``;
    ``optimal_acceptance`` against the min-cut formula and the (1 - 1/e)
    guarantee; ``spectr_law`` against ``model.law()``, ``ancestral_law`` and
    the rational tables; ``spectr_cost`` against ``speculative_cost`` (k = 1)
    and against the rational enumeration (fixed rho = k).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import jax
import numpy as np
import pytest
from check_06_speculative import (
    _markov,
    _ngram,
    _tabular,
    as_array,
    as_family,
    chain_rule,
    random_table,
    simplex_grid,
)

from arprob.conditionals import perturbed
from arprob.samplers import ancestral_law
from arprob.samplers.spectr import _spectr_dp, kseq_acceptance, kseq_rho, optimal_acceptance, spectr_cost, spectr_law
from arprob.samplers.speculative import speculative_cost

LAW_TOLERANCE = 1e-12  # float64 probabilities
LP_TOLERANCE = 1e-7  # scipy HiGHS optimum: its feasibility tolerance lets it exceed the true maximum by ~2e-8
RHOS = [Fraction(1), Fraction(5, 4), Fraction(2), Fraction(5, 2)]  # and rho = k
GRIDS = {2: simplex_grid(2, 4), 3: simplex_grid(3, 3)}


# ---------------------------------------------------------------------------
# (a) exact rationals: one position
# ---------------------------------------------------------------------------


def kseq_terms(p, q, k: int, rho):
    """beta, c = sum_{i<k} (1 - beta)^i and the unnormalized residual w."""
    capped = [min(b, a / rho) for a, b in zip(p, q)]
    beta = sum(capped)
    c = sum((1 - beta) ** i for i in range(k))
    return beta, c, [a - m * c for a, m in zip(p, capped)], capped


def feasible(p, q, k: int, rho) -> bool:
    return min(kseq_terms(p, q, k, rho)[2]) >= 0


def kseq_enumerated(p, q, k: int, rho, clip: bool = False):
    """Run k-SEQ over all candidate tuples: (law, P(accept), P(accept via candidate i, x))."""
    vocab_size = len(p)
    beta, c, w, _ = kseq_terms(p, q, k, rho)
    threshold = [Fraction(0) if b == 0 else min(Fraction(1), a / (rho * b)) for a, b in zip(p, q)]
    law = [Fraction(0)] * vocab_size
    via = [[Fraction(0)] * vocab_size for _ in range(k)]
    none = Fraction(0)
    for candidates in itertools.product(range(vocab_size), repeat=k):
        surviving = math.prod((q[x] for x in candidates), start=Fraction(1))
        for i, x in enumerate(candidates):
            via[i][x] += surviving * threshold[x]
            law[x] += surviving * threshold[x]
            surviving *= 1 - threshold[x]
        none += surviving
    accepted = sum(law)
    if none > 0:
        weights = [max(v, 0) for v in w] if clip else w
        total = sum(weights)
        law = [x + none * v / total for x, v in zip(law, weights)]
    return law, accepted, via


def optimal_rational(p, q, k: int) -> Fraction:
    r"""Part 3: :math:`\min_B [p(B) + 1 - q(B)^k]` over all subsets B."""
    vocab_size = len(p)
    best = None
    for size in range(vocab_size + 1):
        for subset in itertools.combinations(range(vocab_size), size):
            value = sum((p[x] for x in subset), Fraction(0)) + 1 - sum((q[x] for x in subset), Fraction(0)) ** k
            best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("vocab_size", [2, 3])
def test_kseq_is_exact_for_feasible_rho(vocab_size):
    grid = GRIDS[vocab_size]
    infeasible = 0
    for p, q in itertools.product(grid, repeat=2):
        for k in (1, 2, 3):
            optimum = optimal_rational(p, q, k)
            assert optimum <= sum(min(a, 1 - (1 - b) ** k) for a, b in zip(p, q))
            if k == 1:
                assert optimum == 1 - sum(max(a - b, 0) for a, b in zip(p, q))
            assert feasible(p, q, k, Fraction(k))  # rho = k always works
            previous = False
            for rho in sorted(set(RHOS) | {Fraction(k)}):
                beta, c, w, capped = kseq_terms(p, q, k, rho)
                assert sum(w) == (1 - beta) ** k
                ok = min(w) >= 0
                # part 2: the criterion, and feasibility is closed upwards
                assert ok == all(c <= rho or b * c <= a for a, b in zip(p, q) if a > 0)
                assert ok or not previous, (p, q, k, rho)
                previous = ok
                law, accepted, via = kseq_enumerated(p, q, k, rho)
                assert accepted == 1 - (1 - beta) ** k
                for i in range(k):
                    assert via[i] == [(1 - beta) ** i * m for m in capped]
                if ok:
                    assert law == list(p), (p, q, k, rho)
                    assert accepted <= optimum  # k-SEQ is a coupling
                else:
                    infeasible += 1
                    # the acceptance branch alone over-produces some token: no residual can repair it
                    assert any(m * c > a for m, a in zip(capped, p))
                    assert kseq_enumerated(p, q, k, rho, clip=True)[0] != list(p)
            if k == 1:  # k = 1, rho = 1 is theorem 6: residual (p - q)_+
                assert kseq_terms(p, q, 1, Fraction(1))[2] == [max(a - b, 0) for a, b in zip(p, q)]
    assert infeasible > 0  # the negative control happens


def test_small_rho_changes_nothing():
    """A feasible rho < 1 runs the algorithm of rho = 1 (part 2)."""
    p = (Fraction(1, 2), Fraction(1, 2), Fraction(0))
    q = (Fraction(1, 10), Fraction(1, 10), Fraction(4, 5))
    for k in (1, 2, 3):
        assert feasible(p, q, k, Fraction(1, 2))
        assert kseq_enumerated(p, q, k, Fraction(1, 2)) == kseq_enumerated(p, q, k, Fraction(1))
    assert not feasible((Fraction(1, 2), Fraction(1, 2)), (Fraction(1), Fraction(0)), 2, Fraction(1))


# ---------------------------------------------------------------------------
# (a) exact rationals: draft trees
# ---------------------------------------------------------------------------


def test_alive_drafts_are_iid_given_the_past():
    """Part 4 at level 1: given (accepted token z, alive set A), the alive drafts' next tokens are i.i.d. q(.|z)."""
    k, vocab_size = 3, 2
    p0, q0 = (Fraction(2, 3), Fraction(1, 3)), (Fraction(1, 4), Fraction(3, 4))
    q1 = {0: (Fraction(1, 5), Fraction(4, 5)), 1: (Fraction(2, 3), Fraction(1, 3))}  # q(. | first token)
    rho = Fraction(k)
    threshold = [min(Fraction(1), a / (rho * b)) for a, b in zip(p0, q0)]
    joint: dict = {}  # (z, alive, next tokens of all drafts) -> probability
    for first in itertools.product(range(vocab_size), repeat=k):
        for second in itertools.product(range(vocab_size), repeat=k):
            probability = math.prod((q0[x] * q1[x][y] for x, y in zip(first, second)), start=Fraction(1))
            for x in first:
                alive = tuple(a for a in range(k) if first[a] == x)
                key = (x, alive, second)
                joint[key] = joint.get(key, 0) + probability * threshold[x]
                probability *= 1 - threshold[x]
    conditioned: dict = {}
    for (z, alive, _), probability in joint.items():
        conditioned[z, alive] = conditioned.get((z, alive), 0) + probability
    for (z, alive, second), probability in joint.items():
        # every draft's next token has law q(. | its own first token), independently ...
        first_of = {a: (z if a in alive else 1 - z) for a in range(k)}
        assert probability == conditioned[z, alive] * math.prod((q1[first_of[a]][second[a]] for a in range(k)),
                                                                start=Fraction(1))
    # ... so the alive ones are i.i.d. q(. | z); the dead ones are not (negative control)
    marginal_dead = {}
    for (z, alive, second), probability in joint.items():
        for a in range(k):
            if a not in alive:
                marginal_dead[z, second[a]] = marginal_dead.get((z, second[a]), 0) + probability
    assert any(marginal_dead[z, 0] / (marginal_dead[z, 0] + marginal_dead[z, 1]) != q1[z][0] for z in (0, 1))


def spectr_round(target, draft, prefix: tuple, k: int, gamma: int, rho_rule, clip: bool = False):
    """One SpecTr round as it runs: k draft sequences first, then k'-SEQ level by level over the alive drafts."""
    length, vocab_size = len(target), len(target[0][()])
    start = len(prefix)
    span = min(gamma, length - start)
    outcomes: dict = {}

    def emit(block, probability, accepted):
        outcomes[block, accepted] = outcomes.get((block, accepted), 0) + probability

    for flat in itertools.product(range(vocab_size), repeat=k * span):
        drafts = [flat[a * span:(a + 1) * span] for a in range(k)]
        probability = Fraction(1)
        for sequence in drafts:
            for j, token in enumerate(sequence):
                probability *= draft[start + j][prefix + sequence[:j]][token]
        if probability == 0:
            continue

        def verify(j, context, alive, mass, drafts=drafts):
            if j == span:
                if start + span < length:
                    for v, weight in enumerate(target[start + span][context]):
                        emit(context[start:] + (v,), mass * weight, span)
                else:
                    emit(context[start:], mass, span)
                return
            p_row, q_row = target[start + j][context], draft[start + j][context]
            rho = rho_rule(len(alive))
            surviving = mass
            for a in alive:
                x = drafts[a][j]
                accept = min(Fraction(1), p_row[x] / (rho * q_row[x]))
                if surviving * accept:
                    verify(j + 1, context + (x,), [b for b in alive if drafts[b][j] == x], surviving * accept,
                           drafts)
                surviving *= 1 - accept
            if surviving:
                _, _, w, _ = kseq_terms(p_row, q_row, len(alive), rho)
                weights = [max(v, 0) for v in w] if clip else w
                assert min(weights) >= 0, "infeasible rho"
                total = sum(weights)
                for v in range(vocab_size):
                    emit(context[start:] + (v,), surviving * weights[v] / total, j)

        verify(0, prefix, list(range(k)), probability)
    return outcomes


def run_spectr(target, draft, k: int, gamma: int, rho_rule, clip: bool = False):
    """The law and the expected (target calls, draft calls, accepted tokens) of SpecTr, exactly."""
    length, vocab_size = len(target), len(target[0][()])
    law = dict.fromkeys(itertools.product(range(vocab_size), repeat=length), Fraction(0))
    starts = [dict() for _ in range(length)]
    starts[0][()] = Fraction(1)
    calls = draft_calls = accepted = Fraction(0)
    for t in range(length):
        for prefix, weight in starts[t].items():
            calls += weight
            draft_calls += weight * min(gamma, length - t)
            for (block, num_accepted), probability in spectr_round(target, draft, prefix, k, gamma, rho_rule,
                                                                   clip).items():
                accepted += weight * probability * num_accepted
                following = prefix + block
                if len(following) == length:
                    law[following] += weight * probability
                else:
                    starts[len(following)][following] = starts[len(following)].get(following, 0) + weight * probability
    return law, (calls, draft_calls, accepted)


TREE_CASES = [(2, 3, 201, 202, (1, 2, 3), (1, 2, 3)), (3, 2, 203, 204, (2,), (1, 2))]


@pytest.fixture(scope="module")
def tree_laws():
    out = {}
    for vocab_size, length, target_seed, draft_seed, ks, gammas in TREE_CASES:
        target = random_table(target_seed, vocab_size, length)
        draft = random_table(draft_seed, vocab_size, length)
        for k in ks:
            for gamma in gammas:
                out[vocab_size, k, gamma] = (target, draft, run_spectr(target, draft, k, gamma, lambda alive: alive),
                                             run_spectr(target, draft, k, gamma, lambda alive, k=k: Fraction(k)))
    return out


def test_draft_tree_law_is_the_chain_rule_exactly(tree_laws):
    for (vocab_size, k, gamma), (target, _, per_level, fixed) in tree_laws.items():
        joint = chain_rule(target)
        assert 0 in joint.values()
        assert per_level[0] == joint, (vocab_size, k, gamma)
        assert fixed[0] == joint, (vocab_size, k, gamma)
        assert per_level[1][2] >= fixed[1][2]  # a smaller rho accepts at least as much
    # negative control: rho = 1 with several alive drafts is infeasible somewhere, and the law is off
    target, draft, _, _ = tree_laws[2, 2, 2]
    assert run_spectr(target, draft, 2, 2, lambda alive: Fraction(1), clip=True)[0] != chain_rule(target)


# ---------------------------------------------------------------------------
# (b) float64 through the library: one position
# ---------------------------------------------------------------------------


def residual_numpy(p, q, k, rho):
    capped = np.minimum(q, p / np.asarray(rho)[..., None])
    beta = capped.sum(axis=-1)
    c = sum((1 - beta) ** i for i in range(k))
    return p - capped * c[..., None], beta


def optimal_numpy(p, q, k) -> float:
    vocab_size = len(p)
    return min(p[list(s)].sum() + 1 - q[list(s)].sum() ** k
               for size in range(vocab_size + 1) for s in itertools.combinations(range(vocab_size), size))


def _float_pairs():
    pairs = {}
    for vocab_size, grid in GRIDS.items():
        rational = list(itertools.product(grid, repeat=2))
        pairs[vocab_size] = (rational, np.array([[[float(x) for x in p], [float(x) for x in q]] for p, q in rational]))
    return pairs


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kseq_rho_is_feasible_and_minimal(k):
    rng = np.random.default_rng(k)
    for vocab_size, (rational, pairs) in _float_pairs().items():
        random_pairs = rng.dirichlet(np.full(vocab_size, 0.7), size=(200, 2))
        for batch in (pairs, random_pairs):
            p, q = batch[:, 0], batch[:, 1]
            rho = kseq_rho(p, q, k)
            assert np.all((rho >= 1) & (rho <= k))
            w, beta = residual_numpy(p, q, k, rho)
            assert w.min() >= -LAW_TOLERANCE
            inner = rho > 1 + 1e-9
            below, _ = residual_numpy(p[inner], q[inner], k, rho[inner] - 1e-6)
            assert np.all(below.min(axis=-1) < 0)
            np.testing.assert_allclose(kseq_acceptance(p, q, k), 1 - (1 - beta) ** k, rtol=0, atol=LAW_TOLERANCE)
            if k == 1:
                assert np.all(rho == 1)
        # exact feasibility of rational rho on both sides of the library's rho
        rho = kseq_rho(pairs[:, 0], pairs[:, 1], k)
        candidates = [1 + Fraction(i, 16) for i in range(16 * (k - 1) + 1)]
        for (p_r, q_r), value in zip(rational, rho):
            for candidate in candidates:
                if candidate < value - 1e-9:
                    assert not feasible(p_r, q_r, k, candidate), (p_r, q_r, k, candidate, value)
                elif candidate > value + 1e-9:
                    assert feasible(p_r, q_r, k, candidate), (p_r, q_r, k, candidate, value)


def test_optimal_acceptance_and_the_kseq_guarantee():
    rng = np.random.default_rng(5)
    ratios = []
    for vocab_size in (2, 3):
        for k in (1, 2, 3):
            for p, q in rng.dirichlet(np.full(vocab_size, 0.5), size=(25, 2)):
                optimum = optimal_acceptance(p, q, k)
                assert abs(optimum - optimal_numpy(p, q, k)) < LP_TOLERANCE
                accepted = float(kseq_acceptance(p, q, k))
                assert accepted <= optimum + LP_TOLERANCE
                assert accepted >= (1 - 1 / math.e) * optimum
                if k == 1:
                    assert abs(accepted - optimum) < LP_TOLERANCE  # one draft: speculative decoding is optimal
                ratios.append(accepted / optimum)
    assert min(ratios) < 1 - 1e-3  # k-SEQ is not optimal everywhere: the bound is not vacuous


# ---------------------------------------------------------------------------
# (b) float64 through the library: sequences
# ---------------------------------------------------------------------------


# the random models of check_06 (shapes of TabularJoint.random(key, 4, 3, 0.5), MarkovChain.random(key, 5, 3),
# NGram.random(key, 6, 2, 2)), drawn with numpy
MODELS = {"tabular": _tabular, "markov": _markov, "ngram": _ngram}


@pytest.mark.parametrize("name", list(MODELS))
def test_spectr_law_is_the_target_law(name):
    target, draft = MODELS[name](1), MODELS[name](11)
    law = target.law()
    for k in (1, 2, 3):
        for gamma in (1, 2, 3):
            np.testing.assert_allclose(spectr_law(target, draft, k, gamma), law, rtol=0, atol=LAW_TOLERANCE,
                                       err_msg=f"{name}, k {k}, gamma {gamma}")


def test_spectr_law_for_an_inconsistent_target():
    base = MODELS["ngram"](1)  # the perturbed n-gram of check_06: one compilation in a full run
    target = perturbed(base, jax.random.key(8), 1.0)
    left_to_right = ancestral_law(target, None)
    assert 0.5 * np.abs(left_to_right - base.law()).sum() > 1e-3
    for k, gamma in ((2, 2), (3, 1)):
        np.testing.assert_allclose(spectr_law(target, base, k, gamma), left_to_right, rtol=0, atol=LAW_TOLERANCE)


def test_spectr_cost_reduces_to_speculative_decoding():
    target, draft = MODELS["tabular"](1), MODELS["tabular"](11)
    for gamma in (1, 2, 3):
        one = spectr_cost(target, draft, 1, gamma)
        reference = speculative_cost(target, draft, gamma)
        np.testing.assert_allclose([one.target_calls, one.draft_calls, one.accepted],
                                   [reference.target_calls, reference.draft_calls, reference.accepted],
                                   rtol=0, atol=LAW_TOLERANCE)
    more = spectr_cost(target, draft, 3, 2)
    assert more.target_calls < speculative_cost(target, draft, 2).target_calls  # more drafts, fewer target calls


def test_library_matches_the_rational_draft_trees(tree_laws):
    for (_, k, gamma), (target, draft, per_level, fixed) in tree_laws.items():
        target_family, draft_family = as_family(target), as_family(draft)
        np.testing.assert_allclose(spectr_law(target_family, draft_family, k, gamma), as_array(per_level[0]),
                                   rtol=0, atol=LAW_TOLERANCE)
        # with the same rho (k at every level) the exact expected counts agree too
        _, cost = _spectr_dp(target_family, draft_family, k, gamma, float(k), 2**26, "check")
        np.testing.assert_allclose([cost.target_calls, cost.draft_calls, cost.accepted],
                                   [float(x) for x in fixed[1]], rtol=0, atol=LAW_TOLERANCE)
