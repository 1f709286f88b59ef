"""Train-step time and MFU of model variants, measured side by side.

  python benchmarks/step_time.py --config experiments/base.py --steps 10 \
      --variants "scan_layers=False" "attention_impl='xla'" "remat='full'"
  python benchmarks/step_time.py --attention_impls einsum blockwise xla
  python benchmarks/step_time.py --allocators tcmalloc hugetlb system --rounds 3

Each variant is a comma-separated list of overrides `section.field=value` (section defaults
to model; values are Python literals), applied to the experiment; `--attention_impls` adds
one variant per model.attention_impl. All variants run in one process, alternating step by
step, and each figure is the median over steps after a warm-up (compilation).

`--allocators` compares memory allocators (llmjax/allocator.py), which need a process each:
every round starts one child process per allocator in turn, each timing all variants; the
figure is the median over rounds of the children's medians. Compare ratios within one run:
machines are shared and noisy.
"""

import argparse
import ast
import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from llmjax import allocator

if __name__ == '__main__':  # the entry points' allocator, for figures users will see
  allocator.ensure()

import jax  # noqa: E402

from llmjax import configs, flops, optim, sharding, step
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


def build_variant(exp, data):
  """A function running one train step of `exp` (waiting for it)."""
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  tx, _ = optim.make(exp.optim, exp.model, exp.train.steps)
  with sharding.activation_rules(mesh, exp.mesh.rules):
    graphdef, state, shardings = step.create_sharded_state(exp.model, tx, 0, mesh,
                                                           exp.mesh.rules)
    batch_sharding = sharding.data_sharding(mesh, exp.mesh.rules)
    step_fn = step.jit_train_step(graphdef, tx, exp.train, shardings, batch_sharding)
  rows = iter(pipeline.train_dataset(data, exp.data))
  batch = step.device_batch(next(rows)['batch'], batch_sharding)
  holder = [state]

  def run():
    with sharding.activation_rules(mesh, exp.mesh.rules):
      holder[0], metrics = step_fn(holder[0], batch)
    jax.block_until_ready(metrics)

  return run


def time_variants(exp, variants: list[str], steps: int) -> dict[str, dict]:
  """Per variant: compile (first step) seconds and median step seconds, steps alternating."""
  data = pipeline.load(exp.data)
  runs = {v: build_variant(_apply(exp, v), data) for v in variants}
  times = {v: [] for v in variants}
  compile_s = {}
  for i in range(steps + 1):
    if i == 1:
      usage = resource.getrusage(resource.RUSAGE_SELF)
    for v, run in runs.items():
      start = time.perf_counter()
      run()
      elapsed = time.perf_counter() - start
      if i:
        times[v].append(elapsed)
      else:  # the first step compiles
        compile_s[v] = elapsed
  end = resource.getrusage(resource.RUSAGE_SELF)
  timed_steps = steps * len(variants)
  # Page faults and system time per step: what the allocator changes, and far less
  # sensitive to other jobs' load than wall time.
  per_step = {'minor_faults': (end.ru_minflt - usage.ru_minflt) / timed_steps,
              'system_s': (end.ru_stime - usage.ru_stime) / timed_steps,
              'user_s': (end.ru_utime - usage.ru_utime) / timed_steps}
  return {v: {'compile_s': compile_s[v], 'step_s': statistics.median(times[v]), **per_step}
          for v in variants}


def _child_times(args, name: str) -> dict[str, dict]:
  """Runs this script's variants in a child process under allocator `name`."""
  # Only what `name` sets: none of this process's own allocator settings.
  env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'GLIBC_TUNABLES')}
  env[allocator.CHOICE_VAR] = name
  wanted, changes = allocator.plan(env, allocator.find_tcmalloc())
  if wanted != name:
    raise SystemExit(f'allocator {name} is not available here (would get {wanted})')
  env.update(changes, **{allocator.DONE_VAR: wanted})
  cmd = [sys.executable, __file__, '--config', args.config, '--steps', str(args.steps),
         '--child', '--variants', *args.variants]
  out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def compare_allocators(args) -> None:
  per_round = {name: [] for name in args.allocators}
  for _ in range(args.rounds):
    for name in args.allocators:
      result = _child_times(args, name)
      if result.pop('allocator') != name:
        raise SystemExit(f'the child process did not run with {name}')
      per_round[name].append(result)
  base = None
  print(f'allocators, median over {args.rounds} rounds of each child\'s median of '
        f'{args.steps} steps; load average {os.getloadavg()[0]:.2f} at the end')
  for v in args.variants:
    for name, results in per_round.items():
      step_s = statistics.median(r[v]['step_s'] for r in results)
      base = base or step_s
      faults, system_s, user_s = (statistics.median(r[v][k] for r in results)
                                  for k in ('minor_faults', 'system_s', 'user_s'))
      print(f"{name:9s} {v or 'config as is':32s} step {step_s * 1e3:7.1f} ms  "
            f"x{step_s / base:5.2f}  per step: {faults:9,.0f} minor faults, "
            f"CPU {user_s:5.2f} s user + {system_s:5.2f} s system")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='experiments/base.py')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--variants', nargs='*', default=[''])
  parser.add_argument('--attention_impls', nargs='*', default=[],
                      help='adds one variant per model.attention_impl')
  parser.add_argument('--allocators', nargs='*', default=[], choices=allocator.CHOICES[1:],
                      help='compare these allocators, one child process each per round')
  parser.add_argument('--rounds', type=int, default=3, help='with --allocators')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.variants += [f"attention_impl='{impl}'" for impl in args.attention_impls]
  if args.allocators:
    return compare_allocators(args)
  exp = configs.build(_load_config(args.config), jax.device_count())
  results = time_variants(exp, args.variants, args.steps)
  if args.child:
    return print(json.dumps({**results, 'allocator': allocator.active()}))
  peak, source = flops.peak_flops_per_device(0.0)
  peak *= jax.device_count()
  print(f'peak {peak / 1e9:.0f} GFLOP/s ({source}); allocator {allocator.active()}; '
        f'load average {os.getloadavg()[0]:.2f}')
  tokens = exp.data.global_batch_size * exp.data.seq_len
  base = None
  for v, r in results.items():
    base = base or r['step_s']
    fpt = flops.flops_per_token(_apply(exp, v).model, exp.data.seq_len)
    print(f"{v or 'config as is':45s} step {r['step_s'] * 1e3:8.1f} ms  "
          f"x{r['step_s'] / base:5.2f}  {tokens / r['step_s']:9,.0f} tok/s  "
          f"MFU {100 * tokens / r['step_s'] * fpt / peak:5.1f}%  compile {r['compile_s']:.1f}s")


if __name__ == '__main__':
  main()
