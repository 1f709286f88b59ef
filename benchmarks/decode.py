"""Generation throughput of llmjax against Hugging Face transformers, on the same weights.

  python benchmarks/decode.py [--layers 12] [--batch_sizes 1 8] [--prompt 128] [--new 128]

A GPT-2-small-shaped model with random weights is built in transformers (torch, CPU),
saved as safetensors and imported with `llmjax.convert.hf.load_hf`. For each batch size,
both sides run greedy generation side by side in one process, so their ratio is meaningful
on a noisy machine:
  prefill tokens/s  one forward pass over the prompts that fills the cache (logits at every
                    position on both sides: `Transformer.decode` on an empty cache, and the
                    transformers model called with use_cache=True);
  decode tokens/s   B * (new - 1) / (time of generate(new) - time of generate(1)): the
                    tokens after the first, so prefill and fixed costs cancel.
Times are medians of `--repeats` runs after a warm-up run (llmjax compiles there).
"""

import argparse
import functools
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from flax import nnx

from llmjax import generate
from llmjax.convert import hf
from llmjax.model.attention import KVCache


def _timed(fn, repeats: int):
  """(median seconds of `repeats` calls after a warm-up call, the last result)."""
  result = fn()  # warm-up: compilation, allocations
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), result


@functools.partial(jax.jit, static_argnums=(0, 3))
def _prefill(graphdef, params, tokens, slots):
  model = nnx.merge(graphdef, params)
  positions = jax.numpy.broadcast_to(jax.numpy.arange(tokens.shape[1]), tokens.shape)
  return model.decode(tokens, positions, KVCache.init(model.cfg, tokens.shape[0], slots))


def llmjax_times(model, prompts: np.ndarray, new: int, repeats: int) -> dict:
  graphdef, params = nnx.split(model)
  slots = prompts.shape[1] + new
  greedy = functools.partial(generate.generate, model, prompts, temperature=0.0,
                             return_logprobs=False)
  prefill_s, _ = _timed(
      lambda: jax.block_until_ready(_prefill(graphdef, params, prompts, slots)), repeats)
  generate_s, out = _timed(lambda: greedy(max_new_tokens=new), repeats)
  return {'prefill_s': prefill_s, 'generate_s': generate_s,
          'generate_1_s': _timed(lambda: greedy(max_new_tokens=1), repeats)[0],
          'tokens': np.stack(out.tokens)}


def hf_times(model, prompts: np.ndarray, new: int, repeats: int) -> dict:
  ids = torch.tensor(prompts)

  def greedy(n):
    with torch.no_grad():
      return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=n, pad_token_id=0)

  def prefill():
    with torch.no_grad():
      model(ids, use_cache=True)

  generate_s, out = _timed(lambda: greedy(new), repeats)
  return {'prefill_s': _timed(prefill, repeats)[0], 'generate_s': generate_s,
          'generate_1_s': _timed(lambda: greedy(1), repeats)[0],
          'tokens': out[:, prompts.shape[1]:].numpy()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--layers', type=int, default=12, help='GPT-2 small has 12')
  parser.add_argument('--batch_sizes', type=int, nargs='*', default=[1, 8])
  parser.add_argument('--prompt', type=int, default=128, help='prompt tokens per row')
  parser.add_argument('--new', type=int, default=128, help='new tokens per row')
  parser.add_argument('--repeats', type=int, default=2)
  args = parser.parse_args()

  transformers.utils.logging.disable_progress_bar()
  torch.manual_seed(0)
  reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers)).eval()
  reference.generation_config.eos_token_id = None  # every row generates --new tokens
  with tempfile.TemporaryDirectory() as folder:
    reference.save_pretrained(folder, safe_serialization=True)
    model, _ = hf.load_hf(folder)
  print(f'GPT-2 small shape, {args.layers} layers, float32, greedy, prompt {args.prompt}, '
        f'{args.new} new tokens; jax {jax.__version__} on {jax.devices()[0].platform}, '
        f'torch {torch.__version__} with {torch.get_num_threads()} threads')
  print(f'{"batch":>5} {"side":>12} {"prefill tok/s":>14} {"decode tok/s":>13} '
        f'{"generate s":>11}')
  for batch in args.batch_sizes:
    prompts = np.random.default_rng(batch).integers(0, 50257, (batch, args.prompt))
    results = {'llmjax': llmjax_times(model, prompts, args.new, args.repeats),
               'transformers': hf_times(reference, prompts, args.new, args.repeats)}
    rates = {}
    for side, r in results.items():
      prefill = batch * args.prompt / r['prefill_s']
      decode = batch * (args.new - 1) / (r['generate_s'] - r['generate_1_s'])
      rates[side] = prefill, decode
      print(f'{batch:>5} {side:>12} {prefill:>14.0f} {decode:>13.1f} {r["generate_s"]:>11.2f}')
    same = (results['llmjax']['tokens'] == results['transformers']['tokens']).mean()
    print(f'{batch:>5} {"ratio":>12} {rates["llmjax"][0] / rates["transformers"][0]:>14.2f} '
          f'{rates["llmjax"][1] / rates["transformers"][1]:>13.2f}   '
          f'(llmjax / transformers; {same:.0%} of greedy tokens equal)')


if __name__ == '__main__':
  main()
