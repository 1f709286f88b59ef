"""Scaling fits recover known laws; intervals cover the truth; bad input; report and CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from llmjax.scaling import __main__ as cli
from llmjax.scaling import fit, report

# Hoffmann et al.'s Approach 3 fit: the law every synthetic sweep here is drawn from.
TRUE = fit.LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BUDGETS = np.geomspace(1e18, 1e21, 4)


def grid_table(noise: float, seed: int = 0, n: int = 8) -> pd.DataFrame:
  """A crossed sweep: n sizes x n token counts, loss with multiplicative noise."""
  rng = np.random.default_rng(seed)
  N, D = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e10, n), np.geomspace(1e9, 1e12, n)))
  loss = TRUE.predict(N, D) * np.exp(rng.normal(0, noise, N.size))
  return pd.DataFrame({'name': [f't{i}' for i in range(N.size)], 'status': 'done', 'N': N,
                       'D': D, 'C': 6 * N * D, 'budget': math.nan, 'eval_loss': loss})


def isoflop_table(noise: float, seed: int = 0, sizes: int = 7) -> pd.DataFrame:
  """An IsoFLOP sweep: per budget, N from 1/8 to 8x the true optimum, D = C / (6N)."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in BUDGETS:
    for n in TRUE.n_opt(c) * np.geomspace(1 / 8, 8, sizes):
      d = c / (6 * n)
      rows.append({'name': f'{c:.0e}-{n:.3e}', 'status': 'done', 'N': n, 'D': d, 'C': c,
                   'budget': c, 'eval_loss': TRUE.predict(n, d) * math.exp(rng.normal(0, noise))})
  return pd.DataFrame(rows)


@pytest.mark.parametrize('noise, tol', [(0.0, 1e-3), (0.005, 0.02)])
def test_approach3_recovers_the_law(noise, tol):
  found = fit.approach3(fit.points(grid_table(noise)), bootstrap=0)
  law = found.law
  # E, alpha, beta and the exponents absolutely; A and B (exponentiated) relatively.
  for name in ('E', 'alpha', 'beta', 'a', 'b'):
    assert abs(getattr(law, name) - getattr(TRUE, name)) < tol, name
  for name in ('A', 'B'):
    assert abs(math.log(getattr(law, name) / getattr(TRUE, name))) < 10 * tol, name
  c = 1e21
  assert found.at(c)['N_opt'].value == pytest.approx(TRUE.n_opt(c), rel=20 * tol)
  assert found.at(c)['tokens_per_param'].value == pytest.approx(
      TRUE.d_opt(c) / TRUE.n_opt(c), rel=20 * tol)


def test_bootstrap_intervals_cover_the_truth_and_widen_with_noise():
  widths = {}
  for noise in (0.005, 0.02):
    found = fit.approach3(fit.points(grid_table(noise, seed=1)), bootstrap=40, seed=0)
    assert len(found.draws) == 40
    estimates = found.estimates()
    for name in ('E', 'A', 'B', 'alpha', 'beta', 'a', 'b'):
      e, truth = estimates[name], getattr(TRUE, name)
      assert e.lo <= truth <= e.hi, (noise, name, e, truth)
      assert e.se > 0
    widths[noise] = {name: e.hi - e.lo for name, e in estimates.items()}
    loss = fit.predict(found, 1e9, 1e11)
    assert loss.lo <= TRUE.predict(1e9, 1e11) <= loss.hi
    assert loss.value == pytest.approx(found.law.predict(1e9, 1e11))
  for name, narrow in widths[0.005].items():
    assert widths[0.02][name] > narrow, name


def test_approach2_recovers_isoflop_minima():
  found = fit.approach2(fit.points(isoflop_table(noise=0.0)), bootstrap=0)
  assert found.excluded == ()
  assert list(found.optima['C']) == pytest.approx(list(BUDGETS))
  # A parabola in log N only approximates the profile: minima within 10%, not exactly.
  assert np.allclose(found.optima['N'], TRUE.n_opt(BUDGETS), rtol=0.1)
  assert np.allclose(found.optima['D'], TRUE.d_opt(BUDGETS), rtol=0.1)
  # Along an IsoFLOP line, L = E + K(C) f(N / N_opt) with one f for every C, so sizes placed
  # alike around each optimum give the parabola the same bias at every budget: the
  # exponents come out exact.
  assert found.n_opt.a == pytest.approx(TRUE.a, abs=1e-6)
  assert found.d_opt.a == pytest.approx(TRUE.b, abs=1e-6)


def test_approach2_bootstrap_resamples_within_budgets():
  found = fit.approach2(fit.points(isoflop_table(noise=0.005)), bootstrap=30, seed=0)
  # Resampling across budgets would often leave a budget with < 3 sizes and fail the draw.
  assert len(found.draws) == 30
  a = found.estimates()['a']
  assert a.lo <= TRUE.a <= a.hi and a.hi - a.lo < 0.1


def test_approach2_groups_by_rounded_compute_and_leaves_out_thin_groups():
  table = isoflop_table(noise=0.0).assign(budget=math.nan)
  table.loc[table.index[-1], 'C'] *= 1.001  # still the same budget in log10 to 2 decimals
  thin = table[table['C'] > 5e20].iloc[:2]
  table = pd.concat([table[table['C'] < 5e20], thin])
  found = fit.approach2(fit.points(table), bootstrap=0)
  assert len(found.optima) == 3
  assert found.excluded == ({'budget': pytest.approx(1e21), 'reason':
                             '2 distinct N (a parabola needs 3)'},)


def test_approach1_exponents_near_the_truth():
  found = fit.approach1(fit.points(grid_table(noise=0.002, n=12)), bootstrap=0)
  # The envelope of final points is sparse and on the grid: a loose tolerance.
  assert abs(found.n_opt.a - TRUE.a) < 0.05 and abs(found.d_opt.a - TRUE.b) < 0.05
  assert found.optima['loss'].is_monotonic_decreasing


def test_power_laws():
  x = np.geomspace(1, 1e4, 9)
  pure = fit.fit_power_law(x, 3 * x**0.7)
  assert (pure.k, pure.a, pure.E) == pytest.approx((3, 0.7, 0))
  offset = fit.fit_power_law(x, 2 + 5 * x**-0.3, offset=True)
  assert (offset.k, offset.a, offset.E) == pytest.approx((5, -0.3, 2), rel=1e-4)
  assert offset.predict(10.0) == pytest.approx(2 + 5 * 10**-0.3, rel=1e-5)
  with pytest.raises(ValueError, match=r'power law with offset fits 3 parameters; 2 distinct x'):
    fit.fit_power_law([1, 2, 2], [3, 2, 2], offset=True)
  with pytest.raises(ValueError, match=r'power law fit diverged .* x spans too little'):
    fit.fit_power_law([10, 10 * (1 + 1e-9)], [1, 2])


def test_points_excludes_unfinished_trials_and_derives_columns():
  table = grid_table(0.0).iloc[:6].copy()
  table['error'] = ''
  table.loc[1, ['status', 'eval_loss', 'error']] = ['failed', math.nan, 'non-finite loss']
  table.loc[2, 'status'] = 'running'
  table.loc[3, 'D'] = math.nan
  pts = fit.points(table)
  assert list(pts['name']) == ['t0', 't3', 't4', 't5']
  assert pts.attrs['excluded'] == [{'name': 't1', 'reason': 'status failed: non-finite loss'},
                                   {'name': 't2', 'reason': 'status running'}]
  row = pts.set_index('name').loc['t3']
  assert row['D'] == pytest.approx(table.loc[3, 'C'] / (6 * table.loc[3, 'N']))
  assert row['note'] == 'D = C/(6N)'


def test_points_reads_external_columns_by_alias(tmp_path):
  path = tmp_path / 'published.csv'
  pd.DataFrame({'Parameters': [1e8, 2e8], 'Tokens': [1e9, 3e9], 'Loss': [3.0, 2.8]}).to_csv(
      path, index=False)
  pts = fit.points(path)
  assert list(pts['C']) == [6e17, 3.6e18] and set(pts['note']) == {'C = 6ND'}
  assert list(pts['name']) == ['row 0', 'row 1']
  published = pd.DataFrame({'Model Size': [1e8], 'Training FLOP': [6e18], 'loss': [2.9]})
  assert fit.points(published)[['N', 'D', 'note']].values.tolist() == [[1e8, 1e10, 'D = C/(6N)']]


@pytest.mark.parametrize('change, message', [
    (lambda t: t.assign(N=t['N'].where(t['name'] != 't3', 0.0)),
     "N must be positive and finite; row 't3' has N=0.0"),
    (lambda t: t.assign(eval_loss=t['eval_loss'].where(~t['name'].isin(['t1', 't4']))),
     "NaN eval_loss in finished trials: 't1', 't4'"),
    (lambda t: t.assign(name=['t0', 't1', 't1', 't3', 't0', 't5']),
     "duplicate trial names: 't0', 't1'"),
    (lambda t: t.drop(columns='eval_loss'), "no 'eval_loss' column in the table"),
    (lambda t: t.drop(columns=['D', 'C']), 'the table needs a D .tokens. or C .FLOPs. column'),
])
def test_bad_tables(change, message):
  with pytest.raises(ValueError, match=message):
    fit.points(change(grid_table(0.0).iloc[:6]))


def test_too_few_points_for_each_approach():
  pts = fit.points(grid_table(0.0))
  with pytest.raises(ValueError, match=r'^Approach 3 fits 5 parameters; 4 points given$'):
    fit.approach3(pts.iloc[:4])
  with pytest.raises(ValueError, match='needs at least 2 distinct N and 2 distinct D; got 8 N '
                                       'and 1 D'):
    fit.approach3(pts[pts['D'] == pts['D'].min()])
  with pytest.raises(ValueError, match=r'Approach 2 fits 2 parameters; 0 IsoFLOP minima given '
                                       r'\(budgets left out: 6 with 1 distinct N'):
    fit.approach2(pts.iloc[:6])  # one D, six N: six budgets of one size each
  with pytest.raises(ValueError, match='Approach 1 fits 2 parameters; 1 distinct C given'):
    fit.approach1(pts.iloc[:1])
  # One IsoFLOP budget whose trials' C differ slightly (whole steps): no slope to fit.
  one_budget = isoflop_table(0.0).iloc[:7]
  one_budget['C'] *= np.linspace(1, 1.003, 7)
  with pytest.raises(ValueError, match='Approach 1 fits 2 parameters; 1 distinct C given'):
    fit.approach1(fit.points(one_budget))


def test_report_writes_plots_summary_and_json(tmp_path):
  table = isoflop_table(noise=0.003, sizes=25)  # 100 points
  table.loc[len(table)] = {'name': 'diverged', 'status': 'failed', 'N': 1e8, 'D': 1e9, 'C': 6e17,
                           'budget': 1e18, 'eval_loss': math.nan}
  fits = report.write_report(table, tmp_path, bootstrap=8, seed=0)
  for plot in report.PLOTS:
    for suffix in ('png', 'svg'):
      assert (tmp_path / f'{plot}.{suffix}').stat().st_size > 1000, (plot, suffix)
  summary = (tmp_path / 'summary.md').read_text()
  assert f'| E | {fits.approach3.law.E:.4g} |' in summary
  assert f'| a | {fits.approach2.n_opt.a:.4g} |' in summary
  assert '- diverged: status failed' in summary
  assert f'{10 * BUDGETS[-1]:.3g}' in summary  # a prediction 10x beyond the sweep
  saved = json.loads((tmp_path / 'fit.json').read_text(), parse_constant=pytest.fail)
  assert saved['approach3']['law']['alpha'] == fits.approach3.law.alpha
  assert saved['skipped'] == {} and len(saved['points']) == len(table) - 1


def test_report_with_six_points_skips_what_it_cannot_fit(tmp_path):
  fits = report.write_report(isoflop_table(noise=0.003).iloc[:6], tmp_path, bootstrap=4)
  assert fits.approach2 is None and fits.approach3 is not None
  # The IsoFLOP panel is drawn without its parabolas and says why; one budget holds nothing
  # out, and single-variable laws need repeated sizes: those panels say so too.
  assert sorted(p.stem for p in tmp_path.glob('*.svg')) == [
      'fitted_vs_observed', 'isoflops', 'loss_vs_compute', 'optimal_allocation', 'residuals',
      'single_laws']
  summary = (tmp_path / 'summary.md').read_text()
  assert '- Approach 2: Approach 2 fits 2 parameters; 1 IsoFLOP minima given' in summary
  assert 'Not run: leave-one-budget-out needs 2 budgets; the points have 1.' in summary
  texts = [' '.join(t.get_text().split()) for t in report.figures(fits)['isoflops'].axes[0].texts]
  assert texts == [f'Approach 2 skipped: {fits.skipped["Approach 2"]}']


def test_cli_fit_and_report_on_a_csv(tmp_path, capsys):
  path = tmp_path / 'results.csv'
  isoflop_table(noise=0.003).to_csv(path, index=False)
  assert cli.main(['fit', str(path), '--bootstrap', '4']) == 0
  out = capsys.readouterr().out
  assert '| alpha |' in out and 'Approach 2: IsoFLOP profiles' in out
  assert cli.main(['report', str(path), '--bootstrap', '0', '--out', str(tmp_path / 'r')]) == 0
  assert (tmp_path / 'r' / 'summary.md').exists()


def test_cli_bad_paths(tmp_path):
  missing = tmp_path / 'missing.csv'
  run = subprocess.run([sys.executable, '-m', 'llmjax.scaling', 'fit', str(missing)],
                       capture_output=True, text=True)
  assert run.returncode == 2 and 'no such file or directory' in run.stderr
  (tmp_path / 'empty.csv').write_text('name,status,N,D,eval_loss\n')
  assert cli.main(['fit', str(tmp_path / 'empty.csv')]) == 2
  assert cli.main(['report', str(tmp_path)]) == 2  # a folder that is not a sweep
