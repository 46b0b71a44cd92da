"""Time the exact any-order expected NLL: the subset form against enumerating all L! orders.

Run: python benchmarks/anyorder_expected_nll.py [--max-seconds 60] [--max-length 12]

``AnyOrderAR(family).expected_nll(x)`` computes
:math:`\\mathbb E_\\sigma[-\\log q_\\sigma(x)]` by the subset form of theorem 2
(``proofs/02-any-order-nll-subset-form.md``): :math:`2^L` observation patterns,
one network call each.  The brute force averages ``AnyOrderAR.log_prob(x, order)``
over all :math:`L!` orders, :math:`L` calls per order, batched in chunks of
:math:`2^{15}` orders (one compilation per length).

The family is an inconsistent one, so that the order average is not trivially
:math:`-\\log p(x)`: a context-2 n-gram over :math:`V = 2` tokens with
deterministic logit noise of scale 0.5 (``arprob.conditionals.perturbed``).
Times are steady state (each path is called once to compile first) for one
sequence.  The brute force runs for every length whose predicted time is below
``--max-seconds``; beyond, its time is extrapolated from the largest measured
length as proportional to the number of network calls times the length (the
cost of one call grows linearly with L here), marked with ``~``.  Where both
run, the script asserts that they agree to 1e-9.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from arprob import AnyOrderAR, NGram  # noqa: E402
from arprob.conditionals import perturbed  # noqa: E402

CHUNK = 2**15  # orders per brute-force call


def subset_form(model: AnyOrderAR, x) -> tuple[float, float]:
    """(expected NLL, steady-state seconds) by the subset form."""
    model.expected_nll(x).block_until_ready()  # compile
    start = time.perf_counter()
    value = float(model.expected_nll(x))
    return value, time.perf_counter() - start


def brute_force(model: AnyOrderAR, x) -> tuple[float, float]:
    """(expected NLL, steady-state seconds) by averaging -log q_sigma(x) over all L! orders."""
    length = model.length
    orders = np.array(list(itertools.permutations(range(length))), dtype=np.int32)
    chunk = min(CHUNK, orders.shape[0])
    model.log_prob(x, orders[:chunk]).block_until_ready()  # compile
    start = time.perf_counter()
    total = 0.0
    for begin in range(0, orders.shape[0], chunk):
        block = orders[begin : begin + chunk]
        size = block.shape[0]
        if size < chunk:  # pad with copies of the first order to keep one compiled shape
            block = np.concatenate([block, np.broadcast_to(block[:1], (chunk - size, length))])
        total += float(np.asarray(model.log_prob(x, block))[:size].sum())
    return -total / orders.shape[0], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="run the brute force while its predicted time is below this")
    parser.add_argument("--max-length", type=int, default=12)
    args = parser.parse_args()

    table = np.asarray(NGram.random(jax.random.key(3), 4, 2, 2).table)  # context 2, V = 2
    header = (f"{'L':>3} {'calls subset':>13} {'calls L*L!':>14} {'s subset':>10} {'s brute force':>14} "
              f"{'time ratio':>11} {'|difference|':>13}")
    print("expected NLL of one sequence under a perturbed NGram(V=2, K=2) family, "
          f"{jax.default_backend()} backend, float64")
    print(header)
    print("-" * len(header))
    measured = None  # (length, seconds) of the largest brute-force run
    for length in range(4, args.max_length + 1):
        family = perturbed(NGram(table, length, context_size=2), jax.random.key(7), 0.5)
        model = AnyOrderAR(family)
        x = np.random.default_rng(length).integers(0, 2, length)
        value, subset_seconds = subset_form(model, x)
        brute_calls = length * math.factorial(length)
        predicted = None
        if measured is not None:
            previous_length, previous_seconds = measured
            predicted = previous_seconds * (brute_calls * length) / (
                previous_length * math.factorial(previous_length) * previous_length)
        extrapolated = predicted is not None and predicted >= args.max_seconds
        if not extrapolated:
            reference, brute_seconds = brute_force(model, x)
            difference = abs(value - reference)
            assert difference < 1e-9, (length, value, reference)
            measured = (length, brute_seconds)
            brute_text, difference_text = f"{brute_seconds:14.3f}", f"{difference:13.1e}"
        else:
            brute_seconds = predicted
            brute_text, difference_text = f"{'~' + format(predicted, '.0f'):>14}", f"{'-':>13}"
        ratio = brute_seconds / subset_seconds
        ratio_text = f"{'~' + format(ratio, '.0f'):>11}" if extrapolated else f"{ratio:11.0f}"
        print(f"{length:>3} {2**length:>13,} {brute_calls:>14,} {subset_seconds:>10.4f} {brute_text} {ratio_text} "
              f"{difference_text}", flush=True)


if __name__ == "__main__":
    main()
