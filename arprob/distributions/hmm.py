r"""Hidden Markov model with categorical emissions: an exact any-subset oracle for long sequences.

Hidden states :math:`z_t \in \{0, \dots, K-1\}` form a Markov chain and each emits one token
:math:`x_t \in \{0, \dots, V-1\}`:

.. math::

    p(x) = \sum_{z} \pi_{z_0} E_{z_0 x_0} \prod_{t=1}^{L-1} A_{z_{t-1} z_t} E_{z_t x_t}.

Every query of the any-subset protocol is a forward-backward pass with evidence on the
observed positions (the kernels of :mod:`arprob.inference.hmm`, ``mask=observed``), so it costs
:math:`O(L K^2)` and works for lengths far beyond enumeration:

* :math:`\log p(x_S)` is the log-likelihood with unobserved positions masked out;
* :math:`p(x_i = v \mid x_{S \setminus \{i\}}) = \sum_k p(z_i = k \mid x_{S \setminus \{i\}}) E_{kv}` with
  :math:`p(z_i = k \mid x_{S\setminus\{i\}}) \propto \hat\alpha^-_i(k)\, \beta_i(k)`: the predicted
  probabilities :math:`\hat\alpha^-_i = p(z_i \mid x_{S \cap [0, i)})` and the backward messages
  :math:`\beta_i(k) = p(x_{S \cap (i, L)} \mid z_i = k)` both leave out position :math:`i`'s own
  evidence, so one forward-backward pass answers all :math:`L` positions at once.

Constrained generation (GeLaTo; H. Zhang, M. Dang, N. Peng, G. Van den Broeck (2023), *Tractable
control for autoregressive language generation*, ICML).  A constraint is a deterministic finite
automaton :class:`DFA` (states :math:`q`, next state :math:`\delta(q, v)`, start :math:`q_0`,
accepting set :math:`F`).  With :math:`\delta^*` the state after reading a string, the lookahead

.. math::

    B_t(k, q) = P\bigl(\delta^*(q, x_{t:L}) \in F \mid z_t = k\bigr), \qquad B_L(k, q) = [q \in F],

    D_{t+1}(k, q) = \sum_{k'} A_{k k'} B_{t+1}(k', q), \qquad
    B_t(k, q) = \sum_v E_{kv}\, D_{t+1}(k, \delta(q, v))

is a backward dynamic programme over (HMM state :math:`\times` DFA state), :math:`O(L (K^2 Q + K Q V))`
(:math:`D_L = B_L` because rows of :math:`A` sum to one).  Then
:math:`P(x \text{ accepted} \mid x_{<m}) = \sum_k p(z_m = k \mid x_{<m}) B_m(k, \delta^*(q_0, x_{<m}))`,
and ancestral sampling of :math:`(z_t, x_t)` from

.. math::

    p(z_t = k, x_t = v \mid z_{t-1}, x_{<t}, \text{accepted}) \propto A_{z_{t-1} k} E_{kv}\, D_{t+1}(k, \delta(q_t, v))

(:math:`p(z_m \mid x_{<m})` in place of :math:`A_{z_{m-1} k}` at the first free step) draws exactly
from :math:`p(x \mid x_{<m}, x \text{ accepted})`: the future beyond step :math:`t` depends on the past
only through :math:`(z_t, q_{t+1})`.  All tables are in log space (no underflow at long :math:`L`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from arprob._random import any_undecided, categorical, choose_bits, sampling_table, search, uniform_words
from arprob._validation import (
    check_int,
    check_key,
    check_positive_int,
    check_probs,
    check_real,
    check_table_size,
    check_tokens,
    is_concrete,
)
from arprob.distributions.base import MAX_LENGTH, SequenceDistribution
from arprob.errors import ArprobTypeError, InvalidArgumentError, ShapeError, ZeroProbabilityError
from arprob.inference.hmm import hmm_backward, hmm_filter, hmm_log_likelihood

__all__ = ["DFA", "HMM"]


_HMM_FIX = ("the HMM stores K x (K + V + 1) probabilities (initial, transition, emission): use fewer "
            "states or a smaller vocabulary")


class DFA(NamedTuple):
    """A deterministic finite automaton over the token vocabulary (a GeLaTo constraint).

    Attributes
    ----------
    transitions
        Int array ``(num_dfa_states, V)``: ``transitions[q, v]`` is the state after reading ``v`` in ``q``.
    start
        Int, the initial state.
    accepting
        Bool array ``(num_dfa_states,)``: a sequence satisfies the constraint when the state after
        reading all of it is accepting.
    """

    transitions: np.ndarray
    start: int
    accepting: np.ndarray


def _check_dfa(owner: str, dfa, vocab_size: int) -> DFA:
    if not isinstance(dfa, tuple) or len(dfa) != 3:
        raise ArprobTypeError(f"{owner}: dfa must be a DFA(transitions, start, accepting), got {type(dfa).__name__}")
    transitions, start, accepting = (np.asarray(part) for part in dfa)
    if transitions.ndim != 2 or transitions.shape[0] < 1 or transitions.shape[1] != vocab_size:
        raise ShapeError(f"{owner}: dfa.transitions has shape {transitions.shape}, expected (num_dfa_states, "
                         f"{vocab_size}) (one next state per DFA state and token)")
    if not np.issubdtype(transitions.dtype, np.integer):
        raise ArprobTypeError(f"{owner}: dfa.transitions has dtype {transitions.dtype}, expected integers")
    num_dfa_states = transitions.shape[0]
    if transitions.min() < 0 or transitions.max() >= num_dfa_states:
        raise InvalidArgumentError(f"{owner}: dfa.transitions holds states in [{transitions.min()}, "
                                   f"{transitions.max()}], expected states in [0, {num_dfa_states})")
    if start.shape != () or not np.issubdtype(start.dtype, np.integer) or not 0 <= int(start) < num_dfa_states:
        raise InvalidArgumentError(f"{owner}: dfa.start is {start!r}, expected an int in [0, {num_dfa_states})")
    if accepting.shape != (num_dfa_states,) or accepting.dtype != np.bool_:
        raise ShapeError(f"{owner}: dfa.accepting has shape {accepting.shape} and dtype {accepting.dtype}, "
                         f"expected a bool array of shape ({num_dfa_states},)")
    return DFA(jnp.asarray(transitions, jnp.int32), int(start), jnp.asarray(accepting))


def _safe_log_mix(state_probs, emission_probs):
    """``log(state_probs @ E)`` per row, normalised; uniform where the row is not a valid law."""
    probs = jnp.matmul(state_probs, emission_probs, precision=jax.lax.Precision.HIGHEST)
    total = jnp.sum(probs, axis=-1, keepdims=True)
    ok = jnp.isfinite(total) & (total > 0)
    safe = jnp.where(ok, probs / jnp.where(ok, total, 1.0), 1.0 / probs.shape[-1])
    return jnp.log(safe)


@partial(jax.jit, static_argnames=("length", "num_samples"))
def _sample_paths(key, states, emissions, *, length, num_samples):
    r"""``num_samples`` draws of :math:`x_{0:L}`, shape ``(num_samples, length)``.

    ``states`` is the :class:`~arprob._random.SamplingTable` of the rows of :math:`A` followed by
    :math:`\pi` (row :math:`K`), ``emissions`` that of :math:`E`.  One ``jax.random.bits`` call for
    all (high) words, then one ``lax.scan`` over time on the whole batch carrying :math:`z_{t-1}`:
    :math:`z_t \sim A_{z_{t-1}\cdot}` (:math:`\pi` at :math:`t = 0`), :math:`x_t \sim E_{z_t \cdot}`.
    """
    start = jnp.full((num_samples,), emissions.high.shape[0], jnp.int32)

    def run(u_high, u_low):
        def step(carry, uniforms):
            previous, undecided = carry
            high, low = uniforms
            state, state_tie = search(states, previous, high[0], None if low is None else low[0])
            token, token_tie = search(emissions, state, high[1], None if low is None else low[1])
            return (state, undecided | any_undecided(state_tie, token_tie)), token

        (_, undecided), tokens = jax.lax.scan(step, (start, jnp.zeros((), bool)), (u_high, u_low))
        return tokens.T, undecided

    return uniform_words(key, (length, 2, num_samples), run, states.words)


@partial(jax.jit, static_argnames=("length",))
def _lookahead(log_transition, log_emission, transitions, accepting, *, length):
    """Log tables ``(log B_t for t = 0..L, log D_{t+1} for t = 0..L-1)``, shapes ``(L+1, K, Q)``, ``(L, K, Q)``."""
    num_states = log_transition.shape[0]
    log_final = jnp.broadcast_to(jnp.where(accepting, 0.0, -jnp.inf).astype(log_emission.dtype),
                                 (num_states, accepting.shape[0]))

    def step(log_b_next, _):
        log_d = logsumexp(log_transition[:, :, None] + log_b_next[None, :, :], axis=1)  # (K, Q)
        log_b = logsumexp(log_emission[:, None, :] + log_d[:, transitions], axis=-1)  # (K, Q, V) -> (K, Q)
        return log_b, (log_b, log_d)

    _, (log_b, log_d) = jax.lax.scan(step, log_final, None, length=length, reverse=True)
    return jnp.concatenate([log_b, log_final[None]]), log_d


@partial(jax.jit, static_argnames=("length", "num_samples"))
def _sample_constrained_paths(key, log_transition, log_emission, transitions, log_d, log_first, start,
                              padded, prefix_length, *, length, num_samples):
    def single(key):
        def step(carry, inputs):
            previous, dfa_state = carry
            t, key_t, log_d_next, fixed = inputs
            key_state, key_token = jax.random.split(key_t)
            prior = jnp.where(t == prefix_length, log_first, log_transition[previous])
            joint = log_emission + log_d_next[:, transitions[dfa_state]]  # (K, V): E_kv D_{t+1}(k, delta(q, v))
            # z_t from its marginal, then x_t given z_t: K + V Gumbel draws instead of K * V
            state = categorical(key_state, prior + logsumexp(joint, axis=-1))
            free = t >= prefix_length
            token = jnp.where(free, categorical(key_token, joint[state]), fixed).astype(jnp.int32)
            state = jnp.where(free, state, previous).astype(jnp.int32)
            return (state, transitions[dfa_state, token]), token

        inputs = (jnp.arange(length), jax.random.split(key, length), log_d, padded)
        _, tokens = jax.lax.scan(step, (jnp.int32(0), jnp.int32(start)), inputs)
        return tokens

    return jax.vmap(single)(jax.random.split(key, num_samples))


# The protocol methods validate eagerly, then run one compiled function of the model (a pytree) per shape.


@jax.jit
def _log_marginals(model, x, observed):
    return jnp.vectorize(model._marginal_one, signature="(l),(l)->()")(x, observed)


@jax.jit
def _conditionals(model, x, observed):
    return jnp.vectorize(model._conditional_one, signature="(l),(l)->(l,v)")(x, observed)


@jax.jit
def _prefix_conditionals(model, x, known):
    return jnp.vectorize(model._prefix_one, signature="(l),(l)->(l,v)")(x, known)


class HMM(SequenceDistribution):
    r"""Hidden Markov model with categorical emissions, as a numpyro distribution over token sequences.

    .. math::

        p(x) = \sum_{z} \pi_{z_0} E_{z_0 x_0} \prod_{t=1}^{L-1} A_{z_{t-1} z_t} E_{z_t x_t}.

    An exact any-subset oracle at any length (forward-backward with evidence, :math:`O(L K^2)` per
    query; see the module docstring), and the constrained-generation primitive of GeLaTo
    (:meth:`constraint_probability`, :meth:`sample_constrained`).  Usable as
    ``numpyro.sample("x", HMM(...), obs=x)``.

    Parameters
    ----------
    initial_probs
        :math:`\pi`, shape ``(K,)``.
    transition_probs
        :math:`A`, shape ``(K, K)``; row ``k`` is the law of :math:`z_{t+1}` given :math:`z_t = k`.
    emission_probs
        :math:`E`, shape ``(K, V)``; row ``k`` is the law of :math:`x_t` given :math:`z_t = k`.
    length
        Sequence length :math:`L` (thousands are fine).
    validate_args
        ``False`` skips the checks of probabilities and tokens.

    Notes
    -----
    ``batch_shape`` is always ``()``: batch over parameters with ``jax.vmap``.  Queries accept any
    leading batch dimensions on ``x`` and ``observed``.  Exact in float64 (brute-force tests at 1e-10).
    """

    pytree_data_fields = ("initial_probs", "transition_probs", "emission_probs",
                          "log_initial", "log_transition", "log_emission")
    pytree_aux_fields = ("num_states",)

    def __init__(self, initial_probs, transition_probs, emission_probs, length: int, *, validate_args=None):
        owner = "HMM"
        length = check_positive_int(owner, "length", length)
        shapes = {name: np.shape(value) for name, value in
                  (("initial_probs", initial_probs), ("transition_probs", transition_probs),
                   ("emission_probs", emission_probs))}
        if len(shapes["initial_probs"]) != 1 or shapes["initial_probs"][0] < 1:
            raise ShapeError(f"{owner}: initial_probs has shape {shapes['initial_probs']}, expected (num_states,) "
                             "(no batch dimensions: vmap over a batch of HMMs)")
        num_states = shapes["initial_probs"][0]
        if shapes["transition_probs"] != (num_states, num_states):
            raise ShapeError(f"{owner}: transition_probs has shape {shapes['transition_probs']}, expected "
                             f"({num_states}, {num_states}) to match initial_probs (num_states={num_states})")
        if len(shapes["emission_probs"]) != 2 or shapes["emission_probs"][0] != num_states:
            raise ShapeError(f"{owner}: emission_probs has shape {shapes['emission_probs']}, expected "
                             f"({num_states}, vocab_size) to match initial_probs (num_states={num_states})")
        vocab_size = shapes["emission_probs"][1]
        if vocab_size < 2:
            raise ShapeError(f"{owner}: emission_probs has {vocab_size} column(s), expected vocab_size >= 2")
        check_table_size(owner, "the parameters", (num_states, num_states + vocab_size + 1), fix=_HMM_FIX)
        if validate_args is not False:
            for name, value in (("initial_probs", initial_probs), ("transition_probs", transition_probs),
                                ("emission_probs", emission_probs)):
                check_probs(owner, name, value)
        arrays = [jnp.asarray(value) for value in (initial_probs, transition_probs, emission_probs)]
        dtype = jnp.result_type(*arrays, float)
        self.initial_probs, self.transition_probs, self.emission_probs = (a.astype(dtype) for a in arrays)
        self.log_initial = jnp.log(self.initial_probs)
        self.log_transition = jnp.log(self.transition_probs)
        self.log_emission = jnp.log(self.emission_probs)
        self.num_states = int(num_states)
        super().__init__(vocab_size, length, (), validate_args=validate_args)

    @classmethod
    def random(cls, key, length: int, num_states: int, vocab_size: int, concentration: float = 1.0) -> HMM:
        """Initial law, transition and emission rows drawn from a symmetric Dirichlet(``concentration``).

        Tables over :data:`~arprob._validation.MAX_TABLE_ENTRIES` entries are refused
        (:class:`~arprob.errors.EnumerationTooLargeError`) before anything is drawn.
        """
        owner = "HMM.random"
        key = check_key(owner, key)
        length = check_int(owner, "length", length, minimum=1, maximum=MAX_LENGTH, fix="positions are int32")
        num_states = check_int(owner, "num_states", num_states, minimum=1)
        vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=2)
        concentration = check_real(owner, "concentration", concentration, low=0.0, low_open=True,
                                   fix="the Dirichlet concentration is a positive number")
        check_table_size(owner, "the parameters (num_states x (num_states + vocab_size + 1))",
                         (num_states, num_states + vocab_size + 1), fix=_HMM_FIX)
        key_initial, key_transition, key_emission = jax.random.split(key, 3)

        def dirichlet(key, shape):
            return jax.nn.softmax(jax.random.loggamma(key, concentration, shape), axis=-1)

        return cls(dirichlet(key_initial, (num_states,)), dirichlet(key_transition, (num_states, num_states)),
                   dirichlet(key_emission, (num_states, vocab_size)), length)

    def __repr__(self):
        return f"HMM(num_states={self.num_states}, vocab_size={self.vocab_size}, length={self.length})"

    # -- kernels on one sequence -----------------------------------------
    def _log_likelihoods(self, x):
        return self.log_emission.T[x]  # (L, K)

    def _marginal_one(self, x, observed):
        log_z = hmm_log_likelihood(self.log_initial, self.log_transition, self._log_likelihoods(x), mask=observed)
        return jnp.where(jnp.isnan(log_z), -jnp.inf, log_z)

    def _conditional_one(self, x, observed):
        log_likelihoods = self._log_likelihoods(x)
        predicted = hmm_filter(self.log_initial, self.log_transition, log_likelihoods, mask=observed).predicted_probs
        log_backward = hmm_backward(self.log_initial, self.log_transition, log_likelihoods,
                                    mask=observed).log_backward
        top = jnp.max(log_backward, axis=-1, keepdims=True)
        weights = predicted * jnp.exp(log_backward - jnp.where(jnp.isfinite(top), top, 0.0))
        return _safe_log_mix(weights, self.emission_probs)

    def _prefix_one(self, x, known):
        predicted = hmm_filter(self.log_initial, self.log_transition, self._log_likelihoods(x),
                               mask=known).predicted_probs
        return _safe_log_mix(predicted, self.emission_probs)

    def _next_token_kernel(self, tokens, lengths):
        r"""Forward filter over the prefix (evidence masked from ``lengths`` on), then
        :math:`p(x_n = v \mid x_{<n}) = \sum_k p(z_n = k \mid x_{<n}) E_{kv}`."""

        def single(x, length):
            observed = jnp.arange(self.length) < length
            predicted = hmm_filter(self.log_initial, self.log_transition, self._log_likelihoods(x),
                                   mask=observed).predicted_probs
            return _safe_log_mix(predicted[length], self.emission_probs)

        return jnp.vectorize(single, signature="(l),()->(v)")(tokens, lengths)

    # -- protocol ------------------------------------------------------------
    def log_prob(self, value):
        r""":math:`\log p(x)` by the forward algorithm (:func:`~arprob.inference.hmm_log_likelihood`), ``(...)``."""
        value, outside = self._off_support(self._check_clean(value, "value"))
        log_p = _log_marginals(self, value, jnp.ones(self.length, bool))
        return jnp.where(outside, -jnp.inf, log_p)  # unchecked tokens outside the vocabulary: probability 0

    def marginal_log_prob(self, x, observed):
        r""":math:`\log p(x_S)`: the forward algorithm with the unobserved positions masked out."""
        x, observed = self._check_partial(x, observed)
        return _log_marginals(self, x, observed)

    def conditional_logits(self, x, observed):
        r""":math:`\log p(x_i = v \mid x_{S \setminus \{i\}})` for all :math:`i, v` at once, shape ``(..., L, V)``.

        One forward-backward pass: :math:`p(z_i \mid x_{S\setminus\{i\}}) \propto \hat\alpha^-_i \beta_i`
        mixed through the emission rows.  Uniform where the context has probability zero.
        """
        x, observed = self._check_partial(x, observed)
        return _conditionals(self, x, observed)

    def prefix_conditional_logits(self, x):
        r""":math:`\log p(x_t = v \mid x_{<t})`, shape ``(..., L, V)``: predicted states mixed through :math:`E`.

        One forward filter; positions holding the mask id :math:`V` carry no evidence, so row
        :math:`t` is :math:`\log p(x_t = v \mid x_j,\ j < t,\ x_j \ne V)`.  Uniform where that
        context has probability zero.
        """
        x, known = self._check_masked(x)
        return _prefix_conditionals(self, x, known)

    def sampling_tables(self):
        r"""``(states, emissions)`` :class:`~arprob._random.SamplingTable`\ s, computed once.

        ``states``: the rows of :math:`A` and then :math:`\pi` (row :math:`K`); ``emissions``: the
        rows of :math:`E`.  Quantized in float64 (:func:`~arprob._random.quantize`) with the bits
        that keep the :math:`2L` draws of one sequence within
        :data:`~arprob._random.TABLE_TOLERANCE` (1e-9) TV of the model's path law, hence of
        :meth:`law`.  Traced parameters: 31 bits (:func:`~arprob._random.sampling_table`).
        """
        cached = getattr(self, "_sampling_table_cache", None)
        if cached is not None:
            return cached
        if not is_concrete(self.transition_probs, self.initial_probs, self.emission_probs):
            rows = jnp.concatenate([self.transition_probs, self.initial_probs[None]], axis=0)
            return sampling_table(rows), sampling_table(self.emission_probs)
        with jax.ensure_compile_time_eval():  # constants even when first asked inside a trace
            rows = np.concatenate([np.asarray(self.transition_probs, np.float64),
                                   np.asarray(self.initial_probs, np.float64)[None]], axis=0)
            emissions = np.asarray(self.emission_probs, np.float64)
            bits = choose_bits(rows, emissions, draws=2 * self.length)
            self._sampling_table_cache = (sampling_table(rows, bits=bits), sampling_table(emissions, bits=bits))
        return self._sampling_table_cache

    def sample(self, key, sample_shape=()):
        r"""Ancestral draws of shape ``sample_shape + (L,)``, int32.

        The latent path and the emissions by inverse-CDF draws from the quantized rows
        (:meth:`sampling_tables`, within 1e-9 TV of :meth:`law` per sequence): one
        ``jax.random.bits`` call, then one ``lax.scan`` over time on the whole batch.
        """
        key, sample_shape = self._check_sample_args(key, sample_shape)
        shape = tuple(sample_shape)
        count = int(np.prod(shape)) if shape else 1
        states, emissions = self.sampling_tables()
        tokens = _sample_paths(key, states, emissions, length=self.length, num_samples=count)
        return tokens.reshape(shape + (self.length,))

    def _law_from_sequences(self, sequences):
        """Forward algorithm in numpy float64 over all sequences at once (independent of the kernels)."""
        initial = np.asarray(self.initial_probs, np.float64)
        transition = np.asarray(self.transition_probs, np.float64)
        emission = np.asarray(self.emission_probs, np.float64)
        alpha = initial[None, :] * emission[:, sequences[:, 0]].T
        for t in range(1, self.length):
            alpha = (alpha @ transition) * emission[:, sequences[:, t]].T
        return alpha.sum(axis=1)

    # -- GeLaTo constrained generation -------------------------------------
    def _constraint_setup(self, owner, dfa, prefix):
        if not is_concrete(self):
            raise ArprobTypeError(f"{owner} needs concrete parameters, not tracers")
        dfa = _check_dfa(owner, dfa, self.vocab_size)
        prefix = np.zeros(0, np.int32) if prefix is None else np.asarray(prefix)
        if prefix.ndim != 1 or prefix.shape[0] > self.length:
            raise ShapeError(f"{owner}: prefix has shape {prefix.shape}, expected (m,) with 0 <= m <= "
                             f"{self.length} (the first m tokens)")
        if prefix.size:
            check_tokens(owner, "prefix", prefix, self.vocab_size)
        prefix_length = prefix.shape[0]
        padded = np.zeros(self.length, np.int32)
        padded[:prefix_length] = prefix
        observed = np.arange(self.length) < prefix_length
        result = hmm_filter(self.log_initial, self.log_transition, self._log_likelihoods(jnp.asarray(padded)),
                            mask=jnp.asarray(observed))
        if prefix_length and not np.isfinite(float(result.log_likelihood)):
            raise ZeroProbabilityError(f"{owner}: the prefix {prefix.tolist()} has probability 0 under the HMM; "
                                       "conditioning on it is undefined")
        log_first = jnp.log(result.predicted_probs[min(prefix_length, self.length - 1)])
        state = dfa.start
        transitions = np.asarray(dfa.transitions)
        for token in prefix:
            state = int(transitions[state, token])
        log_b, log_d = _lookahead(self.log_transition, self.log_emission, dfa.transitions, dfa.accepting,
                                  length=self.length)
        log_probability = logsumexp(log_first + log_b[prefix_length, :, state])
        return dfa, padded, prefix_length, log_first, state, log_d, log_probability

    def constraint_log_probability(self, dfa: DFA, prefix=None):
        r""":math:`\log P(x \text{ accepted} \mid x_{<m} = \texttt{prefix})`; see :meth:`constraint_probability`."""
        return self._constraint_setup("HMM.constraint_log_probability", dfa, prefix)[-1]

    def constraint_probability(self, dfa: DFA, prefix=None):
        r"""Probability that the full sequence is accepted by ``dfa``, given its first tokens ``prefix``.

        .. math::

            P(\delta^*(q_0, x) \in F \mid x_{<m}) = \sum_k p(z_m = k \mid x_{<m})\, B_m(k, \delta^*(q_0, x_{<m})),

        by the backward DP over (HMM state :math:`\times` DFA state) of the module docstring
        (Zhang et al., 2023, GeLaTo), cost :math:`O(L (K^2 Q + K Q V))`.

        Parameters
        ----------
        dfa
            A :class:`DFA` over this model's vocabulary.
        prefix
            ``None`` or int tokens of shape ``(m,)``, ``m <= length``, the given start of the sequence.

        Raises
        ------
        ZeroProbabilityError
            If the prefix itself has probability zero.
        """
        return jnp.exp(self.constraint_log_probability(dfa, prefix))

    def sample_constrained(self, key, dfa: DFA, num_samples: int, prefix=None):
        r"""Exact draws from :math:`p(x \mid x_{<m} = \texttt{prefix},\ x \text{ accepted by } \texttt{dfa})`.

        Ancestral sampling of :math:`(z_t, x_t)` with the lookahead :math:`D_{t+1}` (module docstring);
        returns int32 tokens ``(num_samples, L)`` whose first ``m`` columns are the prefix.

        Raises
        ------
        ZeroProbabilityError
            If the prefix, or acceptance given the prefix, has probability zero.
        """
        owner = "HMM.sample_constrained"
        num_samples = check_positive_int(owner, "num_samples", num_samples)
        dfa, padded, prefix_length, log_first, _, log_d, log_probability = self._constraint_setup(
            owner, dfa, prefix)
        if not float(log_probability) > -np.inf:
            raise ZeroProbabilityError(f"{owner}: the constraint has probability 0 given the prefix "
                                       f"(log probability {float(log_probability)}); nothing to sample")
        return _sample_constrained_paths(key, self.log_transition, self.log_emission, dfa.transitions, log_d,
                                         log_first, dfa.start, jnp.asarray(padded), prefix_length,
                                         length=self.length, num_samples=num_samples)

