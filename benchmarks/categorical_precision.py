"""Float32 Gumbel-max: speed of arprob's sampler, a long Monte Carlo, and the masked-diffusion table.

Three parts (theorem 13, ``proofs/13-float32-gumbel-max.md``; guide
``docs/guides/float32-sampling.md``):

``speed``
    Seconds per categorical draw of ``arprob.precision.categorical`` and of
    ``jax.random.categorical`` (float32 logits, 64 rows of V tokens, jit-compiled,
    interleaved repeats, best of each), and their ratio.
``montecarlo``
    One top token, K tokens 16.5 nats below it and K tokens 18 nats below it,
    float32.  Counts of the two tail groups under ``jax.random.categorical`` and
    under arprob's sampler, against softmax, the clamped model
    (``clamped_gumbel_law``) and the exact law of JAX's sampler
    (``jax_grouped_law``, its noise grid enumerated), with exact binomial
    p-values.
``table``
    Entropy, effective temperature and TV of the law written by a naive
    masked-diffusion sampler (``masked_diffusion_summary``, clamped model) for
    Zipf laws over V tokens and N steps, in float32 and float64.

Run: ``python benchmarks/categorical_precision.py [speed|montecarlo|table ...] [--quick]``.
The table at full size takes a few minutes; ``--quick`` shrinks everything.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from arprob import precision  # noqa: E402


def zipf(vocab_size: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


# ---------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------


def speed(vocab_sizes, rows: int = 64, repeats: int = 7) -> list[dict]:
    naive = jax.jit(lambda key, logits: jax.random.categorical(key, logits))
    ours = jax.jit(lambda key, logits: precision.categorical(key, logits))
    results = []
    for vocab_size in vocab_sizes:
        logits = jax.random.normal(jax.random.key(0), (rows, vocab_size), jnp.float32)
        timings = {"jax": [], "arprob": []}
        for function in (naive, ours):
            function(jax.random.key(1), logits).block_until_ready()  # compile
        for repeat in range(repeats):
            for name, function in (("jax", naive), ("arprob", ours)):
                start = time.perf_counter()
                function(jax.random.key(repeat), logits).block_until_ready()
                timings[name].append(time.perf_counter() - start)
        best = {name: min(values) / rows for name, values in timings.items()}
        results.append({"vocab_size": vocab_size, "jax_s_per_draw": best["jax"],
                        "arprob_s_per_draw": best["arprob"], "ratio": best["arprob"] / best["jax"]})
    return results


# ---------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------


def montecarlo(group_size: int, num_samples: int, batch: int = 128, gaps=(16.5, 18.0)) -> dict:
    sizes = np.array([1, group_size, group_size])
    group_logits = np.array([0.0, -gaps[0], -gaps[1]])
    logits = jnp.asarray(np.repeat(group_logits, sizes), jnp.float32)
    edges = jnp.asarray(np.cumsum(sizes)[:-1])

    def counter(sampler):
        @jax.jit
        def draw(key):
            tokens = sampler(key, logits, (batch,))
            groups = jnp.searchsorted(edges, tokens, side="right")
            return jnp.bincount(groups, length=3)
        return draw

    samplers = {"jax": counter(lambda key, l, shape: jax.random.categorical(key, l, shape=shape)),
                "arprob": counter(lambda key, l, shape: precision.categorical(key, l, shape=shape))}
    batches = max(1, num_samples // batch)
    counts = {}
    for name, draw in samplers.items():
        total = np.zeros(3, np.int64)
        start = time.perf_counter()
        for index in range(batches):
            total += np.asarray(draw(jax.random.fold_in(jax.random.key(2024), index)))
        counts[name] = (total, time.perf_counter() - start)
    n = batches * batch
    weights = sizes * np.exp(group_logits)
    laws = {
        "softmax": weights / weights.sum(),
        "clamped model": np.bincount(np.repeat(np.arange(3), sizes),
                                     precision.clamped_gumbel_law(np.repeat(group_logits, sizes),
                                                                  precision.gumbel_cap("float32"),
                                                                  precision.gumbel_floor("float32"))),
        "jax exact (grid)": precision.jax_grouped_law(group_logits, sizes, "float32"),
    }
    return {"samples": n, "group_size": group_size, "gaps": gaps, "counts": counts, "laws": laws}


def _two_sided(count: int, n: int, probability: float) -> float:
    return float(stats.binomtest(int(count), n, probability).pvalue)


def print_montecarlo(result: dict) -> None:
    n = result["samples"]
    print(f"\n## Monte Carlo: 1 top token, {result['group_size']} tokens at -{result['gaps'][0]}, "
          f"{result['group_size']} at -{result['gaps'][1]} (float32), {n} draws per sampler\n")
    print("| law | P(group A) | expected A | P(group B) | expected B |")
    print("|---|---|---|---|---|")
    for name, law in result["laws"].items():
        print(f"| {name} | {law[1]:.4e} | {n * law[1]:.1f} | {law[2]:.4e} | {n * law[2]:.2f} |")
    print("\n| sampler | count A | count B | seconds | p-value vs softmax (A, B) | vs clamped model (A, B) "
          "| vs jax exact (A, B) |")
    print("|---|---|---|---|---|---|---|")
    for name, (total, seconds) in result["counts"].items():
        cells = [f"{_two_sided(total[1], n, law[1]):.2g}, {_two_sided(total[2], n, law[2]):.2g}"
                 for law in result["laws"].values()]
        print(f"| {name} | {total[1]} | {total[2]} | {seconds:.0f} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------------
# masked-diffusion table
# ---------------------------------------------------------------------------


def table(vocab_sizes, step_counts, exponents) -> list[dict]:
    rows = []
    for vocab_size in vocab_sizes:
        for exponent in exponents:
            probs = zipf(vocab_size, exponent)
            for num_steps in step_counts:
                start = time.perf_counter()
                single = precision.masked_diffusion_summary(probs, num_steps, "float32")
                double = precision.masked_diffusion_summary(probs, num_steps, "float64")
                rows.append({"vocab_size": vocab_size, "exponent": exponent, "num_steps": num_steps,
                             "entropy": single.entropy, "float32": single.sampler_entropy,
                             "temperature": single.temperature, "tv": single.tv,
                             "float64_drop": single.entropy - double.sampler_entropy, "float64_tv": double.tv,
                             "seconds": time.perf_counter() - start})
                print_rows(rows[-1:], header=len(rows) == 1)
    return rows


def print_rows(rows, header: bool = True) -> None:
    if header:
        print("\n| V | Zipf s | N | H(p) | H float32 | drop | T_eff float32 | TV float32 | drop float64 | TV float64 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['vocab_size']} | {row['exponent']} | {row['num_steps']} | {row['entropy']:.4f} | "
              f"{row['float32']:.4f} | {row['entropy'] - row['float32']:.4f} | {row['temperature']:.4f} | "
              f"{row['tv']:.4f} | {row['float64_drop']:.1e} | {row['float64_tv']:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["speed", "montecarlo", "table"])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    if "speed" in args.parts:
        print("\n## Speed (float32 logits, 64 rows, best of 7)\n")
        print("| V | jax.random.categorical (us/draw) | arprob (us/draw) | ratio |")
        print("|---|---|---|---|")
        for row in speed([1024, 8192] if args.quick else [1024, 32000, 50257]):
            print(f"| {row['vocab_size']} | {1e6 * row['jax_s_per_draw']:.1f} | "
                  f"{1e6 * row['arprob_s_per_draw']:.1f} | {row['ratio']:.2f} |", flush=True)
    if "montecarlo" in args.parts:
        if args.quick:
            print_montecarlo(montecarlo(group_size=4096, num_samples=512, gaps=(14.0, 16.5)))
        else:
            print_montecarlo(montecarlo(group_size=65536, num_samples=20480))
    if "table" in args.parts:
        if args.quick:
            table([4096], [16, 64], [1.1])
        else:
            table([32000, 50257], [64, 256, 1024, 4096], [1.0, 1.2])
    print(f"\ncap/floor float32 low: {precision.gumbel_cap('float32'):.6f} / {precision.gumbel_floor('float32'):.6f}; "
          f"arprob float32: {precision.gumbel_cap('float32', 'arprob'):.4f} / "
          f"{precision.gumbel_floor('float32', 'arprob'):.4f}; library TV bound at V=1e6: "
          f"{precision.library_tv_bound(10**6):.2e}")


if __name__ == "__main__":
    main()
