"""ModelConfig: the one description of a Transformer's architecture, and named presets.

Dimension glossary used across llmjax (einsum strings, shape comments):
  B batch, T query length, S key length, D model width (d_model), N query heads,
  K key/value heads, G = N/K query heads per kv head, H head dim, F MLP width,
  V vocabulary, L layers.
"""

import dataclasses

ATTENTION_IMPLS = ('auto', 'xla', 'cudnn', 'einsum', 'blockwise')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a Transformer (decoder, encoder or encoder-decoder). Modules receive only
  this."""

  vocab_size: int = 257  # V (the byte tokenizer: 256 bytes and end-of-text)
  d_model: int = 128  # D
  num_layers: int = 4  # L
  num_heads: int = 4  # N
  num_kv_heads: int = 4  # K (N: multi-head, 1: multi-query, else grouped-query)
  head_dim: int = 32  # H
  mlp_dim: int = 512  # F
  max_len: int = 256  # longest sequence; size of the learned position table
  norm: str = 'rmsnorm'  # a key of options.NORMS
  norm_eps: float = 1e-5
  positions: str = 'rope'  # a key of options.POSITIONS
  rope_theta: float = 10_000.0
  rope_scaling: str = 'none'  # a key of options.ROPE_SCALINGS ('llama3': Llama 3.1+)
  rope_scaling_factor: float = 8.0  # llama3: low frequencies divided by this
  rope_low_freq_factor: float = 1.0  # llama3: fewer turns in the original context: scaled
  rope_high_freq_factor: float = 4.0  # llama3: more turns than this: kept as they are
  rope_original_max_len: int = 8192  # llama3: the context the frequencies were trained on
  mlp: str = 'swiglu'  # a key of options.MLPS
  tie_embeddings: bool = True  # logits through the input embedding's transpose
  use_bias: bool = False  # biases on every projection (GPT-2 style)
  qkv_bias: bool = False  # biases on the query, key and value projections only (Qwen2)
  qk_norm: bool = False  # normalize queries and keys per head before the dot product
  dropout: float = 0.0  # on attention and MLP outputs and on the embeddings
  param_dtype: str = 'float32'  # storage dtype of parameters
  dtype: str = 'float32'  # compute dtype of activations and matmuls
  scan_layers: bool = True  # apply the stacked layers with lax.scan, else a Python loop
  remat: str = 'none'  # per-layer rematerialization: a key of options.REMAT_POLICIES
  attention_impl: str = 'auto'  # auto | xla | cudnn (jax.nn) | einsum | blockwise (see attention.py)
  init_std: float = 0.02  # std of embeddings and input projections
  logits_soft_cap: float = 0.0  # tanh cap on the output logits; 0 disables
  # Parametrization (llmjax.model.parametrization): how init, LR and forward scales follow
  # the shape. mup/completep equal sp at the base shape.
  parametrization: str = 'sp'  # sp | mup | completep
  mup_base_width: int = 0  # D of the base shape (0: the model's own); same shape rule
  mup_base_depth: int = 0  # L of the base shape, completep only (0: the model's own)
  mup_base_preset: str = ''  # a preset whose shape is the base (instead of the base width)
  mup_input_mult: float = 1.0  # on the embeddings' output
  mup_output_mult: float = 1.0  # on the logits, before the 1/m_d of muP
  mup_attn_mult: float = 1.0  # on the attention scores, before muP's sqrt(H_base)/H
  mup_readout_zero_init: bool = False  # untied head starts at 0
  mup_query_zero_init: bool = False  # query projection starts at 0 (uniform attention)
  completep_alpha: float = 1.0  # depth exponent: branches x (L/L_base)^-alpha
  # Architecture family (options.ARCHITECTURES): decoders predict the next token; encoders
  # see their whole segment and train on masked tokens through BERT's head (a D x D
  # transform, its activation and norm, the tied embedding, a vocabulary bias).
  arch: str = 'decoder'  # a key of options.ARCHITECTURES
  norm_position: str = 'pre'  # pre | post (options.NORM_POSITIONS)
  embed_norm: bool = False  # a norm on the summed embeddings (BERT)
  # Encoder-decoders (T5): num_layers encoder blocks, then this many decoder blocks, each
  # with cross-attention to the encoder's output (0: as many as the encoder).
  num_decoder_layers: int = 0
  relative_buckets: int = 32  # positions=relative: buckets of key - query offsets (T5: 32)
  relative_max_distance: int = 128  # offsets from here on share the last bucket (T5: 128)
  # Scores q.k times 1/sqrt(H); False: T5, which folds that factor into the query's init.
  scale_scores: bool = True

  @property
  def num_groups(self) -> int:  # G
    return self.num_heads // self.num_kv_heads

  @property
  def decoder_layers(self) -> int:
    """Blocks of the stack that makes the logits (`blocks`): the decoder's."""
    return self.num_decoder_layers or self.num_layers


def _gpt2(d_model, num_layers, num_heads):
  return dict(
      vocab_size=50257, d_model=d_model, num_layers=num_layers, num_heads=num_heads,
      num_kv_heads=num_heads, head_dim=d_model // num_heads, mlp_dim=4 * d_model,
      max_len=1024, norm='layernorm', positions='learned', mlp='gelu',
      tie_embeddings=True, use_bias=True, norm_eps=1e-5)


def _llama(d_model, num_layers, num_heads, num_kv_heads, mlp_dim, vocab_size=32000,
           max_len=4096, rope_theta=10_000.0):
  return dict(
      vocab_size=vocab_size, d_model=d_model, num_layers=num_layers,
      num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=d_model // num_heads,
      mlp_dim=mlp_dim, max_len=max_len, norm='rmsnorm', positions='rope',
      rope_theta=rope_theta, mlp='swiglu', tie_embeddings=False, use_bias=False,
      norm_eps=1e-5)


def ladder_shape(d_model: int, num_layers: int) -> dict:
  """Shape of a modern model for scaling sweeps: head dim 32 (D < 256) or 64 (one head of
  width D below 32), SwiGLU width ~8/3 D rounded up to a multiple of 32."""
  head_dim = min(d_model, 32 if d_model < 256 else 64)
  heads = d_model // head_dim
  return dict(d_model=d_model, num_layers=num_layers, num_heads=heads,
              num_kv_heads=heads, head_dim=head_dim,
              mlp_dim=int(8 * d_model / 3 + 31) // 32 * 32)


PRESETS = {
    # Exactly GPT-2's architecture, so Hugging Face checkpoints can be imported.
    'gpt2-small': _gpt2(768, 12, 12),
    'gpt2-medium': _gpt2(1024, 24, 16),
    'gpt2-large': _gpt2(1280, 36, 20),
    'gpt2-xl': _gpt2(1600, 48, 25),
    # The Llama family: RoPE, RMSNorm, SwiGLU, untied head, GQA from Llama 2 70B on.
    'llama2-7b': _llama(4096, 32, 32, 32, 11008),
    'llama2-13b': _llama(5120, 40, 40, 40, 13824),
    'llama3-8b': _llama(4096, 32, 32, 8, 14336, vocab_size=128256, max_len=8192,
                        rope_theta=500_000.0),
    # As released: tied head, 128k context by Llama 3.1's rope scaling (1.24B parameters).
    'llama3.2-1b': {**_llama(2048, 16, 32, 8, 8192, vocab_size=128256, max_len=131_072,
                             rope_theta=500_000.0),
                    'tie_embeddings': True, 'rope_scaling': 'llama3', 'rope_scaling_factor': 32.0},
    # Ladder for scaling sweeps, named by width x depth.
    **{f'ladder-{d}x{l}': ladder_shape(d, l) for d, l in [
        (64, 2), (96, 3), (128, 4), (192, 4), (256, 4), (320, 5), (384, 6),
        (512, 8), (640, 10), (768, 12), (1024, 16), (1536, 20), (2048, 24)]},
}


def from_preset(name: str, **overrides) -> ModelConfig:
  """ModelConfig of a named preset, with some fields replaced."""
  if name not in PRESETS:
    raise ValueError(f'unknown model preset {name!r}; known: {", ".join(PRESETS)}')
  return ModelConfig(**{**PRESETS[name], **overrides})
