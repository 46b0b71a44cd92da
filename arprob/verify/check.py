r"""``check``: does a sampler draw from the law it claims?

The procedure, for a sampler and a target over :math:`V^L` sequences:

1. **Tests** (:mod:`arprob.verify.projections`).  When :math:`V^L` is small
   enough (``max_joint_cells``), the full joint is tested with the Pearson and
   head statistics of :func:`gof`.  Otherwise the joint is probed through
   projections with exact targets: every single-position marginal, pairwise
   marginals, the longest prefix that fits, and a **Rosenblatt (randomized
   probability-integral-transform) test**: with :math:`F_t` the target's
   left-to-right conditional CDF,

   .. math::

       u_t = F_t(x_t - 1 \mid x_{<t}) + U_t\, p(x_t \mid x_{<t}),\qquad U_t \sim \mathrm{U}(0,1),

   are i.i.d. uniform exactly when :math:`x \sim p`; their histogram is tested
   against uniform.  This test sees every position and all dependence through
   the chain rule, at any :math:`L`.  A target known only through its
   conditionals (:func:`~arprob.verify.left_to_right`, a network) gets the
   Rosenblatt test under two token orderings and a calibration test.  With
   ``reference=...`` (the **two-sample mode**) no law is needed at all: the
   sampler is compared with a reference sampler of the same family on
   marginals, pairs and a prefix by a two-sample chi-square test.
2. **Support.**  Whatever the tests, every sample's target probability is
   checked: one sample of probability zero fails the check.
3. **Sample size.**  ``num_samples=None`` takes
   ``plan(deviation, K, alpha / m, power)`` for the largest test's :math:`K`
   cells and :math:`m` tests (twice that per sampler in the two-sample mode),
   so a law at TV distance ``deviation`` is caught with probability ``power``
   on the full joint (on projections, the guarantee is for deviations that
   show in them).  :attr:`Report.resolution` is the TV the run detects.
4. **Streaming** (:mod:`arprob.verify.stream`).  Batch :math:`b` is
   ``sampler(fold_in(key_s, b), batch_size)``; a JAX sampler is fused with the
   counting into one compiled loop (sharded over ``devices``), any other
   callable runs in a Python loop.  Same ``seed`` → identical counts and
   report, on any number of devices.
5. **Decision.**  p-values are Holm-adjusted over the :math:`m` tests; the
   sampler passes when none is at or below ``alpha`` and no sample fell on an
   outcome of probability zero.  Family-wise false-alarm rate :math:`\le\alpha`.
6. **Distance.**  The plug-in TV estimate (biased upwards, by
   :math:`O(\sqrt{K/n})`) with a :math:`1-\alpha` interval from the L1
   deviation inequality of Weissman et al. (2003),
   :math:`P(\|\hat p - p\|_1 \ge \varepsilon) \le (2^K - 2)\, e^{-n\varepsilon^2/2}`,
   i.e. half-width :math:`\tfrac12\sqrt{2(K\ln 2 + \ln(1/\alpha))/n}`.  With
   projections only, the interval's lower end is a lower confidence bound on
   the joint TV (a projection never increases TV) and the upper end is 1.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from arprob._validation import check_bool, check_int, check_memory, check_positive_int, check_probs, check_real_array
from arprob.errors import (
    ArprobError,
    ArprobTypeError,
    EnumerationTooLargeError,
    IncompatibleError,
    InvalidArgumentError,
    InvalidTokenError,
    PrecisionWarning,
)
from arprob.verify.distances import tv
from arprob.verify.gof import MIN_EXPECTED, _pool, _test_counts
from arprob.verify.planning import detectable, plan
from arprob.verify.projections import (
    Test,
    auto_tests,
    batch_counter,
    calibration_test,
    cells_of,
    float_size_of,
    parse_tests,
    target_probs,
)
from arprob.verify.report import Report, TestOutcome
from arprob.verify.stream import choose_batch_size, stream
from arprob.verify.targets import resolve_target

__all__ = ["check", "holm", "planned_num_samples"]

MAX_SAMPLES = 2**36  # about 6.9e10, two hours at the fastest measured CPU rate (10^7/s): refused up front

_warned_float32 = False  # check warns once per process when x64 is off


def _warn_if_float32(owner: str) -> None:
    """Warn (once per process) that check runs in float32 when ``jax_enable_x64`` is off."""
    global _warned_float32
    if _warned_float32 or jnp.result_type(float) == jnp.float64:
        return
    _warned_float32 = True
    warnings.warn(f"{owner}: jax_enable_x64 is off, so the target's probabilities, the Rosenblatt and calibration "
                  "statistics and the exact TV are computed in float32 (about 7 significant digits: an exact "
                  "sampler's TV shows at ~1e-7 instead of ~1e-16, and the smallest target probabilities are "
                  "rounded). Enable float64 with jax.config.update('jax_enable_x64', True) at the start of the "
                  "program, or JAX_ENABLE_X64=1 (the arprob check command does this itself). This warning is shown "
                  "once per process.", PrecisionWarning, stacklevel=3)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control).

    ``p_values`` must be finite numbers in ``[0, 1]``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        raise InvalidArgumentError("holm: p_values is empty; expected at least one p-value")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        bad = p[~np.isfinite(p) | (p < 0) | (p > 1)]
        raise InvalidArgumentError(f"holm: p_values must lie in [0, 1], got {bad[:4].tolist()}; "
                                   "check the test that produced them")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _check_level(owner: str, name: str, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ArprobTypeError(f"{owner}: {name} must be a number in (0, 1), got {value!r}")
    if not 0 < float(value) < 1:
        raise InvalidArgumentError(f"{owner}: {name} must be in (0, 1), got {value}")
    return float(value)


def _two_sample(counts_a: np.ndarray, counts_b: np.ndarray):
    """Pearson's chi-square test of homogeneity on a 2 x K table, small cells pooled.

    Returns ``(value, df, p_value, method)``.
    """
    counts_a = np.asarray(counts_a, np.float64)
    counts_b = np.asarray(counts_b, np.float64)
    n_a, n_b = counts_a.sum(), counts_b.sum()
    pooled = (counts_a + counts_b) / (n_a + n_b)
    groups = _pool(min(n_a, n_b) * pooled, MIN_EXPECTED)
    used = groups >= 0
    num_groups = int(groups[used].max()) + 1 if used.any() else 0
    a = np.bincount(groups[used], weights=counts_a[used], minlength=num_groups)
    b = np.bincount(groups[used], weights=counts_b[used], minlength=num_groups)
    if num_groups < 2:
        return 0.0, 0, 1.0, "degenerate: fewer than two cells with enough samples"
    share = (a + b) / (n_a + n_b)
    value = float(np.sum((a - n_a * share) ** 2 / (n_a * share)) + np.sum((b - n_b * share) ** 2 / (n_b * share)))
    df = num_groups - 1
    return value, df, float(stats.chi2.sf(value, df)), "two-sample chi-square (homogeneity), small cells pooled"


def _two_sample_tests(vocab_size: int, length: int, max_joint_cells: int, projections) -> list[Test]:
    if projections == "auto":
        tests = [t for t in auto_tests(vocab_size, length, max_joint_cells) if t.kind == "cells"]
        return [t for t in tests if t.statistic == "pearson"]
    tests = parse_tests("check", projections, vocab_size, length, max_joint_cells, conditionals_only=False)
    if any(t.kind != "cells" for t in tests):
        raise InvalidArgumentError("check: the two-sample mode tests projections only (position tuples, "
                                   "'joint' or 'marginals'); Rosenblatt and calibration need the target's "
                                   "conditionals, so drop reference=... to use them")
    return tests


def check(sampler, target, *, alpha: float = 1e-4, power: float = 0.99, deviation: float = 0.01,
          num_samples: int | None = None, projections="auto", seed: int = 0, law=None,
          batch_size: int | None = None, max_joint_cells: int = 2**20, devices=None, fuse: bool | None = None,
          reference=None, progress=None) -> Report:
    """Test a sampler against a target; see the module docstring for the procedure.

    Parameters
    ----------
    sampler
        ``sampler(key, num_samples)`` returning integer tokens ``(num_samples, L)``
        or ``(tokens, stats)`` (``stats.nfe`` is averaged into the report).  A
        :class:`~arprob.verify.Sampler` may carry its exact ``law``.  A JAX
        function is compiled together with the counting; any other callable
        (NumPy, PyTorch) runs in a Python loop.
    target
        An exact model (or its exact conditionals); a conditional family or a
        :func:`~arprob.verify.left_to_right` next-token function (Rosenblatt
        under two orderings and calibration); with ``reference``, anything
        with ``vocab_size`` and ``length``.
    alpha
        Family-wise false-alarm probability.
    power, deviation
        Planning: with ``num_samples=None``, enough samples to reject any law
        at TV distance ``deviation`` with probability ``power``.
    num_samples
        Fixed sample size instead of the plan.
    projections
        ``"auto"``, ``"joint"``, ``"marginals"`` or a list of position tuples
        and/or ``"rosenblatt"``, ``"rosenblatt-probability"``, ``"calibration"``.
    seed
        Seed of the key streams handed to the sampler (``fold_in(key_s, b)``
        for batch ``b``) and of the Rosenblatt randomization.  Fixed, so a
        report is reproducible, on any number of devices.
    law
        The sampler's exact law (overrides ``sampler.law``), for the exact TV.
    batch_size
        Samples per sampler call (default: ``min(num_samples, 65536)`` on
        CPU, scaled to the memory of an accelerator).
    max_joint_cells
        Largest ``V**L`` tested on the full joint.
    devices
        ``None`` (the default device), ``"all"`` (every local device) or a
        :class:`jax.sharding.Mesh`: batches are spread over the devices with
        ``jax.shard_map``; the counts are identical to a one-device run.
    fuse
        ``None``: compile sampling and counting together when the sampler
        traces under ``jax.jit``, else use a Python loop; ``True``: require
        it; ``False``: always the Python loop.
    reference
        A second sampler of the target's family (e.g. plain ancestral
        sampling): two-sample mode, no law needed.
    progress
        ``progress(done, total, seconds)``, called after each compiled chunk
        (each batch on the host path).

    Returns
    -------
    Report

    Warns
    -----
    PrecisionWarning
        Once per process, when ``jax_enable_x64`` is off (the check then runs in float32).

    Notes
    -----
    The sampler is called only for the batches that are counted: a NumPy or
    PyTorch sampler is never called with a traced key nor for a warm-up batch
    (batch 0 is drawn on the host and, if it comes back as a ``jax.Array``,
    the remaining batches run in the compiled loop).
    """
    owner = "check"
    _warn_if_float32(owner)
    if not callable(sampler):
        raise ArprobTypeError(f"{owner}: sampler must be callable as sampler(key, num_samples), "
                              f"got {type(sampler).__name__}")
    if reference is not None and not callable(reference):
        raise ArprobTypeError(f"{owner}: reference must be callable as reference(key, num_samples), "
                              f"got {type(reference).__name__}")
    alpha = _check_level(owner, "alpha", alpha)
    power = _check_level(owner, "power", power)
    if isinstance(deviation, bool) or not isinstance(deviation, (int, float, np.floating)) \
            or not 0 < float(deviation) <= 1:
        raise InvalidArgumentError(f"{owner}: deviation must be a TV distance in (0, 1], got {deviation!r}")
    max_joint_cells = check_positive_int(owner, "max_joint_cells", max_joint_cells, minimum=2)
    seed = check_int(owner, "seed", seed, minimum=0, maximum=2**63 - 1)
    if fuse is not None:
        fuse = check_bool(owner, "fuse", fuse)
    if progress is not None and not callable(progress):
        raise ArprobTypeError(f"{owner}: progress must be callable as progress(done, total, seconds), "
                              f"got {type(progress).__name__}")

    if law is not None and not callable(law):
        law = check_real_array(owner, "law", law).ravel()
        check_probs(owner, "law", law)
    if reference is None:
        model, exact = resolve_target(owner, target)
    else:
        model, exact = target, False
        if not (hasattr(target, "vocab_size") and hasattr(target, "length")):
            raise ArprobTypeError(f"{owner}: target must have vocab_size and length, got {type(target).__name__}")
    vocab_size, length = int(model.vocab_size), int(model.length)
    enumerable = exact and length * math.log(vocab_size) <= math.log(max_joint_cells)
    if reference is None:
        tests = parse_tests(owner, projections, vocab_size, length, max_joint_cells, conditionals_only=not exact)
    else:
        tests = _two_sample_tests(vocab_size, length, max_joint_cells, projections)
    target_law = np.asarray(model.law(max_entries=max(max_joint_cells, 2**26)), np.float64).ravel() \
        if enumerable else None
    probs = [target_probs(t, model, target_law, vocab_size, length) if reference is None else None for t in tests]
    counters = tuple(dict.fromkeys(t.counter for t in tests))
    sizes = {c: cells_of(Test("", *c), vocab_size, length) for c in counters}
    largest = max(sizes.values())
    planned = num_samples is None
    if planned:
        num_samples = _plan_size(owner, deviation, largest, len(tests), alpha, power, reference is not None)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    if num_samples > MAX_SAMPLES:
        hours = num_samples / 1e7 / 3600
        what = f"deviation={deviation:g} needs" if planned else "num_samples is"
        raise EnumerationTooLargeError(
            f"{owner}: {what} {num_samples:,} samples, about {hours:,.1f} hours at 10^7 samples/s (the fastest "
            f"CPU rate measured), over the limit of {MAX_SAMPLES:,} (arprob.verify.check.MAX_SAMPLES); "
            + ("raise deviation (the samples needed grow as 1/deviation**2)" if planned else
               "pass a smaller num_samples")
            + " -- arprob.verify.resolution tells what a time budget detects")

    support = "log_prob" if exact else ("conditionals" if reference is None else None)
    counter_fn = batch_counter(model, counters, vocab_size, length, support=support)
    float_sizes = tuple(float_size_of(Test("", *c), vocab_size, length) for c in counters)
    shapes = (tuple(sizes[c] for c in counters), float_sizes)
    increments = length if any(c[0] in ("pit", "calibration") for c in counters) else 1
    # the counters' temporaries: a few (L, V) float arrays per sample when conditionals are evaluated
    evaluates_rows = not exact or any(c[0] in ("pit", "calibration") for c in counters)
    per_sample_bytes = 8.0 * length * (vocab_size if evaluates_rows else 1) * 4
    if batch_size is None:
        batch_size = choose_batch_size(num_samples, per_sample_bytes)
    batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    check_memory(owner, f"batch_size={batch_size:,}", (batch_size, per_sample_bytes), itemsize=1,
                 fix="pass a smaller batch_size, or None to choose one from the memory available")

    key = jax.random.key(seed)
    key_sampler, key_count, key_reference = jax.random.split(key, 3)
    cache_key = (id(model), counters, support, vocab_size)
    run = stream(owner, sampler, counter_fn, shapes, num_samples=num_samples, batch_size=batch_size, length=length,
                 key_sampler=key_sampler, key_count=key_count, devices=devices, fuse=fuse, progress=progress,
                 increments=increments, cache_key=cache_key, cache_refs=(model,))
    if run.out_of_range:
        raise InvalidTokenError(f"{owner}: the sampler returned {run.out_of_range} sequences with tokens "
                                f"outside [0, {vocab_size}); expected valid token ids")
    counts = dict(zip(counters, run.counts))
    floats = dict(zip(counters, run.floats))
    reference_counts = None
    if reference is not None:
        other = stream(owner, reference, counter_fn, shapes, num_samples=num_samples, batch_size=batch_size,
                       length=length, key_sampler=key_reference, key_count=key_count, devices=devices, fuse=fuse,
                       progress=None, increments=increments, cache_key=cache_key, cache_refs=(model,))
        if other.out_of_range:
            raise InvalidTokenError(f"{owner}: the reference sampler returned {other.out_of_range} sequences "
                                    f"with tokens outside [0, {vocab_size})")
        reference_counts = dict(zip(counters, other.counts))

    outcomes, zero_hits = [], []
    for test, target_probs_ in zip(tests, probs):
        observed = counts[test.counter].astype(np.float64)
        if reference_counts is not None:
            value, df, p_value, method = _two_sample(observed, reference_counts[test.counter])
            outcomes.append(TestOutcome(test.name, test.positions, "two-sample", value, df, p_value, method=method,
                                        observed=observed, expected=reference_counts[test.counter].astype(float)))
            continue
        if test.kind == "calibration":
            value, df, p_value, expected = calibration_test(observed, floats[test.counter], length)
            outcomes.append(TestOutcome(test.name, "calibration", "covariance", value, df, p_value,
                                        method="chi-square with the exact covariance of independent, non-identical "
                                               "trials (expectations from the samples' prefixes)",
                                        observed=observed, expected=expected))
            continue
        value, df, p_value, method, hit_cells = _test_counts(observed, target_probs_, test.statistic)
        width = length if test.positions is None else len(test.positions)
        for cell in hit_cells[:10]:
            if test.kind == "cells":
                digits = tuple(int(d) for d in np.unravel_index(cell, (vocab_size,) * width))
                zero_hits.append({"test": test.name, "tokens": digits})
        projection = test.positions if test.kind == "cells" else ("pit" if test.kind == "pit" else test.kind)
        outcomes.append(TestOutcome(test.name, projection, test.statistic, value, df, p_value, method=method,
                                    observed=observed, expected=observed.sum() * target_probs_))
    if run.impossible:
        example = run.impossible_example
        zero_hits.append({"test": "support", "tokens": example})
        outcomes.append(TestOutcome("support", "support", "zero-probability samples", float(run.impossible), 0,
                                    0.0, method=f"{run.impossible} sample(s) of target probability zero"))
    adjusted = holm([o.p_value for o in outcomes])
    for outcome, p_adjusted in zip(outcomes, adjusted):
        outcome.p_adjusted = float(p_adjusted)
        outcome.rejected = bool(p_adjusted <= alpha)
    passed = not any(o.rejected for o in outcomes) and not zero_hits

    if reference_counts is None:
        tv_estimate, tv_interval, scope = _tv_interval(counts, tests, probs, alpha, num_samples)
    else:
        tv_estimate, tv_interval, scope = _two_sample_tv(counts, reference_counts, tests, alpha, num_samples)
    sampler_law = law if law is not None else getattr(sampler, "law", None)
    if callable(sampler_law):
        sampler_law = sampler_law()
    exact_tv = None
    if sampler_law is not None and target_law is not None:
        name = "law" if law is not None else "sampler.law"
        sampler_law = check_real_array(owner, name, sampler_law).ravel()
        check_probs(owner, name, sampler_law)
        if sampler_law.size != target_law.size:
            raise IncompatibleError(f"{owner}: the sampler's law has {sampler_law.size} entries but the target "
                                    f"has {target_law.size} = {vocab_size}**{length} sequences")
        exact_tv = tv(sampler_law, target_law)
    nfe_mean = run.nfe_total / num_samples if run.nfe_total is not None else None
    per_sampler = num_samples // 2 if reference is not None else num_samples
    resolution = detectable(max(per_sampler, 1), max(largest, 2), alpha / len(tests), power)
    return Report(
        passed=passed, tests=outcomes, num_samples=num_samples, alpha=alpha, power=power,
        deviation=float(deviation), planned=planned, tv_estimate=tv_estimate, tv_interval=tv_interval,
        tv_scope=scope, exact_tv=exact_tv, nfe=nfe_mean, samples_per_second=run.timed_samples / run.seconds,
        seconds=run.seconds, zero_probability_hits=[hit["tokens"] for hit in zero_hits], seed=seed,
        vocab_size=vocab_size, length=length, target=repr(model),
        sampler=getattr(sampler, "name", None) or getattr(sampler, "__name__", type(sampler).__name__),
        resolution=resolution, compile_seconds=run.compile_seconds, fused=run.fused, num_devices=run.num_devices,
        batch_size=run.batch_size,
    )


def _plan_size(owner, deviation, largest, num_tests, alpha, power, two_sample) -> int:
    try:
        return plan(deviation, largest, alpha / num_tests, power) * (2 if two_sample else 1)
    except ArprobError as error:
        raise EnumerationTooLargeError(f"{owner}: deviation={deviation:g} cannot be planned: "
                                       f"{str(error).removeprefix('plan: ')}") from None


def planned_num_samples(target, *, alpha: float = 1e-4, power: float = 0.99, deviation: float = 0.01,
                        projections="auto", max_joint_cells: int = 2**20) -> int:
    """The sample size :func:`check` plans for ``target`` (``num_samples=None``), without sampling.

    The same tests and the same ``plan(deviation, K, alpha / m, power)`` as :func:`check` (one-sample
    mode): :math:`K` the cells of the largest test, :math:`m` the number of tests.
    """
    owner = "planned_num_samples"
    alpha = _check_level(owner, "alpha", alpha)
    power = _check_level(owner, "power", power)
    max_joint_cells = check_positive_int(owner, "max_joint_cells", max_joint_cells, minimum=2)
    model, exact = resolve_target(owner, target)
    vocab_size, length = int(model.vocab_size), int(model.length)
    tests = parse_tests(owner, projections, vocab_size, length, max_joint_cells, conditionals_only=not exact)
    largest = max(cells_of(Test("", *c), vocab_size, length) for c in dict.fromkeys(t.counter for t in tests))
    return _plan_size(owner, deviation, largest, len(tests), alpha, power, False)


def _weissman_halfwidth(cells: int, num_samples: int, delta: float) -> float:
    """Half-width r with P(TV(empirical, true) >= r) <= delta (Weissman et al. 2003)."""
    return 0.5 * math.sqrt(2.0 * (cells * math.log(2.0) + math.log(1.0 / delta)) / num_samples)


def _tv_interval(counts, tests, probs, alpha, num_samples):
    joint = [(t, target) for t, target in zip(tests, probs) if t.kind == "cells" and t.positions is None]
    if joint:
        test, target = joint[0]
        estimate = 0.5 * float(np.abs(counts[test.counter] / num_samples - target).sum())
        radius = _weissman_halfwidth(target.size, num_samples, alpha)
        return estimate, (max(0.0, estimate - radius), min(1.0, estimate + radius)), "joint"
    projected = [(t, target) for t, target in zip(tests, probs) if t.kind == "cells"]
    if not projected:
        return float("nan"), (0.0, 1.0), "none"
    delta = alpha / len(projected)
    estimate, lower = 0.0, 0.0
    for test, target in dict((t.counter, (t, p)) for t, p in projected).values():
        value = 0.5 * float(np.abs(counts[test.counter] / num_samples - target).sum())
        estimate = max(estimate, value)
        lower = max(lower, value - _weissman_halfwidth(target.size, num_samples, delta))
    return estimate, (max(0.0, lower), 1.0), "lower bound from projections"


def _two_sample_tv(counts, reference_counts, tests, alpha, num_samples):
    """Largest projected TV between the two empirical laws; lower bound by Weissman on both sides."""
    delta = alpha / (2 * len(tests))
    estimate, lower = 0.0, 0.0
    for test in tests:
        a, b = counts[test.counter], reference_counts[test.counter]
        value = 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())
        estimate = max(estimate, value)
        lower = max(lower, value - 2 * _weissman_halfwidth(a.size, num_samples, delta))
    return estimate, (max(0.0, lower), 1.0), "lower bound from projections (two-sample)"
