r"""The window chain's transition as an operator: never a dense matrix.

Full windows :math:`w = (a_1, \dots, a_K)` are indexed in base :math:`T` with the oldest token most
significant, :math:`w = \sum_i a_i T^{K-i}`.  One step drops :math:`a_1` and appends :math:`v`:
:math:`w' = (w \bmod T^{K-1})\,T + v`.  So the predecessors of :math:`w' = (r, v)` are the :math:`T`
windows :math:`(a, r)`, and a law :math:`\mu` over windows moves as

.. math::

    (\mu Q)(r, v) = \sum_{a=0}^{T-1} \mu(a, r)\, P(v \mid (a, r)),

a reshape of :math:`\mu` to ``(T, T**(K-1))`` and of the table to ``(T, T**(K-1), T)`` and a sum
over the leading axis: :math:`O(T^{K+1})` work and no index arrays.  The sum is unrolled over the
:math:`T` predecessors for small :math:`T` (four times faster than ``einsum`` on XLA:CPU, measured
at :math:`2^{22}` windows).  The same shift written with :math:`(\min, +)` gives the smallest entry of
:math:`Q^K` (:func:`min_log_k_step`), and its adjoint :math:`(Qf)(w) = \sum_v P(v \mid w) f(w')`
serves eigen-solvers.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

__all__ = ["apply", "apply_adjoint", "min_log_k_step", "power_iteration", "window_csr"]

#: Above this many tokens the predecessor sum is an ``einsum`` instead of an unrolled loop.
UNROLL_TOKENS = 64


def apply(law, table):
    r"""One step :math:`\mu \mapsto \mu Q` on full windows; ``law (..., T**K)``, ``table (T**K, T)``."""
    num_windows, vocab_size = table.shape
    rest = num_windows // vocab_size
    grouped = law.reshape(law.shape[:-1] + (vocab_size, rest))
    rows = table.reshape(vocab_size, rest, vocab_size)
    if vocab_size <= UNROLL_TOKENS:
        out = grouped[..., 0, :, None] * rows[0]
        for a in range(1, vocab_size):
            out = out + grouped[..., a, :, None] * rows[a]
    else:
        out = jnp.einsum("...am,amv->...mv", grouped, rows)
    return out.reshape(law.shape)


def apply_adjoint(values, table):
    r""":math:`(Qf)(w) = \sum_v P(v \mid w)\, f((w \bmod T^{K-1})T + v)`; ``values (T**K,)``."""
    num_windows, vocab_size = table.shape
    rest = num_windows // vocab_size
    successors = values.reshape(rest, vocab_size)  # f(r, v) for the shifted window (r, v)
    rows = table.reshape(vocab_size, rest, vocab_size)
    return jnp.sum(rows * successors[None], axis=-1).reshape(num_windows)


@partial(jax.jit, static_argnames=("check_every", "lazy"))
def power_iteration(table, law, tol, max_iterations, *, check_every: int = 8, lazy: bool = False):
    r"""Iterate :math:`\mu \leftarrow \mu Q` (or the lazy :math:`\mu(I + Q)/2`) until the law is within ``tol``.

    Every ``check_every`` steps the iterate is renormalised and the one-step change
    :math:`c_n = \lVert \mu_n Q - \mu_n \rVert_1` is compared with the previous check's; their ratio
    estimates the contraction rate :math:`r = (c_n / c_{n-m})^{1/m}`, and the distance to the limit is
    about :math:`c_n / (1 - r)`.  It stops when that estimate is :math:`\le` ``tol``.  A small change
    alone is no proof (a slowly mixing chain barely moves from a nearly-stationary start), which is why
    the rate enters; at :math:`r \ge 1` it never stops early.  Returns ``(law, estimated_error,
    iterations)``.  The table is an argument, not a constant, so compiling does not depend on its size.
    """

    def one(law):
        moved = apply(law, table)
        return 0.5 * (law + moved) if lazy else moved

    def body(carry):
        law, _, change_before, iterations = carry
        for _ in range(check_every - 1):
            law = one(law)
        new = one(law)
        new = new / jnp.sum(new)
        change = jnp.sum(jnp.abs(new - law))
        rate = jnp.where(change_before > 0, (change / change_before) ** (1.0 / check_every), 1.0)
        error = jnp.where(rate < 1.0, change / (1.0 - jnp.minimum(rate, 1.0 - 1e-15)), jnp.inf)
        return new, error, change, iterations + check_every

    def keep_going(carry):
        _, error, _, iterations = carry
        return (error > tol) & (iterations < max_iterations)

    infinity = jnp.asarray(jnp.inf, law.dtype)
    start = (law, infinity, infinity, jnp.asarray(0, jnp.int32))
    law, error, _, iterations = jax.lax.while_loop(keep_going, body, start)
    return law, error, iterations


@partial(jax.jit, static_argnames=("steps",))
def min_log_k_step(log_table, start_mask, *, steps: int):
    r"""Smallest :math:`\log Q^{\text{steps}}(w, w')` over starts in ``start_mask``, per end window :math:`w'`.

    The :math:`(\min, +)` version of :func:`apply`: between two windows there is exactly one path of
    :math:`K` steps, so after :math:`K` steps this is :math:`\min_w \log Q^K(w, w')`.
    """
    num_windows, vocab_size = log_table.shape
    rest = num_windows // vocab_size
    rows = log_table.reshape(vocab_size, rest, vocab_size)
    value = jnp.where(start_mask, 0.0, jnp.inf).astype(log_table.dtype)

    def step(value, _):
        grouped = value.reshape(vocab_size, rest)
        return jnp.min(grouped[:, :, None] + rows, axis=0).reshape(num_windows), None

    value, _ = jax.lax.scan(step, value, None, length=steps)
    return value


@jax.jit
def step_many(law, table, count):
    """``count`` steps of :func:`apply` (a traced count: no recompilation per count)."""
    return jax.lax.fori_loop(0, count, lambda _, value: apply(value, table), law)


def window_csr(table: np.ndarray, *, positive_only: bool = True) -> scipy.sparse.csr_matrix:
    """The window chain's transition matrix as scipy CSR, ``(T**K, T**K)`` with ``T`` entries per row."""
    num_windows, vocab_size = table.shape
    rows = np.repeat(np.arange(num_windows, dtype=np.int64), vocab_size)
    columns = ((np.arange(num_windows, dtype=np.int64) % (num_windows // vocab_size)) * vocab_size)[:, None] \
        + np.arange(vocab_size)[None, :]
    values = np.asarray(table).reshape(-1)
    columns = columns.reshape(-1)
    if positive_only:
        keep = values > 0
        rows, columns, values = rows[keep], columns[keep], values[keep]
    return scipy.sparse.csr_matrix((values, (rows, columns)), shape=(num_windows, num_windows))
