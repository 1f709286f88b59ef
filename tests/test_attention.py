"""Blockwise attention equals the einsum reference: causal, grouped kv heads, packed
documents, ragged last block, gradients; and 'auto' takes it on CPU."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax.model import attention
from llmjax.model.transformer import Transformer


def _inputs(t=18, n=4, kv=2, h=8, seed=0):
  q = jax.random.normal(jax.random.key(seed), (2, t, n, h))
  k, v = jax.random.normal(jax.random.key(seed + 1), (2, 2, t, kv, h))
  # Row 0 packs three documents, one of them across a block boundary; row 1 is one.
  segments = jnp.array([[1] * 3 + [2] * 7 + [3] * (t - 10), [1] * t])
  return q, k, v, attention.attention_mask(segments)


EINSUM = jax.jit(attention.einsum_attention, static_argnames='scale')
BLOCKWISE = jax.jit(attention.blockwise_attention, static_argnames=('scale', 'block'))


# Multi-head, grouped, multi-query; 18 rows: a ragged last block every time.
@pytest.mark.parametrize('kv, block', [(4, 4), (2, 5), (1, 17)])
def test_blockwise_equals_einsum(kv, block):
  q, k, v, mask = _inputs(kv=kv)
  expected = EINSUM(q, k, v, mask, scale=0.3)
  got = BLOCKWISE(q, k, v, mask, scale=0.3, block=block)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_blockwise_gradients_equal_einsums():
  q, k, v, mask = _inputs()

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v, mask)))

  grads = [jax.jit(jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2)))(q, k, v) for fn in (
      attention.einsum_attention, functools.partial(attention.blockwise_attention, block=4))]
  for expected, got in zip(*grads):
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_blockwise_reads_only_earlier_keys():
  """With a mask that lets queries see later keys, the blocks differ from the einsum:
  the key prefix is really cut (and the precondition, a causal mask, is real)."""
  q, k, v, _ = _inputs()
  full = jnp.ones((2, 1, 18, 18), bool)
  assert not np.allclose(BLOCKWISE(q, k, v, full, block=4), EINSUM(q, k, v, full), atol=1e-3)
  # One block covering everything is the einsum itself.
  np.testing.assert_array_equal(BLOCKWISE(q, k, v, full, block=18), EINSUM(q, k, v, full))


def test_auto_is_blockwise_on_cpu(monkeypatch):
  monkeypatch.setattr(attention, 'BLOCK', 8)
  q, k, v, _ = _inputs()
  full = jnp.ones((2, 1, q.shape[1], q.shape[1]), bool)  # tells the two paths apart
  assert jax.default_backend() == 'cpu'
  auto = jax.jit(functools.partial(attention.dot_product_attention, impl='auto'))
  np.testing.assert_array_equal(auto(q, k, v, full), BLOCKWISE(q, k, v, full))


def test_transformer_with_blockwise_equals_einsum(tiny_cfg, monkeypatch):
  monkeypatch.setattr(attention, 'BLOCK', 8)  # small blocks: a short, quick test
  t = 20  # two full blocks and a ragged one
  cfg = dataclasses.replace(tiny_cfg, max_len=t, attention_impl='einsum')
  tokens = jax.random.randint(jax.random.key(0), (2, t), 0, cfg.vocab_size)
  segments = jnp.concatenate([jnp.ones((2, 11), jnp.int32), jnp.full((2, t - 11), 2)], 1)
  positions = jnp.concatenate([jnp.arange(11), jnp.arange(t - 11)])[None].repeat(2, 0)
  forward = nnx.jit(lambda model: model(tokens, positions, segments))
  outs = {impl: forward(Transformer(dataclasses.replace(cfg, attention_impl=impl), nnx.Rngs(0)))
          for impl in ('einsum', 'blockwise')}
  np.testing.assert_allclose(outs['blockwise'], outs['einsum'], atol=1e-5, rtol=1e-5)
