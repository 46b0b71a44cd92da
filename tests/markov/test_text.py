"""Tests of the English text and the next-character models (arprob/markov/text.py, arprob/markov/char_models.py).

Oracles: hand counts by a plain Python loop over a tiny string (exact to 1e-12 in
float64), the fast path ``window_logits`` against ``next_token_logits`` on every
window, and held-out cross-entropy against the unigram entropy of the held-out text
(deterministic: fixed keys, no statistical false alarm).
"""

import inspect
import itertools
import json
import math
from collections import Counter, defaultdict

import jax
import numpy as np
import pytest

from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    InvalidArgumentError,
    InvalidTokenError,
    ShapeError,
)
from arprob.markov import char_models
from arprob.markov.char_models import CharNetwork, cross_entropy, fit_char_ngram, train_char_network
from arprob.markov.text import ALPHABET, decode, encode, reduce_alphabet, stdlib_text

TINY_ALPHABET = "abcdr "
TINY_TEXT = "abracadabra abba cab bad dab arc"


@pytest.fixture(scope="module")
def english():
    """The reduced stdlib text as ids: 80% for training, 50,000 held-out characters."""
    ids = encode(reduce_alphabet(stdlib_text()))
    split = int(0.8 * ids.size)
    return ids[:split], ids[split:split + 50_000]


@pytest.fixture(scope="module")
def network(english):
    train, _ = english
    return train_char_network(jax.random.key(0), train, len(ALPHABET), 3, num_steps=300)


def _all_windows(vocab_size, context_size, padded=True):
    """Every window: full ones in base-T order, then (if padded) the padded ones, fewest real tokens first."""
    rows = [list(w) for w in itertools.product(range(vocab_size), repeat=context_size)]
    if padded:
        for num_real in range(context_size):
            rows += [[vocab_size] * (context_size - num_real) + list(w)
                     for w in itertools.product(range(vocab_size), repeat=num_real)]
    return np.array(rows, dtype=np.int64)


def _unigram_entropy(ids, vocab_size):
    freq = np.bincount(ids, minlength=vocab_size) / ids.size
    freq = freq[freq > 0]
    return float(-(freq * np.log(freq)).sum())


# -- the text ---------------------------------------------------------------------------------
def test_stdlib_text_is_long_deterministic_and_deduplicated():
    first, second = stdlib_text(), stdlib_text()
    assert first == second
    assert len(first) >= 300_000
    parts = first.split("\n\n")
    assert len(parts) > 1000
    json_only = stdlib_text(["json"])
    assert json_only.startswith(inspect.getdoc(json))
    assert len(json_only) < len(first)


def test_reduce_alphabet_maps_lowercases_and_collapses():
    assert reduce_alphabet("  Hello, World!\n\tIt's 42 -- fine.  ") == "hello world it s fine"
    assert reduce_alphabet("Banana split", "aeiou ") == "a a a i"
    reduced = reduce_alphabet(stdlib_text(["json", "re"]))
    assert set(reduced) <= set(ALPHABET)
    assert "  " not in reduced and not reduced.startswith(" ") and not reduced.endswith(" ")
    # special characters in the alphabet are taken literally
    assert reduce_alphabet("a-b]c^d\\e", "-]^\\ ") == "- ] ^ \\"


def test_encode_decode_round_trip():
    reduced = reduce_alphabet(stdlib_text(["json"]))
    ids = encode(reduced)
    assert ids.dtype == np.int32 and ids.shape == (len(reduced),)
    assert ids.min() >= 0 and ids.max() < len(ALPHABET)
    assert decode(ids) == reduced
    assert encode("ab ba", "ab ").tolist() == [0, 1, 2, 1, 0]
    assert decode([2, 0, 1], "ab ") == " ab"
    assert encode("").shape == (0,)


# -- the n-gram: hand counts ------------------------------------------------------------------
@pytest.mark.parametrize("context_size, add_k", [(1, 1.0), (2, 0.5), (3, 2.0)])
def test_char_ngram_equals_hand_counts(context_size, add_k):
    ids = encode(TINY_TEXT, TINY_ALPHABET).tolist()
    T, K = len(TINY_ALPHABET), context_size
    # counts[j][context][v]: positions t >= j with ids[t-j:t] == context and ids[t] == v
    counts = [defaultdict(Counter) for _ in range(K + 1)]
    for j in range(K + 1):
        for t in range(j, len(ids)):
            counts[j][tuple(ids[t - j:t])][ids[t]] += 1
    windows = _all_windows(T, K)
    expected = np.empty((len(windows), T))
    for row, window in enumerate(windows.tolist()):
        context = tuple(token for token in window if token != T)
        seen = counts[len(context)][context]
        total = sum(seen.values())
        expected[row] = [(seen[v] + add_k) / (total + add_k * T) for v in range(T)]
    model = fit_char_ngram(encode(TINY_TEXT, TINY_ALPHABET), T, K, add_k=add_k)
    assert (model.vocab_size, model.context_size) == (T, K)
    got = np.exp(model.next_token_logits(windows))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_char_ngram_fast_path_equals_next_token_logits(monkeypatch):
    ids = encode(reduce_alphabet(stdlib_text(["json"])), ALPHABET)
    T, K = len(ALPHABET), 3
    model = fit_char_ngram(ids, T, K)
    table = model.window_logits()
    assert table.shape == (T**K, T) and table.dtype == np.float64
    monkeypatch.setattr(char_models, "CHUNK_ROWS", 1000)  # several chunks per order
    np.testing.assert_allclose(model.next_token_logits(_all_windows(T, K, padded=False)), table,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(table).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    padded = model.next_token_logits(_all_windows(T, K)[T**K:])
    np.testing.assert_allclose(np.exp(padded).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # an unseen window gets the uniform law; float32 is the same table rounded
    unseen = np.flatnonzero(np.all(table == table[:, :1], axis=1))
    assert unseen.size and np.allclose(table[unseen], -math.log(T))
    np.testing.assert_allclose(model.window_logits(np.float32), table, rtol=1e-6)


def test_char_ngram_fit_at_context_size_five_is_sparse(english):
    train, _ = english
    model = fit_char_ngram(train, len(ALPHABET), 5)
    gram_keys, gram_counts, context_keys, context_counts = model.grams[5]
    assert gram_counts.sum() == train.size - 5 and context_counts.sum() == train.size - 5
    assert gram_keys.size < train.size  # far fewer than 27**6 entries
    windows = np.array([[len(ALPHABET)] * 5, train[100:105].tolist()])
    assert np.all(np.isfinite(model.next_token_logits(windows)))


# -- the network ------------------------------------------------------------------------------
def test_network_fast_path_equals_next_token_logits(network, monkeypatch):
    T, K = network.vocab_size, network.context_size
    monkeypatch.setattr(char_models, "CHUNK_ROWS", 4096)  # several chunks: 27**3 = 19,683 windows
    table = network.window_logits()
    assert table.shape == (T**K, T) and table.dtype == np.float64
    full = network.next_token_logits(_all_windows(T, K, padded=False))
    np.testing.assert_allclose(full, table, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.exp(table).sum(axis=1), 1.0, rtol=0, atol=1e-5)
    few = network.next_token_logits(_all_windows(T, K, padded=False)[:7])
    np.testing.assert_allclose(few, table[:7], rtol=0, atol=1e-5)


def test_training_beats_the_unigram_entropy_on_held_out_text(english, network):
    train, held_out = english
    entropy = _unigram_entropy(held_out, len(ALPHABET))  # the best any unigram law does on it
    untrained = CharNetwork.random(jax.random.key(0), len(ALPHABET), 3)
    assert cross_entropy(untrained, held_out) > entropy
    assert cross_entropy(network, held_out) < entropy - 0.5
    assert cross_entropy(fit_char_ngram(train, len(ALPHABET), 3), held_out) < entropy - 0.5


def test_network_short_contexts_are_sensible(english, network):
    train, _ = english
    T = len(ALPHABET)
    unigram = np.bincount(train, minlength=T) / train.size
    empty = np.exp(network.next_token_logits(np.full((1, 3), T)))[0]
    assert 0.5 * np.abs(empty - unigram).sum() < 0.1  # all padding: close to the unigram law
    # after "q" (one real token) the network predicts "u"
    after_q = np.exp(network.next_token_logits(np.array([[T, T, ALPHABET.index("q")]])))[0]
    assert np.argmax(after_q) == ALPHABET.index("u")


def test_network_is_a_pytree_and_deterministic(english, network):
    train, _ = english
    again = train_char_network(jax.random.key(0), train, len(ALPHABET), 3, num_steps=300)  # compiled already
    leaves = jax.tree_util.tree_leaves(network)
    assert len(leaves) == 2 * (network.num_layers + 1)
    for a, b in zip(leaves, jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    doubled = jax.jit(lambda net: jax.tree_util.tree_map(lambda leaf: 2 * leaf, net))(network)
    assert isinstance(doubled, CharNetwork) and doubled.context_size == 3
    assert repr(network) == "CharNetwork(vocab_size=27, context_size=3, hidden_size=64, num_layers=2)"


# -- bad input --------------------------------------------------------------------------------
def test_bad_text_input_raises_clear_errors():
    with pytest.raises(ArprobTypeError, match="modules must be a list"):
        stdlib_text("json")
    with pytest.raises(InvalidArgumentError, match="'no_such_module_for_arprob'"):
        stdlib_text(["no_such_module_for_arprob"])
    with pytest.raises(InvalidArgumentError, match="modules is empty"):
        stdlib_text([])
    with pytest.raises(InvalidArgumentError, match="alphabet .* has no space"):
        reduce_alphabet("abc", "abc")
    with pytest.raises(InvalidArgumentError, match="alphabet .* repeats"):
        reduce_alphabet("abc", "aab ")
    with pytest.raises(InvalidArgumentError, match="lowercase"):
        reduce_alphabet("abc", "Ab ")
    with pytest.raises(InvalidTokenError, match=r"text\[0\] = 'H' is not in the alphabet.*reduce_alphabet"):
        encode("Hello")
    with pytest.raises(InvalidTokenError, match="ids contains token 27"):
        decode([0, 27])


def test_bad_ngram_input_raises_clear_errors():
    ids = encode(TINY_TEXT, TINY_ALPHABET)
    T = len(TINY_ALPHABET)
    with pytest.raises(InvalidArgumentError, match="vocab_size must be >= 2"):
        fit_char_ngram(ids, 1, 2)
    with pytest.raises(InvalidArgumentError, match="context_size must be >= 1"):
        fit_char_ngram(ids, T, 0)
    with pytest.raises(ArprobTypeError, match="context_size must be an int"):
        fit_char_ngram(ids, T, 2.0)
    with pytest.raises(InvalidArgumentError, match="add_k must be > 0"):
        fit_char_ngram(ids, T, 2, add_k=0.0)
    with pytest.raises(InvalidTokenError, match=r"ids contains token 5, expected tokens in \[0, 5\)"):
        fit_char_ngram(ids, T - 1, 2)
    with pytest.raises(ShapeError, match=r"ids has shape \(2, 16\)"):
        fit_char_ngram(ids.reshape(2, -1), T, 2)
    with pytest.raises(ShapeError, match="ids has 2 tokens, expected at least 3"):
        fit_char_ngram(ids[:2], T, 2)
    with pytest.raises(ArprobTypeError, match="ids must be an int array"):
        fit_char_ngram(TINY_TEXT, T, 2)
    with pytest.raises(InvalidArgumentError, match="overflow int64; use a smaller context_size"):
        fit_char_ngram(ids, T, 30)
    model = fit_char_ngram(ids, T, 2)
    with pytest.raises(ShapeError, match=r"windows has shape \(2,\), expected \(batch, 2\).*windows\[None\]"):
        model.next_token_logits(np.array([0, 1]))
    with pytest.raises(InvalidTokenError, match="windows holds 7, expected token ids in"):
        model.next_token_logits(np.array([[0, 7]]))
    with pytest.raises(InvalidTokenError, match="windows has dtype float64"):
        model.next_token_logits(np.array([[0.0, 1.0]]))
    with pytest.raises(InvalidTokenError, match=r"windows\[1\] = \[0, 6\] has the padding id 6 after a real token"):
        model.next_token_logits(np.array([[6, 0], [0, 6]]))
    with pytest.raises(InvalidArgumentError, match="dtype must be np.float64 or np.float32"):
        model.window_logits(np.int32)
    large = fit_char_ngram(encode(reduce_alphabet(stdlib_text(["json"]))), 27, 10)
    with pytest.raises(EnumerationTooLargeError, match="27\\*\\*10 windows.*smaller context_size"):
        large.window_logits()


def test_bad_network_input_raises_clear_errors(english):
    train, _ = english
    key = jax.random.key(0)
    with pytest.raises(ArprobTypeError, match="key must be a PRNG key"):
        train_char_network(0, train, 27, 2)
    with pytest.raises(InvalidArgumentError, match="num_steps must be >= 1"):
        train_char_network(key, train, 27, 2, num_steps=0)
    with pytest.raises(InvalidArgumentError, match="learning_rate must be > 0"):
        train_char_network(key, train, 27, 2, learning_rate=-1.0)
    with pytest.raises(InvalidArgumentError, match=r"short_fraction must be in \[0, 1\]"):
        train_char_network(key, train, 27, 2, short_fraction=1.5)
    with pytest.raises(InvalidTokenError, match="ids contains token"):
        train_char_network(key, train, 5, 2)
    with pytest.raises(ShapeError, match="the output layer gives"):
        *hidden, output = CharNetwork.random(key, 27, 2).layers
        CharNetwork((*hidden, type(output)(output.weight[:, :26], output.bias[:26])), 27, 2)
    with pytest.raises(ArprobTypeError, match="model must have vocab_size"):
        cross_entropy(object(), train[:10])
