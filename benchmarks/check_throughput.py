"""Throughput of ``arprob.verify.check`` (sampling + counting) against NumPy baselines, in one run.

Rows:

* ``check`` with ``ancestral`` on ``MarkovChain(V=4, L=8)`` (full joint: 65,536 cells) against
  inverse-CDF draws of whole sequences from the 4**8 law plus ``np.bincount`` (the counting a
  joint test needs, and nothing else);
* ``check`` with ``model.sample`` on ``NGram(V=16, K=1, L=32)`` (auto: 32 marginals, 28 pairs,
  a 4-token prefix and the Rosenblatt test) against the NumPy sequential sampler vectorised over
  samples at the same V and L (sampling only, no counting at all).

``check``'s samples/s is its own measurement (compilation excluded); each row runs ``--samples``
samples; rows are interleaved over ``--rounds`` rounds and the medians compared.  Run:
``python benchmarks/check_throughput.py [--samples 4000000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from sampling_vs_numpy import numpy_chain, numpy_inverse_cdf  # noqa: E402

from arprob import MarkovChain, NGram  # noqa: E402
from arprob.samplers import ancestral  # noqa: E402
from arprob.verify import check  # noqa: E402


def numpy_rate(run, samples, chunk=2**18):
    rng = np.random.default_rng(0)
    run(rng, 1024)
    start = time.perf_counter()
    done = 0
    while done < samples:
        run(rng, min(chunk, samples - done))
        done += chunk
    return samples / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--x64", action="store_true", help="enable float64 (as arprob check does)")
    args = parser.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    key = jax.random.key(0)
    markov = MarkovChain.random(key, 8, 4)
    wide = NGram.random(key, 32, 16, 1)
    law = np.asarray(markov.law(), np.float64)
    rows = [
        ("check(ancestral), MarkovChain(V=4, L=8), joint",
         lambda: check(lambda k, n: ancestral(k, markov, n), markov, num_samples=args.samples),
         "inverse CDF + bincount", numpy_inverse_cdf(law, 8, 4)),
        ("check(model.sample), NGram(V=16, L=32), auto",
         lambda: check(lambda k, n: wide.sample(k, (n,)), wide, num_samples=args.samples),
         "sequential sampler", numpy_chain(np.exp(np.asarray(wide.log_table, np.float64)), 16, 16, 1, 32)),
    ]
    ours = {name: [] for name, *_ in rows}
    theirs = {name: [] for name, *_ in rows}
    tests = {}
    for _ in range(args.rounds):
        for name, run_check, _, numpy_run in rows:
            report = run_check()
            ours[name].append(report.samples_per_second)
            tests[name] = (len(report.tests), report.passed, report.fused)
            theirs[name].append(numpy_rate(numpy_run, args.samples))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()}), x64={args.x64}, {args.samples:,} samples per row, median of "
          f"{args.rounds} interleaved rounds")
    print("| row | tests | check M samples/s | NumPy baseline | NumPy M/s | ratio |")
    print("|---|---:|---:|---|---:|---:|")
    for name, _, baseline, _ in rows:
        a, b = statistics.median(ours[name]) / 1e6, statistics.median(theirs[name]) / 1e6
        print(f"| {name} | {tests[name][0]} | {a:.2f} | {baseline} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
