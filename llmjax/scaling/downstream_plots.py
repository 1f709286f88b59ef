"""The downstream section of a scaling report: figures of each task metric against compute
and of the two-step law's fits (llmjax.scaling.downstream), and `write`, which puts them
and their Markdown into a report folder. Figures follow llmjax.scaling.plots's conventions
(units on every axis, readable log ticks, every mark in the legend)."""

import math
import pathlib
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from llmjax.scaling import downstream, results
from llmjax.scaling.downstream import TaskMetric
from llmjax.scaling.plots import log_axis

COMPUTE = 'training compute C (FLOPs)'
TASK_LOSS = 'task loss (gold NLL, nats/char or /token)'
_CHANCE = {'color': 'tab:gray', 'linestyle': '--', 'linewidth': 1.0}
_CEILING = {'color': 'tab:red', 'linestyle': ':', 'linewidth': 1.2}
_COLUMNS = 3


def _bounds(ax, m: TaskMetric) -> None:
  if math.isfinite(m.chance):
    ax.axhline(m.chance, label=f'chance {m.chance:.3g}', **_CHANCE)
  if math.isfinite(m.ceiling):
    ax.axhline(m.ceiling, label=f'ceiling {m.ceiling:.3g}', **_CEILING)


def _keep_points_in_view(ax, values, *also: float) -> None:
  """y limits around the points (and `also`), so a wide bootstrap band cannot flatten them."""
  shown = np.concatenate([np.asarray(values, np.float64), np.asarray(also, np.float64)])
  shown = shown[np.isfinite(shown)]
  low, high = float(shown.min()), float(shown.max())
  pad = 0.15 * (high - low) or 0.1 * abs(high) or 0.1
  ax.set_ylim(low - pad, high + pad)


def _compute_grid(pts: pd.DataFrame) -> np.ndarray:
  return np.logspace(math.log10(pts['C'].min()), math.log10(pts['C'].max()), 100)


def _metric_panel(ax, m: TaskMetric) -> None:
  pts = m.points
  ax.errorbar(pts['C'], pts['value'], yerr=pts['stderr'].fillna(0), fmt='o', ms=4,
              capsize=2, label='trials (± bootstrap SE)')
  fitted = m.two_step
  if fitted is not None and (fitted.sigmoid is not None or m.metric == downstream.LOSS_METRIC):
    grid = _compute_grid(pts)
    if m.metric == downstream.LOSS_METRIC:
      best, draws = fitted.loss_law(grid), [law(grid) for law in fitted.loss_draws]
    else:
      best = fitted.sigmoid(fitted.loss_law(grid))
      draws = [s(law(grid)) for law, s in zip(fitted.loss_draws, fitted.sigmoid_draws)]
    ax.plot(grid, best, color='tab:green', label='two-step law' if m.metric !=
            downstream.LOSS_METRIC else 'power law')
    if draws:
      ax.fill_between(grid, *np.percentile(draws, [2.5, 97.5], axis=0), color='tab:green',
                      alpha=0.2, linewidth=0, label='95% bootstrap band')
  _keep_points_in_view(ax, pd.concat([pts['value'] - pts['stderr'].fillna(0),
                                      pts['value'] + pts['stderr'].fillna(0)]),
                       m.chance, m.ceiling)
  _bounds(ax, m)
  ax.set_xscale('log')
  log_axis(ax, 'x')
  ax.set_title(f'{m.task} {m.metric}' + (' (at chance)' if m.at_chance else ''), fontsize=9)
  ax.set_xlabel(COMPUTE, fontsize=8)
  ax.set_ylabel(TASK_LOSS if m.metric == downstream.LOSS_METRIC else m.metric, fontsize=8)
  ax.legend(fontsize=6, loc='best')


def plot_task_metrics(found: list[TaskMetric]) -> Figure:
  """One panel per task metric: its trials against compute, chance and ceiling, and the
  two-step law's prediction with its band where it was fitted."""
  rows = max(1, math.ceil(len(found) / _COLUMNS))
  columns = min(_COLUMNS, max(1, len(found)))
  fig = Figure(figsize=(4.2 * columns, 3.3 * rows), layout='constrained')
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  for ax, m in zip(axes, found):
    _metric_panel(ax, m)
  for ax in axes[len(found):]:
    ax.set_axis_off()
  if not found:
    axes[0].text(0.5, 0.5, 'no task metrics in the results table\n(set eval.tasks in the '
                 'sweep\'s config)', ha='center', va='center', transform=axes[0].transAxes)
  fig.suptitle('Downstream task metrics against training compute')
  return fig


def plot_two_step(m: TaskMetric) -> Figure:
  """The two steps of one metric's fit: task loss against compute (power law), and the
  metric against task loss (sigmoid; lower loss to the right, as compute grows)."""
  fig = Figure(figsize=(9.5, 3.6), layout='constrained')
  loss_ax, metric_ax = fig.subplots(1, 2)
  pts, fitted = m.points[np.isfinite(m.points['loss'])], m.two_step
  grid = _compute_grid(pts)
  loss_ax.plot(pts['C'], pts['loss'], 'o', ms=4, label='trials')
  loss_ax.plot(grid, fitted.loss_law(grid), color='tab:green',
               label=f'E + A (C/C_ref)^-alpha, alpha={fitted.loss_law.alpha:.3g}')
  if fitted.loss_draws:
    loss_ax.fill_between(grid, *np.percentile([law(grid) for law in fitted.loss_draws],
                                              [2.5, 97.5], axis=0),
                         color='tab:green', alpha=0.2, linewidth=0, label='95% bootstrap band')
  loss_ax.axhline(fitted.loss_law.E, label=f'fitted E {fitted.loss_law.E:.3g}', **_CHANCE)
  _keep_points_in_view(loss_ax, pts['loss'], fitted.loss_law.E)
  loss_ax.set(xscale='log', xlabel=COMPUTE, ylabel=TASK_LOSS, title='step 1: compute -> loss')
  log_axis(loss_ax, 'x')
  metric_ax.errorbar(pts['loss'], pts['value'], yerr=pts['stderr'].fillna(0), fmt='o', ms=4,
                     capsize=2, label='trials (± bootstrap SE)')
  if fitted.sigmoid is not None:
    span = np.linspace(pts['loss'].min(), pts['loss'].max(), 100)
    metric_ax.plot(span, fitted.sigmoid(span), color='tab:green',
                   label=f'sigmoid, L0={fitted.sigmoid.L0:.3g}, k={fitted.sigmoid.k:.3g}')
  else:
    metric_ax.text(0.5, 0.5, f'no sigmoid: {fitted.why_no_sigmoid}', ha='center',
                   transform=metric_ax.transAxes, fontsize=8, wrap=True)
  _bounds(metric_ax, m)
  metric_ax.invert_xaxis()
  metric_ax.set(xlabel=TASK_LOSS + ', decreasing', ylabel=m.metric,
                title='step 2: loss -> metric')
  for ax in (loss_ax, metric_ax):
    ax.legend(fontsize=7, loc='best')
  fig.suptitle(f'Two-step law (arXiv 2412.04403): {m.task} {m.metric}')
  return fig


def plot_task_domains(results: dict, metrics: tuple[str, ...] = ('acc', 'gold_prob')) -> Figure:
  """Per-domain task metrics of one evaluation (runner.evaluate's {task: results}): a bar
  per domain with its bootstrap SE, and the task's chance, one panel per (task, metric)
  whose task has examples from several domains."""
  panels = [(task, metric, out) for task, out in results.items() if out.get('domains')
            for metric in metrics if metric in out]
  fig = Figure(figsize=(4.2 * max(1, min(len(panels), _COLUMNS)),
                        3.3 * max(1, math.ceil(len(panels) / _COLUMNS))), layout='constrained')
  axes = fig.subplots(max(1, math.ceil(len(panels) / _COLUMNS)),
                      max(1, min(len(panels), _COLUMNS)), squeeze=False).ravel()
  for ax, (task, metric, out) in zip(axes, panels):
    names = ['all', *out['domains']]
    parts = [out, *out['domains'].values()]
    bars = ax.bar(names, [p[metric] for p in parts],
                  yerr=[p.get(f'{metric}_stderr', 0) for p in parts], capsize=3,
                  color=['tab:gray'] + ['tab:blue'] * (len(names) - 1),
                  label='metric ± bootstrap SE')
    ax.bar_label(bars, fmt='%.3g', fontsize=7, label_type='center')  # a 0 bar is still read
    if metric in out.get('chance', {}):
      ax.axhline(out['chance'][metric], label=f'chance {out["chance"][metric]:.3g}', **_CHANCE)
    ax.set(title=f'{task} {metric}', xlabel='domain (n examples: ' +
           ', '.join(str(p['num_examples']) for p in parts) + ')', ylabel=metric)
    ax.legend(fontsize=7, loc='best')
  for ax in axes[len(panels):]:
    ax.set_axis_off()
  if not panels:
    axes[0].text(0.5, 0.5, 'no task here has examples from more than one domain',
                 ha='center', va='center', transform=axes[0].transAxes)
  fig.suptitle('Task metrics per domain')
  return fig


def figure_name(m: TaskMetric) -> str:
  return 'two_step_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{m.task}_{m.metric}')


def figures(found: list[TaskMetric]) -> dict[str, Figure]:
  """'task_metrics', and one two-step figure per metric whose sigmoid was fitted."""
  if not found:
    return {}
  out = {'task_metrics': plot_task_metrics(found)}
  for m in found:
    if m.two_step is not None and m.two_step.sigmoid is not None:
      out[figure_name(m)] = plot_two_step(m)
  return out


def write(table, out_dir, *, bootstrap: int = 200, seed: int = 0) -> tuple[list, list[str]]:
  """Analyses a results table's task metrics (a DataFrame, a CSV path or a sweep workdir;
  none in fit.points output) and writes their figures (PNG and SVG) into out_dir. Returns
  the analysis and the summary's Markdown lines (with the figures listed), both empty
  without tasks."""
  if not isinstance(table, pd.DataFrame):
    table = results.load(table)
  found = downstream.analyse(table, bootstrap=bootstrap, seed=seed)
  out = pathlib.Path(out_dir)
  names = []
  for name, figure in figures(found).items():
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ('png', 'svg'):
      figure.savefig(out / f'{name}.{suffix}', dpi=150)
    names.append(name)
  lines = downstream.summary_lines(found)
  lines += ['', '### Downstream plots', ''] + [f'![{n}]({n}.png)' for n in names] if names else []
  return found, lines
