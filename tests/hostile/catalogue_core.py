"""Hostile-input catalogue: exact models, conditional families, samplers, any-order AR, absorbing
diffusion and ``check`` (see :mod:`hostile.framework` for the vocabulary)."""

from __future__ import annotations

import math

import numpy as np

from hostile.framework import Edge, Entry

V, L = 2, 3


def EMPTY_BATCH(argument, *more):  # noqa: N802
    """An empty batch (0 sequences) is valid where a function maps each sequence to a value: the answer is
    empty too."""
    return frozenset({(argument, "empty")}).union(more)


# draft, block and reveal sizes above the length act as the length (clamped, documented): valid input
CLAMPED = {"draft_length", "block_size", "k"}


def _key():
    import jax

    return jax.random.key(0)


def _chain():
    from arprob import MarkovChain

    return MarkovChain(np.array([0.3, 0.7]), np.array([[0.6, 0.4], [0.2, 0.8]]), length=L)


def _ngram():
    from arprob import NGram

    return NGram(np.full((V + 1, V + 1, V), 1.0 / V), length=L, context_size=2)


def _hmm():
    from arprob import HMM

    return HMM(np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.2, 0.8]]),
               np.array([[0.7, 0.3], [0.1, 0.9]]), length=L)


def _joint():
    from arprob import TabularJoint

    return TabularJoint(np.full((V,) * L, 1.0 / V**L))


def _tokens():
    return np.array([[0, 1, 1], [1, 0, 0]])


def _mask():
    return np.array([[True, False, True], [False, False, True]])


def _draft():
    from arprob import MarkovChain

    return MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]]), length=L)


def _model_entries():
    from arprob import HMM, MarkovChain, NGram, TabularJoint

    count, key = "count", "key"
    entries = [
        Entry("TabularJoint", lambda: (TabularJoint, dict(probs=np.full((V,) * L, 1.0 / V**L))),
              {"probs": "probs", "length": count},
              # length=None is the default (every axis is a position); a leading axis is a batch
              skip=frozenset({("length", "none"), ("probs", "extra-dim")})),
        Entry("TabularJoint.random", lambda: (TabularJoint.random, dict(key=_key(), length=L, vocab_size=V)),
              {"key": key, "length": count, "vocab_size": count, "concentration": "positive"}),
        Entry("MarkovChain", lambda: (MarkovChain, dict(initial_probs=np.array([0.3, 0.7]),
                                                        transition_probs=np.array([[0.6, 0.4], [0.2, 0.8]]),
                                                        length=L)),
              {"initial_probs": "probs", "transition_probs": "probs", "length": count},
              # a leading axis is a batch of chains
              skip=frozenset({("initial_probs", "extra-dim"), ("transition_probs", "extra-dim")})),
        Entry("MarkovChain.random", lambda: (MarkovChain.random, dict(key=_key(), length=L, vocab_size=V)),
              {"key": key, "length": count, "vocab_size": count, "concentration": "positive"}),
        Entry("NGram", lambda: (NGram, dict(table=np.full((V + 1, V + 1, V), 1.0 / V), length=L, context_size=2)),
              {"table": "probs", "length": count, "context_size": count},
              # context_size=None is the default (read from the table); a leading axis is a batch
              skip=frozenset({("context_size", "none"), ("table", "extra-dim")})),
        Entry("NGram.random", lambda: (NGram.random, dict(key=_key(), length=L, vocab_size=V, context_size=2)),
              {"key": key, "length": count, "vocab_size": count, "context_size": count,
               "concentration": "positive"}),
        Entry("HMM", lambda: (HMM, dict(initial_probs=np.array([0.5, 0.5]),
                                        transition_probs=np.array([[0.9, 0.1], [0.2, 0.8]]),
                                        emission_probs=np.array([[0.7, 0.3], [0.1, 0.9]]), length=L)),
              {"initial_probs": "probs", "transition_probs": "probs", "emission_probs": "probs", "length": count}),
        Entry("HMM.random", lambda: (HMM.random, dict(key=_key(), length=L, num_states=2, vocab_size=V)),
              {"key": key, "length": count, "num_states": count, "vocab_size": count,
               "concentration": "positive"}),
    ]
    for name, make in (("TabularJoint", _joint), ("MarkovChain", _chain), ("NGram", _ngram), ("HMM", _hmm)):
        entries += [
            Entry(f"{name}.sample", lambda make=make: (make().sample, dict(key=_key(), sample_shape=(4,))),
                  {"key": key, "sample_shape": "sample_shape"}),
            Entry(f"{name}.log_prob", lambda make=make: (make().log_prob, dict(value=_tokens())),
                  {"value": "tokens"}, skip=EMPTY_BATCH("value")),
            Entry(f"{name}.marginal_log_prob",
                  lambda make=make: (make().marginal_log_prob, dict(x=_tokens(), observed=_mask())),
                  {"x": "tokens", "observed": "mask"},
                  # the tokens at unobserved positions are ignored (the mask id is allowed there)
                  skip=frozenset({("x", "too-large")})),
            Entry(f"{name}.conditional_logits",
                  lambda make=make: (make().conditional_logits, dict(x=_tokens(), observed=_mask())),
                  {"x": "tokens", "observed": "mask"}, skip=frozenset({("x", "too-large")})),
            Entry(f"{name}.law", lambda make=make: (make().law, dict(max_entries=2**20)),
                  # a huge budget is allowed (it only caps the enumeration), drawn or fixed
                  {"max_entries": count}, skip=frozenset({("max_entries", "huge"), ("max_entries", "random-huge")})),
        ]
    return entries


def _conditional_entries():
    from arprob import conditionals

    def neural_call(**kwargs):
        return conditionals.neural(**kwargs)

    return [
        Entry("exact", lambda: (conditionals.exact, dict(model=_chain())), {"model": "model"}),
        Entry("perturbed", lambda: (conditionals.perturbed, dict(base=_chain(), key=_key(), scale=0.5)),
              {"base": "family", "key": "key", "scale": "nonnegative"}),
        Entry("tabulate", lambda: (conditionals.tabulate, dict(family=conditionals.exact(_chain()))),
              {"family": "family"}),
        Entry("neural", lambda: (neural_call, dict(key=_key(), model=_chain(), num_train=64, hidden_size=8,
                                                   num_layers=1, num_steps=2)),
              {"key": "key", "model": "model", "num_train": "count", "hidden_size": "count",
               "num_layers": "count", "num_steps": "count"}),
    ]


def _sampler_entries():
    from arprob import samplers
    from arprob.schedules import linear

    fam, key, count = "family", "key", "count"
    return [
        Entry("ancestral", lambda: (samplers.ancestral, dict(key=_key(), conditionals=_chain(), num_samples=4)),
              {"key": key, "conditionals": fam, "num_samples": count, "order": "order"}),
        Entry("ancestral_law", lambda: (samplers.ancestral_law, dict(conditionals=_chain())),
              {"conditionals": fam, "order": "order"}),
        Entry("masked_euler", lambda: (samplers.masked_euler, dict(key=_key(), conditionals=_chain(), num_samples=4,
                                                                   num_steps=3, schedule=linear())),
              {"key": key, "conditionals": fam, "num_samples": count, "num_steps": count,
               "schedule": "schedule", "cache": "bool"}),
        Entry("masked_euler_law", lambda: (samplers.masked_euler_law, dict(conditionals=_chain(), num_steps=3,
                                                                           schedule=linear())),
              {"conditionals": fam, "num_steps": count, "schedule": "schedule", "cache": "bool"}),
        Entry("first_hitting", lambda: (samplers.first_hitting, dict(key=_key(), conditionals=_chain(), num_samples=4)),
              {"key": key, "conditionals": fam, "num_samples": count}),
        Entry("first_hitting_law", lambda: (samplers.first_hitting_law, dict(conditionals=_chain())),
              {"conditionals": fam}),
        Entry("parallel_unmask", lambda: (samplers.parallel_unmask, dict(key=_key(), conditionals=_chain(),
                                                                         num_samples=4, k=2)),
              {"key": key, "conditionals": fam, "num_samples": count, "k": count}),
        Entry("parallel_unmask_law", lambda: (samplers.parallel_unmask_law, dict(conditionals=_chain(), k=2)),
              {"conditionals": fam, "k": count}),
        Entry("speculative", lambda: (samplers.speculative, dict(key=_key(), target=_chain(), draft=_draft(),
                                                                 num_samples=4, draft_length=2)),
              {"key": key, "target": fam, "draft": fam, "num_samples": count, "draft_length": count}),
        Entry("speculative_law", lambda: (samplers.speculative_law, dict(target=_chain(), draft=_draft(),
                                                                         draft_length=2)),
              {"target": fam, "draft": fam, "draft_length": count}),
        Entry("speculative_cost", lambda: (samplers.speculative_cost, dict(target=_chain(), draft=_draft(),
                                                                           draft_length=2)),
              {"target": fam, "draft": fam, "draft_length": count}),
        Entry("spectr", lambda: (samplers.spectr, dict(key=_key(), target=_chain(), draft=_draft(), num_samples=4,
                                                       num_drafts=2, draft_length=2)),
              {"key": key, "target": fam, "draft": fam, "num_samples": count, "num_drafts": count,
               "draft_length": count}),
        Entry("spectr_law", lambda: (samplers.spectr_law, dict(target=_chain(), draft=_draft(), num_drafts=2,
                                                               draft_length=2)),
              {"target": fam, "draft": fam, "num_drafts": count, "draft_length": count}),
        Entry("spectr_cost", lambda: (samplers.spectr_cost, dict(target=_chain(), draft=_draft(), num_drafts=2,
                                                                 draft_length=2)),
              {"target": fam, "draft": fam, "num_drafts": count, "draft_length": count}),
        Entry("kseq_acceptance", lambda: (samplers.kseq_acceptance, dict(p=np.array([0.2, 0.8]),
                                                                         q=np.array([0.5, 0.5]), num_drafts=2)),
              {"p": "probs", "q": "probs", "num_drafts": count, "rho": "positive"},
              # rho=None is the documented default (computed); any num_drafts is a valid k in the formula
              skip=frozenset({("rho", "none"), ("num_drafts", "huge")})),
        Entry("kseq_rho", lambda: (samplers.kseq_rho, dict(p=np.array([0.2, 0.8]), q=np.array([0.5, 0.5]),
                                                           num_drafts=2)),
              {"p": "probs", "q": "probs", "num_drafts": count},
              skip=frozenset({("num_drafts", "huge")})),  # the bisection works for any k
        Entry("optimal_acceptance", lambda: (samplers.optimal_acceptance, dict(p=np.array([0.2, 0.8]),
                                                                               q=np.array([0.5, 0.5]),
                                                                               num_drafts=2)),
              {"p": "probs", "q": "probs", "num_drafts": count, "method": "choice"}),
        Entry("expected_tokens_per_call", lambda: (samplers.expected_tokens_per_call,
                                                   dict(acceptance=0.5, draft_length=3)),
              {"acceptance": "unit", "draft_length": count}),
        Entry("any_subset_speculative", lambda: (samplers.any_subset_speculative,
                                                 dict(key=_key(), conditionals=_chain(), num_samples=4, k=2)),
              {"key": key, "conditionals": fam, "num_samples": count, "k": count, "order": "order"}),
        Entry("any_subset_speculative_law", lambda: (samplers.any_subset_speculative_law,
                                                     dict(conditionals=_chain(), k=2)),
              {"conditionals": fam, "k": count, "order": "order"}),
        Entry("any_subset_speculative_cost", lambda: (samplers.any_subset_speculative_cost,
                                                      dict(conditionals=_chain(), k=2)),
              {"conditionals": fam, "k": count, "order": "order"}),
        Entry("sigma_gpt_rejection", lambda: (samplers.sigma_gpt_rejection,
                                              dict(key=_key(), conditionals=_chain(), num_samples=4)),
              {"key": key, "conditionals": fam, "num_samples": count, "num_orders": count, "residual": "bool"}),
        Entry("sigma_gpt_rejection_law", lambda: (samplers.sigma_gpt_rejection_law, dict(conditionals=_chain())),
              {"conditionals": fam, "num_orders": count, "residual": "bool"}),
        Entry("sigma_gpt_rejection_cost", lambda: (samplers.sigma_gpt_rejection_cost, dict(conditionals=_chain())),
              {"conditionals": fam, "num_orders": count, "residual": "bool"}),
        Entry("blockwise_parallel", lambda: (samplers.blockwise_parallel, dict(key=_key(), target=_chain(),
                                                                               heads=_draft(), num_samples=4,
                                                                               block_size=2)),
              {"key": key, "target": fam, "heads": fam, "num_samples": count, "block_size": count}),
        Entry("blockwise_parallel_law", lambda: (samplers.blockwise_parallel_law,
                                                 dict(target=_chain(), heads=_draft(), block_size=2)),
              {"target": fam, "heads": fam, "block_size": count}),
        Entry("blockwise_parallel_cost", lambda: (samplers.blockwise_parallel_cost,
                                                  dict(target=_chain(), heads=_draft(), block_size=2)),
              {"target": fam, "heads": fam, "block_size": count}),
        Entry("greedy", lambda: (samplers.greedy, dict(target=_chain())), {"target": fam}),
        Entry("sample_sharded", lambda: (samplers.sample_sharded,
                                         dict(sample=lambda k, n: _chain().sample(k, (n,)), key=_key(),
                                              num_samples=8, devices=None)),
              {"sample": "callable", "key": key, "num_samples": count}),
    ]


def _anyorder_entries():
    from arprob import AbsorbingDiffusion, AnyOrderAR
    from arprob.schedules import linear

    def aoar():
        return AnyOrderAR(_chain())

    def diffusion():
        return AbsorbingDiffusion(_chain(), linear())

    tokens = "tokens"
    return [
        Entry("AnyOrderAR", lambda: (AnyOrderAR, dict(conditionals=_chain())), {"conditionals": "family"}),
        Entry("AnyOrderAR.log_prob", lambda: (aoar().log_prob, dict(x=_tokens(), order=np.array([2, 0, 1]))),
              {"x": tokens, "order": "order"}, skip=EMPTY_BATCH("x")),
        Entry("AnyOrderAR.expected_nll", lambda: (aoar().expected_nll, dict(x=_tokens())), {"x": tokens},
              skip=EMPTY_BATCH("x")),
        Entry("AnyOrderAR.expected_nll_mc", lambda: (aoar().expected_nll_mc, dict(key=_key(), x=_tokens(),
                                                                                num_orders=3)),
              {"key": "key", "x": tokens, "num_orders": "count"}, skip=EMPTY_BATCH("x")),
        Entry("AnyOrderAR.mixture_log_prob", lambda: (aoar().mixture_log_prob, dict(x=_tokens())), {"x": tokens},
              skip=EMPTY_BATCH("x")),
        Entry("AnyOrderAR.law", lambda: (aoar().law, dict(order=np.array([2, 0, 1]))), {"order": "order"}),
        Entry("AbsorbingDiffusion", lambda: (AbsorbingDiffusion, dict(conditionals=_chain(), schedule=linear())),
              {"conditionals": "family", "schedule": "schedule"}),
        Entry("AbsorbingDiffusion.elbo", lambda: (diffusion().elbo, dict(x0=_tokens())), {"x0": tokens},
              skip=EMPTY_BATCH("x0")),
        Entry("AbsorbingDiffusion.truncation_gap", lambda: (diffusion().truncation_gap, dict(x0=_tokens())),
              {"x0": tokens}, skip=EMPTY_BATCH("x0")),
        Entry("AbsorbingDiffusion.forward_law", lambda: (diffusion().forward_law, dict(x0=_tokens()[0], t=0.5)),
              {"x0": tokens, "t": "unit"}),
        Entry("AbsorbingDiffusion.marginal_law", lambda: (diffusion().marginal_law, dict(t=0.5)), {"t": "unit"}),
        Entry("AbsorbingDiffusion.expected_loss", lambda: (diffusion().expected_loss, dict(x0=_tokens(), form="mdlm")),
              {"x0": tokens, "form": "choice"}, skip=EMPTY_BATCH("x0")),
        Entry("AbsorbingDiffusion.training_loss", lambda: (diffusion().training_loss,
                                                           dict(key=_key(), x0=_tokens(), form="mdlm",
                                                                num_samples=4)),
              {"key": "key", "x0": tokens, "form": "choice", "num_samples": "count"}, skip=EMPTY_BATCH("x0")),
    ]


def _check_entries():
    from arprob import verify
    from arprob.samplers import ancestral

    def sampler(key, num_samples):
        return ancestral(key, _chain(), num_samples)

    base = dict(sampler=sampler, target=_chain(), num_samples=2000, seed=0, law=_chain().law())
    return [
        Entry("check", lambda: (verify.check, dict(base)),
              {"sampler": "callable", "target": "family", "alpha": "unit-open", "power": "unit-open",
               "deviation": "unit-open", "num_samples": "count", "projections": "choice", "seed": "natural",
               "batch_size": "count", "max_joint_cells": "count", "fuse": "bool", "law": "law"},
              # None means "planned from deviation" / "automatic" for these two
              skip=frozenset({("num_samples", "none"), ("batch_size", "none"), ("fuse", "none"),
                              # law=None means "no exact law given" (the default)
                              ("law", "none"),
                              # deviation=1 is allowed (TV is at most 1)
                              ("deviation", "one"),
                              # seed is an int of any size (it is folded into a key)
                              ("seed", "huge"),
                              # a huge cap on joint cells is allowed (the joint is then tested if it fits)
                              ("max_joint_cells", "huge")})),
        Entry("left_to_right", lambda: (verify.left_to_right, dict(logits_fn=lambda prefix: np.zeros(V),
                                                                   vocab_size=V, length=L)),
              {"logits_fn": "callable", "vocab_size": "count", "length": "count", "batched": "bool"}),
    ]


def _bad_sampler(kind):
    import jax.numpy as jnp

    def sampler(key, num_samples):
        tokens = jnp.zeros((num_samples, L), jnp.int32)
        if kind == "float":
            return tokens.astype(jnp.float32) + 0.5
        if kind == "nan":
            return jnp.full((num_samples, L), jnp.nan)
        if kind == "bool":
            return tokens.astype(bool)
        if kind == "negative":
            return tokens - 1
        if kind == "wrong-length":
            return tokens[:, :-1]
        if kind == "wrong-count":
            return tokens[:-1]
        return tokens

    return sampler


def _check_bad_sampler(kind):
    from arprob import verify

    return lambda: verify.check(_bad_sampler(kind), _chain(), num_samples=2000)


def _edges():
    from arprob import MarkovChain
    from arprob.errors import ArprobError, EnumerationTooLargeError

    edges = [Edge(f"check-sampler-{kind}", _check_bad_sampler(kind), check=lambda r: False,
                  raises=ArprobError, owner="check")
             for kind in ("float", "nan", "bool", "negative", "wrong-length", "wrong-count")]

    def long_chain_law():
        chain = MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]]), length=10**9)
        return chain.law()

    edges.append(Edge("law-of-a-billion-tokens", long_chain_law, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="MarkovChain.law"))

    def spectr_law_many_drafts():
        from arprob.samplers import spectr_law

        return spectr_law(_chain(), _draft(), num_drafts=10**6, draft_length=2)

    edges.append(Edge("spectr-law-a-million-drafts", spectr_law_many_drafts, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="spectr_law"))

    def check_tiny_deviation():
        from arprob import verify
        from arprob.samplers import ancestral

        return verify.check(lambda k, n: ancestral(k, _chain(), n), _chain(), deviation=1e-9)

    edges.append(Edge("check-deviation-1e-9", check_tiny_deviation, check=lambda r: False,
                      raises=EnumerationTooLargeError, owner="check"))

    def impossible_marginal():
        chain = MarkovChain(np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.5, 0.5]]), length=L)
        return chain.marginal_log_prob(np.array([1, 0, 0]), np.array([True, False, False]))

    edges.append(Edge("impossible-marginal-is-minus-inf", impossible_marginal,
                      check=lambda r: float(r) == -math.inf))
    return edges


def _with_clamped_skips(entries):
    out = []
    for entry in entries:
        clamped = {(argument, label) for argument in entry.arguments if argument in CLAMPED
                   for label in ("huge", "random-huge")}  # the hypothesis-drawn huge values too
        if clamped and entry.owner != "expected_tokens_per_call":
            entry = Entry(entry.owner, entry.build, entry.arguments, entry.extra, entry.skip | clamped)
        out.append(entry)
    return out


ENTRIES = _with_clamped_skips(_model_entries() + _conditional_entries() + _sampler_entries() + _anyorder_entries()
                              + _check_entries())
EDGES = _edges()
