r"""ARDM's budgeted parallel generation: which steps to merge under a budget of network calls.

An any-order model generating one token per call pays, at the step where
:math:`k` tokens are already revealed, the expected loss

.. math::

    c_k = \mathbb E_{x\sim p}\ \mathbb E_{|S|=k}\ \mathbb E_{i\notin S}\bigl[-\log q(x_i \mid x_S)\bigr]
        = \frac{\mathbb E_{x\sim p}[h_{L-k}(x)]}{\binom{L}{k}(L-k)},

with :math:`h` the per-size losses of :meth:`arprob.AnyOrderAR.per_size_losses`;
:math:`\sum_{k<L} c_k` is the expected any-order NLL.  Hoogeboom et al. (2022,
ARDM, section 4) generate the steps :math:`a, a+1, \dots, b-1` in *one* call
by drawing all of them from the conditionals given the :math:`a` revealed
tokens, which costs :math:`(b-a)\,c_a` instead of :math:`\sum_{k=a}^{b-1} c_k`
(each :math:`c_k` is non-increasing in :math:`k` for a well-trained model, so
merging costs loss).  With a budget of :math:`B` calls, the best partition of
:math:`0..L` into :math:`B` segments is found by dynamic programming,

.. math::

    D(b, j) = \min_{a<j} D(b-1, a) + (j-a)\,c_a, \qquad D(0, 0) = 0,

in :math:`O(B L^2)`.  The resulting block sizes drive
:func:`arprob.samplers.parallel_unmask`, whose *exact* law
(:func:`~arprob.samplers.parallel_unmask_law`) says what the merge really
costs: :func:`budget_curve` reports the DP loss next to the exact
cross-entropy and TV of the generated law.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from arprob._enumerate import all_sequences
from arprob._validation import check_positive_int
from arprob.anyorder import AnyOrderAR
from arprob.conditionals import as_conditionals
from arprob.errors import InvalidArgumentError, InvalidProbabilityError

__all__ = ["BudgetCurve", "budget_curve", "budgeted_blocks", "step_losses"]


def step_losses(conditionals, target) -> np.ndarray:
    r"""The per-step expected losses :math:`c_0, \dots, c_{L-1}` (nats), exactly.

    Parameters
    ----------
    conditionals
        A conditional family or an exact model.
    target
        The data law: an arprob model (its ``law()`` is used), a float64 law
        over all ``V**L`` sequences, or an int array of samples ``(N, L)``
        (then :math:`c_k` is the average over the samples).

    Notes
    -----
    Evaluated eagerly even when called while a function is being traced (the
    losses depend on parameters only), so a sampler that picks its blocks from
    them, such as ``parallel_unmask(key, model, n, budgeted_blocks(...)[0])``,
    can be jitted: the blocks are fixed at trace time.
    """
    owner = "step_losses"
    family = as_conditionals(conditionals, owner)
    vocab_size, length = family.vocab_size, family.length
    if hasattr(target, "law"):
        sequences, weights = all_sequences(vocab_size, length), np.asarray(target.law(), np.float64)
    else:
        array = np.asarray(target)
        if np.issubdtype(array.dtype, np.floating) and array.ndim == 1:
            if array.shape[0] != vocab_size**length or abs(array.sum() - 1.0) > 1e-9:
                raise InvalidProbabilityError(
                    f"{owner}: target law has {array.shape[0]} entries summing to {array.sum():.6g}; "
                    f"expected {vocab_size**length} probabilities summing to 1"
                )
            sequences, weights = all_sequences(vocab_size, length), array
        elif np.issubdtype(array.dtype, np.integer) and array.ndim == 2 and array.shape[1] == length:
            sequences, weights = array, np.full(array.shape[0], 1.0 / array.shape[0])
        else:
            raise InvalidArgumentError(
                f"{owner}: target must be a model, a law over {vocab_size}**{length} sequences, or int samples "
                f"of shape (N, {length}); got an array of shape {array.shape} and dtype {array.dtype}"
            )
    keep = weights > 0
    with jax.ensure_compile_time_eval():  # concrete even inside a trace (e.g. a sampler under jit)
        per_size = np.asarray(AnyOrderAR(family).per_size_losses(sequences[keep]), np.float64)  # (L+1, N)
    expected = per_size @ weights[keep]  # E[h_m], m = number masked
    revealed = np.arange(length)
    return np.array([expected[length - k] / (math.comb(length, k) * (length - k)) for k in revealed])


def _check_losses(owner: str, losses) -> np.ndarray:
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 1 or losses.size == 0 or not np.all(np.isfinite(losses)):
        raise InvalidArgumentError(
            f"{owner}: step_losses must be a non-empty 1-d array of finite losses (one per step), "
            f"got shape {losses.shape}"
        )
    return losses


def budgeted_blocks(losses, budget: int) -> tuple[tuple[int, ...], float]:
    r"""The best block sizes for ``budget`` network calls and their DP loss.

    Parameters
    ----------
    losses
        :math:`c_0, \dots, c_{L-1}` from :func:`step_losses`.
    budget
        Number of network calls, ``1 <= budget <= L``.

    Returns
    -------
    blocks : tuple[int, ...]
        Block sizes in generation order, summing to ``L`` (pass as ``k`` to
        :func:`arprob.samplers.parallel_unmask`).
    loss : float
        :math:`\sum_{\text{blocks } [a,b)} (b-a)\,c_a`.
    """
    owner = "budgeted_blocks"
    losses = _check_losses(owner, losses)
    length = losses.size
    budget = check_positive_int(owner, "budget", budget)
    if budget > length:
        raise InvalidArgumentError(f"{owner}: budget={budget} is more than the {length} steps; use 1..{length}")
    best = np.full((budget + 1, length + 1), np.inf)
    choice = np.zeros((budget + 1, length + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for calls in range(1, budget + 1):
        for end in range(1, length + 1):
            starts = np.arange(end)
            candidates = best[calls - 1, starts] + (end - starts) * losses[starts]
            choice[calls, end] = int(np.argmin(candidates))
            best[calls, end] = candidates[choice[calls, end]]
    blocks, end = [], length
    for calls in range(budget, 0, -1):
        start = choice[calls, end]
        blocks.append(int(end - start))
        end = start
    return tuple(reversed(blocks)), float(best[budget, length])


class BudgetCurve(NamedTuple):
    """Loss against the number of network calls (see :func:`budget_curve`).

    Attributes
    ----------
    budgets
        ``1..L``.
    dp_loss
        The DP's loss per budget (nats): the expected per-path cross-entropy.
    cross_entropy
        :math:`-\\sum_x p(x)\\log \\text{law}_B(x)` of the generated law (exact).
    tv
        :math:`\\mathrm{TV}(p, \\text{law}_B)` (exact).
    blocks
        The chosen block sizes per budget.
    """

    budgets: np.ndarray
    dp_loss: np.ndarray
    cross_entropy: np.ndarray
    tv: np.ndarray
    blocks: tuple


def budget_curve(conditionals, target) -> BudgetCurve:
    r"""The loss-vs-budget curve of ARDM's budgeted parallel generation, with exact laws.

    For every budget :math:`B = 1..L`: the DP-optimal blocks, the DP's loss,
    and the exact law of :func:`arprob.samplers.parallel_unmask` with those
    blocks (:func:`~arprob.samplers.parallel_unmask_law`), reported as
    cross-entropy and total variation from ``target`` (an arprob model).
    The DP loss upper-bounds the cross-entropy (Jensen over orders) and at
    :math:`B = L` equals the expected any-order NLL.
    """
    from arprob.samplers.masked import parallel_unmask_law

    family = as_conditionals(conditionals, "budget_curve")
    target_law = np.asarray(target.law(), np.float64)
    losses = step_losses(family, target)
    length = family.length
    rows = []
    for budget in range(1, length + 1):
        blocks, dp_loss = budgeted_blocks(losses, budget)
        law = parallel_unmask_law(family, blocks)
        support = target_law > 0
        with np.errstate(divide="ignore"):
            cross_entropy = float(-(target_law[support] * np.log(law[support])).sum())
        rows.append((budget, dp_loss, cross_entropy, 0.5 * float(np.abs(law - target_law).sum()), blocks))
    budgets, dp, ce, tv, blocks = zip(*rows)
    return BudgetCurve(np.array(budgets), np.array(dp), np.array(ce), np.array(tv), tuple(blocks))
