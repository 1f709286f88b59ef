"""Learning-rate transfer across width: the report section of a sweep over width x LR.

For each parametrization and width: the held-out loss against log2(lr), and its optimum,
the vertex of a parabola fitted in log2(lr) to the grid minimum and its neighbours (two
on each side where the grid has them), with a residual-bootstrap 95% interval. Then, per
parametrization, the slope of log2(lr*) against log2(width): about 0 when the LR transfers
(muP), negative when the best LR falls with width (sp under Adam).

The sweep's trials carry tags width, lr and parametrization (experiments/scaling/
mup_transfer.py); `applies` says whether a sweep workdir is such a sweep.
"""

import json
import pathlib

import numpy as np
import pandas as pd

NEIGHBOURS = 2  # grid points each side of the minimum in the parabola


def _manifest(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / 'sweep.json'
  return json.loads(path.read_text())['trials'] if path.is_file() else []


def applies(workdir) -> bool:
  """Whether the sweep in `workdir` varies the LR and the width (tagged trials)."""
  trials = _manifest(workdir)
  if not trials or not all({'width', 'lr'} <= set(t) for t in trials):
    return False
  return len({t['lr'] for t in trials}) > 1 and len({t['width'] for t in trials}) > 1


def table(workdir, results: pd.DataFrame, loss: str = 'eval_loss') -> pd.DataFrame:
  """Rows (parametrization, width, lr, loss) of the done trials; `results` is the sweep's
  results table (llmjax.scaling.results)."""
  tags = pd.DataFrame(_manifest(workdir))[['name', 'width', 'lr']].assign(
      parametrization=[t.get('parametrization', 'sp') for t in _manifest(workdir)])
  done = results[results['status'] == 'done'][['name', loss]].rename(columns={loss: 'loss'})
  frame = tags.merge(done, on='name')
  return frame[np.isfinite(frame['loss'])].sort_values(['parametrization', 'width', 'lr'])


def _vertex(x: np.ndarray, y: np.ndarray) -> float:
  a, b, _ = np.polyfit(x, y, 2)
  if a <= 0:  # no minimum: the grid point itself
    return float(x[np.argmin(y)])
  return float(np.clip(-b / (2 * a), x.min(), x.max()))


def optimum(lrs, losses, bootstrap: int = 200, seed: int = 0) -> dict:
  """log2 of the best LR of one curve: the parabola's vertex near the grid minimum, its
  95% residual-bootstrap interval, and whether the minimum sits on the grid's edge."""
  x, y = np.log2(np.asarray(lrs, float)), np.asarray(losses, float)
  order = np.argsort(x)
  x, y = x[order], y[order]
  i = int(np.argmin(y))
  lo, hi = max(0, i - NEIGHBOURS), min(len(x), i + NEIGHBOURS + 1)
  xs, ys = x[lo:hi], y[lo:hi]
  edge = i in (0, len(x) - 1)
  if len(xs) < 3:
    return dict(log2_lr=float(x[i]), low=float(x[i]), high=float(x[i]), at_edge=edge)
  best = _vertex(xs, ys)
  coef = np.polyfit(xs, ys, 2)
  residuals = ys - np.polyval(coef, xs)
  rng = np.random.default_rng(seed)
  draws = [_vertex(xs, np.polyval(coef, xs) + rng.choice(residuals, len(xs)))
           for _ in range(bootstrap)]
  low, high = (np.percentile(draws, [2.5, 97.5]) if draws else (best, best))
  return dict(log2_lr=best, low=float(low), high=float(high), at_edge=edge)


def optima(frame: pd.DataFrame, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
  """One row per (parametrization, width): the optimum and the grid point it is nearest."""
  rows = []
  for (p, width), g in frame.groupby(['parametrization', 'width']):
    best = optimum(g['lr'], g['loss'], bootstrap, seed)
    grid_best = float(np.log2(g['lr'].iloc[int(np.argmin(g['loss'].to_numpy()))]))
    rows.append(dict(parametrization=p, width=width, grid_log2_lr=grid_best,
                     best_loss=float(g['loss'].min()), **best))
  return pd.DataFrame(rows)


def shifts(best: pd.DataFrame) -> pd.DataFrame:
  """Per parametrization: slope of log2(lr*) against log2(width), and the move of the grid
  optimum from the smallest to the largest width, in grid steps (log2 units here)."""
  rows = []
  for p, g in best.groupby('parametrization'):
    g = g.sort_values('width')
    slope = np.polyfit(np.log2(g['width']), g['log2_lr'], 1)[0] if len(g) > 1 else np.nan
    rows.append(dict(parametrization=p, slope=float(slope),
                     grid_move=float(g['grid_log2_lr'].iloc[-1] - g['grid_log2_lr'].iloc[0])))
  return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, best: pd.DataFrame):
  """Loss against log2(lr), one panel per parametrization, one curve per width; the fitted
  optimum marked with its interval."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  kinds = sorted(frame['parametrization'].unique())
  fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), sharey=True,
                           squeeze=False)
  widths = sorted(frame['width'].unique())
  colors = dict(zip(widths, plt.cm.viridis(np.linspace(0, 0.9, len(widths)))))
  for ax, kind in zip(axes[0], kinds):
    for width, g in frame[frame['parametrization'] == kind].groupby('width'):
      ax.plot(np.log2(g['lr']), g['loss'], marker='o', ms=3, color=colors[width],
              label=f'D={width}')
      b = best[(best['parametrization'] == kind) & (best['width'] == width)].iloc[0]
      ax.axvline(b['log2_lr'], color=colors[width], ls=':', lw=1)
      ax.axvspan(b['low'], b['high'], color=colors[width], alpha=0.08)
    ax.set(title=kind, xlabel='log2(lr)')
  axes[0][0].set_ylabel('held-out loss (nats/token)')
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  return fig


def markdown(best: pd.DataFrame, moves: pd.DataFrame) -> str:
  lines = ['## Learning-rate transfer', '',
           '| parametrization | width | best log2(lr) (95%) | grid best | loss |',
           '|---|---|---|---|---|']
  for r in best.itertuples():
    edge = ' (grid edge)' if r.at_edge else ''
    lines.append(f'| {r.parametrization} | {r.width} | {r.log2_lr:.2f} [{r.low:.2f}, '
                 f'{r.high:.2f}]{edge} | {r.grid_log2_lr:g} | {r.best_loss:.4f} |')
  lines += ['', '| parametrization | slope of log2(lr*) vs log2(width) | grid optimum moves |',
            '|---|---|---|']
  lines += [f'| {r.parametrization} | {r.slope:+.3f} | {r.grid_move:+g} steps |'
            for r in moves.itertuples()]
  return '\n'.join(lines) + '\n'


def write(workdir, results: pd.DataFrame, out, loss: str = 'eval_loss', bootstrap: int = 200,
          seed: int = 0) -> str:
  """Writes lr_transfer.md, lr_transfer.json and lr_transfer.png into `out`; returns the
  markdown. ValueError when no curve has finished trials."""
  frame = table(workdir, results, loss)
  if frame.empty:
    raise ValueError('no finished trials with width and lr tags')
  best = optima(frame, bootstrap, seed)
  moves = shifts(best)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  text = markdown(best, moves)
  (out / 'lr_transfer.md').write_text(text)
  (out / 'lr_transfer.json').write_text(json.dumps(
      dict(optima=best.to_dict('records'), shifts=moves.to_dict('records')), indent=2,
      default=float) + '\n')
  plot(frame, best).savefig(out / 'lr_transfer.png', dpi=120)
  return text
