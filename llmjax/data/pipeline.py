"""The data a run trains and evaluates on, chosen by `config.data.source`."""

import dataclasses

from llmjax.data import pystdlib
from llmjax.data.stream import TokenStream
from llmjax.data.tokenizer import ByteTokenizer

SOURCES = ('pystdlib',)


@dataclasses.dataclass
class Data:
  train: TokenStream
  eval: TokenStream
  tokenizer: ByteTokenizer
  fingerprint: str


def load(source: str, eval_fraction: float, split_seed: int) -> Data:
  if source != 'pystdlib':
    raise ValueError(f'unknown data source {source!r}; known: {", ".join(SOURCES)}')
  tokenizer = ByteTokenizer()
  files = pystdlib.source_files()
  train_files, eval_files = pystdlib.split(files, eval_fraction, split_seed)
  encode = lambda paths: [tokenizer.encode(p.read_bytes()) for p in paths]
  return Data(TokenStream(encode(train_files)), TokenStream(encode(eval_files)), tokenizer,
              pystdlib.fingerprint(files))


@dataclasses.dataclass(frozen=True)
class DataConfig:
  source: str = 'pystdlib'  # where documents come from
  seq_len: int = 256  # T: tokens per training row
  global_batch_size: int = 32  # B: rows per step over all devices and hosts
  eval_fraction: float = 0.01  # share of the corpus's bytes held out, as whole files
  split_seed: int = 0  # seed of the held-out file sample
  seed: int = 0  # seed of the training-row order
