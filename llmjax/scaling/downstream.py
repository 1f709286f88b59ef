"""Downstream scaling: each task metric of a sweep against compute, and the two-step law of
arXiv 2412.04403 (Bhagia et al., "Establishing Task Scaling Laws via Compute-Efficient
Model Ladders").

The results table holds a column `task/NAME/METRIC` per task metric scored during training
(llmjax.eval.in_training), with `_stderr`, `_chance` and `_ceiling` beside it, and the task
loss `task/NAME/nll`: the gold continuation's negative log-likelihood per character. The
law predicts a metric from compute in two fitted steps, bootstrapped together over trials:

  1. task loss from compute, a power law:  L(C) = E + A (C / C_ref)^-alpha
  2. the metric from task loss, a sigmoid between chance and a top:
       m(L) = chance + (top - chance) / (1 + exp(k (L - L0)))
     with top the task's ceiling when it knows one (synthetic tasks), else fitted.

C_ref is the geometric mean of the sweep's compute, so A is the excess loss there. The
intervals are percentile bootstraps over trials. On planted data (16 trials, noise 0.01 on
task loss and metric) they held each true parameter in 67-100% of 12 noise draws: a
small-sample percentile bootstrap runs narrow, and step 2 reads the noisy loss on its x
axis, which biases L0 a little. A metric
whose largest-compute trials are within Z_AT_CHANCE standard errors of chance is reported as
still at chance, and its sigmoid is not fitted: nothing yet says where it rises.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import optimize

PREFIX = 'task/'
LOSS_METRIC = 'nll'
_SUFFIXES = ('_stderr', '_chance', '_ceiling')
Z_AT_CHANCE = 2.0
MIN_POINTS_POWER_LAW = 4  # three parameters, and one point more
MIN_POINTS_SIGMOID = 3  # two parameters (k, L0) when the ceiling is known; one more if not


@dataclasses.dataclass(frozen=True)
class Interval:
  value: float
  lo: float  # 2.5th percentile of the bootstrap fits
  hi: float  # 97.5th

  def contains(self, x: float) -> bool:
    return self.lo <= x <= self.hi

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  E: float
  A: float
  alpha: float
  c_ref: float

  def __call__(self, c):
    return self.E + self.A * (np.asarray(c, np.float64) / self.c_ref) ** -self.alpha


@dataclasses.dataclass(frozen=True)
class Sigmoid:
  chance: float
  top: float
  k: float
  L0: float

  def __call__(self, loss):
    z = np.clip(self.k * (np.asarray(loss, np.float64) - self.L0), -500, 500)
    return self.chance + (self.top - self.chance) / (1 + np.exp(z))


@dataclasses.dataclass(frozen=True, eq=False)
class TwoStep:
  """The two fitted steps and their bootstrap refits (sigmoid None: not fitted, see why)."""
  loss_law: PowerLaw
  sigmoid: Sigmoid | None
  loss_draws: list[PowerLaw]
  sigmoid_draws: list[Sigmoid]
  bootstrap: int
  why_no_sigmoid: str = ''

  def intervals(self) -> dict[str, Interval]:
    fitted = [('E', self.loss_law, self.loss_draws), ('A', self.loss_law, self.loss_draws),
              ('alpha', self.loss_law, self.loss_draws)]
    if self.sigmoid is not None:
      fitted += [(p, self.sigmoid, self.sigmoid_draws) for p in ('k', 'L0', 'top')]
    return {name: percentile_interval(getattr(best, name), [getattr(d, name) for d in draws])
            for name, best, draws in fitted}

  def predict(self, c: float) -> Interval:
    """The metric at compute c through both steps, with the bootstrap's 95% band."""
    if self.sigmoid is None:
      raise ValueError(f'no sigmoid to predict the metric with: {self.why_no_sigmoid}')
    draws = [s(law(c)) for law, s in zip(self.loss_draws, self.sigmoid_draws)]
    return percentile_interval(float(self.sigmoid(self.loss_law(c))), draws)


@dataclasses.dataclass(frozen=True, eq=False)
class TaskMetric:
  """One task metric over the sweep's finished trials."""
  task: str
  metric: str
  points: pd.DataFrame  # name, C, value, stderr, loss (the task loss; NaN if none)
  chance: float  # NaN: unknown
  ceiling: float  # NaN: unknown
  at_chance: str | None  # the sentence saying it is still at chance, else None
  two_step: TwoStep | None
  not_fitted: str = ''  # why there is no two-step fit

  @property
  def column(self) -> str:
    return f'{PREFIX}{self.task}/{self.metric}'


def percentile_interval(value: float, draws) -> Interval:
  """`value` with the 2.5th and 97.5th percentiles of its finite bootstrap `draws`."""
  draws = np.asarray([d for d in draws if math.isfinite(d)], np.float64)
  if not draws.size:
    return Interval(float(value), math.nan, math.nan)
  return Interval(float(value), float(np.percentile(draws, 2.5)),
                  float(np.percentile(draws, 97.5)))


def task_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
  """(task, metric) of every task metric column; a task may be NAME/DOMAIN."""
  found = []
  for column in table.columns:
    if not str(column).startswith(PREFIX) or str(column).endswith(_SUFFIXES):
      continue
    task, _, metric = str(column)[len(PREFIX):].rpartition('/')
    if task and metric:
      found.append((task, metric))
  return found


def _column_value(table: pd.DataFrame, column: str) -> float:
  if column not in table:
    return math.nan
  values = pd.to_numeric(table[column], errors='coerce').dropna()
  return float(values.iloc[0]) if len(values) else math.nan


def metric_points(table: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
  """The finished trials that scored the metric: name, C, value, stderr, loss, by C."""
  column = f'{PREFIX}{task}/{metric}'
  done = table[table['status'] == 'done'] if 'status' in table else table
  number = lambda name: (pd.to_numeric(done[name], errors='coerce') if name in done
                         else pd.Series(math.nan, index=done.index))
  pts = pd.DataFrame({'name': done['name'] if 'name' in done else done.index.astype(str),
                      'C': number('C'), 'value': number(column),
                      'stderr': number(f'{column}_stderr'),
                      'loss': number(f'{PREFIX}{task}/{LOSS_METRIC}')})
  pts = pts[np.isfinite(pts['C']) & (pts['C'] > 0) & np.isfinite(pts['value'])]
  return pts.sort_values('C', kind='stable').reset_index(drop=True)


def fit_power_law(c, loss, start: PowerLaw | None = None) -> PowerLaw:
  """L(C) = E + A (C / C_ref)^-alpha by least squares (0 <= E < min L), from a grid of
  starts, or from `start` alone: a bootstrap refit starts from the full fit and keeps its
  C_ref, so that its A is comparable."""
  c, loss = np.asarray(c, np.float64), np.asarray(loss, np.float64)
  if len(c) < MIN_POINTS_POWER_LAW or len(np.unique(c)) < 3:
    raise ValueError(f'the power law needs {MIN_POINTS_POWER_LAW} points at 3 or more '
                     f'compute values, got {len(c)} at {len(np.unique(c))}')
  c_ref = start.c_ref if start is not None else float(np.exp(np.mean(np.log(c))))
  x = np.log(c / c_ref)
  residual = lambda p: p[0] + np.exp(p[1] + -p[2] * x) - loss
  top_e = max(float(loss.min()) * (1 - 1e-6), 1e-9)
  lower, upper = [0, -50, 1e-4], [top_e, 50, 5]
  starts = [[e_share * top_e, math.log(max(float(np.median(loss)) - e_share * top_e, 1e-6)),
             alpha] for e_share in (0.0, 0.5, 0.9) for alpha in (0.05, 0.3, 1.0)]
  if start is not None:
    starts = [[start.E, math.log(start.A), start.alpha]]
  best = None
  for guess in starts:
    found = optimize.least_squares(residual, np.clip(guess, lower, upper), bounds=(lower, upper))
    best = found if best is None or found.cost < best.cost else best
  e, log_a, alpha = best.x
  return PowerLaw(float(e), float(math.exp(log_a)), float(alpha), c_ref)


def fit_sigmoid(loss, value, chance: float, ceiling: float = math.nan,
                start: Sigmoid | None = None) -> Sigmoid:
  """m(L) = chance + (top - chance) / (1 + exp(k (L - L0))), k > 0 (lower loss, better
  metric); top = ceiling when known, else fitted between the best point and the scale's
  top (1 for fractions, 100 for BLEU-like scores). From a grid of starts, or `start`."""
  loss, value = np.asarray(loss, np.float64), np.asarray(value, np.float64)
  fixed_top = math.isfinite(ceiling)
  need = MIN_POINTS_SIGMOID + (not fixed_top)
  if len(loss) < need:
    raise ValueError(f'the sigmoid needs {need} points, got {len(loss)}')
  span = max(float(np.ptp(loss)), 1e-6)
  scale_top = 1.0 if value.max() <= 1 else 100.0
  low_top = min(max(float(value.max()), chance + 1e-6), scale_top - 1e-9)

  def curve(p):
    return Sigmoid(chance, ceiling if fixed_top else p[2], p[0], p[1])

  residual = lambda p: curve(p)(loss) - value
  lower = [1e-3 / span, loss.min() - 2 * span] + ([] if fixed_top else [low_top])
  upper = [1e3 / span, loss.max() + 2 * span] + ([] if fixed_top else [scale_top])
  starts = [[k, l0] + ([] if fixed_top else [(low_top + scale_top) / 2])
            for k in (1 / span, 5 / span, 20 / span) for l0 in np.quantile(loss, [0.25, 0.5, 0.75])]
  if start is not None:
    starts = [[start.k, start.L0] + ([] if fixed_top else [start.top])]
  best = None
  for guess in starts:
    found = optimize.least_squares(residual, np.clip(guess, lower, upper), bounds=(lower, upper))
    best = found if best is None or found.cost < best.cost else best
  return curve(best.x)


def two_step(pts: pd.DataFrame, chance: float, ceiling: float = math.nan, *,
             bootstrap: int = 200, seed: int = 0, sigmoid: bool = True) -> TwoStep:
  """Both steps on `pts` (metric_points), refitted on `bootstrap` resamples of the trials
  (a resample whose fit fails is left out). sigmoid=False fits the first step only."""
  pts = pts[np.isfinite(pts['loss'])]
  law = fit_power_law(pts['C'], pts['loss'])
  curve = fit_sigmoid(pts['loss'], pts['value'], chance, ceiling) if sigmoid else None
  rng = np.random.default_rng(seed)
  laws, curves = [], []
  for _ in range(bootstrap):
    draw = pts.iloc[rng.integers(0, len(pts), len(pts))]
    try:
      one_law = fit_power_law(draw['C'], draw['loss'], start=law)
      one_curve = (fit_sigmoid(draw['loss'], draw['value'], chance, ceiling, start=curve)
                   if sigmoid else None)
    except ValueError:  # too few distinct trials drawn
      continue
    laws.append(one_law)
    curves += [one_curve] if sigmoid else []
  return TwoStep(law, curve, laws, curves, bootstrap)


def at_chance_sentence(column: str, pts: pd.DataFrame, chance: float) -> str | None:
  """A sentence when the metric at the sweep's largest compute is within Z_AT_CHANCE
  standard errors of chance (mean over the trials there), else None; None too when
  chance is unknown."""
  if not math.isfinite(chance) or pts.empty:
    return None
  top = pts[pts['C'] == pts['C'].max()]
  value = float(top['value'].mean())
  stderr = float(np.sqrt((top['stderr'].fillna(0) ** 2).sum()) / len(top))
  if value - chance > Z_AT_CHANCE * stderr:
    return None
  return (f'`{column}` is still at chance at the largest compute, {top["C"].iloc[0]:.3g} '
          f'FLOPs: {value:.4g} ± {stderr:.2g} against chance {chance:.4g} (not above it by '
          f'{Z_AT_CHANCE:g} standard errors), so no sigmoid is fitted to it.')


def analyse_metric(table: pd.DataFrame, task: str, metric: str, *, bootstrap: int = 200,
                   seed: int = 0) -> TaskMetric:
  """One task metric: its points, the at-chance check and the two-step fit (the first step
  alone when it is still at chance); `not_fitted` says what could not be fitted."""
  column = f'{PREFIX}{task}/{metric}'
  pts = metric_points(table, task, metric)
  chance = _column_value(table, f'{column}_chance')
  ceiling = _column_value(table, f'{column}_ceiling')
  sentence = at_chance_sentence(column, pts, chance)
  fitted, why = None, ''
  if metric == LOSS_METRIC:  # the task loss itself: the first step only
    try:
      return TaskMetric(task, metric, pts, chance, ceiling, None,
                        two_step(pts, chance, sigmoid=False, bootstrap=bootstrap, seed=seed))
    except ValueError as e:
      return TaskMetric(task, metric, pts, chance, ceiling, None, None, str(e))
  if not np.isfinite(pts['loss']).any():
    why = f'no task loss column `{PREFIX}{task}/{LOSS_METRIC}` in the table'
  elif not math.isfinite(chance):
    why = 'the metric\'s chance value is unknown (no `_chance` column)'
  else:
    try:
      fitted = two_step(pts, chance, ceiling, bootstrap=bootstrap, seed=seed,
                        sigmoid=sentence is None)
      why = '' if sentence is None else 'still at chance: the first step only'
    except ValueError as e:
      why = str(e)
  if fitted is not None and fitted.sigmoid is None:
    fitted = dataclasses.replace(fitted, why_no_sigmoid=why)
  return TaskMetric(task, metric, pts, chance, ceiling, sentence, fitted, why)


def analyse(table: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0,
            domains: bool = True) -> list[TaskMetric]:
  """Every task metric of a results table (none when it has no task columns); without
  `domains`, only whole tasks (not NAME/DOMAIN)."""
  return [analyse_metric(table, task, metric, bootstrap=bootstrap, seed=seed)
          for task, metric in task_columns(table) if domains or '/' not in task]


def _fmt(x: float) -> str:
  return '-' if x is None or not math.isfinite(x) else f'{x:.4g}'


def summary_lines(found: list[TaskMetric]) -> list[str]:
  """The report's downstream section, in Markdown."""
  if not found:
    return []
  lines = ['', '## Downstream tasks against compute (two-step law, arXiv 2412.04403)', '',
           'Step 1: task loss L(C) = E + A (C / C_ref)^-alpha; step 2: metric = chance + '
           '(top - chance) / (1 + exp(k (L - L0))). 95% bootstrap intervals over trials.', '',
           '| task metric | trials | chance | ceiling | E | A | alpha | k | L0 | top |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for m in found:
    cells = {n: '-' for n in ('E', 'A', 'alpha', 'k', 'L0', 'top')}
    if m.two_step is not None:
      cells.update({n: f'{_fmt(i.value)} [{_fmt(i.lo)}, {_fmt(i.hi)}]'
                    for n, i in m.two_step.intervals().items()})
    lines.append(f'| `{m.column}` | {len(m.points)} | {_fmt(m.chance)} | {_fmt(m.ceiling)} | '
                 + ' | '.join(cells.values()) + ' |')
  lines += [''] + [f'- {m.at_chance}' for m in found if m.at_chance]
  lines += [f'- `{m.column}`: not fitted: {m.not_fitted}.' for m in found
            if m.not_fitted and not m.at_chance]
  return lines


def to_dict(found: list[TaskMetric]) -> list[dict]:
  """fit.json's `downstream` entry."""
  out = []
  for m in found:
    entry = {'column': m.column, 'task': m.task, 'metric': m.metric, 'chance': m.chance,
             'ceiling': m.ceiling, 'at_chance': m.at_chance, 'not_fitted': m.not_fitted,
             'points': m.points.to_dict(orient='records')}
    if m.two_step is not None:
      entry['fit'] = {n: i.to_dict() for n, i in m.two_step.intervals().items()}
      entry['fit']['C_ref'] = m.two_step.loss_law.c_ref
    out.append(entry)
  return out
