"""Input-pipeline throughput: time to the first batch and batches/s, per packing.

  python benchmarks/loader.py [--source pystdlib] [--tokenizer byte] [--batches 1000]

Runs the same grain pipeline the trainer uses, on the host only, one variant
after the other in one process, so their ratio is meaningful on a noisy machine.
"""

import argparse
import dataclasses
import time

from llmjax.data import pipeline


def measure(corpus, cfg: pipeline.DataConfig, batches: int) -> dict:
  start = time.perf_counter()
  iterator = iter(pipeline.train_dataset(corpus, cfg))
  next(iterator)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  per_batch = (time.perf_counter() - start) / batches
  return {'first_batch_s': first, 'batch_ms': 1e3 * per_batch,
          'tokens_per_s': cfg.global_batch_size * cfg.seq_len / per_batch}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--source', default='pystdlib')
  parser.add_argument('--tokenizer', default='byte')
  parser.add_argument('--batches', type=int, default=1000)  # > 4 shuffle windows
  args = parser.parse_args()
  base = pipeline.DataConfig(source=args.source, tokenizer=args.tokenizer)
  corpus = pipeline.load(base)
  print(f'{corpus.fingerprint}: {len(corpus.train)} training documents, '
        f'B={base.global_batch_size} T={base.seq_len}')
  for name, cfg in [('concat_split', base),
                    ('concat_split, no row shuffle', dataclasses.replace(base, shuffle_window=1)),
                    ('first_fit', dataclasses.replace(base, packing='first_fit'))]:
    r = measure(corpus, cfg, args.batches)
    print(f'{name:30s} first batch {r["first_batch_s"]:6.2f} s   {r["batch_ms"]:7.2f} ms/batch'
          f'   {r["tokens_per_s"]:12,.0f} tokens/s')


if __name__ == '__main__':
  main()
