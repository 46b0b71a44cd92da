r"""A catalogue of broken samplers that the verifier must catch.

Each :class:`Mutant` is a sampler with one mistake that people actually make
when they write these algorithms: an inverted acceptance ratio, a residual
that is not renormalized, a bonus token drawn from the draft, a cache that is
never invalidated, a context off by one, noise in bfloat16, and so on.  Every
mutant comes with its **exact law**, computed from the broken algorithm's own
factors by enumeration (never from its samples), so the damage is known
exactly: ``verify.tv(mutant.law(), mutant.target.law())``.  A statistical
check that passes one of them at its planned sample size is a weak check;
``tests/test_mutants.py`` runs :func:`arprob.verify.check` on every mutant and
requires a rejection, and on the matching correct sampler and requires a pass.

>>> from arprob.samplers.mutants import catalogue
>>> from arprob.verify import check
>>> mutant = catalogue()[0]
>>> report = check(mutant.sampler, mutant.target)   # doctest: +SKIP
>>> report.passed                                    # doctest: +SKIP
False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from arprob import schedules
from arprob._enumerate import all_sequences
from arprob._random import categorical
from arprob.conditionals import as_conditionals, join_static, split_static
from arprob.distributions import MarkovChain, TabularJoint
from arprob.samplers.ancestral import _log_conditionals_on
from arprob.samplers.masked import _masked_euler, _reveal_probs, parallel_unmask, parallel_unmask_law
from arprob.samplers.spectr import _run as _run_spectr
from arprob.samplers.spectr import _spectr_dp
from arprob.samplers.speculative import _round_dp, _Variant, prefix_log_probs
from arprob.samplers.speculative import _run as _run_speculative
from arprob.verify.sampling import Sampler

__all__ = ["Mutant", "catalogue"]


@dataclass(frozen=True)
class Mutant:
    """One deliberately broken sampler.

    Attributes
    ----------
    name
        Short identifier, e.g. ``"speculative: min(1, q/p)"``.
    description
        The mistake, and why it changes the law.
    sampler
        A :class:`~arprob.verify.Sampler`: ``sampler(key, num_samples)``; it
        carries the exact law, so :func:`~arprob.verify.check` reports the exact TV.
    target
        The exact model the sampler claims to draw from (hand it to ``check``).
    law
        Zero-argument callable returning the mutant's exact law (float64 over
        all ``V**L`` sequences, lexicographic).
    """

    name: str
    description: str
    sampler: Sampler
    target: Any
    law: Callable[[], np.ndarray]


def _mutant(name: str, description: str, sample, law, target) -> Mutant:
    return Mutant(name, description, Sampler(sample, law=law, name=name), target, law)


# -- models ---------------------------------------------------------------------------


def _table():
    return TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5)


def _table_draft():
    return TabularJoint.random(jax.random.key(5), 4, 3, concentration=1.0)


def _tempered_chain(chain: MarkovChain, temperature: float) -> MarkovChain:
    """Every conditional of a Markov chain raised to 1/temperature and renormalized: again a Markov chain."""
    initial = np.asarray(chain.initial_probs, np.float64) ** (1.0 / temperature)
    transition = np.asarray(chain.transition_probs, np.float64) ** (1.0 / temperature)
    return MarkovChain(initial / initial.sum(), transition / transition.sum(axis=-1, keepdims=True), chain.length)


def _tail_table(vocab_size: int = 16, length: int = 2, gap: float = 4.0) -> TabularJoint:
    """Independent positions, each one token at logit 0 and ``V - 1`` tokens at ``-gap``."""
    row = np.full(vocab_size, -gap)
    row[0] = 0.0
    row = np.exp(row - np.log(np.exp(row).sum()))
    probs = row
    for _ in range(length - 1):
        probs = np.multiply.outer(probs, row)
    return TabularJoint(probs=probs)


# -- speculative and SpecTr variants ----------------------------------------------------


def _speculative_mutant(name, description, variant, target=None, draft=None, check_target=None,
                        draft_length: int = 2) -> Mutant:
    target = _table() if target is None else target
    draft = _table_draft() if draft is None else draft
    family, draft_family = as_conditionals(target), as_conditionals(draft)

    def sample(key, num_samples):
        return _run_speculative(key, family, draft_family, num_samples, draft_length, variant)

    def law():
        return _round_dp(family, draft_family, draft_length, variant, 2**26, name)[0]

    return _mutant(name, description, sample, law, target if check_target is None else check_target)


def _spectr_mutant() -> Mutant:
    name = "SpecTr: rho = 1 with 3 drafts"
    target, draft = _table(), _table_draft()
    family, draft_family = as_conditionals(target), as_conditionals(draft)
    return _mutant(
        name,
        "k-sequential selection with rho fixed at 1 instead of the smallest feasible rho: each of the k "
        "candidates is accepted with min(1, p/q), so tokens the draft over-proposes are accepted up to k times "
        "too often and the residual, clipped at 0, cannot compensate",
        lambda key, n: _run_spectr(key, family, draft_family, n, 3, 2, 1.0),
        lambda: _spectr_dp(family, draft_family, 3, 2, 1.0, 2**26, name)[0],
        target,
    )


# -- masked diffusion ------------------------------------------------------------------------


def _parallel_unmask_mutant() -> Mutant:
    target = _table()
    return _mutant(
        "parallel unmasking (k=2) claimed exact",
        "two positions revealed per call, each drawn from its own conditional given the same context: the "
        "pair is drawn from the product of its conditionals, not their joint (theorem 5)",
        lambda key, n: parallel_unmask(key, target, n, 2),
        lambda: parallel_unmask_law(target, 2),
        target,
    )


def _stale_cache_mutant() -> Mutant:
    target = _table()
    family = as_conditionals(target)
    dynamic, static = split_static(family)
    reveal = jnp.asarray(_reveal_probs(schedules.linear(), 16), jnp.result_type(float))

    def law():
        sequences = all_sequences(family.vocab_size, family.length)
        first_call = _log_conditionals_on(family, sequences, np.zeros(family.length, bool))
        return np.exp(first_call.sum(axis=1))

    return _mutant(
        "RADD cache never invalidated",
        "masked Euler (16 steps) with the logits cached but the cache not marked stale after a token is revealed: "
        "every token is drawn from the first call's logits, i.e. from its marginal, so the law is the product "
        "of the marginals",
        lambda key, n: _masked_euler(key, dynamic, static, reveal, n, True, False),
        law,
        target,
    )


# -- ancestral sampling ---------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("static", "num_samples"))
def _ancestral_short_context(key, dynamic, static, num_samples: int):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)

    def step(t, tokens):
        observed = jnp.broadcast_to(jnp.arange(length) < t - 1, tokens.shape)  # off by one: drops x_{t-1}
        logits = family(tokens, observed)[:, t]
        return tokens.at[:, t].set(categorical(jax.random.fold_in(key, t), logits).astype(jnp.int32))

    tokens = jax.lax.fori_loop(0, length, step, tokens)
    return tokens, None


def _short_context_mutant() -> Mutant:
    target = MarkovChain.random(jax.random.key(2), 5, 3)
    family = as_conditionals(target)
    dynamic, static = split_static(family)

    def law():
        sequences = all_sequences(family.vocab_size, family.length)
        log_law = np.zeros(sequences.shape[0])
        for t in range(family.length):
            log_law += _log_conditionals_on(family, sequences, np.arange(family.length) < t - 1)[:, t]
        return np.exp(log_law)

    def sample(key, num_samples):
        return _ancestral_short_context(key, dynamic, static, num_samples)[0]

    return _mutant(
        "ancestral: context off by one",
        "token t drawn from p(x_t | x_{<t-1}): the newest token is left out of the context (a KV-cache or "
        "slicing off-by-one); for a Markov chain every step forgets the state it depends on",
        sample, law, target,
    )


def _bfloat16_categorical(key, logits):
    """``jax.random.categorical`` on bfloat16 logits (default mode), with every rounding made explicit.

    JAX computes ``argmax(logits - log(-log(u)))`` in bfloat16: each operation in float32, rounded to
    bfloat16 (round to nearest even).  Under ``jit``, XLA's default ``--xla_allow_excess_precision``
    may skip those roundings, which changes the law; ``lax.reduce_precision`` on float32 values is an
    explicit operation that XLA keeps, so this function has the eager law
    (:func:`arprob.precision.jax_grouped_law`) whether it is jitted, fused into a larger loop, or not.
    """
    def rounded(x):
        return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)

    tiny = float(jnp.finfo(jnp.bfloat16).tiny)
    uniform = jax.random.uniform(key, logits.shape, jnp.bfloat16, minval=tiny, maxval=1.0).astype(jnp.float32)
    noise = -rounded(jnp.log(-rounded(jnp.log(uniform))))
    return jnp.argmax(rounded(logits.astype(jnp.float32) + noise), axis=-1)


@partial(jax.jit, static_argnames=("static", "num_samples"))
def _ancestral_bfloat16(key, dynamic, static, num_samples: int):
    family = join_static(dynamic, static)
    length, vocab_size = family.length, family.vocab_size
    tokens = jnp.full((num_samples, length), vocab_size, jnp.int32)

    def step(t, tokens):
        observed = jnp.broadcast_to(jnp.arange(length) < t, tokens.shape)
        logits = jax.nn.log_softmax(family(tokens, observed)[:, t], axis=-1).astype(jnp.bfloat16)
        token = _bfloat16_categorical(jax.random.fold_in(key, t), logits)  # the mistake: bf16 Gumbel noise
        return tokens.at[:, t].set(token.astype(jnp.int32))

    return jax.lax.fori_loop(0, length, step, tokens)


def _bfloat16_mutant() -> Mutant:
    from arprob.precision import jax_grouped_law

    target = _tail_table()
    family = as_conditionals(target)
    dynamic, static = split_static(family)

    def law():
        vocab_size, length = family.vocab_size, family.length
        sequences = all_sequences(vocab_size, length)
        log_probs = prefix_log_probs(family, sequences)
        law = np.ones(sequences.shape[0])
        for t in range(length):
            # the exact law of JAX's bfloat16 sampler for each distinct prefix (each token its own group)
            codes = sequences[:, :t] @ (vocab_size ** np.arange(t))
            _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
            row_laws = np.stack([jax_grouped_law(log_probs[i, t], np.ones(vocab_size, int), dtype="bfloat16")
                                 for i in first])
            law *= row_laws[inverse.ravel(), sequences[:, t]]
        return law

    return _mutant(
        "ancestral: bfloat16 Gumbel noise",
        "jax.random.categorical on bfloat16 logits draws bfloat16 Gumbel noise, capped at about 4.85 (7 "
        "mantissa bits): tokens more than ~5 nats below the best are drawn far too rarely (theorem 13); the "
        "target has 15 tokens at -4 nats holding 22% of the mass per position",
        lambda key, n: _ancestral_bfloat16(key, dynamic, static, n),
        law, target,
    )


# -- sigma-GPT ---------------------------------------------------------------------------------


def _sigma_gpt_mutants() -> list[Mutant]:
    from arprob.samplers.any_subset import sigma_gpt_rejection, sigma_gpt_rejection_law

    target = _table()
    rows = []
    for num_orders, what in ((1, "one order"), (4, "best of 4 orders")):
        rows.append(_mutant(
            f"sigma-GPT rejection as published ({what})",
            "token-based rejection sampling: all remaining tokens drafted in one burst, the accepted prefix of "
            f"the verification order kept ({what}), rejected tokens discarded and redrawn next round without a "
            "residual: the first rejected position is redrawn from q instead of (p - q)+, which biases it",
            lambda key, n, m=num_orders: sigma_gpt_rejection(key, target, n, num_orders=m),
            lambda m=num_orders: sigma_gpt_rejection_law(target, num_orders=m),
            target,
        ))
    return rows


def catalogue() -> list[Mutant]:
    """Every mutant, each with its sampler, exact law and target (laws are computed when called)."""
    base_chain = MarkovChain.random(jax.random.key(2), 5, 3)
    draft_chain = MarkovChain.random(jax.random.key(6), 5, 3)
    temperature = 2.0
    return [
        _speculative_mutant(
            "speculative: min(1, q/p)", "acceptance ratio inverted: drafts the target likes less are accepted "
            "more often", _Variant(ratio="q/p")),
        _speculative_mutant(
            "speculative: resample from p", "on rejection the token is redrawn from the target p instead of "
            "the residual (p - q)+: mass the draft already delivered is delivered twice",
            _Variant(residual="target")),
        _speculative_mutant(
            "speculative: residual (q - p)+", "draft and target swapped in the residual",
            _Variant(residual="swapped")),
        _speculative_mutant(
            "speculative: residual not renormalized", "inverse-CDF sampling on (p - q)+ without dividing by its "
            "total TV(p, q): a uniform above the total falls through to the last token",
            _Variant(residual="unnormalized")),
        _speculative_mutant(
            "speculative: acceptance uniform reused", "the uniform u that rejected the draft is reused to draw "
            "the residual by inverse CDF; given the rejection u is uniform on [min(1, p/q), 1), not [0, 1)",
            _Variant(residual="reused_uniform")),
        _speculative_mutant(
            "speculative: accepted prefix off by one", "the first rejected draft is kept (the accepted count "
            "includes it) and nothing is resampled; its law per position coincides with the swapped residual's",
            _Variant(residual="rejected_draft")),
        _speculative_mutant(
            "speculative: bonus from the draft", "when all drafts are accepted the extra token is the draft's "
            "next token instead of a draw from the target", _Variant(bonus="draft")),
        _speculative_mutant(
            "speculative: top-k on the draft only", "drafts drawn from top-2 of q but the ratio and residual use "
            "the untruncated q, so the acceptance probabilities belong to another proposal",
            _Variant(draft_top_k=2)),
        _speculative_mutant(
            "speculative: temperature after normalization (target side)",
            "sampling at temperature 2: the draft is tempered correctly, but the target's log-probabilities are "
            "divided by 2 after log_softmax and used unnormalized in the ratio and the residual",
            _Variant(target_power=1.0 / temperature), target=base_chain,
            draft=_tempered_chain(draft_chain, temperature), check_target=_tempered_chain(base_chain, temperature)),
        _spectr_mutant(),
        _parallel_unmask_mutant(),
        _stale_cache_mutant(),
        _short_context_mutant(),
        _bfloat16_mutant(),
        *_sigma_gpt_mutants(),
    ]
