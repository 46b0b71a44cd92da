"""How much tokenization bias is left after the correction when the token model is learned, not exact.

For each first-order chain on {a, b} (P(a -> a) = alpha, P(b -> a) = beta, uniform start) and each tokenizer,
a ``TokenNetwork`` (context 4 tokens + the character count, 2 hidden layers of 64) is trained with optax on
the encodings of 20,000 strings of N = 8 characters drawn from the chain (3,000 Adam steps of 256 pairs).
For every prompt of 1..7 characters, weighted by its probability under the chain and averaged over prompt
lengths, the TV between each method's next-character law and the chain's conditional is computed twice:
from the exact token model (``induced_token_model``: the bias of the method itself) and from the network
(bias + learning error).  Prompts whose naive reading is undefined (probability 0 under the exact model)
are counted apart and left out of the naive and healing means.

Run: ``python benchmarks/tokenization_learned.py [--quick]`` (quick: one chain, one tokenizer, 1,000 steps).
Writes ``benchmarks/results/tokenization_learned.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from arprob import MarkovChain  # noqa: E402
from arprob.errors import ZeroProbabilityError  # noqa: E402
from arprob.tokenization import (  # noqa: E402
    METHODS,
    BPETokenizer,
    MaxPrefixTokenizer,
    induced_token_model,
    next_char_law,
    sample_encodings,
    train_token_network,
)

RESULTS = pathlib.Path(__file__).parent / "results"
NUM_CHARS = 8
TOKENIZERS = {
    "MPE {a, b, aa} (the paper's)": lambda: MaxPrefixTokenizer(["a", "b", "aa"]),
    "MPE {a, b, aaa, bbb}": lambda: MaxPrefixTokenizer(["a", "b", "aaa", "bbb"]),
    "BPE a+b, b+a, ab+a, a+a": lambda: BPETokenizer([("a", "b"), ("b", "a"), ("ab", "a"), ("a", "a")], "ab"),
}
CHAINS = [(0.7, 0.4), (0.2, 0.8), (0.9, 0.1)]


def biases(model, chain, tokenizer) -> tuple[dict, float]:
    """Probability-weighted mean TV per method over all prompts of 1..N-1 characters; the undefined share."""
    totals = dict.fromkeys(METHODS, 0.0)
    weights = dict.fromkeys(METHODS, 0.0)
    undefined = 0.0
    for size in range(1, NUM_CHARS):
        for ids in itertools.product(range(2), repeat=size):
            weight = float(np.exp(sum(np.log(chain.next_token_probs(list(ids[:i]))[ids[i]]) for i in range(size))))
            weight /= NUM_CHARS - 1
            truth = np.asarray(chain.next_token_probs(list(ids)), np.float64)
            prompt = "".join("ab"[i] for i in ids)
            for method in METHODS:
                try:
                    law = next_char_law(model, tokenizer, prompt, method)
                except ZeroProbabilityError:
                    undefined += weight if method == "naive" else 0.0
                    continue
                totals[method] += weight * 0.5 * float(np.abs(law - truth).sum())
                weights[method] += weight
    return {method: totals[method] / weights[method] for method in METHODS}, undefined


def main(quick: bool = False) -> dict:
    rows = []
    tokenizers = dict(list(TOKENIZERS.items())[:1]) if quick else TOKENIZERS
    chains = CHAINS[:1] if quick else CHAINS
    num_steps = 1000 if quick else 3000
    for (name, build), (alpha, beta) in itertools.product(tokenizers.items(), chains):
        tokenizer = build()
        chain = MarkovChain(np.array([0.5, 0.5]), np.array([[alpha, 1 - alpha], [beta, 1 - beta]]), NUM_CHARS)
        exact = induced_token_model(chain, tokenizer, NUM_CHARS)
        start = time.perf_counter()
        encodings = sample_encodings(jax.random.key(1), chain, tokenizer, NUM_CHARS, 20_000)
        network = train_token_network(jax.random.key(2), encodings, tokenizer, num_steps=num_steps)
        seconds = time.perf_counter() - start
        exact_bias, undefined = biases(exact, chain, tokenizer)
        learned_bias, _ = biases(network, chain, tokenizer)
        rows.append({"tokenizer": name, "alpha": alpha, "beta": beta, "train_seconds": round(seconds, 2),
                     "naive_undefined_mass": undefined, "exact_model": exact_bias, "learned_model": learned_bias})
    return {"num_chars": NUM_CHARS, "encodings": 20_000, "num_steps": num_steps, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = main(args.quick)
    for row in result["rows"]:
        cells = "  ".join(f"{m}: {row['exact_model'][m]:.4f} -> {row['learned_model'][m]:.4f}" for m in METHODS)
        undefined = row["naive_undefined_mass"]
        print(f"{row['tokenizer']:32s} a={row['alpha']} b={row['beta']}  {cells}  undefined {undefined:.3f}")
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tokenization_learned.json").write_text(json.dumps(result, indent=2) + "\n")
