"""Verification: distances between laws, goodness-of-fit tests, sample-size planning and
:func:`check`, which tells whether a sampler draws from the law it claims."""

from arprob.verify.check import check, holm, planned_num_samples, seeds
from arprob.verify.distances import chi2_divergence, hellinger, kl, tv
from arprob.verify.gof import Counts, GofResult, gof, projected_law
from arprob.verify.planning import detectable, plan, power_of
from arprob.verify.plans import Plan, plan_for
from arprob.verify.report import Report, TestOutcome
from arprob.verify.resolution import Resolution, resolution
from arprob.verify.sampling import Sampler, from_law
from arprob.verify.targets import LeftToRight, left_to_right

__all__ = [
    "Counts",
    "GofResult",
    "LeftToRight",
    "Plan",
    "Report",
    "Resolution",
    "Sampler",
    "TestOutcome",
    "check",
    "chi2_divergence",
    "detectable",
    "from_law",
    "gof",
    "hellinger",
    "holm",
    "kl",
    "left_to_right",
    "plan",
    "plan_for",
    "planned_num_samples",
    "power_of",
    "projected_law",
    "resolution",
    "seeds",
    "tv",
]
