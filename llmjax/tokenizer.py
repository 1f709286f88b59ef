"""Tokenizer command line: train a SentencePiece model on any source.

  python -m llmjax.tokenizer train --source pystdlib --vocab_size 4096 --out runs/sp4096
writes runs/sp4096.model (and .vocab); use it with
  --config.data.tokenizer=sentencepiece:runs/sp4096.model
"""

import argparse
import pathlib
import re
import sys

import numpy as np

from llmjax.data import pipeline


def train_sentencepiece(source, out: str, vocab_size: int, max_docs: int = 2000,
                        seed: int = 0, model_type: str = 'bpe',
                        character_coverage: float = 1.0) -> pathlib.Path:
  """Trains on up to `max_docs` random documents of `source`; returns the .model path.
  Raises ValueError when `vocab_size` cannot hold the characters to cover."""
  import sentencepiece as spm
  order = np.random.default_rng(seed).permutation(len(source))[:max_docs]

  def texts():
    for i in order:
      doc = source[int(i)]
      yield doc.decode('utf-8', errors='replace') if isinstance(doc, bytes) else doc

  pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
  # byte_fallback keeps every byte representable; <eos> serves as end-of-text.
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=texts(), model_prefix=out, vocab_size=vocab_size,
        model_type=model_type, byte_fallback=True, character_coverage=character_coverage,
        split_by_whitespace=False, remove_extra_whitespaces=False, add_dummy_prefix=False,
        normalization_rule_name='identity', max_sentence_length=1 << 20,
        train_extremely_large_corpus=False, minloglevel=2)
  except RuntimeError as e:
    needed = re.search(r'smaller than required_chars\. (\d+) vs (\d+)', str(e))
    if not needed:
      raise ValueError(f'SentencePiece training failed: {str(e).strip()}') from None
    raise ValueError(
        f'--vocab_size {vocab_size} is too small: covering {character_coverage:.2%} of this '
        f"source's characters takes {needed[2]} pieces (characters plus special tokens); use "
        f'--vocab_size {needed[2]} or more, or a lower --character_coverage (e.g. 0.9995: '
        f'rarer characters are then spelt as bytes)') from None
  return pathlib.Path(out + '.model')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m llmjax.tokenizer')
  sub = parser.add_subparsers(dest='command', required=True)
  train = sub.add_parser('train', help='train a SentencePiece model')
  train.add_argument('--source', default='pystdlib', help='a data source, as data.source')
  train.add_argument('--vocab_size', type=int, default=4096)
  train.add_argument('--out', required=True, help='output path without extension')
  train.add_argument('--max_docs', type=int, default=2000)
  train.add_argument('--character_coverage', type=float, default=1.0,
                     help='share of characters that get a piece of their own; the rest are '
                     'spelt as bytes')
  train.add_argument('--data_dir', default=pipeline.DataConfig.data_dir)
  args = parser.parse_args(argv)
  cfg = pipeline.DataConfig(source=args.source, data_dir=args.data_dir)
  try:
    corpus = pipeline.load(cfg)
  except pipeline.DataError as e:
    print(f'llmjax.tokenizer: {e}', file=sys.stderr)
    return 2
  if args.vocab_size < 1 or not 0 < args.character_coverage <= 1:
    print('llmjax.tokenizer: --vocab_size must be positive and --character_coverage in (0, 1]',
          file=sys.stderr)
    return 2
  try:
    path = train_sentencepiece(corpus.train, args.out, args.vocab_size, args.max_docs,
                               character_coverage=args.character_coverage)
  except ValueError as e:
    print(f'llmjax.tokenizer: {e}', file=sys.stderr)
    return 2
  print(f'wrote {path}; use --config.data.tokenizer=sentencepiece:{path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
