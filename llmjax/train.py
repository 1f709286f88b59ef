"""Train state, the pure train and eval steps, and the training loop."""

import dataclasses
import functools
import json
import math
import pathlib
import signal
import sys
import threading
import time
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llmjax import checkpoint, distributed, flops, generate, metrics, optim, sharding
from llmjax.data import pipeline
from llmjax.data.sources import Corpus
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

if typing.TYPE_CHECKING:
  from llmjax.configs import Experiment


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 1000  # optimizer steps
  microbatches: int = 1  # gradient accumulation: the global batch is split into this many
  z_loss: float = 0.0  # weight of log(Z)^2, keeps the softmax normalizer near 1 (PaLM)
  seed: int = 0  # parameter init and dropout
  log_every: int = 50  # steps between fetching and writing metrics
  eval_every: int = 500  # steps between evaluations (and always at the end)
  eval_batches: int = 16  # batches per periodic evaluation; the final one uses all
  sample_prompt: str = 'def '  # prompt of the text sample printed at the end
  sample_tokens: int = 200  # length of that sample; 0 disables it
  sample_temperature: float = 0.8
  inject_nan_at_step: int = -1  # testing the non-finite policy: NaN loss at this step


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # raw key; each step folds in its step number


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation,
               seed: int) -> TrainState:
  model = Transformer(model_cfg, nnx.Rngs(params=seed))
  params = nnx.state(model, nnx.Param)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed + 1)))


def abstract_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                   mesh: jax.sharding.Mesh, rules: sharding.Rules):
  """(graphdef, shapes and dtypes of the state, its shardings); allocates nothing."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0))))
  abstract = jax.eval_shape(functools.partial(init_state, model_cfg, tx, seed))
  return graphdef, abstract, sharding.param_shardings(abstract, mesh, rules)


def create_sharded_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                         mesh: jax.sharding.Mesh, rules: sharding.Rules):
  """(graphdef, state, state shardings): parameters and optimizer state created
  directly in their sharded layout; no full copy ever sits on one device."""
  graphdef, _, shardings = abstract_state(model_cfg, tx, seed, mesh, rules)
  state = jax.jit(functools.partial(init_state, model_cfg, tx, seed), out_shardings=shardings)()
  return graphdef, state, shardings


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                  z_loss: float) -> tuple[jax.Array, jax.Array]:
  """Weighted sums over tokens of (NLL, z-loss term); logits in float32."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = jnp.sum((log_z - target_logit) * weights)
  return nll, z_loss * jnp.sum(jnp.square(log_z) * weights)


def _microbatches(batch: dict, num: int) -> dict:
  """B... -> M (B/M)...; row i goes to microbatch i % M so each device keeps its rows."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1),
                      batch)


def train_step(state: TrainState, batch: dict, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, num_microbatches: int, z_loss: float,
               inject_nan_at_step: int = -1) -> tuple[TrainState, dict]:
  """One optimizer step on a global batch; pure, so it can be jitted and sharded."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  total_weight = jnp.maximum(batch['weights'].sum(), 1.0)
  if inject_nan_at_step >= 0:
    total_weight = jnp.where(state.step + 1 == inject_nan_at_step, jnp.nan, total_weight)

  def loss_fn(params, micro, key):
    model = nnx.merge(graphdef, params)
    logits = model(micro['inputs'], micro['positions'], micro['segment_ids'], dropout_key=key)
    nll, zl = cross_entropy(logits, micro['targets'], micro['weights'], z_loss)
    return (nll + zl) / total_weight, (nll, zl)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    (_, (nll, zl)), grads = grad_fn(state.params, batch, rng)
  else:
    def accumulate(carry, xs):
      index, micro = xs
      (_, aux), g = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, carry, (g, aux)), None

    zeros = jax.tree.map(jnp.zeros_like, (state.params, (0.0, 0.0)))
    xs = (jnp.arange(num_microbatches), _microbatches(batch, num_microbatches))
    (grads, (nll, zl)), _ = jax.lax.scan(accumulate, zeros, xs)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng)
  consecutive, total = optim.nonfinite_counts(opt_state)
  step_metrics = {
      'skipped_steps': total,
      'consecutive_skipped_steps': consecutive,
      'loss': nll / total_weight,
      'z_loss': zl / total_weight,
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),
      'update_norm': optax.global_norm(updates),
  }
  return new_state, step_metrics


def eval_step(params: nnx.State, batch: dict, *, graphdef: nnx.GraphDef) -> dict:
  """Sums of NLL and of target weights over a batch (sums so batches add up exactly)."""
  model = nnx.merge(graphdef, params)
  logits = model(batch['inputs'], batch['positions'], batch['segment_ids'])
  nll, _ = cross_entropy(logits, batch['targets'], batch['weights'], 0.0)
  return {'nll': nll, 'weight': batch['weights'].sum()}


def device_batch(local_rows: dict[str, np.ndarray], data_sharding) -> dict[str, jax.Array]:
  """Global arrays from this process's rows of the global batch."""
  return {k: jax.make_array_from_process_local_data(data_sharding, v)
          for k, v in local_rows.items()}


def evaluate(eval_fn, params, batches: list[dict], data_sharding) -> dict[str, float]:
  """Held-out loss in nats per token, and bits per byte of the predicted text.

  Bytes are the UTF-8 length of each predicted token (pipeline stats), so bits
  per byte compares across tokenizers.
  """
  nll, weight = 0.0, 0.0
  for item in batches:
    out = eval_fn(params, device_batch(item['batch'], data_sharding))
    nll, weight = nll + out['nll'], weight + out['weight']  # stays on device until the end
  num_bytes = max(sum(item['stats']['bytes'] for item in batches), 1)
  return {'eval/loss': float(nll) / max(float(weight), 1.0),
          'eval/bits_per_byte': float(nll) / math.log(2) / num_bytes}


def jit_train_step(exp: 'Experiment', graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                   state_shardings, batch_sharding):
  """The train step, jitted with explicit shardings; the old state's buffers are donated."""
  return jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx,
                        num_microbatches=exp.train.microbatches, z_loss=exp.train.z_loss,
                        inject_nan_at_step=exp.train.inject_nan_at_step),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, None), donate_argnums=0)


@distributed.stdout_from_process_zero()
def run(exp: 'Experiment', workdir: pathlib.Path, resolved_config: dict) -> dict[str, float]:
  """Trains `exp` in `workdir`, resuming from its newest usable checkpoint; returns the
  last metrics. Every process of a multi-host run calls this."""
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor,
                            dcn_data=exp.mesh.dcn_data)
  rules = exp.mesh.rules
  data = pipeline.load(exp.data)
  workdir.mkdir(parents=True, exist_ok=True)
  resolved_config = {**resolved_config, 'data_fingerprint': data.fingerprint,
                     'data_info': data.info}
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(json.dumps(resolved_config, indent=2) + '\n')

  tx, lr_schedule = optim.make(exp.optim, exp.model, exp.train.steps)
  ckpt = checkpoint.Checkpointer(workdir, exp.checkpoint, exp.train.steps)
  with sharding.activation_rules(mesh, rules):
    graphdef, abstract, state_shardings = abstract_state(exp.model, tx, exp.train.seed, mesh,
                                                         rules)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_shardings)
    restored = ckpt.restore_latest(target)
    if restored is None:
      state = jax.jit(functools.partial(init_state, exp.model, tx, exp.train.seed),
                      out_shardings=state_shardings)()
      if exp.init_from:  # warm start: another run's parameters, fresh optimizer and data
        params, source = checkpoint.restore_params(exp.init_from, target)
        state = dataclasses.replace(state, params=params)
        print(f'llmjax: parameters initialized from {source}')
    else:
      state = restored[1]
      print(f'llmjax: resuming from {ckpt.directory / str(restored[0])}')
    batch_sharding = sharding.data_sharding(mesh, rules)
    step_fn = jit_train_step(exp, graphdef, tx, state_shardings, batch_sharding)
    eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef),
                      in_shardings=(state_shardings.params, batch_sharding))
    try:
      return _loop(exp, workdir, resolved_config, data, state, step_fn, eval_fn, lr_schedule,
                   batch_sharding, graphdef, ckpt, restored[2] if restored else None)
    finally:
      ckpt.close()


class _Throughput:
  """Tokens/s between two fetches of metrics (each fetch waits for its step)."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.reset(0)

  def reset(self, step: int) -> None:
    self.step, self.time = step, time.perf_counter()

  def measure(self, step: int) -> tuple[float, float]:
    """(tokens/s, seconds per step) since the last reset, then resets."""
    now = time.perf_counter()
    steps = max(step - self.step, 1)
    step_time = (now - self.time) / steps
    self.reset(step)
    return self.tokens_per_step / step_time, step_time


class _Preemption:
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


def _check_finite(unchecked: list, policy: checkpoint.CheckpointConfig) -> None:
  """Fetches the losses of the steps since the last check; halts per the policy."""
  for step, loss, consecutive in jax.device_get(unchecked):
    if math.isfinite(float(loss)):
      continue
    if policy.nonfinite == 'halt':
      raise FloatingPointError(f'non-finite training loss {float(loss)} at step {step}; '
                               f'nothing after the last good checkpoint was saved')
    if consecutive >= policy.max_consecutive_skips:
      raise FloatingPointError(f'{int(consecutive)} non-finite steps in a row, the last at '
                               f'step {step}; halting')
  unchecked.clear()


def _loop(exp, workdir, resolved_config, data: Corpus, state, step_fn, eval_fn, lr_schedule,
          batch_sharding, graphdef, ckpt: checkpoint.Checkpointer,
          data_state: dict | None) -> dict[str, float]:
  cfg, dcfg = exp.train, exp.data
  start_step = int(state.step)
  tokens_per_step = dcfg.global_batch_size * dcfg.seq_len
  flops_per_tok = flops.flops_per_token(exp.model, dcfg.seq_len)
  peak, peak_source = flops.peak_flops_per_device(exp.metrics.peak_flops_per_device)
  peak_total = peak * jax.device_count()
  writer = metrics.MetricsWriter(exp.metrics, workdir, resolved_config, after_step=start_step)
  progress = metrics.Progress(start_step, cfg.steps)
  progress.write(f'llmjax: {flops.param_counts(exp.model)["total"]:,} parameters, '
                 f'{flops_per_tok / 1e6:.2f} MFLOPs/token, peak {peak / 1e9:.0f} GFLOP/s '
                 f'per device ({peak_source}), {jax.device_count()} device(s), '
                 f'data {data.fingerprint}')
  throughput = _Throughput(tokens_per_step)
  rows = distributed.batch_slice(batch_sharding, dcfg.global_batch_size)  # (slice, slices)
  train_batches = iter(pipeline.train_dataset(data, dcfg, *rows))
  counts = {'tokens_seen': 0, 'unique_tokens_seen': 0, 'epoch': 0}  # exact, global
  if data_state is not None:
    pipeline.restore_state(train_batches, data_state['iterator'])
    counts = data_state['counts']
  eval_rows = pipeline.eval_batches(data, dcfg, *rows)
  preemption = _Preemption()

  def log(pending) -> dict[str, float]:
    step, device_metrics, data_counts = pending
    values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    tokens_per_s, step_time = throughput.measure(step)
    values.update({
        'lr': float(lr_schedule(step - 1)),
        **data_counts,
        'tokens_per_s': tokens_per_s,
        'step_time_s': step_time,
        'flops_per_token': flops_per_tok,
        'mfu': flops.mfu(tokens_per_s, flops_per_tok, peak_total),
        'peak_flops_per_device': peak,
    })
    writer.write(step, values)
    progress.update(step, values)
    return values

  def run_eval(step: int, max_batches: int) -> dict[str, float]:
    rows = eval_rows if max_batches < 0 else eval_rows[:max_batches]
    values = evaluate(eval_fn, state.params, rows, batch_sharding)
    writer.write(step, values)
    progress.update(step, {**last, **values})
    throughput.reset(step)
    return values

  def save(step: int) -> None:
    _check_finite(unchecked, exp.checkpoint)  # never save after a non-finite step
    data_state = {'iterator': train_batches.get_state(), 'counts': dict(counts)}
    blocked = ckpt.save(step, state, data_state, resolved_config)
    writer.write(step, {'checkpoint/save_blocking_s': blocked})
    throughput.reset(step)

  pending = None  # (step, metrics still on device, data counts): fetched a step later
  unchecked = []  # (step, loss, consecutive skips) on device, not yet checked for NaN
  last: dict[str, float] = {}
  try:
    for step in range(start_step, cfg.steps):
      item = next(train_batches)
      state, step_metrics = step_fn(state, device_batch(item['batch'], batch_sharding))
      counts['tokens_seen'] += item['stats']['tokens']
      counts['unique_tokens_seen'] += item['stats']['unique_tokens']
      counts['epoch'] = item['stats']['epoch']
      done = step + 1
      unchecked.append((done, step_metrics['loss'], step_metrics['consecutive_skipped_steps']))
      if step == start_step:  # the first step compiles; throughput counts from its end
        jax.block_until_ready(step_metrics)
        throughput.reset(done)
      if pending is not None:
        last, pending = log(pending), None
      if done % cfg.log_every == 0 or done == cfg.steps:
        pending = (done, step_metrics, dict(counts))
        _check_finite(unchecked, exp.checkpoint)
      if done % cfg.eval_every == 0 or done == cfg.steps:
        if pending is not None:
          last, pending = log(pending), None
        last.update(run_eval(done, -1 if done == cfg.steps else cfg.eval_batches))
      if preemption.requested or ckpt.reached_preemption(done):
        save(done)
        ckpt.wait()
        print(f'llmjax: preempted; checkpoint of step {done} saved in {ckpt.directory}; '
              f'run the same command to resume')
        return last
      if ckpt.due(done, cfg.steps):
        save(done)
  finally:
    preemption.restore()
    progress.close()
  if start_step >= cfg.steps:
    print(f'llmjax: the run in {workdir} is already complete ({cfg.steps} steps)')
    writer.close()
    return last
  print(f'step {cfg.steps}: train loss {last["loss"]:.4f}, eval loss {last["eval/loss"]:.4f} '
        f'nats/token, {last["eval/bits_per_byte"]:.4f} bits/byte')
  if cfg.sample_tokens > 0:  # every process takes part: the parameters span all of them
    text = generate.sample_text(nnx.merge(graphdef, state.params), data.tokenizer,
                                cfg.sample_prompt, cfg.sample_tokens, cfg.sample_temperature,
                                seed=cfg.seed)
    if jax.process_index() == 0:
      (workdir / 'sample.txt').write_text(text)
    print(f'--- sample ---\n{text}\n--------------')
  writer.close()
  return last
