"""Where metrics go: metrics.jsonl (primary), TensorBoard, optional W&B, a progress bar.

Only process 0 writes. Keys are flat: training metrics unprefixed (`loss`,
`grad_norm`, ...), evaluation metrics under `eval/`.
"""

import dataclasses
import json
import math
import os
import pathlib
import sys

import jax
import tqdm


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
  tensorboard: bool = True  # event files in the workdir (tensorboardX, no TensorFlow)
  wandb: bool = False  # Weights & Biases; needs `pip install wandb` and a login
  wandb_project: str = 'llmjax'
  peak_flops_per_device: float = 0.0  # for MFU; 0: datasheet, or measured on CPU
  # 'START,COUNT': a jax.profiler trace of steps START .. START+COUNT-1 (step 1 compiles, so
  # START >= 2 times steady steps) in WORKDIR/profile, for TensorBoard's profile plugin or
  # Perfetto; '' for none
  profile_steps: str = ''


class MetricsWriter:
  """Writes each logged step to every enabled sink."""

  def __init__(self, cfg: MetricsConfig, workdir: pathlib.Path, run_config: dict,
               after_step: int = 0):
    """Appends to the workdir's metrics.jsonl; records past `after_step` (work lost
    after the checkpoint a run resumes from) are dropped first."""
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = self._wandb = None
    if not self.enabled:
      return
    path = workdir / 'metrics.jsonl'
    if path.exists():
      _keep_until(path, after_step)
    self._jsonl = open(path, 'a', encoding='utf-8')
    if cfg.tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(workdir / 'tensorboard'))
      self._write_hparams(run_config)
    if cfg.wandb:
      import wandb  # optional dependency, imported only when asked for
      self._wandb = wandb.init(project=cfg.wandb_project, dir=str(workdir), config=run_config,
                               name=workdir.name)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': step, **{k: _plain(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(record) + '\n')  # one line, flushed as one write
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in record.items():
        if key != 'step' and isinstance(value, float | int) and math.isfinite(value):
          self._tb.add_scalar(key, value, step)
    if self._wandb is not None:
      self._wandb.log(metrics, step=step)

  def _write_hparams(self, run_config: dict) -> None:
    """The config's fields as hparams of this run (TensorBoard's HParams view), beside its
    scalars, so runs compare by any field against their losses."""
    from tensorboardX.summary import hparams
    experiment, session_start, _ = hparams(hparam_values(run_config),
                                           dict.fromkeys(HPARAM_METRICS, 0.0))
    self._tb.file_writer.add_summary(experiment)
    self._tb.file_writer.add_summary(session_start)

  def write_text(self, tag: str, text: str, step: int) -> None:
    """A text record (the end-of-run sample) in TensorBoard and W&B; JSONL holds numbers."""
    if self._tb is not None:
      self._tb.add_text(tag, text, step)
    if self._wandb is not None:
      self._wandb.log({tag: text}, step=step)

  def close(self) -> None:
    for sink in (self._jsonl, self._tb):
      if sink is not None:
        sink.close()
    if self._wandb is not None:
      self._wandb.finish()


# The series the HParams view shows against each run's hyperparameters.
HPARAM_METRICS = ('loss', 'eval/loss', 'eval/bits_per_byte')


def hparam_values(run_config: dict) -> dict[str, str | float | bool]:
  """A resolved config flattened to section.field: value, each a type the hparams plugin
  shows (numbers, strings, booleans; anything else, such as a tuple, as its text)."""
  flat = {}
  for section, fields in run_config.items():
    items = fields.items() if isinstance(fields, dict) else [('', fields)]
    for field, value in items:
      key = f'{section}.{field}' if field else section
      flat[key] = value if isinstance(value, bool | int | float | str) else json.dumps(value, default=str)
  return flat


def read_records(path: pathlib.Path) -> list[dict]:
  """Every complete record of a metrics.jsonl, in order; a line that is not one (the
  last line of a write torn by a kill) is left out."""
  return [r for _, r in _lines(path) if r is not None]


def _lines(path: pathlib.Path) -> list[tuple[str, dict | None]]:
  """(line, its record or None) for each non-blank line."""
  out = []
  for line in path.read_text(encoding='utf-8', errors='replace').splitlines():
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        record = None
      ok = isinstance(record, dict) and isinstance(record.get('step'), int)
      out.append((line, record if ok else None))
  return out


def _keep_until(path: pathlib.Path, after_step: int) -> None:
  """Rewrites metrics.jsonl with its records up to `after_step` (those after it are
  work lost since the checkpoint a run resumes from, and are redone). A line that is
  not a record, such as the last one torn by a kill mid-write, is dropped from it
  and kept in metrics.jsonl.damaged, saying so once. The rewrite replaces the file
  atomically: a kill during it leaves the old file or the new, never half of one."""
  lines = _lines(path)
  damaged = [line for line, record in lines if record is None]
  kept = [line for line, record in lines if record is not None and record['step'] <= after_step]
  if damaged:
    with open(path.with_name(path.name + '.damaged'), 'a', encoding='utf-8') as f:
      f.write(''.join(line + '\n' for line in damaged))
    torn = lines[-1][1] is None and not path.read_bytes().endswith(b'\n')
    what = ('its torn last line (a write cut short)' if torn and len(damaged) == 1 else
            f'{len(damaged)} line(s) that are not records')
    print(f'llmjax: {path}: dropped {what}; every complete record is kept; the dropped '
          f'text is in {path.name}.damaged', file=sys.stderr)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  tmp.write_text(''.join(line + '\n' for line in kept), encoding='utf-8')
  os.replace(tmp, path)


def _plain(value):
  value = float(value) if hasattr(value, 'dtype') or isinstance(value, float) else value
  return value if not isinstance(value, float) or math.isfinite(value) else str(value)


class Progress:
  """A progress bar on stderr: step, loss, tokens/s, MFU, ETA (process 0 only)."""

  def __init__(self, start_step: int, total_steps: int):
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', file=sys.stderr,
                          dynamic_ncols=True, disable=jax.process_index() != 0,
                          mininterval=1.0)

  def update(self, step: int, metrics: dict[str, float]) -> None:
    shown = {'loss': f"{metrics['loss']:.4f}", 'tok/s': f"{metrics['tokens_per_s']:,.0f}",
             'mfu': f"{100 * metrics['mfu']:.1f}%"}
    if 'eval/loss' in metrics:
      shown['eval'] = f"{metrics['eval/loss']:.4f}"
    self._bar.set_postfix(shown, refresh=False)
    self._bar.update(step - self._bar.n)

  def write(self, text: str) -> None:
    if not self._bar.disable:
      self._bar.write(text, file=sys.stderr)

  def close(self) -> None:
    self._bar.close()
