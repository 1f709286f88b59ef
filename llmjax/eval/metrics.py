"""Task metrics from scores, with seeded bootstrap standard errors on every one.

Each kind's function returns {metric: value, metric + '_stderr': standard error}. A metric
is either a mean of per-example values (acc, exact match, ROUGE, ...) or a corpus statistic
(BLEU, chrF, macro-F1) recomputed on each bootstrap resample of the examples. The
packages the field uses compute what they define: ROUGE by `rouge-score`, BLEU and chrF by
`sacrebleu`, accuracy and macro-F1 by scikit-learn.
"""

import collections
import re
import string
from collections.abc import Callable, Sequence

import numpy as np

# rouge-score (through nltk), sacrebleu and scikit-learn are imported where they are used:
# together they take ~2 s to import, and the trainer imports this module at start-up, before
# it refuses a bad config.

BOOTSTRAP_ITERATIONS = 1000
# Corpus statistics rerun the package on every resample: fewer resamples keep them quick.
CORPUS_BOOTSTRAP_ITERATIONS = 200
RETRIEVAL_KS = (1, 5, 10)


def _resamples(n: int, iterations: int, seed: int) -> np.ndarray:
  """iterations x n example indices drawn with replacement."""
  return np.random.default_rng(seed).integers(0, n, (iterations, n))


def summarize(per_example: dict[str, np.ndarray],
              corpus: dict[str, Callable[[np.ndarray], float]] | None = None, *,
              n: int, seed: int = 0, iterations: int = BOOTSTRAP_ITERATIONS) -> dict:
  """Means of the per-example metrics and the corpus metrics (functions of an index
  array), each with its bootstrap standard error (0 with a single example)."""
  out = {}
  draws = _resamples(n, iterations, seed)
  for name, values in per_example.items():
    values = np.asarray(values, np.float64)
    out[name] = float(values.mean())
    out[f'{name}_stderr'] = float(values[draws].mean(axis=1).std(ddof=1)) if n > 1 else 0.0
  for name, statistic in (corpus or {}).items():
    out[name] = float(statistic(np.arange(n)))
    few = draws[:min(iterations, CORPUS_BOOTSTRAP_ITERATIONS)]
    out[f'{name}_stderr'] = (float(np.std([statistic(d) for d in few], ddof=1))
                             if n > 1 else 0.0)
  return out


def choice_metrics(loglikelihoods: Sequence[np.ndarray], golds: Sequence[int],
                   lengths: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Per-example acc, acc_norm (when lengths are given) and gold_prob.

  As lm-evaluation-harness defines them (lm_eval/api/task.py, ConfigurableTask.
  process_results for multiple_choice, v0.4): acc = 1 when the gold choice has the highest
  total log-likelihood; acc_norm divides each choice's log-likelihood by its length in
  characters (`len(choice)` of the choice string) before the argmax. gold_prob is the
  softmax over the choices' total log-likelihoods at the gold one: a continuous metric.
  With lengths, nll is the task loss of arXiv 2412.04403: the gold continuation's negative
  log-likelihood per unit of its length (nats per character, or per token for token ids).
  Ties go to the first choice, as np.argmax breaks them.
  """
  acc, acc_norm, gold_prob, nll = [], [], [], []
  for i, (lls, gold) in enumerate(zip(loglikelihoods, golds)):
    lls = np.asarray(lls, np.float64)
    acc.append(float(np.argmax(lls) == gold))
    if lengths is not None:
      acc_norm.append(float(np.argmax(lls / np.asarray(lengths[i], np.float64)) == gold))
      nll.append(-lls[gold] / max(float(lengths[i][gold]), 1.0))
    probs = np.exp(lls - lls.max())
    gold_prob.append(probs[gold] / probs.sum())
  out = {'acc': np.array(acc), 'gold_prob': np.array(gold_prob)}
  if lengths is not None:
    out['acc_norm'], out['nll'] = np.array(acc_norm), np.array(nll)
  return out


def multiple_choice(loglikelihoods, golds, lengths, seed: int = 0) -> dict:
  """acc, acc_norm, gold_prob, nll (see choice_metrics) with standard errors."""
  return summarize(choice_metrics(loglikelihoods, golds, lengths), n=len(golds), seed=seed)


def classify(loglikelihoods, golds, lengths=None, seed: int = 0) -> dict:
  """Label-word likelihood classification: acc (the mean of argmax == gold, which is
  scikit-learn's accuracy_score), macro-F1 (scikit-learn's f1_score over the labels that
  occur as gold or prediction), gold_prob, and with the labels' lengths nll."""
  from sklearn import metrics as sk_metrics
  golds = np.asarray(golds)
  predictions = np.array([int(np.argmax(lls)) for lls in loglikelihoods])
  per_example = choice_metrics(loglikelihoods, golds, lengths)  # acc: sklearn's accuracy_score
  per_example.pop('acc_norm', None)  # one label set for every example: acc_norm is acc

  def macro_f1(idx):
    return sk_metrics.f1_score(golds[idx], predictions[idx], average='macro', zero_division=0)

  return summarize(per_example, {'f1_macro': macro_f1}, n=len(golds), seed=seed)


def normalize_answer(text: str) -> str:
  """SQuAD's answer normalization: lower case, no punctuation, no English articles,
  single spaces."""
  text = ''.join(c for c in text.lower() if c not in set(string.punctuation))
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return ' '.join(text.split())


def token_f1(prediction: str, target: str) -> float:
  """SQuAD's token F1 between normalized answers (1 when both are empty)."""
  predicted, wanted = normalize_answer(prediction).split(), normalize_answer(target).split()
  if not predicted or not wanted:
    return float(predicted == wanted)
  common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(wanted)
  return 2 * precision * recall / (precision + recall)


_ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeL')


def generate(predictions: Sequence[str], targets: Sequence[str], seed: int = 0,
             target_nll: Sequence[float] | None = None) -> dict:
  """exact_match and token_f1 (SQuAD-normalized), ROUGE-1/2/L F-measures (rouge-score),
  BLEU and chrF (sacrebleu corpus scores, 0-100), and nll: `target_nll`'s mean (the
  target's negative log-likelihood per character, the task loss), when given."""
  import sacrebleu
  from rouge_score import rouge_scorer
  rouge = rouge_scorer.RougeScorer(list(_ROUGE_TYPES))
  scores = [rouge.score(t, p) for p, t in zip(predictions, targets)]
  per_example = {
      'exact_match': np.array([normalize_answer(p) == normalize_answer(t)
                               for p, t in zip(predictions, targets)], np.float64),
      'token_f1': np.array([token_f1(p, t) for p, t in zip(predictions, targets)]),
      **{kind: np.array([s[kind].fmeasure for s in scores]) for kind in _ROUGE_TYPES}}
  if target_nll is not None:
    per_example['nll'] = np.asarray(target_nll, np.float64)
  predictions, targets = list(predictions), list(targets)

  def corpus(score):
    return lambda idx: score([predictions[i] for i in idx], [[targets[i] for i in idx]]).score

  return summarize(per_example, {'bleu': corpus(sacrebleu.corpus_bleu),
                                 'chrf': corpus(sacrebleu.corpus_chrf)},
                   n=len(predictions), seed=seed)


def ranks(similarity: np.ndarray, golds: Sequence[int]) -> np.ndarray:
  """1-based rank of each query's gold document: 1 + the documents scoring strictly
  higher (a tie with the gold counts in its favour)."""
  similarity = np.asarray(similarity, np.float64)
  gold_scores = similarity[np.arange(len(golds)), np.asarray(golds)]
  return 1 + (similarity > gold_scores[:, None]).sum(axis=1)


def cosine_similarity(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
  """Q N cosine similarities of Q query and N document vectors."""
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return unit(np.asarray(queries, np.float64)) @ unit(np.asarray(documents, np.float64)).T


def retrieve(similarity: np.ndarray, golds: Sequence[int], seed: int = 0) -> dict:
  """recall@k for k in RETRIEVAL_KS and mrr from a queries x documents similarity."""
  rank = ranks(similarity, golds)
  per_example = {f'recall@{k}': (rank <= k).astype(np.float64) for k in RETRIEVAL_KS}
  per_example['mrr'] = 1.0 / rank
  return summarize(per_example, n=len(rank), seed=seed)
