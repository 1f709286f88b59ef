"""Optimizers, learning-rate schedules, weight-decay masks and modes (optax).

The per-tensor learning-rate and Adam-epsilon multipliers come from
`model.parametrization` (all 1 under sp). The optax chain, in order:

  coupled (sp's default):
    clip -> [eps] -> adamw = (scale_by_adam -> add_decayed_weights -> scale_by_lr) -> lr_mult
    the decay step of a tensor is lr_t * lr_mult * wd * p: it follows its LR multiplier.
  independent (mup's and completep's default):
    clip -> [eps] -> scale_by_adam -> lr_mult -> add_decayed_weights -> scale_by_lr
    the decay step is lr_t * wd * p in every group, whatever its LR multiplier.

[eps] (completep only) divides each gradient by its tensor's epsilon multiplier e: Adam is
invariant to a gradient's scale except through epsilon, so Adam on g / e is Adam on g with
epsilon e * eps. Lion uses scale_by_lion for scale_by_adam; Adafactor, whose updates are
relative to the parameter scale, is coupled only.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import parametrization_rules, pz_path

WEIGHT_DECAY_MODES = ('auto', 'coupled', 'independent')


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
  weight_decay_mode: str = 'auto'  # coupled | independent | auto (sp: coupled, else independent)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimizer kind: its update with weight decay inside (coupled decay), and its update
  direction alone, for independent decay (None: the optimizer supports coupled only)."""
  coupled: Callable[[OptimConfig, optax.Schedule, Callable], optax.GradientTransformation]
  direction: Callable[[OptimConfig], optax.GradientTransformation] | None


# One entry per optimizer: validation, the chain and the tests read this table.
OPTIMIZERS: dict[str, Optimizer] = {
    'adamw': Optimizer(
        coupled=lambda c, lr, mask: optax.adamw(lr, c.b1, c.b2, c.eps,
                                                weight_decay=c.weight_decay, mask=mask),
        direction=lambda c: optax.scale_by_adam(c.b1, c.b2, c.eps)),
    'adafactor': Optimizer(
        coupled=lambda c, lr, mask: optax.adafactor(lr, weight_decay_rate=c.weight_decay or None,
                                                    weight_decay_mask=mask),
        direction=None),  # its updates are relative to the parameter scale
    'lion': Optimizer(
        coupled=lambda c, lr, mask: optax.lion(lr, c.b1, c.b2, weight_decay=c.weight_decay,
                                               mask=mask),
        direction=lambda c: optax.scale_by_lion(c.b1, c.b2)),
}


def _wsd(cfg: OptimConfig, rest: int, total_steps: int) -> optax.Schedule:
  """Warmup-stable-decay: constant, then linear to lr * min_lr_ratio over the last steps."""
  decay = max(int(round(cfg.decay_fraction * total_steps)), 1)
  return optax.join_schedules(
      [optax.constant_schedule(cfg.lr),
       optax.linear_schedule(cfg.lr, cfg.lr * cfg.min_lr_ratio, decay)], [max(rest - decay, 0)])


def _inverse_sqrt(cfg: OptimConfig, rest: int, total_steps: int) -> optax.Schedule:
  del rest, total_steps
  warmup = max(cfg.warmup_steps, 1)
  # join_schedules also evaluates it before the warmup ends (at negative steps).
  return lambda step: cfg.lr * jnp.sqrt(warmup / jnp.maximum(step + warmup, 1))


# One entry per schedule: (config, steps after warmup, total steps) -> the schedule that
# follows the linear warmup. Validation, `schedule` and the tests read this table.
SCHEDULES: dict[str, Callable[[OptimConfig, int, int], optax.Schedule]] = {
    'cosine': lambda cfg, rest, total: optax.cosine_decay_schedule(cfg.lr, rest,
                                                                   alpha=cfg.min_lr_ratio),
    'wsd': _wsd,
    'constant': lambda cfg, rest, total: optax.constant_schedule(cfg.lr),
    'inverse_sqrt': _inverse_sqrt,
}


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f'unknown schedule {cfg.schedule!r}; known: {", ".join(SCHEDULES)}')
  warmup = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
  after = SCHEDULES[cfg.schedule](cfg, max(total_steps - cfg.warmup_steps, 1), total_steps)
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def group_tree(params, fn: Callable[[str], object]):
  """Maps each parameter (an nnx.Variable with a `group` tag) to fn(group)."""
  return jax.tree.map(lambda v: fn(v.group), params, is_leaf=_is_variable)


def decay_mode(cfg: OptimConfig, model_cfg: ModelConfig) -> str:
  """'coupled' or 'independent': what weight_decay_mode 'auto' means for this model."""
  if cfg.weight_decay_mode != 'auto':
    return cfg.weight_decay_mode
  return 'coupled' if pz.is_sp(model_cfg) else 'independent'


def decay_multipliers(cfg: OptimConfig, model_cfg: ModelConfig, rules: dict) -> dict[str, float]:
  """Per tensor, its decay step as a multiple of lr_t * wd * p (see the chain order above)."""
  mode = decay_mode(cfg, model_cfg)
  return {path: 0.0 if r.group in cfg.no_decay_groups else (r.lr if mode == 'coupled' else 1.0)
          for path, r in rules.items()}


def scale_by_tensor(multipliers: dict[str, float] | None,
                    invert: bool = False) -> optax.GradientTransformation:
  """Multiplies each tensor's update by multipliers['blocks/attn/wq'] (or divides, with
  `invert`); None or 1 leaves it untouched (no op in the graph)."""
  def one(path, var):
    m = 1.0 if multipliers is None else multipliers[pz_path(path)]
    if m == 1.0:
      return var
    factor = 1.0 / m if invert else m
    return jax.tree.map(lambda x: x * factor, var)

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(one, updates, is_leaf=_is_variable), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(cfg: OptimConfig, model_cfg: ModelConfig,
         total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its learning-rate schedule (chain order: module docstring)."""
  lr = schedule(cfg, total_steps)
  decay_mask = lambda params: group_tree(params, lambda g: g not in cfg.no_decay_groups)
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f'unknown optimizer {cfg.name!r}; known: {", ".join(OPTIMIZERS)}')
  lr_mult = eps_mult = None
  if not pz.is_sp(model_cfg):  # sp: every multiplier 1, no abstract models to build
    rules = parametrization_rules(model_cfg)
    lr_mult = {path: r.lr for path, r in rules.items()}
    eps_mult = {path: r.eps for path, r in rules.items()}
  clip = optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity()
  kind = OPTIMIZERS[cfg.name]
  if decay_mode(cfg, model_cfg) == 'coupled':
    steps = [kind.coupled(cfg, lr, decay_mask), scale_by_tensor(lr_mult)]
  elif kind.direction is None:
    raise ValueError(f'weight_decay_mode=independent is not defined for {cfg.name!r}; use '
                     f'coupled')
  else:
    steps = [kind.direction(cfg), scale_by_tensor(lr_mult),
             optax.add_decayed_weights(cfg.weight_decay, decay_mask),
             optax.scale_by_learning_rate(lr)]
  if eps_mult is not None and any(e != 1.0 for e in eps_mult.values()):
    steps.insert(0, scale_by_tensor(eps_mult, invert=True))
  tx = optax.chain(clip, *steps)
  # A step with non-finite gradients leaves parameters and moments untouched; the
  # training loop decides whether that halts the run or is counted and skipped.
  return optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1), lr


def nonfinite_counts(opt_state) -> tuple[jax.Array, jax.Array]:
  """(consecutive, total) steps whose update was dropped for non-finite gradients."""
  return opt_state.notfinite_count, opt_state.total_notfinite
