"""The runner: each kind's metrics come from the scorer and decoder as documented (the
contexts, candidates, stop strings and pooling it builds), chance levels, eval/STEP.json."""

import json

import numpy as np
import pytest

from llmjax import generate
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.eval import metrics, runner, scorer, tasks
from llmjax.eval.tasks import Task, TaskError
from test_eval_scorer import random_model

TOKENIZER = ByteTokenizer()


@pytest.fixture(scope='module')
def model():
  return random_model()


def encode(text):
  return [256, *TOKENIZER.encode(text).tolist()]


def mc_task(**fields):
  examples = tuple({'id': f'q{i}', 'domain': '', 'context': f'{i}+{i}=',
                    'choices': [str(2 * i), str(2 * i + 1), 'many'], 'gold': 0} for i in range(6))
  return Task('sums', 'multiple_choice', examples, **fields)


def test_multiple_choice_scores_each_choice_after_its_context(model):
  task = mc_task()
  out = runner.evaluate_task(task, model, TOKENIZER)
  lls = [scorer.Scorer(model).loglikelihood([(encode(e['context']), TOKENIZER.encode(c))
                                             for c in e['choices']]).sums
         for e in task.examples]
  expected = metrics.multiple_choice(lls, [0] * 6, [np.array([len(c) for c in e['choices']])
                                                    for e in task.examples])
  for key in ('acc', 'acc_norm', 'gold_prob', 'acc_stderr', 'nll'):
    assert out[key] == pytest.approx(expected[key], abs=1e-6), key
  assert out['num_examples'] == 6 and out['chance']['acc'] == pytest.approx(1 / 3)
  assert 'ceiling' not in out


def test_fewshot_contexts_and_max_examples(model):
  pool = tuple({'id': f'p{i}', 'domain': '', 'context': f'{i}+{i}=', 'choices': ['a', 'b'],
                'gold': 1} for i in range(10, 14))
  task = mc_task(fewshot_pool=pool, num_fewshot=2, max_examples=2, ceiling={'acc': 0.9})
  context = runner.context_ids(task, task.examples[1], 1, TOKENIZER)
  assert TOKENIZER.decode(context[1:]) == tasks.prompt(task, task.examples[1], 1)
  assert TOKENIZER.decode(context[1:]).count('=b\n\n') == 2 and context[0] == 256
  out = runner.evaluate_task(task, model, TOKENIZER)
  assert out['num_examples'] == 2 and out['ceiling'] == {'acc': 0.9}


def test_token_examples_use_their_own_ids(model):
  examples = ({'id': 'a', 'domain': '', 'context_tokens': [3, 4], 'choices_tokens': [[5], [6, 7]],
               'gold': 1},)
  task = Task('tokens', 'multiple_choice', examples)
  assert runner.context_ids(task, examples[0], 0, TOKENIZER) == [256, 3, 4]
  starts = {**examples[0], 'context_tokens': [256, 3, 4]}  # end-of-text is not doubled
  assert runner.context_ids(task, starts, 0, TOKENIZER) == [256, 3, 4]
  assert runner.candidates(task, examples[0], TOKENIZER) == ([[5], [6, 7]], [1, 2])
  out = runner.evaluate_task(task, model, TOKENIZER)
  lls = scorer.Scorer(model).loglikelihood([([256, 3, 4], [5]), ([256, 3, 4], [6, 7])]).sums
  assert out['acc'] == float(np.argmax(lls) == 1)


def test_generate_decodes_greedily_and_cuts_at_the_stop_string(model):
  examples = tuple({'id': f'g{i}', 'domain': '', 'context': f'say {i}:', 'target': 'x'}
                   for i in range(3))
  free = runner.generations(Task('g', 'generate', examples, max_new_tokens=8), model, TOKENIZER)
  raw = generate.generate(model, [encode(e['context']) for e in examples], max_new_tokens=8,
                          temperature=0.0, stop_tokens=[256])
  assert free == [TOKENIZER.decode(t[t != 256]) for t in raw.tokens]
  assert len(free[0]) >= 4, free  # else the cut below checks nothing
  stop = free[0][2:4]  # two characters the first generation holds
  cut = runner.generations(Task('g', 'generate', examples, max_new_tokens=8, stop=(stop,)),
                           model, TOKENIZER)
  assert cut[0] == free[0][:free[0].find(stop)]
  assert all(f.startswith(c) for f, c in zip(free, cut))
  out = runner.evaluate_task(Task('g', 'generate', examples, max_new_tokens=8), model, TOKENIZER)
  assert {'exact_match', 'token_f1', 'rouge1', 'rougeL', 'bleu', 'chrf'} <= set(out)
  # The task loss: the target's negative log-likelihood after its context, per character.
  sums = scorer.Scorer(model).loglikelihood([(encode(e['context']), TOKENIZER.encode('x'))
                                             for e in examples]).sums
  assert out['nll'] == pytest.approx(-np.mean(sums), abs=1e-6)


def test_classify_and_retrieve(model):
  examples = tuple({'id': f'c{i}', 'domain': '', 'context': f'item {i} is', 'gold': i % 2}
                   for i in range(4))
  out = runner.evaluate_task(Task('c', 'classify', examples, labels=(' odd', ' even')), model,
                             TOKENIZER)
  assert {'acc', 'f1_macro', 'f1_macro_stderr'} <= set(out) and out['chance']['acc'] == 0.5
  documents = ('alpha beta', 'gamma delta', 'epsilon', 'zeta eta theta')
  queries = tuple({'id': f'r{i}', 'domain': '', 'context': d, 'gold': i}
                  for i, d in enumerate(documents))
  # A query equal to its document has the same pooled state: cosine 1, rank 1.
  out = runner.evaluate_task(Task('r', 'retrieve', queries, documents=documents), model,
                             TOKENIZER)
  assert out['recall@1'] == 1.0 and out['mrr'] == 1.0
  assert out['chance']['recall@1'] == 0.25 and out['chance']['recall@5'] == 1.0


def test_an_empty_candidate_is_named(model):
  examples = ({'id': 'e', 'domain': '', 'context': 'x', 'choices': ['a', ''], 'gold': 0},)
  with pytest.raises(TaskError, match="example 'e': the continuation '' encodes to no tokens"):
    runner.evaluate_task(Task('t', 'multiple_choice', examples), model, TOKENIZER)


def test_results_merge_into_the_step_file(tmp_path):
  runner.write_results(tmp_path, 7, {'a': {'acc': 0.5}})
  path = runner.write_results(tmp_path, 7, {'b': {'acc': 0.25}})
  assert path == tmp_path / 'eval' / '7.json'
  assert json.loads(path.read_text()) == {'step': 7, 'tasks': {'a': {'acc': 0.5},
                                                              'b': {'acc': 0.25}}}
  runner.write_results(tmp_path, 12, {'a': {'acc': 0.75}})
  assert runner.read_results(tmp_path) == {7: {'a': {'acc': 0.5}, 'b': {'acc': 0.25}},
                                           12: {'a': {'acc': 0.75}}}


def test_a_task_with_several_domains_reports_each(model):
  task = mc_task()
  examples = tuple({**e, 'domain': 'even' if i % 2 == 0 else 'odd'}
                   for i, e in enumerate(task.examples))
  split = runner.evaluate_task(Task('sums', 'multiple_choice', examples), model, TOKENIZER)
  whole = runner.evaluate_task(task, model, TOKENIZER)
  assert 'domains' not in whole  # one domain: nothing to split
  assert list(split['domains']) == ['even', 'odd']
  for domain, keep in (('even', [0, 2, 4]), ('odd', [1, 3, 5])):
    alone = runner.evaluate_task(Task('d', 'multiple_choice', tuple(examples[i] for i in keep)),
                                 model, TOKENIZER)
    for key in ('acc', 'acc_norm', 'gold_prob', 'nll', 'num_examples'):
      assert split['domains'][domain][key] == pytest.approx(alone[key], abs=1e-6), key
  assert split['acc'] == pytest.approx(np.mean([split['domains'][d]['acc'] for d in
                                                ('even', 'odd')]))
