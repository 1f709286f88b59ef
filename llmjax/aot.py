"""Ahead-of-time compilation of the train step for a mesh, and its memory per device.

  python -m llmjax.main --config experiments/base.py --config.model.preset=llama3.2-1b \
      --compile_only --num_fake_devices=64 --config.mesh.fsdp=16 --config.mesh.tensor=4

checks on any machine that a run's shardings compile for a 64-chip pod and how
much memory each chip needs, without reading data or writing a workdir. The
parameter and optimizer-state bytes come from their shardings (exact for any
platform); activations and temporaries come from XLA's analysis of the program
compiled for the platform at hand, so on fake CPU devices they estimate an
accelerator's (XLA's fusion and layouts differ by platform).
"""

import math
import time

import jax
import jax.numpy as jnp

from llmjax import flops, optim, sharding, step
from llmjax.configs import Experiment
from llmjax.data import pipeline
from llmjax.data.pipeline import DataConfig

UNITS = ('B', 'KiB', 'MiB', 'GiB', 'TiB')


def abstract_batch(cfg: DataConfig, batch_sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and sharding of a global training batch, as the pipeline makes it: span
  corruption's rows are an encoder side of seq_len tokens and shorter decoder rows."""
  rows, length = cfg.global_batch_size, pipeline.target_length(cfg)
  dtypes = {'inputs': jnp.int32, 'targets': jnp.int32, 'positions': jnp.int32,
            'segment_ids': jnp.int32, 'weights': jnp.float32}
  encoder = {}
  if cfg.objective == 'span':
    encoder = {k: jax.ShapeDtypeStruct((rows, cfg.seq_len), jnp.int32, sharding=batch_sharding)
               for k in pipeline.ENCODER_KEYS}
  return {**{k: jax.ShapeDtypeStruct((rows, length), d, sharding=batch_sharding)
             for k, d in dtypes.items()}, **encoder}


def compile_train_step(exp: Experiment, mesh: jax.sharding.Mesh):
  """(compiled train step, abstract state with its shardings); allocates no state."""
  tx, _ = optim.make(exp.optim, exp.model, exp.train.steps)
  rules = exp.mesh.rules
  with sharding.activation_rules(mesh, rules):
    graphdef, state, shardings = step.abstract_state(exp.model, tx, exp.train.seed, mesh, rules,
                                                     exp.lora)
    batch_sharding = sharding.data_sharding(mesh, rules)
    step_fn = step.jit_train_step(graphdef, tx, exp.train, shardings, batch_sharding, exp.lora)
    compiled = step_fn.lower(state, abstract_batch(exp.data, batch_sharding)).compile()
  return compiled, state


def bytes_per_device(tree) -> int:
  """Bytes of one device's shard of every array in `tree` (ShapeDtypeStructs with
  shardings); shards are equal because the sharding rules only split evenly."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def memory_report(exp: Experiment, mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Bytes per device of the train step on `mesh`, and the compile time."""
  start = time.perf_counter()
  compiled, state = compile_train_step(exp, mesh)
  stats = compiled.memory_analysis()
  donated = stats.alias_size_in_bytes  # the new state reuses the old state's buffers
  return {
      'params_bytes': bytes_per_device(state.params),
      'adapter_bytes': bytes_per_device(state.adapters),  # LoRA's; 0 without
      'optimizer_bytes': bytes_per_device(state.opt_state),  # of the adapters under LoRA
      'arguments_bytes': stats.argument_size_in_bytes,
      'temp_bytes': stats.temp_size_in_bytes,
      'outputs_not_donated_bytes': stats.output_size_in_bytes - donated,
      'code_bytes': stats.generated_code_size_in_bytes,
      'peak_bytes': (stats.argument_size_in_bytes + stats.output_size_in_bytes - donated +
                     stats.temp_size_in_bytes),
      'compile_s': time.perf_counter() - start,
  }


def format_report(exp: Experiment, mesh: jax.sharding.Mesh, report: dict[str, float]) -> str:
  params = flops.param_counts(exp.model)['total']
  rows_per_device = exp.data.global_batch_size // sharding.data_parallel_size(
      dict(mesh.shape), exp.mesh.rules)
  memory = [('parameters', report['params_bytes']),
            *([('LoRA adapters', report['adapter_bytes'])] if report['adapter_bytes'] else []),
            ('optimizer state', report['optimizer_bytes']),
            ('inputs (state and batch)', report['arguments_bytes']),
            ('activations and temporaries', report['temp_bytes']),
            ('outputs not donated', report['outputs_not_donated_bytes']),
            ('peak (inputs + outputs + temporaries)', report['peak_bytes'])]
  lines = [f'llmjax: compiled the train step of {params:,} parameters on {mesh.size} '
           f'{mesh.devices.flat[0].platform} devices, mesh {dict(mesh.shape)}, '
           f'{rows_per_device} x {exp.data.seq_len} tokens per device, in '
           f'{report["compile_s"]:.1f} s',
           'memory per device:']
  lines += [f'  {name:<40}{human_bytes(size):>12}' for name, size in memory]
  lines += [f'warning: {w}' for w in axis_warnings(exp, dict(mesh.shape))]
  return '\n'.join(lines)


def human_bytes(size: float) -> str:
  """'87.03 MiB': the largest binary unit that keeps the number at least 1."""
  unit = 0
  while abs(size) >= 1024 and unit < len(UNITS) - 1:
    size, unit = size / 1024, unit + 1
  return f'{size:.0f} B' if unit == 0 else f'{size:.2f} {UNITS[unit]}'


def axis_warnings(exp: Experiment, mesh_shape: dict[str, int]) -> list[str]:
  """Head axes a mesh axis cannot split: sharding.logical_to_spec then leaves them
  replicated over it, so the mesh axis buys no memory for them (it still compiles)."""
  rules, found = dict(exp.mesh.rules), []
  for name, field, count in (('heads', 'num_heads', exp.model.num_heads),
                             ('kv_heads', 'num_kv_heads', exp.model.num_kv_heads)):
    target = rules.get(name)
    for axis in (target,) if isinstance(target, str) else tuple(target or ()):
      n = mesh_shape.get(axis, 1)
      if n > 1 and count % n:
        how = 'exceeds' if n > count else 'does not divide'
        found.append(f'the {axis} axis ({n} devices) {how} model.{field}={count}: the '
                     f'{name} weights stay replicated over it (unused for them); use a '
                     f'{axis} size that divides {count}')
  return found
