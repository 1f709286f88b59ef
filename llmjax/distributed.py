"""Multi-process runtime: joining the other processes, who prints, who feeds which rows.

Every host (a TPU VM worker, a SLURM task, a Kubernetes pod, or one of several
processes on this machine under launch/local.sh) runs the same program.
`initialize` connects them before JAX touches a device. The process group comes
from the first of:
  1. explicit arguments (main.py's --coordinator_address, --num_processes, --process_id),
  2. the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
  3. a detected cluster: a SLURM step of several tasks, an Open MPI job, or a
     Cloud TPU VM (JAX reads the topology from the scheduler or the TPU metadata),
  4. nothing: one process.
Once connected, a process that stops sending heartbeats for `heartbeat_timeout_s`
(it crashed, or its host died) makes the others abort instead of hanging in a
collective.
"""

import contextlib
import glob
import importlib.util
import os
import socket
import sys

import jax
from jax.sharding import NamedSharding

ENV_VARS = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
            'num_processes': 'JAX_NUM_PROCESSES', 'process_id': 'JAX_PROCESS_ID'}


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
               initialization_timeout_s: int = 300, heartbeat_timeout_s: int = 100) -> str:
  """Joins the other processes of this run, if it has others; call before any JAX work.

  Args:
    coordinator_address: host:port of process 0 ('' : from the environment).
    num_processes: processes in the run (0: from the environment).
    process_id: this process's index in 0 .. num_processes - 1 (-1: from the environment).
    initialization_timeout_s: how long to wait for all processes to connect.
    heartbeat_timeout_s: after this long without a heartbeat a process counts as dead.

  Returns:
    How the process group was found: 'single process', 'explicit', 'slurm',
    'open mpi', 'cloud tpu' or 'already initialized'.
  """
  if jax.distributed.is_initialized():
    return 'already initialized'
  given = {'coordinator_address': coordinator_address or None,
           'num_processes': num_processes or None,
           'process_id': process_id if process_id >= 0 else None}
  for name, var in ENV_VARS.items():
    if given[name] is None and os.environ.get(var):
      given[name] = os.environ[var]
  timeouts = {'initialization_timeout': initialization_timeout_s,
              'heartbeat_timeout_seconds': heartbeat_timeout_s}
  if any(v is not None for v in given.values()):
    address, count, index = _check_explicit(**given)
    if count == 1:
      return 'single process'
    # Said first because a failed connection aborts the process from C++.
    print(f'llmjax: process {index} of {count} joining through {address} (waiting up to '
          f'{initialization_timeout_s} s for the others)', file=sys.stderr, flush=True)
    jax.distributed.initialize(address, count, index, **timeouts)
    return 'explicit'
  cluster = detect_cluster()
  if cluster is None:
    return 'single process'
  jax.distributed.initialize(**timeouts)  # JAX reads the cluster's own description
  return cluster


def _check_explicit(coordinator_address, num_processes, process_id) -> tuple[str, int, int]:
  missing = [f'--{name} ({ENV_VARS[name]})' for name, value in
             (('coordinator_address', coordinator_address), ('num_processes', num_processes),
              ('process_id', process_id)) if value is None]
  if missing:
    raise ValueError(f'a multi-process run needs --coordinator_address, --num_processes and '
                     f'--process_id (or their environment variables); missing: '
                     f'{", ".join(missing)}')
  try:
    count, index = int(num_processes), int(process_id)
  except ValueError:
    raise ValueError(f'num_processes={num_processes!r} and process_id={process_id!r} must be '
                     f'integers') from None
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'process_id={index} must be in 0 .. num_processes - 1 = {count - 1}')
  if ':' not in coordinator_address:
    raise ValueError(f'coordinator_address={coordinator_address!r} must be host:port')
  return coordinator_address, count, index


def detect_cluster() -> str | None:
  """The kind of multi-process cluster this process runs in, from its environment only
  (no network queries): 'slurm', 'open mpi', 'cloud tpu', or None."""
  env = os.environ
  # srun sets SLURM_STEP_NODELIST inside a job step; a step of one task is one process.
  if 'SLURM_STEP_NODELIST' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'open mpi'
  # A TPU VM has the TPU runtime installed and TPU chips attached; JAX then asks
  # the VM's metadata (or GKE's TPU_WORKER_HOSTNAMES) for the slice's workers.
  chips = glob.glob('/dev/accel[0-9]*') or glob.glob('/dev/vfio/[0-9]*')
  if chips and importlib.util.find_spec('libtpu') is not None:
    return 'cloud tpu'
  return None


def device_report() -> str:
  """One line: this process, its host and its devices."""
  local = jax.local_devices()
  ids = ','.join(str(d.id) for d in local)
  return (f'llmjax: process {jax.process_index()} of {jax.process_count()} on '
          f'{socket.gethostname()}: {len(local)} of {jax.device_count()} devices '
          f'({local[0].device_kind}; ids {ids})')


@contextlib.contextmanager
def stdout_from_process_zero():
  """Discards the standard output of processes other than 0 (their stderr, with
  warnings and errors, stays), so a multi-host run logs like a single-host one.
  Also usable as a decorator."""
  if jax.process_index() == 0:
    yield
    return
  with open(os.devnull, 'w', encoding='utf-8') as sink, contextlib.redirect_stdout(sink):
    yield


def batch_slice(batch_sharding: NamedSharding, global_batch_size: int) -> tuple[int, int]:
  """(index, count): this process feeds slice `index` of `count` equal, consecutive
  slices of every global batch, the rows its devices hold under `batch_sharding`.

  Processes whose devices hold the same rows (a batch replicated across hosts,
  as with tensor parallelism over hosts) get the same slice.
  """
  blocks: dict[int, set[tuple[int, int]]] = {}
  for device, index in batch_sharding.devices_indices_map((global_batch_size, 1)).items():
    start, stop, _ = index[0].indices(global_batch_size)
    blocks.setdefault(device.process_index, set()).add((start, stop))
  spans = {}
  for process, rows in blocks.items():
    rows = sorted(rows)
    if any(a[1] != b[0] for a, b in zip(rows, rows[1:])):
      raise ValueError(f'process {process} holds non-consecutive rows {rows} of the batch; '
                       f'order the mesh so that each process holds one block of rows')
    spans[process] = (rows[0][0], rows[-1][1])
  distinct = sorted(set(spans.values()))
  size = global_batch_size // len(distinct)
  if distinct != [(i * size, (i + 1) * size) for i in range(len(distinct))]:
    raise ValueError(f'the processes hold overlapping or unequal rows of the batch: '
                     f'{dict(sorted(spans.items()))}')
  return distinct.index(spans[jax.process_index()]), len(distinct)
