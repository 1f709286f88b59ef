"""What a model computes on given tokens: the residual stream after every block, attention
patterns, the logit lens, and per-token losses broken down by position and token class.

`trace` runs the model's own layers one by one (its embedding, each stacked block's
attention and MLP branches, its final norm and head), recording what passes
between them, so its logits are the model's; the tests pin that. Layer numbering of the
residual stream, as in the logit lens: 0 is the embeddings, l the output of block l.
"""

import dataclasses
import functools
import string

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from llmjax.model import options
from llmjax.model.attention import attention_mask
from llmjax.model.transformer import Transformer


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Trace:
  residuals: jax.Array  # (L+1) B T D: the embeddings, then the stream after each block
  mid: jax.Array  # L B T D: the stream after each block's attention, before its MLP
  attention: jax.Array  # L B N T S float32: attention probabilities of every head
  logits: jax.Array  # B T V float32


@functools.partial(jax.jit, static_argnames='graphdef')
def _trace(graphdef, params, tokens, positions, segment_ids) -> Trace:
  model = nnx.merge(graphdef, params)
  mask = attention_mask(segment_ids, options.ARCHITECTURES[model.cfg.arch].causal)
  x = model.embed_tokens(tokens, positions)
  block_graph, stacked = nnx.split(model.blocks)
  residuals, mids, probs = [x], [], []
  for layer in range(model.cfg.num_layers):
    block = nnx.merge(block_graph, jax.tree.map(lambda a, i=layer: a[i], stacked))
    # The block's own public steps, the ones its __call__ makes, so the trace cannot
    # drift from the model (parametrization multipliers included): the tests compare it
    # with model(tokens).
    probs.append(block.attention_probs(x, positions, mask))
    x = block.attend(x, positions, mask)
    mids.append(x)
    x = block.feed_forward(x)
    residuals.append(x)
  return Trace(residuals=jnp.stack(residuals), mid=jnp.stack(mids),
               attention=jnp.stack(probs), logits=model.logits(x))


def _rows(tokens, positions=None, segment_ids=None):
  tokens = np.asarray(tokens, np.int32)
  tokens = tokens[None] if tokens.ndim == 1 else tokens
  if tokens.ndim != 2:
    raise ValueError(f'tokens must be 1-D or B x T, got shape {tokens.shape}')
  if positions is None:
    positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
  if segment_ids is None:
    segment_ids = np.ones_like(tokens)
  return tokens, np.asarray(positions, np.int32), np.asarray(segment_ids, np.int32)


def _check_tokens(model: Transformer, tokens: np.ndarray) -> None:
  cfg = model.cfg
  if tokens.shape[1] > cfg.max_len:
    raise ValueError(f'{tokens.shape[1]} tokens per row exceed the model\'s max_len '
                     f'{cfg.max_len}')
  bad = tokens[(tokens < 0) | (tokens >= cfg.vocab_size)]
  if bad.size:
    raise ValueError(f'token id {bad[0]} is outside the vocabulary [0, {cfg.vocab_size})')


def trace(model: Transformer, tokens, positions=None, segment_ids=None) -> Trace:
  """Residual stream, attention probabilities and logits of `model` on `tokens` (T or
  B x T ids; positions default to 0..T-1, segment ids to one document per row)."""
  tokens, positions, segment_ids = _rows(tokens, positions, segment_ids)
  _check_tokens(model, tokens)
  graphdef, params = nnx.split(model)
  return _trace(graphdef, params, tokens, positions, segment_ids)


@functools.partial(jax.jit, static_argnames='graphdef')
def _lens(graphdef, params, residuals):
  model = nnx.merge(graphdef, params)
  return jax.lax.map(model.logits, residuals)


def lens_logits(model: Transformer, residuals: jax.Array) -> jax.Array:
  """Each layer's residual stream ((L+1) B T D) decoded as the model decodes its last one
  (a pre-norm model's final norm, an encoder's masked-LM transform, the output head):
  (L+1) B T V float32 logits. The last layer's are the model's logits."""
  graphdef, params = nnx.split(model)
  return _lens(graphdef, params, residuals)


@functools.partial(jax.jit, static_argnames='graphdef')
def _lens_summary(graphdef, params, residuals, targets):
  model = nnx.merge(graphdef, params)

  def one_layer(x):  # summarized per layer so the (L+1) B T V logits never coexist
    logprobs = jax.nn.log_softmax(model.logits(x))
    target = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    rank = (logprobs > target[..., None]).sum(-1)
    entropy = -(jnp.exp(logprobs) * logprobs).sum(-1)
    return -target, rank, jnp.argmax(logprobs, -1), jnp.exp(logprobs.max(-1)), entropy

  return jax.lax.map(one_layer, residuals)


def logit_lens(model: Transformer, tr: Trace, targets) -> pd.DataFrame:
  """The logit lens as a table: one row per layer (0: embeddings, l: after block l), row
  and token index, with the loss of the target token at that layer, its rank (0: top), the
  top token, its probability, and the entropy of the prediction (nats)."""
  targets = np.asarray(targets, np.int32).reshape(tr.logits.shape[:2])
  graphdef, params = nnx.split(model)
  loss, rank, top, top_prob, entropy = jax.device_get(
      _lens_summary(graphdef, params, tr.residuals, targets))
  layers, rows, index = np.indices(loss.shape)
  return pd.DataFrame({'layer': layers.ravel(), 'row': rows.ravel(), 'index': index.ravel(),
                       'target': np.broadcast_to(targets, loss.shape).ravel(),
                       'loss': loss.ravel(), 'rank': rank.ravel(), 'top_token': top.ravel(),
                       'top_prob': top_prob.ravel(), 'entropy': entropy.ravel()})


def residual_rms(tr: Trace, weights=None) -> pd.DataFrame:
  """Root-mean-square of the residual stream per layer, averaged over tokens (those with
  weight > 0 if `weights`, B x T, is given): after each block, and after its attention."""
  w = np.ones(tr.logits.shape[:2]) if weights is None else np.asarray(weights) > 0

  def mean_rms(x):
    rms = np.sqrt(np.mean(np.square(np.asarray(x, np.float32)), axis=-1))  # ... B T
    return (rms * w).sum((-2, -1)) / w.sum()

  out = mean_rms(tr.residuals)
  mid = np.concatenate([[np.nan], mean_rms(tr.mid)])  # the embeddings have no attention
  return pd.DataFrame({'layer': np.arange(len(out)), 'rms': out, 'after_attention': mid})


def attention_entropy(probs: jax.Array) -> jax.Array:
  """Entropy in nats of each attention row: ... T S -> ... T."""
  p = jnp.asarray(probs, jnp.float32)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def attention_stats(tr: Trace, positions=None, weights=None) -> pd.DataFrame:
  """Per layer and head, averaged over query tokens: attention entropy (nats), the entropy
  of uniform attention over the same keys (for scale), and the mass on the previous token
  and on the document's first token (previous-token heads and attention sinks)."""
  probs = np.asarray(tr.attention)  # L B N T S
  _, b, n, t, _ = probs.shape
  positions = np.broadcast_to(np.arange(t), (b, t)) if positions is None else \
      np.asarray(positions)
  w = np.ones((b, t)) if weights is None else (np.asarray(weights) > 0).astype(float)
  entropy = np.asarray(attention_entropy(probs))  # L B N T
  visible = (probs > 0).sum(-1)
  columns = np.arange(t)
  previous = np.where(columns > 0, probs[..., columns, np.maximum(columns - 1, 0)], 0.0)
  previous = np.where(positions[None, :, None] > 0, previous, np.nan)  # a first token has none
  first = np.take_along_axis(probs, (columns - positions)[None, :, None, :, None].clip(0),
                             axis=-1)[..., 0]

  def mean(x):  # L B N T -> L N over weighted tokens, ignoring NaN
    wx = np.where(np.isnan(x), 0.0, x) * w[None, :, None]
    count = (~np.isnan(x) * w[None, :, None]).sum((1, 3))
    return wx.sum((1, 3)) / np.maximum(count, 1)

  layers, heads = np.indices((probs.shape[0], n))
  return pd.DataFrame({'layer': layers.ravel(), 'head': heads.ravel(),
                       'entropy': mean(entropy).ravel(),
                       'uniform_entropy': mean(np.log(np.maximum(visible, 1))).ravel(),
                       'previous_token': mean(previous).ravel(),
                       'first_token': mean(first).ravel()})


def token_class(tokenizer, ids) -> np.ndarray:
  """A coarse class for each token id, from its text: end_of_text, whitespace, letter,
  digit, punctuation, or other (non-ASCII pieces, bytes of multi-byte characters)."""
  ids = np.asarray(ids)
  unique, inverse = np.unique(ids, return_inverse=True)
  classes = np.array([_class_of(tokenizer, int(i)) for i in unique], dtype=object)
  return classes[inverse].reshape(ids.shape)


def _class_of(tokenizer, token: int) -> str:
  if token == tokenizer.eot_id:
    return 'end_of_text'
  text = tokenizer.decode([token]).strip(' ') or tokenizer.decode([token])
  if not text or '\ufffd' in text:
    return 'other'
  if text.isspace():
    return 'whitespace'
  if text.isascii() and text.isalpha():
    return 'letter'
  if text.isdigit():
    return 'digit'
  if all(c in string.punctuation for c in text):
    return 'punctuation'
  return 'other'


@functools.partial(jax.jit, static_argnames='graphdef')
def _token_losses(graphdef, params, inputs, targets, positions, segment_ids):
  logits = nnx.merge(graphdef, params)(inputs, positions, segment_ids)
  logprobs = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]


def as_batch(tokens) -> dict[str, np.ndarray]:
  """A training-style batch from documents of token ids (T or B x T, each row one
  document): every token but the last predicts the next."""
  tokens, positions, segment_ids = _rows(tokens)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'positions': positions[:, :-1],
          'segment_ids': segment_ids[:, :-1], 'weights': np.ones(tokens[:, 1:].shape, np.float32)}


def token_losses(model: Transformer, batch: dict, tokenizer=None) -> pd.DataFrame:
  """Loss of every predicted token of a batch (`as_batch`, or `Run.eval_batch`): one row per
  token with weight > 0: row, index, position in its document, input and target token,
  loss (nats), and the target's class (`token_class`) if a tokenizer is given."""
  missing = {'inputs', 'targets', 'positions', 'segment_ids', 'weights'} - set(batch)
  if missing:
    raise ValueError(f'batch lacks {sorted(missing)}; build it with as_batch(tokens)')
  inputs = np.asarray(batch['inputs'], np.int32)
  _check_tokens(model, inputs)
  graphdef, params = nnx.split(model)
  loss = np.asarray(_token_losses(graphdef, params, inputs, np.asarray(batch['targets']),
                                  np.asarray(batch['positions']),
                                  np.asarray(batch['segment_ids'])))
  rows, index = np.indices(inputs.shape)
  table = pd.DataFrame({'row': rows.ravel(), 'index': index.ravel(),
                        'position': np.asarray(batch['positions']).ravel(),
                        'input': inputs.ravel(), 'target': np.asarray(batch['targets']).ravel(),
                        'loss': loss.ravel()})
  table = table[np.asarray(batch['weights']).ravel() > 0].reset_index(drop=True)
  if tokenizer is not None:
    table['class'] = token_class(tokenizer, table['target'].to_numpy())
  return table


def loss_by_position(losses: pd.DataFrame, bins: int = 0) -> pd.DataFrame:
  """Mean loss per position in the document (what more context buys); with `bins` > 0,
  over that many log-spaced position ranges instead."""
  if bins <= 0:
    return losses.groupby('position', as_index=False).agg(loss=('loss', 'mean'),
                                                          count=('loss', 'size'))
  edges = np.unique(np.geomspace(1, losses['position'].max() + 2, bins + 1).astype(int)) - 1
  grouped = losses.groupby(pd.cut(losses['position'], edges, right=False), observed=True)
  table = grouped.agg(loss=('loss', 'mean'), count=('loss', 'size')).reset_index()
  table['position'] = [interval.left for interval in table.pop('position')]
  return table[['position', 'loss', 'count']]


def loss_by_class(losses: pd.DataFrame) -> pd.DataFrame:
  """Mean loss, token count and share of the total loss per target class."""
  if 'class' not in losses:
    raise ValueError('the losses have no class column: pass a tokenizer to token_losses')
  table = losses.groupby('class', as_index=False).agg(loss=('loss', 'mean'),
                                                      count=('loss', 'size'),
                                                      total=('loss', 'sum'))
  table['share_of_loss'] = table.pop('total') / losses['loss'].sum()
  return table.sort_values('share_of_loss', ascending=False, ignore_index=True)
