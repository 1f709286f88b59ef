"""The built-in corpus, its held-out split, and packed rows."""

import numpy as np

from llmjax.data import pystdlib, stream
from llmjax.data.tokenizer import ByteTokenizer


def test_split_is_whole_files_seeded_and_about_one_percent():
  files = pystdlib.source_files()
  train, held_out = pystdlib.split(files, 0.01, seed=0)
  assert set(train).isdisjoint(held_out) and len(train) + len(held_out) == len(files)
  share = sum(p.stat().st_size for p in held_out) / sum(p.stat().st_size for p in files)
  assert 0.005 < share <= 0.01
  assert pystdlib.split(files, 0.01, seed=0)[1] == held_out
  assert pystdlib.split(files, 0.01, seed=1)[1] != held_out


def test_byte_tokenizer_round_trip():
  tok = ByteTokenizer()
  text = 'def f(x):\n    return "ünïcode"\n'
  assert tok.decode(tok.encode(text)) == text
  assert tok.encode('A').tolist() == [65]


def _stream():
  return stream.TokenStream([np.arange(0, 5), np.arange(10, 13), np.arange(20, 30)])


def test_rows_mark_documents():
  rows = _stream().rows(np.array([3]), seq_len=8)
  # tokens 3 4 | 10 11 12 | 20 21 22 (23 is the last target)
  assert rows['inputs'].tolist() == [[3, 4, 10, 11, 12, 20, 21, 22]]
  assert rows['targets'].tolist() == [[4, 10, 11, 12, 20, 21, 22, 23]]
  assert rows['segment_ids'].tolist() == [[1, 1, 2, 2, 2, 3, 3, 3]]
  assert rows['positions'].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2]]
  # No loss where the target starts another document.
  assert rows['weights'].tolist() == [[1, 0, 1, 1, 0, 1, 1, 1]]


def test_random_batches_are_a_function_of_seed_and_step():
  s = _stream()
  a = stream.random_batch(s, 4, 6, seed=0, step=3)
  b = stream.random_batch(s, 4, 6, seed=0, step=3)
  c = stream.random_batch(s, 4, 6, seed=0, step=4)
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert not np.array_equal(a['inputs'], c['inputs'])


def test_sequential_batches_predict_every_target_once():
  s = _stream()
  batches = list(stream.sequential_batches(s, batch_size=2, seq_len=4))
  predicted = []
  for batch in batches:
    assert batch['inputs'].shape == (2, 4)
    predicted += batch['targets'][batch['weights'] > 0].tolist()
  # Every token but each document's first is a target exactly once.
  assert sorted(predicted) == [1, 2, 3, 4, 11, 12] + list(range(21, 30))
