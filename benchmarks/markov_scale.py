r"""Stationary laws of window chains at scale: arprob's ``MarkovView`` against baselines and peers (issue 13, §3).

Chains: :math:`T = 2` tokens, context size :math:`K`, :math:`2^K` windows; window :math:`w`'s next-token law is
:math:`(u_w, 1 - u_w)` with :math:`u \sim U(0, 1)` from ``numpy.random.default_rng(0)`` (drawn in chunks:
the same stream as one call).  Every chain is irreducible and aperiodic, so the stationary law is unique.

Methods (each measurement runs in a fresh worker process, so a first call pays its compilation):

``arprob``
    ``MarkovView.from_table(table).stationary()``: the table's validation, the structure check, a dense
    solve for chains of at most 2,048 windows, else the jitted matrix-free power iteration
    (``arprob.markov.operators.power_iteration``, tol 1e-13).  ``first_s`` is the first call in the
    process (compilation included), ``warm_s`` a second call on a new view.
``baseline``
    The plain matrix-free JAX power iteration the issue timed: the table closed over as a constant,
    ``jnp.einsum`` for the step, a ``lax.while_loop`` until :math:`\lVert \mu Q - \mu \rVert_1 \le 10^{-13}`
    (checked every step).  ``compile_s`` + ``run_s``.
``eigs``
    ``scipy.sparse.linalg.eigs(Q.T, k=1)`` on the CSR matrix of ``MarkovView.transition("windows")``
    (``csr_s`` to build it, not counted in ``first_s``).  Run at the scale size only when the probe at
    :math:`K - 4` predicts (times 16) under ``EIGS_LIMIT_S``; otherwise only at :math:`K - 4`.
``quantecon``, ``pydtmc``
    ``quantecon.MarkovChain(P).stationary_distributions`` and ``pydtmc.MarkovChain(P).pi`` on the dense
    ``P`` (``transition("windows").toarray()``, not timed), capped at ``PEER_TIMEOUT_S`` each.

Every law is checked by the same float64 NumPy residual :math:`\lVert \mu Q - \mu \rVert_1` and by its
:math:`\ell_1` distance to arprob's law at the same size.  ``peak_rss_bytes`` is the worker's VmHWM (the
table it built included).  Ratios are ``other / arprob`` (> 1: arprob faster).

Run: ``python benchmarks/markov_scale.py [--quick] [--output PATH]`` (default
``benchmarks/results/markov_scale.json``).  The full run took 9-13 minutes on 2 cores and needs
about 14 GiB of memory (the :math:`2^{27}`-window chain in float64); ``--quick`` runs tiny sizes in
about 35 s.  The peers come with the ``bench`` extra; without them their rows say ``skipped``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # time this checkout's arprob, installed or not

#: Windows per chunk when drawing a table (2**22 windows: 32 MiB of uniforms at a time).
CHUNK = 1 << 22
#: The issue's time target for the 2**24-window stationary law, compilation included.
TARGET_S = 8.0
#: Memory the 10**8-state run may use.
MEMORY_LIMIT_BYTES = 20 * 2**30
#: eigs runs at the scale size only if predicted (16 x the probe's time) under this.
EIGS_LIMIT_S = 240.0
#: Wall-clock cap on each peer call (quantecon, PyDTMC), in a subprocess.
PEER_TIMEOUT_S = 200.0
#: Cap on every other worker.
WORKER_TIMEOUT_S = 900.0
#: A peer's second (warm) call is made only when its first took less than this.
WARM_IF_UNDER_S = 20.0
TOL = 1e-13
#: The methods compared with arprob at every peer size.
OTHERS = ("baseline", "eigs", "quantecon", "pydtmc")

FULL = dict(scale=24, probe=20, big=27, peers=(6, 8, 10, 12), repeats=3)
QUICK = dict(scale=10, probe=6, big=10, peers=(6,), repeats=1)


# ----------------------------------------------------------------------------- chains


def make_table(context_size: int):
    """``(2**K, 2)`` float64 next-token table, rows ``(u, 1 - u)``, built chunk by chunk (no temporaries)."""
    import numpy as np

    num_windows = 2**context_size
    table = np.empty((num_windows, 2))
    rng = np.random.default_rng(0)
    for start in range(0, num_windows, CHUNK):
        uniform = rng.random(min(CHUNK, num_windows - start))
        table[start:start + len(uniform), 0] = uniform
        np.subtract(1.0, uniform, out=table[start:start + len(uniform), 1])
    return table


def step_residual(table, law) -> float:
    r""":math:`\lVert \mu Q - \mu \rVert_1` in float64 NumPy, the same check for every method."""
    import numpy as np

    law = np.asarray(law, dtype=np.float64)
    grouped = law.reshape(2, -1)
    rows = table.reshape(2, -1, 2)
    moved = grouped[0][:, None] * rows[0] + grouped[1][:, None] * rows[1]
    return float(np.abs(moved.reshape(-1) - law).sum())


def peak_rss_bytes() -> int:
    """Peak resident memory of this process: VmHWM, or ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no /proc (macOS): fall back to the rusage peak below
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------- workers (one per process)


def run_arprob(table, dtype_name: str, warm: bool):
    import numpy as np

    from arprob.markov import MarkovView

    dtype = np.dtype(dtype_name)
    start = time.perf_counter()
    result = MarkovView.from_table(table, dtype=dtype).stationary()
    first = time.perf_counter() - start
    record = dict(first_s=first, iterations=int(result.iterations), arprob_residual=float(result.residual))
    if warm:
        start = time.perf_counter()
        MarkovView.from_table(table, dtype=dtype).stationary()
        record["warm_s"] = time.perf_counter() - start
    return record, result.law


def run_baseline(table):
    """The issue's baseline: table closed over as a constant, ``einsum`` step, ``while_loop``."""
    import jax
    import jax.numpy as jnp

    num_windows, vocab_size = table.shape
    rest = num_windows // vocab_size
    start = time.perf_counter()
    rows = jnp.asarray(table).reshape(vocab_size, rest, vocab_size)

    def iterate(law):
        def body(carry):
            law, _, iterations = carry
            new = jnp.einsum("am,amv->mv", law.reshape(vocab_size, rest), rows).reshape(-1)
            new = new / jnp.sum(new)
            return new, jnp.sum(jnp.abs(new - law)), iterations + 1

        def keep_going(carry):
            return (carry[1] > TOL) & (carry[2] < 1_000_000)

        return jax.lax.while_loop(keep_going, body, (law, jnp.asarray(jnp.inf), jnp.asarray(0)))

    uniform = jnp.full(num_windows, 1.0 / num_windows)
    compiled = jax.jit(iterate).lower(uniform).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    law, _, iterations = compiled(uniform)
    law.block_until_ready()
    run_s = time.perf_counter() - start
    return dict(first_s=compile_s + run_s, compile_s=compile_s, run_s=run_s, iterations=int(iterations)), law


def run_eigs(table):
    import numpy as np
    import scipy.sparse.linalg

    from arprob.markov import MarkovView

    start = time.perf_counter()
    transposed = MarkovView.from_table(table).transition("windows").T.tocsr()
    csr_s = time.perf_counter() - start
    start = time.perf_counter()
    values, vectors = scipy.sparse.linalg.eigs(transposed, k=1, which="LM")
    first = time.perf_counter() - start
    law = np.abs(vectors[:, 0].real)
    return dict(first_s=first, csr_s=csr_s, eigenvalue=float(values[0].real)), law / law.sum()


def run_peer(table, peer: str):
    import numpy as np

    from arprob.markov import MarkovView

    dense = MarkovView.from_table(table).transition("windows").toarray()
    if peer == "quantecon":
        import quantecon

        def solve():
            return np.asarray(quantecon.MarkovChain(dense).stationary_distributions)[0]
    else:
        import pydtmc

        def solve():
            return np.asarray(pydtmc.MarkovChain(dense).pi[0])
    start = time.perf_counter()
    law = solve()
    record = dict(first_s=time.perf_counter() - start)
    if record["first_s"] < WARM_IF_UNDER_S:
        start = time.perf_counter()
        solve()
        record["warm_s"] = time.perf_counter() - start
    return record, law


def worker(spec: dict, scratch: Path) -> None:
    """Run one measurement, write ``<label>.json`` (and the law as ``<label>.npy``) into ``scratch``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    table = make_table(spec["context_size"])
    before = peak_rss_bytes()
    method = spec["method"]
    if method == "arprob":
        record, law = run_arprob(table, spec.get("dtype", "float64"), spec.get("warm", True))
    elif method == "baseline":
        record, law = run_baseline(table)
    elif method == "eigs":
        record, law = run_eigs(table)
    else:
        record, law = run_peer(table, method)
    record["peak_rss_bytes"] = peak_rss_bytes()
    record["rss_before_call_bytes"] = before
    law = np.asarray(law, dtype=np.float64)
    record["residual"] = step_residual(table, law)
    if spec.get("save_law", True):
        np.save(scratch / f"{spec['label']}.npy", law)
    (scratch / f"{spec['label']}.json").write_text(json.dumps(record))


# ----------------------------------------------------------------------------- the parent


def measure(spec: dict, scratch: Path, timeout: float) -> dict:
    """Run ``spec`` in a fresh worker process; returns its record with ``status`` ok / timeout / error."""
    row = dict(spec, vocab_size=2, num_windows=2 ** spec["context_size"])
    row.setdefault("dtype", "float64")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--scratch", str(scratch)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        row.update(status="timeout", timeout_s=timeout, wall_s=time.perf_counter() - start)
    else:
        row["wall_s"] = time.perf_counter() - start
        result = scratch / f"{spec['label']}.json"
        if done.returncode == 0 and result.exists():
            row.update(json.loads(result.read_text()), status="ok")
        else:
            row.update(status="error", returncode=done.returncode, error=done.stderr[-2000:])
    report(row)
    return row


def report(row: dict) -> None:
    where = f"{row['method']:<9} K={row['context_size']:<2} {row['dtype']:<7}"
    if row["status"] != "ok":
        detail = row.get("error", "").strip().splitlines()[-1:] or [""]
        print(f"  {where} {row['status'].upper()} after {row['wall_s']:.1f} s {detail[0][:150]}", flush=True)
        return
    parts = [f"first {row['first_s']:8.3f} s"]
    for key in ("warm_s", "compile_s", "run_s", "csr_s"):
        if key in row:
            parts.append(f"{key[:-2]} {row[key]:.3f} s")
    if "iterations" in row:
        parts.append(f"{row['iterations']} it")
    parts.append(f"residual {row['residual']:.1e}")
    parts.append(f"peak {row['peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"  {where} " + ", ".join(parts), flush=True)


def skipped(method: str, context_size: int, why: str) -> dict:
    row = dict(method=method, context_size=context_size, vocab_size=2, num_windows=2**context_size,
               dtype="float64", label=f"skipped-{method}-{context_size}", status="skipped", note=why)
    print(f"  {method:<9} K={context_size:<2} float64 SKIPPED ({why})", flush=True)
    return row


def l1(scratch: Path, label: str, other: str):
    import numpy as np

    first, second = scratch / f"{label}.npy", scratch / f"{other}.npy"
    if not (first.exists() and second.exists()):
        return None
    return float(np.abs(np.load(first) - np.load(second)).sum())


def ok(row) -> bool:
    return row is not None and row["status"] == "ok"


def median_of(rows, key="first_s"):
    values = [row[key] for row in rows if ok(row) and key in row]
    return statistics.median(values) if values else None


def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def header(quick: bool, sizes: dict) -> dict:
    import jax
    import numpy as np
    import scipy

    versions = {}
    for name in ("quantecon", "PyDTMC"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return dict(machine=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                python=platform.python_version(), jax=jax.__version__, backend=jax.default_backend(),
                numpy=np.__version__, scipy=scipy.__version__, **versions, quick=quick, sizes=sizes,
                date=date.today().isoformat(), load_average_start=os.getloadavg()[0], tol=TOL)


def peers_available() -> dict:
    available = {}
    for method, module in (("quantecon", "quantecon"), ("pydtmc", "pydtmc")):
        try:
            __import__(module)
            available[method] = True
        except ImportError:
            available[method] = False
    return available


def run_all(quick: bool, scratch: Path) -> dict:
    sizes = dict(QUICK if quick else FULL)
    result = dict(header=header(quick, {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}))
    rows = []
    scale, probe, big = sizes["scale"], sizes["probe"], sizes["big"]
    started = time.perf_counter()

    # 1. the 2**scale stationary law: arprob (first call) against the closed-over einsum loop, interleaved
    print(f"[1] stationary law of 2**{scale} windows: arprob vs the einsum baseline vs eigs", flush=True)
    ours, baselines = [], []
    for repeat in range(sizes["repeats"]):
        ours.append(measure(dict(method="arprob", context_size=scale, label=f"scale-arprob-{repeat}",
                                 warm=repeat == 0, save_law=repeat == 0), scratch, WORKER_TIMEOUT_S))
        baselines.append(measure(dict(method="baseline", context_size=scale, label=f"scale-baseline-{repeat}",
                                      save_law=repeat == 0), scratch, WORKER_TIMEOUT_S))
    rows += ours + baselines
    single = measure(dict(method="arprob", context_size=scale, dtype="float32", label="scale-arprob32"),
                     scratch, WORKER_TIMEOUT_S)
    rows.append(single)
    probe_rows = [measure(dict(method=m, context_size=probe, label=f"probe-{m}"), scratch, WORKER_TIMEOUT_S)
                  for m in ("arprob", "baseline", "eigs")]
    rows += probe_rows
    eigs_probe = probe_rows[2]
    predicted = 2 ** (scale - probe) * eigs_probe["first_s"] if ok(eigs_probe) else math.inf
    if predicted < EIGS_LIMIT_S:
        eigs_scale = measure(dict(method="eigs", context_size=scale, label="scale-eigs"), scratch, EIGS_LIMIT_S)
    else:
        eigs_scale = skipped("eigs", scale, f"predicted {predicted:.0f} s from K={probe}, over {EIGS_LIMIT_S:.0f} s")
    rows.append(eigs_scale)
    eigs_at = scale if ok(eigs_scale) else probe
    if not ok(eigs_scale):
        eigs_scale.setdefault("note", f"{eigs_scale['status']} after {eigs_scale.get('wall_s', 0):.0f} s")
        eigs_scale["note"] = f"at K={scale}: {eigs_scale['note']}; reported at K={probe}"
    arprob_first = median_of(ours)
    baseline_total = median_of(baselines)
    eigs_row = eigs_scale if ok(eigs_scale) else eigs_probe
    arprob_at_eigs = arprob_first if eigs_at == scale else median_of(probe_rows[:1])
    result["stationary"] = dict(
        context_size=scale, num_windows=2**scale, target_s=TARGET_S,
        arprob_first_s=arprob_first, arprob_first_runs=[r.get("first_s") for r in ours],
        arprob_warm_s=ours[0].get("warm_s"), arprob_iterations=ours[0].get("iterations"),
        arprob_residual=ours[0].get("residual"),
        meets_target=None if arprob_first is None or scale != FULL["scale"] else arprob_first < TARGET_S,
        baseline_total_s=baseline_total, baseline_compile_s=median_of(baselines, "compile_s"),
        baseline_run_s=median_of(baselines, "run_s"), baseline_runs=[r.get("first_s") for r in baselines],
        baseline_iterations=baselines[0].get("iterations"), baseline_residual=baselines[0].get("residual"),
        ratio_baseline=ratio(baseline_total, arprob_first),
        eigs_context_size=eigs_at, eigs_s=eigs_row.get("first_s"), eigs_csr_s=eigs_row.get("csr_s"),
        eigs_residual=eigs_row.get("residual"), eigs_note=eigs_scale.get("note", ""),
        ratio_eigs=ratio(eigs_row.get("first_s"), arprob_at_eigs),
        float32_first_s=single.get("first_s"), float32_residual=single.get("residual"),
        l1_baseline=l1(scratch, "scale-arprob-0", "scale-baseline-0"),
        l1_eigs=l1(scratch, "scale-arprob-0", "scale-eigs") if eigs_at == scale else l1(scratch, "probe-arprob",
                                                                                         "probe-eigs"),
        l1_float32=l1(scratch, "scale-arprob-0", "scale-arprob32"),
        l1_baseline_probe=l1(scratch, "probe-arprob", "probe-baseline"),
    )

    # 2. the largest chain: float64 if it fits, else float32
    print(f"[2] 2**{big} windows within {MEMORY_LIMIT_BYTES / 2**30:.0f} GiB", flush=True)
    largest = measure(dict(method="arprob", context_size=big, label="big-arprob", warm=False, save_law=False),
                      scratch, WORKER_TIMEOUT_S)
    if not ok(largest) or largest["peak_rss_bytes"] > MEMORY_LIMIT_BYTES:
        rows.append(largest)  # the float64 attempt stays on record
        largest = measure(dict(method="arprob", context_size=big, dtype="float32", label="big-arprob32",
                               warm=False, save_law=False), scratch, WORKER_TIMEOUT_S)
    rows.append(largest)
    result["largest"] = dict(
        context_size=big, num_windows=2**big, dtype=largest["dtype"], status=largest["status"],
        time_s=largest.get("first_s"), iterations=largest.get("iterations"), residual=largest.get("residual"),
        peak_rss_bytes=largest.get("peak_rss_bytes"), rss_before_call_bytes=largest.get("rss_before_call_bytes"),
        limit_bytes=MEMORY_LIMIT_BYTES,
        within_limit=ok(largest) and largest["peak_rss_bytes"] <= MEMORY_LIMIT_BYTES)

    # 3. peers on dense P, with arprob, the baseline and eigs at the same sizes
    print("[3] peers on the dense window chains", flush=True)
    available = peers_available()
    peers = []
    for context_size in sizes["peers"]:
        group = {m: measure(dict(method=m, context_size=context_size, label=f"peer-{m}-{context_size}"), scratch,
                            WORKER_TIMEOUT_S) for m in ("arprob", "baseline", "eigs")}
        for peer in ("quantecon", "pydtmc"):
            if available[peer]:
                group[peer] = measure(dict(method=peer, context_size=context_size, label=f"peer-{peer}-{context_size}"),
                                      scratch, PEER_TIMEOUT_S)
            else:
                group[peer] = skipped(peer, context_size, "not installed (pip install -e '.[bench]')")
        rows += list(group.values())
        arprob_row = group["arprob"]
        entry = dict(context_size=context_size, num_windows=2**context_size,
                     arprob_first_s=arprob_row.get("first_s"), arprob_warm_s=arprob_row.get("warm_s"))
        for method in OTHERS:
            row = group[method]
            entry[f"{method}_status"] = row["status"]
            entry[f"{method}_first_s"] = row.get("first_s")
            entry[f"{method}_warm_s"] = row.get("warm_s", row.get("run_s"))
            entry[f"ratio_{method}_first"] = ratio(row.get("first_s"), arprob_row.get("first_s"))
            entry[f"ratio_{method}_warm"] = ratio(entry[f"{method}_warm_s"], arprob_row.get("warm_s"))
            entry[f"l1_{method}"] = l1(scratch, f"peer-arprob-{context_size}", f"peer-{method}-{context_size}")
            entry[f"{method}_residual"] = row.get("residual")
        entry["arprob_residual"] = arprob_row.get("residual")
        peers.append(entry)
    result["peers"] = peers
    result["peers_available"] = available
    result["peers_issue_numbers"] = dict(pydtmc_4096_s=155, quantecon_16384_s=1274, quantecon_65536="out of memory",
                                         note="measured in issue 13; this script stops the peers at 4,096 windows")
    handled = [r for r in rows if ok(r) and r["method"] == "arprob"]
    result["largest_handled"] = dict(
        arprob=max((r["num_windows"] for r in handled), default=None),
        **{peer: max((r["num_windows"] for r in rows if ok(r) and r["method"] == peer), default=None)
           for peer in ("quantecon", "pydtmc", "eigs", "baseline")})
    result["rows"] = rows
    result["header"]["load_average_end"] = os.getloadavg()[0]
    result["header"]["total_s"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------- printing


def fmt(value, spec=".2f", none="-"):
    return none if value is None else format(value, spec)


def print_summary(result: dict) -> None:
    stationary, largest = result["stationary"], result["largest"]
    head = result["header"]
    print(f"\n# {head['machine']}, {head['cpu_count']} CPUs, jax {head['jax']} ({head['backend']}), float64, "
          f"load average {head['load_average_start']:.1f} -> {head['load_average_end']:.1f}, "
          f"{head['total_s']:.0f} s in all")
    print(f"\n2**{stationary['context_size']} windows (first call, compilation included; median of "
          f"{len(stationary['arprob_first_runs'])}):")
    verdict = {True: "met", False: "NOT met", None: f"set for 2**{FULL['scale']}"}[stationary["meets_target"]]
    print(f"  arprob   {fmt(stationary['arprob_first_s'])} s (target < {TARGET_S:.0f} s: {verdict}), "
          f"{stationary['arprob_iterations']} iterations, "
          f"residual {fmt(stationary['arprob_residual'], '.1e')}")
    print(f"  baseline {fmt(stationary['baseline_total_s'])} s = {fmt(stationary['baseline_compile_s'])} compile + "
          f"{fmt(stationary['baseline_run_s'])} run; ratio {fmt(stationary['ratio_baseline'])}; "
          f"L1 to arprob {fmt(stationary['l1_baseline'], '.1e')}")
    print(f"  eigs (K={stationary['eigs_context_size']}) {fmt(stationary['eigs_s'])} s (+ CSR "
          f"{fmt(stationary['eigs_csr_s'])} s); ratio {fmt(stationary['ratio_eigs'])}; L1 to arprob "
          f"{fmt(stationary['l1_eigs'], '.1e')} {stationary['eigs_note']}")
    print(f"  arprob float32 {fmt(stationary['float32_first_s'])} s, residual "
          f"{fmt(stationary['float32_residual'], '.1e')}, L1 to float64 {fmt(stationary['l1_float32'], '.1e')}")
    peak = largest["peak_rss_bytes"]
    print(f"\n2**{largest['context_size']} windows ({largest['dtype']}): {fmt(largest['time_s'], '.1f')} s, "
          f"{largest['iterations']} iterations, residual {fmt(largest['residual'], '.1e')}, peak "
          f"{fmt(peak and peak / 2**30)} GiB (limit {largest['limit_bytes'] / 2**30:.0f} GiB)")
    print("\n| windows | arprob first (s) | arprob warm (s) | baseline (s) | eigs (s) | quantecon (s) | PyDTMC (s) "
          "| ratios first: baseline, eigs, quantecon, PyDTMC | max L1 to arprob |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for entry in result["peers"]:
        cells = []
        for method in OTHERS:
            status = entry[f"{method}_status"]
            cells.append(fmt(entry[f"{method}_first_s"], ".3f") if status == "ok" else status)
        ratios = ", ".join(fmt(entry[f"ratio_{m}_first"], ".1f") for m in OTHERS)
        distances = [entry[f"l1_{m}"] for m in OTHERS if entry[f"l1_{m}"] is not None]
        print(f"| {entry['num_windows']:,} | {fmt(entry['arprob_first_s'], '.3f')} | "
              f"{fmt(entry['arprob_warm_s'], '.4f')} | " + " | ".join(cells) +
              f" | {ratios} | {fmt(max(distances) if distances else None, '.1e')} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (K <= 10, peers at 2**6): under a minute")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "markov_scale.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker), args.scratch)
        return 0
    with tempfile.TemporaryDirectory(prefix="markov_scale_") as scratch:
        result = run_all(args.quick, Path(scratch))
    print_summary(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
