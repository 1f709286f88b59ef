"""Task names: jsonl:PATH:KIND[:OPTIONS] files with their options, built-in names through
builtin.build, and bad names by message."""

import json

import pytest

from llmjax.eval import registry
from llmjax.eval.tasks import TaskError


def write_jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


def test_task_names_split_at_commas_outside_options():
  assert registry.split_names('a, jsonl:x.jsonl:generate:max_new_tokens=8,stop=\\n,b,'
                              'jsonl:y.jsonl:classify:labels=p|q') == [
      'a', 'jsonl:x.jsonl:generate:max_new_tokens=8,stop=\\n', 'b',
      'jsonl:y.jsonl:classify:labels=p|q']


def test_jsonl_options_reach_the_task(tmp_path):
  rows = [{'id': f'c{i}', 'context': f'{i}', 'gold': i % 2} for i in range(3)]
  path = write_jsonl(tmp_path / 'parity.jsonl', rows)
  pool = write_jsonl(tmp_path / 'pool.jsonl', [{'id': 'p', 'context': '9', 'gold': 1}])
  task = registry.resolve(f'jsonl:{path}:classify:labels= even| odd,num_fewshot=1,'
                          f'fewshot={pool},fewshot_seed=4', None, max_examples=2)
  assert (task.name, task.labels, task.num_fewshot, task.fewshot_seed, task.max_examples) == (
      'parity', (' even', ' odd'), 1, 4, 2)
  assert [e['id'] for e in task.fewshot_pool] == ['p']
  docs = write_jsonl(tmp_path / 'docs.jsonl', ['alpha', {'text': 'beta'}])
  queries = write_jsonl(tmp_path / 'q.jsonl', [{'id': 'q', 'context': 'a', 'gold': 1}])
  task = registry.resolve(f'jsonl:{queries}:retrieve:documents={docs},pooling=last', None)
  assert task.documents == ('alpha', 'beta') and task.pooling == 'last'
  gen = write_jsonl(tmp_path / 'gen.jsonl', [{'id': 'g', 'context': 'a', 'target': 'b'}])
  task = registry.resolve(f'jsonl:{gen}:generate:max_new_tokens=5,stop=\\n', None)
  assert task.stop == ('\n',) and task.max_new_tokens == 5


@pytest.mark.parametrize('name, message', [
    ('jsonl:{p}:generate:max_new_tokens=x', 'option max_new_tokens must be an integer'),
    ('jsonl:{p}:retrieve:documents={p}/none.jsonl', 'no such documents file'),
    ('jsonl:generate', "unknown task 'jsonl:generate'"),
])
def test_bad_jsonl_names(tmp_path, name, message):
  path = write_jsonl(tmp_path / 'x.jsonl', [{'id': 'g', 'context': 'a', 'target': 'b'}])
  with pytest.raises(TaskError, match=message):
    registry.resolve(name.format(p=path if 'documents' not in name else tmp_path), None)


def test_all_names_are_checked_and_duplicates_refused(tmp_path):
  path = write_jsonl(tmp_path / 'x.jsonl', [{'id': 'g', 'context': 'a', 'target': 'b'}])
  spec = f'jsonl:{path}:generate:max_new_tokens=2'
  with pytest.raises(TaskError, match='two tasks share a name'):
    registry.resolve_all(f'{spec},{spec}', None)
  with pytest.raises(TaskError, match='no tasks named'):
    registry.resolve_all(' , ', None)
