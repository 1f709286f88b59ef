"""Command line: sample a continuation of a prompt from a run folder or a Hugging Face folder.

  python -m llmjax.generate --workdir runs/base --prompt "def fibonacci(" --temperature 0.8
  python -m llmjax.generate --hf_dir PATH --prompt "The capital of France is" --temperature 0
"""

import argparse
import sys
from collections.abc import Iterator

import numpy as np

from llmjax import runs
from llmjax.convert import hf
from llmjax.generate import GenerationOutput, stream
from llmjax.model import options


def _print_stream(outputs: Iterator[GenerationOutput], tokenizer, prompt: np.ndarray) -> None:
  """Prints the prompt's text, then the continuation as each chunk arrives."""
  shown = text = ''
  for out in outputs:
    text = tokenizer.decode(np.concatenate([prompt, out.tokens[0]]))
    # A multi-byte character cut in two decodes as U+FFFD until its end arrives.
    stable = text.rstrip('\ufffd')
    if stable.startswith(shown):
      print(stable[len(shown):], end='', flush=True)
      shown = stable
  print(text[len(shown):] if text.startswith(shown) else '', flush=True)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m llmjax.generate',
                                   description='Sample a continuation of a prompt.')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='a training run folder (config.json, checkpoints/)')
  source.add_argument('--hf_dir', help='a Hugging Face model folder')
  parser.add_argument('--prompt', required=True)
  parser.add_argument('--step', type=int, help='checkpoint step; default: the newest')
  parser.add_argument('--max_new_tokens', type=int, default=200)
  parser.add_argument('--temperature', type=float, default=0.8, help='0: greedy')
  parser.add_argument('--top_k', type=int, default=0, help='0: off')
  parser.add_argument('--top_p', type=float, default=1.0, help='1: off')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--chunk', type=int, default=16, help='tokens decoded per device call')
  return parser


def _load(args) -> tuple[object, object, list[int]]:
  """(model, tokenizer, tokens that precede the prompt)."""
  if args.workdir:
    run = runs.RunFolder(args.workdir)
    if not options.ARCHITECTURES[run.model_cfg.arch].causal:
      raise ValueError(f'{args.workdir} holds a model.arch={run.model_cfg.arch!r} model, '
                       f'which does not generate text; generation needs a decoder')
    tokenizer = run.tokenizer  # config.json, then the checkpoint: both before any build
    run.step_folder(args.step)
    # Training documents start after end-of-text.
    return run.model(args.step), tokenizer, [tokenizer.eot_id]
  model, tokenizer = hf.load_hf(args.hf_dir)
  if tokenizer is None:
    raise FileNotFoundError(f'{args.hf_dir} holds no tokenizer')
  # What transformers puts first (a BOS token; llmjax's exports: end-of-text), as it would.
  return model, tokenizer, tokenizer.start_ids()


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    model, tokenizer, start = _load(args)
    prompt = tokenizer.encode(args.prompt)
    ids = np.concatenate([np.array(start, np.int32), prompt])
    outputs = stream(model, [ids], max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                     stop_tokens=[tokenizer.eot_id], seed=args.seed, chunk=args.chunk)
    _print_stream(outputs, tokenizer, prompt)
  except (FileNotFoundError, ValueError) as e:
    print(f'llmjax.generate: {e}', file=sys.stderr)
    return 2
  return 0
