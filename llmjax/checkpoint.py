"""Checkpoints with orbax: what to save, when, what to keep, and how to resume.

A checkpoint step holds three items: `state` (parameters, optimizer state, step,
RNG: arrays only, restored straight into the target mesh's shardings), `data`
(the grain iterator state and the exact token counters, JSON) and `config`
(the resolved experiment, JSON). Nothing is pickled, so loading runs no code.

Saves are asynchronous: the step loop continues while orbax writes, and orbax
finalizes a step atomically (a half-written step is never listed and is
removed). As soon as orbax has finalized a save, the SHA-256 of each of its
files is recorded in `WORKDIR/checkpoint_checksums/`. Restore tries the newest
step first and falls back to older ones if its files no longer match their
hashes, it cannot be read, or it holds non-finite values; the unusable ones are
moved aside, never deleted, and a run whose checkpoints are all unusable is
refused rather than started over.
"""

import dataclasses
import hashlib
import json
import pathlib
import shutil
import sys
import threading
import time
import typing

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
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


class CheckpointError(RuntimeError):
  """A run folder has checkpoints, and none of them can be restored into this run."""


class SaveError(RuntimeError):
  """A checkpoint could not be written; the run went on, and says so at its end."""


class Checkpointer:
  """One orbax CheckpointManager for a workdir, with llmjax's save and keep policy.

  A failed write (full disk, permissions), also one that orbax reports later from its
  background thread, is recorded in `failed_saves` and training goes on: the state in
  memory is intact and earlier checkpoints are untouched. The loop raises SaveError at
  the end of the run if any save failed.
  """

  def __init__(self, workdir: pathlib.Path, cfg: CheckpointConfig, total_steps: int):
    self.cfg = cfg
    self.workdir = pathlib.Path(workdir).resolve()
    self.directory = self.workdir / 'checkpoints'
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
    self._checksums = self.workdir / 'checkpoint_checksums'
    self._unrecorded: list[int] = []  # saved steps whose files are not hashed yet
    self._lock = threading.Lock()  # _unrecorded is shared with the hashing thread
    self._in_flight: int | None = None  # the step orbax may still be writing
    self.failed_saves: list[str] = []
    self._last_save_time = time.monotonic()
    self._stop = threading.Event()
    if cfg.checksums and jax.process_index() == 0:
      # Hashes each save as soon as orbax has finalized it (renamed its folder into
      # place), so a crash right after a save leaves it verifiable.
      threading.Thread(target=self._hash_finalized, daemon=True).start()

  def _hash_finalized(self) -> None:
    while not self._stop.wait(0.2):
      self._record_checksums()

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
    """Starts an asynchronous save; returns the seconds the caller was blocked."""
    start = time.perf_counter()
    self._surface_background_error()
    self._forget_deleted()
    try:
      with self._lock:
        self._unrecorded.append(step)
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          config=ocp.args.JsonSave(config)), force=True)
      self._in_flight = step
    except Exception as e:  # noqa: BLE001 - any write error must not kill the run
      with self._lock:
        self._unrecorded.remove(step)
      self._failed(step, e)
    self._last_save_time = time.monotonic()
    return time.perf_counter() - start

  def _failed(self, step: int | None, error: Exception) -> None:
    if any(repr(error) in seen for seen in self.failed_saves):
      return  # orbax raises a background error again at each later wait
    message = f'checkpoint save at step {step} to {self.directory} failed: {error!r}'
    self.failed_saves.append(message)
    print(f'llmjax: {message}; training goes on, older checkpoints are kept', file=sys.stderr)

  def _surface_background_error(self) -> None:
    """Records an error orbax's thread hit while writing the previous save."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # noqa: BLE001
      self._failed(self._in_flight, e)

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: JAX's preemption sync point, so all processes save the same step."""
    return jax.process_count() > 1 and self.manager.reached_preemption(step)

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - the background write failed
      self._failed(self._in_flight, e)
    self._in_flight = None
    self._record_checksums()
    self._forget_deleted()

  def close(self) -> None:
    self.wait()
    self._stop.set()
    try:
      self.manager.close()
    except Exception as e:  # noqa: BLE001
      self._failed(None, e)

  def _record_checksums(self) -> None:
    """Hashes the files of finalized saves (on the hashing thread, and at wait())."""
    if not self.cfg.checksums or jax.process_index() != 0:
      return
    with self._lock:
      for step in list(self._unrecorded):
        if (self.directory / str(step)).is_dir():  # finalized: orbax renamed it in place
          self._checksums.mkdir(exist_ok=True)
          record = self._checksums / f'{step}.json'
          record.write_text(json.dumps(_file_hashes(self.directory / str(step)), indent=1))
          self._unrecorded.remove(step)

  def _forget_deleted(self) -> None:
    """Drops the hashes of steps the keep policy has deleted."""
    if jax.process_index() != 0 or not self._checksums.is_dir():
      return
    kept = {p.name for p in self.directory.glob('[0-9]*') if p.name.isdigit()}
    with self._lock:
      for record in self._checksums.glob('*.json'):
        if record.stem not in kept and int(record.stem) not in self._unrecorded:
          record.unlink()

  def _verify(self, step: int) -> bool:
    """Raises if the step's files differ from their record; False if it has none."""
    record = self._checksums / f'{step}.json'
    if not (self.cfg.checksums and record.exists()):
      return False
    if json.loads(record.read_text()) != _file_hashes(self.directory / str(step)):
      raise ValueError('its files differ from the SHA-256 recorded when it was saved')
    return True

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state) -> Restored | None:
    """The newest readable, finite checkpoint, or None if there is none at all.

    `abstract_state` gives shapes, dtypes and target shardings: a checkpoint written on
    any mesh is restored directly into this run's layout. Newer checkpoints that could
    not be used are moved aside to WORKDIR/unusable_checkpoints/ (not deleted), so the
    steps after them can be saved again. If none can be used, CheckpointError: nothing
    is moved, and the run does not start over.
    """
    failures = []
    for step in reversed(self.steps()):
      try:
        verified = self._verify(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        if not _all_finite(restored['state']):
          raise ValueError('it holds non-finite values')
      except Exception as e:  # noqa: BLE001 - any unreadable step: fall back to an older one
        reason = f'{type(e).__name__}: {str(e)[:300]}'
        failures.append((step, reason))
        print(f'llmjax: WARNING: checkpoint {self.directory / str(step)} is unusable '
              f'({reason}); trying an older one', file=sys.stderr)
        continue
      self._set_aside(failures)
      if not verified:
        print(f'llmjax: checkpoint {step} has no checksum record (the run stopped before its '
              f'files were hashed): restored unverified', file=sys.stderr)
      return Restored(step, restored['state'], restored['data'], self.directory / str(step))
    if failures:
      listed = '; '.join(f'step {s}: {r}' for s, r in failures)
      raise CheckpointError(
          f'none of the checkpoints in {self.directory} can be restored into this run '
          f'({listed}). Nothing was changed. If the run\'s model or optimizer changed, train '
          f'in a new --workdir (init_from can start from these parameters)')
    return None

  def _set_aside(self, failures: list[tuple[int, str]]) -> None:
    """Moves unusable checkpoints to WORKDIR/unusable_checkpoints/STEP, with the reason."""
    if not failures:
      return
    if jax.process_index() == 0:
      aside = self.workdir / 'unusable_checkpoints'
      aside.mkdir(exist_ok=True)
      for step, reason in failures:
        target = aside / str(step)
        suffix = 1
        while target.exists():
          target, suffix = aside / f'{step}-{suffix}', suffix + 1
        shutil.move(self.directory / str(step), target)
        (aside / f'{target.name}.reason.txt').write_text(reason + '\n')
        (self._checksums / f'{step}.json').unlink(missing_ok=True)
        print(f'llmjax: moved unusable checkpoint {step} to {target}', file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('llmjax_checkpoints_set_aside')
    self.manager.reload()


def restore_params(step_folder: pathlib.Path, params_target, part: str = 'params'):
  """The parameters of the checkpoint in `step_folder` (or another part of its state, such
  as LoRA's 'adapters'), placed as `params_target` says (shapes, dtypes, shardings). Only
  that part is read, so the optimizer of the run that wrote them may differ from the
  reader's."""
  item = {part: params_target}
  restored = ocp.PyTreeCheckpointer().restore(
      pathlib.Path(step_folder) / 'state', args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  return restored[part]


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

