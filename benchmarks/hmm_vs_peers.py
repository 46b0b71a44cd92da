r"""arprob's HMM / ARHMM kernels side by side with dynamax 1.0.3 and hmmlearn 0.3 (issue 5, section 5).

Problem: K = 8 states, D = 2, one lag, a sticky random ARHMM simulated with numpy.  Rows:

``loglik``
    :math:`\log p(y_{1:T-1} \mid y_0)` at T = 100000: arprob ``ARHMM.log_prob`` vs dynamax
    ``LinearAutoregressiveHMM.marginal_log_prob`` (dynamax gets ``emissions = y[1:]`` and its lagged
    ``inputs`` precomputed by ``compute_inputs``; arprob builds its lags inside the timed call).
``kernel``
    The likelihood-only kernel :func:`arprob.inference.hmm_log_likelihood` vs dynamax's
    ``hmm_filter(...).marginal_loglik`` on the same precomputed (T-1, K) emission log-likelihoods.
``batch``
    64 sequences x 2000 steps: ``ARHMM.log_prob`` on the (64, 2000, 2) batch vs ``jax.vmap`` of dynamax's.
``viterbi``
    :func:`arprob.inference.hmm_viterbi` vs dynamax ``hmm_posterior_mode`` on the same log-likelihoods.
``smoother``
    :func:`arprob.inference.hmm_smoother` vs dynamax ``hmm_smoother`` (smoothed marginals; the E-step's core).
``parallel``
    ``parallel=True`` forms (associative scan; meant for accelerators) vs dynamax ``parallel_hmm_filter``.
``em``
    One EM iteration at T = 100000, float64: ``arprob.fit_em(model, y, max_iters=1)`` (second and later
    calls; the compiled E-step must not recompile, checked with ``_e_step._cache_size()``) vs dynamax
    ``fit_em(params, props, y, inputs, num_iters=1, verbose=False)`` called a second time (dynamax builds
    its jitted EM loop inside ``fit_em``, so every call compiles again) and, as ``dynamax (jit-wrapped)``,
    the same call wrapped in our own ``jax.jit`` and timed warm.  Note: arprob's ``max_iters=1`` runs one
    E-step, one M-step and one likelihood-only pass (it reports the log-likelihood after the M-step
    too); dynamax's runs one E-step and one M-step.
``em10``
    Ten EM iterations, arprob ``fit_em(max_iters=10, tol=0)`` vs dynamax ``fit_em(num_iters=10)`` jit-wrapped
    (the per-iteration cost once one-off work is amortised).
``hmmlearn``
    Gaussian HMM (``num_lags = 0``, full covariances) at T = 100000, float64: ``ARHMM.log_prob`` vs
    ``GaussianHMM.score`` and ``fit_em(max_iters=1)`` vs ``GaussianHMM.fit`` with ``n_iter=1``,
    ``init_params=""`` (parameters set by hand).
``accuracy``
    ``|float32 - float64|`` log-likelihood at T = 100000 for ``ARHMM.log_prob`` and dynamax's
    ``marginal_log_prob`` (both against arprob's float64 value; the float64 values of the two agree to 1e-9).

Times: first call (compile + run) and the median of ``--repeats`` warm calls, seconds; for every compared
pair the warm calls are interleaved (ours, theirs, ours, ...) so that load changes on a shared machine hit
both alike.  ``ratio = peer_time / arprob_time`` (> 1: arprob faster).

Run: ``python benchmarks/hmm_vs_peers.py --repeats 9 --json benchmarks/results/hmm_vs_peers.json``
(the file ``docs/concepts/hmm-inference.md`` renders its Speed table and dynamax's float32 drift from;
without ``--json`` it writes to ``$ARPROB_BENCH_OUT`` when set, else nowhere).  ``accuracy`` is measured at
T and, on a sequence of its own (seed 0), at the ``--quick`` length T = 20000.  Needs the ``bench`` extra
(dynamax, hmmlearn).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from arprob import ARHMM, fit_em  # noqa: E402
from arprob.distributions.arhmm import _emission_log_likelihoods  # noqa: E402
from arprob.inference import hmm_log_likelihood, hmm_smoother, hmm_viterbi  # noqa: E402
from arprob.learning import em as arprob_em  # noqa: E402

NUM_STATES, DIMENSION, NUM_LAGS = 8, 2, 1
QUICK_TIMESTEPS = 20_000
DEFAULT_JSON = "benchmarks/results/hmm_vs_peers.json"


def _processor():
    """The CPU model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ----------------------------------------------------------------------------- problem


def make_parameters(seed=0, num_lags=NUM_LAGS):
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(NUM_STATES))
    transition = 0.9 * np.eye(NUM_STATES) + 0.1 * rng.dirichlet(np.ones(NUM_STATES), size=NUM_STATES)
    weights = rng.normal(size=(NUM_STATES, num_lags, DIMENSION, DIMENSION)) * 0.3
    biases = 2.0 * rng.normal(size=(NUM_STATES, DIMENSION))
    factors = rng.normal(size=(NUM_STATES, DIMENSION, DIMENSION)) * 0.5
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.3 * np.eye(DIMENSION)
    return initial, transition, weights, biases, covariances


def simulate(parameters, num_timesteps, seed, num_lags=NUM_LAGS):
    """One (T, D) sequence: numpy simulation, the first num_lags rows standard normal."""
    initial, transition, weights, biases, covariances = parameters
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(transition, axis=1)
    states = np.empty(num_timesteps, np.int64)
    states[0] = rng.choice(NUM_STATES, p=initial)
    uniforms = rng.random(num_timesteps)
    for t in range(1, num_timesteps):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], uniforms[t]), NUM_STATES - 1)
    noise = np.einsum("tij,tj->ti", np.linalg.cholesky(covariances)[states], rng.normal(size=(num_timesteps,
                                                                                              DIMENSION)))
    y = np.empty((num_timesteps, DIMENSION))
    y[:num_lags] = rng.normal(size=(num_lags, DIMENSION))
    for t in range(num_lags, num_timesteps):
        k = states[t]
        y[t] = biases[k] + noise[t]
        for lag in range(1, num_lags + 1):
            y[t] += weights[k, lag - 1] @ y[t - lag]
    return y


def arprob_model(parameters, dtype, num_lags=NUM_LAGS):
    return ARHMM(*(jnp.asarray(a, dtype) for a in parameters), num_lags)


def dynamax_model(parameters, dtype):
    """dynamax LinearAutoregressiveHMM with the same parameters (weights (K, D, p*D), block l-1 = lag l)."""
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    initial, transition, weights, biases, covariances = parameters
    peer = LinearAutoregressiveHMM(NUM_STATES, DIMENSION, num_lags=NUM_LAGS)
    stacked = np.transpose(weights, (0, 2, 1, 3)).reshape(NUM_STATES, DIMENSION, NUM_LAGS * DIMENSION)
    params, props = peer.initialize(jax.random.PRNGKey(0), initial_probs=jnp.asarray(initial, dtype),
                                    transition_matrix=jnp.asarray(transition, dtype),
                                    emission_weights=jnp.asarray(stacked, dtype),
                                    emission_biases=jnp.asarray(biases, dtype),
                                    emission_covariances=jnp.asarray(covariances, dtype))
    return peer, params, props


def dynamax_data(peer, y):
    """(emissions, inputs) for dynamax's log p(y_{p:} | y_{:p}) (same conditional likelihood as arprob)."""
    y = jnp.asarray(y)
    return y[NUM_LAGS:], peer.compute_inputs(y[NUM_LAGS:], prev_emissions=y[:NUM_LAGS])


# ----------------------------------------------------------------------------- timing


def timed(function, *args, repeats):
    """(first-call seconds, median warm seconds, value)."""
    start = time.perf_counter()
    value = jax.block_until_ready(function(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), value


ROWS = []


def record(task, dtype, implementation, first, warm, value=None, note=""):
    value = None if value is None else float(np.asarray(value, np.float64).ravel()[0])  # a path: its first state
    row = dict(task=task, dtype=dtype, implementation=implementation, first_call_s=first, warm_s=warm,
               value=value, note=note)
    ROWS.append(row)
    print(f"  {task:<10} {dtype:<8} {implementation:<26} first {first:8.3f}s  warm {warm:8.4f}s  {note}",
          flush=True)
    return row


def failed(task, dtype, implementation, error):
    ROWS.append(dict(task=task, dtype=dtype, implementation=implementation, first_call_s=None, warm_s=None,
                     value=None, note=f"error: {type(error).__name__}: {error}"[:300]))
    print(f"  {task:<10} {dtype:<8} {implementation:<26} FAILED {type(error).__name__}: {error}"[:300], flush=True)


def side_by_side(task, dtype, ours, theirs, repeats):
    """Time two implementations with their warm calls interleaved (ours, theirs, ours, ...), so that a
    change of machine load hits both alike; ``ours``/``theirs`` = ``(implementation, function, args, note)``."""
    entries = []
    for implementation, function, args, note in (ours, theirs):
        try:
            start = time.perf_counter()
            value = jax.block_until_ready(function(*args))
            entries.append([implementation, function, args, note, time.perf_counter() - start, value, []])
        except Exception as error:  # a peer failing must not stop the other rows
            failed(task, dtype, implementation, error)
    for _ in range(repeats):
        for entry in entries:
            start = time.perf_counter()
            entry[5] = jax.block_until_ready(entry[1](*entry[2]))
            entry[6].append(time.perf_counter() - start)
    for implementation, _, _, note, first, value, times in entries:
        record(task, dtype, implementation, first, statistics.median(times), value, note)


def attempt(task, dtype, implementation, function, *args, repeats, note=""):
    try:
        first, warm, value = timed(function, *args, repeats=repeats)
    except Exception as error:  # a peer failing must not stop the other rows
        failed(task, dtype, implementation, error)
        return None
    return record(task, dtype, implementation, first, warm, value, note)


# ----------------------------------------------------------------------------- sections


def section_inference(parameters, y, batch, dtype, repeats, parallel=True):
    from dynamax.hidden_markov_model import hmm_posterior_mode, parallel_hmm_filter
    from dynamax.hidden_markov_model.inference import hmm_filter as dynamax_filter
    from dynamax.hidden_markov_model.inference import hmm_smoother as dynamax_smoother

    name = jnp.dtype(dtype).name
    model = arprob_model(parameters, dtype)
    peer, params, _ = dynamax_model(parameters, dtype)
    y = jnp.asarray(y, dtype)
    emissions, inputs = dynamax_data(peer, y)
    batch = jnp.asarray(batch, dtype)
    batch_emissions, batch_inputs = jax.vmap(lambda s: dynamax_data(peer, s))(batch)
    log_initial, log_transition = jnp.log(model.initial_probs), jnp.log(model.transition_probs)
    log_likelihoods = jax.block_until_ready(_emission_log_likelihoods(y, model.weights, model.biases,
                                                                      model.scale_trils, num_lags=NUM_LAGS))
    initial, transition = model.initial_probs, model.transition_probs
    # the parameters are jit arguments, not closed-over constants: arprob's concrete-input checks fail on a
    # constant under an outer jit (TracerArrayConversionError in _check_log_potentials, jax 0.10.2)
    ours, theirs = (log_initial, log_transition), (initial, transition)

    side_by_side("loglik", name, ("arprob ARHMM.log_prob", jax.jit(model.log_prob), (y,), ""),
                 ("dynamax marginal_log_prob", jax.jit(lambda e, u: peer.marginal_log_prob(params, e, u)),
                  (emissions, inputs), ""), repeats)
    side_by_side("kernel", name, ("arprob hmm_log_likelihood",
                                  jax.jit(lambda li, lt, ll: hmm_log_likelihood(li, lt, ll)),
                                  ours + (log_likelihoods,), ""),
                 ("dynamax hmm_filter", jax.jit(lambda i, a, ll: dynamax_filter(i, a, ll).marginal_loglik),
                  theirs + (log_likelihoods,), ""), repeats)
    side_by_side("batch", name, ("arprob ARHMM.log_prob", jax.jit(model.log_prob), (batch,), ""),
                 ("dynamax vmap marginal_log_prob",
                  jax.jit(jax.vmap(lambda e, u: peer.marginal_log_prob(params, e, u))),
                  (batch_emissions, batch_inputs), ""), repeats)
    side_by_side("viterbi", name, ("arprob hmm_viterbi",
                                   jax.jit(lambda li, lt, ll: hmm_viterbi(li, lt, ll)[0]),
                                   ours + (log_likelihoods,), ""),
                 ("dynamax hmm_posterior_mode", jax.jit(lambda i, a, ll: hmm_posterior_mode(i, a, ll)),
                  theirs + (log_likelihoods,), ""), repeats)
    side_by_side("smoother", name, ("arprob hmm_smoother",
                                    jax.jit(lambda li, lt, ll: hmm_smoother(li, lt, ll).smoothed_probs),
                                    ours + (log_likelihoods,), ""),
                 ("dynamax hmm_smoother",
                  jax.jit(lambda i, a, ll: dynamax_smoother(i, a, ll).smoothed_probs),
                  theirs + (log_likelihoods,), ""), repeats)
    if not parallel:
        return
    attempt("parallel", name, "arprob loglik parallel",
            jax.jit(lambda li, lt, ll: hmm_log_likelihood(li, lt, ll, parallel=True)),
            *ours, log_likelihoods, repeats=repeats)
    attempt("parallel", name, "dynamax parallel_hmm_filter",
            jax.jit(lambda i, a, ll: parallel_hmm_filter(i, a, ll).marginal_loglik), *theirs,
            log_likelihoods, repeats=repeats)
    attempt("parallel", name, "arprob viterbi parallel",
            jax.jit(lambda li, lt, ll: hmm_viterbi(li, lt, ll, parallel=True)[0]), *ours,
            log_likelihoods, repeats=repeats)


def section_em(parameters, y, repeats):
    """One EM iteration in float64 (arprob's fit_em works in float64 whatever the data dtype)."""
    model = arprob_model(parameters, jnp.float64)
    y = jnp.asarray(y, jnp.float64)

    def arprob_once(data):
        fitted, values = fit_em(model, data, max_iters=1)
        jax.block_until_ready(fitted.weights)
        return values[-1]

    peer, params, props = dynamax_model(parameters, jnp.float64)
    emissions, inputs = dynamax_data(peer, y)

    def dynamax_once(e, u):
        _, values = peer.fit_em(params, props, e, u, num_iters=1, verbose=False)
        return values[-1]

    def arprob_ten(data):
        fitted, values = fit_em(model, data, max_iters=10, tol=0.0)
        jax.block_until_ready(fitted.weights)
        return values[-1]

    def dynamax_ten(e, u):
        _, values = peer.fit_em(params, props, e, u, num_iters=10, verbose=False)
        return values[-1]

    cache_before = arprob_em._e_step._cache_size()
    side_by_side("em", "float64", ("arprob fit_em(max_iters=1)", arprob_once, (y,), "E + M + likelihood pass"),
                 ("dynamax (jit-wrapped)", jax.jit(dynamax_once), (emissions, inputs),
                  "warm, our jax.jit around fit_em"), repeats)
    side_by_side("em10", "float64", ("arprob fit_em(max_iters=10)", arprob_ten, (y,),
                                     "10 E + 10 M + 1 likelihood pass"),
                 ("dynamax (jit-wrapped)", jax.jit(dynamax_ten), (emissions, inputs),
                  "10 E + 10 M, our jax.jit around fit_em"), max(2, repeats // 2))
    cache_after = arprob_em._e_step._cache_size()  # one entry: every fit above reused one compilation
    verdict = "compiled once" if cache_after - cache_before <= 1 else "RECOMPILED"
    print(f"  arprob e_step jit cache {cache_before} -> {cache_after} over all the fits above ({verdict})")
    ROWS.append(dict(task="em", dtype="float64", implementation="arprob e_step cache", first_call_s=None,
                     warm_s=None, value=float(cache_after), note=verdict))
    # dynamax as users call it: fit_em builds its jitted loop inside, so each call compiles again
    attempt("em", "float64", "dynamax fit_em(num_iters=1)", dynamax_once, emissions, inputs, repeats=2,
            note="as called: compiled again on every call")
    attempt("em10", "float64", "dynamax fit_em(num_iters=10)", dynamax_ten, emissions, inputs, repeats=2,
            note="as called: compiled again on every call")


def section_hmmlearn(num_timesteps, repeats):
    """Gaussian HMM (num_lags = 0): arprob vs hmmlearn, float64."""
    from hmmlearn.hmm import GaussianHMM

    initial, transition, _, biases, covariances = make_parameters(seed=1)
    parameters = (initial, transition, np.zeros((NUM_STATES, 0, DIMENSION, DIMENSION)), biases, covariances)
    y = simulate(parameters, num_timesteps, seed=2, num_lags=0)
    model = arprob_model(parameters, jnp.float64, num_lags=0)

    def peer(n_iter=1):
        hmm = GaussianHMM(n_components=NUM_STATES, covariance_type="full", n_iter=n_iter, init_params="",
                          params="stmc", tol=0.0)
        hmm.n_features = DIMENSION
        hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_ = initial, transition, biases, covariances
        return hmm

    side_by_side("gauss-ll", "float64", ("arprob ARHMM(p=0).log_prob", jax.jit(model.log_prob), (jnp.asarray(y),),
                                         ""), ("hmmlearn score", peer().score, (y,), ""), repeats)

    def arprob_fit(data):
        fitted, values = fit_em(model, data, max_iters=1)
        jax.block_until_ready(fitted.biases)
        return values[-1]

    side_by_side("gauss-em", "float64", ("arprob fit_em(max_iters=1)", arprob_fit, (jnp.asarray(y),),
                                         "E + M + likelihood pass"),
                 ("hmmlearn fit(n_iter=1)", lambda data: peer().fit(data).monitor_.history[-1], (y,), ""),
                 max(2, repeats // 2))


def section_accuracy(parameters, y):
    """|float32 - float64| of the log-likelihood at T (arprob and dynamax)."""
    reference = float(jax.jit(arprob_model(parameters, jnp.float64).log_prob)(jnp.asarray(y)))
    peer64, params64, _ = dynamax_model(parameters, jnp.float64)
    dynamax64 = float(jax.jit(lambda e, u: peer64.marginal_log_prob(params64, e, u))(*dynamax_data(peer64, y)))
    y32 = jnp.asarray(y, jnp.float32)
    arprob32 = jax.jit(arprob_model(parameters, jnp.float32).log_prob)(y32)
    peer32, params32, _ = dynamax_model(parameters, jnp.float32)
    dynamax32 = jax.jit(lambda e, u: peer32.marginal_log_prob(params32, e, u))(*dynamax_data(peer32, y32))
    results = dict(num_timesteps=len(y), float64_arprob=reference, float64_dynamax=dynamax64,
                   float64_relative_difference=abs(dynamax64 - reference) / abs(reference),
                   float32_arprob=float(arprob32), float32_dynamax=float(dynamax32),
                   float32_arprob_dtype=str(arprob32.dtype), float32_dynamax_dtype=str(dynamax32.dtype),
                   error_arprob=abs(float(arprob32) - reference), error_dynamax=abs(float(dynamax32) - reference),
                   float32_floor=abs(float(np.float32(reference)) - reference))
    print("  accuracy: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in results.items()), flush=True)
    return results


# ----------------------------------------------------------------------------- report


RATIOS = [  # (task, dtype-agnostic arprob row, peer row)
    ("loglik", "arprob ARHMM.log_prob", "dynamax marginal_log_prob"),
    ("kernel", "arprob hmm_log_likelihood", "dynamax hmm_filter"),
    ("batch", "arprob ARHMM.log_prob", "dynamax vmap marginal_log_prob"),
    ("viterbi", "arprob hmm_viterbi", "dynamax hmm_posterior_mode"),
    ("smoother", "arprob hmm_smoother", "dynamax hmm_smoother"),
    ("parallel", "arprob loglik parallel", "dynamax parallel_hmm_filter"),
    ("em", "arprob fit_em(max_iters=1)", "dynamax fit_em(num_iters=1)"),
    ("em", "arprob fit_em(max_iters=1)", "dynamax (jit-wrapped)"),
    ("em10", "arprob fit_em(max_iters=10)", "dynamax (jit-wrapped)"),
    ("em10", "arprob fit_em(max_iters=10)", "dynamax fit_em(num_iters=10)"),
    ("gauss-ll", "arprob ARHMM(p=0).log_prob", "hmmlearn score"),
    ("gauss-em", "arprob fit_em(max_iters=1)", "hmmlearn fit(n_iter=1)"),
]


def ratios():
    out = []
    for task, ours, theirs in RATIOS:
        for dtype in ("float64", "float32"):
            a = [r for r in ROWS if (r["task"], r["dtype"], r["implementation"]) == (task, dtype, ours)]
            b = [r for r in ROWS if (r["task"], r["dtype"], r["implementation"]) == (task, dtype, theirs)]
            if a and b and a[0]["warm_s"] and b[0]["warm_s"]:
                out.append(dict(task=task, dtype=dtype, arprob=ours, peer=theirs,
                                ratio=b[0]["warm_s"] / a[0]["warm_s"]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 20000, batch 64 x 500 (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5, help="warm calls per timing (median), >= 5 advised")
    parser.add_argument("--skip", nargs="*", default=(), choices=("float32", "parallel", "em", "hmmlearn", "accuracy"),
                        help="sections to leave out")
    parser.add_argument("--json", default=None,
                        help=f"write the results here (the docs read {DEFAULT_JSON}); default: $ARPROB_BENCH_OUT")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import dynamax
    import hmmlearn

    num_timesteps, batch_size, batch_length = (QUICK_TIMESTEPS, 64, 500) if args.quick else (100_000, 64, 2000)
    parameters = make_parameters()
    y = simulate(parameters, num_timesteps, seed=0)
    batch = np.stack([simulate(parameters, batch_length, seed=100 + i) for i in range(batch_size)])
    header = dict(num_states=NUM_STATES, dimension=DIMENSION, num_lags=NUM_LAGS, num_timesteps=num_timesteps,
                  batch=[batch_size, batch_length], repeats=args.repeats, quick=args.quick,
                  jax=jax.__version__, dynamax=getattr(dynamax, "__version__", "?"),
                  hmmlearn=hmmlearn.__version__, backend=jax.default_backend(), machine=platform.machine(),
                  processor=_processor(), cpu_count=os.cpu_count(), python=platform.python_version(),
                  numpy=np.__version__)
    print(json.dumps(header), flush=True)
    for dtype in (jnp.float64, jnp.float32):
        if dtype == jnp.float32 and "float32" in args.skip:
            continue
        print(f"[{jnp.dtype(dtype).name}] inference", flush=True)
        section_inference(parameters, y, batch, dtype, args.repeats, parallel="parallel" not in args.skip)
    if "em" not in args.skip:
        print("[float64] EM", flush=True)
        section_em(parameters, y, args.repeats)
    if "hmmlearn" not in args.skip:
        print("[float64] hmmlearn", flush=True)
        section_hmmlearn(num_timesteps, args.repeats)
    accuracy = []
    if "accuracy" not in args.skip:  # at T and at the --quick length (a sequence of its own, seed 0)
        print("[float32 vs float64] accuracy", flush=True)
        accuracy.append(section_accuracy(parameters, y))
        if num_timesteps != QUICK_TIMESTEPS:
            accuracy.append(section_accuracy(parameters, simulate(parameters, QUICK_TIMESTEPS, seed=0)))

    table = ratios()
    print("\nratio = peer warm time / arprob warm time (> 1: arprob faster)")
    print(f"{'task':<10} {'dtype':<8} {'arprob':<28} {'peer':<32} {'ratio':>7}")
    for r in table:
        print(f"{r['task']:<10} {r['dtype']:<8} {r['arprob']:<28} {r['peer']:<32} {r['ratio']:7.2f}")
    header["wall_s"] = time.perf_counter() - started
    out = args.json or os.environ.get("ARPROB_BENCH_OUT")
    if out:
        with open(out, "w") as handle:
            json.dump(dict(header=header, rows=ROWS, ratios=table, accuracy=accuracy), handle, indent=2)
            handle.write("\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
