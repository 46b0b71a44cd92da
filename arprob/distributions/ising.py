r"""The Ising model on a height x width grid, exact by the row-to-row transfer matrix.

Tokens :math:`x \in \{0, 1\}^{HW}` in row-major order (site :math:`(r, c)` at position
:math:`rW + c`), spins :math:`s = 2x - 1`, and

.. math::

    p(x) = \frac{1}{Z} \exp\Bigl(\sum_{r, c} h_{rc}\, s_{r,c}\, s_{r,c+1}
           + \sum_{r, c} v_{rc}\, s_{r,c}\, s_{r+1,c} + \sum_{r, c} b_{rc}\, s_{r,c}\Bigr),

where :math:`h` (horizontal) and :math:`v` (vertical) are the couplings of the bond from a site to
its right and lower neighbour, and :math:`b` the field.  Every bond is counted once.  With
``periodic=True`` the indices wrap (:math:`c + 1 \bmod W`, :math:`r + 1 \bmod H`); without it the
bonds leaving the last column / row are absent.  Along an axis of size 1 there is no bond (a site is
not its own neighbour); along a periodic axis of size 2 the two sites are joined by two bonds (the
right neighbour of each is the other), so their coupling counts twice.

Exact computation.  A row is one of :math:`N = 2^W` states :math:`a` (index
:math:`\sum_c x_c 2^{W-1-c}`, column 0 the most significant bit).  With the row potential
:math:`\phi_r(a) = \sum_c b_{rc} s_c(a) + h_{rc} s_c(a) s_{c+1}(a)` (times the indicator that
:math:`a` agrees with the evidence on row :math:`r`) and the transfer matrix
:math:`T_r(a, a') = \exp \sum_c v_{rc} s_c(a) s_c(a')`,

.. math::

    Z = \sum_{a_0, \dots, a_{H-1}} \prod_r \phi_r(a_r) \prod_{r < H-1} T_r(a_r, a_{r+1})
        \; [\times\, T_{H-1}(a_{H-1}, a_0) \text{ if periodic}].

:math:`T_r = \bigotimes_c \begin{pmatrix} e^{v_{rc}} & e^{-v_{rc}} \\ e^{-v_{rc}} & e^{v_{rc}} \end{pmatrix}`
is a Kronecker product of :math:`2 \times 2` matrices, so a message is moved one row in
:math:`O(W N)` log-space operations (a ``logaddexp`` per column), never forming :math:`T_r`.  Open
boundaries: one forward pass, :math:`O(H W 2^W)` time and :math:`O(2^W)` memory.  Periodic
vertical boundary: the pass is run for each state :math:`c = a_0` of the first row at once
(messages of shape :math:`N \times N`, row :math:`c` the pass conditioned on :math:`a_0 = c`) and
closed by :math:`Z = \sum_c (T_{H-1} \alpha^{(c)}_{H-1})(c)`, the trace of the product of transfer
matrices: :math:`O(H W 4^W)` time and :math:`O(4^W)` memory.  Everything is in log space
(float64 exact, no overflow at any coupling).  Widths whose :math:`2^W \times 2^W` matrices would not fit
in memory are refused at construction.

* ``marginal_log_prob``: the same pass with each row's evidence mask (unobserved sites free),
  :math:`\log Z_S - \log Z`;
* ``conditional_logits``: one forward and one backward pass with the evidence of :math:`S`; then for
  site :math:`(r, c)`, :math:`p(x_{rc} = v \mid x_{S \setminus \{rc\}}) \propto \sum_a
  \alpha^-_r(a)\, \phi_r(a)\, \beta_r(a)\, [a \text{ agrees with } S \setminus \{rc\} \text{ on row } r]\,
  [x_c(a) = v]`, all :math:`HW` sites from one pass;
* ``sample``: forward filtering, backward sampling over rows (periodic: the first row's state is drawn
  first, from its exact marginal, then the rest given it).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from arprob._random import categorical
from arprob._validation import (
    check_bool,
    check_int,
    check_memory,
    check_real,
    check_real_array,
    check_work,
    is_concrete,
)
from arprob.distributions.base import SequenceDistribution
from arprob.errors import ShapeError

__all__ = ["Ising"]

_WIDTH_FIX = ("the transfer matrix has 2**width x 2**width entries: use a narrower grid (transpose it: "
              "height is free, the cost is linear in it), or open boundaries")


# -- functional core: arrays in, arrays out ---------------------------------------------------


def _row_bits(width: int) -> np.ndarray:
    """``(2**W, W)`` int32: the tokens of each row state, column 0 the most significant bit."""
    states = np.arange(2**width)
    return ((states[:, None] >> np.arange(width - 1, -1, -1)[None, :]) & 1).astype(np.int32)


def _log_add(first, second):
    """``logaddexp`` whose gradient is 0, not NaN, where both inputs are ``-inf`` (the periodic start)."""
    top = jnp.maximum(first, second)
    dead = jnp.isneginf(top)
    safe_top = jnp.where(dead, 0.0, top)
    total = jnp.exp(jnp.where(dead, 0.0, first) - safe_top) + jnp.exp(jnp.where(dead, 0.0, second) - safe_top)
    return jnp.where(dead, -jnp.inf, safe_top + jnp.log(total))


def _move(log_message, vertical_row):
    r"""Apply :math:`T = \bigotimes_c [[e^{v_c}, e^{-v_c}], [e^{-v_c}, e^{v_c}]]` to a log-message.

    ``log_message (..., 2**W)``, ``vertical_row (W,)``; returns
    :math:`\log \sum_a \exp(m(a) + \sum_c v_c s_c(a) s_c(a'))` for every :math:`a'`, one column at a time.
    """
    width = vertical_row.shape[0]
    batch = log_message.shape[:-1]
    for column in range(width):
        split = log_message.reshape(batch + (2**column, 2, 2 ** (width - column - 1)))
        down, up = split[..., 0, :], split[..., 1, :]  # spin -1, spin +1
        coupling = vertical_row[column]
        to_down = _log_add(down + coupling, up - coupling)
        to_up = _log_add(down - coupling, up + coupling)
        log_message = jnp.stack([to_down, to_up], axis=-2).reshape(batch + (2**width,))
    return log_message


def _row_potentials(horizontal, bias, width: int):
    r""":math:`\log \phi_r(a)` without evidence, shape ``(H, 2**W)``."""
    spins = 2.0 * jnp.asarray(_row_bits(width), horizontal.dtype) - 1.0
    pairs = spins * jnp.roll(spins, -1, axis=1)  # s_c s_{c+1 mod W}; dropped bonds have h = 0
    return bias @ spins.T + horizontal @ pairs.T


def _log_masks(x, observed, width: int):
    """``agree (H, 2**W, W)``: row state ``a`` agrees with the evidence at column ``c`` of row ``r``."""
    bits = jnp.asarray(_row_bits(width))
    return (~observed[:, None, :]) | (bits[None, :, :] == x[:, None, :])


def _start(num_states: int, periodic_rows: bool, dtype):
    """Predicted message of row 0: a point mass on ``a_0 = c`` per condition ``c`` (periodic), else flat."""
    if periodic_rows:
        return jnp.where(jnp.eye(num_states, dtype=bool), 0.0, -jnp.inf).astype(dtype)
    return jnp.zeros((1, num_states), dtype)


def _forward(log_potentials, vertical, periodic_rows: bool):
    r"""Predicted messages :math:`\log\alpha^-_r` ``(H, C, N)`` and :math:`\log Z` (evidence included).

    ``C = N`` conditions on the first row's state when the vertical boundary is periodic, else ``C = 1``.
    """
    num_states = log_potentials.shape[-1]

    def step(predicted, inputs):
        potential, vertical_row = inputs
        return _move(predicted + potential, vertical_row), predicted

    last, predicted = jax.lax.scan(step, _start(num_states, periodic_rows, log_potentials.dtype),
                                   (log_potentials, vertical))
    if periodic_rows:
        log_z = logsumexp(jnp.diagonal(last))  # close the loop: T_{H-1} back onto a_0 = c, summed over c
    else:
        log_z = logsumexp(predicted[-1] + log_potentials[-1])
    return predicted, log_z


def _backward(log_potentials, vertical, periodic_rows: bool):
    r"""Backward messages :math:`\log\beta_r` ``(H, C, N)``: the rows after :math:`r` given :math:`a_r` (and
    :math:`c`)."""
    num_states = log_potentials.shape[-1]
    if periodic_rows:
        last = _move(_start(num_states, True, log_potentials.dtype), vertical[-1])  # T_{H-1}(a, c)
    else:
        last = jnp.zeros((1, num_states), log_potentials.dtype)

    def step(backward, inputs):
        potential, vertical_row = inputs
        earlier = _move(backward + potential, vertical_row)
        return earlier, earlier

    _, earlier = jax.lax.scan(step, last, (log_potentials[1:], vertical[:-1]), reverse=True)
    return jnp.concatenate([earlier, last[None]], axis=0)


@partial(jax.jit, static_argnames=("width", "periodic_rows"))
def ising_log_partition(horizontal, vertical, bias, *, width: int, periodic_rows: bool):
    r""":math:`\log Z` of the grid (couplings ``(H, W)`` with dropped bonds already zero), float."""
    return _forward(_row_potentials(horizontal, bias, width), vertical, periodic_rows)[1]


@partial(jax.jit, static_argnames=("width", "periodic_rows"))
def ising_marginal_log_prob(horizontal, vertical, bias, x, observed, *, width: int, periodic_rows: bool):
    r""":math:`\log p(x_S) = \log Z_S - \log Z` for ``x, observed`` of shape ``(..., H, W)``."""
    potentials = _row_potentials(horizontal, bias, width)
    log_z = _forward(potentials, vertical, periodic_rows)[1]

    def single(tokens, mask):
        agree = jnp.all(_log_masks(tokens, mask, width), axis=-1)
        return _forward(jnp.where(agree, potentials, -jnp.inf), vertical, periodic_rows)[1]

    return jnp.vectorize(single, signature="(h,w),(h,w)->()")(x, observed) - log_z


@partial(jax.jit, static_argnames=("width", "periodic_rows"))
def ising_conditional_logits(horizontal, vertical, bias, x, observed, *, width: int, periodic_rows: bool):
    r""":math:`\log p(x_{rc} = v \mid x_{S \setminus \{rc\}})`, shape ``(..., H, W, 2)``; uniform on null contexts."""
    potentials = _row_potentials(horizontal, bias, width)
    bits = jnp.asarray(_row_bits(width))
    others = ~jnp.eye(width, dtype=bool)  # [column, c]: c != column

    def single(tokens, mask):
        agree = _log_masks(tokens, mask, width)  # (H, N, W)
        evidence = jnp.where(jnp.all(agree, axis=-1), potentials, -jnp.inf)
        predicted, _ = _forward(evidence, vertical, periodic_rows)
        backward = _backward(evidence, vertical, periodic_rows)
        row = logsumexp(predicted + backward, axis=1) + potentials  # (H, N): row r free of its own evidence
        context = jnp.all(agree[:, None, :, :] | ~others[None, :, None, :], axis=-1)  # (H, W, N)
        value = bits.T[None, :, :, None] == jnp.arange(2)  # (1, W, N, 2)
        keep = context[..., None] & value
        unnormalized = logsumexp(jnp.where(keep, row[:, None, :, None], -jnp.inf), axis=2)  # (H, W, 2)
        total = logsumexp(unnormalized, axis=-1, keepdims=True)
        impossible = jnp.isneginf(total)
        return jnp.where(impossible, -jnp.log(2.0), unnormalized - jnp.where(impossible, 0.0, total))

    return jnp.vectorize(single, signature="(h,w),(h,w)->(h,w,v)")(x, observed)


@partial(jax.jit, static_argnames=("width", "periodic_rows", "num_samples"))
def ising_sample(key, horizontal, vertical, bias, *, width: int, periodic_rows: bool, num_samples: int):
    r"""Exact draws ``(num_samples, H, W)`` int32 by forward filtering, backward sampling over rows.

    The last row and the first-row condition :math:`c` jointly from
    :math:`\alpha^-_{H-1}(c, a)\,\phi_{H-1}(a)\,\beta_{H-1}(c, a)` (first :math:`c`, then :math:`a`),
    then :math:`a_r \sim \alpha^-_r(c, a)\,\phi_r(a)\,T_r(a, a_{r+1})` for :math:`r = H-2, \dots, 0`.
    Gumbel-max in the dtype of the parameters (:func:`~arprob._random.categorical`).
    """
    potentials = _row_potentials(horizontal, bias, width)
    predicted, _ = _forward(potentials, vertical, periodic_rows)
    filtered = predicted + potentials[:, None, :]  # (H, C, N)
    backward_last = _backward(potentials[-1:], vertical[-1:], periodic_rows)[-1]  # (C, N)
    spins = 2.0 * jnp.asarray(_row_bits(width), potentials.dtype) - 1.0
    top = filtered[-1] + backward_last

    def single(key):
        key_condition, key_last, key_rows = jax.random.split(key, 3)
        condition = categorical(key_condition, logsumexp(top, axis=-1))
        last = categorical(key_last, top[condition])

        def step(following, inputs):
            filtered_row, vertical_row, key_row = inputs
            logits = filtered_row[condition] + spins @ (vertical_row * spins[following])
            state = categorical(key_row, logits)
            return state, state

        keys = jax.random.split(key_rows, filtered.shape[0] - 1)
        _, states = jax.lax.scan(step, last, (filtered[:-1], vertical[:-1], keys), reverse=True)
        return jnp.concatenate([states, last[None]])

    states = jax.vmap(single)(jax.random.split(key, num_samples))  # (num_samples, H)
    return jnp.asarray(_row_bits(width))[states]


def _parameter(owner: str, name: str, value, shape, checks: bool, expected: str, reshapes: dict):
    """A real parameter broadcast to ``shape``: a scalar, a shape of ``reshapes``, or ``len(shape)`` axes."""
    if is_concrete(value) and (checks or not hasattr(value, "shape")):
        value = check_real_array(owner, name, value, finite=checks)
    given = tuple(np.shape(value))
    if given in reshapes:
        value = jnp.reshape(jnp.asarray(value), reshapes[given])
    elif len(given) not in (0, len(shape)):
        raise ShapeError(f"{owner}: {name} has shape {given}, expected {expected}")
    try:
        return jnp.broadcast_to(jnp.asarray(value), shape)
    except ValueError:
        raise ShapeError(f"{owner}: {name} has shape {given}, expected {expected}") from None


# -- the model -------------------------------------------------------------------------------


class Ising(SequenceDistribution):
    r"""Binary spins on a ``height x width`` grid with nearest-neighbour couplings, as an exact model.

    .. math::

        p(x) \propto \exp\Bigl(\sum_{\text{bonds } (i, j)} J_{ij}\, s_i s_j + \sum_i b_i s_i\Bigr),
        \qquad s = 2x - 1,

    tokens in row-major order (``vocab_size=2``, ``length=height*width``).  Each bond (a site and
    its right or lower neighbour, wrapping when ``periodic``) is counted once; see the module
    docstring for the boundary conventions and the transfer-matrix algorithms.

    **Relation to MaM** (Liu et al. 2024, *Generative marginalization models*; code
    PrincetonLIPS/MaM, ``LatticeIsingModel``): there :math:`\log f(s) = s^\top J s + b^\top s` with
    :math:`J = \sigma A`, :math:`A` the adjacency matrix of the periodic lattice.  The quadratic form
    counts every bond twice (:math:`J_{ij}` and :math:`J_{ji}`), so MaM's :math:`\sigma` is
    ``coupling = 2 * sigma`` here: MaM's setting :math:`\sigma = 0.1, b = 0.2`, 10 x 10 periodic, is
    ``Ising(10, 10, coupling=0.2, bias=0.2)`` = :meth:`mam` (equal log-densities, checked against
    :math:`s^\top J s + b^\top s` by brute force in tests/test_ising.py).

    Parameters
    ----------
    height, width
        Grid size; rows of ``width`` sites are the transfer-matrix states (``2**width`` of them), so
        ``width`` is the expensive side: put the short side there.
    coupling
        A real number (every bond), a pair ``(horizontal, vertical)``, or an array broadcastable to
        ``(2, height, width)``:
        ``coupling[0, r, c]`` is the bond from :math:`(r, c)` to :math:`(r, c+1)`, ``coupling[1, r, c]``
        the bond to :math:`(r+1, c)`.  Entries of bonds that do not exist (the last column / row
        without ``periodic``, axes of size 1) are ignored.  Positive: ferromagnetic.
    bias
        The field :math:`b_i`: a real number, an array of shape ``(length,)`` (row-major, as MaM's
        bias vector), or an array broadcastable to ``(height, width)``.
    periodic
        Wrap both axes (a torus).  Default ``True``.
    validate_args
        ``False`` skips the checks of values (finiteness, tokens).

    Notes
    -----
    ``batch_shape`` is ``()``.  Costs per query: open boundaries :math:`O(H W 2^W)`, periodic
    :math:`O(H W 4^W)` (one pass per first-row state, run together); ``conditional_logits`` is one
    forward-backward pass for all :math:`HW` sites; ``sample`` :math:`O(H W 2^W)` per draw after one
    forward pass.  Exact in float64 (brute-force tests at 1e-10).
    """

    pytree_data_fields = ("horizontal", "vertical", "bias")
    pytree_aux_fields = ("height", "width", "periodic")

    def __init__(self, height: int, width: int, coupling, bias=0.0, periodic: bool = True, *,
                 validate_args=None):
        owner = "Ising"
        height = check_int(owner, "height", height, minimum=1)
        width = check_int(owner, "width", width, minimum=1)
        periodic = check_bool(owner, "periodic", periodic)
        states = 2.0 ** min(width, 1000)  # a float: no huge integers for absurd widths
        check_memory(owner, f"the 2^{width} x 2^{width} transfer matrix of width={width}", (states, states),
                     itemsize=8, fix=_WIDTH_FIX)
        check_memory(owner, f"the messages of {height} rows of width {width}",
                     (height, states, states if periodic and height > 1 else 1.0), itemsize=8, fix=_WIDTH_FIX)
        checks = validate_args is not False
        coupling = _parameter(owner, "coupling", coupling, (2, height, width), checks,
                              "a number, (horizontal, vertical), or an array broadcastable to (2, height, width)",
                              {(2,): (2, 1, 1)})
        bias = _parameter(owner, "bias", bias, (height, width), checks,
                          f"a number, an array of shape (length,) = ({height * width},) in row-major order, "
                          "or an array broadcastable to (height, width)", {(height * width,): (height, width)})
        arrays = {"coupling": coupling, "bias": bias}
        dtype = jnp.result_type(arrays["coupling"], arrays["bias"], float)
        coupling, bias = arrays["coupling"].astype(dtype), arrays["bias"].astype(dtype)
        rows, columns = np.indices((height, width))
        has_right = (columns < width - 1) | (periodic and width > 1)
        has_down = (rows < height - 1) | (periodic and height > 1)
        self.horizontal = jnp.where(jnp.asarray(has_right), coupling[0], 0.0)
        self.vertical = jnp.where(jnp.asarray(has_down), coupling[1], 0.0)
        self.bias = bias
        self.height, self.width, self.periodic = height, width, periodic
        super().__init__(2, height * width, (), validate_args=validate_args)

    @classmethod
    def mam(cls, height: int = 10, width: int = 10, sigma: float = 0.1, bias: float = 0.2) -> Ising:
        r"""The lattice Ising target of MaM: :math:`\log f(s) = \sigma\, s^\top A s + b \sum_i s_i`, periodic.

        ``Ising(height, width, coupling=2 * sigma, bias=bias, periodic=True)``; the defaults are MaM's
        experiment (``mam/config/config_ising_eb.yaml``: ``sigma: 0.1, bias: 0.2, dim: 10``).  For sides
        of at least 3, where the periodic lattice is a simple graph, :math:`A` is its adjacency matrix.
        """
        sigma = check_real("Ising.mam", "sigma", sigma)
        bias = check_real("Ising.mam", "bias", bias)
        return cls(height, width, coupling=2.0 * sigma, bias=bias, periodic=True)

    def __repr__(self):
        return f"Ising(height={self.height}, width={self.width}, periodic={self.periodic})"

    # -- helpers -----------------------------------------------------------------------------
    @property
    def _periodic_rows(self) -> bool:
        return self.periodic and self.height > 1

    def _kernel_args(self):
        return dict(width=self.width, periodic_rows=self._periodic_rows)

    def _grid(self, array):
        return jnp.reshape(array, jnp.shape(array)[:-1] + (self.height, self.width))

    def _check_cost(self, owner: str, batch_shape, messages: int):
        count = float(np.prod(batch_shape)) if batch_shape else 1.0
        conditions = 2.0**self.width if self._periodic_rows else 1.0
        check_memory(owner, f"{messages} message table(s) of {self.height} x {conditions:,.0f} x "
                     f"{2**self.width:,} per query for {count:,.0f} queries",
                     (count, messages, self.height, conditions, 2.0**self.width), itemsize=8,
                     fix="query in smaller batches, or use a narrower grid")
        check_work(owner, "the transfer-matrix passes", count * messages * self.height * self.width
                   * conditions * 2.0**self.width, fix="query in smaller batches, or use a narrower grid")

    # -- protocol ----------------------------------------------------------------------------
    def unnormalized_log_prob(self, value):
        r""":math:`\sum_{\text{bonds}} J_{ij} s_i s_j + \sum_i b_i s_i` of tokens ``(..., L)`` (no :math:`\log Z`)."""
        value, _ = self._off_support(self._check_clean(value, "value"))
        spins = 2.0 * self._grid(value).astype(self.bias.dtype) - 1.0
        right = jnp.roll(spins, -1, axis=-1)
        down = jnp.roll(spins, -1, axis=-2)
        terms = self.horizontal * spins * right + self.vertical * spins * down + self.bias * spins
        return jnp.sum(terms, axis=(-2, -1))

    def log_partition(self):
        r""":math:`\log Z` by the transfer matrix (module docstring), a float scalar."""
        self._check_cost("Ising.log_partition", (), 1)
        return ising_log_partition(self.horizontal, self.vertical, self.bias, **self._kernel_args())

    def log_prob(self, value):
        r""":math:`\log p(x)` = :meth:`unnormalized_log_prob` minus :meth:`log_partition`, shape ``(...)``."""
        value, outside = self._off_support(self._check_clean(value, "value"))
        log_p = self.unnormalized_log_prob(value) - self.log_partition()
        return jnp.where(outside, -jnp.inf, log_p)

    def marginal_log_prob(self, x, observed):
        r""":math:`\log p(x_S)`: the transfer-matrix pass with each row's sites outside :math:`S` summed out."""
        x, observed = self._check_partial(x, observed)
        batch = np.broadcast_shapes(np.shape(x)[:-1], np.shape(observed)[:-1])
        self._check_cost("Ising.marginal_log_prob", batch, 1)
        return ising_marginal_log_prob(self.horizontal, self.vertical, self.bias, self._grid(x),
                                       self._grid(observed), **self._kernel_args())

    def conditional_logits(self, x, observed):
        r""":math:`\log p(x_i = v \mid x_{S \setminus \{i\}})` for all sites at once, shape ``(..., L, 2)``.

        One forward-backward pass with the evidence of :math:`S` (module docstring).  Uniform where
        the context has probability zero.
        """
        x, observed = self._check_partial(x, observed)
        batch = np.broadcast_shapes(np.shape(x)[:-1], np.shape(observed)[:-1])
        self._check_cost("Ising.conditional_logits", batch, 3)
        logits = ising_conditional_logits(self.horizontal, self.vertical, self.bias, self._grid(x),
                                          self._grid(observed), **self._kernel_args())
        return logits.reshape(logits.shape[:-3] + (self.length, 2))

    def sample(self, key, sample_shape=()):
        r"""Exact i.i.d. draws, int32 ``sample_shape + (L,)``: forward filtering, backward sampling over rows.

        Gumbel-max draws (:func:`~arprob._random.categorical`) in the parameters' dtype: exact up to
        float rounding in float64.  Cost :math:`O(H W 2^W)` per draw after one forward pass.
        """
        key, sample_shape = self._check_sample_args(key, sample_shape)
        count = int(np.prod(sample_shape)) if sample_shape else 1
        self._check_cost("Ising.sample", (), 1)
        check_work("Ising.sample", f"drawing {count:,} grids", float(count) * self.height * self.width
                   * 2.0**self.width, fix="draw in batches")
        tokens = ising_sample(key, self.horizontal, self.vertical, self.bias, num_samples=count,
                              **self._kernel_args())
        return tokens.reshape(tuple(sample_shape) + (self.length,))

    def _law_from_sequences(self, sequences):
        """Brute force in numpy float64: every sequence's energy, normalised (independent of the transfer matrix)."""
        spins = 2.0 * np.asarray(sequences, np.float64).reshape(-1, self.height, self.width) - 1.0
        horizontal, vertical, bias = (np.asarray(a, np.float64) for a in (self.horizontal, self.vertical, self.bias))
        energy = np.sum(horizontal * spins * np.roll(spins, -1, axis=2) + vertical * spins * np.roll(spins, -1, axis=1)
                        + bias * spins, axis=(1, 2))
        weights = np.exp(energy - energy.max())
        return weights / weights.sum()
