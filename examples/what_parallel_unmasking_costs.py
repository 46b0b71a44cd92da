# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # What parallel unmasking costs
#
# A masked-diffusion or any-order network answers every position of a
# partially masked sequence in one call.  Revealing $k$ positions per call
# cuts the number of network evaluations (NFE) from $L$ to $\lceil L/k\rceil$,
# but the $k$ tokens are drawn *independently* given what is already revealed,
# so the sampler no longer draws from the model.  How far off is it?
#
# On a small space every sampler's law can be computed exactly
# (`parallel_unmask_law`, `masked_euler_law`), so we can answer with total
# variation distances instead of sample statistics:
#
# 1. TV against $k$ for models whose dependence between neighbours we can
#    tune ($\beta = 0$: independent tokens, nothing is lost);
# 2. the same for a small trained network;
# 3. ARDM's budgeted schedule: which steps to merge for a given number of calls;
# 4. the Euler (tau-leaping) sampler of MDLM/SEDD: TV against the number of
#    steps, and what RADD's caching saves.

# %%
import math
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

import arprob
from arprob import TabularJoint, schedules
from arprob._enumerate import all_sequences
from arprob.samplers import masked_euler, masked_euler_law, parallel_unmask_law
from arprob.samplers.budget import budget_curve
from arprob.verify import tv

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

VOCAB, LENGTH = 3, 5  # 243 sequences
SEQUENCES = all_sequences(VOCAB, LENGTH)
AGREEMENTS = (SEQUENCES[:, 1:] == SEQUENCES[:, :-1]).sum(axis=1)  # sum_i 1[x_i = x_{i+1}]


def neighbour_model(beta: float) -> TabularJoint:
    r"""$p_\beta(x) \propto \exp(\beta \sum_i 1[x_i = x_{i+1}])$: a chain that likes repeating itself."""
    weights = np.exp(beta * AGREEMENTS)
    return TabularJoint(probs=(weights / weights.sum()).reshape((VOCAB,) * LENGTH))


def tv_by_k(family, target_law) -> np.ndarray:
    """Exact TV(parallel_unmask_law(family, k), target) for k = 1..L."""
    return np.array([tv(parallel_unmask_law(family, k), target_law) for k in range(1, LENGTH + 1)])


KS = np.arange(1, LENGTH + 1)
NFE = np.ceil(LENGTH / KS).astype(int)

# %% [markdown]
# ## 1. TV against k, for tunable dependence
#
# `parallel_unmask(key, family, n, k)` reveals a uniformly random order $k$
# positions per call.  With exact conditionals, $k = 1$ is random-order
# ancestral sampling and draws from the model exactly; $k > 1$ replaces the
# joint law of each block by the product of its conditionals.  At $\beta = 0$
# the tokens are independent and that product *is* the joint.

# %%
BETAS = [0.0, 0.5, 1.0, 2.0, 4.0]
rows = {f"beta={beta:g}": tv_by_k(neighbour_model(beta), neighbour_model(beta).law()) for beta in BETAS}
dirichlet = TabularJoint(probs=np.random.default_rng(0).dirichlet(np.full(VOCAB**LENGTH, 0.5)).reshape(
    (VOCAB,) * LENGTH))
rows["Dirichlet(0.5) table"] = tv_by_k(dirichlet, dirichlet.law())

print(f"exact TV(parallel_unmask_law(model, k), model), V={VOCAB}, L={LENGTH}")
print(f"{'model':<22}" + "".join(f"{'k=' + str(k):>9}" for k in KS))
print(f"{'NFE = ceil(L/k)':<22}" + "".join(f"{n:>9}" for n in NFE))
for name, values in rows.items():
    print(f"{name:<22}" + "".join(f"{v:>9.4f}" for v in values))
print(f"\nbeta = 0: largest TV over k = 1..{LENGTH} is {rows['beta=0'].max():.1e} (independent tokens lose nothing)")
print(f"beta = 4: TV {rows['beta=4'][1]:.3f} already at k = 2; at k = L = {LENGTH} (one call) {rows['beta=4'][-1]:.3f}")

# %%
fig, (ax_k, ax_beta) = plt.subplots(1, 2, figsize=(11, 4))
for name, values in rows.items():
    ax_k.plot(KS, values, "o-", label=name)
ax_k.set_xlabel("tokens per call k  (NFE = ceil(L/k))")
ax_k.set_ylabel("exact TV to the model")
ax_k.set_title("parallel unmasking, exact conditionals")
ax_k.legend(fontsize=8)
for k in KS[1:]:
    ax_beta.plot(BETAS, [rows[f"beta={beta:g}"][k - 1] for beta in BETAS], "o-", label=f"k={k}")
ax_beta.set_xlabel(r"dependence $\beta$")
ax_beta.set_ylabel("exact TV to the model")
ax_beta.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "parallel_unmasking_tv_vs_k.png", dpi=120)
plt.show()

# %% [markdown]
# The cost is set by the dependence that a block cuts: zero for independent
# tokens at every $k$, and at $\beta = 4$ a large share of the mass is already
# misplaced at $k = 2$ (the two lines under the table).  Revealing everything
# in one call ($k = L$) samples the product of the single-position marginals.

# %% [markdown]
# ## 2. A small trained network
#
# `arprob.conditionals.neural` fits an MLP any-subset network to samples of
# the $\beta = 1$ model (500 Adam steps).  Its conditionals are learned, so
# even $k = 1$ misses the model a little; we report the distance to the model
# and to the network's own one-token-per-call law, which isolates what
# parallel unmasking adds.

# %%
model = neighbour_model(1.0)
target = model.law()
network = arprob.conditionals.neural(jax.random.key(0), model, num_train=5000, hidden_size=64, num_steps=500)
network_laws = [parallel_unmask_law(network, int(k)) for k in KS]
network_tv = np.array([tv(law, target) for law in network_laws])
network_self_tv = np.array([tv(law, network_laws[0]) for law in network_laws])
print(f"{'trained network':<22}" + "".join(f"{v:>9.4f}" for v in network_tv))
print(f"{'  vs its own k=1 law':<22}" + "".join(f"{v:>9.4f}" for v in network_self_tv))

# %% [markdown]
# ## 3. ARDM's budget: which steps to merge
#
# Hoogeboom et al. (ARDM) merge generation steps under a budget of $B$ calls
# by dynamic programming over the per-step losses $c_k$ (the expected loss of
# the step at which $k$ tokens are revealed): the steps $a..b-1$ cost
# $(b-a)c_a$ when generated together.  `budget_curve` runs that DP for every
# $B$ and computes the *exact* law of `parallel_unmask` with the chosen blocks.
# The DP loss is an upper bound on the true cross-entropy (Jensen over the
# generation paths; equal at $B = 1$).

# %%
curve = budget_curve(network, model)
# the best equal-size choice of k for each number of calls, for comparison
uniform_tv = {int(n): float(network_tv[NFE == n].min()) for n in sorted(set(NFE))}
print(f"{'calls':>5} {'blocks':>16} {'DP loss':>9} {'cross-ent':>10} {'TV':>8} {'TV, equal k':>12}")
for budget, blocks, dp_loss, cross_entropy, distance in zip(curve.budgets, curve.blocks, curve.dp_loss,
                                                            curve.cross_entropy, curve.tv):
    equal = f"{uniform_tv[int(budget)]:.4f}" if int(budget) in uniform_tv else "-"
    print(f"{budget:>5} {str(blocks):>16} {dp_loss:>9.4f} {cross_entropy:>10.4f} {distance:>8.4f} {equal:>12}")
print(f"model entropy {-(target @ np.log(target)):.4f} nats")
for budget, distance in zip(curve.budgets, curve.tv):
    if int(budget) in uniform_tv:  # budgets that some equal block size k reaches
        equal = uniform_tv[int(budget)]
        verdict = "lower" if distance < equal - 1e-12 else ("equal" if abs(distance - equal) <= 1e-12 else "higher")
        print(f"B = {budget}: TV with DP blocks {distance:.4f}, with the best equal k {equal:.4f}: DP {verdict}")

# %%
fig, (ax_loss, ax_tv) = plt.subplots(1, 2, figsize=(11, 4))
ax_loss.plot(curve.budgets, curve.dp_loss, "o-", label="DP loss (what ARDM optimizes)")
ax_loss.plot(curve.budgets, curve.cross_entropy, "s-", label="exact cross-entropy of the generated law")
ax_loss.axhline(-(target @ np.log(target)), color="k", linestyle=":", label="model entropy")
ax_loss.set_xlabel("network calls B")
ax_loss.set_ylabel("nats")
ax_loss.legend(fontsize=8)
ax_tv.plot(curve.budgets, curve.tv, "o-", label="DP blocks")
ax_tv.plot(list(uniform_tv), list(uniform_tv.values()), "s--", label="best equal-size k with B calls")
ax_tv.set_xlabel("network calls B")
ax_tv.set_ylabel("exact TV to the model")
ax_tv.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "ardm_budget_curve.png", dpi=120)
plt.show()

# %% [markdown]
# ## 4. Euler steps and caching
#
# MDLM/SEDD sample on a grid of $N$ times: in a step each masked token is
# revealed with probability $(m(t) - m(s))/m(t)$, all from the conditionals
# given the same $x_t$.  `masked_euler_law` is exact for every $N$; the error
# decays like $1/N$.  With `cache=True` the network is called only when the
# sequence changed, i.e. once per distinct reveal step: on the linear schedule
# each token's reveal step is uniform on the $N$ steps, so the mean NFE is
# $N(1 - (1-1/N)^L) \le \min(N, L)$.

# %%
STEPS = [1, 2, 4, 8, 16, 32]
euler_tv = [tv(masked_euler_law(model, n, schedules.linear()), target) for n in STEPS]
NFE_STEPS = [4, 16]
measured_nfe = [float(masked_euler(jax.random.key(n), model, 2000, n, schedules.linear(), cache=True)[1].nfe.mean())
                for n in NFE_STEPS]
print(f"{'N':>4} {'exact TV':>9} {'N * TV':>7}")
for n, distance in zip(STEPS, euler_tv):
    print(f"{n:>4} {distance:>9.4f} {n * distance:>7.3f}")
for n, nfe in zip(NFE_STEPS, measured_nfe):
    print(f"cached NFE at N={n}: measured {nfe:.3f} (2,000 samples), N(1-(1-1/N)^L) = "
          f"{n * (1 - (1 - 1 / n) ** LENGTH):.3f}, without cache {n}")
print(f"at N = {STEPS[-1]}, L = {LENGTH}: {STEPS[-1] * (1 - (1 - 1 / STEPS[-1]) ** LENGTH):.2f} network calls "
      f"per sample with the cache (expected), exact TV {euler_tv[-1]:.4f}")

# %%
fig, (ax_steps, ax_nfe) = plt.subplots(1, 2, figsize=(11, 4))
ax_steps.loglog(STEPS, euler_tv, "o-", label="masked_euler_law")
ax_steps.loglog(STEPS, euler_tv[0] / np.array(STEPS), "k:", label="1/N")
ax_steps.set_xlabel("Euler steps N")
ax_steps.set_ylabel("exact TV to the model")
ax_steps.legend(fontsize=8)
grid = np.arange(1, 65)
ax_nfe.plot(grid, grid * (1 - (1 - 1 / grid) ** LENGTH), label="cached: N(1-(1-1/N)^L)")
ax_nfe.plot(grid, np.minimum(grid, LENGTH), "k:", label="min(N, L)")
ax_nfe.plot(NFE_STEPS, measured_nfe, "o", label="measured")
ax_nfe.set_xlabel("Euler steps N")
ax_nfe.set_ylabel("network calls per sample")
ax_nfe.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "masked_euler_steps_and_cache.png", dpi=120)
plt.show()

# %% [markdown]
# **Reading the numbers.**  With exact conditionals the only error of
# parallel unmasking is the dependence between tokens revealed together, and
# it grows with both $k$ and the strength of that dependence; `first_hitting`
# and $k = 1$ are exact at $L$ calls.  Caching makes many Euler steps nearly
# free: past $N \approx L$ extra steps cost almost no calls while the error
# keeps falling like $1/N$ (the last line of section 4 gives the calls and the
# TV at the largest $N$).  Under a fixed budget of calls, the ARDM DP picks
# unequal blocks (small ones first, when little is known); the lines under the
# budget table compare their TV with that of equal blocks at the same number
# of calls.
assert math.isclose(rows["beta=0"].max(), 0.0, abs_tol=1e-12)
