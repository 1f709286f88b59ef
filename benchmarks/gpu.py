"""The GPU checks in one run: train-step MFU of three shapes, then bf16 against float32.

  python benchmarks/gpu.py --out gpu.json          # one NVIDIA GPU (H100/H200: ~8 min)
  python benchmarks/gpu.py --smoke --out s.json    # the same code on CPU, tiny, in a minute
  benchmarks/gpu.sh OUT_DIR                        # this, the muP coord check, nvidia-smi

Throughput: each shape (ladder-768x12 ~125M, ladder-1024x16 ~300M, llama3.2-1b) in bf16
compute with float32 parameters, scan over layers, T=2048, is timed under each variant
(attention_impl cudnn or xla x remat none, dots_saveable or full). A figure is the median
step after compilation; MFU is 6N+attention FLOPs per token (llmjax.flops) x tokens/s over
the datasheet peak of the compute dtype. A variant that runs out of memory or does not
compile is reported as such and skipped; once --budget_s has passed, the remaining
variants are skipped (said so) and the numerics still run.

Numerics: one model trained from the same initialization on the same batches with
model.dtype float32 and bfloat16; prints both final losses (mean of the last 10 steps)
and their relative gap. bf16 may cost a little loss; a gap over 2% is flagged.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from step_time import _apply, _load_config, build_variant  # noqa: E402  (the same step)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llmjax import configs, flops, optim, sharding, step  # noqa: E402
from llmjax.data import pipeline  # noqa: E402
from llmjax.model import config as model_config  # noqa: E402

SHAPES = {'ladder-768x12': 16, 'ladder-1024x16': 16, 'llama3.2-1b': 8}  # preset: batch B
VARIANTS = [f"attention_impl='{impl}',remat='{remat}'" for impl in ('cudnn', 'xla')
            for remat in ('none', 'dots_saveable', 'full')]
SMOKE_SHAPES = {'ladder-64x2': 4}
SMOKE_VARIANTS = [f"attention_impl='{impl}',remat='{remat}'" for impl in ('xla', 'einsum')
                  for remat in ('none', 'full')]
GAP_FLAG = 0.02


def _experiment(preset: str, batch: int, seq_len: int, overrides: str = ''):
  config = _load_config(f'{os.path.dirname(__file__)}/../experiments/preset.py:{preset}')
  config.data.seq_len = seq_len
  context = model_config.PRESETS[preset].get('max_len', model_config.ModelConfig.max_len)
  config.model.max_len = max(seq_len, context)
  config.data.global_batch_size = batch
  config.model.scan_layers = True
  return _apply(configs.build(config, jax.device_count()), overrides)


def time_shape(preset: str, batch: int, args, deadline: float) -> list[dict]:
  """One row per variant: step seconds, tokens/s and MFU, or why it has none."""
  rows = []
  for variant in args.variants:
    row = {'shape': preset, 'batch': batch, 'seq_len': args.seq_len, 'variant': variant}
    rows.append(row)
    if time.time() > deadline:
      row['skipped'] = f'time budget of {args.budget_s:.0f} s spent'
      continue
    try:
      exp = _experiment(preset, batch, args.seq_len, variant)
      run = build_variant(exp, pipeline.load(exp.data))
      start = time.perf_counter()
      run()
      row['compile_s'] = time.perf_counter() - start
      times = []
      for _ in range(args.steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    except Exception as e:  # out of memory, an attention kernel this GPU lacks, ...
      row['failed'] = f'{type(e).__name__}: {str(e).splitlines()[0][:160]}'
      continue
    finally:
      run = None
      gc.collect()
    peak, source = flops.peak_flops_per_device(0.0, exp.model.dtype)
    tokens_s = batch * args.seq_len / statistics.median(times)
    row.update(step_s=statistics.median(times), tokens_s=tokens_s, peak_source=source,
               mfu=tokens_s * flops.flops_per_token(exp.model, args.seq_len) /
               (peak * jax.device_count()))
  return rows


def train_losses(exp, steps: int) -> list[float]:
  """Training losses of `exp` from seed 0 on the pipeline's first `steps` batches."""
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  tx, _ = optim.make(exp.optim, exp.model, steps)
  losses = []
  with sharding.activation_rules(mesh, exp.mesh.rules):
    graphdef, state, shardings = step.create_sharded_state(exp.model, tx, 0, mesh,
                                                           exp.mesh.rules)
    batch_sharding = sharding.data_sharding(mesh, exp.mesh.rules)
    step_fn = step.jit_train_step(graphdef, tx, exp.train, shardings, batch_sharding)
    rows = iter(pipeline.train_dataset(pipeline.load(exp.data), exp.data))
    for _ in range(steps):
      state, metrics = step_fn(state, step.device_batch(next(rows)['batch'], batch_sharding))
      losses.append(float(metrics['loss']))
  return losses


def numerics(args) -> dict:
  preset, batch = args.numerics_shape.split(':')
  finals = {}
  for dtype in ('float32', 'bfloat16'):
    exp = _experiment(preset, int(batch), args.numerics_seq_len,
                      f"dtype='{dtype}',attention_impl='auto',remat='none',"
                      f"optim.warmup_steps={args.numerics_steps // 10}")
    finals[dtype] = float(np.mean(train_losses(exp, args.numerics_steps)[-10:]))
  gap = finals['bfloat16'] / finals['float32'] - 1
  return {'shape': preset, 'batch': int(batch), 'seq_len': args.numerics_seq_len,
          'steps': args.numerics_steps, 'final_loss': finals, 'relative_gap': gap,
          'flag': abs(gap) > GAP_FLAG}


def _print_rows(rows: list[dict]) -> None:
  for r in rows:
    head = f"{r['shape']:15s} B={r['batch']:<3d} {r['variant']:44s}"
    if 'step_s' in r:
      print(f"{head} step {r['step_s'] * 1e3:8.1f} ms  {r['tokens_s']:10,.0f} tok/s  "
            f"MFU {100 * r['mfu']:5.1f}%  compile {r['compile_s']:.0f} s", flush=True)
    else:
      print(f"{head} {r.get('failed') or r.get('skipped')}", flush=True)
  timed = [r for r in rows if 'mfu' in r]
  if timed:
    best = max(timed, key=lambda r: r['mfu'])
    print(f"best for {best['shape']}: {best['variant']} at MFU {100 * best['mfu']:.1f}%")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='JSON file of every figure')
  parser.add_argument('--smoke', action='store_true', help='tiny shapes, CPU variants')
  parser.add_argument('--variants', nargs='*', help='override lists (benchmarks/step_time.py '
                      'syntax) in place of the built-in ones')
  parser.add_argument('--seq_len', type=int, default=2048)
  parser.add_argument('--steps', type=int, default=5, help='timed steps per variant')
  parser.add_argument('--budget_s', type=float, default=420.0,
                      help='skip further throughput variants after this many seconds')
  parser.add_argument('--numerics_shape', default='ladder-512x8:16', help='PRESET:BATCH')
  parser.add_argument('--numerics_seq_len', type=int, default=512)
  parser.add_argument('--numerics_steps', type=int, default=200)
  args = parser.parse_args()
  shapes, variants = SHAPES, VARIANTS
  if args.smoke:
    shapes, variants = SMOKE_SHAPES, SMOKE_VARIANTS
    args.seq_len, args.steps, args.numerics_steps = 64, 2, 20
    args.numerics_shape, args.numerics_seq_len = 'ladder-64x2:4', 64
  args.variants = args.variants or variants
  device = jax.devices()[0]
  print(f'{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}')
  deadline = time.time() + args.budget_s
  rows = []
  for preset, batch in shapes.items():
    shape_rows = time_shape(preset, batch, args, deadline)
    _print_rows(shape_rows)
    rows += shape_rows
  check = numerics(args)
  finals = check['final_loss']
  print(f"numerics ({check['shape']}, {check['steps']} steps): final loss float32 "
        f"{finals['float32']:.5f}, bfloat16 {finals['bfloat16']:.5f} "
        f"({100 * check['relative_gap']:+.3f}%){'  FLAG: over 2%' if check['flag'] else ''}")
  with open(args.out, 'w') as f:
    json.dump({'device': device.device_kind, 'count': jax.device_count(),
               'jax': jax.__version__, 'throughput': rows, 'numerics': check}, f, indent=1)


if __name__ == '__main__':
  main()
