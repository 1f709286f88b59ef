"""Scaling-law fits of a results table, with bootstrap intervals (numpy and scipy only).

The three estimates of compute-optimal scaling of Hoffmann et al. (2022, "Chinchilla"):
  Approach 1: the lower envelope of loss against compute C; N and D of its points
    against C as power laws N_opt = k C^a, D_opt = k' C^b.
  Approach 2: IsoFLOP profiles: per budget a parabola of loss in log N; its minimum
    (N_opt, and D_opt interpolated in log D) against C as the same power laws.
  Approach 3: L(N, D) = E + A / N^alpha + B / D^beta fitted to every point in log space
    (Huber loss of log residuals, BFGS from a grid of starts); under C = 6 N D the
    optimum is closed-form: a = beta / (alpha + beta), b = alpha / (alpha + beta).
Intervals: refits of points resampled with replacement (within each IsoFLOP group for
Approach 2), reported as standard errors and 95% percentile intervals.
Constraints: Approach 3 can hold parameters fixed (`fix={'E': 1.48}`, for data whose
entropy is known); the others are then fitted given them. Whether a fit should be
believed is llmjax.scaling.diagnostics' job; its out-of-sample check, holdout's.

This module is the one import callers need; the work is done, by responsibility, in
  points.py           a results table -> the points every fit reads
  estimates.py        Estimate (value, standard error, interval) and the bootstrap loop
  power_laws.py       power laws and the Huber objective in log space, minimized by BFGS
  loss_law.py         Approach 3: LossLaw, its start grid, constraints, predictions
  compute_optimal.py  Approaches 1 and 2: N_opt(C) and D_opt(C)
"""

from llmjax.scaling.compute_optimal import (ComputeOptimal, approach1, approach2,  # noqa: F401
                                            envelope, isoflop_groups)
from llmjax.scaling.estimates import Estimate  # noqa: F401
from llmjax.scaling.loss_law import (LAW_FIELDS, Approach3, LossLaw, StartGrid,  # noqa: F401
                                     approach3, check_fix, predict)
from llmjax.scaling.points import points  # noqa: F401
from llmjax.scaling.power_laws import PowerLaw, fit_power_law  # noqa: F401
