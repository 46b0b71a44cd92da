r"""Machine check of theorem 4 (``proofs/04-diffusion-elbo-any-order.md``).

(a) sympy, exact: the Beta integral
    :math:`\int_0^1 \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda = 1/(k\binom{L}{k})` for every
    :math:`1 \le k \le L \le 8` (and the weight :math:`1/k` is rejected); for each
    schedule, the SEDD/RADD weight :math:`\sigma(t)e^{-\bar\sigma}/(1-e^{-\bar\sigma})`
    is :math:`m'(t)/m(t)`, and the time integral of every size-:math:`k` term
    equals :math:`\int_0^{m(1)}\lambda^{k-1}(1-\lambda)^{L-k}d\lambda` (the change of
    variables :math:`\lambda = m(t)`, :math:`L \le 3`); the truncation term of
    ``log_linear(eps)`` in closed form; u-PMLM's uniform masking ratio gives
    every mask size probability :math:`1/(L+1)` and the loss
    :math:`\mathbb E_\sigma[-\log q_\sigma]/(L+1)`; the weights of the four loss
    forms are the same rationals.
(b) float64 through the library, tolerance 1e-10: ``AbsorbingDiffusion.elbo``
    equals ``AnyOrderAR.expected_nll`` on every sequence of two small spaces,
    for exact and perturbed families and the schedules linear, cosine and
    log_linear(0); ``elbo + truncation_gap`` equals it for log_linear(1e-3)
    and log_linear(0.1), with the gap matching the sympy closed form; the exact
    expectations of the four loss forms coincide (u-PMLM times L).  Negative
    controls: the weight 1/k and the time weight m'(t) without 1/m(t) fail.
(c) statistical (the one non-exact check; fixed seed): ``training_loss``
    Monte Carlo estimates lie within 5 standard errors of ``expected_loss``.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.integrate
import sympy

import arprob
from arprob import schedules
from arprob._enumerate import all_sequences
from arprob.conditionals import perturbed

TOLERANCE = 1e-10  # float64; quadrature is asked for 1e-13


# ---------------------------------------------------------------------------
# (a) symbolic
# ---------------------------------------------------------------------------

LAMBDA, T, EPS, R = sympy.symbols("lambda t epsilon r", positive=True)


def _weight(length: int, size: int):
    return sympy.Rational(1, size * math.comb(length, size))


def _beta(size: int, length: int, upper=1):
    r""":math:`\int_0^{u} \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda`."""
    return sympy.integrate(LAMBDA ** (size - 1) * (1 - LAMBDA) ** (length - size), (LAMBDA, 0, upper))


@pytest.mark.parametrize("length", range(1, 9))
def test_beta_integral(length):
    for size in range(1, length + 1):
        assert _beta(size, length) == _weight(length, size)
        if size < length:  # negative control: 1/k alone (no binomial) is not the integral
            assert _beta(size, length) != sympy.Rational(1, size)


# m(t) of each schedule (log_linear with a symbolic eps)
MASK_PROBS = {
    "linear": T,
    "cosine": 1 - sympy.cos(sympy.pi * T / 2),
    "log_linear": (1 - EPS) * T,
}


@pytest.mark.parametrize("kind", list(MASK_PROBS))
def test_elbo_weight_is_d_lambda_over_lambda(kind):
    r""":math:`\sigma(t)\,e^{-\bar\sigma}/(1-e^{-\bar\sigma}) = m'(t)/m(t)`, so :math:`w(t)\,dt = d\lambda/\lambda`."""
    mask_prob = MASK_PROBS[kind]
    total = -sympy.log(1 - mask_prob)
    rate = sympy.diff(total, T)
    sedd_weight = rate * sympy.exp(-total) / (1 - sympy.exp(-total))
    assert sympy.simplify(sedd_weight - sympy.diff(mask_prob, T) / mask_prob) == 0
    # negative control: the rate alone is not the weight
    assert sympy.simplify(rate - sympy.diff(mask_prob, T) / mask_prob) != 0


@pytest.mark.parametrize("kind", list(MASK_PROBS))
def test_change_of_variables(kind):
    r""":math:`\int_0^1 \frac{m'}{m}\, m^k (1-m)^{L-k}\,dt = \int_0^{m(1)} \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda`."""
    mask_prob = MASK_PROBS[kind]
    weight = sympy.diff(mask_prob, T) / mask_prob
    final = mask_prob.subs(T, 1)
    for length in range(1, 4):
        for size in range(1, length + 1):
            in_time = sympy.integrate(sympy.expand(sympy.cancel(weight * mask_prob**size)
                                                   * (1 - mask_prob) ** (length - size)), (T, 0, 1))
            assert sympy.simplify(in_time - _beta(size, length, final)) == 0, (length, size)
            if final == 1:
                assert sympy.simplify(in_time - _weight(length, size)) == 0


def truncation_tail(size: int, length: int):
    r""":math:`\int_{1-\varepsilon}^1 \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda`, a polynomial in :math:`\varepsilon`."""
    return sympy.expand(_weight(length, size) - _beta(size, length, 1 - EPS))


def test_truncation_term_closed_form():
    r"""With :math:`u = 1-\lambda` the tail is :math:`\int_0^\varepsilon u^{L-k}(1-u)^{k-1}du`.

    That is :math:`\frac{\varepsilon^{L-k+1}}{L-k+1} + O(\varepsilon^{L-k+2})`, so only the
    :math:`k = L` term, :math:`(1-(1-\varepsilon)^L)/L`, is of first order in :math:`\varepsilon`.
    """
    u = sympy.Symbol("u", positive=True)
    for length in range(1, 7):
        assert sympy.expand(truncation_tail(length, length) - (1 - (1 - EPS) ** length) / length) == 0
        for size in range(1, length + 1):
            tail = truncation_tail(size, length)
            reflected = sympy.integrate(u ** (length - size) * (1 - u) ** (size - 1), (u, 0, EPS))
            assert sympy.expand(tail - reflected) == 0
            order = length - size + 1
            assert sympy.expand(sympy.series(tail, EPS, 0, order + 1).removeO() - EPS**order / order) == 0


@pytest.mark.parametrize("length", range(1, 9))
def test_uniform_masking_ratio_is_the_same_statement(length):
    r"""u-PMLM: ratio :math:`r\sim U(0,1)`, each token masked with probability r.

    Then :math:`P(|M| = k) = \int_0^1 \binom{L}{k} r^k(1-r)^{L-k}\,dr = 1/(L+1)` for
    :math:`k = 0..L`, the masked set is uniform given its size, and the loss
    :math:`\mathbb 1\{k\ge1\}\frac1k\sum_{i\in M} c(i, \neg M)` has expectation
    :math:`\frac{1}{L+1}\sum_k \frac{h_k}{k\binom{L}{k}} = \mathbb E_\sigma[-\log q_\sigma]/(L+1)`;
    given :math:`k \ge 1` (probability :math:`L/(L+1)`) it is :math:`\mathbb E_\sigma[-\log q_\sigma]/L`.
    """
    h = sympy.symbols(f"h1:{length + 1}")  # h_k: total loss over masked sets of size k
    expected_nll = sum(_weight(length, k) * h[k - 1] for k in range(1, length + 1))
    loss = sympy.Integer(0)
    for size in range(0, length + 1):
        probability = sympy.integrate(math.comb(length, size) * R**size * (1 - R) ** (length - size), (R, 0, 1))
        assert probability == sympy.Rational(1, length + 1)
        if size:
            # each of the C(L,k) sets of size k is equally likely; h_k sums over them
            loss += probability * sympy.Rational(1, math.comb(length, size)) * h[size - 1] / size
    assert sympy.expand(loss - expected_nll / (length + 1)) == 0
    given_some_mask = loss / (1 - sympy.Rational(1, length + 1))
    assert sympy.expand(given_some_mask - expected_nll / length) == 0


@pytest.mark.parametrize("length", range(1, 9))
def test_loss_form_weights_coincide(length):
    """MDLM (Beta integral), lambda-DCE (Beta function), ARDM, L x u-PMLM: all 1/(k C(L,k))."""
    for size in range(1, length + 1):
        binomial = math.comb(length, size)
        forms = {
            "mdlm": _beta(size, length),
            "lambda_dce": sympy.gamma(size) * sympy.gamma(length - size + 1) / sympy.gamma(length + 1),
            "ardm": sympy.Rational(1, length) * sympy.Rational(length, size) / binomial,
            "upmlm x L": length * sympy.Rational(1, length) * sympy.Rational(1, size) / binomial,
        }
        for name, weight in forms.items():
            assert sympy.simplify(weight - _weight(length, size)) == 0, name


# ---------------------------------------------------------------------------
# (b) float64 through the library
# ---------------------------------------------------------------------------


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


MODELS = {
    "tabular-V2-L4": lambda: arprob.TabularJoint(probs=_dirichlet(3, (16,)).reshape((2,) * 4)),
    "markov-V3-L3": lambda: (lambda rows: arprob.MarkovChain(rows[-1], rows[:-1], 3))(_dirichlet(4, (4, 3))),
}
# (model, scale) pairs; scale 0.0 is the exact family.  The identity is about weights and holds for any family.
# One compilation per model class and shape, so each space has one kind of family.
FAMILIES = [("tabular-V2-L4", 0.0), ("markov-V3-L3", 0.5), ("markov-V3-L3", 2.0)]
FULL_SCHEDULES = {"linear": schedules.linear(), "cosine": schedules.cosine(),
                  "log_linear(0)": schedules.log_linear(0.0)}
TRUNCATED = [1e-3, 0.1]


def _family(name: str, scale: float):
    model = MODELS[name]()
    return model, (model if scale == 0.0 else perturbed(model, jax.random.key(17), scale))


@pytest.fixture(scope="module")
def nll_tables():
    """Per (model, scale): sequences, h_k table and expected NLL (one 2**L subset pass each)."""
    out = {}
    for name, scale in FAMILIES:
        model, family = _family(name, scale)
        sequences = all_sequences(model.vocab_size, model.length)
        any_order = arprob.AnyOrderAR(family)
        out[name, scale] = (model, family, sequences, np.asarray(any_order.per_size_losses(sequences)),
                            np.asarray(any_order.expected_nll(sequences)))
    return out


@pytest.mark.parametrize(("name", "scale"), FAMILIES)
def test_elbo_equals_expected_nll_for_every_full_schedule(nll_tables, name, scale):
    model, family, sequences, _, expected_nll = nll_tables[name, scale]
    assert np.isfinite(expected_nll).all()
    for schedule in FULL_SCHEDULES.values():
        diffusion = arprob.AbsorbingDiffusion(family, schedule)
        np.testing.assert_allclose(diffusion.elbo(sequences), expected_nll, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(diffusion.truncation_gap(sequences), 0.0, rtol=0, atol=0)
    if scale == 0.0:  # theorem 2: for a consistent family the bound is -log p(x)
        np.testing.assert_allclose(expected_nll, -np.log(model.law()), rtol=0, atol=TOLERANCE)


def _tail_values(length: int, eps: float) -> np.ndarray:
    """The sympy truncation tails, evaluated in float64, for k = 1..L."""
    return np.array([float(truncation_tail(size, length).subs(EPS, sympy.Rational(eps)))
                     for size in range(1, length + 1)])


@pytest.mark.parametrize("eps", TRUNCATED)
@pytest.mark.parametrize(("name", "scale"), FAMILIES)
def test_truncated_schedule_gap(nll_tables, name, scale, eps):
    model, family, sequences, per_size, expected_nll = nll_tables[name, scale]
    diffusion = arprob.AbsorbingDiffusion(family, schedules.log_linear(eps))
    elbo, gap = diffusion.elbo(sequences), diffusion.truncation_gap(sequences)
    np.testing.assert_allclose(elbo + gap, expected_nll, rtol=0, atol=TOLERANCE)
    # the gap is the closed form of (a), computed here from sympy rather than scipy's betaincc
    np.testing.assert_allclose(gap, _tail_values(model.length, eps) @ per_size[1:], rtol=0, atol=TOLERANCE)
    assert gap.min() > 0  # the truncated integral alone undershoots


@pytest.mark.parametrize(("name", "scale"), FAMILIES)
def test_expected_loss_forms_coincide(nll_tables, name, scale):
    model, family, sequences, _, expected_nll = nll_tables[name, scale]
    diffusion = arprob.AbsorbingDiffusion(family, schedules.cosine())
    for form, factor in (("mdlm", 1), ("lambda_dce", 1), ("ardm", 1), ("upmlm", model.length)):
        np.testing.assert_allclose(factor * diffusion.expected_loss(sequences, form), expected_nll,
                                   rtol=0, atol=TOLERANCE, err_msg=form)


@pytest.mark.parametrize(("name", "scale"), FAMILIES)
def test_wrong_weights_fail(nll_tables, name, scale):
    """Negative controls: the size weight 1/k, and the time weight m'(t) without the 1/m(t)."""
    model, family, sequences, per_size, expected_nll = nll_tables[name, scale]
    length = model.length
    sizes = np.arange(1, length + 1)
    assert np.abs(per_size[1:].T @ (1.0 / sizes) - expected_nll).max() > 1e-3
    schedule = schedules.cosine()

    def without_one_over_m(t, h):
        m = float(schedule.mask_prob(t))
        return float(schedule.mask_rate(t)) * float(np.sum(h * m**sizes * (1 - m) ** (length - sizes)))

    wrong = [scipy.integrate.quad(without_one_over_m, 0, 1, args=(h,), epsabs=1e-13, epsrel=1e-13)[0]
             for h in per_size[1:].T]
    assert np.abs(np.array(wrong) - expected_nll).min() > 1e-3


def _zero_cell_model() -> arprob.TabularJoint:
    probs = _dirichlet(8, (16,))
    probs[[3, 9]] = 0.0
    return arprob.TabularJoint(probs=(probs / probs.sum()).reshape((2,) * 4))


def test_zero_probability_sequence_has_infinite_bound():
    """Where p(x) = 0 both sides of theorem 4 are +inf (theorem 2's convention -log 0 = +inf)."""
    sequences = all_sequences(2, 4)  # all 16, the shape compiled for the fixture
    model = _zero_cell_model()
    impossible = model.law() == 0
    assert impossible.sum() == 2
    nll = np.asarray(arprob.AnyOrderAR(model).expected_nll(sequences))
    np.testing.assert_allclose(nll[~impossible], -np.log(model.law()[~impossible]), rtol=0, atol=TOLERANCE)
    assert np.all(nll[impossible] == np.inf)
    assert np.all(arprob.AbsorbingDiffusion(model, schedules.linear()).elbo(sequences)[impossible] == np.inf)


# ---------------------------------------------------------------------------
# (c) Monte Carlo training losses against their exact expectations
# ---------------------------------------------------------------------------

NUM_SAMPLES = 20_000
Z = 5.0  # two-sided P(|N(0,1)| > 5) = 5.7e-7 per comparison; 6 comparisons: < 3.5e-6 by the union bound
# The two sampling schemes of the four forms: a continuous noise level (MDLM; lambda-DCE is MDLM with the
# linear schedule, draw for draw) and a number of masked tokens (ARDM; u-PMLM has the same draws with weight
# 1/k instead of L/k).  The weights are checked exactly above; each case costs one compilation (2-3 s of CPU).
MC_CASES = [("mdlm", schedules.cosine()), ("ardm", schedules.linear())]


def test_training_loss_estimates_match_expectations(nll_tables):
    r"""Each estimate is within Z standard errors of its exact expectation (3 sequences x 2 schemes).

    The statistic is the studentized mean of ``NUM_SAMPLES`` i.i.d. draws.  For
    ARDM the draws are bounded, so it is asymptotically N(0, 1).  For MDLM
    the weight :math:`m'(t)/m(t)` gives a tail
    :math:`P(Y > y) \sim c\,y^{-2}` (one masked token at a tiny noise level); the
    variance is finite only because levels are floored at 1e-300, but the
    truncated second moment grows like :math:`\log y`, which puts the draws in
    the domain of attraction of the normal law, and the self-normalized mean is
    then asymptotically N(0, 1) all the same (Giné, Götze & Mason 1997).  The
    seed is fixed, so the test is deterministic; the stated false-alarm
    probability is that of the seed being unlucky.  Power: the same estimates
    are compared with the value under the wrong weight 1/k and must be rejected.
    """
    model, family, sequences, per_size, _ = nll_tables["tabular-V2-L4", 0.0]
    rows = [0, 6, 13]
    x = sequences[rows]
    sizes = np.arange(1, model.length + 1)
    wrong = per_size[1:, rows].T @ (1.0 / sizes)
    for index, (form, schedule) in enumerate(MC_CASES):
        diffusion = arprob.AbsorbingDiffusion(family, schedule)
        mean, stderr = (np.asarray(a) for a in diffusion.training_loss(jax.random.key(index), x, form, NUM_SAMPLES))
        expected = diffusion.expected_loss(x, form)
        assert (stderr > 0).all()
        assert (np.abs(mean - expected) <= Z * stderr).all(), (form, mean, expected, stderr)
        scale = 1.0 / model.length if form == "upmlm" else 1.0
        assert (np.abs(mean - scale * wrong) > Z * stderr).all(), form
