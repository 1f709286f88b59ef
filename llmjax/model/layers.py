"""Building blocks: parameters with logical axes, norms, embeddings, MLPs, rotary positions,
T5's relative position bias."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import sharding
from llmjax.model import options
from llmjax.model import parametrization as pz
from llmjax.model.config import ModelConfig


def param(cfg: ModelConfig, rngs: nnx.Rngs | None, shape: tuple[int, ...],
          axes: tuple[str, ...], group: str, fan_in: int = 1,
          zero_init: bool = False, init_mult: float = 1.0) -> nnx.Param:
  """A parameter tagged with logical axis names, its parametrization group and fan-in.

  The names are metadata only: the mesh placement is decided later by the
  sharding rules (llmjax.sharding), so models never mention mesh axes. The fan-in is
  what the parametrization compares against the base shape's same tensor. `init_mult`
  scales the random init's std (T5's query folds the scores' 1/sqrt(H) into it).
  """
  dtype = jnp.dtype(cfg.param_dtype)
  if group == pz.NORM:
    value = jnp.ones(shape, dtype)
  elif group == pz.BIAS:
    value = jnp.zeros(shape, dtype)
  else:
    std = pz.init_std(cfg, group, fan_in)
    if init_mult != 1.0:
      std *= init_mult
    value = (std * jax.random.truncated_normal(rngs.params(), -3.0, 3.0, shape)).astype(dtype)
    if zero_init:  # drawn anyway, so every other tensor gets the same random stream
      value = jnp.zeros(shape, dtype)
  return nnx.Param(value, out_sharding=axes, eager_sharding=False, group=group, fan_in=fan_in)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; a no-op when rate is 0 or no key is given (evaluation)."""
  if rate == 0.0 or key is None:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class Norm(nnx.Module):
  """A norm of options.NORMS (LayerNorm, GPT-2; RMSNorm, Llama); statistics in float32."""

  def __init__(self, cfg: ModelConfig, dim: int, axis_name: str = 'embed'):
    self.kind, self.eps = options.NORMS[cfg.norm], cfg.norm_eps
    self.scale = param(cfg, None, (dim,), (axis_name,), pz.NORM)
    if self.kind.bias:
      self.bias = param(cfg, None, (dim,), (axis_name,), pz.BIAS)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(jnp.float32)  # variance of low-precision activations loses too many bits
    if self.kind.centered:
      y = y - y.mean(-1, keepdims=True)
    y = y * jax.lax.rsqrt(jnp.mean(y * y, -1, keepdims=True) + self.eps)
    y = y * self.scale[...].astype(jnp.float32)
    if self.kind.bias:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


class Embed(nnx.Module):
  """Token embedding table; `attend` reuses it as the output head when tied."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.dtype = jnp.dtype(cfg.dtype)
    self.embedding = param(cfg, rngs, (cfg.vocab_size, cfg.d_model), ('vocab', 'embed'),
                           pz.EMBEDDING)

  def __call__(self, tokens: jax.Array) -> jax.Array:  # BT -> BTD
    return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:  # BTD -> BTV, float32
    # Logits accumulate and stay in float32: bfloat16 would blur the loss.
    return jnp.einsum('BTD,VD->BTV', x, self.embedding[...].astype(self.dtype),
                      preferred_element_type=jnp.float32)


class Mlp(nnx.Module):
  """An MLP of options.MLPS, D -> F -> D: GELU (GPT-2), or gated as SwiGLU (Llama)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.mlp_dim
    self.kind, self.dtype = options.MLPS[cfg.mlp], jnp.dtype(cfg.dtype)
    self.w_in = param(cfg, rngs, (d, f), ('embed', 'mlp'), pz.HIDDEN, d)
    if self.kind.gated:
      self.w_gate = param(cfg, rngs, (d, f), ('embed', 'mlp'), pz.HIDDEN, d)
    self.w_out = param(cfg, rngs, (f, d), ('mlp', 'embed'), pz.OUTPUT, f)
    self.use_bias = cfg.use_bias
    if cfg.use_bias:
      self.b_in = param(cfg, None, (f,), ('mlp',), pz.BIAS)
      self.b_out = param(cfg, None, (d,), ('embed',), pz.BIAS)

  def __call__(self, x: jax.Array) -> jax.Array:  # BTD -> BTD
    h = jnp.einsum('BTD,DF->BTF', x, self.w_in[...].astype(self.dtype))
    if self.use_bias:
      h = h + self.b_in[...].astype(self.dtype)
    if self.kind.gated:
      gate = jnp.einsum('BTD,DF->BTF', x, self.w_gate[...].astype(self.dtype))
      h = self.kind.activation(gate) * h
    else:
      h = self.kind.activation(h)
    h = sharding.constrain(h, ('batch', 'length', 'act_mlp'))
    y = jnp.einsum('BTF,FD->BTD', h, self.w_out[...].astype(self.dtype))
    if self.use_bias:
      y = y + self.b_out[...].astype(self.dtype)
    return y


class MaskedLMHead(nnx.Module):
  """BERT's masked-LM transform between the last block and the output embedding: dense
  D -> D with a bias, the MLP's activation, a norm. `bias` (V) is added to the logits."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d = cfg.d_model
    self.dtype, self.activation = jnp.dtype(cfg.dtype), options.MLPS[cfg.mlp].activation
    self.w = param(cfg, rngs, (d, d), ('embed', None), pz.HIDDEN, d)
    self.b = param(cfg, None, (d,), (None,), pz.BIAS)
    self.norm = Norm(cfg, d)
    self.bias = param(cfg, None, (cfg.vocab_size,), ('vocab',), pz.BIAS)

  def __call__(self, x: jax.Array) -> jax.Array:  # BTD -> BTD
    h = jnp.einsum('BTD,DE->BTE', x, self.w[...].astype(self.dtype))
    return self.norm(self.activation(h + self.b[...].astype(self.dtype)))


def rope_frequencies(cfg: ModelConfig) -> jax.Array:
  """The H/2 rotary angular frequencies (radians per position) of `cfg`, scaled by its
  options.ROPE_SCALINGS entry."""
  h = cfg.head_dim
  freqs = cfg.rope_theta ** (-jnp.arange(0, h, 2, dtype=jnp.float32) / h)  # H/2
  return options.ROPE_SCALINGS[cfg.rope_scaling].frequencies(freqs, cfg)


def rope(x: jax.Array, positions: jax.Array, freqs: jax.Array) -> jax.Array:
  """Rotary position embedding on the last axis (half-split layout, as in Llama/HF).

  x: B T heads H; positions: B T; freqs: H/2 (`rope_frequencies`).
  """
  angles = positions[..., None].astype(jnp.float32) * freqs  # B T H/2
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def relative_bucket(offset: jax.Array, bidirectional: bool, num_buckets: int,
                    max_distance: int) -> jax.Array:
  """T5's bucket of each key - query offset (int array, any shape): half the buckets for
  keys after the query when bidirectional (a causal stack sees only offsets <= 0); within
  each half, offsets below half its buckets are exact, larger ones share logarithmically
  wider buckets up to `max_distance`, beyond which all share the last."""
  buckets = jnp.zeros_like(offset)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (offset > 0).astype(offset.dtype) * num_buckets
    distance = jnp.abs(offset)
  else:
    distance = -jnp.minimum(offset, 0)
  exact = num_buckets // 2
  # As T5 computes it (float32 log, truncation toward zero), so imported tables line up.
  far = exact + (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact)
                 / math.log(max_distance / exact) * (num_buckets - exact)).astype(offset.dtype)
  far = jnp.minimum(far, num_buckets - 1)
  return buckets + jnp.where(distance < exact, distance, far)


class RelativeBias(nnx.Module):
  """One stack's relative position bias: a scalar per (bucket, head), shared by its layers."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, bidirectional: bool):
    self.bidirectional = bidirectional
    self.num_buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
    self.table = param(cfg, rngs, (cfg.relative_buckets, cfg.num_heads), ('buckets', 'heads'),
                       pz.EMBEDDING)

  def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """BT query and BS key positions -> B N T S float32, added to the scores."""
    offset = key_positions[:, None, :] - query_positions[:, :, None]  # B T S
    buckets = relative_bucket(offset.astype(jnp.int32), self.bidirectional, self.num_buckets,
                              self.max_distance)
    bias = jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0)  # B T S N
    return sharding.constrain(bias.transpose(0, 3, 1, 2), ('batch', 'act_heads', None, None))
