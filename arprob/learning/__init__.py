"""Parameter learning for HMMs and ARHMMs: EM (Baum-Welch) with partial knowledge of the states,
and gradient fitting through the same likelihood."""

from arprob.learning.em import fit_em
from arprob.learning.sgd import fit_sgd

__all__ = ["fit_em", "fit_sgd"]
