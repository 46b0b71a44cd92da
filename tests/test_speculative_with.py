"""speculative_with: the host round loop with an outside rule, its exact law and cost.

Oracles: (a) the law of every family equals a brute-force enumeration of the
rounds (draft tuples, accept/reject outcomes, residual and bonus tokens, each
with its explicit probability, conditionals taken from ``model.law()``) to
1e-12, and the ``"exact"`` family equals the target under both round
conventions; (b) the loop's samples pass :func:`arprob.verify.check` against
the family's law (false alarm alpha = 1e-4 per check), and the mean target
calls per sequence match :func:`speculative_with_cost` within 4.5 standard
errors (two-sided false alarm 7e-6, normal approximation, >= 10,000 i.i.d.
sequences).  Seeds are fixed, so the outcomes are deterministic.
"""

import itertools
from collections import defaultdict

import jax
import numpy as np
import pytest

from arprob.distributions import NGram, TabularJoint
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.samplers import (
    ensemble_rule,
    exact_rule,
    speculative_cost,
    speculative_law,
    speculative_with,
    speculative_with_cost,
    speculative_with_law,
)
from arprob.verify import Sampler, check, tv

FAMILIES = [("exact", {}, 0, exact_rule), ("argmax-raw-q", {}, 1, exact_rule),
            ("top-k-raw-q", {"top_k": 2}, 2, exact_rule), ("ensemble", {"weight": 0.5}, 0, ensemble_rule(0.5))]


def models(vocab_size, length, seed):
    target = NGram.random(jax.random.key(seed), length=length, vocab_size=vocab_size, context_size=2)
    draft = TabularJoint.random(jax.random.key(seed + 100), length=length, vocab_size=vocab_size)
    return target, draft


def conditionals_from_law(model):
    """``prefix -> p(. | prefix)`` from the joint law by marginal sums (independent of the samplers)."""
    vocab_size, length = model.vocab_size, model.length
    law = np.asarray(model.law(), np.float64).reshape((vocab_size,) * length)

    def next_probs(prefix):
        block = law[tuple(prefix)].reshape(vocab_size, -1).sum(axis=1)
        return block / block.sum()

    return next_probs


def brute_force(family, params, target, draft, gamma, last_round):
    """Law and expected rounds by enumerating every round outcome explicitly."""
    vocab_size, length = target.vocab_size, target.length
    p_of, q_of = conditionals_from_law(target), conditionals_from_law(draft)
    weight = params.get("weight", 1.0)

    def drafting(q):
        if family == "argmax-raw-q":
            return np.eye(vocab_size)[int(np.argmax(q))]
        if family == "top-k-raw-q":
            kept = sorted(range(vocab_size), key=lambda v: (-q[v], v))[: params["top_k"]]
            s = np.zeros(vocab_size)
            s[kept] = q[kept]
            return s / s.sum()
        return q

    law, rounds = defaultdict(float), [0.0]

    def round_(prefix, prob):
        if prob == 0.0:
            return
        if len(prefix) == length:
            law[prefix] += prob
            return
        rounds[0] += prob
        remaining = length - len(prefix)
        g = min(gamma, remaining if last_round == "arprob" else remaining - 1)
        for drafts in itertools.product(range(vocab_size), repeat=g):
            chance = prob
            for j in range(g):  # the probability of drawing this draft tuple
                chance *= drafting(q_of(prefix + drafts[:j]))[drafts[j]]
            if chance == 0.0:
                continue
            for j in range(g):  # reject at j: resample from (p - q)+ and end the round
                p, q = p_of(prefix + drafts[:j]), q_of(prefix + drafts[:j])
                keep = min(1.0, 1.0 - weight + weight * p[drafts[j]] / q[drafts[j]])
                residual = np.maximum(p - q, 0.0)
                residual = residual / residual.sum() if residual.sum() > 0 else p
                for v in range(vocab_size):
                    round_(prefix + drafts[:j] + (v,), chance * (1.0 - keep) * residual[v])
                chance *= keep
            full = prefix + drafts
            if len(full) == length:
                round_(full, chance)
            else:  # all kept: the bonus token from the target
                bonus = p_of(full)
                for v in range(vocab_size):
                    round_(full + (v,), chance * bonus[v])

    round_((), 1.0)
    out = np.zeros(vocab_size**length)
    for sequence, prob in law.items():
        out[int(np.ravel_multi_index(sequence, (vocab_size,) * length))] = prob
    return out, rounds[0]


@pytest.mark.parametrize("last_round", ["arprob", "transformers"])
@pytest.mark.parametrize(("vocab_size", "length"), [(3, 3), (3, 4), (2, 5)])
def test_exact_family_is_the_target(last_round, vocab_size, length):
    target, draft = models(vocab_size, length, seed=vocab_size + length)
    for gamma in range(1, length + 1):
        law = speculative_with_law("exact", target, draft, gamma, last_round=last_round)
        assert np.max(np.abs(law - np.asarray(target.law()))) < 1e-12


@pytest.mark.parametrize("last_round", ["arprob", "transformers"])
@pytest.mark.parametrize(("family", "params", "draft_top_k", "rule"), FAMILIES)
def test_law_equals_brute_force(family, params, draft_top_k, rule, last_round):
    for vocab_size, length, gamma in [(3, 3, 1), (3, 3, 2), (3, 4, 2), (3, 4, 3)]:
        target, draft = models(vocab_size, length, seed=7 * length + gamma)
        law = speculative_with_law(family, target, draft, gamma, last_round=last_round, **params)
        expected, rounds = brute_force(family, params, target, draft, gamma, last_round)
        assert np.max(np.abs(law - expected)) < 1e-12
        cost = speculative_with_cost(family, target, draft, gamma, last_round=last_round, **params)
        assert abs(cost.target_calls - rounds) < 1e-12


def test_arprob_convention_matches_speculative():
    target, draft = models(3, 4, seed=3)
    for gamma in (1, 2, 4):
        assert np.max(np.abs(speculative_with_law("exact", target, draft, gamma)
                             - speculative_law(target, draft, gamma))) < 1e-14
        assert np.allclose(speculative_with_cost("exact", target, draft, gamma), speculative_cost(target, draft, gamma),
                           rtol=0, atol=1e-12)


def test_conventions_differ_in_law_not_in_target_calls():
    """The conventions end a sequence in the same round (the last drafted or the bonus token), so their
    target calls agree for every family; the lossy laws differ (the last token is drafted or from p)."""
    target, draft = models(3, 4, seed=5)
    for family, params, _, _ in FAMILIES[1:]:
        costs = [speculative_with_cost(family, target, draft, 3, last_round=r, **params) for r in ("arprob",
                                                                                                 "transformers")]
        assert abs(costs[0].target_calls - costs[1].target_calls) < 1e-12
        laws = [speculative_with_law(family, target, draft, 3, last_round=r, **params) for r in ("arprob",
                                                                                                "transformers")]
        assert tv(laws[0], laws[1]) > 1e-3


def law_as_target(law, vocab_size, length):
    return TabularJoint(probs=np.asarray(law).reshape((vocab_size,) * length))


@pytest.mark.parametrize(("family", "params", "draft_top_k", "rule"), FAMILIES)
def test_loop_samples_its_law(family, params, draft_top_k, rule):
    vocab_size, length, gamma, num_samples = 3, 4, 2, 20_000
    target, draft = models(vocab_size, length, seed=11)
    law = speculative_with_law(family, target, draft, gamma, last_round="transformers", **params)
    cost = speculative_with_cost(family, target, draft, gamma, last_round="transformers", **params)
    nfe = []

    def run(key, n):
        tokens, stats = speculative_with(rule, key, target, draft, n, gamma, last_round="transformers",
                                         draft_top_k=draft_top_k)
        nfe.append(stats.nfe)
        return tokens, stats

    reference = target if family == "exact" else law_as_target(law, vocab_size, length)
    report = check(Sampler(run, law=law, name=family), reference, num_samples=num_samples, batch_size=5_000)
    assert report.passed, report
    assert report.exact_tv < 1e-12
    assert report.resolution < 0.05  # about 0.04 at n = 20,000 over 81 cells
    calls = np.concatenate(nfe)[:num_samples]
    z = (calls.mean() - cost.target_calls) / (calls.std() / np.sqrt(calls.size))
    assert abs(z) < 4.5, z
    assert abs(report.nfe - cost.target_calls) < 4.5 * calls.std() / np.sqrt(calls.size)


def test_broken_families_are_rejected():
    target, draft = models(3, 4, seed=11)
    for family, params, draft_top_k, rule in FAMILIES[1:]:
        law = speculative_with_law(family, target, draft, 2, last_round="transformers", **params)
        report = check(Sampler(lambda key, n, rule=rule, k=draft_top_k: speculative_with(
            rule, key, target, draft, n, 2, last_round="transformers", draft_top_k=k), law=law), target,
            num_samples=10_000)
        assert not report.passed, (family, report)


def test_same_key_same_tokens():
    target, draft = models(3, 4, seed=2)
    first = speculative_with(exact_rule, jax.random.key(5), target, draft, 300, 2)
    again = speculative_with(exact_rule, jax.random.key(5), target, draft, 300, 2)
    other = speculative_with(exact_rule, jax.random.key(6), target, draft, 300, 2)
    legacy = speculative_with(exact_rule, jax.random.PRNGKey(5), target, draft, 300, 2)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1].nfe, again[1].nfe)
    assert not np.array_equal(first[0], other[0])
    assert legacy[0].shape == (300, 4) and legacy[0].dtype == np.int32


def test_stats_bookkeeping():
    target, draft = models(3, 4, seed=2)
    _, stats = speculative_with(exact_rule, jax.random.key(1), target, draft, 500, 3, last_round="transformers")
    assert np.array_equal(stats.nfe, stats.target_calls)
    assert np.all(stats.accepted + stats.target_calls == 4)  # every round adds its kept drafts and one token
    assert np.all(stats.rejected <= stats.target_calls) and np.all(stats.drafted == stats.draft_calls)


def test_bad_input():
    target, draft = models(3, 3, seed=1)
    key = jax.random.key(0)
    with pytest.raises(InvalidArgumentError, match="last_round"):
        speculative_with(exact_rule, key, target, draft, 10, 2, last_round="vllm")
    with pytest.raises(ArprobTypeError, match="rule must be callable"):
        speculative_with("exact", key, target, draft, 10, 2)
    with pytest.raises(InvalidArgumentError, match="num_accepted=5"):
        speculative_with(lambda c, q, p, rng: (5, 0), key, target, draft, 10, 2)
    with pytest.raises(ArprobTypeError, match="expected \\(num_accepted, next_token\\)"):
        speculative_with(lambda c, q, p, rng: None, key, target, draft, 10, 2)
    with pytest.raises(InvalidArgumentError, match="not a documented family"):
        speculative_with_law("greedy", target, draft, 2)
    with pytest.raises(InvalidArgumentError, match="takes the parameters \\['top_k'\\]"):
        speculative_with_law("top-k-raw-q", target, draft, 2)
    with pytest.raises(InvalidArgumentError, match="weight must be in"):
        speculative_with_law("ensemble", target, draft, 2, weight=1.5)
    with pytest.raises(InvalidArgumentError, match="weight must be in"):
        ensemble_rule(0.0)
