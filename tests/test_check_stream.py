"""check's streaming machinery: fused and host paths, devices, support, conditional-only targets,
two-sample mode, resolution.

Statistical assertions use fixed seeds; each states its false-alarm probability (the probability
that it fails although the code is right) and the TV it resolves.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arprob import MarkovChain, NGram, TabularJoint
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidArgumentError, ShapeError
from arprob.samplers import ancestral, speculative
from arprob.verify import Sampler, check, detectable, from_law, holm, left_to_right, plan_for, resolution
from arprob.verify.stream import _chunk_capacity, choose_batch_size

CHAIN = NGram.random(jax.random.key(11), 6, 3, 1)  # V=3, L=6: 729 cells, enumerable
LONG = NGram.random(jax.random.key(12), 12, 4, 2)  # V=4, L=12: projections + Rosenblatt


def chain_sampler(key, n):
    return CHAIN.sample(key, (n,))


def _values(report):
    return [(t.name, t.value, t.df) for t in report.tests]


# -- fused and host paths ------------------------------------------------------------------


def test_fused_and_host_paths_give_identical_reports():
    """Same seed: the compiled loop and the Python loop see the same batches, keys and counts
    (exact equality; the last batch is partial to exercise the padding weights)."""
    kwargs = dict(num_samples=50_001, batch_size=8192,
                  projections=[(0,), (1, 4), "rosenblatt", "rosenblatt-probability", "calibration"])
    fused = check(chain_sampler, CHAIN, **kwargs)
    host = check(chain_sampler, CHAIN, fuse=False, **kwargs)
    assert fused.fused and not host.fused
    assert _values(fused) == _values(host)
    assert fused.tv_estimate == host.tv_estimate
    assert sum(t.observed.sum() for t in fused.tests if t.projection == (0,)) == 50_001


def test_batch_grouping_does_not_change_counts():
    """Counts depend on (seed, batch index) only: a run split over more chunks is identical."""
    first = check(chain_sampler, CHAIN, num_samples=40_000, batch_size=4000)
    from arprob.verify import stream as stream_module

    saved = stream_module.MAX_CHUNK
    stream_module.MAX_CHUNK = 1
    try:
        second = check(chain_sampler, CHAIN, num_samples=40_000, batch_size=4000)
    finally:
        stream_module.MAX_CHUNK = saved
    assert _values(first) == _values(second)


def test_numpy_sampler_runs_on_the_host_path():
    """A sampler that cannot be traced (NumPy) still works; fuse=True then says why it cannot."""
    law = np.asarray(CHAIN.law())
    rng_cells = np.arange(law.size)

    def numpy_sampler(key, n):
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        index = np.random.default_rng(seed).choice(rng_cells, size=n, p=law)
        return np.stack(np.unravel_index(index, (3,) * 6), axis=1).astype(np.int32)

    report = check(numpy_sampler, CHAIN, num_samples=30_000)
    assert not report.fused
    # false alarm 1e-4 (alpha); the sampler is exact
    assert report.passed
    with pytest.raises(ArprobTypeError, match="does not trace"):
        check(numpy_sampler, CHAIN, num_samples=30_000, fuse=True)


def test_bad_sampler_output_is_an_error_not_a_verdict():
    with pytest.raises(ArprobTypeError, match="dtype float"):
        check(lambda key, n: jnp.zeros((n, 6)), CHAIN, num_samples=100)
    with pytest.raises(ArprobTypeError, match="dtype bool"):
        check(lambda key, n: jnp.zeros((n, 6), bool), CHAIN, num_samples=100)
    with pytest.raises(ShapeError, match="shape"):
        check(lambda key, n: jnp.zeros((n, 5), jnp.int32), CHAIN, num_samples=100)
    with pytest.raises(InvalidArgumentError, match="projections"):
        check(chain_sampler, CHAIN, projections="bogus")
    with pytest.raises(EnumerationTooLargeError, match="MAX_SAMPLES"):
        check(chain_sampler, CHAIN, num_samples=10**15)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        check(chain_sampler, CHAIN, alpha=1.5)


def test_holm_refuses_invalid_p_values():
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")])
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06], rtol=1e-15)


def test_chunks_cannot_overflow_int32_counts():
    for batch_size, increments in [(2**16, 1), (2**16, 32), (2**20, 64), (2**22, 512)]:
        capacity = _chunk_capacity(batch_size, increments)
        assert capacity >= 1
        assert capacity == 1 or capacity * batch_size * increments <= 2**31 - 1
    assert choose_batch_size(10, 100.0) == 10
    assert choose_batch_size(10**9, 100.0) == 2**16


def test_counts_are_int64_and_exceed_int32_safely():
    """Host totals are int64: a projection cell can pass 2**31 over many chunks (checked on the dtype)."""
    report = check(chain_sampler, CHAIN, num_samples=5000, projections=[(0,)])
    assert report.tests[0].observed.sum() == 5000


# -- support: every mode --------------------------------------------------------------------


@pytest.mark.parametrize("projections", ["marginals", [(0, 1)], ["rosenblatt"], "joint"])
def test_every_mode_fails_a_sampler_that_draws_an_impossible_sequence(projections):
    """The target gives probability 0 to x[0] == x[1]; a sampler putting 1% of its mass there fails,
    whatever projections were asked for (the support check is part of every mode)."""
    table = np.ones((3,) * 4)
    for v in range(3):
        table[v, v] = 0.0
    target = TabularJoint(probs=table / table.sum())
    law = np.asarray(target.law()) * 0.99
    law[np.ravel_multi_index((0, 0, 0, 0), (3,) * 4)] += 0.01
    report = check(from_law(law, 3, 4), target, num_samples=20_000, projections=projections)
    assert not report.passed
    assert any(t.rejected and (t.name == "support" or "zero-probability" in t.method) for t in report.tests)
    assert (0, 0, 0, 0) in [tuple(hit) for hit in report.zero_probability_hits]


# -- devices ---------------------------------------------------------------------------------


def test_sharded_counts_are_identical_on_one_and_four_devices(tmp_path):
    """In a fresh process with 4 host devices: devices='all' and devices=None give identical tests,
    and sample_sharded gives the same tokens (spread over the 4 devices)."""
    script = textwrap.dedent("""
        import json, sys
        import jax
        jax.config.update("jax_enable_x64", True)
        from arprob import NGram
        import jax.numpy as jnp
        from arprob.samplers import ancestral, sample_sharded
        from arprob.verify import check
        model = NGram.random(jax.random.key(12), 12, 4, 2)
        out = {}
        for devices in (None, "all"):
            report = check(lambda key, n: model.sample(key, (n,)), model, num_samples=100_003, batch_size=4096,
                           devices=devices, projections=[(0,), (3, 7), "rosenblatt", "calibration"])
            tests = [[t.name, t.value, t.df] for t in report.tests]
            out[str(devices)] = {"devices": report.num_devices, "tests": tests, "tv": report.tv_estimate}
            tokens, stats = sample_sharded(lambda key, n: ancestral(key, model, n, order="random"),
                                           jax.random.key(7), 10_001, devices=devices, batch_size=1000)
            out[str(devices)]["tokens"] = [int(tokens.sum()), int((tokens * jnp.arange(12)).sum()),
                                           list(tokens.shape), int(stats.nfe.sum())]
            out[str(devices)]["shards"] = len(tokens.sharding.device_set)
        json.dump(out, sys.stdout)
    """)
    environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["None"]["devices"] == 1 and out["all"]["devices"] == 4
    assert out["None"]["tests"] == out["all"]["tests"]
    assert out["None"]["tv"] == out["all"]["tv"]
    assert out["None"]["tokens"] == out["all"]["tokens"] and out["all"]["tokens"][2] == [10_001, 12]
    assert out["all"]["shards"] == 4


def test_devices_argument_is_validated():
    with pytest.raises(InvalidArgumentError, match="devices"):
        check(chain_sampler, CHAIN, num_samples=100, devices="some")
    with pytest.raises(ArprobTypeError, match="devices"):
        check(chain_sampler, CHAIN, num_samples=100, devices=3)


# -- targets known through conditionals ---------------------------------------------------------


def _next_token_fn(model, temperature=1.0):
    table = jnp.asarray(np.log(np.asarray(model.transition_probs)) / temperature)
    initial = jnp.asarray(np.log(np.asarray(model.initial_probs)) / temperature)

    def logits(prefix):
        if prefix.shape[0] == 0:
            return initial
        return table[prefix[-1]]

    return logits


MC = MarkovChain.random(jax.random.key(21), 10, 5)


def test_left_to_right_target_matches_the_model():
    target = left_to_right(_next_token_fn(MC), 5, 10)
    x = MC.sample(jax.random.key(0), (7,))
    np.testing.assert_allclose(np.asarray(target.prefix_conditional_logits(x)),
                               np.asarray(MC.prefix_conditional_logits(x)), atol=1e-12)
    np.testing.assert_allclose(np.asarray(target.log_prob(x)), np.asarray(MC.log_prob(x)), atol=1e-12)


def test_conditional_only_target_passes_exact_and_rejects_tempered_samplers():
    """Rosenblatt (two orderings) + calibration against a next-token function.

    Exact sampler: false alarm <= 1e-4 (Holm over 3 tests; the calibration test is conservative).
    Tempered sampler (T = 0.8, exact TV to the target about 0.26): rejected (power at n = 60,000
    far above 0.99 for this deviation).
    """
    target = left_to_right(_next_token_fn(MC), 5, 10)
    exact = check(lambda key, n: MC.sample(key, (n,)), target, num_samples=60_000)
    assert exact.passed, exact.summary()
    assert {t.name for t in exact.tests} == {"rosenblatt (id order)", "rosenblatt (probability order)",
                                               "calibration"}
    cold = MarkovChain(jax.nn.softmax(jnp.log(MC.initial_probs) / 0.8),
                       jax.nn.softmax(jnp.log(MC.transition_probs) / 0.8, axis=-1), 10)
    tempered = check(lambda key, n: cold.sample(key, (n,)), target, num_samples=60_000)
    assert not tempered.passed
    rejected = {t.name for t in tempered.tests if t.rejected}
    assert "rosenblatt (probability order)" in rejected and "calibration" in rejected


def test_two_sample_mode_needs_no_law():
    """Sampler vs reference of the same family on projections.  Same law: false alarm <= 1e-4.
    A speculative sampler with a broken residual (mutant) against plain ancestral sampling: rejected."""
    from arprob.samplers.mutants import catalogue

    draft = NGram.random(jax.random.key(13), 6, 3, 1)
    reference = Sampler(lambda key, n: ancestral(key, CHAIN, n), name="ancestral")
    same = check(lambda key, n: speculative(key, CHAIN, draft, n, 2), CHAIN.conditionals(), reference=reference,
                 num_samples=40_000, projections="marginals")
    assert same.passed, same.summary()
    assert all(t.statistic == "two-sample" for t in same.tests)
    mutant = next(m for m in catalogue() if m.name == "speculative: resample from p")
    plain = Sampler(lambda key, n: ancestral(key, mutant.target, n), name="ancestral")
    report = check(mutant.sampler, mutant.target.conditionals(), reference=plain, num_samples=40_000)
    assert not report.passed, report.summary()


# -- resolution ---------------------------------------------------------------------------------


def test_resolution_is_detectable_at_the_measured_throughput():
    result = resolution(LONG, seconds=5.0)
    assert result.num_samples == max(1, int(result.samples_per_second * 5.0))
    level = plan_for(LONG).holm_level  # the largest test's share of alpha (weighted Holm), fixed n
    assert result.tv == pytest.approx(detectable(result.num_samples, result.cells, level, result.power), rel=1e-12)
    assert 0 < result.tv < 1
    assert "detects TV" in str(result)
    with pytest.raises(InvalidArgumentError, match="seconds"):
        resolution(LONG, seconds=-1)


def test_report_states_its_resolution_and_progress_is_reported():
    calls = []
    report = check(lambda key, n: LONG.sample(key, (n,)), LONG, num_samples=30_000, batch_size=5000,
                   progress=lambda done, total, seconds: calls.append((done, total)))
    cells = max(t.observed.size for t in report.tests if t.observed is not None)
    # the largest test at its level: its share of alpha (weighted Holm) at the last look's level
    plan = plan_for(LONG, num_samples=30_000, batch_size=5000, sequential=report.sequential)
    assert plan.largest_cells == cells
    assert report.resolution == pytest.approx(detectable(30_000, cells, plan.holm_level, 0.99), rel=1e-12)
    assert calls and calls[-1] == (30_000, 30_000)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))


def test_compiled_loop_is_reused_across_seeds_and_sizes():
    """Keys, seed and sample size are arguments of the compiled loop: a second call with the same
    sampler, target and batch size compiles nothing and reports what a fresh compilation reports."""
    target = TabularJoint.random(jax.random.key(3), 4, 3)
    sampler = from_law(np.asarray(target.law()), 3, 4)
    first = check(sampler, target, num_samples=20_000, seed=5, batch_size=8192)
    again = check(sampler, target, num_samples=20_000, seed=5, batch_size=8192)
    other = check(sampler, target, num_samples=30_001, seed=6, batch_size=8192)
    assert first.compile_seconds > 0 and again.compile_seconds == 0 and other.compile_seconds == 0
    assert _values(first) == _values(again)
    fresh = check(from_law(np.asarray(target.law()), 3, 4), target, num_samples=30_001, seed=6, batch_size=8192)
    assert fresh.compile_seconds > 0
    assert _values(other) == _values(fresh)


def test_calibration_statistic_is_calibrated_under_the_null():
    """Exact sampler, calibration test alone, 40 seeds at n = 20,000: the statistic's mean matches its
    degrees of freedom (chi-square mean df, sd sqrt(2 df)) within 4.5 standard errors of the mean (false
    alarm about 7e-6), so the test is neither anti-conservative nor wastefully conservative."""
    target = left_to_right(_next_token_fn(MC), 5, 10)

    def exact(key, n):
        return MC.sample(key, (n,))

    reports = [check(exact, target, num_samples=20_000, batch_size=10_000, projections=["calibration"], seed=seed)
               for seed in range(40)]
    values = np.array([r.tests[0].value for r in reports])
    dfs = np.array([r.tests[0].df for r in reports])
    z = (values.sum() - dfs.sum()) / np.sqrt(2 * dfs.sum())
    assert abs(z) < 4.5, (values.mean(), dfs.mean())
    assert sum(r.passed for r in reports) >= 39  # each fails w.p. 1e-4
