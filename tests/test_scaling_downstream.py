"""The two-step downstream law recovers planted parameters within its intervals; the
at-chance sentence fires on flat data only; the scaling report carries the section."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from llmjax.scaling import downstream, downstream_plots, fit, report
from test_scaling_fit import grid_table, isoflop_table

C_VALUES = np.repeat(np.geomspace(1e15, 1e18, 8), 2)  # 8 compute levels, 2 trials each
C_REF = float(np.exp(np.mean(np.log(C_VALUES))))
TRUE_LAW = downstream.PowerLaw(E=0.6, A=0.8, alpha=0.35, c_ref=C_REF)
TRUE_SIGMOID = downstream.Sigmoid(chance=0.25, top=0.9, k=10.0, L0=1.2)
NOISE = 0.01


def planted_table(seed: int, flat: bool = False, C=C_VALUES) -> pd.DataFrame:
  """A results table of trials whose task loss follows TRUE_LAW and whose accuracy follows
  TRUE_SIGMOID of it (flat: accuracy at chance throughout), both plus Gaussian noise."""
  rng = np.random.default_rng(seed)
  loss = TRUE_LAW(C)
  acc = (np.full(len(C), TRUE_SIGMOID.chance) if flat else TRUE_SIGMOID(loss))
  return pd.DataFrame({
      'name': [f't{i}' for i in range(len(C))], 'status': 'done', 'C': C,
      'task/mc/acc': acc + rng.normal(0, NOISE, len(C)), 'task/mc/acc_stderr': NOISE,
      'task/mc/acc_chance': TRUE_SIGMOID.chance,
      'task/mc/nll': loss + rng.normal(0, NOISE, len(C)), 'task/mc/nll_stderr': NOISE})


def test_the_two_step_fit_recovers_planted_parameters_within_its_intervals():
  # Seeded: a percentile bootstrap over 16 trials covers each parameter in 67-100% of noise
  # draws (see downstream's docstring); this draw is covered, and the intervals are tight.
  found = downstream.analyse_metric(planted_table(seed=3), 'mc', 'acc', bootstrap=100)
  assert found.at_chance is None and found.not_fitted == ''
  truth = {'E': TRUE_LAW.E, 'A': TRUE_LAW.A, 'alpha': TRUE_LAW.alpha, 'k': TRUE_SIGMOID.k,
           'L0': TRUE_SIGMOID.L0, 'top': TRUE_SIGMOID.top}
  intervals = found.two_step.intervals()
  assert set(intervals) == set(truth)
  for name, value in truth.items():
    interval = intervals[name]
    assert interval.contains(value), (name, value, interval)
    assert interval.hi - interval.lo < 0.5 * value, (name, interval)  # informative
  # Through both steps, 10x beyond the sweep: within 2 points of accuracy of the truth.
  beyond = 10 * C_VALUES.max()
  predicted = found.two_step.predict(beyond)
  assert abs(predicted.value - TRUE_SIGMOID(TRUE_LAW(beyond))) < 0.02, predicted
  assert predicted.lo < predicted.value < predicted.hi


def test_a_wrong_sigmoid_direction_is_not_what_the_fit_finds():
  # The fit's k is positive (lower loss, higher metric); the planted points rise as the
  # loss falls, so the fitted curve must increase with compute.
  found = downstream.analyse_metric(planted_table(seed=3), 'mc', 'acc', bootstrap=10)
  law, curve = found.two_step.loss_law, found.two_step.sigmoid
  assert curve(law(1e18)) > curve(law(1e15)) + 0.3


def test_the_at_chance_sentence_fires_on_flat_data_and_not_on_healthy_data():
  flat = downstream.analyse_metric(planted_table(seed=0, flat=True), 'mc', 'acc', bootstrap=20)
  assert flat.at_chance.startswith('`task/mc/acc` is still at chance at the largest compute')
  assert 'against chance 0.25' in flat.at_chance
  # The loss still falls, so step 1 is fitted; step 2 has nothing to place its rise by.
  assert flat.two_step.sigmoid is None and flat.two_step.loss_law.alpha > 0
  healthy = downstream.analyse_metric(planted_table(seed=0), 'mc', 'acc', bootstrap=20)
  assert healthy.at_chance is None and healthy.two_step.sigmoid is not None
  lines = downstream.summary_lines([flat, healthy])
  assert sum('still at chance' in line for line in lines) == 1


def test_what_cannot_be_fitted_says_why():
  table = planted_table(seed=0).drop(columns=['task/mc/nll', 'task/mc/nll_stderr'])
  assert downstream.analyse_metric(table, 'mc', 'acc').not_fitted == (
      'no task loss column `task/mc/nll` in the table')
  table = planted_table(seed=0).drop(columns=['task/mc/acc_chance'])
  assert 'chance value is unknown' in downstream.analyse_metric(table, 'mc', 'acc').not_fitted
  few = planted_table(seed=0, C=np.geomspace(1e15, 1e16, 2))
  assert 'needs 4 points' in downstream.analyse_metric(few, 'mc', 'acc').not_fitted


def test_task_columns_name_tasks_domains_and_metrics():
  table = pd.DataFrame(columns=['name', 'C', 'task/a/acc', 'task/a/acc_stderr',
                                'task/a/acc_chance', 'task/a/tests/acc', 'eval/x/loss'])
  assert downstream.task_columns(table) == [('a', 'acc'), ('a/tests', 'acc')]


def test_the_downstream_figures_and_section(tmp_path):
  found, lines = downstream_plots.write(planted_table(seed=3), tmp_path, bootstrap=8)
  assert sorted(p.name for p in tmp_path.glob('*.png')) == ['task_metrics.png',
                                                            'two_step_mc_acc.png']
  assert [m.column for m in found] == ['task/mc/acc', 'task/mc/nll']
  assert '| `task/mc/acc` | 16 | 0.25 | - |' in '\n'.join(lines)
  planted_table(seed=3).to_csv(tmp_path / 'results.csv', index=False)  # a CSV reads the same
  again, _ = downstream_plots.write(tmp_path / 'results.csv', tmp_path / 'again', bootstrap=8)
  assert [m.points['value'].tolist() for m in again] == [m.points['value'].tolist() for m in found]
  panels = downstream_plots.figures(found)['task_metrics'].axes
  assert [ax.get_xlabel() for ax in panels[:2]] == [downstream_plots.COMPUTE] * 2
  assert panels[1].get_ylabel() == downstream_plots.TASK_LOSS


@pytest.mark.slow  # the report's own fits of the loss law take ~20 s
def test_the_report_plots_each_task_metric_and_writes_the_two_step_section(tmp_path):
  losses = grid_table(noise=0.003, n=3)  # 9 trials of a Chinchilla-shaped law
  tasks = planted_table(seed=3, C=losses['C'].to_numpy()).drop(columns=['name', 'status', 'C'])
  table = pd.concat([losses, tasks], axis=1)
  report.write_report(table, tmp_path, bootstrap=8, seed=0)
  # Given fit.points' output (as the CLI does), the task columns come from tasks_table.
  points_only = tmp_path / 'points_only'
  report.write_report(fit.points(table), points_only, bootstrap=4, tasks_table=table)
  assert (points_only / 'two_step_mc_acc.png').is_file()
  for name in ('task_metrics', 'two_step_mc_acc'):
    assert (tmp_path / f'{name}.png').stat().st_size > 1000, name
  summary = (tmp_path / 'summary.md').read_text()
  assert '## Downstream tasks against compute (two-step law, arXiv 2412.04403)' in summary
  assert '| `task/mc/acc` | 9 | 0.25 |' in summary and '![two_step_mc_acc]' in summary
  saved = json.loads((tmp_path / 'fit.json').read_text(), parse_constant=pytest.fail)
  entry = {e['column']: e for e in saved['downstream']}['task/mc/acc']
  assert set(entry['fit']) == {'E', 'A', 'alpha', 'k', 'L0', 'top', 'C_ref'}


def test_a_table_without_task_columns_adds_nothing(tmp_path):
  found, lines = downstream_plots.write(isoflop_table(noise=0.003, sizes=4), tmp_path)
  assert found == [] and lines == [] and not list(tmp_path.iterdir())
  assert math.isnan(downstream.analyse_metric(planted_table(0), 'mc', 'nll').chance)
