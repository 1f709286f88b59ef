"""The one factory of the training task (`finetune.task`): what rows the pipeline gets,
which output head the step applies, and what evaluation and end-of-run report it adds.

  lm        data.source's documents, next-token rows, the model's logits
  sft       fine-tune examples with a completion-only loss (encode.sft_row), the logits
  classify  one labelled text per example (encode.classify_row), the label head
"""

import dataclasses
import functools
import hashlib
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from llmjax.data import pipeline, tokenizers
from llmjax.data.sources import Corpus
from llmjax.finetune import encode, examples
from llmjax.model import options
from llmjax.step import output_logits


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
  name: str  # finetune.task
  corpus: Corpus  # what the pipeline packs: documents (lm) or encoded examples
  head: Callable = output_logits  # the step's output head (classify: BTV -> BTK labels)
  label_words: tuple[str, ...] = ()  # classify: label k's word
  held_out: tuple[dict, ...] = ()  # the evaluated examples, for the end-of-run predictions
  causal: bool = True


def label_logits(logits, label_ids: tuple[int, ...]):
  """The classify head: output logits at each label's token (BTV -> BTK)."""
  return logits[..., jnp.asarray(label_ids)]


def _examples(exp) -> tuple[list, list, tuple]:
  cfg = exp.finetune
  if cfg.train_data.startswith('builtin:'):
    return examples.builtin_examples(cfg.train_data[len('builtin:'):], cfg, exp.data,
                                     exp.train.seed)
  if cfg.train_data.startswith('tfds:'):
    return examples.tfds_examples(cfg.train_data, cfg, exp.data)
  return (examples.read_jsonl(cfg.train_data, cfg), examples.read_jsonl(cfg.eval_data, cfg),
          ())


def _fingerprint(name: str, rows: list[dict]) -> str:
  digest = hashlib.sha256()
  for row in rows:
    for key in ('inputs', 'targets', 'weights'):
      digest.update(np.ascontiguousarray(row[key]).tobytes())
  return f'finetune-{name}-{len(rows)}-{digest.hexdigest()[:12]}'


def make(exp) -> FinetuneTask:
  """The task of `exp`; a fine-tune's examples are read, checked and encoded here, so a bad
  one (examples.ExampleError, a DataError) is refused before anything is compiled."""
  cfg, data = exp.finetune, exp.data
  if cfg.task == 'lm':
    return FinetuneTask('lm', pipeline.load(data))
  tokenizer = tokenizers.load(data.tokenizer)
  train, held_out, words = _examples(exp)
  if cfg.max_examples >= 0:
    train = train[:cfg.max_examples]
  causal = options.ARCHITECTURES[exp.model.arch].causal
  head = output_logits
  if cfg.task == 'classify':
    words = words or tuple(' ' + label for label in examples.declared_labels(cfg))
    prefix, label_ids = encode.label_tokens(words, tokenizer)
    head = functools.partial(label_logits, label_ids=tuple(label_ids))
    row = functools.partial(encode.classify_row, tokenizer=tokenizer, prefix=prefix,
                            causal=causal, seq_len=data.seq_len, truncate=cfg.truncate)
  else:
    row = functools.partial(encode.sft_row, tokenizer=tokenizer, seq_len=data.seq_len,
                            truncate=cfg.truncate)
  train_rows, eval_rows = [row(e) for e in train], [row(e) for e in held_out]
  corpus = Corpus(train=train_rows, eval=eval_rows, tokenizer=tokenizer,
                  fingerprint=_fingerprint(cfg.task, train_rows + eval_rows),
                  info={pipeline.EXAMPLES_INFO: len(train_rows), 'eval_examples': len(eval_rows)})
  return FinetuneTask(cfg.task, corpus, head, tuple(words), tuple(held_out), causal)
