r"""Machine check of theorem 13 (``proofs/13-float32-gumbel-max.md``).

(a) sympy, exact: the antiderivative of the winning density, the collapse of
    the product of Gumbel CDFs, the unclamped law, the law of the winner's
    noise (part 2), the concavity behind the worst case, the inequality of
    part 4, the perturbation formula of part 6.
(b) quadrature: the closed form :func:`arprob.precision.clamped_gumbel_law`
    against an independent O(V^2) integration (``scipy.integrate.quad`` with
    the atoms added by hand) on every instance of a finite family (V <= 3,
    logits in {0, -0.7, -2, -inf}, ties, boundary cases l_j + b = l_max + a), at
    1e-10; a mutated closed form fails.
(c) the bounds (parts 2-4) on the family and on random instances, with
    negative controls.
(d) masked diffusion (part 5): the unclamped composite law is p; the clamped
    one equals a step-by-step recursion through the public per-step law and
    majorizes p.
(e) JAX's float32 noise, enumerated (all 2^23 values through
    ``jax.random.gumbel``): its range is [gumbel_floor, gumbel_cap] and it is
    the Gumbel rounded down to the grid.
(f) arprob's noise (part 6): exact tail probabilities P(Q > t) from the bit
    patterns, against 1 - exp(-e^{-t}) for t up to 50; its float error.
"""

from __future__ import annotations

import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from scipy import integrate

from arprob import precision
from arprob._random import _gumbel_from_words

LAW_TOLERANCE = 1e-10  # quadrature (epsabs 1e-14 per piece) against the closed form


# ---------------------------------------------------------------------------
# (a) symbolic
# ---------------------------------------------------------------------------

y, b = sympy.symbols("y b", real=True)


def _gumbel_cdf(x):
    return sympy.exp(-sympy.exp(-x))


def test_antiderivative_of_the_winning_density():
    r""":math:`\frac{d}{dy}\,\frac{w}{S} e^{-e^{-y} S} = w e^{-y} e^{-e^{-y} S}`."""
    w, S = sympy.symbols("w S", positive=True)
    antiderivative = w / S * sympy.exp(-sympy.exp(-y) * S)
    assert sympy.simplify(sympy.diff(antiderivative, y) - w * sympy.exp(-y) * sympy.exp(-sympy.exp(-y) * S)) == 0


def test_product_of_cdfs_collapses():
    r""":math:`f(y - l_1) F(y - l_2) F(y - l_3) = e^{l_1} e^{-y} \exp(-e^{-y}(e^{l_1}+e^{l_2}+e^{l_3}))`."""
    l1, l2, l3 = sympy.symbols("l1 l2 l3", real=True)
    density = sympy.exp(-(y - l1)) * _gumbel_cdf(y - l1)
    left = density * _gumbel_cdf(y - l2) * _gumbel_cdf(y - l3)
    right = sympy.exp(l1) * sympy.exp(-y) * sympy.exp(-sympy.exp(-y) * (sympy.exp(l1) + sympy.exp(l2) + sympy.exp(l3)))
    assert sympy.simplify(sympy.expand_power_exp(sympy.powsimp(left / right))) == 1


def test_unclamped_law_is_softmax():
    r""":math:`\int_{-\infty}^{\infty} w e^{-y} e^{-e^{-y} S}\,dy = w/S` (substitute :math:`z = e^{-y}`)."""
    w, S, z = sympy.symbols("w S z", positive=True)
    integral = sympy.integrate(w * sympy.exp(-z * S), (z, 0, sympy.oo))  # dy = -dz/z, e^{-y} = z
    assert sympy.simplify(integral - w / S) == 0


def test_law_of_the_winners_noise():
    r"""Part 2: :math:`P(w \text{ wins}, G_w > b) = p_w (1 - e^{-e^{-b}/p_w})`, :math:`p_w = w/S`.

    The winning density of :math:`w` at noise :math:`g` is
    :math:`w e^{-(l_w + g)} e^{-e^{-(l_w + g)} S}` with :math:`e^{l_w} = w`."""
    w, S = sympy.symbols("w S", positive=True)
    g = sympy.Symbol("g", real=True)
    antiderivative = (w / S) * sympy.exp(-sympy.exp(-g) * S / w)  # in g, since e^{-(l_w+g)} S = e^{-g} S / w
    density = sympy.exp(-g) * sympy.exp(-sympy.exp(-g) * S / w)
    assert sympy.simplify(sympy.diff(antiderivative, g) - density) == 0
    tail = sympy.limit(antiderivative, g, sympy.oo) - antiderivative.subs(g, b)
    p = w / S
    assert sympy.simplify(tail - p * (1 - sympy.exp(-sympy.exp(-b) / p))) == 0


def test_worst_case_is_uniform():
    r""":math:`\varphi(p) = p(1 - e^{-c/p})` has :math:`\varphi'' = -c^2 p^{-3} e^{-c/p} < 0`; so
    :math:`\sum_w \varphi(p_w) \le V \varphi(1/V) = 1 - e^{-V c}`."""
    p, c_pos, vocab = sympy.symbols("p c V", positive=True)
    phi = p * (1 - sympy.exp(-c_pos / p))
    assert sympy.simplify(sympy.diff(phi, p, 2) + c_pos**2 / p**3 * sympy.exp(-c_pos / p)) == 0
    assert sympy.simplify(vocab * phi.subs(p, 1 / vocab) - (1 - sympy.exp(-vocab * c_pos))) == 0


def test_inequality_of_part_4():
    r"""With :math:`\psi(z) = e^{-\alpha z}(1 + (1 - e^{-\alpha}) z)`:
    :math:`\psi' \le 0`, and the left side minus the right side of the adjacent-pair
    inequality exceeds :math:`\psi(x) - \psi(y)` by :math:`(e^{\alpha} + e^{-\alpha} - 2)\,x e^{-\alpha x} \ge 0`."""
    a_pos, x, yy, z = sympy.symbols("alpha x y z", positive=True)
    psi = sympy.exp(-a_pos * z) * (1 + (1 - sympy.exp(-a_pos)) * z)
    derivative = sympy.simplify(sympy.diff(psi, z) * sympy.exp(a_pos * z))
    # derivative = (1 - e^{-a}) - a - a (1 - e^{-a}) z: each of the two parts is <= 0
    expected = (1 - sympy.exp(-a_pos)) - a_pos - a_pos * (1 - sympy.exp(-a_pos)) * z
    assert sympy.simplify(derivative - expected) == 0
    gap = a_pos - (1 - sympy.exp(-a_pos))  # >= 0: zero at 0, derivative 1 - e^{-a} >= 0
    assert gap.subs(a_pos, 0) == 0 and sympy.simplify(sympy.diff(gap, a_pos) - (1 - sympy.exp(-a_pos))) == 0
    left = (sympy.exp(-a_pos * x) - sympy.exp(-a_pos * yy) + (sympy.exp(a_pos) - 1) * x * sympy.exp(-a_pos * x)
            - (1 - sympy.exp(-a_pos)) * yy * sympy.exp(-a_pos * yy))
    excess = sympy.simplify(left - (psi.subs(z, x) - psi.subs(z, yy)))
    assert sympy.simplify(excess - (sympy.exp(a_pos) + sympy.exp(-a_pos) - 2) * x * sympy.exp(-a_pos * x)) == 0


def test_perturbation_formula():
    r"""Part 6: :math:`P(l_j + G_j > M_{-j} + s) = p/(p + e^{s}(1 - p))` with :math:`M_{-j}` Gumbel
    at :math:`\log Z_{-j}`; so :math:`e^{-2\eta} p \le p/(p + e^{2\eta}(1-p))` and
    :math:`p/(p + e^{-2\eta}(1-p)) \le e^{2\eta} p`."""
    w, rest, shift = sympy.symbols("w R s", positive=True)
    z = sympy.Symbol("z", positive=True)
    # l_j + G_j = t has density w e^{-t} e^{-w e^{-t}}; P(M_{-j} < t - s) = exp(-R e^{s} e^{-t}); z = e^{-t}
    integral = sympy.integrate(w * sympy.exp(-w * z) * sympy.exp(-rest * sympy.exp(shift) * z), (z, 0, sympy.oo))
    p = w / (w + rest)
    assert sympy.simplify(integral - p / (p + sympy.exp(shift) * (1 - p))) == 0
    eta, q = sympy.symbols("eta q", positive=True)
    lower_gap = sympy.simplify(q / (q + sympy.exp(2 * eta) * (1 - q)) - sympy.exp(-2 * eta) * q)
    # = q (1 - q)(1 - e^{-2 eta})... / (q + e^{2 eta}(1 - q)) >= 0 for q in [0, 1]
    for value_q, value_eta in itertools.product([0.01, 0.3, 0.9], [1e-6, 0.1, 1.0]):
        assert float(lower_gap.subs({q: value_q, eta: value_eta})) >= 0
        upper = value_q / (value_q + math.exp(-2 * value_eta) * (1 - value_q))
        assert upper <= math.exp(2 * value_eta) * value_q + 1e-15


# ---------------------------------------------------------------------------
# (b) quadrature against the closed form
# ---------------------------------------------------------------------------


def _cdf(x: float) -> float:
    return math.exp(-math.exp(-x)) if x > -700 else 0.0


def _clamped_below(value: float, floor: float, cap: float, strict: bool) -> float:
    """P(C < value) (strict) or P(C <= value) for C = min(max(G, floor), cap)."""
    if strict:
        return 0.0 if value <= floor else (_cdf(value) if value <= cap else 1.0)
    return 0.0 if value < floor else (_cdf(value) if value < cap else 1.0)


def quadrature_law(logits, cap: float, floor: float) -> np.ndarray:
    """P(first argmax = j), by integrating over G_j and adding its two atoms; O(V^2) per point."""
    logits = [float(v) for v in logits]
    size = len(logits)
    law = np.zeros(size)
    for j in range(size):
        if logits[j] == -math.inf:
            continue

        def others(g, j=j):
            product = 1.0
            for i in range(size):
                if i != j and logits[i] != -math.inf:
                    product *= _clamped_below(g + (logits[j] - logits[i]), floor, cap, strict=i < j)
            return product

        def density(g):
            return math.exp(-g - math.exp(-g)) * others(g) if g > -40 else 0.0

        low = floor if math.isfinite(floor) else -40.0
        high = cap if math.isfinite(cap) else 80.0
        cuts = {e + logits[i] - logits[j] for i in range(size) if logits[i] != -math.inf
                for e in (floor, cap) if math.isfinite(e)}
        edges = [low, *sorted(v for v in cuts if low < v < high), high]
        total = sum(integrate.quad(density, u, v, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
                    for u, v in zip(edges[:-1], edges[1:]))
        if math.isfinite(floor):
            total += _cdf(floor) * others(floor)
        if math.isfinite(cap):
            total += -math.expm1(-math.exp(-cap)) * others(cap)
        law[j] = total
    return law


VALUES = [0.0, -0.7, -2.0, -math.inf]
RANGES = [(-math.inf, math.inf), (-math.inf, 1.0), (-0.5, 1.0), (-0.5, math.inf), (-1.0, 1.0), (0.3, 2.0)]


def _family():
    """Every logit vector of length 1..3 over VALUES with a finite entry; (-1, 1) makes l_j + b = l_max + a
    possible (0 and -2 differ by b - a)."""
    for size in (1, 2, 3):
        for logits in itertools.product(VALUES, repeat=size):
            if any(math.isfinite(v) for v in logits):
                yield np.array(logits)


@pytest.mark.parametrize("floor, cap", RANGES)
def test_closed_form_equals_quadrature_on_the_family(floor, cap):
    worst = 0.0
    for logits in _family():
        law = precision.clamped_gumbel_law(logits, cap, floor)
        reference = quadrature_law(logits, cap, floor)
        worst = max(worst, np.abs(law - reference).max())
        assert abs(law.sum() - 1.0) < 1e-12
    assert worst < LAW_TOLERANCE


def test_closed_form_equals_quadrature_on_random_instances():
    rng = np.random.default_rng(13)
    for _ in range(25):
        size = int(rng.integers(2, 7))
        logits = rng.normal(size=size) * rng.choice([1.0, 4.0])
        cap = float(rng.uniform(0.0, 4.0))
        floor = float(rng.choice([-math.inf, cap - rng.uniform(0.5, 5.0)]))
        np.testing.assert_allclose(precision.clamped_gumbel_law(logits, cap, floor),
                                   quadrature_law(logits, cap, floor), rtol=0, atol=LAW_TOLERANCE)


def test_mutated_closed_forms_are_rejected():
    """Negative controls: the comparison sees a cap off by 0.05 and the unclamped law."""
    logits, cap, floor = np.array([0.0, -0.7, -2.0]), 1.0, -0.5
    reference = quadrature_law(logits, cap, floor)
    assert np.abs(precision.clamped_gumbel_law(logits, cap + 0.05, floor) - reference).max() > 1e-3
    assert np.abs(_softmax(logits) - reference).max() > 1e-2


# ---------------------------------------------------------------------------
# (c) the bounds
# ---------------------------------------------------------------------------


def _softmax(logits):
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _random_instances(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        size = int(rng.integers(2, 40))
        logits = rng.normal(size=size) * rng.choice([1.0, 3.0, 8.0])
        if rng.random() < 0.3:
            logits[rng.integers(size)] = logits[rng.integers(size)]  # a tie
        cap = float(rng.uniform(-1.0, 8.0))
        floor = float(rng.choice([-math.inf, cap - rng.uniform(0.2, 10.0)]))
        yield logits, cap, floor


def test_tv_bound_suppression_and_majorization():
    for logits, cap, floor in _random_instances(1, 400):
        law = precision.clamped_gumbel_law(logits, cap, floor)
        probs = _softmax(logits)
        distance = 0.5 * np.abs(law - probs).sum()
        bound = float(precision.tv_bound(logits, cap, floor))
        assert distance <= bound + 1e-12
        assert bound <= precision.worst_case_tv_bound(logits.size, cap, floor) + 1e-12
        assert np.all(law <= precision.suppression_bound(logits, cap, floor) + 1e-12)
        # part 4: q/p non-increasing along (logit descending, index ascending)
        order = np.lexsort((np.arange(logits.size), -logits))
        ratio = law[order] / probs[order]
        assert np.all(np.diff(ratio) <= 1e-9 * ratio.max())
        assert np.all(np.cumsum(np.sort(law)[::-1]) >= np.cumsum(np.sort(probs)[::-1]) - 1e-12)
        assert precision.entropy(law) <= precision.entropy(probs) + 1e-12


RATIO_ATTAINED = 0.5


def test_bounds_are_not_vacuous():
    """Negative controls: the TV bound is attained to within a factor 2 on some instance (so half of it
    would be violated), and a hotter law (T = 1.5) fails the majorization check."""
    ratios = []
    for logits, cap, floor in _random_instances(2, 200):
        law = precision.clamped_gumbel_law(logits, cap, floor)
        distance = 0.5 * np.abs(law - _softmax(logits)).sum()
        ratios.append(distance / float(precision.tv_bound(logits, cap, floor)))
    assert max(ratios) > RATIO_ATTAINED  # so the bound divided by 1 / RATIO_ATTAINED would be violated
    probs = _softmax(np.array([0.0, -1.0, -2.5, -4.0]))
    hotter = precision.tempered(probs, 1.5)
    assert np.any(np.cumsum(np.sort(hotter)[::-1]) < np.cumsum(np.sort(probs)[::-1]) - 1e-6)


def test_suppression_is_total_beyond_the_range():
    """q_j = 0 for l_j + b < l_max + a; a token b + c nats down has q_j <= exp(-e^c)."""
    cap, floor = 2.0, -1.0
    logits = np.array([0.0, -2.9, -3.1, -4.0])
    law = precision.clamped_gumbel_law(logits, cap, floor)
    assert law[2] == 0.0 and law[3] == 0.0 and law[1] > 0.0
    for gap in (0.5, 1.0, 2.0):
        tail = precision.clamped_gumbel_law(np.array([0.0, -(cap + gap)]), cap)
        assert tail[1] <= math.exp(-math.exp(gap)) + 1e-15
        assert tail[1] < _softmax(np.array([0.0, -(cap + gap)]))[1]


# ---------------------------------------------------------------------------
# (d) masked diffusion
# ---------------------------------------------------------------------------


def _stepwise_token_law(probs, num_steps, cap, floor):
    """The composite law by an explicit recursion over steps through the public per-step law."""
    law, still_masked = np.zeros(probs.size), 1.0
    with np.errstate(divide="ignore"):
        token_logits = np.log(probs)
    for n in range(num_steps, 0, -1):
        mask_logit = math.log((n - 1) / n) if n > 1 else -math.inf
        step = precision.clamped_gumbel_law(np.append(token_logits - math.log(n), mask_logit), cap, floor)
        law += still_masked * step[:-1]
        still_masked *= step[-1]
    return law


@pytest.mark.parametrize("cap, floor", [(math.inf, -math.inf), (2.0, -math.inf), (2.5, -1.5)])
def test_masked_diffusion_composite(cap, floor):
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    law = precision.masked_diffusion_token_law(probs, 12, cap, floor, chunk=5)
    np.testing.assert_allclose(law, _stepwise_token_law(probs, 12, cap, floor), rtol=0, atol=1e-12)
    assert abs(law.sum() - 1.0) < 1e-12
    if math.isinf(cap):
        np.testing.assert_allclose(law, probs, rtol=0, atol=1e-12)
    else:
        assert 0.5 * np.abs(law - probs).sum() > 1e-3
        assert np.all(np.diff(law / probs) <= 1e-12)  # the ratio R(v) of part 5 is non-increasing
        assert precision.entropy(law) < precision.entropy(probs)
        assert precision.effective_temperature(probs, law) < 1.0


# ---------------------------------------------------------------------------
# (e) JAX's float32 noise, all of it
# ---------------------------------------------------------------------------


def test_jax_float32_noise_is_capped_and_rounded_down():
    grid = precision._jax_noise_grid("float32").astype(np.float64)  # g(k 2^-23) for k = 0 .. 2^23 - 1
    size = grid.size
    assert size == 2**23
    assert grid.max() == precision.gumbel_cap("float32") and grid.min() == precision.gumbel_floor("float32")
    assert abs(grid.max() - (-math.log(-math.log1p(-(2.0**-23))))) < 2e-6  # 23 log 2 - 2^-24
    assert np.all(np.diff(grid) >= 0)
    # rounded down: P(G_grid <= t) = (floor(N F(t)) + 1) / N, at points between the grid values
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(-2.5, 15.9, 200), 15.9424 - np.log(np.arange(1, 50) + 0.5)])
    counted = np.searchsorted(grid, points, side="right") / size
    predicted = np.minimum(np.floor(size * np.exp(-np.exp(-points))) + 1, size) / size
    assert np.abs(counted - predicted).max() <= 4.0 / size  # float32 rounding of the grid values
    # and the top of the grid is coarse: the largest values are cap - log(m), m = 1, 2, 3, ...
    np.testing.assert_allclose(grid[-4:][::-1], grid.max() - np.log([1, 2, 3, 4]), atol=1e-5)


# ---------------------------------------------------------------------------
# (f) arprob's noise
# ---------------------------------------------------------------------------


def _words(values, branch: int):
    """uint32 words (w0, w1, r) of 95-bit integers m (Python ints) in the given half."""
    values = [int(v) for v in values]
    first = [(branch << 31) | (v >> 64) for v in values]
    return [jnp.asarray(np.array(first, np.uint32)),
            jnp.asarray(np.array([(v >> 32) & 0xFFFFFFFF for v in values], np.uint32)),
            jnp.asarray(np.array([v & 0xFFFFFFFF for v in values], np.uint32))]


_noise32 = jax.jit(lambda w0, w1, r: _gumbel_from_words([w0, w1, r], np.float32))


def _noise(values, branch: int) -> np.ndarray:
    return np.asarray(_noise32(*_words(values, branch)), np.float64)


def test_arprob_noise_tail_law_is_exact():
    r"""On the lower half (:math:`\beta = 0`) :math:`Q` decreases in :math:`m`, so
    :math:`P(Q > t) = m^*(t)/2^{96}` with :math:`m^*` the first :math:`m` where :math:`Q \le t`
    (bisection on the bit patterns).  It is :math:`1 - e^{-e^{-t'}}` at a level :math:`t'` within
    :math:`2^{-20}\max(1, t)` of :math:`t` (the float32 resolution of the value) for every
    :math:`t \le 50`; JAX's float32 noise gives 0 above 15.94."""
    thresholds = np.array([1.0, 3.0, 8.0, 15.0, 16.0, 20.0, 30.0, 40.0, 45.0, 50.0])
    low = [0] * thresholds.size  # Q(low) > t
    high = [2**95] * thresholds.size  # Q(high) <= t (m = 2^95 stands for X = 1/2, where Q = 0.37)
    for _ in range(96):
        middle = [(lo + hi) // 2 for lo, hi in zip(low, high)]
        above = _noise(middle, 0) > thresholds
        low = [m if a else lo for m, a, lo in zip(middle, above, low)]
        high = [hi if a else m for m, a, hi in zip(middle, above, high)]
    probability = np.array([float(h) for h in high]) / 2.0**96
    slack = 2.0**-20 * np.maximum(1.0, thresholds)  # a float32 noise value is a multiple of its ulp
    assert np.all(-np.expm1(-np.exp(-(thresholds + slack))) <= probability)
    assert np.all(probability <= -np.expm1(-np.exp(-(thresholds - slack))))
    grid = precision._jax_noise_grid("float32")
    jax_tail = np.array([(grid > t).mean() for t in thresholds])
    assert np.all(jax_tail[thresholds > 15.95] == 0.0)  # negative control: JAX's float32 noise never gets there
    # consistency of the bisection with random patterns: Q > t iff m < m*(t)
    source = random.Random(5)
    sample = [source.getrandbits(95) >> source.randrange(0, 95) for _ in range(2000)]
    values = _noise(sample, 0)
    for t, boundary in zip(thresholds, high):
        assert np.array_equal(values > t, np.array([v < boundary for v in sample]))


def test_arprob_noise_float_error():
    r"""Part 6: :math:`|Q - G(Y)| \le 2^{-20}\max(1, |G|)` for :math:`Y` anywhere in the bit pattern's
    cell, with :math:`G(Y)` computed in float64, on both halves, for patterns spread over all
    exponents (:math:`Y \ge 2^{-73}`); and the range of the noise is [-4.208, 67.24]."""
    source = random.Random(7)
    sample = [source.getrandbits(95) >> source.randrange(0, 72) for _ in range(3000)]
    sample = [v for v in sample if v >= 2**23]  # Y >= 2^-73: full precision
    for branch in (0, 1):
        noise = _noise(sample, branch)
        for edge in (0, 1):
            cell = np.array([(v + edge) * 2.0**-96 for v in sample])
            exact = -np.log(-np.log1p(-cell)) if branch == 0 else -np.log(-np.log(cell))
            assert np.all(np.abs(noise - exact) <= 2.0**-20 * np.maximum(1.0, np.abs(exact)))
    assert precision.gumbel_cap("float32", "arprob") == pytest.approx(97 * math.log(2), rel=1e-6)
    assert precision.gumbel_floor("float32", "arprob") == pytest.approx(-math.log(97 * math.log(2)), rel=1e-6)
    assert precision.library_tv_bound(10**6) < 1e-12
