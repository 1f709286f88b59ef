"""Fine-tune examples -> the pipeline's rows: token ids with per-target loss weights.

A row is {'inputs', 'targets', 'weights'} of one example, as `data.pipeline` packs them
(first_fit, segment ids keep packed examples apart), so sft and classify reuse the
pipeline, its exact resume and the lm loss.

  sft       ids = [eot] + prompt + completion + [eot]; inputs = ids[:-1], targets =
            ids[1:]; weight 1 on targets inside completion segments (and the final eot,
            so generation learns to stop), 0 on prompt targets
  classify  decoder: [eot] + text + the label words' common prefix, pooled at the last
            token; encoder: [eot] + text, pooled at the first (the cls token). The pooled
            position's target is the label's index, the only weighted target.

The classify head (task.label_head) reads the model's output logits at the label tokens:
each label's token after the label words' common prefix (e.g. ' library' / ' test' ->
'l' / 't' after ' '), so the head is a linear map of the pooled hidden state initialized
from the pretrained label words, and the parameter tree stays the model's own.
"""

import numpy as np

from llmjax.finetune.examples import ExampleError


def _too_long(where: str, tokens: int, seq_len: int) -> ExampleError:
  return ExampleError(f'{where}: {tokens} tokens exceed data.seq_len={seq_len}; set '
                      f'finetune.truncate=left to drop the oldest prompt tokens, or a longer '
                      f'data.seq_len')


def fit(ids: np.ndarray, weights: np.ndarray, seq_len: int, truncate: str, where: str):
  """(ids, weights) of at most seq_len + 1 tokens; a longer example raises or (truncate=
  left) loses its oldest tokens."""
  if len(ids) <= seq_len + 1:
    return ids, weights
  if truncate != 'left':
    raise _too_long(where, len(ids) - 1, seq_len)
  ids, weights = ids[-(seq_len + 1):], weights[-(seq_len + 1):]
  if not weights[1:].any():
    raise ExampleError(f'{where}: with truncate=left no weighted token is left in '
                       f'data.seq_len={seq_len}')
  return ids, weights


def sft_row(example: dict, tokenizer, seq_len: int, truncate: str) -> dict[str, np.ndarray]:
  ids, weights = [tokenizer.eot_id], [0.0]
  for text, weighted in example['segments']:
    tokens = tokenizer.encode(text).tolist()
    ids += tokens
    weights += [float(weighted)] * len(tokens)
  ids.append(tokenizer.eot_id)
  weights.append(weights[-1])
  ids, weights = fit(np.asarray(ids, np.int32), np.asarray(weights, np.float32), seq_len,
                     truncate, example['id'])
  return {'inputs': ids[:-1], 'targets': ids[1:], 'weights': weights[1:]}


def label_tokens(words: tuple[str, ...], tokenizer) -> tuple[list[int], list[int]]:
  """(the label words' common prefix, each label's next token); raises unless those next
  tokens differ pairwise."""
  encoded = [tokenizer.encode(w).tolist() for w in words]
  prefix = []
  while all(len(e) > len(prefix) for e in encoded) and len({e[len(prefix)] for e in encoded}) == 1:
    prefix.append(encoded[0][len(prefix)])
  heads = [e[len(prefix)] if len(e) > len(prefix) else None for e in encoded]
  if None in heads or len(set(heads)) != len(heads):
    raise ExampleError(f'label words {list(words)}: after their common prefix '
                       f'{tokenizer.decode(np.asarray(prefix, np.int32))!r} each needs a '
                       f'token of its own; choose label words that differ right after it')
  return prefix, heads


def classify_row(example: dict, tokenizer, prefix: list[int], causal: bool, seq_len: int,
                 truncate: str) -> dict[str, np.ndarray]:
  ids = np.asarray([tokenizer.eot_id, *tokenizer.encode(example['text']).tolist(),
                    *(prefix if causal else [])], np.int32)
  if len(ids) > seq_len:  # no shifted target: a classify row holds seq_len ids
    if truncate != 'left':
      raise _too_long(example['id'], len(ids), seq_len)
    # The oldest text tokens go; an encoder keeps its cls token in front.
    ids = ids[-seq_len:] if causal else np.concatenate([ids[:1], ids[len(ids) - seq_len + 1:]])
  pooled = len(ids) - 1 if causal else 0
  targets, weights = np.zeros(len(ids), np.int32), np.zeros(len(ids), np.float32)
  targets[pooled], weights[pooled] = example['label'], 1.0
  return {'inputs': ids, 'targets': targets, 'weights': weights}
