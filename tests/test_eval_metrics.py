"""Task metrics: hand-computed multiple choice, the wrappers equal the packages' own,
retrieval on a hand-made similarity matrix, seeded bootstrap standard errors."""

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn import metrics as sk_metrics

from llmjax.eval import metrics


def test_two_choice_acc_and_acc_norm_by_hand():
  # Example 1: choice 0 (' a', 2 characters) has the higher total log-likelihood, but choice
  # 1 (' bcdef', 6 characters) the higher per-character one: acc misses gold 1, acc_norm
  # finds it. Example 2: both pick choice 0, the gold.
  lls = [np.array([-1.0, -1.5]), np.array([-0.5, -4.0])]
  lengths = [np.array([2, 6]), np.array([2, 2])]
  out = metrics.choice_metrics(lls, [1, 0], lengths)
  assert out['acc'].tolist() == [0.0, 1.0]
  assert out['acc_norm'].tolist() == [1.0, 1.0]
  np.testing.assert_allclose(out['gold_prob'], [1 / (1 + np.exp(0.5)), 1 / (1 + np.exp(-3.5))])
  summary = metrics.multiple_choice(lls, [1, 0], lengths)
  assert summary['acc'] == 0.5 and summary['acc_norm'] == 1.0 and summary['acc_norm_stderr'] == 0
  # The task loss: the gold choice's negative log-likelihood per character.
  np.testing.assert_allclose(out['nll'], [1.5 / 6, 0.5 / 2])
  assert summary['nll'] == pytest.approx((1.5 / 6 + 0.5 / 2) / 2)


def test_bootstrap_stderr_is_seeded_and_near_the_binomial():
  rng = np.random.default_rng(0)
  hits = (rng.random(400) < 0.3).astype(float)
  a = metrics.summarize({'acc': hits}, n=400, seed=1)
  assert a == metrics.summarize({'acc': hits}, n=400, seed=1)
  assert a != metrics.summarize({'acc': hits}, n=400, seed=2)
  p = hits.mean()
  assert a['acc_stderr'] == pytest.approx(np.sqrt(p * (1 - p) / 400), rel=0.1)
  assert metrics.summarize({'acc': hits[:1]}, n=1)['acc_stderr'] == 0.0


PREDICTIONS = ['the cat sat on the mat', 'Hello, world!', 'return the sum of a and b', '']
TARGETS = ['a cat sat on a mat', 'hello world', 'Return the sum of two numbers.', 'empty']


def test_generate_wrappers_equal_the_packages():
  out = metrics.generate(PREDICTIONS, TARGETS)
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'])
  for kind in ('rouge1', 'rouge2', 'rougeL'):
    expected = np.mean([scorer.score(t, p)[kind].fmeasure for p, t in zip(PREDICTIONS, TARGETS)])
    assert out[kind] == pytest.approx(expected)
  assert out['bleu'] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [TARGETS]).score)
  assert out['chrf'] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [TARGETS]).score)
  assert out['bleu_stderr'] > 0 and out['rougeL_stderr'] > 0
  # SQuAD normalization: case, punctuation and articles do not count.
  assert out['exact_match'] == pytest.approx(2 / 4)


def test_token_f1_by_hand():
  # 'cat sat' against 'cat sat down': precision 1, recall 2/3.
  assert metrics.token_f1('The cat sat.', 'a cat sat down') == pytest.approx(0.8)
  assert metrics.token_f1('', '') == 1.0 and metrics.token_f1('x', '') == 0.0
  assert metrics.token_f1('dog', 'cat') == 0.0


def test_classify_equals_scikit_learn():
  rng = np.random.default_rng(3)
  golds = rng.integers(0, 3, 50)
  lls = [rng.normal(size=3) + 2.0 * (np.arange(3) == g) for g in golds]
  predictions = [int(np.argmax(x)) for x in lls]
  out = metrics.classify(lls, golds)
  assert out['acc'] == pytest.approx(sk_metrics.accuracy_score(golds, predictions))
  assert out['f1_macro'] == pytest.approx(
      sk_metrics.f1_score(golds, predictions, average='macro'))
  assert 0 < out['f1_macro_stderr'] < 0.2


def test_retrieval_metrics_on_a_hand_made_similarity_matrix():
  # Gold ranks: query 0 -> 1st, query 1 -> 3rd, query 2 -> 2nd (tie with gold: in its favour
  # so 2nd, not 3rd), query 3 -> 12th of 12.
  similarity = np.zeros((4, 12))
  similarity[0, [0, 1]] = [0.9, 0.1]
  similarity[1, [2, 3, 4]] = [0.5, 0.7, 0.6]
  similarity[2, [5, 6, 7]] = [0.4, 0.4, 0.8]
  similarity[3] = np.linspace(1, 2, 12)
  golds = [0, 2, 5, 0]
  np.testing.assert_array_equal(metrics.ranks(similarity, golds), [1, 3, 2, 12])
  out = metrics.retrieve(similarity, golds)
  assert out['recall@1'] == 0.25 and out['recall@5'] == 0.75 and out['recall@10'] == 0.75
  assert out['mrr'] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 12) / 4)


def test_cosine_similarity_ignores_length():
  q = np.array([[1.0, 0.0], [1.0, 1.0]])
  d = np.array([[10.0, 0.0], [0.0, 3.0]])
  np.testing.assert_allclose(metrics.cosine_similarity(q, d), [[1, 0], [2 ** -0.5, 2 ** -0.5]])
