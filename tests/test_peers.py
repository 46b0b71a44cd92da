r"""Cross-library checks: arprob's HMM / ARHMM log-likelihoods against dynamax and hmmlearn (float64).

Each test imports its peer with ``pytest.importorskip`` (the ``bench`` extra installs them), so the file
skips cleanly where they are absent.  All comparisons are on the same parameters, at 1e-9 relative.

dynamax ``LinearAutoregressiveHMM`` convention mapping (dynamax 1.0.3, read from its source and pinned by
:func:`test_dynamax_compute_inputs_layout`):

* emission weights ``(K, D, D * num_lags)`` are the blocks :math:`W_k = [W_{k,1}, \dots, W_{k,p}]`:
  columns ``(l-1)*D : l*D`` multiply :math:`y_{t-l}` (the first block is the most recent lag).  With
  arprob's ``weights[k, l-1]`` multiplying :math:`x_{t-l}`,
  ``dynamax_weights = weights.transpose(0, 2, 1, 3).reshape(K, D, p * D)``;
* ``compute_inputs(y, prev_emissions)`` returns ``inputs[t] = [y_{t-1}, ..., y_{t-p}]`` over the
  padded series ``vstack(prev_emissions, y)``: ``prev_emissions`` is *oldest first*
  (``prev_emissions[-1]`` is :math:`y_{-1}`), default zeros.  (dynamax's ``sample`` reads its
  ``prev_emissions`` argument the other way round, most recent first: the known history-order trap.)
* ``marginal_log_prob(params, y, inputs)`` models *every* row of ``y``: the first ``p`` steps use the
  history in ``inputs`` (zeros by default) and ``initial.probs`` is the law of the state of ``y[0]``.

So arprob's :math:`\log p(y_{p:T-1} \mid y_{0:p-1})` (``initial_probs`` = law of :math:`z_p`) equals dynamax's
``marginal_log_prob(params, y[p:], compute_inputs(y[p:], prev_emissions=y[:p]))``, and dynamax's default
(zero history) ``marginal_log_prob(params, y, compute_inputs(y))`` equals arprob's ``log_prob`` of
``vstack(zeros((p, D)), y)``.  Both identities are tested.

hmmlearn ``GaussianHMM(covariance_type="full")``: ``startprob_``, ``transmat_``, ``means_`` ``(K, D)``,
``covars_`` ``(K, D, D)``; ``score(X)`` is :math:`\log p(X)` with ``startprob_`` the law of the first state,
i.e. an arprob ``ARHMM`` with ``num_lags=0``, ``biases = means_``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from arprob import ARHMM
from arprob.distributions.hmm import HMM
from arprob.inference import hmm_filter, hmm_log_likelihood, hmm_viterbi

RTOL = 1e-9
NUM_TIMESTEPS = 50


def _stochastic(rng, rows, cols):
    return rng.dirichlet(np.ones(cols), size=rows)


def _spd(rng, num_states, dimension):
    factors = rng.normal(size=(num_states, dimension, dimension)) * 0.4
    return factors @ np.swapaxes(factors, -1, -2) + 0.5 * np.eye(dimension)


def _random_arhmm(seed, num_states, dimension, num_lags, num_timesteps=NUM_TIMESTEPS):
    """A random ARHMM (stable, lag blocks all different) and one sequence (T, D) simulated with numpy."""
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(num_states))
    transition = 0.6 * np.eye(num_states) + 0.4 * _stochastic(rng, num_states, num_states)
    weights = rng.normal(size=(num_states, num_lags, dimension, dimension)) * (0.35 / max(num_lags, 1))
    biases = rng.normal(size=(num_states, dimension))
    covariances = _spd(rng, num_states, dimension)
    model = ARHMM(initial, transition, weights, biases, covariances, num_lags)
    y = np.zeros((num_timesteps, dimension))
    y[:num_lags] = rng.normal(size=(num_lags, dimension))
    state = rng.choice(num_states, p=initial)
    for t in range(num_lags, num_timesteps):
        mean = biases[state] + sum(weights[state, lag - 1] @ y[t - lag] for lag in range(1, num_lags + 1))
        y[t] = rng.multivariate_normal(mean, covariances[state])
        state = rng.choice(num_states, p=transition[state])
    return model, y


def jax_key(seed):
    import jax

    return jax.random.PRNGKey(seed)


def _dynamax_arhmm(model):
    """dynamax ``LinearAutoregressiveHMM`` and params equal to an arprob ``ARHMM`` (mapping in the module doc)."""
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    num_states, num_lags, dimension = model.num_states, model.num_lags, model.dimension
    peer = LinearAutoregressiveHMM(num_states, dimension, num_lags=num_lags)
    weights = jnp.transpose(model.weights, (0, 2, 1, 3)).reshape(num_states, dimension, num_lags * dimension)
    params, _ = peer.initialize(jax_key(0), initial_probs=model.initial_probs, transition_matrix=model.transition_probs,
                                emission_weights=weights, emission_biases=model.biases,
                                emission_covariances=model.covariances)
    return peer, params


def _assert_rel(actual, expected, rtol=RTOL):
    actual, expected = float(actual), float(expected)
    assert abs(actual - expected) <= rtol * abs(expected), (actual, expected, abs(actual - expected) / abs(expected))


# ------------------------------------------------------------------ (a) plain HMMs via dynamax's filters


def test_categorical_hmm_matches_dynamax_filter():
    """arprob.HMM.log_prob and hmm_log_likelihood (sequential and parallel) vs dynamax's hmm_filter."""
    pytest.importorskip("dynamax")
    from dynamax.hidden_markov_model.inference import hmm_filter as dynamax_filter

    rng = np.random.default_rng(0)
    num_states, vocab_size = 4, 5
    initial = rng.dirichlet(np.ones(num_states))
    transition = _stochastic(rng, num_states, num_states)
    emission = _stochastic(rng, num_states, vocab_size)
    tokens = rng.integers(0, vocab_size, size=NUM_TIMESTEPS)
    log_likelihoods = np.log(emission[:, tokens].T)  # (T, K)

    reference = dynamax_filter(jnp.asarray(initial), jnp.asarray(transition), jnp.asarray(log_likelihoods))
    value = HMM(initial, transition, emission, NUM_TIMESTEPS).log_prob(jnp.asarray(tokens, jnp.int32))
    _assert_rel(value, reference.marginal_loglik)
    for parallel in (False, True):
        value = hmm_log_likelihood(np.log(initial), np.log(transition), log_likelihoods, parallel=parallel)
        _assert_rel(value, reference.marginal_loglik)


def test_gaussian_hmm_filter_and_viterbi_match_dynamax():
    """Gaussian emissions: log-likelihood and filtered probabilities vs dynamax, Viterbi path vs hmm_posterior_mode."""
    pytest.importorskip("dynamax")
    from dynamax.hidden_markov_model import hmm_posterior_mode
    from dynamax.hidden_markov_model.inference import hmm_filter as dynamax_filter

    rng = np.random.default_rng(1)
    num_states = 5
    initial = rng.dirichlet(np.ones(num_states))
    transition = 0.7 * np.eye(num_states) + 0.3 * _stochastic(rng, num_states, num_states)
    observations = rng.normal(size=NUM_TIMESTEPS) * 2.0
    means, scales = np.arange(num_states) - 2.0, 0.5 + rng.random(num_states)
    log_likelihoods = (-0.5 * ((observations[:, None] - means) / scales) ** 2 - np.log(scales)
                       - 0.5 * np.log(2 * np.pi))

    reference = dynamax_filter(jnp.asarray(initial), jnp.asarray(transition), jnp.asarray(log_likelihoods))
    ours = hmm_filter(np.log(initial), np.log(transition), log_likelihoods)
    _assert_rel(ours.log_likelihood, reference.marginal_loglik)
    np.testing.assert_allclose(ours.filtered_probs, reference.filtered_probs, rtol=0, atol=1e-10)
    path, _ = hmm_viterbi(np.log(initial), np.log(transition), log_likelihoods)
    np.testing.assert_array_equal(np.asarray(path), np.asarray(hmm_posterior_mode(
        jnp.asarray(initial), jnp.asarray(transition), jnp.asarray(log_likelihoods))))


# ------------------------------------------------------------------ (b) ARHMM vs LinearAutoregressiveHMM


def test_dynamax_compute_inputs_layout():
    """Pin the dynamax history convention the mapping relies on: inputs[t] = [y_{t-1}, y_{t-2}], prev oldest first."""
    pytest.importorskip("dynamax")
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    dimension, num_lags = 2, 2
    y = jnp.arange(10.0).reshape(5, dimension)  # y_t = (2t, 2t+1)
    prev = jnp.array([[-4.0, -3.0], [-2.0, -1.0]])  # y_{-2}, y_{-1}
    inputs = LinearAutoregressiveHMM(3, dimension, num_lags=num_lags).compute_inputs(y, prev_emissions=prev)
    padded = np.vstack([prev, y])
    expected = np.stack([np.concatenate([padded[t + 1], padded[t]]) for t in range(5)])  # [y_{t-1}, y_{t-2}]
    np.testing.assert_array_equal(np.asarray(inputs), expected)


@pytest.mark.parametrize("num_lags", [1, 2])
def test_arhmm_matches_dynamax_linear_autoregressive_hmm(num_lags):
    r"""arprob ``log_prob`` = dynamax on the same conditional likelihood (mapping in the module docstring).

    Also checks dynamax's default zero-history likelihood against arprob on ``vstack(zeros, y)``, and that
    the lag order matters here (reversing dynamax's blocks changes the value), so the check can fail.
    """
    pytest.importorskip("dynamax")
    model, y = _random_arhmm(10 + num_lags, num_states=3, dimension=2, num_lags=num_lags)
    peer, params = _dynamax_arhmm(model)
    y = jnp.asarray(y)

    conditional = peer.marginal_log_prob(params, y[num_lags:],
                                         peer.compute_inputs(y[num_lags:], prev_emissions=y[:num_lags]))
    _assert_rel(model.log_prob(y), conditional)
    _assert_rel(peer.marginal_log_prob(params, y[num_lags:], peer.compute_inputs(y)[num_lags:]), conditional)

    zero_history = peer.marginal_log_prob(params, y, peer.compute_inputs(y))
    _assert_rel(model.log_prob(jnp.vstack([jnp.zeros((num_lags, model.dimension)), y])), zero_history)

    if num_lags == 2:
        dimension = model.dimension
        swapped = params.emissions.weights.reshape(model.num_states, dimension, num_lags, dimension)[:, :, ::-1]
        wrong = params._replace(emissions=params.emissions._replace(
            weights=swapped.reshape(model.num_states, dimension, num_lags * dimension)))
        value = peer.marginal_log_prob(wrong, y[num_lags:], peer.compute_inputs(y)[num_lags:])
        assert abs(float(value) - float(conditional)) > 1e-3 * abs(float(conditional))


# ------------------------------------------------------------------ (c) GaussianHMM vs hmmlearn


def test_gaussian_hmm_matches_hmmlearn_score_and_viterbi():
    """ARHMM with num_lags=0 is a full-covariance Gaussian HMM: log_prob = hmmlearn score, viterbi = decode."""
    pytest.importorskip("hmmlearn")
    from hmmlearn.hmm import GaussianHMM

    num_states, dimension = 4, 2
    model, y = _random_arhmm(20, num_states=num_states, dimension=dimension, num_lags=0)
    peer = GaussianHMM(n_components=num_states, covariance_type="full", init_params="", params="")
    peer.n_features = dimension
    peer.startprob_ = np.asarray(model.initial_probs)
    peer.transmat_ = np.asarray(model.transition_probs)
    peer.means_ = np.asarray(model.biases)
    peer.covars_ = np.asarray(model.covariances)

    _assert_rel(model.log_prob(jnp.asarray(y)), peer.score(y))
    log_weight, states = peer.decode(y, algorithm="viterbi")
    path, ours = model.viterbi(jnp.asarray(y))
    np.testing.assert_array_equal(np.asarray(path), states)
    _assert_rel(ours, log_weight)
