"""The Transformer: a decoder, an encoder, or an encoder-decoder, pre- or post-norm blocks
over a stacked layer axis."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import sharding
from llmjax.model import layers, options
from llmjax.model import parametrization as pz
from llmjax.model.attention import (Attention, KVCache, attention_mask, cache_mask,
                                    cross_mask)
from llmjax.model.config import ModelConfig


class Block(nnx.Module):
  """Pre-norm: x + b * Attn(Norm(x)), then x + b * Mlp(Norm(x)); post-norm (BERT):
  Norm(x + b * Attn(x)), then Norm(x + b * Mlp(x)). b is the parametrization's branch
  multiplier (1 but under completep). A decoder block of an encoder-decoder (`cross`) has a
  third branch between the two, cross-attention to the encoder's output, normed alike."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, causal: bool | None = None,
               cross: bool = False):
    self.dropout_rate = cfg.dropout
    self.branch_mult = pz.branch_multiplier(cfg)
    self.post_norm = cfg.norm_position == 'post'
    self.attn_norm = layers.Norm(cfg, cfg.d_model)
    self.attn = Attention(cfg, rngs, causal)
    self.mlp_norm = layers.Norm(cfg, cfg.d_model)
    self.mlp = layers.Mlp(cfg, rngs)
    self.has_cross = cross
    if cross:
      self.cross_norm = layers.Norm(cfg, cfg.d_model)
      self.cross_attn = Attention(cfg, rngs, causal=False)

  def __call__(self, x, positions, mask, dropout_key=None, bias=None, memory=None,
               cross_mask=None):  # BTD -> BTD
    """`bias`: the stack's relative position bias; `memory` (BSD) and `cross_mask` (B1TS):
    the encoder's output and who may read it (cross blocks only)."""
    attn_key = mlp_key = cross_key = None
    if dropout_key is not None:
      attn_key, mlp_key, *rest = jax.random.split(dropout_key, 3 if self.has_cross else 2)
      cross_key = rest[0] if rest else None
    x = self.attend(x, positions, mask, attn_key, bias)
    if self.has_cross:
      k, v = self.memory_keys_values(memory)
      x = self.cross_attend(x, k, v, cross_mask, cross_key)
    return self.feed_forward(x, mlp_key)

  def attend(self, x, positions, mask, dropout_key=None, bias=None):  # BTD -> BTD
    """The stream after this block's attention branch (before its MLP)."""
    h = self.attn(self._branch_input(x, self.attn_norm), positions, mask, bias)
    return self._add(x, layers.dropout(h, self.dropout_rate, dropout_key), self.attn_norm)

  def memory_keys_values(self, memory):  # BSD -> k, v BSKH
    """The cross-attention's keys and values of the encoder's output (cached in decoding)."""
    return self.cross_attn.keys_values(memory, None)

  def cross_attend(self, x, k, v, mask, dropout_key=None):  # BTD -> BTD
    h = self.cross_attn.cross(self._branch_input(x, self.cross_norm), k, v, mask)
    return self._add(x, layers.dropout(h, self.dropout_rate, dropout_key), self.cross_norm)

  def attention_probs(self, x, positions, mask, bias=None):  # BTD -> BNTS float32
    """The attention probabilities this block's attention branch uses on stream x."""
    return self.attn.probs(self._branch_input(x, self.attn_norm), positions, mask, bias)

  def feed_forward(self, x, dropout_key=None):  # BTD -> BTD
    """The stream after this block's MLP branch."""
    h = self.mlp(self._branch_input(x, self.mlp_norm))
    x = self._add(x, layers.dropout(h, self.dropout_rate, dropout_key), self.mlp_norm)
    return sharding.constrain(x, ('batch', 'length', 'act_embed'))

  def decode(self, x, positions, mask, cache, layer, bias=None, cross=None):
    """BTD -> BTD, and the cache; `cross`: this layer's cached (k, v, mask) of the encoder's
    output (cross blocks only)."""
    h, cache = self.attn.decode(self._branch_input(x, self.attn_norm), positions, mask, cache,
                                layer, bias)
    x = self._add(x, h, self.attn_norm)
    if self.has_cross:
      x = self.cross_attend(x, *cross)
    return self.feed_forward(x), cache

  def _branch_input(self, x, norm):
    return x if self.post_norm else norm(x)

  def _add(self, x, h, norm):
    x = x + self._branch(h)
    return norm(x) if self.post_norm else x

  def _branch(self, h):
    # Skipped at 1 so that sp and the base shape compute exactly what they always did.
    return h if self.branch_mult == 1.0 else h * jnp.asarray(self.branch_mult, h.dtype)


def _stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs, num: int, **kind) -> Block:
  """`num` blocks of one kind stored stacked on a leading 'layers' axis."""

  @nnx.split_rngs(splits=num)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
  def stacked_blocks(rngs):
    return Block(cfg, rngs, **kind)

  return stacked_blocks(rngs)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Memory:
  """An encoder's output as each decoder layer reads it: keys and values per layer
  (L B S K H, computed once, then reused by every decoding step) and the segment id of each
  encoder slot (B S; 0: padding, read by no one)."""

  k: jax.Array
  v: jax.Array
  segment_ids: jax.Array


class Transformer(nnx.Module):
  """Token ids -> next-token logits (a decoder, or the decoder of an encoder-decoder reading
  its encoder's output), or an encoder's masked-token logits.

  The L blocks are stored stacked on a leading 'layers' axis whatever
  `scan_layers` says, so checkpoints do not depend on how layers are applied:
  `scan_layers=True` runs them with one lax.scan (compile time independent of
  L), False unrolls a Python loop over slices (what XLA's cost analysis and
  per-layer debugging want). An encoder-decoder (T5) keeps its encoder in `encoder_blocks`
  (num_layers, bidirectional, then `encoder_norm`) and its decoder in `blocks`
  (num_decoder_layers, with cross-attention); both share the token embedding.
  """

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    arch, relative = options.ARCHITECTURES[cfg.arch], options.POSITIONS[cfg.positions].relative
    self.embed = layers.Embed(cfg, rngs)
    if options.POSITIONS[cfg.positions].table:
      self.pos_embedding = layers.param(cfg, rngs, (cfg.max_len, cfg.d_model),
                                        (None, 'embed'), pz.EMBEDDING)
    self.blocks = _stacked_blocks(cfg, rngs, cfg.decoder_layers, cross=arch.cross_attention)
    if cfg.embed_norm:
      self.embed_norm = layers.Norm(cfg, cfg.d_model)
    if cfg.norm_position == 'pre':  # post-norm blocks end normalized
      self.final_norm = layers.Norm(cfg, cfg.d_model)
    if arch.masked_lm_head:
      self.mlm_head = layers.MaskedLMHead(cfg, rngs)
    if not cfg.tie_embeddings:
      self.unembed = layers.param(cfg, rngs, (cfg.d_model, cfg.vocab_size),
                                  ('embed', 'vocab'), pz.UNEMBED, cfg.d_model,
                                  zero_init=pz.readout_zero_init(cfg))
    # Created after everything a decoder always had, so its random init stays as it was.
    if relative:
      self.relative_bias = layers.RelativeBias(cfg, rngs, bidirectional=not arch.causal)
    if arch.cross_attention:
      self.encoder_blocks = _stacked_blocks(cfg, rngs, cfg.num_layers, causal=False)
      self.encoder_norm = layers.Norm(cfg, cfg.d_model)
      if relative:
        self.encoder_relative_bias = layers.RelativeBias(cfg, rngs, bidirectional=True)
    self.input_mult = pz.input_multiplier(cfg)
    self.logit_mult = pz.logit_multiplier(cfg)

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None,
               dropout_key: jax.Array | None = None,
               encoder_inputs: jax.Array | None = None,
               encoder_positions: jax.Array | None = None,
               encoder_segment_ids: jax.Array | None = None) -> jax.Array:
    """tokens, positions, segment_ids: BT int -> logits BTV float32.

    Tokens attend only to earlier tokens of the same segment (packed documents);
    positions default to 0..T-1 and segment ids to one segment per row;
    `dropout_key=None` means evaluation (no dropout). An encoder-decoder reads its encoder's
    tokens (`encoder_*`: BS, the same defaults), each decoder segment only the encoder
    segment of the same id.
    """
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    embed_key = blocks_key = encoder_key = None
    memory = None
    if options.ARCHITECTURES[self.cfg.arch].cross_attention:
      if encoder_inputs is None:
        raise ValueError(f'model.arch={self.cfg.arch!r} reads an encoder input: pass '
                         f'encoder_inputs (a batch\'s encoder_* keys: data.objective=span)')
      if dropout_key is not None:
        dropout_key, encoder_key = jax.random.split(dropout_key)
      memory = self.encode(encoder_inputs, encoder_positions, encoder_segment_ids, encoder_key)
    if dropout_key is not None:
      embed_key, blocks_key = jax.random.split(dropout_key)
    x = self.embed_tokens(tokens, positions, embed_key)
    return self.logits(self.hidden(x, positions, segment_ids, blocks_key, memory))

  def encode(self, tokens, positions=None, segment_ids=None, dropout_key=None):
    """An encoder-decoder's encoder: BS token ids -> (BSD output after its final norm,
    segment ids BS)."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    embed_key = blocks_key = out_key = None
    if dropout_key is not None:
      embed_key, blocks_key, out_key = jax.random.split(dropout_key, 3)
    x = self.embed_tokens(tokens, positions, embed_key)
    bias = None
    if options.POSITIONS[self.cfg.positions].relative:
      bias = self.encoder_relative_bias(positions, positions)
    mask = attention_mask(segment_ids, causal=False)
    x = self._apply_blocks(x, positions, mask, self._layer_keys(blocks_key, self.cfg.num_layers),
                           self.encoder_blocks, bias=bias)
    x = layers.dropout(self.encoder_norm(x), self.cfg.dropout, out_key)
    return x, segment_ids

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

  def hidden(self, x, positions, segment_ids, dropout_key=None, memory=None) -> jax.Array:
    """BTD embeddings -> BTD residual stream after the last block (before the final norm).
    `memory`: an encoder-decoder's `encode` output."""
    mask = attention_mask(segment_ids, options.ARCHITECTURES[self.cfg.arch].causal)
    extras = {}
    if options.POSITIONS[self.cfg.positions].relative:
      extras['bias'] = self.relative_bias(positions, positions)
    if memory is not None:
      extras['memory'], memory_segments = memory
      extras['cross_mask'] = cross_mask(segment_ids, memory_segments)
    keys = self._layer_keys(dropout_key, self.cfg.decoder_layers)
    return self._apply_blocks(x, positions, mask, keys, self.blocks, **extras)

  def memory(self, tokens, positions=None, segment_ids=None) -> Memory:
    """What decoding reads of the encoder: `encode`, then each decoder layer's keys and
    values of it, computed once."""
    memory, segment_ids = self.encode(tokens, positions, segment_ids)
    graphdef, stacked = nnx.split(self.blocks)

    def one_block(_, block_state):
      return None, nnx.merge(graphdef, block_state).memory_keys_values(memory)

    _, (k, v) = self._over_layers(one_block, None, stacked)
    return Memory(k=k, v=v, segment_ids=segment_ids)

  def decode(self, tokens: jax.Array, positions: jax.Array,
             cache: KVCache, memory: Memory | None = None) -> tuple[jax.Array, KVCache]:
    """Incremental forward: tokens, positions BT -> (logits BTV float32, next cache).

    The chunk's keys and values go into the cache's next T slots; each token attends to
    the cached tokens of its row at positions up to its own. A position < 0 marks padding:
    never attended, its logits meaningless. Equals `__call__` over the row's tokens so far.
    An encoder-decoder's decoder reads the encoder's output through `memory` (one segment
    per row).
    """
    x, cache = self.decode_hidden(tokens, positions, cache, memory)
    return self.logits(x), cache

  def decode_hidden(self, tokens, positions, cache: KVCache,
                    memory: Memory | None = None) -> tuple[jax.Array, KVCache]:
    """`decode` up to the residual stream after the last block (BTD), for callers that
    want logits at a few positions only."""
    slots = jax.lax.dynamic_update_slice_in_dim(cache.positions, positions, cache.index, 1)
    mask = cache_mask(positions, slots)
    valid = jnp.maximum(positions, 0)  # padding: any row of the table, any rotation
    x = self.embed_tokens(tokens, valid)
    extras, xs = {}, ()
    if options.POSITIONS[self.cfg.positions].relative:
      extras['bias'] = self.relative_bias(valid, slots)
    if memory is not None:
      memory_mask = jnp.broadcast_to((memory.segment_ids > 0)[:, None, None, :],
                                     (tokens.shape[0], 1, tokens.shape[1],
                                      memory.segment_ids.shape[1]))
      xs = (memory.k, memory.v)
    graphdef, stacked = nnx.split(self.blocks)

    # The cache rides in the carry, not in the scanned inputs and outputs: each layer then
    # writes its T new slots in place instead of XLA copying the whole cache every step.
    def one_block(carry, layer):
      (x, cache), (block_state, i, *kv) = carry, layer
      cross = (*kv, memory_mask) if kv else None
      return nnx.merge(graphdef, block_state).decode(x, valid, mask, cache, i,
                                                     cross=cross, **extras), None

    layer_ids = jnp.arange(self.cfg.decoder_layers)
    (x, cache), _ = self._over_layers(one_block, (x, cache), (stacked, layer_ids, *xs))
    return x, dataclasses.replace(cache, positions=slots, index=cache.index + tokens.shape[1])

  def logits(self, x: jax.Array) -> jax.Array:
    """BTD residual stream -> BTV float32 logits (final norm, an encoder's masked-LM
    transform, then the output head)."""
    cfg, arch = self.cfg, options.ARCHITECTURES[self.cfg.arch]
    if cfg.norm_position == 'pre':
      x = self.final_norm(x)
    mlm_head = arch.masked_lm_head
    if mlm_head:
      x = self.mlm_head(x)
    if cfg.tie_embeddings:
      if arch.tied_head_rescale:
        x = x * jnp.asarray(cfg.d_model**-0.5, x.dtype)
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

  def _layer_keys(self, dropout_key, num):
    return None if dropout_key is None else jax.random.split(dropout_key, num)

  def _apply_blocks(self, x, positions, mask, layer_keys, blocks, **extras):
    """x through the stacked `blocks`; `extras` (bias, memory, cross_mask) reach every one."""
    graphdef, stacked = nnx.split(blocks)

    def one_block(x, layer):
      block_state, key = layer
      return nnx.merge(graphdef, block_state)(x, positions, mask, key, **extras), None

    if self.cfg.remat != 'none':
      one_block = jax.checkpoint(one_block, policy=options.REMAT_POLICIES[self.cfg.remat])
    return self._over_layers(one_block, x, (stacked, layer_keys))[0]

  def _over_layers(self, body, x, xs):
    """body(x, layer slice of xs) -> (x, layer ys), over the stacked layers (the leading
    axis of xs): one lax.scan, or a Python loop over slices; returns (x, ys stacked on the
    layers axis)."""
    if self.cfg.scan_layers:
      return jax.lax.scan(body, x, xs)
    ys = []
    for i in range(jax.tree.leaves(xs)[0].shape[0]):
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
