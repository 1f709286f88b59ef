"""Sampling text from a model.

A simple, exact decoder: each new token reruns the model over a fixed-size
buffer (one compilation, causal masking hides the unfilled tail). The KV-cache
decoder of the Generation issue replaces the inner step; the interface stays.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.model.transformer import Transformer


@functools.partial(jax.jit, static_argnames=('graphdef', 'num_new'))
def _sample_loop(graphdef, params, buffer, start, key, temperature, num_new):
  model = nnx.merge(graphdef, params)

  def body(i, carry):
    buffer, key = carry
    pos = start + i
    logits = model(buffer[None])[0, pos - 1]
    key, sub = jax.random.split(key)
    greedy = jnp.argmax(logits)
    sampled = jax.random.categorical(sub, logits / jnp.maximum(temperature, 1e-6))
    token = jnp.where(temperature > 0, sampled, greedy)
    return buffer.at[pos].set(token.astype(buffer.dtype)), key

  buffer, _ = jax.lax.fori_loop(0, num_new, body, (buffer, key))
  return buffer


def sample(model: Transformer, prompt: np.ndarray, num_new: int, temperature: float,
           seed: int) -> np.ndarray:
  """Prompt followed by up to `num_new` sampled tokens (temperature 0: greedy)."""
  max_len = model.cfg.max_len
  if not 0 < len(prompt) < max_len:
    raise ValueError(f'prompt of {len(prompt)} tokens; it must be 1 to {max_len - 1} tokens')
  num_new = min(num_new, max_len - len(prompt))
  buffer = np.zeros(max_len, np.int32)
  buffer[:len(prompt)] = prompt
  graphdef, params = nnx.split(model)
  out = _sample_loop(graphdef, params, jnp.asarray(buffer), len(prompt), jax.random.key(seed),
                     temperature, num_new)
  return np.asarray(out[:len(prompt) + num_new])


def sample_text(model: Transformer, tokenizer, prompt: str, num_new: int, temperature: float,
                seed: int = 0) -> str:
  """The prompt and its continuation, as text. The prompt starts a document (after
  end-of-text), as in training."""
  ids = np.concatenate([[tokenizer.eot_id], tokenizer.encode(prompt)]).astype(np.int32)
  return tokenizer.decode(sample(model, ids, num_new, temperature, seed)[1:])
