r"""Absorbing (masked) discrete diffusion, exactly.

The forward process masks every token of :math:`x_0` independently: at time
:math:`t` a token is the mask (id ``V``) with probability :math:`m(t) = 1 -
e^{-\bar\sigma(t)}` (:mod:`arprob.schedules`), so

.. math::

    q_t(x_t \mid x_0) = \prod_i \bigl[m(t)\,\mathbb 1\{x_t^i = \mathtt{M}\}
        + (1 - m(t))\,\mathbb 1\{x_t^i = x_0^i\}\bigr], \qquad
    p_t(x_t) = m^{|M|}(1-m)^{L-|M|}\, p_0(x_t^{\neg M}),

where :math:`M` is the set of masked positions of :math:`x_t`.

**Theorem 3** (RADD; ``proofs/03-absorbing-concrete-score.md``).  The concrete
score of a masked position factorizes into an analytic time factor and a
clean-data conditional:

.. math::

    \frac{p_t(x_t^{i \leftarrow v})}{p_t(x_t)} = \frac{e^{-\bar\sigma(t)}}{1 - e^{-\bar\sigma(t)}}\;
    p_0(x^i = v \mid x_t^{\neg M}), \qquad i \in M,

so a network needs no time input: the conditional protocol is enough.

**Theorem 4** (``proofs/04-diffusion-elbo-any-order.md``).  The continuous-time
NLL bound

.. math::

    \mathcal L(x_0) = \int_0^1 \frac{m'(t)}{m(t)}\; \mathbb E_{x_t\sim q_t(\cdot\mid x_0)}
        \Bigl[\sum_{i\in M(x_t)} -\log q(x_0^i \mid x_t^{\neg M})\Bigr] dt
    = \sum_{k=1}^{L} h_k(x_0) \int_0^{m(1)} \lambda^{k-1}(1-\lambda)^{L-k}\,d\lambda,

with :math:`h_k = \sum_{|M|=k}\sum_{i\in M} -\log q(x_0^i\mid x_0^{\neg M})`,
equals the any-order expected NLL :math:`\mathbb E_\sigma[-\log q_\sigma(x_0)]`
for every schedule with :math:`m(1) = 1`, because
:math:`\int_0^1\lambda^{k-1}(1-\lambda)^{L-k}d\lambda = 1/(k\binom{L}{k})`.
The training losses of MDLM/SEDD (this integral), RADD's :math:`\lambda`-DCE,
ARDM's :math:`L/(L-t+1)` weighting and u-PMLM's uniform masking ratio are all
weighted sums of the same :math:`h_k` (:meth:`AbsorbingDiffusion.expected_loss`).
"""

from __future__ import annotations

import math
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.special

from arprob._validation import (
    check_enumeration,
    check_int,
    check_key,
    check_memory,
    check_shape,
    check_tokens,
    is_concrete,
)
from arprob.anyorder import AnyOrderAR
from arprob.conditionals import ExactConditionals, as_conditionals, join_static, normalized_logits, split_static
from arprob.errors import ArprobTypeError, InvalidArgumentError, ZeroProbabilityError
from arprob.schedules import Schedule

__all__ = ["LOSS_FORMS", "AbsorbingDiffusion"]

#: The masking objectives :meth:`AbsorbingDiffusion.training_loss` implements.
LOSS_FORMS = ("mdlm", "lambda_dce", "ardm", "upmlm")


class AbsorbingDiffusion:
    r"""Absorbing diffusion with a given denoiser (a conditional family) and noise schedule.

    Parameters
    ----------
    conditionals
        The clean-data conditionals :math:`q(x^i \mid x^{\neg M})` (a
        conditional family or an exact model): RADD's time-free denoiser.
    schedule
        A :class:`arprob.schedules.Schedule` (``schedules.linear()``,
        ``schedules.cosine()``, ``schedules.log_linear(eps)``).

    Notes
    -----
    The *model's joint* (used by :meth:`marginal_law` and the exact concrete
    score) is the law that the family's any-order sampler draws from: the
    exact model's ``law()`` for exact conditionals, the order mixture
    :math:`\bar q` (``ancestral_law(conditionals, "random")``) otherwise.
    Sequences with masks use token id ``V`` (``vocab_size``); laws over noisy
    sequences are indexed lexicographically in base ``V + 1``.
    """

    def __init__(self, conditionals, schedule):
        self.conditionals = as_conditionals(conditionals, "AbsorbingDiffusion")
        if not isinstance(schedule, Schedule):
            raise ArprobTypeError(
                f"AbsorbingDiffusion: schedule must be an arprob.schedules.Schedule "
                f"(schedules.linear(), cosine() or log_linear(eps)), got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self._any_order = AnyOrderAR(self.conditionals)

    @property
    def vocab_size(self) -> int:
        return self.conditionals.vocab_size

    @property
    def length(self) -> int:
        return self.conditionals.length

    def __repr__(self):
        return f"AbsorbingDiffusion({self.conditionals!r}, {self.schedule!r})"

    # -- checks ----------------------------------------------------------------
    def _time(self, owner: str, t) -> float:
        if isinstance(t, bool) or not is_concrete(t) or np.ndim(t) != 0 or not np.issubdtype(
                np.asarray(t).dtype, np.number) or not 0.0 <= float(t) <= 1.0:
            raise InvalidArgumentError(f"{owner}: t must be a (concrete, scalar) number in [0, 1], got {t!r}")
        return float(t)

    def _noisy(self, owner: str, xt):
        xt = np.asarray(xt)
        check_shape(owner, "xt", xt, (self.length,))
        check_tokens(owner, "xt", xt, self.vocab_size + 1)
        return xt.astype(np.int32)

    def joint_law(self, *, max_entries: int = 2**22) -> np.ndarray:
        """The model's joint over all ``V**L`` clean sequences (see the class notes)."""
        if isinstance(self.conditionals, ExactConditionals):
            return np.asarray(self.conditionals.model.law(max_entries=max_entries), np.float64)
        from arprob.samplers.ancestral import ancestral_law

        return ancestral_law(self.conditionals, "random", max_entries=max_entries)

    # -- forward process -------------------------------------------------------
    def forward_law(self, x0, t, *, max_entries: int = 2**24) -> np.ndarray:
        r"""Exact law of :math:`x_t` given :math:`x_0`, over all :math:`(V+1)^L` noisy sequences.

        :math:`q_t(x_t\mid x_0) = \prod_i [m\,\mathbb 1\{x_t^i=\mathtt M\} + (1-m)\,\mathbb 1\{x_t^i=x_0^i\}]`
        with :math:`m = m(t)`; shape ``(*batch, (V+1)**L)``, float64.
        """
        owner = "AbsorbingDiffusion.forward_law"
        t = self._time(owner, t)
        x0 = np.asarray(x0)
        check_shape(owner, "x0", x0, (self.length,))
        check_tokens(owner, "x0", x0, self.vocab_size)
        vocab, length = self.vocab_size, self.length
        check_enumeration(owner, vocab + 1, length, factor=max(1, x0.size // length), max_entries=max_entries,
                          what="the law of x_t")
        m = float(self.schedule.mask_prob(t))
        law = np.ones(x0.shape[:-1] + (1,))
        for i in range(length):
            factor = np.zeros(x0.shape[:-1] + (vocab + 1,))
            np.put_along_axis(factor, x0[..., i : i + 1].astype(np.int64), 1.0 - m, axis=-1)
            factor[..., vocab] += m
            law = (law[..., :, None] * factor[..., None, :]).reshape(x0.shape[:-1] + (-1,))
        return law

    def marginal_law(self, t, *, max_entries: int = 2**22) -> np.ndarray:
        r"""Exact law of :math:`x_t` under the model's joint, over all :math:`(V+1)^L` noisy sequences.

        :math:`p_t(y) = m^{|M|}(1-m)^{L-|M|}\,p_0(y^{\neg M})`: the clean
        marginal of the unmasked positions, computed by appending to every
        axis of the joint table its sum over that axis.
        """
        owner = "AbsorbingDiffusion.marginal_law"
        t = self._time(owner, t)
        vocab, length = self.vocab_size, self.length
        check_enumeration(owner, vocab + 1, length, max_entries=max_entries, what="the law of x_t")
        table = self.joint_law().reshape((vocab,) * length)
        for axis in range(length):
            table = np.concatenate([table, table.sum(axis=axis, keepdims=True)], axis=axis)
        m = float(self.schedule.mask_prob(t))
        masks = np.indices((vocab + 1,) * length).reshape(length, -1) == vocab
        count = masks.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            weight = np.where(count > 0, m**count, 1.0)
            weight = weight * np.where(length - count > 0, (1 - m) ** (length - count), 1.0)
        return table.reshape(-1) * weight

    # -- concrete score --------------------------------------------------------
    def concrete_score(self, xt, t, *, method: str = "factorized"):
        r"""The concrete score :math:`s(x_t, t)_{i,v} = p_t(x_t^{i\leftarrow v}) / p_t(x_t)`, shape ``(*batch, L, V)``.

        ``method="factorized"`` (RADD, theorem 3) uses one network call: for a
        masked position the analytic time factor
        :math:`e^{-\bar\sigma}/(1-e^{-\bar\sigma})` times
        :math:`q(v \mid x_t^{\neg M})`; for an unmasked one the ratio
        :math:`q(v\mid x_t^{\neg M\setminus i}) / q(x_t^i\mid x_t^{\neg M \setminus i})`.
        ``method="exact"`` reads both probabilities from :meth:`marginal_law`
        (small spaces; raises :class:`~arprob.errors.ZeroProbabilityError` if
        :math:`p_t(x_t) = 0`).  The two agree to rounding exactly when the
        family is consistent with the model's joint.
        """
        owner = "AbsorbingDiffusion.concrete_score"
        t = self._time(owner, t)
        if method not in ("factorized", "exact"):
            raise InvalidArgumentError(f"{owner}: method={method!r}, expected 'factorized' or 'exact'")
        xt = self._noisy(owner, xt)
        m = float(self.schedule.mask_prob(t))
        has_mask, has_clean = bool((xt == self.vocab_size).any()), bool((xt != self.vocab_size).any())
        if (m == 0.0 and has_mask) or (m == 1.0 and has_clean):
            raise ZeroProbabilityError(
                f"{owner}: at t={t} the mask probability is {m}, so an x_t with "
                f"{'masks' if m == 0.0 else 'clean tokens'} has probability zero and no score "
                "(pick 0 < t, or t < 1 for partially masked sequences)"
            )
        if method == "exact":
            return self._exact_score(xt, t)
        masked = xt == self.vocab_size
        dynamic, static = split_static(self.conditionals)
        log_q = np.asarray(normalized_logits(dynamic, static, jnp.asarray(xt), jnp.asarray(~masked)), np.float64)
        time_factor = (1.0 - m) / m if m > 0 else np.inf
        current = np.take_along_axis(log_q, np.minimum(xt, self.vocab_size - 1)[..., None], axis=-1)
        current = np.where(masked[..., None], 0.0, current)  # masked rows do not use it
        if np.isneginf(current).any():
            raise ZeroProbabilityError(
                f"{owner}: x_t has an unmasked token of conditional probability zero, so p_t(x_t) = 0 "
                "and the score (a ratio of probabilities) is undefined there"
            )
        unmasked_ratio = np.exp(log_q - current)
        return np.where(masked[..., None], time_factor * np.exp(log_q), unmasked_ratio)

    def _exact_score(self, xt, t):
        vocab, length = self.vocab_size, self.length
        law = self.marginal_law(t)
        powers = (vocab + 1) ** np.arange(length - 1, -1, -1)
        flat = xt.reshape(-1, length)
        index = flat @ powers
        if np.any(law[index] == 0):
            bad = flat[np.flatnonzero(law[index] == 0)[0]]
            raise ZeroProbabilityError(
                f"AbsorbingDiffusion.concrete_score: x_t = {bad.tolist()} has probability zero at t={t}; "
                "the score is a ratio of probabilities and is undefined there"
            )
        tokens = np.arange(vocab)
        changed = index[:, None, None] + (tokens[None, None, :] - flat[:, :, None]) * powers[None, :, None]
        return (law[changed] / law[index][:, None, None]).reshape(xt.shape + (vocab,))

    # -- the NLL bound and the training losses -----------------------------------
    def per_size_losses(self, x0):
        """The exact :math:`h_k(x_0)`, ``k = 0..L`` (see :meth:`arprob.AnyOrderAR.per_size_losses`)."""
        return self._h(x0)

    def _h(self, x0):
        """:meth:`per_size_losses` with ``x0`` checked in the name of the public method that asked."""
        owner = f"AbsorbingDiffusion.{sys._getframe(1).f_code.co_name}"
        if is_concrete(x0):
            check_shape(owner, "x0", x0, (self.length,))
            check_tokens(owner, "x0", x0, self.vocab_size)
        return np.asarray(self._any_order.per_size_losses(x0), np.float64)

    def elbo(self, x0):
        r"""The continuous-time NLL bound of ``x0`` by numerical quadrature over :math:`t \in [0, 1]`.

        The integrand :math:`\frac{m'(t)}{m(t)}\,\mathbb E_{x_t}[\sum_{i\in M}-\log q(x_0^i\mid x_t^{\neg M})]`
        is evaluated with its inner expectation computed exactly,
        :math:`\sum_k h_k\, m^k (1-m)^{L-k}`, and integrated with adaptive
        Gauss-Kronrod quadrature (``scipy.integrate.quad``, absolute and
        relative tolerance 1e-13).  For schedules with :math:`m(1)=1` this is
        :meth:`arprob.AnyOrderAR.expected_nll` (theorem 4); for
        ``log_linear(eps)`` it falls short of it by :meth:`truncation_gap`.
        """
        h = self._h(x0)  # (L+1, *batch)
        length = self.length
        flat = h.reshape(length + 1, -1)
        schedule = self.schedule
        out = np.empty(flat.shape[1])
        sizes = np.arange(1, length + 1)
        for column in range(flat.shape[1]):
            coefficients = flat[1:, column]

            def integrand(t, coefficients=coefficients):
                m = float(schedule.mask_prob(t))
                return float(schedule.mask_rate(t)) * float(
                    np.sum(coefficients * m ** (sizes - 1) * (1.0 - m) ** (length - sizes)))

            out[column] = scipy.integrate.quad(integrand, 0.0, 1.0, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
        return out.reshape(h.shape[1:])

    def truncation_gap(self, x0):
        r"""Analytic gap between the expected NLL and the ELBO of a truncated schedule.

        .. math::

            \mathbb E_\sigma[-\log q_\sigma(x_0)] - \mathcal L(x_0)
            = \sum_k h_k \int_{m(1)}^1 \lambda^{k-1}(1-\lambda)^{L-k} d\lambda.

        Zero for schedules that mask everything.  For ``log_linear(eps)``,
        :math:`m(1) = 1-\varepsilon` and the integral is
        :math:`B(k, L-k+1)\,[1 - I_{1-\varepsilon}(k, L-k+1)]` (regularized
        incomplete Beta); the ``k = L`` term, :math:`h_L\,(1-(1-\varepsilon)^L)/L`,
        dominates.  The truncated integral alone is then *not* an upper bound
        on the NLL (the prior term at :math:`t = 1` is missing).
        """
        h = self._h(x0)
        length = self.length
        upper = self.schedule.final_mask_prob
        sizes = np.arange(1, length + 1)
        complete = scipy.special.beta(sizes, length - sizes + 1)
        tail = complete * scipy.special.betaincc(sizes, length - sizes + 1, upper)
        if self.schedule.kind != "log_linear" or self.schedule.eps == 0.0:
            tail = np.zeros_like(tail)
        tail = tail.reshape(tail.shape + (1,) * (h.ndim - 1))
        return np.where(tail > 0, tail * h[1:], 0.0).sum(axis=0)

    def expected_loss(self, x0, form: str):
        r"""The exact expectation of a masking training loss, as a weighted sum of the :math:`h_k`.

        ``form`` is one of

        * ``"mdlm"`` -- MDLM/SEDD continuous time: :math:`t\sim U(0,1)`, mask with
          probability :math:`m(t)`, weight :math:`m'(t)/m(t)`:
          :math:`\sum_k h_k \int_0^{m(1)}\lambda^{k-1}(1-\lambda)^{L-k}d\lambda` (the ELBO);
        * ``"lambda_dce"`` -- RADD's :math:`\lambda`-DCE: :math:`\lambda\sim U(0,1)`,
          mask with probability :math:`\lambda`, weight :math:`1/\lambda`:
          :math:`\sum_k h_k B(k, L-k+1)`;
        * ``"ardm"`` -- ARDM: :math:`t\sim U\{1..L\}`, mask a uniform set of
          :math:`L-t+1` positions, weight :math:`L/(L-t+1)`:
          :math:`\sum_k \frac{1}{L}\frac{L}{k}\binom{L}{k}^{-1} h_k`;
        * ``"upmlm"`` -- u-PMLM: uniform masking ratio, i.e. a uniform number
          :math:`k\in\{1..L\}` of masked tokens, loss averaged over them
          (weight :math:`1/k`): :math:`\frac1L\sum_k \frac1k\binom{L}{k}^{-1}h_k`,
          the expected NLL *per token* (divided by ``L``).

        The first three equal :meth:`arprob.AnyOrderAR.expected_nll` for every
        schedule with :math:`m(1)=1`, and ``L`` times the fourth does
        (theorem 4, ``proofs/04-diffusion-elbo-any-order.md``).
        """
        owner = "AbsorbingDiffusion.expected_loss"
        if not isinstance(form, str) or form not in LOSS_FORMS:
            raise InvalidArgumentError(f"{owner}: form={form!r}, expected one of {LOSS_FORMS}")
        if is_concrete(x0):
            check_shape(owner, "x0", x0, (self.length,))
            check_tokens(owner, "x0", x0, self.vocab_size)
        if form == "mdlm":
            return self.elbo(x0)
        h = self._h(x0)
        length = self.length
        sizes = np.arange(1, length + 1)
        binomials = np.array([math.comb(length, int(k)) for k in sizes], np.float64)
        if form == "lambda_dce":
            weights = scipy.special.beta(sizes, length - sizes + 1)
        elif form == "ardm":
            weights = (1.0 / length) * (length / sizes) / binomials
        else:
            weights = (1.0 / length) * (1.0 / sizes) / binomials
        return np.tensordot(weights, h[1:], axes=(0, 0))

    def training_loss(self, key, x0, form: str, num_samples: int):
        r"""Monte Carlo estimate of a training loss (see :meth:`expected_loss`), with its standard error.

        Draws ``num_samples`` noise levels and masks per sequence, one network
        call each, exactly as a training step would.

        Returns
        -------
        mean, standard_error : Float[Array, "*batch"]
        """
        owner = "AbsorbingDiffusion.training_loss"
        key = check_key(owner, key)
        if not isinstance(form, str) or form not in LOSS_FORMS:
            raise InvalidArgumentError(f"{owner}: form={form!r}, expected one of {LOSS_FORMS}")
        num_samples = check_int(owner, "num_samples", num_samples, minimum=1)
        if is_concrete(x0):
            check_shape(owner, "x0", x0, (self.length,))
            check_tokens(owner, "x0", x0, self.vocab_size)
        check_memory(owner, f"num_samples={num_samples:,} noise draws per sequence",
                     (num_samples, max(int(np.size(x0)), 1), self.vocab_size + 1), itemsize=4,
                     fix="use fewer samples per call and average the estimates")
        x0 = jnp.asarray(x0)
        if is_concrete(x0):
            check_shape(owner, "x0", x0, (self.length,))
            check_tokens(owner, "x0", x0, self.vocab_size)
        flat = x0.reshape(-1, self.length).astype(jnp.int32)
        dynamic, static = split_static(self.conditionals)
        values = _loss_samples(key, dynamic, static, flat, self.schedule, form, num_samples)  # (n, B)
        mean = values.mean(axis=0)
        stderr = values.std(axis=0, ddof=1) / np.sqrt(num_samples) if num_samples > 1 else jnp.zeros_like(mean)
        return mean.reshape(x0.shape[:-1]), stderr.reshape(x0.shape[:-1])


@partial(jax.jit, static_argnames=("static", "schedule", "form", "num_samples"))
def _loss_samples(key, dynamic, static, x0, schedule, form, num_samples):
    family = join_static(dynamic, static)
    batch, length = x0.shape
    key_level, key_mask = jax.random.split(key)
    shape = (num_samples, batch)
    uniforms = jax.random.uniform(key_mask, shape + (length,))
    if form in ("mdlm", "lambda_dce"):
        level = jax.random.uniform(key_level, shape, minval=1e-300 if jnp.result_type(float) == jnp.float64
                                   else 1e-30)
        if form == "mdlm":
            mask_prob = schedule.mask_prob(level)
            weight = schedule.mask_rate(level) / mask_prob
        else:
            mask_prob, weight = level, 1.0 / level
        masked = uniforms < mask_prob[..., None]
    else:
        count = jax.random.randint(key_level, shape, 1, length + 1)
        ranks = jnp.argsort(jnp.argsort(uniforms, axis=-1), axis=-1)  # a uniform random ranking
        masked = ranks < count[..., None]
        weight = length / count if form == "ardm" else 1.0 / count
    xs = jnp.broadcast_to(x0, shape + (length,))
    logits = jax.nn.log_softmax(family(jnp.where(masked, family.vocab_size, xs), ~masked), axis=-1)
    nll = -jnp.take_along_axis(logits, xs[..., None], axis=-1)[..., 0]
    return weight * jnp.where(masked, nll, 0.0).sum(axis=-1)
