"""Fine-tuning transfer: a fine-tuned metric against the pretraining compute of the
checkpoint it started from, one curve per amount of fine-tuning data.

A sweep that pretrains and then fine-tunes (experiments/scaling/finetune_transfer.py) puts
both kinds of trial in one results table: pretraining rows have `finetune_task` lm, the
others are fine-tunes, each with the pretraining compute of its checkpoint (`pretrain_C`)
and the examples it trained on (`finetune_examples`). The IsoFLOP fits read only the
pretraining rows (`pretraining_rows`); this module reads the fine-tunes.

The fit, per metric (eval/acc, eval/f1_macro) and example count: the error rate as a pure
power law in pretraining compute,

  1 - metric = k (C / C_ref)^a,   a < 0 when more pretraining means fewer errors,

by least squares in log-log (llmjax.scaling.power_laws), with C_ref the geometric mean of
the fine-tunes' pretraining compute (so k is the error there, comparable across curves).
Why this form rather than the metric linear in log C: it has two parameters like the
line, but never predicts an accuracy above 1, and its exponent is scale-free, so curves of
different example counts compare by one number.

The intervals are percentile bootstraps on two levels: each resample draws the curve's
trials with replacement (a resample with fewer than two distinct C is left out), then
redraws each drawn trial's metric from its own held-out bootstrap SE (normal). A curve has
a handful of checkpoints and each is scored on a few dozen held-out examples, so the
held-out set's sampling error dominates; resampling trials alone would give two
checkpoints a collapsed interval, and three the spread of their pairwise slopes only.
Resampling both levels is the usual bootstrap of nested data, a little conservative.
"""

import dataclasses
import math

import numpy as np
import pandas as pd

from llmjax.scaling import power_laws
from llmjax.scaling.downstream import Interval, percentile_interval

METRICS = ('eval/acc', 'eval/f1_macro')
PRETRAIN_C = 'pretrain_C'
EXAMPLES = 'finetune_examples'  # examples trained on (data_info), else the planned maximum
PLANNED_EXAMPLES = 'finetune_max_examples'
CHANCE = 'chance'  # a sweep's tag: the metric of a random guess, when it knows one
MIN_POINTS = 2  # a two-parameter law: two distinct C at least
MIN_ERROR = 1e-3  # a redrawn error rate below this (a resampled perfect score) is clipped


@dataclasses.dataclass(frozen=True, eq=False)
class Curve:
  """One metric of the fine-tunes on one example count, against pretraining compute."""
  metric: str  # a results column, e.g. eval/acc
  examples: int
  points: pd.DataFrame  # name, C (pretraining), value, stderr; by C
  c_ref: float
  chance: float  # NaN: unknown
  law: power_laws.PowerLaw | None  # error = k (C / c_ref)^a; None: not fitted
  draws: list[power_laws.PowerLaw]
  bootstrap: int
  not_fitted: str = ''

  def predict(self, c) -> np.ndarray:
    """The metric at pretraining compute c (1 minus the fitted error)."""
    return 1 - self.law.predict(np.asarray(c, np.float64) / self.c_ref)

  def band(self, c) -> tuple[np.ndarray, np.ndarray]:
    """The 95% percentile band of the bootstrap fits' metric at c."""
    draws = [1 - d.predict(np.asarray(c, np.float64) / self.c_ref) for d in self.draws]
    return tuple(np.percentile(draws, [2.5, 97.5], axis=0))

  def intervals(self) -> dict[str, Interval]:
    """a (the exponent) and k (the error rate at C_ref)."""
    return {name: percentile_interval(getattr(self.law, name),
                                      [getattr(d, name) for d in self.draws])
            for name in ('a', 'k')}


def is_finetune(table: pd.DataFrame) -> pd.Series:
  """Rows of fine-tune trials (finetune_task other than lm); none without the column."""
  if 'finetune_task' not in table:
    return pd.Series(False, index=table.index)
  return table['finetune_task'].fillna('lm').astype(str) != 'lm'


def pretraining_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The rows the IsoFLOP fits read: every trial that is not a fine-tune."""
  return table[~is_finetune(table)]


def finetune_rows(table: pd.DataFrame) -> pd.DataFrame:
  """The finished fine-tunes, with numeric C_pretrain and example-count columns."""
  done = table[is_finetune(table) & (table['status'] == 'done' if 'status' in table else True)]
  number = lambda name: (pd.to_numeric(done[name], errors='coerce') if name in done
                         else pd.Series(math.nan, index=done.index))
  examples = number(EXAMPLES).fillna(number(PLANNED_EXAMPLES))
  return done.assign(_C=number(PRETRAIN_C), _examples=examples)


def fit_curve(metric: str, examples: int, pts: pd.DataFrame, c_ref: float, chance: float, *,
              bootstrap: int = 200, seed: int = 0) -> Curve:
  """The power law of the error rate of `pts` (name, C, value, stderr), bootstrapped."""
  error = 1 - pts['value'].to_numpy(np.float64)
  if (error <= 0).any():
    return Curve(metric, examples, pts, c_ref, chance, None, [], bootstrap,
                 'a trial scored 1 (no errors): a power law of the error rate has no logarithm '
                 'of 0')
  x = pts['C'].to_numpy(np.float64) / c_ref
  if len(np.unique(x)) < MIN_POINTS:
    return Curve(metric, examples, pts, c_ref, chance, None, [], bootstrap,
                 f'{len(np.unique(x))} distinct pretraining C (the law needs {MIN_POINTS})')
  law = power_laws.fit_power_law(x, error)
  noise = pts['stderr'].fillna(0).to_numpy(np.float64)
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(bootstrap):
    rows = rng.integers(0, len(x), len(x))
    redrawn = error[rows] + noise[rows] * rng.standard_normal(len(rows))
    if len(np.unique(x[rows])) >= MIN_POINTS:
      draws.append(power_laws.fit_power_law(x[rows], np.maximum(redrawn, MIN_ERROR)))
  return Curve(metric, examples, pts, c_ref, chance, law, draws, bootstrap)


def _chance(rows: pd.DataFrame) -> float:
  values = pd.to_numeric(rows[CHANCE], errors='coerce').dropna() if CHANCE in rows else []
  return float(values.iloc[0]) if len(values) and values.nunique() == 1 else math.nan


def analyse(table: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0) -> list[Curve]:
  """Every (metric, example count) curve of the table's finished fine-tunes; none when it
  has no fine-tunes with a pretraining C."""
  rows = finetune_rows(table)
  rows = rows[np.isfinite(rows['_C']) & (rows['_C'] > 0) & np.isfinite(rows['_examples'])]
  if rows.empty:
    return []
  c_ref = float(np.exp(np.mean(np.log(rows['_C'].unique()))))
  chance, curves = _chance(rows), []
  for metric in (m for m in METRICS if m in rows):
    for examples, group in rows.groupby('_examples', sort=True):
      pts = pd.DataFrame({
          'name': group['name'].astype(str), 'C': group['_C'],
          'value': pd.to_numeric(group[metric], errors='coerce'),
          'stderr': pd.to_numeric(group.get(f'{metric}_stderr', math.nan), errors='coerce')})
      pts = pts[np.isfinite(pts['value'])].sort_values('C', kind='stable').reset_index(drop=True)
      if len(pts):
        curves.append(fit_curve(metric, int(examples), pts, c_ref, chance,
                                bootstrap=bootstrap, seed=seed))
  return curves


def _fmt(x: float) -> str:
  return '-' if x is None or not math.isfinite(x) else f'{x:.4g}'


def _cell(i: Interval) -> str:
  return f'{_fmt(i.value)} [{_fmt(i.lo)}, {_fmt(i.hi)}]'


def summary_lines(curves: list[Curve], pretraining: int) -> list[str]:
  """The report's fine-tuning transfer section, in Markdown (none without curves)."""
  if not curves:
    return []
  c_ref = curves[0].c_ref
  lines = ['', '## Fine-tuning transfer: fine-tuned metric against pretraining compute', '',
           f'Per metric and fine-tune example count, the error rate 1 - metric as a power law '
           f'in the pretraining compute C of the checkpoint fine-tuned: 1 - metric = k (C / '
           f'C_ref)^a, least squares in log-log, C_ref = {c_ref:.3g} FLOPs (the geometric mean; '
           f'k is the error rate there). a < 0: more pretraining, fewer errors. 95% '
           f'percentile-bootstrap intervals ({curves[0].bootstrap} resamples of each curve\'s '
           f'trials, each drawn trial\'s metric redrawn from its held-out SE). The IsoFLOP '
           f'fits above read only the {pretraining} pretraining trials.',
           '', '| metric | examples | trials | pretraining C | a | k (error at C_ref) | '
           'metric at the largest C (± SE) |', '|---|---|---|---|---|---|---|']
  for curve in curves:
    pts, top = curve.points, curve.points.iloc[-1]
    fitted = curve.intervals() if curve.law is not None else {}
    lines.append(
        f'| `{curve.metric}` | {curve.examples} | {len(pts)} | {pts["C"].min():.3g}-'
        f'{pts["C"].max():.3g} | {_cell(fitted["a"]) if fitted else "-"} | '
        f'{_cell(fitted["k"]) if fitted else "-"} | {_fmt(top["value"])} ± '
        f'{_fmt(top["stderr"])} |')
  if math.isfinite(curves[0].chance):
    lines += ['', f'Chance (a random guess): {curves[0].chance:.4g}.']
  lines += [f'- `{c.metric}`, {c.examples} examples: not fitted: {c.not_fitted}.'
            for c in curves if c.law is None]
  return lines


def to_dict(curves: list[Curve]) -> list[dict]:
  """fit.json's `finetune_transfer` entry."""
  out = []
  for c in curves:
    entry = {'metric': c.metric, 'examples': c.examples, 'c_ref': c.c_ref, 'chance': c.chance,
             'not_fitted': c.not_fitted, 'bootstrap': c.bootstrap,
             'fitted_draws': len(c.draws), 'points': c.points.to_dict(orient='records')}
    if c.law is not None:
      entry['fit'] = {name: i.to_dict() for name, i in c.intervals().items()}
    out.append(entry)
  return out
