"""Self-attention (causal or both ways) and cross-attention with grouped kv heads, rotary
positions or an additive position bias, and packed-sequence masking; the KV cache of
decoding."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import sharding
from llmjax.model import layers, options
from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig


def attention_mask(segment_ids: jax.Array, causal: bool = True) -> jax.Array:
  """B 1 T S boolean mask: a token sees only its own document, and (causal) only the
  tokens up to its own."""
  t = segment_ids.shape[1]
  same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
  if causal:
    same_doc = jnp.tril(jnp.ones((t, t), jnp.bool_))[None] & same_doc
  return same_doc[:, None]


def cross_mask(segment_ids: jax.Array, memory_segment_ids: jax.Array) -> jax.Array:
  """B 1 T S boolean mask of cross-attention: each decoder segment reads only the encoder
  segment packed with it (the same id in the same row)."""
  return (segment_ids[:, :, None] == memory_segment_ids[:, None, :])[:, None]


def cache_mask(query_positions: jax.Array, slot_positions: jax.Array) -> jax.Array:
  """B 1 T S boolean mask of decoding: a query at position p sees the slots holding real
  tokens (position >= 0) of its row at positions <= p. A query at position < 0 sees nothing."""
  slots = slot_positions[:, None, :]
  return ((slots >= 0) & (slots <= query_positions[:, :, None]))[:, None]


_CACHE_AXES = (None, 'batch', 'length', 'act_kv_heads', None)  # L B S K H


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  """Keys and values of every layer for S slots, stacked on the layers axis like the blocks.

  Functional: decoding takes a cache and returns the next one, so the model stays a tree of
  parameters. A chunk of T tokens goes into slots index..index+T-1, the same slots for every
  row; each slot records the position of its token (-1: empty or padding), so rows of
  different lengths, left or right padded, share one layout and masking needs only positions.
  """

  k: jax.Array  # L B S K H, compute dtype
  v: jax.Array  # L B S K H
  positions: jax.Array  # B S int32
  index: jax.Array  # int32 scalar: the first slot the next chunk writes

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, length: int) -> 'KVCache':
    """An empty cache of `length` slots per row."""
    shape = (cfg.decoder_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
    # Laid out like the training activations: batch over data, kv heads over tensor.
    zeros = sharding.constrain(jnp.zeros(shape, jnp.dtype(cfg.dtype)), _CACHE_AXES)
    positions = sharding.constrain(jnp.full((batch, length), -1, jnp.int32), ('batch', 'length'))
    return cls(k=zeros, v=zeros, positions=positions, index=jnp.zeros((), jnp.int32))

  def update(self, layer, k: jax.Array, v: jax.Array) -> tuple['KVCache', jax.Array, jax.Array]:
    """Writes a chunk's keys and values (BTKH each) of layer `layer` into slots
    index..index+T-1; returns the cache and that layer's keys and values in all S slots
    (BSKH each). Inside a decode loop XLA updates the buffers in place."""
    start = (layer, 0, self.index, 0, 0)
    k_all, v_all = (jax.lax.dynamic_update_slice(c, new[None].astype(c.dtype), start)
                    for c, new in ((self.k, k), (self.v, v)))
    layer_axes = _CACHE_AXES[1:]
    return (dataclasses.replace(self, k=k_all, v=v_all),
            sharding.constrain(k_all[layer], layer_axes),
            sharding.constrain(v_all[layer], layer_axes))


def attention_weights(q, k, mask, scale: float | None = None, bias=None) -> jax.Array:
  """q BTNH, k BSKH, mask B1TS -> softmax probabilities BKGTS (float32): query head
  n = k * G + g reads kv head k. `scale` multiplies q.k; None is the standard 1/sqrt(H).
  `bias` (BNTS float32, B may be 1) is added to the scaled scores (T5's relative bias)."""
  b, t, n, h = q.shape
  kv = k.shape[2]
  q = q.reshape(b, t, kv, n // kv, h)
  scores = jnp.einsum('BTKGH,BSKH->BKGTS', q, k, preferred_element_type=jnp.float32)
  scale = h**-0.5 if scale is None else scale
  scores = scores * scale
  if bias is not None:
    scores = scores + bias.reshape(bias.shape[0], kv, n // kv, *bias.shape[2:])
  scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1)


def einsum_attention(q, k, v, mask, scale: float | None = None, bias=None) -> jax.Array:
  """Attention written out: q BTNH, k/v BSKH, mask B1TS -> BTNH.

  Query heads are grouped G = N/K per kv head, so K < N never copies k or v.
  Scores and softmax in float32. On CPU this beats `jax.nn`'s XLA path (it
  skips a transpose of the scores), and it is the reference in the tests.
  """
  b, t, n, h = q.shape
  probs = attention_weights(q, k, mask, scale, bias).astype(v.dtype)
  return jnp.einsum('BKGTS,BSKH->BTKGH', probs, v).reshape(b, t, n, h)


BLOCK = 64  # query rows per block of blockwise_attention (measured: benchmarks/step_time.py)


def blockwise_attention(q, k, v, mask, scale: float | None = None,
                        block: int | None = None, bias=None) -> jax.Array:
  """Causal self-attention by blocks of queries: q BTNH, k/v BTKH, mask B1TT -> BTNH.

  Query block [i, i + block) reads only keys [0, i + block), so the masked upper triangle
  of the scores is never computed, and each block's scores are small enough to stay in
  cache. Exact (each block's softmax sees every key it may see), so it is differentiated
  as is, with no custom gradient. Valid only where `mask` is causal (no query sees a later
  key), which training's mask is; other shapes fall back to the einsum.
  """
  t, block = q.shape[1], block or BLOCK
  if k.shape[1] != t or t <= block:
    return einsum_attention(q, k, v, mask, scale, bias)
  outs = []
  for start in range(0, t, block):
    end = min(start + block, t)
    outs.append(einsum_attention(q[:, start:end], k[:, :end], v[:, :end],
                                 mask[:, :, start:end, :end], scale,
                                 None if bias is None else bias[:, :, start:end, :end]))
  return jnp.concatenate(outs, axis=1)


def dot_product_attention(q, k, v, mask, impl: str, scale: float | None = None,
                          causal: bool = True, bias=None) -> jax.Array:
  """q: BTNH, k/v: BSKH, mask: B1TS -> BTNH; `scale` on q.k (None: 1/sqrt(H)); `bias`
  BNTS added to the scaled scores.

  'cudnn' and 'xla' go through `jax.nn.dot_product_attention` (it handles K < N itself;
  cudnn is the fused flash kernel of NVIDIA GPUs, xla the portable path); 'einsum' is the
  explicit version above; 'blockwise' skips the masked upper triangle (causal masks only).
  'auto' is blockwise on CPU, where it trains fastest (benchmarks/step_time.py), and jax.nn's
  own choice elsewhere (cuDNN on NVIDIA GPUs); with a bidirectional mask (`causal` False,
  encoders) 'auto' on CPU is the einsum. Every path takes the same `scale`, so muP's 1/H
  reaches training, decoding and analysis alike.
  """
  if impl == 'auto' and jax.default_backend() == 'cpu':
    impl = 'blockwise' if causal else 'einsum'
  if impl == 'einsum':
    return einsum_attention(q, k, v, mask, scale, bias)
  if impl == 'blockwise':
    return blockwise_attention(q, k, v, mask, scale, bias=bias)
  implementation = None if impl == 'auto' else impl
  if bias is not None:  # jax.nn wants the bias in the activations' dtype
    bias = bias.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                      implementation=implementation)


class Attention(nnx.Module):
  """Self-attention (`causal`: over earlier tokens only), or, called through `cross`, attention
  from a stream to another one (an encoder's output) with no positions."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, causal: bool | None = None):
    d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.cfg = cfg
    self.causal = options.ARCHITECTURES[cfg.arch].causal if causal is None else causal
    # T5 drops the scores' 1/sqrt(H) and draws the query that much smaller instead.
    self.scale = pz.attention_scale(cfg) if cfg.scale_scores else 1.0  # None: 1/sqrt(H)
    self.wq = layers.param(cfg, rngs, (d, n, h), ('embed', 'heads', 'head_dim'), pz.HIDDEN, d,
                           zero_init=pz.query_zero_init(cfg),
                           init_mult=1.0 if cfg.scale_scores else h**-0.5)
    self.wk = layers.param(cfg, rngs, (d, k, h), ('embed', 'kv_heads', 'head_dim'), pz.HIDDEN, d)
    self.wv = layers.param(cfg, rngs, (d, k, h), ('embed', 'kv_heads', 'head_dim'), pz.HIDDEN, d)
    self.wo = layers.param(cfg, rngs, (n, h, d), ('heads', 'head_dim', 'embed'), pz.OUTPUT,
                           n * h)
    self.qkv_bias = cfg.use_bias or cfg.qkv_bias
    if self.qkv_bias:
      self.bq = layers.param(cfg, None, (n, h), ('heads', 'head_dim'), pz.BIAS)
      self.bk = layers.param(cfg, None, (k, h), ('kv_heads', 'head_dim'), pz.BIAS)
      self.bv = layers.param(cfg, None, (k, h), ('kv_heads', 'head_dim'), pz.BIAS)
    if cfg.use_bias:
      self.bo = layers.param(cfg, None, (d,), ('embed',), pz.BIAS)
    if cfg.qk_norm:
      self.q_norm = layers.Norm(cfg, h, 'head_dim')
      self.k_norm = layers.Norm(cfg, h, 'head_dim')

  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               bias: jax.Array | None = None) -> jax.Array:
    """x BTD, positions BT, mask B1TT, bias BNTT (relative positions) or None -> BTD."""
    q, k, v = self.project(x, positions)
    return self.output(dot_product_attention(q, k, v, mask, self.cfg.attention_impl,
                                             self.scale, self.causal, bias))

  def cross(self, x: jax.Array, memory_k: jax.Array, memory_v: jax.Array,
            mask: jax.Array) -> jax.Array:
    """x BTD attends to another stream's keys and values (BSKH each, `keys_values`) under
    mask B1TS -> BTD."""
    q = self.queries(x, None)
    # Padded encoder slots make arbitrary masks: cuDNN's kernel is not for them (see decode).
    impl = 'xla' if self.cfg.attention_impl == 'xla' else 'einsum'
    return self.output(dot_product_attention(q, memory_k, memory_v, mask, impl, self.scale,
                                             causal=False))

  def probs(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
            bias: jax.Array | None = None) -> jax.Array:
    """The attention probabilities this layer forms on x BTD: BNTS float32 (for analysis)."""
    q, k, _ = self.project(x, positions)
    b, t, n, _ = q.shape
    return attention_weights(q, k, mask, self.scale, bias).reshape(b, n, t, k.shape[1])

  def decode(self, x: jax.Array, positions: jax.Array, mask: jax.Array, cache: KVCache,
             layer, bias: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """x: BTD, positions: BT, mask: B1TS over the cache's slots (this chunk's included).

    Writes the chunk's keys and values into layer `layer` of the cache, then attends over
    that layer's S slots; returns (BTD, the cache).
    """
    q, k, v = self.project(x, positions)
    cache, k, v = cache.update(layer, k, v)
    # cuDNN's fused kernel takes no arbitrary mask, and one query per row gains nothing from
    # it: 'xla' keeps jax.nn's path, everything else the einsum (no k/v copies for K < N).
    impl = 'xla' if self.cfg.attention_impl == 'xla' else 'einsum'
    return self.output(dot_product_attention(q, k, v, mask, impl, self.scale,
                                             bias=bias)), cache

  def project(self, x, positions):
    """BTD -> q BTNH, k and v BTKH, with biases, qk norms and rotary positions applied."""
    k, v = self.keys_values(x, positions)
    return self.queries(x, positions), k, v

  def queries(self, x, positions):
    """BTD -> q BTNH; rotated when positions are rotary and given (None: cross-attention)."""
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    q = jnp.einsum('BTD,DNH->BTNH', x, self.wq[...].astype(dtype))
    if self.qkv_bias:
      q = q + self.bq[...].astype(dtype)
    if cfg.qk_norm:
      q = self.q_norm(q)
    if positions is not None and options.POSITIONS[cfg.positions].rotary:
      q = layers.rope(q, positions, layers.rope_frequencies(cfg))
    return sharding.constrain(q, ('batch', 'length', 'act_heads', None))

  def keys_values(self, x, positions):
    """BSD -> k and v BSKH; k rotated like `queries`."""
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    k = jnp.einsum('BSD,DKH->BSKH', x, self.wk[...].astype(dtype))
    v = jnp.einsum('BSD,DKH->BSKH', x, self.wv[...].astype(dtype))
    if self.qkv_bias:
      k, v = k + self.bk[...].astype(dtype), v + self.bv[...].astype(dtype)
    if cfg.qk_norm:
      k = self.k_norm(k)
    if positions is not None and options.POSITIONS[cfg.positions].rotary:
      k = layers.rope(k, positions, layers.rope_frequencies(cfg))
    k = sharding.constrain(k, ('batch', 'length', 'act_kv_heads', None))
    v = sharding.constrain(v, ('batch', 'length', 'act_kv_heads', None))
    return k, v

  def output(self, out):
    """Attention output BTNH -> BTD."""
    dtype = jnp.dtype(self.cfg.dtype)
    y = jnp.einsum('BTNH,NHD->BTD', out, self.wo[...].astype(dtype))
    if self.cfg.use_bias:
      y = y + self.bo[...].astype(dtype)
    return y
