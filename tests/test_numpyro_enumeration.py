"""numpyro's enumeration protocol on the exact models: ``enumerate_support``, ``entropy``.

Oracles: the support against ``itertools.product`` (``x[0]`` varies slowest, the order of
``law()``); the entropy against ``-sum p log p`` of ``law()`` in float64 at 1e-10; the
enumerated site of a numpyro model (a latent Markov chain seen through a noisy channel)
against the same model written as an HMM, whose likelihood the forward algorithm computes.
funsor is not a dependency: numpyro's own enumeration (``config_enumerate`` with
``TraceEnum_ELBO``) runs only where it is installed; the manual marginalisation over
``enumerate_support`` inside a numpyro model runs everywhere.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density

from arprob import HMM, MarkovChain, NGram, TabularJoint
from arprob.errors import EnumerationTooLargeError

jax.config.update("jax_enable_x64", True)

EXACT = 1e-10


def _dirichlet(seed: int, shape, zeros: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = rng.gamma(1.0, size=shape) + 1e-3
    if zeros:  # the last entry of every row is zero (zero-probability cells and windows)
        draws[..., -1] = 0.0
    return draws / draws.sum(axis=-1, keepdims=True)


def _models():
    """(name, model) pairs: every exact sequence model, batched where the class allows it."""
    tabular_probs = _dirichlet(0, (2, 27)).reshape(2, 3, 3, 3)
    return [
        ("tabular", TabularJoint(probs=_dirichlet(1, 27).reshape(3, 3, 3))),
        ("tabular_batched", TabularJoint(probs=tabular_probs, length=3)),
        ("markov", MarkovChain(_dirichlet(2, 3), _dirichlet(3, (3, 3)), length=4)),
        ("markov_zeros", MarkovChain(_dirichlet(4, 3, zeros=True), _dirichlet(5, (3, 3), zeros=True), length=5)),
        ("markov_batched", MarkovChain(_dirichlet(6, (2, 3)), _dirichlet(7, (2, 3, 3)), length=3)),
        ("ngram", NGram(_dirichlet(8, (4, 4, 3)), length=5)),
        ("ngram_k3", NGram(_dirichlet(9, (3, 3, 3, 2)), length=6)),
        ("hmm", HMM(_dirichlet(10, 2), _dirichlet(11, (2, 2)), _dirichlet(12, (2, 3)), length=4)),
    ]


MODELS = _models()
IDS = [name for name, _ in MODELS]


@pytest.mark.parametrize("name, model", MODELS, ids=IDS)
def test_enumerate_support_lists_every_sequence_in_law_order(name, model):
    vocab_size, length, batch_shape = model.vocab_size, model.length, model.batch_shape
    expected = np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int32)
    assert model.has_enumerate_support

    support = model.enumerate_support(expand=True)
    assert support.shape == (vocab_size**length,) + batch_shape + (length,)
    assert support.dtype == jnp.int32
    for index in np.ndindex(batch_shape):
        np.testing.assert_array_equal(np.asarray(support)[(slice(None),) + index], expected)

    np.testing.assert_array_equal(jax.jit(lambda m: m.enumerate_support())(model), support)  # static values

    compact = model.enumerate_support(expand=False)
    assert compact.shape == (vocab_size**length,) + (1,) * len(batch_shape) + (length,)
    np.testing.assert_array_equal(np.asarray(compact).reshape(-1, length), expected)

    # the order is law()'s: log_prob of the k-th enumerated sequence is log law[..., k]
    log_probs = np.moveaxis(np.asarray(model.log_prob(support)), 0, -1)
    np.testing.assert_allclose(np.exp(log_probs), model.law(), rtol=0, atol=EXACT)


@pytest.mark.parametrize("name, model", MODELS, ids=IDS)
def test_entropy_is_minus_sum_p_log_p_of_the_law(name, model):
    law = model.law()
    positive = law > 0
    expected = -np.sum(np.where(positive, law * np.log(np.where(positive, law, 1.0)), 0.0), axis=-1)
    entropy = model.entropy()
    assert entropy.shape == model.batch_shape
    np.testing.assert_allclose(np.asarray(entropy), expected, rtol=0, atol=EXACT)
    # negative control: the same assertion rejects the entropy of another model of the same space
    space = (model.vocab_size,) * model.length
    other = TabularJoint(probs=_dirichlet(99, model.vocab_size**model.length).reshape(space))
    assert np.all(np.abs(np.asarray(other.entropy()) - expected) > 1e-4)


@pytest.mark.parametrize("name", ["tabular_batched", "markov_batched", "ngram_k3"])
def test_entropy_traces_for_tables_and_chains(name):
    """TabularJoint and the chain models compute the entropy without enumeration: jit gives the eager value."""
    model = dict(MODELS)[name]
    traced = jax.jit(lambda m: m.entropy())(model)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(model.entropy()), rtol=0, atol=EXACT)


def test_chain_entropy_needs_no_enumeration():
    """A chain of length 200 (3**200 sequences) has an exact entropy; stationary start: L times the rate."""
    transition = _dirichlet(13, (3, 3))
    eigenvalues, eigenvectors = np.linalg.eig(transition.T)
    stationary = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1))])
    stationary = stationary / stationary.sum()
    model = MarkovChain(stationary, transition, length=200)
    with pytest.raises(EnumerationTooLargeError):
        model.law()
    rows = -np.sum(transition * np.log(transition), axis=-1)
    initial = -np.sum(stationary * np.log(stationary))
    expected = initial + 199 * stationary @ rows  # H(x_0) + sum_t H(x_t | x_{t-1}) at stationarity
    np.testing.assert_allclose(float(model.entropy()), expected, rtol=1e-12)


def test_enumeration_refused_over_budget():
    model = HMM(_dirichlet(14, 2), _dirichlet(15, (2, 2)), _dirichlet(16, (2, 4)), length=30)
    with pytest.raises(EnumerationTooLargeError, match="HMM.enumerate_support"):
        model.enumerate_support()
    with pytest.raises(EnumerationTooLargeError, match="HMM.law"):
        model.entropy()
    small = MarkovChain(_dirichlet(2, 3), _dirichlet(3, (3, 3)), length=4)
    with pytest.raises(EnumerationTooLargeError, match="max_entries"):
        small.enumerate_support(max_entries=100)  # 81 sequences x 4 tokens


# ------------------------------------------------------------- an enumerated site in a numpyro model

VOCAB, LENGTH = 3, 4


def _noise_matrix(flip):
    """Channel ``p(y_t | x_t)``: the token kept with probability 1 - flip, else uniform over the others."""
    return (1 - flip) * jnp.eye(VOCAB) + flip * (1 - jnp.eye(VOCAB)) / (VOCAB - 1)


def _latent_chain_model(y, flip, chain):
    """x ~ chain (a latent sequence), y_t ~ channel(x_t); x summed out over chain.enumerate_support()."""
    support = chain.enumerate_support()  # (V**L, L)
    channel = jnp.log(_noise_matrix(flip))
    joint = chain.log_prob(support) + channel[support, y].sum(axis=-1)  # log p(x, y) for every x
    numpyro.factor("y_given_chain", jax.scipy.special.logsumexp(joint))


def test_enumerated_latent_sequence_in_a_numpyro_model_is_the_hmm_likelihood():
    """The sum over enumerate_support inside a numpyro model equals the HMM forward algorithm, also its gradient."""
    initial, transition = _dirichlet(20, VOCAB), _dirichlet(21, (VOCAB, VOCAB))
    chain = MarkovChain(initial, transition, length=LENGTH)
    y = jnp.array([0, 2, 2, 1])

    def density(flip):
        return log_density(_latent_chain_model, (y, flip, chain), {}, {})[0]

    def hmm_log_likelihood(flip):  # the same generative story with the chain as hidden states
        return HMM(initial, transition, _noise_matrix(flip), length=LENGTH).log_prob(y)

    for flip in [0.05, 0.3, 2 / 3]:
        np.testing.assert_allclose(float(jax.jit(density)(flip)), float(hmm_log_likelihood(flip)),
                                   rtol=0, atol=EXACT)
        np.testing.assert_allclose(float(jax.grad(density)(flip)), float(jax.grad(hmm_log_likelihood)(flip)),
                                   rtol=1e-9, atol=EXACT)
    # negative control: dropping one enumerated sequence changes the answer
    support = chain.enumerate_support()[1:]
    truncated = jax.scipy.special.logsumexp(
        chain.log_prob(support) + jnp.log(_noise_matrix(0.3))[support, y].sum(axis=-1))
    assert abs(float(truncated) - float(hmm_log_likelihood(0.3))) > 1e-6


def test_mixture_of_two_models_with_an_enumerated_component():
    """z ~ Categorical(w) picks one of two arprob models; z enumerated by hand equals the mixture of laws."""
    first = NGram(_dirichlet(22, (4, 4, 3)), length=3)
    second = TabularJoint(probs=_dirichlet(23, 27).reshape(3, 3, 3))
    weights = jnp.array([0.3, 0.7])
    data = first.enumerate_support()  # every sequence observed once

    def model(x):
        component = dist.Categorical(probs=weights)
        z = component.enumerate_support()  # (2,)
        per_component = jnp.stack([first.log_prob(x), second.log_prob(x)])  # (2, N)
        with numpyro.plate("data", x.shape[0]):
            numpyro.factor("x", jax.scipy.special.logsumexp(component.log_prob(z)[:, None] + per_component, axis=0))

    value = log_density(model, (data,), {}, {})[0]
    mixture = 0.3 * first.law() + 0.7 * second.law()
    np.testing.assert_allclose(float(value), np.sum(np.log(mixture)), rtol=0, atol=EXACT)


def test_numpyro_enumerates_an_arprob_site_with_funsor():
    """numpyro's own parallel enumeration (TraceEnum_ELBO) of a latent arprob sequence, where funsor exists.

    numpyro's enumeration handler (numpyro.contrib.funsor.enum_messenger) reads only the *size* of
    ``enumerate_support`` and hands the site the indices ``0..size-1``: it enumerates index-valued
    sites (Categorical, Bernoulli), not sites with an event shape.  A latent sequence is therefore
    enumerated through its index in ``enumerate_support()``, which is ``law()``'s order.
    """
    pytest.importorskip("funsor")
    from numpyro.contrib.funsor import config_enumerate
    from numpyro.infer import TraceEnum_ELBO

    initial, transition = _dirichlet(20, VOCAB), _dirichlet(21, (VOCAB, VOCAB))
    chain = MarkovChain(initial, transition, length=LENGTH)
    y = jnp.array([0, 2, 2, 1])
    flip = 0.3
    support = chain.enumerate_support()

    @config_enumerate
    def model():
        index = numpyro.sample("x_index", dist.Categorical(logits=chain.log_prob(support)))
        x = support[index]  # (V**L, L) under enumeration
        numpyro.sample("y", dist.Categorical(probs=_noise_matrix(flip)[x]).to_event(1), obs=y)

    def guide():
        """No latent site outside the enumerated one: the ELBO is the exact log-likelihood."""

    loss = TraceEnum_ELBO(max_plate_nesting=0).loss(jax.random.key(0), {}, model, guide)
    expected = HMM(initial, transition, _noise_matrix(flip), length=LENGTH).log_prob(y)
    np.testing.assert_allclose(-float(loss), float(expected), rtol=0, atol=EXACT)
