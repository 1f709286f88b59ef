"""The model's option registries: one entry per MLP kind, norm, position scheme and remat policy.

Everything that depends on an option reads its entry here, never its name: validation
(`configs.build`), the layers, the parameter and FLOP counter (`flops.py`), Hugging Face
conversion (`convert/hf_config.py`) and the README's option list (`tests/test_options.py`
checks it). Adding a kind is one entry here plus its golden values; the model tests are
parametrized over these tables, so a new entry is tested with no further edit.
"""

import dataclasses
from collections.abc import Callable

import jax


def _gelu_tanh(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=True)  # GPT-2's tanh approximation


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


MLPS: dict[str, MlpKind] = {
    'gelu': MlpKind(_gelu_tanh, gated=False, hf_activations=('gelu_new', 'gelu_pytorch_tanh')),
    'swiglu': MlpKind(jax.nn.silu, gated=True, hf_activations=('silu',)),
    'geglu': MlpKind(_gelu_tanh, gated=True, hf_activations=('gelu_pytorch_tanh',)),
}

NORMS: dict[str, NormKind] = {
    'layernorm': NormKind(centered=True, bias=True),
    'rmsnorm': NormKind(centered=False, bias=False),
}

POSITIONS: dict[str, PositionKind] = {
    'learned': PositionKind(table=True, rotary=False),
    'rope': PositionKind(table=False, rotary=True),
}

# Per-layer activation rematerialization: name -> jax.checkpoint policy ('none': no remat;
# 'full': save nothing, recompute the whole block in the backward pass).
REMAT_POLICIES: dict[str, Callable | None] = {
    'none': None,
    'full': None,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def mlp_for_hf(activation: str, gated: bool) -> str | None:
  """The MLP kind whose activation Hugging Face calls `activation`, gated or not; None if none."""
  for name, kind in MLPS.items():
    if kind.gated == gated and activation in kind.hf_activations:
      return name
  return None
