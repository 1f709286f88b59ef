"""Approaches 1 and 2 of Hoffmann et al. (2022): N_opt(C) = k C^a and D_opt(C) = k' C^b
fitted to the lower envelope of loss against compute (1) or to the minima of IsoFLOP
parabolas (2), with bootstrap intervals (resampled within each budget for Approach 2)."""

import collections
import dataclasses
import math

import numpy as np
import pandas as pd

from llmjax.scaling.estimates import Estimate, bootstrap_draws, estimate, require
from llmjax.scaling.power_laws import PowerLaw, fit_power_law


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
    return {'a': estimate(self.n_opt.a, n_laws.a), 'b': estimate(self.d_opt.a, d_laws.a),
            'k_N': estimate(self.n_opt.k, n_laws.k), 'k_D': estimate(self.d_opt.k, d_laws.k)}

  def at(self, C: float) -> dict[str, Estimate]:
    """Compute-optimal N, D and tokens per parameter at budget C."""
    n_laws, d_laws = self.draw_laws
    n, d = self.n_opt.predict(C), self.d_opt.predict(C)
    return {'N_opt': estimate(n, n_laws.predict(C)), 'D_opt': estimate(d, d_laws.predict(C)),
            'tokens_per_param': estimate(d / n, d_laws.predict(C) / n_laws.predict(C))}

  def to_dict(self) -> dict:
    return {'approach': self.approach, 'N_opt': self.n_opt.to_dict(),
            'D_opt': self.d_opt.to_dict(),
            'estimates': {k: e.to_dict() for k, e in self.estimates().items()},
            'optima': self.optima.to_dict(orient='records'), 'excluded': list(self.excluded),
            'bootstrap': self.bootstrap, 'bootstrap_fitted': len(self.draws)}


def _optimal_laws(what: str, optima: pd.DataFrame) -> tuple[PowerLaw, PowerLaw]:
  # C that differ by less than 1% in log10 (one budget's trials) do not fix a slope.
  levels = len(np.unique(np.round(np.log10(optima['C'].to_numpy(float)), 2)))
  require(what, 2, levels, 'distinct C')
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

  draws = bootstrap_draws(refit, lambda rng: rng.integers(0, len(pts), len(pts)), bootstrap, seed, 4)
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

  draws = bootstrap_draws(refit, resample, bootstrap, seed, 4)
  return ComputeOptimal(2, *laws, optima, excluded, draws, bootstrap)
