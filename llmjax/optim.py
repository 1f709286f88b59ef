"""Optimizers, learning-rate schedules and weight-decay masks (optax).

The per-group learning-rate multipliers come from `model.parametrization`; they
scale each parameter's update after the base optimizer, which for AdamW, Lion
and Adafactor is the same as scaling that group's learning rate.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig

OPTIMIZERS = ('adamw', 'adafactor', 'lion')
SCHEDULES = ('cosine', 'wsd', 'constant', 'inverse_sqrt')


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  name: str = 'adamw'  # adamw | adafactor | lion
  lr: float = 3e-3  # peak learning rate
  schedule: str = 'cosine'  # cosine | wsd | constant | inverse_sqrt
  warmup_steps: int = 100  # linear warmup from 0
  decay_fraction: float = 0.2  # wsd: fraction of steps spent decaying at the end
  min_lr_ratio: float = 0.0  # final lr / peak lr for cosine and wsd
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1  # decoupled; multiplied by the lr (AdamW convention)
  no_decay_groups: tuple[str, ...] = pz.NO_DECAY_GROUPS  # parametrization groups not decayed
  clip_norm: float = 1.0  # global gradient-norm clipping; 0 disables


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step."""
  warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
  final = cfg.lr * cfg.min_lr_ratio
  rest = max(total_steps - cfg.warmup_steps, 1)
  if cfg.schedule == 'constant':
    after = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(cfg.lr, rest, alpha=cfg.min_lr_ratio)
  elif cfg.schedule == 'wsd':  # warmup-stable-decay: constant, then linear to `final`
    decay = max(int(round(cfg.decay_fraction * total_steps)), 1)
    after = optax.join_schedules(
        [optax.constant_schedule(cfg.lr), optax.linear_schedule(cfg.lr, final, decay)],
        [max(rest - decay, 0)])
  elif cfg.schedule == 'inverse_sqrt':
    after = lambda step: cfg.lr * jnp.sqrt(max(cfg.warmup_steps, 1) / (step + max(cfg.warmup_steps, 1)))
  else:
    raise ValueError(f'unknown schedule {cfg.schedule!r}; known: {", ".join(SCHEDULES)}')
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def group_tree(params, fn: Callable[[str], object]):
  """Maps each parameter (an nnx.Variable with a `group` tag) to fn(group)."""
  return jax.tree.map(lambda v: fn(v.group), params, is_leaf=_is_variable)


def scale_by_group_lr(model_cfg: ModelConfig) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    multipliers = group_tree(updates, lambda g: pz.lr_multiplier(model_cfg, g))
    updates = jax.tree.map(
        lambda m, u: jax.tree.map(lambda x: x * m, u) if m != 1.0 else u,
        multipliers, updates, is_leaf=_is_variable)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(cfg: OptimConfig, model_cfg: ModelConfig,
         total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its learning-rate schedule."""
  lr = schedule(cfg, total_steps)
  decay_mask = lambda params: group_tree(params, lambda g: g not in cfg.no_decay_groups)
  if cfg.name == 'adamw':
    base = optax.adamw(lr, cfg.b1, cfg.b2, cfg.eps, weight_decay=cfg.weight_decay,
                       mask=decay_mask)
  elif cfg.name == 'lion':
    base = optax.lion(lr, cfg.b1, cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask)
  elif cfg.name == 'adafactor':
    base = optax.adafactor(lr, weight_decay_rate=cfg.weight_decay or None,
                           weight_decay_mask=decay_mask)
  else:
    raise ValueError(f'unknown optimizer {cfg.name!r}; known: {", ".join(OPTIMIZERS)}')
  clip = optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity()
  tx = optax.chain(clip, base, scale_by_group_lr(model_cfg))
  # A step with non-finite gradients leaves parameters and moments untouched; the
  # training loop decides whether that halts the run or is counted and skipped.
  return optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1), lr


def nonfinite_counts(opt_state) -> tuple[jax.Array, jax.Array]:
  """(consecutive, total) steps whose update was dropped for non-finite gradients."""
  return opt_state.notfinite_count, opt_state.total_notfinite
