r"""Machine check of theorem 3 (``proofs/03-absorbing-concrete-score.md``).

(a) sympy, exact: with one symbol per cell of the clean law :math:`p_0` and a
    symbol :math:`m` for the masking probability, the law of :math:`x_t`
    obtained by summing the forward kernel over :math:`x_0` equals
    :math:`m^{|M|}(1-m)^{L-|M|}\,p_0(y^{\neg M})` for every partially masked
    :math:`y` (V = 2, L = 3 and V = 3, L = 2); the ratio
    :math:`p_t(y^{i\leftarrow v})/p_t(y)` equals :math:`\frac{1-m}{m}\,p_0(v \mid y^{\neg M})`
    for every masked :math:`i` and a ratio of clean conditionals free of
    :math:`m` for every unmasked :math:`i`; :math:`(1-m)/m = e^{-\bar\sigma}/(1-e^{-\bar\sigma})`;
    the closed forms of :math:`m, \bar\sigma, \sigma` and of the time factor of
    each schedule, and the library's ``Schedule`` methods at a grid of times.
    Wrong time factors are rejected.
(b) float64 through the library, relative tolerance 1e-10: for five small
    exact models (two with zero-probability cells), three schedules and three
    times, ``AbsorbingDiffusion.concrete_score`` (factorized, one network call)
    equals ``method="exact"`` (ratios read off ``marginal_law``) on every
    partially masked state of positive probability; every state of probability
    zero raises ``ZeroProbabilityError``; the unmasked rows do not depend on
    the time and the masked rows do only through the time factor.  A
    ``perturbed`` family fails the same comparison.
(c) expected failure, a library bug: ``schedules.cosine().mask_prob`` loses its
    relative accuracy for small t (catastrophic cancellation in 1 - cos).
"""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
import sympy

import arprob
from arprob import schedules
from arprob._enumerate import all_sequences
from arprob.conditionals import ExactConditionals, perturbed
from arprob.errors import ZeroProbabilityError

TOLERANCE = 1e-10  # relative, float64 ratios of probabilities
SCHEDULE_TOLERANCE = 1e-12  # float64 closed forms of the schedules


# ---------------------------------------------------------------------------
# (a) symbolic
# ---------------------------------------------------------------------------

M = sympy.Symbol("m", positive=True)  # the masking probability m(t), in (0, 1)


def _clean_symbols(vocab_size: int, length: int) -> dict:
    """One nonnegative symbol :math:`p_0(x)` per clean sequence."""
    return {x: sympy.Symbol("p_" + "".join(map(str, x)), nonnegative=True)
            for x in itertools.product(range(vocab_size), repeat=length)}


def _clean_marginal(p0: dict, y: tuple, mask: int):
    r""":math:`p_0(y^{\neg M})`: the sum of :math:`p_0(x)` over the x that agree with y off the mask."""
    return sympy.Add(*[p for x, p in p0.items() if all(y_i == mask or y_i == x_i for x_i, y_i in zip(x, y))])


def _forward_sum(p0: dict, y: tuple, mask: int):
    r""":math:`\sum_{x_0} p_0(x_0) \prod_i [m\,1\{y_i = \mathtt M\} + (1-m)\,1\{y_i = x_{0,i}\}]`."""
    total = sympy.Integer(0)
    for x, p in p0.items():
        factor = sympy.Integer(1)
        for x_i, y_i in zip(x, y):
            factor *= M if y_i == mask else (1 - M) if y_i == x_i else 0
        total += p * factor
    return total


def _noisy_marginal(p0: dict, y: tuple, mask: int, length: int):
    r"""The closed form :math:`m^{|M|}(1-m)^{L-|M|}\,p_0(y^{\neg M})`."""
    masked = sum(y_i == mask for y_i in y)
    return M**masked * (1 - M) ** (length - masked) * _clean_marginal(p0, y, mask)


@pytest.mark.parametrize(("vocab_size", "length"), [(2, 3), (3, 2)])
def test_noisy_marginal_closed_form(vocab_size, length):
    r""":math:`p_t(y) = m^{|M|}(1-m)^{L-|M|} p_0(y^{\neg M})` for every partially masked y."""
    p0 = _clean_symbols(vocab_size, length)
    for y in itertools.product(range(vocab_size + 1), repeat=length):
        difference = sympy.expand(_forward_sum(p0, y, vocab_size) - _noisy_marginal(p0, y, vocab_size, length))
        assert difference == 0, y


def _replace(y: tuple, position: int, token: int) -> tuple:
    return y[:position] + (token,) + y[position + 1:]


@pytest.mark.parametrize(("vocab_size", "length"), [(2, 3), (3, 2)])
def test_concrete_score_factorizes_symbolically(vocab_size, length):
    r"""Masked i: ratio = :math:`\frac{1-m}{m}\,p_0(v, y^{\neg M})/p_0(y^{\neg M})`; unmasked i: free of m."""
    p0 = _clean_symbols(vocab_size, length)
    mask = vocab_size
    time_factor = (1 - M) / M
    checked = {"masked": 0, "unmasked": 0}
    for y in itertools.product(range(vocab_size + 1), repeat=length):
        clean_denominator = _clean_marginal(p0, y, mask)  # all cells when y is fully masked
        denominator = _noisy_marginal(p0, y, mask, length)
        for position in range(length):
            for token in range(vocab_size):
                changed = _replace(y, position, token)
                ratio = _noisy_marginal(p0, changed, mask, length) / denominator
                clean_numerator = _clean_marginal(p0, changed, mask)
                if y[position] == mask:
                    claimed = time_factor * clean_numerator / clean_denominator
                    checked["masked"] += 1
                else:
                    claimed = clean_numerator / clean_denominator  # p0(v | rest) / p0(y_i | rest)
                    assert sympy.cancel(sympy.diff(ratio, M)) == 0  # time-free
                    checked["unmasked"] += 1
                assert sympy.cancel(ratio - claimed) == 0, (y, position, token)
    assert checked["masked"] > 0 and checked["unmasked"] > 0


def test_time_factor_in_terms_of_total_noise():
    r""":math:`(1-m)/m = e^{-\bar\sigma}/(1-e^{-\bar\sigma})` when :math:`m = 1 - e^{-\bar\sigma}`."""
    total = sympy.Symbol("sigmabar", positive=True)
    mask_prob = 1 - sympy.exp(-total)
    factor = sympy.exp(-total) / (1 - sympy.exp(-total))
    assert sympy.simplify((1 - mask_prob) / mask_prob - factor) == 0
    # Negative controls: the clean probability alone, and the odds the wrong way round.
    for wrong in (sympy.exp(-total), (1 - sympy.exp(-total)) / sympy.exp(-total)):
        assert sympy.simplify(wrong - factor) != 0


def test_wrong_time_factor_is_rejected():
    """Negative control for the symbolic ratio: e^{-sigmabar} = 1 - m in place of (1-m)/m fails."""
    p0 = _clean_symbols(2, 2)
    y = (2, 0)  # position 0 masked
    ratio = _noisy_marginal(p0, (1, 0), 2, 2) / _noisy_marginal(p0, y, 2, 2)
    wrong = (1 - M) * _clean_marginal(p0, (1, 0), 2) / _clean_marginal(p0, y, 2)
    assert sympy.cancel(ratio - wrong) != 0


T, EPS = sympy.symbols("t epsilon", positive=True)
# m(t), the stated total noise sigmabar(t), the stated rate sigma(t) and time factor, per schedule
CLOSED_FORMS = {
    "linear": (T, -sympy.log(1 - T), 1 / (1 - T), (1 - T) / T),
    "cosine": (1 - sympy.cos(sympy.pi * T / 2), -sympy.log(sympy.cos(sympy.pi * T / 2)),
               sympy.pi / 2 * sympy.tan(sympy.pi * T / 2),
               sympy.cos(sympy.pi * T / 2) / (1 - sympy.cos(sympy.pi * T / 2))),
    "log_linear": ((1 - EPS) * T, -sympy.log(1 - (1 - EPS) * T), (1 - EPS) / (1 - (1 - EPS) * T),
                   (1 - (1 - EPS) * T) / ((1 - EPS) * T)),
}


@pytest.mark.parametrize("kind", list(CLOSED_FORMS))
def test_schedule_closed_forms(kind):
    r"""The stated closed forms: :math:`e^{-\bar\sigma} = 1-m`, :math:`\sigma = \bar\sigma'` and the time factor."""
    mask_prob, total, rate, time_factor = CLOSED_FORMS[kind]
    assert sympy.simplify(sympy.exp(-total) - (1 - mask_prob)) == 0
    assert sympy.simplify(sympy.diff(total, T) - rate) == 0
    assert sympy.simplify(sympy.exp(-total) / (1 - sympy.exp(-total)) - time_factor) == 0
    assert sympy.simplify(mask_prob.subs(T, 0)) == 0  # nothing is masked at t = 0


SCHEDULES = {"linear": schedules.linear(), "cosine": schedules.cosine(), "log_linear(0.1)": schedules.log_linear(0.1)}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_library_schedules_match_closed_forms(name):
    """``Schedule.mask_prob/alpha/total/rate/mask_rate`` against the sympy closed forms (float64)."""
    schedule = SCHEDULES[name]
    mask_prob, total, rate, _ = (expression.subs(EPS, sympy.Rational(1, 10))
                                 for expression in CLOSED_FORMS[name.split("(")[0]])
    times = np.linspace(0.05, 0.95, 7)
    evaluate = {key: sympy.lambdify(T, expression, "numpy") for key, expression in
                {"mask_prob": mask_prob, "total": total, "rate": rate,
                 "mask_rate": sympy.diff(mask_prob, T)}.items()}
    for method, reference in evaluate.items():
        np.testing.assert_allclose(getattr(schedule, method)(times), reference(times), rtol=SCHEDULE_TOLERANCE)
    np.testing.assert_allclose(schedule.alpha(times), 1 - evaluate["mask_prob"](times), rtol=SCHEDULE_TOLERANCE)
    expected_final = 0.9 if name.startswith("log_linear") else 1.0
    assert schedule.final_mask_prob == pytest.approx(expected_final, abs=1e-15)


def test_cosine_mask_prob_is_accurate_at_small_times():
    times = np.array([1e-4, 1e-6, 1e-8, 1e-9])
    reference = 2.0 * np.sin(np.pi * times / 4.0) ** 2  # the same function, without cancellation
    np.testing.assert_allclose(schedules.cosine().mask_prob(times), reference, rtol=1e-12)


# ---------------------------------------------------------------------------
# (b) float64 through the library
# ---------------------------------------------------------------------------


@jax.jit
def _call(family, x, observed):
    return family(x, observed)


class _CompiledExact(ExactConditionals):
    """``exact(model)`` called under ``jax.jit``.

    ``concrete_score`` calls its family eagerly, which compiles every primitive
    of ``conditional_logits`` separately (seconds per model); under ``jit`` the
    family is compiled once per shape.  The values are the family's own, and the
    class is still an ``ExactConditionals``, so the model's joint stays ``model.law()``.
    """

    def __call__(self, x, observed):
        return _call(ExactConditionals(self.model), x, observed)


class _Compiled:
    """Any family called under ``jax.jit`` (for the inconsistent family of the negative control)."""

    def __init__(self, family):
        self.family, self.vocab_size, self.length = family, family.vocab_size, family.length

    def __call__(self, x, observed):
        return _call(self.family, x, observed)


def _dirichlet(seed: int, shape, concentration: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


def _with_zero_cells() -> np.ndarray:
    """A V=2, L=3 joint with three zero cells, so some partially masked states have probability zero."""
    probs = _dirichlet(5, (8,)).copy()
    probs[[1, 4, 7]] = 0.0
    return (probs / probs.sum()).reshape(2, 2, 2)


def _markov_with_zero() -> arprob.MarkovChain:
    """V=3 chain whose token 0 is never followed by token 2, and which never starts with 1."""
    rows = _dirichlet(6, (4, 3))
    rows[0, 2] = 0.0
    rows[3, 1] = 0.0
    rows /= rows.sum(axis=1, keepdims=True)
    return arprob.MarkovChain(rows[3], rows[:3], 3)


MODELS = {
    "tabular-V2-L3": lambda: arprob.TabularJoint(probs=_dirichlet(3, (8,)).reshape(2, 2, 2)),
    "tabular-V2-L3-zeros": lambda: arprob.TabularJoint(probs=_with_zero_cells()),
    "tabular-V3-L3": lambda: arprob.TabularJoint(probs=_dirichlet(4, (27,), 0.5).reshape(3, 3, 3)),
    "markov-V3-L3-zeros": _markov_with_zero,
    "ngram-V2-L4-K2": lambda: arprob.NGram(_dirichlet(7, (3, 3, 2)), 4),
}
TIMES = (0.1, 0.5, 0.9)


def _states(model) -> np.ndarray:
    """All ``(V+1)**L`` partially masked sequences, lexicographic in base V+1 (the order of marginal_law)."""
    return all_sequences(model.vocab_size + 1, model.length)


@pytest.fixture(scope="module")
def scores():
    """Both scores for every model, schedule and time (computed once: the comparisons below share them)."""
    out = {}
    for model_name, make in MODELS.items():
        model = make()
        states = _states(model)
        for schedule_name, schedule in SCHEDULES.items():
            diffusion = arprob.AbsorbingDiffusion(_CompiledExact(model), schedule)
            for t in TIMES:
                law = diffusion.marginal_law(t)
                positive = law > 0
                factorized = diffusion.concrete_score(states[positive], t)  # one batched network call
                exact_score = diffusion.concrete_score(states[positive], t, method="exact")
                out[model_name, schedule_name, t] = (diffusion, states, positive, factorized, exact_score)
    return out


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_factorized_score_equals_exact_ratio(scores, model_name, schedule_name):
    for t in TIMES:
        _, states, positive, factorized, exact_score = scores[model_name, schedule_name, t]
        assert positive.sum() > 1
        assert np.isfinite(exact_score).all()
        # rtol with atol=0: a zero in one (a target state of probability zero) must be a zero in the other
        np.testing.assert_allclose(factorized, exact_score, rtol=TOLERANCE, atol=0)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_score_structure_time_factor_and_time_free_rows(scores, model_name):
    r"""Masked rows / time factor is a probability vector that does not depend on t; unmasked rows are time-free."""
    by_time = {}
    for schedule_name, schedule in SCHEDULES.items():
        for t in TIMES:
            _, states, positive, _, exact_score = scores[model_name, schedule_name, t]
            m = float(schedule.mask_prob(t))
            masked = states[positive] == states.max()  # the mask id V is the largest digit
            clean_part = np.where(masked[..., None], exact_score * m / (1.0 - m), exact_score)
            np.testing.assert_allclose(np.where(masked, clean_part.sum(axis=-1), 1.0), 1.0, rtol=TOLERANCE)
            tokens = np.where(masked, 0, states[positive])
            own = np.take_along_axis(exact_score, tokens[..., None], axis=-1)[..., 0]
            np.testing.assert_allclose(np.where(masked, 1.0, own), 1.0, rtol=TOLERANCE)  # s_{i, x_i} = 1
            by_time[schedule_name, t] = (positive, clean_part)
    reference_positive, reference = by_time["linear", TIMES[0]]
    for positive, clean_part in by_time.values():
        assert (positive == reference_positive).all()  # the support does not move with t in (0, 1)
        np.testing.assert_allclose(clean_part, reference, rtol=TOLERANCE, atol=0)


@pytest.mark.parametrize("model_name", ["tabular-V2-L3-zeros", "markov-V3-L3-zeros"])
def test_zero_probability_states_raise(scores, model_name):
    diffusion, states, positive, _, _ = scores[model_name, "cosine", 0.5]
    assert (~positive).sum() > 0  # the model does have such states
    for state in states[~positive]:
        with pytest.raises(ZeroProbabilityError):
            diffusion.concrete_score(state, 0.5, method="exact")


def test_endpoint_times_raise():
    r"""At t = 0 a masked state, at m(1) = 1 a partially clean one, has probability zero: no score."""
    diffusion = arprob.AbsorbingDiffusion(MODELS["tabular-V2-L3"](), schedules.linear())
    for method in ("factorized", "exact"):
        with pytest.raises(ZeroProbabilityError):
            diffusion.concrete_score(np.array([2, 0, 1]), 0.0, method=method)
        with pytest.raises(ZeroProbabilityError):
            diffusion.concrete_score(np.array([2, 0, 1]), 1.0, method=method)
    # the fully masked state at t = 1 is certain, and every change of it impossible
    np.testing.assert_array_equal(diffusion.concrete_score(np.array([2, 2, 2]), 1.0, method="exact"), 0.0)


def test_perturbed_family_disagrees():
    """Negative control: for an inconsistent family the factorized score is not the ratio of the model's joint."""
    base = MODELS["tabular-V2-L3"]()
    family = _Compiled(perturbed(base, jax.random.key(17), 1.0))
    diffusion = arprob.AbsorbingDiffusion(family, schedules.linear())
    states = _states(base)
    factorized = diffusion.concrete_score(states, 0.5)
    exact_score = diffusion.concrete_score(states, 0.5, method="exact")  # joint = the order mixture
    relative = np.abs(factorized - exact_score) / exact_score
    assert relative.max() > 1e-2
    assert math.isfinite(relative.max())
