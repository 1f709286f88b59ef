"""The training loop: next batch, step, log, evaluate, save; and the sample at the end.

The pure step lives in `step.py`; this module owns what happens around it, each
part an object with its own state: `DataCursor` (the training iterator and exact
token counters), `StepLogger` (deferred metric fetch and throughput), `NonFiniteGuard`
(the non-finite policy), `Evaluator` (held-out loss: the run's split and each of
`eval.domains`) and `checkpoint.Checkpointer`.
The host never waits for the device except to fetch metrics one step late.
"""

import contextlib
import dataclasses
import math
import pathlib
import signal
import sys
import threading
import time
import typing

import jax
import numpy as np
from flax import nnx

from llmjax import (checkpoint, distributed, flops, generate, metrics, optim, profiler,
                    provenance, resume, runs, sharding, warmstart)
from llmjax.data import domains, pipeline
from llmjax.data.sources import Corpus, DataError
from llmjax.eval import in_training
from llmjax.finetune import report as finetune_report
from llmjax.finetune import task as finetune_task
from llmjax.model import lora
from llmjax.step import (TrainConfig, TrainState, abstract_state, device_batch, init_state,
                         jit_eval_step, jit_train_step, model_params)

if typing.TYPE_CHECKING:
  from llmjax.configs import Experiment


class DataCursor:
  """This process's training batches and the global token counters: its `position`
  is what a checkpoint stores to resume the data exactly."""

  def __init__(self, data: Corpus, cfg: pipeline.DataConfig, rows: tuple[int, int]):
    self.batches = iter(pipeline.train_dataset(data, cfg, *rows))
    self.counts = {'tokens_seen': 0, 'unique_tokens_seen': 0, 'epoch': 0}  # exact, global

  def next(self) -> dict:
    item = next(self.batches)
    self.counts['tokens_seen'] += item['stats']['tokens']
    self.counts['unique_tokens_seen'] += item['stats']['unique_tokens']
    self.counts['epoch'] = item['stats']['epoch']
    return item

  def position(self) -> dict:
    return {'iterator': self.batches.get_state(), 'counts': dict(self.counts)}

  def restore(self, position: dict) -> None:
    pipeline.restore_state(self.batches, position['iterator'])
    self.counts = dict(position['counts'])


class Throughput:
  """Tokens/s of training steps between two fetches of metrics (each fetch waits for its
  step; evaluations and saves in between are not counted), and goodput: tokens per
  wall-clock second since the first step compiled, everything included."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.start(0)

  def start(self, step: int) -> None:
    """The first step has compiled: goodput counts from here."""
    self.reset(step)
    self.start_step, self.start_time = step, self.time

  def goodput(self, step: int) -> float:
    elapsed = max(time.perf_counter() - self.start_time, 1e-9)
    return (step - self.start_step) * self.tokens_per_step / elapsed

  def reset(self, step: int) -> None:
    self.step, self.time = step, time.perf_counter()

  def measure(self, step: int) -> tuple[float, float]:
    """(tokens/s, seconds per step) since the last reset, then resets."""
    now = time.perf_counter()
    steps = max(step - self.step, 1)
    step_time = (now - self.time) / steps
    self.reset(step)
    return self.tokens_per_step / step_time, step_time


class StepLogger:
  """Writes training metrics one step late, so fetching them never stalls the device,
  and evaluation and checkpoint records as they come; `last` holds the newest values."""

  def __init__(self, exp: 'Experiment', workdir: pathlib.Path, resolved_config: dict,
               start_step: int, lr_schedule, target_len: int | None = None):
    """target_len: tokens per row the loss counts (default seq_len; an encoder-decoder's
    decoder rows are shorter), what tokens/s and the FLOPs per token are counted in."""
    target_len = target_len or exp.data.seq_len
    self.lr_schedule = lr_schedule
    self.flops_per_token = flops.flops_per_token(exp.model, exp.data.seq_len, target_len)
    self.peak, peak_source = flops.peak_flops_per_device(exp.metrics.peak_flops_per_device,
                                                         exp.model.dtype)
    self.peak_source = peak_source  # for provenance.json
    self.throughput = Throughput(exp.data.global_batch_size * target_len)
    self.writer = metrics.MetricsWriter(exp.metrics, workdir, resolved_config,
                                        after_step=start_step)
    self.progress = metrics.Progress(start_step, exp.train.steps)
    self.pending = None  # (step, metrics still on device, data counts)
    self.last: dict[str, float] = {}
    self.progress.write(
        f'llmjax: {flops.param_counts(exp.model)["total"]:,} parameters, '
        f'{self.flops_per_token / 1e6:.2f} MFLOPs/token, peak {self.peak / 1e9:.0f} GFLOP/s '
        f'per device ({peak_source}), {jax.device_count()} device(s), '
        f'data {resolved_config["data_fingerprint"]}')

  def defer(self, step: int, device_metrics: dict, counts: dict) -> None:
    """Keeps this step's metrics pending; the loop flushes them after dispatching the
    next step, when they are ready and the device is busy again."""
    self.flush()
    self.pending = (step, device_metrics, dict(counts))

  def flush(self) -> None:
    """Writes the pending step's metrics (waiting for that step if needed)."""
    if self.pending is None:
      return
    step, device_metrics, counts = self.pending
    self.pending = None
    values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    goodput = self.throughput.goodput(step)
    tokens_per_s, step_time = self.throughput.measure(step)
    values.update({
        'lr': float(self.lr_schedule(step - 1)),
        **counts,
        'tokens_per_s': tokens_per_s,
        'step_time_s': step_time,
        'goodput_tokens_per_s': goodput,
        'flops_per_token': self.flops_per_token,
        'mfu': flops.mfu(tokens_per_s, self.flops_per_token, self.peak * jax.device_count()),
        'peak_flops_per_device': self.peak,
    })
    self.write(step, values)

  def write(self, step: int, values: dict[str, float], paused: bool = False) -> None:
    """Writes a record; `paused`: the loop was busy with something other than training
    steps (an evaluation, a save), which throughput must not count."""
    self.writer.write(step, values)
    self.last.update(values)
    if 'loss' in self.last:
      self.progress.update(step, self.last)
    if paused:
      self.throughput.reset(step)

  def close(self) -> None:
    self.progress.close()
    self.writer.close()


class NonFiniteGuard:
  """Checks the losses of steps since the last check, on the host, per train.nonfinite."""

  def __init__(self, cfg: TrainConfig):
    self.cfg = cfg
    self.unchecked = []  # (step, loss, consecutive skips) still on device

  def add(self, step: int, step_metrics: dict) -> None:
    self.unchecked.append((step, step_metrics['loss'],
                           step_metrics['consecutive_skipped_steps']))

  def check(self) -> None:
    for step, loss, consecutive in jax.device_get(self.unchecked):
      if math.isfinite(float(loss)):
        continue
      if self.cfg.nonfinite == 'halt':
        raise FloatingPointError(f'non-finite training loss {float(loss)} at step {step}; '
                                 f'nothing after the last good checkpoint was saved')
      if consecutive >= self.cfg.max_consecutive_skips:
        raise FloatingPointError(f'{int(consecutive)} non-finite steps in a row, the last at '
                                 f'step {step}; halting')
    self.unchecked.clear()


class Evaluator:
  """Held-out loss in nats per token, bits per byte of the predicted text, and top-1
  accuracy of the predicted tokens (for mlm: masked-token accuracy).

  Bytes are the UTF-8 length of each predicted token (pipeline stats), so bits
  per byte compares across tokenizers.
  """

  def __init__(self, eval_fn, batches: list[dict], batch_sharding, prefix: str = 'eval'):
    self.eval_fn, self.batches, self.batch_sharding = eval_fn, batches, batch_sharding
    self.prefix = prefix  # 'eval' for the run's own split, 'eval/NAME' for a domain

  def __call__(self, params, max_batches: int = -1) -> dict[str, float]:
    batches = self.batches if max_batches < 0 else self.batches[:max_batches]
    sums = {'nll': 0.0, 'weight': 0.0, 'correct': 0.0}
    for item in batches:
      out = self.eval_fn(params, device_batch(item['batch'], self.batch_sharding))
      # At most two batches in flight, as in training: with the whole split queued
      # at once, multi-process CPU collectives (gloo) deadlock.
      jax.block_until_ready(sums['nll'])
      sums = {key: total + out[key] for key, total in sums.items()}  # on device until the end
    nll, weight = float(sums['nll']), max(float(sums['weight']), 1.0)
    num_bytes = max(sum(item['stats']['bytes'] for item in batches), 1)
    return {f'{self.prefix}/loss': nll / weight,
            f'{self.prefix}/bits_per_byte': nll / math.log(2) / num_bytes,
            f'{self.prefix}/accuracy': float(sums['correct']) / weight}


class Preemption:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step.

  Single-process only: with several processes, JAX's own SIGTERM handler chooses
  one step at which all of them save (`Checkpointer.reached_preemption`); a flag
  per process could stop them at different steps, and one would wait forever.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    print(f'llmjax: received {signal.Signals(signum).name}; saving after this step',
          file=sys.stderr)

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@dataclasses.dataclass
class Loop:
  """What the loop works with; `state` is replaced by every step."""
  exp: 'Experiment'
  workdir: pathlib.Path
  resolved_config: dict
  state: TrainState
  step_fn: typing.Callable
  batch_sharding: jax.sharding.Sharding
  cursor: DataCursor
  logger: StepLogger
  guard: NonFiniteGuard
  evaluate: Evaluator
  ckpt: checkpoint.Checkpointer
  domain_evaluators: tuple[Evaluator, ...] = ()  # eval.domains, each under eval/NAME/
  tasks: in_training.TaskEvaluator | None = None  # eval.tasks, under task/NAME/
  finetune: finetune_task.FinetuneTask | None = None  # finetune.task: lm, sft or classify
  finetune_metrics: typing.Callable | None = None  # classify: eval/acc, eval/f1_macro
  trace: profiler.StepProfiler = dataclasses.field(  # metrics.profile_steps
      default_factory=lambda: profiler.StepProfiler('', pathlib.Path()))
  # The state's model weights: its parameters, or under LoRA the adapters merged in.
  weights: typing.Callable[[TrainState], typing.Any] = lambda state: state.params

  def evaluate_all(self, max_batches: int) -> dict[str, float]:
    params = self.weights(self.state)
    values = self.evaluate(params, max_batches)
    for evaluate in self.domain_evaluators:
      values.update(evaluate(params, max_batches))
    if self.finetune_metrics is not None:
      values.update(self.finetune_metrics(params))
    return values


@distributed.stdout_from_process_zero()
def run(exp: 'Experiment', workdir: pathlib.Path, resolved_config: dict) -> dict[str, float]:
  """Trains `exp` in `workdir`, resuming from its newest usable checkpoint; returns the
  last metrics. Every process of a multi-host run calls this; process 0 holds the
  folder's lock while it runs. Raises checkpoint.SaveError at the end if a save failed."""
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor,
                            dcn_data=exp.mesh.dcn_data)
  task = finetune_task.make(exp)  # lm: data.source; sft, classify: encoded examples
  data = task.corpus
  eval_domains = domains.load(exp.eval.domains, exp.data)
  try:
    task_list = in_training.resolve(exp.eval, exp.data, exp.train.seed)
  except ValueError as e:  # a TaskError: refused like bad data, before the workdir exists
    raise DataError(f'config.eval.tasks: {e}') from None
  workdir.mkdir(parents=True, exist_ok=True)
  lock = runs.RunLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    resolved_config = {**resolved_config, 'data_fingerprint': data.fingerprint,
                       'data_info': data.info}
    if jax.process_index() == 0:
      for change in resume.record(workdir, resolved_config):
        print(f'llmjax: changed on resume: {change}')
    ckpt = checkpoint.Checkpointer(workdir, exp.checkpoint, exp.train.steps)
    try:
      with sharding.activation_rules(mesh, exp.mesh.rules):
        last = _train(exp, workdir, resolved_config, data, ckpt, mesh, eval_domains, task_list,
                      task)
    finally:
      ckpt.close()
  if ckpt.failed_saves:
    raise checkpoint.SaveError('; '.join(ckpt.failed_saves))
  return last


def _train(exp: 'Experiment', workdir: pathlib.Path, resolved_config: dict, data: Corpus,
           ckpt: checkpoint.Checkpointer, mesh: jax.sharding.Mesh,
           eval_domains: dict[str, Corpus], task_list: list,
           task: finetune_task.FinetuneTask) -> dict[str, float]:
  """Restores or initializes the state, trains, and finishes (summary and sample)."""
  tx, lr_schedule = optim.make(exp.optim, exp.model, exp.train.steps)
  rules = exp.mesh.rules
  graphdef, target, shardings = abstract_state(exp.model, tx, exp.train.seed, mesh, rules,
                                               exp.lora)
  restored = ckpt.restore_latest(target)
  if restored is not None and restored.step >= exp.train.steps:
    print(f'llmjax: the run in {workdir} is already complete ({exp.train.steps} steps)')
    return {}
  state = _initial_state(exp, tx, target, shardings, restored)
  batch_sharding = sharding.data_sharding(mesh, rules)
  rows = distributed.batch_slice(batch_sharding, exp.data.global_batch_size)
  cursor = DataCursor(data, exp.data, rows)
  if restored is not None:
    cursor.restore(restored.data)
  eval_fn = jit_eval_step(graphdef, shardings.params, batch_sharding, head=task.head)
  loop = Loop(
      exp=exp, workdir=workdir, resolved_config=resolved_config, state=state,
      step_fn=jit_train_step(graphdef, tx, exp.train, shardings, batch_sharding, exp.lora,
                             head=task.head),
      batch_sharding=batch_sharding, cursor=cursor,
      logger=StepLogger(exp, workdir, resolved_config, int(state.step), lr_schedule,
                        pipeline.target_length(exp.data)),
      guard=NonFiniteGuard(exp.train),
      evaluate=Evaluator(eval_fn, pipeline.eval_batches(data, exp.data, *rows), batch_sharding),
      ckpt=ckpt,
      domain_evaluators=tuple(
          Evaluator(eval_fn, pipeline.eval_batches(corpus, exp.data, *rows), batch_sharding,
                    prefix=f'eval/{name}') for name, corpus in eval_domains.items()),
      tasks=in_training.TaskEvaluator(task_list, graphdef, data.tokenizer, workdir,
                                      exp.eval.tasks_every, exp.train.steps, exp.train.seed),
      trace=profiler.StepProfiler(exp.metrics.profile_steps, workdir),
      weights=_weights(exp.lora, shardings.params))
  loop.finetune = task
  loop.finetune_metrics = finetune_report.evaluator(task, graphdef, loop.evaluate.batches,
                                                    batch_sharding, exp.train.seed)
  if jax.process_index() == 0:
    provenance.write(workdir, provenance.run_record(
        exp.model, loop.logger.peak, loop.logger.peak_source, int(state.step)))
  try:
    if not train_loop(loop):
      return loop.logger.last
    finish(loop, graphdef, data.tokenizer)
  finally:
    loop.logger.close()
  return loop.logger.last


def _weights(lora_cfg: lora.LoraConfig, param_shardings):
  """TrainState -> the model's weights, placed like its parameters (LoRA: merged once per
  evaluation or sample, in one jitted call)."""
  if not lora.enabled(lora_cfg):
    return lambda state: state.params
  merge = jax.jit(lambda state: model_params(state, lora_cfg), out_shardings=param_shardings)
  return merge


def _initial_state(exp: 'Experiment', tx, target, shardings,
                   restored: checkpoint.Restored | None) -> TrainState:
  """The restored state, or a fresh one (warm-started from `init_from` if set)."""
  if restored is not None:
    print(f'llmjax: resuming from {restored.folder}')
    return restored.state
  state = jax.jit(lambda: init_state(exp.model, tx, exp.train.seed, exp.lora),
                  out_shardings=shardings)()
  if exp.init_from:  # warm start: another run's parameters, fresh optimizer and data
    params, source = warmstart.params(exp.init_from, target.params)
    state = dataclasses.replace(state, params=params)
    print(f'llmjax: parameters initialized from {source}')
  return state


def train_loop(loop: Loop) -> bool:
  """Trains from the state's step to train.steps; False if stopped by a preemption."""
  cfg = loop.exp.train
  start = int(loop.state.step)
  preemption = Preemption()
  try:
    for index in range(start, cfg.steps):
      item = loop.cursor.next()
      done = index + 1
      loop.trace.before(done)
      loop.state, step_metrics = loop.step_fn(
          loop.state, device_batch(item['batch'], loop.batch_sharding))
      loop.trace.after(done, step_metrics)
      loop.guard.add(done, step_metrics)
      if index == start:  # the first step compiles; throughput counts from its end
        jax.block_until_ready(step_metrics)
        loop.logger.throughput.start(done)
      loop.logger.flush()  # the step before this one, which has finished by now
      if done % cfg.log_every == 0 or done == cfg.steps:
        loop.logger.defer(done, step_metrics, loop.cursor.counts)
        loop.guard.check()
      if done % cfg.eval_every == 0 or done == cfg.steps:
        loop.logger.flush()
        max_batches = -1 if done == cfg.steps else cfg.eval_batches
        loop.logger.write(done, loop.evaluate_all(max_batches), paused=True)
      if loop.tasks is not None and loop.tasks.due(done):
        loop.logger.flush()
        loop.logger.write(done, loop.tasks(loop.weights(loop.state), done), paused=True)
      if preemption.requested or loop.ckpt.reached_preemption(done):
        save(loop, done)
        loop.ckpt.wait()
        print(f'llmjax: preempted; checkpoint of step {done} saved in {loop.ckpt.directory}; '
              f'run the same command to resume')
        return False
      if loop.ckpt.due(done, cfg.steps):
        save(loop, done)
  finally:
    preemption.restore()
    loop.trace.stop()
  loop.logger.flush()
  return True


def save(loop: Loop, done: int) -> None:
  """Saves step `done` (never after a non-finite step) with the metrics it has so far."""
  loop.guard.check()
  loop.logger.flush()
  blocked = loop.ckpt.save(done, loop.state, loop.cursor.position(), loop.resolved_config)
  loop.logger.write(done, {'checkpoint/save_blocking_s': blocked}, paused=True)


def finish(loop: Loop, graphdef: nnx.GraphDef, tokenizer) -> None:
  """The end-of-run summary line and the text sample."""
  cfg, last = loop.exp.train, loop.logger.last
  # A synthetic source's tokens are states, each counted as one byte (data_info says so).
  unit = 'bits/token' if loop.exp.data.source.startswith('synthetic:') else 'bits/byte'
  print(f'step {cfg.steps}: train loss {last["loss"]:.4f}, eval loss {last["eval/loss"]:.4f} '
        f'nats/token, {last["eval/bits_per_byte"]:.4f} {unit}')
  if loop.finetune is not None and loop.finetune.name != 'lm':
    if not loop.exp.finetune.predictions:  # finetune.predictions=0: none asked for
      return
    model = nnx.merge(graphdef, loop.weights(loop.state))
    rows = finetune_report.predictions(loop.finetune, model, tokenizer,
                                       loop.exp.finetune.predictions, loop.exp.data.seq_len)
    print(f'--- predictions ---\n{finetune_report.format_predictions(rows)}\n--------------')
  elif cfg.sample_tokens > 0:  # every process takes part: the parameters span all of them
    text = generate.sample_text(nnx.merge(graphdef, loop.weights(loop.state)), tokenizer,
                                cfg.sample_prompt, cfg.sample_tokens, cfg.sample_temperature,
                                seed=cfg.seed)
    if jax.process_index() == 0:
      (loop.workdir / 'sample.txt').write_text(text)
      loop.logger.writer.write_text('sample', text, cfg.steps)
    print(f'--- sample ---\n{text}\n--------------')
