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
"""

import collections
import dataclasses
import itertools
import math
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import optimize, special

# Lower-cased column names read as N, D, C and loss (the multi-word ones are those of
# published tables, such as Epoch AI's reconstruction of the Chinchilla points).
_ALIASES = ({'n', 'params', 'parameters', 'model size', 'model_size'},
            {'d', 'tokens', 'training tokens', 'training_tokens'},
            {'c', 'flops', 'compute', 'training flop', 'training flops', 'training_flops'},
            {'loss', 'eval_loss'})
# BFGS, not L-BFGS-B: with 3-5 parameters the limited memory buys nothing, and scipy's
# L-BFGS-B (>= 1.15) calls multithreaded OpenBLAS on tiny arrays, 20-100x slower on a
# busy machine (scipy issue #22438); BFGS reaches the same optima in plain numpy.
_BFGS = {'gtol': 1e-8, 'maxiter': 2000}


# ----------------------------------------------------------------------------- points


def points(table: pd.DataFrame | str | os.PathLike, loss: str = 'eval_loss',
           params: str = 'N') -> pd.DataFrame:
  """The finished trials of a results table (or CSV file) as the points every fit reads.

  Args:
    table: a results table (llmjax.scaling.results) or external data; column names are
      matched case-insensitively, with aliases (params/parameters/n/model size,
      tokens/d/training tokens, flops/compute/c/training flop, loss/eval_loss). Rows
      count as done when there is no status column.
    loss: the loss column to fit.
    params: the parameter count to fit (N or N_nonembedding).
  Returns:
    Columns name, N, D, C, loss, budget, note (how a missing D or C was derived, with
    C = 6 N D). `.attrs['excluded']` lists the rows left out: {'name', 'reason'};
    `.attrs['irreducible_loss']` is the data's known entropy when the table has one.
  Raises:
    ValueError: missing columns, duplicate names, NaN or non-positive values.
  """
  if not isinstance(table, pd.DataFrame):
    table = pd.read_csv(table)
  excluded = list(table.attrs.get('excluded', []))
  name_column = _column(table, 'name')
  names = (table[name_column].astype(str) if name_column
           else pd.Series([f'row {i}' for i in range(len(table))], index=table.index))
  duplicates = sorted(set(names[names.duplicated()]))
  if duplicates:
    raise ValueError(f'duplicate trial names: {", ".join(map(repr, duplicates))}')
  done = pd.Series(True, index=table.index)
  if _column(table, 'status'):
    done = table[_column(table, 'status')] == 'done'
    for i in table.index[~done]:
      excluded.append({'name': names[i], 'reason': _not_done_reason(table, i)})
  out = pd.DataFrame({'name': names, **_numbers(table, loss, params)})[done]
  _check(out, loss)
  out.attrs['excluded'] = excluded
  known = table['data_optimal_loss'][done].dropna() if 'data_optimal_loss' in table else []
  if len(known) and known.nunique() == 1:  # synthetic data: the true E, to judge the fit by
    out.attrs['irreducible_loss'] = float(known.iloc[0])
  return out.reset_index(drop=True)


def _column(table: pd.DataFrame, wanted: str) -> str | None:
  """The table's column for `wanted`: exact name, else any case-insensitive alias."""
  if wanted in table.columns:
    return wanted
  group = next((g for g in _ALIASES if wanted.lower() in g), {wanted.lower()})
  return next((c for c in table.columns if str(c).lower() in group), None)


def _not_done_reason(table: pd.DataFrame, i) -> str:
  reason = f'status {table.at[i, _column(table, "status")]}'
  error = table.at[i, 'error'] if 'error' in table.columns else None
  return f'{reason}: {error}' if isinstance(error, str) and error else reason


def _numbers(table: pd.DataFrame, loss: str, params: str) -> dict[str, pd.Series]:
  """N, D, C, loss, budget and note as float columns, deriving D or C from C = 6 N D."""
  def column(wanted, required):
    name = _column(table, wanted)
    if name is None and required:
      raise ValueError(f'no {wanted!r} column in the table (columns: {", ".join(table.columns)})')
    return (pd.to_numeric(table[name], errors='coerce').astype(float) if name
            else pd.Series(math.nan, index=table.index))
  n, d, c = column(params, True), column('D', False), column('C', False)
  if d.isna().all() and c.isna().all():
    raise ValueError('the table needs a D (tokens) or C (FLOPs) column')
  note = table['note'].fillna('') if 'note' in table.columns else pd.Series('', index=table.index)
  note[d.isna() & c.notna()] = 'D = C/(6N)'
  note[c.isna() & d.notna()] = 'C = 6ND'
  d, c = d.fillna(c / (6 * n)), c.fillna(6 * n * d)
  return {'N': n, 'D': d, 'C': c, 'loss': column(loss, True),
          'budget': column('budget', False), 'note': note}


def _check(pts: pd.DataFrame, loss: str) -> None:
  nan_loss = pts['name'][pts['loss'].isna()]
  if len(nan_loss):
    raise ValueError(f'NaN {loss} in finished trials: {", ".join(map(repr, nan_loss))}')
  for column in ('N', 'D', 'C', 'loss'):
    bad = pts[~(np.isfinite(pts[column]) & (pts[column] > 0))]
    if len(bad):
      row = bad.iloc[0]
      raise ValueError(f'{column} must be positive and finite; row {row["name"]!r} has '
                       f'{column}={row[column]}')


def _require(what: str, n_params: int, n_points: int, unit: str = 'points') -> None:
  if n_points < n_params:
    raise ValueError(f'{what} fits {n_params} parameters; {n_points} {unit} given')


# ----------------------------------------------------------------------------- estimates


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A fitted value with its bootstrap standard error and 95% percentile interval."""
  value: float
  se: float = math.nan
  lo: float = math.nan
  hi: float = math.nan

  def to_dict(self) -> dict:
    return {k: _json_float(v) for k, v in dataclasses.asdict(self).items()}


def _estimate(value, draws) -> Estimate:
  draws = np.asarray(draws, float)
  draws = draws[np.isfinite(draws)]
  if len(draws) < 2:
    return Estimate(float(value))
  lo, hi = np.percentile(draws, [2.5, 97.5])
  return Estimate(float(value), float(np.std(draws, ddof=1)), float(lo), float(hi))


def _json_float(x):
  return float(x) if x is not None and math.isfinite(x) else None


def _bootstrap(refit, resample, num: int, seed: int, size: int) -> np.ndarray:
  """(accepted draws, size) refitted parameter vectors; resamples too degenerate to fit
  (refit raises ValueError) are dropped, so callers compare the count with `num`."""
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(num):
    try:
      draws.append(refit(resample(rng)))
    except ValueError:
      continue
  return np.array(draws, float).reshape(-1, size)


# ----------------------------------------------------------------------------- power laws


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
    return {f: _json_float(getattr(self, f)) for f in ('k', 'a', 'E')}


def fit_power_law(x, y, *, offset: bool = False, delta: float = 1e-3) -> PowerLaw:
  """y = k x^a by least squares on log-log, or y = E + k x^a (offset) by a Huber loss
  of log residuals with log(E + k x^a) = logsumexp(log E, log k + a log x)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  _require('a power law' + (' with offset' if offset else ''), 3 if offset else 2,
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
  theta = _minimize(starts, np.log(x)[:, None], np.log(y), delta)[0]
  return PowerLaw(float(math.exp(theta[1])), float(-theta[2]), float(math.exp(theta[0])))


def _huber_lse(theta, log_x, log_y, delta):
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


def _huber_lse_many(thetas, log_x, log_y, delta):
  """The objective of _huber_lse (no gradient) for many theta at once: (G,)."""
  terms = log_x.shape[1]
  c, s = thetas[:, None, :terms + 1], thetas[:, None, terms + 1:]
  t = np.concatenate([np.broadcast_to(c[..., :1], (len(thetas), len(log_y), 1)),
                      c[..., 1:] - s * log_x], axis=2)
  r = np.abs(special.logsumexp(t, axis=2) - log_y)
  return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum(1)


def _minimize(starts, log_x, log_y, delta, objective=_huber_lse) -> tuple[np.ndarray, float]:
  """The best (theta, objective) of BFGS runs from each start."""
  best = None
  for start in starts:
    result = optimize.minimize(objective, np.asarray(start, float), args=(log_x, log_y, delta),
                               jac=True, method='BFGS', options=_BFGS)
    if np.all(np.isfinite(result.x)) and (best is None or result.fun < best.fun):
      best = result
  if best is None:
    raise ValueError('no BFGS run converged to finite parameters')
  return best.x, float(best.fun)


# ----------------------------------------------------------------------------- Approach 3


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
    return {name: _estimate(getattr(self.law, name), getattr(laws, name))
            for name in LAW_FIELDS + ('a', 'b', 'G')}

  def at(self, C: float) -> dict[str, Estimate]:
    """Compute-optimal N, D, tokens per parameter and loss at budget C."""
    law, laws = self.law, self.draw_laws
    return {'N_opt': _estimate(law.n_opt(C), laws.n_opt(C)),
            'D_opt': _estimate(law.d_opt(C), laws.d_opt(C)),
            'tokens_per_param': _estimate(law.d_opt(C) / law.n_opt(C),
                                          laws.d_opt(C) / laws.n_opt(C)),
            'loss': _estimate(law.loss_opt(C), laws.loss_opt(C))}

  def to_dict(self) -> dict:
    return {'law': self.law.to_dict(),
            'estimates': {k: e.to_dict() for k, e in self.estimates().items()},
            'objective': self.objective, 'n_points': self.n_points, 'fixed': dict(self.fixed),
            'bootstrap': self.bootstrap, 'bootstrap_fitted': len(self.draws)}


def predict(fit: Approach3, N: float, D: float) -> Estimate:
  """Loss at (N, D) from Approach 3's law, with the bootstrap interval."""
  return _estimate(fit.law.predict(N, D), fit.draw_laws.predict(N, D))


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
  scores = np.concatenate([_huber_lse_many(thetas[i:i + 256], log_x, log_y, delta)
                           for i in range(0, len(thetas), 256)])  # bounded memory
  starts = thetas[np.argsort(scores)[:grid.refine]] if grid.refine else thetas
  free = [i for i in range(5) if i not in fixed]
  theta, objective = _minimize(starts[:, free], log_x, log_y, delta, objective_fn)

  def refit(rows):  # from the full data's optimum: resamples stay in its basin
    _check_approach3(log_x[rows], len(fixed))
    found = _minimize([theta], log_x[rows], log_y[rows], delta, objective_fn)[0]
    return _law_vector(_full_theta(found, fixed))

  draws = _bootstrap(refit, lambda rng: rng.integers(0, len(log_y), len(log_y)), bootstrap,
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
    return _huber_lse
  free = [i for i in range(5) if i not in fixed]

  def objective(theta, log_x, log_y, delta):
    value, gradient = _huber_lse(_full_theta(theta, fixed), log_x, log_y, delta)
    return value, gradient[free]
  return objective


def _check_approach3(log_x: np.ndarray, num_fixed: int = 0) -> None:
  distinct = len(np.unique(log_x, axis=0))
  _require('Approach 3', 5 - num_fixed, distinct, 'points' if distinct == len(log_x) else 'distinct (N, D)')
  distinct = [len(np.unique(log_x[:, j])) for j in range(2)]
  if min(distinct) < 2:
    raise ValueError(f'Approach 3 needs at least 2 distinct N and 2 distinct D; got '
                     f'{distinct[0]} N and {distinct[1]} D')


def _law_vector(theta: np.ndarray) -> list[float]:
  """(E, A, B, alpha, beta) of theta = (e, a, b, alpha, beta)."""
  return [*np.exp(theta[:3]), *theta[3:]]


# ----------------------------------------------------------------------------- Approaches 1, 2


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays and a DataFrame
class ComputeOptimal:
  """N_opt(C) = k C^a and D_opt(C) = k' C^b from Approach 1 or 2: the laws, the points
  they were fitted to (C, N, D, loss, and for Approach 2 the parabola p2, p1, p0 of loss
  in log N), groups left out with reasons, and the laws refitted to resamples."""
  approach: int
  n_opt: PowerLaw
  d_opt: PowerLaw
  optima: pd.DataFrame
  excluded: tuple[dict, ...]
  draws: np.ndarray  # (accepted resamples, 4): k, a, k', b
  bootstrap: int

  @property
  def draw_laws(self) -> tuple[PowerLaw, PowerLaw]:
    return PowerLaw(*self.draws[:, :2].T), PowerLaw(*self.draws[:, 2:].T)

  def estimates(self) -> dict[str, Estimate]:
    n_laws, d_laws = self.draw_laws
    return {'a': _estimate(self.n_opt.a, n_laws.a), 'b': _estimate(self.d_opt.a, d_laws.a),
            'k_N': _estimate(self.n_opt.k, n_laws.k), 'k_D': _estimate(self.d_opt.k, d_laws.k)}

  def at(self, C: float) -> dict[str, Estimate]:
    """Compute-optimal N, D and tokens per parameter at budget C."""
    n_laws, d_laws = self.draw_laws
    n, d = self.n_opt.predict(C), self.d_opt.predict(C)
    return {'N_opt': _estimate(n, n_laws.predict(C)), 'D_opt': _estimate(d, d_laws.predict(C)),
            'tokens_per_param': _estimate(d / n, d_laws.predict(C) / n_laws.predict(C))}

  def to_dict(self) -> dict:
    return {'approach': self.approach, 'N_opt': self.n_opt.to_dict(),
            'D_opt': self.d_opt.to_dict(),
            'estimates': {k: e.to_dict() for k, e in self.estimates().items()},
            'optima': self.optima.to_dict(orient='records'), 'excluded': list(self.excluded),
            'bootstrap': self.bootstrap, 'bootstrap_fitted': len(self.draws)}


def _optimal_laws(what: str, optima: pd.DataFrame) -> tuple[PowerLaw, PowerLaw]:
  # C that differ by less than 1% in log10 (one budget's trials) do not fix a slope.
  levels = len(np.unique(np.round(np.log10(optima['C'].to_numpy(float)), 2)))
  _require(what, 2, levels, 'distinct C')
  return fit_power_law(optima['C'], optima['N']), fit_power_law(optima['C'], optima['D'])


def _law_pair_vector(laws: tuple[PowerLaw, PowerLaw]) -> list[float]:
  return [laws[0].k, laws[0].a, laws[1].k, laws[1].a]


def envelope(pts: pd.DataFrame) -> pd.DataFrame:
  """Approach 1's frontier: at each compute level (IsoFLOP budget, or C rounded as in
  `isoflop_groups`, so trials that miss their budget by a fraction of a percent count as
  one level) the best point, if no point of a lower level beats it."""
  levels = pts.assign(level=isoflop_groups(pts).to_numpy()).sort_values(['level', 'loss'])
  best = levels.groupby('level', sort=True).head(1)
  best_before = best['loss'].cummin().shift(fill_value=math.inf)
  return best[best['loss'] < best_before][['C', 'N', 'D', 'loss', 'name']]


def approach1(pts: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> ComputeOptimal:
  """N_opt(C), D_opt(C) fitted to the lower envelope of loss against compute (final points
  of each trial; the envelope of whole training curves would be denser)."""
  frontier = envelope(pts)
  laws = _optimal_laws('Approach 1', frontier)

  def refit(rows):
    return _law_pair_vector(_optimal_laws('Approach 1', envelope(pts.iloc[rows])))

  draws = _bootstrap(refit, lambda rng: rng.integers(0, len(pts), len(pts)), bootstrap, seed, 4)
  return ComputeOptimal(1, *laws, frontier.reset_index(drop=True), (), draws, bootstrap)


def isoflop_groups(pts: pd.DataFrame) -> pd.Series:
  """Each point's IsoFLOP budget: its `budget`, else its C rounded to 2 decimals in log10."""
  rounded = np.power(10.0, np.round(np.log10(pts['C'].to_numpy(float)), 2))
  return pts['budget'].fillna(pd.Series(rounded, index=pts.index)).rename('group')


def _isoflop_minimum(budget: float, group: pd.DataFrame) -> dict | str:
  """The minimum of a parabola of loss in log N, or why the group has none."""
  sizes = group['N'].nunique()
  if sizes < 3:
    return f'{sizes} distinct N (a parabola needs 3)'
  log_n = np.log(group['N'].to_numpy(float))
  p2, p1, p0 = np.polyfit(log_n, group['loss'].to_numpy(float), 2)
  if p2 <= 0:
    return 'loss is not convex in log N'
  x = -p1 / (2 * p2)
  if not log_n.min() <= x <= log_n.max():
    return 'minimum outside the sizes trained'
  log_d = np.polyval(np.polyfit(log_n, np.log(group['D'].to_numpy(float)), 1), x)
  return {'C': budget, 'N': math.exp(x), 'D': math.exp(log_d), 'loss': np.polyval([p2, p1, p0], x),
          'p2': p2, 'p1': p1, 'p0': p0}


def _isoflop_optima(pts: pd.DataFrame, groups: pd.Series) -> tuple[pd.DataFrame, tuple]:
  optima, excluded = [], []
  for budget, group in pts.groupby(np.asarray(groups)):
    found = _isoflop_minimum(float(budget), group)
    if isinstance(found, str):
      excluded.append({'budget': float(budget), 'reason': found})
    else:
      optima.append(found)
  columns = ['C', 'N', 'D', 'loss', 'p2', 'p1', 'p0']
  return pd.DataFrame(optima, columns=columns), tuple(excluded)


def approach2(pts: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> ComputeOptimal:
  """N_opt(C), D_opt(C) fitted to the minima of IsoFLOP profiles (Approach 2); resamples
  draw with replacement within each budget."""
  groups = isoflop_groups(pts)
  optima, excluded = _isoflop_optima(pts, groups)
  if optima['C'].nunique() < 2:
    reasons = collections.Counter(e['reason'] for e in excluded)
    left_out = '; '.join(f'{count} with {reason}' for reason, count in reasons.items())
    raise ValueError(f'Approach 2 fits 2 parameters; {len(optima)} IsoFLOP minima given'
                     + (f' (budgets left out: {left_out})' if left_out else ''))
  laws = _optimal_laws('Approach 2', optima)
  members = [np.flatnonzero(groups.to_numpy() == g) for g in groups.unique()]

  def resample(rng):
    return np.concatenate([rng.choice(m, len(m)) for m in members])

  def refit(rows):
    optima = _isoflop_optima(pts.iloc[rows], groups.iloc[rows])[0]
    return _law_pair_vector(_optimal_laws('Approach 2', optima))

  draws = _bootstrap(refit, resample, bootstrap, seed, 4)
  return ComputeOptimal(2, *laws, optima, excluded, draws, bootstrap)
