"""Tokenization bias on real English text, exactly: a BPE trained by HuggingFace over a character trigram model.

Text: the docstrings of the standard library (``arprob.markov.text.stdlib_text``) reduced to 27 symbols
(a-z and space), split in half.  On the first half:

* a character trigram model (``NGram``, K = 2 context characters, add-k counts with k = 0.1; 28^2 windows
  with the beginning-of-text padding) - the "true" character process;
* a BPE tokenizer trained by HuggingFace ``tokenizers`` (no pre-tokenizer, 200-character chunks, 300 tokens),
  read into ``BPETokenizer.from_huggingface``.

The ideal token model is ``induced_token_model(trigram, bpe, N)``: the exact law of the BPE encoding of N
characters from the trigram model.  Prompts are substrings of the held-out half that start at a word
boundary (the character after a space), of 1 to N - 1 characters.  For each, the next-character law by the
four methods of ``next_char_law`` is compared with the trigram model's conditional (TV distance): mean, 90th
percentile and maximum over prompts, the share of prompts with TV > 0.1, the share where the naive reading is
undefined (the encoded prompt is not a prefix of any encoding: probability 0), and the model calls per prompt.

Run: ``python benchmarks/tokenization_real_text.py [--quick]`` (quick: 150 tokens, N = 10, 100 prompts).
Writes ``benchmarks/results/tokenization_real_text.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from tokenizers import Tokenizer, models, trainers  # noqa: E402

from arprob import NGram  # noqa: E402
from arprob.errors import ZeroProbabilityError  # noqa: E402
from arprob.markov.text import ALPHABET, encode, reduce_alphabet, stdlib_text  # noqa: E402
from arprob.tokenization import METHODS, BPETokenizer, induced_token_model  # noqa: E402
from arprob.tokenization.correction import TokenModelCalls, _law  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def trigram(ids: np.ndarray, add_k: float = 0.1) -> NGram:
    """Add-k trigram counts with the beginning-of-text id T padding the first two contexts."""
    size = len(ALPHABET)
    counts = np.full((size + 1, size + 1, size), add_k)
    padded = np.concatenate([[size, size], ids])
    np.add.at(counts, (padded[:-2], padded[1:-1], padded[2:]), 1.0)
    return NGram(counts / counts.sum(-1, keepdims=True), 64)


def main(quick: bool = False) -> dict:
    text = reduce_alphabet(stdlib_text())
    half = len(text) // 2
    vocab_size, num_chars, num_prompts = (150, 10, 100) if quick else (300, 16, 400)

    start = time.perf_counter()
    hf = Tokenizer(models.BPE())
    hf.train_from_iterator([text[i:i + 200] for i in range(0, half, 200)],
                           trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(ALPHABET),
                                               show_progress=False))
    bpe = BPETokenizer.from_huggingface(hf, ALPHABET)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    automaton = bpe.automaton()
    automaton_seconds = time.perf_counter() - start
    chars = trigram(encode(text[:half]))

    start = time.perf_counter()
    model = induced_token_model(chars, bpe, num_chars)
    dp_seconds = time.perf_counter() - start

    rng = np.random.default_rng(0)
    held_out = text[half:]
    word_starts = np.flatnonzero(np.frombuffer(held_out[:-num_chars].encode(), np.uint8) == ord(" ")) + 1
    distances = {method: [] for method in METHODS}
    calls = {method: [] for method in METHODS}
    undefined = 0
    start = time.perf_counter()
    for position in rng.choice(word_starts, num_prompts, replace=False):
        prompt = held_out[position:position + int(rng.integers(1, num_chars))]
        context = [ALPHABET.index(c) for c in prompt]
        truth = np.asarray(chars.next_token_probs(context), np.float64)
        for method in METHODS:
            counter = TokenModelCalls("benchmark", model, bpe)
            try:
                law = _law("benchmark", counter, bpe, prompt, method)
            except ZeroProbabilityError:
                undefined += method == "naive"
                continue
            distances[method].append(0.5 * float(np.abs(law - truth).sum()))
            calls[method].append(counter.calls)
    methods_seconds = time.perf_counter() - start

    summary = {}
    for method in METHODS:
        values = np.array(distances[method])
        summary[method] = {"prompts": int(values.size), "mean_tv": float(values.mean()),
                           "p90_tv": float(np.quantile(values, 0.9)), "max_tv": float(values.max()),
                           "share_tv_over_0.1": float(np.mean(values > 0.1)),
                           "mean_model_calls": float(np.mean(calls[method]))}
    result = {
        "settings": {"tokens": bpe.num_tokens, "max_token_length": bpe.max_token_length, "num_chars": num_chars,
                     "prompts": num_prompts, "char_model": "trigram (K=2), add-k 0.1, first half of the text",
                     "text_characters": len(text)},
        "seconds": {"hf_train_and_read": round(train_seconds, 2), "bpe_automaton": round(automaton_seconds, 2),
                    "induced_model_dp": round(dp_seconds, 2), "all_methods_all_prompts": round(methods_seconds, 2)},
        "automaton_states": automaton.num_states,
        "dp_table_entries": int(np.prod(model._table.shape)),
        "naive_undefined_share": undefined / num_prompts,
        "methods": summary,
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = main(args.quick)
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tokenization_real_text.json").write_text(json.dumps(result, indent=2) + "\n")
