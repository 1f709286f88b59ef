"""The train state and the pure functions of one step: init, train_step, eval_step.

Everything here is a pure function of its arguments, so it can be jitted, sharded,
lowered ahead of time (`aot.py`) and tested step by step. `jit_train_step` is the one
place the step is jitted, with explicit shardings and a donated state; the loop
(`train.py`), the compile-only report, the tests and the benchmarks all call it.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llmjax import optim, sharding
from llmjax.data import pipeline
from llmjax.model import lora
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

NONFINITE_POLICIES = ('halt', 'skip')


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
  nonfinite: str = 'halt'  # halt: stop at a non-finite loss | skip: drop that update
  max_consecutive_skips: int = 5  # with skip: halt after this many in a row
  inject_nan_at_step: int = -1  # testing the non-finite policy: NaN loss at this step


@dataclasses.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State  # the model's; frozen under LoRA
  opt_state: optax.OptState  # of the trained tensors: `params`, or `adapters` under LoRA
  rng: jax.Array  # raw key; each step folds in its step number
  adapters: dict = dataclasses.field(default_factory=dict)  # LoRA's A and B; {} when off

  def trained(self):
    """The tensors the optimizer updates."""
    return self.adapters or self.params


def _state_children(state: TrainState):
  # Without adapters the tree is the one checkpoints were always written with.
  names = ('step', 'params', 'opt_state', 'rng') + (('adapters',) if state.adapters else ())
  return [(jax.tree_util.GetAttrKey(n), getattr(state, n)) for n in names], bool(state.adapters)


def _state_flatten(state: TrainState):
  keyed, has_adapters = _state_children(state)
  return [child for _, child in keyed], has_adapters


jax.tree_util.register_pytree_with_keys(TrainState, _state_children,
                                        lambda _, children: TrainState(*children),
                                        flatten_func=_state_flatten)


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
               lora_cfg: lora.LoraConfig = lora.LoraConfig()) -> TrainState:
  model = Transformer(model_cfg, nnx.Rngs(params=seed))
  params = nnx.state(model, nnx.Param)
  adapters = lora.init(params, lora_cfg, jax.random.key(seed + 2))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(adapters or params),
                    rng=jax.random.key_data(jax.random.key(seed + 1)), adapters=adapters)


def model_params(state: TrainState, lora_cfg: lora.LoraConfig) -> nnx.State:
  """The weights the model computes with: the parameters, LoRA's updates merged in."""
  return lora.merge(state.params, state.adapters, lora_cfg)


def abstract_model(model_cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """The model's structure and parameter shapes and dtypes; allocates nothing."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0))), nnx.Param)


def placed(abstract, shardings):
  """ShapeDtypeStructs carrying target shardings: what orbax restores into. `shardings`
  is a tree like `abstract`, or one sharding for every leaf."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, abstract)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def abstract_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                   mesh: jax.sharding.Mesh, rules: sharding.Rules,
                   lora_cfg: lora.LoraConfig = lora.LoraConfig()):
  """(graphdef, the state as a restore target: shapes, dtypes and shardings, the
  shardings alone); allocates nothing."""
  graphdef, _ = abstract_model(model_cfg)
  abstract = jax.eval_shape(functools.partial(init_state, model_cfg, tx, seed, lora_cfg))
  shardings = sharding.param_shardings(abstract, mesh, rules)
  return graphdef, placed(abstract, shardings), shardings


def create_sharded_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                         mesh: jax.sharding.Mesh, rules: sharding.Rules,
                         lora_cfg: lora.LoraConfig = lora.LoraConfig()):
  """(graphdef, state, state shardings): parameters and optimizer state created
  directly in their sharded layout; no full copy ever sits on one device."""
  graphdef, _, shardings = abstract_state(model_cfg, tx, seed, mesh, rules, lora_cfg)
  state = jax.jit(functools.partial(init_state, model_cfg, tx, seed, lora_cfg),
                  out_shardings=shardings)()
  return graphdef, state, shardings


def output_logits(logits: jax.Array) -> jax.Array:
  """The default output head: the model's logits as they are. A task may pass another
  (llmjax.finetune: a classifier's label logits), applied before the loss."""
  return logits


def forward(model, batch: dict, dropout_key=None) -> jax.Array:
  """The model's logits on a batch: its decoder's (or only) inputs, and its encoder's when
  the batch has them (the loss is then on the decoder's targets)."""
  encoder = {k: batch[k] for k in pipeline.ENCODER_KEYS if k in batch}
  return model(batch['inputs'], batch['positions'], batch['segment_ids'],
               dropout_key=dropout_key, **encoder)


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


def _gradients(params, batch: dict, rng, *, graphdef, num_microbatches: int, z_loss: float,
               weights=lambda trained: trained, head=output_logits):
  """(gradients, (summed NLL, summed z-loss)) of the loss averaged over the batch's tokens,
  with respect to `params`, the trained tensors; `weights` maps them to the model's."""
  total_weight = jnp.maximum(batch['weights'].sum(), 1.0)

  def loss_fn(params, micro, key):
    model = nnx.merge(graphdef, weights(params))
    logits = forward(model, micro, key)
    nll, zl = cross_entropy(head(logits), micro['targets'], micro['weights'], z_loss)
    return (nll + zl) / total_weight, (nll, zl)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    (_, sums), grads = grad_fn(params, batch, rng)
    return grads, sums

  def accumulate(carry, xs):
    index, micro = xs
    (_, aux), g = grad_fn(params, micro, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (g, aux)), None

  zeros = jax.tree.map(jnp.zeros_like, (params, (0.0, 0.0)))
  xs = (jnp.arange(num_microbatches), _microbatches(batch, num_microbatches))
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, xs)
  return grads, sums


def train_step(state: TrainState, batch: dict, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, num_microbatches: int,
               z_loss: float, head=output_logits, lora_cfg: lora.LoraConfig = lora.LoraConfig()
               ) -> tuple[TrainState, dict]:
  """One optimizer step on a global batch; pure, so it can be jitted and sharded. Under
  LoRA only the adapters are differentiated and updated; the parameters pass through."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  weights = functools.partial(lora.merge, state.params, cfg=lora_cfg)
  grads, (nll, zl) = _gradients(state.trained(), batch, rng, graphdef=graphdef,
                                num_microbatches=num_microbatches, z_loss=z_loss, head=head,
                                weights=weights if state.adapters else lambda p: p)
  updates, opt_state = tx.update(grads, state.opt_state, state.trained())
  params = optax.apply_updates(state.trained(), updates)
  new_state = dataclasses.replace(state, step=state.step + 1, opt_state=opt_state,
                                  **{'adapters' if state.adapters else 'params': params})
  consecutive, total = optim.nonfinite_counts(opt_state)
  total_weight = jnp.maximum(batch['weights'].sum(), 1.0)
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


def with_nan_at_step(step_fn, nan_step: int):
  """`step_fn` whose loss and gradients are NaN at optimizer step `nan_step` (1-based):
  a fault injected from outside, to test the non-finite policy end to end."""

  def faulty(state: TrainState, batch: dict):
    poison = jnp.where(state.step + 1 == nan_step, jnp.nan, 1.0)
    return step_fn(state, {**batch, 'weights': batch['weights'] * poison})

  return faulty


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    cfg: TrainConfig, lora_cfg: lora.LoraConfig = lora.LoraConfig(),
                    head=output_logits):
  """The train step for `cfg`, with its test hooks (fault injection) wrapped around it."""
  step_fn = functools.partial(train_step, graphdef=graphdef, tx=tx,
                              num_microbatches=cfg.microbatches, z_loss=cfg.z_loss, head=head,
                              lora_cfg=lora_cfg)
  if cfg.inject_nan_at_step >= 0:
    step_fn = with_nan_at_step(step_fn, cfg.inject_nan_at_step)
  return step_fn


def jit_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: TrainConfig,
                   state_shardings, batch_sharding,
                   lora_cfg: lora.LoraConfig = lora.LoraConfig(), head=output_logits):
  """The train step, jitted with explicit shardings; the old state's buffers are donated."""
  return jax.jit(make_train_step(graphdef, tx, cfg, lora_cfg, head=head),
                 in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


def eval_step(params: nnx.State, batch: dict, *, graphdef: nnx.GraphDef,
              head=output_logits) -> dict:
  """Sums over a batch's predicted tokens (sums, so batches add up exactly): NLL, target
  weight, and the weight of tokens whose top prediction is the target (next tokens for lm,
  masked tokens for mlm, the decoder's targets for span)."""
  model = nnx.merge(graphdef, params)
  logits = head(forward(model, batch))
  nll, _ = cross_entropy(logits, batch['targets'], batch['weights'], 0.0)
  hits = jnp.argmax(logits, axis=-1) == batch['targets']
  return {'nll': nll, 'weight': batch['weights'].sum(),
          'correct': jnp.sum(jnp.where(hits, batch['weights'], 0.0))}


def jit_eval_step(graphdef: nnx.GraphDef, param_shardings, batch_sharding, head=output_logits):
  return jax.jit(functools.partial(eval_step, graphdef=graphdef, head=head),
                 in_shardings=(param_shardings, batch_sharding))


def device_batch(local_rows: dict[str, np.ndarray], data_sharding) -> dict[str, jax.Array]:
  """Global arrays from this process's rows of the global batch."""
  return {k: jax.make_array_from_process_local_data(data_sharding, v)
          for k, v in local_rows.items()}
