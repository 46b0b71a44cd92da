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
   ``plan(deviation, K, alpha * w, power)`` for the largest test's :math:`K`
   cells and its share :math:`w` of ``alpha`` (twice that per sampler in the
   two-sample mode), so a law at TV distance ``deviation`` is caught with
   probability ``power`` on the full joint (on projections, the guarantee is
   for deviations that show in them).  :func:`~arprob.verify.plan_for` shows
   the plan without running it.  :attr:`Report.resolution` is the TV the run
   detects.
4. **Streaming** (:mod:`arprob.verify.stream`).  Batch :math:`b` is
   ``sampler(fold_in(key_s, b), batch_size)``; a JAX sampler is fused with the
   counting into one compiled loop (sharded over ``devices``), any other
   callable runs in a Python loop.  Same ``seed`` → identical counts and
   report, on any number of devices.
5. **Decision.**  p-values are adjusted by the weighted Holm procedure
   (:mod:`arprob.verify.plans`: the joint and Rosenblatt tests share half of
   ``alpha``); the sampler passes when none is at or below ``alpha`` and no
   sample fell on an outcome of probability zero.  Family-wise false-alarm
   rate :math:`\le\alpha`.  **Sequential** runs look after 2048 samples and
   then every 4 times more, spend ``alpha`` over the looks and stop at the
   first look that rejects (still :math:`\le\alpha` in all).
6. **Distance.**  The plug-in TV estimate (biased upwards, by
   :math:`O(\sqrt{K/n})`), its exact expectation for an exact sampler at this
   :math:`n` (``tv_null_mean``), Efron's bootstrap bias-corrected estimate
   (``tv_debiased``), and a :math:`1-\alpha` interval from three valid bounds
   at :math:`\alpha/3` each: the L1 deviation inequality of Weissman et al.
   (2003), :math:`P(\|\hat p - p\|_1 \ge \varepsilon) \le (2^K - 2)\, e^{-n\varepsilon^2/2}`
   (both ends), McDiarmid's inequality (upper end) and a sample split (lower
   end: a set chosen on the first half, its excess mass bounded by
   Clopper-Pearson on the second).  With projections only, the interval's
   lower end is a lower confidence bound on the joint TV (a projection never
   increases TV) and the upper end is 1.
"""

from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from arprob._validation import (
    check_bool,
    check_choice,
    check_int,
    check_memory,
    check_positive_int,
    check_probs,
    check_real_array,
    input_dtype,
)
from arprob.errors import (
    ArprobTypeError,
    EnumerationTooLargeError,
    IncompatibleError,
    InvalidArgumentError,
    InvalidTokenError,
    PrecisionWarning,
)
from arprob.verify.distances import tv
from arprob.verify.gof import MIN_EXPECTED, _pool, _test_counts
from arprob.verify.planning import detectable
from arprob.verify.plans import Plan, design, holm, plan_for, test_weights
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
from arprob.verify.sampling import Sampler
from arprob.verify.stream import choose_batch_size, stream
from arprob.verify.targets import resolve_target

__all__ = ["check", "holm", "plan_for", "planned_num_samples", "seeds", "Plan"]

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


def _check_deviation_arg(owner: str, deviation) -> float:
    if isinstance(deviation, bool) or not isinstance(deviation, (int, float, np.floating)) \
            or not 0 < float(deviation) <= 1:
        raise InvalidArgumentError(f"{owner}: deviation must be a TV distance in (0, 1], got {deviation!r}")
    return float(deviation)


def _tests_and_cells(owner, target, projections, max_joint_cells):
    """``(model, tests, cells, exact)`` of the one-sample mode."""
    model, exact = resolve_target(owner, target)
    vocab_size, length = int(model.vocab_size), int(model.length)
    tests = parse_tests(owner, projections, vocab_size, length, max_joint_cells, conditionals_only=not exact)
    cells = [cells_of(Test("", *t.counter), vocab_size, length) for t in tests]
    return model, tests, cells, exact


def _counter_for(model, tests, exact=True):
    counters = tuple(dict.fromkeys(t.counter for t in tests))
    return batch_counter(model, counters, int(model.vocab_size), int(model.length),
                         support="log_prob" if exact else "conditionals")


def seeds(key, num: int) -> np.ndarray:
    """``num`` integer seeds in ``[0, 2**63)`` drawn from a JAX key: what a NumPy or PyTorch sampler needs.

    ``np.random.default_rng(int(seed))`` or ``torch.Generator().manual_seed(int(seed))`` then draw as
    the key would.  Deterministic in ``key``; distinct keys give independent seeds (threefry bits).
    """
    owner = "seeds"
    from arprob._validation import check_key

    check_key(owner, key)
    num = check_int(owner, "num", num, minimum=1, maximum=2**31 - 1)
    bits = np.asarray(jax.random.bits(key, (num, 2), jnp.uint32), np.uint64)
    return ((bits[:, 0] << np.uint64(31)) ^ bits[:, 1]) & np.uint64(2**63 - 1)


SEED_TYPES = ("jax", "int", "numpy")


def _with_seed_type(owner, sampler, seed_type):
    """Wrap a sampler that takes an int seed or a NumPy Generator so that check can call it with a key."""
    seed_type = check_choice(owner, "seed_type", seed_type, SEED_TYPES)
    if seed_type == "jax":
        return sampler

    function = sampler.fn if isinstance(sampler, Sampler) else sampler  # a Sampler's __call__ wants a key

    def wrapped(key, num_samples):
        seed = int(seeds(key, 1)[0])
        return function(seed if seed_type == "int" else np.random.default_rng(seed), num_samples)

    wrapped.__name__ = getattr(sampler, "name", None) or getattr(sampler, "__name__", type(sampler).__name__)
    wrapped.law = getattr(sampler, "law", None)
    wrapped.jax = False
    return wrapped


def _known_jax(sampler, fuse) -> bool:
    """The sampler is known to be a JAX function without calling it (see ``check``'s ``sequential``)."""
    if fuse is True:
        return True
    flag = getattr(sampler, "jax", None)
    if flag is not None:
        return bool(flag)
    if hasattr(sampler, "lower") and hasattr(sampler, "trace"):  # a jax.jit-wrapped function
        return True
    function = getattr(sampler, "func", sampler)  # functools.partial
    return (getattr(function, "__module__", "") or "").startswith("arprob.samplers")


class _AutoProgress:
    """A text progress bar on stderr, for interactive sessions, once a run is seen to last a few seconds."""

    AFTER_SECONDS = 3.0

    def __init__(self, plan_text: str):
        import sys

        self.stream = sys.stderr
        interactive = getattr(self.stream, "isatty", lambda: False)() or "ipykernel" in sys.modules
        self.active, self.shown, self.plan_text, self.start = interactive, False, plan_text, time.perf_counter()

    def __call__(self, done, total, seconds):
        if not self.active:
            return
        wall = time.perf_counter() - self.start
        if not self.shown:
            if wall < self.AFTER_SECONDS or done >= total:
                return
            self.shown = True
            print(self.plan_text, file=self.stream)
        rate = done / max(seconds, 1e-9)
        eta = (total - done) / max(rate, 1e-9)
        bar = "#" * int(30 * done / total)
        print(f"\rcheck [{bar:<30}] {done:,}/{total:,} samples, {rate:,.0f}/s, ETA {eta:,.0f} s   ",
              end="", file=self.stream, flush=True)

    def close(self):
        if self.shown:
            print(file=self.stream, flush=True)


def check(sampler, target, *, alpha: float = 1e-4, power: float = 0.99, deviation: float = 0.01,
          num_samples: int | None = None, projections="auto", seed: int = 0, law=None,
          batch_size: int | None = None, max_joint_cells: int = 2**20, devices=None, fuse: bool | None = None,
          reference=None, progress="auto", sequential: bool | None = None, seed_type: str = "jax") -> Report:
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
        Fixed sample size instead of the plan (the last look of a sequential run).
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
        CPU, scaled to the memory of an accelerator; 2048 in a sequential run,
        the first look).
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
        ``"auto"`` (default): in a terminal or a notebook, once a run has
        lasted a few seconds, the plan and a progress bar with an ETA on
        stderr; ``True``: always; ``False`` or ``None``: nothing; a callable
        ``progress(done, total, seconds)``: called after each compiled chunk
        (each batch on the host path).
    sequential
        Stop at the first look whose tests reject (looks after 2048 samples,
        then each 4 times more, up to the plan; see
        :mod:`arprob.verify.plans`): a gross bug is rejected after a few
        thousand samples.  The family-wise false-alarm rate stays at most
        ``alpha`` (alpha-spending over the looks) and a passing run draws the
        plan, sized so that the power is unchanged (about 1% more samples).
        ``None`` (default): sequential unless the sampler is known to be a
        JAX function (``fuse=True``, a ``jax.jit`` function, an arprob
        sampler, or ``Sampler(..., jax=True)``), i.e. for NumPy, PyTorch and
        plain Python callables; never in the two-sample mode.
    seed_type
        What the sampler takes as its first argument: ``"jax"`` (a JAX key),
        ``"int"`` (an integer seed, from :func:`seeds`) or ``"numpy"`` (a
        ``numpy.random.Generator``).

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
    deviation = _check_deviation_arg(owner, deviation)
    max_joint_cells = check_positive_int(owner, "max_joint_cells", max_joint_cells, minimum=2)
    seed = check_int(owner, "seed", seed, minimum=0, maximum=2**63 - 1)
    if fuse is not None:
        fuse = check_bool(owner, "fuse", fuse)
    if sequential is not None:
        sequential = check_bool(owner, "sequential", sequential)
    if not (progress is None or isinstance(progress, bool) or progress == "auto" or callable(progress)):
        raise ArprobTypeError(f"{owner}: progress must be 'auto', True, False, None or callable as "
                              f"progress(done, total, seconds), got {progress!r}")
    sampler = _with_seed_type(owner, sampler, seed_type)
    if seed_type != "jax" and fuse:
        raise InvalidArgumentError(f"{owner}: seed_type={seed_type!r} hands the sampler an int or a NumPy "
                                   "Generator, so it cannot be compiled; drop fuse=True")
    if reference is not None:
        if sequential:
            raise InvalidArgumentError(f"{owner}: sequential=True is not available in the two-sample mode "
                                       "(reference=...); drop one of them")
        sequential = False
    elif sequential is None:
        sequential = not _known_jax(sampler, fuse)

    if law is not None and not callable(law):
        law = check_real_array(owner, "law", law).ravel()
        check_probs(owner, "law", law)
    if reference is None:
        model, tests, cells, exact = _tests_and_cells(owner, target, projections, max_joint_cells)
    else:
        model, exact = target, False
        if not (hasattr(target, "vocab_size") and hasattr(target, "length")):
            raise ArprobTypeError(f"{owner}: target must have vocab_size and length, got {type(target).__name__}")
        tests = _two_sample_tests(int(model.vocab_size), int(model.length), max_joint_cells, projections)
        cells = [cells_of(Test("", *t.counter), int(model.vocab_size), int(model.length)) for t in tests]
    vocab_size, length = int(model.vocab_size), int(model.length)
    enumerable = exact and length * math.log(vocab_size) <= math.log(max_joint_cells)
    target_law = np.asarray(model.law(max_entries=max(max_joint_cells, 2**26)), np.float64).ravel() \
        if enumerable else None
    probs = [target_probs(t, model, target_law, vocab_size, length) if reference is None else None for t in tests]
    counters = tuple(dict.fromkeys(t.counter for t in tests))
    sizes = {c: cells_of(Test("", *c), vocab_size, length) for c in counters}
    support = "log_prob" if exact else ("conditionals" if reference is None else None)
    counter_fn = batch_counter(model, counters, vocab_size, length, support=support)
    float_sizes = tuple(float_size_of(Test("", *c), vocab_size, length) for c in counters)
    shapes = (tuple(sizes[c] for c in counters), float_sizes)
    increments = length if any(c[0] in ("pit", "calibration") for c in counters) else 1
    # the counters' temporaries: a few (L, V) float arrays per sample when conditionals are evaluated
    evaluates_rows = not exact or any(c[0] in ("pit", "calibration") for c in counters)
    per_sample_bytes = 8.0 * length * (vocab_size if evaluates_rows else 1) * 4
    if num_samples is not None:
        num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    if batch_size is not None:
        batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    the_plan = design(owner, tests, cells, alpha=alpha, power=power, deviation=deviation, num_samples=num_samples,
                      sequential=sequential, batch_size=batch_size, two_sample=reference is not None,
                      default_batch_size=lambda n: choose_batch_size(n, per_sample_bytes))
    planned, num_samples, batch_size = the_plan.planned, the_plan.num_samples, the_plan.batch_size
    if num_samples > MAX_SAMPLES:
        hours = num_samples / 1e7 / 3600
        what = f"deviation={deviation:g} needs" if planned else "num_samples is"
        raise EnumerationTooLargeError(
            f"{owner}: {what} {num_samples:,} samples, about {hours:,.1f} hours at 10^7 samples/s (the fastest "
            f"CPU rate measured), over the limit of {MAX_SAMPLES:,} (arprob.verify.check.MAX_SAMPLES); "
            + ("raise deviation (the samples needed grow as 1/deviation**2)" if planned else
               "pass a smaller num_samples")
            + " -- arprob.verify.resolution tells what a time budget detects")
    check_memory(owner, f"batch_size={batch_size:,}", (batch_size, per_sample_bytes), itemsize=1,
                 fix="pass a smaller batch_size, or None to choose one from the memory available")

    bar = None
    if progress == "auto" or progress is True:
        bar = _AutoProgress(the_plan.summary())
        if progress is True:
            bar.active = True
        progress = bar
    elif progress is False:
        progress = None

    weights = test_weights(tests)
    look_batches = [-(-n // batch_size) for n in the_plan.looks]
    halves = {b // 2 for b in look_batches if b >= 2}  # each look's tail is tested against a set from its head
    looks, snapshots = [], {}

    def on_look(run):
        done = run.done_batches
        for earlier in [b for b in snapshots if b < done // 2]:
            del snapshots[earlier]
        snapshots[done] = run
        if not sequential or done not in look_batches:
            return False
        level = the_plan.look_alphas[look_batches.index(done)]
        outcomes, zero_hits = _evaluate(tests, probs, run, vocab_size, length, None)
        adjusted = holm([o.p_value for o in outcomes], weights)
        stop = bool(zero_hits) or bool(run.impossible) or bool(np.any(adjusted <= level))
        looks.append({"num_samples": run.num_samples, "alpha": level, "min_p_adjusted": float(adjusted.min()),
                      "rejected": stop})
        return stop

    key = jax.random.key(seed)
    key_sampler, key_count, key_reference = jax.random.split(key, 3)
    cache_key = (id(model), counters, support, vocab_size)
    look_points = sorted(set(look_batches) | halves)
    try:
        run = stream(owner, sampler, counter_fn, shapes, num_samples=num_samples, batch_size=batch_size,
                     length=length, key_sampler=key_sampler, key_count=key_count, devices=devices, fuse=fuse,
                     progress=progress, increments=increments, cache_key=cache_key, cache_refs=(model,),
                     looks=look_points if reference is None else (), on_look=on_look)
    finally:
        if bar is not None:
            bar.close()
    if run.out_of_range:
        raise InvalidTokenError(f"{owner}: the sampler returned {run.out_of_range} sequences with tokens "
                                f"outside [0, {vocab_size}); expected valid token ids")
    reference_run = None
    if reference is not None:
        reference_run = stream(owner, reference, counter_fn, shapes, num_samples=num_samples, batch_size=batch_size,
                               length=length, key_sampler=key_reference, key_count=key_count, devices=devices,
                               fuse=fuse, progress=None, increments=increments, cache_key=cache_key,
                               cache_refs=(model,))
        if reference_run.out_of_range:
            raise InvalidTokenError(f"{owner}: the reference sampler returned {reference_run.out_of_range} "
                                    f"sequences with tokens outside [0, {vocab_size})")

    drawn = run.num_samples
    outcomes, zero_hits = _evaluate(tests, probs, run, vocab_size, length, reference_run)
    level = alpha
    if sequential:
        level = the_plan.look_alphas[len(looks) - 1] if looks else the_plan.look_alphas[-1]
    adjusted = holm([o.p_value for o in outcomes], weights)
    for outcome, p_adjusted, weight in zip(outcomes, adjusted, weights):
        outcome.p_adjusted = float(p_adjusted)
        outcome.rejected = bool(p_adjusted <= level)
        outcome.weight = float(weight)
    if run.impossible:
        example = run.impossible_example
        zero_hits.append({"test": "support", "tokens": example})
        outcomes.append(TestOutcome("support", "support", "zero-probability samples", float(run.impossible), 0,
                                    0.0, p_adjusted=0.0, rejected=True,
                                    method=f"{run.impossible} sample(s) of target probability zero (decided "
                                           "outright: an exact sampler never draws them)"))
    passed = not any(o.rejected for o in outcomes) and not zero_hits

    counts = dict(zip(counters, run.counts))
    if reference_run is None:
        half = snapshots.get(run.done_batches // 2) if run.done_batches >= 2 else None
        half_counts = dict(zip(counters, half.counts)) if half is not None else None
        distance = _tv_summary(counts, half_counts, tests, probs, level if sequential else alpha, drawn, length,
                               seed)
    else:
        distance = _two_sample_tv(counts, dict(zip(counters, reference_run.counts)), tests, alpha, num_samples)
    sampler_law = law if law is not None else getattr(sampler, "law", None)
    if callable(sampler_law):
        sampler_law = sampler_law()
    exact_tv = None
    if sampler_law is not None and target_law is not None:
        name = "law" if law is not None else "sampler.law"
        sampler_law = check_real_array(owner, name, sampler_law).ravel()
        check_probs(owner, name, sampler_law, dtype=input_dtype(sampler_law))
        if sampler_law.size != target_law.size:
            raise IncompatibleError(f"{owner}: the sampler's law has {sampler_law.size} entries but the target "
                                    f"has {target_law.size} = {vocab_size}**{length} sequences")
        exact_tv = tv(sampler_law, target_law)
    nfe_mean = run.nfe_total / drawn if run.nfe_total is not None else None
    per_sampler = num_samples // 2 if reference is not None else drawn
    largest_weight = min(w for c, w in zip(cells, weights) if c == max(cells))
    resolution = detectable(max(per_sampler, 1), max(the_plan.largest_cells, 2), level * largest_weight, power)
    return Report(
        passed=passed, tests=outcomes, num_samples=drawn, alpha=alpha, power=power,
        deviation=float(deviation), planned=planned, tv_estimate=distance["estimate"],
        tv_interval=distance["interval"], tv_scope=distance["scope"], exact_tv=exact_tv, nfe=nfe_mean,
        samples_per_second=run.timed_samples / run.seconds, seconds=run.seconds,
        zero_probability_hits=[hit["tokens"] for hit in zero_hits], seed=seed, vocab_size=vocab_size,
        length=length, target=repr(model),
        sampler=getattr(sampler, "name", None) or getattr(sampler, "__name__", type(sampler).__name__),
        resolution=resolution, compile_seconds=run.compile_seconds, fused=run.fused, num_devices=run.num_devices,
        batch_size=run.batch_size, sequential=bool(sequential), planned_samples=num_samples, looks=looks,
        tv_null_mean=distance.get("null_mean"), tv_debiased=distance.get("debiased"),
        tv_interval_method=distance.get("interval_method", ""),
    )


def _evaluate(tests, probs, run, vocab_size, length, reference_run):
    """The tests' outcomes (raw p-values) and the zero-probability cells hit, from a run's counts."""
    counters = tuple(dict.fromkeys(t.counter for t in tests))
    counts = dict(zip(counters, run.counts))
    floats = dict(zip(counters, run.floats))
    reference_counts = None if reference_run is None else dict(zip(counters, reference_run.counts))
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
    return outcomes, zero_hits


def planned_num_samples(target, *, alpha: float = 1e-4, power: float = 0.99, deviation: float = 0.01,
                        projections="auto", max_joint_cells: int = 2**20, sequential: bool = False) -> int:
    """The sample size :func:`check` plans for ``target`` (``num_samples=None``), without sampling.

    ``plan_for(target, ...).num_samples``: the same tests, weights and plan as :func:`check` (one-sample mode).
    """
    return plan_for(target, alpha=alpha, power=power, deviation=deviation, projections=projections,
                    max_joint_cells=max_joint_cells, sequential=sequential).num_samples


def _weissman_halfwidth(cells: int, num_samples: int, delta: float) -> float:
    """Half-width r with P(TV(empirical, true) >= r) <= delta (Weissman et al. 2003)."""
    return 0.5 * math.sqrt(2.0 * (cells * math.log(2.0) + math.log(1.0 / delta)) / num_samples)


def _mcdiarmid_halfwidth(cells: int, num_samples: int, delta: float) -> float:
    r"""r with :math:`P(TV(\hat q, q) \ge r) \le \delta` for every law :math:`q` on ``cells`` cells:
    :math:`E\,TV(\hat q, q) \le \tfrac12 \sum_c \sqrt{q_c(1-q_c)/n} \le \tfrac12\sqrt{(K-1)/n}` (Jensen, then
    Cauchy-Schwarz with :math:`\sum_c q_c(1-q_c) \le 1 - 1/K`), and one sample moves :math:`TV(\hat q, q)` by at
    most :math:`1/n`, so McDiarmid's inequality adds :math:`\sqrt{\ln(1/\delta)/(2n)}`."""
    return 0.5 * math.sqrt((cells - 1) / num_samples) + math.sqrt(math.log(1.0 / delta) / (2.0 * num_samples))


def binomial_mean_absolute_deviation(num_samples: int, probs) -> np.ndarray:
    r""":math:`E\lvert X - np\rvert` for :math:`X \sim \mathrm{Bin}(n, p)`, exactly (de Moivre):
    :math:`2 m \binom{n}{m} p^m (1-p)^{n-m+1}` with :math:`m = \lfloor np \rfloor + 1`; 0 at :math:`p \in \{0, 1\}`."""
    p = np.asarray(probs, np.float64)
    n = float(num_samples)
    inside = (p > 0) & (p < 1)
    q = np.where(inside, p, 0.5)
    m = np.floor(n * q) + 1
    log_value = (math.log(2.0) + np.log(m) + special.gammaln(n + 1) - special.gammaln(m + 1)
                 - special.gammaln(n - m + 1) + m * np.log(q) + (n - m + 1) * np.log1p(-q))
    return np.where(inside & (m <= n), np.exp(log_value), 0.0)


def null_mean_tv(num_samples: int, probs) -> float:
    """Expected plug-in TV of ``num_samples`` samples drawn from ``probs`` itself: what an exact sampler shows."""
    return float(binomial_mean_absolute_deviation(num_samples, probs).sum() / (2.0 * num_samples))


BOOTSTRAP_DRAWS = 64  # for tables of at most 2**16 cells; 16 above


def bootstrap_debiased_tv(counts, probs, seed: int) -> float:
    r"""Bootstrap bias-corrected plug-in TV: :math:`2\,\widehat{TV} - \overline{TV}(\hat p^*, p)`, clipped to [0, 1],
    with :math:`\hat p^*` multinomial resamples of the empirical law (Efron's bias correction)."""
    counts = np.asarray(counts, np.float64)
    n = int(counts.sum())
    empirical = counts / n
    estimate = 0.5 * float(np.abs(empirical - probs).sum())
    rng = np.random.default_rng(seed)
    draws = BOOTSTRAP_DRAWS if counts.size <= 2**16 else 16
    resampled = [0.5 * float(np.abs(rng.multinomial(n, empirical) / n - probs).sum()) for _ in range(draws)]
    return float(min(1.0, max(0.0, 2.0 * estimate - float(np.mean(resampled)))))


def split_lower_bound(first_counts, second_counts, probs, delta: float, *, per_sample: int = 1) -> float:
    r"""A lower confidence bound on TV(q, p) at level ``1 - delta`` from two independent halves of the sample.

    The set :math:`A = \{c : \hat q_1(c) > p(c)\}` is chosen on the first half; on the second half,
    :math:`q(A)` has a lower confidence bound :math:`\ell` (Clopper-Pearson; Hoeffding when each sample adds
    ``per_sample`` > 1 increments, as the Rosenblatt histogram's :math:`L` per sequence), and
    :math:`TV(q, p) \ge q(A) - p(A) \ge \ell - p(A)`.  Valid for every :math:`q` and every :math:`n`, since
    :math:`A` does not depend on the second half.
    """
    first = np.asarray(first_counts, np.float64)
    second = np.asarray(second_counts, np.float64)
    n1, n2 = first.sum() / per_sample, second.sum() / per_sample
    if n1 <= 0 or n2 <= 0:
        return 0.0
    chosen = first / (n1 * per_sample) > probs
    if not chosen.any():
        return 0.0
    hits = float(second[chosen].sum())
    if per_sample == 1:
        lower = float(stats.beta.ppf(delta, hits, n2 - hits + 1)) if hits > 0 else 0.0
    else:  # the per-sequence share of increments in A lies in [0, 1]: Hoeffding
        lower = hits / (n2 * per_sample) - math.sqrt(math.log(1.0 / delta) / (2.0 * n2))
    return max(0.0, lower - float(probs[chosen].sum()))


def _tv_summary(counts, half_counts, tests, probs, alpha, num_samples, length, seed) -> dict:
    """Plug-in TV, its null mean, the bias-corrected value and a ``1 - alpha`` interval (see ``check``)."""
    split = half_counts is not None
    joint = [(t, target) for t, target in zip(tests, probs) if t.kind == "cells" and t.positions is None]
    if joint:
        test, target = joint[0]
        observed = counts[test.counter]
        estimate = 0.5 * float(np.abs(observed / num_samples - target).sum())
        delta = alpha / 3 if split else alpha / 2
        radius = _weissman_halfwidth(target.size, num_samples, delta)
        lower = estimate - radius
        upper = estimate + min(radius, _mcdiarmid_halfwidth(target.size, num_samples, delta))
        method = "Weissman's L1 inequality, the McDiarmid upper bound"
        if split:
            lower = max(lower, split_lower_bound(half_counts[test.counter], observed - half_counts[test.counter],
                                                 target, delta))
            method += " and a sample-split Clopper-Pearson lower bound (alpha/3 each)"
        else:
            method += " (alpha/2 each)"
        return {"estimate": estimate, "interval": (max(0.0, lower), min(1.0, upper)), "scope": "joint",
                "null_mean": null_mean_tv(num_samples, target),
                "debiased": bootstrap_debiased_tv(observed, target, seed), "interval_method": method}
    projected = [(t, target) for t, target in zip(tests, probs) if t.kind == "cells"]
    pits = [(t, target) for t, target in zip(tests, probs) if t.kind == "pit"]
    unique = list(dict((t.counter, (t, p)) for t, p in projected).values())
    unique_pits = list(dict((t.counter, (t, p)) for t, p in pits).values())
    if not unique and not (split and unique_pits):
        return {"estimate": float("nan"), "interval": (0.0, 1.0), "scope": "none"}
    bounds = len(unique) + (len(unique) + len(unique_pits) if split else 0)
    delta = alpha / bounds
    estimate, lower, best = 0.0, 0.0, None
    for test, target in unique:
        observed = counts[test.counter]
        value = 0.5 * float(np.abs(observed / num_samples - target).sum())
        if best is None or value > estimate:
            estimate, best = value, (observed, target)
        lower = max(lower, value - _weissman_halfwidth(target.size, num_samples, delta))
        if split:
            lower = max(lower, split_lower_bound(half_counts[test.counter], observed - half_counts[test.counter],
                                                 target, delta))
    if split:
        for test, target in unique_pits:
            observed = counts[test.counter]
            lower = max(lower, split_lower_bound(half_counts[test.counter], observed - half_counts[test.counter],
                                                 target, delta, per_sample=length))
    summary = {"estimate": estimate if best is not None else float("nan"), "interval": (max(0.0, lower), 1.0),
               "scope": "lower bound from projections",
               "interval_method": "Weissman per projection" + (", sample-split bounds on projections and the "
                                                               "Rosenblatt histogram" if split else "")
               + f" (Bonferroni over {bounds})"}
    if best is not None:
        summary["null_mean"] = null_mean_tv(num_samples, best[1])
        summary["debiased"] = bootstrap_debiased_tv(best[0], best[1], seed)
    return summary


def _two_sample_tv(counts, reference_counts, tests, alpha, num_samples):
    """Largest projected TV between the two empirical laws; lower bound by Weissman on both sides."""
    delta = alpha / (2 * len(tests))
    estimate, lower = 0.0, 0.0
    for test in tests:
        a, b = counts[test.counter], reference_counts[test.counter]
        value = 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())
        estimate = max(estimate, value)
        lower = max(lower, value - 2 * _weissman_halfwidth(a.size, num_samples, delta))
    return {"estimate": estimate, "interval": (max(0.0, lower), 1.0),
            "scope": "lower bound from projections (two-sample)", "interval_method": "Weissman on both samples"}
