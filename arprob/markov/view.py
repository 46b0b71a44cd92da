r"""A finite-context next-token model as a Markov chain on its context windows.

Zekri, Odonnat, Benechehab, Bleistein, Boullé, Redko (2024), *Large Language Models as Markov
Chains*.  A model with :math:`T` tokens and context size :math:`K` generates by appending a token to
its state and keeping the last :math:`K` tokens.  Its states are all sequences of length
:math:`1, \dots, K`,

.. math::

    |\mathcal V_K^*| = \sum_{k=1}^K T^k = \frac{T (T^K - 1)}{T - 1},

and from :math:`v_i` the chain moves to :math:`v_j` with the model's probability of :math:`v_j`'s last
token when :math:`v_j` is :math:`v_i` with one token appended (and, for a length-:math:`K` state, its
first token dropped), else 0.  Each row has :math:`T` non-zero entries: density
:math:`T / |\mathcal V_K^*| = (T - 1)/(T^K - 1)`.  States shorter than :math:`K` are transient (the
length only grows until it is :math:`K`), so every stationary law lives on the :math:`T^K` full
windows; :class:`MarkovView` computes on those with the matrix-free operator of
:mod:`arprob.markov.operators` and builds the short states only where a prompt or
:meth:`MarkovView.transition` asks for them.  Theorem: proofs/10-markov-view.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from arprob._validation import check_choice, check_int, check_memory, check_real, check_tokens, check_work
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError
from arprob.markov import mixing, operators
from arprob.markov.models import (
    TableModel,
    as_next_token_model,
    check_decoding,
    context_probs,
    window_table,
    window_tokens,
)
from arprob.markov.propagation import propagate
from arprob.markov.structure import ChainStructure, chain_structure

__all__ = ["MarkovView", "MixingTime", "RecurrentLaw", "StationaryLaw", "ZekriBound"]

#: Closed classes up to this size get their stationary law by GTH elimination (:func:`gth_stationary`,
#: float64, small relative error in every entry even for slowly mixing chains); larger ones by power
#: iteration on the matrix-free operator, falling back to the elimination for classes up to
#: ``DENSE_FALLBACK`` windows that have not converged after ``FALLBACK_ITERATIONS`` steps (slowly
#: mixing chains: low temperature).
DIRECT_SOLVE = 256
DENSE_FALLBACK = 1024
FALLBACK_ITERATIONS = 20_000

#: Largest number of steps :meth:`MarkovView.mixing_time` looks at before answering ``None``.
MAX_MIXING_STEPS = 2**40

#: Stepped mixing times (large chains) stop after ``STEPPED_WORK / (starts x T**(K+1))`` steps (about
#: an hour on a laptop core) and answer ``None``: such a chain does not mix within reach of stepping.
STEPPED_WORK = 1e12


class RecurrentLaw(NamedTuple):
    """The stationary law of one closed class: ``law[i]`` is the mass of window ``states[i]``."""

    states: np.ndarray
    period: int
    law: np.ndarray


class StationaryLaw(NamedTuple):
    """What :meth:`MarkovView.stationary` finds.

    Attributes
    ----------
    law
        ``(T**K,)`` over full windows when there is exactly one closed class (the unique stationary
        law; every start converges to it when the class is aperiodic), else ``None``.
    classes
        One :class:`RecurrentLaw` per closed class; every stationary law is a mixture of these.
    residual
        :math:`\\max_c \\lVert \\pi_c Q - \\pi_c \\rVert_1` over the classes, measured after solving.
    iterations
        Power-iteration steps used (0 for direct solves).
    error
        Estimated :math:`\\ell_1` distance to the exact law: 0 after elimination (rounding only), the
        power iteration's estimate (change over one minus the observed rate) otherwise.  Above ``tol``
        means the iteration ran out of ``max_iterations`` first: ask for more, or a coarser ``tol``.
    """

    law: np.ndarray | None
    classes: tuple[RecurrentLaw, ...]
    residual: float
    iterations: int
    error: float


class MixingTime(NamedTuple):
    """:math:`t_{mix}(\\varepsilon)` and how it was found.

    ``steps`` is ``None`` when the distance stays above ``eps`` (no unique aperiodic class, or past
    :data:`MAX_MIXING_STEPS`); ``exhaustive`` says whether every window was a start (exact) or only
    the documented set (a lower bound on the worst case).
    """

    steps: int | None
    eps: float
    worst_start: tuple[int, ...]
    num_starts: int
    exhaustive: bool


class ZekriBound(NamedTuple):
    """Zekri et al.'s Prop. 3.4 next to the truth, at ``steps`` steps.

    ``bound`` :math:`= (1 - 2\\varepsilon)^{\\lfloor n/K \\rfloor - 1}` (1 when the exponent is < 1),
    ``exact`` :math:`= \\max_{i, j} |(Q^n)_{ij} - \\pi_j|` over the starts used (all windows when
    ``exhaustive``), ``log10_looseness`` :math:`= \\log_{10}(\\text{bound}/\\text{exact})`.
    """

    steps: int
    log10_epsilon: float
    bound: float
    log10_bound: float
    exact: float
    log10_looseness: float
    exhaustive: bool


class MarkovView:
    r"""A next-token model with context size :math:`K` as a Markov chain on its context windows.

    Parameters
    ----------
    model
        An :class:`~arprob.NGram`, a :class:`~arprob.MarkovChain` (:math:`K = 1`), an object with the
        :class:`~arprob.markov.models.NextTokenModel` protocol (a trained network, a count model), or
        a callable ``logits(windows) -> (batch, T)`` with ``vocab_size`` and ``context_size`` given
        (:meth:`from_logits`).
    temperature, top_k, top_p
        The decoding rule (:func:`~arprob.markov.models.decode_probs`): temperature 0 is greedy.
    dtype
        Of the ``(T**K, T)`` next-token table: float64 (default, exact to rounding) or float32 (half the
        memory for the largest chains; laws then hold about 7 digits).

    Notes
    -----
    The table is built once, lazily, from the model under the decoding rule.  Everything else is
    computed from it without a dense matrix: the step :math:`\mu \mapsto \mu Q` is a reshape and a
    sum over the :math:`T` predecessors of each window (:mod:`arprob.markov.operators`).
    """

    def __init__(self, model, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, *,
                 vocab_size: int | None = None, context_size: int | None = None, dtype=np.float64,
                 _owner: str = "MarkovView"):
        owner = self._owner = _owner
        self.temperature, self.top_k, self.top_p = check_decoding(owner, temperature, top_k, top_p,
                                                                  vocab_size=None)
        self.model = as_next_token_model(model, vocab_size=vocab_size, context_size=context_size, owner=owner)
        self.vocab_size = int(self.model.vocab_size)
        self.context_size = int(self.model.context_size)
        if self.top_k is not None and self.top_k >= self.vocab_size:
            self.top_k = None  # keeps every token: no truncation
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ArprobTypeError(f"{owner}: dtype must be np.float64 or np.float32, got {dtype!r}") from None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ArprobTypeError(f"{owner}: dtype is {dtype}, expected np.float64 or np.float32")
        self.dtype = dtype
        self._table = None
        self._stationary = None
        self._structure = None

    @classmethod
    def from_logits(cls, logits, vocab_size: int, context_size: int, **kwargs) -> MarkovView:
        """The view of a plain callable ``logits(windows (batch, K)) -> (batch, T)`` (padding id ``T``)."""
        return cls(logits, vocab_size=vocab_size, context_size=context_size, _owner="MarkovView.from_logits",
                   **kwargs)

    @classmethod
    def from_table(cls, probs, context_size: int | None = None, **kwargs) -> MarkovView:
        """The view of a chain given by its table on full windows (:class:`~arprob.markov.models.TableModel`)."""
        owner = "MarkovView.from_table"
        return cls(TableModel(probs, context_size, _owner=owner), _owner=owner, **kwargs)

    # sizes ------------------------------------------------------------------------------------
    @property
    def num_windows(self) -> int:
        """:math:`T^K`: the full windows, where every stationary law lives."""
        return self.vocab_size**self.context_size

    @property
    def num_states(self) -> int:
        """:math:`|\\mathcal V_K^*| = T (T^K - 1)/(T - 1)`: all states, short ones included."""
        T, K = self.vocab_size, self.context_size
        return T * (T**K - 1) // (T - 1)

    @property
    def density(self) -> float:
        """Fraction of non-zero transition entries, :math:`(T - 1)/(T^K - 1)`."""
        return (self.vocab_size - 1) / (self.num_windows - 1)

    @property
    def probs(self) -> np.ndarray:
        """``(T**K, T)``: next-token probabilities of every full window under the decoding rule."""
        if self._table is None:
            self._table = window_table(self._owner, self.model, self.temperature, self.top_k, self.top_p,
                                       self.dtype)
        return self._table

    def __repr__(self):
        rule = f"temperature={self.temperature}"
        rule += f", top_k={self.top_k}" if self.top_k is not None else ""
        rule += f", top_p={self.top_p}" if self.top_p is not None else ""
        return (f"MarkovView(T={self.vocab_size}, K={self.context_size}, {rule}; "
                f"{self.num_windows:,} windows, {self.num_states:,} states)")

    # states -----------------------------------------------------------------------------------
    def window_index(self, tokens) -> int:
        """Index of the full window ``tokens`` (``K`` ids, oldest first)."""
        tokens = self._check_prompt("MarkovView.window_index", tokens, "tokens")
        if len(tokens) != self.context_size:
            raise ShapeError(f"MarkovView.window_index: tokens has {len(tokens)} ids, expected K = "
                             f"{self.context_size}")
        index = 0
        for token in tokens:
            index = index * self.vocab_size + int(token)
        return index

    def window(self, index: int) -> tuple[int, ...]:
        """Tokens of window ``index`` (oldest first)."""
        index = check_int("MarkovView.window", "index", index, minimum=0, maximum=self.num_windows - 1)
        return tuple(int(t) for t in window_tokens([index], self.vocab_size, self.context_size)[0])

    def state_index(self, tokens) -> int:
        """Index of a state of length ``1..K`` in the order of :meth:`transition` (by length, then base ``T``)."""
        tokens = self._check_prompt("MarkovView.state_index", tokens, "tokens")
        if not 1 <= len(tokens) <= self.context_size:
            raise ShapeError(f"MarkovView.state_index: a state has 1 to K = {self.context_size} tokens, "
                             f"got {len(tokens)}")
        T = self.vocab_size
        offset = (T ** len(tokens) - T) // (T - 1)
        index = 0
        for token in tokens:
            index = index * T + int(token)
        return offset + index

    def _check_prompt(self, owner: str, prompt, name: str = "start") -> np.ndarray:
        if isinstance(prompt, (str, bytes)):
            raise ArprobTypeError(f"{owner}: {name} must be a sequence of token ids in [0, {self.vocab_size}), "
                                  f"got the string {prompt!r} (encode it with the tokenizer first)")
        array = np.asarray(prompt)
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ArprobTypeError(f"{owner}: {name} must be a 1-d sequence of integer token ids, got shape "
                                  f"{array.shape} and dtype {array.dtype}")
        if array.min() < 0 or array.max() >= self.vocab_size:
            raise InvalidTokenError(f"{owner}: {name} holds ids in [{array.min()}, {array.max()}], expected ids "
                                    f"in [0, {self.vocab_size})")
        return array.astype(np.int64)

    def _start_law(self, owner: str, start):
        """``(prompt, None)`` for a token prompt, ``(None, law over windows)`` for a float law."""
        array = np.asarray(start) if not isinstance(start, (str, bytes)) else None
        if array is not None and array.size and np.issubdtype(array.dtype, np.floating):
            if array.shape != (self.num_windows,):
                raise ShapeError(f"{owner}: a start law has shape {array.shape}, expected ({self.num_windows},) "
                                 "(a law over the T**K full windows), or pass token ids as a prompt")
            if not np.all(np.isfinite(array)) or array.min() < 0 or abs(array.sum() - 1.0) > 1e-9:
                raise InvalidArgumentError(f"{owner}: the start law must be finite, >= 0 and sum to 1; it sums to "
                                           f"{array.sum()!r} with minimum {array.min()!r}")
            return None, array.astype(np.float64)
        return self._check_prompt(owner, start), None

    def _device_table(self):
        """The table as a JAX array, converted once (a CPU copy of up to gigabytes)."""
        if getattr(self, "_table_on_device", None) is None:
            self._table_on_device = jnp.asarray(self.probs)
        return self._table_on_device

    # the operator -----------------------------------------------------------------------------
    def apply(self, law):
        r"""One step :math:`\mu \mapsto \mu Q` on full windows (jitted JAX; ``law (..., T**K)``)."""
        return _apply_jit(jnp.asarray(law), self._device_table())

    def operator(self) -> scipy.sparse.linalg.LinearOperator:
        r""":math:`Q` on the full windows as a matrix-free ``LinearOperator``.

        ``matvec`` is :math:`(Qf)(w) = \sum_v P(v \mid w) f(w')`, ``rmatvec`` the law step
        :math:`\mu \mapsto \mu Q` (``Q.T @ mu``); both cost :math:`O(T^{K+1})` and no index arrays.
        """
        table = self._device_table()

        def matvec(values):
            return np.asarray(operators.apply_adjoint(jnp.asarray(np.asarray(values).reshape(-1)), table))

        def rmatvec(values):
            return np.asarray(operators.apply(jnp.asarray(np.asarray(values).reshape(-1)), table))

        n = self.num_windows
        return scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)

    def transition(self, states: str = "all") -> scipy.sparse.csr_matrix:
        """The transition matrix as scipy CSR, ``T`` stored entries per row.

        ``states="all"``: the paper's :math:`|\\mathcal V_K^*|` states ordered by length, then in base
        ``T`` (:meth:`state_index`); ``states="windows"``: the :math:`T^K` full windows only.
        """
        owner = "MarkovView.transition"
        states = check_choice(owner, "states", states, ("all", "windows"))
        check_memory(owner, f"the CSR matrix of {self.num_states:,} states x {self.vocab_size} entries",
                     (self.num_states, self.vocab_size, 3), itemsize=8,
                     fix="use MarkovView.operator() (matrix-free) or MarkovView.apply for chains this large")
        windows = operators.window_csr(self.probs, positive_only=False)
        if states == "windows":
            return windows
        T, K = self.vocab_size, self.context_size
        blocks_rows, blocks_cols, blocks_vals = [], [], []
        for length in range(1, K):
            offset = (T**length - T) // (T - 1)
            contexts = window_tokens(np.arange(T**length), T, length)
            probs = context_probs(owner, self.model, contexts, self.temperature, self.top_k, self.top_p)
            rows = offset + np.repeat(np.arange(T**length), T)
            cols = (T ** (length + 1) - T) // (T - 1) + (np.arange(T**length)[:, None] * T + np.arange(T)).reshape(-1)
            blocks_rows.append(rows)
            blocks_cols.append(cols)
            blocks_vals.append(probs.reshape(-1))
        full_offset = (T**K - T) // (T - 1)
        coo = windows.tocoo()
        blocks_rows.append(full_offset + coo.row)
        blocks_cols.append(full_offset + coo.col)
        blocks_vals.append(coo.data)
        return scipy.sparse.csr_matrix(
            (np.concatenate(blocks_vals), (np.concatenate(blocks_rows), np.concatenate(blocks_cols))),
            shape=(self.num_states, self.num_states))

    # structure and stationary laws ------------------------------------------------------------
    def structure(self) -> ChainStructure:
        """Communicating classes, closed ones with their periods (:mod:`arprob.markov.structure`)."""
        if self._structure is None:
            self._structure = chain_structure(self.probs)
        return self._structure

    def to_networkx(self, states: str = "all"):
        """The transition graph as a ``networkx.DiGraph`` (nodes labelled by token tuples; ``weight``)."""
        import networkx as nx

        owner = "MarkovView.to_networkx"
        states = check_choice(owner, "states", states, ("all", "windows"))
        check_int(owner, "the number of states", self.num_states if states == "all" else self.num_windows,
                  maximum=200_000, fix="networkx graphs are for chains small enough to draw; use structure()")
        matrix = self.transition(states).tocoo()
        if states == "windows":
            labels = [tuple(int(t) for t in row) for row in window_tokens(np.arange(self.num_windows),
                                                                             self.vocab_size, self.context_size)]
        else:
            labels = []
            for length in range(1, self.context_size + 1):
                labels += [tuple(int(t) for t in row) for row in window_tokens(np.arange(self.vocab_size**length),
                                                                                 self.vocab_size, length)]
        graph = nx.DiGraph()
        graph.add_nodes_from(labels)
        for row, col, value in zip(matrix.row, matrix.col, matrix.data):
            if value > 0:
                graph.add_edge(labels[row], labels[col], weight=float(value))
        return graph

    def stationary(self, *, tol: float = 1e-13, max_iterations: int = 1_000_000) -> StationaryLaw:
        r"""Stationary law(s) of the window chain.

        With one closed class the stationary law :math:`\pi` is unique (``law``); it is the limit of
        every start when the class is aperiodic (always so at temperature :math:`> 0` without
        truncation).  Otherwise each closed class has its own law and every stationary law is a
        mixture of them.  Small classes (:data:`DIRECT_SOLVE`) are solved densely; larger ones by
        power iteration on the matrix-free operator (the lazy chain :math:`(I + Q)/2` for a periodic
        class), stopped when the estimated :math:`\ell_1` distance to the limit, the one-step change
        over one minus the observed contraction rate, is :math:`\le` ``tol`` (at least 32 machine
        epsilons of the table's JAX dtype: float32 unless ``jax_enable_x64`` is on;
        :func:`~arprob.markov.operators.power_iteration`).  Classes of at most :data:`DENSE_FALLBACK`
        windows that have not met it after :data:`FALLBACK_ITERATIONS` steps are solved densely.
        ``residual`` :math:`\lVert \pi Q - \pi \rVert_1` is then measured in NumPy float64.  A small
        residual alone does not make a law accurate on a slowly mixing chain: the error can be as large
        as the residual over the spectral gap.
        """
        owner = "MarkovView.stationary"
        tol = check_real(owner, "tol", tol, low=0.0, low_open=True, fix="pass a small positive tolerance")
        max_iterations = check_int(owner, "max_iterations", max_iterations, minimum=1)
        if self._stationary is not None and self._stationary[0] == tol:
            return self._stationary[1]
        structure = self.structure()
        table = self.probs
        table_j = self._device_table()
        tol = max(tol, 32 * float(jnp.finfo(table_j.dtype).eps))  # float32 unless jax_enable_x64 is on
        classes, residuals, iterations, errors = [], [], 0, [0.0]
        for chain_class in structure.recurrent:
            states = chain_class.states
            everything = len(states) == self.num_windows  # the common case: no index arrays at all
            used = 0
            if len(states) <= DIRECT_SOLVE:
                law_on_class = _solve_dense(table, states)
            else:
                if everything:
                    start = jnp.full(self.num_windows, 1.0 / self.num_windows, table_j.dtype)
                else:
                    start = np.zeros(self.num_windows, dtype=table_j.dtype)
                    start[states] = 1.0 / len(states)
                    start = jnp.asarray(start)
                budget = max_iterations if len(states) > DENSE_FALLBACK else min(max_iterations, FALLBACK_ITERATIONS)
                law, error, used = operators.power_iteration(table_j, start, tol, budget,
                                                             lazy=chain_class.period > 1)
                law = np.asarray(law, dtype=np.float64)
                law_on_class = law if everything else law[states]
                law_on_class = law_on_class / law_on_class.sum()
                if not float(error) <= tol and len(states) <= DENSE_FALLBACK:  # mixes too slowly: solve instead
                    law_on_class = _solve_dense(table, states)
                else:
                    errors.append(float(error))
            if everything:
                full = law_on_class
            else:
                full = np.zeros(self.num_windows)
                full[states] = law_on_class
            residuals.append(float(np.abs(_apply_numpy(full, table) - full).sum()))
            iterations += int(used)
            classes.append(RecurrentLaw(states, chain_class.period, law_on_class))
        law = None
        if len(classes) == 1:
            law = full  # the only class's law placed on all windows, built in the loop above
        result = StationaryLaw(law, tuple(classes), max(residuals), iterations, max(errors))
        self._stationary = (tol, result)
        return result

    def _unique_law(self, owner: str) -> np.ndarray:
        result = self.stationary()
        if result.law is None:
            raise InvalidArgumentError(
                f"{owner}: the chain has {len(result.classes)} closed classes, so no unique stationary law "
                "(truncation or greedy decoding made absorbing loops); see MarkovView.structure() and "
                "MarkovView.stationary().classes")
        return result.law

    def token_marginal(self) -> np.ndarray:
        """``(T,)``: the stationary law of the emitted (last) token, :math:`\\sum_r \\pi(r, v)`."""
        law = self._unique_law("MarkovView.token_marginal")
        return law.reshape(-1, self.vocab_size).sum(axis=0)

    # laws after n steps -----------------------------------------------------------------------
    def n_step_law(self, steps: int, start=()) -> np.ndarray:
        r"""Law of the state after ``steps`` generated tokens.

        ``start`` is a prompt (token ids; ``()`` is the beginning of text, the model's all-padding
        context; a prompt longer than :math:`K` keeps its last :math:`K`) or a float law over the
        :math:`T^K` windows.  The answer is over the states of length :math:`\min(K, k + n)` in base
        :math:`T` order (the :math:`T^K` windows once the state is full).  From the empty prompt this
        is the law of the last :math:`\min(K, n)` tokens of an ancestral draw of :math:`n` tokens.
        """
        owner = "MarkovView.n_step_law"
        steps = check_int(owner, "steps", steps, minimum=0)
        prompt, law = self._start_law(owner, start)
        return self._propagate(owner, prompt, law, steps)

    def _propagate(self, owner, prompt, law, steps):
        if law is not None:
            return _step_law(law, self.probs, steps, owner)
        phase = min(steps, max(self.context_size - len(prompt), 0))  # steps while the state is short
        full, _, _, _ = propagate(owner, self.model, self.probs, prompt, phase,
                               (self.temperature, self.top_k, self.top_p))
        return _step_law(full[:, 0], self.probs, steps - phase, owner) if steps > phase else full[:, 0]

    def tv_to_stationary(self, steps, start=()) -> np.ndarray:
        r""":math:`\lVert \mu_n - \pi \rVert_{TV}` for each count in ``steps``: the convergence curve.

        States shorter than :math:`K` have stationary mass 0, so the distance is 1 while the state is
        still short (the first :math:`K - k` steps from a prompt of :math:`k < K` tokens).
        """
        owner = "MarkovView.tv_to_stationary"
        counts = np.asarray(steps)
        if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
            raise InvalidArgumentError(f"{owner}: steps must be a non-empty 1-d array of counts >= 0, got {steps!r}")
        stationary = self._unique_law(owner)
        prompt, law = self._start_law(owner, start)
        phase = 0 if law is not None else max(self.context_size - len(prompt), 0)
        distances = np.ones(counts.shape)
        current, done = (law, 0) if law is not None else (None, phase)
        for index in np.argsort(counts, kind="stable"):
            count = int(counts[index])
            if count < phase:
                continue
            if current is None:
                current = self._propagate(owner, prompt, None, phase)
            current = _step_law(current, self.probs, count - done, owner)
            done = count
            distances[index] = 0.5 * float(np.abs(current - stationary).sum())
        return distances

    # mixing -----------------------------------------------------------------------------------
    def second_eigenvalue_modulus(self) -> float:
        r""":math:`|\lambda_2|` of :math:`Q` on the windows (1 when there are several closed classes)."""
        return mixing.second_eigenvalue_modulus(self.probs)

    def spectral_gap(self) -> float:
        r""":math:`1 - |\lambda_2|`; :math:`d(n)` decays like :math:`|\lambda_2|^n`."""
        return 1.0 - self.second_eigenvalue_modulus()

    def default_starts(self, num_spread: int = 16) -> np.ndarray:
        """The documented start set of :meth:`mixing_time` and :meth:`zekri_bound` on large chains.

        The :math:`T` constant windows :math:`(a, \\dots, a)` (where repetition loops live), the
        windows of largest and of smallest stationary mass, and ``num_spread`` windows evenly spaced in
        index order (so every leading token is represented).  Deterministic: no key.
        """
        owner = "MarkovView.default_starts"
        num_spread = check_int(owner, "num_spread", num_spread, minimum=0, maximum=4096,
                               fix="each start costs one law vector of T**K floats")
        stationary = self._unique_law(owner)
        constant = [sum(a * self.vocab_size**i for i in range(self.context_size)) for a in range(self.vocab_size)]
        spread = (np.arange(num_spread, dtype=np.int64) * self.num_windows) // max(num_spread, 1)
        starts = np.concatenate([constant, [int(np.argmax(stationary)), int(np.argmin(stationary))], spread])
        return np.unique(starts.astype(np.int64))

    def mixing_time(self, eps: float = 0.25, *, starts=None, max_steps: int = MAX_MIXING_STEPS) -> MixingTime:
        r""":math:`t_{mix}(\varepsilon) = \min\{n : \max_w \lVert Q^n(w, \cdot) - \pi \rVert_{TV} \le \varepsilon\}`.

        Exact over every window when :math:`T^K \le` :data:`~arprob.markov.mixing.DENSE_WINDOWS`
        (dense powers, doubling then bisection, :math:`O(T^{3K} \log t)`); otherwise over ``starts``
        (window indices; default :meth:`default_starts`), stepped together on the matrix-free
        operator: then a lower bound on the worst case over all windows.  ``steps`` is ``None`` when
        the distance is still above ``eps`` after ``max_steps`` (and, when stepping, after
        :data:`STEPPED_WORK` elementary operations).
        """
        owner = "MarkovView.mixing_time"
        eps = check_real(owner, "eps", eps, low=0.0, high=1.0, low_open=True, high_open=True,
                         fix="eps is a total-variation level in (0, 1); 1/4 is the usual choice")
        max_steps = check_int(owner, "max_steps", max_steps, minimum=1)
        structure = self.structure()
        if not structure.ergodic:
            return MixingTime(None, eps, (), 0, starts is None)
        stationary = self._unique_law(owner)
        if starts is None and self.num_windows <= mixing.DENSE_WINDOWS:
            steps, worst = mixing.mixing_time_dense(mixing.dense_transition(self.probs), stationary, eps, max_steps)
            return MixingTime(steps, eps, self.window(worst), self.num_windows, True)
        starts = self.default_starts() if starts is None else self._check_starts(owner, starts)
        affordable = int(STEPPED_WORK // (len(starts) * self.probs.size))
        steps, worst = mixing.mixing_time_stepped(self.probs, stationary, starts, eps, min(max_steps, affordable))
        return MixingTime(steps, eps, self.window(worst), len(starts), len(np.unique(starts)) == self.num_windows)

    def _check_starts(self, owner: str, starts) -> np.ndarray:
        """Window indices: a non-empty 1-d integer array in ``[0, T**K)``."""
        if isinstance(starts, (str, bytes)):
            raise ArprobTypeError(f"{owner}: starts must be window indices (ints), got the string {starts!r}")
        try:
            array = np.asarray(starts)
        except ValueError as error:
            raise ArprobTypeError(f"{owner}: starts must be a 1-d array of window indices, got {starts!r} "
                                  f"({error})") from None
        if array.ndim != 1 or array.size == 0:
            raise ShapeError(f"{owner}: starts has shape {array.shape}, expected a non-empty 1-d array of window "
                             "indices (MarkovView.window_index turns tokens into one)")
        check_tokens(owner, "starts", array, self.num_windows)
        return array.astype(np.int64)

    def epsilon(self) -> float:
        r""":math:`\log \varepsilon`, the log of the smallest entry of :math:`Q^K` on the recurrent class."""
        if getattr(self, "_log_epsilon", None) is None:
            self._log_epsilon = self._compute_epsilon()
        return self._log_epsilon

    def _compute_epsilon(self) -> float:
        recurrent = self.structure().recurrent
        if len(recurrent) != 1:
            return -math.inf
        mask = np.zeros(self.num_windows, dtype=bool)
        mask[recurrent[0].states] = True
        with np.errstate(divide="ignore"):
            log_table = np.log(np.asarray(self.probs, dtype=np.float64))
        values = np.asarray(operators.min_log_k_step(jnp.asarray(log_table), jnp.asarray(mask),
                                                     steps=self.context_size))
        return float(np.min(values[mask]))

    def zekri_bound(self, steps: int, *, starts=None) -> ZekriBound:
        r"""Prop. 3.4 of Zekri et al. against the exact :math:`\max_{i,j} |(Q^n)_{ij} - \pi_j|`.

        The exact side runs over every window when :math:`T^K \le`
        :data:`~arprob.markov.mixing.DENSE_WINDOWS`, as :math:`\max |(Q - \mathbf 1 \pi)^n|` (equal to
        :math:`Q^n - \mathbf 1\pi`, but computed without cancellation, so it stays accurate far below
        float64 rounding); else over ``starts`` (default :meth:`default_starts`) by stepping, where it
        bottoms out near :math:`10^{-16}`.
        """
        owner = "MarkovView.zekri_bound"
        steps = check_int(owner, "steps", steps, minimum=0)
        stationary = self._unique_law(owner)
        log_epsilon = self.epsilon()
        log_bound = mixing.zekri_log_bound(log_epsilon, steps, self.context_size)
        exhaustive = starts is None and self.num_windows <= mixing.DENSE_WINDOWS
        if exhaustive:
            # (Q - 1 pi)^n = Q^n - 1 pi, without subtracting two nearly equal numbers at the end: the
            # exact side stays accurate far below float64 rounding of pi (1e-56 and less)
            deviation = mixing.dense_transition(np.asarray(self.probs, np.float64)) - stationary[None, :]
            exact = float(np.max(np.abs(np.linalg.matrix_power(deviation, steps))))
        else:
            starts = self.default_starts() if starts is None else self._check_starts(owner, starts)
            laws = np.zeros((len(starts), self.num_windows))
            laws[np.arange(len(starts)), starts] = 1.0
            laws = _step_law(laws, self.probs, steps, owner)
            exact = float(np.max(np.abs(laws - stationary[None, :])))
        log10_bound = log_bound / math.log(10)
        log10_exact = math.log10(exact) if exact > 0 else -math.inf
        return ZekriBound(steps, log_epsilon / math.log(10), math.exp(log_bound), log10_bound, exact,
                          log10_bound - log10_exact, exhaustive)

    # constraints ------------------------------------------------------------------------------
    def constraint_probability(self, dfa, steps: int, prompt=(), *, mode: str = "within") -> float:
        r"""Probability that generation after ``prompt`` satisfies the constraint ``dfa``.

        The :class:`~arprob.DFA` reads the prompt, then the generated tokens.  ``mode="within"``: it
        reaches an accepting state at some point within ``steps`` generated tokens (1 if the prompt
        already does); ``mode="end"``: its state after exactly ``steps`` tokens is accepting.  Exact, by
        the (window :math:`\times` DFA state) programme of :mod:`arprob.markov.propagation`.

        ``steps`` is a count (the answer is a float) or a 1-d array of counts (the answer is an array
        of the same shape, every count found in one pass up to the largest).
        """
        from arprob.distributions.hmm import _check_dfa

        owner = "MarkovView.constraint_probability"
        dfa = _check_dfa(owner, dfa, self.vocab_size)
        scalar = np.ndim(steps) == 0
        if scalar:
            counts = np.array([check_int(owner, "steps", steps, minimum=0)])
        else:
            counts = np.asarray(steps)
            if counts.ndim != 1 or counts.size == 0 or not np.issubdtype(counts.dtype, np.integer) \
                    or counts.min() < 0:
                raise InvalidArgumentError(f"{owner}: steps must be a count >= 0 or a non-empty 1-d array of "
                                           f"counts >= 0, got {steps!r}")
        mode = check_choice(owner, "mode", mode, ("within", "end"))
        prompt = self._check_prompt(owner, prompt, "prompt")
        num_dfa = int(np.shape(dfa.transitions)[0])
        check_memory(owner, f"the (window x DFA state) law of {self.num_windows:,} x {num_dfa} entries",
                     (self.num_windows, num_dfa, 3), itemsize=8, fix="use a smaller DFA or model")
        _, _, _, records = propagate(owner, self.model, self.probs, prompt, int(counts.max()),
                                     (self.temperature, self.top_k, self.top_p), dfa=dfa, mode=mode,
                                     record=tuple(int(c) for c in counts))
        answers = np.array([records[int(count)] for count in counts])
        return float(answers[0]) if scalar else answers


def _apply_numpy(law: np.ndarray, table: np.ndarray) -> np.ndarray:
    """:func:`arprob.markov.operators.apply` in NumPy float64 (for residuals that do not trust the fast path)."""
    num_windows, vocab_size = table.shape
    rest = num_windows // vocab_size
    grouped = law.reshape(vocab_size, rest)
    rows = np.asarray(table).reshape(vocab_size, rest, vocab_size)
    out = np.zeros((rest, vocab_size))
    for a in range(vocab_size):
        out += grouped[a][:, None] * rows[a].astype(np.float64, copy=False)
    return out.reshape(num_windows)


@jax.jit
def _apply_jit(law, table):
    return operators.apply(law, table)


def _step_law(law, table, steps: int, owner: str = "MarkovView") -> np.ndarray:
    """``law Q^steps`` (``law (..., T**K)``): dense squaring for small chains and many steps, else stepping."""
    if steps == 0:
        return np.asarray(law, dtype=np.float64)
    num_windows = table.shape[0]
    small = num_windows <= mixing.DENSE_WINDOWS
    if not small:
        rows = int(np.prod(np.shape(law)[:-1])) if np.ndim(law) > 1 else 1
        check_work(owner, f"{steps:,} steps of {rows} law(s) over {num_windows:,} windows",
                   float(steps) * rows * table.size, fix="ask for fewer steps; past the mixing time the law is "
                   "the stationary one to within tv_to_stationary")
    if small and steps > num_windows:
        power = mixing.stochastic_power(mixing.dense_transition(np.asarray(table, np.float64)), steps)
        return np.asarray(law, dtype=np.float64) @ power
    return np.asarray(operators.step_many(jnp.asarray(law), jnp.asarray(table), steps), dtype=np.float64)


def _solve_dense(table: np.ndarray, states: np.ndarray) -> np.ndarray:
    r"""Stationary law of the closed class ``states`` (sorted) by :func:`gth_stationary`.

    Only the class's own rows are built, so a small cycle of a huge greedy chain stays cheap.
    """
    num_windows, vocab_size = table.shape
    size = len(states)
    successors = (states % (num_windows // vocab_size))[:, None] * vocab_size + np.arange(vocab_size)[None, :]
    local = np.searchsorted(states, successors)
    inside = (local < size) & (states[np.minimum(local, size - 1)] == successors)
    matrix = np.zeros((size, size))
    rows = np.repeat(np.arange(size)[:, None], vocab_size, axis=1)
    np.add.at(matrix, (rows[inside], local[inside]), np.asarray(table, np.float64)[states][inside])
    return gth_stationary(matrix)


def gth_stationary(matrix: np.ndarray) -> np.ndarray:
    r"""Stationary law of an irreducible stochastic matrix by Grassmann-Taksar-Heyman elimination.

    State elimination with the pivot taken as the sum of the off-diagonal row (never :math:`1 - Q_{kk}`),
    so no subtraction of nearly equal numbers occurs and every entry of :math:`\pi` has small relative
    error even when the chain mixes extremely slowly (a plain linear solve of :math:`\pi(Q - I) = 0`
    loses digits in proportion to the condition number, about the inverse spectral gap).
    :math:`O(n^3)`, :math:`n^3/3` multiply-adds.
    """
    work = np.array(matrix, dtype=np.float64)
    size = work.shape[0]
    for k in range(size - 1, 0, -1):
        pivot = work[k, :k].sum()
        work[:k, k] /= pivot
        work[:k, :k] += np.outer(work[:k, k], work[k, :k])
    law = np.zeros(size)
    law[0] = 1.0
    for k in range(1, size):
        law[k] = law[:k] @ work[:k, k]
    return law / law.sum()
