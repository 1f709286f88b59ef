"""A real IsoFLOP sweep that finishes on a 2-core laptop CPU: byte-level models on pystdlib.

Three compute budgets (1e12, 3e12, 1e13 FLOPs) x the ladder sizes from 32x1 to 192x4
(22K to 1.8M parameters) that get 0.4 to 700 tokens per parameter within each budget:
14 trials, 6.9e13 FLOPs in all. All trials share the data order (data.seed), so their
differences come from N and D alone; each cosine schedule spans its own trial.

Run, then fit and report:
  python -m llmjax.sweep --config experiments/scaling/cpu_small.py --workdir runs/cpu_small
  python -m llmjax.scaling report runs/cpu_small
List the trials with their size and cost first: add --dry_run.

Variant `mup` (experiments/scaling/cpu_small.py:mup): the same trials under muP with base
width 32 (the smallest size), an untied head that starts at 0, and one LR tuned at the base
width (the optimum of mup's 32-wide curve in experiments/scaling/mup_transfer.py: same
data, shorter context) for every size, instead of one fixed LR that is only right for one
width. How the fitted exponents change against the fixed-LR sweep has not been measured
(the sweep takes about an hour on this CPU): run both and compare their reports.
"""

from llmjax import configs
from llmjax.scaling import grids

SIZES = [(32, 1), (48, 2), (64, 2), (96, 3), (128, 4), (192, 4)]  # (d_model, num_layers)
BUDGETS = [1e12, 3e12, 1e13]  # training FLOPs C, by llmjax.flops


def get_config(variant: str = ''):
  if variant not in ('', 'mup'):
    raise ValueError(f'unknown variant {variant!r}; known: mup')
  config = configs.defaults()
  config.model.vocab_size = 257  # V: 256 bytes and end-of-text
  config.model.max_len = 256  # context length
  config.model.dtype = 'bfloat16'  # compute; parameters and the loss stay float32
  config.model.scan_layers = False  # a few layers unroll cheaply; faster on CPU
  config.data.source = 'pystdlib'
  config.data.seq_len = 256  # T
  config.data.global_batch_size = 16  # B: 4,096 tokens per step
  config.optim.lr = 3e-3  # one peak learning rate for every size
  config.optim.schedule = 'cosine'  # over each trial's own steps
  config.train.log_every = 20
  config.train.eval_every = 100_000  # only the final evaluation, on the whole held-out split
  config.train.sample_tokens = 0
  config.checkpoint.every_minutes = 2.0  # resumable; plus the last step
  config.checkpoint.keep_log_spaced = False
  if variant == 'mup':
    config.model.parametrization = 'mup'
    config.model.mup_base_width = 32  # the smallest size of the ladder below
    config.model.tie_embeddings = False
    config.model.mup_readout_zero_init = True
    config.optim.lr = 2.0**-6  # mup's optimum at width 32 (mup_transfer.py); every width
  return config


def get_sweep(variant: str = ''):
  config = get_config(variant)
  sizes = grids.model_sizes(SIZES)  # model shape fields only, by the ladder rule
  return grids.isoflop(config, BUDGETS, sizes, min_steps=50, tokens_per_param=(0.4, 700))
