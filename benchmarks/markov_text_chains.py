"""Language models of real text as Markov chains: temperature sweeps and a 10^7-window chain.

Text: the docstrings of the standard library (``arprob.markov.text.stdlib_text``) reduced to 27 symbols
(a-z and space).  Models: an add-k character n-gram (``fit_char_ngram``) and a small next-character
network (``train_char_network``, trained on the first 90% of the text).

1. Temperature sweep at K = 3 (19,683 windows): for each temperature, the stationary entropy of the
   emitted token (nats), |lambda_2| (ARPACK on the matrix-free operator), the mixing time t_mix(1/4) over
   the documented start set (``MarkovView.default_starts``; a lower bound on the worst start), and the
   log10 looseness of Zekri et al.'s bound at n = 200.  Figure: ``markov_temperature_sweep.png``.
2. Scale: the n-gram and the network at K = 5 (27^5 = 14,348,907 windows, 3.9e8 table entries): time to
   build the table, time to the stationary law, iterations, residual, peak memory (VmHWM), token entropy.

Run: ``python benchmarks/markov_text_chains.py [--quick]`` (quick: 10 symbols, K = 3 and K = 4).
Writes ``benchmarks/results/markov_text_chains.json`` and the figure to $ARPROB_FIGURES (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from arprob.markov import MarkovView  # noqa: E402
from arprob.markov.char_models import cross_entropy, fit_char_ngram, train_char_network  # noqa: E402
from arprob.markov.text import ALPHABET, encode, reduce_alphabet, stdlib_text  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
TEMPERATURES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def peak_memory_gib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return math.nan


def entropy(probs: np.ndarray) -> float:
    probs = probs[probs > 0]
    return float(-(probs * np.log(probs)).sum())


def zekri_steps_to(chain: MarkovView, level: float) -> float:
    """Smallest n with (1 - 2 eps)^(floor(n/K) - 1) <= level: when Zekri et al.'s bound certifies ``level``."""
    epsilon = math.exp(chain.epsilon())
    return chain.context_size * (math.ceil(math.log(level) / math.log1p(-2 * epsilon)) + 1)


def models(alphabet: str, context_size: int, add_k: float, train_steps: int):
    ids = encode(reduce_alphabet(stdlib_text(), alphabet), alphabet)
    split = int(0.9 * len(ids))
    train, held_out = ids[:split], ids[split:]
    vocab_size = len(alphabet)
    ngram = fit_char_ngram(train, vocab_size, context_size, add_k=add_k)
    network = train_char_network(jax.random.key(0), train, vocab_size, context_size, hidden_size=128,
                                 num_steps=train_steps)
    return {"n-gram": ngram, "network": network}, held_out


def sweep(alphabet: str, context_size: int, add_k: float, train_steps: int) -> dict:
    fitted, held_out = models(alphabet, context_size, add_k, train_steps)
    rows = {}
    for name, model in fitted.items():
        rows[name] = {"held_out_nats_per_char": cross_entropy(model, held_out[:50_000]), "points": []}
        for temperature in TEMPERATURES:
            start = time.perf_counter()
            chain = MarkovView(model, temperature=temperature)
            stationary = chain.stationary()
            mixing_time = chain.mixing_time(0.25).steps
            bound = chain.zekri_bound(5 * mixing_time)  # exact side well above float64 rounding there
            point = {
                "temperature": temperature,
                "token_entropy": entropy(chain.token_marginal()),
                "lambda_2": chain.second_eigenvalue_modulus(),
                "mixing_time": mixing_time,
                "zekri_steps": 5 * mixing_time,
                "zekri_exact": bound.exact,
                "zekri_bound": bound.bound,
                "zekri_log10_looseness": bound.log10_looseness,
                "zekri_steps_to_quarter": zekri_steps_to(chain, 0.25),
                "log10_epsilon": bound.log10_epsilon,
                "residual": stationary.residual,
                "seconds": time.perf_counter() - start,
            }
            rows[name]["points"].append(point)
            print(f"{name:8s} T={temperature:4.2f} H={point['token_entropy']:.3f} nats "
                  f"|l2|={point['lambda_2']:.4f} t_mix={point['mixing_time']} "
                  f"Zekri at n={point['zekri_steps']}: bound {point['zekri_bound']:.6f} vs exact "
                  f"{point['zekri_exact']:.1e}; the bound reaches 1/4 after {point['zekri_steps_to_quarter']:.2e} "
                  f"steps ({point['seconds']:.1f} s)",
                  flush=True)
    return {"alphabet_size": len(alphabet), "context_size": context_size, "add_k": add_k, "models": rows}


def scale(alphabet: str, context_size: int, add_k: float, train_steps: int) -> dict:
    fitted, _ = models(alphabet, context_size, add_k, train_steps)
    out = {"alphabet_size": len(alphabet), "context_size": context_size,
           "windows": len(alphabet) ** context_size, "models": {}}
    for name, model in fitted.items():
        start = time.perf_counter()
        chain = MarkovView(model)
        _ = chain.probs
        built = time.perf_counter() - start
        start = time.perf_counter()
        stationary = chain.stationary(tol=1e-12)
        solved = time.perf_counter() - start
        row = {"table_seconds": built, "stationary_seconds": solved, "iterations": stationary.iterations,
               "residual": stationary.residual, "token_entropy": entropy(chain.token_marginal()),
               "peak_memory_gib": peak_memory_gib()}
        out["models"][name] = row
        print(f"{name:8s} K={context_size} windows={out['windows']:,}: table {built:.1f} s, stationary "
              f"{solved:.1f} s ({stationary.iterations} iterations, residual {stationary.residual:.1e}), "
              f"token entropy {row['token_entropy']:.3f} nats, peak {row['peak_memory_gib']:.1f} GiB", flush=True)
        del chain
    return out


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, row in result["models"].items():
        temperatures = [p["temperature"] for p in row["points"]]
        axes[0].plot(temperatures, [p["token_entropy"] for p in row["points"]], "o-", label=name)
        axes[1].plot(temperatures, [1 - p["lambda_2"] for p in row["points"]], "o-", label=name)
        axes[2].plot(temperatures, [p["mixing_time"] or np.nan for p in row["points"]], "o-", label=name)
    axes[0].axhline(math.log(result["alphabet_size"]), color="gray", ls=":", label="log T (uniform)")
    axes[0].set(xlabel="temperature", ylabel="stationary entropy of the token (nats)")
    axes[1].set(xlabel="temperature", ylabel=r"spectral gap $1 - |\lambda_2|$", yscale="log")
    axes[2].set(xlabel="temperature", ylabel=r"$t_{mix}(1/4)$ (start set)", yscale="log")
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xticks(TEMPERATURES, [f"{t:g}" for t in TEMPERATURES])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.legend()
    figure.suptitle(f"character models of stdlib docstrings, T = {result['alphabet_size']}, "
                    f"K = {result['context_size']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 symbols, K = 3 and 4 (about a minute)")
    parser.add_argument("--add-k", type=float, default=0.1, help="add-k smoothing of the n-gram (default 0.1)")
    args = parser.parse_args()
    alphabet = "etaoinshr " if args.quick else ALPHABET
    train_steps = 300 if args.quick else 2000
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores", flush=True)
    result = {"sweep": sweep(alphabet, 3, args.add_k, train_steps),
              "scale": scale(alphabet, 4 if args.quick else 5, args.add_k, train_steps)}
    RESULTS.mkdir(exist_ok=True)
    name = "markov_text_chains_quick.json" if args.quick else "markov_text_chains.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2))
    figures = pathlib.Path(os.environ.get("ARPROB_FIGURES", RESULTS))
    figures.mkdir(parents=True, exist_ok=True)
    plot(result["sweep"], figures / "markov_temperature_sweep.png")
    print(f"wrote {RESULTS / name} and {figures / 'markov_temperature_sweep.png'}")


if __name__ == "__main__":
    main()
