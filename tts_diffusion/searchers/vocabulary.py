"""Options more than one searcher declares, declared once (torch-free): the same name means
the same thing in every searcher that takes it."""
from __future__ import annotations

from ..params import Param

#: the option every searcher shares (bookkeeping, not search); the registry adds it to a
#: declaration that leaves it out
KEEP_IMAGES = Param("keep_images", int, 16, "candidate images kept in the result (the best ones)", low=1)

#: resampling schemes of the particle methods (smc, fkc; searchers/particles.py implements them)
RESAMPLING_SCHEMES = ("multinomial", "systematic", "stratified", "residual")

RESAMPLING = Param("resampling", str, "systematic", "resampling scheme", choices=RESAMPLING_SCHEMES)


def eta(help_text: str = "noise of the stochastic steps (1: DDPM / the family's SDE)") -> Param:
    """`eta`, the noise of stochastic steps (1: the family's SDE, 0: the ODE)."""
    return Param("eta", float, 1.0, help_text, low=0.0)

#: stop when satisfied (every searcher): the search ends at the first round / potential step
#: whose best verifier score reaches it and the result reports the unspent budget
STOP_SCORE = Param("stop_score", float, None, "stop once the best score reaches this (e.g. 1 with the oracle); the"
                   " unspent NFE is reported in the result (settings['unspent_nfe'])")
