"""Measure the verifier: false-alarm rate on exact samplers, power on biased ones, throughput.

Run: python benchmarks/verifier_calibration.py [--seeds 500]
Prints the numbers quoted in the issue notes (no assertions: tests/test_verify.py asserts).
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

from scipy import stats  # noqa: E402

from arprob import MarkovChain, NGram, TabularJoint  # noqa: E402
from arprob.samplers import ancestral  # noqa: E402
from arprob.verify import check, from_law, tv  # noqa: E402


def interval(k, n):
    result = stats.binomtest(k, n).proportion_ci(0.95)
    return f"{k}/{n} = {k / n:.4f} (95% CI {result.low:.4f}-{result.high:.4f})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=500)
    args = parser.parse_args()
    target = TabularJoint.random(jax.random.key(11), 3, 3)
    p = target.law()
    exact = from_law(p, 3, 3)
    for alpha in (0.05, 0.01):
        joint = sum(not check(exact, target, alpha=alpha, num_samples=3000, projections="joint",
                              seed=s).passed for s in range(args.seeds))
        family = sum(not check(exact, target, alpha=alpha, num_samples=3000, seed=s).passed
                     for s in range(args.seeds))
        print(f"false alarms at alpha={alpha}: joint Pearson {interval(joint, args.seeds)}; "
              f"Pearson+head with Holm {interval(family, args.seeds)}")
    from tests.test_verify import _biased_laws

    for shape, q in _biased_laws(p, 0.05).items():
        seeds = max(100, args.seeds // 5)
        rejected = sum(not check(from_law(q, 3, 3), target, deviation=0.05, power=0.9, seed=s).passed
                       for s in range(seeds))
        print(f"power vs {shape} (TV {tv(p, q):.3f}), planned for 0.9 at alpha 1e-4: {interval(rejected, seeds)}")
    for model in (MarkovChain.random(jax.random.key(2), 8, 3), NGram.random(jax.random.key(3), 8, 2, 2),
                  TabularJoint.random(jax.random.key(1), 4, 3)):
        for order in (None, "random"):
            ancestral(jax.random.key(0), model, 65536, order=order)[0].block_until_ready()
            start = time.perf_counter()
            for i in range(3):
                ancestral(jax.random.key(i + 1), model, 65536, order=order)[0].block_until_ready()
            rate = 3 * 65536 / (time.perf_counter() - start)
            report = check(lambda key, n, m=model, o=order: ancestral(key, m, n, order=o), model,
                           num_samples=262_144)
            print(f"ancestral order={order!s:6} on {model}: {rate:,.0f} samples/s alone; "
                  f"check {report.samples_per_second:,.0f} samples/s, passed={report.passed}")
    fast = from_law(p, 3, 3)
    report = check(fast, target, num_samples=10**7, batch_size=2**20)
    print(f"check streaming 10^7 samples from an explicit law: {report.samples_per_second:,.0f} samples/s, "
          f"{report.seconds:.1f} s, passed={report.passed}")


if __name__ == "__main__":
    main()
