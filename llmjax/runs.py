"""A run folder as one object: its experiment, model, tokenizer, checkpoints and metrics.

A run folder is the --workdir of `python -m llmjax.main` (or a folder made by
`llmjax.convert hf-to-llmjax`): `config.json` (the resolved experiment plus data
fingerprint and info), `metrics.jsonl`, `checkpoints/STEP/{state,data,config}`. Every
reader of a run folder (resume checks, generation, export, sweep tables, analysis)
goes through `RunFolder`, so the folder's format is known in one place. Nothing is
read until asked for.
"""

import functools
import json
import os
import pathlib
import socket
import threading
import time

import jax
import optax
from flax import nnx

from llmjax import checkpoint, configs, metrics, optim
from llmjax.data import synthetic, tokenizers
from llmjax.model import lora
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer
from llmjax.step import TrainState, abstract_model, init_state, placed


def _replicated(shardings) -> jax.sharding.Sharding:
  """One sharding that holds a whole (small) array where `shardings` places parameters."""
  if isinstance(shardings, jax.sharding.Sharding):
    return shardings if shardings.is_fully_replicated else jax.sharding.NamedSharding(
        shardings.mesh, jax.sharding.PartitionSpec())
  first = jax.tree.leaves(shardings)[0]
  return _replicated(first)


def parse_spec(spec: str) -> tuple[pathlib.Path, int | None]:
  """'WORKDIR[:STEP]' -> (folder, step or None for the newest)."""
  path, _, tail = spec.rpartition(':')
  if path and tail.isdigit():
    return pathlib.Path(path), int(tail)
  return pathlib.Path(spec), None


class RunFolder:
  """One run folder. Raises FileNotFoundError naming what is missing."""

  def __init__(self, path):
    self.path = pathlib.Path(path).expanduser().resolve()
    if self.path.name == 'checkpoints' and not (self.path / 'config.json').exists():
      self.path = self.path.parent  # 'RUN/checkpoints' names the run too
    if not self.path.is_dir():
      raise FileNotFoundError(f'{self.path} does not exist; expected a run folder (the '
                              f'--workdir of python -m llmjax.main)')

  def __repr__(self) -> str:
    return f'RunFolder({str(self.path)!r})'

  @property
  def config_file(self) -> pathlib.Path:
    return self.path / 'config.json'

  @property
  def metrics_file(self) -> pathlib.Path:
    return self.path / 'metrics.jsonl'

  @property
  def checkpoint_dir(self) -> pathlib.Path:
    return self.path / 'checkpoints'

  @functools.cached_property
  def config(self) -> dict:
    """config.json as written: `configs.as_dict` of the experiment, plus data
    fingerprint and info (and `imported_from` for a converted folder)."""
    if not self.config_file.is_file():
      raise FileNotFoundError(f'no config.json in {self.path}: it is not a run folder (the '
                              f'--workdir of python -m llmjax.main)')
    try:
      return json.loads(self.config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise FileNotFoundError(f'{self.config_file} is not valid JSON ({e})') from e

  @functools.cached_property
  def experiment(self) -> configs.Experiment:
    return configs.from_dict(self.config)

  @property
  def model_cfg(self) -> ModelConfig:
    return self.experiment.model

  @property
  def imported(self) -> bool:
    """Made by llmjax.convert from a Hugging Face folder (no data iterator to resume)."""
    return 'imported_from' in self.config

  @property
  def data_info(self) -> dict:
    return self.config.get('data_info') or {}

  @functools.cached_property
  def tokenizer(self):
    """The tokenizer the run trained with; a synthetic run's states are its tokens."""
    data = self.experiment.data
    kind, _, spec = data.source.partition(':')
    if kind == 'synthetic':
      return synthetic.SyntheticTokenizer(synthetic.parse_spec(spec).vocab)
    return tokenizers.load(data.tokenizer)

  @property
  def steps(self) -> list[int]:
    """Checkpoint steps on disk now (a run still training gains more)."""
    return sorted(int(p.name) for p in self.checkpoint_dir.glob('[0-9]*') if p.name.isdigit())

  def step_folder(self, step: int | None = None) -> pathlib.Path:
    """The folder of checkpoint `step` (default: the newest); FileNotFoundError if absent."""
    spec = str(self.checkpoint_dir) + ('' if step is None else f':{step}')
    return checkpoint.find_step(spec)

  def step_at(self, step: int | None = None) -> int:
    return int(self.step_folder(step).name)

  def metrics_records(self) -> list[dict]:
    """metrics.jsonl as a list of records, oldest first; a torn last line (a kill
    mid-write) is left out."""
    return metrics.read_records(self.metrics_file) if self.metrics_file.is_file() else []

  @functools.cached_property
  def abstract_model(self) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's structure and parameter shapes; allocates nothing."""
    return abstract_model(self.model_cfg)

  def params(self, step: int | None = None, shardings=None) -> nnx.State:
    """The model weights of checkpoint `step` (default: the newest), placed on `shardings`
    (one sharding for all, or a tree; default: the first device); a LoRA run's adapters
    merged in, so every reader sees the fine-tuned model."""
    folder = self.step_folder(step)
    shardings = shardings or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = checkpoint.restore_params(folder, placed(self.abstract_model[1], shardings))
    cfg = self.experiment.lora
    if not lora.enabled(cfg):
      return params
    adapters = checkpoint.restore_params(
        folder, placed(lora.abstract(self.abstract_model[1], cfg), _replicated(shardings)),
        part='adapters')
    return jax.jit(lambda p, a: lora.merge(p, a, cfg), out_shardings=shardings)(params, adapters)

  def model(self, step: int | None = None, shardings=None) -> Transformer:
    return nnx.merge(self.abstract_model[0], self.params(step, shardings))

  def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
    exp = self.experiment
    return optim.make(exp.optim, exp.model, exp.train.steps)

  def state(self, step: int | None = None, sharding=None) -> TrainState:
    """The whole train state of checkpoint `step` (parameters, optimizer moments, step,
    RNG) on one device; the optimizer is rebuilt from config.json."""
    folder = self.step_folder(step)
    exp = self.experiment
    tx, _ = self.optimizer()
    abstract = jax.eval_shape(functools.partial(init_state, exp.model, tx,
                                                exp.train.seed, exp.lora))
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return checkpoint.restore_state(folder, placed(abstract, sharding))


class RunLocked(RuntimeError):
  """Another live process is writing the run folder."""


class RunLock:
  """An exclusive lock on a run folder while one process writes it.

  `WORKDIR/.lock` is created atomically and names its holder (host, pid, start time);
  the holder touches it every HEARTBEAT_S seconds. A lock is stale, and taken over, when
  its holder was on this host and no longer lives, or (from any host: a job requeued on
  another node) when it has not been touched for STALE_S seconds.
  """

  HEARTBEAT_S = 30.0
  STALE_S = 300.0

  def __init__(self, folder):
    self.path = pathlib.Path(folder) / '.lock'
    self.held = False
    self._stop = threading.Event()

  def __enter__(self) -> 'RunLock':
    for _ in range(2):  # a stale lock is removed once, then creation is tried again
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if not self._stale(holder):
          raise RunLocked(
              f'{self.path.parent} is in use by process {holder.get("pid")} on '
              f'{holder.get("host")} since {holder.get("since")}; wait for it to finish, or '
              f'delete {self.path} if that process is gone') from None
        self.path.unlink(missing_ok=True)
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump({'host': socket.gethostname(), 'pid': os.getpid(),
                   'since': time.strftime('%Y-%m-%dT%H:%M:%S%z')}, f)
      self.held = True
      threading.Thread(target=self._heartbeat, daemon=True).start()
      return self
    raise RunLocked(f'{self.path} could not be taken (another process took it first)')

  def __exit__(self, *exc) -> None:
    if self.held:
      self._stop.set()
      self.path.unlink(missing_ok=True)
      self.held = False

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        return  # removed by hand: the next writer's check will say so

  def _holder(self) -> dict:
    try:
      return json.loads(self.path.read_text())
    except (OSError, json.JSONDecodeError):
      return {}  # being written this instant, or torn: treated as held

  def _stale(self, holder: dict) -> bool:
    try:
      if time.time() - self.path.stat().st_mtime > self.STALE_S:
        return True
    except FileNotFoundError:
      return True  # released meanwhile
    if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
      return False
    try:
      os.kill(holder['pid'], 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      return False  # alive, another user's
    return False
