r"""Hypothesis strategies for arprob's exact models and conditional families.

Use them to property-test your own samplers and networks against exact
ground truth::

    from hypothesis import given, settings, strategies as st
    from arprob.testing import strategies as ars

    @settings(deadline=None)
    @given(st.data())
    def test_my_sampler_is_exact(data):
        model = data.draw(ars.models())
        order = data.draw(ars.orders(model.length))
        ...

Every strategy keeps shapes small by default (vocabulary :math:`V \le 4`,
length :math:`L \le 4`, at most 256 sequences), so that exact laws can be
enumerated and JAX compiles few distinct shapes.  Probabilities are drawn as
bounded floats and normalized, optionally sharpened by a power so that some
laws are peaked; this keeps every draw shrinkable towards a simple (near
uniform) law.  By default every probability is strictly positive; pass
``allow_zeros=True`` to get exact zeros as well (zero rows become uniform).

Arguments named ``vocab_size``, ``length`` and ``context_size`` accept
``None`` (draw from the default range), an ``int``, or a strategy of ints.

hypothesis is a ``test`` extra: ``import arprob`` never imports it, only
``import arprob.testing`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra.numpy import arrays

from arprob import conditionals as _conditionals
from arprob.distributions import MarkovChain, NGram, TabularJoint
from arprob.distributions.chain import reachable_windows

__all__ = [
    "MAX_TABLE_SIZE",
    "conditionals",
    "lengths",
    "markov_chains",
    "models",
    "ngrams",
    "observed_masks",
    "orders",
    "sequences",
    "tabular_joints",
    "vocab_sizes",
]

#: Largest number of sequences ``V**L`` that :func:`tabular_joints` draws by default.
MAX_TABLE_SIZE = 256

# Raw weights are drawn in [_LOWEST_WEIGHT, 1] and raised to a sharpness power:
# power 16 turns the range into [0.05**16, 1] ~ [1.5e-21, 1], a strongly peaked
# law whose smallest cells are still far above float64 underflow (~1e-308).
_LOWEST_WEIGHT = 0.05
_SHARPNESS = (1.0, 4.0, 16.0)
# Values that the rows of unreachable n-gram contexts may hold (never used).
_GARBAGE = (float("nan"), 0.0, -1.0, float("inf"))


def vocab_sizes(min_value: int = 2, max_value: int = 4) -> st.SearchStrategy[int]:
    """Vocabulary sizes :math:`V` in ``[min_value, max_value]``.

    Parameters
    ----------
    min_value, max_value
        Inclusive bounds; ``min_value`` must be at least 2 (a one-token
        vocabulary has no randomness to test).

    Returns
    -------
    SearchStrategy[int]
        Shrinks towards ``min_value``.
    """
    if min_value < 2 or max_value < min_value:
        raise InvalidArgument(f"vocab_sizes: need 2 <= min_value <= max_value, got {min_value}, {max_value}")
    return st.integers(min_value=min_value, max_value=max_value)


def lengths(min_value: int = 1, max_value: int = 4) -> st.SearchStrategy[int]:
    """Sequence lengths :math:`L` in ``[min_value, max_value]``.

    Parameters
    ----------
    min_value, max_value
        Inclusive bounds, ``1 <= min_value <= max_value``.

    Returns
    -------
    SearchStrategy[int]
        Shrinks towards ``min_value``.
    """
    if min_value < 1 or max_value < min_value:
        raise InvalidArgument(f"lengths: need 1 <= min_value <= max_value, got {min_value}, {max_value}")
    return st.integers(min_value=min_value, max_value=max_value)


def _resolve(draw, owner: str, name: str, value, default: st.SearchStrategy[int], minimum: int) -> int:
    """Draw ``value`` if it is a strategy, ``default`` if it is None, else check the int."""
    if value is None:
        return draw(default)
    if isinstance(value, st.SearchStrategy):
        drawn = draw(value)
    else:
        drawn = value
    if isinstance(drawn, bool) or not isinstance(drawn, (int, np.integer)) or drawn < minimum:
        raise InvalidArgument(f"{owner}: {name} must be an int >= {minimum}, got {drawn!r}")
    return int(drawn)


def _distributions(draw, shape: tuple[int, ...], num_axes: int, allow_zeros: bool) -> np.ndarray:
    """Float64 probabilities of ``shape``, each block of trailing ``num_axes`` axes summing to one."""
    positive = st.floats(min_value=_LOWEST_WEIGHT, max_value=1.0, allow_nan=False, allow_infinity=False)
    elements = st.one_of(st.just(0.0), positive) if allow_zeros else positive
    raw = draw(arrays(np.float64, shape, elements=elements, fill=st.nothing()))
    sharpness = draw(st.sampled_from(_SHARPNESS))
    weights = raw**sharpness
    axes = tuple(range(len(shape) - num_axes, len(shape)))
    total = weights.sum(axis=axes, keepdims=True)
    size = int(np.prod(shape[len(shape) - num_axes :]))
    # a block drawn entirely zero (only possible with allow_zeros) becomes uniform
    return np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / size)


@st.composite
def tabular_joints(
    draw,
    vocab_size: int | st.SearchStrategy[int] | None = None,
    length: int | st.SearchStrategy[int] | None = None,
    *,
    allow_zeros: bool = False,
    batch_shape: Sequence[int] = (),
    max_size: int = MAX_TABLE_SIZE,
) -> TabularJoint:
    r"""Arbitrary joints :math:`p(x_0, \dots, x_{L-1})` as :class:`~arprob.TabularJoint`.

    Each of the :math:`V^L` cells gets a float weight in ``[0.05, 1]``, raised
    to a drawn power in ``{1, 4, 16}`` (the larger powers give peaked laws with
    cells down to about ``1e-21``) and normalized.

    Parameters
    ----------
    vocab_size
        :math:`V`: ``None`` (drawn by :func:`vocab_sizes`), an int or a strategy.
    length
        :math:`L`: ``None`` (drawn by :func:`lengths`), an int or a strategy.
    allow_zeros
        If True, cells may be exactly zero (a table drawn all zero becomes
        uniform).  Default False: every sequence has positive probability.
    batch_shape
        Leading batch axes of the table (``TabularJoint(..., length=L)``).
    max_size
        Draws with ``V**L > max_size`` are rejected (``assume``), so that laws
        stay cheap to enumerate.

    Returns
    -------
    SearchStrategy[TabularJoint]
    """
    vocab = _resolve(draw, "tabular_joints", "vocab_size", vocab_size, vocab_sizes(), 2)
    size = _resolve(draw, "tabular_joints", "length", length, lengths(), 1)
    both_fixed = isinstance(vocab_size, (int, np.integer)) and isinstance(length, (int, np.integer))
    if both_fixed and vocab**size > max_size:
        raise InvalidArgument(
            f"tabular_joints: vocab_size={vocab} and length={size} give {vocab**size} sequences, "
            f"more than max_size={max_size}; pass a larger max_size or smaller shapes"
        )
    assume(vocab**size <= max_size)
    batch_shape = tuple(batch_shape)
    event = (vocab,) * size
    probs = _distributions(draw, batch_shape + event, size, allow_zeros)
    return TabularJoint(probs, length=size)


@st.composite
def markov_chains(
    draw,
    vocab_size: int | st.SearchStrategy[int] | None = None,
    length: int | st.SearchStrategy[int] | None = None,
    *,
    allow_zeros: bool = False,
    batch_shape: Sequence[int] = (),
) -> MarkovChain:
    r"""First-order :class:`~arprob.MarkovChain` models.

    The initial law :math:`\pi` and every row of the transition matrix
    :math:`P` are drawn like the cells of :func:`tabular_joints`.

    Parameters
    ----------
    vocab_size, length
        As in :func:`tabular_joints` (no ``V**L`` limit: chains never need
        the full table, but keep it small where the law is enumerated).
    allow_zeros
        If True, transition probabilities (and the initial law) may be exactly
        zero, which creates impossible sequences and zero-probability contexts.
    batch_shape
        Leading batch axes of both ``initial_probs`` and ``transition_probs``.

    Returns
    -------
    SearchStrategy[MarkovChain]
    """
    vocab = _resolve(draw, "markov_chains", "vocab_size", vocab_size, vocab_sizes(), 2)
    size = _resolve(draw, "markov_chains", "length", length, lengths(), 1)
    batch_shape = tuple(batch_shape)
    initial = _distributions(draw, batch_shape + (vocab,), 1, allow_zeros)
    transition = _distributions(draw, batch_shape + (vocab, vocab), 1, allow_zeros)
    return MarkovChain(initial, transition, size)


@st.composite
def ngrams(
    draw,
    vocab_size: int | st.SearchStrategy[int] | None = None,
    length: int | st.SearchStrategy[int] | None = None,
    *,
    context_sizes: Sequence[int] = (1, 2),
    allow_zeros: bool = False,
    garbage_unreachable: bool = False,
    batch_shape: Sequence[int] = (),
) -> NGram:
    r"""Finite-context next-token models :class:`~arprob.NGram`.

    Every context row ``table[c_1, ..., c_K, :]`` is drawn like the cells of
    :func:`tabular_joints`.

    Parameters
    ----------
    vocab_size, length
        As in :func:`tabular_joints`.
    context_sizes
        The context size :math:`K` is drawn from these values (first one
        preferred when shrinking).  The table has ``(V+1)**K * V`` entries.
    allow_zeros
        If True, next-token probabilities may be exactly zero.
    garbage_unreachable
        If True, the rows of contexts that can never occur (a
        beginning-of-sequence id after a real token) are filled with a drawn
        garbage value (NaN, 0, -1 or inf); the model must ignore them.
    batch_shape
        Leading batch axes of the table.

    Returns
    -------
    SearchStrategy[NGram]
    """
    context_sizes = tuple(context_sizes)
    if not context_sizes or any(int(k) < 1 for k in context_sizes):
        raise InvalidArgument(f"ngrams: context_sizes must be non-empty ints >= 1, got {context_sizes}")
    vocab = _resolve(draw, "ngrams", "vocab_size", vocab_size, vocab_sizes(), 2)
    size = _resolve(draw, "ngrams", "length", length, lengths(), 1)
    context_size = int(draw(st.sampled_from(context_sizes)))
    batch_shape = tuple(batch_shape)
    num_windows = (vocab + 1) ** context_size
    flat = _distributions(draw, batch_shape + (num_windows, vocab), 1, allow_zeros)
    if garbage_unreachable:
        garbage = draw(st.sampled_from(_GARBAGE))
        unreachable = ~reachable_windows(vocab, context_size)
        flat = np.where(unreachable[:, None], garbage, flat)
    table = flat.reshape(batch_shape + (vocab + 1,) * context_size + (vocab,))
    return NGram(table, size, context_size=context_size)


def models(
    vocab_size: int | st.SearchStrategy[int] | None = None,
    length: int | st.SearchStrategy[int] | None = None,
    *,
    allow_zeros: bool = False,
) -> st.SearchStrategy[TabularJoint | MarkovChain | NGram]:
    """Any exact arprob model: one of :func:`tabular_joints`, :func:`markov_chains`, :func:`ngrams`.

    Parameters
    ----------
    vocab_size, length
        As in :func:`tabular_joints`; a strategy is drawn from independently
        by each kind of model.
    allow_zeros
        Passed to every model strategy.

    Returns
    -------
    SearchStrategy
        Unbatched models (``batch_shape == ()``).  Shrinks towards
        :class:`~arprob.TabularJoint`.
    """
    return st.one_of(
        tabular_joints(vocab_size, length, allow_zeros=allow_zeros),
        markov_chains(vocab_size, length, allow_zeros=allow_zeros),
        ngrams(vocab_size, length, allow_zeros=allow_zeros),
    )


@st.composite
def conditionals(
    draw,
    vocab_size: int | st.SearchStrategy[int] | None = None,
    length: int | st.SearchStrategy[int] | None = None,
    *,
    max_scale: float = 2.0,
    allow_zeros: bool = False,
    base: st.SearchStrategy | None = None,
):
    r"""Conditional families: exact ones, and :func:`arprob.conditionals.perturbed` ones.

    The family is either ``arprob.conditionals.exact(model)`` for a model drawn
    by :func:`models` (consistent: the conditionals of one joint), or
    ``arprob.conditionals.perturbed(model, jax.random.key(seed), scale)``
    with a drawn 32-bit ``seed`` and ``scale`` in ``[0, max_scale]``
    (inconsistent for ``scale > 0``, like an imperfect trained network).

    Parameters
    ----------
    vocab_size, length
        As in :func:`models`.
    max_scale
        Largest standard deviation of the logit noise of perturbed families.
    allow_zeros
        Passed to :func:`models`.
    base
        A strategy of models to build the families on, instead of
        ``models(vocab_size, length, allow_zeros=allow_zeros)`` (for example
        ``tabular_joints()`` only); ``vocab_size``, ``length`` and
        ``allow_zeros`` are then ignored.

    Returns
    -------
    SearchStrategy[Conditionals]
        Shrinks towards exact families.
    """
    if not max_scale >= 0:
        raise InvalidArgument(f"conditionals: max_scale must be >= 0, got {max_scale}")
    if base is None:
        base = models(vocab_size, length, allow_zeros=allow_zeros)
    model = draw(base)
    if not draw(st.booleans()):
        return _conditionals.exact(model)
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    scale = draw(st.floats(min_value=0.0, max_value=max_scale, allow_nan=False, allow_infinity=False))
    return _conditionals.perturbed(model, jax.random.key(seed), scale)


def orders(length: int) -> st.SearchStrategy[np.ndarray]:
    """Generation orders: permutations of ``range(length)`` as int32 arrays.

    Parameters
    ----------
    length
        :math:`L`.

    Returns
    -------
    SearchStrategy[numpy.ndarray]
        Shape ``(length,)``; shrinks towards the left-to-right order.
    """
    return st.permutations(list(range(int(length)))).map(lambda order: np.asarray(order, dtype=np.int32))


def observed_masks(length: int, *, batch_shape: Sequence[int] = ()) -> st.SearchStrategy[np.ndarray]:
    """Boolean masks of observed positions (``True`` = observed).

    Parameters
    ----------
    length
        :math:`L`.
    batch_shape
        Leading axes; the mask has shape ``batch_shape + (length,)``.

    Returns
    -------
    SearchStrategy[numpy.ndarray]
        dtype ``bool``; shrinks towards all-unobserved.
    """
    return arrays(np.bool_, tuple(batch_shape) + (int(length),), elements=st.booleans(), fill=st.nothing())


def sequences(vocab_size: int, length: int, *, batch_shape: Sequence[int] = ()) -> st.SearchStrategy[np.ndarray]:
    """Clean token sequences with every token in ``[0, vocab_size)``.

    Parameters
    ----------
    vocab_size, length
        :math:`V` and :math:`L`.
    batch_shape
        Leading axes; the array has shape ``batch_shape + (length,)``.

    Returns
    -------
    SearchStrategy[numpy.ndarray]
        dtype ``int32``; shrinks towards all-zero sequences.  Combine with
        :func:`observed_masks` and ``numpy.where(observed, x, vocab_size)`` for
        partially masked sequences.
    """
    elements = st.integers(min_value=0, max_value=int(vocab_size) - 1)
    return arrays(np.int32, tuple(batch_shape) + (int(length),), elements=elements, fill=st.nothing())
