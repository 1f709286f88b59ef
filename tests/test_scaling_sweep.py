"""Sweeps: trial grids, the shipped sweep files, the runner (resume, failures) and the table."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from llmjax import configs
from llmjax.model.transformer import Transformer
from llmjax.scaling import report, results, runner
from llmjax.scaling import grids

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWEEPS = ROOT / 'experiments' / 'scaling'
TINY = f'{SWEEPS / "synthetic_entropy.py"}:tiny'


def _load(spec: str, **overrides) -> runner.SweepSpec:
  """A sweep file's SweepSpec, with 'section.field' overrides on its base config."""
  sw = runner.load(spec)
  for key, value in overrides.items():
    section, field = key.split('.')
    sw.base[section][field] = value
  return sw


@pytest.mark.parametrize('name', ['cpu_small.py', 'chinchilla.py'])
def test_isoflop_trials_match_their_budget(name):
  sw = _load(str(SWEEPS / name))
  for trial in sw.trials:
    row = grids.describe(sw.base, trial)
    assert abs(row['C'] / row['budget'] - 1) < 0.01, (trial.name, row['C'], row['budget'])
  budgets = {t.tags['budget'] for t in sw.trials}
  assert len(budgets) >= 3
  for budget in budgets:  # IsoFLOP parabolas need at least 3 sizes per budget
    assert sum(t.tags['budget'] == budget for t in sw.trials) >= 3


@pytest.mark.parametrize('name', ['cpu_small.py', 'synthetic_entropy.py', 'mup_transfer.py'])
def test_every_trial_of_the_cpu_sweeps_is_a_valid_experiment(name):
  experiments = runner.build_all(_load(str(SWEEPS / name)), num_devices=1)
  assert experiments and all(exp.model.num_heads >= 1 for exp in experiments.values())


def test_ladder_widths_below_one_head_get_one_narrow_head():
  shapes = [t.overrides for t in grids.model_sizes([(16, 1), (48, 1), (64, 2)])]
  assert [(s['model.num_heads'], s['model.head_dim']) for s in shapes] == [(1, 16), (1, 32),
                                                                            (2, 32)]


def test_trial_names_are_stable():
  # Names are folder names of runs already on disk: change them only with a note.
  names = [t.name for t in _load(str(SWEEPS / 'cpu_small.py')).trials]
  assert names == [
      'C1e12_32x1', 'C1e12_48x2', 'C1e12_64x2', 'C1e12_96x3', 'C3e12_32x1', 'C3e12_48x2',
      'C3e12_64x2',
      'C3e12_96x3', 'C3e12_128x4', 'C1e13_48x2', 'C1e13_64x2', 'C1e13_96x3', 'C1e13_128x4',
      'C1e13_192x4']
  assert len(set(names)) == len(names)


def test_chinchilla_trials_build_and_evaluate_shapes():
  """Every cluster trial is a valid experiment on 8 devices and its model's shapes
  evaluate (the tokenizer file is not here, so the byte tokenizer stands in)."""
  sw = _load(str(SWEEPS / 'chinchilla.py'), **{'data.tokenizer': 'byte'})
  experiments = runner.build_all(sw, num_devices=8)
  sizes = {}
  for name, exp in experiments.items():
    sizes.setdefault(exp.model, name)
  assert len(sizes) == 7
  for model_cfg in sizes:
    abstract = nnx.eval_shape(lambda cfg=model_cfg: Transformer(cfg, nnx.Rngs(0)))
    count = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    row = grids.describe(sw.base, next(t for t in sw.trials if t.name == sizes[model_cfg]))
    assert count == row['N']  # the closed-form count is the model's
  n = sorted(row['N_nonembedding'] for row in map(lambda t: grids.describe(sw.base, t),
                                                   sw.trials))
  assert n[0] < 12e6 and n[-1] > 1e9  # 10M to 1B+ non-embedding parameters


def test_grids_cross_and_zip():
  lrs = grids.grid('optim.lr', [1e-3, 3e-3])
  sizes = grids.model_sizes(['ladder-64x2', (128, 4)])
  crossed = grids.cross(sizes, lrs)
  assert [t.name for t in crossed] == ['64x2_lr0.001', '64x2_lr0.003', '128x4_lr0.001',
                                       '128x4_lr0.003']
  assert crossed[3].overrides['optim.lr'] == 3e-3 and crossed[3].overrides['model.d_model'] == 128
  zipped = grids.zip_trials(sizes, lrs)
  assert [t.name for t in zipped] == ['64x2_lr0.001', '128x4_lr0.003']
  base = configs.defaults()
  budgets = grids.token_budgets(base, [1e6, 2e6])
  assert [t.overrides['train.steps'] for t in budgets] == [122, 244]  # 1e6 / (32 x 256)
  with pytest.raises(ValueError, match=r"both set \['optim.lr'\]"):
    grids.cross(lrs, lrs)
  with pytest.raises(ValueError, match='different lengths'):
    grids.zip_trials(sizes, lrs[:1])
  with pytest.raises(ValueError, match="unknown model preset 'ladder-7x7'"):
    grids.model_sizes(['ladder-7x7'])


def test_bad_sweeps_are_refused():
  base = configs.defaults()
  with pytest.raises(configs.ConfigError, match="trial name 'a' is used by 2 trials"):
    grids.check_names([grids.Trial('a', {}), grids.Trial('a', {})])
  with pytest.raises(configs.ConfigError, match='not a valid folder name'):
    grids.check_names([grids.Trial('a/b', {})])
  with pytest.raises(configs.ConfigError, match=r"trial 'x': override optim.lrr=0.1: unknown key"):
    grids.trial_config(base, grids.Trial('x', {'optim.lrr': 0.1}))
  bad = runner.SweepSpec('inline', base, [grids.Trial('ok', {}),
                                      grids.Trial('neg', {'train.steps': -1})])
  with pytest.raises(configs.ConfigError, match=r"trial 'neg':\n  config.train.steps: must be "
                                                r"positive"):
    runner.build_all(bad, num_devices=1)
  with pytest.raises(ValueError, match='no size gets 50 steps'):
    grids.isoflop(base, [1e3], grids.model_sizes(['ladder-64x2']))


def _sweep_cli(workdir, *args):
  return subprocess.run([sys.executable, '-m', 'llmjax.sweep', f'--config={TINY}',
                         f'--workdir={workdir}', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_resume(tmp_path):
  """The CLI runs part of a sweep; a rerun runs only what is missing; an interrupted trial
  resumes from its checkpoint to the same result; the table has every trial."""
  workdir = tmp_path / 'sweep'
  first = _sweep_cli(workdir, '--only=C3e9_*')
  assert first.returncode == 0, first.stderr[-3000:]
  table = pd.read_csv(workdir / 'results.csv')
  assert list(table.status) == ['done'] * 3 + ['pending'] * 3

  # Interrupt one finished trial after the fact: drop its checkpoints past step 20.
  victim = runner.trial_dir(workdir, 'C3e9_48x1')
  uninterrupted = table.set_index('name').loc['C3e9_48x1', 'eval_loss']
  for step in (victim / 'checkpoints').iterdir():
    if step.name.isdigit() and int(step.name) > 20:
      shutil.rmtree(step)
  status = json.loads((victim / 'trial.json').read_text())
  (victim / 'trial.json').write_text(json.dumps({**status, 'status': 'running'}))
  before = {name: runner.read_status(workdir, name) for name in ('C3e9_32x1', 'C3e9_64x1')}

  second = _sweep_cli(workdir)
  assert second.returncode == 0, second.stderr[-3000:]
  assert '4 to run' in second.stdout
  for name, status in before.items():  # finished trials were not run again
    assert runner.read_status(workdir, name) == status
  resumed = runner.read_status(workdir, 'C3e9_48x1')
  assert resumed['status'] == 'done' and resumed['attempts'] == 2
  table = results.load(workdir)
  assert list(table.status) == ['done'] * 6
  row = table.set_index('name').loc['C3e9_48x1']
  np.testing.assert_allclose(row.eval_loss, uninterrupted, rtol=1e-6)  # resumed = uninterrupted
  assert row.steps_done == row.steps == 60
  assert (table.N > 0).all() and (table.C > 0).all() and table.eval_loss.notna().all()
  assert np.allclose(table.C, table.budget, rtol=0.02)
  # The :tiny source's entropy rate; changes when its facts spec or facts.py's construction
  # changes.
  np.testing.assert_allclose(table.data_optimal_loss, 1.1786188, rtol=1e-6)
  assert table.git_commit.str.len().min() >= 40 and table.config_hash.nunique() == 6
  assert (table.eval_loss > table.data_optimal_loss).all()  # no model beats the entropy

  listing = _sweep_cli(workdir, '--dry_run')
  assert listing.returncode == 0 and listing.stdout.count(' done') == 6

  fits = report.write_report(table, workdir / 'report', bootstrap=20)
  assert fits.approach3 is not None and fits.approach1 is not None
  for plot in ('loss_vs_compute', 'fitted_vs_observed', 'residuals', 'optimal_allocation'):
    for suffix in ('png', 'svg'):
      assert (workdir / 'report' / f'{plot}.{suffix}').stat().st_size > 1000
  summary = (workdir / 'report' / 'summary.md').read_text()
  assert '6 finished trials fitted' in summary and "true irreducible loss" in summary


@pytest.mark.slow
def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
  sw = _load(TINY)
  trials = [grids.Trial('nan', {**sw.trials[0].overrides, 'train.inject_nan_at_step': 3}),
            grids.Trial('fine', dict(sw.trials[0].overrides))]
  sw = runner.SweepSpec(sw.config_file, sw.base, trials)
  runner.write_manifest(tmp_path, sw, [])
  statuses = runner.run(tmp_path, sw, runner.build_all(sw, jax.device_count()), sw.trials)
  assert statuses == {'nan': 'failed', 'fine': 'done'}
  table = results.collect(tmp_path)
  failed = table.set_index('name').loc['nan']
  assert 'non-finite training loss' in failed.error and 'step 3' in failed.error

  # Editing a trial that already ran is refused rather than mixing two configs in one folder.
  edited = runner.SweepSpec(sw.config_file, sw.base, [grids.Trial(
      'fine', {**trials[1].overrides, 'optim.lr': 3e-2})])  # the base's lr is 1e-2
  with pytest.raises(configs.ConfigError, match="trial 'fine' in .* was run with a different"):
    runner.run(tmp_path, edited, {'fine': runner.build_all(edited, jax.device_count())['fine']},
               edited.trials)


def test_a_field_added_to_llmjax_since_a_trial_ran_is_no_change(tmp_path):
  """An upgrade that adds config fields (at their defaults) must not orphan a sweep's
  finished trials; a real edit is refused, naming the field."""
  sw = _load(TINY)
  trial = sw.trials[0]
  exp = runner.build_all(sw, jax.device_count())[trial.name]
  folder = runner.trial_dir(tmp_path, trial.name)
  folder.mkdir(parents=True)
  written = configs.as_dict(exp)
  del written['model']['scale_scores'], written['optim']['weight_decay_mode']  # older version
  (folder / 'config.json').write_text(json.dumps(written, default=str))
  # The hash an older version recorded differs: every added field changed it.
  (folder / 'trial.json').write_text(json.dumps({'status': 'done', 'config_hash': 'old'}))
  runner._check_unchanged(tmp_path, [trial], {trial.name: exp})  # accepted
  edited = grids.Trial(trial.name, {**trial.overrides, 'optim.lr': 3e-2})
  edited_exp = configs.build(grids.trial_config(sw.base, edited), jax.device_count())
  with pytest.raises(configs.ConfigError, match=r"different config \(optim.lr: 0.01 -> 0.03\)"):
    runner._check_unchanged(tmp_path, [edited], {trial.name: edited_exp})


@pytest.mark.slow
def test_cli_refuses_bad_arguments(tmp_path):
  bad_index = _sweep_cli(tmp_path, '--trial_index=6')
  assert bad_index.returncode == 2
  assert '--trial_index=6: the sweep has 6 trials (0 to 5)' in bad_index.stderr
  bad_only = _sweep_cli(tmp_path, '--only=nope')
  assert bad_only.returncode == 2 and "no trial matches ['nope']" in bad_only.stderr
  no_sweep = subprocess.run([sys.executable, '-m', 'llmjax.sweep',
                             f'--config={ROOT / "experiments" / "base.py"}', '--dry_run'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert no_sweep.returncode == 2 and 'has no get_sweep()' in no_sweep.stderr


def test_a_broken_sweep_file_or_override_is_one_message(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  cases = [([f'--config={broken}'], f'{broken} does not parse'),
           ([f'--config={TINY}', '--config.train.stepz=3'], 'stepz'),
           ([f'--config={TINY}', '--bogus_flag'], 'bogus_flag')]
  for args, message in cases:
    out = subprocess.run([sys.executable, '-m', 'llmjax.sweep', *args, '--dry_run'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, (args, out.stderr)
    assert message in out.stderr and 'Traceback' not in out.stderr, (args, out.stderr)
