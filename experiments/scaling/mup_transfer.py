"""Learning-rate transfer across width: widths x a log2 LR grid x {sp, mup}.

Every trial is a ladder shape (llmjax.model.config.ladder_shape) of depth 2 with an untied
head, trained on the same data in the same order. Under sp the best LR falls as the width
grows (Adam moves every weight by ~lr whatever its fan-in); under mup (base width 32, the
readout zero-initialized) it should stay put, so the LR tuned at the smallest width is the
LR of every width.

  python -m llmjax.sweep --config experiments/scaling/mup_transfer.py:cpu --workdir runs/mupt
  python -m llmjax.scaling report runs/mupt     # loss vs log2(lr) per width, optimum per width
Variants: (none) the CPU grid below; cpu: the same; tiny: 2 widths x 2 LRs x {sp, mup} of
a few steps (a smoke run); gpu: widths 256..2048 at depth 4, 2,000 steps of 64 x 256
tokens (one NVIDIA GPU).

Measured (CPU variant: widths 32 and 128, log2 lr -10..-4, 150 steps of 16 x 64 bytes of
pystdlib, 28 trials, 2-core Xeon shared with other jobs, 2026-12-02, about 45 minutes):
  best log2(lr), parabola fit [95% bootstrap]   width 32              width 128
  sp                                            -6.69 [-6.87, -6.47]  -8.09 [-8.22, -7.98]
  mup                                           -6.08 [-7.00, -5.74]  -5.75 [-5.77, -5.74]
  slope of log2(lr*) against log2(width): sp -0.70, mup +0.16; grid optimum moves one
  step down under both (sp -7 -> -8, mup -5 -> -6; mup's 32-wide curve is flat from -7 to
  -5). Best held-out loss: sp 2.577 / 2.424, mup 2.758 / 2.488 nats/token (the zero
  readout costs the short runs some loss at every LR). The GPU variant has not been run.
"""

from llmjax import configs
from llmjax.model.config import ladder_shape
from llmjax.scaling import grids

BASE_WIDTH = 32  # muP base: the smallest width, where mup equals sp
VARIANTS = {
    # widths, log2 learning rates, depth, steps, batch, sequence length
    'cpu': dict(widths=(32, 128), log2_lrs=range(-10, -3), depth=2, steps=150,
                batch=16, seq_len=64),
    'tiny': dict(widths=(32, 64), log2_lrs=(-8, -6), depth=1, steps=4, batch=4, seq_len=32),
    'gpu': dict(widths=(256, 512, 1024, 2048), log2_lrs=range(-12, -4), depth=4, steps=2000,
                batch=64, seq_len=256),
}


def _variant(variant: str) -> dict:
  name = variant or 'cpu'
  if name not in VARIANTS:
    raise ValueError(f'unknown variant {variant!r}; known: {", ".join(VARIANTS)}')
  return VARIANTS[name]


def get_config(variant: str = ''):
  v = _variant(variant)
  config = configs.defaults()
  config.model.vocab_size = 257  # V: 256 bytes and end-of-text
  config.model.max_len = v['seq_len']
  config.model.tie_embeddings = False  # an untied readout: muP's output rules apply cleanly
  config.model.scan_layers = False  # a few layers unroll cheaply; faster on CPU
  config.data.source = 'pystdlib'
  config.data.seq_len = v['seq_len']  # T
  config.data.global_batch_size = v['batch']  # B
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = max(1, v['steps'] // 10)
  config.optim.weight_decay = 0.0  # LR alone moves the optimum
  config.train.steps = v['steps']
  config.train.log_every = max(1, v['steps'] // 10)
  config.train.eval_every = 100_000  # only the final evaluation
  config.train.sample_tokens = 0
  config.checkpoint.every_minutes = 0.0
  config.checkpoint.keep_log_spaced = False
  if variant == 'tiny':
    config.data.source = 'synthetic:vocab=64,branching=4,alpha=0.5,seed=0,doc_len=64'
    config.model.vocab_size = 65
    config.train.eval_batches = 2
  if variant == 'gpu':
    config.model.dtype = 'bfloat16'
  return config


def _parametrizations() -> list[grids.Trial]:
  # Under sp the mup fields stay at their defaults (validation refuses them there).
  return [grids.Trial('sp', {'model.parametrization': 'sp', 'model.mup_base_width': 0},
                      {'parametrization': 'sp'}),
          grids.Trial('mup', {'model.parametrization': 'mup',
                              'model.mup_base_width': BASE_WIDTH,
                              'model.mup_readout_zero_init': True},
                      {'parametrization': 'mup'})]


def get_sweep(variant: str = ''):
  v = _variant(variant)
  widths = [grids.Trial(f'w{d}', {f'model.{k}': val for k, val in
                                  ladder_shape(d, v['depth']).items()}, {'width': d})
            for d in v['widths']]
  lrs = grids.grid('optim.lr', [2.0**e for e in v['log2_lrs']])
  return grids.cross(_parametrizations(), widths, lrs)

