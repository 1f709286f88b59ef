"""Checkpoints: exact resume after SIGKILL, SIGTERM, resharding, corruption, NaN, keep policy."""

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import CFG, OPTIM, fixed_batch
from llmjax import checkpoint, optim, sharding, step

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/base.py:tiny'),
        '--config.train.sample_tokens=0', '--config.train.eval_every=1000',
        '--config.train.log_every=1']


def _start(workdir, *flags):
  return subprocess.Popen([*TINY, f'--workdir={workdir}', *flags], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _run(workdir, *flags):
  proc = subprocess.run([*TINY, f'--workdir={workdir}', *flags], capture_output=True, text=True,
                        timeout=600)
  return proc


def _losses(workdir) -> dict[int, float]:
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in records if 'loss' in r}


def _checkpoint_steps(workdir) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


@pytest.mark.slow  # test_resume.py's ten random kills cover it in the default suite's place
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
  flags = ['--config.train.steps=30', '--config.checkpoint.every_steps=5',
           '--config.checkpoint.keep_log_spaced=False']
  reference = _run(tmp_path / 'straight', *flags)
  assert reference.returncode == 0, reference.stderr[-2000:]
  target = random.Random(0).choice([10, 15, 20])
  proc = _start(tmp_path / 'killed', *flags)
  deadline = time.time() + 300
  while target not in _checkpoint_steps(tmp_path / 'killed') and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  resumed = _run(tmp_path / 'killed', *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 'resuming from' in resumed.stdout
  expected, got = _losses(tmp_path / 'straight'), _losses(tmp_path / 'killed')
  assert sorted(got) == list(range(1, 31))
  assert got == expected  # bitwise: the JSON floats are exact


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
@pytest.mark.slow
def test_preemption_signal_saves_exits_cleanly_and_resumes(tmp_path, sig):
  workdir = tmp_path / 'run'
  proc = _start(workdir, '--config.train.steps=100000', '--config.checkpoint.keep_log_spaced=False')
  deadline = time.time() + 300
  while time.time() < deadline and not ((workdir / 'metrics.jsonl').exists() and
                                         len(_losses(workdir)) >= 5):
    time.sleep(0.05)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert 'preempted' in out
  saved = _checkpoint_steps(workdir)
  assert saved and saved[-1] >= 5
  assert saved[-1] in _losses(workdir)  # the saved step's metrics record is not lost
  resumed = _run(workdir, f'--config.train.steps={saved[-1] + 3}', '--allow_changes=train.steps',
                 '--config.checkpoint.keep_log_spaced=False')
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'resuming from {workdir.resolve()}/checkpoints/{saved[-1]}' in resumed.stdout
  assert max(_losses(workdir)) == saved[-1] + 3


def _state_on(mesh_shape, ckpt_dir=None, restore_from=None):
  """A state on a mesh: one train step from init, or restored from a checkpoint dir."""
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(*mesh_shape, devices=devices)
  rules = sharding.DEFAULT_RULES
  tx, _ = optim.make(OPTIM, CFG, total_steps=10)
  cfg = checkpoint.CheckpointConfig(keep_log_spaced=False)
  with sharding.activation_rules(mesh, rules):
    graphdef, target, shardings = step.abstract_state(CFG, tx, 0, mesh, rules)
    step_fn = jax.jit(lambda s, b: step.train_step(s, b, graphdef=graphdef, tx=tx,
                                                   num_microbatches=1, z_loss=0.0),
                      in_shardings=(shardings, sharding.data_sharding(mesh, rules)),
                      out_shardings=(shardings, None))
    batch = step.device_batch(fixed_batch(), sharding.data_sharding(mesh, rules))
    if restore_from is None:
      _, state, _ = step.create_sharded_state(CFG, tx, 0, mesh, rules)
      state, _ = step_fn(state, batch)
      ckpt = checkpoint.Checkpointer(ckpt_dir, cfg, 10)
      ckpt.save(1, state, {'iterator': {}, 'counts': {}}, {})
      ckpt.close()
    else:
      ckpt = checkpoint.Checkpointer(restore_from, cfg, 10)
      state = ckpt.restore_latest(target).state
      ckpt.close()
    _, next_metrics = step_fn(state, batch)
    return jax.device_get(state.params), float(next_metrics['loss']), state


def test_checkpoint_from_8_devices_restores_on_1_and_on_2x2x2(tmp_path):
  params, loss, _ = _state_on((1, 8, 1), ckpt_dir=tmp_path)
  for mesh_shape in [(1, 1, 1), (2, 2, 2)]:
    got_params, got_loss, state = _state_on(mesh_shape, restore_from=tmp_path)
    wq = state.params['blocks']['attn']['wq'].get_value()
    assert len(wq.sharding.device_set) == int(np.prod(mesh_shape))  # the target layout
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(params)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-5)


def _truncate_files(folder):
  for f in folder.rglob('*'):
    if f.is_file() and f.stat().st_size > 64:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def _flip_one_byte(folder):
  victim = max((f for f in folder.rglob('*') if f.is_file()), key=lambda f: f.stat().st_size)
  data = bytearray(victim.read_bytes())
  data[len(data) // 2] ^= 0xFF  # same size, one byte different
  victim.write_bytes(bytes(data))


@pytest.mark.parametrize('damage, message', [
    (_truncate_files, 'checkpoints/20 is unusable'),
    (_flip_one_byte, 'differ from the SHA-256 recorded'),
], ids=['truncated', 'altered'])
@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage, message):
  workdir = tmp_path / 'run'
  first = _run(workdir, '--config.train.steps=20')
  assert first.returncode == 0, first.stderr[-2000:]
  assert _checkpoint_steps(workdir)[-2:] == [16, 20]
  assert sorted(p.stem for p in (workdir / 'checkpoint_checksums').glob('*.json')) == sorted(
      str(s) for s in _checkpoint_steps(workdir))
  damage(workdir / 'checkpoints' / '20' / 'state')
  again = _run(workdir, '--config.train.steps=24', '--allow_changes=train.steps',
               '--config.checkpoint.every_steps=4')
  assert again.returncode == 0, again.stderr[-2000:]
  assert message in again.stderr
  assert f'resuming from {workdir.resolve()}/checkpoints/16' in again.stdout
  # The bad step is kept aside with its reason, and step 20 is trained and saved again.
  assert (workdir / 'unusable_checkpoints' / '20' / 'state').is_dir()
  assert (workdir / 'unusable_checkpoints' / '20.reason.txt').read_text().strip()
  assert _checkpoint_steps(workdir)[-2:] == [20, 24]


def test_nan_halts_without_saving_it(tmp_path):
  workdir = tmp_path / 'run'
  proc = _run(workdir, '--config.train.steps=20', '--config.checkpoint.every_steps=5',
              '--config.train.inject_nan_at_step=7')
  assert proc.returncode == 3
  assert 'non-finite training loss nan at step 7' in proc.stderr
  assert max(_checkpoint_steps(workdir)) < 7


def test_nan_is_skipped_and_counted_with_skip_policy(tmp_path):
  workdir = tmp_path / 'run'
  proc = _run(workdir, '--config.train.steps=12', '--config.train.nonfinite=skip',
              '--config.train.inject_nan_at_step=7')
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  last = [r for r in records if 'skipped_steps' in r][-1]
  assert last['step'] == 12 and last['skipped_steps'] == 1 and last['consecutive_skipped_steps'] == 0
  assert np.isfinite(last['loss'])


def test_keep_policy(tmp_path):
  cfg = checkpoint.CheckpointConfig(keep_last=2, keep_log_spaced=True, keep_every=10)
  ckpt = checkpoint.Checkpointer(tmp_path, cfg, total_steps=30)
  state = {'w': np.arange(4.0)}
  for step in range(1, 31):
    if ckpt.due(step, 30) or step in (3, 11, 29):
      ckpt.save(step, state, {'iterator': {}, 'counts': {}}, {})
  ckpt.close()
  assert ckpt.steps() == [1, 2, 4, 8, 10, 16, 20, 29, 30]
  assert not list((tmp_path / 'checkpoints').glob('*.orbax-checkpoint-tmp*'))


def test_warm_start_from_another_run(tmp_path):
  first = _run(tmp_path / 'a', '--config.train.steps=30', '--config.optim.lr=0.01')
  assert first.returncode == 0, first.stderr[-2000:]
  warm = _run(tmp_path / 'b', '--config.train.steps=2', '--config.optim.warmup_steps=0',
              f'--config.init_from={tmp_path / "a"}:16')
  assert warm.returncode == 0, warm.stderr[-2000:]
  assert f'parameters initialized from {(tmp_path / "a").resolve()}/checkpoints/16' in warm.stdout
  a, b = _losses(tmp_path / 'a'), _losses(tmp_path / 'b')
  assert b[1] < a[1] - 0.5  # starts where the other run was, not from scratch
  bad = _run(tmp_path / 'c', f'--config.init_from={tmp_path / "a"}:17')
  assert bad.returncode == 2 and 'config.init_from:' in bad.stderr and 'no step 17' in bad.stderr
  assert not (tmp_path / 'c').exists()
