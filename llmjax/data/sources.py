"""Corpora by name: `pystdlib`, `files:GLOB`, `tfds:NAME[/CONFIG][:VERSION]`, `synthetic:...`.

A corpus is a pair of random-access document sources (train, eval), the
tokenizer that turns their documents into tokens, and a fingerprint naming the
exact data. Documents are text (bytes or str) or, for `synthetic`, token arrays.
"""

import dataclasses
import pathlib

from llmjax.data import builders, synthetic, tokenizers

KINDS = ('pystdlib', 'files', 'tfds', 'synthetic')
SYNTHETIC_EVAL_DOCS = 64


@dataclasses.dataclass
class Corpus:
  train: object  # len() and [i] -> document
  eval: object
  tokenizer: object
  fingerprint: str
  info: dict = dataclasses.field(default_factory=dict)  # e.g. the synthetic entropy


class DataError(ValueError):
  """Bad data input: a missing file, an unknown dataset, a missing field, an empty split."""


class _Field:
  """A TFDS source's records, reduced to one text feature."""

  def __init__(self, source, key: str):
    self._source, self._key = source, key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    return self._source[index][self._key]


def _unknown_source(source: str) -> str:
  return (f'unknown data source {source!r}; use pystdlib, files:GLOB, '
          f'tfds:NAME[/CONFIG][:VERSION] or synthetic:KEY=VALUE,...')


def vocab_size(source: str, tokenizer: str) -> int:
  """Token ids the data can produce (cheap: reads at most a tokenizer file)."""
  kind, _, arg = source.partition(':')
  if kind not in KINDS:
    raise ValueError(_unknown_source(source))
  if kind == 'synthetic':
    return synthetic.parse_spec(arg).vocab + 1
  return tokenizers.load(tokenizer).vocab_size


def open_corpus(cfg) -> Corpus:
  """The corpus of a DataConfig; errors (DataError) name the cause before any training."""
  try:
    return _open(cfg)
  except (ValueError, KeyError, OSError) as e:
    raise DataError(str(e).strip('"')) from None


def _open(cfg) -> Corpus:
  kind, _, arg = cfg.source.partition(':')
  data_dir = pathlib.Path(cfg.data_dir).expanduser()
  if kind == 'synthetic':
    if cfg.tokenizer != 'byte':
      raise ValueError('data.tokenizer: a synthetic source has its own tokens; leave it as byte')
    spec = synthetic.parse_spec(arg)
    train = synthetic.source(spec)
    held_out = synthetic.source(spec, num_docs=getattr(spec, 'eval_docs', SYNTHETIC_EVAL_DOCS),
                                offset=2**40)
    # data.tokenizer reads 'byte' (the field's default) but the tokens are the chain's states:
    # each counts as one byte, so bits_per_byte is bits per state token.
    info = {'entropy_rate': train.entropy_rate, 'optimal_loss': train.optimal_loss,
            'tokens': f'synthetic states 0..{spec.vocab - 1} and end-of-text {spec.vocab}',
            'bits_per_byte_unit': 'bits per synthetic token (a token counts as one byte)'}
    fingerprint = 'synthetic-' + '-'.join(f'{k}{v}' for k, v in dataclasses.asdict(spec).items())
    return Corpus(train, held_out, synthetic.SyntheticTokenizer(spec.vocab), fingerprint, info)
  tokenizer = tokenizers.load(cfg.tokenizer)
  if kind == 'pystdlib' and not arg:
    train, held_out, fingerprint = builders.pystdlib_sources(data_dir, cfg.eval_fraction,
                                                             cfg.split_seed)
    train, held_out = _Field(train, builders.TEXT), _Field(held_out, builders.TEXT)
  elif kind == 'files' and arg:
    train, held_out, fingerprint = builders.text_files_sources(
        arg, data_dir, cfg.text_key, cfg.eval_fraction, cfg.split_seed)
    train, held_out = _Field(train, builders.TEXT), _Field(held_out, builders.TEXT)
  elif kind == 'tfds' and arg:
    train, held_out, fingerprint = _tfds(arg, cfg)
  else:
    raise ValueError(_unknown_source(cfg.source))
  return Corpus(train, held_out, tokenizer, fingerprint)


def _tfds(name: str, cfg):
  """Train and eval splits of a prepared TFDS dataset (never a download: a cluster's
  hosts must not each fetch it, and without a network TFDS retries for ever)."""
  import tensorflow_datasets as tfds
  data_dir = pathlib.Path(cfg.data_dir).expanduser() if cfg.data_dir else None
  splits = []
  for split in (cfg.train_split, cfg.eval_split):
    try:
      with builders.tempdir_inside(data_dir):  # TFDS leaves mkdtemp() folders behind
        source = tfds.data_source(name, split=split, download=False,
                                  data_dir=str(data_dir) if data_dir else None)
    except tfds.core.registered.DatasetNotFoundError:
      raise ValueError(f'data.source: unknown TFDS dataset {name!r}') from None
    except (ValueError, KeyError, AssertionError, NotImplementedError) as e:
      raise ValueError(_not_prepared(name, data_dir) or
                       f'data.source: TFDS {name!r} split {split!r}: {e}') from None
    if len(source) == 0:
      raise ValueError(f'data.source: TFDS {name!r} split {split!r} is empty')
    first = source[0]
    if cfg.text_key not in first:
      raise KeyError(f'data.text_key: TFDS {name!r} has no feature {cfg.text_key!r}; '
                     f'features: {", ".join(first)}')
    splits.append(_Field(source, cfg.text_key))
  return splits[0], splits[1], f'tfds-{name}-{cfg.train_split}-{cfg.eval_split}'


def _not_prepared(name: str, data_dir: pathlib.Path | None) -> str | None:
  """What to do about a TFDS dataset not prepared (as ArrayRecord) in `data_dir`."""
  import tensorflow_datasets as tfds
  try:
    with builders.tempdir_inside(data_dir):
      builder = tfds.builder(name, data_dir=str(data_dir) if data_dir else None)
  except Exception:  # noqa: BLE001 (the caller reports the original error)
    return None
  where = data_dir or builder.data_dir_root
  how = (f'prepare it once, on a machine with network access, with: tfds build '
         f'{name.split(":")[0]} --data_dir={where} --file_format=array_record')
  if not builder.is_prepared():
    return f'data.source: TFDS dataset {name!r} is not prepared in {where}; {how}'
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    return (f'data.source: TFDS dataset {name!r} is prepared in {where} as '
            f'{builder.info.file_format.value}, not array_record (random access); {how}')
  return None
