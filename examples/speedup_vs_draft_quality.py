# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Speedup vs draft quality
#
# Speculative decoding and SpecTr never change the law of the output
# (theorems [6](../proofs/06-speculative-decoding.md) and [7](../proofs/07-spectr.md));
# what the draft buys is fewer calls to the target.  This example puts
# numbers on it, for $V = 3$, $L = 5$:
#
# 1. the closed form $(1 - \alpha^{\gamma+1})/(1 - \alpha)$ tokens per target
#    call against the exact finite-length value for i.i.d. positions, where
#    the acceptance is a constant $\alpha = 1 - \mathrm{TV}(p, q)$;
# 2. exact expected target calls (`speculative_cost`, `spectr_cost`) for
#    $\gamma = 1..4$ drafted tokens and $k = 1..3$ drafts, checked against
#    measured calls at one setting;
# 3. a cost model for the wall-clock speedup, with a draft call costing $c$
#    target calls.
#
# Tokens per target call of one sequence is $L / T$ with $T$ its number of
# target calls; over many sequences we report the mean $\bar T$ and
# $L / \bar T$ (a ratio of means: $E[L/T] \ne L/E[T]$).

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

from arprob import MarkovChain
from arprob.samplers.spectr import spectr, spectr_cost
from arprob.samplers.speculative import expected_tokens_per_call, speculative_cost
from arprob.verify import tv

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

VOCAB, LENGTH = 3, 5
GAMMAS = [1, 2, 3, 4]
DRAFTS = [1, 2, 3]
NUM_SAMPLES = 5_000  # one sample size for every sampler call


def chain(initial, transition) -> MarkovChain:
    return MarkovChain(np.asarray(initial, np.float64), np.asarray(transition, np.float64), LENGTH)


def mixture(a: MarkovChain, b: MarkovChain, weight: float) -> MarkovChain:
    """Every conditional of ``a`` mixed with ``b``'s: ``(1 - w) a + w b``."""
    return chain((1 - weight) * np.asarray(a.initial_probs) + weight * np.asarray(b.initial_probs),
                 (1 - weight) * np.asarray(a.transition_probs) + weight * np.asarray(b.transition_probs))


def iid(model: MarkovChain) -> MarkovChain:
    """The chain whose every position is drawn from ``model``'s initial law."""
    return chain(model.initial_probs, np.tile(np.asarray(model.initial_probs), (VOCAB, 1)))


def finite_length_calls(alpha: float, gamma: int, length: int) -> float:
    """Expected target calls for a constant acceptance ``alpha`` (theorem 6, part 4, scalar recursion).

    A round from committed length ``t`` drafts ``g = min(gamma, L - t)`` tokens; it commits ``j + 1``
    tokens when the first ``j < g`` are accepted and the next rejected, ``g + 1`` when all are
    accepted (``g`` when the sequence ends there: no bonus token past the end).
    """
    calls = np.zeros(length + 1)
    for t in range(length - 1, -1, -1):
        g = min(gamma, length - t)
        expected = 1.0 + sum(alpha**j * (1 - alpha) * calls[t + j + 1] for j in range(g))
        calls[t] = expected + alpha**g * calls[min(t + g + 1, length)]
    return float(calls[0])


target = MarkovChain.random(jax.random.key(0), LENGTH, VOCAB, concentration=0.7)
other = MarkovChain.random(jax.random.key(1), LENGTH, VOCAB, concentration=0.7)

# %% [markdown]
# ## 1. The closed form, and what a finite length does to it
#
# With a constant acceptance $\alpha$, a round far from the end commits
# $\sum_{j=0}^{\gamma} \alpha^j$ tokens on average.  At length $L$ two things
# cut that down: the last round drafts only what is left, and a round that
# accepts everything at the very end gets no bonus token.  The exact number
# of calls then follows a short recursion over the committed length
# (`finite_length_calls` above), which `speculative_cost` reproduces for
# i.i.d. positions.

# %%
iid_target, iid_other = iid(target), iid(other)
WEIGHTS = [0.25, 0.5, 0.75, 1.0]
print(f"i.i.d. positions, L = {LENGTH}: tokens per target call L / E[T]")
print(f"{'w':>5} {'alpha':>7} {'gamma':>5} {'closed form':>12} {'finite L':>9} {'speculative_cost':>17}")
iid_rows = []
for w in WEIGHTS:
    draft = mixture(iid_target, iid_other, w)
    alpha = 1 - tv(np.asarray(iid_target.initial_probs), np.asarray(draft.initial_probs))
    for gamma in GAMMAS:
        closed = float(expected_tokens_per_call(alpha, gamma))
        finite = LENGTH / finite_length_calls(alpha, gamma, LENGTH)
        exact = LENGTH / speculative_cost(iid_target, draft, gamma).target_calls
        iid_rows.append((w, alpha, gamma, closed, finite, exact))
        print(f"{w:>5.2f} {alpha:>7.4f} {gamma:>5} {closed:>12.4f} {finite:>9.4f} {exact:>17.4f}")
        assert abs(finite - exact) < 1e-12
shortfall = max((closed - finite) / closed for _, _, _, closed, finite, _ in iid_rows)
print(f"at L = {LENGTH} the finite-length value falls short of the closed form by up to {shortfall:.0%}")

# %% [markdown]
# ## 2. Exact calls for $\gamma = 1..4$ and $k = 1..3$, and measured ones
#
# For a general chain the acceptance differs from context to context and
# there is no closed form; `speculative_cost` and `spectr_cost` compute the
# exact expected numbers of target and draft calls by dynamic programs over
# round starts.  $k = 1$ SpecTr is speculative decoding.  SpecTr's $k$ drafts
# are scored in the same target call and drafted in the same (batched) draft
# calls, so a call is counted once whatever $k$.

# %%
W = 0.75
draft = mixture(target, other, W)
spec = {gamma: speculative_cost(target, draft, gamma) for gamma in GAMMAS}
tree = {(k, gamma): spectr_cost(target, draft, k, gamma) for k in DRAFTS for gamma in GAMMAS}
print(f"\nchain target, draft q_w with w = {W} (TV of the laws {tv(np.asarray(draft.law()), target.law()):.3f}; "
      f"acceptance {spec[1].acceptance_rate:.3f} at gamma = 1)")
print("exact tokens per target call L / E[T]  (ancestral sampling: 1)")
print(f"{'':>16}" + "".join(f"{'gamma=' + str(g):>10}" for g in GAMMAS))
print(f"{'speculative':>16}" + "".join(f"{LENGTH / spec[g].target_calls:>10.4f}" for g in GAMMAS))
for k in DRAFTS:
    print(f"{f'SpecTr k={k}':>16}" + "".join(f"{LENGTH / tree[k, g].target_calls:>10.4f}" for g in GAMMAS))
for gamma in GAMMAS:
    assert abs(tree[1, gamma].target_calls - spec[gamma].target_calls) < 1e-12
grows_with_k = all(tree[k + 1, g].target_calls < tree[k, g].target_calls for k in DRAFTS[:-1] for g in GAMMAS)
print(f"tokens per target call grow with k at every gamma: {grows_with_k}")

# %% [markdown]
# Measured: SpecTr with $k = 2$ drafts of $\gamma = 2$ tokens (the example
# `speculative_decoding_is_exact.py` measures speculative decoding's calls).
# One setting only: each $(k, \gamma)$ is a separate compilation of the sampler.

# %%
MEASURED_GAMMA, MEASURED_K = 2, 2
_, tree_stats = spectr(jax.random.key(2), target, draft, NUM_SAMPLES, MEASURED_K, MEASURED_GAMMA)
exact = tree[MEASURED_K, MEASURED_GAMMA]
calls = np.asarray(tree_stats.target_calls, np.float64)
half = 3 * calls.std() / np.sqrt(calls.size)
measured = calls.mean()
print(f"SpecTr k={MEASURED_K}, gamma={MEASURED_GAMMA}: mean target calls {measured:.4f} +- {half:.4f} (3 s.e., "
      f"{NUM_SAMPLES:,} samples), exact {exact.target_calls:.4f}")
print(f"  tokens per call: L / mean = {LENGTH / measured:.4f}, exact L / E[T] = {LENGTH / exact.target_calls:.4f}; "
      f"the mean of L / T is larger, {np.mean(LENGTH / calls):.4f}")
print(f"  accepted draft tokens per sequence: measured {float(tree_stats.accepted.mean()):.4f}, "
      f"exact {exact.accepted:.4f}")
assert abs(measured - exact.target_calls) < half

# %%
fig, (ax_iid, ax_chain) = plt.subplots(1, 2, figsize=(11, 4))
alphas = np.linspace(0, 0.999, 200)
for gamma, color in zip(GAMMAS, ("C0", "C1", "C2", "C3")):
    ax_iid.plot(alphas, expected_tokens_per_call(alphas, gamma), "-", color=color, label=f"gamma={gamma}")
    ax_iid.plot(alphas, [LENGTH / finite_length_calls(a, gamma, LENGTH) for a in alphas], "--", color=color)
    points = [(row[1], row[5]) for row in iid_rows if row[2] == gamma]
    ax_iid.plot(*zip(*points), "o", color=color)
ax_iid.set_xlabel("acceptance alpha = 1 - TV(p, q)")
ax_iid.set_ylabel("tokens per target call")
ax_iid.set_title(f"i.i.d. positions: closed form (solid), L = {LENGTH} (dashed), speculative_cost (dots)",
                 fontsize=9)
ax_iid.legend(fontsize=8)
for k in DRAFTS:
    ax_chain.plot(GAMMAS, [LENGTH / tree[k, g].target_calls for g in GAMMAS], "o-", label=f"SpecTr k={k} (exact)")
ax_chain.plot([MEASURED_GAMMA], [LENGTH / measured], "kx", markersize=9, label=f"SpecTr k={MEASURED_K}, measured")
ax_chain.set_xlabel("drafted tokens per round, gamma")
ax_chain.set_ylabel("tokens per target call")
ax_chain.set_title(f"Markov chain target, draft w = {W}", fontsize=9)
ax_chain.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "speculative_speedup_vs_draft_quality.png", dpi=120)
plt.show()

# %% [markdown]
# ## 3. A cost model for the speedup
#
# Count a draft call as $c$ target calls and assume a target call costs the
# same whether it scores one prefix or $k(\gamma + 1)$ of them (the
# memory-bound regime of large models; on a compute-bound accelerator it
# does not hold).  Then, far from the end of the sequence, a round costs
# $1 + \gamma c$ and the speedup over ancestral sampling is
#
# $$S(\alpha, \gamma, c) = \frac{1 - \alpha^{\gamma+1}}{(1 - \alpha)(1 + \gamma c)} .$$
#
# At a finite length the exact version is $L / (E[T] + c\,E[D])$ with the
# expected target and draft calls from `speculative_cost` / `spectr_cost`.
# This is a model: real drafts have fixed overheads, batching changes $c$,
# and a tree of $k$ drafts is not free on a compute-bound device.

# %%
print("\ncost model S = (1 - a^(g+1)) / ((1 - a)(1 + g c)): best gamma and its speedup")
print(f"{'alpha':>6}" + "".join(f"{'c=' + str(c):>16}" for c in (0.02, 0.05, 0.1, 0.2, 0.5)))
for alpha in (0.5, 0.6, 0.7, 0.8, 0.9):
    cells = []
    for c in (0.02, 0.05, 0.1, 0.2, 0.5):
        speedups = [float(expected_tokens_per_call(alpha, g)) / (1 + g * c) for g in range(1, 41)]
        best = int(np.argmax(speedups))
        cells.append(f"{speedups[best]:.2f} (g={best + 1})")
    print(f"{alpha:>6.2f}" + "".join(f"{cell:>16}" for cell in cells))

C = 0.1
print(f"\nexact finite-length speedup L / (E[T] + c E[D]) at c = {C}, chain, w = {W}")
print(f"{'':>16}" + "".join(f"{'gamma=' + str(g):>10}" for g in GAMMAS))
print(f"{'speculative':>16}" + "".join(
    f"{LENGTH / (spec[g].target_calls + C * spec[g].draft_calls):>10.3f}" for g in GAMMAS))
for k in DRAFTS[1:]:
    print(f"{f'SpecTr k={k}':>16}" + "".join(
        f"{LENGTH / (tree[k, g].target_calls + C * tree[k, g].draft_calls):>10.3f}" for g in GAMMAS))

# %% [markdown]
# **Reading the numbers.**  Tokens per call grow with $\gamma$ and with the
# acceptance, and saturate at $1/(1-\alpha)$: past a few drafted tokens a
# poor draft buys nothing while its calls keep costing.  At $L = 5$ the end
# of the sequence cuts into the closed form (a round that reaches the end gets
# no bonus token; the line under the first table gives the largest shortfall).
# More drafts ($k$) raise the acceptance at each position, and with it tokens
# per call (the line under the second table checks it at every $\gamma$), at
# no extra target or draft calls in this accounting: the price is $k$ times
# more work inside each call.
