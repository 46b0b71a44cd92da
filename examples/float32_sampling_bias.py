# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Float32 Gumbel-max cuts the tail: what it does to a masked-diffusion sampler
#
# `jax.random.categorical` draws `argmax(logits + G)` with Gumbel noise
# `G = -log(-log u)`.  In float32 the uniform `u` lives on a grid of step
# $2^{-23}$, so the noise never exceeds $-\log(-\log(1 - 2^{-23})) \approx
# 23 \ln 2 \approx 15.94$ (the first table prints the cap of each dtype): a
# token more than ~16 nats below the best one can (almost) never be drawn.
# One token that unlikely does not matter; fifty thousand of them, or a
# masked-diffusion step where every token competes with a mask of weight ~1,
# do.  This example computes the exact law
# of the clamped sampler (theorem 13), measures the entropy and effective
# temperature it loses over a masked-diffusion run, and shows that
# `arprob.precision.categorical` (the library's own sampler) keeps the tail.

# %%
import math
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib

# headless when run as a script (tests, CI) unless MPLBACKEND says otherwise; in a notebook the
# figures show inline (plt.show() below) and are saved as well
if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from arprob import precision

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The range of the noise
# `gumbel_cap` and `gumbel_floor` run JAX's own `gumbel` on the extreme random
# bits; `mode="arprob"` is the library's noise.

# %%
for dtype in ["float16", "bfloat16", "float32", "float64"]:
    print(f"{dtype:>9}: jax low [{precision.gumbel_floor(dtype):8.3f}, {precision.gumbel_cap(dtype):7.3f}]   "
          f"arprob [{precision.gumbel_floor(dtype, 'arprob'):7.3f}, {precision.gumbel_cap(dtype, 'arprob'):6.2f}]")
cap, floor = precision.gumbel_cap("float32"), precision.gumbel_floor("float32")
print("worst-case TV of float32 jax.random.categorical at V = 50257:",
      f"{precision.worst_case_tv_bound(50257, cap, floor):.2e}; arprob's: {precision.library_tv_bound(50257):.1e}")

# %% [markdown]
# ## One token far below the top
# With two tokens `[0, -d]` the clamped law is exact in closed form; the ratio
# to softmax collapses once `d` passes the cap, as the suppression bound
# $\exp(-e^{d - b})$ says.

# %%
gaps = np.linspace(0.0, 26.0, 261)
ratios = {}
for name, (low, high) in {"float32 (JAX)": (floor, cap),
                          "float64 (JAX)": (precision.gumbel_floor("float64"), precision.gumbel_cap("float64")),
                          "arprob float32": (precision.gumbel_floor("float32", "arprob"),
                                             precision.gumbel_cap("float32", "arprob"))}.items():
    logits = np.stack([np.zeros_like(gaps), -gaps], axis=1)
    law = precision.clamped_gumbel_law(logits, high, low)[:, 1]
    softmax = 1.0 / (1.0 + np.exp(gaps))
    ratios[name] = law / softmax
print("P(token 17 nats down) / softmax, float32 JAX:", f"{ratios['float32 (JAX)'][170]:.3f}")

# %% [markdown]
# ## A masked-diffusion run
# Zipf(1.1) over 8192 tokens; each of the N reverse steps is one Gumbel-max
# draw over the tokens (weights $p_v/n$) and the mask (weight $(n-1)/n$).
# `masked_diffusion_summary` gives the exact law of the token finally written,
# its entropy and its effective temperature, for float32 and float64 noise.

# %%
vocab_size = 8192
probs = np.arange(1, vocab_size + 1, dtype=np.float64) ** -1.1
probs /= probs.sum()
steps = [4, 16, 64, 256, 1024]
rows = []
for num_steps in steps:
    single = precision.masked_diffusion_summary(probs, num_steps, "float32")
    double = precision.masked_diffusion_summary(probs, num_steps, "float64")
    rows.append((num_steps, single.entropy, single.sampler_entropy, double.sampler_entropy, single.temperature))
    print(f"N = {num_steps:5d}: H(p) = {single.entropy:.4f}, float32 {single.sampler_entropy:.4f} "
          f"(T_eff {single.temperature:.4f}, TV {single.tv:.4f}), float64 {double.sampler_entropy:.4f}")
last_law = single.law

# %% [markdown]
# ## arprob's sampler keeps the tail
# A Monte Carlo check that costs a few seconds needs a small cap, so we use
# float16 logits, where JAX's noise stops at the float16 cap of the first
# table (about $10 \ln 2 \approx 6.93$): 2500 tokens 9 nats below the top carry
# $2500 e^{-9} / (1 + 2500 e^{-9}) \approx 24\%$ of softmax.  The lines below
# give how often `jax.random.categorical` and `arprob.precision.categorical`
# (float32 noise) draw them, against that rate.  The same happens in float32
# for tokens 16-18 nats down, at a Monte Carlo cost far beyond an example (see
# `benchmarks/categorical_precision.py`).

# %%
sizes, group_logits = np.array([1, 2500]), np.array([0.0, -9.0])
logits16 = jnp.asarray(np.repeat(group_logits, sizes), jnp.float16)
target = 2500 * math.exp(-9.0) / (1 + 2500 * math.exp(-9.0))
for name, sampler in [("jax.random.categorical", jax.random.categorical),
                      ("arprob.precision.categorical", precision.categorical)]:
    tokens = np.asarray(sampler(jax.random.key(0), logits16, shape=(4000,)))
    drawn = np.mean(tokens > 0)
    print(f"{name:>30}: tail drawn {drawn:.4f} of the time (softmax {target:.4f}, ratio {drawn / target:.3f}; "
          f"{4000 * drawn:.0f} of 4,000 draws)")

# %%
figure, axes = plt.subplots(2, 2, figsize=(11, 8))
styles = {"float32 (JAX)": "-", "float64 (JAX)": "--", "arprob float32": ":"}
for name, ratio in ratios.items():
    axes[0, 0].semilogy(gaps, np.maximum(ratio, 1e-30), styles[name], lw=2, label=name)
axes[0, 0].set(xlabel="gap to the top token d (nats)", ylabel="clamped law / softmax", ylim=(1e-12, 3),
               title="one token d nats below the top")
axes[0, 0].legend(fontsize=8)
steps_array = np.array([row[0] for row in rows])
axes[0, 1].semilogx(steps_array, [row[1] for row in rows], "k--", label="H(p) (exact sampler)")
axes[0, 1].semilogx(steps_array, [row[3] for row in rows], "o-", label="float64 noise")
axes[0, 1].semilogx(steps_array, [row[2] for row in rows], "s-", label="float32 noise (JAX default)")
axes[0, 1].set(xlabel="number of steps N", ylabel="entropy of the token written (nats)",
               title=f"masked diffusion, Zipf(1.1), V={vocab_size}")
axes[0, 1].legend(fontsize=8)
axes[1, 0].semilogx(steps_array, [row[4] for row in rows], "s-", color="C1")
axes[1, 0].axhline(1.0, color="k", ls="--", lw=1)
axes[1, 0].set(xlabel="number of steps N", ylabel="effective temperature", title="float32 noise: T_eff < 1")
rank = np.arange(1, vocab_size + 1)
axes[1, 1].loglog(rank, probs, "k--", label="p (Zipf 1.1)")
axes[1, 1].loglog(rank, np.maximum(last_law, 1e-30), label=f"float32 sampler, N={steps[-1]}")
axes[1, 1].set(xlabel="token rank", ylabel="probability", ylim=(1e-9, 1), title="the suppressed tail")
axes[1, 1].legend(fontsize=8)
figure.tight_layout()
figure.savefig(FIGURES / "float32_sampling_bias.png", dpi=110)
plt.show()
print("saved", FIGURES / "float32_sampling_bias.png")
