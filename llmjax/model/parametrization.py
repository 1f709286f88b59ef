"""Initialization scales, learning-rate and forward multipliers, in one place: sp | mup | completep.

Every parameter belongs to a group, named by the module that creates it, and carries its
fan-in. Init scales (used by the layers), forward multipliers (used by the model) and
learning-rate and Adam-epsilon multipliers (used by the optimizer) are functions of the
config, the group and, per tensor, the fan-in against the same tensor of a base shape.

sp (the default): hidden matrices ~ N(0, 1/fan_in), output projections of each residual
branch further scaled by 1/sqrt(2L) (GPT-2), embeddings ~ N(0, init_std), the untied
head ~ N(0, 1/D^2), all multipliers 1.

mup (Tensor Programs V, arXiv 2203.03466, its Adam table with output multiplier): per
tensor, m = fan_in / base fan_in. Hidden and output matrices keep their init and get LR
x 1/m; the readout's init is the base's (width-independent) and the logits are
multiplied by mup_output_mult / m_d (m_d: the readout's width ratio, D / D_base);
embeddings keep init and LR, times mup_input_mult; attention scores use
mup_attn_mult * sqrt(H_base) / H instead of 1/sqrt(H). Adam's epsilon is left alone.

completep (arXiv 2505.01618, Table 1 and Eq. 40) adds depth, with d = L / L_base: each
residual branch x (d)^-alpha; the LR of every tensor inside the blocks x d^(alpha-1);
output projections initialized for the base depth (1/sqrt(2 L_base)); Adam's epsilon
x 1/m_d for every tensor and a further d^-alpha inside the blocks (the gradients shrink
by those factors, so epsilon keeps its size relative to them).

Every multiplier is exactly 1 at the base shape, where mup and completep are sp.
"""

import dataclasses
import math

from llmjax.model import config as model_config
from llmjax.model.config import ModelConfig

EMBEDDING = 'embedding'  # token and position tables (and the tied output head)
UNEMBED = 'unembed'  # untied output head
HIDDEN = 'hidden'  # matrices reading the residual stream
OUTPUT = 'output'  # matrices writing into the residual stream
NORM = 'norm'  # scales of normalization layers
BIAS = 'bias'  # additive biases
GROUPS = (EMBEDDING, UNEMBED, HIDDEN, OUTPUT, NORM, BIAS)

# Groups that weight decay skips by default: shrinking them has no regularizing use.
NO_DECAY_GROUPS = (EMBEDDING, NORM, BIAS)

PARAMETRIZATIONS = ('sp', 'mup', 'completep')
# The fields a base shape replaces; the architecture (norm, MLP kind, positions) stays.
BASE_FIELDS = ('d_model', 'num_heads', 'num_kv_heads', 'head_dim', 'mlp_dim', 'num_layers')
BLOCKS = 'blocks'  # the module holding the stacked layers: its tensors are "inside the blocks"


def is_sp(cfg: ModelConfig) -> bool:
  return cfg.parametrization == 'sp'


def _scaled_shape(cfg: ModelConfig, width: int) -> dict:
  """The model's shape at another width: the same rule (the ladder's, when the model is a
  ladder shape), else heads scaled with the width at the model's head dim."""
  ladder = model_config.ladder_shape(cfg.d_model, cfg.num_layers)
  if all(getattr(cfg, k) == v for k, v in ladder.items()):
    shape = model_config.ladder_shape(width, cfg.num_layers)
    if shape['num_heads'] < 1:
      raise ValueError(f'model.mup_base_width={width}: the ladder has no heads at that width '
                       f'(head dim {shape["head_dim"]})')
    del shape['num_layers']
    return shape
  heads, kv = width * cfg.num_heads / cfg.d_model, width * cfg.num_kv_heads / cfg.d_model
  if heads != int(heads) or heads < 1:
    raise ValueError(f'model.mup_base_width={width}: the base would have {heads:g} heads of '
                     f'dim {cfg.head_dim} (the model has {cfg.num_heads} for D={cfg.d_model}); '
                     f'choose a base width that is a multiple of {cfg.d_model // cfg.num_heads}'
                     f', or a base preset (model.mup_base_preset)')
  if kv != int(kv) or kv < 1:
    raise ValueError(f'model.mup_base_width={width}: the kv grouping G={cfg.num_groups} '
                     f'cannot map onto a base of {int(heads)} heads ({kv:g} kv heads)')
  return dict(d_model=width, num_heads=int(heads), num_kv_heads=int(kv),
              head_dim=cfg.head_dim, mlp_dim=max(1, round(cfg.mlp_dim * width / cfg.d_model)))


def base_config(cfg: ModelConfig) -> ModelConfig:
  """The base shape of `cfg` as a ModelConfig under sp (itself under sp); ValueError
  names a base that cannot map onto the model."""
  if is_sp(cfg):
    return cfg
  if cfg.mup_base_preset:
    if cfg.mup_base_preset not in model_config.PRESETS:
      raise ValueError(f'model.mup_base_preset: unknown preset {cfg.mup_base_preset!r}')
    preset = model_config.PRESETS[cfg.mup_base_preset]
    shape = {k: preset[k] for k in BASE_FIELDS}
    if preset['num_heads'] // preset['num_kv_heads'] != cfg.num_groups:
      raise ValueError(f'model.mup_base_preset={cfg.mup_base_preset!r}: its kv grouping '
                       f'G={preset["num_heads"] // preset["num_kv_heads"]} differs from the '
                       f'model\'s G={cfg.num_groups}')
  elif cfg.mup_base_width and cfg.mup_base_width != cfg.d_model:
    shape = _scaled_shape(cfg, cfg.mup_base_width)
  else:
    shape = {k: getattr(cfg, k) for k in BASE_FIELDS}
  shape['num_layers'] = cfg.num_layers  # muP scales width only
  if cfg.parametrization == 'completep':
    shape['num_layers'] = cfg.mup_base_depth or (
        model_config.PRESETS[cfg.mup_base_preset]['num_layers'] if cfg.mup_base_preset
        else cfg.num_layers)
  return dataclasses.replace(cfg, **shape, parametrization='sp', mup_base_width=0,
                             mup_base_depth=0, mup_base_preset='')


def problems(cfg: ModelConfig) -> list[str]:
  """What is wrong with the parametrization fields of `cfg`, one line per problem."""
  out = []
  if cfg.parametrization not in PARAMETRIZATIONS:
    return [f'config.model.parametrization: unknown option {cfg.parametrization!r}; choose one '
            f'of {", ".join(PARAMETRIZATIONS)}']
  mults = dict(mup_input_mult=cfg.mup_input_mult, mup_output_mult=cfg.mup_output_mult,
               mup_attn_mult=cfg.mup_attn_mult, completep_alpha=cfg.completep_alpha)
  out += [f'config.model.{k}={v!r} must be positive' for k, v in mults.items() if not v > 0]
  for k in ('mup_base_width', 'mup_base_depth'):
    if getattr(cfg, k) < 0:
      out.append(f'config.model.{k}={getattr(cfg, k)} must be >= 0 (0: the model\'s own)')
  if is_sp(cfg):
    set_fields = [f.name for f in dataclasses.fields(ModelConfig)
                  if f.name.startswith(('mup_', 'completep_'))
                  and getattr(cfg, f.name) != f.default]
    out += [f'config.model.{k} has no effect under parametrization=\'sp\'; set '
            f'model.parametrization=mup or completep' for k in set_fields]
  elif not out:
    if cfg.mup_base_depth and cfg.parametrization != 'completep':
      out.append('config.model.mup_base_depth is for completep only (muP scales width)')
    try:
      base_config(cfg)
    except ValueError as e:
      out.append(f'config.{e}')
  return out


def width_ratio(cfg: ModelConfig) -> float:
  """m_d: the readout's width against the base's, D / D_base."""
  return cfg.d_model / base_config(cfg).d_model


def depth_ratio(cfg: ModelConfig) -> float:
  """L / L_base under completep, else 1."""
  return cfg.num_layers / base_config(cfg).num_layers


def init_std(cfg: ModelConfig, group: str, fan_in: int) -> float:
  if group == EMBEDDING:
    return cfg.init_std
  if group == UNEMBED:
    # Small logits at init; muP keeps the base's scale whatever the width.
    return 1.0 / (fan_in if is_sp(cfg) else base_config(cfg).d_model)
  if group == HIDDEN:
    return 1.0 / math.sqrt(fan_in)
  if group == OUTPUT:
    depth = base_config(cfg).num_layers if cfg.parametrization == 'completep' else cfg.num_layers
    return 1.0 / math.sqrt(fan_in * 2 * depth)
  raise ValueError(f'group {group!r} has no random init')


def query_zero_init(cfg: ModelConfig) -> bool:
  return not is_sp(cfg) and cfg.mup_query_zero_init


def readout_zero_init(cfg: ModelConfig) -> bool:
  return not is_sp(cfg) and cfg.mup_readout_zero_init


def attention_scale(cfg: ModelConfig) -> float | None:
  """The factor on q.k, or None for the standard 1/sqrt(H) (kept bit for bit, so sp and the
  base shape take the kernels' own default path)."""
  if is_sp(cfg):
    return None
  base_h = base_config(cfg).head_dim
  if base_h == cfg.head_dim and cfg.mup_attn_mult == 1.0:
    return None
  # mult * sqrt(H_base) / H: 1/H in the width limit, and 1/sqrt(H) at the base.
  return cfg.mup_attn_mult * math.sqrt(base_h) / cfg.head_dim


def branch_multiplier(cfg: ModelConfig) -> float:
  """The factor on each residual branch's output: (L / L_base)^-alpha under completep."""
  if cfg.parametrization != 'completep':
    return 1.0
  return depth_ratio(cfg) ** -cfg.completep_alpha


def input_multiplier(cfg: ModelConfig) -> float:
  return 1.0 if is_sp(cfg) else cfg.mup_input_mult


def logit_multiplier(cfg: ModelConfig) -> float:
  """output_mult / m_d: the logits stay O(1) as the readout's width grows."""
  if is_sp(cfg):
    return 1.0
  return cfg.mup_output_mult / width_ratio(cfg)


@dataclasses.dataclass(frozen=True)
class Rule:
  """What the parametrization does to one tensor."""

  path: str  # e.g. 'blocks/attn/wq'
  group: str
  fan_in: int
  base_fan_in: int  # of the same tensor in the base shape
  init_std: float  # 0 for zero init; nan for norms (ones) and biases (zeros)
  lr: float  # learning-rate multiplier
  eps: float  # Adam-epsilon multiplier
  forward: str  # forward multipliers this tensor's output meets, '' for none

  @property
  def width_ratio(self) -> float:
    return self.fan_in / self.base_fan_in


def _lr(cfg: ModelConfig, group: str, ratio: float, in_blocks: bool) -> float:
  lr = 1.0
  if group in (HIDDEN, OUTPUT) and not is_sp(cfg):
    lr = 1.0 / ratio
  if cfg.parametrization == 'completep' and in_blocks:
    lr *= depth_ratio(cfg) ** (cfg.completep_alpha - 1.0)
  return lr


def _eps(cfg: ModelConfig, in_blocks: bool) -> float:
  if cfg.parametrization != 'completep':
    return 1.0
  eps = 1.0 / width_ratio(cfg)
  return eps * depth_ratio(cfg) ** -cfg.completep_alpha if in_blocks else eps


def _forward(cfg: ModelConfig, path: str) -> str:
  name = path.split('/')[-1]
  parts = []
  if name in ('embedding', 'pos_embedding') and input_multiplier(cfg) != 1.0:
    parts.append(f'in x{input_multiplier(cfg):.4g}')
  readout = name == 'unembed' or (name == 'embedding' and cfg.tie_embeddings)
  if readout and logit_multiplier(cfg) != 1.0:
    parts.append(f'logits x{logit_multiplier(cfg):.4g}')
  if name in ('wq', 'wk') and attention_scale(cfg) is not None:
    parts.append(f'scores x{attention_scale(cfg):.4g} (sp 1/sqrt(H)={cfg.head_dim**-0.5:.4g})')
  if name in ('wo', 'w_out', 'bo', 'b_out') and branch_multiplier(cfg) != 1.0:
    parts.append(f'branch x{branch_multiplier(cfg):.4g}')
  return ', '.join(parts)


def _init(cfg: ModelConfig, group: str, name: str, fan_in: int) -> float:
  if group in (NORM, BIAS):
    return math.nan
  if (name == 'wq' and query_zero_init(cfg)) or (name == 'unembed' and readout_zero_init(cfg)):
    return 0.0
  return init_std(cfg, group, fan_in)


def tensor_rules(cfg: ModelConfig, params: dict, base_params: dict) -> dict[str, Rule]:
  """Rule per tensor. `params`, `base_params`: 'a/b/c' -> nnx.Param (abstract is enough) of
  the model and of its base shape (`base_config`), each tagged with `group` and `fan_in`."""
  rules = {}
  for path, var in params.items():
    if path not in base_params:
      raise ValueError(f'tensor {path} has no counterpart in the base shape')
    fan_in, base_fan_in = var.fan_in, base_params[path].fan_in
    ratio = fan_in / base_fan_in
    in_blocks = path.split('/')[0] == BLOCKS
    rules[path] = Rule(path=path, group=var.group, fan_in=fan_in, base_fan_in=base_fan_in,
                       init_std=_init(cfg, var.group, path.split('/')[-1], fan_in),
                       lr=_lr(cfg, var.group, ratio, in_blocks), eps=_eps(cfg, in_blocks),
                       forward=_forward(cfg, path))
  return rules
