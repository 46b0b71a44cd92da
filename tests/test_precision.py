"""Float Gumbel-max precision: arprob.precision and the library's categorical sampler (theorem 13).

Statistical assertions use fixed seeds and state their false-alarm probability
(the probability that the assertion fails although the sampler is exact).  The
float32 tail cut itself needs ~10^9 noise draws to be seen by Monte Carlo (a
token 16-18 nats below the top wins once per e^16-e^18 draws), which is
benchmarks/categorical_precision.py's job; here it is shown exactly, by
enumerating JAX's noise grid, and by Monte Carlo in float16, where JAX's cap
is 6.93 and the same cut costs a few thousand draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, stats

from arprob import precision
from arprob._random import _gumbel_from_words
from arprob.errors import ArprobError, ArprobTypeError, InvalidArgumentError, InvalidProbabilityError, ShapeError
from arprob.verify import gof

FALSE_ALARM = 1e-6  # per statistical assertion below


def _softmax(logits):
    weights = np.exp(np.asarray(logits, np.float64) - np.max(logits))
    return weights / weights.sum()


def _group_counts(tokens, sizes):
    edges = np.cumsum(sizes)[:-1]
    return np.bincount(np.searchsorted(edges, np.asarray(tokens).ravel(), side="right"), minlength=len(sizes))


# ---------------------------------------------------------------------------
# the range of JAX's noise
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, bits", [("float32", 23), ("float64", 52), ("float16", 10), ("bfloat16", 7)])
def test_cap_and_floor_of_jax_low_mode(dtype, bits):
    cap, floor = precision.gumbel_cap(dtype), precision.gumbel_floor(dtype)
    # jax.random.gumbel(mode="low") is -log(-log(u)) on u in {tiny} + {k 2^-bits}: evaluate JAX's formula
    largest = jnp.asarray(1.0 - 2.0**-bits, dtype)
    tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
    assert cap == float(-jnp.log(-jnp.log(largest)))
    assert floor == float(-jnp.log(-jnp.log(tiny)))
    assert cap == pytest.approx(-math.log(-math.log1p(-(2.0**-bits))), rel=1e-2)


def test_float32_values():
    assert precision.gumbel_cap() == pytest.approx(15.942385, abs=1e-6)
    assert precision.gumbel_floor() == pytest.approx(-4.469769, abs=1e-6)
    assert precision.gumbel_cap("float64") == pytest.approx(36.04365, abs=1e-5)
    # "highest" is computed by JAX's own code (no independent closed form here): check what the docs use it
    # for, a cap far above "low" (so no tail that matters is cut) yet below the library's own noise
    assert 40.0 < precision.gumbel_cap("float32", "highest") < precision.gumbel_cap("float32", "arprob")
    assert precision.gumbel_cap("float32", "arprob") == pytest.approx(97 * math.log(2), rel=1e-6)
    assert precision.gumbel_floor("float32", "arprob") == pytest.approx(-math.log(97 * math.log(2)), rel=1e-6)
    assert precision.gumbel_cap("float64", "arprob") == pytest.approx(129 * math.log(2), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_value_of_jax_half_precision_noise(dtype):
    """The whole grid through jax.random.gumbel: its extremes are the cap and the floor."""
    grid = precision._jax_noise_grid(dtype).astype(np.float64)
    assert grid.max() == precision.gumbel_cap(dtype) and grid.min() == precision.gumbel_floor(dtype)


def test_noise_dtype_follows_float32_logits_under_x64():
    """With x64 on (this suite), float32 logits still get float32 noise, in JAX and in arprob."""
    assert jax.config.jax_enable_x64
    logits = jnp.zeros(7, jnp.float32)
    key = jax.random.key(0)
    for sampler in (jax.random.categorical, precision.categorical):
        text = str(jax.make_jaxpr(lambda k, l, f=sampler: f(k, l))(key, logits))
        assert "f32[7]" in text and "f64[7]" not in text  # the noise has the shape of the logits
    text = str(jax.make_jaxpr(lambda k, l: precision.categorical(k, l))(key, logits.astype(jnp.float64)))
    assert "f64[7]" in text and "u64[7]" in text


# ---------------------------------------------------------------------------
# the clamped law
# ---------------------------------------------------------------------------


def _quadrature_law(logits, cap, floor=-math.inf):
    """Independent O(V^2) integration of P(first argmax = j), atoms added by hand."""
    def cdf(x):
        return math.exp(-math.exp(-x)) if x > -700 else 0.0

    def below(value, strict):
        if strict:
            return 0.0 if value <= floor else (cdf(value) if value <= cap else 1.0)
        return 0.0 if value < floor else (cdf(value) if value < cap else 1.0)

    size, law = len(logits), np.zeros(len(logits))
    for j in range(size):
        def others(g, j=j):
            return math.prod(below(g + logits[j] - logits[i], i < j) for i in range(size) if i != j)

        low, high = (floor if math.isfinite(floor) else -40.0), (cap if math.isfinite(cap) else 80.0)
        cuts = sorted({e + logits[i] - logits[j] for i in range(size) for e in (floor, cap)
                       if math.isfinite(e) and low < e + logits[i] - logits[j] < high})
        edges = [low, *cuts, high]
        law[j] = sum(integrate.quad(lambda g: math.exp(-g - math.exp(-g)) * others(g), u, v,
                                    epsabs=1e-14, epsrel=1e-13, limit=200)[0] for u, v in zip(edges[:-1], edges[1:]))
        if math.isfinite(floor):
            law[j] += cdf(floor) * others(floor)
        if math.isfinite(cap):
            law[j] += -math.expm1(-math.exp(-cap)) * others(cap)
    return law


@pytest.mark.parametrize("logits, cap, floor", [
    ([0.0, -1.0, -2.5], 1.0, -math.inf),
    ([0.0, -1.0, -2.5], 1.0, -0.7),
    ([0.3, 0.3, -2.0, -4.0], 2.5, -1.0),
    ([-3.0, 0.0, -3.0, 0.0], 2.0, -1.0),  # l_j + b = l_max + a exactly, ties resolved by index
    ([0.0, -16.0, -17.0], 15.942385, -4.469769),
])
def test_closed_form_matches_quadrature(logits, cap, floor):
    law = precision.clamped_gumbel_law(np.array(logits), cap, floor)
    np.testing.assert_allclose(law, _quadrature_law(logits, cap, floor), rtol=0, atol=1e-10)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)


def test_closed_form_batches_and_reduces_to_softmax():
    logits = np.random.default_rng(0).normal(size=(3, 2, 9)) * 3
    law = precision.clamped_gumbel_law(logits, 1.5, -1.0)
    assert law.shape == logits.shape
    for index in np.ndindex(3, 2):
        np.testing.assert_allclose(law[index], precision.clamped_gumbel_law(logits[index], 1.5, -1.0), atol=1e-15)
    softmax = np.apply_along_axis(_softmax, -1, logits)
    np.testing.assert_allclose(precision.clamped_gumbel_law(logits, math.inf), softmax, rtol=0, atol=1e-14)
    with_impossible = precision.clamped_gumbel_law(np.array([0.0, -np.inf, -1.0]), 1.0)
    assert with_impossible[1] == 0.0


@given(st.lists(st.floats(-30, 5), min_size=1, max_size=12), st.floats(-2, 20), st.floats(0.1, 30))
@example(values=[0.0, 1.0, 1.1248876107822283e-235], cap=0.0, width=1.0)  # tie created by the shift (random run)
def test_bounds_hold(values, cap, width):
    """Parts 2-4 on arbitrary logits: the TV bound, the suppression bound, majorization."""
    logits, floor = np.array(values), cap - width
    law = precision.clamped_gumbel_law(logits, cap, floor)
    probs = _softmax(logits)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)
    assert 0.5 * np.abs(law - probs).sum() <= float(precision.tv_bound(logits, cap, floor)) + 1e-12
    bound = float(precision.tv_bound(logits, cap, floor))
    assert bound <= precision.worst_case_tv_bound(logits.size, cap, floor) + 1e-12
    assert np.all(law <= precision.suppression_bound(logits, cap, floor) + 1e-12)
    assert np.all(np.cumsum(np.sort(law)[::-1]) >= np.cumsum(np.sort(probs)[::-1]) - 1e-12)


def test_bounds_for_jax_and_arprob():
    cap, floor = precision.gumbel_cap(), precision.gumbel_floor()
    expected = -math.expm1(-50257 * math.exp(-cap)) + math.exp(-math.exp(-floor))  # 1 - e^{-V e^-b} + e^{-e^-a}
    assert precision.worst_case_tv_bound(50257, cap, floor) == pytest.approx(expected, rel=1e-12)
    assert precision.worst_case_tv_bound(50257, cap, floor) > 5e-3  # jax.random.categorical, float32
    assert precision.library_tv_bound(10**6) < 1e-12
    assert precision.library_tv_bound(10**6, "float64") < 1e-16


# ---------------------------------------------------------------------------
# JAX's float sampler, exactly and by Monte Carlo
# ---------------------------------------------------------------------------


def test_jax_float16_law_against_monte_carlo():
    """jax_grouped_law is the law of jax.random.categorical: a Pearson test at level FALSE_ALARM
    accepts it, and rejects softmax on the same counts (negative control)."""
    group_logits, sizes = np.array([0.0, -3.0, -8.0]), np.array([1, 6, 600])
    logits = jnp.asarray(np.repeat(group_logits, sizes), jnp.float16)
    tokens = jax.jit(lambda key: jax.random.categorical(key, logits, shape=(40000,)))(jax.random.key(11))
    groups = np.searchsorted(np.cumsum(sizes)[:-1], np.asarray(tokens), side="right")[:, None]
    exact = precision.jax_grouped_law(group_logits, sizes, "float16")
    assert gof(groups, exact, vocab_size=3).p_value > FALSE_ALARM
    softmax = sizes * np.exp(group_logits)
    assert gof(groups, softmax / softmax.sum(), vocab_size=3).p_value < 1e-30


def test_float16_tail_is_cut_by_jax_and_kept_by_arprob():
    """2500 tokens 9 nats below the top one carry 23.6% of softmax; JAX's float16 noise stops at 6.93,
    so jax.random.categorical draws them about 0.1% of the time; arprob's sampler (float32 noise for
    half-precision logits) draws them at the softmax rate (two-sided binomial test at FALSE_ALARM)."""
    sizes, group_logits = np.array([1, 2500]), np.array([0.0, -9.0])
    logits = jnp.asarray(np.repeat(group_logits, sizes), jnp.float16)
    target = float(_softmax(np.repeat(group_logits, sizes))[1:].sum())
    num_samples = 8000
    naive = _group_counts(jax.random.categorical(jax.random.key(3), logits, shape=(num_samples,)), sizes)[1]
    ours = _group_counts(precision.categorical(jax.random.key(3), logits, shape=(num_samples,)), sizes)[1]
    assert num_samples * target > 1800
    assert naive < 0.05 * num_samples * target  # negative control: the tail is essentially never drawn
    assert stats.binomtest(int(naive), num_samples, target).pvalue < 1e-100
    assert stats.binomtest(int(ours), num_samples, target).pvalue > FALSE_ALARM
    grid = precision.jax_grouped_law(group_logits, sizes, "float16")[1]
    assert stats.binomtest(int(naive), num_samples, grid).pvalue > FALSE_ALARM


def test_float32_jax_law_is_further_from_softmax_than_the_clamped_model():
    """Measured (exact computations, no sampling): JAX's float32 noise is the Gumbel clamped *and* rounded
    down to its grid; the rounding thins the tail beyond the clamped model."""
    for gap, size in [(14.0, 100000), (16.5, 100000)]:
        group_logits, sizes = np.array([0.0, -gap]), np.array([1, size])
        grid = precision.jax_grouped_law(group_logits, sizes, "float32")[1]
        clamped = precision.clamped_gumbel_law(np.repeat(group_logits, sizes), precision.gumbel_cap(),
                                               precision.gumbel_floor())[1:].sum()
        softmax = _softmax(np.repeat(group_logits, sizes))[1:].sum()
        assert grid < clamped < softmax


# ---------------------------------------------------------------------------
# arprob's sampler
# ---------------------------------------------------------------------------


def test_arprob_float32_tail_rate():
    """5500 tokens 10 nats below the top carry 20% of softmax; binomial test at FALSE_ALARM."""
    sizes, group_logits = np.array([1, 5500]), np.array([0.0, -10.0])
    logits = jnp.asarray(np.repeat(group_logits, sizes), jnp.float32)
    target = float(_softmax(np.repeat(group_logits, sizes))[1:].sum())
    num_samples = 3000
    count = _group_counts(precision.categorical(jax.random.key(5), logits, shape=(num_samples,)), sizes)[1]
    assert stats.binomtest(int(count), num_samples, target).pvalue > FALSE_ALARM


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_arprob_categorical_law(dtype):
    """Pearson test at FALSE_ALARM on a spread-out law (8 tokens over 14 nats)."""
    logits = np.array([0.0, -0.5, -1.0, -2.0, -3.5, -5.0, -8.0, -14.0])
    tokens = precision.categorical(jax.random.key(7), jnp.asarray(logits, dtype), shape=(60000,))
    assert gof(np.asarray(tokens)[:, None], _softmax(logits), vocab_size=8).p_value > FALSE_ALARM
    hotter = precision.tempered(_softmax(logits), 1.1)
    assert gof(np.asarray(tokens)[:, None], hotter, vocab_size=8).p_value < 1e-20  # negative control


def test_arprob_noise_extremes_and_tail():
    """Deterministic: the extreme bit patterns give the cap and the floor; no inf or NaN; the noise
    reaches 40 and more at full precision, where JAX's float32 noise stops at 15.94."""
    u32 = [np.uint32(0), np.uint32(1), np.uint32(2**23), np.uint32(2**31 - 1), np.uint32(2**31),
           np.uint32(2**32 - 1)]
    patterns = np.array(np.meshgrid(u32, u32, u32)).reshape(3, -1).astype(np.uint32)  # all 216 combinations
    words = [jnp.asarray(patterns[k]) for k in range(3)]
    noise = np.asarray(_gumbel_from_words(words, np.float32), np.float64)
    assert np.all(np.isfinite(noise))
    assert noise.max() == precision.gumbel_cap("float32", "arprob")
    assert noise.min() == precision.gumbel_floor("float32", "arprob")
    sample = np.asarray(precision.gumbel(jax.random.key(0), (1 << 20,), jnp.float32))
    assert stats.kstest(sample, stats.gumbel_r.cdf).pvalue > FALSE_ALARM
    big = _gumbel_from_words([jnp.uint32(0), jnp.uint32(2**8), jnp.uint32(0)], np.float32)  # X = 2^-56
    assert float(big) == pytest.approx(56 * math.log(2), rel=1e-6)


def test_arprob_categorical_contract():
    """Shapes as in jax.random.categorical; same key, same draw (eager, jit, vmap); edge cases."""
    key = jax.random.key(9)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 50)), jnp.float32)
    first = precision.categorical(key, logits)
    assert first.shape == (3,)
    assert precision.categorical(key, logits, shape=(4, 3)).shape == (4, 3)
    np.testing.assert_array_equal(jax.jit(precision.categorical)(key, logits), first)
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda k: precision.categorical(k, logits))(keys)
    np.testing.assert_array_equal(batched, np.stack([precision.categorical(k, logits) for k in keys]))
    small = jnp.array([[0.0, -jnp.inf, -jnp.inf, -jnp.inf], [-jnp.inf, 0.0, -jnp.inf, 0.0]],
                      jnp.float32)  # one possible token; two
    draws = np.asarray(precision.categorical(key, small, shape=(200, 2)))
    assert np.all(draws[:, 0] == 0) and set(np.unique(draws[:, 1])) == {1, 3}
    with pytest.raises(InvalidProbabilityError, match="every log-weight is -inf"):  # no possible token
        precision.categorical(key, jnp.full((1, 4), -jnp.inf))
    half = precision.categorical(key, jnp.zeros(5, jnp.bfloat16), shape=(100,))
    assert half.min() >= 0 and half.max() < 5
    assert precision.categorical(key, jnp.arange(4), shape=(10,)).shape == (10,)


def test_arprob_categorical_errors():
    key = jax.random.key(0)
    with pytest.raises(ShapeError, match="broadcast"):
        precision.categorical(key, jnp.zeros((3, 5)), shape=(4,))
    with pytest.raises(ShapeError, match="vocab_size"):
        precision.categorical(key, jnp.zeros(()))
    with pytest.raises(ArprobTypeError):
        precision.gumbel(key, (3,), jnp.int32)


# ---------------------------------------------------------------------------
# entropy, temperature, masked diffusion
# ---------------------------------------------------------------------------


def test_effective_temperature_round_trip():
    probs = _softmax(-np.log(np.arange(1, 200)) * 1.1)
    for temperature in (0.5, 0.8, 1.0, 1.7):
        law = precision.tempered(probs, temperature)
        assert precision.effective_temperature(probs, law) == pytest.approx(temperature, rel=1e-9)
    assert precision.effective_temperature(probs, np.eye(1, probs.size)[0]) == 0.0
    assert precision.effective_temperature(probs, np.full(probs.size, 1 / probs.size)) == math.inf


def test_masked_diffusion_float32_against_float64():
    """Zipf(1.1) over 2000 tokens, 256 steps: the float32 sampler loses entropy, float64 does not."""
    probs = _softmax(-1.1 * np.log(np.arange(1, 2001)))
    assert np.abs(precision.masked_diffusion_token_law(probs, 256, math.inf) - probs).max() < 1e-13
    single = precision.masked_diffusion_summary(probs, 256, "float32")
    double = precision.masked_diffusion_summary(probs, 256, "float64")
    assert single.entropy - single.sampler_entropy > 0.01 and single.temperature < 0.999 and single.tv > 1e-3
    assert abs(double.entropy - double.sampler_entropy) < 1e-9 and double.tv < 1e-10
    assert np.all(np.diff(single.law / probs) <= 1e-12)  # part 5: the ratio decreases along p
    fewer = precision.masked_diffusion_summary(probs, 16, "float32")
    assert fewer.entropy - fewer.sampler_entropy < single.entropy - single.sampler_entropy


@pytest.mark.parametrize("call, error", [
    (lambda: precision.gumbel_cap("int32"), ArprobTypeError),
    (lambda: precision.gumbel_cap("float32", "medium"), InvalidArgumentError),
    (lambda: precision.clamped_gumbel_law([0.0, 1.0], 1.0, 2.0), InvalidArgumentError),
    (lambda: precision.clamped_gumbel_law([0.0, np.nan], 1.0), ArprobError),
    (lambda: precision.clamped_gumbel_law(np.zeros((2, 0)), 1.0), ShapeError),
    (lambda: precision.tempered([0.5, 0.5], 0.0), InvalidArgumentError),
    (lambda: precision.effective_temperature([0.5, 0.5], [0.9, 0.1]), InvalidArgumentError),
    (lambda: precision.entropy([0.5, 0.6]), ArprobError),
    (lambda: precision.masked_diffusion_token_law([0.5, 0.5], 0, 1.0), InvalidArgumentError),
    (lambda: precision.jax_grouped_law([0.0, -1.0], [1, 0]), InvalidArgumentError),
    (lambda: precision.jax_grouped_law([0.0, -1.0], [1, 2], "float64"), ArprobTypeError),
    (lambda: precision.library_tv_bound(0), InvalidArgumentError),
])
def test_errors(call, error):
    with pytest.raises(error):
        call()
