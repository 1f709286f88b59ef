"""Checkpoints with orbax: what to save, when, what to keep, and how to resume.

A checkpoint step holds three items: `state` (parameters, optimizer state, step,
RNG: arrays only, restored straight into the target mesh's shardings), `data`
(the grain iterator state and the exact token counters, JSON) and `config`
(the resolved experiment, JSON). Nothing is pickled, so loading runs no code.

Saves are asynchronous: the step loop continues while orbax writes, and orbax
finalizes a step atomically (a half-written step is never listed and is
removed). Once a save has finished, the SHA-256 of each of its files is
recorded in `WORKDIR/checkpoint_checksums/`. Restore tries the newest step
first and falls back to older ones if its files no longer match their hashes,
it cannot be read, or it holds non-finite values.
"""

import dataclasses
import hashlib
import json
import pathlib
import sys
import time
import typing

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers



@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every_steps: int = 0  # save every N steps; 0: only by time, at the end and on preemption
  every_minutes: float = 0.0  # also save when this long has passed since the last save
  keep_last: int = 3  # newest checkpoints kept
  keep_log_spaced: bool = True  # also keep steps 1, 2, 4, 8, ... forever (Pythia style)
  keep_every: int = 0  # also keep every M-th step forever; 0: none
  checksums: bool = True  # record each finished step's SHA-256s; verify them on restore


class Restored(typing.NamedTuple):
  step: int
  state: typing.Any  # the TrainState, in the target's shardings
  data: dict  # {'iterator': grain iterator state, 'counts': token counters}
  folder: pathlib.Path


def log_spaced_steps(up_to: int) -> list[int]:
  steps, s = [], 1
  while s <= up_to:
    steps.append(s)
    s *= 2
  return steps


class Checkpointer:
  """One orbax CheckpointManager for a workdir, with llmjax's save and keep policy."""

  def __init__(self, workdir: pathlib.Path, cfg: CheckpointConfig, total_steps: int):
    self.cfg = cfg
    self.directory = pathlib.Path(workdir).resolve() / 'checkpoints'
    keep = [checkpoint_managers.LatestN(cfg.keep_last)]
    if cfg.keep_log_spaced:
      keep.append(checkpoint_managers.CustomSteps(log_spaced_steps(total_steps)))
    if cfg.keep_every > 0:
      keep.append(checkpoint_managers.EveryNSteps(cfg.keep_every))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(keep),
        enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'data', 'config'))
    self._checksums = pathlib.Path(workdir).resolve() / 'checkpoint_checksums'
    self._unrecorded: list[int] = []  # saved steps whose files are not hashed yet
    self._last_save_time = time.monotonic()

  def due(self, step: int, total_steps: int) -> bool:
    """Whether the policy asks for a save after `step`."""
    if step == total_steps:
      return True
    if self.cfg.every_steps and step % self.cfg.every_steps == 0:
      return True
    if self.cfg.keep_log_spaced and step in log_spaced_steps(total_steps):
      return True
    if self.cfg.keep_every and step % self.cfg.keep_every == 0:
      return True
    minutes = (time.monotonic() - self._last_save_time) / 60
    return bool(self.cfg.every_minutes) and minutes >= self.cfg.every_minutes

  def save(self, step: int, state, data_state: dict, config: dict) -> float:
    """Starts an asynchronous save; returns the seconds the caller was blocked.

    A failed write (full disk, permissions) is reported and training goes on:
    the state in memory is intact and earlier checkpoints are untouched.
    """
    start = time.perf_counter()
    self._record_checksums()  # of the previous save, which orbax has finished by now
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          config=ocp.args.JsonSave(config)), force=True)
      self._unrecorded.append(step)
    except Exception as e:  # noqa: BLE001 - any write error must not kill the run
      print(f'llmjax: checkpoint save at step {step} to {self.directory} failed: {e!r}',
            file=sys.stderr)
    self._last_save_time = time.monotonic()
    return time.perf_counter() - start

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: JAX's preemption sync point, so all processes save the same step."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self._record_checksums()  # the save just finished: hash it now

  def close(self) -> None:
    self.wait()
    self.manager.close()

  def _record_checksums(self) -> None:
    """Hashes the files of finished saves (orbax writes them in the background, so
    this waits for it) and forgets the hashes of steps the keep policy deleted."""
    if not self.cfg.checksums or jax.process_index() != 0 or not self._unrecorded:
      return
    self.manager.wait_until_finished()
    self._checksums.mkdir(exist_ok=True)
    for step in self._unrecorded:
      if (self.directory / str(step)).is_dir():
        record = self._checksums / f'{step}.json'
        record.write_text(json.dumps(_file_hashes(self.directory / str(step)), indent=1))
    self._unrecorded.clear()
    kept = {str(s) for s in self.manager.all_steps()}
    for record in self._checksums.glob('*.json'):
      if record.stem not in kept:
        record.unlink()

  def _verify(self, step: int) -> None:
    record = self._checksums / f'{step}.json'
    if self.cfg.checksums and record.exists():
      if json.loads(record.read_text()) != _file_hashes(self.directory / str(step)):
        raise ValueError('its files differ from the SHA-256 recorded when it was saved')

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state) -> Restored | None:
    """The newest readable, finite checkpoint, or None.

    `abstract_state` gives shapes, dtypes and target shardings: a checkpoint
    written on any mesh is restored directly into this run's layout.
    """
    for step in reversed(self.steps()):
      try:
        self._verify(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        if not _all_finite(restored['state']):
          raise ValueError('it holds non-finite values')
        return Restored(step, restored['state'], restored['data'], self.directory / str(step))
      except Exception as e:  # noqa: BLE001 - any unreadable step: fall back to an older one
        print(f'llmjax: WARNING: checkpoint {self.directory / str(step)} is unusable '
              f'({type(e).__name__}: {str(e)[:300]}); trying an older one', file=sys.stderr)
    return None


def restore_params(step_folder: pathlib.Path, params_target):
  """The parameters of the checkpoint in `step_folder`, placed as `params_target` says
  (shapes, dtypes, shardings). Only parameters are read, so the optimizer of the run
  that wrote them may differ from the reader's."""
  item = {'params': params_target}
  restored = ocp.PyTreeCheckpointer().restore(
      pathlib.Path(step_folder) / 'state', args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  return restored['params']


def restore_state(step_folder: pathlib.Path, state_target):
  """The whole train state of the checkpoint in `step_folder`, placed as `state_target`."""
  return ocp.StandardCheckpointer().restore(pathlib.Path(step_folder) / 'state', state_target)


def find_step(spec: str) -> pathlib.Path:
  """The checkpoint step folder named by 'WORKDIR[:STEP]'; errors say what is there."""
  path, _, step = spec.rpartition(':') if spec.rpartition(':')[2].isdigit() else (spec, '', '')
  folder = pathlib.Path(path).expanduser().resolve()
  folder = folder / 'checkpoints' if (folder / 'checkpoints').is_dir() else folder
  steps = sorted(int(p.name) for p in folder.glob('[0-9]*') if p.name.isdigit())
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {folder}')
  chosen = int(step) if step else steps[-1]
  if chosen not in steps:
    raise FileNotFoundError(f'{folder} has no step {chosen}; it has {steps}')
  return folder / str(chosen)


def _file_hashes(folder: pathlib.Path) -> dict[str, str]:
  return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def _all_finite(tree) -> bool:
  leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype, np.floating)]
  return all(bool(jax.numpy.isfinite(x).all()) for x in leaves)

