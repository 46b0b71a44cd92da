r"""``check``: does a sampler draw from the law it claims?

The procedure, for a sampler and an exact target model over :math:`V^L`
sequences:

1. **Tests.**  When :math:`V^L` is small enough (``max_joint_cells``), the full
   joint is tested with the Pearson and head statistics of :func:`gof`.
   Otherwise the joint is probed through projections with exact targets:
   every single-position marginal, pairwise marginals, the longest prefix that
   fits, and a **Rosenblatt (randomized probability-integral-transform)
   test**: with :math:`F_t` the target's left-to-right conditional CDF,

   .. math::

       u_t = F_t(x_t - 1 \mid x_{<t}) + U_t\, p(x_t \mid x_{<t}),\qquad U_t \sim \mathrm{U}(0,1),

   are i.i.d. uniform exactly when :math:`x \sim p`; their histogram is tested
   against uniform.  This test sees every position and all dependence through
   the chain rule, at any :math:`L`.
2. **Sample size.**  ``num_samples=None`` takes
   ``plan(deviation, K, alpha / m, power)`` for the largest test's :math:`K`
   cells and :math:`m` tests, so a law at TV distance ``deviation`` is caught
   with probability ``power`` on the full joint (on projections, the guarantee
   is for deviations that show in them).
3. **Streaming.**  Samples are drawn in batches (``sampler(key_b, batch_size)``
   with ``key_b = fold_in(key(seed), b)``) and folded into counts by one
   jit-compiled update, so memory does not grow with ``num_samples``.
4. **Decision.**  p-values are Holm-adjusted over the :math:`m` tests; the
   sampler passes when none is at or below ``alpha`` and no sample fell on an
   outcome of probability zero.  Family-wise false-alarm rate :math:`\le\alpha`.
5. **Distance.**  The plug-in TV estimate (biased upwards, by
   :math:`O(\sqrt{K/n})`) with a :math:`1-\alpha` interval from the L1
   deviation inequality of Weissman et al. (2003),
   :math:`P(\|\hat p - p\|_1 \ge \varepsilon) \le (2^K - 2)\, e^{-n\varepsilon^2/2}`,
   i.e. half-width :math:`\tfrac12\sqrt{2(K\ln 2 + \ln(1/\alpha))/n}`.  With
   projections only, the interval's lower end is a lower confidence bound on
   the joint TV (a projection never increases TV) and the upper end is 1.
"""

from __future__ import annotations

import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from arprob._enumerate import all_sequences
from arprob._validation import check_positive_int
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError
from arprob.verify.distances import tv
from arprob.verify.gof import _test_counts, projected_law
from arprob.verify.planning import plan
from arprob.verify.report import Report, TestOutcome

__all__ = ["check", "holm"]

PIT_BINS = 20
MAX_PREFIX_CELLS = 2**16
MAX_PAIRS = 28


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _target_model(target):
    model = getattr(target, "model", target)
    needed = ("vocab_size", "length", "marginal_log_prob", "prefix_conditional_logits")
    if not all(hasattr(model, attribute) for attribute in needed):
        raise ArprobTypeError(
            f"check: target must be an exact arprob model (TabularJoint, MarkovChain, NGram, ...), "
            f"got {type(target).__name__}"
        )
    if getattr(model, "batch_shape", ()) != ():
        raise ShapeError(f"check: target has batch_shape {model.batch_shape}, expected () (one model)")
    return model


def _projections(spec, vocab_size: int, length: int, max_joint_cells: int):
    """List of (name, projection, statistic); projection None = joint, 'pit' = Rosenblatt."""
    joint_fits = vocab_size**length <= max_joint_cells
    if spec == "auto":
        if joint_fits:
            return [("joint", None, "pearson"), ("joint head", None, "head")]
        tests = [(f"x[{i}]", (i,), "pearson") for i in range(length)]
        pairs = [(i, j) for i in range(length) for j in range(i + 1, length)]
        if len(pairs) > MAX_PAIRS:
            pairs = [(i, i + 1) for i in range(length - 1)] + [(i, i + 2) for i in range(length - 2)]
            pairs = pairs[:MAX_PAIRS] if len(pairs) > 2 * MAX_PAIRS else pairs
        tests += [(f"x[{i}],x[{j}]", (i, j), "pearson") for i, j in pairs]
        prefix = int(math.floor(math.log(MAX_PREFIX_CELLS) / math.log(vocab_size)))
        if 2 < prefix < length:
            tests.append((f"x[0:{prefix}]", tuple(range(prefix)), "pearson"))
        tests.append(("rosenblatt", "pit", "pearson"))
        return tests
    if spec == "joint":
        if not joint_fits:
            raise InvalidArgumentError(f"check: projections='joint' needs {vocab_size}**{length} cells, over "
                             f"max_joint_cells={max_joint_cells:,}; use 'auto'")
        return [("joint", None, "pearson")]
    if spec == "marginals":
        return [(f"x[{i}]", (i,), "pearson") for i in range(length)]
    tests = []
    for item in spec:
        if item == "rosenblatt":
            tests.append(("rosenblatt", "pit", "pearson"))
            continue
        projection = tuple(int(p) for p in item)
        if any(not 0 <= p < length for p in projection) or len(set(projection)) != len(projection):
            raise InvalidArgumentError(f"check: projection {item} must hold distinct positions in [0, {length})")
        name = "x[" + "],x[".join(map(str, projection)) + "]"
        tests.append((name, projection, "pearson"))
    return tests


def _cells_of(projection, vocab_size, length):
    if projection == "pit":
        return PIT_BINS
    width = length if projection is None else len(projection)
    return vocab_size**width


def _target_probs(model, projection, law, vocab_size, length):
    if projection == "pit":
        return np.full(PIT_BINS, 1.0 / PIT_BINS)
    if law is not None:
        return projected_law(law, vocab_size, length, range(length) if projection is None else projection)
    width = len(projection)
    assignments = all_sequences(vocab_size, width)
    x = np.zeros((assignments.shape[0], length), dtype=np.int32)
    x[:, list(projection)] = assignments
    observed = np.zeros(length, dtype=bool)
    observed[list(projection)] = True
    log_probs = np.asarray(model.marginal_log_prob(jnp.asarray(x), jnp.asarray(observed)), np.float64)
    probs = np.exp(log_probs)
    return probs / probs.sum()


@partial(jax.jit, static_argnames=("layout", "vocab_size", "length", "has_nfe"))
def _update(state, tokens, nfe, valid_count, key, model, layout, vocab_size, length, has_nfe):
    """Fold one batch into the counts: one array per test, then nfe sum and flags."""
    num_rows = tokens.shape[0]
    weights = (jnp.arange(num_rows) < valid_count).astype(jnp.int64)
    counts = list(state["counts"])
    for slot, projection in enumerate(layout):
        if projection == "pit":
            logits = model.prefix_conditional_logits(tokens)  # (n, L, V)
            probs = jax.nn.softmax(logits, axis=-1)
            chosen = jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
            below = jnp.sum(jnp.where(jnp.arange(vocab_size) < tokens[..., None], probs, 0.0), axis=-1)
            u = below + jax.random.uniform(key, chosen.shape, dtype=probs.dtype) * chosen
            bins = jnp.clip(jnp.floor(u * PIT_BINS).astype(jnp.int32), 0, PIT_BINS - 1)
            counts[slot] = counts[slot].at[bins.reshape(-1)].add(jnp.repeat(weights, length))
            impossible = jnp.any(chosen <= 0, axis=-1) & (weights > 0)
            state = dict(state, impossible=state["impossible"] + jnp.sum(impossible),
                         impossible_example=jnp.where(jnp.any(impossible),
                                                      tokens[jnp.argmax(impossible)],
                                                      state["impossible_example"]))
            continue
        columns = tokens if projection is None else tokens[:, jnp.asarray(projection)]
        width = columns.shape[1]
        powers = jnp.asarray(vocab_size ** np.arange(width - 1, -1, -1, dtype=np.int64))
        index = (columns.astype(jnp.int64) * powers).sum(axis=-1)
        counts[slot] = counts[slot].at[index].add(weights)
    total_nfe = state["nfe"] + (jnp.sum(nfe * weights) if has_nfe else 0)
    out_of_range = jnp.sum(jnp.any((tokens < 0) | (tokens >= vocab_size), axis=-1) & (weights > 0))
    return dict(state, counts=tuple(counts), nfe=total_nfe, out_of_range=state["out_of_range"] + out_of_range)


def _split_output(owner, output):
    if isinstance(output, tuple) and len(output) == 2 and not hasattr(output, "_fields"):
        tokens, stats = output
    else:
        tokens, stats = output, None
    nfe = getattr(stats, "nfe", None) if stats is not None else None
    if nfe is None and isinstance(stats, dict):
        nfe = stats.get("nfe")
    return tokens, nfe


def check(sampler, target, *, alpha: float = 1e-4, power: float = 0.99, deviation: float = 0.01,
          num_samples: int | None = None, projections="auto", seed: int = 0, law=None,
          batch_size: int | None = None, max_joint_cells: int = 2**20) -> Report:
    """Test a sampler against an exact target law; see the module docstring for the procedure.

    Parameters
    ----------
    sampler
        ``sampler(key, num_samples)`` returning tokens ``(num_samples, L)`` or
        ``(tokens, stats)`` (``stats.nfe`` is averaged into the report).  A
        :class:`~arprob.verify.Sampler` may carry its exact ``law``.
    target
        An exact model (or its exact conditionals).
    alpha
        Family-wise false-alarm probability.
    power, deviation
        Planning: with ``num_samples=None``, enough samples to reject any law
        at TV distance ``deviation`` with probability ``power``.
    num_samples
        Fixed sample size instead of the plan.
    projections
        ``"auto"``, ``"joint"``, ``"marginals"`` or a list of position tuples
        (and/or ``"rosenblatt"``).
    seed
        Seed of the key stream handed to the sampler (``fold_in(key(seed), b)``
        for batch ``b``) and of the Rosenblatt randomization.  Fixed, so a
        report is reproducible.
    law
        The sampler's exact law (overrides ``sampler.law``), for the exact TV.
    batch_size
        Samples per sampler call (default ``min(num_samples, 65536)``).
    max_joint_cells
        Largest ``V**L`` tested on the full joint.

    Returns
    -------
    Report
    """
    owner = "check"
    if not callable(sampler):
        raise ArprobTypeError(f"{owner}: sampler must be callable as sampler(key, num_samples), "
                              f"got {type(sampler).__name__}")
    model = _target_model(target)
    vocab_size, length = model.vocab_size, model.length
    if not 0 < alpha < 1:
        raise InvalidArgumentError(f"{owner}: alpha must be in (0, 1), got {alpha}")
    tests = _projections(projections, vocab_size, length, max_joint_cells)
    enumerable = vocab_size**length <= max_joint_cells
    target_law = np.asarray(model.law(max_entries=max(max_joint_cells, 2**26)), np.float64).ravel() \
        if enumerable else None
    probs = [_target_probs(model, projection, target_law, vocab_size, length) for _, projection, _ in tests]
    layout = []
    for _, projection, _ in tests:
        if projection not in layout:
            layout.append(projection)
    layout = tuple(layout)
    largest = max(_cells_of(p, vocab_size, length) for p in layout)
    planned = num_samples is None
    if planned:
        num_samples = plan(deviation, largest, alpha / len(tests), power)
    num_samples = check_positive_int(owner, "num_samples", num_samples)
    batch_size = check_positive_int(owner, "batch_size", batch_size or min(num_samples, 65536))
    num_batches = -(-num_samples // batch_size)

    key = jax.random.key(seed)
    key_sampler, key_pit = jax.random.split(key)
    state = {
        "counts": tuple(jnp.zeros(_cells_of(p, vocab_size, length), jnp.int64) for p in layout),
        "nfe": jnp.zeros((), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32),
        "out_of_range": jnp.zeros((), jnp.int64),
        "impossible": jnp.zeros((), jnp.int64),
        "impossible_example": jnp.zeros((length,), jnp.int32),
    }
    # a warm-up batch (with a key outside the stream) compiles the sampler and the
    # update, so that samples/s measures sampling and counting, not compilation
    tokens, nfe = _split_output(owner, sampler(jax.random.fold_in(key, 2**31 - 1), batch_size))
    shape = tuple(np.shape(tokens))
    if shape != (batch_size, length):
        raise ShapeError(f"{owner}: sampler(key, {batch_size}) returned tokens of shape {shape}, "
                         f"expected ({batch_size}, {length}) to match the target")
    has_nfe = nfe is not None
    jax.block_until_ready(_update(state, jnp.asarray(tokens).astype(jnp.int32),
                                  jnp.asarray(nfe) if has_nfe else jnp.zeros((batch_size,)), 0,
                                  key_pit, model, layout, vocab_size, length, has_nfe))
    start = time.perf_counter()
    for batch in range(num_batches):
        tokens, nfe = _split_output(owner, sampler(jax.random.fold_in(key_sampler, batch), batch_size))
        tokens = jnp.asarray(tokens).astype(jnp.int32)
        valid = min(batch_size, num_samples - batch * batch_size)
        state = _update(state, tokens, jnp.asarray(nfe) if has_nfe else jnp.zeros((batch_size,)),
                        valid, jax.random.fold_in(key_pit, batch), model, layout, vocab_size, length,
                        has_nfe)
    jax.block_until_ready(state)
    end = time.perf_counter()
    if int(state["out_of_range"]):
        raise InvalidTokenError(f"{owner}: the sampler returned {int(state['out_of_range'])} sequences with "
                                f"tokens outside [0, {vocab_size}); expected valid token ids")
    rate = num_samples / max(end - start, 1e-12)

    counts = {p: np.asarray(c, np.float64) for p, c in zip(layout, state["counts"])}
    outcomes, zero_hits = [], []
    for (name, projection, statistic), target_probs in zip(tests, probs):
        observed = counts[projection]
        value, df, p_value, method, hit_cells = _test_counts(observed, target_probs, statistic)
        width = length if projection is None else (len(projection) if projection != "pit" else 0)
        for cell in hit_cells[:10]:
            digits = tuple(int(d) for d in np.unravel_index(cell, (vocab_size,) * width)) if width else ()
            zero_hits.append({"test": name, "projection": projection, "tokens": digits})
        outcomes.append(TestOutcome(name, projection, statistic, value, df, p_value, method=method,
                                    observed=observed, expected=observed.sum() * target_probs))
    if int(state["impossible"]):
        example = tuple(int(t) for t in np.asarray(state["impossible_example"]))
        zero_hits.append({"test": "rosenblatt", "projection": "pit", "tokens": example})
        for outcome in outcomes:
            if outcome.projection == "pit":
                outcome.p_value, outcome.method = 0.0, "zero-probability next token sampled"
    adjusted = holm([o.p_value for o in outcomes])
    for outcome, p_adjusted in zip(outcomes, adjusted):
        outcome.p_adjusted = float(p_adjusted)
        outcome.rejected = bool(p_adjusted <= alpha)
    passed = not any(o.rejected for o in outcomes) and not zero_hits

    tv_estimate, tv_interval, scope = _tv_interval(counts, tests, probs, alpha, num_samples)
    sampler_law = law if law is not None else getattr(sampler, "law", None)
    if callable(sampler_law):
        sampler_law = sampler_law()
    exact = None
    if sampler_law is not None and target_law is not None:
        exact = tv(np.asarray(sampler_law, np.float64).ravel(), target_law)
    nfe_mean = float(state["nfe"]) / num_samples if has_nfe else None
    return Report(
        passed=passed, tests=outcomes, num_samples=num_samples, alpha=alpha, power=power,
        deviation=deviation, planned=planned, tv_estimate=tv_estimate, tv_interval=tv_interval,
        tv_scope=scope, exact_tv=exact, nfe=nfe_mean, samples_per_second=rate, seconds=end - start,
        zero_probability_hits=[hit["tokens"] for hit in zero_hits], seed=seed,
        vocab_size=vocab_size, length=length, target=repr(model),
        sampler=getattr(sampler, "name", None) or getattr(sampler, "__name__", type(sampler).__name__),
    )


def _weissman_halfwidth(cells: int, num_samples: int, delta: float) -> float:
    """Half-width r with P(TV(empirical, true) >= r) <= delta (Weissman et al. 2003)."""
    return 0.5 * math.sqrt(2.0 * (cells * math.log(2.0) + math.log(1.0 / delta)) / num_samples)


def _tv_interval(counts, tests, probs, alpha, num_samples):
    joint = [target for (_, projection, _), target in zip(tests, probs) if projection is None]
    if joint:
        target = joint[0]
        estimate = 0.5 * float(np.abs(counts[None] / num_samples - target).sum())
        radius = _weissman_halfwidth(target.size, num_samples, alpha)
        return estimate, (max(0.0, estimate - radius), min(1.0, estimate + radius)), "joint"
    projected = [(projection, target) for (_, projection, _), target in zip(tests, probs)
                 if projection not in (None, "pit")]
    if not projected:
        return float("nan"), (0.0, 1.0), "none"
    delta = alpha / len(projected)
    estimate, lower = 0.0, 0.0
    seen = set()
    for projection, target in projected:
        if projection in seen:
            continue
        seen.add(projection)
        value = 0.5 * float(np.abs(counts[projection] / num_samples - target).sum())
        estimate = max(estimate, value)
        lower = max(lower, value - _weissman_halfwidth(target.size, num_samples, delta))
    return estimate, (max(0.0, lower), 1.0), "lower bound from projections"

