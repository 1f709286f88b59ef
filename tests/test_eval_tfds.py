"""TFDS tasks on TFDS's mock data (no download): each dataset's features map to the task
fields, any split's examples are readable, registry names resolve, and the tasks score
end to end; unknown and unprepared datasets are refused with the reason."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from llmjax.data import pipeline
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.eval import registry, runner, tasks, tfds_tasks
from llmjax.eval.tasks import TaskError
from test_eval_scorer import random_model


@pytest.fixture()
def mock_tfds():
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _features(name: str, split: str, index: int) -> dict:
  """The raw features of one mock example, read without llmjax."""
  dataset, spec = tfds_tasks._spec(name)  # pylint: disable=protected-access
  return tfds_tasks._source(dataset, spec, split, None)[index]  # pylint: disable=protected-access


@pytest.mark.parametrize('name', sorted(tfds_tasks.SPECS))
def test_each_dataset_maps_to_valid_task_examples(mock_tfds, name):
  task = tfds_tasks.task(f'tfds:{name}', max_examples=5)
  tasks.validate(task)
  spec = tfds_tasks.SPECS[name]
  assert task.name == f'tfds:{name}' and task.kind == spec.kind and len(task.examples) <= 5
  assert all(e['id'].startswith(f'{name}/{spec.split}/') for e in task.examples)
  if spec.kind == 'classify':
    assert len(task.labels) >= 2 and all(label.startswith(' ') for label in task.labels)
  else:
    assert task.max_new_tokens > 0 and task.stop


def test_features_become_the_fields_each_kind_reads(mock_tfds):
  sst2 = tfds_tasks.task('tfds:glue/sst2', max_examples=2)
  raw = _features('glue/sst2', 'validation', 0)
  assert sst2.labels == (' negative', ' positive')  # GLUE's class names, in label order
  assert sst2.examples[0]['gold'] == int(raw['label'])
  assert sst2.examples[0]['context'] == f'Review: {raw["sentence"].strip()}\nSentiment:'
  squad = tfds_tasks.task('tfds:squad', max_examples=8)
  first = int(squad.examples[0]['id'].rsplit('/', 1)[1])
  raw = _features('squad', 'validation', first)
  assert squad.examples[0]['target'] == ' ' + raw['answers']['text'][0].strip()
  assert raw['question'].strip() in squad.examples[0]['context']
  news = tfds_tasks.task('tfds:cnn_dailymail', max_examples=1)
  raw = _features('cnn_dailymail', 'test', 0)
  assert news.examples[0]['target'] == ' ' + raw['highlights'].strip()
  assert news.examples[0]['domain'] == raw['publisher']  # cnn | dm on the real data


def test_examples_reads_any_split_for_fine_tuning(mock_tfds):
  train = tfds_tasks.examples('tfds:glue/sst2', 'train', max_examples=3)
  assert [e['id'] for e in train] == [f'glue/sst2/train/{i}' for i in range(3)]
  assert {'context', 'gold', 'domain'} <= set(train[0])
  assert len(tfds_tasks.examples('squad', 'train')) <= 8  # the prefix is optional


def test_registry_names_resolve_and_a_classify_task_scores(mock_tfds):
  data_cfg = pipeline.DataConfig(source='pystdlib', data_dir='')
  found = registry.resolve_all('tfds:glue/sst2,tfds:squad', data_cfg, max_examples=3)
  assert [t.name for t in found] == ['tfds:glue/sst2', 'tfds:squad']
  out = runner.evaluate(found[:1], random_model(), ByteTokenizer())['tfds:glue/sst2']
  assert out['chance']['acc'] == 0.5 and out['num_examples'] == 3
  assert 0 <= out['acc'] <= 1 and np.isfinite(out['nll'])


@pytest.mark.slow  # decoding compiles for each prompt length bucket: ~30 s of CPU
def test_a_generate_task_scores_end_to_end(mock_tfds):
  task = dataclasses.replace(tfds_tasks.task('tfds:squad', max_examples=3), max_new_tokens=4)
  out = runner.evaluate([task], random_model(), ByteTokenizer())['tfds:squad']
  assert {'exact_match', 'token_f1', 'rougeL', 'nll'} <= set(out) and out['num_examples'] == 3


def test_unknown_and_unprepared_datasets_are_refused(tmp_path):
  with pytest.raises(TaskError, match=r"unknown TFDS task 'tfds:nope'; known: tfds:glue/sst2"):
    registry.resolve_all('tfds:nope', pipeline.DataConfig())
  with pytest.raises(TaskError, match='tfds build squad --data_dir=.* --file_format=array_record'):
    tfds_tasks.task('tfds:squad', data_dir=tmp_path)
