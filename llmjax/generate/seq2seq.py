"""Generation with an encoder-decoder (T5): the encoder runs once over the padded inputs,
each decoder layer's cross-attention keys and values of its output are computed once
(`Transformer.memory`) and kept in the decode state, and the decoder runs the same
KV-cache loop as a decoder-only model (`_prefill`, `_decode`), from one start token per row.

Inputs are right-padded to a bucketed length (a power of two of at least 16); padding is
its own segment, which no decoder token reads and no real input token attends to, so a
row's tokens do not depend on the other rows of its batch.
"""

import functools
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from llmjax.generate import (GenerationOutput, Prompts, _as_rows, _bucket, _check_ids,
                             _decode, _outputs, _pad_prompts, _prefill, _sampling)
from llmjax.model import options
from llmjax.model.transformer import Memory, Transformer


@functools.partial(jax.jit, static_argnames='graphdef')
def _memory(graphdef, params, tokens, segment_ids) -> Memory:
  return nnx.merge(graphdef, params).memory(tokens, None, segment_ids)


def _encoder_block(rows: list[np.ndarray], batch: int, length: int):
  """Right-padded inputs (batch x length) and their segment ids (1: a token, 0: padding)."""
  tokens, segments = np.zeros((batch, length), np.int32), np.zeros((batch, length), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)], segments[i, :len(row)] = row, 1
  return tokens, segments


def generate(model: Transformer, inputs: Prompts, *, max_new_tokens: int, decoder_start: int,
             temperature=0.0, top_k=0, top_p=1.0, stop_tokens: Sequence[int] = (), seed=0,
             return_logprobs=True) -> GenerationOutput:
  """New decoder tokens for each encoder input (token-id lists, or a 2-D array).

  Args:
    decoder_start: the decoder's first input (T5 checkpoints: 0, their pad token; llmjax's
      span-corruption rows: end-of-text).
    max_new_tokens: per row, clipped to max_len - 1.
    temperature, top_k, top_p, stop_tokens, seed, return_logprobs: as in
      `llmjax.generate.generate` (temperature 0, the default here, is greedy).
  Returns:
    GenerationOutput, the decoder start token left out. ValueError names a bad input first.
  """
  cfg = model.cfg
  if not options.ARCHITECTURES[cfg.arch].cross_attention:
    raise ValueError(f'model.arch={cfg.arch!r} has no encoder stack; use llmjax.generate.'
                     f'generate with a prompt')
  rows = _as_rows(inputs, 'inputs')
  _check_ids(rows, cfg, 'input')
  _check_ids([np.array([decoder_start])], cfg, 'decoder_start')
  longest = max(len(r) for r in rows)
  if min(len(r) for r in rows) < 1 or longest > cfg.max_len:
    raise ValueError(f'encoder inputs need 1 to max_len={cfg.max_len} tokens, got lengths '
                     f'{min(len(r) for r in rows)} to {longest}')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  sampling = _sampling(cfg, temperature, top_k, top_p, stop_tokens)
  b = _bucket(len(rows))
  encoder, segments = _encoder_block(rows, b, min(_bucket(longest, 16), cfg.max_len))
  starts, positions, last = _pad_prompts([np.array([decoder_start])] * len(rows), b, 1, 'left')
  budget = np.zeros(b, np.int32)
  budget[:len(rows)] = min(max_new_tokens, cfg.max_len - 1)  # bucketing rows: 0, done
  graphdef, params = nnx.split(model)
  memory = _memory(graphdef, params, encoder, segments)
  state = _prefill(graphdef, params, starts, positions, last, budget, jax.random.key(seed),
                   capacity=_bucket(int(budget.max()), 16), memory=memory)
  state = _decode(graphdef, params, state, sampling, np.int32(budget.max()))
  return _outputs(state, len(rows), sampling, return_logprobs)
