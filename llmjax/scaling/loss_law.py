"""Approach 3 of Hoffmann et al. (2022): L(N, D) = E + A / N^alpha + B / D^beta fitted to
every point in log space (Huber loss of log residuals, BFGS from a grid of starts),
optionally with parameters held fixed (`fix={'E': 1.48}` for data of known entropy), with
bootstrap intervals; under C = 6 N D its optimum is closed-form."""

import dataclasses
import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from llmjax.scaling.estimates import Estimate, bootstrap_draws, estimate, require
from llmjax.scaling.power_laws import huber_lse, huber_lse_many, minimize


LAW_FIELDS = ('E', 'A', 'B', 'alpha', 'beta')


@dataclasses.dataclass(frozen=True)
class LossLaw:
  """L(N, D) = E + A / N^alpha + B / D^beta, and its compute-optimal allocation under
  C = 6 N D. Fields may be arrays (one law per bootstrap draw); methods broadcast."""
  E: float
  A: float
  B: float
  alpha: float
  beta: float

  def predict(self, N, D):
    return self.E + self.A * np.power(N, -self.alpha) + self.B * np.power(D, -self.beta)

  @property
  def a(self):
    """Exponent of N_opt(C)."""
    return self.beta / (self.alpha + self.beta)

  @property
  def b(self):
    """Exponent of D_opt(C)."""
    return self.alpha / (self.alpha + self.beta)

  @property
  def G(self):
    # NaN, quietly, for a law with a negative exponent (a bootstrap resample can fit one):
    # it has no compute-optimal allocation, and the diagnostics say so.
    with np.errstate(invalid='ignore'):
      return np.power(self.alpha * self.A / (self.beta * self.B), 1 / (self.alpha + self.beta))

  def n_opt(self, C):
    return self.G * np.power(np.asarray(C, float) / 6, self.a)

  def d_opt(self, C):
    return np.power(np.asarray(C, float) / 6, self.b) / self.G

  def loss_opt(self, C):
    """The loss of the compute-optimal model at C (the frontier of loss against compute)."""
    return self.predict(self.n_opt(C), self.d_opt(C))

  def to_dict(self) -> dict:
    return {f: float(getattr(self, f)) for f in LAW_FIELDS}


@dataclasses.dataclass(frozen=True)
class StartGrid:
  """Starting points of Approach 3's fit, over theta = (e, a, b, alpha, beta) with
  E = exp(e), A = exp(a), B = exp(b) (the grid of Hoffmann et al., Appendix D.2). Every
  start is scored and BFGS runs from the `refine` best (0: all): runs from all 5,400
  starts take minutes and, on the data we tried, reach the same optimum as the best 32."""
  e: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
  a: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
  b: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
  alpha: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
  beta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
  refine: int = 32

  def thetas(self) -> np.ndarray:
    return np.array(list(itertools.product(self.e, self.a, self.b, self.alpha, self.beta)))


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not fits
class Approach3:
  """The parametric fit: the law, its objective, and the laws refitted to resamples."""
  law: LossLaw
  objective: float
  n_points: int
  draws: np.ndarray  # (accepted resamples, 5): E, A, B, alpha, beta
  bootstrap: int  # resamples asked for; draws holds those that could be fitted
  fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)  # held, not fitted

  @property
  def draw_laws(self) -> LossLaw:
    return LossLaw(*self.draws.T)

  def estimates(self) -> dict[str, Estimate]:
    """The law's parameters and the exponents a, b of N_opt and D_opt."""
    laws = self.draw_laws
    return {name: estimate(getattr(self.law, name), getattr(laws, name))
            for name in LAW_FIELDS + ('a', 'b', 'G')}

  def at(self, C: float) -> dict[str, Estimate]:
    """Compute-optimal N, D, tokens per parameter and loss at budget C."""
    law, laws = self.law, self.draw_laws
    return {'N_opt': estimate(law.n_opt(C), laws.n_opt(C)),
            'D_opt': estimate(law.d_opt(C), laws.d_opt(C)),
            'tokens_per_param': estimate(law.d_opt(C) / law.n_opt(C),
                                          laws.d_opt(C) / laws.n_opt(C)),
            'loss': estimate(law.loss_opt(C), laws.loss_opt(C))}

  def to_dict(self) -> dict:
    return {'law': self.law.to_dict(),
            'estimates': {k: e.to_dict() for k, e in self.estimates().items()},
            'objective': self.objective, 'n_points': self.n_points, 'fixed': dict(self.fixed),
            'bootstrap': self.bootstrap, 'bootstrap_fitted': len(self.draws)}


def predict(fit: Approach3, N: float, D: float) -> Estimate:
  """Loss at (N, D) from Approach 3's law, with the bootstrap interval."""
  return estimate(fit.law.predict(N, D), fit.draw_laws.predict(N, D))


def approach3(pts: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0,
              grid: StartGrid = StartGrid(), delta: float = 1e-3,
              fix: Mapping[str, float] | None = None) -> Approach3:
  """Fits L(N, D) = E + A / N^alpha + B / D^beta to `points(...)` (Approach 3).

  Args:
    pts: points() of a results table.
    bootstrap: number of resamples with replacement to refit (0: no intervals).
    seed: seed of the resampling.
    grid: starting points of the optimizer.
    delta: Huber threshold on log residuals (1e-3 as in Hoffmann et al.).
    fix: parameters held at a value instead of fitted, e.g. {'E': 1.48} for data whose
      entropy is known; the others (and their intervals) are fitted given it.
  """
  fixed = check_fix(fix or {})
  log_x = np.log(pts[['N', 'D']].to_numpy(float))
  log_y = np.log(pts['loss'].to_numpy(float))
  _check_approach3(log_x, len(fixed))
  objective_fn = _held(fixed)
  thetas = np.unique(_hold(grid.thetas(), fixed), axis=0)
  scores = np.concatenate([huber_lse_many(thetas[i:i + 256], log_x, log_y, delta)
                           for i in range(0, len(thetas), 256)])  # bounded memory
  starts = thetas[np.argsort(scores)[:grid.refine]] if grid.refine else thetas
  free = [i for i in range(5) if i not in fixed]
  theta, objective = minimize(starts[:, free], log_x, log_y, delta, objective_fn)

  def refit(rows):  # from the full data's optimum: resamples stay in its basin
    _check_approach3(log_x[rows], len(fixed))
    found = minimize([theta], log_x[rows], log_y[rows], delta, objective_fn)[0]
    return _law_vector(_full_theta(found, fixed))

  draws = bootstrap_draws(refit, lambda rng: rng.integers(0, len(log_y), len(log_y)), bootstrap,
                     seed, 5)
  return Approach3(LossLaw(*_law_vector(_full_theta(theta, fixed))), objective, len(log_y),
                   draws, bootstrap, {LAW_FIELDS[i]: v for i, v in _fixed_values(fixed).items()})


def check_fix(fix: Mapping[str, float]) -> dict[int, float]:
  """{name: value} -> {theta index: theta value}; errors name the bad parameter."""
  out = {}
  for name, value in fix.items():
    if name not in LAW_FIELDS:
      raise ValueError(f'cannot fix {name!r}: the parameters are {", ".join(LAW_FIELDS)}')
    value = float(value)
    log_scale = name in ('E', 'A', 'B')
    if not math.isfinite(value) or (log_scale and value <= 0):
      raise ValueError(f'cannot fix {name}={value}: it must be finite'
                       + (' and positive' if log_scale else ''))
    out[LAW_FIELDS.index(name)] = math.log(value) if log_scale else value
  if len(out) == 5:
    raise ValueError('every parameter is fixed: nothing to fit')
  return out


def _fixed_values(fixed: dict[int, float]) -> dict[int, float]:
  return {i: math.exp(v) if i < 3 else v for i, v in fixed.items()}


def _hold(thetas: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
  thetas = thetas.copy()
  for i, v in fixed.items():
    thetas[:, i] = v
  return thetas


def _full_theta(free: np.ndarray, fixed: dict[int, float]) -> np.ndarray:
  theta, it = np.empty(5), iter(free)
  for i in range(5):
    theta[i] = fixed[i] if i in fixed else next(it)
  return theta


def _held(fixed: dict[int, float]):
  """The Huber objective over the free parameters only (gradient restricted to them)."""
  if not fixed:
    return huber_lse
  free = [i for i in range(5) if i not in fixed]

  def objective(theta, log_x, log_y, delta):
    value, gradient = huber_lse(_full_theta(theta, fixed), log_x, log_y, delta)
    return value, gradient[free]
  return objective


def _check_approach3(log_x: np.ndarray, num_fixed: int = 0) -> None:
  distinct = len(np.unique(log_x, axis=0))
  require('Approach 3', 5 - num_fixed, distinct, 'points' if distinct == len(log_x) else 'distinct (N, D)')
  distinct = [len(np.unique(log_x[:, j])) for j in range(2)]
  if min(distinct) < 2:
    raise ValueError(f'Approach 3 needs at least 2 distinct N and 2 distinct D; got '
                     f'{distinct[0]} N and {distinct[1]} D')


def _law_vector(theta: np.ndarray) -> list[float]:
  """(E, A, B, alpha, beta) of theta = (e, a, b, alpha, beta)."""
  return [*np.exp(theta[:3]), *theta[3:]]
