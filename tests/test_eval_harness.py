"""The lm-evaluation-harness adapter: a local YAML task over a local JSONL file (no
download) run by lm_eval.simple_evaluate gives llmjax's own scores on the same examples."""

import json
import os

import numpy as np
import pytest

lm_eval = pytest.importorskip('lm_eval')  # the `harness` extra (also in `test`)
lm_eval_tasks = pytest.importorskip('lm_eval.tasks')

from llmjax.data.tokenizers import ByteTokenizer  # noqa: E402
from llmjax.eval import harness, runner, scorer, tasks  # noqa: E402
from test_eval_scorer import random_model  # noqa: E402

TOKENIZER = ByteTokenizer()
EXAMPLES = [{'id': f'q{i}', 'domain': '', 'context': f'{a} plus {b} is',
             'choices': [f' {a + b}', f' {a + b + 1}', ' lots'], 'gold': 0}
            for i, (a, b) in enumerate([(1, 2), (3, 4), (10, 5), (7, 7), (2, 9), (6, 0)])]

YAML = """task: llmjax_local_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope='module')
def model():
  return random_model()


def test_a_local_harness_task_equals_the_native_scorer(model, tmp_path, monkeypatch):
  monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
  monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path / 'hf_cache'))
  data = tmp_path / 'sums.jsonl'
  data.write_text(''.join(json.dumps(e) + '\n' for e in EXAMPLES))
  (tmp_path / 'tasks').mkdir()
  (tmp_path / 'tasks' / 'sums.yaml').write_text(YAML.format(data=data))
  # Only this folder's tasks: indexing the harness's hundreds of built-in ones takes seconds.
  manager = lm_eval_tasks.TaskManager(include_path=str(tmp_path / 'tasks'),
                                      include_defaults=False)
  lm = harness.LlmjaxLM(model, TOKENIZER)
  results = lm_eval.simple_evaluate(model=lm, tasks=['llmjax_local_sums'], task_manager=manager,
                                    bootstrap_iters=0, log_samples=True)
  theirs = results['results']['llmjax_local_sums']
  native = runner.evaluate_task(tasks.Task('sums', 'multiple_choice', tuple(EXAMPLES)), model,
                                TOKENIZER)
  assert theirs['acc,none'] == pytest.approx(native['acc'])
  assert theirs['acc_norm,none'] == pytest.approx(native['acc_norm'])
  # Not only the means: every choice's log-likelihood is the scorer's.
  samples = results['samples']['llmjax_local_sums']
  for sample in samples:
    example = EXAMPLES[sample['doc_id']]
    pairs = [([256, *TOKENIZER.encode(example['context'])], TOKENIZER.encode(c))
             for c in example['choices']]
    ours = scorer.Scorer(model).loglikelihood(pairs).sums
    np.testing.assert_allclose([r[0][0] for r in sample['resps']], ours, atol=1e-5)
  assert len(samples) == len(EXAMPLES)


class Request:
  def __init__(self, *args):
    self.args = args


def test_rolling_and_generation_requests(model):
  lm = harness.LlmjaxLM(model, TOKENIZER)
  short, long = 'def f(x):', 'x' * 45 + ' = 1'  # the long one spans two windows of 32
  rolling = lm.loglikelihood_rolling([Request(short), Request(long)])
  alone = scorer.Scorer(model).loglikelihood([([256], TOKENIZER.encode(short))]).sums[0]
  assert rolling[0] == pytest.approx(alone, abs=1e-5)
  tokens = [256, *TOKENIZER.encode(long)]
  windows = scorer.Scorer(model).loglikelihood([(tokens[:1], tokens[1:33]),
                                                (tokens[:33], tokens[33:])]).sums
  assert rolling[1] == pytest.approx(windows.sum(), abs=1e-4)
  texts = lm.generate_until([Request('ab', {'until': ['\n'], 'max_gen_toks': 6}),
                             Request('cd', {'max_gen_toks': 4})])
  assert texts == [runner.complete(model, TOKENIZER, [[256, 97, 98]], 6, ['\n'])[0],
                   runner.complete(model, TOKENIZER, [[256, 99, 100]], 4)[0]]
