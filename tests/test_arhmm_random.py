r"""``ARHMM.random``: the parameters it draws satisfy what its docstring promises, and bad input is refused.

Exact properties are checked in float64 at 1e-12 (sums of probabilities, the spectral-norm budget of the
lag matrices, the eigenvalue floor of the covariances); the Dirichlet law of the initial probabilities is
checked by a Kolmogorov–Smirnov test at a stated false-alarm rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from arprob import ARHMM
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidArgumentError

SHAPES = [(1, 1, 1), (2, 1, 0), (3, 2, 2)]  # (num_states, dimension, num_lags)


@pytest.mark.parametrize(("num_states", "dimension", "num_lags"), SHAPES)
def test_shapes_and_exact_properties(num_states, dimension, num_lags):
    stability, noise_scale = 0.7, 0.3
    model = ARHMM.random(jax.random.key(num_states * 10 + dimension), num_states, dimension, num_lags,
                         stability=stability, noise_scale=noise_scale)
    assert (model.num_states, model.dimension, model.num_lags) == (num_states, dimension, num_lags)
    assert model.weights.shape == (num_states, num_lags, dimension, dimension)
    assert model.biases.shape == (num_states, dimension)
    assert model.covariances.shape == (num_states, dimension, dimension)
    assert model.weights.dtype == jnp.float64
    assert not model.tied and not model.stationary and model.length is None

    np.testing.assert_allclose(np.asarray(model.initial_probs).sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(model.transition_probs).sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.asarray(model.transition_probs) >= 0)

    weights = np.asarray(model.weights)
    if num_lags:  # the spectral norms (computed here by numpy) of each state's lags sum to `stability`
        norms = np.linalg.norm(weights, ord=2, axis=(-2, -1)).sum(axis=1)
        np.testing.assert_allclose(norms, stability, rtol=1e-12)

    covariances = np.asarray(model.covariances)
    np.testing.assert_array_equal(covariances, np.swapaxes(covariances, -1, -2))
    assert np.linalg.eigvalsh(covariances).min() >= noise_scale**2 / 2 * (1 - 1e-12)


def test_every_switching_path_contracts():
    """The docstring's stability claim: ||sum_l A_{z,l} v_l|| <= stability * max_l ||v_l|| for every state z.

    Checked on 1,000 random lag windows (the worst case over states); a mis-scaled weight (the Frobenius
    norm instead of the spectral norm would still pass, so that case is covered by the equality above)
    that overshoots fails here.
    """
    stability = 0.9
    model = ARHMM.random(jax.random.key(5), 3, 4, 3, stability=stability)
    weights = np.asarray(model.weights)
    windows = np.random.default_rng(0).normal(size=(1000, 3, 4))  # (n, p, D)
    images = np.einsum("klij,nlj->nki", weights, windows)
    ratio = np.linalg.norm(images, axis=-1) / np.linalg.norm(windows, axis=-1).max(axis=1)[:, None]
    assert ratio.max() <= stability * (1 + 1e-12)
    assert ratio.max() > 0.3 * stability  # the bound is not vacuous: the images are not all tiny


def test_key_determines_the_model():
    first = ARHMM.random(jax.random.key(3), 2, 2, 1)
    again = ARHMM.random(jax.random.key(3), 2, 2, 1)
    other = ARHMM.random(jax.random.key(4), 2, 2, 1)
    for name in ("initial_probs", "transition_probs", "weights", "biases", "covariances"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        assert not np.array_equal(getattr(first, name), getattr(other, name)), name


def test_initial_probs_follow_the_dirichlet():
    """With K = 2 the first initial probability is Beta(a, a); KS test over 200 keys, false-alarm rate 1e-3."""
    concentration = 0.4
    draws = [float(ARHMM.random(key, 2, 1, 0, concentration=concentration).initial_probs[0])
             for key in jax.random.split(jax.random.key(11), 200)]
    assert stats.kstest(draws, stats.beta(concentration, concentration).cdf).pvalue > 1e-3


def test_sample_and_log_prob_and_legacy_key():
    model = ARHMM.random(jax.random.PRNGKey(0), 2, 3, 2, length=40)
    y = model.sample(jax.random.key(1))
    assert y.shape == (40, 3)
    assert np.isfinite(float(model.log_prob(y)))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"key": 0}, ArprobTypeError, "ARHMM.random: key"),
    ({"num_states": 0}, InvalidArgumentError, "num_states"),
    ({"dimension": 1.0}, ArprobTypeError, "dimension must be an int"),
    ({"num_lags": -1}, InvalidArgumentError, "num_lags"),
    ({"concentration": 0.0}, InvalidArgumentError, "concentration must be > 0"),
    ({"stability": 1.0}, InvalidArgumentError, r"stability must be in \[0, 1\).*stable autoregression"),
    ({"stability": -0.1}, InvalidArgumentError, "stability"),
    ({"noise_scale": float("nan")}, InvalidArgumentError, "noise_scale"),
    ({"noise_scale": "1"}, ArprobTypeError, "noise_scale"),
    ({"length": 2}, InvalidArgumentError, "length"),  # T must exceed num_lags = 2 (the constructor's check)
])
def test_bad_arguments_are_refused(kwargs, error, match):
    arguments = {"key": jax.random.key(0), "num_states": 2, "dimension": 2, "num_lags": 2, **kwargs}
    with pytest.raises(error, match=match):
        ARHMM.random(arguments.pop("key"), **arguments)


def test_huge_parameters_refused_before_drawing():
    with pytest.raises(EnumerationTooLargeError, match="ARHMM.random: the AR weights"):
        ARHMM.random(jax.random.key(0), 2**10, 2**10, 2**10)
