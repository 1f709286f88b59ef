"""Causal self-attention with grouped kv heads, rotary positions and packed-sequence masking."""

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import sharding
from llmjax.model import layers
from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig


def attention_mask(segment_ids: jax.Array) -> jax.Array:
  """B 1 T S boolean mask: causal, and a token sees only its own document."""
  t = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
  same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (causal[None] & same_doc)[:, None]


def einsum_attention(q, k, v, mask) -> jax.Array:
  """Attention written out: q BTNH, k/v BSKH, mask B1TS -> BTNH.

  Query heads are grouped G = N/K per kv head, so K < N never copies k or v.
  Scores and softmax in float32. On CPU this beats `jax.nn`'s XLA path (it
  skips a transpose of the scores), and it is the reference in the tests.
  """
  b, t, n, h = q.shape
  kv = k.shape[2]
  q = q.reshape(b, t, kv, n // kv, h)
  scores = jnp.einsum('BTKGH,BSKH->BKGTS', q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(mask[:, :, None], scores * h**-0.5, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum('BKGTS,BSKH->BTKGH', probs, v).reshape(b, t, n, h)


def dot_product_attention(q, k, v, mask, impl: str) -> jax.Array:
  """q: BTNH, k/v: BSKH, mask: B1TS -> BTNH.

  'auto' and 'cudnn' go through `jax.nn.dot_product_attention`, which handles
  K < N itself and uses cuDNN's fused flash kernel on NVIDIA GPUs ('auto'
  falls back to XLA elsewhere); 'xla' forces jax.nn's portable path; 'einsum'
  is the explicit version above.
  """
  if impl == 'einsum':
    return einsum_attention(q, k, v, mask)
  implementation = None if impl == 'auto' else impl
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.cfg = cfg
    self.wq = layers.param(cfg, rngs, (d, n, h), ('embed', 'heads', 'head_dim'), pz.HIDDEN, d)
    self.wk = layers.param(cfg, rngs, (d, k, h), ('embed', 'kv_heads', 'head_dim'), pz.HIDDEN, d)
    self.wv = layers.param(cfg, rngs, (d, k, h), ('embed', 'kv_heads', 'head_dim'), pz.HIDDEN, d)
    self.wo = layers.param(cfg, rngs, (n, h, d), ('heads', 'head_dim', 'embed'), pz.OUTPUT,
                           n * h)
    if cfg.use_bias:
      self.bq = layers.param(cfg, None, (n, h), ('heads', 'head_dim'), pz.BIAS)
      self.bk = layers.param(cfg, None, (k, h), ('kv_heads', 'head_dim'), pz.BIAS)
      self.bv = layers.param(cfg, None, (k, h), ('kv_heads', 'head_dim'), pz.BIAS)
      self.bo = layers.param(cfg, None, (d,), ('embed',), pz.BIAS)
    if cfg.qk_norm:
      self.q_norm = layers.Norm(cfg, h, 'head_dim')
      self.k_norm = layers.Norm(cfg, h, 'head_dim')

  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array) -> jax.Array:
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    q = jnp.einsum('BTD,DNH->BTNH', x, self.wq[...].astype(dtype))
    k = jnp.einsum('BSD,DKH->BSKH', x, self.wk[...].astype(dtype))
    v = jnp.einsum('BSD,DKH->BSKH', x, self.wv[...].astype(dtype))
    if cfg.use_bias:
      q, k, v = (q + self.bq[...].astype(dtype), k + self.bk[...].astype(dtype),
                 v + self.bv[...].astype(dtype))
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    if cfg.positions == 'rope':
      q, k = (layers.rope(q, positions, cfg.rope_theta),
              layers.rope(k, positions, cfg.rope_theta))
    q = sharding.constrain(q, ('batch', 'length', 'act_heads', None))
    k = sharding.constrain(k, ('batch', 'length', 'act_kv_heads', None))
    v = sharding.constrain(v, ('batch', 'length', 'act_kv_heads', None))
    out = dot_product_attention(q, k, v, mask, cfg.attention_impl)
    y = jnp.einsum('BTNH,NHD->BTD', out, self.wo[...].astype(dtype))
    if cfg.use_bias:
      y = y + self.bo[...].astype(dtype)
    return y
