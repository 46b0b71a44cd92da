# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Absorbing diffusion is an any-order autoregressive model
#
# Masked (absorbing) diffusion looks different from an any-order
# autoregressive model: it has a time variable, a noise schedule and a
# time-weighted training loss.  On a small space, where everything can be
# computed exactly, we check that none of these matter:
#
# 1. the NLL bound of diffusion is the any-order expected NLL, for every
#    schedule that masks everything (theorem 4), and a truncated schedule
#    misses it by an analytic constant;
# 2. the four usual training losses estimate the same number;
# 3. the first-hitting sampler draws from the law of random-order ancestral
#    sampling (theorem 5), while parallel unmasking and few-step Euler do not.
#
# The denoiser is a conditional family: the exact conditionals of a model,
# and a `perturbed` copy standing in for an imperfect network.  All
# identities below hold for both.

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

import arprob
from arprob import AbsorbingDiffusion, AnyOrderAR, schedules
from arprob.conditionals import perturbed
from arprob.samplers import ancestral_law, first_hitting_law, masked_euler_law, parallel_unmask_law
from arprob.verify import tv

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

probs = np.random.default_rng(0).dirichlet(np.full(3**4, 0.5)).reshape(3, 3, 3, 3)
model = arprob.TabularJoint(probs=probs)  # V = 3, L = 4: 81 sequences, 256 partially masked ones
network = perturbed(model, jax.random.key(1), scale=0.5)
x = np.array([[0, 1, 1, 2], [2, 2, 1, 0], [1, 0, 2, 2]])
print(model, "| p(x) =", np.round(model.law()[x @ 3 ** np.arange(3, -1, -1)], 4))

# %% [markdown]
# ## 1. The bound does not depend on the schedule
#
# `AbsorbingDiffusion.elbo` integrates the continuous-time bound over
# $t \in [0, 1]$ by quadrature; `AnyOrderAR.expected_nll` is the subset form
# $\sum_k h_k / (k\binom{L}{k})$.  They agree for every schedule with
# $m(1) = 1$.  With `log_linear(eps)` the integral stops at
# $m(1) = 1 - \varepsilon$ and misses $\sum_k h_k T_k(\varepsilon) \approx \varepsilon\, h_L$,
# which `truncation_gap` computes.

# %%
full = {"linear": schedules.linear(), "cosine": schedules.cosine(), "log_linear(0)": schedules.log_linear(0.0)}
for name, family in [("exact", model), ("perturbed", network)]:
    expected_nll = np.asarray(AnyOrderAR(family).expected_nll(x))
    print(f"{name:>9}: expected NLL over orders = {np.round(expected_nll, 4)}")
    for label, schedule in full.items():
        gap = np.abs(AbsorbingDiffusion(family, schedule).elbo(x) - expected_nll).max()
        print(f"{'':>11}ELBO with {label:<13} differs by {gap:.1e}")
    for eps in (1e-3, 0.1):
        truncated = AbsorbingDiffusion(family, schedules.log_linear(eps))
        elbo, constant = truncated.elbo(x), truncated.truncation_gap(x)
        h_last = truncated.per_size_losses(x)[-1]
        print(f"{'':>11}log_linear({eps:<5}): ELBO short by {np.round(expected_nll - elbo, 4)}"
              f" = truncation_gap to {np.abs(expected_nll - elbo - constant).max():.0e};"
              f" eps * h_L = {np.round(eps * h_last, 4)}")
print("exact family: expected NLL = -log p(x) to",
      f"{np.abs(AnyOrderAR(model).expected_nll(x) + model.log_prob(x)).max():.0e}")

# %% [markdown]
# ## Different integrands, same area
#
# For one sequence, the integrand of the bound in $t$ is
# $m'(t)\sum_k h_k\, m(t)^{k-1}(1-m(t))^{L-k}$.  Each schedule spreads it
# differently over time, but the change of variables $\lambda = m(t)$ maps
# all of them onto the same curve in $\lambda$, so the areas agree.

# %%
h = AbsorbingDiffusion(network, schedules.linear()).per_size_losses(x[0])[1:]
sizes = np.arange(1, model.length + 1)


def integrand(schedule, t):
    m = schedule.mask_prob(t)[:, None]
    return schedule.mask_rate(t) * (h * m ** (sizes - 1) * (1 - m) ** (model.length - sizes)).sum(axis=1)


t = np.linspace(1e-6, 1 - 1e-6, 2001)
figure, (in_time, in_level) = plt.subplots(1, 2, figsize=(10, 3.8))
styles = [{"lw": 6, "alpha": 0.35}, {"lw": 2.5}, {"lw": 1.2, "ls": "--", "color": "k"}]
cases = list(full.items())[:2] + [("log_linear(0.3)", schedules.log_linear(0.3))]
for (label, schedule), style in zip(cases, styles):
    values = integrand(schedule, t)
    area = np.trapezoid(values, t)
    if schedule.final_mask_prob < 1 - 1e-12:  # cosine's m(1) is 1 - 1e-16 in float64
        gap = float(AbsorbingDiffusion(network, schedule).truncation_gap(x[0]))
        label = f"{label}: area {area:.4f} + truncation_gap {gap:.4f}"
    else:
        label = f"{label}: area {area:.4f}"
    in_time.plot(t, values, label=label, **style)
    in_level.plot(schedule.mask_prob(t), values / schedule.mask_rate(t), label=label.split(":")[0], **style)
target = float(AnyOrderAR(network).expected_nll(x[0]))
in_time.set(xlabel="t", ylabel="integrand of the bound", title=f"in time (expected NLL {target:.4f})")
in_level.set(xlabel=r"noise level $\lambda = m(t)$", ylabel=r"$\sum_k h_k \lambda^{k-1}(1-\lambda)^{L-k}$",
             title="in noise level: one curve")
in_time.legend(fontsize=8)
in_level.legend(fontsize=8)
figure.tight_layout()
figure.savefig(FIGURES / "diffusion_elbo_integrands.png", dpi=120)
plt.show()
print("areas: trapezoid rule on 2001 points; log_linear(0.3) stops at lambda = 0.7")

# %% [markdown]
# ## 2. Four training losses, one expectation
#
# MDLM weighs the loss of the masked tokens by $m'(t)/m(t)$, RADD's
# $\lambda$-DCE by $1/\lambda$, ARDM draws a number $k$ of masked tokens and
# weighs by $L/k$, u-PMLM the same with $1/k$.  `expected_loss` is the exact
# expectation, `training_loss` the Monte Carlo estimate of a training step.
# The first three estimate the expected NLL; u-PMLM estimates it per token.

# %%
diffusion = AbsorbingDiffusion(model, schedules.linear())
for form in ("mdlm", "lambda_dce", "ardm", "upmlm"):
    exact_value = diffusion.expected_loss(x, form)
    mean, stderr = diffusion.training_loss(jax.random.key(3), x, form, 10_000)
    z = (np.asarray(mean) - exact_value) / np.asarray(stderr)
    print(f"{form:>10}: exact {np.round(exact_value, 3)}  estimate {np.round(np.asarray(mean), 3)}"
          f"  standard error {np.round(np.asarray(stderr), 3)}  z {np.round(z, 1)}")

# %% [markdown]
# ## 3. The samplers
#
# The first-hitting sampler reveals one uniformly chosen masked position at a
# time and draws it from the denoiser: its law is exactly the random-order
# ancestral law, the order mixture of the family.  Parallel unmasking of $k$
# tokens per call and the Euler sampler with few steps draw several tokens
# independently given the same state, and miss the target; Euler converges as
# the number of steps grows, within the probability that two tokens share a
# step ($\le \binom{L}{2}/N$).

# %%
for name, family in [("exact", model), ("perturbed", network)]:
    mixture = ancestral_law(family, "random")
    print(f"{name:>9}: TV(first_hitting_law, ancestral_law random) = {tv(first_hitting_law(family), mixture):.1e}")
    print(f"{'':>11}TV(parallel_unmask_law k, order mixture) for k = 1..4:",
          [f"{tv(parallel_unmask_law(family, k), mixture):.3f}" for k in range(1, 5)])

steps = np.array([1, 2, 4, 8, 16, 32, 64, 128])
birthday = 1 - np.array([np.prod(1 - np.arange(model.length) / n) for n in steps])
figure, axis = plt.subplots(figsize=(5.5, 3.8))
for name, family in [("exact", model), ("perturbed", network)]:
    first_hitting = first_hitting_law(family)
    for label, schedule in list(full.items())[:2]:
        distances = [tv(masked_euler_law(family, int(n), schedule), first_hitting) for n in steps]
        axis.loglog(steps, distances, marker="o", label=f"{name}, {label}")
        if name == "exact" and label == "linear":
            print("TV(masked_euler_law N, first hitting), exact, linear:",
                  dict(zip(steps.tolist(), np.round(distances, 4).tolist())))
axis.loglog(steps[2:], birthday[2:], "k--", label="P(two tokens share a step), linear")
axis.set(xlabel="number of steps N", ylabel="TV to the first-hitting law", title="masked Euler converges like 1/N")
axis.legend(fontsize=7)
figure.tight_layout()
figure.savefig(FIGURES / "masked_euler_convergence.png", dpi=120)
plt.show()
print("figures written to", FIGURES)
