"""The settings the fine-tune experiments share: runs/base's model (init_from needs its
shapes) and a short fine-tune of whole packed examples. Each experiment file loads this
file by path, as it would load experiments/base.py."""

import importlib.util
import pathlib


def load(name: str):
  """The module experiments/NAME.py (a path relative to experiments/)."""
  path = pathlib.Path(__file__).resolve().parents[1] / name
  spec = importlib.util.spec_from_file_location(f'llmjax_experiment_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def fine_tune(task: str, train_data: str, eval_tasks: str):
  """runs/base's config, fine-tuning `train_data` as `task` for 60 steps."""
  config = load('base.py').get_config()
  config.finetune.task = task
  config.finetune.train_data = train_data
  config.finetune.truncate = 'left'  # examples longer than a row keep their end
  config.data.packing = 'first_fit'  # whole examples, segment ids keep them apart
  config.data.global_batch_size = 16  # B
  config.optim.lr = 1e-3  # peak learning rate of the fine-tune
  config.optim.warmup_steps = 5
  config.train.steps = 60
  config.train.log_every = 10
  config.train.eval_every = 30
  config.eval.tasks = eval_tasks  # the built-in task's metrics on the same held-out examples
  config.checkpoint.every_steps = 60
  return config
