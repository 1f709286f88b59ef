"""The llmjax train step against a PyTorch peer of the same architecture, side by side.

  python benchmarks/peer.py [--shapes base 10m] [--dtypes float32 bfloat16] [--rounds 6]
      [--attention_impl auto]

The peer is Hugging Face `transformers`' GPT2LMHeadModel with the matching config (LayerNorm,
GELU, learned positions, tied embeddings, biases: GPT-2 has them, so the llmjax side has them
too; no dropout), trained by torch.optim.AdamW after clip_grad_norm_, in float32 or under
bfloat16 autocast. The llmjax side is `step.jit_train_step` (forward, backward, AdamW with the
same betas, clipping) with compute dtype float32 or bfloat16 and float32 parameters.

Every round runs one step of each (side, dtype) in turn, so load changes on a shared machine
hit all of them alike; the figures are medians over rounds after a warm-up round (compilation).
Both sides use every core: torch.set_num_threads(os.cpu_count()); XLA's CPU client always does.
Prints tokens/s of each and the ratio llmjax / PyTorch (> 1: llmjax is faster).
"""

import argparse
import os
import statistics
import time

from llmjax import allocator

if __name__ == '__main__':  # the entry points' allocator, for figures users will see
  allocator.ensure()

import jax  # noqa: E402
import numpy as np
import torch
import transformers

from llmjax import optim, sharding, step
from llmjax.model.config import ModelConfig

# (D, L, N, F, T, B) of the base shape and of a ~10M-parameter one.
SHAPES = {'base': (128, 4, 4, 512, 256, 32), '10m': (384, 6, 6, 1536, 256, 8)}
VOCAB = 257
LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 3e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def llmjax_side(shape, dtype: str, attention_impl: str, tokens: np.ndarray):
  """A function running one llmjax train step (and waiting for it)."""
  d, l, n, f, t, _ = shape
  cfg = ModelConfig(vocab_size=VOCAB, d_model=d, num_layers=l, num_heads=n, num_kv_heads=n,
                    head_dim=d // n, mlp_dim=f, max_len=t, norm='layernorm',
                    positions='learned', mlp='gelu', tie_embeddings=True, use_bias=True,
                    dtype=dtype, scan_layers=False, attention_impl=attention_impl)
  optim_cfg = optim.OptimConfig(lr=LR, schedule='constant', warmup_steps=0, b1=BETAS[0],
                                b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY, clip_norm=CLIP)
  tx, _ = optim.make(optim_cfg, cfg, total_steps=1000)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  with sharding.activation_rules(mesh, rules):
    graphdef, state, shardings = step.create_sharded_state(cfg, tx, 0, mesh, rules)
    batch_sharding = sharding.data_sharding(mesh, rules)
    step_fn = step.jit_train_step(graphdef, tx, step.TrainConfig(), shardings, batch_sharding)
  b = tokens.shape[0]
  rows = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'positions': np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
          'segment_ids': np.ones((b, t), np.int32), 'weights': np.ones((b, t), np.float32)}
  batch = step.device_batch(rows, batch_sharding)
  holder = [state]

  def run():
    with sharding.activation_rules(mesh, rules):
      holder[0], metrics = step_fn(holder[0], batch)
    return float(jax.block_until_ready(metrics['loss']))

  return run


def torch_side(shape, dtype: str, tokens: np.ndarray):
  """A function running one PyTorch train step of the GPT-2 peer."""
  d, l, n, f, t, _ = shape
  config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=t, n_embd=d, n_layer=l,
                                   n_head=n, n_inner=f, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0, tie_word_embeddings=True,
                                   bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(config).train()
  opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                          weight_decay=WEIGHT_DECAY)
  ids = torch.from_numpy(tokens.astype(np.int64))
  inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

  def run():
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      logits = model(inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    return loss.item()

  return run


def measure(sides: dict, rounds: int) -> dict[str, float]:
  """Median seconds per step of each side; sides alternate within every round."""
  times = {name: [] for name in sides}
  for r in range(rounds + 1):
    for name, run in sides.items():
      start = time.perf_counter()
      loss = run()
      if not np.isfinite(loss):
        raise FloatingPointError(f'{name}: non-finite loss {loss}')
      if r:  # round 0 is the warm-up: compilation, first allocations
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--shapes', nargs='*', default=list(SHAPES), choices=list(SHAPES))
  parser.add_argument('--dtypes', nargs='*', default=['float32', 'bfloat16'],
                      choices=['float32', 'bfloat16'])
  parser.add_argument('--rounds', type=int, default=6, help='timed rounds after a warm-up')
  parser.add_argument('--attention_impl', default='auto', help="llmjax's model.attention_impl")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} with '
        f'{torch.get_num_threads()} threads, transformers {transformers.__version__}; '
        f'load average {os.getloadavg()[0]:.2f} at start; LD_PRELOAD={os.environ.get("LD_PRELOAD", "")!r}')
  for name in args.shapes:
    shape = SHAPES[name]
    d, l, n, f, t, b = shape
    tokens = np.random.default_rng(0).integers(0, VOCAB, (b, t + 1)).astype(np.int32)
    sides = {}
    for dtype in args.dtypes:
      sides[('llmjax', dtype)] = llmjax_side(shape, dtype, args.attention_impl, tokens)
      sides[('torch', dtype)] = torch_side(shape, dtype, tokens)
    step_s = measure(sides, args.rounds)
    print(f'\n{name}: D={d} L={l} N={n} F={f} T={t} B={b}, median of {args.rounds} rounds; '
          f'load average {os.getloadavg()[0]:.2f} at the end')
    for dtype in args.dtypes:
      jx, pt = step_s[('llmjax', dtype)], step_s[('torch', dtype)]
      print(f'  {dtype:9s} llmjax {b * t / jx:9,.0f} tok/s ({jx:6.3f} s)   torch '
            f'{b * t / pt:9,.0f} tok/s ({pt:6.3f} s)   llmjax/torch x{pt / jx:4.2f}')


if __name__ == '__main__':
  main()
