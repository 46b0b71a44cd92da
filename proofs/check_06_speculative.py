r"""Machine check of theorem 6 (``proofs/06-speculative-decoding.md``).

(a) exact rationals (``fractions.Fraction``, ``==``).  One token: every pair of
    laws on V = 2, 3 with denominators <= 4; the rejection mass is TV, the
    output law is p, the acceptance is sum min(p, q) = 1 - TV.  Sequences:
    random rational left-to-right tables with zeros; each round enumerated as
    the algorithm runs it (all drafts first, then verification), rounds
    chained over all prefixes; the law is the chain-rule joint, and the
    expected calls / drafted / accepted equal the prefix DP of part 4 and, for
    independent coordinates, the scalar renewal recursion.  Negative controls:
    resampling from p instead of the residual, and the ratio q/p.
(b) sympy: the geometric sum, its closed form for symbolic gamma, its limit.
(c) float64 through the library (1e-12): ``speculative_law`` and
    ``speculative_cost`` against (a) on the same tables, ``speculative_law``
    against ``model.law()`` / ``ancestral_law(target, None)`` for exact and
    perturbed targets, ``speculative_cost`` against the scalar recursion,
    ``expected_tokens_per_call`` against the closed form.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from jax.tree_util import register_pytree_node_class

import arprob
from arprob.conditionals import perturbed
from arprob.samplers import ancestral_law
from arprob.samplers.speculative import expected_tokens_per_call, speculative_cost, speculative_law
from arprob.verify import tv

LAW_TOLERANCE = 1e-12  # float64 probabilities and expected counts of size <= L


# ---------------------------------------------------------------------------
# (a) exact rationals: one token
# ---------------------------------------------------------------------------


def simplex_grid(vocab_size: int, max_denominator: int) -> list[tuple[Fraction, ...]]:
    """Every law on ``vocab_size`` points whose entries share a denominator <= ``max_denominator``."""
    points = set()
    for denominator in range(1, max_denominator + 1):
        for numerators in itertools.product(range(denominator + 1), repeat=vocab_size - 1):
            if sum(numerators) <= denominator:
                last = denominator - sum(numerators)
                points.add(tuple(Fraction(n, denominator) for n in (*numerators, last)))
    return sorted(points)


def total_variation(p, q) -> Fraction:
    return sum(max(a - b, 0) for a, b in zip(p, q))


def acceptance_probs(p, q, ratio: str = "p/q"):
    """min(1, p/q) where q > 0 (the mutant: min(1, q/p)); 0 where the token is never drafted."""
    out = []
    for a, b in zip(p, q):
        if b == 0:
            out.append(Fraction(0))
        elif ratio == "p/q":
            out.append(min(Fraction(1), a / b))
        else:
            out.append(Fraction(1) if a == 0 else min(Fraction(1), b / a))
    return out


def one_token(p, q, ratio: str = "p/q", residual: str = "residual"):
    """The one-token step, enumerated: returns (law, P(accept), P(reject))."""
    accept = acceptance_probs(p, q, ratio)
    accepted = [b * a for b, a in zip(q, accept)]
    reject_mass = sum(b * (1 - a) for b, a in zip(q, accept))
    law = list(accepted)
    if reject_mass > 0:
        if residual == "residual":
            weights = [max(a - b, 0) for a, b in zip(p, q)]
        else:  # mutant: redraw from the target itself
            weights = list(p)
        total = sum(weights)
        law = [x + reject_mass * w / total for x, w in zip(law, weights)]
    return law, sum(accepted), reject_mass


@pytest.mark.parametrize(("vocab_size", "count"), [(2, 7), (3, 22)])
def test_one_token_is_exact_on_the_grid(vocab_size, count):
    grid = simplex_grid(vocab_size, 4)
    assert len(grid) == count
    mutant_residual = mutant_ratio = 0
    for p, q in itertools.product(grid, repeat=2):
        law, accepted, rejected = one_token(p, q)
        distance = total_variation(p, q)
        assert rejected == distance == total_variation(q, p)
        assert law == list(p), (p, q)
        assert accepted == sum(min(a, b) for a, b in zip(p, q)) == 1 - distance
        # P(accept, output v) = min(p(v), q(v)): the factor m of part 4
        assert [b * a for b, a in zip(q, acceptance_probs(p, q))] == [min(a, b) for a, b in zip(p, q)]
        mutant_residual += one_token(p, q, residual="target")[0] != list(p)
        mutant_ratio += one_token(p, q, ratio="q/p")[0] != list(p)
    # negative controls: each mistake changes the law for most pairs
    assert mutant_residual > len(grid) ** 2 // 2
    assert mutant_ratio > len(grid) ** 2 // 2


def test_one_token_degenerate_cases():
    """p = q (TV = 0: the residual is never used) and disjoint supports (every draft rejected)."""
    p = (Fraction(1, 2), Fraction(1, 2), Fraction(0))
    assert one_token(p, p) == (list(p), 1, 0)
    q = (Fraction(0), Fraction(0), Fraction(1))
    assert one_token(p, q) == (list(p), 0, 1)


# ---------------------------------------------------------------------------
# (a) exact rationals: whole sequences
# ---------------------------------------------------------------------------


def random_row(rng: random.Random, vocab_size: int, zero_prob: float = 0.3) -> tuple[Fraction, ...]:
    while True:
        weights = [0 if rng.random() < zero_prob else rng.randint(1, 4) for _ in range(vocab_size)]
        if sum(weights):
            return tuple(Fraction(w, sum(weights)) for w in weights)


def random_table(seed: int, vocab_size: int, length: int) -> list[dict]:
    """``table[t][prefix]`` = law of x_t given the prefix (a tuple of length t)."""
    rng = random.Random(seed)
    return [{prefix: random_row(rng, vocab_size) for prefix in itertools.product(range(vocab_size), repeat=t)}
            for t in range(length)]


def product_table(rows, length: int) -> list[dict]:
    """Independent coordinates: row ``rows[t]`` whatever the prefix."""
    vocab_size = len(rows[0])
    return [{prefix: rows[t] for prefix in itertools.product(range(vocab_size), repeat=t)} for t in range(length)]


def chain_rule(table) -> dict:
    length, vocab_size = len(table), len(table[0][()])
    law = {}
    for x in itertools.product(range(vocab_size), repeat=length):
        probability = Fraction(1)
        for t in range(length):
            probability *= table[t][x[:t]][x[t]]
        law[x] = probability
    return law


def round_outcomes(target, draft, prefix: tuple, gamma: int, residual: str = "residual", ratio: str = "p/q"):
    """One round as the algorithm runs it: all g drafts first, then verification left to right.

    Yields ``(committed block, probability, accepted drafts)``.
    """
    length, vocab_size = len(target), len(target[0][()])
    start = len(prefix)
    span = min(gamma, length - start)
    for drafts in itertools.product(range(vocab_size), repeat=span):
        probability = Fraction(1)
        for j, token in enumerate(drafts):
            probability *= draft[start + j][prefix + drafts[:j]][token]
        if probability == 0:
            continue
        context = prefix
        for j, token in enumerate(drafts):
            p_row, q_row = target[start + j][context], draft[start + j][context]
            accept = acceptance_probs(p_row, q_row, ratio)[token]
            if accept < 1:  # reject, resample, end the round
                weights = [max(a - b, 0) for a, b in zip(p_row, q_row)] if residual == "residual" else list(p_row)
                total = sum(weights)
                for v in range(vocab_size):
                    yield context[start:] + (v,), probability * (1 - accept) * weights[v] / total, j
            probability *= accept
            context = context + (token,)
            if probability == 0:
                break
        else:
            if start + span < length:  # bonus token from the target
                for v, weight in enumerate(target[start + span][context]):
                    yield context[start:] + (v,), probability * weight, span
            else:
                yield context[start:], probability, span


def run_sampler(target, draft, gamma: int, **variant):
    """Chain the rounds over all prefixes: the law and the expected (target calls, drafted, accepted, rejected)."""
    length, vocab_size = len(target), len(target[0][()])
    law = dict.fromkeys(itertools.product(range(vocab_size), repeat=length), Fraction(0))
    starts = [dict() for _ in range(length)]
    starts[0][()] = Fraction(1)
    calls = drafted = accepted = rejected = Fraction(0)
    for t in range(length):
        span = min(gamma, length - t)
        for prefix, weight in starts[t].items():
            calls += weight
            drafted += weight * span
            for block, probability, num_accepted in round_outcomes(target, draft, prefix, gamma, **variant):
                accepted += weight * probability * num_accepted
                rejected += weight * probability * (num_accepted < span)  # a round has at most one rejection
                following = prefix + block
                if len(following) == length:
                    law[following] += weight * probability
                else:
                    starts[len(following)][following] = starts[len(following)].get(following, 0) + weight * probability
    return law, (calls, drafted, accepted, rejected)


def prefix_dp(target, draft, gamma: int):
    """Part 4: R_t over round starts with the factors m = min(p, q), rho = (p - q)_+, and bonus p."""
    length, vocab_size = len(target), len(target[0][()])
    starts = [dict() for _ in range(length + 1)]
    starts[0][()] = Fraction(1)
    calls = drafted = accepted = rejected = Fraction(0)

    def factor(kind, s, context, v):
        p, q = target[s][context][v], draft[s][context][v]
        return {"m": min(p, q), "rho": max(p - q, 0), "p": p}[kind]

    for t in range(length):
        span = min(gamma, length - t)
        for prefix, weight in starts[t].items():
            calls += weight
            drafted += weight * span
            running = {prefix: weight}  # R_t * M_j, by continuation
            for j in range(span):
                for context, mass in running.items():
                    for v in range(vocab_size):
                        out = context + (v,)
                        starts[t + j + 1][out] = starts[t + j + 1].get(out, 0) + mass * factor("rho", t + j, context, v)
                        rejected += mass * factor("rho", t + j, context, v)
                running = {context + (v,): mass * factor("m", t + j, context, v)
                           for context, mass in running.items() for v in range(vocab_size)}
                accepted += sum(running.values())
            for context, mass in running.items():
                if t + span < length:
                    for v in range(vocab_size):
                        out = context + (v,)
                        starts[t + span + 1][out] = starts[t + span + 1].get(out, 0) + mass * factor("p", t + span,
                                                                                                      context, v)
                else:
                    starts[length][context] = starts[length].get(context, 0) + mass
    law = {x: starts[length].get(x, Fraction(0)) for x in itertools.product(range(vocab_size), repeat=length)}
    return law, (calls, drafted, accepted, rejected)


def renewal(alphas, gamma: int, one=Fraction(1)):
    """Part 4, position-dependent acceptance: expected (target calls, drafted, accepted, rejected) from t = 0."""
    length = len(alphas)
    value = [(0 * one,) * 4] * (length + 1)
    for t in range(length - 1, -1, -1):
        span = min(gamma, length - t)
        survive = [one]  # A_t(j)
        for j in range(span):
            survive.append(survive[-1] * alphas[t + j])
        ends = [survive[j] * (1 - alphas[t + j]) for j in range(span)]  # first rejection at offset j
        own = (one, span * one, sum(survive[1:], 0 * one), sum(ends, 0 * one))
        total = list(own)
        for j in range(span):
            total = [c + ends[j] * v for c, v in zip(total, value[t + j + 1])]
        total = [c + survive[span] * v for c, v in zip(total, value[min(t + span + 1, length)])]
        value[t] = tuple(total)
    return value[0]


SEQUENCE_CASES = [(2, 3, 101, 102), (3, 3, 103, 104)]  # (V, L, target seed, draft seed)


@pytest.mark.parametrize(("vocab_size", "length", "target_seed", "draft_seed"), SEQUENCE_CASES)
def test_sequence_law_is_the_chain_rule_exactly(vocab_size, length, target_seed, draft_seed):
    target = random_table(target_seed, vocab_size, length)
    draft = random_table(draft_seed, vocab_size, length)
    joint = chain_rule(target)
    assert sum(joint.values()) == 1 and 0 in joint.values()  # zero cells are part of the test
    for gamma in range(1, 5):
        law, counts = run_sampler(target, draft, gamma)
        assert law == joint, gamma
        dp_law, dp_counts = prefix_dp(target, draft, gamma)
        assert dp_law == joint
        assert counts == dp_counts, gamma
        assert 1 <= counts[0] <= length and counts[2] + counts[3] <= counts[1]
    # negative controls: the same enumeration with one mistake is off the target
    for variant in ({"residual": "target"}, {"ratio": "q/p"}):
        assert run_sampler(target, draft, 2, **variant)[0] != joint, variant


def test_independent_coordinates_follow_the_renewal_recursion():
    rng = random.Random(7)
    length, vocab_size = 4, 3
    target_rows = [random_row(rng, vocab_size, 0.2) for _ in range(length)]
    draft_rows = [random_row(rng, vocab_size, 0.2) for _ in range(length)]
    alphas = [1 - total_variation(p, q) for p, q in zip(target_rows, draft_rows)]
    assert len(set(alphas)) > 1  # position-dependent
    target, draft = product_table(target_rows, length), product_table(draft_rows, length)
    for gamma in range(1, 6):
        law, counts = run_sampler(target, draft, gamma)
        assert law == chain_rule(target)
        assert counts == renewal(alphas, gamma), gamma
    # a wrong recursion (bonus token forgotten) is rejected
    assert run_sampler(target, draft, 2)[1][0] != renewal(alphas, 1)[0]


def test_first_round_yield_with_constant_acceptance():
    p = (Fraction(1, 2), Fraction(1, 3), Fraction(1, 6))
    q = (Fraction(1, 4), Fraction(1, 4), Fraction(1, 2))
    alpha = 1 - total_variation(p, q)
    for gamma in range(1, 5):
        length = gamma + 1  # no truncation in the first round
        target, draft = product_table([p] * length, length), product_table([q] * length, length)
        outcomes = list(round_outcomes(target, draft, (), gamma))
        assert sum(probability for _, probability, _ in outcomes) == 1
        tokens = sum(probability * len(block) for block, probability, _ in outcomes)
        assert tokens == (1 - alpha ** (gamma + 1)) / (1 - alpha) == sum(alpha**j for j in range(gamma + 1))
        for j in range(gamma + 1):  # P(N >= j) = alpha^j
            assert sum(pr for _, pr, accepted in outcomes if accepted >= j) == alpha**j
        # over the whole run (truncated rounds included): accepted = alpha * examined drafts (Wald)
        _, (_, drafted, accepted, rejected) = run_sampler(target, draft, gamma)
        assert accepted == alpha * (accepted + rejected) and accepted + rejected <= drafted


# ---------------------------------------------------------------------------
# (b) symbolic
# ---------------------------------------------------------------------------

ALPHA = sympy.Symbol("alpha", positive=True)
GAMMA = sympy.Symbol("gamma", positive=True, integer=True)


def closed_form(gamma):
    return (1 - ALPHA ** (gamma + 1)) / (1 - ALPHA)


def test_expected_tokens_closed_form():
    for gamma in range(1, 9):
        geometric = sum(ALPHA**j for j in range(gamma + 1))
        assert sympy.cancel(geometric - closed_form(gamma)) == 0
        assert sympy.limit(closed_form(gamma), ALPHA, 1) == gamma + 1
        assert sympy.cancel(geometric - closed_form(gamma - 1)) != 0  # off by one is rejected
    # symbolic gamma: closed_form(0) = 1 and closed_form(gamma) - closed_form(gamma - 1) = alpha^gamma (induction)
    assert sympy.simplify(closed_form(0) - 1) == 0
    assert sympy.simplify(closed_form(GAMMA) - closed_form(GAMMA - 1) - ALPHA**GAMMA) == 0
    assert sympy.limit(closed_form(GAMMA), ALPHA, 1) == GAMMA + 1


# ---------------------------------------------------------------------------
# (c) float64 through the library
# ---------------------------------------------------------------------------


@register_pytree_node_class
class PrefixTable:
    """A family answering ``log_table[i, code]``, code = base-(V+1) digits of the observed context of ``i``.

    Filled from a left-to-right rational table at prefix contexts (the only ones speculative decoding
    asks) and uniform elsewhere.
    """

    def __init__(self, log_table, vocab_size: int, length: int):
        self.log_table, self.vocab_size, self.length = log_table, vocab_size, length

    def __call__(self, x, observed):
        vocab_size, length = self.vocab_size, self.length
        x, observed = jnp.broadcast_arrays(jnp.asarray(x), jnp.asarray(observed, bool))
        context = observed[..., None, :] & ~jnp.eye(length, dtype=bool)
        digits = jnp.where(context, x[..., None, :], vocab_size)
        code = (digits * jnp.asarray((vocab_size + 1) ** np.arange(length - 1, -1, -1))).sum(axis=-1)
        return self.log_table[jnp.arange(length), code]

    def tree_flatten(self):
        return (self.log_table,), (self.vocab_size, self.length)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


def as_family(table) -> PrefixTable:
    length, vocab_size = len(table), len(table[0][()])
    log_table = np.full((length, (vocab_size + 1) ** length, vocab_size), -np.log(vocab_size))
    for t in range(length):
        for prefix, row in table[t].items():
            digits = prefix + (vocab_size,) * (length - t)
            code = sum(d * (vocab_size + 1) ** (length - 1 - i) for i, d in enumerate(digits))
            with np.errstate(divide="ignore"):
                log_table[t, code] = np.log([float(v) for v in row])
    return PrefixTable(jnp.asarray(log_table), vocab_size, length)


def as_array(law: dict) -> np.ndarray:
    return np.array([float(law[x]) for x in sorted(law)])


@pytest.mark.parametrize(("vocab_size", "length", "target_seed", "draft_seed"), SEQUENCE_CASES)
def test_library_matches_the_rationals(vocab_size, length, target_seed, draft_seed):
    target = random_table(target_seed, vocab_size, length)
    draft = random_table(draft_seed, vocab_size, length)
    target_family, draft_family = as_family(target), as_family(draft)
    for gamma in range(1, 5):
        law, counts = run_sampler(target, draft, gamma)
        np.testing.assert_allclose(speculative_law(target_family, draft_family, gamma), as_array(law),
                                   rtol=0, atol=LAW_TOLERANCE)
        cost = speculative_cost(target_family, draft_family, gamma)
        expected = [float(c) for c in counts]
        np.testing.assert_allclose([cost.target_calls, cost.drafted, cost.accepted, cost.rejected], expected,
                                   rtol=0, atol=LAW_TOLERANCE)
        assert cost.draft_calls == pytest.approx(cost.drafted, abs=LAW_TOLERANCE)


def test_library_one_token_acceptance():
    """L = 1: accepted drafts per sequence = sum min(p, q) = 1 - TV, law = p, over part of the V = 3 grid."""
    grid = simplex_grid(3, 4)
    for p, q in itertools.islice(itertools.product(grid, repeat=2), 0, None, 23):
        target = arprob.TabularJoint(probs=np.array([float(v) for v in p]))
        draft = arprob.TabularJoint(probs=np.array([float(v) for v in q]))
        np.testing.assert_allclose(speculative_law(target, draft, 1), [float(v) for v in p],
                                   rtol=0, atol=LAW_TOLERANCE)
        cost = speculative_cost(target, draft, 1)
        assert abs(cost.accepted - float(1 - total_variation(p, q))) < LAW_TOLERANCE
        assert cost.target_calls == 1 and cost.drafted == 1


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


def _tabular(seed: int) -> arprob.TabularJoint:
    return arprob.TabularJoint(probs=_dirichlet(seed, (81,), 0.5).reshape(3, 3, 3, 3))


def _markov(seed: int, forbid: bool = False) -> arprob.MarkovChain:
    rows = _dirichlet(seed, (4, 3))
    if forbid:  # a forbidden transition: zero-probability prefixes
        rows[0, 2] = 0.0
        rows /= rows.sum(axis=1, keepdims=True)
    return arprob.MarkovChain(rows[3], rows[:3], 5)


def _ngram(seed: int) -> arprob.NGram:
    return arprob.NGram(_dirichlet(seed, (3, 3, 2)), 6, context_size=2)


# Random models drawn with numpy (jax.random.loggamma in the models' own ``random`` costs seconds of
# compilation per shape); the same shapes as TabularJoint.random(key, 4, 3, 0.5), MarkovChain.random(key, 5, 3)
# and NGram.random(key, 6, 2, 2).  Each pair is (target, draft of the same shape).
MODELS = {
    "tabular": (lambda: _tabular(1), lambda: _tabular(11)),
    "markov": (lambda: _markov(2), lambda: _markov(12)),
    "ngram": (lambda: _ngram(3), lambda: _ngram(13)),
    "markov-zeros": (lambda: _markov(5, forbid=True), lambda: _markov(6, forbid=True)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_library_law_is_the_target_law(name):
    make_target, make_draft = MODELS[name]
    target = make_target()
    law = target.law()
    drafts = {"other": make_draft()}
    if name in ("tabular", "ngram"):  # one compilation per family class and shape: not for every model
        drafts["perturbed"] = perturbed(target, jax.random.key(7), 1.0)
    for draft_name, draft in drafts.items():
        for gamma in range(1, 5):
            np.testing.assert_allclose(speculative_law(target, draft, gamma), law, rtol=0, atol=LAW_TOLERANCE,
                                       err_msg=f"{name}, draft {draft_name}, gamma {gamma}")


@pytest.mark.parametrize("name", ["ngram"])
def test_library_law_for_an_inconsistent_target(name):
    make_target, make_draft = MODELS[name]
    base = make_target()
    target = perturbed(base, jax.random.key(8), 1.0)
    left_to_right = ancestral_law(target, None)
    assert tv(left_to_right, base.law()) > 1e-3  # the assertion below could fail
    for draft in (make_draft(), base):
        for gamma in (1, 3):
            np.testing.assert_allclose(speculative_law(target, draft, gamma), left_to_right,
                                       rtol=0, atol=LAW_TOLERANCE)


def _iid_chain(probs, length: int) -> arprob.MarkovChain:
    probs = np.asarray(probs, dtype=np.float64)
    return arprob.MarkovChain(probs, np.tile(probs, (probs.size, 1)), length)


def test_library_cost_with_constant_acceptance():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    alpha = float(np.minimum(p, q).sum())
    length = 5
    target, draft = _iid_chain(p, length), _iid_chain(q, length)
    for gamma in range(1, 5):
        cost = speculative_cost(target, draft, gamma)
        expected = renewal([alpha] * length, gamma, one=1.0)
        np.testing.assert_allclose([cost.target_calls, cost.drafted, cost.accepted, cost.rejected], expected,
                                   rtol=0, atol=LAW_TOLERANCE)
        assert abs(cost.acceptance_rate - alpha) < LAW_TOLERANCE  # Wald: accepted = alpha * examined
        assert abs(cost.draft_calls - cost.drafted) < LAW_TOLERANCE
        np.testing.assert_allclose(speculative_law(target, draft, gamma), target.law(), rtol=0, atol=LAW_TOLERANCE)
    # negative control: the recursion of another acceptance is off by more than the tolerance
    assert abs(speculative_cost(target, draft, 2).target_calls - renewal([alpha + 0.01] * length, 2, 1.0)[0]) > 1e-4


def test_library_cost_with_position_dependent_acceptance():
    rng = np.random.default_rng(21)
    length, vocab_size = 4, 3
    target_rows, draft_rows = rng.dirichlet(np.ones(vocab_size), length), rng.dirichlet(np.ones(vocab_size), length)

    def product(rows):
        joint = rows[0]
        for row in rows[1:]:
            joint = np.multiply.outer(joint, row)
        return arprob.TabularJoint(probs=joint)

    alphas = np.minimum(target_rows, draft_rows).sum(axis=1)
    target, draft = product(target_rows), product(draft_rows)
    for gamma in range(1, 5):
        cost = speculative_cost(target, draft, gamma)
        np.testing.assert_allclose([cost.target_calls, cost.drafted, cost.accepted, cost.rejected],
                                   renewal(list(alphas), gamma, one=1.0), rtol=0, atol=LAW_TOLERANCE)


def test_library_expected_tokens_per_call():
    alphas = np.linspace(0.0, 0.99, 12)
    for gamma in range(1, 7):
        expected = np.array([float(closed_form(gamma).subs(ALPHA, sympy.Rational(a).limit_denominator(10**6)))
                             for a in alphas])
        got = expected_tokens_per_call(np.array([float(sympy.Rational(a).limit_denominator(10**6))
                                                 for a in alphas]), gamma)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0)
        assert float(expected_tokens_per_call(1.0, gamma)) == gamma + 1
