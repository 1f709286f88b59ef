"""Metric curves: several runs' curves put on one grid of tokens or FLOPs, and loss spikes
found with what the optimizer metrics said around them."""

import numpy as np
import pandas as pd

SPIKE_CONTEXT = ('grad_norm', 'update_norm', 'param_norm', 'lr', 'skipped_steps')


def _numeric_column(table: pd.DataFrame, name: str, what: str) -> pd.Series:
  if name not in table:
    raise KeyError(f'{what} {name!r} is not a column; columns: {", ".join(map(str, table))}')
  return pd.to_numeric(table[name], errors='coerce')


def align(table: pd.DataFrame, x: str = 'tokens', y: str = 'loss', by: str = 'trial',
          num: int = 64) -> pd.DataFrame:
  """Curves of several runs (a long table like `Sweep.metrics()`) interpolated, linearly in
  log x, onto `num` log-spaced values of x spanning all runs: a wide table indexed by x
  with one column per value of `by`, NaN outside each run's range."""
  xs, ys = _numeric_column(table, x, 'x'), _numeric_column(table, y, 'y')
  data = pd.DataFrame({'x': xs, 'y': ys, 'by': table[by]}).dropna()
  data = data[data.x > 0]
  if data.empty:
    raise ValueError(f'no rows with positive {x} and a value of {y}')
  grid = np.geomspace(data.x.min(), data.x.max(), num)
  columns = {}
  for name, group in data.groupby('by', sort=False):
    group = group.sort_values('x')
    columns[name] = np.interp(np.log(grid), np.log(group.x), group.y, left=np.nan,
                              right=np.nan)
  return pd.DataFrame(columns, index=pd.Index(grid, name=x))


def find_spikes(metrics: pd.DataFrame, key: str = 'loss', window: int = 20,
                threshold: float = 5.0, checkpoints: list[int] | None = None) -> pd.DataFrame:
  """Logged steps where `key` jumps above its recent level: more than `threshold` robust
  standard deviations (1.4826 x median absolute deviation of the previous `window` values)
  above their median. Infinite values, and steps the non-finite policy skipped (their
  skipped_steps counter went up; the loss is NaN), always count.

  One row per spike: the value, that baseline, the z-score, whether the step was skipped,
  the optimizer metrics at the spike and how far grad_norm was above its own baseline (a
  spike that starts in the gradients shows there first); with `checkpoints` (a Run's
  steps) also the checkpoints just before and after, whose weights and per-token losses
  tell what changed.
  """
  if window < 3:
    raise ValueError(f'window must be at least 3 logged steps, got {window}')
  rows = metrics.assign(_value=_numeric_column(metrics, key, 'key')).sort_values('step')
  skipped = pd.Series(False, index=rows.index)
  if 'skipped_steps' in rows:  # a running count; evaluation-only rows lack it
    skipped = pd.to_numeric(rows['skipped_steps'], errors='coerce').ffill().diff() > 0
  keep = rows['_value'].notna() | skipped
  rows, skipped = rows[keep], skipped[keep]
  finite = rows['_value'].where(np.isfinite(rows['_value']))

  def baseline(series):
    previous = series.shift(1).rolling(window, min_periods=3)
    median = previous.median()
    mad = previous.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True)
    return median, 1.4826 * mad

  median, spread = baseline(finite)
  z = (rows['_value'] - median) / spread.where(spread > 0, np.nan)
  flagged = (z > threshold) | np.isinf(rows['_value']) | skipped
  out = pd.DataFrame({'step': rows['step'], key: rows['_value'], 'baseline': median, 'z': z,
                      'skipped': skipped})
  for name in SPIKE_CONTEXT:
    if name in rows:
      out[name] = pd.to_numeric(rows[name], errors='coerce')
  if 'grad_norm' in rows:
    grad_median, _ = baseline(pd.to_numeric(rows['grad_norm'], errors='coerce'))
    out['grad_norm_ratio'] = out['grad_norm'] / grad_median
  out = out[flagged.to_numpy()].reset_index(drop=True)
  if checkpoints is not None:
    steps = np.asarray(sorted(checkpoints))
    out['checkpoint_before'] = [_last(steps[steps < s]) for s in out['step']]
    out['checkpoint_after'] = [_last(steps[steps >= s][:1]) for s in out['step']]
  return out


def _last(steps: np.ndarray):
  return int(steps[-1]) if len(steps) else pd.NA
