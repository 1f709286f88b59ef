"""The decoder-only Transformer LM: pre-norm blocks over a stacked layer axis."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import sharding
from llmjax.model import layers, options
from llmjax.model import parametrization as pz
from llmjax.model.attention import Attention, KVCache, attention_mask, cache_mask
from llmjax.model.config import ModelConfig


class Block(nnx.Module):
  """Pre-norm: x + b * Attn(Norm(x)), then x + b * Mlp(Norm(x)); post-norm (BERT):
  Norm(x + b * Attn(x)), then Norm(x + b * Mlp(x)). b is the parametrization's branch
  multiplier (1 but under completep)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.dropout_rate = cfg.dropout
    self.branch_mult = pz.branch_multiplier(cfg)
    self.post_norm = cfg.norm_position == 'post'
    self.attn_norm = layers.Norm(cfg, cfg.d_model)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = layers.Norm(cfg, cfg.d_model)
    self.mlp = layers.Mlp(cfg, rngs)

  def __call__(self, x, positions, mask, dropout_key=None):  # BTD -> BTD
    attn_key = mlp_key = None
    if dropout_key is not None:
      attn_key, mlp_key = jax.random.split(dropout_key)
    x = self.attend(x, positions, mask, attn_key)
    return self.feed_forward(x, mlp_key)

  def attend(self, x, positions, mask, dropout_key=None):  # BTD -> BTD
    """The stream after this block's attention branch (before its MLP)."""
    h = self.attn(self._branch_input(x, self.attn_norm), positions, mask)
    return self._add(x, layers.dropout(h, self.dropout_rate, dropout_key), self.attn_norm)

  def attention_probs(self, x, positions, mask):  # BTD -> BNTS float32
    """The attention probabilities this block's attention branch uses on stream x."""
    return self.attn.probs(self._branch_input(x, self.attn_norm), positions, mask)

  def feed_forward(self, x, dropout_key=None):  # BTD -> BTD
    """The stream after this block's MLP branch."""
    h = self.mlp(self._branch_input(x, self.mlp_norm))
    x = self._add(x, layers.dropout(h, self.dropout_rate, dropout_key), self.mlp_norm)
    return sharding.constrain(x, ('batch', 'length', 'act_embed'))

  def decode(self, x, positions, mask, cache, layer):  # BTD -> BTD, and the cache
    h, cache = self.attn.decode(self._branch_input(x, self.attn_norm), positions, mask, cache,
                                layer)
    return self.feed_forward(self._add(x, h, self.attn_norm)), cache

  def _branch_input(self, x, norm):
    return x if self.post_norm else norm(x)

  def _add(self, x, h, norm):
    x = x + self._branch(h)
    return norm(x) if self.post_norm else x

  def _branch(self, h):
    # Skipped at 1 so that sp and the base shape compute exactly what they always did.
    return h if self.branch_mult == 1.0 else h * jnp.asarray(self.branch_mult, h.dtype)


class Transformer(nnx.Module):
  """Token ids -> next-token logits.

  The L blocks are stored stacked on a leading 'layers' axis whatever
  `scan_layers` says, so checkpoints do not depend on how layers are applied:
  `scan_layers=True` runs them with one lax.scan (compile time independent of
  L), False unrolls a Python loop over slices (what XLA's cost analysis and
  per-layer debugging want).
  """

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = layers.Embed(cfg, rngs)
    if options.POSITIONS[cfg.positions].table:
      self.pos_embedding = layers.param(cfg, rngs, (cfg.max_len, cfg.d_model),
                                        (None, 'embed'), pz.EMBEDDING)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
    def stacked_blocks(rngs):
      return Block(cfg, rngs)

    self.blocks = stacked_blocks(rngs)
    if cfg.embed_norm:
      self.embed_norm = layers.Norm(cfg, cfg.d_model)
    if cfg.norm_position == 'pre':  # post-norm blocks end normalized
      self.final_norm = layers.Norm(cfg, cfg.d_model)
    if options.ARCHITECTURES[cfg.arch].masked_lm_head:
      self.mlm_head = layers.MaskedLMHead(cfg, rngs)
    if not cfg.tie_embeddings:
      self.unembed = layers.param(cfg, rngs, (cfg.d_model, cfg.vocab_size),
                                  ('embed', 'vocab'), pz.UNEMBED, cfg.d_model,
                                  zero_init=pz.readout_zero_init(cfg))
    self.input_mult = pz.input_multiplier(cfg)
    self.logit_mult = pz.logit_multiplier(cfg)

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """tokens, positions, segment_ids: BT int -> logits BTV float32.

    Tokens attend only to earlier tokens of the same segment (packed documents);
    positions default to 0..T-1 and segment ids to one segment per row;
    `dropout_key=None` means evaluation (no dropout).
    """
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    embed_key = blocks_key = None
    if dropout_key is not None:
      embed_key, blocks_key = jax.random.split(dropout_key)
    x = self.embed_tokens(tokens, positions, embed_key)
    return self.logits(self.hidden(x, positions, segment_ids, blocks_key))

  def embed_tokens(self, tokens, positions, dropout_key=None) -> jax.Array:
    """BT token ids -> BTD input of the first block."""
    tokens = sharding.constrain(tokens, ('batch', 'length'))
    x = self.embed(tokens)
    if options.POSITIONS[self.cfg.positions].table:
      x = x + jnp.take(self.pos_embedding[...], positions, axis=0).astype(x.dtype)
    if self.cfg.embed_norm:
      x = self.embed_norm(x)
    if self.input_mult != 1.0:
      x = x * jnp.asarray(self.input_mult, x.dtype)
    x = layers.dropout(x, self.cfg.dropout, dropout_key)
    return sharding.constrain(x, ('batch', 'length', 'act_embed'))

  def hidden(self, x, positions, segment_ids, dropout_key=None) -> jax.Array:
    """BTD embeddings -> BTD residual stream after the last block (before the final norm)."""
    layer_keys = None
    if dropout_key is not None:
      layer_keys = jax.random.split(dropout_key, self.cfg.num_layers)
    mask = attention_mask(segment_ids, options.ARCHITECTURES[self.cfg.arch].causal)
    return self._apply_blocks(x, positions, mask, layer_keys)

  def decode(self, tokens: jax.Array, positions: jax.Array,
             cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Incremental forward: tokens, positions BT -> (logits BTV float32, next cache).

    The chunk's keys and values go into the cache's next T slots; each token attends to
    the cached tokens of its row at positions up to its own. A position < 0 marks padding:
    never attended, its logits meaningless. Equals `__call__` over the row's tokens so far.
    """
    x, cache = self.decode_hidden(tokens, positions, cache)
    return self.logits(x), cache

  def decode_hidden(self, tokens, positions, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """`decode` up to the residual stream after the last block (BTD), for callers that
    want logits at a few positions only."""
    slots = jax.lax.dynamic_update_slice_in_dim(cache.positions, positions, cache.index, 1)
    mask = cache_mask(positions, slots)
    valid = jnp.maximum(positions, 0)  # padding: any row of the table, any rotation
    x = self.embed_tokens(tokens, valid)
    graphdef, stacked = nnx.split(self.blocks)

    # The cache rides in the carry, not in the scanned inputs and outputs: each layer then
    # writes its T new slots in place instead of XLA copying the whole cache every step.
    def one_block(carry, layer):
      (x, cache), (block_state, i) = carry, layer
      return nnx.merge(graphdef, block_state).decode(x, valid, mask, cache, i), None

    layer_ids = jnp.arange(self.cfg.num_layers)
    (x, cache), _ = self._over_layers(one_block, (x, cache), (stacked, layer_ids))
    return x, dataclasses.replace(cache, positions=slots, index=cache.index + tokens.shape[1])

  def logits(self, x: jax.Array) -> jax.Array:
    """BTD residual stream -> BTV float32 logits (final norm, an encoder's masked-LM
    transform, then the output head)."""
    cfg = self.cfg
    if cfg.norm_position == 'pre':
      x = self.final_norm(x)
    mlm_head = options.ARCHITECTURES[cfg.arch].masked_lm_head
    if mlm_head:
      x = self.mlm_head(x)
    if cfg.tie_embeddings:
      logits = self.embed.attend(x)
    else:
      logits = jnp.einsum('BTD,DV->BTV', x, self.unembed[...].astype(x.dtype),
                          preferred_element_type=jnp.float32)
    logits = sharding.constrain(logits, ('batch', 'length', 'act_vocab'))
    logits = logits.astype(jnp.float32)
    if mlm_head:
      logits = logits + self.mlm_head.bias[...].astype(jnp.float32)
    if self.logit_mult != 1.0:
      logits = logits * self.logit_mult
    if cfg.logits_soft_cap:
      logits = cfg.logits_soft_cap * jnp.tanh(logits / cfg.logits_soft_cap)
    return logits

  def _apply_blocks(self, x, positions, mask, layer_keys):
    graphdef, stacked = nnx.split(self.blocks)

    def one_block(x, layer):
      block_state, key = layer
      return nnx.merge(graphdef, block_state)(x, positions, mask, key), None

    if self.cfg.remat != 'none':
      one_block = jax.checkpoint(one_block, policy=options.REMAT_POLICIES[self.cfg.remat])
    return self._over_layers(one_block, x, (stacked, layer_keys))[0]

  def _over_layers(self, body, x, xs):
    """body(x, layer slice of xs) -> (x, layer ys), over the L layers: one lax.scan, or a
    Python loop over slices; returns (x, ys stacked on the layers axis)."""
    if self.cfg.scan_layers:
      return jax.lax.scan(body, x, xs)
    ys = []
    for i in range(self.cfg.num_layers):
      x, y = body(x, jax.tree.map(lambda a: a[i], xs))
      ys.append(y)
    return x, jax.tree.map(lambda *a: jnp.stack(a), *ys)


def abstract_params(cfg: ModelConfig) -> dict:
  """'a/b/c' -> abstract nnx.Param (shape, dtype, group, fan_in) of a model of `cfg`;
  allocates nothing."""
  model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  flat, _ = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param),
                                                 is_leaf=lambda v: isinstance(v, nnx.Variable))
  return {pz_path(path): var for path, var in flat}


def pz_path(path) -> str:
  """A jax tree path of the parameter state as 'blocks/attn/wq'."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


def parametrization_rules(cfg: ModelConfig) -> dict[str, pz.Rule]:
  """What the parametrization does to each tensor of a model of `cfg`: its fan-in against
  the same tensor of the abstract base model, init std, LR, epsilon and forward
  multipliers."""
  return pz.tensor_rules(cfg, abstract_params(cfg), abstract_params(pz.base_config(cfg)))
