"""A cluster-scale IsoFLOP sweep in the manner of Chinchilla (Hoffmann et al. 2022, Approach 2).

Five budgets from 1e18 to 1e20 FLOPs x ladder models from 10M to 1.2B non-embedding
parameters (each budget keeps the sizes that get 2 to 400 tokens per parameter),
Llama-style, GPT-2's 50,257-token BPE, C4, sequence length 2048, 256 sequences
(0.5M tokens) per step, fsdp over all devices. Not run in CI; the tests check that
every trial builds and that its model shapes evaluate.

Needs C4 prepared for TFDS (`tfds build c4/en` or a copied data_dir) and GPT-2's
tokenizer.json in a folder given by --config.data.tokenizer=hf:PATH. On a cluster,
one job per trial (launch/): e.g. a SLURM array over `--trial_index`:
  python -m llmjax.sweep --config experiments/scaling/chinchilla.py --workdir gs://.../chin \
      --trial_index $SLURM_ARRAY_TASK_ID
See the trials: python -m llmjax.sweep --config experiments/scaling/chinchilla.py --dry_run
"""

from llmjax import configs
from llmjax.scaling import grids

SIZES = ['ladder-384x6', 'ladder-512x8', 'ladder-640x10', 'ladder-768x12', 'ladder-1024x16',
         'ladder-1536x20', 'ladder-2048x24']
BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20]  # training FLOPs C, by llmjax.flops


def get_config(variant: str = ''):
  del variant
  config = configs.defaults()
  config.model.vocab_size = 50304  # GPT-2's 50,257 tokens, padded to a multiple of 128
  config.model.max_len = 2048
  config.model.dtype = 'bfloat16'  # compute; parameters, optimizer and loss stay float32
  config.model.scan_layers = True  # compile time independent of depth
  config.model.remat = 'dots_with_no_batch_dims_saveable'
  config.model.tie_embeddings = False
  config.data.source = 'tfds:c4/en:3.1.0'
  config.data.tokenizer = 'hf:tokenizers/gpt2'  # folder with GPT-2's tokenizer.json
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.seq_len = 2048  # T
  config.data.global_batch_size = 256  # B: 0.5M tokens per step
  config.optim.lr = 2e-3  # peak; decays by cosine over each trial's own steps
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 0.1
  config.mesh.data = 1
  config.mesh.fsdp = -1  # all devices: parameters and optimizer state sharded
  config.train.log_every = 50
  config.train.eval_every = 1000
  config.train.eval_batches = 20  # intermediate evals; the final one covers 20 batches too
  config.checkpoint.every_minutes = 30.0
  return config


def get_sweep(variant: str = ''):
  config = get_config(variant)
  return grids.isoflop(config, BUDGETS, grids.model_sizes(SIZES), min_steps=200,
                       tokens_per_param=(2, 400))
