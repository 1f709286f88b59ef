"""Supervised fine-tuning of a base.py model on (prompt, completion) pairs: a standard-library
function's first lines -> its next line (the built-in code_next_line task's material).

finetune.task=sft: the completion is the true next line and a newline; the loss counts
completion tokens only, examples packed whole with segment ids. Training examples come from
files the pretraining split trains on (builtin_code.training_examples, 200 sampled files);
eval/loss is the completion loss on code_next_line's held-out examples, and eval.tasks scores
them as 4-way multiple choice (acc, acc_norm: the Evaluation issue's metrics). Your own data:
--config.finetune.train_data=jsonl:TRAIN --config.finetune.eval_data=jsonl:EVAL with
{"prompt", "completion"} or {"messages": [{"role", "text"}, ...]} lines.

Run (2-core CPU):
  python -m llmjax.main --config experiments/finetune/sft.py --workdir runs/sft \
      --config.init_from=runs/base
Result (measured 2026-12-02 on /work/main/runs/base, base.py at 500 steps, 2-core CPU shared
at load ~12; 60 steps of batch 16 in about 5 minutes; 6721 training examples, 200 held-out):
  completion loss (eval/loss, nats per completion token)   before 1.772, after 1.370
  eval.tasks code_next_line (4-way, chance 0.25)
      before: acc 0.350, acc_norm 0.335, task nll 1.393
      after:  acc 0.335, acc_norm 0.370, task nll 1.333
(acc moves within its standard error, ~0.034; "before": the same eval rows on runs/base's
parameters, and runs/base/eval/500.json.)
"""

import importlib.util
import pathlib


def _common():
  path = pathlib.Path(__file__).resolve().parent / 'common.py'
  spec = importlib.util.spec_from_file_location('llmjax_finetune_common', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant: str = ''):
  del variant
  config = _common().fine_tune('sft', 'builtin:code_next_line', 'code_next_line')
  return config
