"""BPETokenizer agrees with HuggingFace ``tokenizers`` on a BPE trained with it on real English text.

The text is the docstrings of Python's standard library (``arprob.markov.text.stdlib_text``,
read at run time, reduced to 26 letters and the space); the HF trainer learns 300 tokens on the
first half without a pre-tokenizer (200-character chunks are its words), and both encoders must
give the same tokens on every test string: 3,000 random substrings of the held-out second half,
plus edge cases (single characters, long runs, spaces only).  ``tokenizers`` comes with the
``test`` extra (and the ``tokenization`` extra).
"""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, trainers

from arprob.markov.text import ALPHABET, reduce_alphabet, stdlib_text
from arprob.tokenization import BPETokenizer


@pytest.fixture(scope="module")
def trained():
    text = reduce_alphabet(stdlib_text())
    half = len(text) // 2
    hf = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=list(ALPHABET), show_progress=False)
    hf.train_from_iterator([text[i:i + 200] for i in range(0, half, 200)], trainer)
    return hf, BPETokenizer.from_huggingface(hf, ALPHABET), text[half:]


def test_same_encodings_as_huggingface(trained):
    hf, ours, held_out = trained
    assert ours.num_tokens > 200  # the merges were read: the alphabet and well over 170 merges
    rng = random.Random(0)
    strings = [held_out[i:i + rng.randint(1, 120)] for i in (rng.randrange(len(held_out) - 120) for _ in range(3000))]
    strings += list(ALPHABET) + ["e" * 40, "the " * 25, " " * 7, "zzzz", "qxj", ALPHABET * 3]
    for string in strings:
        assert [ours.tokens[i] for i in ours.encode(string)] == hf.encode(string).tokens, repr(string)
        assert ours.decode(ours.encode(string)) == string


def test_prefixes_of_encodings_are_encodings(trained):
    """Theorem 11, part 1, on the trained merges: every prefix of an encoding is the encoding of its text."""
    _, ours, held_out = trained
    rng = random.Random(1)
    for _ in range(300):
        start = rng.randrange(len(held_out) - 80)
        encoding = ours.encode(held_out[start:start + 80])
        for size in range(1, len(encoding)):
            assert ours.encode(ours.decode(encoding[:size])) == encoding[:size]


def test_real_text_benchmark_quick():
    """benchmarks/tokenization_real_text.py --quick: on English text the corrections are exact and naive is not.

    150 BPE tokens over a trigram model, 10 characters, 100 prompts cut at word starts: the corrected and
    byte laws equal the trigram model's conditionals to 1e-12 on every prompt; the naive reading is off
    by more than 0.1 TV on average (it measured 0.37), token healing lies in between.
    """
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "tokenization_real_text.py"
    spec = importlib.util.spec_from_file_location("tokenization_real_text", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    methods = module.main(quick=True)["methods"]
    assert methods["corrected"]["max_tv"] < 1e-12 and methods["byte"]["max_tv"] < 1e-12
    assert methods["corrected"]["prompts"] == methods["byte"]["prompts"] == 100
    assert methods["naive"]["mean_tv"] > 0.1
    assert methods["corrected"]["mean_tv"] < methods["token_healing"]["mean_tv"] < methods["naive"]["mean_tv"]
