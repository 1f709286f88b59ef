"""The grain input pipeline: shuffle documents, tokenize, pack into rows, batch, slice.

  documents (random access) --seeded per-epoch shuffle--> (epoch, document)
    --tokenize: [eot] + tokens, inputs = ids[:-1], targets = ids[1:]
      (mlm: masked tokens; span: T5's corrupted pieces, packed whole by first_fit)-->
    --pack into rows of seq_len (concat_split, or first_fit of <= seq_len chunks)-->
    --shuffle rows within a window--> batch the *global* batch
    --> count tokens --> keep this process's rows

Every process runs the same global pipeline and keeps its own rows, so the
sequence of global batches is the same for any number of processes and devices,
and for every model of a sweep that shares the data config. The iterator is
grain's, so its state (`get_state`/`set_state`) restores the exact next batch.
"""

import dataclasses
import functools

import grain
import grain.experimental as gx
import numpy as np

from llmjax.data import objectives
from llmjax.data.sources import Corpus, DataError, open_corpus

PACKINGS = ('concat_split', 'first_fit')
OBJECTIVES = ('lm', 'mlm', 'span')
MAX_EPOCHS = 100_000  # the shuffled stream's length, in passes over the source
ROW_KEYS = ('inputs', 'targets', 'positions', 'segment_ids', 'weights', 'epoch')
# Span-corruption rows add the encoder's side (seq_len long; the decoder's keys above are
# the target length): its tokens, positions and segments (a segment's targets are the
# decoder segment of the same id).
ENCODER_KEYS = ('encoder_inputs', 'encoder_positions', 'encoder_segment_ids')
# A corpus whose info has this key holds encoded examples (llmjax.finetune): each document
# is already {'inputs', 'targets', 'weights'}, packed whole (first_fit) in eval as in training.
EXAMPLES_INFO = 'finetune_examples'


@dataclasses.dataclass(frozen=True)
class DataConfig:
  source: str = 'pystdlib'  # pystdlib | files:GLOB | tfds:NAME[/CONFIG][:VERSION] | synthetic:...
  tokenizer: str = 'byte'  # byte | sentencepiece:PATH | hf:PATH
  seq_len: int = 256  # T: tokens per training row
  global_batch_size: int = 32  # B: rows per step over all devices and hosts
  packing: str = 'concat_split'  # concat_split (no padding) | first_fit (whole <=T pieces)
  shuffle_window: int = 8192  # training rows shuffled together after packing; 1 disables
  eval_fraction: float = 0.01  # pystdlib/files: share of bytes held out, as whole documents
  split_seed: int = 0  # seed of the held-out sample
  seed: int = 0  # seed of the document order
  text_key: str = 'text'  # tfds feature / jsonl field holding the text
  train_split: str = 'train'  # tfds split names
  eval_split: str = 'eval'
  data_dir: str = '~/.cache/llmjax/data'  # built datasets (pystdlib, files) and TFDS data
  # What a row asks of the model (model.arch must train on it: options.ARCHITECTURES):
  # lm, the next token; mlm, masked tokens (data/objectives.py, seeded by `seed` and the
  # document's index, with a mask token one past the tokenizer's ids); span, T5's span
  # corruption: seq_len encoder tokens with a sentinel per dropped span, and the spans as
  # decoder targets (their length T5's arithmetic gives; packed whole, first_fit).
  objective: str = 'lm'  # lm | mlm | span
  mask_rate: float = 0.15  # mlm: share of tokens selected (80% masked, 10% random, 10% kept)
  noise_density: float = 0.15  # span: share of tokens dropped from the encoder's input
  mean_span: float = 3.0  # span: mean length of a dropped span


class EpochShuffled:
  """Random access to an endless stream of (epoch, document): epoch e is the source
  in a seeded order of its own, so index e * N + j is a pure function of the seed."""

  def __init__(self, source, seed: int):
    self._source, self._seed = source, seed

  def __len__(self) -> int:
    return len(self._source) * MAX_EPOCHS

  @functools.lru_cache(maxsize=2)
  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self._seed, epoch]).permutation(len(self._source))

  def __getitem__(self, index: int):
    epoch, j = divmod(int(index), len(self._source))
    return epoch, self._source[int(self._order(epoch)[j])]


def mask_id(tokenizer) -> int:
  """The masked-LM objective's mask token: one past the tokenizer's ids (so a model for it
  has vocab_size >= tokenizer.vocab_size + 1)."""
  return tokenizer.vocab_size


def masking(tokenizer, cfg: DataConfig) -> objectives.MaskedLM | None:
  """The masked-LM transform of `cfg`, or None for next-token rows."""
  if cfg.objective != 'mlm':
    return None
  return objectives.MaskedLM(mask_id=mask_id(tokenizer), vocab_size=mask_id(tokenizer) + 1,
                             special_ids=(tokenizer.eot_id, mask_id(tokenizer)),
                             rate=cfg.mask_rate)


def _own_sentinels(tokenizer, count: int) -> list[int] | None:
  """T5's sentinels <extra_id_0>, <extra_id_1>, ... of a tokenizer with a vocabulary file
  (tokenizer.json or SentencePiece); None for one without lookups (byte, synthetic)."""
  pieces = [f'<extra_id_{i}>' for i in range(count)]
  if hasattr(tokenizer, '_tok'):  # tokenizer.json
    ids = [tokenizer._tok.token_to_id(p) for p in pieces]
    return [] if None in ids else ids
  if hasattr(tokenizer, '_sp'):  # SentencePiece: an unknown piece maps to <unk>
    ids = [tokenizer._sp.piece_to_id(p) for p in pieces]
    return [] if tokenizer._sp.unk_id() in ids else ids
  return None


def span_corruption(tokenizer, cfg: DataConfig) -> objectives.SpanCorruption | None:
  """The span-corruption transform of `cfg`, or None for other objectives. Its sentinels are
  the tokenizer's <extra_id_N> tokens, or for a tokenizer without a vocabulary file (byte)
  ids past its own, as many as a row's spans; ObjectiveError for a tokenizer with a
  vocabulary but no sentinels."""
  if cfg.objective != 'span':
    return None
  probe = objectives.SpanCorruption((), tokenizer.eot_id, cfg.noise_density, cfg.mean_span)
  count = probe.num_spans(probe.span_lengths(cfg.seq_len)[0])[1]
  own = _own_sentinels(tokenizer, count)
  if own == []:
    raise objectives.ObjectiveError(
        f'data.tokenizer has no sentinel tokens <extra_id_0>..<extra_id_{count - 1}> for '
        f'data.objective=span ({count} spans per row of {cfg.seq_len}); use a T5 tokenizer '
        f'(hf:PATH of a T5 checkpoint) or data.tokenizer=byte (sentinels past its ids)')
  sentinels = own or list(range(tokenizer.vocab_size, tokenizer.vocab_size + count))
  return dataclasses.replace(probe, sentinels=tuple(sentinels))


def _span_examples(index, element, tokenizer, span, seed, raw_len) -> list[dict]:
  """A document -> its span-corrupted examples: pieces of `raw_len` tokens (the last one
  shorter), each corrupted with its own generator, seeded by (seed, document index, piece)
  through one integer."""
  epoch, doc = element
  ids = np.asarray(tokenizer.encode(doc), np.int32)
  out = []
  for piece, start in enumerate(range(0, len(ids), raw_len)):
    chunk = ids[start:start + raw_len]
    if len(chunk) < 2:
      continue
    pair = span(chunk, seed, int(index) * _Examples.max_fan_out + piece)
    targets = pair['targets']
    # The decoder reads its targets shifted by one, after end-of-text as the start token.
    out.append({'inputs': np.concatenate([[tokenizer.eot_id], targets[:-1]]).astype(np.int32),
                'targets': targets, 'weights': np.ones(len(targets), np.float32),
                'epoch': np.full(len(targets), epoch, np.int32),
                'encoder_inputs': pair['inputs']})
  return out


def _span_row(packed: dict) -> dict[str, np.ndarray]:
  """Grain's packed features -> a span row: the decoder's side as `_row` makes it, and the
  encoder's tokens, positions and segments."""
  return {**_row(packed), 'encoder_inputs': packed['encoder_inputs'],
          'encoder_positions': packed['encoder_inputs_positions'],
          'encoder_segment_ids': packed['encoder_inputs_segment_ids']}


def _span_rows(documents: grain.MapDataset, tokenizer, cfg: DataConfig) -> grain.IterDataset:
  span = span_corruption(tokenizer, cfg)
  raw_len, target_len = span.span_lengths(cfg.seq_len)
  docs = documents.map_with_index(functools.partial(
      _span_examples, tokenizer=tokenizer, span=span, seed=cfg.seed, raw_len=raw_len))
  examples = gx.FlatMapIterDataset(docs.to_iter_dataset(), _Examples())
  lengths = {'inputs': target_len, 'targets': target_len, 'weights': target_len,
             'epoch': target_len, 'encoder_inputs': cfg.seq_len}
  packed = gx.FirstFitPackIterDataset(examples, length_struct=lengths,
                                      num_packing_bins=cfg.global_batch_size, seed=cfg.seed,
                                      shuffle_bins=False)
  return packed.map(_span_row)


def target_length(cfg: DataConfig) -> int:
  """Tokens per row of what the loss is on: seq_len, or span corruption's target length
  (T5's arithmetic, which the sentinels' ids do not enter)."""
  if cfg.objective != 'span':
    return cfg.seq_len
  span = objectives.SpanCorruption((), 0, cfg.noise_density, cfg.mean_span)
  return span.span_lengths(cfg.seq_len)[1]


def token_bytes(tokenizer, cfg: DataConfig) -> np.ndarray:
  """UTF-8 bytes of each id the rows can hold: the tokenizer's, and 0 for sentinels and the
  mask token placed past its ids."""
  span = span_corruption(tokenizer, cfg)
  top = max([tokenizer.vocab_size, mask_id(tokenizer) + 1, *(s + 1 for s in span.sentinels)]
            if span else [tokenizer.vocab_size])
  return np.pad(tokenizer.token_bytes, (0, top - len(tokenizer.token_bytes)))


def _tokenize(index, element, tokenizer, mlm, seed) -> dict[str, np.ndarray]:
  """A document -> its next-token pairs, or (mlm) its masked tokens and their originals,
  with per-token loss weights."""
  epoch, doc = element
  ids = np.concatenate([[tokenizer.eot_id], tokenizer.encode(doc)]).astype(np.int32)
  # Next-token rows carry no weights of their own (every target counts), so their packing
  # state, saved in checkpoints, keeps the features it always had.
  out = {'inputs': ids[:-1], 'targets': ids[1:]} if mlm is None else mlm(ids, seed, index)
  return {**out, 'epoch': np.full(len(out['inputs']), epoch, np.int32)}


def _example(element) -> dict[str, np.ndarray]:
  """An encoded fine-tune example (EXAMPLES_INFO), as `_tokenize` gives a document."""
  epoch, out = element
  return {**out, 'epoch': np.full(len(out['inputs']), epoch, np.int32)}


class _Examples(gx.FlatMapTransform):
  """A document's list of span-corruption examples, one element each."""

  max_fan_out = 1 << 16  # pieces per document; also spaces the pieces' seeds

  def flat_map(self, element):
    if len(element) > self.max_fan_out:
      raise DataError(f'a document of {len(element)} span-corruption pieces; at most '
                      f'{self.max_fan_out}')
    return element


class _Chunk(gx.FlatMapTransform):
  """Documents longer than a row, cut into row-sized pieces (first_fit packing)."""

  max_fan_out = 1 << 16

  def __init__(self, seq_len: int):
    self.seq_len = seq_len

  def flat_map(self, element):
    n = len(element['inputs'])
    return [{k: v[i:i + self.seq_len] for k, v in element.items()}
            for i in range(0, n, self.seq_len)]


def _row(packed: dict) -> dict[str, np.ndarray]:
  """Grain's packed features -> the model's row: a target counts only inside a document."""
  segments = packed['targets_segment_ids']
  return {'inputs': packed['inputs'], 'targets': packed['targets'],
          'positions': packed['inputs_positions'], 'segment_ids': segments,
          'weights': packed.get('weights', 1.0) * (segments > 0).astype(np.float32),
          'epoch': packed['epoch']}


def _rows(documents: grain.MapDataset, tokenizer, cfg: DataConfig,
          examples: bool = False) -> grain.IterDataset:
  if cfg.objective == 'span' and not examples:
    return _span_rows(documents, tokenizer, cfg)
  if examples:
    docs = documents.map(_example)
  else:
    docs = documents.map_with_index(functools.partial(
        _tokenize, tokenizer=tokenizer, mlm=masking(tokenizer, cfg), seed=cfg.seed))
  docs = docs.filter(lambda d: len(d['inputs']) > 0).to_iter_dataset()
  weighted = cfg.objective == 'mlm' or examples
  features = ('inputs', 'targets', 'epoch') + (('weights',) if weighted else ())
  lengths = {k: cfg.seq_len for k in features}
  if cfg.packing == 'first_fit':
    chunks = gx.FlatMapIterDataset(docs, _Chunk(cfg.seq_len))
    packed = gx.FirstFitPackIterDataset(chunks, length_struct=lengths,
                                        num_packing_bins=cfg.global_batch_size, seed=cfg.seed,
                                        shuffle_bins=False)
  elif cfg.packing == 'concat_split':
    packed = gx.ConcatThenSplitIterDataset(docs, length_struct=lengths)
  else:
    raise ValueError(f'unknown packing {cfg.packing!r}; known: {", ".join(PACKINGS)}')
  return packed.map(_row)


def _global_batch_stats(batch: dict, token_bytes: np.ndarray) -> dict:
  """Exact accounting of a whole global batch, before it is sliced: tokens that
  count in the loss, those from the first epoch, the newest epoch, and the
  UTF-8 bytes of the counted targets (the denominator of bits per byte)."""
  counted = batch['weights'] > 0
  return {'tokens': int(counted.sum()),
          'unique_tokens': int((counted & (batch['epoch'] == 0)).sum()),
          'epoch': int(batch['epoch'][counted].max(initial=0)),
          'bytes': int(token_bytes[batch['targets']][counted].sum())}


def _slice_for_process(batch: dict, token_bytes: np.ndarray, process_index: int,
                       process_count: int) -> dict:
  rows = len(batch['inputs']) // process_count
  local = {k: v[process_index * rows:(process_index + 1) * rows] for k, v in batch.items()
           if k != 'epoch'}
  return {'batch': local, 'stats': _global_batch_stats(batch, token_bytes)}


def train_dataset(corpus: Corpus, cfg: DataConfig, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """Endless training batches: {'batch': this process's rows, 'stats': global counts}."""
  # An endless source (synthetic) is already in random order and has no epochs.
  endless = getattr(corpus.train, 'endless', False)
  documents = grain.MapDataset.source(
      _WithEpoch(corpus.train) if endless else EpochShuffled(corpus.train, cfg.seed))
  rows = _rows(documents, corpus.tokenizer, cfg, EXAMPLES_INFO in corpus.info)
  if cfg.shuffle_window > 1:
    # Packing emits a long document as consecutive rows; mixing rows across a
    # window of many documents keeps each batch diverse.
    rows = gx.WindowShuffleIterDataset(rows, window_size=cfg.shuffle_window, seed=cfg.seed)
  batches = rows.batch(cfg.global_batch_size, drop_remainder=True)
  return batches.map(functools.partial(_slice_for_process,
                                       token_bytes=token_bytes(corpus.tokenizer, cfg),
                                       process_index=process_index, process_count=process_count))


def restore_state(iterator, state: dict) -> None:
  """Sets a training iterator to a saved state, also one read back from JSON.

  JSON turns tuples into lists, and grain's concat-then-split packer compares
  its remainder slices with tuples: without this, a restored iterator silently
  skips the remainder of a split document.
  """
  def fix(node):
    if isinstance(node, dict):
      return {k: ({f: tuple(v) for f, v in node[k].items()} if k == 'remainder_slices'
                  else fix(node[k])) for k in node}
    return node

  iterator.set_state(fix(state))


def eval_batches(corpus: Corpus, cfg: DataConfig, process_index: int = 0,
                 process_count: int = 1, max_batches: int = -1) -> list[dict]:
  """The held-out split once, in order, as {'batch', 'stats'} items like training's;
  the last batch is padded with zero-weight rows."""
  examples = EXAMPLES_INFO in corpus.info
  whole = examples or cfg.objective == 'span'  # packed as in training, first_fit
  rows = list(_rows(grain.MapDataset.source(_WithEpoch(corpus.eval)), corpus.tokenizer,
                    cfg if whole else dataclasses.replace(cfg, packing='concat_split'),
                    examples))
  b, keys = cfg.global_batch_size, ROW_KEYS + (ENCODER_KEYS if cfg.objective == 'span' else ())
  batches = []
  for start in range(0, len(rows), b):
    chunk = rows[start:start + b]
    pad = [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * (b - len(chunk))
    batch = {k: np.stack([r[k] for r in chunk + pad]) for k in keys}
    batches.append(_slice_for_process(batch, token_bytes(corpus.tokenizer, cfg), process_index,
                                      process_count))
    if len(batches) == max_batches:
      break
  return batches


class _WithEpoch:
  """A source read as it is, all of it epoch 0."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    return 0, self._source[index]


def load(cfg: DataConfig) -> Corpus:
  """The corpus of `cfg`, with both splits non-empty; raises DataError on bad input."""
  corpus = open_corpus(cfg)
  if len(corpus.train) == 0 or len(corpus.eval) == 0:
    raise DataError(f'data.source {cfg.source!r}: the train or eval split is empty')
  return corpus
