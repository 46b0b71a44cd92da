# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Truncation makes loops
#
# At any temperature $\tau > 0$ a model that gives every next token a positive
# probability is an irreducible, aperiodic Markov chain on its context windows:
# one stationary law, reached from every start (theorem
# [10](../proofs/10-markov-view.md)).  Greedy decoding, top-$k$ and top-$p$ set
# next-token probabilities to zero, that is, they delete edges of the chain.
# Greedy decoding leaves each window one successor; the chain becomes a
# function, and its closed classes are cycles: **repetition loops**, the
# "the string the string the string" of a model decoded greedily.
#
# This example fits a character n-gram and a small network on English text
# (the docstrings of Python's standard library, read at run time), and uses
# `MarkovView.structure()` to count closed classes, list the loops as text and
# measure how many windows are transient, for greedy decoding and for top-$k$
# and top-$p$.  Then it computes exactly, with a small automaton, the
# probability that generation from a prompt produces a given word within $n$
# characters (`MarkovView.constraint_probability`), at several temperatures.
#
# **Settings.**  By default (and in CI): 27 symbols (the letters and the space),
# context $K = 3$, $27^3 = 19{,}683$ windows (the last line of output gives the
# run time).  `ARPROB_EXAMPLES_FULL=1`: $K = 4$, $531{,}441$ windows, a
# longer-trained network; much longer, most of the time in the constraint
# probabilities.

# %%
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
import numpy as np

from arprob import DFA
from arprob.markov import MarkovView, contains_pattern
from arprob.markov.char_models import fit_char_ngram, train_char_network
from arprob.markov.text import ALPHABET, decode, encode, reduce_alphabet, stdlib_text

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()  # a notebook has no __file__
FIGURES = Path(os.environ.get("ARPROB_FIGURES", HERE / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)

FULL = os.environ.get("ARPROB_EXAMPLES_FULL", "") == "1"
CONTEXT_SIZE = 4 if FULL else 3
ADD_K = 0.5  # pseudo-count of the n-gram's add-k smoothing
NETWORK_STEPS = 2000 if FULL else 300
TOP_K = [1, 2, 3, 5, 8]
TOP_P = [0.3, 0.5, 0.7, 0.9, 0.95]
started = time.perf_counter()

text = reduce_alphabet(stdlib_text(), ALPHABET)
ids = encode(text, ALPHABET)
vocab_size = len(ALPHABET)
ngram = fit_char_ngram(ids, vocab_size, CONTEXT_SIZE, add_k=ADD_K)
network = train_char_network(jax.random.key(0), ids, vocab_size, CONTEXT_SIZE, hidden_size=64,
                             num_steps=NETWORK_STEPS)
models = {"n-gram": ngram, "network": network}
print(f"{len(ids):,} characters, T = {vocab_size}, K = {CONTEXT_SIZE}: {vocab_size**CONTEXT_SIZE:,} windows")

# %% [markdown]
# ## Greedy decoding: the loops
#
# `structure()` finds the communicating classes of the transition graph
# (strongly connected components, linear time) and the period of each closed
# one.  Under greedy decoding every closed class is a cycle whose period is its
# length (theorem 10, part 5).  To print a loop as text we follow the one
# successor of each of its windows once around the cycle.
#
# Which loop does generation fall into?  Starting from the windows of the text
# itself (their empirical law) we push the law forward with `n_step_law` until
# nothing is left on transient windows; the mass on each cycle is the fraction
# of the text's contexts whose greedy continuation ends in that loop.

# %%
def loop_text(chain: MarkovView, states, repeats: int = 3) -> str:
    """The cycle through the windows ``states`` under greedy decoding, as text, ``repeats`` times round."""
    tokens = list(chain.window(int(states[0])))
    rounds = len(states) * repeats
    for _ in range(rounds):
        window = chain.window_index(tokens[-chain.context_size:])
        tokens.append(int(np.argmax(chain.probs[window])))
    loop = tokens[-rounds:]
    if 26 in loop[: len(states)]:  # start the text just after a space (id 26) when the loop has one
        shift = loop.index(26) + 1
        loop = loop[shift:] + loop[:shift]
    return decode(np.array(loop), ALPHABET)


def empirical_window_law(ids: np.ndarray, context_size: int) -> np.ndarray:
    """Frequencies of the text's windows of ``context_size`` tokens (base-T index, oldest token first)."""
    index = np.zeros(len(ids) - context_size + 1, dtype=np.int64)
    for offset in range(context_size):
        index = index * vocab_size + ids[offset:len(ids) - context_size + 1 + offset]
    return np.bincount(index, minlength=vocab_size**context_size) / len(index)


start_law = empirical_window_law(ids, CONTEXT_SIZE)
greedy = {}
for name, model in models.items():
    chain = MarkovView(model, temperature=0.0)
    structure = chain.structure()
    loops = structure.absorbing_loops
    assert len(loops) == len(structure.recurrent)  # greedy: every closed class is a cycle
    settled = chain.n_step_law(1000, start_law)
    assert settled[np.concatenate([c.states for c in loops])].sum() > 1 - 1e-9  # nothing left on transient windows
    basin = [float(settled[c.states].sum()) for c in loops]
    greedy[name] = (chain, structure, basin)
    print(f"\n{name}, greedy: {len(loops)} closed class(es), all cycles; {structure.num_transient:,} of "
          f"{chain.num_windows:,} windows transient")
    for chain_class, mass in sorted(zip(loops, basin), key=lambda pair: -pair[1]):
        print(f"  period {chain_class.period:>3}, {100 * mass:6.2f}% of the text's contexts end here: "
              f"{loop_text(chain, chain_class.states)!r}")
    repeated = [mass for c, mass in zip(loops, basin) if len(set(loop_text(chain, c.states))) == 1]
    print(f"  {len(repeated)} loop(s) of one repeated character, holding {100 * sum(repeated):.2f}% "
          "of the text's contexts")

# %% [markdown]
# Loops of one repeated letter ("aaaa") come from ties: windows that never
# occur in the text get the uniform law from add-$k$ smoothing, greedy
# decoding breaks the tie towards the lowest token id, `a`, and such windows
# can close on themselves.  The last line for each model counts these loops
# and the share of the text's contexts that end in them: loops of this kind
# are hardly reached from real text.  The network has no such ties; the
# number of its loops is on its first line.

# %% [markdown]
# ## Top-$k$ and top-$p$
#
# Keeping the $k$ most probable tokens (or the smallest set of probability at
# least $p$) keeps more than one successor per window, which can join the
# loops into fewer closed classes (the `closed` column; the line under the
# table gives it at $k = 2$).  What truncation still does is shrink
# the set of contexts the chain can come back to: every window outside the
# recurrent class is visited at most for a while, then never again.  The table
# reports, for each rule, the closed classes, their sizes and periods, and the
# transient windows.

# %%
rules = [("greedy", {"temperature": 0.0})] + [(f"k={k}", {"top_k": k}) for k in TOP_K]
rules += [(f"p={p}", {"top_p": p}) for p in TOP_P] + [("full", {})]
truncation = {name: [] for name in models}
for name, model in models.items():
    print(f"\n{name}: {'rule':>8} {'closed':>7} {'largest':>9} {'periods':>12} {'transient':>10} {'ergodic':>8}")
    for label, rule in rules:
        structure = MarkovView(model, **rule).structure()
        sizes = [len(c.states) for c in structure.recurrent]
        periods = sorted({c.period for c in structure.recurrent})
        truncation[name].append((label, len(sizes), max(sizes), structure.num_transient))
        print(f"{'':>{len(name) + 1}} {label:>8} {len(sizes):>7} {max(sizes):>9,} {str(periods[:4]):>12} "
              f"{structure.num_transient:>10,} {structure.ergodic!s:>8}")
closed = {name: {row[0]: row[1] for row in rows} for name, rows in truncation.items()}
print("\nclosed classes, greedy -> k=2: " + "; ".join(f"{name} {counts['greedy']} -> {counts['k=2']}"
                                                    for name, counts in closed.items()))

# %%
figure, axes = plt.subplots(1, 3, figsize=(17, 4.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
labels = [label for label, _ in rules]
x = np.arange(len(labels))
for offset, (name, rows) in zip((-0.2, 0.2), truncation.items()):
    axes[0].bar(x + offset, [row[1] for row in rows], width=0.4, label=name)
    axes[1].bar(x + offset, [100 * row[3] / vocab_size**CONTEXT_SIZE for row in rows], width=0.4, label=name)
axes[0].set(ylabel="closed classes", title="closed classes (> 1: no unique stationary law)")
axes[1].set(ylabel="% of windows", title="transient windows: contexts the chain leaves for good")
for axis in axes[:2]:
    axis.set_xticks(x, labels, rotation=60)
    axis.legend(fontsize=8)
chain, structure, basin = greedy["n-gram"]
order = np.argsort(basin)[::-1][:6]
lines = [f"{100 * basin[i]:6.2f}%  {loop_text(chain, structure.absorbing_loops[i].states, 2)!r}" for i in order]
chain_net, structure_net, basin_net = greedy["network"]
lines += ["", "network:"] + [f"{100 * mass:6.2f}%  {loop_text(chain_net, c.states, 2)!r}"
                             for c, mass in zip(structure_net.absorbing_loops, basin_net)]
axes[2].text(0.0, 0.95, "n-gram:\n" + "\n".join(lines), family="monospace", fontsize=9, va="top",
             transform=axes[2].transAxes)
axes[2].set_title("greedy loops as text\n(share of the text's contexts that end in each)", fontsize=9)
axes[2].axis("off")
figure.suptitle(f"T = {vocab_size}, K = {CONTEXT_SIZE}: {vocab_size**CONTEXT_SIZE:,} windows", fontsize=10)
figure.tight_layout()
figure.savefig(FIGURES / "truncation_makes_loops.png", dpi=110)
plt.show()
plt.close(figure)

# %% [markdown]
# ## The probability of saying a word
#
# A deterministic automaton that accepts once a pattern has appeared (the
# Knuth–Morris–Pratt automaton: state $q$ = length of the longest prefix of
# the pattern that ends the text read so far) turns "the generation contains
# the word" into a constraint.  The pair (window, automaton state) is again a
# Markov chain (theorem 10, part 7), so `constraint_probability(dfa, n,
# prompt)` is exact: the mass absorbed by the accepting state within $n$
# generated characters, at cost $O(n\, T^{K+1} (m + 1))$ for a pattern of $m$
# characters.

# %%
def contains_dfa(pattern: str) -> DFA:
    """DFA over ALPHABET that accepts (and stays accepting) once ``pattern`` has been read."""
    return contains_pattern(encode(pattern, ALPHABET), vocab_size)


def dfa_accepts(dfa: DFA, string: str) -> bool:
    state = dfa.start
    for token in encode(string, ALPHABET):
        state = int(dfa.transitions[state, token])
    return bool(dfa.accepting[state])


# the automaton against Python's `in` on random strings over a small alphabet (overlaps included)
rng = np.random.default_rng(0)
for pattern in (" the ", "string", "aab"):
    dfa = contains_dfa(pattern)
    for _ in range(300):
        sample = "".join(rng.choice(list(set(pattern) | {"a", " "}), size=rng.integers(0, 14)))
        assert dfa_accepts(dfa, sample) == (pattern in sample), (pattern, sample)

PROMPT = "this function returns a"
STEPS = [5, 10, 20, 40, 80]
PATTERNS = [" the ", "string"]
prompt_ids = encode(PROMPT, ALPHABET)
decodings = [("greedy", {"temperature": 0.0}), ("tau=0.5", {"temperature": 0.5}),
             ("tau=1", {"temperature": 1.0}), ("tau=2", {"temperature": 2.0}),
             ("tau=1, k=3", {"temperature": 1.0, "top_k": 3})]
constraint = {}
for pattern in PATTERNS:
    dfa = contains_dfa(pattern)
    for name, model in models.items():
        print(f"\nP({pattern!r} within n characters after {PROMPT!r}), {name}")
        print(f"{'':>12}" + "".join(f"{'n=' + str(n):>9}" for n in STEPS))
        for label, rule in decodings:
            chain = MarkovView(model, **rule)
            values = list(chain.constraint_probability(dfa, np.array(STEPS), prompt_ids))  # one pass
            constraint[pattern, name, label] = values
            print(f"{label:>12}" + "".join(f"{value:>9.4f}" for value in values))
            assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))  # "within n" grows with n
            if label == "greedy":
                assert all(min(value, 1 - value) < 1e-12 for value in values)  # deterministic: 0 or 1

greedy_chain = MarkovView(ngram, temperature=0.0)
tokens = list(prompt_ids)
for _ in range(60):
    tokens.append(int(np.argmax(greedy_chain.probs[greedy_chain.window_index(tokens[-CONTEXT_SIZE:])])))
print(f"\nthe n-gram's greedy continuation: {decode(np.array(tokens), ALPHABET)!r}")

figure, axes = plt.subplots(1, len(PATTERNS), figsize=(12, 4))
for axis, pattern in zip(axes, PATTERNS):
    for (label, _), color in zip(decodings, ("k", "C0", "C1", "C2", "C3")):
        for name, style in (("n-gram", "o-"), ("network", "s--")):
            axis.plot(STEPS, constraint[pattern, name, label], style, color=color, markersize=4,
                      label=f"{name}, {label}")
    axis.set_xscale("log")
    axis.set_xticks(STEPS, [str(n) for n in STEPS])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set(xlabel="characters generated n", ylabel="probability", ylim=(-0.03, 1.03),
             title=f"P({pattern!r} appears within n characters)")
axes[0].legend(fontsize=7, ncol=2)
figure.suptitle(f"after the prompt {PROMPT!r}; exact (window x automaton chain)", fontsize=10)
figure.tight_layout()
figure.savefig(FIGURES / "truncation_constraint_probability.png", dpi=110)
plt.show()
plt.close(figure)
print(f"\nexample ran in {time.perf_counter() - started:.1f} s; figures in {FIGURES}")

# %% [markdown]
# **Reading the numbers.**  Greedy decoding turns every question into 0 or 1:
# the continuation is one fixed string that ends in a loop, so a word is
# either in that loop (and then certain) or never said.  Sampling at $\tau > 0$
# keeps the chain irreducible and the probability of any word that the model
# can spell tends to 1 as $n$ grows; temperature sets how fast.  Top-$k$ sits in
# between: words outside the recurrent class of the truncated chain are said,
# if at all, only early on.
