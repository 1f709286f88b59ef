"""Where a result came from: the code's commit, the library versions, the devices.

One function for every writer of such records: a plain run's `provenance.json` (train.py)
and a sweep trial's `trial.json` (scaling/runner.py). It lives outside `config.json` on
purpose: `resume.py` compares config.json field by field, and a rerun on another commit or
machine is the same run, not a changed one.
"""

import datetime
import importlib.metadata
import json
import pathlib
import subprocess

import jax

from llmjax import flops
from llmjax.model.config import ModelConfig

FILE = 'provenance.json'
# The distributions a result depends on, by their package-index names.
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'grain')


def git_commit() -> str:
  """Commit of the llmjax checkout, with '+dirty' for uncommitted changes; '' if not git."""
  root = pathlib.Path(__file__).resolve().parents[1]
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                            text=True, check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''
  return commit + ('+dirty' if dirty else '')


def versions() -> dict[str, str]:
  """{distribution: version} of PACKAGES ('' for one not installed)."""
  found = {}
  for name in PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = ''
  return found


def environment() -> dict:
  """The code and machine: git commit, versions, devices (what every record shares)."""
  devices = jax.devices()
  return {
      'git_commit': git_commit(),
      'versions': versions(),
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'platform': devices[0].platform,
      'process_count': jax.process_count(),
  }


def run_record(model: ModelConfig, peak_flops: float, peak_source: str,
               start_step: int) -> dict:
  """A run start's provenance: the environment, parameter counts and the peak FLOP/s per
  device that MFU divides by (with where it came from: config, datasheet or measured)."""
  return {
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'start_step': start_step,
      **environment(),
      'param_counts': flops.param_counts(model),
      'peak_flops_per_device': peak_flops,
      'peak_flops_source': peak_source,
  }


def write(workdir: pathlib.Path, record: dict) -> None:
  """Writes `record` as the folder's provenance.json; the records of earlier starts (a
  resumed run may continue on another commit or machine) stay in its `earlier` list."""
  path = workdir / FILE
  earlier = []
  if path.exists():
    try:
      previous = json.loads(path.read_text())
      earlier = previous.pop('earlier', []) + [previous]
    except (json.JSONDecodeError, AttributeError):
      earlier = []  # a damaged record is not worth refusing a run over
  tmp = path.with_name(f'.{FILE}.tmp')
  tmp.write_text(json.dumps({**record, 'earlier': earlier}, indent=2) + '\n')
  tmp.replace(path)
