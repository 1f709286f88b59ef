"""Tasks from TensorFlow Datasets, for clusters where the datasets are prepared: names
`tfds:NAME` with NAME one of SPECS (`tfds:glue/sst2`, `tfds:squad`, `tfds:cnn_dailymail`,
...). Each spec maps a dataset's features to the task example fields ({id, domain, context,
target | gold}) and gives the kind, labels, stop strings and default split.

The datasets are read as the training data reads TFDS (llmjax.data.sources): random-access
`tfds.data_source`, never a download (a cluster's hosts must not each fetch a dataset, and
without a network TFDS retries for ever); an unprepared dataset is an error saying how to
prepare it. `examples(name, split, max_examples)` returns any split's examples, for
fine-tuning on the training split of the same data.
"""

import dataclasses
import importlib
import pathlib
from collections.abc import Callable

from llmjax.data import builders
from llmjax.eval.tasks import Task, TaskError

PREFIX = 'tfds:'


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class Spec:
  kind: str  # a tasks.KINDS entry
  split: str  # the split evaluated by default
  fields: Callable[[dict], dict | None]  # features -> {context, target | gold, domain}; None: skip
  # The TFDS module defining the builder, for builders TFDS does not register by itself.
  module: str = ''
  # classify: the dataset's label feature; its class names, after a space, are the labels.
  label_feature: str = 'label'
  stop: tuple[str, ...] = ()
  max_new_tokens: int = 0
  description: str = ''


def _sst2(features: dict) -> dict | None:
  label = int(features['label'])
  if label < 0:  # GLUE's test split is unlabelled
    return None
  return {'context': f'Review: {_text(features["sentence"]).strip()}\nSentiment:',
          'gold': label, 'domain': 'movie reviews'}


def _imdb(features: dict) -> dict | None:
  label = int(features['label'])
  return None if label < 0 else {'context': f'Review: {_text(features["text"]).strip()}\n'
                                            'Sentiment:', 'gold': label, 'domain': 'imdb'}


def _ag_news(features: dict) -> dict:
  return {'context': f'{_text(features["title"]).strip()}\n'
                     f'{_text(features["description"]).strip()}\nTopic:',
          'gold': int(features['label']), 'domain': 'news'}


def _squad(features: dict) -> dict | None:
  answers = [_text(a) for a in features['answers']['text']]
  if not answers:
    return None
  # The first reference answer is the target (SQuAD scores the best of all references;
  # the metrics here take one target per example).
  return {'context': f'{_text(features["context"]).strip()}\n\nQuestion: '
                     f'{_text(features["question"]).strip()}\nAnswer:',
          'target': ' ' + answers[0].strip(), 'domain': 'squad'}  # titles: ~50 domains


def _cnn_dailymail(features: dict) -> dict:
  return {'context': f'{_text(features["article"]).strip()}\n\nSummary:',
          'target': ' ' + _text(features['highlights']).strip(),
          'domain': _text(features.get('publisher', 'cnn_dailymail')) or 'cnn_dailymail'}


SPECS = {
    'glue/sst2': Spec('classify', 'validation', _sst2, module='tensorflow_datasets.text.glue',
                      description='sentiment: negative | positive'),
    'imdb_reviews': Spec('classify', 'test', _imdb, description='sentiment: neg | pos'),
    'ag_news_subset': Spec('classify', 'test', _ag_news, description='news topic, 4 labels'),
    'squad': Spec('generate', 'validation', _squad, stop=('\n',), max_new_tokens=32,
                  description='extractive QA: exact match, token F1'),
    'cnn_dailymail': Spec('generate', 'test', _cnn_dailymail, stop=('\n\n',),
                          max_new_tokens=128, module='tensorflow_datasets.summarization.'
                          'cnn_dailymail', description='summarization: ROUGE'),
}


def _spec(name: str) -> tuple[str, Spec]:
  dataset = name[len(PREFIX):] if name.startswith(PREFIX) else name
  if dataset not in SPECS:
    raise TaskError(f'unknown TFDS task {name!r}; known: '
                    f'{", ".join(PREFIX + n for n in SPECS)}')
  return dataset, SPECS[dataset]


def _source(dataset: str, spec: Spec, split: str, data_dir):
  """The split as a random-access TFDS data source (prepared, never downloaded)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if spec.module:
    importlib.import_module(spec.module)
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else None
  try:
    with builders.tempdir_inside(data_dir):  # TFDS leaves mkdtemp() folders behind
      return tfds.data_source(dataset, split=split, download=False,
                              data_dir=str(data_dir) if data_dir else None)
  except (ValueError, KeyError, AssertionError, NotImplementedError,
          tfds.core.registered.DatasetNotFoundError) as e:
    where = data_dir or '~/tensorflow_datasets'
    raise TaskError(f'TFDS task {PREFIX}{dataset} split {split!r} cannot be read ({e}); '
                    f'prepare it once, on a machine with network access, with: tfds build '
                    f'{dataset} --data_dir={where} --file_format=array_record') from None


def examples(name: str, split: str | None = None, max_examples: int = -1,
             data_dir=None) -> tuple[dict, ...]:
  """A split's examples (the spec's split if None), as task examples with ids NAME/SPLIT/I:
  the first max_examples (-1: all) of those the spec keeps (e.g. labelled ones)."""
  dataset, spec = _spec(name)
  source = _source(dataset, spec, split or spec.split, data_dir)
  found = []
  for index in range(len(source)):
    if 0 <= max_examples <= len(found):
      break
    fields = spec.fields(source[index])
    if fields is not None:
      found.append({'id': f'{dataset}/{split or spec.split}/{index}', **fields})
  return tuple(found)


def labels(name: str, data_dir=None) -> tuple[str, ...]:
  """A classify task's label words: the dataset's class names, each after a space."""
  dataset, spec = _spec(name)
  info = _source(dataset, spec, spec.split, data_dir).dataset_info
  return tuple(f' {n}' for n in info.features[spec.label_feature].names)


def task(name: str, split: str | None = None, max_examples: int = 200, data_dir=None) -> Task:
  """The Task `tfds:NAME` on a split (the spec's default if None), max_examples evaluated."""
  dataset, spec = _spec(name)
  found = examples(name, split, max_examples, data_dir)
  if not found:
    raise TaskError(f'TFDS task {PREFIX}{dataset} split {split or spec.split!r} holds no '
                    'usable examples')
  return Task(name=f'{PREFIX}{dataset}', kind=spec.kind, examples=found, stop=spec.stop,
              max_new_tokens=spec.max_new_tokens,
              labels=labels(name, data_dir) if spec.kind == 'classify' else (),
              description=spec.description)
