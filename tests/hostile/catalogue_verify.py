"""Hostile-input catalogue of the verifier (arprob.verify: distances, gof, planning, sampling, resolution,
report), of arprob.precision and of arprob.schedules.

Every public function (and every method that takes arguments) is one :class:`Entry`; ``build()`` returns a
valid call on small shapes, so that each case runs in well under a second unless the library accepts a
hostile value it should refuse.  Owners with a ``#suffix`` are a second entry for the same function (the
suffix is not part of the messages).  ``skip`` lists the hostile specs that are valid input for that argument,
each with the reason; the valid-but-extreme inputs among them come back as :data:`EDGES` with their known answer.
"""

from __future__ import annotations

import math

import numpy as np

from hostile.framework import Edge, Entry

# -- small valid inputs ------------------------------------------------------------------------

P3 = np.array([0.2, 0.3, 0.5])
Q3 = np.array([0.5, 0.25, 0.25])
LAW8 = np.array([0.05, 0.1, 0.15, 0.2, 0.1, 0.1, 0.2, 0.1])  # V = 2, L = 3, lexicographic
LOGITS4 = np.array([0.0, -1.0, -2.5, 1.0])
PROBS4 = np.array([0.4, 0.3, 0.2, 0.1])

#: extra hostile projections (a tuple of distinct positions in [0, length) is expected)
BAD_PROJECTIONS = (("out-of-range", "const", (7,)), ("negative-position", "const", (-1,)),
                   ("repeated", "const", (0, 0)), ("float-position", "const", (0.5,)),
                   ("bool-position", "const", (True,)), ("empty-tuple", "const", ()),
                   ("nested", "const", ((0, 1),)))
#: extra hostile ``projections=`` of check / resolution
BAD_PROJECTIONS_LIST = (("empty-list", "const", []), ("out-of-range", "const", [(7,)]),
                        ("repeated", "const", [(0, 0)]), ("float-position", "const", [(0.5,)]),
                        ("bare-ints", "const", [0, 1]), ("bogus-name", "const", ["rosenblatt", "bogus"]),
                        ("bool-position", "const", [(True,)]), ("negative-position", "const", [(-1,)]))
#: extra hostile counts for Counts
BAD_COUNTS = (("negative", "set_first", -3), ("nan", "set_first", math.nan), ("fractional", "set_first", 0.5),
              ("bool", "astype", "bool"))  # all-zero counts are a valid Counts; gof refuses them (an edge below)


def _samples(num_samples=400, vocab_size=2, length=3, seed=0):
    return np.random.default_rng(seed).integers(0, vocab_size, (num_samples, length))


def _small_model():
    import jax

    from arprob import TabularJoint

    return TabularJoint.random(jax.random.key(0), 2, 3)


def _key():
    import jax

    return jax.random.key(0)


# -- distances ---------------------------------------------------------------------------------

def _distance(name):
    def build():
        import arprob.verify as verify

        return getattr(verify, name), {"p": P3.copy(), "q": Q3.copy()}

    return Entry(name, build, {"p": "law", "q": "law"})


# -- goodness of fit ---------------------------------------------------------------------------

def _build_gof():
    from arprob.verify import gof

    return gof, {"samples": _samples(), "law": LAW8.copy(), "projection": (2, 0), "statistic": "pearson",
                 "vocab_size": 2, "min_expected": 5.0}


def _build_gof_counts():
    from arprob.verify import Counts, gof

    counts = np.bincount(_samples() @ np.array([4, 2, 1]), minlength=8)
    return gof, {"samples": Counts(counts, 2), "law": LAW8.copy()}


def _build_counts():
    from arprob.verify import Counts

    counts = np.bincount(_samples()[:, [2, 0]] @ np.array([2, 1]), minlength=4)
    return Counts, {"counts": counts, "vocab_size": 2, "projection": (2, 0)}


def _build_projected_law():
    from arprob.verify import projected_law

    return projected_law, {"law": LAW8.copy(), "vocab_size": 2, "length": 3, "projection": (2, 0)}


# -- planning ----------------------------------------------------------------------------------

def _build_plan():
    from arprob.verify import plan

    return plan, {"deviation": 0.05, "support_size": 27, "alpha": 1e-3, "power": 0.9}


def _build_detectable():
    from arprob.verify import detectable

    return detectable, {"num_samples": 5000, "support_size": 27, "alpha": 1e-3, "power": 0.9}


def _build_power_of():
    from arprob.verify import power_of

    return power_of, {"num_samples": 5000, "deviation": 0.05, "support_size": 27, "alpha": 1e-3}


#: 10**12 cells or samples are valid (a large model's joint, a long run): the answer is an edge below.
#: Random huge values (10**10 to 10**30) are valid up to 2**63 - 1 and refused above: not one class
HUGE_IS_VALID = frozenset({("support_size", "huge"), ("support_size", "random-huge")})
HUGE_SAMPLES_ARE_VALID = frozenset({("num_samples", "huge"), ("num_samples", "random-huge")})


# -- report ------------------------------------------------------------------------------------

def _report():
    from arprob.verify import Report, TestOutcome

    observed = np.array([30.0, 20.0, 50.0])
    test = TestOutcome("joint", None, "pearson", 1.5, 2, 0.47, 0.47, False, "pearson",
                       observed=observed, expected=np.array([25.0, 25.0, 50.0]))
    return Report(passed=True, tests=[test], num_samples=100, alpha=1e-3, power=0.9, deviation=0.1, planned=False,
                  tv_estimate=0.05, tv_interval=(0.0, 0.2), tv_scope="joint", exact_tv=None, nfe=None,
                  samples_per_second=1e5, seconds=0.001, zero_probability_hits=[], seed=0, vocab_size=3, length=1,
                  resolution=0.1)


def _build_report_plot():
    import matplotlib

    matplotlib.use("Agg")
    report = _report()

    def plot(**kwargs):
        import matplotlib.pyplot as plt

        figure = report.plot(**kwargs)
        plt.close(figure)
        return None

    return plot, {"max_cells": 2}


# -- samplers ----------------------------------------------------------------------------------

def _build_from_law():
    from arprob.verify import from_law

    return from_law, {"law": LAW8.copy(), "vocab_size": 2, "length": 3, "name": "biased"}


def _build_sampler():
    from arprob.verify import Sampler

    return Sampler, {"fn": lambda key, num_samples: np.zeros((num_samples, 3), np.int32), "law": LAW8.copy(),
                     "name": "zeros"}


def _build_sampler_call():
    from arprob.verify import from_law

    sampler = from_law(LAW8, 2, 3)
    return sampler, {"key": _key(), "num_samples": 16}


def _build_resolution():
    from arprob.verify import resolution

    return resolution, {"target": _small_model(), "seconds": 1.0, "sampler": None, "alpha": 1e-3, "power": 0.9,
                        "projections": "auto", "max_joint_cells": 2**10, "seed": 0}


def _build_plan_for():
    from arprob.verify import plan_for

    return plan_for, {"target": _small_model(), "deviation": 0.05, "power": 0.9, "alpha": 1e-3,
                      "projections": "auto", "max_joint_cells": 2**10, "num_samples": None, "sequential": True,
                      "batch_size": None, "sampler": None, "probe_samples": 256}


def _build_seeds():
    from arprob.verify import seeds

    return seeds, {"key": _key(), "num": 4}


def _build_weighted_holm():
    from arprob.verify import holm

    return holm, {"p_values": np.array([0.01, 0.2, 0.03]), "weights": np.array([0.5, 0.25, 0.25])}


def _build_check_seed_type():
    from arprob.verify import check

    def numpy_sampler(seed, num_samples):
        return np.random.default_rng(seed).integers(0, 2, size=(num_samples, 3)).astype(np.int32)

    return check, {"sampler": numpy_sampler, "target": _small_model(), "num_samples": 64, "seed_type": "int",
                   "sequential": True, "progress": False}


# -- precision ---------------------------------------------------------------------------------

def _build_categorical():
    from arprob import precision

    return precision.categorical, {"key": _key(), "logits": np.stack([LOGITS4, LOGITS4[::-1]]), "shape": (5, 2)}


def _build_gumbel():
    from arprob import precision

    return precision.gumbel, {"key": _key(), "shape": (3, 4), "dtype": "float32"}


def _build_cap(name):
    def build():
        from arprob import precision

        return getattr(precision, name), {"dtype": "float32", "mode": "low"}

    return build


def _build_law_of_logits(name):
    def build():
        from arprob import precision

        return getattr(precision, name), {"logits": LOGITS4.copy(), "cap": 2.0, "floor": -3.0}

    return build


def _build_worst_case():
    from arprob import precision

    return precision.worst_case_tv_bound, {"vocab_size": 10, "cap": 15.9, "floor": -4.5}


def _build_library_tv_bound():
    from arprob import precision

    return precision.library_tv_bound, {"vocab_size": 10, "dtype": "float32"}


def _build_entropy():
    from arprob import precision

    return precision.entropy, {"probs": PROBS4.copy()}


def _build_tempered():
    from arprob import precision

    return precision.tempered, {"probs": PROBS4.copy(), "temperature": 0.7}


def _build_effective_temperature():
    from arprob import precision

    return precision.effective_temperature, {"probs": PROBS4.copy(), "law": np.array([0.5, 0.3, 0.15, 0.05])}


def _build_token_law():
    from arprob import precision

    return precision.masked_diffusion_token_law, {"probs": PROBS4.copy(), "num_steps": 8, "cap": 3.0,
                                                  "floor": -4.0, "chunk": 4}


def _build_summary():
    from arprob import precision

    return precision.masked_diffusion_summary, {"probs": PROBS4.copy(), "num_steps": 8, "dtype": "bfloat16",
                                                "mode": "low"}


def _build_grouped():
    from arprob import precision

    return precision.jax_grouped_law, {"group_logits": np.array([0.0, -2.0]), "group_sizes": np.array([1, 3]),
                                       "dtype": "bfloat16"}


#: a cap may be negative (any value, random ones included) or +inf (no upper clamp), a floor any value below the
#: cap: valid, not hostile (a floor or cap of -1e300 is a total clamp: the edges below)
CAP_VALID = frozenset({("cap", "negative"), ("cap", "random-negative"), ("cap", "inf")})
FLOOR_VALID = frozenset({("floor", "negative"), ("floor", "random-negative")})
CAP_EXTRA = {"cap": (("minus-inf", "const", -math.inf), ("below-floor", "const", -10.0))}
FLOOR_EXTRA = {"floor": (("plus-inf", "const", math.inf), ("above-cap", "const", 100.0))}


# -- schedules ---------------------------------------------------------------------------------

def _build_schedule():
    from arprob.schedules import Schedule

    return Schedule, {"kind": "log_linear", "eps": 0.1}


def _build_log_linear():
    from arprob import schedules

    return schedules.log_linear, {"eps": 0.1}


def _build_schedule_method(name):
    def build():
        from arprob import schedules

        return getattr(schedules.log_linear(0.1), name), {"t": 0.5}

    return build


SCHEDULE_T_EXTRA = {"t": (("array-with-nan", "const", np.array([0.2, math.nan])),
                          ("array-above-one", "const", np.array([0.2, 1.5])), ("bool", "const", True),
                          ("minus-inf", "const", -math.inf))}


ENTRIES = [
    *[_distance(name) for name in ("tv", "kl", "hellinger", "chi2_divergence")],
    # vocab_size=None: read from the law's shape (the default)
    Entry("gof", _build_gof,
          {"samples": "tokens", "law": "law", "projection": "choice-or-none", "statistic": "choice",
           "vocab_size": "count", "min_expected": "positive"},
          extra={"projection": BAD_PROJECTIONS,
                 "samples": (("one-dimensional", "const", np.zeros(5, int)),
                             ("three-dimensional", "const", np.zeros((4, 3, 1), int)))},
          skip=frozenset({("vocab_size", "none")})),
    Entry("gof#counts", _build_gof_counts, {"law": "law"}),
    Entry("Counts", _build_counts, {"counts": "data", "vocab_size": "count", "projection": "choice-or-none"},
          extra={"counts": BAD_COUNTS, "projection": BAD_PROJECTIONS}),
    Entry("projected_law", _build_projected_law,
          {"law": "law", "vocab_size": "count", "length": "count", "projection": "choice-or-none"},
          extra={"projection": BAD_PROJECTIONS}),
    # deviation = 1 is a valid TV distance (the largest): not hostile for deviation in (0, 1]
    Entry("plan", _build_plan,
          {"deviation": "unit-open", "support_size": "count", "alpha": "unit-open", "power": "unit-open"},
          extra={"deviation": (("tiny", "const", 1e-300), ("very-small", "const", 1e-12))},
          skip=HUGE_IS_VALID | {("deviation", "one")}),
    Entry("detectable", _build_detectable,
          {"num_samples": "count", "support_size": "count", "alpha": "unit-open", "power": "unit-open"},
          skip=HUGE_IS_VALID | HUGE_SAMPLES_ARE_VALID),
    Entry("power_of", _build_power_of,
          {"num_samples": "count", "deviation": "unit-open", "support_size": "count", "alpha": "unit-open"},
          skip=HUGE_IS_VALID | HUGE_SAMPLES_ARE_VALID | {("deviation", "one")}),
    # max_cells=10**12 just shows every cell: valid
    Entry("Report.plot", _build_report_plot, {"max_cells": "count"},
          skip=frozenset({("max_cells", "huge"), ("max_cells", "random-huge")})),
    Entry("from_law", _build_from_law, {"law": "law", "vocab_size": "count", "length": "count"},
          extra={"name": (("none", "const", None), ("int", "const", 3))}),
    # law=None: no exact law (valid).  A law of 7 entries is a valid law over 7 outcomes: Sampler does not know
    # vocab_size and length; check compares the sizes (IncompatibleError there)
    Entry("Sampler", _build_sampler, {"fn": "callable", "law": "law"},
          extra={"name": (("none", "const", None), ("int", "const", 3))},
          skip=frozenset({("law", "none"), ("law", "drop-last")})),
    Entry("Sampler#call", _build_sampler_call, {"key": "key", "num_samples": "count"}),
    # num_samples / batch_size / sampler None: planned, chosen, no probe (valid)
    Entry("plan_for", _build_plan_for,
          {"target": "model", "deviation": "unit-open", "power": "unit-open", "alpha": "unit-open",
           "projections": "choice", "max_joint_cells": "count", "num_samples": "count", "sequential": "bool",
           "batch_size": "count", "sampler": "callable", "probe_samples": "count"},
          skip=frozenset({("deviation", "one"), ("num_samples", "none"), ("batch_size", "none"),
                          ("sampler", "none"), ("max_joint_cells", "huge"), ("max_joint_cells", "random-huge"),
                          ("num_samples", "huge"), ("num_samples", "random-huge"), ("batch_size", "huge"),
                          ("batch_size", "random-huge")})),
    Entry("seeds", _build_seeds, {"key": "key", "num": "count"}),
    # weights are normalised by holm (any positive scale is valid); None means equal weights
    Entry("holm#weights", _build_weighted_holm, {"weights": "probs"},
          skip=frozenset({("weights", "extra-dim"), ("weights", "unnormalized"), ("weights", "none")})),
    Entry("check#seed_type", _build_check_seed_type,
          {"seed_type": "choice", "sequential": "bool", "progress": "bool"},
          skip=frozenset({("sequential", "none"), ("progress", "none")})),
    # sampler=None: the target's own sample method (valid)
    Entry("resolution", _build_resolution,
          {"target": "model", "seconds": "positive", "sampler": "callable", "alpha": "unit-open",
           "power": "unit-open", "projections": "choice", "max_joint_cells": "count", "seed": "natural"},
          extra={"projections": BAD_PROJECTIONS_LIST,
                 "seed": (("bool", "const", True), ("too-large", "const", 2**64))},
          # a seed of 10**12 is a valid seed (keys take 64-bit seeds; random huge ones are valid up to 2**63 - 1);
          # max_joint_cells is a limit: a huge one is valid (the joint is tested whenever it fits)
          skip=frozenset({("sampler", "none"), ("seed", "huge"), ("seed", "random-huge"),
                          ("max_joint_cells", "huge"), ("max_joint_cells", "random-huge")})),
    # logits with one token fewer are valid logits (over fewer tokens)
    Entry("categorical#precision", _build_categorical, {"key": "key", "logits": "logits", "shape": "sample_shape"},
          extra={"logits": (("scalar", "const", 1.0),),
                 "shape": (("incompatible", "const", (5, 3)), ("int", "const", 5))},
          skip=frozenset({("logits", "drop-last")})),
    # dtype=None: JAX's default float dtype (documented)
    Entry("gumbel#precision", _build_gumbel, {"key": "key", "shape": "sample_shape", "dtype": "choice"},
          extra={"dtype": (("int-dtype", "const", "int32"), ("float16", "const", "float16"))},
          skip=frozenset({("dtype", "none")})),
    Entry("gumbel_cap", _build_cap("gumbel_cap"), {"dtype": "choice", "mode": "choice"},
          extra={"dtype": (("int-dtype", "const", "int32"),)}),
    Entry("gumbel_floor", _build_cap("gumbel_floor"), {"dtype": "choice", "mode": "choice"},
          extra={"dtype": (("int-dtype", "const", "int32"),)}),
    # logits with one token fewer are valid logits (over fewer tokens)
    *[Entry(name, _build_law_of_logits(name), {"logits": "logits", "cap": "nonnegative", "floor": "nonnegative"},
            extra={**CAP_EXTRA, **FLOOR_EXTRA}, skip=CAP_VALID | FLOOR_VALID | {("logits", "drop-last")})
      for name in ("clamped_gumbel_law", "tv_bound", "suppression_bound")],
    Entry("worst_case_tv_bound", _build_worst_case,
          {"vocab_size": "count", "cap": "nonnegative", "floor": "nonnegative"},
          extra={**CAP_EXTRA, **FLOOR_EXTRA},
          # 10**12 tokens: a valid vocabulary (and any random huge one)
          skip=CAP_VALID | FLOOR_VALID | {("vocab_size", "huge"), ("vocab_size", "random-huge")}),
    Entry("library_tv_bound", _build_library_tv_bound, {"vocab_size": "count", "dtype": "choice"},
          extra={"dtype": (("int-dtype", "const", "int32"),)},
          skip=frozenset({("vocab_size", "huge"), ("vocab_size", "random-huge")})),  # a valid vocabulary
    # a (1, V) batch of laws is valid for entropy and tempered (they work along the last axis)
    Entry("entropy", _build_entropy, {"probs": "probs"}, skip=frozenset({("probs", "extra-dim")})),
    Entry("tempered", _build_tempered, {"probs": "probs", "temperature": "positive"},
          skip=frozenset({("probs", "extra-dim")})),
    Entry("effective_temperature", _build_effective_temperature, {"probs": "probs", "law": "law"},
          extra={"probs": (("uniform", "const", np.full(4, 0.25)),)}),
    # chunk=10**12 processes every step in one call (at most num_steps of them): valid
    Entry("masked_diffusion_token_law", _build_token_law,
          {"probs": "probs", "num_steps": "count", "cap": "nonnegative", "floor": "nonnegative", "chunk": "count"},
          extra={**CAP_EXTRA, **FLOOR_EXTRA},
          skip=CAP_VALID | FLOOR_VALID | {("chunk", "huge"), ("chunk", "random-huge")}),
    Entry("masked_diffusion_summary", _build_summary,
          {"probs": "probs", "num_steps": "count", "dtype": "choice", "mode": "choice"},
          extra={"dtype": (("int-dtype", "const", "int32"),)}),
    Entry("jax_grouped_law", _build_grouped, {"group_logits": "data", "group_sizes": "data", "dtype": "choice"},
          extra={"group_sizes": (("zero", "set_first", 0), ("fractional", "set_first", 0.5),
                                 ("negative", "set_first", -2)),
                 "group_logits": (("nan", "set_first", math.nan),),
                 "dtype": (("float64", "const", "float64"),)}),
    Entry("Schedule", _build_schedule, {"kind": "choice", "eps": "unit"},
          extra={"eps": (("one", "const", 1.0),)}),
    Entry("schedules.log_linear", _build_log_linear, {"eps": "unit"}, extra={"eps": (("one", "const", 1.0),)}),
    *[Entry(f"Schedule.{name}", _build_schedule_method(name), {"t": "unit"}, extra=SCHEDULE_T_EXTRA)
      for name in ("mask_prob", "alpha", "total", "mask_rate", "rate", "elbo_weight")],
]


# -- edges: valid but extreme input with a known answer ----------------------------------------

def _tv_of_identical():
    from arprob.verify import tv

    return tv(P3, P3)


def _kl_disjoint():
    from arprob.verify import kl

    return kl(np.array([1.0, 0.0]), np.array([0.0, 1.0]))


def _chi2_disjoint():
    from arprob.verify import chi2_divergence

    return chi2_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))


def _hellinger_disjoint():
    from arprob.verify import hellinger

    return hellinger(np.array([1.0, 0.0]), np.array([0.0, 1.0]))


def _gof_zero_hit():
    from arprob.verify import gof

    law = np.array([0.5, 0.5, 0.0, 0.0])
    return gof(np.array([[0, 0], [0, 1]] * 50 + [[1, 1]]), law)


def _gof_single_outcome():
    from arprob.verify import gof

    return gof(np.zeros((10, 1), int), np.array([1.0]), vocab_size=1)


def _gof_counts_without_samples():
    from arprob.verify import Counts, gof

    return gof(Counts(np.zeros(8), 2), LAW8)


def _gof_model_law():
    from arprob.verify import gof

    model = _small_model()
    tokens = np.asarray(model.sample(_key(), (500,)))
    return gof(tokens, model).p_value


def _plan_huge_support():
    from arprob.verify import plan

    return plan(0.05, 10**12, 1e-3, 0.9), plan(0.05, 27, 1e-3, 0.9)


def _detectable_huge():
    from arprob.verify import detectable

    return detectable(10**12, 10**12, 1e-3, 0.9)


def _power_of_huge():
    from arprob.verify import power_of

    return power_of(10**12, 0.05, 10**12, 1e-3)


def _plan_deviation_one():
    from arprob.verify import plan, power_of

    n = plan(1.0, 27, 1e-3, 0.9)
    return n, power_of(n, 1.0, 27, 1e-3)


def _worst_case_huge():
    from arprob import precision

    return precision.worst_case_tv_bound(10**12, 15.9, -4.5)


def _library_huge():
    from arprob import precision

    return precision.library_tv_bound(10**12)


def _clamped_unclamped():
    from arprob import precision

    law = precision.clamped_gumbel_law(np.array([0.0, -np.inf, 1.0]), math.inf)
    softmax = np.array([1.0, 0.0, math.e]) / (1.0 + math.e)
    return np.max(np.abs(law - softmax))


def _bounds_at_extreme_clamps():
    from arprob import precision

    logits = np.array([0.0, -1.0, 0.0])
    law = precision.clamped_gumbel_law(logits, -1e300)  # every noise value is the cap: the first maximum wins
    return (law, precision.tv_bound(logits, 15.9, -1e300), precision.worst_case_tv_bound(5, -1e300, -2e300),
            precision.suppression_bound(logits, -1e300))


def _categorical_minus_inf():
    import jax.numpy as jnp

    from arprob import precision

    return np.asarray(precision.categorical(_key(), jnp.array([-jnp.inf, 0.0, -jnp.inf]), shape=(200,)))


def _categorical_traced():
    import jax

    from arprob import precision

    return np.asarray(jax.jit(lambda key, logits: precision.categorical(key, logits, shape=(50,)))(
        _key(), np.array([0.0, -np.inf])))


def _entropy_point_mass():
    from arprob import precision

    return precision.entropy(np.array([0.0, 1.0, 0.0]))


def _token_law_one_step():
    from arprob import precision

    return precision.masked_diffusion_token_law(PROBS4, 1, 3.0, -4.0)


def _schedule_total_at_one():
    from arprob import schedules

    return schedules.linear().total(1.0)


def _schedule_traced():
    import jax

    from arprob import schedules

    return float(jax.jit(schedules.cosine().alpha)(0.5))


def _schedule_jax_array():
    import jax.numpy as jnp

    from arprob import schedules

    return np.asarray(schedules.linear().mask_prob(jnp.array([0.0, 0.5, 1.0])))


def _projected_law_full():
    from arprob.verify import projected_law

    return projected_law(LAW8, 2, 3, (0, 1, 2)), projected_law(LAW8, 2, 3, (2, 1, 0))


def _from_law_point_mass():
    from arprob.verify import from_law

    law = np.zeros(8)
    law[5] = 1.0
    return np.asarray(from_law(law, 2, 3)(_key(), 10))


EDGES = [
    Edge("tv: identical laws are at distance 0 exactly", _tv_of_identical, lambda r: r == 0.0),
    Edge("kl: disjoint supports give +inf", _kl_disjoint, lambda r: r == math.inf),
    Edge("chi2_divergence: q = 0 where p > 0 gives +inf", _chi2_disjoint, lambda r: r == math.inf),
    Edge("hellinger: disjoint supports are at distance 1", _hellinger_disjoint, lambda r: abs(r - 1.0) < 1e-15),
    Edge("gof: a sample on a zero-probability outcome gives p = 0", _gof_zero_hit,
         lambda r: r.p_value == 0.0 and r.zero_probability_hits == [(1, 1)]),
    Edge("gof: a one-outcome law is a degenerate test (df 0, p 1)", _gof_single_outcome,
         lambda r: r.df == 0 and r.p_value == 1.0),
    Edge("gof: Counts of zero samples are refused, not given p = 1", _gof_counts_without_samples, None,
         raises=ValueError, owner="gof"),
    Edge("gof: an exact model stands for its law", _gof_model_law, lambda r: 0.0 <= r <= 1.0),
    Edge("plan: 10**12 cells need more samples than 27, finitely many", _plan_huge_support,
         lambda r: isinstance(r[0], int) and r[0] > r[1] > 0),
    Edge("plan: deviation 1 reaches the power", _plan_deviation_one, lambda r: r[0] >= 1 and r[1] >= 0.9),
    Edge("detectable: 10**12 samples on 10**12 cells", _detectable_huge, lambda r: 0.0 < r < 1.0),
    Edge("power_of: 10**12 samples detect TV 0.05 for sure", _power_of_huge, lambda r: 0.99 <= r <= 1.0),
    Edge("worst_case_tv_bound: 10**12 tokens", _worst_case_huge, lambda r: 0.0 <= r <= 1.0),
    Edge("library_tv_bound: 10**12 tokens", _library_huge, lambda r: 0.0 < r < 1.0),
    Edge("clamped_gumbel_law: no clamp is softmax, -inf gets 0", _clamped_unclamped, lambda r: r < 1e-15),
    Edge("clamped_gumbel_law: a cap of -1e300 is a total clamp", _bounds_at_extreme_clamps,
         lambda r: np.array_equal(r[0], [1.0, 0.0, 0.0]) and 0.0 <= r[1] <= 1.0 and r[2] == 1.0
         and np.all((0.0 <= r[3]) & (r[3] <= 1.0))),
    Edge("categorical#precision: -inf tokens are never drawn", _categorical_minus_inf, lambda r: np.all(r == 1)),
    Edge("categorical#precision: works under jit", _categorical_traced, lambda r: np.all(r == 0)),
    Edge("entropy: a point mass has entropy 0", _entropy_point_mass, lambda r: r == 0.0),
    Edge("masked_diffusion_token_law: one step unmasks at once", _token_law_one_step,
         lambda r: abs(r.sum() - 1.0) < 1e-12),
    Edge("Schedule.total: linear masks everything at t = 1", _schedule_total_at_one, lambda r: r == math.inf),
    Edge("Schedule.alpha: traced t under jit", _schedule_traced,
         lambda r: abs(r - math.cos(math.pi / 4)) < 1e-6),
    Edge("Schedule.mask_prob: a concrete JAX array at the ends of [0, 1]", _schedule_jax_array,
         lambda r: np.array_equal(r, [0.0, 0.5, 1.0])),
    Edge("projected_law: every position is the law itself or its transpose", _projected_law_full,
         lambda r: np.array_equal(r[0], LAW8)
         and np.array_equal(r[1], LAW8.reshape(2, 2, 2).transpose(2, 1, 0).ravel())),
    Edge("from_law: a point mass always draws its sequence", _from_law_point_mass,
         lambda r: np.all(r == [1, 0, 1])),
]
