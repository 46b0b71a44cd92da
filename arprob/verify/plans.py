r"""What a :func:`~arprob.verify.check` run will cost, before it runs: tests, weights, looks and samples.

**Weights (weighted Holm).**  Holm's procedure over :math:`m` tests gives the
test with the smallest p-value the level :math:`\alpha/m`: with 35 projection
tests, a Rosenblatt p-value of :math:`6.8\cdot10^{-5}` becomes :math:`0.0024`.
The tests that see the whole law (the joint test and its head test, the
Rosenblatt tests) are therefore given a fixed share ``PRIMARY_SHARE`` (one
half) of :math:`\alpha` between them, and the others (marginals, pairs, a
prefix, calibration) share the rest; when all tests are of one kind the
weights are equal and the procedure is Holm's.  With weights :math:`w_i`
(:math:`\sum_i w_i = 1`), the weighted step-down procedure (Holm 1979) orders
the tests by :math:`p_i / w_i` and rejects the :math:`k`-th while
:math:`p_{(k)} \le \alpha\, w_{(k)} / \sum_{j \ge k} w_{(j)}`; the adjusted
p-value is :math:`\max_{j \le k} \min(1, p_{(j)} \sum_{l \ge j} w_{(l)} / w_{(j)})`.
It controls the family-wise error rate at :math:`\alpha` for any dependence
between the tests.

**Looks (sequential checking).**  A sequential run looks at the counts after
``FIRST_LOOK`` samples and then after every factor ``LOOK_RATIO`` more, up to
the planned :math:`n`.  Look :math:`j < J` tests at level
:math:`\alpha_j = \alpha\,` ``EARLY_SHARE`` :math:`/ (J - 1)`, the last at
:math:`\alpha_J = \alpha(1 -` ``EARLY_SHARE`` :math:`)`; the run stops at the
first look that rejects.  By the union bound the probability of any false
alarm is at most :math:`\sum_j \alpha_j = \alpha`, whatever the dependence
between looks (an :math:`\alpha`-spending design with Bonferroni spending).
The planned :math:`n` is sized for the last look's level, so a sampler that
passes runs to the plan with the power asked for; the price is a plan about
1% longer than the fixed-:math:`n` one (the level drops from :math:`\alpha` to
:math:`0.9\alpha`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from arprob.errors import ArprobError, EnumerationTooLargeError, InvalidArgumentError
from arprob.verify.planning import plan

__all__ = ["Plan", "holm", "plan_for", "test_weights", "PRIMARY_SHARE", "FIRST_LOOK", "LOOK_RATIO", "EARLY_SHARE"]

PRIMARY_SHARE = 0.5  # of alpha, shared by the joint / head / Rosenblatt tests when other tests are present
FIRST_LOOK = 2048  # samples before the first look of a sequential run
LOOK_RATIO = 4  # each look sees this many times the samples of the previous one
EARLY_SHARE = 0.1  # of alpha, spent over the looks before the last


def holm(p_values, weights=None) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), optionally weighted.

    ``p_values`` must be finite numbers in ``[0, 1]``.  ``weights`` (positive, one per p-value,
    normalised here) give test :math:`i` the share :math:`w_i` of the level; equal weights are
    Holm's original procedure.  A test is rejected at level :math:`\\alpha` when its adjusted
    p-value is at most :math:`\\alpha`.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        raise InvalidArgumentError("holm: p_values is empty; expected at least one p-value")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        bad = p[~np.isfinite(p) | (p < 0) | (p > 1)]
        raise InvalidArgumentError(f"holm: p_values must lie in [0, 1], got {bad[:4].tolist()}; "
                                   "check the test that produced them")
    if weights is None:
        w = np.full(p.size, 1.0 / p.size)
    else:
        from arprob._validation import check_real_array

        w = check_real_array("holm", "weights", weights, finite=False).ravel()
        if w.shape != p.shape or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise InvalidArgumentError(f"holm: weights must be {p.size} positive finite numbers (one per "
                                       f"p-value), got {w[:4].tolist()} of shape {w.shape}")
        w = w / w.sum()
    order = np.lexsort((np.arange(p.size), p / w))  # by p / w, ties in input order
    remaining = np.cumsum(w[order][::-1])[::-1]  # weight of the tests not yet rejected at each step
    adjusted = np.empty(p.size)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, p[index] * remaining[rank] / w[index]))
        adjusted[index] = running
    return adjusted


def _is_primary(test) -> bool:
    """Tests that see the whole law: the joint (Pearson and head) and the Rosenblatt tests."""
    return (test.kind == "cells" and test.positions is None) or test.kind == "pit"


def test_weights(tests) -> np.ndarray:
    """Shares of alpha of :func:`check`'s tests (see the module docstring); they sum to one."""
    primary = np.array([_is_primary(t) for t in tests])
    if primary.all() or not primary.any():
        return np.full(len(tests), 1.0 / len(tests))
    return np.where(primary, PRIMARY_SHARE / primary.sum(), (1.0 - PRIMARY_SHARE) / (~primary).sum())


test_weights.__test__ = False  # not a pytest test


def looks_for(num_samples: int, batch_size: int) -> list[int]:
    """Batch counts of a sequential run's looks: about ``FIRST_LOOK * LOOK_RATIO**k`` samples, and the end."""
    num_batches = -(-num_samples // batch_size)
    looks, size = [], FIRST_LOOK
    while size < num_samples:
        looks.append(max(1, round(size / batch_size)))
        size *= LOOK_RATIO
    return sorted({b for b in looks if b < num_batches} | {num_batches})


def look_levels(alpha: float, num_looks: int) -> list[float]:
    """Levels of the looks: ``alpha * EARLY_SHARE`` spread over the early looks, the rest at the last."""
    if num_looks == 1:
        return [alpha]
    return [alpha * EARLY_SHARE / (num_looks - 1)] * (num_looks - 1) + [alpha * (1.0 - EARLY_SHARE)]


@dataclass
class Plan:
    """What :func:`check` will do for a target: its tests, their shares of alpha, the sample size, the looks.

    Attributes
    ----------
    tests, cells, weights
        The tests' names, their numbers of cells (``None`` for the calibration test) and shares of alpha.
    largest_cells, holm_level
        The largest test's cells and the level it is planned at: ``alpha`` times its weight (times
        ``1 - EARLY_SHARE`` when sequential), the first step of the weighted Holm procedure.
    num_samples
        Samples a passing run draws (the planned :math:`n`, or the ``num_samples`` given).
    sequential, looks, look_alphas
        Whether the run stops at the first rejecting look; the sample counts of the looks and their levels.
    batch_size
        Samples per sampler call.
    samples_per_second, expected_seconds
        From a throughput probe (``plan_for(..., sampler=...)``), else ``None``: the time to the last look.
    """

    tests: tuple
    cells: tuple
    weights: tuple
    alpha: float
    power: float
    deviation: float
    largest_cells: int
    holm_level: float
    num_samples: int
    sequential: bool
    looks: tuple
    look_alphas: tuple
    batch_size: int
    samples_per_second: float | None = None
    expected_seconds: float | None = None
    planned: bool = True
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        how = (f"sequential, {len(self.looks)} looks at n = " + ", ".join(f"{n:,}" for n in self.looks)
               if self.sequential else "fixed n")
        lines = [f"plan: n = {self.num_samples:,} samples ({how}); {len(self.tests)} tests, the largest with "
                 f"{self.largest_cells:,} cells at level {self.holm_level:.3g}"
                 + (f"; detects TV >= {self.deviation:g} with probability {self.power:g}" if self.planned else "")]
        if self.expected_seconds is not None:
            lines.append(f"expected time to the last look: {_duration(self.expected_seconds)} at "
                         f"{self.samples_per_second:,.0f} samples/s (measured)")
        for name, cells, weight in zip(self.tests, self.cells, self.weights):
            lines.append(f"  {name:<28} {'' if cells is None else f'{cells:,} cells':>16}  share of alpha {weight:.3g}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def design(owner, tests, cells, *, alpha, power, deviation, num_samples, sequential, batch_size,
           default_batch_size, two_sample=False) -> Plan:
    """The plan of a run with these tests (``cells[i]`` the cells of test ``i``, ``None`` for calibration)."""
    weights = test_weights(tests)
    sized = [(c, w) for c, w in zip(cells, weights) if c is not None] or [(2, float(weights.min()))]
    largest, weight = max(sized, key=lambda cw: (cw[0], -cw[1]))
    planned = num_samples is None

    def size_at(level):
        try:
            return plan(deviation, largest, level, power) * (2 if two_sample else 1)
        except ArprobError as error:
            raise EnumerationTooLargeError(f"{owner}: deviation={deviation:g} cannot be planned: "
                                           f"{str(error).removeprefix('plan: ')}") from None

    level = alpha * weight
    if planned:
        num_samples = size_at(level * ((1.0 - EARLY_SHARE) if sequential else 1.0))
    if sequential:
        batch = batch_size or min(num_samples, FIRST_LOOK // 2)  # two batches to the first look: a split
        looks = looks_for(num_samples, batch)
        if len(looks) == 1 and planned:  # a single look: the fixed design, planned at the full level
            num_samples = size_at(level)
            batch = batch_size or min(num_samples, FIRST_LOOK // 2)
            looks = looks_for(num_samples, batch)
        levels = look_levels(alpha, len(looks))
        look_samples = tuple(min(num_samples, b * batch) for b in looks)
    else:
        batch = batch_size or default_batch_size(num_samples)
        levels, look_samples = [alpha], (num_samples,)
    holm_level = levels[-1] * weight
    return Plan(tuple(t.name for t in tests), tuple(cells), tuple(float(w) for w in weights), alpha, power,
                deviation, int(largest), float(holm_level), int(num_samples), bool(sequential), look_samples,
                tuple(levels), int(batch), planned=planned)


def plan_for(target, *, deviation: float = 0.01, power: float = 0.99, alpha: float = 1e-4, projections="auto",
             max_joint_cells: int = 2**20, num_samples: int | None = None, sequential: bool = False,
             batch_size: int | None = None, sampler=None, probe_samples: int = 4096) -> Plan:
    """The plan :func:`check` follows for ``target``, without running it; with ``sampler``, its expected time.

    Same tests, weights, sample size and looks as ``check(sampler, target, ...)`` with the same arguments
    (one-sample mode).  With ``sampler``, a throughput probe draws and counts ``probe_samples`` samples
    twice (the first call compiles; the probe's samples are not part of any check) and the plan reports
    samples per second and the expected time to the last look.
    """
    from arprob.verify.check import _check_deviation_arg, _check_level, _tests_and_cells

    owner = "plan_for"
    alpha = _check_level(owner, "alpha", alpha)
    power = _check_level(owner, "power", power)
    deviation = _check_deviation_arg(owner, deviation)
    from arprob._validation import check_bool, check_int, check_positive_int

    max_joint_cells = check_positive_int(owner, "max_joint_cells", max_joint_cells, minimum=2)
    sequential = check_bool(owner, "sequential", sequential)
    if num_samples is not None:
        num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    if batch_size is not None:
        batch_size = check_int(owner, "batch_size", batch_size, minimum=1)
    probe_samples = check_int(owner, "probe_samples", probe_samples, minimum=1, maximum=2**20)
    model, tests, cells, _ = _tests_and_cells(owner, target, projections, max_joint_cells)
    from arprob.verify.stream import choose_batch_size

    result = design(owner, tests, cells, alpha=alpha, power=power, deviation=deviation, num_samples=num_samples,
                    sequential=sequential, batch_size=batch_size,
                    default_batch_size=lambda n: choose_batch_size(n, 8.0 * model.length * 4))
    if sampler is not None:
        rate = _probe(owner, sampler, model, tests, probe_samples)
        result.samples_per_second = rate
        result.expected_seconds = result.num_samples / rate
    return result


def _probe(owner, sampler, model, tests, probe_samples: int) -> float:
    """Samples per second of drawing and counting ``probe_samples`` samples (second of two timed calls)."""
    import jax

    from arprob.errors import ArprobTypeError
    from arprob.verify.check import _counter_for

    if not callable(sampler):
        raise ArprobTypeError(f"{owner}: sampler must be callable as sampler(key, num_samples), "
                              f"got {type(sampler).__name__}")
    counter = jax.jit(_counter_for(model, tests))
    weights = jax.numpy.ones(probe_samples, jax.numpy.int32)
    seconds = math.inf
    for attempt in range(2):
        key = jax.random.fold_in(jax.random.key(2**31 - 1), attempt)
        start = time.perf_counter()
        from arprob.verify.stream import split_output

        tokens, _ = split_output(sampler(key, probe_samples))
        jax.block_until_ready(counter(jax.numpy.asarray(np.asarray(tokens)), weights, key))
        seconds = time.perf_counter() - start
    return probe_samples / max(seconds, 1e-9)
