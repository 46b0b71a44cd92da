"""Every mutant in the catalogue is wrong by a known exact TV, and `check` rejects it.

`check` runs at deviation 0.05, power 0.99, family-wise alpha 1e-4 (its false
alarm rate on an exact sampler), with the sample size it plans itself.  Every
mutant's exact TV exceeds 0.05, so the plan guarantees power >= 0.99 against
it; with fixed seeds the outcome is deterministic.  The exact samplers the
mutants break pass the same check (controls below and in ``arprob check``).
"""

import jax
import numpy as np
import pytest

from arprob.distributions import TabularJoint
from arprob.samplers import speculative, speculative_law
from arprob.samplers.mutants import Mutant, catalogue
from arprob.verify import Sampler, check, tv

NUM_MUTANTS = 16


@pytest.fixture(scope="module")
def mutants():
    return catalogue()


def test_catalogue_shape(mutants):
    assert len(mutants) == NUM_MUTANTS
    assert len({m.name for m in mutants}) == NUM_MUTANTS
    for mutant in mutants:
        assert isinstance(mutant, Mutant) and mutant.description
        assert callable(mutant.sampler) and callable(mutant.law)


@pytest.mark.parametrize("index", range(NUM_MUTANTS))
def test_mutant_is_wrong_and_rejected(mutants, index):
    mutant = mutants[index]
    law = mutant.law()
    assert law.sum() == pytest.approx(1.0, abs=1e-10)
    distance = tv(law, np.asarray(mutant.target.law(), np.float64))
    assert distance > 0.05, f"{mutant.name}: exact TV {distance:.4f} is below the planned deviation"
    report = check(mutant.sampler, mutant.target, deviation=0.05)
    assert report.exact_tv == pytest.approx(distance, abs=1e-12)
    assert not report.passed, f"{mutant.name} passed check (p = {report.min_p_value:.3g}, n = {report.num_samples})"


def test_the_correct_sampler_passes_the_same_check(mutants):
    target = mutants[0].target
    draft = TabularJoint.random(jax.random.key(5), 4, 3, concentration=1.0)  # the mutants' draft
    sampler = Sampler(lambda key, n: speculative(key, target, draft, n, 2),
                      law=lambda: speculative_law(target, draft, 2), name="speculative")
    report = check(sampler, target, deviation=0.05)
    assert report.passed
    assert report.exact_tv < 1e-12
