"""The :class:`Report` returned by :func:`arprob.verify.check`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from arprob._validation import check_int

__all__ = ["Report", "TestOutcome"]


@dataclass
class TestOutcome:
    """One goodness-of-fit test inside a :class:`Report`."""

    __test__ = False  # not a pytest class

    name: str
    projection: tuple[int, ...] | str | None
    statistic: str
    value: float
    df: int
    p_value: float
    p_adjusted: float = 1.0
    rejected: bool = False
    method: str = ""
    weight: float | None = None  # share of alpha in the weighted Holm procedure (None: outside it)
    observed: np.ndarray | None = field(default=None, repr=False)
    expected: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Report:
    """What :func:`~arprob.verify.check` found.

    Attributes
    ----------
    passed
        No test rejected at family-wise level ``alpha`` (Holm) and no sample
        landed on a zero-probability outcome.
    tests
        One :class:`TestOutcome` per (projection, statistic), with raw and
        Holm-adjusted p-values.
    tv_estimate, tv_interval
        Plug-in TV estimate between the sampler's law and the target (the
        joint, or the largest projection), and a ``1 - alpha`` confidence
        interval (see :func:`~arprob.verify.check`).
    tv_null_mean
        The plug-in TV's expected value for an exact sampler at this ``n``
        (exact, from binomial mean absolute deviations): the plug-in estimate
        is biased upwards by about this much, so a correct sampler shows it.
    tv_debiased
        The bootstrap bias-corrected estimate (see :func:`~arprob.verify.check`).
    sequential, planned_samples, looks
        Whether the run could stop early; the samples a passing run draws;
        one entry per look taken (samples, level, smallest adjusted p-value,
        whether it rejected).  ``num_samples`` is what was drawn: the stopping
        time when a look rejected.
    exact_tv
        TV(law, target) when the sampler exposes its exact law, else ``None``.
    resolution
        The smallest TV distance this run detects with probability ``power``
        (:func:`~arprob.verify.detectable` at its ``num_samples``, for the largest
        test's cells at its level in the weighted Holm procedure:
        ``alpha`` times its share, see :mod:`arprob.verify.plans`).
    samples_per_second, seconds, compile_seconds
        Throughput of sampling and counting, and the time spent compiling.
    fused, num_devices, batch_size
        Whether sampling and counting ran as one compiled loop, on how many
        devices, in batches of what size.
    """

    passed: bool
    tests: list[TestOutcome]
    num_samples: int
    alpha: float
    power: float
    deviation: float
    planned: bool
    tv_estimate: float
    tv_interval: tuple[float, float]
    tv_scope: str
    exact_tv: float | None
    nfe: float | None
    samples_per_second: float
    seconds: float
    zero_probability_hits: list
    seed: int
    vocab_size: int
    length: int
    target: str = ""
    sampler: str = ""
    resolution: float | None = None
    compile_seconds: float = 0.0
    fused: bool = False
    num_devices: int = 1
    batch_size: int = 0
    sequential: bool = False
    planned_samples: int = 0
    looks: list = field(default_factory=list)
    tv_null_mean: float | None = None
    tv_debiased: float | None = None
    tv_interval_method: str = ""

    # Report.plot: p-values below P_FLOOR are drawn at -log10(P_FLOOR) and marked capped; every cell drawn
    # is labelled by its tokens when at most MAX_CELL_LABELS are drawn, else the DEVIANT_CELL_LABELS
    # farthest from their expected counts (more labels would overlap)
    P_FLOOR: ClassVar[float] = 1e-300
    MAX_CELL_LABELS: ClassVar[int] = 32
    DEVIANT_CELL_LABELS: ClassVar[int] = 12

    @property
    def min_p_value(self) -> float:
        return min((t.p_adjusted for t in self.tests), default=1.0)

    def to_dict(self) -> dict:
        """A JSON-serializable dictionary (arrays of counts omitted)."""
        out = {k: v for k, v in asdict(self).items() if k != "tests"}
        out["tests"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(t).items()
             if k not in ("observed", "expected")}
            for t in self.tests
        ]
        out["tv_interval"] = list(self.tv_interval)
        out["zero_probability_hits"] = [list(map(int, h)) for h in self.zero_probability_hits]
        return out

    def summary(self) -> str:
        """A plain-text table of the tests and the verdict."""
        stopped = ""
        if self.sequential:
            stopped = (f" (stopped at look {len(self.looks)} of a plan of {self.planned_samples:,})"
                       if self.num_samples < self.planned_samples else f" (sequential, {len(self.looks)} looks)")
        lines = [
            f"{'PASSED' if self.passed else 'FAILED'}: {self.sampler or 'sampler'} vs {self.target or 'target'}"
            f" | n = {self.num_samples:,}{stopped} | alpha = {self.alpha:g} (weighted Holm over "
            f"{sum(t.weight is not None for t in self.tests)} tests)",
            f"resolution: detects TV >= {self.resolution:.3g} with probability {self.power:g}"
            f" | {self.samples_per_second:,.0f} samples/s"
            f" ({'compiled loop' if self.fused else 'Python loop'}, {self.num_devices} device(s))",
            f"TV estimate {self.tv_estimate:.4g}, {100 * (1 - self.alpha):g}% interval "
            f"[{self.tv_interval[0]:.4g}, {self.tv_interval[1]:.4g}] ({self.tv_scope})"
            + (f", exact TV {self.exact_tv:.4g}" if self.exact_tv is not None else ""),
            *([f"an exact sampler shows a plug-in TV of {self.tv_null_mean:.4g} on average at this n; "
               f"bias-corrected estimate {self.tv_debiased:.4g}"] if self.tv_null_mean is not None else []),
            f"{'test':<28}{'statistic':>10}{'value':>14}{'df':>8}{'p':>12}{'p (Holm)':>12}",
        ]
        for t in self.tests:
            lines.append(f"{t.name:<28}{t.statistic:>10}{t.value:>14.4g}{t.df:>8}{t.p_value:>12.3g}"
                         f"{t.p_adjusted:>12.3g}" + ("  REJECT" if t.rejected else ""))
        if self.zero_probability_hits:
            lines.append(f"samples on zero-probability outcomes: {self.zero_probability_hits[:5]}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def plot(self, max_cells: int = 64):
        """Matplotlib figure: observed vs expected counts of the ``max_cells`` (>= 1) most likely cells of the
        largest test, and the tests' p-values.

        The title names the sampler, the target and the verdict.  The cells of a test on sequences (the joint
        or a projection on some positions) are labelled by their tokens (digits run together when
        ``vocab_size <= 10``): every drawn cell when at most ``MAX_CELL_LABELS`` (32) are drawn, else the
        ``DEVIANT_CELL_LABELS`` (12) farthest from their expected counts in standard deviations.  A p-value
        below ``P_FLOOR`` (1e-300; 0 for the support test and for statistics whose tail underflows) is drawn
        at ``-log10 P_FLOOR``, hatched and marked "capped".
        """
        max_cells = check_int("Report.plot", "max_cells", max_cells, minimum=1,
                              fix="pass how many of the most likely cells to draw, e.g. max_cells=64")
        import matplotlib.pyplot as plt

        fig, (ax_counts, ax_p) = plt.subplots(1, 2, figsize=(11, 3.8))
        counted = [t for t in self.tests if t.observed is not None]

        def on_sequences(t: TestOutcome) -> bool:  # the joint or a projection: its cells are token sequences
            return t.projection is None or isinstance(t.projection, tuple)

        if counted:
            test = max(counted, key=lambda t: (on_sequences(t), t.observed.size))  # sequences first
            order = np.argsort(-test.expected, kind="stable")[:max_cells]
            positions = np.arange(order.size)
            ax_counts.bar(positions, test.observed[order], width=0.8, alpha=0.6, label="observed")
            ax_counts.plot(positions, test.expected[order], "k.", label="expected")
            spread = 3 * np.sqrt(test.expected[order])
            ax_counts.vlines(positions, test.expected[order] - spread, test.expected[order] + spread,
                             colors="k", linewidth=0.8, label="expected ± 3 sd")
            ax_counts.set_title(f"{test.name}: {order.size} most likely cells", fontsize=10)
            ax_counts.set_ylabel("count")
            ax_counts.legend(fontsize=8)
            if on_sequences(test):
                labelled = positions
                if order.size > self.MAX_CELL_LABELS:
                    residual = np.abs(test.observed[order] - test.expected[order]) / np.sqrt(
                        np.maximum(test.expected[order], 1e-300))
                    labelled = np.sort(np.argsort(-residual, kind="stable")[:self.DEVIANT_CELL_LABELS])
                width = self.length if test.projection is None else len(test.projection)
                ax_counts.set_xticks(labelled, [self._cell_label(order[i], width) for i in labelled],
                                     rotation=90, fontsize=7 if width <= 6 else 6, family="monospace")
                where = "x" if test.projection is None else "x[" + ",".join(map(str, test.projection)) + "]"
                which = "" if labelled.size == order.size else f"; labelled: the {labelled.size} farthest from expected"
                ax_counts.set_xlabel(f"cell = {where} (by expected count{which})", fontsize=8)
            else:
                ax_counts.set_xlabel("cell (by expected count)")
        names = [t.name for t in self.tests]
        capped = [t.p_adjusted < self.P_FLOOR for t in self.tests]
        heights = [-np.log10(max(t.p_adjusted, self.P_FLOOR)) for t in self.tests]
        colors = ["tab:red" if t.rejected else "tab:blue" for t in self.tests]
        rows = np.arange(len(names))
        bars = ax_p.barh(rows, heights, color=colors)
        for bar, is_capped in zip(bars, capped):
            if is_capped:
                bar.set_hatch("//")
                ax_p.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, "capped ", va="center", ha="right",
                          fontsize=7, color="white")
        ax_p.axvline(-np.log10(self.alpha), color="k", linestyle="--", label=f"alpha = {self.alpha:g}")
        ax_p.set_yticks(rows, [name + (f" (p < {self.P_FLOOR:g})" if is_capped else "")
                               for name, is_capped in zip(names, capped)], fontsize=7)
        ax_p.set_xlabel("-log10 Holm-adjusted p-value" + (f" (capped at {-np.log10(self.P_FLOOR):g})"
                                                          if any(capped) else ""))
        ax_p.legend(fontsize=8)
        verdict = "passed" if self.passed else "FAILED"
        fig.suptitle(f"{self.sampler or 'sampler'} vs {self.target or 'target'}: {verdict} — n = {self.num_samples:,}")
        fig.tight_layout()
        return fig

    def _cell_label(self, cell: int, width: int) -> str:
        """The tokens of cell ``cell`` of a test on ``width`` positions: digits run together when
        ``vocab_size <= 10``, else separated by spaces."""
        tokens = np.unravel_index(int(cell), (self.vocab_size,) * width)
        return ("" if self.vocab_size <= 10 else " ").join(str(int(token)) for token in tokens)
