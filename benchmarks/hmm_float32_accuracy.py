"""Float32 accuracy of the HMM log-likelihood at T = 100000 (arprob.inference.hmm vs a naive running sum).

For a random K = 8 state HMM with Gaussian emissions (sticky transitions, means 0..7, unit variance) and
T = 100000 simulated observations, compute log p(y_{0:T-1}) in float32 with

* ``arprob sequential``: :func:`arprob.inference.hmm.hmm_log_likelihood` (two-sum compensated normalisers);
* ``arprob parallel``: the same with ``parallel=True`` (associative scan, compensated offsets);
* ``naive running sum``: the scaled forward filter with the per-step log-normalisers added to a float32
  running sum in the scan carry, as dynamax 1.0.3's ``hmm_filter`` does (written here, dynamax is not needed),

and compare with the float64 value of arprob's sequential kernel (checked against the naive float64 filter).
``float32 floor`` is the error of rounding the float64 reference itself to float32: no float32 result can
be better than that on average (half a unit in the last place of |log p|, 0.0039 nats for |log p| between
65536 and 131072, 0.0078 between 131072 and 262144).

Run: ``python benchmarks/hmm_float32_accuracy.py [--seeds 3] [--num-timesteps 100000] [--json PATH]``.
``benchmarks/results/hmm_float32_accuracy.json`` holds the last recorded run (``--json``); the README and
``docs/concepts/hmm-inference.md`` quote their float32 numbers from it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from arprob.inference.hmm import hmm_log_likelihood  # noqa: E402

NUM_STATES = 8


def random_problem(seed: int, num_timesteps: int):
    """Sticky random HMM, simulated states and Gaussian observations; float64 log-potentials."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(NUM_STATES), size=NUM_STATES)
    transition = 0.9 * np.eye(NUM_STATES) + 0.1 * transition
    initial = rng.dirichlet(np.ones(NUM_STATES))
    states = np.empty(num_timesteps, np.int64)
    states[0] = rng.choice(NUM_STATES, p=initial)
    cumulative = np.cumsum(transition, axis=1)
    uniforms = rng.random(num_timesteps)
    for t in range(1, num_timesteps):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], uniforms[t]), NUM_STATES - 1)
    observations = states + rng.normal(size=num_timesteps)
    means = np.arange(NUM_STATES, dtype=np.float64)
    log_likelihoods = -0.5 * (observations[:, None] - means) ** 2 - 0.5 * np.log(2 * np.pi)
    return np.log(initial), np.log(transition), log_likelihoods


@jax.jit
def naive_log_likelihood(log_initial, log_transition, log_likelihoods):
    """dynamax-style filter: scaled forward pass, log-normalisers added to a plain running sum."""
    transition = jnp.exp(log_transition)

    def condition(probs, log_likelihood):
        top = jnp.max(log_likelihood)
        probs = probs * jnp.exp(log_likelihood - top)
        norm = jnp.sum(probs)
        return probs / norm, jnp.log(norm) + top

    def step(carry, log_likelihood):
        total, predicted = carry
        filtered, log_norm = condition(predicted, log_likelihood)
        return (total + log_norm, filtered @ transition), None

    initial = jnp.exp(log_initial)
    zero = jnp.zeros((), log_likelihoods.dtype)
    (total, _), _ = lax.scan(step, (zero, initial), log_likelihoods)
    return total


def timed(function, *args, **kwargs):
    value = jax.block_until_ready(function(*args, **kwargs))  # compile
    start = time.perf_counter()
    value = jax.block_until_ready(function(*args, **kwargs))
    return float(value), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-timesteps", type=int, default=100_000)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    options = parser.parse_args()
    methods = {
        "arprob sequential": lambda *a: hmm_log_likelihood(*a),
        "arprob parallel": lambda *a: hmm_log_likelihood(*a, parallel=True),
        "naive running sum": naive_log_likelihood,
    }
    print(f"K = {NUM_STATES}, T = {options.num_timesteps}, float32 error |log p_32 - log p_64| in nats "
          f"(seconds per call in brackets, {jax.devices()[0].platform})")
    header = f"{'seed':>4} {'log p (float64)':>18} {'float32 floor':>14} " + " ".join(f"{m:>26}" for m in methods)
    print(header)
    worst = dict.fromkeys(methods, 0.0)
    rows = []
    for seed in range(options.seeds):
        problem = random_problem(seed, options.num_timesteps)
        reference, _ = timed(hmm_log_likelihood, *problem)
        naive64, _ = timed(naive_log_likelihood, *(jnp.asarray(a) for a in problem))
        if abs(naive64 - reference) > 1e-9 * abs(reference):
            raise RuntimeError(f"float64 references disagree: {reference} vs {naive64}")
        problem32 = [np.asarray(a, np.float32) for a in problem]
        floor = abs(float(np.float32(reference)) - reference)
        cells = []
        row = dict(seed=seed, log_prob_float64=reference, float32_floor=floor, errors={}, seconds={})
        for name, method in methods.items():
            value, seconds = timed(method, *(jnp.asarray(a) for a in problem32))
            error = abs(value - reference)
            worst[name] = max(worst[name], error)
            row["errors"][name], row["seconds"][name] = error, seconds
            cells.append(f"{error:>16.5f} ({seconds:6.3f}s)")
        rows.append(row)
        print(f"{seed:>4} {reference:>18.4f} {floor:>14.5f} " + " ".join(f"{c:>26}" for c in cells))
    print("worst: " + ", ".join(f"{name} {value:.5f}" for name, value in worst.items()))
    if options.json:
        header = dict(num_states=NUM_STATES, num_timesteps=options.num_timesteps, seeds=options.seeds,
                      jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine())
        with open(options.json, "w") as handle:
            json.dump(dict(header=header, rows=rows, worst=worst), handle, indent=2)
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
