"""The HMM kernels under an outer jax.jit that captures concrete parameter arrays (regression: the NaN check
turned captured arrays into tracers and raised TracerArrayConversionError)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arprob.errors import InvalidArgumentError
from arprob.inference import hmm_filter, hmm_log_likelihood


def test_captured_parameters_work_under_jit_and_are_still_checked():
    log_initial = jnp.log(jnp.array([0.5, 0.5]))
    log_transition = jnp.log(jnp.array([[0.9, 0.1], [0.2, 0.8]]))
    potentials = jnp.asarray(np.random.default_rng(0).normal(size=(50, 2)))
    eager = hmm_log_likelihood(log_initial, log_transition, potentials)
    jitted = jax.jit(lambda p: hmm_log_likelihood(log_initial, log_transition, p))(potentials)
    assert float(jitted) == pytest.approx(float(eager), rel=1e-12)
    filtered = jax.jit(lambda p: hmm_filter(log_initial, log_transition, p).log_likelihood)(potentials)
    assert float(filtered) == pytest.approx(float(eager), rel=1e-12)
    bad = log_transition.at[0, 0].set(jnp.nan)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        jax.jit(lambda p: hmm_log_likelihood(log_initial, bad, p))(potentials)
