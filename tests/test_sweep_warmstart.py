"""Warm starts between the trials of one sweep (init_from='trial:NAME[:STEP]'): resolution at
run time, the two load-time errors (and a shape mismatch), the not-done failure, and a
moved sweep folder resuming."""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from llmjax import configs, runs
from llmjax.scaling import grids, runner

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / 'experiments' / 'base.py') + ':tiny'
# A learning rate too small to move a weight by 1e-9 in one step: the fine-tune's weights
# are then the source's (a cold start differs from them by ~1e-2).
FROZEN_LR = 1e-12


def _sweep(*trials: grids.Trial) -> runner.SweepSpec:
  base = configs.load_file(TINY)
  base.train.sample_tokens = 0
  base.train.eval_every = 1000  # the final evaluation only
  base.train.eval_batches = 1
  base.optim.warmup_steps = 1
  return runner.SweepSpec(TINY, base, list(trials))


PRE = grids.Trial('pre', {'train.steps': 3})
FT = grids.Trial('ft', {'train.steps': 1, 'init_from': 'trial:pre', 'optim.lr': FROZEN_LR})


def _params(folder: pathlib.Path, step: int | None = None) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(runs.RunFolder(folder).params(step))]


def _fake_done_trial(workdir: pathlib.Path, name: str, exp: configs.Experiment,
                     steps=(3,)) -> None:
  """A trial folder as a finished trial leaves it, minus the weights: its status, its config
  and empty checkpoint folders (enough for warmstart.check, which reads shapes only)."""
  folder = runner.trial_dir(workdir, name)
  for step in steps:
    (folder / 'checkpoints' / str(step)).mkdir(parents=True)
  (folder / 'config.json').write_text(json.dumps(configs.as_dict(exp)))
  (folder / 'trial.json').write_text(json.dumps({'status': runner.DONE}))


def test_source_trial_parses_names_and_steps():
  assert runner.source_trial('trial:pre') == ('pre', None)
  assert runner.source_trial('trial:pre:2') == ('pre', 2)
  assert runner.source_trial('runs/base') is None and runner.source_trial('') is None


def test_resolution_names_the_trial_folder_and_a_step(tmp_path):
  experiments = runner.build_all(_sweep(PRE, FT), num_devices=1)
  exp = experiments['ft']
  with pytest.raises(runner.DependencyError, match="it starts from trial 'pre', which is "
                                                   "pending, not done; rerun the sweep"):
    runner.resolve_source(tmp_path, exp)
  _fake_done_trial(tmp_path, 'pre', experiments['pre'], steps=(2, 3))
  assert runner.resolve_source(tmp_path, exp).init_from == str(tmp_path / 'trials' / 'pre')
  at_step = runner.resolve_source(tmp_path, dataclasses.replace(exp, init_from='trial:pre:2'))
  assert at_step.init_from == f'{tmp_path / "trials" / "pre"}:2'
  with pytest.raises(runner.DependencyError, match="trial 'pre' cannot start it: .*7"):
    runner.resolve_source(tmp_path, dataclasses.replace(exp, init_from='trial:pre:7'))
  assert runner.resolve_source(tmp_path, experiments['pre']) is experiments['pre']  # no source


def test_a_source_not_done_fails_the_trial_with_a_sentence_and_trains_nothing(tmp_path):
  sw = _sweep(PRE, FT)
  experiments = runner.build_all(sw, num_devices=1)
  (runner.trial_dir(tmp_path, 'pre')).mkdir(parents=True)
  (runner.trial_dir(tmp_path, 'pre') / 'trial.json').write_text('{"status": "failed"}')
  assert runner.run(tmp_path, sw, experiments, [FT]) == {'ft': runner.FAILED}
  record = runner.read_status(tmp_path, 'ft')
  assert record['error'] == ("DependencyError: it starts from trial 'pre', which is failed, not "
                             "done; rerun the sweep once 'pre' has finished (done trials are "
                             "skipped)")
  assert not (runner.trial_dir(tmp_path, 'ft') / 'checkpoints').exists()


@pytest.mark.slow
def test_one_sweep_pretrains_then_fine_tunes_from_the_weights_and_may_move(tmp_path):
  """A fine-tune run alone before its source fails; the whole sweep then runs both, the
  fine-tune from the source's weights; a copy of the folder elsewhere resumes as done."""
  workdir = tmp_path / 'sweep'
  sw = _sweep(PRE, FT)
  experiments = runner.build_all(sw, num_devices=1)
  assert runner.run(workdir, sw, experiments, [FT]) == {'ft': runner.FAILED}
  assert runner.run(workdir, sw, experiments, sw.trials) == {'pre': 'done', 'ft': 'done'}
  source, tuned = _params(workdir / 'trials' / 'pre'), _params(workdir / 'trials' / 'ft')
  assert all(np.allclose(s, t, rtol=0, atol=1e-6) for s, t in zip(source, tuned))
  # config.json keeps the spec, not the folder it resolved to: the sweep may move.
  assert runs.RunFolder(workdir / 'trials' / 'ft').config['init_from'] == 'trial:pre'
  moved = tmp_path / 'elsewhere'
  shutil.copytree(workdir, moved)
  # Unchanged hashes (no 'was run with a different config'), everything already done.
  assert runner.run(moved, sw, experiments, sw.trials) == {'pre': 'done', 'ft': 'done'}
  assert runner.resolve_source(moved, experiments['ft']).init_from == str(moved / 'trials' /
                                                                            'pre')


@pytest.mark.parametrize('trials, message', [
    ((grids.Trial('ft', {'init_from': 'trial:nope'}),),
     "trial 'ft': init_from='trial:nope': the sweep has no trial 'nope'"),
    ((FT, PRE),
     "trial 'ft': init_from='trial:pre': trial 'pre' comes at index 1, not before this one "
     "(index 0); list sources first"),
    ((PRE, grids.Trial('ft', {'init_from': 'trial:pre', 'model.d_model': 64,
                              'model.mlp_dim': 128})),
     "trial 'ft': init_from='trial:pre': its model has other parameter shapes: "),
])
def test_bad_sources_are_refused_when_the_sweep_loads(trials, message):
  with pytest.raises(configs.ConfigError) as raised:
    runner.build_all(_sweep(*trials), num_devices=1)
  assert message in str(raised.value)


def test_the_cli_exits_2_on_a_bad_source_and_writes_nothing(tmp_path):
  sweep_file = tmp_path / 'sweep.py'
  sweep_file.write_text(
      'from llmjax import configs\n'
      'from llmjax.scaling import grids\n'
      f'def get_config():\n  return configs.load_file({TINY!r})\n'
      "def get_sweep():\n"
      "  return [grids.Trial('ft', {'init_from': 'trial:pre'}), grids.Trial('pre', {})]\n")
  proc = subprocess.run([sys.executable, '-m', 'llmjax.sweep', '--config', str(sweep_file),
                         '--workdir', str(tmp_path / 'w')], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "trial 'pre' comes at index 1, not before this one (index 0)" in proc.stderr
  assert not (tmp_path / 'w').exists()
