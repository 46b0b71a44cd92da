r"""Convergence of a window chain: distance to stationarity, mixing times, the spectral gap, Zekri's bound.

* :math:`d_\mu(n) = \lVert \mu Q^n - \pi \rVert_{TV}` is non-increasing in :math:`n` for every start
  :math:`\mu` (a Markov kernel contracts total variation), so the mixing time
  :math:`t_{mix}(\varepsilon) = \min\{n : \max_{w} d_{\delta_w}(n) \le \varepsilon\}` is found by
  doubling and bisection on dense matrix powers when :math:`T^K` is small (every window a start:
  exact), and by stepping a batch of starts through the matrix-free operator otherwise.
* :math:`|\lambda_2|`, the second largest eigenvalue modulus, gives the asymptotic rate
  :math:`d(n) \approx C |\lambda_2|^n`; dense eigenvalues when small, ARPACK on the
  :class:`~scipy.sparse.linalg.LinearOperator` otherwise.
* Zekri et al. (2024, *Large Language Models as Markov Chains*, Prop. 3.4):
  :math:`|(Q^n)_{ij} - \pi_j| \le (1 - 2\varepsilon)^{\lfloor n/K \rfloor - 1}` with :math:`\varepsilon`
  the smallest entry of :math:`Q^K` on the recurrent class.  Since every entry of :math:`Q^K` is a
  product of :math:`K` next-token probabilities, :math:`\varepsilon \le T^{-K}` and the bound decays
  at rate :math:`(1 - 2T^{-K})^{1/K}` per step, far slower than the true :math:`|\lambda_2|`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from arprob.markov.operators import apply, apply_adjoint

__all__ = ["DENSE_WINDOWS", "dense_transition", "mixing_time_dense", "mixing_time_stepped",
           "second_eigenvalue_modulus"]

#: Chains with at most this many windows get dense matrix methods (exact over every start).
DENSE_WINDOWS = 2048


def dense_transition(table: np.ndarray) -> np.ndarray:
    """The ``(T**K, T**K)`` transition matrix, for small chains only."""
    num_windows, vocab_size = table.shape
    matrix = np.zeros((num_windows, num_windows))
    rows = np.arange(num_windows)
    successors = (rows % (num_windows // vocab_size)) * vocab_size
    for v in range(vocab_size):
        matrix[rows, successors + v] += table[:, v]
    return matrix


def _normalized(matrix: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to one: a product of stochastic matrices loses ``eps`` of mass per row each
    time, which repeated squaring would compound into ``steps * eps``."""
    return matrix / matrix.sum(axis=1, keepdims=True)


def stochastic_power(matrix: np.ndarray, steps: int) -> np.ndarray:
    """:math:`Q^n` of a stochastic matrix by repeated squaring with rows renormalised after each product.

    Stops squaring once a power no longer changes (the chain has converged to its limit to rounding),
    so :math:`n = 10^{18}` costs no more than :math:`n = 10^{6}` on an aperiodic chain.
    """
    result = np.eye(matrix.shape[0])
    base = np.asarray(matrix, dtype=np.float64)
    while steps:
        if steps & 1:
            result = _normalized(result @ base)
        steps >>= 1
        if steps:
            squared = _normalized(base @ base)
            if np.array_equal(squared, base):  # a fixed point of squaring: every further power is base
                return _normalized(result @ base) if steps else result
            base = squared
    return result


def _worst_tv(power: np.ndarray, stationary: np.ndarray) -> tuple[float, int]:
    distances = 0.5 * np.abs(power - stationary[None, :]).sum(axis=1)
    worst = int(np.argmax(distances))
    return float(distances[worst]), worst


def mixing_time_dense(matrix: np.ndarray, stationary: np.ndarray, eps: float, max_steps: int):
    """Exact :math:`t_{mix}(\\varepsilon)` over every start: ``(steps, worst_start)``, ``None`` past ``max_steps``."""
    distance, worst = _worst_tv(np.eye(matrix.shape[0]), stationary)
    if distance <= eps:
        return 0, worst
    powers = [matrix]  # Q^(2^j)
    while True:
        distance, worst = _worst_tv(powers[-1], stationary)
        if distance <= eps:
            break
        if 2 ** len(powers) > max_steps:
            return None, worst
        powers.append(_normalized(powers[-1] @ powers[-1]))
    # bisection: the largest n with d(n) > eps, built from the powers below the first good one
    steps, current = 0, np.eye(matrix.shape[0])
    for j in range(len(powers) - 2, -1, -1):
        candidate = _normalized(current @ powers[j])
        if _worst_tv(candidate, stationary)[0] > eps:
            current, steps = candidate, steps + 2**j
    final = _normalized(current @ matrix)
    return steps + 1, _worst_tv(final, stationary)[1]


@jax.jit
def _step_until(laws, table, target, eps, max_steps):
    """Step ``laws`` until every TV to ``target`` is <= eps: (steps, distances, distances one step before)."""

    def distances(laws):
        return 0.5 * jnp.sum(jnp.abs(laws - target[None, :]), axis=1)

    def keep_going(carry):
        _, current, _, steps = carry
        return (jnp.max(current) > eps) & (steps < max_steps)

    def body(carry):
        laws, current, _, steps = carry
        laws = apply(laws, table)
        return laws, distances(laws), current, steps + 1

    start = distances(laws)
    _, final, before, steps = jax.lax.while_loop(keep_going, body, (laws, start, start, jnp.asarray(0, jnp.int64)))
    return steps, final, before


def mixing_time_stepped(table, stationary: np.ndarray, starts: np.ndarray, eps: float, max_steps: int):
    """:math:`t_{mix}` over the given start windows, stepped together; ``(steps, worst_start)``, ``None`` past max."""
    num_windows = table.shape[0]
    laws = np.zeros((len(starts), num_windows))
    laws[np.arange(len(starts)), starts] = 1.0
    steps, final, before = _step_until(jnp.asarray(laws), jnp.asarray(table), jnp.asarray(stationary), eps,
                                       max_steps)
    if float(jnp.max(final)) > eps:
        return None, int(starts[int(jnp.argmax(final))])
    return int(steps), int(starts[int(jnp.argmax(before))])


def second_eigenvalue_modulus(table: np.ndarray, *, tol: float = 1e-10) -> float:
    r""":math:`|\lambda_2|`: dense eigenvalues up to :data:`DENSE_WINDOWS` windows, ARPACK beyond."""
    num_windows = table.shape[0]
    if num_windows <= DENSE_WINDOWS:
        moduli = np.sort(np.abs(np.linalg.eigvals(dense_transition(table))))[::-1]
        return float(moduli[1]) if num_windows > 1 else 0.0
    table_j = jnp.asarray(table)

    def matvec(values):
        return np.asarray(apply_adjoint(jnp.asarray(np.real_if_close(values).reshape(-1)), table_j))

    operator = scipy.sparse.linalg.LinearOperator((num_windows, num_windows), matvec=matvec, dtype=np.float64)
    values = scipy.sparse.linalg.eigs(operator, k=3, which="LM", tol=tol, return_eigenvectors=False,
                                      maxiter=max(10_000, num_windows))
    moduli = np.sort(np.abs(values))[::-1]
    return float(moduli[1])


def zekri_exponent(steps: int, context_size: int) -> int:
    """:math:`\\lfloor n/K \\rfloor - 1`, the exponent of Prop. 3.4 (the bound is vacuous below 1)."""
    return steps // context_size - 1


def zekri_log_bound(log_epsilon: float, steps: int, context_size: int) -> float:
    """:math:`\\log (1 - 2\\varepsilon)^{\\lfloor n/K \\rfloor - 1}`; 0 (the bound 1) when the exponent is < 1."""
    exponent = zekri_exponent(steps, context_size)
    if exponent < 1 or log_epsilon == -math.inf:
        return 0.0
    two_eps = 2.0 * math.exp(log_epsilon)
    return exponent * math.log1p(-min(two_eps, 1.0)) if two_eps < 1.0 else -math.inf
