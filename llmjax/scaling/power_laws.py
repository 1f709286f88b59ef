"""Power laws y = k x^a and y = E + k x^a, and the robust objective every fit minimizes:
a Huber loss of log residuals, written with logsumexp, by BFGS from many starts."""

import dataclasses
import math

import numpy as np
from scipy import optimize, special

from llmjax.scaling.estimates import json_float, require

# BFGS, not L-BFGS-B: with 3-5 parameters the limited memory buys nothing, and scipy's
# L-BFGS-B (>= 1.15) calls multithreaded OpenBLAS on tiny arrays, 20-100x slower on a
# busy machine (scipy issue #22438); BFGS reaches the same optima in plain numpy.
BFGS = {'gtol': 1e-8, 'maxiter': 2000}


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = E + k x^a (E = 0 for a pure power law; a < 0 for a loss that falls with x).
  Fields may be arrays (one law per bootstrap draw); predict broadcasts."""
  k: float
  a: float
  E: float = 0.0

  def predict(self, x):
    return self.E + self.k * np.power(np.asarray(x, float), self.a)

  def to_dict(self) -> dict:
    return {f: json_float(getattr(self, f)) for f in ('k', 'a', 'E')}


def fit_power_law(x, y, *, offset: bool = False, delta: float = 1e-3) -> PowerLaw:
  """y = k x^a by least squares on log-log, or y = E + k x^a (offset) by a Huber loss
  of log residuals with log(E + k x^a) = logsumexp(log E, log k + a log x)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  require('a power law' + (' with offset' if offset else ''), 3 if offset else 2,
           len(np.unique(x)), 'distinct x')
  if np.any(x <= 0) or np.any(y <= 0):
    raise ValueError('power laws need positive x and y')
  a, log_k = np.polyfit(np.log(x), np.log(y), 1)
  if not offset:
    if abs(log_k) > 700:  # exp overflows: x values nearly equal, the slope is noise
      raise ValueError(f'power law fit diverged (log k = {log_k:.3g}); x spans too little')
    return PowerLaw(float(math.exp(log_k)), float(a))
  starts = []
  for fraction in (0.01, 0.3, 0.6, 0.9):  # E as a fraction of the smallest y
    slope, intercept = np.polyfit(np.log(x), np.log(y - fraction * y.min()), 1)
    starts.append([math.log(fraction * y.min()), intercept, -slope])
  theta = minimize(starts, np.log(x)[:, None], np.log(y), delta)[0]
  return PowerLaw(float(math.exp(theta[1])), float(-theta[2]), float(math.exp(theta[0])))


def huber_lse(theta, log_x, log_y, delta):
  """Sum of Huber(log prediction - log y) and its gradient, where the prediction is
  exp(c_0) + sum_j exp(c_j - s_j log x_j) and theta = (c_0, c_1..c_J, s_1..s_J).
  Working with logsumexp keeps every term positive and the fit scale-free."""
  n, terms = log_x.shape
  t = np.empty((n, terms + 1))
  t[:, 0] = theta[0]
  t[:, 1:] = theta[1:terms + 1] - theta[terms + 1:] * log_x
  top = t.max(1, keepdims=True)
  exp_t = np.exp(t - top)
  total = exp_t.sum(1)
  r = top[:, 0] + np.log(total) - log_y
  clipped = np.clip(r, -delta, delta)  # dHuber/dr
  weighted = (clipped / total)[:, None] * exp_t  # dHuber/dt: softmax weights
  gradient = np.concatenate([weighted.sum(0), -(weighted[:, 1:] * log_x).sum(0)])
  return np.sum(clipped * (r - 0.5 * clipped)), gradient


def huber_lse_many(thetas, log_x, log_y, delta):
  """The objective of huber_lse (no gradient) for many theta at once: (G,)."""
  terms = log_x.shape[1]
  c, s = thetas[:, None, :terms + 1], thetas[:, None, terms + 1:]
  t = np.concatenate([np.broadcast_to(c[..., :1], (len(thetas), len(log_y), 1)),
                      c[..., 1:] - s * log_x], axis=2)
  r = np.abs(special.logsumexp(t, axis=2) - log_y)
  return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum(1)


def minimize(starts, log_x, log_y, delta, objective=huber_lse) -> tuple[np.ndarray, float]:
  """The best (theta, objective) of BFGS runs from each start."""
  best = None
  for start in starts:
    result = optimize.minimize(objective, np.asarray(start, float), args=(log_x, log_y, delta),
                               jac=True, method='BFGS', options=BFGS)
    if np.all(np.isfinite(result.x)) and (best is None or result.fun < best.fun):
      best = result
  if best is None:
    raise ValueError('no BFGS run converged to finite parameters')
  return best.x, float(best.fun)
