"""Scaling reports: the fits a results table supports, written as fit.json, summary.md and
plots (PNG and SVG). Each plot is a function returning its Figure, so a notebook shows one
with `report.plot_isoflops(pts, fit.approach2(pts))`.
"""

import dataclasses
import json
import math
import pathlib

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from llmjax.scaling import fit

PLOTS = ('loss_vs_compute', 'isoflops', 'fitted_vs_observed', 'residuals',
         'optimal_allocation')
_COLORS = {'Approach 1': 'tab:blue', 'Approach 2': 'tab:orange', 'Approach 3': 'tab:green'}


@dataclasses.dataclass(frozen=True, eq=False)
class Fits:
  """The fits run on one set of points, and why the others were skipped."""
  points: pd.DataFrame
  approach1: fit.ComputeOptimal | None
  approach2: fit.ComputeOptimal | None
  approach3: fit.Approach3 | None
  skipped: dict[str, str]  # approach -> reason

  def optimal(self) -> dict[str, fit.ComputeOptimal | fit.Approach3]:
    found = {'Approach 1': self.approach1, 'Approach 2': self.approach2,
             'Approach 3': self.approach3}
    return {name: f for name, f in found.items() if f is not None}


def run_fits(pts: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0,
             grid: fit.StartGrid = fit.StartGrid()) -> Fits:
  """Every approach the points support; the others are skipped with the fit's reason."""
  found, skipped = {}, {}
  runs = {'Approach 1': lambda: fit.approach1(pts, bootstrap=bootstrap, seed=seed),
          'Approach 2': lambda: fit.approach2(pts, bootstrap=bootstrap, seed=seed),
          'Approach 3': lambda: fit.approach3(pts, bootstrap=bootstrap, seed=seed, grid=grid)}
  for name, run in runs.items():
    try:
      found[name] = run()
    except ValueError as e:  # too few or degenerate points for this approach
      skipped[name] = str(e)
  return Fits(pts, found.get('Approach 1'), found.get('Approach 2'), found.get('Approach 3'),
              skipped)


def default_budgets(pts: pd.DataFrame) -> list[float]:
  """The smallest and largest budget of the sweep (C where no budget), 10x and 100x beyond."""
  budgets = pts['budget'].fillna(pts['C'])
  low, high = float(budgets.min()), float(budgets.max())
  return sorted({low, high, 10 * high, 100 * high})


def write_report(table_or_points, out_dir, *, params: str = 'N', loss: str = 'eval_loss',
                 budgets_to_predict=None, bootstrap: int = 200, seed: int = 0) -> Fits:
  """Fits a results table (or points, or a CSV path) and writes the report folder.

  Args:
    table_or_points: a results table, the output of fit.points, or a CSV path.
    out_dir: folder for fit.json, summary.md and <plot>.png/.svg (created).
    params, loss: the columns to fit (see fit.points), unless given points.
    budgets_to_predict: compute budgets for the N*/D* table; default_budgets() if None.
    bootstrap, seed: resamples for the intervals, and their seed.
  Returns:
    The fits.
  """
  pts = table_or_points
  if not (isinstance(pts, pd.DataFrame) and 'excluded' in pts.attrs):  # not fit.points yet
    pts = fit.points(table_or_points, loss=loss, params=params)
  budgets = list(budgets_to_predict or default_budgets(pts))
  fits = run_fits(pts, bootstrap=bootstrap, seed=seed)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  for name, figure in figures(fits).items():
    for suffix in ('png', 'svg'):
      figure.savefig(out / f'{name}.{suffix}', dpi=150)
    written.append(name)
  settings = {'loss': loss, 'params': params, 'bootstrap': bootstrap, 'seed': seed}
  (out / 'fit.json').write_text(json.dumps(_plain(_report_dict(fits, budgets, settings)),
                                           indent=2))
  (out / 'summary.md').write_text(summary_markdown(fits, budgets, settings, plots=written))
  return fits


def _report_dict(fits: Fits, budgets: list[float], settings: dict) -> dict:
  """fit.json: settings, every fit with its estimates, predictions at the budgets, points."""
  return {'settings': settings, 'skipped': fits.skipped,
          'excluded': fits.points.attrs.get('excluded', []),
          **{name.lower().replace(' ', ''): f.to_dict() for name, f in fits.optimal().items()},
          'predictions': [{'approach': name, 'C': c, **{k: e.to_dict() for k, e in
                                                          f.at(c).items()}}
                          for name, f in fits.optimal().items() for c in budgets],
          'points': fits.points.to_dict(orient='records')}


def _plain(value):
  """JSON-safe: NaN and infinities as null, numpy scalars as Python numbers."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_plain(v) for v in value]
  if isinstance(value, float | np.floating):
    return float(value) if math.isfinite(value) else None
  return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------- summary


def _fmt(x: float) -> str:
  return '-' if x is None or not math.isfinite(x) else f'{x:.4g}'


def _interval(e: fit.Estimate) -> str:
  return f'{_fmt(e.value)} [{_fmt(e.lo)}, {_fmt(e.hi)}]' if math.isfinite(e.lo) else _fmt(e.value)


def _estimates_table(estimates: dict[str, fit.Estimate]) -> list[str]:
  lines = ['| parameter | value | SE | 95% interval |', '|---|---|---|---|']
  lines += [f'| {name} | {_fmt(e.value)} | {_fmt(e.se)} | [{_fmt(e.lo)}, {_fmt(e.hi)}] |'
            for name, e in estimates.items()]
  return lines


def _table(frame: pd.DataFrame) -> list[str]:
  cells = frame.map(lambda v: _fmt(v) if isinstance(v, float) else str(v))
  return (['| ' + ' | '.join(frame.columns) + ' |', '|' + '---|' * len(frame.columns)] +
          ['| ' + ' | '.join(row) + ' |' for row in cells.itertuples(index=False)])


def _fit_sections(fits: Fits) -> list[str]:
  lines = []
  titles = {'Approach 1': 'lower envelope of loss against compute',
            'Approach 2': 'IsoFLOP profiles', 'Approach 3': 'L(N, D) = E + A/N^alpha + B/D^beta'}
  for name, f in fits.optimal().items():
    lines += ['', f'## {name}: {titles[name]}', ''] + _estimates_table(f.estimates())
    lines += ['', f'{len(f.draws)} of {f.bootstrap} bootstrap resamples fitted. '
              'a and b are the exponents of N_opt = k C^a and D_opt = k\' C^b.']
    if len(f.draws) < 0.8 * f.bootstrap:
      lines += ['', '**Intervals unreliable**: over 20% of resamples had too few distinct '
                'points (or compute levels) to fit, so those that fitted are unrepresentative.']
    truth = fits.points.attrs.get('irreducible_loss')
    if isinstance(f, fit.Approach3) and truth is not None:
      e = f.estimates()['E']
      inside = 'inside' if e.lo <= truth <= e.hi else 'outside'
      lines += ['', f'The data\'s true irreducible loss (its entropy rate) is {truth:.4g} nats; '
                f'the fitted E is {_interval(e)}, {inside} the interval.']
    if isinstance(f, fit.ComputeOptimal):
      lines += ['', 'Points of the power laws:', ''] + _table(f.optima[['C', 'N', 'D', 'loss']])
      lines += [f'- left out budget {e["budget"]:.4g}: {e["reason"]}' for e in f.excluded]
  return lines


def summary_markdown(fits: Fits, budgets: list[float], settings: dict,
                     plots: list[str] | None = None) -> str:
  """summary.md, listing `plots`; with plots=None, the shorter text `python -m llmjax.scaling
  fit` prints (no points table, no plots)."""
  pts, excluded = fits.points, fits.points.attrs.get('excluded', [])
  lines = ['# Scaling-law fit', '',
           f'{len(pts)} finished trials fitted (loss: `{settings["loss"]}`, parameters: '
           f'`{settings["params"]}`), {len(excluded)} excluded; bootstrap '
           f'{settings["bootstrap"]} resamples, seed {settings["seed"]}.']
  lines += _fit_sections(fits)
  lines += ['', '## Compute-optimal allocation (95% intervals)', '',
            '| approach | C | N_opt | D_opt | tokens per parameter | loss |',
            '|---|---|---|---|---|---|']
  for name, f in fits.optimal().items():
    for c in budgets:
      at = f.at(c)
      loss = _interval(at['loss']) if 'loss' in at else '-'
      lines.append(f'| {name} | {c:.3g} | {_interval(at["N_opt"])} | {_interval(at["D_opt"])} '
                   f'| {_interval(at["tokens_per_param"])} | {loss} |')
  if fits.skipped:
    lines += ['', '## Skipped', ''] + [f'- {k}: {v}' for k, v in fits.skipped.items()]
  if excluded:
    lines += ['', '## Excluded trials', ''] + [f'- {e["name"]}: {e["reason"]}' for e in excluded]
  if plots is not None:
    lines += ['', '## Points', ''] + _table(pts[['name', 'N', 'D', 'C', 'loss', 'budget', 'note']])
    lines += ['', '## Plots', ''] + [f'![{p}]({p}.png)' for p in plots]
  return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------- plots


def figures(fits: Fits) -> dict[str, Figure]:
  """The plots the fits support, by file name."""
  out = {'loss_vs_compute': plot_loss_vs_compute(fits.points, fits.approach3)}
  if fits.approach2 is not None:
    out['isoflops'] = plot_isoflops(fits.points, fits.approach2)
  if fits.approach3 is not None:
    out['fitted_vs_observed'] = plot_fitted_vs_observed(fits.points, fits.approach3)
    out['residuals'] = plot_residuals(fits.points, fits.approach3)
  if fits.optimal():
    out['optimal_allocation'] = plot_optimal_allocation(fits)
  return out


def _compute_grid(ax, pts: pd.DataFrame, beyond: float = 10.0) -> np.ndarray:
  """C from the sweep's smallest to 10x its largest; a dotted line where it ends."""
  ax.axvline(pts['C'].max(), color='grey', linestyle=':', linewidth=1)
  return np.geomspace(pts['C'].min(), pts['C'].max() * beyond, 100)


def _band(ax, x, draws: np.ndarray, color) -> None:
  """The 95% percentile band of bootstrap curves draws (len(x), draws)."""
  if draws.shape[1] >= 2:
    lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=1)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def plot_loss_vs_compute(pts: pd.DataFrame, approach3: fit.Approach3 | None = None) -> Figure:
  """Loss against training compute, coloured by N; with Approach 3's compute-optimal
  frontier (and its bootstrap band) up to 10x the largest C."""
  fig = Figure(figsize=(6.4, 4.4), layout='constrained')
  ax = fig.subplots()
  dots = ax.scatter(pts['C'], pts['loss'], c=pts['N'], norm=colors.LogNorm(), cmap='viridis',
                    s=24, zorder=3)
  fig.colorbar(dots, ax=ax, label='N (parameters)')
  if approach3 is not None:
    grid = _compute_grid(ax, pts)
    ax.plot(grid, approach3.law.loss_opt(grid), 'k-', label='Approach 3 compute-optimal')
    _band(ax, grid, approach3.draw_laws.loss_opt(grid[:, None]), 'k')
    ax.legend()
  ax.set(xscale='log', xlabel='C (training FLOPs)', ylabel='loss', title='Loss against compute')
  return fig


def plot_isoflops(pts: pd.DataFrame, approach2: fit.ComputeOptimal) -> Figure:
  """Loss against N per IsoFLOP budget, with each fitted parabola and its minimum."""
  fig = Figure(figsize=(6.4, 4.4), layout='constrained')
  ax = fig.subplots()
  groups = fit.isoflop_groups(pts)
  norm = colors.LogNorm(groups.min(), groups.max() * 1.0001)  # a single budget still spans
  cmap = matplotlib.colormaps['plasma']
  optima = approach2.optima.set_index('C')
  for budget, group in pts.groupby(groups.to_numpy()):
    color = cmap(0.85 * norm(budget))
    ax.scatter(group['N'], group['loss'], color=color, s=20, label=f'C = {budget:.2g}')
    if budget in optima.index:
      best = optima.loc[budget]
      n = np.geomspace(group['N'].min(), group['N'].max(), 60)
      ax.plot(n, np.polyval(best[['p2', 'p1', 'p0']].to_numpy(float), np.log(n)), color=color)
      ax.plot(best['N'], best['loss'], '*', color=color, markersize=12, markeredgecolor='k')
  ax.set(xscale='log', xlabel='N (parameters)', ylabel='loss', title='IsoFLOP profiles')
  ax.legend(fontsize='small')
  return fig


def plot_fitted_vs_observed(pts: pd.DataFrame, approach3: fit.Approach3) -> Figure:
  """Approach 3's predicted loss against the observed loss, with y = x."""
  fig = Figure(figsize=(4.8, 4.4), layout='constrained')
  ax = fig.subplots()
  predicted = approach3.law.predict(pts['N'].to_numpy(float), pts['D'].to_numpy(float))
  ax.scatter(pts['loss'], predicted, c=pts['N'], norm=colors.LogNorm(), cmap='viridis', s=20)
  ends = [min(pts['loss'].min(), predicted.min()), max(pts['loss'].max(), predicted.max())]
  ax.plot(ends, ends, 'k--', linewidth=1, label='y = x')
  ax.set(xlabel='observed loss', ylabel='fitted loss (Approach 3)', title='Fitted against observed')
  ax.legend()
  return fig


def plot_residuals(pts: pd.DataFrame, approach3: fit.Approach3) -> Figure:
  """log(observed / fitted) against N and against D: structure here means the law misses."""
  fig = Figure(figsize=(8.8, 3.6), layout='constrained')
  axes = fig.subplots(1, 2, sharey=True)
  n, d = pts['N'].to_numpy(float), pts['D'].to_numpy(float)
  residual = np.log(pts['loss'].to_numpy(float) / approach3.law.predict(n, d))
  for ax, x, label in zip(axes, (n, d), ('N (parameters)', 'D (tokens)')):
    ax.scatter(x, residual, s=20)
    ax.axhline(0.0, color='k', linewidth=1)
    ax.set(xscale='log', xlabel=label)
  axes[0].set(ylabel='log(observed / fitted)')
  fig.suptitle('Residuals of Approach 3')
  return fig


def plot_optimal_allocation(fits: Fits) -> Figure:
  """N_opt(C) and D_opt(C) of each approach: power laws, bootstrap bands and the points
  Approaches 1 and 2 fitted (envelope points, IsoFLOP minima)."""
  fig = Figure(figsize=(8.8, 3.8), layout='constrained')
  axes = fig.subplots(1, 2)
  for name, f in fits.optimal().items():
    color = _COLORS[name]
    if isinstance(f, fit.Approach3):
      curves = (f.law.n_opt, f.law.d_opt), (f.draw_laws.n_opt, f.draw_laws.d_opt)
    else:
      curves = (f.n_opt.predict, f.d_opt.predict), tuple(law.predict for law in f.draw_laws)
      axes[0].scatter(f.optima['C'], f.optima['N'], color=color, s=16)
      axes[1].scatter(f.optima['C'], f.optima['D'], color=color, s=16)
    for ax, curve, draws in zip(axes, *curves):
      grid = _compute_grid(ax, fits.points)
      ax.plot(grid, curve(grid), color=color, label=name)
      _band(ax, grid, draws(grid[:, None]), color)
  axes[0].set(xscale='log', yscale='log', xlabel='C (training FLOPs)', ylabel='N_opt')
  axes[1].set(xscale='log', yscale='log', xlabel='C (training FLOPs)', ylabel='D_opt (tokens)')
  axes[0].legend()
  fig.suptitle('Compute-optimal allocation (bands: 95% bootstrap)')
  return fig
