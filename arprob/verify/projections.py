r"""What :func:`~arprob.verify.check` counts: the tests, their cells and their exact targets.

A *test* looks at every sample through one statistic with finitely many
cells, and compares the cell counts with their expectation under the target:

* ``cells``: the tokens at a tuple of positions (``None``: the whole sequence),
  cell = base-:math:`V` index of those tokens; target = the exact projected law.
* ``pit`` (Rosenblatt, randomized probability integral transform): for every
  position, with the target's left-to-right conditional :math:`p_t = p(\cdot\mid x_{<t})`
  and a token ordering :math:`\prec_t`,

  .. math::

      u_t = \sum_{v \prec_t x_t} p_t(v) + U_t\, p_t(x_t), \qquad U_t \sim \mathrm{U}(0, 1),

  is exactly uniform on :math:`[0, 1)` and independent across :math:`t` when
  :math:`x \sim p` (Rosenblatt 1952; Brockwell 2007 for the discrete case).
  Cells: ``PIT_BINS`` equal bins of :math:`u_t`, pooled over positions.  Two
  orderings: by token id (``"id"``), and by descending probability
  (``"probability"``, ties by id), under which a sampler that favours likely
  tokens (a temperature below one, top-k, a wrong bonus token) piles up in
  the low bins.
* ``calibration``: per position :math:`t`, the bin of :math:`p_t(x_t)`, the
  target's probability of the token that was drawn, on the fixed edges
  ``CALIBRATION_EDGES``.  Given the prefix, the bin is a categorical draw with
  known probabilities :math:`\pi_{i,t} = (\sum_v p_t(v)\,[p_t(v) \in b])_b`
  for sample :math:`i`, so the counts :math:`O_t` of position :math:`t` are a
  sum of independent, non-identical categorical trials with mean
  :math:`E_t = \sum_i \pi_{i,t}` and covariance
  :math:`C_t = \sum_i (\mathrm{diag}\,\pi_{i,t} - \pi_{i,t}\pi_{i,t}^\top)`,
  both accumulated from the samples' own prefixes.  The statistic
  :math:`\sum_t (O_t - E_t)^\top C_t^{+} (O_t - E_t)` (bins expecting fewer
  than 5 samples pooled per position; one bin dropped, since both sides sum to
  :math:`n`) is asymptotically :math:`\chi^2` with :math:`\sum_t (G_t - 1)`
  degrees of freedom by the multivariate Lindeberg CLT, with no
  identical-distribution assumption (a plain Pearson statistic with
  :math:`E_t` would be conservative here, its variance being too large).

Every test also feeds the *support check*: a sample with target probability
zero fails the check outright, whatever tests were asked for.

Everything a batch needs is one jit-compiled function of ``(tokens, weights,
key)`` built by :func:`batch_counter`; targets that are chain models read
their conditionals from precomputed tables (gathers), any other target goes
through ``prefix_conditional_logits``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob.errors import InvalidArgumentError
from arprob.verify.gof import _projected, check_projection

__all__ = ["PIT_BINS", "CALIBRATION_EDGES", "Test", "auto_tests", "batch_counter", "calibration_test", "cells_of",
           "float_size_of", "target_probs"]

PIT_BINS = 20
# Edges of the calibration bins on the target's probability of the drawn token.
CALIBRATION_EDGES = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0 + 1e-9)
MAX_PREFIX_CELLS = 2**16
MAX_PAIRS = 28


class Test(NamedTuple):
    """One test of :func:`~arprob.verify.check`: a counter (``kind``, ``positions``, ``ordering``)
    and the statistic applied to its counts."""

    __test__ = False  # not a pytest class

    name: str
    kind: str  # "cells", "pit" or "calibration"
    positions: tuple[int, ...] | None = None  # kind "cells": None = the whole sequence
    ordering: str = "id"  # kind "pit": "id" or "probability"
    statistic: str = "pearson"  # "pearson" or "head"

    @property
    def counter(self) -> tuple:
        """Tests that share a counter share its counts (joint Pearson and joint head)."""
        return (self.kind, self.positions, self.ordering)


def _name(positions) -> str:
    return "x[" + "],x[".join(map(str, positions)) + "]"


def cells_of(test: Test, vocab_size: int, length: int) -> int:
    """Number of cells of a test's counter."""
    if test.kind == "pit":
        return PIT_BINS
    if test.kind == "calibration":
        return length * (len(CALIBRATION_EDGES) - 1)
    width = length if test.positions is None else len(test.positions)
    return vocab_size**width


def float_size_of(test: Test, vocab_size: int, length: int) -> int | None:
    """Size of a counter's float accumulator: calibration's means and second moments, else None."""
    if test.kind != "calibration":
        return None
    bins = len(CALIBRATION_EDGES) - 1
    return length * bins * (bins + 1)


def _log_cells(vocab_size: int, width: int) -> float:
    return width * math.log(vocab_size)


def auto_tests(vocab_size: int, length: int, max_joint_cells: int, *, conditionals_only: bool = False) -> list[Test]:
    """The default battery: the joint when it fits, else marginals, pairs, a prefix and Rosenblatt.

    ``conditionals_only`` (a target known through its left-to-right conditionals,
    no marginals): Rosenblatt under both orderings and calibration only.
    """
    if conditionals_only:
        return [Test("rosenblatt (id order)", "pit"), Test("rosenblatt (probability order)", "pit",
                                                            ordering="probability"),
                Test("calibration", "calibration")]
    if _log_cells(vocab_size, length) <= math.log(max_joint_cells):
        return [Test("joint", "cells"), Test("joint head", "cells", statistic="head")]
    tests = [Test(f"x[{i}]", "cells", (i,)) for i in range(length)]
    pairs = [(i, j) for i in range(length) for j in range(i + 1, length)]
    if len(pairs) > MAX_PAIRS:
        pairs = [(i, i + 1) for i in range(length - 1)] + [(i, i + 2) for i in range(length - 2)]
        pairs = pairs[:MAX_PAIRS] if len(pairs) > 2 * MAX_PAIRS else pairs
    if vocab_size**2 <= max_joint_cells:
        tests += [Test(_name(pair), "cells", pair) for pair in pairs]
    prefix = int(math.floor(math.log(min(MAX_PREFIX_CELLS, max_joint_cells)) / math.log(vocab_size)))
    if 2 < prefix < length:
        tests.append(Test(f"x[0:{prefix}]", "cells", tuple(range(prefix))))
    tests.append(Test("rosenblatt", "pit"))
    return tests


def parse_tests(owner: str, spec, vocab_size: int, length: int, max_joint_cells: int,
                conditionals_only: bool) -> list[Test]:
    """Turn ``projections=`` into a list of :class:`Test`."""
    if isinstance(spec, str):
        if spec == "auto":
            return auto_tests(vocab_size, length, max_joint_cells, conditionals_only=conditionals_only)
        if spec in ("joint", "marginals") and conditionals_only:
            raise InvalidArgumentError(
                f"{owner}: projections={spec!r} needs the target's exact marginals, but the target is known "
                "only through its left-to-right conditionals; use 'auto', ['rosenblatt', 'calibration'], "
                "or the two-sample mode (reference=...)")
        if spec == "joint":
            if _log_cells(vocab_size, length) > math.log(max_joint_cells):
                raise InvalidArgumentError(
                    f"{owner}: projections='joint' needs {vocab_size}**{length} cells, over "
                    f"max_joint_cells={max_joint_cells:,}; use 'auto' or a list of projections")
            return [Test("joint", "cells")]
        if spec == "marginals":
            return [Test(f"x[{i}]", "cells", (i,)) for i in range(length)]
        raise InvalidArgumentError(
            f"{owner}: projections={spec!r} is not understood; expected 'auto', 'joint', 'marginals' or a "
            "list of position tuples and/or 'rosenblatt', 'rosenblatt-probability', 'calibration'")
    try:
        items = list(spec)
    except TypeError:
        raise InvalidArgumentError(
            f"{owner}: projections={spec!r} is not understood; expected 'auto', 'joint', 'marginals' or a "
            "list of position tuples and/or 'rosenblatt', 'rosenblatt-probability', 'calibration'") from None
    if not items:
        raise InvalidArgumentError(f"{owner}: projections is an empty list; give at least one test")
    tests = []
    for index, item in enumerate(items):
        name = f"projections[{index}]"
        if isinstance(item, str):
            named = {"rosenblatt": Test("rosenblatt", "pit"),
                     "rosenblatt-probability": Test("rosenblatt (probability order)", "pit",
                                                    ordering="probability"),
                     "calibration": Test("calibration", "calibration")}
            if item not in named:
                raise InvalidArgumentError(
                    f"{owner}: {name} = {item!r} is not understood; expected a tuple of positions, "
                    "'rosenblatt', 'rosenblatt-probability' or 'calibration'")
            tests.append(named[item])
            continue
        if conditionals_only:
            raise InvalidArgumentError(
                f"{owner}: {name} = {item!r} needs the target's exact marginals, but the target is known only "
                "through its left-to-right conditionals; use the two-sample mode (reference=...) for projections")
        positions = check_projection(owner, name, item, length)
        if _log_cells(vocab_size, len(positions)) > math.log(max_joint_cells):
            raise InvalidArgumentError(
                f"{owner}: {name} = {positions} has {vocab_size}**{len(positions)} cells, over "
                f"max_joint_cells={max_joint_cells:,}; use fewer positions")
        tests.append(Test(_name(positions), "cells", positions))
    return tests


def target_probs(test: Test, model, law, vocab_size: int, length: int):
    """Exact cell probabilities of a ``cells`` test (``None`` for data-dependent or uniform targets)."""
    if test.kind == "pit":
        return np.full(PIT_BINS, 1.0 / PIT_BINS)
    if test.kind == "calibration":
        return None
    positions = range(length) if test.positions is None else test.positions
    if law is not None:
        # check validated the law already: the unchecked projection (projected_law checks user input)
        return _projected(np.asarray(law, np.float64), vocab_size, length, tuple(positions))
    width = len(test.positions)
    assignments = all_sequences(vocab_size, width)
    x = np.zeros((assignments.shape[0], length), dtype=np.int32)
    x[:, list(test.positions)] = assignments
    observed = np.zeros(length, dtype=bool)
    observed[list(test.positions)] = True
    probs = np.exp(np.asarray(model.marginal_log_prob(jnp.asarray(x), jnp.asarray(observed)), np.float64))
    return probs / probs.sum()


# -- per-batch counting ---------------------------------------------------------------------


def _rank_below(probs, values):
    """For every token v: the mass of the tokens ranked before v by descending probability (ties by id)."""
    p_v = probs[..., :, None]  # candidate v
    p_u = probs[..., None, :]  # other token u
    ids = values[:, None], values[None, :]
    before = (p_u > p_v) | ((p_u == p_v) & (ids[1] < ids[0]))
    return jnp.sum(jnp.where(before, p_u, 0.0), axis=-1)


def _masses_per_bin(probs):
    """``sum_v p(v) [p(v) in bin b]`` for the calibration bins, last axis (V,) -> (B,), no (V, B) temporaries."""
    interior = CALIBRATION_EDGES[1:-1]
    below = [jnp.zeros(probs.shape[:-1], probs.dtype)]
    below += [jnp.sum(jnp.where(probs < edge, probs, 0.0), axis=-1) for edge in interior]
    below.append(jnp.sum(probs, axis=-1))
    below = jnp.stack(below, axis=-1)
    return below[..., 1:] - below[..., :-1]


def _calibration_bins(values):
    edges = jnp.asarray(CALIBRATION_EDGES[1:-1], dtype=values.dtype)
    return jnp.searchsorted(edges, values, side="right").astype(jnp.int32)


class _ChainTables(NamedTuple):
    """Next-token quantities of a chain model for every (window, token), computed once (float64 numpy)."""

    probs: np.ndarray  # (W, V)
    below_id: np.ndarray  # (W, V)
    below_rank: np.ndarray  # (W, V)
    masses: np.ndarray  # (W, B)


def _chain_tables(model) -> _ChainTables | None:
    """Precomputed tables of a chain model (MarkovChain, NGram), or None for other targets."""
    if not (hasattr(model, "log_table") and hasattr(model, "context_size")):
        return None
    probs = np.exp(np.asarray(model.log_table, np.float64))
    values = np.arange(probs.shape[-1])
    below_id = np.cumsum(probs, axis=-1) - probs
    below_rank = np.asarray(_rank_below(jnp.asarray(probs), jnp.asarray(values)))
    masses = np.asarray(_masses_per_bin(jnp.asarray(probs)))
    return _ChainTables(probs, below_id, below_rank, masses)


def _conditional_parts(model, tokens, tables, needs_rank: bool, needs_calibration: bool):
    """Per (sample, position): p(x_t | x_<t), the mass below by id and by rank, calibration masses."""
    vocab_size = model.vocab_size
    if tables is not None:
        from arprob.inference.chain import window_indices

        windows = window_indices(tokens, vocab_size, model.context_size)  # (n, L)
        flat = windows * vocab_size + tokens
        chosen = jnp.asarray(tables.probs).reshape(-1)[flat]
        below_id = jnp.asarray(tables.below_id).reshape(-1)[flat]
        below_rank = jnp.asarray(tables.below_rank).reshape(-1)[flat] if needs_rank else None
        masses = jnp.asarray(tables.masses)[windows] if needs_calibration else None
        return chosen, below_id, below_rank, masses
    rows = jax.nn.softmax(model.prefix_conditional_logits(tokens), axis=-1)
    values = jnp.arange(vocab_size)
    chosen = jnp.take_along_axis(rows, tokens[..., None], axis=-1)[..., 0]
    below_id = jnp.sum(jnp.where(values < tokens[..., None], rows, 0.0), axis=-1)
    below_rank = None
    if needs_rank:
        before = (rows > chosen[..., None]) | ((rows == chosen[..., None]) & (values < tokens[..., None]))
        below_rank = jnp.sum(jnp.where(before, rows, 0.0), axis=-1)
    masses = _masses_per_bin(rows) if needs_calibration else None
    return chosen, below_id, below_rank, masses


def batch_counter(model, counters: tuple, vocab_size: int, length: int, *, support: str = "log_prob"):
    """A pure function ``(tokens, weights, key) -> BatchCounts`` for the given counters.

    ``counters`` are the distinct :attr:`Test.counter` keys; ``weights`` (0/1
    per row) masks the padding rows of the last batch.  ``support`` is how
    zero-probability samples are detected: ``"log_prob"`` (exact models) or
    ``"conditionals"`` (targets known through their conditionals), or ``None``
    (two-sample mode, no target law).
    """
    tables = _chain_tables(model)
    kinds = {counter[0] for counter in counters}
    if support == "log_prob" and ("cells", None, "id") in counters:
        support = "joint"  # a sample of probability zero lands on a zero cell of the joint counts
    needs_conditionals = bool(kinds & {"pit", "calibration"}) or support == "conditionals"
    needs_rank = any(c[0] == "pit" and c[2] == "probability" for c in counters)
    needs_calibration = "calibration" in kinds
    num_bins = len(CALIBRATION_EDGES) - 1

    def count(tokens, weights, key):
        tokens = tokens.astype(jnp.int32)
        out_of_range = jnp.any((tokens < 0) | (tokens >= vocab_size), axis=-1) & (weights > 0)
        safe = jnp.clip(tokens, 0, vocab_size - 1)
        counts, floats = [], []
        parts = None
        if needs_conditionals:
            parts = _conditional_parts(model, safe, tables, needs_rank, needs_calibration)
        for slot, (kind, positions, ordering) in enumerate(counters):
            if kind == "cells":
                columns = safe if positions is None else safe[:, jnp.asarray(positions)]
                width = columns.shape[1]
                powers = jnp.asarray(vocab_size ** np.arange(width - 1, -1, -1), jnp.int32)
                index = (columns * powers).sum(axis=-1)
                counts.append(jnp.zeros(vocab_size**width, jnp.int32).at[index].add(weights.astype(jnp.int32)))
                floats.append(None)
            elif kind == "pit":
                chosen, below_id, below_rank, _ = parts
                below = below_id if ordering == "id" else below_rank
                uniform = jax.random.uniform(jax.random.fold_in(key, slot), chosen.shape, dtype=chosen.dtype)
                u = below + uniform * chosen
                bins = jnp.clip(jnp.floor(u * PIT_BINS).astype(jnp.int32), 0, PIT_BINS - 1)
                counts.append(jnp.zeros(PIT_BINS, jnp.int32).at[bins.reshape(-1)].add(
                    jnp.repeat(weights, length)))
                floats.append(None)
            else:  # calibration
                chosen, _, _, masses = parts
                cells = jnp.arange(length)[None, :] * num_bins + _calibration_bins(chosen)  # (n, L)
                counts.append(jnp.zeros(length * num_bins, jnp.int32).at[cells.reshape(-1)].add(
                    jnp.repeat(weights, length)))
                weighted = masses * weights.astype(masses.dtype)[:, None, None]
                means = jnp.sum(weighted, axis=0).reshape(-1)  # (L * B,)
                moments = jnp.einsum("nlb,nlc->lbc", weighted, masses).reshape(-1)  # (L * B * B,)
                floats.append(jnp.concatenate([means, moments]))
        if support == "log_prob":
            impossible = ~(model.log_prob(safe) > -jnp.inf)
        elif support == "joint":
            impossible = jnp.zeros(safe.shape[0], bool)
        elif support == "conditionals":
            impossible = jnp.any(parts[0] <= 0, axis=-1)
        else:  # two-sample mode: no target law to check the support against
            impossible = jnp.zeros(safe.shape[0], bool)
        impossible = impossible & (weights > 0) & ~out_of_range
        example = jnp.where(jnp.any(impossible), safe[jnp.argmax(impossible)], -1)
        return (tuple(counts), tuple(floats), jnp.sum(out_of_range).astype(jnp.int32),
                jnp.sum(impossible).astype(jnp.int32), example.astype(jnp.int32))

    return count


def calibration_test(observed, floats, length: int, min_expected: float = 5.0):
    """The calibration statistic from the counts and the accumulated means and second moments.

    Returns ``(value, df, p_value, expected)``; see the module docstring.
    """
    from scipy import stats

    bins = len(CALIBRATION_EDGES) - 1
    observed = np.asarray(observed, np.float64).reshape(length, bins)
    means = np.asarray(floats[: length * bins], np.float64).reshape(length, bins)
    moments = np.asarray(floats[length * bins:], np.float64).reshape(length, bins, bins)
    value, df = 0.0, 0
    for t in range(length):
        order = np.argsort(means[t], kind="stable")
        groups = np.empty(bins, np.int64)
        group, running = 0, 0.0
        for bin_ in order:  # pool the smallest bins until each group expects min_expected
            groups[bin_] = group
            running += means[t, bin_]
            if running >= min_expected:
                group, running = group + 1, 0.0
        if running > 0 and group > 0:
            groups[groups == group] = group - 1
        num_groups = int(groups.max()) + 1
        if num_groups < 2:
            continue
        pool = np.zeros((num_groups, bins))
        pool[groups, np.arange(bins)] = 1.0
        covariance = pool @ (np.diag(means[t]) - moments[t]) @ pool.T
        difference = pool @ (observed[t] - means[t])
        kept = slice(0, num_groups - 1)  # both sides sum to n: drop one group
        inverse = np.linalg.pinv(covariance[kept, kept], hermitian=True)
        rank = np.linalg.matrix_rank(covariance[kept, kept], hermitian=True)
        value += float(difference[kept] @ inverse @ difference[kept])
        df += int(rank)
    if df < 1:
        return 0.0, 0, 1.0, means.reshape(-1)
    return value, df, float(stats.chi2.sf(value, df)), means.reshape(-1)
