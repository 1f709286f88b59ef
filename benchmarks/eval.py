"""Examples per second of the packed evaluation scorer against one example per call.

  python benchmarks/eval.py [--examples 256] [--rows 8] [--repeats 3]

The model is experiments/base.py's (D=128, L=4, max_len 256, bfloat16 compute) with random
weights: speed does not depend on what the weights learned. The examples are
multiple-choice-shaped (context, continuation) pairs of random bytes: contexts of 16-160
tokens after end-of-text, continuations of 2-40. Three ways to score them:
  one per call   llmjax.generate.score on one pair at a time (batch 1, length bucketed);
  padded batch   llmjax.generate.score on `rows` pairs per call, each pair its own row;
  packed         llmjax.eval.scorer.Scorer: pairs packed into `rows` rows per call with
                 segment ids.
Times are medians of `--repeats` runs after a warm-up run (compilation happens there).
"""

import argparse
import importlib.util
import pathlib
import statistics
import time

import jax
import numpy as np
from flax import nnx

from llmjax import configs, generate
from llmjax.eval.scorer import Scorer
from llmjax.model.transformer import Transformer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def base_model() -> Transformer:
  spec = importlib.util.spec_from_file_location('base', ROOT / 'experiments' / 'base.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = configs.build(module.get_config(''), jax.device_count()).model
  return Transformer(cfg, nnx.Rngs(0))


def random_pairs(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
  rng = np.random.default_rng(seed)
  return [([256, *rng.integers(0, 256, rng.integers(16, 161))],
           list(rng.integers(0, 256, rng.integers(2, 41)))) for _ in range(n)]


def timed(fn, repeats: int) -> float:
  fn()  # warm-up: compilations
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--examples', type=int, default=256)
  parser.add_argument('--rows', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  model, pairs = base_model(), random_pairs(args.examples)
  scorer = Scorer(model, rows=args.rows)

  def one_per_call():
    return [generate.score(model, [c], [x]).sums[0] for c, x in pairs]

  def padded_batch():
    return [s for i in range(0, len(pairs), args.rows)
            for s in generate.score(model, *zip(*pairs[i:i + args.rows])).sums]

  rates = {name: args.examples / timed(fn, args.repeats) for name, fn in
           [('one per call', one_per_call), ('padded batch', padded_batch),
            ('packed', lambda: scorer.loglikelihood(pairs).sums)]}
  tokens = sum(len(c) + len(x) - 1 for c, x in pairs)
  print(f'base model ({model.cfg.d_model}x{model.cfg.num_layers}, max_len {model.cfg.max_len}),'
        f' {args.examples} pairs ({tokens / args.examples:.0f} tokens each on average), '
        f'{args.rows} rows per call, {jax.devices()[0].platform}')
  for name, rate in rates.items():
    print(f'{name:>13}: {rate:8.1f} examples/s')
  print(f'packed / one per call: {rates["packed"] / rates["one per call"]:.1f}x; '
        f'packed / padded batch: {rates["packed"] / rates["padded batch"]:.1f}x')


if __name__ == '__main__':
  main()
