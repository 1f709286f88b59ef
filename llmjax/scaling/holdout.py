"""Out-of-sample checks of Approach 3: leave one IsoFLOP budget out, predict it.

A law that fits every point can still be wrong where it matters, beyond the data. Here
it is refitted without one budget and asked for that budget's losses: the largest
budget (the extrapolation a scaling study is for), and each other budget in turn when
the remaining points still determine the law. Each held-out point gets its prediction,
the error, and whether it falls inside the refit's 95% bootstrap interval. That
interval covers the law's parameter uncertainty only, not a trial's own noise, so a
well-specified law with noisy trials still misses it now and then; a law that misses
every held-out point, all on one side, extrapolates badly.
"""

import dataclasses
import math

import numpy as np
import pandas as pd

from llmjax.scaling import fit

MIN_BUDGET_POINTS = 3  # trials at one budget for it to be held out (an IsoFLOP profile)
COLUMNS = ['held_out', 'name', 'N', 'D', 'loss', 'predicted', 'lo', 'hi', 'error',
           'relative_error', 'inside']


@dataclasses.dataclass(frozen=True, eq=False)
class Holdout:
  """Held-out predictions (COLUMNS) and the budgets that could not be held out, with why."""
  predictions: pd.DataFrame
  skipped: dict[float, str]

  def by_budget(self) -> pd.DataFrame:
    """Per held-out budget: points, mean absolute relative error, share inside."""
    p = self.predictions
    grouped = p.assign(abs_rel=p['relative_error'].abs()).groupby('held_out', sort=True)
    return pd.DataFrame({'points': grouped.size(),
                         'mean_abs_relative_error': grouped['abs_rel'].mean(),
                         'inside_interval': grouped['inside'].mean()}).reset_index()

  def to_dict(self) -> dict:
    return {'predictions': self.predictions.to_dict(orient='records'),
            'by_budget': self.by_budget().to_dict(orient='records'),
            'skipped': {f'{k:.4g}': v for k, v in self.skipped.items()}}


def leave_one_budget_out(pts: pd.DataFrame, *, bootstrap: int = 100, seed: int = 0,
                         fix=None, grid: fit.StartGrid = fit.StartGrid()) -> Holdout:
  """Refits Approach 3 without each budget in turn and predicts that budget's points.

  Args:
    pts: points() of a results table; budgets are its IsoFLOP groups.
    bootstrap, seed: resamples for each refit's prediction interval.
    fix: parameters held fixed in every refit (see fit.approach3).
    grid: starting points of the optimizer.
  Raises:
    ValueError: fewer than 2 budgets, or no budget could be held out (reasons given).
  """
  groups = fit.isoflop_groups(pts).to_numpy()
  if len(set(groups)) < 2:
    raise ValueError(f'leave-one-budget-out needs 2 budgets; the points have {len(set(groups))}')
  # A compute level with fewer trials is a stray point, not a budget (a crossed N x D grid
  # has one per product N D): holding each out in turn would cost a refit per point.
  sizes = pd.Series(groups).value_counts()
  budgets = sorted(sizes.index[sizes >= MIN_BUDGET_POINTS])
  if not budgets:
    raise ValueError(f'no compute budget has {MIN_BUDGET_POINTS} or more trials to hold out')
  rows, skipped = [], {}
  # Each refit starts from fewer grid points than a full fit: the points differ by one
  # budget, so the basin rarely moves, and a report runs one refit per budget.
  grid = dataclasses.replace(grid, refine=min(grid.refine or 8, 8))
  for budget in budgets[::-1]:  # the largest first: the extrapolation that matters most
    kept = groups != budget
    try:
      refit = fit.approach3(pts[kept].reset_index(drop=True), bootstrap=bootstrap, seed=seed,
                            fix=fix, grid=grid)
    except ValueError as e:
      skipped[float(budget)] = str(e)
      continue
    rows += [_prediction(refit, budget, row) for row in pts[~kept].itertuples()]
  if not rows:
    raise ValueError('no budget could be held out: ' +
                     '; '.join(f'{k:.3g}: {v}' for k, v in skipped.items()))
  return Holdout(pd.DataFrame(rows, columns=COLUMNS), skipped)


def _prediction(refit: fit.Approach3, budget: float, row) -> dict:
  predicted = fit.predict(refit, row.N, row.D)
  inside = (bool(predicted.lo <= row.loss <= predicted.hi) if math.isfinite(predicted.lo)
            else False)
  return {'held_out': float(budget), 'name': row.name, 'N': row.N, 'D': row.D,
          'loss': row.loss, 'predicted': predicted.value, 'lo': predicted.lo,
          'hi': predicted.hi, 'error': predicted.value - row.loss,
          'relative_error': predicted.value / row.loss - 1, 'inside': inside}


def summary_lines(result: Holdout) -> list[str]:
  """Markdown: the per-budget table and a sentence on the largest budget."""
  table = result.by_budget().sort_values('held_out', ascending=False)
  lines = ['| held-out budget C | points | mean abs. relative error | inside 95% interval |',
           '|---|---|---|---|']
  lines += [f'| {r.held_out:.3g} | {r.points} | {100 * r.mean_abs_relative_error:.2f}% | '
            f'{100 * r.inside_interval:.0f}% |' for r in table.itertuples()]
  largest = result.predictions[result.predictions['held_out'] ==
                               result.predictions['held_out'].max()]
  bias = np.mean(largest['error'])
  lines += ['', f'Fitted without budget {largest["held_out"].iloc[0]:.3g}, the law predicts its '
            f'{len(largest)} points with a mean error of {bias:+.4f} '
            f'({100 * largest["relative_error"].abs().mean():.2f}% in absolute terms); '
            f'{int(largest["inside"].sum())} of {len(largest)} fall inside the 95% interval.']
  lines += [f'- budget {k:.3g} not held out: {v}' for k, v in result.skipped.items()]
  return lines
