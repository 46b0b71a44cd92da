"""The hostile-input harness: a catalogue of public entry points, hostile values per argument kind,
and a runner that executes each case in a worker process, so that an abort or a hang cannot take
pytest down.

Vocabulary
----------
``Entry``
    One public function or method: the name its errors must carry (``owner``), a ``build()`` that
    returns ``(call, valid_kwargs)`` (a valid call, every argument by keyword), and
    ``arguments``: argument name -> kind.
``kind``
    What an argument is (``"key"``, ``"count"``, ``"probs"`` ...).  :data:`HOSTILE` lists the
    deterministic hostile specs of each kind; :func:`hostile_specs` is the hypothesis strategy that
    draws random ones.  A spec is a small picklable tuple; :func:`materialize` turns it into a value,
    given the valid value it replaces.
``Edge``
    A valid but extreme input whose correct answer is known (impossible evidence -> -inf), with a
    check on the result.

Outcome classes (:func:`run_case` in the worker)
------------------------------------------------
``clear``         an ArprobError whose message names the owner and the argument
``misattributed`` an ArprobError that does not name both
``raw``           any other exception
``nan``           returned a result containing NaN
``accepted``      returned a result without complaint
``crash`` / ``hang``  the worker died / ran past the per-case timeout (set by the parent)
``edge-ok`` / ``edge-wrong``  for edges: the check on the result passed / did not
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import multiprocessing
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

CATALOGUE_MODULES = ("hostile.catalogue_core", "hostile.catalogue_hmm", "hostile.catalogue_verify",
                     "hostile.catalogue_markov", "hostile.catalogue_tokenization")


@dataclasses.dataclass(frozen=True)
class Entry:
    owner: str
    build: Callable[[], tuple[Callable[..., Any], dict]]
    arguments: dict[str, str]
    #: argument -> extra specs for this entry only (e.g. a value just over one of its limits)
    extra: dict[str, tuple] = dataclasses.field(default_factory=dict)
    #: (argument, label) pairs that are not hostile for this entry (documented where declared)
    skip: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Edge:
    name: str
    call: Callable[[], Any]
    check: Callable[[Any], bool]
    #: instead of a result, this ArprobError class must be raised (its message naming ``owner``)
    raises: type | None = None
    owner: str = ""


# -- hostile values ---------------------------------------------------------------------------
# A spec is (label, operation, *parameters); ``materialize`` applies it to the valid value.

def _key_specs():
    return (
        ("int", "const", 0), ("float", "const", 1.5), ("none", "const", None), ("str", "const", "key"),
        ("float-array", "float_array", 3), ("batched-typed", "batched_key", 3),
        ("batched-legacy", "batched_legacy_key", 3), ("wrong-uint32", "uint32_array", 3),
    )


HOSTILE: dict[str, tuple] = {
    "key": _key_specs(),
    # a count >= 1 (num_samples, num_steps, draft_length, length, vocab_size, ...)
    "count": (("zero", "const", 0), ("negative", "const", -3), ("float", "const", 2.5),
              ("float-integral", "const", 4.0), ("str", "const", "10"), ("none", "const", None),
              ("bool", "const", True), ("nan", "const", math.nan), ("huge", "const", 10**12)),
    # a count >= 0
    "natural": (("negative", "const", -1), ("float", "const", 2.5), ("str", "const", "1"),
                ("none", "const", None), ("huge", "const", 10**12)),
    # a real > 0 (temperature, scale, learning rate, tolerance)
    "positive": (("negative", "const", -1.0), ("zero", "const", 0.0), ("nan", "const", math.nan),
                 ("inf", "const", math.inf), ("str", "const", "big"), ("none", "const", None)),
    # a real >= 0
    "nonnegative": (("negative", "const", -1.0), ("nan", "const", math.nan), ("inf", "const", math.inf),
                    ("str", "const", "big"), ("none", "const", None)),
    # a probability strictly inside (0, 1) (alpha, power, deviation)
    "unit-open": (("negative", "const", -0.1), ("zero", "const", 0.0), ("one", "const", 1.0),
                  ("above-one", "const", 1.5), ("nan", "const", math.nan), ("str", "const", "0.1"),
                  ("none", "const", None)),
    # a probability in [0, 1]
    "unit": (("negative", "const", -0.1), ("above-one", "const", 1.5), ("nan", "const", math.nan),
             ("str", "const", "0.1"), ("none", "const", None)),
    # a string option
    "choice": (("bogus", "const", "bogus"), ("int", "const", 3), ("none", "const", None)),
    "choice-or-none": (("bogus", "const", "bogus"), ("int", "const", 3)),
    # a flag
    "bool": (("str", "const", "yes"), ("int", "const", 2), ("none", "const", None)),
    # probabilities along the last axis
    "probs": (("nan", "set_first", math.nan), ("negative", "negate_first"), ("unnormalized", "scale", 2.0),
              ("drop-last", "drop_last"), ("str", "const", "probs"), ("none", "const", None),
              ("empty", "empty"), ("extra-dim", "add_axis")),
    # logits / log-potentials along the last axis (-inf allowed, NaN and +inf not)
    "logits": (("nan", "set_first", math.nan), ("plus-inf", "set_first", math.inf),
               ("all-minus-inf", "fill", -math.inf), ("drop-last", "drop_last"), ("str", "const", "logits"),
               ("none", "const", None), ("empty", "empty")),
    # a law over a finite set (1-d probabilities)
    "law": (("nan", "set_first", math.nan), ("negative", "negate_first"), ("unnormalized", "scale", 2.0),
            ("drop-last", "drop_last"), ("str", "const", "law"), ("empty", "empty"), ("none", "const", None)),
    # integer token samples of shape (n, L)
    "tokens": (("float", "astype", "float64"), ("nan", "float_nan"), ("negative", "set_first", -1),
               ("too-large", "set_first", 10**6), ("bool", "astype", "bool"), ("wrong-length", "drop_last"),
               ("empty", "empty_rows"), ("str", "const", "tokens"), ("none", "const", None)),
    # real-valued data (observations)
    "data": (("inf", "set_first", math.inf), ("str", "const", "data"), ("none", "const", None),
             ("wrong-width", "drop_last"), ("empty", "empty_rows"), ("extra-dim", "add_axis")),
    # a conditional family or an exact model
    "family": (("none", "const", None), ("str", "const", "model"), ("int", "const", 3),
               ("extra-logit", "family_extra_logit"), ("nan-logits", "family_nan"),
               ("all-minus-inf", "family_minus_inf")),
    # an exact model object (not a family)
    "model": (("none", "const", None), ("str", "const", "model"), ("int", "const", 3)),
    # a sample shape
    "sample_shape": (("negative", "const", (-1,)), ("float", "const", (2.5,)), ("str", "const", "10"),
                     ("huge", "const", (10**12,)), ("none-entry", "const", (None,))),
    # p-values
    "p_values": (("nan", "set_first", math.nan), ("negative", "set_first", -0.1), ("above-one", "set_first", 1.5),
                 ("empty", "empty"), ("str", "const", "p"), ("none", "const", None)),
    # a boolean mask of observed positions, shape (..., L)
    "mask": (("int", "astype", "int64"), ("float", "astype", "float64"), ("wrong-length", "drop_last"),
             ("str", "const", "mask"), ("none", "const", None)),
    # a generation order: None, "random" or a permutation
    "order": (("bogus", "const", "bogus"), ("not-a-permutation", "const", (0, 0)), ("float", "const", 1.5),
              ("int", "const", 3)),
    # a noising schedule object
    "schedule": (("str", "const", "linear"), ("none", "const", None), ("int", "const", 3)),
    # a callable
    "callable": (("none", "const", None), ("str", "const", "f"), ("int", "const", 3)),
}


def hostile_specs(kind: str):
    """A hypothesis strategy of random hostile specs for ``kind`` (beyond the fixed ones)."""
    fixed = st.sampled_from(HOSTILE[kind])
    if kind in ("count", "natural"):
        low = 0 if kind == "count" else -1
        return st.one_of(fixed, st.integers(-10**6, low).map(lambda v: ("random-negative", "const", v)),
                         st.integers(10**10, 10**30).map(lambda v: ("random-huge", "const", v)),
                         st.floats(0.01, 100.0).filter(lambda v: not v.is_integer())
                         .map(lambda v: ("random-float", "const", v)))
    if kind in ("positive", "nonnegative", "unit-open", "unit"):
        negative = st.floats(-1e300, -1e-300).map(lambda v: ("random-negative", "const", v))
        if kind in ("unit-open", "unit"):
            above = st.floats(1.0 + 1e-9, 1e300).map(lambda v: ("random-above", "const", v))
            return st.one_of(fixed, negative, above)
        return st.one_of(fixed, negative)
    if kind in ("probs", "law", "logits", "p_values", "data", "tokens"):
        bad = {"probs": math.nan, "law": -0.5, "logits": math.nan, "p_values": 2.0, "data": math.inf,
               "tokens": -7}[kind]
        return st.one_of(fixed, st.integers(0, 10**6).map(lambda i: ("random-position", "set_at", i, bad)))
    return fixed


def materialize(spec, valid):
    """The hostile value that ``spec`` describes, built from the ``valid`` value it replaces."""
    import jax
    import jax.numpy as jnp

    operation, parameters = spec[1], spec[2:]
    if operation == "const":
        return parameters[0]
    if operation == "float_array":
        return np.zeros(parameters[0])
    if operation == "batched_key":
        return jax.random.split(jax.random.key(0), parameters[0])
    if operation == "batched_legacy_key":
        return jax.random.split(jax.random.PRNGKey(0), parameters[0])
    if operation == "uint32_array":
        return np.arange(parameters[0], dtype=np.uint32)
    if operation.startswith("family_"):
        return _bad_family(operation, valid)
    array = np.array(valid)
    if operation == "set_first":
        array = array.astype(np.result_type(array.dtype, type(parameters[0])))
        array.reshape(-1)[0] = parameters[0]
        return array
    if operation == "set_at":
        array = array.astype(np.result_type(array.dtype, type(parameters[1])))
        array.reshape(-1)[parameters[0] % max(array.size, 1)] = parameters[1]
        return array
    if operation == "negate_first":
        array = array.astype(np.float64)
        array.reshape(-1)[0] = -abs(array.reshape(-1)[0]) - 0.25
        return array
    if operation == "scale":
        return array * parameters[0]
    if operation == "fill":
        return np.full(array.shape, parameters[0])
    if operation == "drop_last":
        return array[..., :-1]
    if operation == "empty":
        return array.reshape(-1)[:0]
    if operation == "empty_rows":
        return array[:0]
    if operation == "add_axis":
        return array[None, ...] if array.ndim else array
    if operation == "astype":
        return array.astype(parameters[0])
    if operation == "float_nan":
        array = array.astype(np.float64)
        array.reshape(-1)[0] = np.nan
        return array
    del jnp
    raise ValueError(f"unknown hostile operation {operation!r}")


def _bad_family(operation, valid):
    """A conditional family like ``valid`` whose answers break the protocol in one way."""
    import jax.numpy as jnp

    from arprob.conditionals import as_conditionals

    base = as_conditionals(valid)
    vocab_size, length = base.vocab_size, base.length

    class BadFamily:
        def __init__(self):
            self.vocab_size, self.length = vocab_size, length

        def __call__(self, tokens, observed):
            logits = jnp.zeros(tokens.shape + (vocab_size,))
            if operation == "family_extra_logit":
                return jnp.zeros(tokens.shape + (vocab_size + 1,))
            if operation == "family_nan":
                return logits.at[..., 0].set(jnp.nan)
            return jnp.full(logits.shape, -jnp.inf)

    return BadFamily()


# -- cases ------------------------------------------------------------------------------------

def load_catalogue() -> tuple[dict[str, Entry], dict[str, Edge]]:
    entries: dict[str, Entry] = {}
    edges: dict[str, Edge] = {}
    for name in CATALOGUE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        for entry in getattr(module, "ENTRIES", ()):
            assert entry.owner not in entries or entries[entry.owner] is entry, f"duplicate owner {entry.owner}"
            key = entry.owner
            suffix = 2
            while key in entries:
                key, suffix = f"{entry.owner}#{suffix}", suffix + 1
            entries[key] = entry
        for edge in getattr(module, "EDGES", ()):
            assert edge.name not in edges, f"duplicate edge {edge.name}"
            edges[edge.name] = edge
    return entries, edges


def case_ids(entries: dict[str, Entry]) -> list[tuple[str, str, tuple]]:
    """Every deterministic case: (entry id, argument, spec)."""
    cases = []
    for entry_id, entry in entries.items():
        for argument, kind in entry.arguments.items():
            for spec in HOSTILE[kind] + tuple(entry.extra.get(argument, ())):
                if (argument, spec[0]) not in entry.skip:
                    cases.append((entry_id, argument, spec))
    return cases


def _has_nan(result) -> bool:
    import jax

    for leaf in jax.tree_util.tree_leaves(result):
        try:
            array = np.asarray(leaf)
        except Exception:
            continue
        if np.issubdtype(array.dtype, np.inexact) and np.isnan(array).any():
            return True
    return False


def _finish(result):
    import jax

    jax.block_until_ready(jax.tree_util.tree_leaves(result))
    return result


def run_case(entries, edges, case) -> tuple[str, str]:
    """Run one case in this process; return (outcome class, detail)."""
    from arprob.errors import ArprobError

    if case[0] == "edge":
        edge = edges[case[1]]
        try:
            result = _finish(edge.call())
        except ArprobError as error:
            if edge.raises is not None and isinstance(error, edge.raises) and edge.owner in str(error):
                return "edge-ok", str(error)
            return "edge-wrong", f"{type(error).__name__}: {error}"
        except Exception as error:
            return "raw", f"{type(error).__name__}: {error}"
        if edge.raises is not None:
            return "edge-wrong", f"returned {result!r:.200} instead of raising {edge.raises.__name__}"
        ok = bool(edge.check(result))
        return ("edge-ok" if ok else "edge-wrong"), f"{result!r:.300}"
    entry_id, argument, spec = case
    entry = entries[entry_id]
    try:
        call, kwargs = entry.build()
        kwargs = dict(kwargs)
        kwargs[argument] = materialize(spec, kwargs.get(argument))
    except Exception as error:  # a harness bug, not the library's
        return "harness", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}"
    try:
        result = _finish(call(**kwargs))
    except ArprobError as error:
        message = str(error)
        named = entry.owner.split("#")[0] in message and argument in message
        return ("clear" if named else "misattributed"), message
    except Exception as error:
        tail = traceback.format_exc(limit=-2)
        return "raw", f"{type(error).__name__}: {str(error)[:300]}\n{tail[-600:]}"
    if _has_nan(result):
        return "nan", "returned NaN"
    return "accepted", f"returned {type(result).__name__}"


# -- the worker process ---------------------------------------------------------------------

def _worker(connection, x64: bool):
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import warnings

    import jax

    jax.config.update("jax_enable_x64", x64)
    warnings.simplefilter("ignore")
    entries, edges = load_catalogue()
    while True:
        case = connection.recv()
        if case is None:
            return
        connection.send(run_case(entries, edges, case))


class Runner:
    """Runs cases in a spawned worker; restarts it after a crash or a hang."""

    def __init__(self, timeout: float = 60.0, x64: bool = True):
        self.timeout, self.x64 = timeout, x64
        self.context = multiprocessing.get_context("spawn")
        self.process = None

    def _start(self):
        self.parent, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child, self.x64), daemon=True)
        self.process.start()
        self.fresh = True

    def run(self, case) -> tuple[str, str]:
        if self.process is None or not self.process.is_alive():
            self._start()
        self.parent.send(case)
        # the first case after a start also pays the worker's imports
        if self.parent.poll(self.timeout + 60.0 if self.fresh else self.timeout):
            try:
                self.fresh = False
                return self.parent.recv()
            except EOFError:  # the worker died while answering: classified below
                self.fresh = True
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            self.process = None
            return "hang", f"no answer within {self.timeout:.0f} s"
        code = self.process.exitcode
        self.process = None
        return "crash", f"worker exited with code {code}"

    def close(self):
        if self.process is not None and self.process.is_alive():
            self.parent.send(None)
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
