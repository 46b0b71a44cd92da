r"""The any-subset conditional protocol: the spine every sampler is written against.

A *conditional family* answers, for a batch of partially observed sequences,

.. math::

    \mathrm{logits}[\dots, i, v] = \log q(x_i = v \mid x_j,\ j \in S \setminus \{i\}),
    \qquad S = \{j : \mathrm{observed}_j\},

for every position :math:`i` at once: exactly what a masked-diffusion or
any-order network computes in one forward pass.  Exact models compute it by
summation or forward-backward (:func:`exact`); :func:`perturbed` makes a
controlled, *inconsistent* family from a consistent one, so that order
dependence and sampler errors can be studied exactly.

Values of ``x`` at unobserved positions are ignored; they may hold the mask
token id ``vocab_size``.

A family is *consistent* when some joint :math:`p` has all its answers as
conditionals; then ancestral sampling in every order draws from :math:`p`
(``proofs/01-chain-rule-any-order.md``).

On small spaces a family is a finite function: :func:`tabulate` stores its answer
to each of the :math:`(V+1)^L` masked inputs (mask id :math:`V` at unobserved
positions) and answers later queries by one gather, reproducing the family's
outputs exactly.  :func:`as_conditionals`, the entry point of every sampler,
does this automatically for concrete pytree families of at most
:data:`TABULATE_MAX_ENTRIES` table entries, and caches the table per object.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from arprob._validation import check_key, check_real, check_table_size, is_concrete
from arprob.errors import ArprobTypeError, IncompatibleError, InvalidProbabilityError, ShapeError

__all__ = ["TABULATE_MAX_ENTRIES", "Conditionals", "ExactConditionals", "NeuralConditionals",
           "PerturbedConditionals", "TabulatedConditionals", "as_conditionals", "exact", "neural", "perturbed",
           "tabulate"]

#: Largest table, in entries :math:`(V+1)^L \cdot L \cdot V`, that :func:`as_conditionals` builds
#: by itself: ``2**22`` entries are 32 MiB in float64 (16 MiB in float32), built with
#: :math:`(V+1)^L` family evaluations; e.g. :math:`V = 3, L = 8` (1.6 M entries) or
#: :math:`V = 2, L = 10` (1.2 M) qualify, :math:`V = 4, L = 8` (12.5 M) does not.
TABULATE_MAX_ENTRIES = 2**22

# Inputs per family call while building a table (the last chunk is padded, so one compilation serves all).
_TABULATE_CHUNK = 4096


@runtime_checkable
class Conditionals(Protocol):
    """Anything with ``vocab_size``, ``length`` and ``__call__(x, observed) -> (..., L, V)``."""

    vocab_size: int
    length: int

    def __call__(self, x, observed):  # pragma: no cover - protocol signature
        ...


@register_pytree_node_class
class ExactConditionals:
    """The exact conditionals of a model: ``model.conditional_logits`` as a family.

    A pytree, so it can be passed through ``jax.jit`` as an ordinary argument.  With a
    ``table`` (from :func:`tabulate`) it answers by one gather from the table of
    ``model.conditional_logits`` on every masked input, the same values.
    """

    def __init__(self, model, table=None):
        if getattr(model, "batch_shape", ()) != ():
            raise ArprobTypeError(
                f"exact: the model has batch_shape {model.batch_shape}, expected () "
                "(a conditional family describes one model; index the batch first)"
            )
        self.model = model
        self.table = table

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def length(self) -> int:
        return self.model.length

    def __call__(self, x, observed):
        if self.table is not None:
            return lookup(self.table, x, observed, self.vocab_size, self.length)
        return self.model.conditional_logits(x, observed)

    def tree_flatten(self):
        return (self.model, self.table), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        instance = cls.__new__(cls)
        instance.model, instance.table = children
        return instance

    def __repr__(self):
        return f"exact({self.model!r})" if self.table is None else f"tabulate(exact({self.model!r}))"


def masked_index(x, observed, vocab_size: int, length: int):
    r"""Row of a masked input in a :func:`tabulate` table: the base-:math:`(V+1)` digits of ``where(observed, x, V)``.

    Position 0 is the most significant digit; shape: the broadcast batch shape of ``x`` and ``observed``.
    """
    digits = jnp.where(jnp.asarray(observed, bool), jnp.asarray(x), vocab_size).astype(jnp.int32)
    powers = jnp.asarray((vocab_size + 1) ** np.arange(length - 1, -1, -1), jnp.int32)
    return jnp.sum(digits * powers, axis=-1)


def lookup(table, x, observed, vocab_size: int, length: int):
    """``table[masked_index(x, observed)]``: the tabulated answer, shape ``(..., L, V)``."""
    return table[masked_index(x, observed, vocab_size, length)]


@register_pytree_node_class
class TabulatedConditionals:
    r"""A conditional family answered from a table of its answers to every masked input.

    ``table[k]`` (shape ``(L, V)``) is ``source(x, observed)`` for the input whose base-:math:`(V+1)`
    digits are ``k`` (:func:`masked_index`; digit :math:`V` = unobserved).  The full ``(L, V)``
    answer is stored per input (row :math:`i` included when :math:`i` is observed), so the table
    is a memo of the family: it reproduces every output as the family computes it under ``jit``
    (op-by-op eager evaluation may differ from that in the last bit).  Build it with :func:`tabulate`.
    """

    def __init__(self, source, table):
        self.source = source
        self.table = table

    @property
    def vocab_size(self) -> int:
        return self.source.vocab_size

    @property
    def length(self) -> int:
        return self.source.length

    def __call__(self, x, observed):
        return lookup(self.table, x, observed, self.vocab_size, self.length)

    def tree_flatten(self):
        return (self.source, self.table), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self):
        return f"tabulate({self.source!r})"


def tabulated_entries(vocab_size: int, length: int) -> int:
    r"""Entries of a :func:`tabulate` table, :math:`(V+1)^L L V` (the exponent checked first, no huge ints)."""
    if length * np.log2(vocab_size + 1) > 62:
        return 2**62
    return (vocab_size + 1) ** length * length * vocab_size


@partial(jax.jit, static_argnames=("static",))
def _answers(dynamic, static, tokens, observed):
    return join_static(dynamic, static)(tokens, observed)


def _build_table(family):
    vocab_size, length = family.vocab_size, family.length
    size = (vocab_size + 1) ** length
    chunk = min(size, _TABULATE_CHUNK)
    digits = np.arange(-(-size // chunk) * chunk, dtype=np.int64) % size  # padded with repeats
    powers = (vocab_size + 1) ** np.arange(length - 1, -1, -1, dtype=np.int64)
    tokens = ((digits[:, None] // powers) % (vocab_size + 1)).astype(np.int32)
    observed = tokens < vocab_size
    dynamic, static = split_static(family)
    with jax.ensure_compile_time_eval():  # evaluate now, also when asked inside a trace
        blocks = [_answers(dynamic, static, jnp.asarray(tokens[start : start + chunk]),
                           jnp.asarray(observed[start : start + chunk]))
                  for start in range(0, tokens.shape[0], chunk)]
        return jnp.concatenate(blocks, axis=0)[:size]


def tabulate(family, *, max_entries: int | None = None):
    r"""The family as a table of its answers to all :math:`(V+1)^L` masked inputs (exact memo).

    Parameters
    ----------
    family
        A conditional family or an exact model, with concrete parameters.
    max_entries
        Refuse tables over this many entries :math:`(V+1)^L L V` (default
        :data:`~arprob._validation.MAX_TABLE_ENTRIES`).

    Returns
    -------
    A pytree family that answers ``family(x, observed)`` by one gather: an
    :class:`ExactConditionals` with a table for exact models (so ``.model`` stays available),
    a :class:`TabulatedConditionals` otherwise.  Costs :math:`(V+1)^L` evaluations once, in
    chunks of 4096 inputs.

    Raises
    ------
    EnumerationTooLargeError
        If the table is too large.
    """
    owner = "tabulate"
    family = _as_family(family, owner, "family")
    if isinstance(family, TabulatedConditionals) or (isinstance(family, ExactConditionals)
                                                     and family.table is not None):
        return family
    if not is_concrete(family):
        raise ArprobTypeError(f"{owner}: the family's parameters are traced; tabulate outside jit "
                              "(or call the family directly)")
    vocab_size, length = family.vocab_size, family.length
    check_table_size(owner, "the table of answers", ((vocab_size + 1,) * length) + (length, vocab_size),
                     max_entries=max_entries,
                     fix="call the family directly (tabulation pays off only on small spaces)")
    _probe(owner, "family", family, family)
    table = _build_table(family)
    _check_table(owner, "family", family, family, table)
    if isinstance(family, ExactConditionals):
        return ExactConditionals(family.model, table)
    return TabulatedConditionals(family, table)


# Tables built by as_conditionals, by id of the user's object; an entry dies with its object.
_TABLES: dict[int, tuple[weakref.ref, jax.Array]] = {}


def _cached_table(owner_object, family):
    key = id(owner_object)
    entry = _TABLES.get(key)
    if entry is not None and entry[0]() is owner_object:
        return entry[1]
    table = _build_table(family)

    def forget(reference, key=key):
        if _TABLES.get(key, (None,))[0] is reference:
            del _TABLES[key]

    try:
        _TABLES[key] = (weakref.ref(owner_object, forget), table)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return table


def _auto_tabulate(obj, family):
    """``family`` tabulated when it is a small, concrete pytree family; else ``family``."""
    if isinstance(family, TabulatedConditionals) or getattr(family, "table", None) is not None:
        return family
    if split_static(family)[1] is not None or not is_concrete(family):
        return family
    if tabulated_entries(family.vocab_size, family.length) > TABULATE_MAX_ENTRIES:
        return family
    owner_object = family.model if isinstance(obj, ExactConditionals) else obj
    table = _cached_table(owner_object, family)
    if isinstance(family, ExactConditionals):
        return ExactConditionals(family.model, table)
    return TabulatedConditionals(family, table)


def exact(model) -> ExactConditionals:
    """The exact any-subset conditionals of an arprob model (no batch shape)."""
    if not hasattr(model, "conditional_logits"):
        raise ArprobTypeError(
            f"exact: expected an arprob model with conditional_logits (TabularJoint, "
            f"MarkovChain, NGram, ...), got {type(model).__name__}"
        )
    return ExactConditionals(model)


def _as_family(obj, owner: str, name: str = "conditionals"):
    if hasattr(obj, "conditional_logits"):
        return exact(obj)
    if isinstance(obj, Conditionals) and not isinstance(obj, type):
        for attribute in ("vocab_size", "length"):
            value = getattr(obj, attribute)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ArprobTypeError(
                    f"{owner}: {name}.{attribute} is {value!r}, expected a positive int "
                    "(a conditional family declares its vocabulary size and sequence length)"
                )
        return obj
    raise ArprobTypeError(
        f"{owner}: {name}: expected a conditional family (vocab_size, length, __call__(x, observed)) "
        f"or an exact model such as MarkovChain, got {type(obj).__name__} ({obj!r:.40})"
    )


def as_conditionals(obj, owner: str = "arprob", name: str = "conditionals") -> Conditionals:
    """Accept a conditional family or an exact model (converted with :func:`exact`).

    A concrete pytree family (every arprob family) with at most :data:`TABULATE_MAX_ENTRIES`
    table entries is returned tabulated (:func:`tabulate`: same answers, one gather per call),
    its table built once per object and cached while the object lives.  Families that are not
    pytrees (plain callables) and traced families are returned as they are.

    Every concrete family is checked once per object before use (``owner`` and ``name`` name the
    function and argument in the error): its answer to the all-masked input must have shape
    ``(1, L, V)`` and be a proper log-weight vector at every position (no NaN or ``+inf``, not
    all ``-inf``); a tabulated family is checked on its whole table, naming the first bad input
    and position.  Families answering NaN only on inputs that are neither tabulated nor the
    all-masked probe are not caught here.
    """
    family = _as_family(obj, owner, name)
    _probe(owner, name, obj, family)
    family = _auto_tabulate(obj, family)
    table = getattr(family, "table", None)
    if table is not None and is_concrete(table):
        _check_table(owner, name, obj, family, table)
    return family


# ids of user objects whose answers were checked; an entry dies with its object
_CHECKED: dict[int, weakref.ref] = {}


def _remember(obj, what: str) -> bool:
    """True when ``obj`` was already checked for ``what``; otherwise record it and return False."""
    key = (id(obj), what)
    reference = _CHECKED.get(key)
    if reference is not None and reference() is obj:
        return True
    try:
        _CHECKED[key] = weakref.ref(obj, lambda _, key=key: _CHECKED.pop(key, None))
    except TypeError:  # not weak-referenceable: not remembered, so checked again on every use
        return False
    return False


def _describe_family(obj) -> str:
    return type(obj).__name__


def _check_answers(owner: str, name: str, obj, answers: np.ndarray, where) -> None:
    """Raise if ``answers`` (..., L, V) holds NaN or +inf, or an all -inf row; ``where(index)`` names an input."""
    bad_value = np.isnan(answers) | (answers == np.inf)
    if bad_value.any():
        index = tuple(int(i) for i in np.argwhere(bad_value)[0])
        raise InvalidProbabilityError(
            f"{owner}: {name} ({_describe_family(obj)}) answered {answers[index]} at position {index[-2]}, "
            f"token {index[-1]}, {where(index[0])}; expected real logits (-inf allowed for impossible "
            "tokens), so no sampler can turn NaN into a token (fix the family's computation)"
        )
    dead = np.all(answers == -np.inf, axis=-1)
    if dead.any():
        index = tuple(int(i) for i in np.argwhere(dead)[0])
        raise InvalidProbabilityError(
            f"{owner}: {name} ({_describe_family(obj)}) answered -inf for every token at position "
            f"{index[-1]}, {where(index[0])}; expected at least one possible token per position "
            "(a family must give a distribution at every position, observed or not)"
        )


def _probe(owner: str, name: str, obj, family) -> None:
    """Check the family's answer to one all-masked input (shape and values), once per object."""
    if not is_concrete(family) or isinstance(family, ExactConditionals):
        return  # exact models are validated when built
    if _remember(obj, "probe"):
        return
    vocab_size, length = family.vocab_size, family.length
    tokens = jnp.full((1, length), vocab_size, jnp.int32)
    observed = jnp.zeros((1, length), bool)
    try:
        dynamic, static = split_static(family)
        answer = _answers(dynamic, static, tokens, observed)
    except Exception as error:
        _CHECKED.pop((id(obj), "probe"), None)
        raise ArprobTypeError(
            f"{owner}: calling {name} ({_describe_family(obj)}) on the all-masked input (tokens of shape "
            f"(1, {length}) holding the mask id {vocab_size}, observed all False) failed with "
            f"{type(error).__name__}: {str(error)[:200]}; a family must accept (..., L) int tokens and a bool "
            "mask and return (..., L, V) logits"
        ) from error
    shape = tuple(np.shape(answer))
    if shape != (1, length, vocab_size):
        _CHECKED.pop((id(obj), "probe"), None)
        raise ShapeError(
            f"{owner}: {name} ({_describe_family(obj)}) answered shape {shape} for tokens of shape (1, {length}); "
            f"expected (1, {length}, {vocab_size}) = (batch, length, vocab_size): one logit per token of "
            "the vocabulary at every position (no logit for the mask id)"
        )
    try:
        _check_answers(owner, name, obj, np.asarray(answer, np.float64),
                       lambda _: "given the all-masked input")
    except InvalidProbabilityError:
        _CHECKED.pop((id(obj), "probe"), None)
        raise


def _check_table(owner: str, name: str, obj, family, table) -> None:
    """Check a tabulated family's whole table once per object, naming the first bad masked input."""
    if _remember(obj, "table"):
        return
    vocab_size, length = family.vocab_size, family.length

    def where(row: int) -> str:
        digits = [(row // (vocab_size + 1) ** (length - 1 - i)) % (vocab_size + 1) for i in range(length)]
        shown = ["_" if d == vocab_size else str(d) for d in digits]
        return f"given the context [{' '.join(shown)}] (_ = masked)"

    try:
        _check_answers(owner, name, obj, np.asarray(table, np.float64), where)
    except InvalidProbabilityError:
        _CHECKED.pop((id(obj), "table"), None)
        raise


def check_compatible(owner: str, first, second, first_name="sampler", second_name="target"):
    """Raise :class:`IncompatibleError` if vocabularies or lengths differ."""
    for attribute in ("vocab_size", "length"):
        a, b = getattr(first, attribute), getattr(second, attribute)
        if a != b:
            raise IncompatibleError(
                f"{owner}: {first_name} has {attribute}={a} but {second_name} has {attribute}={b}; "
                "they must describe the same sequence space"
            )


def split_static(family):
    """Split a family into ``(dynamic, static)`` for ``jax.jit``.

    Families that are pytrees of arrays (every arprob family) travel as dynamic
    arguments, so one compilation serves every parameter value; any other
    callable is passed as a static argument (hashed by identity).
    """
    leaves = jax.tree_util.tree_leaves(family)
    if all(isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)) for leaf in leaves) and not (
        len(leaves) == 1 and leaves[0] is family
    ):
        return family, None
    return None, family


def join_static(dynamic, static):
    """Inverse of :func:`split_static`."""
    return static if static is not None else dynamic


@partial(jax.jit, static_argnames=("static",))
def normalized_logits(dynamic, static, tokens, observed):
    """``log_softmax`` of a split family's answer (jitted once per family type and shapes)."""
    return jax.nn.log_softmax(join_static(dynamic, static)(tokens, observed), axis=-1)


# The context code folds base-(V+1) digits into the key in chunks small enough
# to be exact in int32, so distinct contexts always get distinct noise.
def _chunk_size(vocab_size: int) -> int:
    return max(1, int(np.floor(31 / np.log2(vocab_size + 1))))


def masked_input_noise(key_data, digits, vocab_size: int, event_shape=(), salt=None):
    """Standard normal noise, shape ``digits.shape[:-1] + event_shape``, that is a fixed function of the input.

    ``digits`` (..., n) holds tokens in ``[0, V]`` (``V`` = unobserved).  The key of each row is ``key_data``
    folded with ``salt`` (an int array of shape ``digits.shape[:-1]``, if given) and then with the row's
    base-``(V+1)`` code, in int32 chunks: an injective function of the masked input, so a family built on it
    answers the same question the same way every time.
    """
    key = jax.random.wrap_key_data(key_data)
    chunk = _chunk_size(vocab_size)
    codes = []
    for start in range(0, digits.shape[-1], chunk):
        block = digits[..., start : start + chunk]
        powers = jnp.asarray((vocab_size + 1) ** np.arange(block.shape[-1]), jnp.int32)
        codes.append((block * powers).sum(axis=-1).reshape(-1))
    dtype = jnp.result_type(float)

    def draw(row_salt, *chunk_codes):
        k = key if salt is None else jax.random.fold_in(key, row_salt)
        for code in chunk_codes:
            k = jax.random.fold_in(k, code)
        return jax.random.normal(k, tuple(event_shape), dtype=dtype)

    salts = jnp.zeros(codes[0].shape, jnp.int32) if salt is None else jnp.asarray(salt).reshape(-1)
    return jax.vmap(draw)(salts, *codes).reshape(digits.shape[:-1] + tuple(event_shape))


class PerturbedBase:
    """A base object (``base``) with deterministic noise of size ``scale`` from ``key_data``: a pytree."""

    def __init__(self, base, key_data, scale):
        self.base = base
        self.key_data = key_data
        self.scale = scale

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def length(self) -> int:
        return self.base.length

    def tree_flatten(self):
        return (self.base, self.key_data, self.scale), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


@register_pytree_node_class
class PerturbedConditionals(PerturbedBase):
    r"""``log_softmax(base(x, S) + scale * noise(i, x_{S \ {i}}))``.

    The noise is a standard normal vector over the vocabulary drawn from a key
    that is a fixed, injective function of the position ``i`` and the observed
    context :math:`x_{S\setminus\{i\}}` (positions outside the context count as
    masked).  The family is therefore deterministic, answers the same question
    the same way every time, and is inconsistent for ``scale > 0``: it is no
    joint's conditionals, like an imperfect trained network.
    """

    def noise(self, x, observed):
        """The unscaled noise, shape ``(..., L, V)``."""
        vocab_size, length = self.vocab_size, self.length
        x = jnp.asarray(x)
        observed = jnp.asarray(observed, dtype=bool)
        batch_shape = jnp.broadcast_shapes(x.shape[:-1], observed.shape[:-1])
        x = jnp.broadcast_to(x, batch_shape + (length,)).astype(jnp.int32)
        observed = jnp.broadcast_to(observed, batch_shape + (length,))
        context_mask = observed[..., None, :] & ~jnp.eye(length, dtype=bool)  # (..., L_i, L_j)
        digits = jnp.where(context_mask, x[..., None, :], vocab_size)  # (..., L_i, L_j)
        positions = jnp.broadcast_to(jnp.arange(length), batch_shape + (length,))
        return masked_input_noise(self.key_data, digits, vocab_size, (vocab_size,), salt=positions)

    def __call__(self, x, observed):
        base = self.base(x, observed)
        return jax.nn.log_softmax(base + self.scale * self.noise(x, observed).astype(base.dtype), axis=-1)

    def __repr__(self):
        return f"perturbed({self.base!r}, scale={self.scale})"


def _key_data(key):
    """The raw ``uint32`` data of a typed or legacy key."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return jax.random.key_data(jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32)))


def perturbed(base, key, scale):
    r"""An inconsistent family: ``base`` with deterministic noise of size ``scale`` on its logits.

    Parameters
    ----------
    base
        A conditional family or an exact model.
    key
        PRNG key that fixes the noise function.
    scale
        Standard deviation of the logit noise.  ``scale=0`` returns ``base``
        itself (exactly).
    """
    owner = "perturbed"
    base = _as_family(base, owner, "base")  # not tabulated here: samplers tabulate the perturbed family itself
    _probe(owner, "base", base, base)
    key = check_key(owner, key)
    if isinstance(scale, jax.core.Tracer):  # traced: checked by whoever made it concrete
        return PerturbedConditionals(base, _key_data(key), scale)
    if isinstance(scale, (jax.Array, np.ndarray)) and np.ndim(scale) > 0:
        raise ArprobTypeError(f"{owner}: scale must be a number (the noise's standard deviation), "
                              f"got an array of shape {np.shape(scale)}")
    scale = check_real(owner, "scale", scale, low=0.0,
                       fix="pass the standard deviation of the logit noise (0 returns base itself)")
    if scale == 0:
        return base
    key_data = _key_data(key)
    return PerturbedConditionals(base, key_data, scale)


# A trained network (arprob/neural.py imports this module, so this import stays last).
from arprob.neural import NeuralConditionals, neural  # noqa: E402
