"""Masked LM and span corruption: statistics, determinism, exact inversion, lengths, bad input."""

import numpy as np
import pytest

from llmjax.data import objectives

EOT, MASK, VOCAB = 256, 257, 258
MLM = objectives.MaskedLM(mask_id=MASK, vocab_size=VOCAB, special_ids=(EOT, MASK))


def _documents(count=200, length=500, seed=0):
  rng = np.random.default_rng(seed)
  docs = [rng.integers(0, 256, length).astype(np.int32) for _ in range(count)]
  for doc in docs:
    doc[0] = EOT  # every document starts with end-of-text, as the pipeline writes them
  return docs


def test_masking_statistics_on_1e5_tokens():
  docs = _documents()
  selected = masked = randomized = kept = 0
  for i, doc in enumerate(docs):
    out = MLM(doc, seed=0, index=i)
    chosen = out['weights'] > 0
    assert not chosen[doc == EOT].any(), 'a special token was selected'
    np.testing.assert_array_equal(out['targets'], doc)
    np.testing.assert_array_equal(out['inputs'][~chosen], doc[~chosen])
    selected += chosen.sum()
    masked += (out['inputs'][chosen] == MASK).sum()
    kept += (out['inputs'][chosen] == doc[chosen]).sum()
    randomized += ((out['inputs'][chosen] != MASK) & (out['inputs'][chosen] != doc[chosen])).sum()
    assert not np.isin(out['inputs'][chosen & (out['inputs'] != MASK)], [EOT]).any()
  eligible = sum((d != EOT).sum() for d in docs)
  assert abs(selected / eligible - 0.15) < 0.005
  # A random replacement equals the original 1 time in 256: count those as kept.
  assert abs(masked / selected - 0.8) < 0.01
  assert abs((randomized + kept) / selected - 0.2) < 0.01
  assert abs(kept / selected - (0.1 + 0.1 / 256)) < 0.01


def test_masks_are_a_function_of_seed_and_index():
  doc = _documents(1)[0]
  a, b = MLM(doc, seed=3, index=7), MLM(doc, seed=3, index=7)
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert not np.array_equal(a['inputs'], MLM(doc, seed=3, index=8)['inputs'])
  assert not np.array_equal(a['inputs'], MLM(doc, seed=4, index=7)['inputs'])


def test_the_expected_selected_count_is_exact_for_short_documents():
  doc = np.array([EOT, 1, 2, 3, 4], np.int32)  # 4 eligible: 0.6 expected selections
  counts = [MLM(doc, seed=0, index=i)['weights'].sum() for i in range(4000)]
  assert set(counts) <= {0.0, 1.0} and abs(np.mean(counts) - 0.6) < 0.03


SPANS = objectives.SpanCorruption(sentinels=tuple(range(400, 300, -1)), eot_id=EOT)


@pytest.mark.parametrize('length', [2, 3, 10, 57, 512])
def test_span_corruption_inverts_exactly(length):
  ids = np.random.default_rng(length).integers(0, 256, length).astype(np.int32)
  out = SPANS(ids, seed=0, index=length)
  np.testing.assert_array_equal(objectives.uncorrupt(out['inputs'], out['targets'],
                                                     SPANS.sentinels, EOT), ids)
  noise, spans = SPANS.num_spans(length)
  assert len(out['inputs']) == length - noise + spans + 1
  assert len(out['targets']) == noise + spans + 1
  assert out['inputs'][-1] == out['targets'][-1] == EOT


def test_mean_span_length_and_density():
  ids = np.arange(600, dtype=np.int32) % 256
  lengths, noise_total = [], 0
  for i in range(200):
    out = SPANS(ids, seed=1, index=i)
    is_sentinel = np.isin(out['targets'], SPANS.sentinels)
    starts = np.flatnonzero(is_sentinel)
    lengths += list(np.diff(np.append(starts, len(out['targets']) - 1)) - 1)
    noise_total += (~is_sentinel).sum() - 1
  assert abs(noise_total / (200 * 600) - 0.15) < 0.002
  assert abs(np.mean(lengths) - 3.0) < 0.05


@pytest.mark.parametrize('input_length', [64, 256, 512, 568])
def test_span_lengths_fill_the_row(input_length):
  raw, target_length = SPANS.span_lengths(input_length)
  ids = np.zeros(raw, np.int32)
  out = SPANS(ids, seed=0, index=0)
  assert len(out['inputs']) <= input_length and len(out['targets']) == target_length
  for longer in range(raw + 1, raw + 50):  # no longer example fits
    noise, spans = SPANS.num_spans(longer)
    assert longer - noise + spans + 1 > input_length, longer


def test_bad_objective_settings_are_named():
  with pytest.raises(objectives.ObjectiveError, match='rate=1.5 must be in'):
    objectives.MaskedLM(mask_id=MASK, vocab_size=VOCAB, special_ids=(EOT,), rate=1.5)
  with pytest.raises(objectives.ObjectiveError, match='mask token id 300 is outside'):
    objectives.MaskedLM(mask_id=300, vocab_size=VOCAB, special_ids=(EOT,))
  few = objectives.SpanCorruption(sentinels=(400, 399), eot_id=EOT)
  with pytest.raises(objectives.ObjectiveError, match='only 2 sentinel tokens'):
    few(np.zeros(100, np.int32), seed=0, index=0)
