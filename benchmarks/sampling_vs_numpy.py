"""Throughput of ``model.sample`` for the exact token models against NumPy baselines, in one run.

Rows (V=4, L=8 unless stated):

* ``TabularJoint.sample`` against inverse-CDF draws of whole sequences from the 4**8 table
  (``np.searchsorted`` on the cumulative law) followed by ``np.bincount`` of the cells;
* ``MarkovChain.sample``, ``NGram.sample`` (K=2) and ``HMM.sample`` (K=4 states) against the
  sequential sampler vectorised over samples (one uniform per draw, compared with the cumulative
  row of every sample's current state/window).

Every sampler runs ``BATCH`` samples per call; the repetitions of the rows are interleaved
(each round times every row once) and the table reports medians, so that load from other
processes on the machine hits all rows alike.  The ratio is JAX samples/s over the NumPy
baseline's samples/s in the same run.

Run: ``python benchmarks/sampling_vs_numpy.py [--batch 262144] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from arprob import HMM, MarkovChain, NGram, TabularJoint

VOCAB, LENGTH = 4, 8


def numpy_inverse_cdf(law, length, vocab):
    cumulative = np.cumsum(law)
    cumulative[-1] = 1.0

    def run(rng, n):
        cells = np.searchsorted(cumulative, rng.random(n), side="right")
        return np.bincount(cells, minlength=law.size)

    return run


def numpy_chain(rows, start, vocab, context_size, length):
    """Sequential sampler over windows: ``rows[w]`` is the law of the next token after window ``w``."""
    cumulative = np.cumsum(rows, axis=-1)
    base, keep = vocab + 1, (vocab + 1) ** (context_size - 1)

    def run(rng, n):
        window = np.full(n, start)
        out = np.empty((n, length), np.int32)
        for t in range(length):
            token = (rng.random(n)[:, None] >= cumulative[window, :-1]).sum(axis=1)
            out[:, t] = token
            window = (window % keep) * base + token
        return out

    return run


def numpy_hmm(initial, transition, emission, length):
    state_cdf = np.cumsum(np.concatenate([transition, initial[None]]), axis=-1)
    emission_cdf = np.cumsum(emission, axis=-1)
    num_states = transition.shape[0]

    def run(rng, n):
        state = np.full(n, num_states)
        out = np.empty((n, length), np.int32)
        for t in range(length):
            state = (rng.random(n)[:, None] >= state_cdf[state, :-1]).sum(axis=1)
            out[:, t] = (rng.random(n)[:, None] >= emission_cdf[state, :-1]).sum(axis=1)
        return out

    return run


def jax_sampler(model, batch):
    sample = jax.jit(lambda key: model.sample(key, (batch,)))

    def run(counter):
        return sample(jax.random.key(counter)).block_until_ready()

    return run


def rows(batch):
    key = jax.random.key(0)
    tabular = TabularJoint.random(key, LENGTH, VOCAB)
    markov = MarkovChain.random(key, LENGTH, VOCAB)
    ngram = NGram.random(key, LENGTH, VOCAB, 2)
    hmm = HMM.random(key, LENGTH, 4, VOCAB)
    chain_rows = lambda model: np.exp(np.asarray(model.log_table, np.float64))  # noqa: E731
    return [
        ("TabularJoint(V=4, L=8)", "inverse CDF + bincount", jax_sampler(tabular, batch),
         numpy_inverse_cdf(tabular.law(), LENGTH, VOCAB)),
        ("MarkovChain(V=4, L=8)", "sequential", jax_sampler(markov, batch),
         numpy_chain(chain_rows(markov), VOCAB, VOCAB, 1, LENGTH)),
        ("NGram(V=4, K=2, L=8)", "sequential", jax_sampler(ngram, batch),
         numpy_chain(chain_rows(ngram), VOCAB * (VOCAB + 1) + VOCAB, VOCAB, 2, LENGTH)),
        ("HMM(K=4, V=4, L=8)", "sequential", jax_sampler(hmm, batch),
         numpy_hmm(np.asarray(hmm.initial_probs, np.float64), np.asarray(hmm.transition_probs, np.float64),
                   np.asarray(hmm.emission_probs, np.float64), LENGTH)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2**18)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    table = rows(args.batch)
    rng = np.random.default_rng(0)
    times = {name: ([], []) for name, *_ in table}
    counter = 0
    for _name, _, jax_run, numpy_run in table:  # warm-up: compile, first touch
        jax_run(counter)
        numpy_run(rng, args.batch)
    for _ in range(args.rounds):
        for name, _, jax_run, numpy_run in table:
            counter += 1
            start = time.perf_counter()
            jax_run(counter)
            middle = time.perf_counter()
            numpy_run(rng, args.batch)
            end = time.perf_counter()
            times[name][0].append(middle - start)
            times[name][1].append(end - middle)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()}), batch {args.batch:,}, median of {args.rounds} interleaved rounds")
    print(f"{'model':<24} {'arprob M/s':>11} {'NumPy baseline':<24} {'NumPy M/s':>10} {'ratio':>6}")
    for name, baseline, *_ in table:
        ours = args.batch / statistics.median(times[name][0]) / 1e6
        theirs = args.batch / statistics.median(times[name][1]) / 1e6
        print(f"{name:<24} {ours:>11.2f} {baseline:<24} {theirs:>10.2f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
