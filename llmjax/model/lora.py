"""LoRA (low-rank adaptation): a trainable update (alpha / r) * A @ B beside chosen frozen
weight matrices, merged into them as W + (alpha / r) * A @ B.

Functional, on the parameter tree: `init` makes the adapters of a base model's parameters,
`merge` forms the weights the model computes with. The train step merges inside its loss
(gradients flow to A and B only; the base never enters the optimizer), and every reader of a
run folder gets the merged weights, so evaluation, generation and export see one plain
model. A tensor's axes split into `layers` (stacked blocks, adapted per layer), input axes
(their product is the tensor's fan-in) and output axes; A is (layers, inputs..., r) and
B is (layers, r, outputs...), each axis keeping its logical name, so adapters shard like
their base tensor.

Why not a library: qwix's LoRA provider creates adapters while intercepting a concrete
call, on the module that makes it; llmjax applies its stacked blocks from a split state
inside lax.scan, so the adapters would belong to transient per-layer copies (and it fails
on these models: see the LoRA note in tests/test_lora.py). flax's nnx.LoRA wraps a
Linear-shaped module (x @ W of one input and one output axis); llmjax's weights are raw
einsum parameters of several axes (DNH, NHD).
"""

import dataclasses
import fnmatch
import math

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.model import parametrization as pz

ADAPTER_AXIS = None  # the rank axis: small, never sharded
ADAPTABLE_GROUPS = (pz.EMBEDDING, pz.UNEMBED, pz.HIDDEN, pz.OUTPUT)  # matrices, not norms/biases


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 0  # r of the update (alpha / r) * A @ B; 0: LoRA off, every parameter trains
  alpha: float = 16.0  # the update's scale is alpha / rank (so alpha fixes its size over ranks)
  # Tensors adapted: parametrization groups (hidden, output, embedding, unembed) or glob
  # patterns over parameter names ('blocks/attn/w[qv]'); norms and biases never are.
  targets: tuple[str, ...] = (pz.HIDDEN, pz.OUTPUT)


def enabled(cfg: LoraConfig) -> bool:
  return cfg.rank > 0


def scale(cfg: LoraConfig) -> float:
  return cfg.alpha / cfg.rank


def _named(params) -> list[tuple[str, nnx.Variable]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_variable)
  return [(_path_name(path), var) for path, var in flat]


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


def _split(var: nnx.Variable) -> tuple[int, int] | None:
  """(number of leading `layers` axes, number of input axes after them) of a matrix;
  None for a tensor with fewer than two axes besides `layers` (norm scales, biases)."""
  names = tuple(getattr(var, 'out_sharding', None) or (None,) * var.ndim)
  stacked = next((i for i, n in enumerate(names) if n != 'layers'), len(names))
  dims = var.shape[stacked:]
  if len(dims) < 2:
    return None
  fan_in = getattr(var, 'fan_in', 1)
  for num_in in range(1, len(dims)):
    if math.prod(dims[:num_in]) == fan_in:
      return stacked, num_in
  return stacked, 1  # a lookup table (embedding): its first axis is the one indexed


def matrices(params) -> list[str]:
  """Names of the tensors LoRA can adapt: those with two or more axes besides `layers`."""
  return [name for name, var in _named(params) if _split(var) is not None]


def _selects(target: str, name: str, group: str) -> bool:
  return target == group if target in pz.GROUPS else fnmatch.fnmatchcase(name, target)


def targeted(params, cfg: LoraConfig) -> list[str]:
  """Names of the tensors `cfg.targets` selects, in parameter order."""
  groups = {name: getattr(var, 'group', None) for name, var in _named(params)}
  return [name for name in matrices(params)
          if any(_selects(t, name, groups[name]) for t in cfg.targets)]


def problems(params, cfg: LoraConfig) -> list[str]:
  """What is wrong with `cfg` for a model of these (abstract) parameters (None: check
  rank and alpha only)."""
  if cfg.rank < 0:
    return [f'lora.rank={cfg.rank} must not be negative (0: LoRA off)']
  if not enabled(cfg):
    return []
  found = []
  if not cfg.alpha > 0:
    found.append(f'lora.alpha={cfg.alpha!r} must be positive')
  if params is None:  # no model to match the targets against
    return found
  names = matrices(params)
  groups = {name: getattr(var, 'group', None) for name, var in _named(params)}
  for target in cfg.targets or ('(none)',):
    if not any(_selects(target, name, groups[name]) for name in names):
      found.append(f'lora.targets: {target!r} matches no adaptable parameter; groups: '
                   f'{", ".join(ADAPTABLE_GROUPS)}; parameter names: {", ".join(names)}')
  return found


def _adapter(cfg: LoraConfig, var: nnx.Variable, key: jax.Array) -> dict:
  """{'a', 'b'} for one tensor: A ~ N(0, 1/fan_in), B = 0, so the update starts at 0."""
  stacked, num_in = _split(var)
  names = tuple(getattr(var, 'out_sharding', None) or (None,) * var.ndim)
  lead, ins, outs = (var.shape[:stacked], var.shape[stacked:stacked + num_in],
                     var.shape[stacked + num_in:])
  a_shape, b_shape = (*lead, *ins, cfg.rank), (*lead, cfg.rank, *outs)
  a_names = (*names[:stacked + num_in], ADAPTER_AXIS)
  b_names = (*names[:stacked], ADAPTER_AXIS, *names[stacked + num_in:])
  std = 1.0 / math.sqrt(math.prod(ins))
  a = std * jax.random.normal(key, a_shape, jnp.float32)

  def param(value, axes):
    return nnx.Param(value.astype(var.dtype), out_sharding=axes, eager_sharding=False,
                     group=var.group, fan_in=var.fan_in)

  return {'a': param(a, a_names), 'b': param(jnp.zeros(b_shape), b_names)}


def init(params, cfg: LoraConfig, key: jax.Array) -> dict:
  """The adapters of `cfg` for these base parameters: a nested dict shaped like the
  parameter tree ({'blocks': {'attn': {'wq': {'a': A, 'b': B}}}}); {} when LoRA is off."""
  if not enabled(cfg):
    return {}
  named = dict(_named(params))
  adapters = {}
  for index, name in enumerate(targeted(params, cfg)):
    node = adapters
    *parents, leaf = name.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = _adapter(cfg, named[name], jax.random.fold_in(key, index))
  return adapters


def abstract(params, cfg: LoraConfig) -> dict:
  """`init`'s adapters as shapes and dtypes (nnx.Params of ShapeDtypeStructs); allocates
  nothing."""
  return jax.eval_shape(lambda: init(params, cfg, jax.random.key(0)))


def delta(adapter: dict, var: nnx.Variable, update_scale: float) -> jax.Array:
  """The float32 update (alpha / r) * A @ B of one tensor, in the tensor's shape: per
  layer, the (fan-in x fan-out) matrix A @ B of rank at most r."""
  stacked, _ = _split(var)
  a, b = adapter['a'][...].astype(jnp.float32), adapter['b'][...].astype(jnp.float32)
  lead, rank = var.shape[:stacked], a.shape[-1]
  product = jnp.matmul(a.reshape(*lead, -1, rank), b.reshape(*lead, rank, -1))
  return (update_scale * product).reshape(var.shape)


def merge(params, adapters: dict, cfg: LoraConfig):
  """`params` with each adapted tensor replaced by W + (alpha / r) * A @ B (computed in
  float32, stored in W's dtype); the others are the same arrays."""
  if not adapters:
    return params
  flat = {name[:-2]: None for name, _ in _named(adapters) if name.endswith('/a')}
  named_adapters = dict(_named(adapters))
  update_scale = scale(cfg)

  def one(path, var):
    name = _path_name(path)
    if name not in flat:
      return var
    adapter = {k: named_adapters[f'{name}/{k}'] for k in ('a', 'b')}
    merged = var[...].astype(jnp.float32) + delta(adapter, var, update_scale)
    return var.replace(merged.astype(var.dtype))

  return jax.tree_util.tree_map_with_path(one, params, is_leaf=_is_variable)
