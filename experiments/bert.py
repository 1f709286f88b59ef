"""A byte-level BERT-style encoder trained by masked LM on the Python standard library.

BERT's architecture at a 0.9M-parameter size: bidirectional attention within each packed
document, post-norm LayerNorm blocks, a norm on the embeddings, learned positions, exact
(erf) GELU, biases, and the masked-LM head (dense, GELU, LayerNorm, tied embedding, bias).
15% of the bytes are selected (80% replaced by the mask token, id 257, 10% by a random
byte, 10% kept) as a function of the seed and the document's index, so every run sees the
same masks. The loss (nats per selected token) and eval/loss count selected tokens only.

Run (2-core CPU, no accelerator):
  python -m llmjax.main --config experiments/bert.py --workdir runs/bert
Result (measured 2026-12-02, 2-core Xeon shared with other jobs at load 5-9, JAX 0.10.2):
876,162 parameters, 500 steps in 22 minutes (about 2.6 s/step at the end; base.py's decoder
takes 7 minutes on the idle machine, so expect about 10 here when idle); held-out masked-token
loss 3.020 nats at step 250 and 2.906 at step 500 (uniform over bytes: 5.55); final train
loss 2.84. eval/bits_per_byte (4.19) counts the selected bytes only: not a compression rate.
float32 compute: on this CPU the bfloat16 step was 1.23x slower (benchmarks/step_time.py).
Smoke-test variant (seconds): --config experiments/bert.py:tiny
"""

from llmjax import configs


def get_config(variant: str = ''):
  config = configs.defaults()
  config.model.arch = 'encoder'
  config.model.vocab_size = 258  # V: 256 bytes, end-of-text, and the mask token
  config.model.d_model = 128  # D
  config.model.num_layers = 4  # L
  config.model.num_heads = 4  # N
  config.model.num_kv_heads = 4  # K
  config.model.head_dim = 32  # H
  config.model.mlp_dim = 512  # F (two D x F matrices)
  config.model.max_len = 256  # context length, the size of the learned position table
  config.model.norm = 'layernorm'
  config.model.norm_position = 'post'
  config.model.embed_norm = True
  config.model.positions = 'learned'
  config.model.mlp = 'gelu_exact'
  config.model.use_bias = True
  config.model.norm_eps = 1e-12  # BERT's
  config.model.dtype = 'float32'  # on this CPU XLA's float32 step is faster than bfloat16
  config.model.scan_layers = False
  config.data.objective = 'mlm'
  config.data.mask_rate = 0.15
  config.data.seq_len = 256  # T
  config.data.global_batch_size = 32  # B
  config.optim.lr = 1e-3  # peak learning rate (post-norm wants less than base.py's 3e-3)
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 50
  config.train.steps = 500
  config.train.log_every = 25
  config.train.eval_every = 250
  config.checkpoint.every_steps = 100
  if variant == 'tiny':  # seconds on a CPU: for smoke tests
    config.model.d_model = 32
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.num_kv_heads = 2
    config.model.head_dim = 16
    config.model.mlp_dim = 64
    config.data.seq_len = 64
    config.data.global_batch_size = 8
    config.optim.warmup_steps = 5
    config.train.steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.eval_batches = 2
  return config
