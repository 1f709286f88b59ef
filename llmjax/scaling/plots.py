"""The scaling report's figures, each a function returning its Figure (no pyplot).

Conventions, so a figure can go into a paper as it is: units on every axis (loss in
nats/token, C in FLOPs, N in parameters, D in tokens); log axes labelled at decades, or
at 1-2-5 steps when an axis spans less than two, never at colliding minor ticks; every
mark in the legend; the data's known irreducible loss drawn as a line where there is
one; and a panel that cannot be drawn says why inside the figure instead of vanishing.
"""

import math
import textwrap

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from llmjax.scaling import fit

LOSS = 'loss (nats/token)'
_COLORS = {'Approach 1': 'tab:blue', 'Approach 2': 'tab:orange', 'Approach 3': 'tab:green'}
_TRUTH = {'color': 'tab:red', 'linestyle': '--', 'linewidth': 1.2}


def _tick_label(value: float, _=None) -> str:
  """Plain numbers from 0.001 to 9999 ('0.5', '4.2', '300'); beyond, '10^k' at decades and
  'm×10^k' between them, as mathtext."""
  if value <= 0:
    return ''
  if 1e-3 <= value < 1e4:
    return f'{value:.4g}'
  exponent = math.floor(math.log10(value) + 1e-9)
  mantissa = value / 10 ** exponent
  if abs(mantissa - 1) < 1e-6:
    return f'$10^{{{exponent}}}$'
  return f'${mantissa:.2g}{{\\times}}10^{{{exponent}}}$'


def log_axis(ax, which: str = 'x') -> None:
  """A readable log axis: labels at decades, at 1, 2, 5 x 10^k over less than two, at
  round numbers over less than one; minor ticks unlabelled. Call after plotting."""
  axis = ax.xaxis if which == 'x' else ax.yaxis
  lo, hi = ax.get_xlim() if which == 'x' else ax.get_ylim()
  span = math.log10(hi / lo) if lo > 0 and hi > lo else 3
  if span < 0.8:  # under a decade log ticks are too few: evenly spaced round numbers
    axis.set_major_locator(ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
  else:
    subs = (1.0,) if span >= 2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
  axis.set_major_formatter(ticker.FuncFormatter(_tick_label))
  axis.set_minor_formatter(ticker.NullFormatter())


def truth_line(ax, truth: float | None, orientation: str = 'h') -> None:
  if truth is not None:
    label = f'known irreducible loss {truth:.4g}'
    (ax.axhline if orientation == 'h' else ax.axvline)(truth, label=label, **_TRUTH)


def note(ax, text: str, empty: bool = False) -> None:
  """Why (part of) a panel is missing, written into it: centred in an empty panel (whose
  ticks are dropped), else along its top edge, above the data."""
  width = 40 if empty else 70  # characters per line: the box stays inside the axes
  y, va = (0.5, 'center') if empty else (0.97, 'top')
  ax.text(0.5, y, textwrap.fill(text, width), transform=ax.transAxes, ha='center', va=va,
          fontsize='small', zorder=5,
          bbox={'boxstyle': 'round', 'facecolor': 'lightyellow', 'edgecolor': 'grey'})
  if empty:
    ax.set(xticks=[], yticks=[])
    ax.minorticks_off()


def _compute_grid(ax, pts: pd.DataFrame, beyond: float = 10.0) -> np.ndarray:
  """C from the sweep's smallest to 10x its largest; a dotted line where the data ends."""
  ax.axvline(pts['C'].max(), color='grey', linestyle=':', linewidth=1,
             label='largest C trained')
  return np.geomspace(pts['C'].min(), pts['C'].max() * beyond, 100)


def _band(ax, x, draws: np.ndarray, color, label: str | None = '95% bootstrap band') -> None:
  """The 95% percentile band of bootstrap curves draws (len(x), draws)."""
  if draws.ndim == 2 and draws.shape[1] >= 2:
    lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=1)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0, label=label)


def _n_colorbar(fig, ax, mappable) -> None:
  bar = fig.colorbar(mappable, ax=ax, label='N (parameters)')
  bar.ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(_tick_label))
  bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot_loss_vs_compute(pts: pd.DataFrame, approach3: fit.Approach3 | None = None) -> Figure:
  """Loss against training compute, coloured by N; Approach 3's compute-optimal frontier
  (and its bootstrap band) up to 10x the largest C; the known entropy if any."""
  fig = Figure(figsize=(6.4, 4.4), layout='constrained')
  ax = fig.subplots()
  dots = ax.scatter(pts['C'], pts['loss'], c=pts['N'], norm=colors.LogNorm(), cmap='viridis',
                    s=24, zorder=3, label='trials (colour: N)')
  _n_colorbar(fig, ax, dots)
  if approach3 is not None:
    grid = _compute_grid(ax, pts)
    ax.plot(grid, approach3.law.loss_opt(grid), 'k-', label='Approach 3 compute-optimal')
    _band(ax, grid, approach3.draw_laws.loss_opt(grid[:, None]), 'k')
  else:
    note(ax, 'no Approach 3 fit: frontier not drawn')
  truth_line(ax, pts.attrs.get('irreducible_loss'))
  ax.set(xscale='log', xlabel='C (training FLOPs)', ylabel=LOSS, title='Loss against compute')
  log_axis(ax)
  ax.legend(fontsize='small')
  return fig


def plot_isoflops(pts: pd.DataFrame, approach2: fit.ComputeOptimal | None,
                  reason: str | None = None) -> Figure:
  """Loss against N per IsoFLOP budget, with each fitted parabola and its minimum; without
  Approach 2, the points and the reason it was skipped."""
  fig = Figure(figsize=(6.4, 4.4), layout='constrained')
  ax = fig.subplots()
  groups = fit.isoflop_groups(pts)
  norm = colors.LogNorm(groups.min(), groups.max() * 1.0001)  # a single budget still spans
  cmap = matplotlib.colormaps['plasma']
  optima = approach2.optima.set_index('C') if approach2 is not None else pd.DataFrame()
  for budget, group in pts.groupby(groups.to_numpy()):
    color = cmap(0.85 * norm(budget))
    ax.scatter(group['N'], group['loss'], color=color, s=20,
               label=f'C = {_tick_label(budget)} FLOPs')
    if budget in optima.index:
      best = optima.loc[budget]
      n = np.geomspace(group['N'].min(), group['N'].max(), 60)
      ax.plot(n, np.polyval(best[['p2', 'p1', 'p0']].to_numpy(float), np.log(n)), color=color)
      ax.plot(best['N'], best['loss'], '*', color=color, markersize=12, markeredgecolor='k')
  if approach2 is None:
    note(ax, f'Approach 2 skipped: {reason or "no fit"}')
  else:
    ax.plot([], [], 'k-', label='parabola in log N')
    ax.plot([], [], 'w*', markeredgecolor='k', markersize=12, label='its minimum')
  truth_line(ax, pts.attrs.get('irreducible_loss'))
  ax.set(xscale='log', xlabel='N (parameters)', ylabel=LOSS, title='IsoFLOP profiles')
  log_axis(ax)
  ax.legend(fontsize='small')
  return fig


def plot_fitted_vs_observed(pts: pd.DataFrame, approach3: fit.Approach3) -> Figure:
  """Approach 3's predicted loss against the observed loss, with y = x."""
  fig = Figure(figsize=(5.4, 4.4), layout='constrained')
  ax = fig.subplots()
  predicted = approach3.law.predict(pts['N'].to_numpy(float), pts['D'].to_numpy(float))
  dots = ax.scatter(pts['loss'], predicted, c=pts['N'], norm=colors.LogNorm(), cmap='viridis',
                    s=20, label='trials (colour: N)')
  _n_colorbar(fig, ax, dots)
  ends = [min(pts['loss'].min(), predicted.min()), max(pts['loss'].max(), predicted.max())]
  ax.plot(ends, ends, 'k--', linewidth=1, label='y = x')
  truth_line(ax, pts.attrs.get('irreducible_loss'), 'v')
  ax.set(xlabel=f'observed {LOSS}', ylabel=f'fitted {LOSS}',
         title='Approach 3: fitted against observed')
  ax.legend(fontsize='small')
  return fig


def plot_residuals(pts: pd.DataFrame, approach3: fit.Approach3) -> Figure:
  """log(observed / fitted) against N and against D: structure here means the law misses."""
  fig = Figure(figsize=(8.8, 3.6), layout='constrained')
  axes = fig.subplots(1, 2, sharey=True)
  n, d = pts['N'].to_numpy(float), pts['D'].to_numpy(float)
  residual = np.log(pts['loss'].to_numpy(float) / approach3.law.predict(n, d))
  for ax, x, label in zip(axes, (n, d), ('N (parameters)', 'D (tokens)')):
    ax.scatter(x, residual, s=20, label='trials')
    ax.axhline(0.0, color='k', linewidth=1, label='perfect fit')
    ax.set(xscale='log', xlabel=label)
    log_axis(ax)
  axes[0].set(ylabel='log(observed / fitted loss)')
  axes[0].legend(fontsize='small')
  fig.suptitle('Residuals of Approach 3')
  return fig


def plot_optimal_allocation(fits) -> Figure:
  """N_opt(C) and D_opt(C) of each approach of `fits` (a report.Fits): power laws,
  bootstrap bands and the points Approaches 1 and 2 fitted."""
  fig = Figure(figsize=(8.8, 3.8), layout='constrained')
  axes = fig.subplots(1, 2)
  for ax in axes:
    grid = _compute_grid(ax, fits.points)
  for name, f in fits.optimal().items():
    color = _COLORS[name]
    if isinstance(f, fit.Approach3):
      curves = (f.law.n_opt, f.law.d_opt), (f.draw_laws.n_opt, f.draw_laws.d_opt)
    else:
      curves = (f.n_opt.predict, f.d_opt.predict), tuple(law.predict for law in f.draw_laws)
      label = 'envelope points' if f.approach == 1 else 'IsoFLOP minima'
      axes[0].scatter(f.optima['C'], f.optima['N'], color=color, s=16, label=label)
      axes[1].scatter(f.optima['C'], f.optima['D'], color=color, s=16, label=label)
    for ax, curve, draws in zip(axes, *curves):
      ax.plot(grid, curve(grid), color=color, label=name)
      _band(ax, grid, draws(grid[:, None]), color, label=f'{name} 95% band')
  missing = [f'{k} skipped: {v}' for k, v in fits.skipped.items()]
  if missing:
    axes[1].text(0.02, 0.98, '\n'.join(m[:90] for m in missing), transform=axes[1].transAxes,
                 va='top', fontsize='x-small', wrap=True)
  axes[0].set(xscale='log', yscale='log', xlabel='C (training FLOPs)', ylabel='N_opt (parameters)')
  axes[1].set(xscale='log', yscale='log', xlabel='C (training FLOPs)', ylabel='D_opt (tokens)')
  for ax in axes:
    log_axis(ax, 'x')
    log_axis(ax, 'y')
  axes[0].legend(fontsize='x-small')
  fig.suptitle('Compute-optimal allocation')
  return fig


def plot_holdout(result, truth: float | None = None) -> Figure:
  """Held-out losses (llmjax.scaling.holdout) against their predictions from the law fitted
  without their budget, with the 95% intervals."""
  fig = Figure(figsize=(5.6, 4.4), layout='constrained')
  ax = fig.subplots()
  p = result.predictions
  budgets = sorted(p['held_out'].unique())
  cmap, norm = matplotlib.colormaps['plasma'], colors.LogNorm(min(budgets), max(budgets) * 1.0001)
  for budget in budgets:
    rows = p[p['held_out'] == budget]
    yerr = np.abs(np.stack([rows['predicted'] - rows['lo'], rows['hi'] - rows['predicted']]))
    ax.errorbar(rows['loss'], rows['predicted'], yerr=np.nan_to_num(yerr), fmt='o', ms=4,
                capsize=2, color=cmap(0.85 * norm(budget)),
                label=f'C = {_tick_label(budget)} held out')
  ends = [min(p['loss'].min(), p['predicted'].min()), max(p['loss'].max(), p['predicted'].max())]
  ax.plot(ends, ends, 'k--', linewidth=1, label='y = x')
  truth_line(ax, truth, 'v')
  margin = 0.15 * (ends[1] - ends[0])  # an interval spanning orders of magnitude is cut
  ax.set(xlabel=f'observed {LOSS}', ylabel=f'predicted {LOSS}',
         ylim=(ends[0] - margin, ends[1] + margin),
         title='Leave one budget out (bars: 95% interval, cut at the frame)')
  ax.legend(fontsize='small')
  return fig


def plot_single_laws(laws: dict, skipped: dict[str, str], truth: float | None = None) -> Figure:
  """Kaplan-style L(N) and L(D) (llmjax.scaling.kaplan), with their power laws."""
  fig = Figure(figsize=(8.8, 3.8), layout='constrained')
  axes = dict(zip('ND', fig.subplots(1, 2)))
  labels = {'N': 'N (parameters)', 'D': 'D (tokens)'}
  for variable, ax in axes.items():
    ax.set(xscale='log', xlabel=labels[variable], title=f'L({variable})')
    law = laws.get(variable)
    if law is None:
      note(ax, f'L({variable}) not drawn: {skipped.get(f"L({variable})", "no points")}',
           empty=True)
      continue
    x = law.points[variable].to_numpy(float)
    ax.scatter(x, law.points['loss'], color='k', s=20, zorder=3, label=law.note)
    grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 60)
    ax.plot(grid, law.pure.predict(grid), 'tab:blue',
            label=f'k {variable}^a, a = {law.pure.a:.3g}')
    if law.offset is not None:
      ax.plot(grid, law.offset.predict(grid), 'tab:green',
              label=f'E + k {variable}^a, E = {law.offset.E:.3g}, a = {law.offset.a:.3g}')
    truth_line(ax, truth)
    log_axis(ax)
    ax.legend(fontsize='x-small')
  axes['N'].set(ylabel=LOSS)
  fig.suptitle('Single-variable laws (Kaplan et al. 2020 style)')
  return fig
