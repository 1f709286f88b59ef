"""The synthetic language of facts: its exact entropy, the Bayes predictor, documents."""

import numpy as np
import pytest

from llmjax.data import facts, pipeline, sources, synthetic

SMALL = 'kind=facts,keys=4096,zipf=1.2,key_len=3,key_symbols=16,value_len=2,value_symbols=8,' \
    'options=3,seed=2,doc_len=20'


def _source(spec: str = SMALL, **kw) -> facts.FactsSource:
  return synthetic.source(synthetic.parse_spec(spec), **kw)


def test_exact_entropy_matches_monte_carlo():
  """The key and option entropies, summed exactly, against the mean surprisal of draws."""
  source = _source()
  ranks, options = source.draw(np.random.default_rng(0), 200_000)
  surprisal = -np.log(source.table.key_probs[ranks]) - np.log(source.table.option_probs[options])
  exact = source.entropy_rate * source.spec.segment_len
  assert abs(surprisal.mean() - exact) / exact < 0.01
  q = np.array([4, 2, 1]) / 7
  assert source.option_entropy == pytest.approx(-(q * np.log(q)).sum(), rel=1e-12)
  # The frequencies are Zipf's: rank 1 is seen 2^1.2 times as often as rank 2.
  assert source.table.key_probs[0] / source.table.key_probs[1] == pytest.approx(2 ** 1.2)


def test_the_true_table_scores_the_entropy_from_a_documents_first_token():
  """The Bayes predictor (key prefixes by their marginals, the option, the determined rest)
  scores optimal_loss on the documents the pipeline trains on, first segment included; each
  segment's token costs add up to exactly -log P(key) - log P(option) (chain rule)."""
  source = _source()
  docs = [source[i] for i in range(3000)]
  nll = -np.concatenate([source.log_probs(d) for d in docs])
  assert np.isfinite(nll).all()
  assert abs(nll.mean() - source.optimal_loss) / source.optimal_loss < 0.01
  first = nll.reshape(len(docs), -1)[:, :source.spec.segment_len].sum(1).mean()
  assert abs(first - source.optimal_loss * source.spec.segment_len) < 0.1  # no special case
  ranks, options = source.draw(np.random.default_rng(1), 50)
  per_segment = -source.log_probs(source.segments(ranks, options).ravel()).reshape(50, -1)
  np.testing.assert_allclose(per_segment.sum(1), -np.log(source.table.key_probs[ranks])
                             - np.log(source.table.option_probs[options]), rtol=1e-9)
  # Every id has its segment position's block, and every key string is distinct.
  block = np.concatenate([np.arange(3) * 16, 48 + np.arange(2) * 8])
  seg = np.stack(docs).reshape(-1, 5)
  assert ((seg >= block) & (seg < block + np.array([16] * 3 + [8] * 2))).all()
  assert len(np.unique(source.table.key_string)) == source.spec.keys


def test_an_impossible_document_scores_minus_infinity():
  source = _source()
  doc = source[0].copy()
  doc[3] = 48 + (doc[3] - 48 + 4) % 8  # the first value token: an option the key lacks
  assert np.isneginf(source.log_probs(doc)[3])


def test_documents_are_a_function_of_seed_and_index_and_eval_is_disjoint():
  np.testing.assert_array_equal(_source()[7], _source()[7])
  assert not np.array_equal(_source()[7], _source()[8])
  cfg = pipeline.DataConfig(source=f'synthetic:{SMALL}', seq_len=20, global_batch_size=4)
  corpus = sources.open_corpus(cfg)
  np.testing.assert_array_equal(corpus.eval[3], _source(offset=2**40)[3])
  assert corpus.info['optimal_loss'] == pytest.approx(_source().optimal_loss)
  assert corpus.tokenizer.vocab_size == 3 * 16 + 2 * 8 + 1
  batch = pipeline.eval_batches(corpus, cfg, max_batches=1)[0]['batch']
  for row in range(4):  # rows of doc_len tokens are whole documents
    np.testing.assert_array_equal(batch['targets'][row], corpus.eval[row])
  assert sources.vocab_size(f'synthetic:{SMALL}', 'byte') == 65


@pytest.mark.parametrize('spec, message', [
    ('kind=facts,doc_len=50', 'doc_len=50 must be a multiple of key_len \\+ value_len = 6'),
    ('kind=facts,keys=100,key_len=1,key_symbols=10', 'keys=100 must be between 1 and'),
    ('kind=facts,options=40', 'options=40 must be between 1 and value_symbols'),
    ('kind=facts,key_symbols=64,key_len=5', 'key strings; at most 16777216'),
    ('kind=facts,vocab=3', "unknown key 'vocab'"),
    ('kind=facts,zipf=-1', 'zipf must be >= 0'),
    ('kind=trees', "unknown kind 'trees'; known: markov, facts"),
])
def test_bad_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    synthetic.parse_spec(spec)


def test_the_markov_tasks_refuse_the_facts_language():
  with pytest.raises(ValueError, match='needs the synthetic Markov language; got kind=facts'):
    synthetic.MarkovSource(synthetic.parse_spec(SMALL))
