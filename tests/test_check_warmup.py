"""check calls a non-JAX sampler only for the samples it counts, and warns once when x64 is off.

A sampler written outside JAX (NumPy, PyTorch, an inference engine) may cost seconds per call:
``check`` must not draw a warm-up batch from it, nor call it with a traced key.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from arprob import NGram
from arprob.verify import check

CHAIN = NGram.random(jax.random.key(11), 5, 3, 1)  # V=3, L=5: 243 cells


def _counting_numpy_sampler(model):
    """An exact NumPy sampler of ``model``'s law that records every request it receives."""
    law = np.asarray(model.law(), np.float64).ravel()
    shape = (model.vocab_size,) * model.length
    requests = []

    def sampler(key, n):
        requests.append((n, isinstance(key, jax.core.Tracer)))
        seed = np.asarray(jax.random.key_data(key))  # the JAX key becomes a NumPy seed
        index = np.random.default_rng(seed).choice(law.size, size=n, p=law)
        return np.stack(np.unravel_index(index, shape), axis=1).astype(np.int32)

    return sampler, requests


@pytest.mark.parametrize("num_samples,batch_size", [(30_000, 4096), (4096, 4096), (1000, None)])
def test_numpy_sampler_is_called_only_for_counted_samples(num_samples, batch_size):
    sampler, requests = _counting_numpy_sampler(CHAIN)
    report = check(sampler, CHAIN, num_samples=num_samples, batch_size=batch_size)
    counted = [int(t.observed.sum()) for t in report.tests if t.projection is None]  # the joint's counts
    assert not report.fused
    assert not any(traced for _, traced in requests), "the sampler was called with a traced key"
    batch = report.batch_size
    assert [n for n, _ in requests] == [batch] * -(-num_samples // batch)
    # the last batch is drawn whole and its padding rows get weight 0: requested = counted + padding
    assert sum(n for n, _ in requests) - (-num_samples % batch) == num_samples
    assert counted and all(c == num_samples for c in counted)
    # false alarm 1e-4 (alpha); the sampler is exact
    assert report.passed


def test_numpy_sampler_is_never_traced_even_with_many_batches():
    sampler, requests = _counting_numpy_sampler(CHAIN)
    check(sampler, CHAIN, num_samples=8 * 1024, batch_size=1024, projections=[(0,), (1, 3), "rosenblatt"])
    assert [n for n, _ in requests] == [1024] * 8
    assert not any(traced for _, traced in requests)


def test_jax_sampler_still_runs_in_the_compiled_loop_and_matches_the_host_loop():
    """Batch 0 runs on the host, the rest in the compiled loop: same counts as the all-host run."""
    calls = []

    def jax_sampler(key, n):
        calls.append(isinstance(key, jax.core.Tracer))
        return CHAIN.sample(key, (n,))

    kwargs = dict(num_samples=20_001, batch_size=4096, projections=[(0,), (2, 4), "rosenblatt", "calibration"])
    fused = check(jax_sampler, CHAIN, **kwargs)
    assert fused.fused
    assert calls == [False, True]  # batch 0 with its real key, then one trace (which draws nothing)
    host = check(jax_sampler, CHAIN, fuse=False, **kwargs)
    assert [(t.name, t.value, t.df) for t in fused.tests] == [(t.name, t.value, t.df) for t in host.tests]


def test_check_warns_once_per_process_when_x64_is_off():
    script = textwrap.dedent("""
        import warnings
        import jax
        from arprob import MarkovChain
        from arprob.errors import PrecisionWarning
        from arprob.verify import check
        model = MarkovChain.random(jax.random.key(0), 4, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for seed in range(2):
                try:
                    check(lambda key, n: model.sample(key, (n,)), model, num_samples=2000, seed=seed,
                          projections="marginals")
                except Exception as error:  # the warning comes first, whatever float32 does next
                    print("check raised", type(error).__name__)
        ours = [w for w in caught if issubclass(w.category, PrecisionWarning)]
        print("warnings", len(ours))
        print(ours[0].message if ours else "")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "JAX_ENABLE_X64": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warnings 1" in result.stdout, result.stdout
    assert "float32" in result.stdout and "jax_enable_x64" in result.stdout


def test_check_does_not_warn_with_x64_on():
    # pytest turns ArprobWarning into an error: this run would fail if check warned under x64
    assert jax.config.jax_enable_x64
    check(lambda key, n: CHAIN.sample(key, (n,)), CHAIN, num_samples=1000)
