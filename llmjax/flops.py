"""Parameter counts, model FLOPs per token, device peak FLOP/s and MFU.

Convention (PaLM, Appendix B; also nanoGPT and nanodo):
  training FLOPs per token = 6 * N_matmul + 12 * L * T * N * H
where N_matmul counts the weights of every matrix multiply (attention and MLP
projections of all layers, plus the D x V output head, tied or not, and an encoder's
D x D masked-LM transform) and the
second term is the attention scores and weighted values (QK^T and AV, 2 FLOPs
per multiply-add, forward 4*T*N*H per layer, backward twice that) over the full
context T, with no discount for the causal mask (as computed by dense kernels).
An encoder-decoder counts per target token: the encoder's parameters times its input
tokens, the decoder's times its target tokens (cross-attention's keys and values times the
input tokens they are computed from), attention over S x S, T x T and T x S, divided by T.
Embedding lookups, norms, activations and softmax are not counted. The factor 3
(forward + 2x backward) is exact for matmuls; rematerialization is not counted
(MFU, not hardware FLOP utilization).
"""

import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

from llmjax.data import objectives
from llmjax.model import options
from llmjax.model.config import ModelConfig


def _norm_width(cfg: ModelConfig) -> int:
  return 2 if options.NORMS[cfg.norm].bias else 1  # scale (and bias) per feature


def _attention_matmul_params(cfg: ModelConfig) -> int:
  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  return d * n * h + 2 * d * k * h + n * h * d


def _layer_matmul_params(cfg: ModelConfig) -> int:
  mlp = (3 if options.MLPS[cfg.mlp].gated else 2) * cfg.d_model * cfg.mlp_dim
  return _attention_matmul_params(cfg) + mlp


def _attention_vector_params(cfg: ModelConfig) -> int:
  """An attention sublayer's vectors: its norm, qk norms and biases."""
  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  norm_width = _norm_width(cfg)
  count = d * norm_width
  if cfg.qk_norm:
    count += 2 * h * norm_width
  if cfg.use_bias or cfg.qkv_bias:
    count += n * h + 2 * k * h
  if cfg.use_bias:
    count += d
  return count


def _layer_vector_params(cfg: ModelConfig) -> int:
  mlp = cfg.d_model * _norm_width(cfg) + (cfg.mlp_dim + cfg.d_model if cfg.use_bias else 0)
  return _attention_vector_params(cfg) + mlp


def stack_params(cfg: ModelConfig) -> dict[str, int]:
  """Parameters of each stack's blocks: 'decoder' (the stack that makes the logits, with its
  cross-attention in an encoder-decoder) and 'encoder' (0 unless an encoder-decoder)."""
  layer = _layer_matmul_params(cfg) + _layer_vector_params(cfg)
  if not options.ARCHITECTURES[cfg.arch].cross_attention:
    return {'decoder': cfg.num_layers * layer, 'encoder': 0}
  cross = _attention_matmul_params(cfg) + _attention_vector_params(cfg)
  return {'decoder': cfg.decoder_layers * (layer + cross), 'encoder': cfg.num_layers * layer}


def param_counts(cfg: ModelConfig) -> dict[str, int]:
  """Closed-form parameter counts: total, non-embedding (Kaplan's N), and embedding."""
  d, v = cfg.d_model, cfg.vocab_size
  embedding = v * d + (cfg.max_len * d if options.POSITIONS[cfg.positions].table else 0)
  head = 0 if cfg.tie_embeddings else d * v
  embedding += d * _norm_width(cfg) if cfg.embed_norm else 0
  final_norm = d * _norm_width(cfg) if cfg.norm_position == 'pre' else 0
  stacks = stack_params(cfg)
  if stacks['encoder']:
    final_norm += d * _norm_width(cfg)  # the encoder's
  if options.POSITIONS[cfg.positions].relative:  # a bucket x head table per stack
    embedding += (2 if stacks['encoder'] else 1) * cfg.relative_buckets * cfg.num_heads
  non_embedding = stacks['decoder'] + stacks['encoder'] + final_norm
  if options.ARCHITECTURES[cfg.arch].masked_lm_head:  # D x D, its bias and norm; a V bias
    non_embedding += d * d + d + d * _norm_width(cfg)
    head += v
  return {'total': embedding + head + non_embedding, 'non_embedding': non_embedding,
          'embedding': embedding + head}


def span_target_length(seq_len: int) -> int:
  """The decoder's row length of an encoder-decoder trained on `seq_len` encoder tokens by
  T5's default span corruption (noise density 0.15, mean span 3)."""
  return objectives.SpanCorruption((), 0).span_lengths(seq_len)[1]


def _encoder_decoder_flops(cfg: ModelConfig, seq_len: int, target_len: int) -> float:
  """Training FLOPs per target token of an encoder-decoder: per row, the encoder's matmuls
  over its S = seq_len tokens, the decoder's over its T = target_len tokens, except the
  cross-attention keys and values (computed from the S encoder tokens), the head over T,
  and attention: S x S in the encoder, T x T (self) and T x S (cross) in the decoder."""
  s, t, nh = seq_len, target_len, cfg.num_heads * cfg.head_dim
  cross = _attention_matmul_params(cfg)
  cross_kv = 2 * cfg.d_model * cfg.num_kv_heads * cfg.head_dim
  encoder = cfg.num_layers * (6 * _layer_matmul_params(cfg) * s + 12 * s * s * nh)
  decoder = cfg.decoder_layers * (6 * (_layer_matmul_params(cfg) + cross - cross_kv) * t
                                  + 6 * cross_kv * s + 12 * t * t * nh + 12 * t * s * nh)
  return (encoder + decoder + 6 * cfg.d_model * cfg.vocab_size * t) / t


def flops_per_token(cfg: ModelConfig, seq_len: int, target_len: int | None = None) -> float:
  """Training FLOPs per token (forward + backward), by the convention above. For an
  encoder-decoder, per target token (the tokens its loss counts) of rows of `seq_len`
  encoder and `target_len` decoder tokens (default: T5's span-corruption arithmetic)."""
  if options.ARCHITECTURES[cfg.arch].cross_attention:
    return _encoder_decoder_flops(cfg, seq_len, target_len or span_target_length(seq_len))
  matmul_params = cfg.num_layers * _layer_matmul_params(cfg) + cfg.d_model * cfg.vocab_size
  if options.ARCHITECTURES[cfg.arch].masked_lm_head:
    matmul_params += cfg.d_model * cfg.d_model  # the masked-LM head's transform
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


def measure_matmul_flops(dtype: str = 'float32', n: int = 1024, trials: int = 10,
                         trial_s: float = 0.2) -> float:
  """FLOP/s of n x n matmuls in `dtype` on the default device (the CPU's usable peak): the
  best of `trials` trials, each as many back-to-back matmuls as fill `trial_s` seconds, so
  one quiet moment on a shared machine is enough and a single slow call is not."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  start = time.perf_counter()
  f(a, a).block_until_ready()
  calls = max(1, int(trial_s / max(time.perf_counter() - start, 1e-6)))
  best = float('inf')
  for _ in range(trials):
    start = time.perf_counter()
    for _ in range(calls):
      out = f(a, a)
    out.block_until_ready()
    best = min(best, (time.perf_counter() - start) / calls)
  return 2 * n**3 / best


def machine_key() -> str:
  """What a measured peak depends on: the CPU model, its core count, the JAX version and the
  number of devices JAX splits the CPU into (--xla_force_host_platform_device_count)."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      model = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), model)
  except OSError:  # not Linux
    pass
  return (f'{model} | {os.cpu_count()} cores | jax {jax.__version__} | '
          f'{jax.device_count()} {jax.default_backend()} devices')


CACHE_VAR = 'LLMJAX_PEAK_CACHE'  # another cache file (the tests keep their own)


def default_cache_path() -> pathlib.Path:
  if os.environ.get(CACHE_VAR):
    return pathlib.Path(os.environ[CACHE_VAR])
  home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(home) / 'llmjax' / 'peak_flops.json'


def _read_table(path: pathlib.Path) -> dict:
  try:
    table = json.loads(path.read_text())
  except (OSError, ValueError):  # absent or damaged: measure again
    return {}
  return table if isinstance(table, dict) else {}


def _busy_cores() -> float:
  return os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0


def cached_peak_flops(dtype: str, path: pathlib.Path | None = None,
                      measure=measure_matmul_flops, busy=None) -> tuple[float, str]:
  """(CPU matmul peak FLOP/s in `dtype`, 'cached PATH' or 'measured, cached in PATH').

  Measured once per machine (`machine_key`) and dtype, then read back, so every run and every
  trial of a sweep on this machine divides by the same peak. A measurement taken while other
  work keeps over half the cores busy (load average) is used but not cached: it would
  understate the peak for every later run. An unreadable cache is measured again and
  rewritten; an unwritable one only costs the next run a measurement."""
  path = path or default_cache_path()
  key = machine_key()
  table = _read_table(path)
  entry = table.get(key) if isinstance(table.get(key), dict) else {}
  peak = entry.get(dtype)
  if isinstance(peak, (int, float)) and peak > 0:
    return float(peak), f'cached {path}'
  load = (busy or _busy_cores)()
  peak = measure(dtype)
  if load > (os.cpu_count() or 1) / 2:
    return peak, f'measured under load {load:.1f}, not cached'
  table[key] = {**entry, dtype: peak}
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    scratch.write_text(json.dumps(table, indent=1, sort_keys=True))
    os.replace(scratch, path)  # atomic: concurrent runs never read half a file
  except OSError:
    return peak, 'measured (cache not writable)'
  return peak, f'measured, cached in {path}'


def peak_flops_per_device(configured: float, dtype: str = 'float32') -> tuple[float, str]:
  """(peak FLOP/s per device, where it came from): the config, the datasheet, or the
  machine's cached matmul measurement in the compute dtype (CPU)."""
  if configured > 0:
    return configured, 'config'
  peak = device_peak_flops()
  if peak is not None:
    return peak, 'datasheet'
  return cached_peak_flops(dtype)


def mfu(tokens_per_s: float, flops_per_tok: float, peak_total: float) -> float:
  """Model FLOPs utilization: achieved model FLOP/s over the mesh's peak."""
  return tokens_per_s * flops_per_tok / peak_total
