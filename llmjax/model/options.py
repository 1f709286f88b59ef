"""The model's option registries: one entry per architecture, MLP kind, norm, position
scheme, rope scaling and remat policy.

Everything that depends on an option reads its entry here, never its name: validation
(`configs.build`), the layers, the parameter and FLOP counter (`flops.py`), Hugging Face
conversion (`convert/hf_config.py`) and the README's option list (`tests/test_options.py`
checks it). Adding a kind is one entry here plus its golden values; the model tests are
parametrized over these tables, so a new entry is tested with no further edit.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)  # GPT-2's tanh approximation


def _gelu_erf(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)  # BERT's exact GELU


@dataclasses.dataclass(frozen=True)
class MlpKind:
  """D -> F -> D. Gated: act(x W_gate) * (x W_in), three D x F matrices instead of two."""
  activation: Callable[[jax.Array], jax.Array]
  gated: bool
  hf_activations: tuple[str, ...]  # Hugging Face names of `activation`; export writes the first


@dataclasses.dataclass(frozen=True)
class NormKind:
  centered: bool  # subtract the mean first (LayerNorm) or not (RMSNorm)
  bias: bool  # a learned shift after the scale


@dataclasses.dataclass(frozen=True)
class PositionKind:
  table: bool  # a learned max_len x D table added to the token embeddings
  rotary: bool  # queries and keys rotated by position (RoPE)
  # T5's relative bias: a learned scalar per head and bucket of key - query offset added to
  # the self-attention scores (one table per stack, shared by its layers; none in
  # cross-attention). Buckets are exact up to relative_buckets/4 (bidirectional) or /2
  # (causal) apart, then logarithmic up to relative_max_distance.
  relative: bool = False


def _relu(x: jax.Array) -> jax.Array:
  return jax.nn.relu(x)


MLPS: dict[str, MlpKind] = {
    'gelu': MlpKind(_gelu_tanh, gated=False, hf_activations=('gelu_new', 'gelu_pytorch_tanh')),
    'swiglu': MlpKind(jax.nn.silu, gated=True, hf_activations=('silu',)),
    'geglu': MlpKind(_gelu_tanh, gated=True, hf_activations=('gelu_pytorch_tanh', 'gelu_new')),
    'gelu_exact': MlpKind(_gelu_erf, gated=False, hf_activations=('gelu',)),  # BERT
    'relu': MlpKind(_relu, gated=False, hf_activations=('relu',)),  # T5 v1.0
}


@dataclasses.dataclass(frozen=True)
class ArchKind:
  causal: bool  # a token sees only earlier tokens of its segment (else its whole segment)
  objectives: tuple[str, ...]  # the data objectives it trains on (data.objective)
  masked_lm_head: bool  # BERT's transform (D x D, activation, norm) and vocabulary bias
  # An encoder stack (num_layers, bidirectional) read by the causal stack's blocks through
  # cross-attention (num_decoder_layers); `causal` then describes the decoder stack.
  cross_attention: bool = False
  # The tied head reads the stream times D^-0.5 (T5 v1.0, whose embeddings are ~N(0, 1)).
  tied_head_rescale: bool = False

  @property
  def decoder_only(self) -> bool:
    """Predicts the next token from the tokens before it alone (prompts, samples, tasks)."""
    return self.causal and not self.cross_attention


ARCHITECTURES: dict[str, ArchKind] = {
    'decoder': ArchKind(causal=True, objectives=('lm',), masked_lm_head=False),  # GPT-2, Llama
    'encoder': ArchKind(causal=False, objectives=('mlm',), masked_lm_head=True),  # BERT
    'encoder_decoder': ArchKind(causal=True, objectives=('span',), masked_lm_head=False,  # T5
                                cross_attention=True, tied_head_rescale=True),
}

# Where each block normalizes: 'pre' (GPT-2, Llama: x + f(norm(x)), a final norm after the
# last block) or 'post' (the original Transformer and BERT: norm(x + f(x)), no final norm).
NORM_POSITIONS = ('pre', 'post')

NORMS: dict[str, NormKind] = {
    'layernorm': NormKind(centered=True, bias=True),
    'rmsnorm': NormKind(centered=False, bias=False),
}

POSITIONS: dict[str, PositionKind] = {
    'learned': PositionKind(table=True, rotary=False),
    'rope': PositionKind(table=False, rotary=True),
    'relative': PositionKind(table=False, rotary=False, relative=True),  # T5
}


def _unscaled(freqs: jax.Array, cfg) -> jax.Array:
  return freqs


def _llama3_frequencies(freqs: jax.Array, cfg) -> jax.Array:
  """Llama 3.1's long-context rope: a frequency that turns fewer than `rope_low_freq_factor`
  times within the original context is divided by `rope_scaling_factor`, one that turns
  more than `rope_high_freq_factor` times is kept (local order stays sharp), and those
  between blend the two linearly in the number of turns."""
  turns = cfg.rope_original_max_len * freqs / (2 * jnp.pi)  # periods in the original context
  low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  kept = jnp.clip((turns - low) / (high - low), 0.0, 1.0)
  return (1.0 - kept) * freqs / cfg.rope_scaling_factor + kept * freqs


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """A change of the rotary frequencies (H/2 of them) for a longer context."""
  frequencies: Callable[[jax.Array, object], jax.Array]  # (base frequencies, ModelConfig)
  hf_rope_type: str  # Hugging Face's rope_type


ROPE_SCALINGS: dict[str, RopeScaling] = {
    'none': RopeScaling(_unscaled, hf_rope_type='default'),
    'llama3': RopeScaling(_llama3_frequencies, hf_rope_type='llama3'),
}

# Per-layer activation rematerialization: name -> jax.checkpoint policy ('none': no remat;
# 'full': save nothing, recompute the whole block in the backward pass).
REMAT_POLICIES: dict[str, Callable | None] = {
    'none': None,
    'full': None,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def rope_scaling_for_hf(rope_type: str) -> str | None:
  """The rope scaling Hugging Face calls `rope_type`; None if llmjax has none of that kind."""
  return next((name for name, kind in ROPE_SCALINGS.items() if kind.hf_rope_type == rope_type),
              None)


def mlp_for_hf(activation: str, gated: bool) -> str | None:
  """The MLP kind whose activation Hugging Face calls `activation`, gated or not; None if none."""
  for name, kind in MLPS.items():
    if kind.gated == gated and activation in kind.hf_activations:
      return name
  return None
