"""Covariance scores (Eq. 10) and the Clip-Cov / KL-Cov token selection built on them.

- :func:`centred_product`: ``cov_i = (log π_i − μ_lp)(A_i − μ_A)``, the one implementation;
- :func:`select_clip_cov`, :func:`select_kl_cov`: the selections, global over the optimizer
  mini-batch across micro-batches and ranks (:class:`~entropyrl.distributed.Dist`).
"""

from entropyrl.covariance.cov import centred_product
from entropyrl.covariance.selection import (
    CovSelection,
    SelectionPart,
    select_clip_cov,
    select_kl_cov,
    selection_count,
)

__all__ = [
    "CovSelection",
    "SelectionPart",
    "centred_product",
    "select_clip_cov",
    "select_kl_cov",
    "selection_count",
]
