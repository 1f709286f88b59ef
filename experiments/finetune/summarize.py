"""Summarization fine-tuning of a base.py model: a standard-library function without its
docstring -> the docstring's first line (the built-in code_summarize task).

finetune.task=sft: the prompt is the function and an assignment opening NAME.__doc__ (the
task's own prompt), the completion the docstring's first line and the task's stop string (the
closing triple quote); the loss counts completion tokens only. Training examples come from
files the pretraining split trains on (builtin_code.training_examples, 200 sampled files);
eval/loss is the completion loss on code_summarize's 47 held-out examples, and eval.tasks generates their summaries greedily
(ROUGE-1/2/L, exact match, token F1: the Evaluation issue's generate metrics).

Run (2-core CPU):
  python -m llmjax.main --config experiments/finetune/summarize.py --workdir runs/sum \
      --config.init_from=runs/base
Result (measured 2026-12-02 on /work/main/runs/base, base.py at 500 steps, 2-core CPU shared
at load ~12; 60 steps of batch 16 in about 4 minutes plus 2 of greedy decoding; 832 training
examples, 47 held-out ones):
  completion loss (eval/loss, nats per completion token)   before 2.037, after 1.647
  eval.tasks code_summarize   before: rouge1 0.000, rougeL 0.000, chrF 0.0, task nll 1.859
                              after:  rouge1 0.024, rougeL 0.024, chrF 13.8, task nll 1.774
The 0.9M-parameter model learns the docstring register ('Return the ...') and to stop at the
closing quotes, not yet the content. ("before": the same eval rows on runs/base's parameters,
and runs/base/eval/500.json.)
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
  config = _common().fine_tune('sft', 'builtin:code_summarize', 'code_summarize')
  return config
