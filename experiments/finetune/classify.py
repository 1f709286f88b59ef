"""Classification fine-tuning of a base.py model: is a standard-library function from a
library module or a test file (the built-in code_classify task)?

finetune.task=classify: each example is a function's text (its oldest tokens dropped to fit
data.seq_len) and the task's prompt; the head reads the hidden state of the last token at
the label words' distinguishing tokens (' library' / ' test' -> 'l' / 't' after ' '), with a
cross-entropy over the two labels. Training examples come from files the pretraining split
trains on (builtin_code.training_examples, 200 sampled files); eval/acc and eval/f1_macro are
measured on code_classify's 100 held-out, balanced examples (chance 0.5), and eval.tasks
scores the same examples by label-word likelihood (the Evaluation issue's classify metric).

Run (2-core CPU):
  python -m llmjax.main --config experiments/finetune/classify.py --workdir runs/cls \
      --config.init_from=runs/base
Result (measured 2026-12-02 on /work/main/runs/base, base.py at 500 steps, 2-core CPU shared
at load ~12; 60 steps of batch 16 in about 5 minutes; 3126 training examples; 34 held-out
examples, the balanced share of code_classify's held-out files):
  head on the held-out examples     before: acc 0.500, f1_macro 0.333 (always one label)
                                    after:  acc 0.647 +- 0.079, f1_macro 0.597 +- 0.086
  eval.tasks code_classify (label-word likelihood)
                                    before: acc 0.500, f1_macro 0.333
                                    after:  acc 0.529, f1_macro 0.396
("before" of the head: llmjax.finetune.report.ClassifyMetrics on runs/base's parameters;
of the task: runs/base/eval/500.json.)
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
  config = _common().fine_tune('classify', 'builtin:code_classify', 'code_classify')
  config.train.eval_batches = 16  # all of the 100 held-out examples
  return config
