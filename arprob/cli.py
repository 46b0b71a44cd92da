"""Command line: ``arprob check`` runs the built-in verification suite."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEVIATION = 0.005  # TV each row detects with probability --power (the default run)
QUICK_DEVIATION = 0.02  # the same with --quick

def _run_check(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    if args.cache:
        # compiled loops are kept across runs: a second `arprob check` skips most compilation
        jax.config.update("jax_compilation_cache_dir", str(Path(args.cache).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from arprob import suite as builtin_suite
    from arprob.verify import check

    started = time.perf_counter()

    console = Console(width=None if sys.stdout.isatty() else 170)
    deviation = args.deviation if args.deviation is not None else (QUICK_DEVIATION if args.quick else DEVIATION)
    suite = builtin_suite.cases(quick=args.quick)
    rows, records = [], []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("arprob check", total=len(suite))
        samples = progress.add_task("samples", total=1, visible=False)

        def on_progress(done, total, seconds):
            progress.update(samples, completed=done, total=total, visible=True)

        for case in suite:
            progress.update(task, description=f"{case.sampler} on {case.model}")
            progress.reset(samples, total=1, visible=False)
            sampler, target = case.make()
            report = check(sampler, target, alpha=args.alpha, power=args.power, deviation=deviation,
                           seed=args.seed, devices=args.devices, progress=on_progress,
                           sequential=args.sequential)
            exact_tv = report.exact_tv
            if case.claim == "exact":
                ok = report.passed and (exact_tv is None or exact_tv < 1e-10)
                verdict = "PASS" if ok else "FAIL"
                claim = "exact"
            else:
                ok = True
                verdict = "detected" if not report.passed else "not detected"
                claim = f"approximate (TV = {exact_tv:.3g})" if exact_tv is not None else "approximate"
            rows.append((case.sampler, case.model, claim, exact_tv, report.min_p_value,
                         report.samples_per_second, report.num_samples, report.resolution, verdict, ok))
            record = {"sampler": case.sampler, "model": case.model, "claim": case.claim, "verdict": verdict,
                      "ok": ok, "report": report.to_dict()}
            records.append(record)
            if args.plots:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                directory = Path(args.plots)
                directory.mkdir(parents=True, exist_ok=True)
                name = f"{len(records):02d}-" + "".join(c if c.isalnum() else "-" for c in
                                                        f"{case.sampler}-{case.model}").strip("-")
                figure = report.plot()
                figure.savefig(directory / f"{name}.png", dpi=90)
                plt.close(figure)
            progress.advance(task)

    table = Table(title=f"arprob check — alpha {args.alpha:g} (Holm), power {args.power:g} "
                        f"against TV {deviation:g}")
    for column in ("sampler", "model", "claim", "exact TV(law, target)", "GoF p (Holm)", "samples/s",
                   "n", "detects TV >=", "verdict"):
        table.add_column(column, justify="right" if column in ("samples/s", "n", "detects TV >=") else "left")
    for sampler, model, claim, exact_tv, p_value, rate, n, resolution, verdict, ok in rows:
        style = "green" if verdict == "PASS" else ("red" if not ok else "yellow")
        table.add_row(sampler, model, claim, "—" if exact_tv is None else f"{exact_tv:.2e}",
                      f"{p_value:.3g}", f"{rate:,.0f}", f"{n:,}", f"{resolution:.2g}", f"[{style}]{verdict}[/{style}]")
    console.print(table)
    console.print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s; \"detects TV >=\": the smallest "
                  f"total-variation distance each row's sample size detects with probability {args.power:g}")
    failures = [row for row in rows if not row[-1]]
    if args.json:
        Path(args.json).write_text(json.dumps({"deviation": deviation, "alpha": args.alpha,
                                               "power": args.power, "cases": records}, indent=2))
    if failures:
        console.print(f"[red]{len(failures)} sampler(s) that claim exactness FAILED[/red]")
        return 1
    console.print(f"[green]all {sum(1 for r in rows if r[2] == 'exact')} exact samplers passed[/green]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``arprob`` argument parser (docs/cli.md lists its options from it)."""
    parser = argparse.ArgumentParser(prog="arprob", description="Exactly checkable probability for "
                                     "autoregressive-style generation.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run the built-in verification suite")
    check.add_argument("--quick", action="store_true",
                       help=f"small sample sizes (TV {QUICK_DEVIATION:g} detectable), for CI")
    check.add_argument("--json", metavar="FILE", help="write every report as JSON")
    check.add_argument("--plots", metavar="DIR", help="write one PNG per case")
    check.add_argument("--alpha", type=float, default=1e-4, help="family-wise false-alarm rate per case")
    check.add_argument("--power", type=float, default=0.99, help="power against the deviation")
    check.add_argument("--deviation", type=float, default=None,
                       help=f"TV distance to detect (default {DEVIATION:g}, or {QUICK_DEVIATION:g} with --quick)")
    check.add_argument("--devices", choices=["all"], default=None,
                       help="spread each row's batches over every local device (jax.shard_map)")
    check.add_argument("--sequential", action="store_true",
                       help="stop each case at the first look that rejects (looks after 2048 samples, then every "
                            "4 times more); by default every case runs to its planned n")
    check.add_argument("--seed", type=int, default=0,
                       help="seed of every row's key streams (same seed, identical reports)")
    check.add_argument("--cache", metavar="DIR", default=os.environ.get("ARPROB_CACHE", "~/.cache/arprob/jax"),
                       help="persistent compilation cache (default ~/.cache/arprob/jax or $ARPROB_CACHE; "
                            "'' to disable)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        return _run_check(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
