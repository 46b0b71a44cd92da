"""The :class:`Report` returned by :func:`arprob.verify.check`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
        Plug-in TV estimate between the sampler's law and the target, and a
        ``1 - alpha`` confidence interval (see :func:`~arprob.verify.check`).
    exact_tv
        TV(law, target) when the sampler exposes its exact law, else ``None``.
    resolution
        The smallest TV distance this run detects with probability ``power``
        (:func:`~arprob.verify.detectable` at its ``num_samples``, for the largest
        test's cells at the Holm level ``alpha / len(tests)``).
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
        lines = [
            f"{'PASSED' if self.passed else 'FAILED'}: {self.sampler or 'sampler'} vs {self.target or 'target'}"
            f" | n = {self.num_samples:,} | alpha = {self.alpha:g} (Holm over {len(self.tests)} tests)",
            f"resolution: detects TV >= {self.resolution:.3g} with probability {self.power:g}"
            f" | {self.samples_per_second:,.0f} samples/s"
            f" ({'compiled loop' if self.fused else 'Python loop'}, {self.num_devices} device(s))",
            f"TV estimate {self.tv_estimate:.4g}, {100 * (1 - self.alpha):g}% interval "
            f"[{self.tv_interval[0]:.4g}, {self.tv_interval[1]:.4g}] ({self.tv_scope})"
            + (f", exact TV {self.exact_tv:.4g}" if self.exact_tv is not None else ""),
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
        largest test, and p-values."""
        max_cells = check_int("Report.plot", "max_cells", max_cells, minimum=1,
                              fix="pass how many of the most likely cells to draw, e.g. max_cells=64")
        import matplotlib.pyplot as plt

        fig, (ax_counts, ax_p) = plt.subplots(1, 2, figsize=(11, 3.8))
        counted = [t for t in self.tests if t.observed is not None]
        if counted:
            test = max(counted, key=lambda t: t.observed.size)
            order = np.argsort(-test.expected)[:max_cells]
            positions = np.arange(order.size)
            ax_counts.bar(positions, test.observed[order], width=0.8, alpha=0.6, label="observed")
            ax_counts.plot(positions, test.expected[order], "k.", label="expected")
            spread = 3 * np.sqrt(test.expected[order])
            ax_counts.vlines(positions, test.expected[order] - spread, test.expected[order] + spread,
                             colors="k", linewidth=0.8, label="expected ± 3 sd")
            ax_counts.set_title(f"{test.name}: {order.size} most likely cells")
            ax_counts.set_xlabel("cell (by expected count)")
            ax_counts.set_ylabel("count")
            ax_counts.legend(fontsize=8)
        names = [t.name for t in self.tests]
        values = [max(t.p_adjusted, 1e-300) for t in self.tests]
        colors = ["tab:red" if t.rejected else "tab:blue" for t in self.tests]
        ax_p.barh(np.arange(len(names)), -np.log10(values), color=colors)
        ax_p.axvline(-np.log10(self.alpha), color="k", linestyle="--", label=f"alpha = {self.alpha:g}")
        ax_p.set_yticks(np.arange(len(names)), names, fontsize=7)
        ax_p.set_xlabel("-log10 Holm-adjusted p-value")
        ax_p.legend(fontsize=8)
        fig.suptitle(("passed" if self.passed else "FAILED") + f" — n = {self.num_samples:,}")
        fig.tight_layout()
        return fig
