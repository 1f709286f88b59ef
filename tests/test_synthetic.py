"""The synthetic Markov language: its exact entropy, and that no model beats it."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from llmjax.data import synthetic

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


def test_documents_are_deterministic_and_distinct():
  source = synthetic.MarkovSource(synthetic.parse_spec('vocab=16,doc_len=64'))
  np.testing.assert_array_equal(source[5], source[5])
  assert not np.array_equal(source[5], source[6])
  assert source[0].max() < 16 and source[0].dtype == np.int32


@pytest.mark.parametrize('spec, message', [
    ('vocab=8,colour=3', "unknown key 'colour'"),
    ('vocab=eight', "vocab='eight' is not a number"),
    ('vocab=4,branching=9', 'need 2 <= branching <= vocab'),
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
