r"""Communicating classes, periods and absorbing loops of a window chain.

The classes are the strongly connected components of the graph with an edge :math:`w \to w'`
wherever :math:`Q(w, w') > 0` (scipy's ``csgraph``, linear time, so it runs at every size this
package builds).  A class is *closed* (recurrent) when no edge leaves it; every other window is
transient and gets stationary mass 0.  The period of a closed class is the gcd of
:math:`\text{level}(u) + 1 - \text{level}(v)` over its edges, levels being breadth-first distances
from any of its windows; a self-loop (:math:`Q(w, w) > 0`, only possible for a constant window
:math:`(a, \dots, a)`) makes it 1 at once.

With temperature :math:`> 0` and a model of full support every entry of :math:`Q^K` is positive, so
there is one closed class, of all :math:`T^K` windows, aperiodic: that case is recognised from the
table without building the graph.  Greedy decoding makes :math:`Q` a function (one successor per
window), whose closed classes are its cycles: the repetition loops of greedy generation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse.csgraph

from arprob.markov.operators import window_csr

__all__ = ["ChainClass", "ChainStructure", "chain_structure"]


class ChainClass(NamedTuple):
    """A communicating class: its window indices (sorted), whether it is closed, and its period."""

    states: np.ndarray
    closed: bool
    period: int


class ChainStructure(NamedTuple):
    """All communicating classes of the window chain.

    Attributes
    ----------
    classes
        Closed (recurrent) classes first, by decreasing size, then the transient ones.
    num_transient
        Windows outside every closed class.
    """

    classes: tuple[ChainClass, ...]
    num_transient: int

    @property
    def recurrent(self) -> tuple[ChainClass, ...]:
        return tuple(c for c in self.classes if c.closed)

    @property
    def irreducible(self) -> bool:
        """One class holding every window."""
        return len(self.classes) == 1

    @property
    def ergodic(self) -> bool:
        """One closed class, aperiodic: a unique stationary law that every start converges to."""
        recurrent = self.recurrent
        return len(recurrent) == 1 and recurrent[0].period == 1

    @property
    def absorbing_loops(self) -> tuple[ChainClass, ...]:
        """Closed classes that are a single cycle (each window has one successor inside): repetition loops."""
        return tuple(c for c in self.recurrent if c.period == len(c.states))


def chain_structure(table: np.ndarray) -> ChainStructure:
    """Classes and periods of the window chain with next-token table ``table (T**K, T)``."""
    num_windows, vocab_size = table.shape
    if np.all(table > 0):
        return ChainStructure((ChainClass(np.arange(num_windows), True, 1),), 0)
    graph = window_csr(table)
    count, labels = scipy.sparse.csgraph.connected_components(graph, directed=True, connection="strong")
    source, target = graph.nonzero()
    leaving = labels[source] != labels[target]
    open_classes = np.zeros(count, dtype=bool)
    open_classes[labels[source[leaving]]] = True
    order = np.argsort(labels, kind="stable")
    boundaries = np.searchsorted(labels[order], np.arange(count + 1))
    classes = []
    for label in range(count):
        states = order[boundaries[label]:boundaries[label + 1]]
        closed = not open_classes[label]
        period = _period(graph, states) if closed else 0
        classes.append(ChainClass(states, closed, period))
    classes.sort(key=lambda c: (not c.closed, -len(c.states), int(c.states[0])))
    num_transient = int(sum(len(c.states) for c in classes if not c.closed))
    return ChainStructure(tuple(classes), num_transient)


def _period(graph, states: np.ndarray) -> int:
    """Period of the closed class ``states`` (gcd of level differences along its edges)."""
    diagonal = graph.diagonal()
    if np.any(diagonal[states] > 0):
        return 1
    sub = graph[states][:, states]
    levels = scipy.sparse.csgraph.shortest_path(sub, unweighted=True, indices=0, directed=True)
    source, target = sub.nonzero()
    differences = (levels[source] + 1 - levels[target]).astype(np.int64)
    period = 0
    for difference in np.unique(np.abs(differences)):
        period = math.gcd(period, int(difference))
    return max(period, 1)
