"""Logical axis names, logical -> mesh rules, the device mesh, activation constraints.

Parameters are created with logical axis names (`embed`, `mlp`, ...); activations
are constrained with logical names too (`batch`, `act_embed`, ...). Only the rules
table, a config value, says which mesh axis each name is split over. The mesh
has three axes:
  data    pure data parallelism (parameters replicated); with `dcn_data` > 1 its
          outer part spans slices or hosts joined by the slower data-center network
  fsdp    data parallelism with parameters and optimizer state sharded (ZeRO-3)
  tensor  tensor (model) parallelism over heads, MLP width and vocabulary
"""

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from flax.core import spmd
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

# Logical names of parameter axes.
# 'buckets': relative-position buckets (T5), a small table kept whole on every device.
PARAM_AXES = ('vocab', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', 'layers', 'buckets')
# Logical names of activation axes. Activations have their own names because the
# model dim of a weight is sharded over fsdp while that of an activation is not.
ACTIVATION_AXES = ('batch', 'length', 'act_embed', 'act_heads', 'act_kv_heads', 'act_mlp',
                   'act_vocab')
LOGICAL_AXES = PARAM_AXES + ACTIVATION_AXES

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_kv_heads', 'tensor'),
    ('act_mlp', 'tensor'),
    ('act_vocab', 'tensor'),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('mlp', 'tensor'),
    ('layers', None),
    ('buckets', None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1  # data-parallel ways; -1 takes the devices left over
  fsdp: int = 1  # fully-sharded data-parallel ways
  tensor: int = 1  # tensor-parallel ways
  dcn_data: int = 1  # of the data ways, how many span slices/hosts (DCN); 1: one ICI domain
  rules: tuple = DEFAULT_RULES  # logical axis name -> mesh axis (or axes, or None)


def make_mesh(data: int, fsdp: int, tensor: int, devices=None, dcn_data: int = 1) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices; one size may be -1 (fills the rest).

  With `dcn_data` > 1 the data axis is split into that many groups of whole
  slices (TPU multislice), else whole processes (one per host), and only the
  data axis crosses groups: fsdp and tensor collectives stay on the fast
  interconnect. In one process (CPU tests) the devices are split into equal
  groups, which gives the same mesh as `dcn_data` = 1.
  """
  devices = jax.devices() if devices is None else devices
  shape = resolve_mesh_shape((data, fsdp, tensor), len(devices))
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if dcn_data == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  if dcn_data < 1 or shape[0] % dcn_data:
    raise ValueError(f'mesh.dcn_data={dcn_data} must be a positive divisor of the data axis '
                     f'({shape[0]})')
  per_group = (shape[0] // dcn_data, *shape[1:])
  groups = [mesh_utils.create_device_mesh(per_group, group, allow_split_physical_axes=True)
            for group in _dcn_groups(devices, dcn_data)]
  return Mesh(np.concatenate(groups, axis=0), MESH_AXES, axis_types=axis_types)


def _dcn_groups(devices, num_groups: int) -> list[list]:
  """Devices split into `num_groups` groups of whole granules (slices, else processes)."""
  slices = {getattr(d, 'slice_index', 0) for d in devices}
  granule = ((lambda d: d.slice_index) if len(slices) > 1 else (lambda d: d.process_index))
  ordered = sorted(devices, key=lambda d: (granule(d), d.id))
  num_granules = len({granule(d) for d in devices})
  if num_granules > 1 and num_granules % num_groups:
    kind = 'slices' if len(slices) > 1 else 'processes'
    raise ValueError(f'mesh.dcn_data={num_groups} does not divide the {num_granules} {kind}')
  size = len(ordered) // num_groups
  groups = [ordered[i * size:(i + 1) * size] for i in range(num_groups)]
  if num_granules > 1 and any(len({granule(d) for d in g}) != num_granules // num_groups
                              for g in groups):
    raise ValueError(f'mesh.dcn_data={num_groups}: the {num_granules} slices or processes '
                     f'have different numbers of devices')
  return groups


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces a -1 by what fills `num_devices`; errors name the mismatch."""
  shape = tuple(int(s) for s in shape)
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh shape {shape}: sizes must be positive, with at most one -1')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f'mesh shape {shape} cannot fill {num_devices} devices')
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f'mesh shape {dict(zip(MESH_AXES, shape))} has {math.prod(shape)} '
                     f'devices but {num_devices} are available')
  return shape


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], rules: Rules,
                    mesh_shape: dict[str, int]) -> P:
  """PartitionSpec for an array whose axes have logical `names`.

  A mesh axis is used at most once per array, and is skipped for an array axis
  whose size it does not divide (that axis stays replicated over it), so a
  small model (say 2 kv heads on a tensor axis of 4) still runs.
  """
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    target = table.get(name) if name is not None else None
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    kept = []
    for axis in axes:
      n = mesh_shape.get(axis, 1)
      if axis in used or n == 1 or size % (math.prod(mesh_shape[a] for a in kept) * n):
        continue
      kept.append(axis)
    used.update(kept)
    spec.append(kept[0] if len(kept) == 1 else (tuple(kept) or None))
  return P(*spec)


def param_shardings(abstract_state, mesh: Mesh, rules: Rules):
  """NamedShardings for a pytree of nnx Variables (params or optimizer moments).

  Leaves without logical names (step counters, scalars) are replicated.
  """
  def one(leaf):
    names = getattr(leaf, 'out_sharding', None) if isinstance(leaf, nnx.Variable) else None
    value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
    spec = P() if names is None else logical_to_spec(names, value.shape, rules, mesh.shape)
    sharding = NamedSharding(mesh, spec)
    return leaf.replace(sharding) if isinstance(leaf, nnx.Variable) else sharding

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules):
  """Makes `constrain` active: sets the mesh and the rules while tracing a step."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(rules)):
    yield


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `activation_rules`."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = spmd.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  spec = logical_to_spec(names, x.shape, rules, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, spec)


def data_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a batch: leading axis by the 'batch' rule, the rest replicated."""
  batch_axes = dict(rules).get('batch')
  return NamedSharding(mesh, P(batch_axes, *([None] * (ndim - 1))))


def data_parallel_size(mesh_shape: dict[str, int], rules: Rules) -> int:
  """How many ways the global batch is split."""
  axes = dict(rules).get('batch') or ()
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh_shape.get(a, 1) for a in axes]))
