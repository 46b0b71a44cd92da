"""The built-in verification suite that ``arprob check`` runs.

Each :class:`Case` pairs a sampler with a target model and states its claim:
``"exact"`` (the sampler's law *is* the target; a failure is a bug) or
``"approximate"`` (the law differs from the target by a known exact TV; the
report says whether the statistical test detects it).  Later samplers add
their cases to :func:`cases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from arprob.conditionals import perturbed
from arprob.distributions import MarkovChain, NGram, TabularJoint
from arprob.samplers import ancestral, ancestral_law
from arprob.verify import Sampler

__all__ = ["Case", "cases"]


@dataclass(frozen=True)
class Case:
    """One row of the suite."""

    sampler: str
    model: str
    claim: str  # "exact" or "approximate"
    make: Callable[[], tuple[Sampler, Any]]  # -> (sampler with law, target model)


def _models():
    return {
        "TabularJoint(V=3, L=4)": lambda: TabularJoint.random(jax.random.key(1), 4, 3, concentration=0.5),
        "MarkovChain(V=3, L=5)": lambda: MarkovChain.random(jax.random.key(2), 5, 3),
        "NGram(V=2, K=2, L=6)": lambda: NGram.random(jax.random.key(3), 6, 2, 2),
    }


def _ancestral_case(label: str, order, model_name: str, build) -> Case:
    def make():
        model = build()
        order_value = order(model.length) if callable(order) else order
        sampler = Sampler(
            lambda key, n: ancestral(key, model, n, order=order_value),
            law=lambda: ancestral_law(model, order_value),
            name=label,
        )
        return sampler, model

    return Case(label, model_name, "exact", make)


def cases(quick: bool = False) -> list[Case]:
    """All cases of the suite (``quick`` trims nothing but the sample size, set by the CLI)."""
    suite = []
    for model_name, build in _models().items():
        suite.append(_ancestral_case("ancestral (left to right)", None, model_name, build))
        suite.append(_ancestral_case("ancestral (random order)", "random", model_name, build))
        suite.append(_ancestral_case("ancestral (reversed)", lambda n: np.arange(n)[::-1].copy(),
                                     model_name, build))

    def make_perturbed():
        model = _models()["TabularJoint(V=3, L=4)"]()
        family = perturbed(model, jax.random.key(7), 0.3)
        sampler = Sampler(lambda key, n: ancestral(key, family, n, order="random"),
                          law=lambda: ancestral_law(family, "random"),
                          name="ancestral (random order), perturbed conditionals")
        return sampler, model

    suite.append(Case("ancestral (random), perturbed 0.3", "TabularJoint(V=3, L=4)", "approximate",
                      make_perturbed))
    return suite
