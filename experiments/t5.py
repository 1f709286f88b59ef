"""A byte-level T5 (v1.1 layout) trained by span corruption on the Python standard library.

An encoder-decoder: 3 encoder and 3 decoder blocks of width 128 with T5's relative position
bias (one table per stack, 32 buckets up to 128 apart), no score scaling (folded into the
query's init), RMSNorm, no biases, gated GELU and an untied head. Each row holds 256 encoder
bytes: pieces of 284 bytes of a document with 15% of them dropped in 14 spans of mean length
3, each span replaced by one sentinel (ids 257..270, past the byte tokenizer's); the decoder
predicts the 58-token target (each sentinel, then its span, then end-of-text). Pieces are
packed whole (first_fit), and a decoder segment reads only its own encoder segment. The
loss and eval/loss are nats per target token; eval/bits_per_byte counts the dropped bytes.

Run (2-core CPU, no accelerator):
  python -m llmjax.main --config experiments/t5.py --workdir runs/t5
Result (measured 2026-12-02, 2-core Xeon shared with other jobs at load 3-10, JAX 0.10.2):
1,398,912 parameters, 300 steps in 6.6 minutes of training (1.0-1.5 s/step, 7 minutes from
the command); held-out target loss 2.891 nats at step 150 and 2.676 at step 300 (uniform
over the 271 ids: 5.60), target-token accuracy 0.296 and 0.328; final train loss 2.66.
eval/bits_per_byte (5.21) counts the dropped bytes only (sentinels and end-of-text have
none): not a compression rate. That run logged MFU 45%, dividing the per-target-token FLOPs
(flops.py) by encoder tokens per second; the loop now counts target tokens, which gives
256/58 times less, about 10%.
Smoke-test variant (seconds): --config experiments/t5.py:tiny
"""

from llmjax import configs


def get_config(variant: str = ''):
  config = configs.defaults()
  config.model.arch = 'encoder_decoder'
  config.model.vocab_size = 271  # V: 256 bytes, end-of-text, 14 sentinels
  config.model.d_model = 128  # D
  config.model.num_layers = 3  # the encoder's blocks
  config.model.num_decoder_layers = 3  # the decoder's blocks
  config.model.num_heads = 4  # N
  config.model.num_kv_heads = 4  # K
  config.model.head_dim = 32  # H
  config.model.mlp_dim = 320  # F (three D x F matrices: gated)
  config.model.max_len = 256  # longest encoder row
  config.model.positions = 'relative'  # T5's bucketed bias
  config.model.scale_scores = False  # T5: no 1/sqrt(H) on the scores
  config.model.norm = 'rmsnorm'
  config.model.mlp = 'geglu'  # T5 v1.1's gated GELU
  config.model.tie_embeddings = False  # T5 v1.1's untied head
  config.model.dtype = 'float32'  # on this CPU XLA's float32 step is faster than bfloat16
  config.model.scan_layers = False
  config.data.objective = 'span'
  config.data.packing = 'first_fit'  # whole examples: an input with its targets
  config.data.noise_density = 0.15
  config.data.mean_span = 3.0
  config.data.seq_len = 256  # encoder tokens per row (targets: 58)
  config.data.global_batch_size = 32  # B
  config.optim.lr = 3e-3  # peak learning rate
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 50
  config.train.steps = 300
  config.train.log_every = 25
  config.train.eval_every = 150
  config.checkpoint.every_steps = 100
  if variant == 'tiny':  # seconds on a CPU: for smoke tests
    config.model.vocab_size = 260  # 3 sentinels for rows of 64
    config.model.d_model = 32
    config.model.num_layers = 1
    config.model.num_decoder_layers = 2
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
