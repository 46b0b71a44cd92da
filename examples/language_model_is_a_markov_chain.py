# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Your language model is a Markov chain
#
# A next-token model with $T$ tokens and a context of $K$ tokens generates by
# appending a token to its context and dropping the oldest one: its context is
# a Markov chain on the $T^K$ windows (plus the $T + \dots + T^{K-1}$ short
# states of the beginning of a text, which are transient).  Zekri et al. (2024,
# *Large Language Models as Markov Chains*) make this precise; theorem
# [10](../proofs/10-markov-view.md) proves it and `arprob.markov.MarkovView`
# computes with it: stationary laws, laws after $n$ steps, mixing times,
# $|\lambda_2|$, all without a dense matrix.  This example
#
# 1. reproduces the paper's toy (the parity rule, $T = 2$, $K = 3$, 14 states)
#    with exact mixing times at temperatures 0.2, 1 and 2;
# 2. builds the chain of a character n-gram and of a small network fitted on
#    English text (the docstrings of Python's standard library, read at run
#    time) and sweeps the temperature: entropy of the emitted character,
#    spectral gap, mixing time;
# 3. sets Zekri et al.'s convergence bound (their Prop. 3.4) against the exact
#    distance to stationarity.
#
# **Settings.**  By default (and in CI) the text is reduced to the 8 symbols
# `aehinot` and space with $K = 3$: $8^3 = 512$ windows, so every mixing time
# and every bound is exact over all starts (the last line of output gives the
# run time).  `ARPROB_EXAMPLES_FULL=1` selects the full setting: the 26
# letters and the space ($T = 27$), $K = 3$ ($19{,}683$ windows), a
# longer-trained network; mixing times and the exact side of the bound are
# then over the documented start set of `MarkovView.default_starts` (a lower
# bound on the worst case), and the run takes longer.

# %%
import math
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib
import matplotlib.ticker

# headless when run as a script (tests, CI) unless MPLBACKEND says otherwise; in a notebook the
# figures show inline (plt.show() below) and are saved as well
if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

from arprob.markov import MarkovView
from arprob.markov.char_models import cross_entropy, fit_char_ngram, train_char_network
from arprob.markov.text import ALPHABET, STDLIB_MODULES, encode, reduce_alphabet, stdlib_text

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

FULL = os.environ.get("ARPROB_EXAMPLES_FULL", "") == "1"
SYMBOLS = ALPHABET if FULL else "aehinot "  # the 26 letters and the space, or 7 frequent letters and the space
CONTEXT_SIZE = 3
ADD_K = 0.5  # pseudo-count of the n-gram's add-k smoothing
NETWORK_STEPS = 2000 if FULL else 300
TEMPERATURES = 2.0 ** np.arange(-2.0, 2.25, 0.5)  # 1/4, 1/(2 sqrt 2), 1/2, ..., 4: nine points
started = time.perf_counter()


def entropy(law) -> float:
    """Entropy in bits of a law (0 log 0 = 0)."""
    law = np.asarray(law)
    law = law[law > 0]
    return float(-(law * np.log2(law)).sum())


# %% [markdown]
# ## 1. The paper's toy: the parity rule
#
# $T = 2$ tokens, context $K = 3$: the model puts logit $g = 5.5$ on the parity
# of the sum of the last three tokens and 0 on the other token (the beginning of
# a text counts as zeros).  The chain has $2 + 4 + 8 = 14$ states.  Every window
# has two predecessors, $(0, a, b)$ and $(1, a, b)$, whose parities differ, so
# the two probabilities of reaching $(a, b, c)$ are $p$ and $1 - p$: the matrix
# is doubly stochastic and the stationary law is uniform, $1/8$ on each window,
# at every temperature.  What temperature changes is how fast the chain gets
# there: at low temperature the chain follows the rule and almost never leaves
# its cycles ($000$, $111$, $010 \leftrightarrow 101$ and the 4-cycle
# $001 \to 011 \to 110 \to 100$).

# %%
PARITY_GAP = 5.5


def parity_logits(windows):
    """Logits (batch, 2): ``PARITY_GAP`` on the parity of the window's tokens (padding id 2 counts as 0)."""
    windows = np.asarray(windows)
    parity = np.where(windows < 2, windows, 0).sum(axis=1) % 2
    logits = np.zeros((len(windows), 2))
    logits[np.arange(len(windows)), parity] = PARITY_GAP
    return logits


toy = {tau: MarkovView.from_logits(parity_logits, vocab_size=2, context_size=3, temperature=tau)
       for tau in (0.2, 1.0, 2.0)}
print(toy[1.0])
print(f"states |V_K*| = {toy[1.0].num_states}, windows T^K = {toy[1.0].num_windows}, "
      f"density (T-1)/(T^K-1) = {toy[1.0].density:.4f}")
print("stationary law over the windows 000..111 at temperature 1:", np.round(toy[1.0].stationary().law, 12))

# %% [markdown]
# Exact mixing times $t_{mix}(1/4)$ (worst start over all 8 windows, dense
# powers with doubling and bisection) against the numbers of the paper, and the
# second eigenvalue modulus, which sets the asymptotic rate
# $d(n) \approx C |\lambda_2|^n$.

# %%
PAPER = {0.2: "no convergence after 1e6 steps", 1.0: "about 300", 2.0: "about 30"}
toy_mixing, toy_worst = {}, {}
print(f"{'tau':>5} {'t_mix(1/4) exact':>17} {'worst start':>12} {'|lambda_2|':>18} {'paper':>32}")
for tau, chain in toy.items():
    mixing = chain.mixing_time(0.25)
    toy_mixing[tau], toy_worst[tau] = mixing.steps, mixing.worst_start
    print(f"{tau:>5} {mixing.steps:>17.4g} {''.join(map(str, mixing.worst_start)):>12} "
          f"{chain.second_eigenvalue_modulus():>18.15f} {PAPER[tau]:>32}")
assert toy_mixing[1.0] == 282 and toy_mixing[2.0] == 19 and 0.9e12 < toy_mixing[0.2] < 1.1e12

# %% [markdown]
# The convergence curves $\lVert \delta_w Q^n - \pi \rVert_{TV}$ from the worst
# window $w$ of each temperature (the `worst_start` above; the chain is
# symmetric under swapping 0 and 1, so worst starts come in pairs), exact at
# every $n$ (`tv_to_stationary`; large $n$ by repeated squaring); dotted lines
# mark $t_{mix}(1/4)$.  At temperature 0.2 the distance sits near $7/8$ (a
# point mass against the uniform law on 8 windows) for a very long time: the
# paper's "no convergence after $10^6$" is right, and the chain does converge,
# much later (the line under the figure says when, in multiples of $10^6$).

# %%
toy_steps = np.unique(np.concatenate([np.arange(0, 40), np.geomspace(40, 2e12, 160).astype(np.int64)]))
toy_curves = {tau: chain.tv_to_stationary(toy_steps, toy_worst[tau]) for tau, chain in toy.items()}

figure, (ax_graph, ax_law, ax_curve) = plt.subplots(1, 3, figsize=(16, 4.8),
                                                    gridspec_kw={"width_ratios": [1.3, 0.7, 1.3]})
graph = toy[1.0].to_networkx("all")
labels = {state: "".join(map(str, state)) for state in graph.nodes}
windows = [state for state in graph.nodes if len(state) == 3]
position = {state: (0.0, 1.5 - 3 * state[0]) for state in graph.nodes if len(state) == 1}
position.update({state: (1.0, 2.25 - 1.5 * (2 * state[0] + state[1])) for state in graph.nodes if len(state) == 2})
angles = np.linspace(0, 2 * np.pi, len(windows), endpoint=False)
position.update({window: (3.4 + 1.6 * np.cos(angle), 2.2 * np.sin(angle)) for window, angle in zip(windows, angles)})
weights = np.array([graph.edges[edge]["weight"] for edge in graph.edges])
nx.draw_networkx_nodes(graph, position, ax=ax_graph, node_size=520,
                       node_color=["#c6dbef" if len(state) < 3 else "#fdd0a2" for state in graph.nodes])
nx.draw_networkx_labels(graph, position, labels, ax=ax_graph, font_size=8)
nx.draw_networkx_edges(graph, position, ax=ax_graph, width=0.4 + 2.2 * weights, edge_color=weights,
                       edge_cmap=plt.cm.viridis_r, arrowsize=9, node_size=520, connectionstyle="arc3,rad=0.12")
ax_graph.set_title("the 14-state chain at temperature 1 (blue: transient short states)\n"
                   "edge width and colour: transition probability", fontsize=9)
ax_graph.axis("off")
ax_law.bar([labels[w] for w in windows], toy[1.0].stationary().law, color="#fdd0a2", edgecolor="k")
ax_law.axhline(1 / 8, color="k", ls="--", lw=1)
ax_law.set(title="stationary law (uniform: Q is doubly stochastic)", ylabel="pi(window)")
ax_law.tick_params(axis="x", labelrotation=90)
ax_law.title.set_fontsize(9)
for tau, curve in toy_curves.items():
    # the distance never increases: near float64 rounding the computed values only jitter, so the curve
    # stops at its first value below 1e-13 (or at its minimum)
    below = np.flatnonzero(curve < 1e-13)
    shown = slice(0, int(below[0]) + 1 if below.size else int(np.argmin(curve)) + 1)
    line, = ax_curve.loglog(np.maximum(toy_steps[shown], 1), curve[shown],
                            label=f"temperature {tau}, from {''.join(map(str, toy_worst[tau]))}")
    ax_curve.axvline(toy_mixing[tau], color=line.get_color(), ls=":", lw=1)
ax_curve.axhline(0.25, color="k", ls="--", lw=1, label="1/4")
ax_curve.set(xlabel="steps n (+1 at n = 0)", ylabel="TV(law after n steps, pi)", ylim=(1e-15, 2),
             title="from the worst window; dotted: exact t_mix(1/4)")
ax_curve.title.set_fontsize(9)
ax_curve.legend(fontsize=8)
figure.tight_layout()
figure.savefig(FIGURES / "markov_parity_toy.png", dpi=110)
plt.show()
plt.close(figure)
plateau = toy_steps[toy_curves[0.2] > 0.8]
print(f"temperature 0.2: TV to stationarity above 0.8 up to n = {plateau.max():.2g} (of the steps computed), "
      f"t_mix(1/4) = {toy_mixing[0.2]:.3g} steps, {toy_mixing[0.2] / 1e6:.1e} times the paper's 10^6")

# %% [markdown]
# ## 2. Real text: a character n-gram and a small network
#
# The text is the docstrings of the standard-library modules listed in
# `arprob.markov.text.STDLIB_MODULES` (`stdlib_text`, nothing downloaded; the
# first line below counts modules and characters), lowercased and mapped onto
# the alphabet (anything else becomes a space).  The n-gram uses
# add-$k$ smoothing with $k = 0.5$, so every window gives every next character
# a positive probability; the network is a 2-layer MLP (64 hidden units) trained
# with Adam.  Both are fitted on the first 90% of the text and scored on the
# rest.

# %%
text = reduce_alphabet(stdlib_text(), SYMBOLS)
ids = encode(text, SYMBOLS)
split = int(0.9 * len(ids))
vocab_size = len(SYMBOLS)
ngram = fit_char_ngram(ids[:split], vocab_size, CONTEXT_SIZE, add_k=ADD_K)
network = train_char_network(jax.random.key(0), ids[:split], vocab_size, CONTEXT_SIZE, hidden_size=64,
                             num_steps=NETWORK_STEPS)
models = {"n-gram": ngram, "network": network}
letters = np.bincount(ids, minlength=vocab_size) / len(ids)
print(f"{len(STDLIB_MODULES)} modules, {len(ids):,} characters over {vocab_size} symbols {SYMBOLS!r}, "
      f"K = {CONTEXT_SIZE}: {vocab_size**CONTEXT_SIZE:,} windows")
print(f"  sample: {text[1000:1100]!r}")
for name, model in models.items():
    print(f"  {name:>8}: held-out cross-entropy {cross_entropy(model, ids[split:]) / math.log(2):.3f} bits/char")
print(f"  entropy of the text's character frequencies: {entropy(letters):.3f} bits")

# %% [markdown]
# ### Temperature sweep
#
# For each temperature $\tau$ the view applies $p \propto p_{model}^{1/\tau}$ to
# every window and computes: the stationary law of the emitted character
# (`token_marginal`, $\sum_r \pi(r, v)$) and its entropy; $|\lambda_2|$ and the
# spectral gap $1 - |\lambda_2|$; the mixing time $t_{mix}(1/4)$.  At $\tau = 1$
# the stationary character law can be set against the text's own character
# frequencies: for an unsmoothed n-gram of a text read cyclically they would be
# equal.  Smoothing moves them apart where many windows are rarely seen (27
# symbols: the chain wanders into rare windows, whose next-character law is
# nearly uniform).

# %%
sweep = {name: [] for name in models}
tv_letters = {}
for name, model in models.items():
    print(f"\n{name}: {'tau':>6} {'H(token) bits':>14} {'|lambda_2|':>11} {'gap':>9} {'t_mix(1/4)':>11} "
          f"{'exhaustive':>10}")
    for tau in TEMPERATURES:
        chain = MarkovView(model, temperature=float(tau))
        marginal = chain.token_marginal()
        modulus = chain.second_eigenvalue_modulus()
        mixing = chain.mixing_time(0.25)
        sweep[name].append((tau, entropy(marginal), modulus, 1 - modulus, mixing.steps))
        print(f"{'':>{len(name) + 1}} {tau:>6.3f} {entropy(marginal):>14.3f} {modulus:>11.6f} {1 - modulus:>9.5f} "
              f"{mixing.steps:>11} {mixing.exhaustive!s:>10}")
        if tau == 1.0:
            tv_letters[name] = 0.5 * np.abs(marginal - letters).sum()
for name, distance in tv_letters.items():
    print(f"TV({name}'s stationary character law at tau = 1, the text's character frequencies) = {distance:.4f}")
for name, rows in sweep.items():
    taus, gaps, mixing_steps = (np.array([row[i] for row in rows], dtype=float) for i in (0, 3, 4))
    dips = [f"{low:.3g} -> {high:.3g}" for low, high, falls in zip(taus, taus[1:], np.diff(gaps) < 0) if falls]
    print(f"{name}: t_mix(1/4) at most {mixing_steps[taus >= 1].max():.0f} steps for tau >= 1, "
          f"{mixing_steps[np.isclose(taus, 0.5)][0]:.0f} at tau = 1/2, {mixing_steps[0]:.0f} at tau = 1/4; "
          f"gap falls as tau rises: {', '.join(dips) or 'nowhere'}")

figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for name, rows in sweep.items():
    rows = np.array(rows, dtype=float)
    axes[0].semilogx(rows[:, 0], rows[:, 1], "o-", label=name)
    axes[1].loglog(rows[:, 0], rows[:, 3], "o-", label=name)
    axes[2].loglog(rows[:, 0], rows[:, 4], "o-", label=name)
axes[0].axhline(math.log2(vocab_size), color="k", ls="--", lw=1, label=f"log2 T = {math.log2(vocab_size):.2f}")
axes[0].axhline(entropy(letters), color="gray", ls=":", lw=1, label="the text's characters")
axes[0].set(xlabel="temperature", ylabel="bits", title="entropy of the stationary emitted character")
axes[1].set(xlabel="temperature", ylabel="1 - |lambda_2|", title="spectral gap")
axes[2].axhline(CONTEXT_SIZE, color="k", ls="--", lw=1, label=f"K = {CONTEXT_SIZE} (the tau -> inf limit)")
axes[2].set(xlabel="temperature", ylabel="steps", title="mixing time t_mix(1/4)")
for axis in axes:
    axis.set_xticks([0.25, 0.5, 1, 2, 4], ["1/4", "1/2", "1", "2", "4"])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.legend(fontsize=8)
figure.suptitle(f"{vocab_size} symbols, K = {CONTEXT_SIZE}: {vocab_size**CONTEXT_SIZE:,} windows", fontsize=10)
figure.tight_layout()
figure.savefig(FIGURES / "markov_temperature_sweep.png", dpi=110)
plt.show()
plt.close(figure)

# %% [markdown]
# **Reading the sweep.**  Raising the temperature flattens every next-character
# law, so the emitted character's entropy climbs towards $\log_2 T$ and the
# chain forgets its start faster: at $\tau \to \infty$ it mixes in exactly $K$
# steps (theorem 10, part 6).  Lowering it concentrates the chain on the
# few most likely words and their cycles, the gap closes and the mixing time
# grows; at $\tau = 0$ (greedy decoding) the chain falls apart into absorbing
# loops (see `truncation_makes_loops.py`).  The dependence need not be
# monotone in every quantity (the last lines under the sweep list where a
# model's gap falls as the temperature rises), but the trend is clear from the
# same lines: these text models mix within a few steps at $\tau \ge 1$ and
# slow down steeply at lower temperatures.

# %% [markdown]
# ## 3. Zekri et al.'s bound against the truth
#
# Prop. 3.4 of the paper: $|(Q^n)_{ij} - \pi_j| \le (1 - 2\varepsilon)^{\lfloor n/K
# \rfloor - 1}$ with $\varepsilon$ the smallest entry of $Q^K$.  Each entry of
# $Q^K$ is a product of $K$ next-token probabilities, so $\varepsilon \le T^{-K}$
# and, on a real model, far smaller.  `zekri_bound(n)` reports the bound next
# to the exact $\max_{i,j} |(Q^n)_{ij} - \pi_j|$ and their ratio in orders of
# magnitude (`log10_looseness`).  In float64 the exact side bottoms out at
# rounding, about $10^{-16}$, so the table reports the looseness at the
# largest $n$ of the grid where the exact value is above $10^{-12}$ (four
# orders clear of rounding), and the figure continues the exact side as
# $C |\lambda_2|^n$ (dashed).  The last three columns: the number of steps the bound needs
# before it guarantees $\max |Q^n - \pi| \le 1/4$, the exact first such $n$,
# and the looseness at the bound's $n$ by that extrapolation.  In the full
# setting the exact side runs over the start set of `default_starts`, so it is
# a lower bound on the maximum and the looseness an upper bound.

# %%
chains = {"parity toy, tau = 1": toy[1.0], "parity toy, tau = 2": toy[2.0],
          f"n-gram, tau = 1 (T = {vocab_size})": MarkovView(ngram, temperature=1.0),
          f"network, tau = 1 (T = {vocab_size})": MarkovView(network, temperature=1.0)}
moduli = {f"{name}, tau = 1 (T = {vocab_size})": rows[4][2] for name, rows in sweep.items()}  # computed above
assert all(np.isclose(rows[4][0], 1.0) for rows in sweep.values())


def first_step_below(chain, level: float) -> int:
    """The first n with max|Q^n - pi| <= level, by bisection: each column of Q^(n+1) - pi is Q times the
    column of Q^n - pi, a convex combination, so the largest entry never increases."""
    high = chain.context_size
    while chain.zekri_bound(high).exact > level:
        high *= 2
    low = -1  # max|Q^low - pi| > level for low >= 0; -1 stands for "none checked"
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if chain.zekri_bound(middle).exact > level else (low, middle)
    return high


horizon = {"parity toy, tau = 1": 12000, "parity toy, tau = 2": 800}  # twice the float64-resolved range
zekri, step_ratios, looseness = {}, [], []
print(f"{'chain':>28} {'log10 eps':>10} {'n':>6} {'1 - bound':>10} {'exact':>9} {'looseness':>10} "
      f"{'steps to 1/4: bound':>20} {'exact':>6} {'looseness there':>16}")
for name, chain in chains.items():
    last = horizon.get(name, 300 if FULL else 120)
    counts = np.unique(np.linspace(chain.context_size, last, 25).astype(int))
    reports = [chain.zekri_bound(int(n)) for n in counts]
    exact = np.array([report.exact for report in reports])
    reliable = exact > 1e-12  # four orders of magnitude above float64 rounding
    best = int(np.flatnonzero(reliable)[-1])
    report = reports[best]
    # steps the bound needs for max|Q^n - pi| <= 1/4, and the exact first such n (the entries decrease)
    log_one_minus = math.log1p(-2 * 10**report.log10_epsilon)
    bound_steps = chain.context_size * (1 + math.ceil(math.log(0.25) / log_one_minus))
    exact_steps = first_step_below(chain, 0.25)
    modulus = moduli.get(name) or chain.second_eigenvalue_modulus()
    # orders of magnitude between the bound and C |lambda_2|^n at the n where the bound reaches 1/4
    extrapolated = math.log10(0.25) - (math.log10(report.exact) + (bound_steps - report.steps) * math.log10(modulus))
    zekri[name] = (counts, reports, modulus, best)
    gap_below_one = -math.expm1(report.log10_bound * math.log(10))
    print(f"{name:>28} {report.log10_epsilon:>10.2f} {report.steps:>6} {gap_below_one:>10.2e} "
          f"{report.exact:>9.2e} {report.log10_looseness:>10.2f} {bound_steps:>20.3g} {exact_steps:>6} "
          f"{extrapolated:>16.3g}")
    assert all(r.exact <= r.bound + 1e-12 for r in reports)  # the proposition holds
    step_ratios.append(bound_steps / exact_steps)
    looseness.append(report.log10_looseness)
    if name == "parity toy, tau = 1":
        assert report.exhaustive

figure, axes = plt.subplots(1, len(chains), figsize=(4.2 * len(chains), 3.8))
for axis, (name, (counts, reports, modulus, best)) in zip(axes, zekri.items()):
    axis.plot(counts, [r.log10_bound for r in reports], "-", label="Zekri bound")
    axis.plot(counts[: best + 1], [math.log10(r.exact) for r in reports[: best + 1]], "o", markersize=3,
              label="exact max|Q^n - pi|")
    anchor = reports[best]
    axis.plot(counts, math.log10(anchor.exact) + (counts - anchor.steps) * math.log10(modulus), "k--", lw=1,
              label="C |lambda_2|^n")
    axis.set(xlabel="steps n", ylabel="log10", title=name, ylim=(-25, 0.5))
    axis.title.set_fontsize(9)
    axis.legend(fontsize=7)
figure.tight_layout()
figure.savefig(FIGURES / "markov_zekri_bound.png", dpi=110)
plt.show()
plt.close(figure)
print(f"over these chains the bound needs {min(step_ratios):.3g} to {max(step_ratios):.3g} times the exact number "
      f"of steps to reach 1/4, and at the largest resolved n it is {min(looseness):.1f} to {max(looseness):.1f} "
      "orders of magnitude above the exact distance")
print(f"\nexample ran in {time.perf_counter() - started:.1f} s; figures in {FIGURES}")

# %% [markdown]
# **Reading the bound.**  It holds, and it says almost nothing: with
# $\varepsilon \le T^{-K}$ it cannot fall below $1/4$ before about
# $K T^K \ln 2 / 2$ steps, and on a fitted model $\varepsilon$ is the product
# of $K$ *smallest* probabilities, which makes the required number of steps
# astronomically larger than the true mixing time (the line above the run
# time gives the ratios).  The exact distance, by contrast, decays like
# $|\lambda_2|^n$: at the largest $n$ float64 can resolve it the bound is off by
# many orders of magnitude (same line) and, extrapolated, by ever more as $n$
# grows.
