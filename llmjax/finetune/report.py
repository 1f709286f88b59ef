"""What a fine-tune adds to evaluation: classification accuracy and macro-F1 on the held-out
examples at every eval (the Evaluation issue's classify metrics, scikit-learn's), and the
end-of-run predictions printed beside their references in place of the text sample."""

import functools

import jax
import numpy as np
from flax import nnx

from llmjax.eval import metrics, runner
from llmjax.finetune.task import FinetuneTask
from llmjax.step import device_batch

PROMPT_CHARS = 60  # of each prompt's end, printed beside a prediction
MAX_NEW_TOKENS = 64  # sft predictions


def label_log_probs(params, batch: dict, *, graphdef, head) -> jax.Array:
  """BTK log-probabilities over the labels at every position."""
  model = nnx.merge(graphdef, params)
  logits = head(model(batch['inputs'], batch['positions'], batch['segment_ids']))
  return jax.nn.log_softmax(logits.astype(np.float32), axis=-1)


class ClassifyMetrics:
  """eval/acc and eval/f1_macro (with bootstrap standard errors) over the held-out rows:
  each pooled position (weight > 0) is one example, its target the gold label."""

  def __init__(self, task: FinetuneTask, graphdef, batches: list[dict], batch_sharding,
               seed: int = 0):
    self.batches, self.batch_sharding, self.seed = batches, batch_sharding, seed
    self.fn = jax.jit(functools.partial(label_log_probs, graphdef=graphdef, head=task.head))

  def scores(self, params) -> tuple[np.ndarray, np.ndarray]:
    """(N K label log-probabilities, N gold labels) of the held-out examples."""
    scores, golds = [], []
    for item in self.batches:
      rows = item['batch']
      placed = rows if self.batch_sharding is None else device_batch(rows, self.batch_sharding)
      log_probs = np.asarray(self.fn(params, placed))
      pooled = rows['weights'] > 0
      scores.append(log_probs[pooled])
      golds.append(rows['targets'][pooled])
    return np.concatenate(scores), np.concatenate(golds)

  def __call__(self, params) -> dict[str, float]:
    scores, golds = self.scores(params)
    values = metrics.classify(list(scores), golds, seed=self.seed)
    return {f'eval/{k}': v for k, v in values.items()}


def evaluator(task: FinetuneTask, graphdef, batches, batch_sharding, seed: int = 0):
  """The fine-tune's own eval metrics (classify), or None."""
  if task.name != 'classify':
    return None
  return ClassifyMetrics(task, graphdef, batches, batch_sharding, seed)


def _one_row(row: dict, seq_len: int) -> dict[str, np.ndarray]:
  """An encoded example alone in a padded row, as the pipeline would place it."""
  n = len(row['inputs'])
  pad = lambda x: np.pad(x, (0, seq_len - n))[None]
  return {'inputs': pad(row['inputs']), 'targets': pad(row['targets']),
          'weights': pad(row['weights']), 'positions': pad(np.arange(n, dtype=np.int32)),
          'segment_ids': pad(np.ones(n, np.int32))}


def _classify_predictions(task, model, count, seq_len) -> list[tuple[str, str, str]]:
  graphdef, params = nnx.split(model, nnx.Param)
  fn = jax.jit(functools.partial(label_log_probs, graphdef=graphdef, head=task.head))
  out = []
  for example, row in zip(task.held_out[:count], task.corpus.eval[:count]):
    batch = _one_row(row, seq_len)
    log_probs = np.asarray(fn(params, batch))[0][batch['weights'][0] > 0][0]
    out.append((example['text'][-PROMPT_CHARS:], task.label_words[int(np.argmax(log_probs))],
                task.label_words[example['label']]))
  return out


def _sft_predictions(task, model, tokenizer, count) -> list[tuple[str, str, str]]:
  prompts, references, shown = [], [], []
  for example in task.held_out[:count]:
    context = ''.join(t for t, w in example['segments'] if not w)
    prompts.append([tokenizer.eot_id, *tokenizer.encode(context).tolist()])
    references.append(''.join(t for t, w in example['segments'] if w))
    shown.append(context[-PROMPT_CHARS:])
  completions = runner.complete(model, tokenizer, prompts, MAX_NEW_TOKENS)
  return list(zip(shown, completions, references))


def predictions(task: FinetuneTask, model, tokenizer, count: int,
                seq_len: int) -> list[tuple[str, str, str]]:
  """(prompt's end, prediction, reference) of the first `count` held-out examples."""
  if task.name == 'classify':
    return _classify_predictions(task, model, count, seq_len)
  return _sft_predictions(task, model, tokenizer, count)


def format_predictions(rows: list[tuple[str, str, str]]) -> str:
  return '\n'.join(f'... {p!r}\n    predicted {y!r}\n    reference {r!r}' for p, y, r in rows)
