"""Tasks: validation names the task, the example (or JSONL line) and the problem; few-shot
prompts come from the pool only, seeded."""

import json

import pytest

from llmjax.eval import tasks
from llmjax.eval.tasks import Task, TaskError


def mc(i, **fields):
  return {'id': f'q{i}', 'domain': '', 'context': f'Q{i}:', 'choices': [' a', ' b'], 'gold': 0,
          **fields}


def write_jsonl(path, lines):
  path.write_text('\n'.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + '\n')
  return path


def test_a_valid_task_passes():
  tasks.validate(Task('t', 'multiple_choice', (mc(0), mc(1))))


@pytest.mark.parametrize('example, message', [
    ({'id': 'x', 'choices': [' a', ' b'], 'gold': 0}, "missing field 'context'"),
    (mc(0, id='x', choices=[' a']), 'at least 2 choices, got 1'),
    (mc(0, id='x', gold=2), 'gold 2 is out of range for 2 choices'),
    (mc(0, id='x', gold=-1), 'gold -1 is out of range'),
    (mc(0, id='x', gold='a'), 'gold must be an integer'),
    ({'id': 'x', 'context': 'c', 'gold': 0}, "missing field 'choices'"),
])
def test_bad_multiple_choice_examples_are_named(example, message):
  with pytest.raises(TaskError, match=message) as error:
    tasks.validate(Task('t', 'multiple_choice', (mc(9), example)))
  assert str(error.value).startswith("task 't', example 'x': ")


@pytest.mark.parametrize('fields, message', [
    ({'kind': 'sorting'}, "unknown kind 'sorting'; known kinds: multiple_choice"),
    ({'kind': 'generate', 'examples': ({'id': 'g', 'context': 'c', 'target': 't'},),
      'stop': ('\n',)}, 'generate needs max_new_tokens > 0'),
    ({'num_fewshot': 3, 'fewshot_pool': (mc(5), mc(6))},
     'num_fewshot 3 needs that many pool examples; the few-shot pool has 2'),
    ({'examples': ()}, 'no examples'),
    ({'max_examples': 0}, 'max_examples must be -1'),
    ({'kind': 'classify', 'labels': ('yes',),
      'examples': ({'id': 'c', 'context': 'c', 'gold': 0},)}, 'at least 2 labels, got 1'),
    ({'kind': 'classify', 'labels': ('no', 'yes'),
      'examples': ({'id': 'c', 'context': 'c', 'gold': 2},)},
     'gold 2 is out of range for 2 labels'),
    ({'kind': 'retrieve', 'documents': ('d',), 'pooling': 'max',
      'examples': ({'id': 'r', 'context': 'q', 'gold': 0},)}, "unknown pooling 'max'"),
    ({'fewshot_pool': (mc(0),), 'num_fewshot': 1}, "'q0': the id appears twice"),
])
def test_bad_tasks_are_named(fields, message):
  task = Task(**{'name': 't', 'kind': 'multiple_choice', 'examples': (mc(0), mc(1)), **fields})
  with pytest.raises(TaskError, match=message) as error:
    tasks.validate(task)
  assert str(error.value).startswith("task 't'")


def test_load_jsonl_reads_examples_and_fills_ids(tmp_path):
  lines = [{'id': 'q0', 'context': 'Q:', 'target': ' y'}, '', {'context': 'Q:', 'target': ' x'}]
  path = write_jsonl(tmp_path / 'qa.jsonl', lines)
  task = tasks.load_jsonl(path, 'qa', 'generate', max_new_tokens=4, stop=['\n'])
  assert [e['id'] for e in task.examples] == ['q0', 'qa-3']
  assert task.examples[1]['domain'] == '' and task.stop == ('\n',)


@pytest.mark.parametrize('lines, message', [
    ([mc(0), '{"id": "q1", "context": ', mc(2)], r'qa.jsonl:2: invalid JSON'),
    ([mc(0), mc(1), mc(2, choices=['only'])], r'qa.jsonl:3: multiple_choice needs at least 2'),
    ([{'id': 'q', 'choices': ['a', 'b'], 'gold': 0}], r"qa.jsonl:1: missing field 'context'"),
    ([mc(0, gold=5)], r'qa.jsonl:1: gold 5 is out of range for 2 choices'),
    (['[1, 2]'], r'qa.jsonl:1: an example must be a JSON object, got list'),
])
def test_load_jsonl_names_the_line(tmp_path, lines, message):
  path = write_jsonl(tmp_path / 'qa.jsonl', lines)
  with pytest.raises(TaskError, match=message):
    tasks.load_jsonl(path, 'qa', 'multiple_choice')


def test_load_jsonl_refuses_unknown_kind_and_missing_file(tmp_path):
  with pytest.raises(TaskError, match="unknown kind 'mc'"):
    tasks.load_jsonl(tmp_path / 'x.jsonl', 'x', 'mc')
  with pytest.raises(TaskError, match='no such task file'):
    tasks.load_jsonl(tmp_path / 'x.jsonl', 'x', 'generate')


def test_fewshot_prompts_are_seeded_draws_from_the_pool():
  pool = tuple(mc(i, context=f'P{i}:', choices=[f' p{i}', ' no']) for i in range(10, 20))
  task = Task('t', 'multiple_choice', tuple(mc(i) for i in range(4)), fewshot_pool=pool,
              num_fewshot=3, fewshot_seed=7)
  tasks.validate(task)
  text = tasks.prompt(task, task.examples[1], 1)
  parts = text.split(tasks.FEWSHOT_SEPARATOR)
  assert len(parts) == 4 and parts[-1] == 'Q1:'
  shots = tasks.fewshot_examples(task, 1)
  assert parts[:3] == [s['context'] + s['choices'][0] for s in shots]
  assert len({s['id'] for s in shots}) == 3 and all(s in pool for s in shots)
  assert tasks.prompt(task, task.examples[1], 1) == text  # deterministic
  other_seed = Task(**{**task.__dict__, 'fewshot_seed': 8})
  draws = {tuple(s['id'] for s in tasks.fewshot_examples(t, i))
           for t in (task, other_seed) for i in range(4)}
  assert len(draws) > 1  # examples and seeds draw differently
  assert tasks.prompt(Task('t', 'multiple_choice', (mc(0),)), mc(0), 0) == 'Q0:'


def test_max_examples_selects_the_first():
  task = Task('t', 'multiple_choice', tuple(mc(i) for i in range(5)), max_examples=2)
  assert [e['id'] for e in tasks.selected(task)] == ['q0', 'q1']
