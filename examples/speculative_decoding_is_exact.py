# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Speculative decoding is exact: the picture
#
# Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) lets a cheap
# *draft* model $q$ propose $\gamma$ tokens, scores them all with the *target*
# $p$ in one call, keeps each with probability $\min(1, p/q)$ and redraws the
# first rejected one from the residual $(p - q)_+$.  Whatever the draft, the
# output is distributed as the target ([theorem 6](../proofs/06-speculative-decoding.md)),
# and a drafted token is accepted with probability $1 - \mathrm{TV}(p, q)$.
#
# On $V = 3$, $L = 4$ (81 sequences) both claims can be looked at directly:
#
# 1. the exact law of the algorithm (`speculative_law`, a dynamic program over
#    round starts, independent of the sampler) against the target's law, with
#    the empirical frequencies of `speculative` samples on top;
# 2. the acceptance rate against draft quality, for drafts that interpolate
#    between the target and another model: measured from samples, exact from
#    `speculative_cost`, and, for models whose positions are i.i.d., equal to
#    $1 - \mathrm{TV}(p, q)$.

# %%
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib

# headless when run as a script (tests, CI) unless MPLBACKEND says otherwise; in a notebook the
# figures show inline (plt.show() below) and are saved as well
if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scipy.stats

from arprob import MarkovChain
from arprob.samplers.speculative import speculative, speculative_cost, speculative_law
from arprob.verify import tv

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

VOCAB, LENGTH = 3, 4  # 81 sequences
GAMMA = 2  # drafted tokens per round
NUM_SAMPLES = 10_000  # one sample size and one draft length: the sampler is compiled once


def chain(initial, transition) -> MarkovChain:
    return MarkovChain(np.asarray(initial, np.float64), np.asarray(transition, np.float64), LENGTH)


def mixture(a: MarkovChain, b: MarkovChain, weight: float) -> MarkovChain:
    """Every conditional of ``a`` mixed with ``b``'s: ``(1 - w) a + w b`` (again a Markov chain)."""
    return chain((1 - weight) * np.asarray(a.initial_probs) + weight * np.asarray(b.initial_probs),
                 (1 - weight) * np.asarray(a.transition_probs) + weight * np.asarray(b.transition_probs))


def acceptance(stats) -> float:
    """Accepted drafts over examined drafts (a round's drafts after its rejection are never examined)."""
    accepted, rejected = float(stats.accepted.sum()), float(stats.rejected.sum())
    return accepted / (accepted + rejected)


def standard_error(stats) -> float:
    """Delta-method standard error of the ratio ``acceptance(stats)`` (per-sequence counts are i.i.d.)."""
    accepted = np.asarray(stats.accepted, np.float64)
    examined = accepted + np.asarray(stats.rejected, np.float64)
    rate = accepted.sum() / examined.sum()
    return float(np.std(accepted - rate * examined) / (examined.mean() * np.sqrt(accepted.size)))


target = MarkovChain.random(jax.random.key(0), LENGTH, VOCAB, concentration=0.7)
other = MarkovChain.random(jax.random.key(1), LENGTH, VOCAB, concentration=0.7)
draft = mixture(target, other, 0.8)

# %% [markdown]
# ## 1. The law of the output is the target's law
#
# The draft here is 80% of another random chain, so many drafted tokens are
# rejected (the acceptance rate is the last line below), yet the law of the
# output is the target's to rounding error, and 10,000 samples scatter around
# it as a multinomial should (Pearson's $\chi^2$ against its degrees of
# freedom, and its p-value).

# %%
target_law = np.asarray(target.law())
exact_law = speculative_law(target, draft, GAMMA)
tokens, stats = speculative(jax.random.key(10), target, draft, NUM_SAMPLES, GAMMA)
codes = np.asarray(tokens) @ (VOCAB ** np.arange(LENGTH - 1, -1, -1))
empirical = np.bincount(codes, minlength=VOCAB**LENGTH) / NUM_SAMPLES
chi2 = float((((empirical - target_law) * NUM_SAMPLES) ** 2 / (target_law * NUM_SAMPLES)).sum())
chi2_p_value = float(scipy.stats.chi2.sf(chi2, VOCAB**LENGTH - 1))
cost = speculative_cost(target, draft, GAMMA)
print(f"exact TV(speculative_law, target law)      = {tv(exact_law, target_law):.2e}")
print(f"TV(draft law, target law)                  = {tv(np.asarray(draft.law()), target_law):.4f}")
print(f"empirical TV from {NUM_SAMPLES:,} samples          = {tv(empirical, target_law):.4f} "
      f"(Pearson chi2 = {chi2:.1f} on {VOCAB**LENGTH - 1} d.o.f., p-value {chi2_p_value:.2f})")
print(f"acceptance: measured {acceptance(stats):.4f} (s.e. {standard_error(stats):.4f}), "
      f"exact {cost.acceptance_rate:.4f}; target calls: "
      f"measured {float(stats.target_calls.mean()):.4f}, exact {cost.target_calls:.4f} (ancestral: {LENGTH})")

# %%
order = np.argsort(-target_law)
fig, ax = plt.subplots(figsize=(11, 3.6))
ax.bar(np.arange(order.size), target_law[order], color="0.8", label="target law p(x)")
ax.plot(np.arange(order.size), exact_law[order], "k_", markersize=9, label="speculative_law (exact)")
ax.plot(np.arange(order.size), empirical[order], "r.", markersize=5, label=f"{NUM_SAMPLES:,} samples")
ax.plot(np.arange(order.size), np.asarray(draft.law())[order], "b:", lw=1, label="draft law q(x)")
ax.set_xlabel("the 81 sequences, by decreasing target probability")
ax.set_ylabel("probability")
ax.set_title(f"speculative decoding, gamma = {GAMMA}: the output law is the target law")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "speculative_law_vs_target.png", dpi=120)
plt.show()

# %% [markdown]
# ## 2. Acceptance against draft quality
#
# Drafts $q_w = (1 - w)\,p + w\,r$, conditional by conditional, for
# $w \in [0, 1]$.  `speculative_cost(target, draft, gamma).acceptance_rate`
# is the exact ratio E[accepted] / E[examined] that a long run measures.  For
# a chain each drafted token meets its own pair of conditionals, so the rate
# is an average of $1 - \mathrm{TV}(p(\cdot|c), q(\cdot|c))$ over the contexts
# $c$ the rounds reach.  When the positions are i.i.d. (every transition row
# equal to the initial law, for target and draft), every drafted token is
# accepted with the same probability and the rate is exactly
# $1 - \mathrm{TV}(p, q)$ (Wald's identity: the rounds stop at rejections, but
# each examined token is a fresh trial).

# %%
WEIGHTS = np.linspace(0.0, 1.0, 11)
MEASURED = [3, 6, 10]  # indices into WEIGHTS
MEASURED_WEIGHTS = WEIGHTS[MEASURED]
iid_target = chain(target.initial_probs, np.tile(np.asarray(target.initial_probs), (VOCAB, 1)))
iid_other = chain(other.initial_probs, np.tile(np.asarray(other.initial_probs), (VOCAB, 1)))
rows = {}
for name, p, r in (("chain", target, other), ("i.i.d.", iid_target, iid_other)):
    exact = np.array([speculative_cost(p, mixture(p, r, w), GAMMA).acceptance_rate for w in WEIGHTS])
    one_minus_tv = np.array([1 - tv(np.asarray(p.initial_probs), np.asarray(mixture(p, r, w).initial_probs))
                             for w in WEIGHTS])
    runs = [speculative(jax.random.key(20 + i), p, mixture(p, r, w), NUM_SAMPLES, GAMMA)[1]
            for i, w in enumerate(MEASURED_WEIGHTS)]
    measured = [(acceptance(st), standard_error(st)) for st in runs]
    rows[name] = (exact, one_minus_tv, measured)

print(f"\nacceptance rate, gamma = {GAMMA} ({NUM_SAMPLES:,} samples per measured point, +- 1 s.e.)")
print(f"{'w':>5} {'chain exact':>12} {'i.i.d. exact':>13} {'1-TV(p,q_w)':>12} {'difference':>11}")
for i, w in enumerate(WEIGHTS):
    exact_iid, one_minus = rows["i.i.d."][0][i], rows["i.i.d."][1][i]
    print(f"{w:>5.2f} {rows['chain'][0][i]:>12.4f} {exact_iid:>13.4f} {one_minus:>12.4f} "
          f"{exact_iid - one_minus:>11.1e}")
for name in rows:
    print(f"measured ({name}): " + ", ".join(
        f"w={w:.1f}: {m:.4f} +- {se:.4f} (exact {e:.4f})"
        for w, (m, se), e in zip(MEASURED_WEIGHTS, rows[name][2], rows[name][0][MEASURED])))
assert np.allclose(rows["i.i.d."][0], rows["i.i.d."][1], atol=1e-12)

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for (name, (exact, _, measured)), color in zip(rows.items(), ("C0", "C1")):
    ax.plot(WEIGHTS, exact, "-", color=color, label=f"{name}: speculative_cost (exact)")
    ax.errorbar(MEASURED_WEIGHTS, [m for m, _ in measured], yerr=[3 * se for _, se in measured], fmt="o",
                color=color, label=f"{name}: measured (3 s.e.)")
ax.plot(WEIGHTS, rows["i.i.d."][1], "k:", label="1 - TV(p, q_w)")
ax.set_xlabel("draft weight w on the other model  (q_w = (1-w) p + w r)")
ax.set_ylabel("acceptance rate")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "speculative_acceptance_vs_tv.png", dpi=120)
plt.show()

# %% [markdown]
# **Reading the numbers.**  The exact law of the algorithm matches the target
# to rounding error (the first line of section 1) for a draft whose tokens are
# often rejected: a bad draft costs calls, never correctness.  The acceptance
# falls from 1 ($q = p$) as the draft moves away, and for i.i.d. positions it
# is $1 - \mathrm{TV}(p, q)$ to rounding (the `difference` column); for a
# chain it is the same quantity averaged over the contexts the rounds visit.
assert tv(exact_law, target_law) < 1e-12
