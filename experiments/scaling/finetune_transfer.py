"""Fine-tuning transfer: how fine-tuned accuracy scales with pretraining compute, per amount
of fine-tuning data. One sweep pretrains byte-level models of several sizes on pystdlib,
then fine-tunes each checkpoint to classify the built-in code_classify task (a standard-
library function from a library module or a test file) on 50, 200 and 800 examples.

Pretraining trials (named by size, e.g. 48x2) train 20 tokens per parameter each, so C
grows with N^2: 32x1, 48x2 and 64x2 (22K-123K parameters) at 1e11-2.8e12 FLOPs. Each
fine-tune trial (e.g. 48x2_ft200) starts from its size's trial (init_from='trial:48x2',
resolved by the sweep runner once that trial is done), trains a classify head on the
first `finetune.max_examples` training examples, batch 16, for 40 steps or 2 epochs,
whichever is longer (50 and 200 examples: 40 steps, 13 and 3 epochs; 800: 100 steps), and
is scored on code_classify's 34 balanced held-out
examples (eval/acc, eval/f1_macro with bootstrap SEs; chance 0.5). Its tags carry the
checkpoint's size and pretraining compute (pretrain_C) and the example count; the results
table gets them as columns, and the report fits the error rate 1 - acc as a power law in
pretraining C per example count (llmjax.scaling.finetune_transfer).

Run, then report:
  python -m llmjax.sweep --config experiments/scaling/finetune_transfer.py --workdir runs/ftt
  python -m llmjax.scaling report runs/ftt
Variant `tiny` (2 sizes x 2 example counts, seconds per trial): the end-to-end test.

Result (measured 2026-12-02, 2-core CPU shared with another sweep at load ~7; 12 trials,
8.6 minutes of trial wall time, the sweep about 9 minutes): pretraining eval loss 3.11,
2.30, 1.74 nats/token at 9.9e10, 7.0e11, 2.8e12 FLOPs. Held-out accuracy of the fine-tunes
(± bootstrap SE ~0.08 on 34 examples; chance 0.5), by checkpoint 32x1 / 48x2 / 64x2:
   50 examples   0.618 / 0.529 / 0.618   a = +0.007 [-0.46, 0.23]
  200 examples   0.500 / 0.676 / 0.647   a = -0.112 [-0.45, 0.21]
  800 examples   0.765 / 0.706 / 0.765   a = +0.008 [-0.71, 0.30]
(a: the exponent of 1 - acc in pretraining C, with its 95% interval). Fine-tune data is
resolved (800 examples beat 50 by ~0.15 at every checkpoint); pretraining compute is not:
every exponent's interval holds 0, and 1.5 decades of C on 22K-123K-parameter models move
the accuracy by less than the 34-example held-out set can measure (macro-F1 alike). A
finding needs larger checkpoints (the cluster's) or a larger held-out set. The report's
IsoFLOP side fits Approach 1 only, whose a = b = 0.52 restates the ladder's fixed 20 tokens
per parameter (Approaches 2 and 3 are skipped with their reasons).
"""

import math

from llmjax import configs
from llmjax.scaling import grids

SIZES = [(32, 1), (48, 2), (64, 2)]  # (d_model, num_layers) of the pretrained checkpoints
TOKENS_PER_PARAM = 20  # pretraining tokens per parameter (total N)
EXAMPLES = [50, 200, 800]  # finetune.max_examples of the fine-tunes of each checkpoint
# Fine-tune steps: at least MIN_FINETUNE_STEPS (the head needs them however few the
# examples), and enough for EPOCHS passes over the largest example counts, so that more data
# is more data seen, not data left unread.
MIN_FINETUNE_STEPS = 40
EPOCHS = 2
# code_classify's held-out examples are balanced over its two labels: a random guess
# scores 0.5 accuracy (and 0.5 macro-F1 in expectation).
CHANCE = 0.5
TINY = {'sizes': [(32, 1), (48, 1)], 'tokens_per_param': 2, 'examples': [16, 64],
        'min_finetune_steps': 8}


def get_config(variant: str = ''):
  if variant not in ('', 'tiny'):
    raise ValueError(f'unknown variant {variant!r}; known: tiny')
  config = configs.defaults()
  config.model.vocab_size = 257  # V: 256 bytes and end-of-text
  config.model.max_len = 256  # context length
  config.model.dtype = 'bfloat16'  # compute; parameters and the loss stay float32
  config.model.scan_layers = False  # a few layers unroll cheaply; faster on CPU
  config.data.source = 'pystdlib'
  config.data.seq_len = 256  # T: pretraining rows, and fine-tune rows (examples cut left)
  config.data.global_batch_size = 16  # B: 4,096 tokens per step
  config.optim.lr = 3e-3  # pretraining peak learning rate (cpu_small's)
  config.optim.schedule = 'cosine'  # over each trial's own steps
  config.train.log_every = 20
  config.train.eval_every = 100_000  # only the final evaluation
  config.train.eval_batches = 16  # pretraining: 16 held-out rows x 16; fine-tunes: all 34
  config.train.sample_tokens = 0
  config.checkpoint.every_minutes = 2.0  # resumable; plus the last step
  config.checkpoint.keep_log_spaced = False
  if variant == 'tiny':
    config.model.max_len = 64
    config.data.seq_len = 64
    config.data.global_batch_size = 8
    config.train.log_every = 4
  return config


def _settings(variant: str) -> dict:
  if variant == 'tiny':
    return TINY
  return {'sizes': SIZES, 'tokens_per_param': TOKENS_PER_PARAM, 'examples': EXAMPLES,
          'min_finetune_steps': MIN_FINETUNE_STEPS}


def _pretrain(base, size: grids.Trial, tokens_per_param: float) -> grids.Trial:
  """One size trained for tokens_per_param x its parameters."""
  n = grids.describe(base, size)['N']
  steps = grids.steps_for_tokens(base, tokens_per_param * n)
  overrides = {**size.overrides, 'train.steps': steps,
               'optim.warmup_steps': max(1, steps // 10)}
  return grids.Trial(size.name, overrides, dict(size.tags))


def _finetune(base, pretrained: grids.Trial, examples: int, min_steps: int) -> grids.Trial:
  """A classify fine-tune of `pretrained`'s final checkpoint on `examples` examples; the
  settings of experiments/finetune/common.py (whole packed examples, cut at the left)."""
  steps = max(min_steps, math.ceil(EPOCHS * examples / base.data.global_batch_size))
  shape = {k: v for k, v in pretrained.overrides.items() if k.startswith('model.')}
  overrides = {
      **shape, 'init_from': f'trial:{pretrained.name}',
      'finetune.task': 'classify', 'finetune.train_data': 'builtin:code_classify',
      'finetune.max_examples': examples, 'finetune.truncate': 'left',
      'finetune.predictions': 0, 'data.packing': 'first_fit', 'optim.lr': 1e-3,
      'optim.warmup_steps': max(1, steps // 8), 'train.steps': steps,
      'checkpoint.every_minutes': 0.0, 'checkpoint.every_steps': steps}
  tags = {'size': pretrained.name, 'pretrain_C': grids.describe(base, pretrained)['C'],
          'finetune_max_examples': examples, 'chance': CHANCE}
  return grids.Trial(f'{pretrained.name}_ft{examples}', overrides, tags)


def get_sweep(variant: str = ''):
  """The pretraining trials first (the runner checks that sources come earlier), then
  each checkpoint's fine-tunes."""
  config, settings = get_config(variant), _settings(variant)
  pretrained = [_pretrain(config, size, settings['tokens_per_param'])
                for size in grids.model_sizes(settings['sizes'])]
  finetunes = [_finetune(config, p, n, settings['min_finetune_steps'])
               for p in pretrained for n in settings['examples']]
  return pretrained + finetunes
