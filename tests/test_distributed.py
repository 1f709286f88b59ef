"""Multi-process runs on one machine (launch/local.sh): same losses as one process,
checkpoints that resume with another process count, a dead process stopping the
rest; process-group settings; hybrid (DCN) meshes."""

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from llmjax import configs, distributed, sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCAL = str(ROOT / 'launch/local.sh')
# Tiny model, synthetic data (i.i.d. documents: no shuffle window to fill) with an
# 8-batch held-out split, no sample; checkpoints at steps 10 and 20; a mesh whose
# batch axis spans the process boundary; a fixed peak FLOP/s, not a measurement.
FLAGS = ['--config.data.source=synthetic:vocab=64,doc_len=64', '--config.data.shuffle_window=1',
         '--config.train.sample_tokens=0',
         '--config.train.eval_every=1000', '--config.train.log_every=1',
         '--config.checkpoint.keep_log_spaced=False', '--config.checkpoint.every_steps=10',
         '--config.mesh.fsdp=2', '--config.metrics.peak_flops_per_device=1e10',
         '--config.metrics.tensorboard=False']


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache shared by this file's runs: runs of the same
  program on the same topology compile once (it halves the CPU time of a rerun)."""
  return {'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache')),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


def _local(num_processes: int, devices: int, workdir, *flags, env=None, wait=True,
           timeout=300, log_dir=None):
  env = {**os.environ, **(env or {}), 'PYTHON': sys.executable,
         'LLMJAX_DEVICES_PER_PROCESS': str(devices), 'LLMJAX_STOP_GRACE_S': '5'}
  if log_dir is None:
    env['LLMJAX_LOG_DIR'] = str(workdir) + '-logs'
  cmd = [LOCAL, str(num_processes), str(ROOT / 'experiments/base.py:tiny'),
         f'--workdir={workdir}', *FLAGS, *flags]
  proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  if not wait:
    return proc
  try:
    proc.stdout_text, proc.stderr_text = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.terminate()  # local.sh stops its processes
    proc.communicate(timeout=60)
    proc.stdout_text = proc.stderr_text = f'timed out after {timeout} s'
  logs = ''.join(pathlib.Path(p).read_text()[-3000:]
                 for p in sorted(glob.glob(f'{log_dir or f"{workdir}-logs"}/process_*.log')))
  assert proc.returncode == 0, proc.stderr_text[-2000:] + logs
  return proc


def _losses(workdir) -> dict[int, float]:
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in records if 'loss' in r}


@pytest.mark.slow
def test_two_processes_match_one_and_their_checkpoint_resumes_in_one(tmp_path,
                                                                     compilation_cache):
  _local(1, 4, tmp_path / 'one', env=compilation_cache)
  two = _local(2, 2, tmp_path / 'two', env=compilation_cache)
  logs = [(tmp_path / f'two-logs/process_{i}.log').read_text() for i in range(2)]
  for i, log in enumerate(logs):  # every process names its devices, only process 0 prints
    assert f'llmjax: process {i} of 2 on ' in log and '2 of 4 devices' in log, log[-2000:]
  assert 'step 20: train loss' in logs[0] and 'step 20: train loss' not in logs[1]
  assert 'all 2 processes finished' in two.stdout_text
  expected, got = _losses(tmp_path / 'one'), _losses(tmp_path / 'two')
  assert sorted(got) == list(range(1, 21))
  np.testing.assert_allclose([got[s] for s in expected], list(expected.values()), rtol=1e-5)

  # The 2-process checkpoint of step 10 continues in 1 process to the same losses.
  shutil.rmtree(tmp_path / 'two/checkpoints/20')
  _local(1, 4, tmp_path / 'two', env=compilation_cache)
  assert 'resuming from' in (tmp_path / 'two-logs/process_0.log').read_text()
  got = _losses(tmp_path / 'two')
  assert sorted(got) == list(range(1, 21))
  np.testing.assert_allclose([got[s] for s in expected], list(expected.values()), rtol=1e-5)


def _start_long_run(workdir, env, *flags):
  """(local.sh process, {process index: pid}) once a few steps have been logged."""
  proc = _local(2, 2, workdir, '--config.train.steps=100000', *flags, env=env, wait=False)
  pids = {}
  deadline = time.time() + 180
  while len(pids) < 2 and time.time() < deadline:  # 'llmjax local: process I: pid P log ...'
    words = proc.stdout.readline().split()
    if words[:2] == ['llmjax', 'local:']:
      pids[int(words[3].rstrip(':'))] = int(words[5])
  metrics = workdir / 'metrics.jsonl'
  while time.time() < deadline and not (metrics.exists() and len(_losses(workdir)) > 2):
    time.sleep(0.2)
  return proc, pids


def _records(workdir) -> list[dict]:
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.mark.slow
def test_the_readme_two_process_command_runs_its_final_evaluation(tmp_path):
  """README's command: 20 steps of the tiny experiment in 2 processes x 2 devices, then
  the final evaluation of the whole held-out split (607 batches; with all of them
  queued at once the processes deadlocked in their CPU collectives). Logs go to
  WORKDIR/logs/ by default."""
  env = {**os.environ, 'PYTHON': sys.executable, 'LLMJAX_DEVICES_PER_PROCESS': '2'}
  proc = subprocess.Popen([LOCAL, '2', 'experiments/base.py:tiny', f'--workdir={tmp_path}/run',
                           '--config.mesh.fsdp=2'], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    out, err = proc.communicate(timeout=420)
  except subprocess.TimeoutExpired:
    proc.terminate()  # local.sh stops both processes
    out, err = proc.communicate(timeout=60)
  logs = sorted((tmp_path / 'run/logs').glob('local-*/process_*.log'))
  assert len(logs) == 2, out + err
  assert proc.returncode == 0, err[-2000:] + logs[0].read_text()[-3000:]
  evals = [r for r in _records(tmp_path / 'run') if 'eval/loss' in r]
  assert [r['step'] for r in evals] == [10, 20]
  assert 'step 20: train loss' in logs[0].read_text()


@pytest.mark.slow
def test_sigterm_saves_the_same_step_in_every_process(tmp_path, compilation_cache):
  proc, _ = _start_long_run(tmp_path / 'run', compilation_cache)
  proc.send_signal(signal.SIGTERM)  # local.sh passes it on to every process
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert 'interrupted; stopping all processes' in err and 'failed' not in err
  # orbax finalizes a step only once every process has written its part of it.
  saved = sorted(int(p.name) for p in (tmp_path / 'run/checkpoints').iterdir())
  assert saved[-1] >= 3
  log = (tmp_path / 'run-logs/process_0.log').read_text()
  assert f'preempted; checkpoint of step {saved[-1]} saved' in log


@pytest.mark.slow
def test_a_dead_process_stops_the_others_with_a_message(tmp_path, compilation_cache):
  proc, pids = _start_long_run(tmp_path / 'run', compilation_cache, '--heartbeat_timeout=10')
  os.kill(pids[1], signal.SIGKILL)
  killed = time.time()
  _, err = proc.communicate(timeout=90)
  assert proc.returncode != 0
  assert time.time() - killed < 30
  assert 'process 1 (pid' in err and 'failed with exit status 137; stopping the others' in err
  with pytest.raises(ProcessLookupError):
    os.kill(pids[0], 0)


def test_process_group_comes_from_flags_then_environment(monkeypatch):
  for var in distributed.ENV_VARS.values():
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(ValueError, match=r'missing: --num_processes \(JAX_NUM_PROCESSES\), '
                                       r'--process_id \(JAX_PROCESS_ID\)'):
    distributed.initialize(coordinator_address='localhost:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('JAX_PROCESS_ID', '2')
  with pytest.raises(ValueError, match=r'process_id=2 must be in 0 .. num_processes - 1 = 1'):
    distributed.initialize(coordinator_address='localhost:1234')
  with pytest.raises(ValueError, match=r"coordinator_address='localhost' must be host:port"):
    distributed.initialize(coordinator_address='localhost', process_id=0)
  # One process needs no coordinator: nothing is started.
  assert distributed.initialize('localhost:1234', num_processes=1, process_id=0) == \
      'single process'
  assert not jax.distributed.is_initialized()


def test_cluster_detection_from_the_environment(monkeypatch):
  for var in ('SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'OMPI_MCA_orte_hnp_uri',
              'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.detect_cluster() is None
  monkeypatch.setenv('SLURM_STEP_NODELIST', 'node[1-2]')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert distributed.detect_cluster() is None  # a single-task step is one process
  monkeypatch.setenv('SLURM_NTASKS', '16')
  assert distributed.detect_cluster() == 'slurm'
  monkeypatch.delenv('SLURM_STEP_NODELIST')
  monkeypatch.setenv('OMPI_MCA_orte_hnp_uri', '123.0;tcp://10.0.0.1:4000')
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '4')
  assert distributed.detect_cluster() == 'open mpi'


def test_batch_slice_of_one_process_is_the_whole_batch():
  mesh = sharding.make_mesh(2, 2, 2)
  assert distributed.batch_slice(sharding.data_sharding(mesh, sharding.DEFAULT_RULES), 8) == \
      (0, 1)


def test_dcn_mesh_in_one_process_equals_the_plain_mesh():
  plain = sharding.make_mesh(4, 2, 1)
  hybrid = sharding.make_mesh(-1, 2, 1, dcn_data=2)
  assert hybrid.axis_names == plain.axis_names
  assert (hybrid.devices == plain.devices).all()
  with pytest.raises(ValueError, match=r'mesh.dcn_data=3 must be a positive divisor of the '
                                       r'data axis \(4\)'):
    sharding.make_mesh(-1, 2, 1, dcn_data=3)


def test_config_refuses_a_dcn_size_that_does_not_divide_the_data_axis():
  config = configs.defaults()
  config.mesh.dcn_data = 3
  with pytest.raises(configs.ConfigError, match=r'config.mesh.dcn_data=3 must be a positive '
                                                r'divisor of the data axis \(8\)'):
    configs.build(config, 8)


def _fake_devices(processes: int, per_process: int, slices: int = 1):
  per_slice = processes * per_process // slices
  return [types.SimpleNamespace(id=i, process_index=i // per_process,
                                slice_index=i // per_slice)
          for i in range(processes * per_process)]


def test_dcn_groups_are_whole_processes_or_slices():
  groups = sharding._dcn_groups(_fake_devices(4, 2)[::-1], 2)  # any input order
  assert [{d.process_index for d in g} for g in groups] == [{0, 1}, {2, 3}]
  groups = sharding._dcn_groups(_fake_devices(4, 2, slices=2), 2)
  assert [{d.slice_index for d in g} for g in groups] == [{0}, {1}]
  with pytest.raises(ValueError, match=r'mesh.dcn_data=3 does not divide the 4 processes'):
    sharding._dcn_groups(_fake_devices(4, 3), 3)
