"""The default experiment: a byte-level Llama-style LM on the Python standard library.

A 0.9M-parameter model (D=128, L=4, RoPE, RMSNorm, SwiGLU, tied embeddings) trained
for 500 steps of 32 x 256 bytes (4.1M tokens) with AdamW and a cosine schedule.

Run (2-core CPU, no accelerator):
  python -m llmjax.main --config experiments/base.py --workdir runs/base
Result (measured 2026-11-30, 2-core Xeon, JAX 0.10.2): 7 minutes wall clock in
all, about 9,800 tokens/s (22-25% MFU against a measured ~300 GFLOP/s float32
matmul peak); held-out loss 1.326 nats/token (1.913 bits/byte) on the whole
held-out split (1% of the stdlib's bytes, a seeded sample of whole files);
final train loss 1.18; 12 checkpoints, each blocking the loop for ~0.04 s.
Smoke-test variant (seconds): --config experiments/base.py:tiny
"""

from llmjax import configs


def get_config(variant: str = ''):
  config = configs.defaults()
  config.model.vocab_size = 257  # V: 256 bytes and end-of-text
  config.model.d_model = 128  # D
  config.model.num_layers = 4  # L
  config.model.num_heads = 4  # N
  config.model.num_kv_heads = 4  # K
  config.model.mlp_dim = 384  # F (SwiGLU: three D x F matrices)
  config.model.max_len = 256  # context length
  config.model.dtype = 'bfloat16'  # compute; parameters and the loss stay float32
  config.model.scan_layers = False  # 4 layers unroll cheaply; the loop is faster on CPU
  config.data.seq_len = 256  # T
  config.data.global_batch_size = 32  # B
  config.optim.lr = 3e-3  # peak learning rate
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 50
  config.train.steps = 500
  config.train.log_every = 25
  config.train.eval_every = 250
  config.checkpoint.every_steps = 100  # plus steps 1, 2, 4, ... and the last
  if variant == 'tiny':  # seconds on a CPU: for smoke tests
    config.model.d_model = 32
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.num_kv_heads = 2
    config.model.mlp_dim = 64
    config.data.seq_len = 64
    config.data.global_batch_size = 8
    config.optim.warmup_steps = 5
    config.train.steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.eval_batches = 2
    config.train.sample_tokens = 20
  return config
