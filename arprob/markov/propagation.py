r"""Laws after :math:`n` steps from a prompt, and the DFA :math:`\times` window-chain programme.

A prompt of :math:`k < K` tokens is a *short* state; the chain appends tokens to it until it is a full
window, so for the first :math:`K - k` steps the state is the prompt followed by the generated
tokens, and only the :math:`T^j` extensions of the prompt carry mass.  :func:`propagate` walks those
layers by calling the model on just those contexts, then moves to the full-window operator.

Constraints (as GeLaTo and Ctrl-G do for HMMs): a :class:`~arprob.DFA` over tokens reads the prompt
and then the generated tokens.  The pair (state of the chain, state :math:`q` of the DFA) is again a
Markov chain, and its law :math:`R(w, q)` moves as

.. math::

    R'\bigl((r, v), q'\bigr) = \sum_{q : \delta(q, v) = q'} \sum_a R\bigl((a, r), q\bigr)\, P(v \mid (a, r)),

the window step of :mod:`arprob.markov.operators` for each DFA state followed by the DFA's move on the
appended token.  In mode ``"within"`` accepting DFA states absorb (their mass is collected and
removed), so the collected mass after :math:`n` steps is the probability that the generation
satisfies the constraint within :math:`n` tokens; in mode ``"end"`` it is the mass on accepting
states after exactly :math:`n` tokens.  Cost :math:`O(n\, T^{K+1} |Q|)`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from arprob._validation import check_int, check_memory, check_tokens, check_work
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.markov.models import context_probs
from arprob.markov.operators import apply

__all__ = ["contains_pattern", "propagate"]

#: Product chains with at most this many (window, DFA state) pairs and more steps than pairs are
#: propagated by renormalised repeated squaring of their dense matrix instead of step by step.
DENSE_PRODUCT = 2048

#: Work counted per step at least (loop overhead), so that a huge step count on a tiny chain is refused.
PER_STEP_FLOOR = 1e5


def contains_pattern(pattern, vocab_size: int):
    r"""The :class:`~arprob.DFA` that accepts once the token sequence ``pattern`` has appeared, and stays accepting.

    Knuth-Morris-Pratt: state :math:`q` is the length of the longest prefix of the pattern that ends
    the text read so far; reading :math:`v` in state :math:`q < m` goes to the longest prefix of
    ``pattern[:q] + [v]`` that is also its suffix; state :math:`m` (the whole pattern) absorbs.
    Overlapping occurrences are found.  :math:`m + 1` states.
    """
    from arprob.distributions.hmm import DFA

    owner = "contains_pattern"
    vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1)
    if isinstance(pattern, (str, bytes)) or pattern is None:
        raise ArprobTypeError(f"{owner}: pattern must be a 1-d sequence of token ids, got {pattern!r} "
                              "(encode a string with the tokenizer or arprob.markov.text.encode first)")
    array = np.asarray(pattern)
    if array.ndim != 1 or array.size == 0:
        raise InvalidArgumentError(f"{owner}: pattern has shape {array.shape}, expected a non-empty 1-d sequence "
                                   "of token ids (every text contains the empty pattern)")
    check_tokens(owner, "pattern", array, vocab_size)
    check_memory(owner, f"a DFA of {array.size + 1} states x vocab_size={vocab_size:,} tokens",
                 (array.size + 1, vocab_size), itemsize=8, fix="use a smaller vocab_size")
    word = [int(token) for token in array]
    length = len(word)
    transitions = np.full((length + 1, vocab_size), length, dtype=np.int64)
    for state in range(length):
        for token in range(vocab_size):
            read = word[:state] + [token]
            match = len(read)
            while match > 0 and read[len(read) - match:] != word[:match]:
                match -= 1
            transitions[state, token] = match
    accepting = np.zeros(length + 1, dtype=bool)
    accepting[length] = True
    return DFA(transitions, 0, accepting)


def _layer_step(law, probs, moves):
    """Extension law ``(E, Q)`` -> ``(E * T, Q)``: append each token ``v`` and move the DFA by ``moves[v]``."""
    num_extensions, num_dfa = law.shape
    vocab_size = probs.shape[1]
    joint = law[:, None, :] * probs[:, :, None]  # (E, T, Q)
    out = np.zeros((num_extensions, vocab_size, num_dfa))
    for v in range(vocab_size):
        np.add.at(out[:, v, :], (slice(None), moves[v]), joint[:, v, :])
    return out.reshape(num_extensions * vocab_size, num_dfa)


@partial(jax.jit, static_argnames=("within",))
def _window_steps(law, table, moves_onehot, accepting, count, collected, *, within: bool):
    """``count`` steps of the product chain on full windows; ``law (T**K, Q)``."""
    num_windows, vocab_size = table.shape
    rest = num_windows // vocab_size

    def step(_, carry):
        law, collected = carry
        moved = apply(law.T, table).T  # (N, Q): the window step for every DFA state
        moved = moved.reshape(rest, vocab_size, -1)
        moved = jnp.einsum("rvq,vqp->rvp", moved, moves_onehot).reshape(num_windows, -1)
        if within:
            collected = collected + jnp.sum(jnp.where(accepting[None, :], moved, 0.0))
            moved = jnp.where(accepting[None, :], 0.0, moved)
        return moved, collected

    return jax.lax.fori_loop(0, count, step, (law, collected))


def _product_matrix(num_windows: int, table, transitions: np.ndarray, accepting: np.ndarray, within: bool):
    """The dense matrix of the (window, DFA state) chain, plus one absorbing sink in mode ``"within"``
    that collects the accepted mass (state ``num_windows * Q``)."""
    from arprob.markov.mixing import dense_transition

    num_dfa = transitions.shape[0]
    windows = dense_transition(np.asarray(table, dtype=np.float64))  # (N, N)
    size = num_windows * num_dfa
    matrix = np.zeros((size + 1, size + 1))
    last = np.arange(num_windows) % table.shape[1]  # the token a window ends with
    for q in range(num_dfa):
        moved_q = transitions[q, last]  # DFA state after reading the window's last token
        for target_q in np.unique(moved_q):
            columns = np.flatnonzero(moved_q == target_q)
            if within and accepting[target_q]:
                matrix[q * num_windows:(q + 1) * num_windows, size] += windows[:, columns].sum(axis=1)
            else:
                matrix[np.ix_(np.arange(q * num_windows, (q + 1) * num_windows), target_q * num_windows + columns)] \
                    += windows[:, columns]
    matrix[size, size] = 1.0
    return matrix


def propagate(owner: str, model, table, prompt: np.ndarray, steps: int, decoding, *, dfa=None,
              mode: str = "end", record=()):
    """Law of the chain's state (and DFA state) after ``steps`` tokens generated after ``prompt``.

    Returns ``(law, length, collected, records)``: ``law`` is ``(T**length, Q)`` over the sequences of
    the state's ``length = min(K, len(prompt) + steps)`` tokens (base-``T`` order) times DFA states,
    ``collected`` the mass absorbed by accepting DFA states (mode ``"within"``), and ``records`` maps
    each count in ``record`` (all ``<= steps``) to the constraint probability after that many tokens
    (collected mass in mode ``"within"``, mass on accepting states in mode ``"end"``), found on the way.
    """
    from arprob.markov.mixing import stochastic_power

    T, K = model.vocab_size, model.context_size
    full_prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    prompt = full_prompt[-K:] if len(full_prompt) else full_prompt
    if dfa is None:
        transitions = np.zeros((1, T), dtype=np.int64)
        start, accepting = 0, np.zeros(1, bool)
    else:
        transitions = np.asarray(dfa.transitions, dtype=np.int64)
        accepting = np.asarray(dfa.accepting, dtype=bool)
        start = int(dfa.start)
        for token in full_prompt:  # the DFA reads the whole prompt, the chain keeps its last K tokens
            start = int(transitions[start, token])
    num_dfa = transitions.shape[0]
    within = mode == "within"
    wanted = set(int(count) for count in record)
    law = np.zeros((1, num_dfa))
    if within and accepting[start]:
        return law, len(prompt), 1.0, {count: 1.0 for count in wanted}
    law[0, start] = 1.0
    collected, records, done = 0.0, {}, 0

    def note(current):
        if done in wanted:
            records[done] = collected if within else float(current[:, accepting].sum())

    note(law)
    extensions = np.zeros((1, 0), dtype=np.int64)  # tokens generated so far while the state is short
    length = len(prompt)
    while done < steps and length < K:
        contexts = np.concatenate([np.broadcast_to(prompt, (extensions.shape[0], len(prompt))), extensions], axis=1)
        probs = context_probs(owner, model, contexts, *decoding)
        law = _layer_step(law, probs, transitions.T)
        if within:
            collected += float(law[:, accepting].sum())
            law[:, accepting] = 0.0
        extensions = np.concatenate([np.repeat(extensions, T, axis=0),
                                     np.tile(np.arange(T), extensions.shape[0])[:, None]], axis=1)
        length += 1
        done += 1
        note(law)
    # place the extension law into the full layer of all T**length sequences
    prefix_index = 0
    for token in prompt:
        prefix_index = prefix_index * T + int(token)
    full = np.zeros((T**length, num_dfa))
    offset = prefix_index * T ** extensions.shape[1]
    full[offset:offset + law.shape[0]] = law
    remaining = steps - done
    if remaining == 0:
        return full, length, collected, records
    targets = sorted(count for count in wanted if count > done) or [steps]
    if targets[-1] != steps:
        targets.append(steps)
    num_windows = full.shape[0]
    if full.size <= DENSE_PRODUCT and remaining > full.size:
        matrix = _product_matrix(num_windows, table, transitions, accepting, within)
        vector = np.concatenate([full.T.reshape(-1), [0.0]])
        before = collected
        for target in targets:
            vector = vector @ stochastic_power(matrix, target - done)
            done = target
            full = vector[:-1].reshape(num_dfa, num_windows).T
            collected = before + float(vector[-1])
            note(full)
        return full, length, collected, records
    check_work(owner, f"{remaining:,} steps of the (window x DFA state) law of {num_windows:,} x "
               f"{num_dfa} entries", float(remaining) * max(full.size * T, PER_STEP_FLOOR),
               fix="ask for fewer steps, or use a smaller model or DFA")
    moves = jax.nn.one_hot(jnp.asarray(transitions.T), num_dfa, dtype=jnp.float64)  # (T, Q, Q)
    current, table_j, accepting_j = jnp.asarray(full), jnp.asarray(table), jnp.asarray(accepting)
    for target in targets:
        current, extra = _window_steps(current, table_j, moves, accepting_j, target - done, jnp.asarray(0.0),
                                       within=within)
        collected += float(extra)
        done = target
        note(np.asarray(current))
    return np.asarray(current), length, collected, records
