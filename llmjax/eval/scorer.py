"""The packed scorer: log-likelihoods of many (context, continuation) pairs, and pooled
hidden states of many texts, in few jitted forward passes of the model itself.

Each pair (or text) is one segment; segments are packed first-fit, longest first, into rows
of one length, with segment ids (a token attends only to its own segment) and positions
restarting at 0 in each segment, so a packed segment computes exactly what it would alone.
The row length is the longest segment rounded up to a power of two (at least MIN_LENGTH,
at most max_len) and every call holds `rows` rows: one compilation per length bucket.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.model.transformer import Transformer

MIN_LENGTH = 16


@dataclasses.dataclass
class Scores:
  sums: np.ndarray  # N float: log-likelihood of each continuation given its context
  counts: np.ndarray  # N int: tokens in each continuation
  greedy: np.ndarray  # N bool: every continuation token is the model's argmax


@dataclasses.dataclass
class _Packed:
  tokens: np.ndarray  # R T int32 model inputs
  targets: np.ndarray  # R T int32 next tokens
  positions: np.ndarray  # R T int32, restarting in each segment
  segment_ids: np.ndarray  # R T int32, 0 on padding
  spans: list  # per segment: (row, start, end) of its columns in the packed rows


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << (int(n) - 1).bit_length())


def _first_fit(lengths: Sequence[int], width: int) -> list[tuple[int, int]]:
  """(row, offset) of each segment, packed first-fit in decreasing length order."""
  free, places = [], [None] * len(lengths)
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
    if row is None:
      row = len(free)
      free.append(width)
    places[i] = (row, width - free[row])
    free[row] -= lengths[i]
  return places


def _pack(inputs: list[np.ndarray], targets: list[np.ndarray], width: int) -> _Packed:
  places = _first_fit([len(x) for x in inputs], width)
  rows = max(r for r, _ in places) + 1
  packed = _Packed(*(np.zeros((rows, width), np.int32) for _ in range(4)), spans=[])
  for i, ((row, start), x, y) in enumerate(zip(places, inputs, targets)):
    end = start + len(x)
    packed.tokens[row, start:end], packed.targets[row, start:end] = x, y
    packed.positions[row, start:end] = np.arange(len(x))
    packed.segment_ids[row, start:end] = i + 1
    packed.spans.append((row, start, end))
  return packed


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


class Scorer:
  """Scores pairs and embeds texts with one model; `rows` rows per forward pass."""

  def __init__(self, model: Transformer, rows: int = 8):
    if rows < 1:
      raise ValueError(f'rows must be >= 1, got {rows}')
    self.model, self.rows = model, rows
    self.graphdef, self.params = nnx.split(model)
    self.max_len = model.cfg.max_len
    self.vocab_size = model.cfg.vocab_size

  def _width(self, lengths) -> int:
    return min(_bucket(max(lengths), MIN_LENGTH), self.max_len)

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
    if not len(context):
      raise ValueError(f'context {i} is empty; start it with the end-of-text token, as '
                       'training documents start')
    if not 0 < len(continuation) <= self.max_len:
      raise ValueError(f'continuation {i} has {len(continuation)} tokens; it needs 1 to '
                       f'max_len={self.max_len}')
    # A context too long for max_len loses its oldest tokens, as in lm-eval-harness.
    return np.concatenate([context, continuation])[-self.max_len - 1:]

  def loglikelihood(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Scores:
    """Per (context ids, continuation ids) pair: the continuation's summed log-probability,
    its token count and whether greedy decoding would produce it. Inputs are checked
    before anything runs."""
    if not len(pairs):
      raise ValueError('no pairs to score')
    sequences = [self._pair(i, c, x) for i, (c, x) in enumerate(pairs)]
    counts = np.array([len(np.asarray(x).reshape(-1)) for _, x in pairs])
    inputs, targets = [s[:-1] for s in sequences], [s[1:] for s in sequences]
    packed = _pack(inputs, targets, self._width([len(x) for x in inputs]))
    logprobs = np.zeros(packed.tokens.shape, np.float32)
    greedy = np.zeros(packed.tokens.shape, bool)
    for first, arrays in _batches(packed, self.rows):
      out_logprobs, out_greedy = jax.device_get(
          _token_logprobs(self.graphdef, self.params, *arrays))
      n = min(self.rows, len(logprobs) - first)
      logprobs[first:first + n], greedy[first:first + n] = out_logprobs[:n], out_greedy[:n]
    sums, is_greedy = np.zeros(len(pairs)), np.zeros(len(pairs), bool)
    for i, ((row, _, end), count) in enumerate(zip(packed.spans, counts)):
      sums[i] = logprobs[row, end - count:end].astype(np.float64).sum()
      is_greedy[i] = greedy[row, end - count:end].all()
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
    packed = _pack(rows, rows, self._width([len(r) for r in rows]))
    weights = _pooling_weights(packed, pooling)
    out = np.zeros((len(rows), self.model.cfg.d_model), np.float32)
    slots = _segment_slots(packed)
    for first, arrays in _batches(packed, self.rows):
      w = np.pad(weights[first:first + self.rows],
                 ((0, self.rows - len(weights[first:first + self.rows])), (0, 0), (0, 0)))
      pooled = jax.device_get(_pooled(self.graphdef, self.params, arrays[0], arrays[2],
                                      arrays[3], w))
      for i, (row, _, _) in enumerate(packed.spans):
        if first <= row < first + self.rows:
          out[i] = pooled[row - first, slots[i]]
    return out


def _segment_slots(packed: _Packed) -> list[int]:
  """Each segment's index among the segments of its row (its slot M in the weights)."""
  seen, slots = {}, []
  for row, _, _ in packed.spans:
    slots.append(seen.get(row, 0))
    seen[row] = slots[-1] + 1
  return slots


def _pooling_weights(packed: _Packed, pooling: str) -> np.ndarray:
  """R M T weights: slot m of row r averages (or picks the last of) its segment's tokens,
  the first token left out when the segment has more than one."""
  slots = _segment_slots(packed)
  m = _bucket(max(slots) + 1, 1)
  weights = np.zeros((len(packed.tokens), m, packed.tokens.shape[1]), np.float32)
  for (row, start, end), slot in zip(packed.spans, slots):
    first = start + 1 if end - start > 1 else start
    if pooling == 'mean':
      weights[row, slot, first:end] = 1.0 / (end - first)
    else:
      weights[row, slot, end - 1] = 1.0
  return weights
