"""Packed token streams: documents concatenated, cut into fixed-length rows.

Each row carries segment ids (one per document in the row) so attention never
crosses documents, positions that restart at each document, and loss weights
that are 0 where the target belongs to another document.
"""

from collections.abc import Iterator, Sequence

import numpy as np


class TokenStream:
  """Documents' tokens end to end, with their start offsets."""

  def __init__(self, docs: Sequence[np.ndarray]):
    docs = [d for d in docs if len(d)]
    lengths = np.array([len(d) for d in docs], np.int64)
    self.tokens = np.concatenate(docs).astype(np.int32)
    self.doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

  def __len__(self) -> int:
    return len(self.tokens)

  def rows(self, starts: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    """Rows of seq_len inputs (and next-token targets) beginning at `starts`."""
    idx = starts[:, None] + np.arange(seq_len + 1)[None]  # B, T+1
    valid = idx < len(self.tokens)
    idx = np.minimum(idx, len(self.tokens) - 1)
    doc = np.searchsorted(self.doc_starts, idx, side='right') - 1
    row_start = idx[:, :1]
    first = np.maximum(self.doc_starts[doc], row_start)  # start of the doc within the row
    return {
        'inputs': self.tokens[idx[:, :-1]],
        'targets': self.tokens[idx[:, 1:]],
        'positions': (idx - first)[:, :-1].astype(np.int32),
        'segment_ids': (doc - doc[:, :1] + 1)[:, :-1].astype(np.int32),
        'weights': ((doc[:, 1:] == doc[:, :-1]) & valid[:, 1:]).astype(np.float32),
    }


def random_batch(stream: TokenStream, batch_size: int, seq_len: int, seed: int,
                 step: int) -> dict[str, np.ndarray]:
  """Rows at uniformly random offsets; a pure function of (seed, step), so resuming
  at step s sees exactly the batch an uninterrupted run would."""
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(stream) - seq_len, size=batch_size)
  return stream.rows(starts, seq_len)


def sequential_batches(stream: TokenStream, batch_size: int, seq_len: int,
                       max_batches: int = -1) -> Iterator[dict[str, np.ndarray]]:
  """Consecutive non-overlapping rows covering the stream once (evaluation).

  The last batch is padded with zero-weight rows so every batch has one shape.
  """
  starts = np.arange(0, len(stream) - 1, seq_len)
  num = -(-len(starts) // batch_size)
  if max_batches >= 0:
    num = min(num, max_batches)
  for b in range(num):
    chunk = starts[b * batch_size:(b + 1) * batch_size]
    pad = batch_size - len(chunk)
    batch = stream.rows(np.concatenate([chunk, np.full(pad, chunk[0])]), seq_len)
    if pad:
      batch['weights'][-pad:] = 0.0
    yield batch
