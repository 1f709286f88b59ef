"""The fine-tuning transfer section of a scaling report: the figure of each fine-tuned
metric against pretraining compute (llmjax.scaling.finetune_transfer), and `write`, which
puts it and its Markdown into a report folder. The figure follows llmjax.scaling.plots's
conventions (units on every axis, readable log ticks, every mark in the legend)."""

import math
import pathlib

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from llmjax.scaling import finetune_transfer
from llmjax.scaling.finetune_transfer import Curve
from llmjax.scaling.plots import log_axis, note

COMPUTE = 'pretraining compute C of the checkpoint (FLOPs)'
FIGURE = 'finetune_transfer'
_LABELS = {'eval/acc': 'held-out accuracy (fraction correct)',
           'eval/f1_macro': 'held-out macro-F1 (fraction)'}
_CHANCE = {'color': 'tab:gray', 'linestyle': '--', 'linewidth': 1.0}


def _curve(ax, curve: Curve, color, shift: float) -> None:
  """`shift`: a factor on the points' C, so curves' points at one C sit side by side
  instead of hiding each other's error bars (the fitted line is drawn unshifted)."""
  pts = curve.points
  ax.errorbar(pts['C'] * shift, pts['value'], yerr=pts['stderr'].fillna(0), fmt='o', ms=4,
              capsize=2, color=color, label=f'{curve.examples} examples: trials (± bootstrap SE)')
  if curve.law is None:
    return
  grid = np.geomspace(pts['C'].min(), pts['C'].max(), 100)
  a = curve.intervals()['a']
  ax.plot(grid, curve.predict(grid), color=color,
          label=f'{curve.examples} examples: fit, a = {a.value:.2g} [{a.lo:.2g}, {a.hi:.2g}]')
  if curve.draws:
    ax.fill_between(grid, *curve.band(grid), color=color, alpha=0.12, linewidth=0,
                    label=f'{curve.examples} examples: 95% bootstrap band')


def _keep_in_view(ax, curves: list[Curve], chance: float) -> None:
  """y limits around the points, their error bars and chance (within 0..1), so a wide
  bootstrap band cannot flatten them."""
  shown = [chance] if math.isfinite(chance) else []
  for c in curves:
    se = c.points['stderr'].fillna(0)
    shown += [*(c.points['value'] - se), *(c.points['value'] + se)]
  low, high = min(shown), max(shown)
  pad = 0.08 * max(high - low, 0.05)
  ax.set_ylim(max(0.0, low - pad), min(1.0, high) + pad)


def _panel(ax, metric: str, curves: list[Curve]) -> None:
  for i, curve in enumerate(curves):
    _curve(ax, curve, f'C{i}', 1.04 ** (i - (len(curves) - 1) / 2))
  chance = curves[0].chance
  if math.isfinite(chance):
    ax.axhline(chance, label=f'chance {chance:.3g}', **_CHANCE)
  _keep_in_view(ax, curves, chance)
  ax.set_xscale('log')
  log_axis(ax, 'x')
  ax.set_xlabel(COMPUTE, fontsize=8)
  ax.set_ylabel(_LABELS.get(metric, metric), fontsize=8)
  ax.set_title(f'{metric}: 1 - metric = k (C / C_ref)^a per example count', fontsize=9)
  # Below the axes: three curves' bands leave no corner free of data.
  ax.legend(fontsize=6.5, loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2)
  missing = [f'{c.examples} examples: {c.not_fitted}' for c in curves if c.law is None]
  if missing:
    note(ax, 'not fitted: ' + '; '.join(missing))


def plot(curves: list[Curve]) -> Figure:
  """One panel per metric: each example count's fine-tunes against the pretraining compute
  of their checkpoints, its fitted law and band, and chance."""
  metrics = list(dict.fromkeys(c.metric for c in curves))
  fig = Figure(figsize=(5.6 * max(1, len(metrics)), 5.6), layout='constrained')
  axes = fig.subplots(1, max(1, len(metrics)), squeeze=False).ravel()
  for ax, metric in zip(axes, metrics):
    _panel(ax, metric, [c for c in curves if c.metric == metric])
  if not metrics:
    note(axes[0], 'no finished fine-tune trials in the results table', empty=True)
  fig.suptitle('Fine-tuned metric against pretraining compute, per fine-tune data size')
  return fig


def write(table, out_dir, *, bootstrap: int = 200, seed: int = 0) -> tuple[list, list[str]]:
  """Analyses a results table's fine-tunes and writes their figure (PNG and SVG) into
  out_dir. Returns the curves and the summary's Markdown lines, both empty without
  fine-tunes (nothing written)."""
  curves = finetune_transfer.analyse(table, bootstrap=bootstrap, seed=seed)
  if not curves:
    return [], []
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  figure = plot(curves)
  for suffix in ('png', 'svg'):
    figure.savefig(out / f'{FIGURE}.{suffix}', dpi=150)
  pretraining = len(finetune_transfer.pretraining_rows(table))
  lines = finetune_transfer.summary_lines(curves, pretraining)
  return curves, lines + ['', f'![{FIGURE}]({FIGURE}.png)']
