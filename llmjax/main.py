"""Command line: python -m llmjax.main --config experiments/base.py [--config.a.b=v] [--workdir DIR].

Multi-host: every process runs the same command, plus --coordinator_address,
--num_processes and --process_id where the cluster is not detected (see
llmjax/distributed.py and launch/). --compile_only compiles the train step for
the config's mesh and reports memory per device, without data or a workdir.
"""

import datetime
import pathlib
import sys

from llmjax import allocator

if __name__ == '__main__':  # first: a re-exec for the allocator costs little before JAX loads
  allocator.ensure()

import jax  # noqa: E402
from absl import app, flags, logging

from llmjax import (aot, checkpoint, configs, distributed, resume, runs, sharding, train,
                    warmstart)
from llmjax.data.sources import DataError

_CONFIG = flags.DEFINE_string('config', None, 'Experiment file[:VARIANT] with get_config(); '
                              'override its fields with --config.SECTION.FIELD=VALUE.')
_OVERRIDES: list[str] = []  # the --config.SECTION.FIELD=VALUE flags, in order
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; default: a new one under runs/.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 in a '
                                   'multi-process run; default: $JAX_COORDINATOR_ADDRESS, or '
                                   'detected on SLURM and Cloud TPU.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in the run; 0: '
                                      '$JAX_NUM_PROCESSES, or detected.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, "This process's index; -1: "
                                   '$JAX_PROCESS_ID, or detected.')
_INIT_TIMEOUT = flags.DEFINE_integer('initialization_timeout', 300, 'Seconds to wait for all '
                                     'processes to connect.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer('heartbeat_timeout', 100, 'Seconds without a '
                                          'heartbeat after which a process counts as dead and '
                                          'the others abort.')
_COMPILE_ONLY = flags.DEFINE_bool('compile_only', False, 'Compile the train step for the '
                                  "config's mesh, print memory per device, and exit.")
_ALLOW_CHANGES = flags.DEFINE_list('allow_changes', [], 'Config fields (section.field) or '
                                   'sections a resumed run may change, e.g. train.steps to '
                                   'extend it; see llmjax/resume.py for the policy.')
_NUM_FAKE_DEVICES = flags.DEFINE_integer('num_fake_devices', 0, 'Run on this many CPU devices '
                                         '(e.g. shaped like a target pod, with --compile_only).',
                                         lower_bound=0)


def _default_workdir(config_path: str) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('runs') / f'{pathlib.Path(config_path).stem}-{stamp}'


def _init_from_problem(exp: configs.Experiment) -> str | None:
  """Why `config.init_from` cannot start this run, if it cannot (before any write)."""
  if not exp.init_from:
    return None
  if exp.init_from.startswith('trial:'):
    return (f'invalid config:\nconfig.init_from={exp.init_from!r}: trial:NAME names another '
            f'trial of a sweep and works only in python -m llmjax.sweep; here give the trial\'s '
            f'folder (SWEEP/trials/NAME)')
  try:
    warmstart.check(exp.init_from, exp.model)
  except (FileNotFoundError, ValueError) as e:
    return f'invalid config:\nconfig.init_from: {e}'
  return None


def _join_processes() -> None:
  """Connects to the run's other processes, if any; every process names its devices."""
  try:
    how = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                 _INIT_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value)
  except ValueError as e:
    print(f'llmjax: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'{distributed.device_report()} [{how}]', flush=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint file at INFO
  if _CONFIG.value is None:
    print('llmjax: --config is required, e.g. --config experiments/base.py', file=sys.stderr)
    sys.exit(2)
  try:
    config = configs.load_file(_CONFIG.value, _OVERRIDES)
  except configs.ConfigError as e:
    print(f'llmjax: {e}', file=sys.stderr)
    sys.exit(2)
  if _NUM_FAKE_DEVICES.value:  # must precede JAX's first use of a device
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', _NUM_FAKE_DEVICES.value)
  if not _COMPILE_ONLY.value:
    _join_processes()
  try:
    exp = configs.build(config, jax.device_count())
  except configs.ConfigError as e:
    print(f'llmjax: invalid config:\n{e}', file=sys.stderr)
    sys.exit(2)
  if _COMPILE_ONLY.value:
    mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor,
                              dcn_data=exp.mesh.dcn_data)
    print(aot.format_report(exp, mesh, aot.memory_report(exp, mesh)))
    return
  if jax.process_count() > 1 and not _WORKDIR.value:  # each would pick its own timestamp
    print('llmjax: a multi-process run needs --workdir, one folder all processes share',
          file=sys.stderr)
    sys.exit(2)
  workdir = pathlib.Path(_WORKDIR.value or _default_workdir(_CONFIG.value.partition(':')[0]))
  problem = _init_from_problem(exp) or resume.problem(workdir, configs.as_dict(exp),
                                                       set(_ALLOW_CHANGES.value))
  if problem:
    print(f'llmjax: {problem}', file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(f'llmjax: workdir {workdir}')
  _train(exp, workdir)


def _train(exp: configs.Experiment, workdir: pathlib.Path) -> None:
  """Runs the training; each way it can refuse or stop has its own exit status."""
  try:
    train.run(exp, workdir, configs.as_dict(exp))
  except DataError as e:  # raised while opening the data, before the workdir exists
    print(f'llmjax: bad data input: {e}', file=sys.stderr)
    sys.exit(2)
  except (runs.RunLocked, checkpoint.CheckpointError) as e:  # refused; nothing was changed
    print(f'llmjax: {e}', file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:  # the non-finite policy halted the run
    print(f'llmjax: halted: {e}', file=sys.stderr)
    sys.exit(3)
  except checkpoint.SaveError as e:  # trained to the end, but a checkpoint is missing
    print(f'llmjax: the run finished, but {e}', file=sys.stderr)
    sys.exit(4)


if __name__ == '__main__':
  app.run(main, flags_parser=configs.flags_parser('llmjax', _OVERRIDES))
