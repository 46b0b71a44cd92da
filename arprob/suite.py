"""The built-in verification suite that ``arprob check`` runs.

Each :class:`Case` pairs a sampler with a target model and states its claim:
``"exact"`` (the sampler's law *is* the target; a failure is a bug) or
``"approximate"`` (the law differs from the target by a known exact TV; the
report says whether the statistical test detects it).  Later samplers add
their cases to :func:`cases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from arprob import schedules
from arprob._enumerate import all_sequences
from arprob.conditionals import perturbed
from arprob.distributions import DFA, HMM, MarkovChain, NGram, TabularJoint
from arprob.samplers import (
    ancestral,
    ancestral_law,
    any_subset_speculative,
    any_subset_speculative_law,
    blockwise_parallel,
    blockwise_parallel_law,
    first_hitting,
    first_hitting_law,
    greedy,
    masked_euler,
    masked_euler_law,
    parallel_unmask,
    parallel_unmask_law,
    sigma_gpt_rejection,
    sigma_gpt_rejection_law,
    spectr,
    spectr_law,
    speculative,
    speculative_law,
)
from arprob.samplers.budget import budgeted_blocks, step_losses
from arprob.verify import Sampler

__all__ = ["Case", "cases"]


@dataclass(frozen=True)
class Case:
    """One row of the suite."""

    sampler: str
    model: str
    claim: str  # "exact" or "approximate"
    make: Callable[[], tuple[Sampler, Any]]  # -> (sampler with law, target model)


def _models():
    return {
        "TabularJoint(V=3, L=4)": lambda: TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5),
        "MarkovChain(V=3, L=5)": lambda: MarkovChain.random(jax.random.key(2), 5, 3),
        "NGram(V=2, K=2, L=6)": lambda: NGram.random(jax.random.key(3), 6, 2, 2),
        "HMM(K=3, V=3, L=4)": lambda: HMM.random(jax.random.key(4), 4, 3, 3),
    }


def _ancestral_case(label: str, order, model_name: str, build) -> Case:
    def make():
        model = build()
        order_value = order(model.length) if callable(order) else order
        sampler = Sampler(
            lambda key, n: ancestral(key, model, n, order=order_value),
            law=lambda: ancestral_law(model, order_value),
            name=label,
        )
        return sampler, model

    return Case(label, model_name, "exact", make)


def cases(quick: bool = False) -> list[Case]:
    """All cases of the suite (``quick`` trims nothing but the sample size, set by the CLI)."""
    suite = []
    for model_name, build in _models().items():
        suite.append(_ancestral_case("ancestral (left to right)", None, model_name, build))
        suite.append(_ancestral_case("ancestral (random order)", "random", model_name, build))
        suite.append(_ancestral_case("ancestral (reversed)", lambda n: np.arange(n)[::-1].copy(),
                                     model_name, build))

    def make_perturbed():
        model = _models()["TabularJoint(V=3, L=4)"]()
        family = perturbed(model, jax.random.key(7), 0.3)
        sampler = Sampler(lambda key, n: ancestral(key, family, n, order="random"),
                          law=lambda: ancestral_law(family, "random"),
                          name="ancestral (random order), perturbed conditionals")
        return sampler, model

    suite.append(Case("ancestral (random), perturbed 0.3", "TabularJoint(V=3, L=4)", "approximate",
                      make_perturbed))
    suite.extend(_masked_cases())
    suite.extend(_decoding_cases())
    suite.append(Case("HMM.sample_constrained (GeLaTo)", "HMM(K=3, V=3, L=4), no equal neighbours", "exact",
                      _hmm_constrained))
    suite.extend(_tokenization_cases())
    return suite


def _tokenization_cases() -> list[Case]:
    """Characters generated from the exact token model of a character chain (theorem 11).

    The target is the chain's law of the 4 characters after the prompt ``"cab"``: a
    :class:`MarkovChain` started from the row of ``b``.  The cover sampler draws it exactly; the naive
    sampler (encode the prompt, continue from its encoding) conditions on a token boundary after it.
    """
    from arprob.tokenization import (
        BPETokenizer,
        MaxPrefixTokenizer,
        continuation_law,
        induced_token_model,
        sample_continuation,
    )

    prompt, num_chars = "cab", 4
    tokenizers = {
        "MPE": lambda: MaxPrefixTokenizer(["a", "b", "c", "ab", "bc", "abc", "ca"]),
        "BPE": lambda: BPETokenizer([("a", "b"), ("c", "a"), ("b", "c"), ("ab", "c")], "abc"),
    }

    def case(label: str, kind: str, method: str, claim: str) -> Case:
        def make():
            chain = MarkovChain.random(jax.random.key(8), len(prompt) + num_chars, 3)
            tokenizer = tokenizers[kind]()
            model = induced_token_model(chain, tokenizer, len(prompt) + num_chars)
            target = MarkovChain(chain.transition_probs[tokenizer.alphabet.index(prompt[-1])], chain.transition_probs,
                                 num_chars)
            sampler = Sampler(
                lambda key, n: sample_continuation(key, model, tokenizer, prompt, num_chars, n, method=method),
                law=lambda: continuation_law(model, tokenizer, prompt, num_chars, method=method), name=label)
            return sampler, target

        return Case(label, f"MarkovChain(V=3) after {prompt!r}, {kind} tokens", claim, make)

    return [
        case("characters from tokens (cover)", "MPE", "cover", "exact"),
        case("characters from tokens (cover)", "BPE", "cover", "exact"),
        case("characters from tokens (naive prompt)", "MPE", "naive", "approximate"),
        case("characters from tokens (naive prompt)", "BPE", "naive", "approximate"),
    ]


def _hmm_constrained():
    """Constrained sampling against the target's law restricted to the DFA's language, renormalized."""
    model = _models()["HMM(K=3, V=3, L=4)"]()
    transitions = np.array([[1, 2, 3], [4, 2, 3], [1, 4, 3], [1, 2, 4], [4, 4, 4]])  # state = last token + 1
    dfa = DFA(transitions, 0, np.array([True, True, True, True, False]))  # 4 = saw two equal neighbours
    sequences = all_sequences(3, 4)
    law = np.where(np.all(sequences[:, 1:] != sequences[:, :-1], axis=1), np.asarray(model.law()), 0.0)
    law /= law.sum()
    sampler = Sampler(lambda key, n: model.sample_constrained(key, dfa, n), law=lambda: law,
                      name="HMM.sample_constrained (GeLaTo)")
    return sampler, TabularJoint(probs=law.reshape((3,) * 4))


def _sampler_case(label: str, model_name: str, claim: str, sample, law, draft=None) -> Case:
    """A case whose sampler is ``sample(key, model, n)`` and whose law is ``law(model)``.

    With ``draft`` (a builder), both take the draft model as a last argument.  Models are built
    once, in ``make``, outside the sampler: ``check`` traces the sampler, and a model built inside
    the trace would hold tracers (no tabulated conditionals, no concrete checks).
    """

    def make():
        model = _models()[model_name]()
        extra = () if draft is None else (draft(),)
        return Sampler(lambda key, n: sample(key, model, n, *extra), law=lambda: law(model, *extra),
                       name=label), model

    return Case(label, model_name, claim, make)


def _masked_cases() -> list[Case]:
    """Masked-diffusion samplers (arprob.samplers.masked, theorem 5)."""
    linear, cosine = schedules.linear(), schedules.cosine()

    def budget_blocks(model):
        return budgeted_blocks(step_losses(model, model), 3)[0]

    rows = []
    for model_name in ("TabularJoint(V=3, L=4)", "NGram(V=2, K=2, L=6)"):
        rows += [
            _sampler_case("first_hitting", model_name, "exact",
                          lambda key, m, n: first_hitting(key, m, n), first_hitting_law),
            _sampler_case("parallel_unmask (k=1)", model_name, "exact",
                          lambda key, m, n: parallel_unmask(key, m, n, 1), lambda m: parallel_unmask_law(m, 1)),
            _sampler_case("parallel_unmask (k=2)", model_name, "approximate",
                          lambda key, m, n: parallel_unmask(key, m, n, 2), lambda m: parallel_unmask_law(m, 2)),
            _sampler_case("masked_euler (16 steps, linear)", model_name, "approximate",
                          lambda key, m, n: masked_euler(key, m, n, 16, linear),
                          lambda m: masked_euler_law(m, 16, linear)),
            _sampler_case("masked_euler (16 steps, cosine, cached)", model_name, "approximate",
                          lambda key, m, n: masked_euler(key, m, n, 16, cosine, cache=True),
                          lambda m: masked_euler_law(m, 16, cosine, cache=True)),
            _sampler_case("ARDM budget (3 calls)", model_name, "approximate",
                          lambda key, m, n: parallel_unmask(key, m, n, budget_blocks(m)),
                          lambda m: parallel_unmask_law(m, budget_blocks(m))),
        ]
    return rows


def _drafts():
    """A draft model for each target of the decoding rows (same shape, a different random model)."""
    return {
        "TabularJoint(V=3, L=4)": lambda: TabularJoint.random(jax.random.key(5), 4, 3, concentration=1.0),
        "NGram(V=2, K=2, L=6)": lambda: NGram.random(jax.random.key(4), 6, 2, 2),
    }


def _decoding_cases() -> list[Case]:
    """Speculative and parallel decoding (theorems 6-8) and sigma-GPT as published."""
    rows = []
    for model_name, draft in _drafts().items():
        rows += [
            _sampler_case("speculative (draft 3)", model_name, "exact",
                          lambda key, m, n, d: speculative(key, m, d, n, 3),
                          lambda m, d: speculative_law(m, d, 3), draft=draft),
            _sampler_case("SpecTr (3 drafts of 2)", model_name, "exact",
                          lambda key, m, n, d: spectr(key, m, d, n, 3, 2),
                          lambda m, d: spectr_law(m, d, 3, 2), draft=draft),
            _sampler_case("any-subset speculative (k=3)", model_name, "exact",
                          lambda key, m, n: any_subset_speculative(key, m, n, 3),
                          lambda m: any_subset_speculative_law(m, 3)),
            _sampler_case("sigma-GPT rejection (with residual)", model_name, "exact",
                          lambda key, m, n: sigma_gpt_rejection(key, m, n, residual=True),
                          lambda m: sigma_gpt_rejection_law(m, residual=True)),
            _sampler_case("sigma-GPT rejection (as published)", model_name, "approximate",
                          lambda key, m, n: sigma_gpt_rejection(key, m, n),
                          lambda m: sigma_gpt_rejection_law(m)),
        ]

    def make_blockwise():
        chain = _models()["MarkovChain(V=3, L=5)"]()
        heads = perturbed(chain, jax.random.key(7), 0.5)
        point = np.zeros((chain.vocab_size,) * chain.length)
        point[tuple(greedy(chain))] = 1.0  # the claim: the output is greedy decoding's, always
        sampler = Sampler(lambda key, n: blockwise_parallel(key, chain, heads, n, 3),
                          law=lambda: blockwise_parallel_law(chain, heads, 3), name="blockwise parallel")
        return sampler, TabularJoint(probs=point)

    rows.append(Case("blockwise parallel (block 3) = greedy", "greedy path of MarkovChain(V=3, L=5)", "exact",
                     make_blockwise))
    return rows
