"""The packed scorer: log-likelihoods of many (context, continuation) pairs, and pooled
hidden states of many texts, in few jitted forward passes of the model itself.

Each pair (or text) is one segment; segments are packed first-fit, longest first, into rows
with segment ids (a token attends only to its own segment) and positions restarting at 0
in each segment, so a packed segment computes exactly what it would alone. Row widths are
powers of two (at least MIN_LENGTH, at most max_len): a segment that fits in no open row
opens one of its own length's bucket, since a wide row costs more per token (attention).
Every call holds `rows` rows of one width: one compilation per length bucket. When the
model's parameters live on a mesh (a run being trained, or restored sharded), the rows are
sharded over the mesh's batch axes as training shards its batches (`sharding.data_sharding`
with the active rules), and `rows` is rounded up to a multiple of those axes' size.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax.core import spmd

from llmjax import generate, sharding
from llmjax.model.transformer import Transformer

MIN_LENGTH = 16


@dataclasses.dataclass
class Scores:
  sums: np.ndarray  # N float: log-likelihood of each continuation given its context
  counts: np.ndarray  # N int: tokens in each continuation
  greedy: np.ndarray  # N bool: every continuation token is the model's argmax


@dataclasses.dataclass
class _Packed:
  """The rows of one width."""
  tokens: np.ndarray  # R T int32 model inputs
  targets: np.ndarray  # R T int32 next tokens
  positions: np.ndarray  # R T int32, restarting in each segment
  segment_ids: np.ndarray  # R T int32, 0 on padding


@dataclasses.dataclass(frozen=True)
class _Place:
  width: int  # of the row, which names its group
  row: int  # within the group
  start: int
  end: int
  slot: int  # the segment's index among its row's segments


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << (int(n) - 1).bit_length())


def _first_fit(lengths: Sequence[int], max_width: int) -> list[_Place]:
  """Where each segment goes: longest first, into the first open row with room, else into
  a new row as narrow as its length's bucket allows (wide rows cost more per token, so a
  short segment opens a short row, but first fills the gaps the long ones left)."""
  rows = []  # [width, used, segments] per open row, in opening order
  counts, places = {}, [None] * len(lengths)
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    row = next((r for r in rows if r[0] - r[1] >= lengths[i]), None)
    if row is None:
      width = min(_bucket(lengths[i], MIN_LENGTH), max_width)
      row = [width, 0, 0, counts.get(width, 0)]
      counts[width] = row[3] + 1
      rows.append(row)
    places[i] = _Place(row[0], row[3], row[1], row[1] + lengths[i], row[2])
    row[1] += lengths[i]
    row[2] += 1
  return places


def _pack(inputs: list[np.ndarray], targets: list[np.ndarray],
          max_width: int) -> tuple[dict[int, _Packed], list[_Place]]:
  """The rows of each width, and each segment's place in them."""
  places = _first_fit([len(x) for x in inputs], max_width)
  groups = {}
  for width in sorted({p.width for p in places}):
    count = 1 + max(p.row for p in places if p.width == width)
    groups[width] = _Packed(*(np.zeros((count, width), np.int32) for _ in range(4)))
  for i, (place, x, y) in enumerate(zip(places, inputs, targets)):
    group, row, span = groups[place.width], place.row, slice(place.start, place.end)
    group.tokens[row, span], group.targets[row, span] = x, y
    group.positions[row, span] = np.arange(len(x))
    group.segment_ids[row, span] = i + 1
  return groups, places


def _batches(packed: _Packed, rows: int):
  """(first row, arrays of `rows` rows) chunks; the last is padded with empty rows."""
  arrays = (packed.tokens, packed.targets, packed.positions, packed.segment_ids)
  for first in range(0, len(packed.tokens), rows):
    chunk = [a[first:first + rows] for a in arrays]
    yield first, [np.pad(a, ((0, rows - len(a)), (0, 0))) for a in chunk]


@functools.partial(jax.jit, static_argnames='graphdef')
def _token_logprobs(graphdef, params, tokens, targets, positions, segment_ids):
  """RT -> (log p of each target token, whether it is the argmax), both RT."""
  logits = nnx.merge(graphdef, params)(tokens, positions, segment_ids)
  logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)
  return logprobs[..., 0], jnp.argmax(logits, axis=-1) == targets


@functools.partial(jax.jit, static_argnames='graphdef')
def _pooled(graphdef, params, tokens, positions, segment_ids, weights):
  """RT tokens, RMT pooling weights -> RMD: weighted sums of the final-norm hidden states
  (the stream the output head reads) for M segment slots per row."""
  model = nnx.merge(graphdef, params)
  x = model.embed_tokens(tokens, positions)
  hidden = model.final_norm(model.hidden(x, positions, segment_ids)).astype(jnp.float32)
  return jnp.einsum('RMT,RTD->RMD', weights, hidden)


def batch_sharding(params) -> tuple[jax.sharding.NamedSharding | None, int]:
  """How training would shard a batch beside these parameters: the 'batch' rule of the
  active rules (the default rules outside training) on the parameters' mesh, and how many
  ways it splits rows; (None, 1) for parameters on one device."""
  mesh = next((leaf.sharding.mesh for leaf in jax.tree.leaves(params)
               if isinstance(getattr(leaf, 'sharding', None), jax.sharding.NamedSharding)),
              None)
  if mesh is None or mesh.size == 1:
    return None, 1
  rules = spmd.get_logical_axis_rules() or sharding.DEFAULT_RULES
  return (sharding.data_sharding(mesh, rules),
          sharding.data_parallel_size(dict(mesh.shape), rules))


class Scorer:
  """Scores pairs and embeds texts with one model; `rows` rows per forward pass."""

  def __init__(self, model: Transformer, rows: int = 8):
    if rows < 1:
      raise ValueError(f'rows must be >= 1, got {rows}')
    self.model = model
    self.graphdef, self.params = nnx.split(model)
    self.rows_sharding, ways = batch_sharding(self.params)
    self.rows = -(-rows // ways) * ways
    self.max_len = model.cfg.max_len
    self.vocab_size = model.cfg.vocab_size

  def _placed(self, array: np.ndarray):
    """A batch's array on the devices, its rows sharded like training's (if on a mesh)."""
    if self.rows_sharding is None:
      return array
    spec = jax.sharding.PartitionSpec(self.rows_sharding.spec[0], *([None] * (array.ndim - 1)))
    return jax.device_put(array, jax.sharding.NamedSharding(self.rows_sharding.mesh, spec))

  def _checked(self, ids, what: str, i: int) -> np.ndarray:
    row = np.asarray(ids, np.int64).reshape(-1)
    bad = row[(row < 0) | (row >= self.vocab_size)]
    if bad.size:
      raise ValueError(f'{what} {i} holds token id {bad[0]} outside the vocabulary '
                       f'[0, {self.vocab_size})')
    return row

  def _pair(self, i: int, context, continuation) -> np.ndarray:
    context = self._checked(context, 'context', i)
    continuation = self._checked(continuation, 'continuation', i)
    return generate.scoring_row(i, context, continuation, self.max_len)

  def _token_scores(self, group: _Packed) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and greedy flags of every position of a group's rows."""
    logprobs = np.zeros(group.tokens.shape, np.float32)
    greedy = np.zeros(group.tokens.shape, bool)
    for first, arrays in _batches(group, self.rows):
      out = jax.device_get(_token_logprobs(self.graphdef, self.params,
                                           *map(self._placed, arrays)))
      n = min(self.rows, len(logprobs) - first)
      logprobs[first:first + n], greedy[first:first + n] = out[0][:n], out[1][:n]
    return logprobs, greedy

  def loglikelihood(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Scores:
    """Per (context ids, continuation ids) pair: the continuation's summed log-probability,
    its token count and whether greedy decoding would produce it. Inputs are checked
    before anything runs."""
    if not len(pairs):
      raise ValueError('no pairs to score')
    sequences = [self._pair(i, c, x) for i, (c, x) in enumerate(pairs)]
    counts = np.array([len(np.asarray(x).reshape(-1)) for _, x in pairs])
    groups, places = _pack([s[:-1] for s in sequences], [s[1:] for s in sequences],
                           self.max_len)
    scored = {width: self._token_scores(group) for width, group in groups.items()}
    sums, is_greedy = np.zeros(len(pairs)), np.zeros(len(pairs), bool)
    for i, (place, count) in enumerate(zip(places, counts)):
      logprobs, greedy = scored[place.width]
      span = slice(place.end - count, place.end)
      sums[i] = logprobs[place.row, span].astype(np.float64).sum()
      is_greedy[i] = greedy[place.row, span].all()
    return Scores(sums=sums, counts=counts, greedy=is_greedy)

  def embed(self, texts: Sequence[Sequence[int]], pooling: str = 'mean') -> np.ndarray:
    """N D float32: each text's final hidden states pooled over its tokens after the first
    (the end-of-text token every text starts with looks the same in all of them): 'mean',
    or the 'last' token's. Texts longer than max_len keep their first max_len tokens."""
    if pooling not in ('mean', 'last'):
      raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    if not len(texts):
      raise ValueError('no texts to embed')
    rows = [self._checked(t, 'text', i)[:self.max_len] for i, t in enumerate(texts)]
    if not all(len(r) for r in rows):
      raise ValueError(f'text {[len(r) for r in rows].index(0)} is empty')
    groups, places = _pack(rows, rows, self.max_len)
    out = np.zeros((len(rows), self.model.cfg.d_model), np.float32)
    for width, group in groups.items():
      mine = [(i, p) for i, p in enumerate(places) if p.width == width]
      weights = _pooling_weights(group, [p for _, p in mine], pooling)
      pooled = np.concatenate([
          jax.device_get(_pooled(self.graphdef, self.params,
                                 *map(self._placed, (arrays[0], arrays[2], arrays[3],
                                                     _rows(weights[first:first + self.rows],
                                                           self.rows)))))
          for first, arrays in _batches(group, self.rows)])
      for i, place in mine:
        out[i] = pooled[place.row, place.slot]
    return out


def _rows(array: np.ndarray, rows: int) -> np.ndarray:
  """`array` padded with zero rows to `rows` rows."""
  return np.pad(array, ((0, rows - len(array)),) + ((0, 0),) * (array.ndim - 1))


def _pooling_weights(group: _Packed, places: list[_Place], pooling: str) -> np.ndarray:
  """R M T weights: slot m of row r averages (or picks the last of) its segment's tokens,
  the first token left out when the segment has more than one. M is bucketed (one
  compilation serves rows of up to M segments)."""
  m = _bucket(max(p.slot for p in places) + 1, 1)
  weights = np.zeros((len(group.tokens), m, group.tokens.shape[1]), np.float32)
  for p in places:
    first = p.start + 1 if p.end - p.start > 1 else p.start
    if pooling == 'mean':
      weights[p.row, p.slot, first:p.end] = 1.0 / (p.end - first)
    else:
      weights[p.row, p.slot, p.end - 1] = 1.0
  return weights
