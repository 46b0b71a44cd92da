r"""Resolution: the smallest sampler bug :func:`~arprob.verify.check` can see in a time budget.

A goodness-of-fit test on :math:`K` cells with :math:`n` samples detects, with
probability ``power`` at level :math:`\alpha w` (:math:`w` its share of
:math:`\alpha` in the weighted Holm procedure, :math:`1/m` for :math:`m`
tests of one kind), every law at TV distance at least

.. math::

    d(n) = \sqrt{\lambda^*_{K-1}(\alpha w, \text{power}) / (4 n)}

(:func:`~arprob.verify.detectable`; worst case :math:`\chi^2 \ge 4\,\mathrm{TV}^2`).
What a time budget buys is :math:`n = r \cdot s` for a throughput :math:`r`
of sampling *and* counting, which :func:`resolution` measures with a short
probe of the very loop :func:`~arprob.verify.check` runs (same tests, same
target, same devices), so the number is the one a real run would reach.
Halving the detectable TV costs four times the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from arprob._validation import _show, check_int, check_real
from arprob.errors import ArprobTypeError
from arprob.verify.planning import detectable

__all__ = ["Resolution", "resolution"]

PROBE_BATCH = 8192
PROBE_BATCHES = 4


@dataclass(frozen=True)
class Resolution:
    """What :func:`resolution` found.

    Attributes
    ----------
    tv
        Smallest TV distance detected with probability ``power`` within ``seconds``.
    num_samples
        Samples the budget affords at the measured throughput.
    samples_per_second
        Throughput of sampling and counting (compilation excluded).
    seconds
        The budget.
    compile_seconds
        Compilation time measured by the probe (paid once per run, on top of ``seconds``).
    cells, num_tests
        Cells of the largest test and number of tests (its level: ``alpha`` times its share, see
        :mod:`arprob.verify.plans`).
    """

    tv: float
    num_samples: int
    samples_per_second: float
    seconds: float
    compile_seconds: float
    cells: int
    num_tests: int
    alpha: float
    power: float

    def __str__(self) -> str:
        return (f"detects TV >= {self.tv:.3g} (power {self.power:g}, alpha {self.alpha:g}) in {self.seconds:g} s: "
                f"{self.num_samples:,} samples at {self.samples_per_second:,.0f}/s, {self.num_tests} tests, "
                f"largest {self.cells:,} cells; compilation {self.compile_seconds:.1f} s")


def resolution(target, *, seconds: float = 60.0, sampler=None, alpha: float = 1e-4, power: float = 0.99,
               projections="auto", max_joint_cells: int = 2**20, devices=None, seed: int = 0) -> Resolution:
    r"""The smallest TV that :func:`~arprob.verify.check` detects within ``seconds``.

    Parameters
    ----------
    target
        What :func:`~arprob.verify.check` would test against.
    seconds
        Time budget for sampling and counting (compilation comes on top, reported).
    sampler
        ``sampler(key, num_samples)``; default: the target's own ``sample``
        (``target.sample(key, (n,))``), the cost of the test's bookkeeping on a
        perfect sampler.
    alpha, power, projections, max_joint_cells, devices, seed
        As in :func:`~arprob.verify.check`.

    Returns
    -------
    Resolution
    """
    from arprob.verify.check import check
    from arprob.verify.projections import parse_tests
    from arprob.verify.targets import resolve_target

    owner = "resolution"
    seconds = check_real(owner, "seconds", seconds, low=0.0, low_open=True,
                         fix="pass the time budget in seconds, e.g. seconds=60")
    if sampler is not None and not callable(sampler):
        raise ArprobTypeError(f"{owner}: sampler must be callable as sampler(key, num_samples) (or None for the "
                              f"target's own sample method), got {_show(sampler)}")
    alpha = check_real(owner, "alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True,
                       fix="alpha is the family-wise false-alarm probability, e.g. 1e-4")
    power = check_real(owner, "power", power, low=0.0, high=1.0, low_open=True, high_open=True,
                       fix="power is a probability of detection, e.g. 0.99")
    max_joint_cells = check_int(owner, "max_joint_cells", max_joint_cells, minimum=2)
    seed = check_int(owner, "seed", seed, minimum=0, maximum=2**63 - 1)
    model, exact = resolve_target(owner, target)
    parse_tests(owner, projections, int(model.vocab_size), int(model.length), max_joint_cells,
                conditionals_only=not exact)
    if sampler is None:
        model = getattr(target, "model", target)
        if not hasattr(model, "sample"):
            raise ArprobTypeError(f"{owner}: the target has no sample method; pass sampler=...")

        def sampler(key, num_samples):
            return model.sample(key, (num_samples,))

    report = check(sampler, target, alpha=alpha, power=power, num_samples=PROBE_BATCH * PROBE_BATCHES,
                   batch_size=PROBE_BATCH, projections=projections, max_joint_cells=max_joint_cells,
                   devices=devices, seed=seed, sequential=False, progress=False)
    rate = report.samples_per_second
    num_samples = max(1, int(rate * seconds))
    tests = [t for t in report.tests if t.weight is not None]
    cells = max(2, max(t.observed.size for t in tests))
    weight = min(t.weight for t in tests if max(2, t.observed.size) == cells)  # its share of alpha (weighted Holm)
    return Resolution(tv=detectable(num_samples, cells, alpha * weight, power), num_samples=num_samples,
                      samples_per_second=rate, seconds=float(seconds),
                      compile_seconds=report.compile_seconds, cells=int(cells), num_tests=len(tests),
                      alpha=alpha, power=power)

