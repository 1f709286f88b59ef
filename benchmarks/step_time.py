"""Train-step time and MFU of model variants, measured side by side in one process.

  python benchmarks/step_time.py --config experiments/base.py --steps 10 \
      --variants "scan_layers=False" "attention_impl=xla" "remat=full"

Each variant is a comma-separated list of overrides `section.field=value`
(section defaults to `model`), applied to the experiment. Prints seconds per step, tokens/s and MFU for each; compare
ratios within one run (machines are shared and noisy).
"""

import argparse
import ast
import dataclasses
import functools
import importlib.util
import time

import jax
import numpy as np

from llmjax import configs, flops, optim, sharding, train
from llmjax.data import pipeline


def _load_config(path: str):
  path, _, variant = path.partition(':')
  spec = importlib.util.spec_from_file_location('experiment', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def _apply(exp, variant: str):
  """The experiment with `section.field=value` overrides (section defaults to model)."""
  sections: dict[str, dict] = {}
  for item in filter(None, variant.split(',')):
    key, value = item.split('=')
    section, _, field = key.strip().rpartition('.')
    sections.setdefault(section or 'model', {})[field] = ast.literal_eval(value)
  return dataclasses.replace(exp, **{name: dataclasses.replace(getattr(exp, name), **fields)
                                     for name, fields in sections.items()})


def time_variant(exp, data, steps: int) -> dict:
  model_cfg = exp.model
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  tx, _ = optim.make(exp.optim, model_cfg, exp.train.steps)
  with sharding.activation_rules(mesh, exp.mesh.rules):
    graphdef, state, shardings = step.create_sharded_state(model_cfg, tx, 0, mesh,
                                                           exp.mesh.rules)
    batch_sharding = sharding.data_sharding(mesh, exp.mesh.rules)
    step_fn = step.jit_train_step(graphdef, tx, exp.train, shardings, batch_sharding)
    rows = iter(pipeline.train_dataset(data, exp.data))
    batches = [step.device_batch(next(rows)['batch'], batch_sharding) for _ in range(steps + 1)]
    start = time.perf_counter()
    state, m = step_fn(state, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - start
    times = []
    for batch in batches[1:]:
      start = time.perf_counter()
      state, m = step_fn(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - start)
  step_s = float(np.median(times))
  tokens = exp.data.global_batch_size * exp.data.seq_len
  fpt = flops.flops_per_token(model_cfg, exp.data.seq_len)
  return {'compile_s': compile_s, 'step_s': step_s, 'tokens_per_s': tokens / step_s,
          'flops_per_token': fpt}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='experiments/base.py')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--variants', nargs='*', default=[''])
  args = parser.parse_args()
  exp = configs.build(_load_config(args.config), jax.device_count())
  data = pipeline.load(exp.data)
  peak = flops.measure_matmul_flops() * jax.device_count()
  print(f'peak (measured matmul): {peak / 1e9:.0f} GFLOP/s')
  base = None
  for variant in args.variants:
    r = time_variant(_apply(exp, variant), data, args.steps)
    base = base or r['step_s']
    print(f"{variant or 'config as is':45s} step {r['step_s'] * 1e3:8.1f} ms  "
          f"x{r['step_s'] / base:5.2f}  {r['tokens_per_s']:9,.0f} tok/s  "
          f"MFU {100 * r['tokens_per_s'] * r['flops_per_token'] / peak:5.1f}%  "
          f"compile {r['compile_s']:.1f}s")


if __name__ == '__main__':
  main()
