"""Built-in tasks: deterministic by seed, held-out material only, exact Bayes ceilings."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from llmjax.data import pipeline, pystdlib, synthetic
from llmjax.eval import builtin, builtin_code, builtin_synthetic, tasks
from llmjax.eval.tasks import TaskError

CODE_SPLITS = [(0.01, 0), (0.03, 5)]  # (eval_fraction, split_seed): the default and another


def _relative(paths) -> set[str]:
  root = pystdlib.stdlib_root()
  return {p.relative_to(root).as_posix() for p in paths}


@pytest.mark.parametrize('eval_fraction,split_seed', CODE_SPLITS)
@pytest.mark.parametrize('name', sorted(builtin.CODE))
def test_code_tasks_use_held_out_files_only(name, eval_fraction, split_seed):
  task = builtin.CODE[name](seed=1, eval_fraction=eval_fraction, split_seed=split_seed)
  tasks.validate(task)
  train, held_out = pystdlib.split(pystdlib.source_files(), eval_fraction, split_seed)
  train, held_out = _relative(train), _relative(held_out)
  used = {e['source'] for e in task.examples}
  shots = {e['source'] for e in task.fewshot_pool}
  assert used and used <= held_out and not used & train, sorted(used - held_out)
  assert shots <= held_out and not shots & train
  assert not used & shots  # few-shot demonstrations come from other held-out files
  for e in task.examples:
    assert e['domain'] == pystdlib.domain(e['source'])


@pytest.mark.parametrize('name', sorted(builtin.BUILTIN))
def test_tasks_are_deterministic_by_seed(name):
  def build(seed):
    cfg = pipeline.DataConfig(source='synthetic:vocab=16' if name in builtin.SYNTHETIC
                              else 'pystdlib')
    return json.dumps(dataclasses.asdict(builtin.build(name, cfg, seed=seed, max_examples=20)),
                      sort_keys=True, default=str)
  assert build(0) == build(0)
  assert build(0) != build(1)


def test_next_line_gold_is_the_true_line_and_distractors_come_from_other_files():
  task = builtin_code.code_next_line(max_examples=60)
  functions, _ = builtin_code.held_out_functions(0.01, 0, 0)
  lines_of = {}
  for f in functions:
    lines_of.setdefault(f.source, set()).update(s.strip() for s in f.text.splitlines())
  for e in task.examples:
    assert len(e['choices']) == builtin_code.NUM_CHOICES == len(set(e['choices']))
    f = next(f for f in functions if e['id'] == f'{f.source}:{f.line}:{f.name}')
    assert f.text.startswith(e['context'] + e['choices'][e['gold']])
    indents = {c[:len(c) - len(c.lstrip())] for c in e['choices']}
    assert len(indents) == 1  # indentation gives nothing away
    for i, choice in enumerate(e['choices']):
      if i != e['gold']:
        assert any(choice.strip() in lines for source, lines in lines_of.items()
                   if source != e['source'])


def test_summarize_retrieve_and_classify_examples():
  summarize = builtin_code.code_summarize(max_examples=-1)
  assert summarize.max_new_tokens > 0 and summarize.stop
  for e in summarize.examples:
    assert e['context'].endswith('.__doc__ = """') and e['target']
    assert e['target'] not in e['context']  # the docstring was removed
  retrieve = builtin_code.code_retrieve(max_examples=30)
  assert len(retrieve.examples) == len(retrieve.documents) == 30
  assert sorted(e['gold'] for e in retrieve.examples) == list(range(30))
  for e in retrieve.examples:
    assert e['context'] not in retrieve.documents[e['gold']]
  classify = builtin_code.code_classify(max_examples=-1)
  golds = [e['gold'] for e in classify.examples]
  assert golds.count(0) == golds.count(1) > 0  # balanced: chance is 1/2
  assert all(classify.labels[e['gold']].strip() == {'code': 'library', 'tests': 'test'}[
      e['domain']] for e in classify.examples)


def test_max_examples_and_bad_inputs():
  data = pipeline.DataConfig()
  assert len(builtin.build('code_next_line', data, max_examples=7).examples) == 7
  with pytest.raises(tasks.TaskError, match="unknown built-in task 'code_nxt'; known: code_next"):
    builtin.build('code_nxt', data)
  with pytest.raises(tasks.TaskError, match="'synthetic_chain' needs a run on the synthetic"):
    builtin.build('synthetic_chain', data)
  synthetic_data = pipeline.DataConfig(source='synthetic:vocab=16')
  with pytest.raises(tasks.TaskError, match="'code_retrieve' needs a run on text"):
    builtin.build('code_retrieve', synthetic_data)
  with pytest.raises(tasks.TaskError, match='exact ceiling needs vocab\\^order <= 2048'):
    builtin.build('synthetic_continuation',
                  pipeline.DataConfig(source='synthetic:vocab=64,order=2'))


@pytest.mark.parametrize('name', sorted(builtin.SYNTHETIC))
def test_synthetic_tasks_use_held_out_documents(name):
  task = builtin.SYNTHETIC[name](spec='synthetic:vocab=16', max_examples=50)
  tasks.validate(task)
  eot = 16
  for e in task.examples:
    # Training reads documents 0 .. 2^31 and the eval split 2^40 .. 2^40 + 64.
    assert min(e['doc_indices']) >= builtin_synthetic.TASK_OFFSET > 2**40 + 64
    assert e['context_tokens'][0] == eot and eot not in sum(e['choices_tokens'], [])
  assert task.chance['acc'] < task.ceiling['acc'] <= 1


def _choose(scores: np.ndarray, rng) -> int:
  """The Bayes decision: the largest score, ties broken at random."""
  scores = np.nan_to_num(scores, nan=-np.inf)
  best = np.flatnonzero(scores >= scores.max() - 1e-9)
  return int(rng.choice(best))


def _monte_carlo(task, score) -> tuple[float, float]:
  rng = np.random.default_rng(0)
  correct = [_choose(np.array([score(e, c) for c in e['choices_tokens']]), rng) == e['gold']
             for e in task.examples]
  p = float(np.mean(correct))
  return p, np.sqrt(max(p * (1 - p), 1e-4) / len(correct))


# Chains with many ties between choices, where ignoring ties would move the ceiling by more
# than 4 standard errors of the Monte Carlo estimate.
CONTINUATION_SPECS = ['vocab=8,branching=4,alpha=0.5', 'vocab=6,order=2,branching=3,zipf=1.0']
CHAIN_SPECS = ['vocab=4,branching=3', 'vocab=5,order=2,branching=2']


@pytest.mark.parametrize('spec', CONTINUATION_SPECS)
def test_continuation_ceiling_exact_equals_monte_carlo(spec):
  # The exact ceiling (first-block likelihood ratios over the chain's tables) against the
  # Bayes rule applied to sampled examples with whole-sequence probabilities (log_probs).
  task = builtin_synthetic.synthetic_continuation(spec, max_examples=3000, context_len=6,
                                                  continuation_len=3)
  chain = synthetic.MarkovSource(synthetic.parse_spec(spec))

  def score(example, choice):
    context = example['context_tokens'][1:]
    with np.errstate(divide='ignore', invalid='ignore'):
      joint = chain.log_probs(np.array(context + choice)).sum()
      return joint - chain.log_probs(np.array(context)).sum() - chain.log_probs(
          np.array(choice)).sum()

  p, se = _monte_carlo(task, score)
  assert abs(p - task.ceiling['acc']) < 4 * se, (p, se, task.ceiling)


@pytest.mark.parametrize('spec', CHAIN_SPECS)
def test_chain_ceiling_exact_equals_monte_carlo(spec):
  task = builtin_synthetic.synthetic_chain(spec, max_examples=4000)
  mine = synthetic.MarkovSource(synthetic.parse_spec(spec))
  other = synthetic.MarkovSource(dataclasses.replace(mine.spec, seed=mine.spec.seed + 1))

  def score(example, choice):
    with np.errstate(divide='ignore', invalid='ignore'):
      return mine.log_probs(np.array(choice)).sum() - other.log_probs(np.array(choice)).sum()

  p, se = _monte_carlo(task, score)
  assert abs(p - task.ceiling['acc']) < 4 * se, (p, se, task.ceiling)


def test_win_probability_by_enumeration():
  # Two-valued scores, three choices: the closed form against the sum over all outcomes.
  true_scores, true_w = np.array([0.0, 1.0]), np.array([0.3, 0.7])
  other_scores, other_w = np.array([0.0, 1.0]), np.array([0.6, 0.4])
  expected = 0.0
  for t, wt in zip(true_scores, true_w):
    for a, wa in zip(other_scores, other_w):
      for b, wb in zip(other_scores, other_w):
        top = max(t, a, b)
        expected += wt * wa * wb * (t == top) / [t, a, b].count(top)
  got = builtin_synthetic._win_probability(true_scores, true_w, other_scores, other_w, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.slow
def test_a_trained_model_is_above_chance_and_at_most_the_ceiling(tmp_path):
  # A tiny model trained on the chain: its accuracy on both synthetic tasks is above
  # chance and, within sampling error, not above the exact Bayes-optimal accuracy.
  import importlib.util

  import jax

  from llmjax import configs, runs, train
  from llmjax.eval import runner
  spec = importlib.util.spec_from_file_location('_builtin_experiment',
                                                pathlib.Path(__file__).parents[1] /
                                                'experiments/base.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.data.source = 'synthetic:vocab=16,doc_len=64'
  config.train.steps, config.train.sample_tokens, config.optim.lr = 150, 0, 1e-2
  config.train.eval_every, config.metrics.tensorboard = 150, False
  exp = configs.build(config, jax.device_count())
  train.run(exp, tmp_path / 'run', configs.as_dict(exp))
  run = runs.RunFolder(tmp_path / 'run')
  model = run.model()
  for name in ('synthetic_continuation', 'synthetic_chain'):
    task = builtin.build(name, exp.data, max_examples=400)
    got = runner.evaluate_task(task, model, run.tokenizer)
    acc, se = got['acc'], got['acc_stderr']
    assert task.chance['acc'] + 3 * se < acc <= task.ceiling['acc'] + 3 * se, (name, got)


def test_synthetic_tasks_refuse_a_language_other_than_the_markov_chain():
  pytest.importorskip('llmjax.data.facts')  # the facts language, where it exists
  source = ('synthetic:kind=facts,keys=64,zipf=1.2,key_len=2,key_symbols=8,value_len=2,'
            'value_symbols=8,options=3,seed=0,doc_len=24')
  assert builtin.names_for(source) == []
  with pytest.raises(TaskError, match="the synthetic tasks read a Markov chain; .* is a "
                                      "FactsSpec language"):
    builtin.build('synthetic_chain', pipeline.DataConfig(source=source))
