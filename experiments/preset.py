"""A named model preset (llmjax/model/config.py PRESETS) on the default data and training.

For sizing a model on a target pod without one, e.g. the train step of Llama 3.2
1B on 64 chips sharded 16-way FSDP x 4-way tensor, compiled on a CPU:
  python -m llmjax.main --config experiments/preset.py:llama3.2-1b --compile_only \
      --num_fake_devices=64 --config.mesh.fsdp=16 --config.mesh.tensor=4
Result (measured 2026-11-30, 2-core Xeon, JAX 0.10.2): compiles in ~20 s (25 s
wall clock in all); 1,498,482,688 parameters (untied 128k vocabulary); per device
0.087 GiB of parameters, 0.174 GiB of optimizer state, 13.2 GiB of activations
and temporaries for its 16 x 2048 tokens (XLA:CPU's estimate), 13.5 GiB at peak.
Training runs use the same file with a real mesh and data (launch/).
"""

from llmjax import configs


def get_config(preset: str = 'llama3.2-1b'):
  config = configs.defaults()
  config.model.preset = preset  # every model field from the preset; set one to override it
  config.model.dtype = 'bfloat16'  # compute; parameters and the loss stay float32
  config.model.remat = 'full'  # recompute each layer's activations in the backward pass
  config.data.seq_len = 2048  # T
  config.data.global_batch_size = 256  # B: 0.5M tokens per step
  config.optim.lr = 3e-4  # peak learning rate
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 2000
  config.train.steps = 100_000
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.checkpoint.every_minutes = 30.0  # plus steps 1, 2, 4, ... and the last
  return config
