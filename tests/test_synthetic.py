"""The synthetic Markov language: its exact entropy, and that no model beats it."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from llmjax.data import pipeline, sources, synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_exact_entropy_rate_matches_monte_carlo():
  source = synthetic.MarkovSource(synthetic.parse_spec('vocab=32,branching=4,seed=3,doc_len=2000'))
  nll = []
  for i in range(100):
    doc = source[i]
    nll.append(-np.log(source.transitions[doc[:-1], doc[1:]]))
  estimate = np.concatenate(nll).mean()
  assert abs(estimate - source.entropy_rate) / source.entropy_rate < 0.01
  np.testing.assert_allclose(source.stationary @ source.transitions, source.stationary, atol=1e-10)


ZIPF2 = 'vocab=16,order=2,branching=4,alpha=1.0,zipf=0.5,seed=1'


def test_order_k_entropy_rate_matches_monte_carlo():
  source = synthetic.MarkovSource(synthetic.parse_spec(ZIPF2 + ',doc_len=4000'))
  assert source.num_contexts == 256
  moved = np.bincount(source.next_context.ravel(),
                      weights=(source.stationary[:, None] * source.probs).ravel(), minlength=256)
  np.testing.assert_allclose(moved, source.stationary, atol=1e-12)  # pi = pi P
  nll = np.concatenate([-source.log_probs(source[i])[2:] for i in range(40)])
  assert abs(nll.mean() - source.entropy_rate) / source.entropy_rate < 0.01
  # Zipf weights make low symbols frequent: the most frequent tenth of the contexts
  # carries far more than a tenth of the mass.
  top = np.sort(source.stationary)[::-1][:len(source.stationary) // 10].sum()
  assert top > 0.3


def test_the_true_table_reaches_optimal_loss_first_tokens_included():
  """The Bayes predictor (true table, and pi's marginals for the first k tokens) scores
  optimal_loss on the documents the pipeline trains on; the entropy rate alone, which
  ignores the first tokens' higher cost, would be off by far more than the tolerance."""
  spec = synthetic.parse_spec(ZIPF2 + ',doc_len=16')
  source = synthetic.MarkovSource(spec)
  nll = np.concatenate([-source.log_probs(source[i]) for i in range(3000)])
  assert abs(nll.mean() - source.optimal_loss) / source.optimal_loss < 0.01
  assert source.optimal_loss - source.entropy_rate > 0.05
  # Rows of length doc_len are whole documents: their targets are the documents.
  corpus = sources.open_corpus(pipeline.DataConfig(source=f'synthetic:{ZIPF2},doc_len=16',
                                                   seq_len=16, global_batch_size=4))
  batch = pipeline.eval_batches(corpus, pipeline.DataConfig(
      source=f'synthetic:{ZIPF2},doc_len=16', seq_len=16, global_batch_size=4),
      max_batches=1)[0]['batch']
  for row in range(4):
    np.testing.assert_array_equal(batch['targets'][row], corpus.eval[row])
  assert corpus.info['optimal_loss'] == pytest.approx(source.optimal_loss)


def test_documents_are_a_function_of_seed_and_index():
  spec = synthetic.parse_spec(ZIPF2 + ',doc_len=32')
  again = synthetic.MarkovSource(spec)
  np.testing.assert_array_equal(synthetic.MarkovSource(spec)[7], again[7])
  corpus = sources.open_corpus(pipeline.DataConfig(source=f'synthetic:{ZIPF2},doc_len=32'))
  # The held-out split is another index range of the same stream.
  np.testing.assert_array_equal(corpus.eval[3], synthetic.MarkovSource(spec, offset=2**40)[3])
  assert not any(np.array_equal(corpus.eval[i], corpus.train[j])
                 for i in range(20) for j in range(20))


def test_documents_are_deterministic_and_distinct():
  source = synthetic.MarkovSource(synthetic.parse_spec('vocab=16,doc_len=64'))
  np.testing.assert_array_equal(source[5], source[5])
  assert not np.array_equal(source[5], source[6])
  assert source[0].max() < 16 and source[0].dtype == np.int32


@pytest.mark.parametrize('spec, message', [
    ('vocab=8,colour=3', "unknown key 'colour'"),
    ('vocab=eight', "vocab='eight' is not a number"),
    ('vocab=4,branching=9', 'need 2 <= branching <= vocab'),
    ('order=0', 'need 1 <= order < doc_len'),
    ('zipf=-1', 'zipf >= 0'),
    ('vocab=64,order=4', 'vocab.order = 16777216 contexts; at most 1048576'),
])
def test_bad_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    synthetic.parse_spec(spec)


def test_a_trained_model_does_not_beat_the_entropy(tmp_path):
  spec = 'vocab=16,branching=3,alpha=1.0,seed=0,doc_len=128'
  source = synthetic.MarkovSource(synthetic.parse_spec(spec))
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/base.py:tiny'),
       f'--workdir={workdir}', f'--config.data.source=synthetic:{spec}',
       '--config.model.vocab_size=17', '--config.train.steps=150', '--config.optim.lr=0.02',
       '--config.train.sample_tokens=0'],
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  final = [r for r in records if 'eval/loss' in r][-1]['eval/loss']
  config = json.loads((workdir / 'config.json').read_text())
  assert config['data_info']['optimal_loss'] == pytest.approx(source.optimal_loss)
  assert final >= source.optimal_loss - 0.02  # the eval set is finite: a small tolerance
  assert final < source.optimal_loss + 0.5  # and the model did learn the chain
