"""Noise schedules and AbsorbingDiffusion: forward and marginal laws, concrete score, training losses.

Oracles are written here: the forward law by the product formula over
``itertools.product`` of noisy sequences, the marginal law as the mixture of
forward laws over clean sequences, derivatives by central finite differences.
The exhaustive theorem checks (score factorization, ELBO = expected NLL) are
``proofs/check_03_absorbing_concrete_score.py`` and
``proofs/check_04_diffusion_elbo_any_order.py``; these tests cover behaviour,
API, jit and errors.

Statistical assertions use fixed seeds and state their false-alarm probability.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from error_checks import raises as _raises

from arprob import AbsorbingDiffusion, TabularJoint, schedules
from arprob._enumerate import all_sequences
from arprob.conditionals import perturbed
from arprob.diffusion import _loss_samples
from arprob.errors import (
    ArprobTypeError,
    InvalidArgumentError,
    InvalidTokenError,
    ShapeError,
    ZeroProbabilityError,
)
from arprob.samplers import ancestral_law

EXACT = 1e-10
LAW = 1e-12
# z for a two-sided normal tail of 6.8e-6 (one |estimate - truth| <= Z * se check)
Z = 4.5

VOCAB, LENGTH, MASK = 3, 4, 3
SCHEDULES = {"linear": schedules.linear(), "cosine": schedules.cosine(), "log_linear": schedules.log_linear(1e-3),
             "log_linear_0": schedules.log_linear(0.0)}
TIMES = np.array([0.05, 0.2, 0.45, 0.7, 0.9])


@functools.cache
def tabular() -> TabularJoint:
    """V=3, L=4, cells from a Dirichlet(0.5) (numpy: no JAX compilation to build it)."""
    return TabularJoint(probs=np.random.default_rng(1).dirichlet(np.full(81, 0.5)).reshape((3,) * 4))


@functools.cache
def noisy():
    return perturbed(tabular(), jax.random.key(5), 0.5)


def _diffusion(which: str = "exact", schedule: str = "linear") -> AbsorbingDiffusion:
    return AbsorbingDiffusion(tabular() if which == "exact" else noisy(), SCHEDULES[schedule])


NOISY_STATES = np.array(list(itertools.product(range(VOCAB + 1), repeat=LENGTH)), dtype=np.int32)  # base V+1
X0 = np.array([[0, 1, 2, 0], [2, 2, 1, 0], [1, 0, 0, 2]], dtype=np.int32)


# ------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_quantities_are_consistent(name):
    """m = 1 - exp(-total), alpha = 1 - m, rate = d total / dt, mask_rate = dm/dt = rate * alpha, w = m'/m."""
    schedule = SCHEDULES[name]
    m, total = schedule.mask_prob(TIMES), schedule.total(TIMES)
    np.testing.assert_allclose(m, 1.0 - np.exp(-total), rtol=1e-13)
    np.testing.assert_allclose(schedule.alpha(TIMES), 1.0 - m, rtol=1e-13)
    step = 1e-6  # central differences: truncation error ~ step**2 * f''', rounding ~ 1e-16 / step
    d_total = (schedule.total(TIMES + step) - schedule.total(TIMES - step)) / (2 * step)
    d_mask = (schedule.mask_prob(TIMES + step) - schedule.mask_prob(TIMES - step)) / (2 * step)
    np.testing.assert_allclose(schedule.rate(TIMES), d_total, rtol=1e-7)
    np.testing.assert_allclose(schedule.mask_rate(TIMES), d_mask, rtol=1e-7)
    np.testing.assert_allclose(schedule.mask_rate(TIMES), schedule.rate(TIMES) * schedule.alpha(TIMES), rtol=1e-13)
    np.testing.assert_allclose(schedule.elbo_weight(TIMES), schedule.mask_rate(TIMES) / m, rtol=1e-13)
    assert np.all(np.diff(schedule.mask_prob(np.linspace(0, 1, 101))) > 0)  # strictly increasing


@pytest.mark.parametrize(
    "name, final",
    [("linear", 1.0), ("log_linear", 1.0 - 1e-3), ("log_linear_0", 1.0), ("cosine", 1.0)],
)
def test_schedule_endpoints(name, final):
    schedule = SCHEDULES[name]
    assert schedule.mask_prob(0.0) == 0.0 and schedule.total(0.0) == 0.0 and schedule.alpha(0.0) == 1.0
    assert schedule.mask_prob(1.0) == pytest.approx(final, abs=1e-15)
    assert schedule.final_mask_prob == final  # exactly 1 for a schedule that masks everything (not 1 - 2**-53)
    if final == 1.0:
        assert schedule.total(1.0) == np.inf


@pytest.mark.parametrize("method", ["mask_prob", "alpha", "total", "mask_rate", "rate", "elbo_weight"])
def test_schedules_return_the_array_kind_they_are_given(method):
    for schedule in SCHEDULES.values():
        function = getattr(schedule, method)
        from_numpy = function(TIMES)
        assert isinstance(from_numpy, np.ndarray) and from_numpy.shape == TIMES.shape
        scalar = function(0.3)  # a numpy scalar or a 0-d numpy array
        assert isinstance(scalar, (float, np.floating, np.ndarray)) and np.ndim(scalar) == 0
        from_jax = function(jnp.asarray(TIMES))
        assert isinstance(from_jax, jax.Array) and from_jax.shape == TIMES.shape
        np.testing.assert_allclose(np.asarray(from_jax), from_numpy, rtol=1e-14)
        jitted = jax.jit(function)(jnp.asarray(TIMES))
        np.testing.assert_allclose(np.asarray(jitted), from_numpy, rtol=1e-14)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5, float("nan"), "0.1", None])
def test_log_linear_refuses_eps_outside_zero_one(eps):
    _raises(InvalidArgumentError, lambda: schedules.log_linear(eps), "schedules.log_linear", "eps", "[0, 1)")


def test_schedule_repr_names_the_constructor():
    assert repr(schedules.linear()) == "schedules.linear()"
    assert repr(schedules.log_linear(0.01)) == "schedules.log_linear(eps=0.01)"


# ------------------------------------------------------------------- forward / marginal


def _product_formula(x0, m: float) -> np.ndarray:
    """q_t(y | x0) = prod_i [m 1{y_i = mask} + (1 - m) 1{y_i = x0_i}] on every noisy y."""
    factors = np.where(NOISY_STATES == MASK, m, np.where(NOISY_STATES == np.asarray(x0), 1.0 - m, 0.0))
    return factors.prod(axis=1)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_forward_law_is_the_product_formula(t):
    diffusion = _diffusion("exact", "cosine")
    law = diffusion.forward_law(X0, t)
    assert law.shape == (3, (VOCAB + 1) ** LENGTH) and law.dtype == np.float64
    np.testing.assert_allclose(law.sum(axis=-1), 1.0, atol=LAW)
    m = float(schedules.cosine().mask_prob(t))
    for row, x0 in zip(law, X0):
        np.testing.assert_allclose(row, _product_formula(x0, m), rtol=0, atol=LAW)
    np.testing.assert_allclose(diffusion.forward_law(X0[1], t), law[1], rtol=0, atol=0)  # unbatched


@pytest.mark.parametrize("which, schedule", [("exact", "linear"), ("exact", "log_linear"), ("noisy", "cosine")])
def test_marginal_law_mixes_forward_laws_over_the_joint(which, schedule):
    diffusion = _diffusion(which, schedule)
    joint = tabular().law() if which == "exact" else ancestral_law(noisy(), "random")
    np.testing.assert_allclose(diffusion.joint_law(), joint, rtol=0, atol=LAW)
    clean = all_sequences(VOCAB, LENGTH)
    for t in (0.0, 0.37, 1.0):
        marginal = diffusion.marginal_law(t)
        assert abs(marginal.sum() - 1.0) < LAW and marginal.min() >= 0
        np.testing.assert_allclose(marginal, joint @ diffusion.forward_law(clean, t), rtol=0, atol=LAW)


# -------------------------------------------------------------------- concrete score

STATES = np.array([[3, 3, 3, 3], [0, 3, 2, 3], [3, 1, 3, 0], [2, 2, 1, 0]], dtype=np.int32)  # 3 = mask


def test_concrete_score_shapes_and_the_masked_position_identity():
    """Exact score: at a masked i, sum_v p_t(x^{i<-v}) / p_t(x) = (1 - m) / m (any joint); at an unmasked i, s = 1."""
    for which in ("exact", "noisy"):
        diffusion = _diffusion(which, "linear")
        score = diffusion.concrete_score(STATES, 0.4, method="exact")
        assert score.shape == (4, LENGTH, VOCAB)
        masked = STATES == MASK
        np.testing.assert_allclose(score.sum(-1)[masked], 0.6 / 0.4, rtol=1e-12)
        current = np.take_along_axis(score, np.minimum(STATES, VOCAB - 1)[..., None], -1)[..., 0]
        np.testing.assert_allclose(current[~masked], 1.0, rtol=1e-12)
        assert diffusion.concrete_score(STATES[1], 0.4).shape == (LENGTH, VOCAB)


def test_factorized_score_equals_the_exact_one_for_exact_conditionals_only():
    exact = _diffusion("exact", "log_linear")
    for t in (0.1, 0.6, 0.95):
        np.testing.assert_allclose(exact.concrete_score(STATES, t), exact.concrete_score(STATES, t, method="exact"),
                                   rtol=1e-10)
    # negative control: the perturbed family is no joint's conditionals, so the two disagree
    inconsistent = _diffusion("noisy", "log_linear")
    difference = inconsistent.concrete_score(STATES, 0.6) - inconsistent.concrete_score(STATES, 0.6, method="exact")
    assert np.max(np.abs(difference)) > 1e-3


def test_concrete_score_refuses_zero_probability_states():
    diffusion = _diffusion("exact", "linear")
    _raises(ZeroProbabilityError, lambda: diffusion.concrete_score(STATES[1], 0.0), "t=0", "masks")
    _raises(ZeroProbabilityError, lambda: diffusion.concrete_score(STATES[3], 1.0, method="exact"), "t=1.0",
            "clean tokens")
    # the cosine schedule masks everything at t = 1 exactly (m(1) = 1, not 1 - 2**-53), so it refuses too
    _raises(ZeroProbabilityError, lambda: _diffusion("exact", "cosine").concrete_score(STATES[3], 1.0), "t=1.0",
            "clean tokens")
    # a joint with a zero cell: x_t = (0, 1) has probability (1 - m)^2 p(0, 1) = 0
    zeros = AbsorbingDiffusion(TabularJoint(probs=np.array([[0.5, 0.0], [0.25, 0.25]])), schedules.linear())
    _raises(ZeroProbabilityError, lambda: zeros.concrete_score(np.array([0, 1]), 0.5, method="exact"),
            "x_t = [0, 1]", "probability zero")
    assert np.all(np.isfinite(zeros.concrete_score(np.array([0, 2]), 0.5, method="exact")))


# --------------------------------------------------------------------- training losses


def test_training_loss_is_an_unbiased_estimate_of_expected_loss():
    """For each form, |MC - exact| <= 4.5 se on 3 sequences, 20,000 draws each.

    The weights 1/t of "mdlm" and "lambda_dce" give the per-draw loss a tail
    P(Y > y) ~ c / y^2 (infinite variance, but in the domain of attraction of
    the normal), for which the self-normalized t-statistic is still
    asymptotically standard normal.  False-alarm probability about
    3 * 6.8e-6 per case, 1e-4 over the 5 cases.  Exact conditionals: the
    perturbed family would add nothing but compilation time.  All cases in
    one test, so that each compiles in one pytest-xdist worker only.  Also:
    same key, same estimate, and a second model of the same shapes runs
    without recompiling.
    """
    cases = [("mdlm", "linear"), ("lambda_dce", "linear"), ("ardm", "linear"), ("upmlm", "linear"),
             ("mdlm", "log_linear")]
    for form, schedule in cases:
        diffusion = _diffusion("exact", schedule)
        expected = diffusion.expected_loss(X0, form)
        mean, stderr = diffusion.training_loss(jax.random.key(11), X0, form, 20_000)
        mean, stderr = np.asarray(mean), np.asarray(stderr)
        assert mean.shape == stderr.shape == (3,) and np.all(stderr > 0)
        assert np.all(np.abs(mean - expected) <= Z * stderr), (form, schedule, mean, expected, stderr)
    # negative control: the per-token form's expectation is L times smaller, far outside the error bars
    assert np.all(np.abs(mean - diffusion.expected_loss(X0, "upmlm")) > 10 * stderr)

    compiled = _loss_samples._cache_size()
    again = diffusion.training_loss(jax.random.key(11), X0, "mdlm", 20_000)
    np.testing.assert_array_equal(np.asarray(again[0]), mean)
    other_model = TabularJoint(probs=np.random.default_rng(2).dirichlet(np.full(81, 0.5)).reshape((3,) * 4))
    another = AbsorbingDiffusion(other_model, SCHEDULES["log_linear"]).training_loss(jax.random.key(11), X0, "mdlm",
                                                                                      20_000)
    assert _loss_samples._cache_size() == compiled  # same shapes and schedule: no new compilation
    assert not np.array_equal(np.asarray(another[0]), mean)  # the model is data, not baked in


# ---------------------------------------------------------------------------- errors


def test_bad_time_is_refused():
    diffusion = _diffusion("exact", "linear")
    for t in (1.5, -0.1, None, "0.5"):
        _raises(InvalidArgumentError, lambda t=t: diffusion.forward_law(X0[0], t), "forward_law", "t must be",
                "[0, 1]")
        _raises(InvalidArgumentError, lambda t=t: diffusion.concrete_score(STATES[0], t), "concrete_score", "t must")
        _raises(InvalidArgumentError, lambda t=t: diffusion.marginal_law(t), "marginal_law", "t must")


def test_bad_schedule_and_family_are_refused():
    _raises(ArprobTypeError, lambda: AbsorbingDiffusion(tabular(), "linear"), "AbsorbingDiffusion", "schedule",
            "schedules.linear()", "str")
    _raises(ArprobTypeError, lambda: AbsorbingDiffusion(np.zeros(3), schedules.linear()), "AbsorbingDiffusion",
            "conditional family")


def test_bad_tokens_and_shapes_are_refused():
    diffusion = _diffusion("exact", "linear")
    _raises(InvalidTokenError, lambda: diffusion.concrete_score(np.array([0, 4, 3, 3]), 0.5), "xt", "token 4")
    _raises(InvalidTokenError, lambda: diffusion.forward_law(np.array([0, 3, 1, 1]), 0.5), "x0", "mask token 3")
    _raises(ShapeError, lambda: diffusion.concrete_score(np.array([0, 3, 3]), 0.5), "xt has shape (3,)")
    _raises(ShapeError, lambda: diffusion.training_loss(jax.random.key(0), X0[:, :3], "mdlm", 10), "x0 has shape")
    _raises(InvalidTokenError, lambda: diffusion.training_loss(jax.random.key(0), X0 + 1, "mdlm", 10), "x0")


def test_bad_method_form_and_sample_count_are_refused():
    diffusion = _diffusion("exact", "linear")
    _raises(InvalidArgumentError, lambda: diffusion.concrete_score(STATES[0], 0.5, method="analytic"), "method",
            "'factorized' or 'exact'")
    _raises(InvalidArgumentError, lambda: diffusion.expected_loss(X0, "elbo"), "form='elbo'", "mdlm")
    _raises(InvalidArgumentError, lambda: diffusion.training_loss(jax.random.key(0), X0, "elbo", 10), "form")
    _raises(InvalidArgumentError, lambda: diffusion.training_loss(jax.random.key(0), X0, "mdlm", 0), "num_samples",
            ">= 1")
