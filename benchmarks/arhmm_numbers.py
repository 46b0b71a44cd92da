r"""The measured numbers of ``docs/concepts/arhmm.md`` (section *Numbers*): speed and NUTS.

``speed``
    A jitted ``ARHMM.log_prob`` on the problem of ``benchmarks/hmm_vs_peers.py`` (K = 8 states, D = 2,
    one lag, a sticky random ARHMM simulated with numpy, T = 100000), in float64 and in float32: the
    first call (compilation included) and the median of ``--repeats`` warm calls, the two dtypes
    interleaved so that a change of machine load hits both alike; and ``|log p_32 - log p_64|`` on the
    same data (the float32 model and data are the float64 ones rounded).
``nuts``
    numpyro NUTS, 300 warm-up + 300 draws, one chain, on T = 400 observations simulated from a
    two-state ARHMM with D = 1, p = 1 and the stationary initial law (:data:`TRUTH`, drawn with
    ``jax.random.key(0)``); :func:`model` and :func:`run_nuts` are what the page shows (it prints their
    source from this file).  Posterior means and standard deviations of every parameter, the wall time
    of the run (compilation included) and the number of divergent transitions.

Run: ``python benchmarks/arhmm_numbers.py --json benchmarks/results/arhmm_numbers.json`` (about a
minute on 2 CPU cores); the page renders its bullets from that file when the docs are built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from arprob import ARHMM  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hmm_vs_peers import arprob_model, make_parameters, simulate  # noqa: E402

SPEED_TIMESTEPS = 100_000
NUTS_TIMESTEPS = 400
TRUTH = dict(stay=[0.95, 0.90], a=[0.7, -0.4], b=[1.0, -1.0], sd=[0.5, 0.5**0.5])


# ----------------------------------------------------------------------------- the model the page shows


def model(y):
    stay = numpyro.sample("stay", dist.Beta(5 * jnp.ones(2), 1.0))
    transition = jnp.stack([jnp.array([stay[0], 1 - stay[0]]), jnp.array([1 - stay[1], stay[1]])])
    a = numpyro.sample("a", dist.Normal(jnp.zeros(2), 1.0))
    b = numpyro.sample("b", dist.Normal(jnp.array([1.0, -1.0]), 1.0))
    sd = numpyro.sample("sd", dist.HalfNormal(jnp.ones(2)))
    numpyro.sample("y", ARHMM("stationary", transition, a[:, None, None, None], b[:, None],
                              (sd**2)[:, None, None], 1), obs=y)


def run_nuts(y):
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=300, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), y, extra_fields=("diverging",))
    return mcmc


# ----------------------------------------------------------------------------- measurements


def true_model(length):
    stay, a, b, sd = (np.asarray(TRUTH[name]) for name in ("stay", "a", "b", "sd"))
    transition = np.array([[stay[0], 1 - stay[0]], [1 - stay[1], stay[1]]])
    return ARHMM("stationary", transition, a[:, None, None, None], b[:, None], (sd**2)[:, None, None], 1,
                 length=length)


def measure_speed(repeats):
    parameters = make_parameters()
    y = simulate(parameters, SPEED_TIMESTEPS, seed=0)
    calls = {}
    for dtype in (jnp.float64, jnp.float32):
        log_prob = jax.jit(arprob_model(parameters, dtype).log_prob)
        data = jnp.asarray(y, dtype)
        start = time.perf_counter()
        value = jax.block_until_ready(log_prob(data))
        calls[jnp.dtype(dtype).name] = dict(function=log_prob, data=data, value=value,
                                            first_call_s=time.perf_counter() - start, times=[])
    for _ in range(repeats):
        for entry in calls.values():
            start = time.perf_counter()
            entry["value"] = jax.block_until_ready(entry["function"](entry["data"]))
            entry["times"].append(time.perf_counter() - start)
    result = dict(num_states=parameters[1].shape[0], dimension=y.shape[1], num_lags=parameters[2].shape[1],
                  num_timesteps=SPEED_TIMESTEPS, repeats=repeats)
    for name, entry in calls.items():
        result[name] = dict(first_call_s=entry["first_call_s"], warm_s=statistics.median(entry["times"]),
                            log_prob=float(entry["value"]), dtype=str(entry["value"].dtype))
    result["float32_error"] = abs(result["float32"]["log_prob"] - result["float64"]["log_prob"])
    result["float32_floor"] = abs(float(np.float32(result["float64"]["log_prob"])) - result["float64"]["log_prob"])
    print(f"speed: {json.dumps(result)}", flush=True)
    return result


def measure_nuts():
    y = true_model(NUTS_TIMESTEPS).sample(jax.random.key(0))
    start = time.perf_counter()
    mcmc = run_nuts(y)
    samples = jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    posterior = {name: dict(mean=np.asarray(samples[name].mean(0)).tolist(),
                            sd=np.asarray(samples[name].std(0)).tolist(), truth=TRUTH[name])
                 for name in TRUTH}
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    result = dict(num_timesteps=NUTS_TIMESTEPS, num_warmup=300, num_samples=300, seconds=seconds,
                  divergences=divergences, posterior=posterior)
    print(f"nuts: {json.dumps(result)}", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="warm calls per dtype (median)")
    parser.add_argument("--json", default=None, help="write the results here (the docs read "
                        "benchmarks/results/arhmm_numbers.json)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    header = dict(jax=jax.__version__, numpyro=numpyro.__version__, numpy=np.__version__,
                  python=platform.python_version(), backend=jax.default_backend(), machine=platform.machine(),
                  cpu_count=os.cpu_count())
    print(json.dumps(header), flush=True)
    results = dict(header=header, speed=measure_speed(args.repeats), nuts=measure_nuts())
    header["wall_s"] = time.perf_counter() - started
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
