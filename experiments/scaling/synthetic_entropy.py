"""An IsoFLOP sweep on a synthetic language whose entropy is known, to check the fits.

The data is a sparse random Markov chain (llmjax.data.synthetic): no model can beat its
entropy rate, so the irreducible loss E of a fitted L(N, D) = E + A/N^alpha + B/D^beta
should come out near the chain's `optimal_loss` (written in each trial's config.json
and in the results table as data_optimal_loss; the report prints both).

  python -m llmjax.sweep --config experiments/scaling/synthetic_entropy.py --workdir runs/syn
  python -m llmjax.scaling report runs/syn
The `tiny` variant (3 sizes x 2 budgets, seconds per trial) is the end-to-end test:
  python -m llmjax.sweep --config experiments/scaling/synthetic_entropy.py:tiny --workdir /tmp/s
"""

from llmjax import configs
from llmjax.scaling import sweep

SOURCE = 'synthetic:vocab=128,branching=8,alpha=0.5,seed=0,doc_len=256'


def get_config(variant: str = ''):
  config = configs.defaults()
  config.model.vocab_size = 129  # V: the chain's 128 states and end-of-text
  config.model.max_len = 64  # a Markov chain needs one token of context; 64 is plenty
  config.model.scan_layers = False
  config.data.source = SOURCE
  config.data.seq_len = 64  # T
  config.data.global_batch_size = 32  # B: 2,048 tokens per step
  config.optim.lr = 3e-3
  config.optim.schedule = 'cosine'
  config.train.log_every = 20
  config.train.eval_every = 100_000  # only the final evaluation (64 held-out documents)
  config.train.sample_tokens = 0
  config.checkpoint.every_minutes = 2.0
  config.checkpoint.keep_log_spaced = False
  if variant == 'tiny':
    config.data.source = SOURCE.replace('doc_len=256', 'doc_len=64')
    config.data.seq_len = 32
    config.data.global_batch_size = 8
    config.model.max_len = 32
    config.train.log_every = 10
    config.checkpoint.every_minutes = 0.0
    config.checkpoint.every_steps = 10  # mid-run checkpoints, for the resume test
  return config


def get_sweep(variant: str = ''):
  config = get_config(variant)
  if variant == 'tiny':  # 3 sizes x 2 budgets, 20 to 80 steps each
    sizes = sweep.model_sizes([(32, 1), (48, 1), (64, 1)])
    return sweep.isoflop(config, [3e9, 6e9], sizes, min_steps=20)
  sizes = sweep.model_sizes([(32, 1), (48, 2), (64, 2), (96, 3), (128, 4)])
  return sweep.isoflop(config, [3e11, 1e12, 3e12], sizes, min_steps=50,
                       tokens_per_param=(0.5, 500))
