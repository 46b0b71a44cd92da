r"""Machine check of theorem 11 (``proofs/11-tokenization-bias.md``).

(a) exhaustive, exact (``==``), 24 maximum-prefix (MPE) and 24 merge-list BPE tokenizers over 'ab' and 'abc'
    (fixed and seeded random ones), every string of up to 8 ('ab') or 7 ('abc') characters.  The library's
    encoders equal independent ones.  Part 1: every prefix of an encoding is the encoding of its string; the
    validity automaton accepts exactly the encodings.  Part 2: the shortest prefix of each string's encoding that
    reaches past x is a cover of x and the only cover among those prefixes; every cover splits at
    encode(x[:j]) with n - maxlen <= j < n (for MPE at a token boundary of encode(x)); every valid cover occurs;
    P(S starts with x) = sum over covers of P(e(S) starts with c) for a random rational law on strings.
(b) float64 through the library (1e-12): the induced token model against the enumerated law of e(S);
    ``next_char_law`` "corrected" and "byte" against the chain's conditional for every prompt of every length
    < N (MarkovChain and NGram with K = 2); ``char_prefix_log_prob`` against the enumerated prefix probability.
(c) exact rationals (``fractions.Fraction``): part 3's truth = (1 - rho) naive + rho overhang and
    TV(naive, truth) = rho TV(naive, overhang) from the enumerated law of strings alone, chains with zero cells
    included; the library's naive law against the enumerated one; ZeroProbabilityError exactly when P(B) = 0;
    the corrections exact on the degenerate chains too (a split prefix of probability 0).
(d) part 4 in sympy and over a grid of chains through the library; part 5 by recording the model calls.
Negative controls: BPE stopped after one merge step breaks part 1; "every adjacent pair is an encoding" is not
MPE validity; naive and token healing miss the truth somewhere; cover sums with only the split point n - 1,
without overhanging tokens, with MPE's split points under BPE, or with non-proper covers miss it; the paper's
naive value differs from the healed one; BPE breaks the MPE call bound.
"""

from __future__ import annotations

import functools
import itertools
import random
from fractions import Fraction

import jax
import numpy as np
import pytest
import sympy

import arprob
from arprob.errors import ZeroProbabilityError
from arprob.tokenization import (
    BPETokenizer,
    MaxPrefixTokenizer,
    char_prefix_log_prob,
    induced_token_model,
    next_char_law,
)
from arprob.tokenization.correction import TokenModelCalls

jax.config.update("jax_enable_x64", True)

LAW_TOLERANCE = 1e-12  # float64 laws of a few characters
MISS = 1e-6  # a negative control must miss the truth by more than this
MAX_LENGTH = {"ab": 8, "abc": 7}  # every string up to this many characters in (a)


# ---------------------------------------------------------------------------
# instances
# ---------------------------------------------------------------------------


def strings(alphabet: str, max_length: int) -> list[str]:
    """Every string over ``alphabet`` of 0 .. ``max_length`` characters, shortest first."""
    return ["".join(t) for n in range(max_length + 1) for t in itertools.product(alphabet, repeat=n)]


def random_vocab(rng: random.Random, alphabet: str, extra: int, longest: int) -> list[str]:
    vocab = list(alphabet)
    while len(vocab) < len(alphabet) + extra:
        token = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, longest)))
        if token not in vocab:
            vocab.append(token)
    rng.shuffle(vocab)  # token ids in no particular order
    return vocab


def random_merges(rng: random.Random, alphabet: str, count: int, longest: int) -> list[tuple[str, str]]:
    """A merge list in learning order: each part is a character or an earlier merge's result."""
    known, merges = list(alphabet), []
    for _ in range(200):
        if len(merges) == count:
            break
        left, right = rng.choice(known), rng.choice(known)
        if left + right not in known and len(left + right) <= longest:
            merges.append((left, right))
            known.append(left + right)
    return merges


FIXED_MPE = [
    (["a", "b", "aa"], "ab"),  # the paper's example
    (["a", "b", "aa", "ab"], "ab"),  # "a" is never a whole token before another character
    (["a", "b", "ab", "ba", "aab", "bbb"], "ab"),
    (["a", "b", "abb"], "ab"),  # validity needs more memory than the last token
    (["a", "b", "c", "ab", "bc", "abc", "ca", "cab"], "abc"),
]
FIXED_BPE = [
    ([("a", "b"), ("a", "ab"), ("b", "b")], "ab"),
    ([("a", "a"), ("b", "a"), ("aa", "a"), ("b", "aa")], "ab"),
    ([("a", "b"), ("b", "c"), ("a", "bc"), ("c", "a"), ("ca", "b")], "abc"),  # 'abc' is made but never whole
]


@functools.cache
def mpe_tokenizers() -> list[MaxPrefixTokenizer]:
    out = [MaxPrefixTokenizer(vocab, alphabet) for vocab, alphabet in FIXED_MPE]
    for seed in range(24 - len(out)):
        rng = random.Random(1100 + seed)
        alphabet = "ab" if seed % 3 else "abc"
        out.append(MaxPrefixTokenizer(random_vocab(rng, alphabet, rng.randint(1, 4), rng.randint(3, 4)), alphabet))
    return out


@functools.cache
def bpe_tokenizers() -> list[BPETokenizer]:
    out = [BPETokenizer(merges, alphabet) for merges, alphabet in FIXED_BPE]
    for seed in range(24 - len(out)):
        rng = random.Random(1200 + seed)
        alphabet = "ab" if seed % 3 else "abc"
        out.append(BPETokenizer(random_merges(rng, alphabet, rng.randint(2, 7), rng.randint(3, 5)), alphabet))
    return out


def all_tokenizers():
    return mpe_tokenizers() + bpe_tokenizers()


@functools.cache
def encodings(tokenizer) -> dict[str, tuple[int, ...]]:
    """``encode`` of every string up to MAX_LENGTH characters."""
    return {s: tuple(tokenizer.encode(s)) for s in strings(tokenizer.alphabet, MAX_LENGTH[tokenizer.alphabet])}


def boundaries(tokenizer, ids) -> list[int]:
    """Character positions where the tokens of ``ids`` start."""
    return list(itertools.accumulate((len(tokenizer.tokens[i]) for i in ids[:-1]), initial=0)) if ids else []


def cover_of(tokenizer, ids, n: int) -> tuple[int, ...]:
    """The shortest prefix of ``ids`` that decodes to at least ``n`` characters (n >= 1)."""
    length = 0
    for i, token in enumerate(ids):
        length += len(tokenizer.tokens[token])
        if length >= n:
            return tuple(ids[: i + 1])
    raise ValueError("the encoding is shorter than n")


# ---------------------------------------------------------------------------
# (a) part 1: prefixes of encodings are encodings; the validity automaton
# ---------------------------------------------------------------------------


def prefix_failures(encode, texts) -> list[tuple[str, int]]:
    """``(s, i)`` with ``encode(decode(encode(s)[:i])) != encode(s)[:i]``; tokens given as strings."""
    out = []
    for s in texts:
        pieces = encode(s)
        for i in range(len(pieces)):
            if encode("".join(pieces[:i])) != pieces[:i]:
                out.append((s, i))
    return out


def merge_list_bpe(merges, max_steps=None):
    """An independent merge-list BPE: merge every occurrence (left to right) of the lowest-rank adjacent pair until
    none is a merge, or, for the mutant, until ``max_steps`` such steps were made."""
    ranks = {merge: rank for rank, merge in enumerate(merges)}

    def encode(text):
        pieces, steps = list(text), 0
        while max_steps is None or steps < max_steps:
            present = [ranks[pair] for pair in zip(pieces, pieces[1:]) if pair in ranks]
            if not present:
                break
            left, right = merges[min(present)]
            merged, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == (left, right):
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces, steps = merged, steps + 1
        return pieces
    return encode


def greedy_longest_match(vocab):
    """An independent maximum prefix encoder."""
    def encode(text):
        out, start = [], 0
        while start < len(text):
            size = max(k for k in range(1, len(text) - start + 1) if text[start:start + k] in vocab)
            out.append(text[start:start + size])
            start += size
        return out
    return encode


@pytest.mark.parametrize("family", ["mpe", "bpe"])
def test_part_1_prefixes_of_encodings_are_encodings(family):
    tokenizers = mpe_tokenizers() if family == "mpe" else bpe_tokenizers()
    mutant_failures = 0
    for tokenizer in tokenizers:
        table = encodings(tokenizer)
        texts = list(table)

        def encode(text, tokenizer=tokenizer, table=table):
            return [tokenizer.tokens[i] for i in table[text]]

        assert prefix_failures(encode, texts) == [], tokenizer.tokens
        independent = (greedy_longest_match(set(tokenizer.tokens)) if family == "mpe"
                       else merge_list_bpe(tokenizer.merges))
        for s in texts:  # the library's encoder is the algorithm of the statement; decode is a left inverse
            assert encode(s) == independent(s) and tokenizer.decode(list(table[s])) == s
        if family == "bpe":  # stopping BPE early breaks the last step of the proof
            mutant_failures += bool(prefix_failures(merge_list_bpe(tokenizer.merges, max_steps=1), texts))
    assert family == "mpe" or mutant_failures > 0  # negative control: the check rejects a non-closed encoder


def accepted_sequences(transitions, lengths, max_chars):
    """Every token sequence the automaton accepts that decodes to at most ``max_chars`` characters."""
    out, stack = set(), [((), 0, 0)]
    while stack:
        ids, chars, state = stack.pop()
        out.add(ids)
        for token, target in enumerate(transitions[state]):
            if target >= 0 and chars + lengths[token] <= max_chars:
                stack.append((ids + (token,), chars + lengths[token], target))
    return out


def last_token_rule(tokenizer, max_chars):
    """The mutant automaton 'a sequence is valid iff every token and every adjacent pair is an encoding'."""
    table = encodings(tokenizer)
    good = set(table.values())
    out = set()
    for ids in accepted_sequences(np.zeros((1, tokenizer.num_tokens), np.int64), tokenizer.lengths, max_chars):
        if all((t,) in good for t in ids) and all(pair in good for pair in zip(ids, ids[1:])):
            out.add(ids)
    return out


def test_part_1_validity_automaton_accepts_exactly_the_encodings():
    mutant_failures = 0
    for tokenizer in all_tokenizers():
        max_chars = MAX_LENGTH[tokenizer.alphabet] - 1
        table = encodings(tokenizer)
        truth = {ids for s, ids in table.items() if len(s) <= max_chars}
        accepted = accepted_sequences(tokenizer.automaton().transitions, tokenizer.lengths, max_chars)
        assert accepted == truth, tokenizer.tokens
        for size in (2, 3):  # the public reading of the same automaton, valid and invalid sequences
            for ids in itertools.product(range(tokenizer.num_tokens), repeat=size):
                text = tokenizer.decode(list(ids))
                if len(text) <= max_chars:
                    assert tokenizer.is_valid(list(ids)) == (table[text] == ids)
        if isinstance(tokenizer, MaxPrefixTokenizer):
            mutant_failures += last_token_rule(tokenizer, max_chars) != truth
        else:  # for BPE the pairwise rule is the automaton (Berglund & van der Merwe)
            assert last_token_rule(tokenizer, max_chars) == truth
    assert mutant_failures > 0  # negative control: MPE validity needs more memory than the last token


# ---------------------------------------------------------------------------
# (a) part 2: the covers partition the strings that start with x
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mpe", "bpe"])
def test_part_2_covers_partition_every_prefix_event(family):
    tokenizers = mpe_tokenizers() if family == "mpe" else bpe_tokenizers()
    off_boundary = 0
    for number, tokenizer in enumerate(tokenizers):
        table = encodings(tokenizer)
        longest = tokenizer.max_token_length
        max_length = MAX_LENGTH[tokenizer.alphabet]
        rng = random.Random(number)
        weights = {s: Fraction(rng.randint(0, 5)) for s in table}  # any law on strings, zeros included
        total = sum(weights.values())
        char_mass, token_mass, reached = {}, {}, {}
        for s, ids in table.items():
            weight = weights[s] / total
            for n in range(len(s) + 1):
                char_mass[s[:n]] = char_mass.get(s[:n], 0) + weight
            for i in range(len(ids) + 1):
                token_mass[ids[:i]] = token_mass.get(ids[:i], 0) + weight
            for n in range(1, len(s) + 1):
                reached.setdefault(s[:n], set()).add(cover_of(tokenizer, ids, n))
        covers_of = {x: {tuple(c) for c in tokenizer.covers(x)} for x in table if 1 <= len(x) < max_length}
        for x, covers in covers_of.items():
            n = len(x)
            assert reached[x] <= covers
            if n + longest - 1 <= max_length:  # every valid cover decodes to a string in the table
                assert reached[x] == covers
            for c in covers:
                split = len(tokenizer.decode(list(c[:-1])))
                assert n - longest <= split < n and tokenizer.decode(list(c)).startswith(x)
                assert c[:-1] == table[x[:split]]
                if split not in boundaries(tokenizer, table[x]):
                    assert family == "bpe", (tokenizer.tokens, x, c)  # MPE splits only at encode(x)'s boundaries
                    off_boundary += 1
            assert {tuple(c) for c in tokenizer.covers(x, valid_only=False)} >= covers
            assert char_mass[x] == sum(token_mass.get(c, 0) for c in covers)  # the partition, exactly
        for s, ids in table.items():  # exactly one cover of each prefix of s among the prefixes of e(s)
            prefixes = {ids[:i] for i in range(1, len(ids) + 1)}
            for n in range(1, min(len(s), max_length - 1) + 1):
                assert len(prefixes & covers_of[s[:n]]) == 1
    if family == "bpe":
        assert off_boundary > 0  # BPE needs the split points that MPE can skip


# ---------------------------------------------------------------------------
# chains: rational (for enumeration) and float (the library's)
# ---------------------------------------------------------------------------


def rational_row(rng: random.Random, size: int, zeros: bool) -> list[Fraction]:
    while True:
        weights = [0 if zeros and rng.random() < 0.3 else rng.randint(1, 5) for _ in range(size)]
        if sum(weights):
            return [Fraction(w, sum(weights)) for w in weights]


def rational_chain(seed: int, alphabet_size: int, context_size: int, zeros: bool = False) -> dict:
    """``law[context]`` = law of the next character given the last ``context_size`` ones (shorter at the start)."""
    rng = random.Random(seed)
    return {context: rational_row(rng, alphabet_size, zeros)
            for k in range(context_size + 1) for context in itertools.product(range(alphabet_size), repeat=k)}


def library_chain(law: dict, alphabet_size: int, context_size: int, length: int):
    """The same chain as an arprob MarkovChain (K = 1) or NGram (K = 2) in float64."""
    def row(context):
        return [float(p) for p in law[context]]

    if context_size == 1:
        return arprob.MarkovChain(np.array(row(())), np.array([row((a,)) for a in range(alphabet_size)]), length)
    table = np.full((alphabet_size + 1,) * 2 + (alphabet_size,), 1.0 / alphabet_size)
    table[alphabet_size, alphabet_size] = row(())
    for a in range(alphabet_size):
        table[alphabet_size, a] = row((a,))
        for b in range(alphabet_size):
            table[a, b] = row((a, b))
    return arprob.NGram(table, length)


def string_law(next_law, alphabet: str, length: int) -> dict[str, Fraction | float]:
    """P(S = s) for every string of ``length`` characters by the chain rule over ``next_law(prefix ids)``."""
    out = {"": 1}
    for _ in range(length):
        out = {s + alphabet[a]: p * q for s, p in out.items()
               for a, q in enumerate(next_law(tuple(alphabet.index(c) for c in s)))}
    return out


def rational_next(law: dict, context_size: int):
    return lambda ids: law[ids[-context_size:] if ids else ()]


def float_next(chain):
    cache = {}

    def next_law(ids):
        if ids not in cache:
            cache[ids] = chain.next_token_probs(list(ids))
        return cache[ids]
    return next_law


def prefix_masses(law: dict[str, object]) -> dict[str, object]:
    out = {}
    for s, p in law.items():
        for n in range(len(s) + 1):
            out[s[:n]] = out.get(s[:n], 0) + p
    return out


# ---------------------------------------------------------------------------
# (b) the induced model and the corrections against the chain
# ---------------------------------------------------------------------------

CASES_B = [  # (tokenizer, number of characters N)
    (MaxPrefixTokenizer(["a", "b", "aa"], "ab"), 6),
    (MaxPrefixTokenizer(["a", "b", "aa", "ab"], "ab"), 6),
    (MaxPrefixTokenizer(["a", "b", "ab", "ba", "aab", "bbb"], "ab"), 6),
    (MaxPrefixTokenizer(["a", "b", "c", "ab", "bc", "abc", "ca", "cab"], "abc"), 4),
    (BPETokenizer([("a", "b"), ("a", "ab"), ("b", "b")], "ab"), 6),
    (BPETokenizer([("a", "a"), ("b", "a"), ("aa", "a"), ("b", "aa")], "ab"), 6),
    (BPETokenizer([("a", "b"), ("b", "c"), ("a", "bc"), ("c", "a"), ("ca", "b")], "abc"), 4),
]


@functools.cache
def library_chains(alphabet_size: int, length: int):
    """A MarkovChain and an NGram (K = 2) with Dirichlet(1) rows (numpy draws: no JAX compilation)."""
    rng = np.random.default_rng(11 + alphabet_size)
    ones = np.ones(alphabet_size)
    return (arprob.MarkovChain(rng.dirichlet(ones), rng.dirichlet(ones, size=alphabet_size), length),
            arprob.NGram(rng.dirichlet(ones, size=(alphabet_size + 1,) * 2), length))


def test_induced_model_is_the_law_of_the_encoding():
    for tokenizer, num_chars in CASES_B:
        for chain in library_chains(len(tokenizer.alphabet), num_chars):
            model = induced_token_model(chain, tokenizer, num_chars)
            law = string_law(float_next(chain), tokenizer.alphabet, num_chars)
            token_prefix = {}
            for s, p in law.items():
                ids = tuple(tokenizer.encode(s))
                assert abs(np.exp(model.log_prob(list(ids))) - p) < LAW_TOLERANCE
                for i in range(len(ids) + 1):
                    token_prefix[ids[:i]] = token_prefix.get(ids[:i], 0.0) + p
            for prefix, mass in token_prefix.items():
                assert abs(np.exp(model.prefix_log_prob(list(prefix))) - mass) < LAW_TOLERANCE
                probs = model.next_token_probs(list(prefix))
                if len(tokenizer.decode(list(prefix))) == num_chars:
                    assert probs[model.end] == 1.0
                    continue
                assert probs[model.end] == 0.0
                for token in range(tokenizer.num_tokens):
                    expected = token_prefix.get(prefix + (token,), 0.0) / mass
                    assert abs(probs[token] - expected) < LAW_TOLERANCE
            assert abs(np.exp(model.log_prob([0] * (num_chars + 1)))) == 0.0  # off the support


def misses_truth(model, tokenizer, prompt, method, truth) -> bool:
    try:
        return bool(np.abs(next_char_law(model, tokenizer, prompt, method) - truth).max() > MISS)
    except ZeroProbabilityError:  # the heuristic conditions on a null event
        return True


def test_corrections_are_the_chain_conditionals_for_every_prompt():
    naive_misses = healing_misses = 0
    for tokenizer, num_chars in CASES_B:
        for chain in library_chains(len(tokenizer.alphabet), num_chars):
            model = induced_token_model(chain, tokenizer, num_chars)
            prefix_mass = prefix_masses(string_law(float_next(chain), tokenizer.alphabet, num_chars))
            for prompt in strings(tokenizer.alphabet, num_chars - 1):
                truth = chain.next_token_probs([tokenizer.alphabet.index(c) for c in prompt])
                for method in ("corrected", "byte"):
                    law = next_char_law(model, tokenizer, prompt, method)
                    np.testing.assert_allclose(law, truth, rtol=0, atol=LAW_TOLERANCE, err_msg=f"{prompt} {method}")
                naive_misses += misses_truth(model, tokenizer, prompt, "naive", truth)
                healing_misses += misses_truth(model, tokenizer, prompt, "token_healing", truth)
            for text in strings(tokenizer.alphabet, num_chars)[1:]:
                for method in ("corrected", "byte"):
                    value = np.exp(char_prefix_log_prob(model, tokenizer, text, method))
                    assert abs(value - prefix_mass[text]) < LAW_TOLERANCE
    assert naive_misses > 0 and healing_misses > 0  # negative controls: both heuristics are biased somewhere


# ---------------------------------------------------------------------------
# (d) negative controls: wrong cover sums, built on the model's public prefix probabilities
# ---------------------------------------------------------------------------


def cover_sum(model, tokenizer, text: str, rule: str) -> float:
    """sum over split points j of P(e(S) starts with encode(text[:j]) + [v]), v starting with text[j:]."""
    n = len(text)
    if rule in ("all", "non_proper"):  # theorem 11, part 2: every split point within a token's length of the end
        points = range(max(0, n - tokenizer.max_token_length), n)
    elif rule == "last_char":  # mutant: back off one character only
        points = [n - 1]
    elif rule == "mpe_points":  # mutant for BPE: MPE's split points (token boundaries of encode(text))
        points = boundaries(tokenizer, tokenizer.encode(text))
    elif rule == "no_overhang":  # mutant: only covers whose last token ends at n, i.e. P(e(S) starts with e(x))
        return float(np.exp(model.prefix_log_prob(tokenizer.encode(text))))
    total = 0.0
    for j in points:
        prefix = tokenizer.encode(text[:j])
        for token, piece in enumerate(tokenizer.tokens):
            if piece.startswith(text[j:]):
                total += float(np.exp(model.prefix_log_prob(prefix + [token])))
    if rule == "non_proper":  # mutant: also count the covers whose non-last tokens already spell text
        prefix = tokenizer.encode(text)
        total += sum(float(np.exp(model.prefix_log_prob(prefix + [token]))) for token in range(tokenizer.num_tokens))
    return total


def test_wrong_cover_sums_fail():
    misses = dict.fromkeys(["last_char", "mpe_points", "no_overhang", "non_proper"], 0)
    for tokenizer, num_chars in CASES_B:
        chain = library_chains(len(tokenizer.alphabet), num_chars)[1]
        model = induced_token_model(chain, tokenizer, num_chars)
        prefix_mass = prefix_masses(string_law(float_next(chain), tokenizer.alphabet, num_chars))
        for text in strings(tokenizer.alphabet, num_chars - 1)[1:]:
            assert abs(cover_sum(model, tokenizer, text, "all") - prefix_mass[text]) < LAW_TOLERANCE
            for rule in misses:
                if rule == "mpe_points" and isinstance(tokenizer, MaxPrefixTokenizer):
                    assert abs(cover_sum(model, tokenizer, text, rule) - prefix_mass[text]) < LAW_TOLERANCE
                    continue
                misses[rule] += abs(cover_sum(model, tokenizer, text, rule) - prefix_mass[text]) > MISS
    assert all(misses.values()), misses


# ---------------------------------------------------------------------------
# (c) part 3: the naive law is a mixture component of the truth, by enumeration
# ---------------------------------------------------------------------------

CASES_C = [  # (tokenizer, N); chains: rational MarkovChain / NGram K = 2, with and without zero cells
    (MaxPrefixTokenizer(["a", "b", "aa"], "ab"), 5),
    (MaxPrefixTokenizer(["a", "b", "aab"], "ab"), 5),
    (MaxPrefixTokenizer(["a", "b", "aa", "ab"], "ab"), 5),
    (MaxPrefixTokenizer(["a", "b", "abb"], "ab"), 5),
    (BPETokenizer([("a", "a"), ("b", "a"), ("aa", "a"), ("b", "aa")], "ab"), 5),
    (BPETokenizer([("a", "b"), ("b", "c"), ("a", "bc"), ("c", "a"), ("ca", "b")], "abc"), 4),
]


def total_variation(p, q):
    return sum(abs(a - b) for a, b in zip(p, q)) / 2


def forced_chain(alphabet_size: int) -> dict:
    """K = 2: a first 'a' is followed by 'a', and 'aa' by 'b'; every other row uniform."""
    uniform = [Fraction(1, alphabet_size)] * alphabet_size
    law = {context: uniform for k in range(3) for context in itertools.product(range(alphabet_size), repeat=k)}
    law[(0,)] = [Fraction(int(a == 0)) for a in range(alphabet_size)]
    law[(0, 0)] = [Fraction(int(a == 1)) for a in range(alphabet_size)]
    return law


def mixture_cases():
    """(tokenizer, library model, alphabet, law of the N-character strings in Fractions, their encodings)."""
    for tokenizer, num_chars in CASES_C:
        alphabet = tokenizer.alphabet
        for context_size, zeros in [(1, False), (1, True), (2, False), (2, True), (2, "forced")]:
            if zeros == "forced":
                law = forced_chain(len(alphabet))
            else:
                law = rational_chain(31 * context_size + zeros, len(alphabet), context_size, zeros)
            strings_law = string_law(rational_next(law, context_size), alphabet, num_chars)
            encoded = {s: tuple(tokenizer.encode(s)) for s in strings_law}
            model = induced_token_model(library_chain(law, len(alphabet), context_size, num_chars), tokenizer,
                                        num_chars)
            yield tokenizer, model, alphabet, strings_law, encoded


def next_char(law, event, n, alphabet):
    """P(S_{n+1} = a | S in event) for every character a, from the enumerated law."""
    mass = sum(law[s] for s in event)
    return [sum(law[s] for s in event if s[n] == a) / mass for a in alphabet]


def test_part_3_naive_is_conditioned_on_a_boundary():
    biased = unbiased_with_overhang = null_events = 0
    for tokenizer, model, alphabet, strings_law, encoded in mixture_cases():
        for x in strings(alphabet, len(next(iter(strings_law))) - 1):
            n, e = len(x), tuple(tokenizer.encode(x))
            starts = {s: p for s, p in strings_law.items() if s.startswith(x) and p > 0}
            if not starts:
                continue
            on_b = {s for s in starts if encoded[s][:len(e)] == e}
            boundary = {s for s in starts if n in itertools.accumulate((len(tokenizer.tokens[t]) for t in encoded[s]),
                                                                       initial=0)}
            assert on_b == boundary  # by part 1, B within {S starts with x} is "a token boundary at n"
            truth = next_char(starts, starts, n, alphabet)
            rho = 1 - sum(starts[s] for s in on_b) / sum(starts.values())
            overhang = next_char(starts, set(starts) - on_b, n, alphabet) if rho > 0 else None
            if rho == 1:  # P(B) = 0: the naive reading conditions on a null event
                null_events += 1
                with pytest.raises(ZeroProbabilityError):
                    next_char_law(model, tokenizer, x, "naive")
                continue
            naive = next_char(starts, on_b, n, alphabet)
            if rho == 0:
                assert naive == truth
                continue
            assert truth == [(1 - rho) * a + rho * b for a, b in zip(naive, overhang)]  # the mixture, exactly
            assert total_variation(naive, truth) == rho * total_variation(naive, overhang)
            assert (naive == truth) == (naive == overhang)  # rho > 0: unbiased iff the two laws agree
            biased += naive != truth
            unbiased_with_overhang += naive == truth
            library = next_char_law(model, tokenizer, x, "naive")
            np.testing.assert_allclose(library, [float(p) for p in naive], rtol=0, atol=LAW_TOLERANCE)
    # both branches of "unbiased iff rho = 0 or the laws agree" occur, and the null event of the naive reading
    assert biased > 0 and unbiased_with_overhang > 0 and null_events > 0, (biased, unbiased_with_overhang, null_events)


def test_corrections_on_chains_with_zero_cells():
    """Exact where P(S starts with x) > 0, even when a split prefix has probability 0; refused where it is 0."""
    split_prefix_of_probability_zero = 0
    for tokenizer, model, alphabet, strings_law, encoded in mixture_cases():
        prefix_mass = prefix_masses(strings_law)
        token_mass = prefix_masses({encoded[s]: p for s, p in strings_law.items()})
        for x in strings(alphabet, len(next(iter(strings_law))) - 1):
            if prefix_mass[x] == 0:
                for method in ("corrected", "byte"):
                    with pytest.raises(ZeroProbabilityError):
                        next_char_law(model, tokenizer, x, method)
                continue
            truth = [float(prefix_mass[x + a] / prefix_mass[x]) for a in alphabet]
            for method in ("corrected", "byte"):
                np.testing.assert_allclose(next_char_law(model, tokenizer, x, method), truth, rtol=0,
                                           atol=LAW_TOLERANCE)
            e = tuple(tokenizer.encode(x))  # for MPE the split prefixes are prefixes of encode(x)
            split_prefix_of_probability_zero += any(token_mass.get(e[:i], 0) == 0 for i in range(len(e)))
    assert split_prefix_of_probability_zero > 0  # the degenerate case of the next test occurs in the sweep


def test_corrections_when_a_split_prefix_has_probability_zero():
    """Regression: the cover sum must skip a split prefix of probability 0 without asking the model about it
    (before commit eeb92e7, TokenModelCalls.prefix_log_prob asked and the model raised ZeroProbabilityError)."""
    tokenizer = MaxPrefixTokenizer(["a", "b", "aab"], "ab")
    table = np.full((3, 3, 2), 0.5)
    table[2, 0] = [1.0, 0.0]  # the first 'a' is followed by 'a'
    table[0, 0] = [0.0, 1.0]  # 'aa' is followed by 'b': the token prefix [a] has probability 0
    chain = arprob.NGram(table, 5)
    model = induced_token_model(chain, tokenizer, 5)
    assert chain.next_token_probs([0, 0]).tolist() == [0.0, 1.0]  # P(S_3 = b | S starts with aa) = 1
    with pytest.raises(ZeroProbabilityError):
        model.next_token_probs([0])
    for method in ("corrected", "byte"):
        np.testing.assert_allclose(next_char_law(model, tokenizer, "aa", method), [0.0, 1.0], rtol=0,
                                   atol=LAW_TOLERANCE)
        assert char_prefix_log_prob(model, tokenizer, "aaa", method) == -np.inf


# ---------------------------------------------------------------------------
# (d) part 4: the paper's example
# ---------------------------------------------------------------------------

PAPER_TOKENIZER = MaxPrefixTokenizer(["A", "B", "AA"], "AB")


@pytest.mark.parametrize("num_chars", [2, 3, 4])
def test_part_4_paper_example_symbolically(num_chars):
    alpha, beta, start = sympy.symbols("alpha beta pi", positive=True)
    rows = {(): [start, 1 - start], (0,): [alpha, 1 - alpha], (1,): [beta, 1 - beta]}
    law = string_law(rational_next(rows, 1), "AB", num_chars)
    starts = {s: p for s, p in law.items() if s.startswith("A")}
    on_b = {s: p for s, p in starts.items() if PAPER_TOKENIZER.encode(s)[:1] == [0]}
    first_token = {}
    for s, p in law.items():
        token = PAPER_TOKENIZER.encode(s)[0]
        first_token[token] = first_token.get(token, 0) + p

    def next_is(event, char):
        return sympy.simplify(sum(p for s, p in event.items() if s[1] == char) / sum(event.values()))

    naive_b, truth_b = next_is(on_b, "B"), next_is(starts, "B")
    rho = sympy.simplify(1 - sum(on_b.values()) / sum(starts.values()))
    assert naive_b == 1 and sympy.simplify(truth_b - (1 - alpha)) == 0 and sympy.simplify(rho - alpha) == 0
    overhang_b = 0  # the overhanging token is AA: the next character is A
    assert sympy.simplify(truth_b - ((1 - rho) * naive_b + rho * overhang_b)) == 0
    assert sympy.simplify((naive_b - truth_b) - alpha) == 0  # the bias (TV on two points) is alpha
    # token healing: back off [A]; AA gives A, the token A itself then hands over to the naive law (B)
    healed_b = first_token[0] * naive_b / (first_token[0] + first_token[2])
    assert sympy.simplify(healed_b - (1 - alpha)) == 0
    assert sympy.simplify(healed_b - naive_b) != 0  # negative control: the naive value is not the healed one


def test_part_4_paper_example_through_the_library():
    grid = [0.0, 0.05, 0.3, 0.5, 0.77, 0.95]
    for alpha, beta in itertools.product(grid, grid):
        chain = arprob.MarkovChain(np.array([0.5, 0.5]), np.array([[alpha, 1 - alpha], [beta, 1 - beta]]), 3)
        model = induced_token_model(chain, PAPER_TOKENIZER, 3)
        truth = np.array([alpha, 1 - alpha])
        np.testing.assert_allclose(next_char_law(model, PAPER_TOKENIZER, "A", "naive"), [0.0, 1.0], atol=0)
        for method in ("token_healing", "corrected", "byte"):
            law = next_char_law(model, PAPER_TOKENIZER, "A", method)
            np.testing.assert_allclose(law, truth, rtol=0, atol=LAW_TOLERANCE, err_msg=method)
        bias = total_variation(next_char_law(model, PAPER_TOKENIZER, "A", "naive"), truth)
        assert abs(bias - alpha) < LAW_TOLERANCE
    # alpha = 1: the token A is never followed by another token, so the naive reading conditions on a null event
    chain = arprob.MarkovChain(np.array([0.5, 0.5]), np.array([[1.0, 0.0], [0.5, 0.5]]), 3)
    model = induced_token_model(chain, PAPER_TOKENIZER, 3)
    with pytest.raises(ZeroProbabilityError):
        next_char_law(model, PAPER_TOKENIZER, "A", "naive")
    np.testing.assert_allclose(next_char_law(model, PAPER_TOKENIZER, "A", "corrected"), [1.0, 0.0], atol=LAW_TOLERANCE)


def test_part_3_null_event_example():
    tokenizer = MaxPrefixTokenizer(["a", "b", "aa", "ab"], "ab")
    chain = arprob.MarkovChain(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.5, 0.5]]), 3)
    model = induced_token_model(chain, tokenizer, 3)
    with pytest.raises(ZeroProbabilityError):
        next_char_law(model, tokenizer, "a", "naive")
    np.testing.assert_allclose(next_char_law(model, tokenizer, "a", "corrected"), [0.5, 0.5], atol=LAW_TOLERANCE)


# ---------------------------------------------------------------------------
# (d) part 5: model calls of the corrections
# ---------------------------------------------------------------------------


class RecordingModel:
    """A token model that records every prefix it is asked about."""

    def __init__(self, model):
        self.model, self.num_tokens, self.asked = model, model.num_tokens, []

    def next_token_probs(self, prefix):
        self.asked.append(tuple(prefix))
        return self.model.next_token_probs(prefix)


def test_part_5_model_calls_of_the_corrections():
    mpe_tight = bpe_over = 0
    for (tokenizer, num_chars), method in itertools.product(CASES_B, ("corrected", "byte")):
        chain = library_chains(len(tokenizer.alphabet), num_chars)[0]
        model = induced_token_model(chain, tokenizer, num_chars)
        longest, size = tokenizer.max_token_length, len(tokenizer.alphabet)
        for prompt in strings(tokenizer.alphabet, num_chars - 1):
            n, e = len(prompt), tokenizer.encode(prompt)
            recorder = RecordingModel(model)
            next_char_law(recorder, tokenizer, prompt, method)
            asked = set(recorder.asked)
            assert len(asked) == len(recorder.asked)  # the cache: one call per distinct prefix
            if isinstance(tokenizer, MaxPrefixTokenizer):
                assert asked <= {tuple(e[:i]) for i in range(len(e) + 1)}  # prefixes of encode(x) only
                assert len(asked) <= len(e) + 1 <= len(e) + size * (longest + 1)
                mpe_tight += len(asked) == len(e) + 1
            else:  # prefixes of encode(x[:j]) for the split points j of the texts x + a
                splits = [tokenizer.encode(prompt[:j]) for j in range(max(0, n + 1 - longest), n + 1)]
                allowed = {tuple(c[:i]) for c in splits for i in range(len(c) + 1)}
                assert asked <= allowed and len(allowed) <= sum(len(c) + 1 for c in splits) <= longest * (n + 1)
                bpe_over += len(asked) > len(e) + 1
            calls = TokenModelCalls("check", model, tokenizer)  # the library's counter agrees
            for prefix in recorder.asked:
                calls.probs(prefix)
            assert calls.calls == len(asked)
    assert mpe_tight > 0  # the bound |encode(x)| + 1 is attained
    assert bpe_over > 0  # negative control: the MPE bound does not hold for BPE
