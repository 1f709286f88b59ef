"""Fits that say when not to believe them: flags, fixed parameters, held-out budgets,
single-variable laws, and the figures' labels."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib import ticker

from llmjax.scaling import __main__ as cli
from llmjax.scaling import diagnostics, fit, holdout, kaplan, plots, report

from test_scaling_fit import TRUE, grid_table, isoflop_table

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = fit.StartGrid(refine=4)  # the planted laws here are found from the best 4 starts


def flat_table(seed: int = 0) -> pd.DataFrame:
  """The degenerate case of the old synthetic sweep: losses within a few hundredths of the
  entropy, hardly depending on N or D."""
  table = grid_table(0.0, seed=seed, n=5)
  rng = np.random.default_rng(seed)
  table['eval_loss'] = 1.46 * table['N'] ** -0.002 * table['D'] ** -0.001 * np.exp(
      rng.normal(0, 0.002, len(table)))
  table['data_optimal_loss'] = 1.40
  return table


def codes(flags) -> set[str]:
  return {f.code for f in flags}


def test_degeneracy_flags_fire_on_a_flat_table():
  pts = fit.points(flat_table())
  found = fit.approach3(pts, bootstrap=4, grid=FAST)
  flags = diagnostics.approach3_flags(found, pts, budgets=[1e25])
  assert {'E_at_bound', 'truth_outside_interval', 'prediction_below_entropy'} <= codes(flags)
  assert codes(flags) & {'alpha_degenerate', 'beta_degenerate'}
  assert all(f.message.endswith('.') and ' ' in f.message for f in flags)  # sentences


def test_degeneracy_flags_are_silent_on_a_healthy_table():
  table = grid_table(0.005, seed=1)
  table['data_optimal_loss'] = TRUE.E
  pts = fit.points(table)
  found = fit.approach3(pts, bootstrap=10, grid=FAST)
  assert diagnostics.approach3_flags(found, pts, budgets=[1e21, 1e22]) == []


def test_interval_flags():
  wide = {'k': fit.Estimate(1.0, 1.0, 0.01, 50.0), 'E': fit.Estimate(1e-9, 0, 1e-9, 1e-9),
          'a': fit.Estimate(0.5, 0.1, 0.4, 0.6)}
  assert codes(diagnostics.interval_flags(wide, bootstrap=20)) == {
      'k_interval_wide', 'E_interval_collapsed'}
  assert diagnostics.interval_flags(wide, bootstrap=0) == []  # no resamples, no interval


def test_fit_with_E_fixed_recovers_the_other_parameters():
  pts = fit.points(isoflop_table(noise=0.0))
  found = fit.approach3(pts, bootstrap=6, grid=FAST, fix={'E': TRUE.E})
  assert found.law.E == TRUE.E and found.fixed == {'E': TRUE.E}
  for name in ('alpha', 'beta'):
    assert getattr(found.law, name) == pytest.approx(getattr(TRUE, name), abs=1e-3), name
  for name in ('A', 'B'):
    assert getattr(found.law, name) == pytest.approx(getattr(TRUE, name), rel=1e-2), name
  assert np.all(found.draws[:, 0] == TRUE.E)  # every resample holds it too
  # A wrong floor is not absorbed silently: the reducible terms move to make up for it.
  wrong = fit.approach3(pts, bootstrap=0, grid=FAST, fix={'E': 1.2})
  assert abs(wrong.law.alpha - TRUE.alpha) > 0.02 and wrong.objective > 10 * found.objective


@pytest.mark.parametrize('fix, message', [({'F': 1.0}, "cannot fix 'F'"),
                                          ({'E': -1.0}, 'finite and positive'),
                                          ({n: 1.0 for n in fit.LAW_FIELDS}, 'nothing to fit')])
def test_bad_fix(fix, message):
  with pytest.raises(ValueError, match=message):
    fit.approach3(fit.points(grid_table(0.0)), bootstrap=0, fix=fix)


def test_leave_one_budget_out_predicts_planted_points_within_the_interval():
  pts = fit.points(isoflop_table(noise=0.003, seed=2))
  result = holdout.leave_one_budget_out(pts, bootstrap=12, grid=FAST)
  largest = result.predictions[result.predictions['held_out'] == pts['budget'].max()]
  assert len(largest) == 7 and result.skipped == {}
  assert largest['relative_error'].abs().mean() < 0.01
  assert largest['inside'].mean() >= 0.5
  assert set(result.by_budget()['held_out']) == set(pts['budget'])
  # A law with the wrong floor extrapolates badly, and the check shows it.
  bad = holdout.leave_one_budget_out(pts, bootstrap=20, grid=FAST, fix={'E': 1.0})
  worst = bad.predictions[bad.predictions['held_out'] == pts['budget'].max()]
  assert worst['relative_error'].abs().mean() > 3 * largest['relative_error'].abs().mean()
  assert worst['inside'].mean() < largest['inside'].mean()


def test_leave_one_budget_out_needs_budgets():
  with pytest.raises(ValueError, match='needs 2 budgets; the points have 1'):
    holdout.leave_one_budget_out(fit.points(isoflop_table(0.0).iloc[:7]), bootstrap=0)


def test_single_variable_laws_recover_the_planted_exponents():
  laws, skipped = kaplan.single_laws(fit.points(grid_table(0.0)))
  assert skipped == {}
  # At fixed D the planted law is E' + A N^-alpha exactly: the offset fit recovers alpha.
  assert laws['N'].offset.a == pytest.approx(-TRUE.alpha, abs=1e-3)
  assert laws['D'].offset.a == pytest.approx(-TRUE.beta, abs=1e-3)
  assert laws['N'].pure.a < 0 and len(laws['N'].points) == 8
  _, skipped = kaplan.single_laws(fit.points(isoflop_table(0.0)))
  assert 'L(N)' in skipped and 'L(D)' in skipped  # every size trained once


def test_report_figures_have_units_legends_and_the_entropy_line():
  table = isoflop_table(noise=0.003)
  table['data_optimal_loss'] = TRUE.E
  pts = fit.points(table)
  fits = report.run_fits(pts, bootstrap=4, grid=FAST)
  figures = report.figures(fits)
  assert set(figures) == set(report.PLOTS)
  truth = f'known irreducible loss {TRUE.E:.4g}'
  for name in ('loss_vs_compute', 'isoflops', 'fitted_vs_observed', 'holdout'):
    ax = figures[name].axes[0]
    assert 'nats/token' in ax.get_ylabel(), name
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert truth in labels, (name, labels)
  labels = [t.get_text() for t in figures['loss_vs_compute'].axes[0].get_legend().get_texts()]
  assert {'largest C trained', '95% bootstrap band', 'Approach 3 compute-optimal'} <= set(labels)
  assert figures['loss_vs_compute'].axes[1].get_ylabel() == 'N (parameters)'  # the colorbar
  for ax in figures['optimal_allocation'].axes:  # no labels at minor ticks
    assert isinstance(ax.xaxis.get_minor_formatter(), ticker.NullFormatter)
  assert plots._tick_label(3e9) == '$3{\\times}10^{9}$' and plots._tick_label(1e12) == '$10^{12}$'
  assert plots._tick_label(4.75) == '4.75'  # not 4.75x10^0


def test_cli_fix_and_warnings(tmp_path, capsys):
  table = isoflop_table(noise=0.003)
  table['data_optimal_loss'] = 2.5  # claimed entropy above what the law predicts
  path = tmp_path / 'points.csv'
  table.to_csv(path, index=False)
  assert cli.main(['fit', str(path), '--bootstrap', '4']) == 0
  captured = capsys.readouterr()
  assert 'warning: Approach 3: The predicted loss' in captured.err
  assert 'below the data\'s irreducible loss 2.5' in captured.out  # the summary says it too
  assert cli.main(['fit', str(path), '--bootstrap', '0', '--fix', 'E=1.69']) == 0
  out = capsys.readouterr().out
  assert 'Held fixed, not fitted: E = 1.69' in out and '| alpha | 0.34' in out
  for bad in ('E=abc', 'Q=1'):
    with pytest.raises(SystemExit) as exit_info:
      cli.main(['fit', str(path), '--fix', bad])
    assert exit_info.value.code == 2
  assert "expected NAME=NUMBER" in capsys.readouterr().err


def test_a_degenerate_fit_is_not_extrapolated():
  fits = report.run_fits(fit.points(flat_table()), bootstrap=0, grid=FAST)
  assert fits.held_out is None
  assert 'degenerate (E_at_bound' in fits.not_checked['leave-one-budget-out']


_AT_BOUND = {'E_at_bound', 'alpha_degenerate', 'beta_degenerate', 'alpha_past_grid',
             'beta_past_grid', 'A_past_grid', 'B_past_grid'}


@pytest.mark.slow
def test_tiny_synthetic_sweep_end_to_end_flags(tmp_path):
  """The CI sweep: 6 points cannot place the floor, and the report says so; with E fixed
  at the data's entropy no parameter sits at a bound and the flags name what is left."""
  workdir = tmp_path / 'sweep'
  spec = f'{ROOT / "experiments/scaling/synthetic_entropy.py"}:tiny'
  run = subprocess.run([sys.executable, '-m', 'llmjax.sweep', f'--config={spec}',
                        f'--workdir={workdir}'], capture_output=True, text=True, timeout=1200)
  assert run.returncode == 0, run.stderr[-3000:]
  table = pd.read_csv(workdir / 'results.csv')
  truth = float(table['data_optimal_loss'].iloc[0])
  assert (table['eval_loss'] > truth).all()
  free = report.write_report(table, tmp_path / 'free', bootstrap=20)
  flagged = {f.code for _, f in free.all_flags()}
  assert flagged & _AT_BOUND or 'truth_outside_interval' in flagged, flagged
  summary = (tmp_path / 'free' / 'summary.md').read_text()
  assert '**Warnings:**' in summary and '## Out of sample' in summary and 'Not run: ' in summary
  fixed = report.write_report(table, tmp_path / 'fixed', bootstrap=20, fix={'E': truth})
  assert 'no budget could be held out' in fixed.not_checked['leave-one-budget-out']
  codes = {f.code for f in fixed.flags['Approach 3']}
  assert not codes & _AT_BOUND, codes
  assert any(c.endswith('_interval_wide') or c == 'bootstrap_unfitted' for c in codes), codes
