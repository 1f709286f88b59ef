"""Parameter counts, model FLOPs per token, device peak FLOP/s and MFU.

Convention (PaLM, Appendix B; also nanoGPT and nanodo):
  training FLOPs per token = 6 * N_matmul + 12 * L * T * N * H
where N_matmul counts the weights of every matrix multiply (attention and MLP
projections of all layers, plus the D x V output head, tied or not) and the
second term is the attention scores and weighted values (QK^T and AV, 2 FLOPs
per multiply-add, forward 4*T*N*H per layer, backward twice that) over the full
context T, with no discount for the causal mask (as computed by dense kernels).
Embedding lookups, norms, activations and softmax are not counted. The factor 3
(forward + 2x backward) is exact for matmuls; rematerialization is not counted
(MFU, not hardware FLOP utilization).
"""

import time

import jax
import jax.numpy as jnp

from llmjax.model.config import ModelConfig


def _layer_matmul_params(cfg: ModelConfig) -> int:
  d, n, k, h, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  attention = d * n * h + 2 * d * k * h + n * h * d
  mlp = (3 if cfg.mlp == 'swiglu' else 2) * d * f
  return attention + mlp


def _layer_vector_params(cfg: ModelConfig) -> int:
  d, n, k, h, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  norm_width = 2 if cfg.norm == 'layernorm' else 1  # scale (and bias)
  count = 2 * d * norm_width
  if cfg.qk_norm:
    count += 2 * h * norm_width
  if cfg.use_bias:
    count += n * h + 2 * k * h + d + f + d
  return count


def param_counts(cfg: ModelConfig) -> dict[str, int]:
  """Closed-form parameter counts: total, non-embedding (Kaplan's N), and embedding."""
  d, v = cfg.d_model, cfg.vocab_size
  embedding = v * d + (cfg.max_len * d if cfg.positions == 'learned' else 0)
  head = 0 if cfg.tie_embeddings else d * v
  final_norm = d * (2 if cfg.norm == 'layernorm' else 1)
  layers = cfg.num_layers * (_layer_matmul_params(cfg) + _layer_vector_params(cfg))
  non_embedding = layers + final_norm
  return {'total': embedding + head + non_embedding, 'non_embedding': non_embedding,
          'embedding': embedding + head}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward), by the convention above."""
  matmul_params = cfg.num_layers * _layer_matmul_params(cfg) + cfg.d_model * cfg.vocab_size
  attention = 12 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
  return 6.0 * matmul_params + attention


# Dense bf16 peak FLOP/s per chip, from vendors' datasheets (no sparsity).
_PEAK_FLOPS = {
    'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L4': 121e12, 'A10': 125e12,
    'V100': 125e12, 'B200': 2250e12,
    'TPU v6': 918e12, 'TPU v5p': 459e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
    'TPU v4': 275e12, 'TPU v3': 123e12,
}


def device_peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak FLOP/s of one accelerator from the table; None when not listed (CPU)."""
  device = device or jax.devices()[0]
  kind = device.device_kind
  for name, peak in _PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return peak
  return None


def measure_matmul_flops(n: int = 1024, repeats: int = 10) -> float:
  """FLOP/s of a float32 n x n matmul on the default device (the CPU's usable peak)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def peak_flops_per_device(configured: float) -> tuple[float, str]:
  """(peak FLOP/s per device, where it came from): config, datasheet or a measurement."""
  if configured > 0:
    return configured, 'config'
  peak = device_peak_flops()
  if peak is not None:
    return peak, 'datasheet'
  return measure_matmul_flops(), 'measured'


def mfu(tokens_per_s: float, flops_per_tok: float, peak_total: float) -> float:
  """Model FLOPs utilization: achieved model FLOP/s over the mesh's peak."""
  return tokens_per_s * flops_per_tok / peak_total
