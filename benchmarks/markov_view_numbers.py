"""The numbers of ``docs/concepts/markov-view.md`` that need models fitted on real text.

The page states what the two examples ``examples/language_model_is_a_markov_chain.py`` and
``examples/truncation_makes_loops.py`` find; this script recomputes those numbers with the same models
(``fit_char_ngram`` with add-k = 0.5 and ``train_char_network`` with 64 hidden units and key 0, fitted on
``stdlib_text`` reduced to an alphabet) and writes them to ``benchmarks/results/markov_view_numbers.json``,
which the page reads when it is built.  The parity toy's numbers are cheap and the page computes them
itself, with the helpers of this file (``parity_toy``, ``first_step_below``, ...).

1. ``sweep_ci``: the temperature sweep at the examples' CI setting (8 symbols ``aehinot`` and space,
   K = 3, 512 windows; everything exact over all starts) and the looseness of Zekri et al.'s bound at
   the largest step count where the exact side is above 1e-12.
2. ``sweep_full``: the same at the full setting (27 symbols, K = 3, 19,683 windows, the network trained
   for 2,000 steps; mixing times over ``MarkovView.default_starts``), and Zekri's bound on the n-gram and
   the network at tau = 1 with the exact side over all 19,683 starts (in chunks): most of the run time.
3. ``truncation``: the models of ``truncation_makes_loops.py`` (fitted on the whole text) under greedy,
   top-k and top-p decoding: closed classes, loops as text, the share of the text's contexts that end in
   each loop, and the probability that " the " appears within n characters after a prompt; the greedy
   loops again at K = 4 (531,441 windows).

Run: ``python benchmarks/markov_view_numbers.py`` (about ten minutes on 2 CPU cores; the run time is
stored in the JSON).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from arprob.markov import MarkovView, contains_pattern  # noqa: E402
from arprob.markov.char_models import fit_char_ngram, train_char_network  # noqa: E402
from arprob.markov.text import ALPHABET, decode, encode, reduce_alphabet, stdlib_text  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
CONTEXT_SIZE = 3
ADD_K = 0.5  # pseudo-count of the n-gram's add-k smoothing (both examples)
HIDDEN_SIZE = 64
CI_SYMBOLS = "aehinot "  # the examples' CI setting: 7 frequent letters and the space
TEMPERATURES = tuple(float(t) for t in 2.0 ** np.arange(-2.0, 2.25, 0.5))  # 1/4, ..., 4: nine points
PARITY_GAP = 5.5  # the paper's toy: logit gap between the parity rule's token and the other
RESOLVED = 1e-12  # exact distances above this are four orders clear of float64 rounding
ZEKRI_STEPS = {"n-gram": (10, 30, 100), "network": (10, 30)}  # step counts of the page's table, 27 symbols
ZEKRI_CHUNK = 2048  # starts stepped together when the exact side runs over all windows
TOP_K = (1, 2, 3, 5, 8)
TOP_P = (0.3, 0.5, 0.7, 0.9, 0.95)
PROMPT = "this function returns a"
PATTERN = " the "
CONSTRAINT_STEPS = (5, 10, 20, 40, 80)
CONSTRAINT_TEMPERATURES = (0.0, 0.5, 1.0, 2.0)


# -- helpers (the page imports these for the parity toy) ---------------------------------------
def parity_logits(windows) -> np.ndarray:
    """Logits (batch, 2): ``PARITY_GAP`` on the parity of the window's tokens (padding id 2 counts as 0)."""
    windows = np.asarray(windows)
    parity = np.where(windows < 2, windows, 0).sum(axis=1) % 2
    logits = np.zeros((len(windows), 2))
    logits[np.arange(len(windows)), parity] = PARITY_GAP
    return logits


def parity_toy(temperature: float) -> MarkovView:
    """Zekri et al.'s toy: T = 2, K = 3, the next token is the parity of the last three."""
    return MarkovView.from_logits(parity_logits, vocab_size=2, context_size=3, temperature=temperature)


def entropy_bits(law) -> float:
    """Entropy in bits of a law (0 log 0 = 0)."""
    law = np.asarray(law)
    law = law[law > 0]
    return float(-(law * np.log2(law)).sum())


def first_step_below(chain: MarkovView, level: float, starts=None) -> int:
    """The first n with max|Q^n - pi| <= level (over ``starts``), by doubling then bisection.

    Each column of Q^(n+1) - 1 pi is Q times the column of Q^n - 1 pi, a convex combination, so the
    largest entry never increases and bisection is valid.
    """
    high = chain.context_size
    while chain.zekri_bound(high, starts=starts).exact > level:
        high *= 2
    low = -1  # max|Q^low - pi| > level for low >= 0; -1 stands for "none checked"
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if chain.zekri_bound(middle, starts=starts).exact > level else (low, middle)
    return high


def bound_steps_to(chain: MarkovView, level: float) -> int:
    """The first n at which Zekri et al.'s bound (1 - 2 eps)^(floor(n/K) - 1) is <= ``level``."""
    epsilon = math.exp(chain.epsilon())
    return chain.context_size * (1 + math.ceil(math.log(level) / math.log1p(-2 * epsilon)))


def largest_resolved(chain: MarkovView, last: int):
    """Zekri's bound on 25 step counts from K to ``last``; the report at the largest n with exact > 1e-12."""
    counts = np.unique(np.linspace(chain.context_size, last, 25).astype(int))
    reports = [chain.zekri_bound(int(n)) for n in counts]
    return [report for report in reports if report.exact > RESOLVED][-1]


def extrapolated_looseness(anchor, bound_steps: int, modulus: float, level: float = 0.25) -> float:
    """Orders of magnitude between ``level`` and C |lambda_2|^n at n = ``bound_steps``, C from ``anchor``."""
    exact = math.log10(anchor.exact) + (bound_steps - anchor.steps) * math.log10(modulus)
    return math.log10(level) - exact


# -- models --------------------------------------------------------------------------------------
def fit_models(symbols: str, context_size: int, network_steps: int, train_fraction: float):
    """The examples' n-gram and network on the first ``train_fraction`` of the text over ``symbols``."""
    ids = encode(reduce_alphabet(stdlib_text(), symbols), symbols)
    train = ids[: int(train_fraction * len(ids))]
    ngram = fit_char_ngram(train, len(symbols), context_size, add_k=ADD_K)
    network = train_char_network(
        jax.random.key(0), train, len(symbols), context_size, hidden_size=HIDDEN_SIZE, num_steps=network_steps
    )
    return {"n-gram": ngram, "network": network}, ids


# -- 1 and 2: the temperature sweeps and Zekri's bound ------------------------------------------
def sweep(symbols: str, network_steps: int, zekri_last: int) -> tuple[dict, dict]:
    """The sweep of ``language_model_is_a_markov_chain.py`` (its models: 90% of the text) and its chains."""
    models, ids = fit_models(symbols, CONTEXT_SIZE, network_steps, train_fraction=0.9)
    letters = np.bincount(ids, minlength=len(symbols)) / len(ids)
    out = {
        "symbols": symbols,
        "vocab_size": len(symbols),
        "context_size": CONTEXT_SIZE,
        "num_windows": len(symbols) ** CONTEXT_SIZE,
        "add_k": ADD_K,
        "hidden_size": HIDDEN_SIZE,
        "network_steps": network_steps,
        "text_entropy_bits": entropy_bits(letters),
        "models": {},
    }
    chains = {}
    for name, model in models.items():
        points = []
        for temperature in TEMPERATURES:
            chain = MarkovView(model, temperature=temperature)
            marginal = chain.token_marginal()
            modulus = chain.second_eigenvalue_modulus()
            mixing = chain.mixing_time(0.25)
            points.append(
                {
                    "temperature": temperature,
                    "entropy_bits": entropy_bits(marginal),
                    "lambda_2": modulus,
                    "gap": 1.0 - modulus,
                    "mixing_time": mixing.steps,
                    "exhaustive": mixing.exhaustive,
                }
            )
            if temperature == 1.0:
                chains[name] = chain
                tv_letters = 0.5 * float(np.abs(marginal - letters).sum())
                anchor = largest_resolved(chain, zekri_last)
                bound_steps = bound_steps_to(chain, 0.25)
                zekri = {
                    "log10_epsilon": anchor.log10_epsilon,
                    "resolved_steps": anchor.steps,
                    "resolved_exact": anchor.exact,
                    "resolved_log10_looseness": anchor.log10_looseness,
                    "resolved_exhaustive": anchor.exhaustive,
                    "bound_steps_to_quarter": bound_steps,
                    "exact_steps_to_quarter": first_step_below(chain, 0.25),
                    "extrapolated_log10_looseness": extrapolated_looseness(anchor, bound_steps, modulus),
                }
            print(
                f"{symbols!r} {name:8s} tau={temperature:.3f} H={points[-1]['entropy_bits']:.3f} bits "
                f"gap={points[-1]['gap']:.4f} t_mix={mixing.steps}",
                flush=True,
            )
        out["models"][name] = {"points": points, "tv_to_text_at_1": tv_letters, "zekri": zekri}
    return out, chains


def zekri_all_starts(chain: MarkovView, steps, chunk: int = ZEKRI_CHUNK) -> list[dict]:
    """Zekri's bound with the exact side over every window, passed to ``zekri_bound`` in chunks of starts."""
    rows = []
    for n in steps:
        exact = 0.0
        for first in range(0, chain.num_windows, chunk):
            report = chain.zekri_bound(n, starts=np.arange(first, min(first + chunk, chain.num_windows)))
            exact = max(exact, report.exact)
        rows.append(
            {
                "steps": n,
                "bound": report.bound,
                "exact": exact,
                "log10_looseness": report.log10_bound - math.log10(exact),
            }
        )
        print(
            f"  Zekri over all {chain.num_windows:,} starts at n={n}: exact {exact:.3g}, "
            f"{rows[-1]['log10_looseness']:.2f} orders loose",
            flush=True,
        )
    return rows


def zekri_full(chains: dict) -> dict:
    """Zekri's bound on the 27-symbol chains at tau = 1: every start, and the default start set at the first n."""
    out = {}
    for name, chain in chains.items():
        first = ZEKRI_STEPS[name][0]
        default = chain.zekri_bound(first)
        out[name] = {
            "all_starts": zekri_all_starts(chain, ZEKRI_STEPS[name]),
            "default_starts": {
                "steps": first,
                "num_starts": len(chain.default_starts()),
                "exact": default.exact,
                "log10_looseness": default.log10_looseness,
            },
        }
    return out


# -- 3: truncation ------------------------------------------------------------------------------
def loop_text(chain: MarkovView, states, repeats: int = 3) -> str:
    """The greedy cycle through the windows ``states`` as text, ``repeats`` times round, from after a space."""
    space = ALPHABET.index(" ")
    tokens = list(chain.window(int(states[0])))
    rounds = len(states) * repeats
    for _ in range(rounds):
        tokens.append(int(np.argmax(chain.probs[chain.window_index(tokens[-chain.context_size :])])))
    loop = tokens[-rounds:]
    if space in loop[: len(states)]:
        shift = loop.index(space) + 1
        loop = loop[shift:] + loop[:shift]
    return decode(np.array(loop), ALPHABET)


def text_window_law(ids: np.ndarray, vocab_size: int, context_size: int) -> np.ndarray:
    """Frequencies of the text's windows (base-T index, oldest token first)."""
    index = np.zeros(len(ids) - context_size + 1, dtype=np.int64)
    for offset in range(context_size):
        index = index * vocab_size + ids[offset : len(ids) - context_size + 1 + offset]
    return np.bincount(index, minlength=vocab_size**context_size) / len(index)


def greedy_loops(model, ids: np.ndarray) -> dict:
    """Closed classes under greedy decoding, each loop as text with the share of the text's contexts ending in it."""
    chain = MarkovView(model, temperature=0.0)
    structure = chain.structure()
    loops = structure.absorbing_loops
    settled = chain.n_step_law(1000, text_window_law(ids, chain.vocab_size, chain.context_size))
    on_loops = float(sum(settled[c.states].sum() for c in loops))
    rows = sorted(
        (
            {"period": c.period, "text": loop_text(chain, c.states), "share": float(settled[c.states].sum())}
            for c in loops
        ),
        key=lambda row: -row["share"],
    )
    return {
        "num_windows": chain.num_windows,
        "closed": len(structure.recurrent),
        "cycles": len(loops),
        "transient": structure.num_transient,
        "mass_on_loops": on_loops,
        "loops": rows,
    }


def truncation_rules(model) -> dict:
    """Closed classes (sizes, periods) and transient windows under top-k and top-p."""
    rules = [(f"k={k}", {"top_k": k}) for k in TOP_K] + [(f"p={p}", {"top_p": p}) for p in TOP_P]
    out = {}
    for label, rule in rules:
        structure = MarkovView(model, **rule).structure()
        out[label] = {
            "sizes": [len(c.states) for c in structure.recurrent],
            "periods": [c.period for c in structure.recurrent],
            "transient": structure.num_transient,
            "ergodic": structure.ergodic,
        }
    return out


def constraint(model) -> dict:
    """P(PATTERN within n characters after PROMPT) by temperature; greedy: the first n where it is 1."""
    dfa = contains_pattern(encode(PATTERN, ALPHABET), len(ALPHABET))
    prompt = encode(PROMPT, ALPHABET)
    out = {"num_dfa_states": int(np.shape(dfa.transitions)[0]), "by_temperature": {}}
    for temperature in CONSTRAINT_TEMPERATURES:
        chain = MarkovView(model, temperature=temperature)
        values = chain.constraint_probability(dfa, np.array(CONSTRAINT_STEPS), prompt)
        out["by_temperature"][f"{temperature:g}"] = [float(value) for value in values]
    every = MarkovView(model, temperature=0.0).constraint_probability(
        dfa, np.arange(1, max(CONSTRAINT_STEPS) + 1), prompt
    )
    said = np.flatnonzero(every > 0.5)
    out["greedy_first_step"] = int(said[0]) + 1 if said.size else None
    return out


def truncation(context_size: int, network_steps: int, everything: bool) -> dict:
    """The models of ``truncation_makes_loops.py`` (the whole text, 27 symbols) at context ``context_size``."""
    models, ids = fit_models(ALPHABET, context_size, network_steps, train_fraction=1.0)
    out = {
        "context_size": context_size,
        "num_windows": len(ALPHABET) ** context_size,
        "network_steps": network_steps,
        "models": {},
    }
    for name, model in models.items():
        row = {"greedy": greedy_loops(model, ids)}
        if everything:
            row["rules"] = truncation_rules(model)
            row["constraint"] = constraint(model)
        out["models"][name] = row
        print(
            f"K={context_size} {name}: {row['greedy']['closed']} closed classes, main loop "
            f"{row['greedy']['loops'][0]['text']!r}",
            flush=True,
        )
    return out


def main() -> None:
    started = time.perf_counter()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores", flush=True)
    seconds = {}
    clock = time.perf_counter()
    ci, _ = sweep(CI_SYMBOLS, network_steps=300, zekri_last=120)
    seconds["sweep_ci"] = time.perf_counter() - clock
    clock = time.perf_counter()
    full, chains = sweep(ALPHABET, network_steps=2000, zekri_last=300)
    seconds["sweep_full"] = time.perf_counter() - clock
    clock = time.perf_counter()
    full["zekri_all_starts"] = zekri_full(chains)
    seconds["zekri_all_starts"] = time.perf_counter() - clock
    clock = time.perf_counter()
    loops = {
        "k3": truncation(3, network_steps=300, everything=True),
        "k4": truncation(4, network_steps=2000, everything=False),
    }
    seconds["truncation"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    result = {
        "machine": f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores",
        "seconds": seconds,
        "sweep_ci": ci,
        "sweep_full": full,
        "truncation": loops,
        "constraint_setting": {"prompt": PROMPT, "pattern": PATTERN, "steps": list(CONSTRAINT_STEPS)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "markov_view_numbers.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'markov_view_numbers.json'} in {seconds['total']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
