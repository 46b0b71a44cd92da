"""arprob.tokenization: tokenizers, the induced token law, next-character laws, samplers, a learned model.

Oracles: hand-derived encodings; exhaustive enumeration of every string of N characters (the law
of the encoding by brute force); the character chain's own conditionals.  Theorem 11's proof
checks are in ``proofs/check_11_tokenization_bias.py``; these tests cover the API and run
hypothesis over random tokenizers and chains.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arprob import MarkovChain, NGram
from arprob.errors import ZeroProbabilityError
from arprob.tokenization import (
    METHODS,
    BPETokenizer,
    MaxPrefixTokenizer,
    char_prefix_log_prob,
    continuation_law,
    induced_token_model,
    next_char_law,
    sample_continuation,
    sample_encodings,
    train_token_network,
)
from arprob.tokenization.correction import TokenModelCalls, _law
from arprob.verify import detectable, gof, tv

jax.config.update("jax_enable_x64", True)

EXACT = 1e-12
PAPER = MaxPrefixTokenizer(["a", "b", "aa"])


def chain_of(alpha: float, beta: float, length: int = 8) -> MarkovChain:
    """First-order chain on {a, b}: P(a -> a) = alpha, P(b -> a) = beta, uniform start."""
    return MarkovChain(np.array([0.5, 0.5]), np.array([[alpha, 1 - alpha], [beta, 1 - beta]]), length)


def text(tokenizer, ids) -> str:
    return "".join(tokenizer.alphabet[i] for i in ids)


def enumerated_law(chain, tokenizer, num_chars: int) -> dict[tuple[int, ...], float]:
    """The law of encode(S) by brute force over all A**N strings."""
    law: dict[tuple[int, ...], float] = {}
    size = len(tokenizer.alphabet)
    strings = np.array(list(itertools.product(range(size), repeat=num_chars)))
    assert chain.length == num_chars
    probs = np.exp(np.asarray(chain.log_prob(strings)))
    for string, p in zip(strings, probs):
        encoding = tuple(tokenizer.encode(text(tokenizer, string)))
        law[encoding] = law.get(encoding, 0.0) + float(p)
    return law


def truth(chain, prompt_ids) -> np.ndarray:
    return np.asarray(chain.next_token_probs(list(prompt_ids)), np.float64)


# -- tokenizers ----------------------------------------------------------------------------------
def test_max_prefix_encoding_by_hand():
    tokenizer = MaxPrefixTokenizer(["a", "b", "ab", "abb", "ba"])
    # greedy longest match: "abb" | "a" | "ba" | "b"
    assert [tokenizer.tokens[i] for i in tokenizer.encode("abbababab"[:7])] == ["abb", "ab", "ab"]
    assert [tokenizer.tokens[i] for i in tokenizer.encode("baab")] == ["ba", "ab"]
    assert tokenizer.decode(tokenizer.encode("babba")) == "babba"
    assert tokenizer.encode("") == []


def test_bpe_by_hand():
    # ranks: (b, c) first, then (a, b), then (a, bc): "abc" -> a|bc -> abc; "abd" -> ab|d
    tokenizer = BPETokenizer([("b", "c"), ("a", "b"), ("a", "bc")], "abcd")
    assert tokenizer.tokens == ("a", "b", "c", "d", "bc", "ab", "abc")
    assert [tokenizer.tokens[i] for i in tokenizer.encode("abc")] == ["abc"]
    assert [tokenizer.tokens[i] for i in tokenizer.encode("abd")] == ["ab", "d"]
    # leftmost first for overlapping occurrences of one pair: "aaa" with (a, a) -> aa|a
    repeated = BPETokenizer([("a", "a")], "a")
    assert [repeated.tokens[i] for i in repeated.encode("aaa")] == ["aa", "a"]
    assert [repeated.tokens[i] for i in repeated.encode("aaaa")] == ["aa", "aa"]


def random_tokenizer(seed: int):
    rng = np.random.default_rng(seed)
    alphabet = "ab" if seed % 3 else "abc"
    if seed % 2:
        pool = ["".join(p) for n in (2, 3) for p in itertools.product(alphabet, repeat=n)]
        extra = list(rng.choice(pool, size=int(rng.integers(1, 5)), replace=False))
        return MaxPrefixTokenizer(list(alphabet) + extra, alphabet)
    tokens, merges = list(alphabet), []
    for _ in range(int(rng.integers(1, 6))):
        left, right = rng.choice(tokens), rng.choice(tokens)
        if left + right not in tokens:
            merges.append((str(left), str(right)))
            tokens.append(left + right)
    return BPETokenizer(merges, alphabet)


@pytest.mark.parametrize("seed", range(8))
def test_validity_automaton_is_encode_of_decode(seed):
    """is_valid (the automaton) == (encode(decode(ids)) == ids), for every sequence of up to 4 tokens."""
    tokenizer = random_tokenizer(seed)
    for size in range(1, 5):
        for ids in itertools.product(range(tokenizer.num_tokens), repeat=size):
            ids = list(ids)
            assert tokenizer.is_valid(ids) == (tokenizer.encode(tokenizer.decode(ids)) == ids), (tokenizer, ids)


@pytest.mark.parametrize("seed", range(6))
def test_covers_against_brute_force(seed):
    tokenizer = random_tokenizer(seed)
    for size in range(1, 5):
        for chars in itertools.product(tokenizer.alphabet, repeat=size):
            prompt = "".join(chars)
            expected = []
            for count in range(1, size + 1):
                for ids in itertools.product(range(tokenizer.num_tokens), repeat=count):
                    head = tokenizer.decode(list(ids[:-1]))
                    if len(head) < size and prompt.startswith(head) and tokenizer.decode(list(ids)).startswith(prompt):
                        expected.append(list(ids))
            valid = [c for c in expected if tokenizer.is_valid(c)]
            assert sorted(map(tuple, tokenizer.covers(prompt))) == sorted(map(tuple, valid))
            # every cover's head is the encoding of its text (prefixes of encodings are encodings)
            assert all(c[:-1] == tokenizer.encode(tokenizer.decode(c[:-1])) for c in valid)


# -- the induced token law -----------------------------------------------------------------------
def chain_for(seed: int, size: int, num_chars: int):
    key = jax.random.key(seed)
    return NGram.random(key, num_chars, size, 2) if seed % 4 == 3 else MarkovChain.random(key, num_chars, size)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), num_chars=st.integers(1, 6))
def test_induced_model_matches_enumeration(seed, num_chars):
    tokenizer = random_tokenizer(seed)
    chain = chain_for(seed, len(tokenizer.alphabet), num_chars)
    law = enumerated_law(chain, tokenizer, num_chars)
    model = induced_token_model(chain, tokenizer, num_chars)
    assert sum(np.exp(model.log_prob(list(e))) for e in law) == pytest.approx(1.0, abs=EXACT)
    for encoding, p in law.items():
        assert np.exp(model.log_prob(list(encoding))) == pytest.approx(p, abs=EXACT)
    prefixes = {e[:i] for e in law for i in range(len(e) + 1)}
    for prefix in prefixes:
        mass = sum(p for e, p in law.items() if e[: len(prefix)] == prefix)
        assert np.exp(model.prefix_log_prob(list(prefix))) == pytest.approx(mass, abs=EXACT)
        expected = np.zeros(tokenizer.num_tokens + 1)
        for e, p in law.items():
            if e[: len(prefix)] == prefix:
                expected[e[len(prefix)] if len(e) > len(prefix) else model.end] += p / mass
        np.testing.assert_allclose(model.next_token_probs(list(prefix)), expected, atol=EXACT)


def test_conditioning_on_an_impossible_prefix_is_refused():
    model = induced_token_model(chain_of(0.5, 0.5), PAPER, 4)
    a, aa = PAPER.ids["a"], PAPER.ids["aa"]
    assert model.prefix_log_prob([a, a]) == -np.inf  # "a a" is never an encoding: "aa" would match
    with pytest.raises(ZeroProbabilityError, match="prefix"):
        model.next_token_probs([a, a])
    assert model.log_prob([aa, aa]) == pytest.approx(np.log(0.5**4), abs=EXACT)  # "aaaa", 4 chars
    assert model.log_prob([aa]) == -np.inf  # two characters, not four


# -- next-character laws ---------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.1, 0.35, 0.6, 0.9])
def test_paper_example(alpha):
    """Phan et al.'s example: vocab {A, B, AA}; after the token "A" the naive next character is B, always."""
    chain = chain_of(alpha, 0.3)
    model = induced_token_model(chain, PAPER, 6)
    naive = next_char_law(model, PAPER, "a", "naive")
    np.testing.assert_allclose(naive, [0.0, 1.0], atol=EXACT)
    for method in ("corrected", "byte"):
        np.testing.assert_allclose(next_char_law(model, PAPER, "a", method), [alpha, 1 - alpha], atol=EXACT)
    assert tv(naive, truth(chain, [0])) == pytest.approx(alpha, abs=EXACT)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_corrections_are_exact_and_naive_is_not(seed):
    tokenizer = random_tokenizer(seed)
    num_chars = 6
    chain = chain_for(seed, len(tokenizer.alphabet), num_chars)
    model = induced_token_model(chain, tokenizer, num_chars)
    for size in range(num_chars):
        for ids in itertools.product(range(len(tokenizer.alphabet)), repeat=size):
            prompt = text(tokenizer, ids)
            for method in ("corrected", "byte"):
                np.testing.assert_allclose(next_char_law(model, tokenizer, prompt, method), truth(chain, ids),
                                           atol=EXACT, err_msg=f"{tokenizer} {prompt!r} {method}")
            # P(prompt) from the token model = the chain's marginal of the prefix
            exact = sum(np.log(truth(chain, ids[:i])[ids[i]]) for i in range(size))
            assert char_prefix_log_prob(model, tokenizer, prompt) == pytest.approx(exact, abs=1e-10)


def test_naive_is_biased_on_a_random_grid():
    """Negative control: the naive reading misses the truth by a lot somewhere (it is not a correction)."""
    worst = 0.0
    for seed in range(6):
        tokenizer = random_tokenizer(seed)
        chain = chain_for(seed, len(tokenizer.alphabet), 5)
        model = induced_token_model(chain, tokenizer, 5)
        for ids in itertools.product(range(len(tokenizer.alphabet)), repeat=3):
            try:
                naive = next_char_law(model, tokenizer, text(tokenizer, ids), "naive")
                worst = max(worst, tv(naive, truth(chain, ids)))
            except ZeroProbabilityError:
                worst = 1.0  # the encoded prompt has probability 0: the most extreme bias
    assert worst > 0.3


def test_corrected_model_calls_grow_linearly():
    """Maximum prefix encoding: the branch-and-pass sum asks the model about O(length) prefixes."""
    tokenizer = MaxPrefixTokenizer(["a", "b", "aa", "ab", "bab"])
    chain = chain_of(0.6, 0.3, 64)
    model = induced_token_model(chain, tokenizer, 64)
    rng = np.random.default_rng(0)
    counts = {}
    for size in (15, 30, 60):
        prompt = text(tokenizer, rng.integers(0, 2, size))
        calls = TokenModelCalls("test", model, tokenizer)
        law = _law("test", calls, tokenizer, prompt, "corrected")
        np.testing.assert_allclose(law, truth(chain, [tokenizer.alphabet.index(c) for c in prompt]), atol=1e-10)
        counts[size] = calls.calls
        assert calls.calls <= len(tokenizer.encode(prompt)) + 1  # theorem 11, part 5: prefixes of encode(x)
    assert counts[60] < 2.5 * counts[30]


# -- samplers --------------------------------------------------------------------------------------
def continuation_truth(chain, prompt_ids, num_chars):
    law = np.zeros((chain.vocab_size,) * num_chars)
    for z in itertools.product(range(chain.vocab_size), repeat=num_chars):
        context, p = list(prompt_ids), 1.0
        for c in z:
            p *= truth(chain, context)[c]
            context.append(c)
        law[z] = p
    return law


def test_cover_sampler_law_is_the_chain_and_naive_is_not():
    tokenizer = MaxPrefixTokenizer(["a", "b", "aa", "ab", "bba"])
    chain = chain_for(3, 2, 9)
    model = induced_token_model(chain, tokenizer, 9)
    prompt_ids = [0, 1, 1, 1]
    expected = continuation_truth(chain, prompt_ids, 4)
    cover = continuation_law(model, tokenizer, text(tokenizer, prompt_ids), 4)
    naive = continuation_law(model, tokenizer, text(tokenizer, prompt_ids), 4, method="naive")
    np.testing.assert_allclose(cover, expected, atol=EXACT)
    assert tv(naive.ravel(), expected.ravel()) > 0.1


def test_cover_sampler_draws_its_law():
    """GOF at n = 200,000 over 16 cells: alpha = 1e-4, sees laws >= detectable(...) ~ 0.011 TV away."""
    num_samples, alpha = 200_000, 1e-4
    chain = chain_of(0.7, 0.4, 9)
    model = induced_token_model(chain, PAPER, 9)
    law = continuation_law(model, PAPER, "ba", 4)
    samples = sample_continuation(jax.random.key(11), model, PAPER, "ba", 4, num_samples)
    assert samples.shape == (num_samples, 4) and samples.dtype == np.int32
    result = gof(samples, law.ravel(), vocab_size=2)
    assert result.p_value > alpha
    assert detectable(num_samples, 16, alpha) < 0.012
    # and it sees the naive sampler's bias (exact TV 0.7 here: after the token "a" the next character is b)
    naive = sample_continuation(jax.random.key(12), model, PAPER, "ba", 4, 20_000, method="naive")
    assert gof(naive, law.ravel(), vocab_size=2).p_value < alpha


def test_same_key_same_draws():
    model = induced_token_model(chain_of(0.3, 0.6), PAPER, 8)
    first = sample_continuation(jax.random.key(5), model, PAPER, "ab", 3, 500)
    np.testing.assert_array_equal(first, sample_continuation(jax.random.key(5), model, PAPER, "ab", 3, 500))


# -- a learned token model -------------------------------------------------------------------------
def test_learned_model_bias_after_correction():
    """Trained on 20,000 encodings (seeded): the correction removes the 0.24 naive bias to within 0.03."""
    num_chars = 8
    chain = chain_of(0.7, 0.4, num_chars)
    encodings = sample_encodings(jax.random.key(1), chain, PAPER, num_chars, 20_000)
    network = train_token_network(jax.random.key(2), encodings, PAPER, num_steps=2000)
    probs = network.next_token_probs([0, 1])
    assert probs.shape == (PAPER.num_tokens + 1,) and probs.sum() == pytest.approx(1.0, abs=1e-12)
    bias = dict.fromkeys(METHODS, 0.0)
    for size in range(1, num_chars):
        for ids in itertools.product(range(2), repeat=size):
            weight = np.prod([truth(chain, ids[:i])[ids[i]] for i in range(size)]) / (num_chars - 1)
            for method in METHODS:
                bias[method] += weight * tv(next_char_law(network, PAPER, text(PAPER, ids), method), truth(chain, ids))
    assert bias["naive"] > 0.2
    assert bias["corrected"] < 0.03 and bias["byte"] < 0.03
