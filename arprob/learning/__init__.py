"""Parameter learning: EM (Baum-Welch) for HMMs and ARHMMs with partial knowledge of the states."""

from arprob.learning.em import fit_em

__all__ = ["fit_em"]
