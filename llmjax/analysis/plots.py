"""Matplotlib figures of the analysis tables, one call each; every function returns its Figure
(made without pyplot: no global figure state, so a notebook shows each figure once).

Tables from `compare.over_steps` / `over_runs` (with a step or run column) get one line per
checkpoint (coloured from early to late) or per run (by size).
"""

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llmjax.analysis import weights as weights_lib
from llmjax.analysis.runs import Run, Sweep
from llmjax.scaling.plots import log_axis

# Axis labels with units for the metric names of metrics.jsonl.
_LABELS = {'loss': 'train loss (nats/token)', 'eval/loss': 'eval loss (nats/token)',
           'eval/bits_per_byte': 'eval bits/byte', 'tokens': 'tokens', 'flops': 'training FLOPs',
           'lr': 'learning rate', 'tokens_per_s': 'throughput (tokens/s)'}
# Token labels on heatmaps: readable when printed at a column's width.
_TOKEN_FONT = 8


def _figure(panels: int = 1, width: float = 5.0, height: float = 3.5, cols: int = 3):
  cols = min(panels, cols)
  rows = -(-panels // cols)
  fig = Figure(figsize=(width * cols, height * rows), layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.ravel()[panels:]:
    ax.set_visible(False)
  return fig, axes.ravel()[:panels]


def _hue(table: pd.DataFrame, columns=('run', 'trial', 'step')) -> str | None:
  """The column that tells curves apart: run (a comparison of runs) or step (of checkpoints)."""
  for column in columns:
    if column in table and table[column].nunique() > 1:
      return column
  return None


def _groups(table: pd.DataFrame, hue: str | None):
  """(label, colour, rows) per curve: checkpoints coloured early to late, runs by size."""
  if hue is None:
    yield None, 'C0', table
    return
  order = table.groupby(hue, sort=False)['N'].first().sort_values().index \
      if 'N' in table and hue in ('run', 'trial') else sorted(table[hue].unique())
  colours = matplotlib.colormaps['viridis'](np.linspace(0.0, 0.9, len(order)))
  for value, colour in zip(order, colours):
    label = f'step {value}' if hue == 'step' else str(value)
    yield label, colour, table[table[hue] == value]


def curves(source: Run | Sweep | pd.DataFrame, keys: Sequence[str] = ('loss', 'eval/loss'),
           x: str = 'step', logx: bool = False, logy: bool = False, smooth: int = 1):
  """One panel per metric against step, tokens or flops; a sweep draws one line per trial.
  `smooth` > 1: rolling mean over that many logged values."""
  table = source.metrics() if isinstance(source, Sweep) else \
      source.metrics if isinstance(source, Run) else source
  keys = [keys] if isinstance(keys, str) else list(keys)
  missing = [k for k in [x, *keys] if k not in table]
  if missing:
    raise KeyError(f'no metric {missing[0]!r}; the table has {", ".join(map(str, table))}')
  hue = _hue(table, ('run', 'trial'))  # a metrics table has one row per step
  fig, axes = _figure(len(keys))
  for ax, key in zip(axes, keys):
    for label, colour, rows in _groups(table, hue):
      rows = rows[[x, key]].dropna()
      y = rows[key].rolling(smooth, min_periods=1).mean() if smooth > 1 else rows[key]
      ax.plot(rows[x], y, color=colour, label=label, marker='.' if len(rows) < 30 else None)
    ax.set(xlabel=_LABELS.get(x, x), ylabel=_LABELS.get(key, key),
           xscale='log' if logx else 'linear', yscale='log' if logy else 'linear')
    for which, on in (('x', logx), ('y', logy)):
      if on:
        log_axis(ax, which)
    ax.grid(alpha=0.3)
  if hue:
    axes[0].legend(fontsize='small')
  return fig


def weight_stats(table: pd.DataFrame, value: str = 'rms', x: str = 'step'):
  """`weights.stats` of one checkpoint: `value` against layer, one line per parameter kind
  (global parameters at layer -1). Over checkpoints (`compare.over_steps`): one panel per
  kind, `value` against `x` (step, tokens or flops), one line per layer."""
  if 'step' not in table or table['step'].nunique() == 1:
    fig, (ax,) = _figure()
    for kind, rows in table.groupby('kind'):
      ax.plot(rows['layer'], rows[value], marker='o', label=kind)
    ax.set(xlabel='layer (-1: not per layer)', ylabel=value)
    ax.legend(fontsize='small', ncol=2)
    ax.grid(alpha=0.3)
    return fig
  kinds = list(dict.fromkeys(table['kind']))
  fig, axes = _figure(len(kinds), width=4.0, height=3.0, cols=4)
  for ax, kind in zip(axes, kinds):
    rows = table[table['kind'] == kind]
    layers = sorted(rows['layer'].unique())
    colours = matplotlib.colormaps['plasma'](np.linspace(0.0, 0.85, len(layers)))
    for layer, colour in zip(layers, colours):
      line = rows[rows['layer'] == layer].sort_values(x)
      ax.plot(line[x], line[value], color=colour, marker='.',
              label=f'layer {layer}' if layer >= 0 else None)
    ax.set(title=kind, xlabel=x, ylabel=value)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize='x-small')
  return fig


def spectrum(models, kind: str, layer: int = -1):
  """Singular values of one parameter matrix, log-log; `models` is a model or a mapping
  label -> model (e.g. {f'step {s}': run.model(s) for s in run.steps})."""
  models = models if isinstance(models, Mapping) else {kind: models}
  fig, (ax,) = _figure()
  colours = matplotlib.colormaps['viridis'](np.linspace(0.0, 0.9, len(models)))
  for (label, model), colour in zip(models.items(), colours):
    values = weights_lib.singular_values(model, kind, layer)
    ax.plot(np.arange(1, len(values) + 1), values, color=colour, label=str(label))
  ax.set(xscale='log', yscale='log', xlabel='index', ylabel='singular value',
         title=f'{kind}' + (f', layer {layer}' if layer >= 0 else ''))
  log_axis(ax, 'x')
  log_axis(ax, 'y')
  ax.legend(fontsize='small')
  ax.grid(alpha=0.3)
  return fig


def attention(trace, layer: int, row: int = 0, labels: Sequence[str] | None = None,
              max_tokens: int = 48):
  """Attention pattern of every head of one layer (queries down, keys across) on the
  first `max_tokens` tokens of batch row `row`; `labels` names the tokens."""
  probs = np.asarray(trace.attention[layer, row, :, :max_tokens, :max_tokens])
  side = 3.4 if labels is None else max(3.4, 1.2 + 0.14 * probs.shape[-1])  # 8pt per token
  fig, axes = _figure(probs.shape[0], width=side, height=side,
                      cols=4 if labels is None else 2)
  for head, ax in enumerate(axes):
    image = ax.imshow(probs[head], cmap='Blues', vmin=0.0, vmax=1.0)
    ax.set_title(f'layer {layer} head {head}', fontsize='small')
    ax.set(xlabel='key token', ylabel='query token')
    if labels is not None:
      shown = [_printable(t) for t in labels[:probs.shape[-1]]]
      ax.set_xticks(range(len(shown)), shown, rotation=90, fontsize=_TOKEN_FONT)
      ax.set_yticks(range(len(shown)), shown, fontsize=_TOKEN_FONT)
  fig.colorbar(image, ax=list(axes), label='attention probability', shrink=0.8)
  return fig


def _printable(token: str) -> str:
  return repr(token)[1:-1] if token.strip() != token or not token.isprintable() else token


def heads(table: pd.DataFrame, value: str = 'entropy'):
  """A per-head table (`activations.attention_stats`, `weights.head_norms`) as a layer x head
  heatmap of `value`."""
  grid = table.pivot_table(index='layer', columns='head', values=value)
  fig, (ax,) = _figure(width=max(3.5, 1.5 + 0.5 * grid.shape[1]),
                       height=max(2.5, 1.0 + 0.4 * grid.shape[0]))
  image = ax.imshow(grid.to_numpy(), cmap='viridis', aspect='auto')
  ax.set(xlabel='head', ylabel='layer', title=value, xticks=range(grid.shape[1]),
         yticks=range(grid.shape[0]))
  fig.colorbar(image, ax=ax)
  return fig


def logit_lens(table: pd.DataFrame, row: int = 0, value: str = 'loss',
               labels: Sequence[str] | None = None, max_tokens: int = 48):
  """`activations.logit_lens` of one batch row as a layer x token heatmap of `value` (loss
  of the target, rank, top_prob or entropy); `labels` names the target tokens."""
  rows = table[(table['row'] == row) & (table['index'] < max_tokens)]
  grid = rows.pivot(index='layer', columns='index', values=value)
  fig, (ax,) = _figure(width=min(2.5 + 0.16 * grid.shape[1] * (2 if labels else 1), 16.0),
                       height=1.5 + 0.4 * grid.shape[0])
  image = ax.imshow(grid.to_numpy(), cmap='magma_r' if value != 'top_prob' else 'magma',
                    aspect='auto', interpolation='nearest')
  ax.set(xlabel='target token', ylabel='layer (0: embeddings)', title=f'logit lens: {value}',
         yticks=range(grid.shape[0]))
  if labels is not None:
    shown = [_printable(t) for t in labels[:grid.shape[1]]]
    ax.set_xticks(range(len(shown)), shown, rotation=90, fontsize=_TOKEN_FONT)
  units = {'loss': 'nats', 'entropy': 'nats', 'top_prob': 'probability', 'rank': 'rank'}
  fig.colorbar(image, ax=ax, label=f'{value} ({units.get(value, value)})')
  return fig


def by_layer(table: pd.DataFrame, value: str = 'rms', logy: bool = False):
  """A per-layer table (`activations.residual_rms`) against layer; one line per checkpoint
  or run in comparison tables."""
  fig, (ax,) = _figure()
  hue = _hue(table)
  for label, colour, rows in _groups(table, hue):
    ax.plot(rows['layer'], rows[value], marker='o', color=colour, label=label)
  ax.set(xlabel='layer (0: embeddings)', ylabel=value, yscale='log' if logy else 'linear')
  if hue:
    ax.legend(fontsize='small')
  ax.grid(alpha=0.3)
  return fig


def loss_by_position(table: pd.DataFrame, logx: bool = True):
  """`activations.loss_by_position` (or a comparison of them): loss against position in
  the document."""
  fig, (ax,) = _figure()
  hue = _hue(table)
  for label, colour, rows in _groups(table, hue):
    rows = rows.sort_values('position')
    ax.plot(rows['position'] + 1, rows['loss'], color=colour, label=label)
  ax.set(xlabel='position in document + 1', ylabel='loss (nats/token)',
         xscale='log' if logx else 'linear')
  if logx:
    log_axis(ax, 'x')
  if hue:
    ax.legend(fontsize='small')
  ax.grid(alpha=0.3)
  return fig


def loss_by_class(table: pd.DataFrame, value: str = 'loss'):
  """`activations.loss_by_class` (or a comparison of them) as bars per token class."""
  hue = _hue(table)
  classes = list(dict.fromkeys(table['class']))
  groups = list(_groups(table, hue))
  width = 0.8 / len(groups)
  fig, (ax,) = _figure(width=6.0)
  for i, (label, colour, rows) in enumerate(groups):
    heights = rows.set_index('class')[value].reindex(classes)
    ax.bar(np.arange(len(classes)) + (i - (len(groups) - 1) / 2) * width, heights, width,
           color=colour, label=label)
  ax.set_xticks(range(len(classes)), classes, rotation=30)
  ax.set(ylabel=value)
  if hue:
    ax.legend(fontsize='small')
  ax.grid(alpha=0.3, axis='y')
  return fig


def spikes(metrics: pd.DataFrame, found: pd.DataFrame, key: str = 'loss',
           context: Sequence[str] = ('grad_norm', 'update_norm')):
  """`key` with the spikes of `curves.find_spikes` marked, above the optimizer metrics of
  the same steps."""
  context = [c for c in context if c in metrics]
  fig, axes = _figure(1 + len(context), width=10.0, height=2.6, cols=1)
  for ax, name in zip(axes, [key, *context]):
    rows = metrics[['step', name]].dropna()
    ax.plot(rows['step'], rows[name], lw=1)
    for step in found['step']:
      ax.axvline(step, color='red', alpha=0.4, lw=1)
    ax.set(ylabel=_LABELS.get(name, name), yscale='log' if name != key else 'linear')
    if name != key:
      log_axis(ax, 'y')
    ax.grid(alpha=0.3)
  axes[0].set_title(f'{len(found)} spike(s) in {key}')
  axes[-1].set_xlabel('step')
  return fig
