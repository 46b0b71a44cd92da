r"""Speculative decoding with an outside accept rule: the round loop on the host, the decision delegated.

An inference engine ships the accept/resample step of speculative decoding as
one function (transformers' ``_speculative_sampling``; vLLM and SGLang have
batched rejection samplers of the same inputs).  :func:`speculative_with`
runs everything around it — the draft proposing :math:`\gamma` tokens, the
target scoring the :math:`\gamma + 1` prefixes in one call, the bookkeeping
of positions and calls, the batching — in a NumPy loop over exact arprob
models, and calls the user's **rule** once per sequence per round in the
engines' common shape, ``rule(candidate_ids, draft_logits, target_logits, rng) -> (num_accepted, next_token)``:
``candidate_ids`` ``(g,)`` are the drafted tokens, ``draft_logits`` ``(g, V)``
the draft's log-probabilities they were proposed from (the *raw* draft, as an
engine hands it over), ``target_logits`` ``(g + 1, V)`` the target's
log-probabilities after each of the ``g + 1`` prefixes, ``rng`` a
:class:`numpy.random.Generator`.  The rule returns how many leading candidates
it keeps and the token that follows them (resampled after a rejection, the
bonus token when all are kept).  :func:`transformers_rule` wraps transformers'
function unmodified; :func:`exact_rule` and :func:`ensemble_rule` are NumPy
rules.

:func:`speculative_with_law` and :func:`speculative_with_cost` give the exact
law (float64 over all :math:`V^L` sequences) and the expected calls of the
loop when the rule and the drafting belong to a documented family.  Write
:math:`p_t, q_t` for the target's and the draft's next-token laws after a
prefix, :math:`s_t` for the law the draft token is drawn from, and
:math:`a_t(d) = \min(1, \rho_t(d))` for the acceptance probability:

* ``"exact"``: :math:`s_t = q_t`, :math:`\rho_t(d) = p_t(d) / q_t(d)`;
* ``"argmax-raw-q"``: :math:`s_t = \delta_{\arg\max q_t}` (ties: lowest id),
  :math:`\rho_t(d) = p_t(d) / q_t(d)` with ``q`` left raw;
* ``"top-k-raw-q"`` (``top_k=k``): :math:`s_t` is :math:`q_t` on its ``k``
  largest entries, renormalised; :math:`\rho_t(d) = p_t(d) / q_t(d)` with ``q`` left raw;
* ``"ensemble"`` (``weight=w``): :math:`s_t = q_t`,
  :math:`\rho_t(d) = 1 - w + w\, p_t(d) / q_t(d)`.

After the first rejection the token is drawn from the residual
:math:`r_t = (p_t - q_t)_+ / \sum_v (p_t - q_t)_+` and the round ends; when all
drafts are kept the bonus token is drawn from :math:`p` at the next position.
At a drafted position the round therefore has the factors

.. math::

    \Pr(\text{draft } v, \text{ keep it}) = s_t(v)\, a_t(v), \qquad
    \Pr(\text{reject}, \text{ output } v) = \Big(\sum_d s_t(d)\,(1 - a_t(d))\Big)\, r_t(v),

and the law of a sequence is the sum over its round decompositions of the
products of these factors and the bonus factors :math:`p_t(v)`, which the
dynamic program over round starts of :func:`speculative_with_law` computes.
What each family gives at one drafted position (output law :math:`m_t`):

* ``"exact"``: :math:`m_t = \min(q_t, p_t) + \mathrm{TV}(p_t, q_t)\, r_t = p_t`,
  so the loop samples the target exactly, under either round convention
  (theorem 6, ``proofs/06-speculative-decoding.md``; Leviathan et al. 2023).
* ``"argmax-raw-q"`` / ``"top-k-raw-q"``: the ratio assumes :math:`d \sim q_t`
  while :math:`d \sim s_t`; :math:`m_t = s_t \min(1, p_t/q_t) + \beta_t\, r_t \neq p_t`
  in general, with the rejection mass :math:`\beta_t = \sum_d s_t(d)\,(1 - a_t(d))`
  (a draft model run greedily, or with top-k, whose logits are handed to
  the accept step unprocessed).
* ``"ensemble"`` (transformers' ``assistant_ensemble_weight``, static ensemble
  verification of DIVERSE, arXiv:2604.07622): with
  :math:`v_t = w\, p_t + (1 - w)\, q_t`, :math:`s_t a_t = \min(q_t, v_t)`, the
  rejection mass is :math:`\sum (q_t - v_t)_+ = w\,\mathrm{TV}(p_t, q_t)` and
  :math:`w (p_t - q_t)_+ = (v_t - q_t)_+`, so :math:`m_t = v_t`: drafted
  positions follow the mixture, bonus positions follow :math:`p_t`, and the
  law is a round-dependent mixture of the two, lossy for every :math:`w < 1`.

The **round convention** (``last_round``) fixes the draft length of a round
that starts with ``remaining`` positions left:

* ``"arprob"`` (:func:`arprob.samplers.speculative`): ``min(γ, remaining)``
  drafts; when they fill the sequence and are all kept, no bonus token is
  used (the rule still returns one, scored on a padding row, and it is
  dropped).
* ``"transformers"`` (``AssistedCandidateGenerator._calculate_new_tokens``:
  ``min(num_assistant_tokens, max_length - cur_len - 1)``): ``min(γ, remaining - 1)``
  drafts, so that the bonus token always fits; with one position left the
  round drafts nothing and draws the token from the target alone (one target
  call, no rule call: transformers' ``candidate_logits is None`` path).

Both cost one target call per round; :func:`speculative_with_cost` gives the
expected rounds, draft calls, drafted, accepted and rejected tokens per
sequence from the same dynamic program.
"""

from __future__ import annotations

import jax
import numpy as np

from arprob._validation import (
    check_int,
    check_key,
    check_within_length,
    refuses_nan_output,
)
from arprob.conditionals import normalized_logits, split_static
from arprob.errors import ArprobTypeError, InvalidArgumentError
from arprob.samplers.speculative import (
    SpeculativeCost,
    SpeculativeStats,
    _families,
    enumerated_prefix_log_probs,
)

__all__ = [
    "FAMILIES",
    "LAST_ROUNDS",
    "ensemble_rule",
    "exact_rule",
    "speculative_with",
    "speculative_with_cost",
    "speculative_with_law",
    "transformers_rule",
]

LAST_ROUNDS = ("arprob", "transformers")
FAMILIES = ("exact", "argmax-raw-q", "top-k-raw-q", "ensemble")


# ---------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------


def _draw(rng, probs) -> int:
    """One inverse-CDF draw from unnormalised non-negative weights ``(V,)``."""
    cumulative = np.cumsum(probs)
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), probs.size - 1)


def _residual(p, q):
    positive = np.maximum(p - q, 0.0)
    total = positive.sum()
    return positive if total > 0 else p  # total 0 only when p == q, where no draft is ever rejected


def ensemble_rule(weight: float):
    r"""A NumPy rule accepting against :math:`v = w\,p + (1 - w)\,q` (transformers' ensemble verification).

    Keeps draft :math:`d` with probability :math:`\min(1, 1 - w + w\,p(d)/q(d))`;
    after a rejection draws from :math:`(p - q)_+` normalised, otherwise the
    bonus from :math:`p`.  ``weight=1`` is :func:`exact_rule`.  Its law is the
    ``"ensemble"`` family of :func:`speculative_with_law`.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)) or not 0 < weight <= 1:
        raise InvalidArgumentError(f"ensemble_rule: weight must be in (0, 1], got {weight!r} (1 is the exact rule)")
    weight = float(weight)

    def rule(candidate_ids, draft_logits, target_logits, rng):
        gamma = candidate_ids.shape[0]
        p, q = np.exp(target_logits), np.exp(draft_logits)
        rows = np.arange(gamma)
        with np.errstate(divide="ignore"):
            ratio = 1.0 - weight + weight * p[rows, candidate_ids] / q[rows, candidate_ids]
        kept = rng.random(gamma) < ratio
        num_accepted = int(np.argmin(kept)) if not kept.all() else gamma
        if num_accepted < gamma:
            return num_accepted, _draw(rng, _residual(p[num_accepted], q[num_accepted]))
        return gamma, _draw(rng, p[gamma])

    rule.__name__ = rule.__qualname__ = f"ensemble_rule({weight:g})"
    return rule


def exact_rule(candidate_ids, draft_logits, target_logits, rng):
    r"""Standard speculative sampling (Leviathan et al. 2023, algorithm 1) in NumPy.

    Keeps draft :math:`d_j` with probability :math:`\min(1, p_j(d_j)/q_j(d_j))`
    until the first rejection, then draws from :math:`(p_j - q_j)_+`
    normalised; the bonus token after all kept drafts is drawn from
    :math:`p_\gamma`.  Exact whatever the draft (family ``"exact"``).
    """
    return _EXACT(candidate_ids, draft_logits, target_logits, rng)


_EXACT = ensemble_rule(1.0)


def transformers_rule(function=None, **kwargs):
    r"""Wrap transformers' ``_speculative_sampling`` (called unmodified) as a rule.

    ``function(candidate_input_ids, candidate_logits, candidate_length, new_logits, **kwargs)``
    returns ``(valid_tokens, n_matches)``: the kept candidates followed by the
    next token, shape ``(1, n_matches + 1)``.  The adapter hands it the
    candidates as a ``(1, g)`` tensor, the draft's and target's
    log-probabilities as float64 ``(1, g, V)`` and ``(1, g + 1, V)`` tensors,
    and seeds torch's global generator from ``rng`` before each call (the
    function draws with ``torch.rand_like`` and ``torch.multinomial`` on the
    global generator), so a run is reproducible from the JAX key.  ``kwargs``
    go to the function (``assistant_ensemble_weight=0.99``: family
    ``"ensemble"``).  ``function=None`` imports
    ``transformers.generation.utils._speculative_sampling``.  Needs torch.

    The tensors are a few dozen numbers: torch's intra-op thread pool costs
    more than it saves on them, and ``torch.set_num_threads(1)`` makes the
    loop several times faster (about 250 us instead of 2 ms per call on two
    shared CPU cores).  Only torch's default CPU generator is reseeded.
    """
    import torch

    if function is None:
        from transformers.generation.utils import _speculative_sampling as function

    def rule(candidate_ids, draft_logits, target_logits, rng):
        torch.default_generator.manual_seed(int(rng.integers(2**63)))  # CPU generator: ~1 us (manual_seed: ~250)
        gamma = candidate_ids.shape[0]
        valid_tokens, n_matches = function(torch.from_numpy(np.asarray(candidate_ids, np.int64))[None],
                                           torch.from_numpy(draft_logits)[None], gamma,
                                           torch.from_numpy(target_logits)[None], **kwargs)
        return int(n_matches), int(valid_tokens[0, -1])

    rule.__name__ = rule.__qualname__ = f"transformers_rule({getattr(function, '__name__', 'function')})"
    return rule


# ---------------------------------------------------------------------------
# the host loop
# ---------------------------------------------------------------------------


def _check_last_round(owner: str, last_round):
    if last_round not in LAST_ROUNDS:
        raise InvalidArgumentError(f"{owner}: last_round={last_round!r} is not a round convention; expected one of "
                                   f"{LAST_ROUNDS} ('transformers': min(draft_length, remaining - 1) drafts and a "
                                   "target-only last step; 'arprob': min(draft_length, remaining) drafts)")
    return last_round


def _spans(remaining, draft_length: int, last_round: str):
    """Drafts per round for ``remaining`` positions left (vectorised)."""
    cap = remaining if last_round == "arprob" else remaining - 1
    return np.minimum(draft_length, cap)


def _seed_from_key(key) -> np.random.Generator:
    """A NumPy generator seeded from both 32-bit words of a JAX key (typed or legacy ``uint32[2]``)."""
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(np.asarray(key, np.uint32))
    return np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32))


class _NextToken:
    """Batched next-token log-probabilities ``log p(. | x_{<t})`` of one family, float64 ``(B, V)``.

    One jitted call of the family per query (shapes fixed by the batch, so it compiles once per size).
    """

    def __init__(self, family):
        self.dynamic, self.static = split_static(family)
        self.length, self.vocab_size = family.length, family.vocab_size

    def __call__(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        positions = np.arange(self.length)
        observed = positions[None, :] < lengths[:, None]
        safe = np.where(observed, tokens, self.vocab_size).astype(np.int32)
        logits = np.asarray(normalized_logits(self.dynamic, self.static, safe, observed), np.float64)
        row = np.minimum(lengths, self.length - 1)
        out = logits[np.arange(tokens.shape[0]), row]
        return out - np.logaddexp.reduce(out, axis=-1, keepdims=True)  # float32 families: renormalise in float64


def _drafting_probs(log_q: np.ndarray, draft_top_k: int) -> np.ndarray:
    """The law each draft token is drawn from: ``q`` (``0``) or its ``draft_top_k`` largest entries renormalised."""
    q = np.exp(log_q)
    if not draft_top_k:
        return q
    ranks = np.argsort(np.argsort(-log_q, axis=-1, kind="stable"), axis=-1, kind="stable")
    kept = np.where(ranks < draft_top_k, q, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def _draw_rows(rng, weights: np.ndarray) -> np.ndarray:
    """One inverse-CDF draw per row of ``weights`` ``(B, V)`` (unnormalised)."""
    cumulative = np.cumsum(weights, axis=-1)
    uniforms = rng.random(weights.shape[0]) * cumulative[:, -1]
    return np.minimum(np.sum(cumulative <= uniforms[:, None], axis=-1), weights.shape[-1] - 1)


def speculative_with(rule, key, target, draft, num_samples: int, draft_length: int, *,
                     last_round: str = "arprob", draft_top_k: int = 0):
    r"""Speculative decoding whose accept/resample step is ``rule`` (see the module docstring).

    Parameters
    ----------
    rule
        ``rule(candidate_ids (g,), draft_logits (g, V), target_logits (g + 1, V), rng) -> (num_accepted, next_token)``,
        called once per sequence per round with ``g >= 1`` (float64 log-probabilities, int64 ids, a
        :class:`numpy.random.Generator`).  :func:`exact_rule`, :func:`ensemble_rule`, :func:`transformers_rule`.
    key
        JAX PRNG key; every random number of the call (drafts, the rule's generator, the
        target-only steps) derives from it, so the same key gives the same tokens.
    target, draft
        Exact models or conditional families over the same sequence space; only their
        left-to-right (prefix) conditionals are used, one batched call per draft step and
        one per round for the target's ``g + 1`` prefixes.
    num_samples
        Number of sequences (the batch every model call covers).
    draft_length
        :math:`\gamma`, the most drafts per round.
    last_round
        ``"arprob"`` (default, as :func:`~arprob.samplers.speculative`) or ``"transformers"``.
    draft_top_k
        ``0``: drafts drawn from ``q``; ``k >= 1``: from the ``k`` most likely tokens of ``q``
        renormalised (``1`` is argmax drafting), while the rule still receives the raw ``q``
        (the ``"argmax-raw-q"`` and ``"top-k-raw-q"`` families).

    Returns
    -------
    tokens : numpy int32 ``(num_samples, length)``
    stats : SpeculativeStats
        NumPy arrays ``(num_samples,)``; ``nfe`` = ``target_calls`` (one per round,
        target-only steps included), as :func:`arprob.verify.check` averages it.
    """
    owner = "speculative_with"
    if not callable(rule):
        raise ArprobTypeError(f"{owner}: rule must be callable as rule(candidate_ids, draft_logits, target_logits, "
                              f"rng) -> (num_accepted, next_token), got {type(rule).__name__}")
    target, draft = _families(owner, target, draft)
    check_key(owner, key)
    num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    last_round = _check_last_round(owner, last_round)
    draft_top_k = check_int(owner, "draft_top_k", draft_top_k, minimum=0, maximum=target.vocab_size,
                            fix="0 samples from the draft, k >= 1 from its k most likely tokens")
    rng = _seed_from_key(key)
    length, vocab_size = target.length, target.vocab_size
    p_next, q_next = _NextToken(target), _NextToken(draft)
    n, gamma = num_samples, draft_length
    rows = np.arange(n)
    tokens = np.full((n, length), vocab_size, np.int64)
    pos = np.zeros(n, np.int64)
    calls, draft_calls, drafted, accepted, rejected = (np.zeros(n, np.int64) for _ in range(5))
    while np.any(pos < length):
        active = pos < length
        span = np.where(active, _spans(length - pos, gamma, last_round), 0)
        steps = int(span.max())
        log_q = np.zeros((n, steps, vocab_size))
        for j in range(steps):  # one batched draft call per drafted position
            drafting = span > j
            log_q[:, j] = q_next(tokens, np.minimum(pos + j, length - 1))
            token = (np.argmax(log_q[:, j], axis=-1) if draft_top_k == 1
                     else _draw_rows(rng, _drafting_probs(log_q[:, j], draft_top_k)))
            where = np.minimum(pos + j, length - 1)
            tokens[rows[drafting], where[drafting]] = token[drafting]
        # one target call per round: the g + 1 prefixes of every sequence, stacked
        prefix_lengths = np.minimum(pos[:, None] + np.arange(steps + 1)[None, :], length - 1)
        log_p = p_next(np.repeat(tokens, steps + 1, axis=0), prefix_lengths.reshape(-1)).reshape(n, steps + 1, -1)
        for b in np.flatnonzero(active):
            g = int(span[b])
            if g == 0:  # transformers' last step: the target alone
                num_accepted, next_token = 0, _draw(rng, np.exp(log_p[b, 0]))
            else:
                start = int(pos[b])
                num_accepted, next_token = _call_rule(owner, rule, tokens[b, start:start + g].copy(), log_q[b, :g],
                                                      log_p[b, :g + 1], rng, vocab_size)
            at = int(pos[b]) + num_accepted
            if at < length:  # "arprob": drafts that fill the sequence take no bonus; the rule's is dropped
                tokens[b, at] = next_token
                tokens[b, at + 1:] = vocab_size
            pos[b] = min(at + 1, length)
            calls[b] += 1
            draft_calls[b] += g
            drafted[b] += g
            accepted[b] += num_accepted
            rejected[b] += num_accepted < g
    stats = SpeculativeStats(nfe=calls, target_calls=calls, draft_calls=draft_calls, drafted=drafted,
                             accepted=accepted, rejected=rejected)
    return tokens.astype(np.int32), stats


def _call_rule(owner, rule, candidates, log_q, log_p, rng, vocab_size):
    gamma = candidates.shape[0]
    out = rule(candidates, log_q, log_p, rng)
    try:
        num_accepted, next_token = out
        num_accepted, next_token = int(num_accepted), int(next_token)
    except (TypeError, ValueError):
        raise ArprobTypeError(f"{owner}: the rule returned {out!r}; expected (num_accepted, next_token), two "
                              "integers") from None
    if not 0 <= num_accepted <= gamma or not 0 <= next_token < vocab_size:
        raise InvalidArgumentError(f"{owner}: the rule returned num_accepted={num_accepted}, next_token={next_token} "
                                   f"for {gamma} candidates; expected 0 <= num_accepted <= {gamma} and "
                                   f"0 <= next_token < {vocab_size}")
    return num_accepted, next_token


# ---------------------------------------------------------------------------
# exact law and cost: a dynamic program over round starts
# ---------------------------------------------------------------------------


def _family_parameters(owner: str, family, params: dict, vocab_size: int):
    """``(draft_top_k, weight)`` of a documented family."""
    if family not in FAMILIES:
        raise InvalidArgumentError(f"{owner}: rule_family={family!r} is not a documented family; expected one of "
                                   f"{FAMILIES}")
    expected = {"exact": set(), "argmax-raw-q": set(), "top-k-raw-q": {"top_k"}, "ensemble": {"weight"}}[family]
    if set(params) != expected:
        raise InvalidArgumentError(f"{owner}: family {family!r} takes the parameters {sorted(expected) or 'none'}, "
                                   f"got {sorted(params) or 'none'}")
    if family == "top-k-raw-q":
        return check_int(owner, "top_k", params["top_k"], minimum=1, maximum=vocab_size), 1.0
    if family == "ensemble":
        weight = params["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)) or not 0 < weight <= 1:
            raise InvalidArgumentError(f"{owner}: weight must be in (0, 1], got {weight!r} (1 is the exact family)")
        return 0, float(weight)
    return (1 if family == "argmax-raw-q" else 0), 1.0


def _position_factors(log_p: np.ndarray, log_q: np.ndarray, draft_top_k: int, weight: float):
    """``(keep, reject)`` ``(N, V)`` at one drafted position: P(draft v, keep it), P(reject, output v)."""
    p, q = np.exp(log_p), np.exp(log_q)
    s = _drafting_probs(log_q, draft_top_k)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = 1.0 - weight + weight * (p / q)
    keep_probability = np.minimum(1.0, np.nan_to_num(ratio, nan=1.0, posinf=1.0))  # q = 0: never drafted
    keep = s * keep_probability
    reject_mass = np.sum(s * (1.0 - keep_probability), axis=-1, keepdims=True)
    positive = np.maximum(p - q, 0.0)
    total = positive.sum(axis=-1, keepdims=True)
    residual = np.where(total > 0, positive / np.where(total > 0, total, 1.0), p)
    return keep, reject_mass * residual


def _with_dp(target, draft, draft_length: int, last_round: str, draft_top_k: int, weight: float, max_entries: int,
             owner: str):
    vocab_size, length = target.vocab_size, target.length
    sequences, log_p, log_q = enumerated_prefix_log_probs(target, draft, max_entries, owner,
                                                          "the law of the speculative loop")
    size = sequences.shape[0]
    rows = np.arange(size)
    keep, reject, bonus = [], [], []
    for t in range(length):
        k, r = _position_factors(log_p[:, t], log_q[:, t], draft_top_k, weight)
        token = sequences[:, t]
        keep.append(k[rows, token])
        reject.append(r[rows, token])
        bonus.append(np.exp(log_p[rows, t, token]))
    # reach[t][x]: P(a round starts at t with prefix x_{<t}); every prefix is repeated V**(L-t) times
    reach = np.zeros((length + 1, size))
    reach[0] = 1.0
    target_calls = drafted = accepted = rejected = 0.0
    for start in range(length):
        if not reach[start].any():
            continue
        span = int(_spans(length - start, draft_length, last_round))
        mass = reach[start].sum() / vocab_size ** (length - start)
        target_calls += mass
        drafted += span * mass
        running = reach[start].copy()
        for j in range(span):
            at = start + j
            reach[at + 1] += running * reject[at]
            rejected += (running * reject[at]).sum() / vocab_size ** (length - at - 1)
            running = running * keep[at]
            accepted += running.sum() / vocab_size ** (length - at - 1)
        if start + span < length:  # the bonus (or, for span 0, the target-only) token
            reach[start + span + 1] += running * bonus[start + span]
        else:
            reach[length] += running
    cost = SpeculativeCost(float(target_calls), float(drafted), float(drafted), float(accepted), float(rejected))
    return reach[length], cost


def _law_arguments(owner, rule_family, target, draft, draft_length, last_round, family_params):
    target, draft = _families(owner, target, draft)
    draft_length = check_within_length(owner, "draft_length", draft_length, target.length)
    last_round = _check_last_round(owner, last_round)
    draft_top_k, weight = _family_parameters(owner, rule_family, family_params, target.vocab_size)
    return target, draft, draft_length, last_round, draft_top_k, weight


@refuses_nan_output
def speculative_with_law(rule_family: str, target, draft, draft_length: int, *, last_round: str = "arprob",
                         max_entries: int = 2**26, **family_params) -> np.ndarray:
    r"""Exact law of :func:`speculative_with` for a documented rule family, float64 over ``V**L`` sequences.

    Parameters
    ----------
    rule_family
        ``"exact"`` (:func:`exact_rule`, or transformers' function), ``"argmax-raw-q"``
        (``draft_top_k=1``), ``"top-k-raw-q"`` (``top_k=k``; ``draft_top_k=k``),
        ``"ensemble"`` (``weight=w``: :func:`ensemble_rule`, or transformers'
        ``assistant_ensemble_weight=w``).  The table in the module docstring gives each.
    target, draft, draft_length, last_round
        As in :func:`speculative_with`.
    family_params
        ``top_k`` or ``weight``, as the family needs.

    Notes
    -----
    A dynamic program over round starts (module docstring): the probability
    that a round starts at position ``t`` after prefix :math:`x_{<t}` is carried
    forward through the round's keep, reject-and-resample and bonus factors.
    ``"exact"`` equals the target's law under both conventions (theorem 6);
    the tests hold every family against a brute-force enumeration of the
    rounds and the loop's samples against the law.
    """
    owner = "speculative_with_law"
    arguments = _law_arguments(owner, rule_family, target, draft, draft_length, last_round, family_params)
    return _with_dp(*arguments, max_entries, owner)[0]


@refuses_nan_output
def speculative_with_cost(rule_family: str, target, draft, draft_length: int, *, last_round: str = "arprob",
                          max_entries: int = 2**26, **family_params) -> SpeculativeCost:
    """Exact expected target calls (rounds), draft calls, drafted, accepted and rejected drafts per sequence.

    Same dynamic program and arguments as :func:`speculative_with_law`.
    ``target_calls`` is what :func:`speculative_with` reports as ``stats.nfe``
    (target-only steps included); ``draft_calls`` equals ``drafted``.
    """
    owner = "speculative_with_cost"
    arguments = _law_arguments(owner, rule_family, target, draft, draft_length, last_round, family_params)
    return _with_dp(*arguments, max_entries, owner)[1]
