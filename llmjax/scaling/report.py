"""Scaling reports: the fits a results table supports, written as fit.json, summary.md and
plots (PNG and SVG), each fit with the warnings of llmjax.scaling.diagnostics and
Approach 3 with a leave-one-budget-out check (llmjax.scaling.holdout). The plots are
functions of llmjax.scaling.plots returning a Figure, re-exported here, so a notebook
shows one with `report.plot_isoflops(pts, fit.approach2(pts))`.
"""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from llmjax.scaling import (diagnostics, downstream, downstream_plots, finetune_transfer,
                            finetune_transfer_plots, fit, holdout, kaplan, plots)
from llmjax.scaling.plots import (plot_fitted_vs_observed, plot_holdout, plot_isoflops,  # noqa: F401
                                  plot_loss_vs_compute, plot_optimal_allocation, plot_residuals,
                                  plot_single_laws)

# Flags after which Approach 3's law means nothing, so it is not extrapolated either.
_DEGENERATE = ('E_at_bound', 'alpha_degenerate', 'beta_degenerate')
PLOTS = ('loss_vs_compute', 'isoflops', 'fitted_vs_observed', 'residuals',
         'optimal_allocation', 'holdout', 'single_laws')


@dataclasses.dataclass(frozen=True, eq=False)
class Fits:
  """The fits run on one set of points, why the others were skipped, and the checks."""
  points: pd.DataFrame
  approach1: fit.ComputeOptimal | None
  approach2: fit.ComputeOptimal | None
  approach3: fit.Approach3 | None
  skipped: dict[str, str]  # approach -> reason
  flags: dict[str, list[diagnostics.Flag]] = dataclasses.field(default_factory=dict)
  held_out: holdout.Holdout | None = None  # Approach 3 refitted without each budget
  single_laws: dict[str, kaplan.SingleLaw] = dataclasses.field(default_factory=dict)
  not_checked: dict[str, str] = dataclasses.field(default_factory=dict)  # check -> reason

  def optimal(self) -> dict[str, fit.ComputeOptimal | fit.Approach3]:
    found = {'Approach 1': self.approach1, 'Approach 2': self.approach2,
             'Approach 3': self.approach3}
    return {name: f for name, f in found.items() if f is not None}

  def all_flags(self) -> list[tuple[str, diagnostics.Flag]]:
    return [(name, flag) for name, flags in self.flags.items() for flag in flags]


def run_fits(pts: pd.DataFrame, *, bootstrap: int = 200, seed: int = 0,
             grid: fit.StartGrid = fit.StartGrid(), fix: dict | None = None,
             budgets=None, checks: bool = True) -> Fits:
  """Every approach the points support (the others skipped with the fit's reason), their
  diagnostics (predictions judged at `budgets`, default_budgets() if None), and with
  `checks` the leave-one-budget-out check and the single-variable laws."""
  found, skipped = {}, {}
  runs = {'Approach 1': lambda: fit.approach1(pts, bootstrap=bootstrap, seed=seed),
          'Approach 2': lambda: fit.approach2(pts, bootstrap=bootstrap, seed=seed),
          'Approach 3': lambda: fit.approach3(pts, bootstrap=bootstrap, seed=seed, grid=grid,
                                              fix=fix)}
  for name, run in runs.items():
    try:
      found[name] = run()
    except ValueError as e:  # too few or degenerate points for this approach
      skipped[name] = str(e)
  budgets = list(budgets or default_budgets(pts))
  flags = {name: (diagnostics.approach3_flags(f, pts, budgets) if name == 'Approach 3'
                  else diagnostics.compute_optimal_flags(f)) for name, f in found.items()}
  held, laws, not_checked = None, {}, {}
  degenerate = [f.code for f in flags.get('Approach 3', []) if f.code in _DEGENERATE]
  if checks and degenerate:  # its refits would be as degenerate, and slow to run to a bound
    not_checked['leave-one-budget-out'] = (f'Approach 3\'s fit is degenerate '
                                           f'({", ".join(degenerate)}): nothing to extrapolate')
  elif checks and 'Approach 3' in found:
    try:
      held = holdout.leave_one_budget_out(pts, bootstrap=min(bootstrap, 100), seed=seed,
                                          fix=fix, grid=grid)
    except ValueError as e:
      not_checked['leave-one-budget-out'] = str(e)
  elif checks:
    not_checked['leave-one-budget-out'] = 'no Approach 3 fit to hold budgets out of'
  if checks:
    laws, missing = kaplan.single_laws(pts)
    not_checked.update(missing)
  return Fits(pts, found.get('Approach 1'), found.get('Approach 2'), found.get('Approach 3'),
              skipped, flags, held, laws, not_checked)


def default_budgets(pts: pd.DataFrame) -> list[float]:
  """The smallest and largest budget of the sweep (C where no budget), 10x and 100x beyond."""
  budgets = pts['budget'].fillna(pts['C'])
  low, high = float(budgets.min()), float(budgets.max())
  return sorted({low, high, 10 * high, 100 * high})


def write_report(table_or_points, out_dir, *, params: str = 'N', loss: str = 'eval_loss',
                 budgets_to_predict=None, bootstrap: int = 200, seed: int = 0,
                 fix: dict | None = None, tasks_table=None) -> Fits:
  """Fits a results table (or points, or a CSV path) and writes the report folder.

  Args:
    table_or_points: a results table, the output of fit.points, or a CSV path.
    out_dir: folder for fit.json, summary.md and <plot>.png/.svg (created).
    params, loss: the columns to fit (see fit.points), unless given points.
    budgets_to_predict: compute budgets for the N*/D* table; default_budgets() if None.
    bootstrap, seed: resamples for the intervals, and their seed.
    fix: Approach 3's parameters held fixed, e.g. {'E': 1.48} (see fit.approach3).
    tasks_table: the results table whose task/NAME/METRIC columns get the downstream
      section (llmjax.scaling.downstream) and whose fine-tune trials get the fine-tuning
      transfer section (llmjax.scaling.finetune_transfer); table_or_points itself if None.
  Returns:
    The fits (of the pretraining trials only: a fine-tune's loss is another task's).
  """
  pts = table_or_points
  if not (isinstance(pts, pd.DataFrame) and 'excluded' in pts.attrs):  # not fit.points yet
    pts = fit.points(finetune_transfer.pretraining_rows(_as_table(table_or_points)), loss=loss,
                     params=params)
  budgets = list(budgets_to_predict or default_budgets(pts))
  fits = run_fits(pts, bootstrap=bootstrap, seed=seed, fix=fix, budgets=budgets)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  for name, figure in figures(fits).items():
    for suffix in ('png', 'svg'):
      figure.savefig(out / f'{name}.{suffix}', dpi=150)
    written.append(name)
  settings = {'loss': loss, 'params': params, 'bootstrap': bootstrap, 'seed': seed,
              'fix': dict(fix or {})}
  table = _as_table(table_or_points if tasks_table is None else tasks_table)
  # Task metrics (task/NAME/METRIC columns) of the pretraining trials: the two-step law.
  tasks, task_lines = downstream_plots.write(finetune_transfer.pretraining_rows(table), out,
                                             bootstrap=bootstrap, seed=seed)
  curves, transfer_lines = finetune_transfer_plots.write(table, out, bootstrap=bootstrap,
                                                         seed=seed)
  transfer = {'finetune_transfer': finetune_transfer.to_dict(curves)} if curves else {}
  (out / 'fit.json').write_text(json.dumps(_plain({
      **_report_dict(fits, budgets, settings), 'downstream': downstream.to_dict(tasks),
      **transfer}), indent=2))
  (out / 'summary.md').write_text(summary_markdown(fits, budgets, settings, plots=written) +
                                  ''.join(line + '\n' for line in task_lines + transfer_lines))
  return fits


def _as_table(table_or_path) -> pd.DataFrame:
  """A results table given as a DataFrame, a sweep workdir (rebuilt) or a CSV path."""
  if isinstance(table_or_path, pd.DataFrame):
    return table_or_path
  path = pathlib.Path(table_or_path)
  if path.is_dir():
    from llmjax.scaling import results  # brings in JAX and the model: only sweeps need it
    return results.load(path)
  return pd.read_csv(path)


def _report_dict(fits: Fits, budgets: list[float], settings: dict) -> dict:
  """fit.json: settings, every fit with its estimates, predictions at the budgets, points."""
  return {'settings': settings, 'skipped': fits.skipped, 'not_checked': fits.not_checked,
          'excluded': fits.points.attrs.get('excluded', []),
          'irreducible_loss': fits.points.attrs.get('irreducible_loss'),
          'flags': {name: [f.to_dict() for f in flags] for name, flags in fits.flags.items()},
          **{name.lower().replace(' ', ''): f.to_dict() for name, f in fits.optimal().items()},
          'holdout': fits.held_out.to_dict() if fits.held_out is not None else None,
          'single_laws': {f'L({k})': law.to_dict() for k, law in fits.single_laws.items()},
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
    if isinstance(f, fit.Approach3) and f.fixed:
      held = ', '.join(f'{k} = {v:.4g}' for k, v in f.fixed.items())
      lines += ['', f'Held fixed, not fitted: {held}; the other parameters and their '
                'intervals are fitted given it.']
    truth = fits.points.attrs.get('irreducible_loss')
    if isinstance(f, fit.Approach3) and truth is not None and 'E' not in f.fixed:
      e = f.estimates()['E']
      inside = 'inside' if e.lo <= truth <= e.hi else 'outside'
      lines += ['', f'The data\'s true irreducible loss (its entropy rate) is {truth:.4g} nats; '
                f'the fitted E is {_interval(e)} ({100 * (e.value / truth - 1):+.1f}%), the '
                f'truth {inside} the interval.']
    lines += _flag_lines(fits.flags.get(name, []))
    if isinstance(f, fit.ComputeOptimal):
      lines += ['', 'Points of the power laws:', ''] + _table(f.optima[['C', 'N', 'D', 'loss']])
      lines += [f'- left out budget {e["budget"]:.4g}: {e["reason"]}' for e in f.excluded]
  return lines


def _flag_lines(flags: list[diagnostics.Flag]) -> list[str]:
  if not flags:
    return ['', 'No warnings.']
  return ['', '**Warnings:**', ''] + [f'- {flag.message}' for flag in flags]


def _check_sections(fits: Fits) -> list[str]:
  lines = ['', '## Out of sample: leave one budget out (Approach 3)', '']
  if fits.held_out is not None:
    lines += holdout.summary_lines(fits.held_out)
  else:
    lines.append(f'Not run: {fits.not_checked.get("leave-one-budget-out", "no fit")}.')
  lines += ['', '## Single-variable laws (Kaplan et al. 2020 style)', '']
  for variable, law in fits.single_laws.items():
    offset = ('' if law.offset is None else
              f'; with an offset, L = {law.offset.E:.4g} + {law.offset.k:.4g} {variable}^'
              f'{law.offset.a:.4g}')
    lines.append(f'- L({variable}) over {len(law.points)} points ({law.note}): '
                 f'L = {law.pure.k:.4g} {variable}^{law.pure.a:.4g}{offset}.')
  lines += [f'- {k} not fitted: {v}.' for k, v in fits.not_checked.items() if k.startswith('L(')]
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
  warnings = fits.all_flags()
  lines += ['', f'**{len(warnings)} warning(s)**' + (': see each approach below.' if warnings
                                                     else ': none.')]
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
  lines += _check_sections(fits)
  if fits.skipped:
    lines += ['', '## Skipped', ''] + [f'- {k}: {v}' for k, v in fits.skipped.items()]
  if excluded:
    lines += ['', '## Excluded trials', ''] + [f'- {e["name"]}: {e["reason"]}' for e in excluded]
  if plots is not None:
    lines += ['', '## Points', ''] + _table(pts[['name', 'N', 'D', 'C', 'loss', 'budget', 'note']])
    lines += ['', '## Plots', ''] + [f'![{p}]({p}.png)' for p in plots]
  return '\n'.join(lines) + '\n'


def figures(fits: Fits) -> dict[str, Figure]:
  """Every plot of PLOTS, by file name; a panel the fits cannot support says why."""
  pts, truth = fits.points, fits.points.attrs.get('irreducible_loss')
  out = {'loss_vs_compute': plot_loss_vs_compute(pts, fits.approach3),
         'isoflops': plot_isoflops(pts, fits.approach2, fits.skipped.get('Approach 2'))}
  if fits.approach3 is not None:
    out['fitted_vs_observed'] = plot_fitted_vs_observed(pts, fits.approach3)
    out['residuals'] = plot_residuals(pts, fits.approach3)
  if fits.optimal():
    out['optimal_allocation'] = plot_optimal_allocation(fits)
  if fits.held_out is not None:
    out['holdout'] = plot_holdout(fits.held_out, truth)
  if fits.single_laws or any(k.startswith('L(') for k in fits.not_checked):
    out['single_laws'] = plot_single_laws(fits.single_laws, fits.not_checked, truth)
  return out
