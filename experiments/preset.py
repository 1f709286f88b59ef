"""A named model preset (llmjax/model/config.py PRESETS) on the default data and training.

For sizing a model on a target pod without one, e.g. the train step of Llama 3.2
1B on 64 chips sharded 16-way FSDP x 4-way tensor, compiled on a CPU:
  python -m llmjax.main --config experiments/preset.py:llama3.2-1b --compile_only \
      --num_fake_devices=64 --config.mesh.fsdp=16 --config.mesh.tensor=4
Result (measured 2026-12-02, 2-core Xeon under load 5, JAX 0.10.2): compiles in 114 s;
1,235,814,400 parameters (tied 128k vocabulary, as released); per device 73.67 MiB of
parameters, 147.34 MiB of optimizer state, 13.25 GiB of activations and temporaries for
its 16 x 2048 tokens (XLA:CPU's estimate), 13.47 GiB at peak.
Training runs use the same file with a real mesh and data (launch/).
"""

from llmjax import configs
from llmjax.model import config as model_config


def get_config(preset: str = ''):
  # Name the preset as the variant (preset.py:NAME); without one the model fields keep their
  # defaults, so every preset, llama3.2-1b included, is a variant that changes the config.
  config = configs.defaults()
  config.model.preset = preset  # every model field from the preset; set one to override it
  config.model.dtype = 'bfloat16'  # compute; parameters and the loss stay float32
  config.model.remat = 'full'  # recompute each layer's activations in the backward pass
  # T: 2048, or the preset's whole context when shorter (GPT-2: 1024; the ladder: the
  # model default); --config.data.seq_len with --config.model.max_len sets both
  config.data.seq_len = min(2048, _context(preset))
  config.data.global_batch_size = 256  # B: 0.5M tokens per step at T=2048
  config.optim.lr = 3e-4  # peak learning rate
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 2000
  config.train.steps = 100_000
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.checkpoint.every_minutes = 30.0  # plus steps 1, 2, 4, ... and the last
  return config


def _context(preset: str) -> int:
  """The preset's max_len (an unknown preset is reported by configs.build)."""
  return model_config.PRESETS.get(preset, {}).get('max_len', model_config.ModelConfig.max_len)
