"""Tests of the transfer-matrix Ising model (arprob.distributions.ising) against brute-force oracles.

The oracle is written independently of the library: an explicit list of bonds (site, right
neighbour) and (site, lower neighbour), wrapping when periodic, the energy of every one of the
``2**(H*W)`` states summed from that list in numpy float64, and every normalizer, marginal and
conditional by summing the resulting law.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

import arprob
from arprob.distributions import Ising
from arprob.errors import ArprobTypeError, EnumerationTooLargeError, InvalidArgumentError, ShapeError

EXACT = 1e-10
ALPHA = 1e-4  # family-wise false-alarm probability of each arprob.verify.check assertion

# (height, width, periodic): 1-d chains, a doubled bond (periodic side 2), square and oblong grids up to 4 x 4
CASES = [(1, 4, True), (3, 1, False), (2, 3, True), (2, 3, False), (3, 3, True), (3, 4, False), (4, 4, True),
         (4, 4, False)]


def _states(length):
    return np.array(list(itertools.product((0, 1), repeat=length)), dtype=np.int32)


def _bonds(height, width, periodic):
    """``(site, neighbour, axis)`` for each bond: right (axis 0) and lower (axis 1) neighbours."""
    bonds = []
    for r, c in itertools.product(range(height), range(width)):
        if width > 1 and (c + 1 < width or periodic):
            bonds.append((r * width + c, r * width + (c + 1) % width, 0, r, c))
        if height > 1 and (r + 1 < height or periodic):
            bonds.append((r * width + c, ((r + 1) % height) * width + c, 1, r, c))
    return bonds


def _energies(height, width, periodic, coupling, bias):
    """Energy of every state, lexicographic order, from the explicit bond list."""
    spins = 2.0 * _states(height * width) - 1.0
    energy = spins @ np.asarray(bias, np.float64).reshape(-1)
    for i, j, axis, r, c in _bonds(height, width, periodic):
        energy = energy + coupling[axis, r, c] * spins[:, i] * spins[:, j]
    return energy


def _random_case(seed, height, width, periodic):
    rng = np.random.default_rng(seed)
    coupling = rng.normal(scale=0.8, size=(2, height, width))  # both signs: (anti)ferromagnetic bonds
    bias = rng.normal(scale=0.8, size=(height, width))
    model = Ising(height, width, coupling=coupling, bias=bias, periodic=periodic)
    energy = _energies(height, width, periodic, coupling, bias)
    log_z = np.logaddexp.reduce(energy)
    return model, energy - log_z, log_z, rng


def _marginal(states, log_law, x, observed):
    match = np.all(np.where(observed, states == x, True), axis=1)
    return np.logaddexp.reduce(np.where(match, log_law, -np.inf))


@pytest.mark.parametrize(("height", "width", "periodic"), CASES)
def test_exact_against_brute_force(height, width, periodic):
    model, log_law, log_z, rng = _random_case(height * 10 + width + periodic, height, width, periodic)
    length = height * width
    states = _states(length)
    law = np.exp(log_law)
    # log Z, log_prob of every state, law()
    assert abs(float(model.log_partition()) - log_z) < EXACT
    np.testing.assert_allclose(np.asarray(model.log_prob(states)), log_law, rtol=0, atol=EXACT)
    np.testing.assert_allclose(model.law(), law, rtol=0, atol=EXACT)
    # marginals and conditionals on random subsets, and on the empty and the full set
    num_queries = 6
    xs = states[rng.choice(len(states), size=num_queries, p=law)]
    observed = rng.random((num_queries, length)) < 0.5
    observed[0], observed[1] = False, True
    marginals = np.asarray(model.marginal_log_prob(xs, observed))
    expected = [_marginal(states, log_law, x, mask) for x, mask in zip(xs, observed)]
    np.testing.assert_allclose(marginals, expected, rtol=0, atol=EXACT)
    assert abs(marginals[0]) < EXACT and abs(marginals[1] - log_law[np.all(states == xs[1], 1)][0]) < EXACT
    logits = np.asarray(model.conditional_logits(xs, observed))
    assert logits.shape == (num_queries, length, 2)
    for query, (x, mask) in enumerate(zip(xs, observed)):
        for i in range(length):
            context = mask.copy()
            context[i] = False
            joint = [_marginal(states, log_law, np.where(np.arange(length) == i, v, x), context | (np.arange(
                length) == i)) for v in (0, 1)]
            np.testing.assert_allclose(logits[query, i], np.array(joint) - np.logaddexp.reduce(joint),
                                       rtol=0, atol=EXACT)


def test_strong_couplings_stay_exact_in_log_space():
    """Couplings of +-300 (weights e^{+-2400}): log-space passes neither overflow nor lose the small terms."""
    coupling = np.stack([np.full((2, 3), 300.0), np.full((2, 3), -300.0)])
    bias = np.zeros((2, 3))
    model = Ising(2, 3, coupling, bias, periodic=True)
    energy = _energies(2, 3, True, coupling, bias)
    log_law = energy - np.logaddexp.reduce(energy)
    states = _states(6)
    np.testing.assert_allclose(np.asarray(model.log_prob(states)), log_law, rtol=0, atol=1e-9)
    x, observed = states[5], np.arange(6) < 3
    assert abs(float(model.marginal_log_prob(x, observed)) - _marginal(states, log_law, x, observed)) < 1e-9
    logits = np.asarray(model.conditional_logits(x, observed))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(np.logaddexp.reduce(logits, axis=-1), 0.0, atol=EXACT)


def test_sample_passes_verify_check():
    """Full-joint goodness of fit on 3 x 3 (512 cells): the default plan detects TV >= 0.01 with power 0.99."""
    model = Ising(3, 3, coupling=0.4, bias=-0.3, periodic=True)
    tokens = model.sample(jax.random.key(1), (7,))
    assert tokens.shape == (7, 9) and tokens.dtype == np.int32
    report = arprob.verify.check(lambda key, n: model.sample(key, (n,)), model, alpha=ALPHA, progress=False)
    assert report.passed, report
    assert report.resolution <= 0.0101


def test_verify_check_rejects_a_wrong_ising_sampler():
    """The check above can fail: draws from the open-boundary grid (TV about 0.13 from the torus) are rejected."""
    model = Ising(3, 3, coupling=0.4, bias=-0.3, periodic=True)
    wrong = Ising(3, 3, coupling=0.4, bias=-0.3, periodic=False)
    assert 0.5 * np.abs(model.law() - wrong.law()).sum() > 0.05
    report = arprob.verify.check(lambda key, n: wrong.sample(key, (n,)), model, alpha=ALPHA, num_samples=50_000,
                                 progress=False)
    assert not report.passed


def _mam_adjacency(height, width):
    """Adjacency matrix of the periodic height x width lattice (sides >= 3: a simple graph)."""
    rows, columns = np.divmod(np.arange(height * width), width)
    dr = np.abs(rows[:, None] - rows[None, :]) % height
    dc = np.abs(columns[:, None] - columns[None, :]) % width
    vertical = (dc == 0) & ((dr == 1) | (dr == height - 1))
    horizontal = (dr == 0) & ((dc == 1) | (dc == width - 1))
    return (vertical | horizontal).astype(np.float64)


@pytest.mark.parametrize(("height", "width"), [(3, 3), (3, 4), (4, 4)])
def test_mam_setting_is_s_J_s_plus_b_s(height, width):
    """MaM: log f(s) = s^T (0.1 A) s + 0.2 * sum(s), periodic; Ising.mam gives the same law, exactly."""
    model = Ising.mam(height, width)
    states = _states(height * width)
    spins = 2.0 * states - 1.0
    log_f = np.einsum("ni,ij,nj->n", spins, 0.1 * _mam_adjacency(height, width), spins) + spins @ np.full(
        height * width, 0.2)
    np.testing.assert_allclose(np.asarray(model.unnormalized_log_prob(states)), log_f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(model.log_prob(states)), log_f - np.logaddexp.reduce(log_f), rtol=0,
                               atol=EXACT)
    same = Ising(height, width, coupling=0.2, bias=0.2, periodic=True)
    np.testing.assert_allclose(np.asarray(same.log_prob(states)), np.asarray(model.log_prob(states)), atol=EXACT)


def test_mam_default_is_ten_by_ten():
    model = Ising.mam()
    assert (model.height, model.width, model.periodic, model.length, model.vocab_size) == (10, 10, True, 100, 2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(5, 100))
    spins = 2.0 * x - 1.0
    log_f = np.einsum("ni,ij,nj->n", spins, 0.1 * _mam_adjacency(10, 10), spins) + 0.2 * spins.sum(1)
    np.testing.assert_allclose(np.asarray(model.unnormalized_log_prob(x)), log_f, rtol=0, atol=1e-12)


def test_parameter_shapes():
    """A (horizontal, vertical) pair, a per-site bias vector in row-major order, and full arrays agree."""
    rng = np.random.default_rng(3)
    bias = rng.normal(size=6)
    pair = Ising(2, 3, coupling=(0.3, -0.5), bias=bias, periodic=False)
    full = Ising(2, 3, coupling=np.stack([np.full((2, 3), 0.3), np.full((2, 3), -0.5)]), bias=bias.reshape(2, 3),
                 periodic=False)
    states = _states(6)
    np.testing.assert_allclose(np.asarray(pair.log_prob(states)), np.asarray(full.log_prob(states)), atol=EXACT)


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda: Ising(0, 3, 0.1), InvalidArgumentError, "height must be >= 1"),
    (lambda: Ising(3, -1, 0.1), InvalidArgumentError, "width must be >= 1"),
    (lambda: Ising(3.0, 3, 0.1), ArprobTypeError, "height must be an int"),
    (lambda: Ising(3, "3", 0.1), ArprobTypeError, "width must be an int"),
    (lambda: Ising(3, True, 0.1), ArprobTypeError, "width must be an int"),
    (lambda: Ising(3, 3, float("nan")), InvalidArgumentError, "coupling has 1 non-finite"),
    (lambda: Ising(3, 3, np.ones((3, 3))), ShapeError, "coupling has shape (3, 3)"),
    (lambda: Ising(3, 3, np.ones((2, 4, 3))), ShapeError, "coupling has shape (2, 4, 3)"),
    (lambda: Ising(3, 3, 0.1, bias=np.inf), InvalidArgumentError, "bias has 1 non-finite"),
    (lambda: Ising(3, 3, np.ones(3)), ShapeError, "coupling has shape (3,)"),
    (lambda: Ising(3, 3, 0.1, bias=np.ones(4)), ShapeError, "bias has shape (4,)"),
    (lambda: Ising(3, 3, "strong"), ArprobTypeError, "coupling must be an array of real numbers"),
    (lambda: Ising(3, 3, 0.1, periodic="yes"), ArprobTypeError, "periodic must be True or False"),
    (lambda: Ising(4, 20, 0.1), EnumerationTooLargeError, "transfer matrix of width=20"),
    (lambda: Ising(4, 10**6, 0.1), EnumerationTooLargeError, "transfer matrix"),
    (lambda: Ising.mam(10, 10, sigma=float("inf")), InvalidArgumentError, "sigma"),
])
def test_bad_arguments_are_refused_clearly(call, error, words):
    with pytest.raises(error, match="Ising") as info:
        call()
    assert words in str(info.value)


def test_bad_queries_are_refused():
    model = Ising(2, 2, 0.1)
    with pytest.raises(ShapeError):
        model.log_prob(np.zeros(3, np.int32))
    with pytest.raises(arprob.errors.InvalidTokenError):
        model.log_prob(np.array([0, 1, 2, 0]))
    with pytest.raises(ArprobTypeError):
        model.sample(0, (3,))


def test_transposed_grid_has_the_same_law(periodic=True):
    """Beyond brute force (24 sites): the 4 x 6 torus and its 6 x 4 transpose agree (rows of 2^6 vs 2^4 states)."""
    rng = np.random.default_rng(11)
    coupling = rng.normal(scale=0.7, size=(2, 4, 6))
    bias = rng.normal(scale=0.7, size=(4, 6))
    model = Ising(4, 6, coupling, bias, periodic=periodic)
    transposed = Ising(6, 4, np.stack([coupling[1].T, coupling[0].T]), bias.T, periodic=periodic)
    assert abs(float(model.log_partition()) - float(transposed.log_partition())) < EXACT
    x = rng.integers(0, 2, size=(3, 4, 6))
    observed = rng.random((3, 4, 6)) < 0.4
    flat = x.reshape(3, 24)
    flat_t = x.transpose(0, 2, 1).reshape(3, 24)
    mask, mask_t = observed.reshape(3, 24), observed.transpose(0, 2, 1).reshape(3, 24)
    np.testing.assert_allclose(np.asarray(model.marginal_log_prob(flat, mask)),
                               np.asarray(transposed.marginal_log_prob(flat_t, mask_t)), rtol=0, atol=EXACT)
    logits = np.asarray(model.conditional_logits(flat, mask)).reshape(3, 4, 6, 2)
    logits_t = np.asarray(transposed.conditional_logits(flat_t, mask_t))
    np.testing.assert_allclose(logits, logits_t.reshape(3, 6, 4, 2).transpose(0, 2, 1, 3), rtol=0, atol=EXACT)


def test_prefix_conditional_logits_are_the_chain_rule_factors():
    model, log_law, _, rng = _random_case(5, 2, 3, True)
    states = _states(6)
    x = states[rng.integers(len(states))]
    rows = np.asarray(model.prefix_conditional_logits(x))
    for t in range(6):
        prefix = np.arange(6) < t
        joint = [_marginal(states, log_law, np.where(np.arange(6) == t, v, x), prefix | (np.arange(6) == t))
                 for v in (0, 1)]
        np.testing.assert_allclose(rows[t], np.array(joint) - np.logaddexp.reduce(joint), rtol=0, atol=EXACT)


def test_open_inhomogeneous_samples_follow_the_law():
    """gof on all 64 states of a 2 x 3 open grid with random signed couplings (false alarm 1e-4)."""
    model, log_law, _, _ = _random_case(2, 2, 3, False)
    tokens = np.asarray(model.sample(jax.random.key(3), (20_000,)))
    assert arprob.verify.gof(tokens, np.exp(log_law)).p_value > ALPHA


def test_traced_parameters_jit_and_gradients(periodic=True):
    """Parameters may be traced (numpyro inference over couplings): jit agrees, gradients are finite and exact.

    Periodic: its start message holds -inf (a point mass per first-row state), the case where a plain
    logaddexp's gradient is NaN.  The gradient of log p(x) in a uniform coupling J is
    sum_bonds s_i s_j(x) - E_p[sum_bonds s_i s_j], checked against brute-force enumeration; marginals'
    gradients pass through -inf evidence masks without NaN.
    """
    x = np.array([[0, 1, 1, 0, 0, 1, 1, 1, 0]], np.int32)
    observed = np.arange(9)[None] % 2 == 0

    def log_p(coupling, bias):
        return Ising(3, 3, coupling, bias, periodic=periodic).log_prob(x).sum()

    def marginal(coupling, bias):
        return Ising(3, 3, coupling, bias, periodic=periodic).marginal_log_prob(x, observed).sum()

    assert abs(float(jax.jit(log_p)(0.3, -0.2)) - float(log_p(0.3, -0.2))) < EXACT
    unit = _energies(3, 3, periodic, np.ones((2, 3, 3)), np.zeros((3, 3)))  # sum over bonds of s_i s_j
    energy = 0.3 * unit - 0.2 * (2.0 * _states(9) - 1.0).sum(1)
    law = np.exp(energy - np.logaddexp.reduce(energy))
    index = int((x[0] * 2 ** np.arange(8, -1, -1)).sum())
    assert abs(float(jax.grad(log_p)(0.3, -0.2)) - (unit[index] - law @ unit)) < 1e-9
    gradients = jax.grad(marginal, argnums=(0, 1))(0.3, -0.2)
    assert all(np.isfinite(float(g)) for g in gradients)
    step = 1e-5
    numeric = (float(marginal(0.3 + step, -0.2)) - float(marginal(0.3 - step, -0.2))) / (2 * step)
    assert abs(float(gradients[0]) - numeric) < 1e-6
