"""Fine-tuning transfer in the scaling report (llmjax.scaling.finetune_transfer): the fit
on planted data, the report section and its absence, and the IsoFLOP fits reading only the
pretraining rows of a table that holds both."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from llmjax.scaling import __main__ as cli
from llmjax.scaling import (finetune_transfer, finetune_transfer_plots, grids, report, results,
                            runner)
from test_scaling_fit import isoflop_table

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRETRAIN_C = np.geomspace(1e15, 1e18, 5)  # five checkpoints
# error = k (C / C_ref)^a per example count: more data, fewer errors and a gentler slope.
PLANTED = {50: (0.30, -0.12), 800: (0.15, -0.08)}  # examples: (k, a)
C_REF = float(np.exp(np.mean(np.log(PRETRAIN_C))))
SE = 0.01  # each trial's held-out SE, and the noise drawn on its accuracy


def finetune_rows(seed: int = 0, planted=PLANTED) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  rows = []
  for examples, (k, a) in planted.items():
    for i, c in enumerate(PRETRAIN_C):
      acc = 1 - k * (c / C_REF) ** a + rng.normal(0, SE)
      rows.append({'name': f'p{i}_ft{examples}', 'status': 'done', 'finetune_task': 'classify',
                   'N': 1e6, 'D': 1e5, 'C': 6e11, 'eval_loss': 0.3, 'pretrain_C': c,
                   'finetune_examples': examples, 'eval/acc': acc, 'eval/acc_stderr': SE,
                   'eval/f1_macro': acc - 0.01, 'eval/f1_macro_stderr': SE, 'chance': 0.5})
  return pd.DataFrame(rows)


def mixed_table(seed: int = 0) -> pd.DataFrame:
  """An IsoFLOP pretraining sweep plus fine-tunes (whose loss would wreck its fits)."""
  return pd.concat([isoflop_table(noise=0.003).assign(finetune_task='lm'),
                    finetune_rows(seed)], ignore_index=True)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_fit_recovers_the_planted_slopes_inside_their_intervals(seed):
  curves = finetune_transfer.analyse(finetune_rows(seed), bootstrap=200, seed=seed)
  acc = {c.examples: c for c in curves if c.metric == 'eval/acc'}
  assert sorted(acc) == [50, 800] and {c.metric for c in curves} == set(finetune_transfer.METRICS)
  for examples, (k, a) in PLANTED.items():
    found = acc[examples].intervals()
    assert found['a'].contains(a), (examples, found['a'])
    assert found['k'].contains(k), (examples, found['k'])
    assert abs(found['a'].value - a) < 0.04 and found['a'].hi - found['a'].lo < 0.15
    assert abs(found['k'].value - k) < 0.01  # the error at C_ref, to a point of SE
    assert acc[examples].c_ref == pytest.approx(C_REF)


def test_the_interval_widens_with_the_held_out_error():
  rows = finetune_rows(0)
  narrow = finetune_transfer.analyse(rows, bootstrap=200)[0].intervals()['a']
  wide = finetune_transfer.analyse(rows.assign(**{'eval/acc_stderr': 5 * SE}),
                                   bootstrap=200)[0].intervals()['a']
  assert wide.hi - wide.lo > 2 * (narrow.hi - narrow.lo)


def test_unfinished_perfect_and_single_checkpoint_curves():
  rows = finetune_rows(0)
  rows.loc[0, 'status'] = 'failed'  # left out of its curve
  rows.loc[rows['finetune_examples'] == 800, 'eval/acc'] = 1.0
  curves = {(c.metric, c.examples): c for c in finetune_transfer.analyse(rows, bootstrap=10)}
  assert len(curves[('eval/acc', 50)].points) == len(PRETRAIN_C) - 1
  assert curves[('eval/acc', 800)].law is None
  assert 'no logarithm of 0' in curves[('eval/acc', 800)].not_fitted
  one = finetune_transfer.analyse(rows[rows['pretrain_C'] == PRETRAIN_C[1]], bootstrap=10)
  assert one[0].law is None and one[0].not_fitted.startswith('1 distinct pretraining C')


def test_the_report_fits_isoflops_on_pretraining_rows_only(tmp_path):
  table = mixed_table()
  fits = report.write_report(table, tmp_path / 'mixed', bootstrap=8)
  alone = report.write_report(table[table['finetune_task'] == 'lm'], tmp_path / 'alone',
                              bootstrap=8)
  assert set(fits.points['name']) == set(isoflop_table(noise=0.003)['name'])
  assert fits.approach3.law == alone.approach3.law
  assert fits.approach2.n_opt.a == alone.approach2.n_opt.a
  saved = json.loads((tmp_path / 'mixed' / 'fit.json').read_text())
  assert len(saved['points']) == len(isoflop_table(noise=0.003))
  curves = saved['finetune_transfer']
  assert [(c['metric'], c['examples']) for c in curves] == [
      ('eval/acc', 50), ('eval/acc', 800), ('eval/f1_macro', 50), ('eval/f1_macro', 800)]
  assert curves[0]['fit']['a']['lo'] < PLANTED[50][1] < curves[0]['fit']['a']['hi']
  summary = (tmp_path / 'mixed' / 'summary.md').read_text()
  assert '## Fine-tuning transfer: fine-tuned metric against pretraining compute' in summary
  assert 'The IsoFLOP fits above read only the ' + str(len(isoflop_table(noise=0.003))) in summary
  assert '![finetune_transfer](finetune_transfer.png)' in summary
  assert (tmp_path / 'mixed' / 'finetune_transfer.png').stat().st_size > 10_000


def test_the_section_is_absent_for_a_sweep_without_fine_tunes(tmp_path):
  report.write_report(isoflop_table(noise=0.003).assign(finetune_task='lm'), tmp_path,
                      bootstrap=4)
  assert 'Fine-tuning transfer' not in (tmp_path / 'summary.md').read_text()
  assert 'finetune_transfer' not in json.loads((tmp_path / 'fit.json').read_text())
  assert not list(tmp_path.glob('finetune_transfer.*'))
  assert finetune_transfer_plots.write(isoflop_table(noise=0.003), tmp_path) == ([], [])


def test_the_figure_has_a_curve_band_and_chance_per_example_count():
  curves = finetune_transfer.analyse(finetune_rows(0), bootstrap=20)
  fig = finetune_transfer_plots.plot(curves)
  acc_axes = fig.axes[0]
  labels = acc_axes.get_legend_handles_labels()[1]
  for examples in PLANTED:
    assert f'{examples} examples: trials (± bootstrap SE)' in labels
    assert f'{examples} examples: 95% bootstrap band' in labels
    assert any(label.startswith(f'{examples} examples: fit, a = ') for label in labels)
  assert 'chance 0.5' in labels
  assert acc_axes.get_xscale() == 'log' and 'FLOPs' in acc_axes.get_xlabel()
  assert acc_axes.get_ylim()[0] <= 0.5  # chance in view


def test_cli_report_of_a_ladder_with_fine_tunes_succeeds_without_isoflop_fits(tmp_path, capsys):
  """A transfer sweep pretrains a ladder (one size per C), too few points for the IsoFLOP
  approaches (here one), but the report's point is the fine-tune section: it succeeds."""
  ladder = pd.DataFrame({'name': ['a'], 'status': 'done', 'finetune_task': 'lm', 'N': [1e5],
                         'D': [2e6], 'C': [1.2e12], 'budget': math.nan, 'eval_loss': [3.0]})
  path = tmp_path / 'results.csv'
  pd.concat([ladder, finetune_rows(0)], ignore_index=True).to_csv(path, index=False)
  assert cli.main(['report', str(path), '--bootstrap', '4', '--out', str(tmp_path / 'r')]) == 0
  assert 'Fine-tuning transfer' in (tmp_path / 'r' / 'summary.md').read_text()
  ladder.to_csv(path, index=False)  # without fine-tunes, no fit is still a failure
  assert cli.main(['report', str(path), '--bootstrap', '4', '--out', str(tmp_path / 'q')]) == 2


def test_results_collect_a_fine_tunes_own_eval_metrics():
  records = [{'step': 1, 'loss': 0.7, 'tokens_per_s': 1.0, 'mfu': 0.1},
             {'step': 2, 'eval/loss': 0.69, 'eval/bits_per_byte': 1.0, 'eval/accuracy': 0.5,
              'eval/acc': 0.6, 'eval/acc_stderr': 0.08, 'eval/f1_macro': 0.55,
              'eval/f1_macro_stderr': 0.09, 'eval/pystdlib/loss': 1.2}]
  summary = results._metrics_summary(records)
  assert summary['eval/acc'] == 0.6 and summary['eval/f1_macro_stderr'] == 0.09
  assert summary['eval/pystdlib/loss'] == 1.2 and summary['eval_loss'] == 0.69
  assert 'eval/loss' not in summary  # it is eval_loss


SWEEP = ROOT / 'experiments' / 'scaling' / 'finetune_transfer.py'


@pytest.mark.parametrize('variant', ['', ':tiny'])
def test_the_sweep_file_fine_tunes_each_checkpoint_after_it(variant):
  sw = runner.load(f'{SWEEP}{variant}')
  experiments = runner.build_all(sw, num_devices=1)  # sources checked here too
  pretrained = [t for t in sw.trials if experiments[t.name].finetune.task == 'lm']
  tuned = [t for t in sw.trials if experiments[t.name].finetune.task == 'classify']
  assert len(pretrained) >= (2 if variant else 3) and len(tuned) == len(pretrained) * (
      2 if variant else 3)
  costs = {t.name: grids.describe(sw.base, t)['C'] for t in pretrained}
  assert len(set(costs.values())) == len(pretrained)  # one pretraining C per checkpoint
  for t in tuned:
    source = experiments[t.name].init_from.removeprefix('trial:')
    assert t.tags['pretrain_C'] == costs[source] and t.tags['size'] == source
    assert experiments[t.name].finetune.max_examples == t.tags['finetune_max_examples']


@pytest.mark.slow
def test_tiny_transfer_sweep_end_to_end(tmp_path):
  """The README's two commands on the tiny variant: the table has each fine-tune's metrics,
  tags and example counts; the report fits IsoFLOPs on the pretraining rows and writes the
  fine-tune section."""
  workdir = tmp_path / 'ftt'
  run = lambda *args: subprocess.run([sys.executable, '-m', *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=900)
  proc = run('llmjax.sweep', '--config', f'{SWEEP}:tiny', '--workdir', str(workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = pd.read_csv(workdir / 'results.csv')
  tuned = table[table['finetune_task'] == 'classify']
  assert len(tuned) == 4 and (table['status'] == 'done').all()
  for column in ('eval/acc', 'eval/acc_stderr', 'eval/f1_macro', 'eval/f1_macro_stderr',
                 'pretrain_C', 'finetune_examples', 'eval_examples'):
    assert tuned[column].notna().all(), column
  assert sorted(tuned['finetune_examples'].unique()) == [16, 64]
  assert set(tuned['init_from']) == {'trial:32x1', 'trial:48x1'}
  proc = run('llmjax.scaling', 'report', str(workdir), '--bootstrap', '20')
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.loads((workdir / 'report' / 'fit.json').read_text())
  assert sorted(p['name'] for p in saved['points']) == ['32x1', '48x1']
  assert len(saved['finetune_transfer']) == 4  # 2 metrics x 2 example counts
  assert (workdir / 'report' / 'finetune_transfer.png').exists()
