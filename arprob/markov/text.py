r"""Real English text at run time, without download.

The text is the docstrings of a fixed list of Python standard-library modules
(:func:`stdlib_text`): read from the running interpreter, so nothing is
downloaded and nothing is copied into the repository.  It is reduced to a
small alphabet (:func:`reduce_alphabet`, :data:`ALPHABET`: 26 letters and the
space, :math:`T = 27`) and turned into token ids (:func:`encode`).  The models
fitted on it are in :mod:`arprob.markov.char_models`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

from arprob._validation import is_concrete
from arprob.errors import ArprobTypeError, InvalidArgumentError, InvalidTokenError, ShapeError

__all__ = ["ALPHABET", "STDLIB_MODULES", "decode", "encode", "reduce_alphabet", "stdlib_text"]

#: The default alphabet: the 26 lowercase letters and the space (:math:`T = 27`).
ALPHABET = "abcdefghijklmnopqrstuvwxyz "

#: Modules whose docstrings make :func:`stdlib_text`: pure-Python or always-built modules of
#: CPython 3.11+, none with side effects on import.  About 709,000 characters on CPython 3.11
#: (Linux), about 639,000 after :func:`reduce_alphabet`.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "collections.abc", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "doctest", "email.message", "email.utils", "enum", "fractions",
    "functools", "getopt", "gettext", "glob", "heapq", "html", "html.parser", "http", "http.client",
    "http.server", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "logging.handlers",
    "math", "mimetypes", "operator", "optparse", "os", "os.path", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shlex", "shutil", "socket", "statistics", "string",
    "struct", "subprocess", "tempfile", "textwrap", "threading", "timeit", "tokenize", "traceback", "types",
    "typing", "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref",
    "xml.etree.ElementTree", "zipfile",
)


# -- the text ---------------------------------------------------------------------------------
def stdlib_text(modules: Sequence[str] | None = None) -> str:
    """English text from the docstrings of standard-library modules, without any download.

    For each module, in the given order: the module's docstring, then, in sorted order of
    their names, its public classes and functions (``__all__`` when the module defines it,
    else the names without a leading underscore), each class followed by its own public
    methods and properties (sorted).  Docstrings are read with :func:`inspect.getdoc`
    (dedented, inherited where an object has none) and each distinct docstring is kept once,
    at its first appearance; they are joined by blank lines.

    Parameters
    ----------
    modules
        Names of importable modules, e.g. ``["json", "os.path"]``; default
        :data:`STDLIB_MODULES` (about 709,000 characters on CPython 3.11).

    Returns
    -------
    str
        Deterministic for a given Python version and platform (the docstrings are the
        interpreter's own).

    Raises
    ------
    ArprobTypeError
        ``modules`` is not a list or tuple of strings.
    InvalidArgumentError
        A module cannot be imported, or the list is empty.
    """
    owner = "stdlib_text"
    if modules is None:
        modules = STDLIB_MODULES
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise ArprobTypeError(f"{owner}: modules must be a list of module names such as ['json', 're'], "
                              f"got {type(modules).__name__} {modules!r:.60}")
    if not modules:
        raise InvalidArgumentError(f"{owner}: modules is empty; pass at least one module name "
                                   "(or None for arprob.markov.text.STDLIB_MODULES)")
    seen: set[str] = set()
    parts: list[str] = []

    def add(obj):
        try:
            doc = inspect.getdoc(obj)
        except Exception:  # an exotic descriptor whose __doc__ raises: nothing to read
            return
        if doc and doc not in seen:
            seen.add(doc)
            parts.append(doc)

    with warnings.catch_warnings():  # deprecated names warn when read; their docstrings are still text
        warnings.simplefilter("ignore")
        for name in modules:
            _collect(owner, name, add)
    return "\n\n".join(parts)


def _collect(owner: str, name: str, add) -> None:
    """Feed ``add`` the docstrings of module ``name``, its public classes (with their members) and functions."""
    if not isinstance(name, str):
        raise ArprobTypeError(f"{owner}: modules must hold module names (str), got "
                              f"{type(name).__name__} {name!r:.60}")
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise InvalidArgumentError(f"{owner}: module {name!r} cannot be imported ({error}); pass names of "
                                   "importable modules, or None for the default list") from None
    add(module)
    public = getattr(module, "__all__", None)
    if not isinstance(public, (list, tuple)):
        public = [member for member in dir(module) if not member.startswith("_")]
    for member in sorted(public):
        obj = getattr(module, member, None)
        if inspect.isclass(obj):
            add(obj)
            for attribute in sorted(vars(obj)):
                if not attribute.startswith("_"):
                    try:
                        add(getattr(obj, attribute))
                    except Exception:  # a descriptor that cannot be read on the class: skip it
                        continue
        elif inspect.isroutine(obj):
            add(obj)


def _check_alphabet(owner: str, alphabet) -> str:
    if not isinstance(alphabet, str):
        raise ArprobTypeError(f"{owner}: alphabet must be a str of distinct characters such as 'ab ', "
                              f"got {type(alphabet).__name__}")
    if len(set(alphabet)) != len(alphabet):
        repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
        raise InvalidArgumentError(f"{owner}: alphabet {alphabet!r} repeats {repeated}; expected distinct "
                                   "characters (each is one token id, its position)")
    if len(alphabet) < 2:
        raise InvalidArgumentError(f"{owner}: alphabet {alphabet!r} has {len(alphabet)} character(s), "
                                   "expected at least 2 (a space and one more)")
    return alphabet


def reduce_alphabet(text: str, alphabet: str = ALPHABET) -> str:
    """Lowercase ``text`` and map it onto ``alphabet``.

    Every character not in ``alphabet`` (after lowercasing) becomes a space, runs of
    spaces collapse to one, and leading and trailing spaces are dropped.  A smaller
    alphabet works the same way: with ``alphabet="aeiou "`` only the vowels survive,
    separated by single spaces where anything else stood.

    Parameters
    ----------
    text
        Any string.
    alphabet
        Distinct lowercase characters, including the space ``" "``; default
        :data:`ALPHABET`.

    Returns
    -------
    str
        A string over ``alphabet``, ready for :func:`encode`.
    """
    owner = "reduce_alphabet"
    if not isinstance(text, str):
        raise ArprobTypeError(f"{owner}: text must be a str, got {type(text).__name__}")
    alphabet = _check_alphabet(owner, alphabet)
    if " " not in alphabet:
        raise InvalidArgumentError(f"{owner}: alphabet {alphabet!r} has no space, expected one (the other "
                                   "characters are mapped to it); add ' ' to the alphabet")
    upper = [c for c in alphabet if c.lower() != c]
    if upper:
        raise InvalidArgumentError(f"{owner}: alphabet {alphabet!r} holds {upper}, which cannot occur "
                                   "(the text is lowercased first); use lowercase characters")
    others = "[^" + "".join("\\" + c if not c.isalnum() else c for c in alphabet) + "]"
    mapped = re.sub(others, " ", text.lower())
    return re.sub(" {2,}", " ", mapped).strip(" ")


def encode(text: str, alphabet: str = ALPHABET) -> Int[np.ndarray, " length"]:
    """Token ids of ``text``: the position of each character in ``alphabet``, int32.

    Raises :class:`~arprob.errors.InvalidTokenError` naming the first character that is
    not in ``alphabet`` (run :func:`reduce_alphabet` first).
    """
    owner = "encode"
    if not isinstance(text, str):
        raise ArprobTypeError(f"{owner}: text must be a str, got {type(text).__name__}")
    alphabet = _check_alphabet(owner, alphabet)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    table = np.full(max(map(ord, alphabet)) + 2, -1, dtype=np.int64)  # last entry: any larger code point
    table[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    ids = table[np.minimum(codes, table.size - 1)]
    if ids.size and ids.min() < 0:
        position = int(np.argmax(ids < 0))
        raise InvalidTokenError(f"{owner}: text[{position}] = {text[position]!r} is not in the alphabet "
                                f"{alphabet!r}; map the text first with reduce_alphabet(text, alphabet)")
    return ids.astype(np.int32)


def decode(ids: Int[np.ndarray, " length"], alphabet: str = ALPHABET) -> str:
    """The string of token ``ids`` (1-D ints in ``[0, len(alphabet))``): the inverse of :func:`encode`."""
    owner = "decode"
    alphabet = _check_alphabet(owner, alphabet)
    ids = _check_ids(owner, ids, len(alphabet), minimum_length=0)
    return "".join(np.array(list(alphabet))[ids].tolist())


def _check_ids(owner: str, ids, vocab_size: int, minimum_length: int) -> np.ndarray:
    """``ids`` as a 1-D int64 numpy array of tokens in ``[0, vocab_size)`` with ``minimum_length`` entries."""
    if isinstance(ids, (str, bytes)):
        raise ArprobTypeError(f"{owner}: ids must be an int array of token ids, got a {type(ids).__name__}; "
                              "turn text into ids with encode(reduce_alphabet(text))")
    if not is_concrete(ids):
        raise ArprobTypeError(f"{owner}: ids is a JAX tracer; call {owner} outside jit (it counts on the host)")
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ShapeError(f"{owner}: ids has shape {array.shape}, expected (length,): one text as a 1-D "
                         "array (concatenate texts, or fit on one)")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InvalidTokenError(f"{owner}: ids has dtype {array.dtype}, expected integer token ids in "
                                f"[0, {vocab_size}) (encode(text, alphabet) gives them)")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        bad = int(array.min()) if array.min() < 0 else int(array.max())
        raise InvalidTokenError(f"{owner}: ids contains token {bad}, expected tokens in [0, {vocab_size}) "
                                f"(vocab_size={vocab_size}: pass the size of the alphabet the ids were encoded with)")
    if array.size < minimum_length:
        raise ShapeError(f"{owner}: ids has {array.size} tokens, expected at least {minimum_length} "
                         "(one full window and its next token); fit on a longer text")
    return array.astype(np.int64)
