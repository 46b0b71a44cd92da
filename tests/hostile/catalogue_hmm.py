"""Hostile-input catalogue of the HMM layer: the inference kernels (``arprob.inference.hmm``,
``arprob.inference.chain``), :class:`~arprob.ARHMM`, prognostics and learning (``fit_em``, ``fit_sgd``).

Shapes are small (2-3 states, T = 6-8, D = 2) so that every case runs in well under a second once
compiled.  ``skip`` lists only specs that are *valid* input for that argument (each one documented
where declared); the convention those specs fall under is checked by an :class:`Edge` below.

The convention (``arprob.inference.hmm``, ``docs/concepts/hmm-inference.md``):

* ``-inf`` log-potentials are impossible evidence: ``log Z = -inf``, never NaN; posterior
  probabilities that condition on the impossible evidence are exactly 0 (no law); the Viterbi path and
  the kernels' sampled states are ``-1`` there; functions whose whole answer is a posterior summary
  (``hmm_posterior_sample``, ``ARHMM.posterior_sample``, ``degradation_level``, ``rul_distribution``,
  ``time_to_threshold``) raise :class:`~arprob.errors.ZeroProbabilityError` on concrete input;
* NaN (and ``+inf``) log-potentials are refused;
* NaN in observations marks a missing observation, exactly as ``mask=False`` at that row; ``±inf`` in
  observations is refused.
"""

from __future__ import annotations

import math

import numpy as np

from hostile.framework import Edge, Entry

K, T, D = 2, 6, 2


# -- valid values -----------------------------------------------------------------------------

def _kernel_inputs():
    rng = np.random.default_rng(0)
    return dict(
        log_initial=np.log(np.array([0.6, 0.4])),
        log_transition=np.log(np.array([[0.9, 0.1], [0.2, 0.8]])),
        log_likelihoods=rng.normal(size=(T, K)),
        log_prior=np.zeros((T, K)),
        mask=np.ones(T, bool),
        length=T,
        parallel=False,
    )


def _model(num_states=3, num_lags=1, length=8, initial=None):
    from arprob import ARHMM

    rng = np.random.default_rng(1)
    transition = np.zeros((num_states, num_states))
    for k in range(num_states - 1):  # left to right, the last state absorbing
        transition[k, k], transition[k, k + 1] = 0.7, 0.3
    transition[-1, -1] = 1.0
    initial = np.eye(num_states)[0] * 0.7 + 0.3 / num_states if initial is None else initial
    weights = 0.3 * rng.normal(size=(num_states, num_lags, D, D))
    biases = np.stack([np.linspace(0, 2, num_states), np.linspace(0, 1, num_states)], axis=1)
    covariances = np.broadcast_to(0.5 * np.eye(D), (num_states, D, D)).copy()
    return ARHMM(initial, transition, weights, biases, covariances, num_lags, length=length)


def _record(length=8):
    return np.cumsum(0.5 * np.random.default_rng(2).normal(size=(length, D)), axis=0)


# kinds shared by the entries
_LOGITS_VALID = {  # -inf everywhere is impossible evidence, a valid input (edges below); None means "absent"
    ("log_initial", "all-minus-inf"), ("log_transition", "all-minus-inf"), ("log_likelihoods", "all-minus-inf"),
    ("log_prior", "all-minus-inf"), ("log_prior", "none"), ("mask", "none"), ("length", "none"),
}
_MASK_EXTRA = (("float", "astype", "float64"), ("drop-last", "drop_last"), ("empty", "empty"),
               ("extra-dim", "add_axis"))
_KERNEL_KINDS = {"log_initial": "logits", "log_transition": "logits", "log_likelihoods": "logits",
                 "log_prior": "logits", "mask": "bool", "length": "count", "parallel": "bool"}


def _kernel_entry(name):
    def build():
        from arprob.inference import hmm

        return getattr(hmm, name), _kernel_inputs()

    return Entry(name, build, dict(_KERNEL_KINDS), extra={"mask": _MASK_EXTRA}, skip=frozenset(_LOGITS_VALID))


def _posterior_sample_build():
    import jax

    from arprob.inference.hmm import hmm_posterior_sample

    return hmm_posterior_sample, dict(key=jax.random.key(0), num_samples=4, **_kernel_inputs())


# -- chain kernels ----------------------------------------------------------------------------

def _chain_inputs():
    vocab_size, context_size = 2, 1
    rng = np.random.default_rng(3)
    table = rng.dirichlet(np.ones(vocab_size), size=(vocab_size + 1) ** context_size)
    return dict(log_table=np.log(table), tokens=np.array([0, 1, 1, 0]), vocab_size=vocab_size,
                context_size=context_size)


def _chain_build(name, observed):
    def build():
        from arprob.inference import chain

        kwargs = _chain_inputs()
        if observed:
            kwargs["observed"] = np.array([True, False, True, True])
        return getattr(chain, name), kwargs

    return build


_CHAIN_KINDS = {"log_table": "logits", "tokens": "tokens", "vocab_size": "count", "context_size": "count"}


def _window_build():
    from arprob.inference.chain import window_indices

    return window_indices, dict(tokens=np.array([0, 1, 1, 0]), vocab_size=2, context_size=1)


def _next_window_build():
    from arprob.inference.chain import next_window_index

    return next_window_index, dict(vocab_size=2, context_size=1)


def _start_window_build():
    from arprob.inference.chain import start_window_index

    return start_window_index, dict(vocab_size=2, context_size=1)


def _normalize_build():
    from arprob.inference.chain import normalize_or_uniform

    return normalize_or_uniform, dict(unnormalized=np.log(np.array([[0.2, 0.3], [0.5, 0.1]])))


# -- ARHMM ------------------------------------------------------------------------------------

def _arhmm_constructor_build():
    from arprob import ARHMM

    model = _model()
    return ARHMM, dict(initial_probs=np.asarray(model.initial_probs), transition_probs=np.asarray(
        model.transition_probs), weights=np.asarray(model.weights), biases=np.asarray(model.biases),
        covariances=np.asarray(model.covariances), num_lags=1, length=8)


def _method_build(method, *, key=False, extra=None, y_name="y"):
    def build():
        import jax

        model = _model()
        kwargs = {y_name: _record()}
        if method not in ("emission_log_likelihoods",):
            kwargs.update(log_prior=np.zeros((7, 3)), mask=np.ones(7, bool))
        if key:
            kwargs["key"] = jax.random.key(0)
        kwargs.update(extra or {})
        return getattr(model, method), kwargs

    return build


_SEQUENCE_KINDS = {"y": "data", "log_prior": "logits", "mask": "bool"}
_SEQUENCE_SKIP = frozenset({("log_prior", "all-minus-inf"), ("log_prior", "none"), ("mask", "none")})


def _sample_build(method):
    def build():
        import jax

        return getattr(_model(), method), dict(key=jax.random.key(0), sample_shape=(3,), history=np.zeros((1, D)),
                                               length=8)

    return build


def _forecast_build():
    import jax

    model = _model()
    return model.forecast, dict(key=jax.random.key(0), history=np.zeros((1, D)), horizon=3, num_samples=8,
                                state_probs=np.array([0.5, 0.3, 0.2]))


def _stationary_build():
    from arprob.distributions.arhmm import stationary_distribution

    return stationary_distribution, dict(transition_probs=np.array([[0.9, 0.1], [0.2, 0.8]]))


# -- prognostics ------------------------------------------------------------------------------

def _degradation_build():
    from arprob.prognostics import degradation_level

    return degradation_level, dict(model=_model(), y=_record(), levels=np.array([0.0, 1.0, 2.0]),
                                   log_prior=np.zeros((7, 3)), mask=np.ones(7, bool))


def _rul_build():
    from arprob.prognostics import rul_distribution

    return rul_distribution, dict(model=_model(), y=_record(), threshold_state=2, max_horizon=10,
                                  log_prior=np.zeros((7, 3)), mask=np.ones(7, bool), length=8)


def _time_build():
    import jax

    from arprob.prognostics import time_to_threshold

    return time_to_threshold, dict(key=jax.random.key(0), model=_model(), y=_record(), threshold_state=2,
                                   num_samples=16, max_horizon=10, log_prior=np.zeros((7, 3)),
                                   mask=np.ones(7, bool), length=8)


def _quantile_build():
    from arprob.prognostics import rul_distribution

    law = rul_distribution(_model(), _record(), 2, 10)
    return law.quantile, dict(q=0.5)


_PROGNOSTIC_SKIP = frozenset({("log_prior", "all-minus-inf"), ("log_prior", "none"), ("mask", "none"),
                              ("length", "none"), ("levels", "none")})


# -- learning ---------------------------------------------------------------------------------

def _fit_em_build():
    model = _model(length=None)
    from arprob import fit_em

    return fit_em, dict(model=model, data=_record(), state_prior=np.ones((8, 3)), mask=np.ones(8, bool),
                        lengths=np.array([8]), max_iters=2, tol=1e-6, num_restarts=1, key=None,
                        tied_covariance=False, covariance_floor=1e-6, transition_concentration=1.0,
                        emission_concentration=1.0, weights_precision=0.0, covariance_prior_scale=0.0,
                        covariance_prior_count=0.0, freeze=())


def _fit_em_hmm_build():
    from arprob import HMM, fit_em

    model = HMM(np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.7, 0.3], [0.2, 0.8]]), 6)
    return fit_em, dict(model=model, data=np.array([0, 1, 1, 0, 1, 1]), state_prior=np.ones((6, 2)),
                        mask=np.ones(6, bool), max_iters=2, emission_concentration=1.0)


def _fit_sgd_build():
    from arprob import fit_sgd

    return fit_sgd, dict(model=_model(length=None), data=_record(), num_steps=2, learning_rate=0.05,
                         optimizer=None)


ENTRIES = [
    # inference kernels
    *(_kernel_entry(name) for name in ("hmm_log_likelihood", "hmm_filter", "hmm_backward", "hmm_smoother",
                                       "hmm_pairwise_marginals", "hmm_expected_transitions", "hmm_viterbi")),
    Entry("hmm_posterior_sample", _posterior_sample_build,
          {"key": "key", "num_samples": "count", **_KERNEL_KINDS}, extra={"mask": _MASK_EXTRA},
          skip=frozenset(_LOGITS_VALID)),
    # the window chain (-inf entries of a table are impossible transitions: log p = -inf, edge below)
    Entry("chain_log_prob", _chain_build("chain_log_prob", False), dict(_CHAIN_KINDS),
          skip=frozenset({("log_table", "all-minus-inf"),
                          ("tokens", "wrong-length")})),  # full sequences (..., L) of any length L >= 1
    Entry("chain_marginal_log_prob", _chain_build("chain_marginal_log_prob", True),
          {**_CHAIN_KINDS, "observed": "bool"}, extra={"observed": _MASK_EXTRA},
          skip=frozenset({("log_table", "all-minus-inf")})),
    Entry("chain_conditional_logits", _chain_build("chain_conditional_logits", True),
          {**_CHAIN_KINDS, "observed": "bool"}, extra={"observed": _MASK_EXTRA},
          skip=frozenset({("log_table", "all-minus-inf")})),
    Entry("window_indices", _window_build, {"tokens": "tokens", "vocab_size": "count", "context_size": "count"},
          skip=frozenset({("tokens", "wrong-length")})),  # any length L >= 1 is valid here
    Entry("next_window_index", _next_window_build, {"vocab_size": "count", "context_size": "count"}),
    Entry("start_window_index", _start_window_build, {"vocab_size": "count", "context_size": "count"}),
    # all -inf rows become uniform: the documented convention of normalize_or_uniform (edge below)
    Entry("normalize_or_uniform", _normalize_build, {"unnormalized": "logits"},
          skip=frozenset({("unnormalized", "all-minus-inf"),
                          ("unnormalized", "drop-last")})),  # any width V >= 1 is valid
    # ARHMM
    Entry("ARHMM", _arhmm_constructor_build,
          {"initial_probs": "probs", "transition_probs": "probs", "weights": "data", "biases": "data",
           "covariances": "data", "num_lags": "natural", "length": "count"},
          extra={"covariances": (("nan", "set_first", math.nan), ("not-positive-definite", "scale", -1.0))},
          skip=frozenset({("length", "none")})),  # no length: observations of any length
    Entry("ARHMM.emission_log_likelihoods", _method_build("emission_log_likelihoods"), {"y": "data"},
          skip=frozenset({("y", "extra-dim")})),  # a batch of sequences (1, T, D) is valid here
    Entry("ARHMM.log_prob", _method_build("log_prob", y_name="value"),
          {"value": "data", "log_prior": "logits", "mask": "bool"},
          extra={"mask": _MASK_EXTRA[:3]},  # not extra-dim: log_prob broadcasts over leading axes
          skip=_SEQUENCE_SKIP | {("value", "extra-dim")}),  # a batch (1, T, D) is valid for log_prob
    *(Entry(f"ARHMM.{method}", _method_build(method), dict(_SEQUENCE_KINDS), extra={"mask": _MASK_EXTRA},
            skip=_SEQUENCE_SKIP) for method in ("filter", "smooth", "viterbi")),
    Entry("ARHMM.posterior_sample", _method_build("posterior_sample", key=True, extra={"num_samples": 4}),
          {"key": "key", "num_samples": "count", **_SEQUENCE_KINDS}, extra={"mask": _MASK_EXTRA},
          skip=_SEQUENCE_SKIP),
    *(Entry(f"ARHMM.{method}", _sample_build(method),
            {"key": "key", "sample_shape": "sample_shape", "history": "data", "length": "count"},
            # history=None means zeros; length=None the constructor's length
            skip=frozenset({("history", "none"), ("length", "none")}))
      for method in ("sample", "sample_with_states")),
    Entry("ARHMM.forecast", _forecast_build,
          {"key": "key", "history": "data", "horizon": "count", "num_samples": "count", "state_probs": "probs"},
          skip=frozenset({("state_probs", "none")})),  # None: the model's initial law
    Entry("stationary_distribution", _stationary_build, {"transition_probs": "probs"}),
    # prognostics
    Entry("degradation_level", _degradation_build,
          {"model": "model", "y": "data", "levels": "data", "log_prior": "logits", "mask": "bool"},
          extra={"mask": _MASK_EXTRA, "levels": (("nan", "set_first", math.nan),)}, skip=_PROGNOSTIC_SKIP),
    Entry("rul_distribution", _rul_build,
          {"model": "model", "y": "data", "threshold_state": "count", "max_horizon": "count", "log_prior": "logits",
           "mask": "bool", "length": "count"},
          extra={"mask": _MASK_EXTRA, "max_horizon": (("billion", "const", 10**9),)}, skip=_PROGNOSTIC_SKIP),
    Entry("time_to_threshold", _time_build,
          {"key": "key", "model": "model", "y": "data", "threshold_state": "count", "num_samples": "count",
           "max_horizon": "count", "log_prior": "logits", "mask": "bool", "length": "count"},
          extra={"mask": _MASK_EXTRA, "max_horizon": (("billion", "const", 10**9),),
                 "num_samples": (("billion", "const", 10**9),)}, skip=_PROGNOSTIC_SKIP),
    Entry("RULDistribution.quantile", _quantile_build, {"q": "unit"}),
    # learning
    Entry("fit_em", _fit_em_build,
          {"model": "model", "data": "data", "state_prior": "probs", "mask": "bool", "lengths": "tokens",
           "max_iters": "count", "tol": "nonnegative", "num_restarts": "count", "key": "key",
           "tied_covariance": "bool", "covariance_floor": "positive", "transition_concentration": "positive",
           "emission_concentration": "positive", "weights_precision": "nonnegative",
           "covariance_prior_scale": "nonnegative", "covariance_prior_count": "nonnegative", "freeze": "choice"},
          extra={"mask": _MASK_EXTRA, "state_prior": (("zero", "scale", 0.0),)},
          # state_prior: weights need not be normalised; None: no prior.  key=None is valid with one restart.
          # A mask one shorter than the data (T - num_lags = 7 entries) is the modelled-steps alignment.
          skip=frozenset({("state_prior", "unnormalized"), ("state_prior", "none"), ("mask", "none"),
                          ("lengths", "none"), ("key", "none"), ("mask", "drop-last")})),
    Entry("fit_em#hmm", _fit_em_hmm_build,  # "#..." distinguishes the entry; messages name fit_em
          {"model": "model", "data": "tokens", "state_prior": "probs", "mask": "bool", "max_iters": "count",
           "emission_concentration": "positive"},
          extra={"mask": _MASK_EXTRA, "state_prior": (("zero", "scale", 0.0),)},
          skip=frozenset({("state_prior", "unnormalized"), ("state_prior", "none"), ("mask", "none")})),
    Entry("fit_sgd", _fit_sgd_build,
          {"model": "model", "data": "data", "num_steps": "count", "learning_rate": "positive",
           "optimizer": "callable"},
          extra={"optimizer": (("adam-string", "const", "adam"),), "data": (("one-row", "const", np.zeros((1, D))),)},
          # None: Adam with learning_rate; data (1, T, D) is a batch of one sequence
          skip=frozenset({("optimizer", "none"), ("data", "extra-dim")})),
]


# -- edges: the convention --------------------------------------------------------------------

def _finite_or_neginf(value):
    return not np.isnan(np.asarray(value, dtype=np.float64)).any()


def _impossible(argument):
    kwargs = _kernel_inputs()
    kwargs[argument] = np.full(np.shape(kwargs[argument]), -np.inf)
    return kwargs


def _no_nan(result):
    import jax

    return all(not np.isnan(np.asarray(leaf, dtype=np.float64)).any() for leaf in jax.tree_util.tree_leaves(result))


def _kernel_edge(name, parallel, argument="log_likelihoods"):
    def call():
        from arprob.inference import hmm

        kwargs = _impossible(argument)
        kwargs["parallel"] = parallel
        return getattr(hmm, name)(**kwargs)

    def check(result):
        if not _no_nan(result):
            return False
        if name == "hmm_log_likelihood":
            return float(result) == -np.inf
        if name == "hmm_viterbi":
            path, log_weight = result
            return float(log_weight) == -np.inf and np.all(np.asarray(path) == -1)
        if name in ("hmm_pairwise_marginals", "hmm_expected_transitions"):
            return np.all(np.asarray(result) == 0.0)
        if float(result.log_likelihood) != -np.inf:
            return False
        if name == "hmm_smoother":
            return np.all(np.asarray(result.smoothed_probs) == 0.0)
        if name == "hmm_backward":
            return np.all(np.asarray(result.log_backward)[:-1] == -np.inf)
        return True

    form = "parallel" if parallel else "sequential"
    return Edge(f"{name} {form}: all -inf {argument} -> log Z = -inf, no NaN", call, check)


def _partial_impossible_filter(parallel):
    def call():
        from arprob.inference.hmm import hmm_filter

        kwargs = _kernel_inputs()
        kwargs["log_likelihoods"][3] = -np.inf
        kwargs["parallel"] = parallel
        reference = hmm_filter(**{**_kernel_inputs(), "parallel": parallel})
        return hmm_filter(**kwargs), reference

    def check(results):
        result, reference = results
        filtered = np.asarray(result.filtered_probs)
        return (_no_nan(result) and float(result.log_likelihood) == -np.inf
                and np.allclose(filtered[:3], np.asarray(reference.filtered_probs)[:3], atol=1e-12)
                and np.all(filtered[3:] == 0.0))

    form = "parallel" if parallel else "sequential"
    return Edge(f"hmm_filter {form}: impossible step 3 -> filtered rows before it exact, from it 0", call, check)


def _sample_impossible(parallel):
    def call():
        import jax

        from arprob.inference.hmm import hmm_posterior_sample

        kwargs = _impossible("log_likelihoods")
        kwargs["parallel"] = parallel
        return hmm_posterior_sample(jax.random.key(0), num_samples=3, **kwargs)

    from arprob.errors import ZeroProbabilityError

    form = "parallel" if parallel else "sequential"
    return Edge(f"hmm_posterior_sample {form}: impossible evidence -> ZeroProbabilityError", call, bool,
                raises=ZeroProbabilityError, owner="hmm_posterior_sample")


def _sample_impossible_jit():
    def call():
        import jax

        from arprob.inference.hmm import hmm_posterior_sample

        kwargs = _impossible("log_likelihoods")
        del kwargs["length"], kwargs["parallel"]
        return jax.jit(lambda key, **kw: hmm_posterior_sample(key, num_samples=3, **kw))(jax.random.key(0), **kwargs)

    return Edge("hmm_posterior_sample under jit: impossible evidence -> every state -1", call,
                lambda paths: np.all(np.asarray(paths) == -1))


def _missing_edges():
    """NaN in an observation row is exactly mask=False at that row (data-aligned), for every consumer."""

    def record_and_mask():
        y = _record()
        y_nan = y.copy()
        y_nan[4, 1] = np.nan  # one component missing: the whole row is missing
        observed = np.ones(8, bool)
        observed[4] = False
        return y, y_nan, observed

    def method_edge(method):
        def call():
            model = _model()
            y, y_nan, observed = record_and_mask()
            return getattr(model, method)(y_nan), getattr(model, method)(y, mask=observed)

        def check(results):
            import jax

            first, second = (jax.tree_util.tree_leaves(r) for r in results)
            return all(np.array_equal(np.asarray(a), np.asarray(b)) or np.allclose(a, b, rtol=0, atol=1e-10)
                       for a, b in zip(first, second)) and _no_nan(results[0])

        return Edge(f"ARHMM.{method}: NaN row == mask=False", call, check)

    def degradation():
        from arprob.prognostics import degradation_level

        model = _model()
        y, y_nan, observed = record_and_mask()
        return degradation_level(model, y_nan), degradation_level(model, y, mask=observed)

    def rul():
        from arprob.prognostics import rul_distribution

        model = _model()
        y, y_nan, observed = record_and_mask()
        return rul_distribution(model, y_nan, 2, 10), rul_distribution(model, y, 2, 10, mask=observed)

    def time():
        import jax

        from arprob.prognostics import time_to_threshold

        model = _model()
        y, y_nan, observed = record_and_mask()
        key = jax.random.key(1)
        return (time_to_threshold(key, model, y_nan, 2, 64, 10),
                time_to_threshold(key, model, y, 2, 64, 10, mask=observed))

    def em():
        from arprob import fit_em

        model = _model(length=None)
        y, y_nan, observed = record_and_mask()
        return fit_em(model, y_nan, max_iters=3, tol=0.0)[1], fit_em(model, y, mask=observed, max_iters=3, tol=0.0)[1]

    def sgd():
        from arprob import fit_sgd

        model = _model(length=None)
        y, y_nan, observed = record_and_mask()
        _, losses = fit_sgd(model, y_nan, num_steps=1)
        return losses[0], -float(model.log_prob(y, mask=observed))

    def pair_check(results):
        import jax

        first, second = (jax.tree_util.tree_leaves(r) for r in results)
        return _no_nan(results[0]) and all(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0,
                                                       atol=1e-10) for a, b in zip(first, second))

    return [
        *(method_edge(method) for method in ("log_prob", "filter", "smooth", "viterbi")),
        Edge("degradation_level: NaN row == mask=False", degradation, pair_check),
        Edge("rul_distribution: NaN row == mask=False", rul, pair_check),
        Edge("time_to_threshold: NaN row == mask=False (same key, same draws)", time, pair_check),
        Edge("fit_em: NaN row == mask=False", em, pair_check),
        Edge("fit_sgd: NaN row == mask=False (first loss is -log p with the mask)", sgd, pair_check),
    ]


def _arhmm_impossible_edges():
    from arprob.errors import ZeroProbabilityError

    def prior():
        return np.full((7, 3), -np.inf)

    def log_prob():
        return _model().log_prob(_record(), log_prior=prior())

    def posterior_sample():
        import jax

        return _model().posterior_sample(jax.random.key(0), _record(), 3, log_prior=prior())

    def degradation():
        from arprob.prognostics import degradation_level

        return degradation_level(_model(), _record(), log_prior=prior())

    def rul():
        from arprob.prognostics import rul_distribution

        return rul_distribution(_model(), _record(), 2, 10, log_prior=prior())

    def time():
        import jax

        from arprob.prognostics import time_to_threshold

        return time_to_threshold(jax.random.key(0), _model(), _record(), 2, 8, 10, log_prior=prior())

    return [
        Edge("ARHMM.log_prob: impossible prior -> -inf", log_prob, lambda value: float(value) == -np.inf),
        Edge("ARHMM.posterior_sample: impossible prior -> ZeroProbabilityError", posterior_sample, bool,
             raises=ZeroProbabilityError, owner="ARHMM.posterior_sample"),
        Edge("degradation_level: impossible prior -> ZeroProbabilityError", degradation, bool,
             raises=ZeroProbabilityError, owner="degradation_level"),
        Edge("rul_distribution: impossible prior -> ZeroProbabilityError", rul, bool,
             raises=ZeroProbabilityError, owner="rul_distribution"),
        Edge("time_to_threshold: impossible prior -> ZeroProbabilityError", time, bool,
             raises=ZeroProbabilityError, owner="time_to_threshold"),
    ]


def _chain_edges():
    def impossible_table():
        from arprob.inference.chain import chain_log_prob, chain_marginal_log_prob

        kwargs = _chain_inputs()
        kwargs["log_table"] = np.full_like(kwargs["log_table"], -np.inf)
        observed = np.array([True, False, True, True])
        return chain_log_prob(**kwargs), chain_marginal_log_prob(observed=observed, **kwargs)

    def uniform():
        from arprob.inference.chain import normalize_or_uniform

        return normalize_or_uniform(np.full((2, 3), -np.inf))

    return [
        Edge("chain kernels: all -inf table -> log p = -inf", impossible_table,
             lambda values: all(float(v) == -np.inf for v in values)),
        Edge("normalize_or_uniform: all -inf row -> uniform", uniform,
             lambda value: np.allclose(np.asarray(value), -np.log(3.0), rtol=0, atol=1e-12)),
    ]


def _em_edges():
    from arprob.errors import ZeroProbabilityError

    def zero_row():
        from arprob import fit_em

        prior = np.ones((8, 3))
        prior[5] = 0.0
        return fit_em(_model(length=None), _record(), state_prior=prior, max_iters=2)

    def incompatible():
        from arprob import fit_em

        prior = np.ones((8, 3))
        prior[3] = [0.0, 0.0, 1.0]  # left to right: the last state at step 3 ...
        prior[5] = [1.0, 0.0, 0.0]  # ... then the first at step 5: no path
        return fit_em(_model(length=None), _record(), state_prior=prior, max_iters=2)

    return [
        Edge("fit_em: a state_prior row of zeros -> error naming state_prior", zero_row, bool,
             raises=ZeroProbabilityError, owner="fit_em"),
        Edge("fit_em: state_prior no path can satisfy -> ZeroProbabilityError", incompatible, bool,
             raises=ZeroProbabilityError, owner="fit_em"),
    ]


EDGES = [
    *(_kernel_edge(name, parallel)
      for name in ("hmm_log_likelihood", "hmm_filter", "hmm_backward", "hmm_smoother", "hmm_pairwise_marginals",
                   "hmm_expected_transitions", "hmm_viterbi")
      for parallel in (False, True)),
    *(_kernel_edge(name, parallel, argument)
      for name in ("hmm_log_likelihood", "hmm_smoother")
      for parallel in (False, True)
      for argument in ("log_initial", "log_transition", "log_prior")),
    *(_partial_impossible_filter(parallel) for parallel in (False, True)),
    *(_sample_impossible(parallel) for parallel in (False, True)),
    _sample_impossible_jit(),
    *_missing_edges(),
    *_arhmm_impossible_edges(),
    *_chain_edges(),
    *_em_edges(),
]
