"""An IsoFLOP sweep on a synthetic language whose entropy is known, to check the fits.

The data is a sparse random order-2 Markov chain over 32 symbols (llmjax.data.synthetic):
1,024 contexts with 6 successors each, symbol weights (x + 1)^-0.3, so a model must
memorize about 6,000 table entries, most of them rare. No model can beat the chain's
Bayes-optimal loss (`data_info.optimal_loss`, in each trial's config.json and in the
results table as data_optimal_loss), so the irreducible loss E of a fitted
L(N, D) = E + A/N^alpha + B/D^beta should come out at it; the report says whether it does.

  python -m llmjax.sweep --config experiments/scaling/synthetic_entropy.py --workdir runs/syn
  python -m llmjax.scaling report runs/syn
The `tiny` variant (3 sizes x 2 budgets, seconds per trial) is the end-to-end test:
  python -m llmjax.sweep --config experiments/scaling/synthetic_entropy.py:tiny --workdir /tmp/s
"""

from llmjax import configs
from llmjax.scaling import sweep

# Rows are whole documents (doc_len = seq_len), so optimal_loss is exactly what a
# predictor seeing each row from its start can reach.
SOURCE = 'synthetic:vocab=32,order=2,branching=6,alpha=1.0,zipf=0.3,seed=0,doc_len=64'
SIZES = [(32, 1), (48, 1), (64, 1), (64, 2), (96, 2)]  # (d_model, num_layers)
BUDGETS = [1e11, 3e11, 1e12, 3e12]  # training FLOPs C, by llmjax.flops


def get_config(variant: str = ''):
  config = configs.defaults()
  config.model.vocab_size = 33  # V: the chain's 32 symbols and end-of-text
  config.model.max_len = 64  # an order-2 chain needs two tokens of context
  config.model.scan_layers = False
  config.data.source = SOURCE
  config.data.seq_len = 64  # T = doc_len
  config.data.global_batch_size = 32  # B: 2,048 tokens per step
  config.optim.lr = 1e-2
  config.optim.schedule = 'cosine'
  config.train.log_every = 20
  config.train.eval_every = 100_000  # only the final evaluation (64 held-out documents)
  config.train.sample_tokens = 0
  config.checkpoint.every_minutes = 2.0
  config.checkpoint.keep_log_spaced = False
  if variant == 'tiny':
    config.model.vocab_size = 129
    config.data.source = ('synthetic:vocab=128,order=1,branching=8,alpha=0.5,zipf=0,seed=0,'
                          'doc_len=32')
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
  return sweep.isoflop(config, BUDGETS, sweep.model_sizes(SIZES), min_steps=50,
                       tokens_per_param=(2, 1000))
