"""Nothing lost on a rerun: the resume policy, config history, the run-folder lock,
checkpoints that cannot be used, failed saves, checksums at finalization, and kill -9 at
random moments (each resume bitwise equal to an uninterrupted run)."""

import errno
import hashlib
import importlib.util
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from llmjax import checkpoint, configs, resume, runs, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = ['--config.train.steps=10', '--config.checkpoint.every_steps=5',
         '--config.checkpoint.keep_log_spaced=False']
TINY = [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/base.py:tiny'),
        '--config.train.sample_tokens=0', '--config.train.eval_every=1000',
        '--config.train.log_every=1', '--config.train.eval_batches=1']


def _run(workdir, *flags, timeout=600):
  return subprocess.run([*TINY, f'--workdir={workdir}', *flags], capture_output=True, text=True,
                        timeout=timeout)


def _snapshot(workdir: pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file of a run folder (the lock excepted): equal means nothing changed."""
  return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(workdir.rglob('*')) if p.is_file() and p.name != '.lock'}


def _losses(workdir) -> dict[int, float]:
  return {r['step']: r['loss'] for r in runs.RunFolder(workdir).metrics_records() if 'loss' in r}


@pytest.fixture(scope='module')
def finished(tmp_path_factory) -> pathlib.Path:
  """A finished 10-step run with checkpoints 5 and 10; tests work on copies of it."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  proc = _run(workdir, *STEPS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _copy(finished, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(finished, tmp_path / 'run'))


@pytest.mark.parametrize('flag, field', [
    ('--config.optim.name=lion', 'optim.name'),
    ('--config.model.num_layers=3', 'model.num_layers'),
    ('--config.optim.lr=0.03', 'optim.lr'),
    ('--config.train.steps=20', 'train.steps'),
], ids=['optimizer', 'model', 'lr', 'steps'])
def test_a_changed_run_is_refused_and_nothing_changes(finished, tmp_path, flag, field):
  workdir = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  proc = _run(workdir, *STEPS, flag)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert field in proc.stderr and 'Traceback' not in proc.stderr
  assert _snapshot(workdir) == before


def test_an_allowed_change_extends_the_run_and_keeps_the_config_history(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  old_config = json.loads((workdir / 'config.json').read_text())
  proc = _run(workdir, *STEPS[1:], '--config.train.steps=12', '--allow_changes=train.steps')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'changed on resume: train.steps: 10 -> 12' in proc.stdout
  assert sorted(_losses(workdir)) == list(range(1, 13))
  history = [json.loads(line) for line in (workdir / resume.HISTORY_FILE).read_text().splitlines()]
  assert len(history) == 1 and history[0]['config'] == old_config
  assert history[0]['newest_checkpoint'] == 10
  assert json.loads((workdir / 'config.json').read_text())['train']['steps'] == 12


def test_mesh_metrics_and_checkpoint_settings_may_change(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  proc = _run(workdir, *STEPS[:2], '--config.checkpoint.keep_last=5',
              '--config.eval.tasks_every=7')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'already complete' in proc.stdout


def test_every_checkpoint_damaged_is_refused_not_restarted(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  for step in (5, 10):
    for f in (workdir / 'checkpoints' / str(step) / 'state').rglob('*'):
      if f.is_file() and f.stat().st_size > 64:
        f.write_bytes(f.read_bytes()[:f.stat().st_size // 3])
  before = _snapshot(workdir)
  proc = _run(workdir, *STEPS)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'none of the checkpoints' in proc.stderr and 'Nothing was changed' in proc.stderr
  assert _snapshot(workdir) == before


def test_a_folder_without_checkpoints_starts_again(finished, tmp_path):
  # What a kill -9 during the first step (compilation) leaves: config and metrics, no
  # checkpoint. The rerun trains from step 0 and equals the uninterrupted run.
  workdir = _copy(finished, tmp_path)
  shutil.rmtree(workdir / 'checkpoints')
  shutil.rmtree(workdir / 'checkpoint_checksums', ignore_errors=True)
  proc = _run(workdir, *STEPS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _losses(workdir) == _losses(finished)


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
  (workdir / '.lock').write_text(json.dumps({'host': os.uname().nodename, 'pid': holder.pid,
                                             'since': 'now'}))
  before = _snapshot(workdir)
  try:
    proc = _run(workdir, *STEPS[1:], '--config.train.steps=12', '--allow_changes=train.steps')
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f'in use by process {holder.pid}' in proc.stderr
  assert _snapshot(workdir) == before
  # The holder is gone now: its lock is stale and the next run takes it.
  proc = _run(workdir, *STEPS[1:], '--config.train.steps=12', '--allow_changes=train.steps')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not (workdir / '.lock').exists()


@pytest.mark.slow  # two live trainings; the stale-lock test covers refusal in the default suite
def test_two_live_runs_in_one_folder(tmp_path):
  workdir = tmp_path / 'run'
  first = subprocess.Popen([*TINY, f'--workdir={workdir}', '--config.train.steps=100000'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and len(_losses(workdir) if workdir.exists() else {}) < 3:
    time.sleep(0.1)
  second = _run(workdir, '--config.train.steps=100000')
  first.send_signal(signal.SIGTERM)
  first.communicate(timeout=120)
  assert second.returncode == 2 and 'is in use by process' in second.stderr, second.stderr
  steps = [r['step'] for r in runs.RunFolder(workdir).metrics_records() if 'loss' in r]
  assert steps == sorted(set(steps))  # one writer: no duplicate rows


def test_the_lock_is_exclusive_within_one_host(tmp_path):
  with runs.RunLock(tmp_path):
    with pytest.raises(runs.RunLocked, match=f'in use by process {os.getpid()}'):
      with runs.RunLock(tmp_path):
        pass
  with runs.RunLock(tmp_path):  # released on exit
    pass


def test_checksums_are_recorded_when_a_save_is_finalized(tmp_path, capsys):
  ckpt = checkpoint.Checkpointer(tmp_path, checkpoint.CheckpointConfig(keep_log_spaced=False), 10)
  state = {'w': np.arange(1000.0)}
  ckpt.save(3, state, {'iterator': {}, 'counts': {}}, {})
  record = tmp_path / 'checkpoint_checksums' / '3.json'
  deadline = time.time() + 60
  while not record.exists() and time.time() < deadline:  # no later save, no wait()
    time.sleep(0.05)
  assert record.exists()
  ckpt.close()
  record.unlink()  # as if the process had died before hashing it
  reader = checkpoint.Checkpointer(tmp_path, checkpoint.CheckpointConfig(), 10)
  restored = reader.restore_latest({'w': np.zeros(1000)})
  reader.close()
  assert restored.step == 3 and 'restored unverified' in capsys.readouterr().err


def test_a_save_that_fails_in_the_background_is_reported(tmp_path, monkeypatch):
  ckpt = checkpoint.Checkpointer(tmp_path, checkpoint.CheckpointConfig(), 10)
  ckpt.save(1, {'w': np.ones(4)}, {'iterator': {}, 'counts': {}}, {})

  def full_disk():
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(ckpt.manager, 'wait_until_finished', full_disk)
  ckpt.close()  # does not raise: the run goes on and reports at its end
  assert len(ckpt.failed_saves) == 1 and 'No space left' in ckpt.failed_saves[0]


def _tiny_experiment(steps: int, every: int) -> configs.Experiment:
  spec = importlib.util.spec_from_file_location('_resume_experiment', ROOT / 'experiments/base.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.train.steps, config.checkpoint.every_steps = steps, every
  config.train.sample_tokens, config.train.eval_batches, config.train.log_every = 0, 1, 1
  config.checkpoint.keep_log_spaced = False
  config.metrics.tensorboard = False
  return configs.build(config, jax.device_count())


def test_a_full_disk_keeps_older_checkpoints_and_fails_visibly(tmp_path, monkeypatch):
  exp = _tiny_experiment(steps=12, every=4)
  original = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):  # orbax's own write fails: the disk is full
    if step >= 8:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  with pytest.raises(checkpoint.SaveError, match='step 8'):
    train.run(exp, tmp_path / 'run', configs.as_dict(exp))
  assert runs.RunFolder(tmp_path / 'run').steps == [4]
  assert sorted(_losses(tmp_path / 'run')) == list(range(1, 13))  # training went on


def test_init_from_a_run_of_another_shape_is_refused_before_anything_is_written(finished,
                                                                              tmp_path):
  proc = _run(tmp_path / 'new', '--config.model.d_model=48', f'--config.init_from={finished}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'config.init_from' in proc.stderr and 'other parameter shapes' in proc.stderr
  assert 'embed.embedding' in proc.stderr  # names a parameter that differs
  assert not (tmp_path / 'new').exists()


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_bitwise(tmp_path):
  """Ten kills at uniformly random moments of a run (during compilation, mid-step, mid-save,
  right after a save); each rerun must finish with every loss bitwise equal."""
  flags = ['--config.train.steps=16', '--config.checkpoint.every_steps=3',
           '--config.checkpoint.keep_log_spaced=False']
  start = time.time()
  reference = _run(tmp_path / 'reference', *flags)
  duration = time.time() - start
  assert reference.returncode == 0, reference.stderr[-3000:]
  expected = _losses(tmp_path / 'reference')
  rng = random.Random(0)
  for trial in range(10):
    workdir = tmp_path / f'killed{trial}'
    proc = subprocess.Popen([*TINY, f'--workdir={workdir}', *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, duration))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _run(workdir, *flags)
    assert resumed.returncode == 0, (trial, resumed.stderr[-3000:])
    assert _losses(workdir) == expected, trial

