"""Fine-tune examples from labelled JSONL files and from the built-in tasks.

An sft example is {'id', 'segments': [(text, weighted), ...]}: the loss counts the tokens
of weighted segments only (the completion, or a chat's assistant turns). A classify
example is {'id', 'text', 'label'} with `label` an index into the task's label words.

JSONL lines (field names from the `finetune` config section):
  sft       {"prompt": ..., "completion": ...}  or  {"messages": [{"role", "text"}, ...]}
  classify  {"text": ..., "label": ...}  (label as declared in finetune.labels, or an
            integer 0..num_labels-1)

Chat template (CHAT_TURN): each turn is '<|ROLE|>\\n' + text + '\\n'; the text and newline
of each 'assistant' turn are weighted, the rest is context.

Built-in tasks (`builtin:NAME`): training examples from the files the pretraining split
trains on (builtin_code.training_examples), held-out ones from the task itself.
TFDS sets (`tfds:NAME`, llmjax.eval.tfds_tasks): training examples from the prepared
dataset's train split, held-out ones from the split the eval task scores (never downloaded).
"""

import json
import pathlib

from llmjax.data.sources import DataError
from llmjax.eval import builtin, builtin_code, tfds_tasks
from llmjax.eval.tasks import TaskError

CHAT_TURN = '<|{role}|>\n{text}\n'
ASSISTANT = 'assistant'


class ExampleError(DataError):
  """A fine-tune example that cannot be used; names the file and line."""


def chat_segments(turns, where: str) -> list[tuple[str, bool]]:
  """(role, text) turns -> template segments, assistant text weighted."""
  if not isinstance(turns, list) or not turns:
    raise ExampleError(f'{where}: messages must be a non-empty list of {{role, text}} turns')
  segments = []
  for turn in turns:
    if not isinstance(turn, dict) or not isinstance(turn.get('role'), str) or not isinstance(
        turn.get('text'), str):
      raise ExampleError(f'{where}: each turn needs string fields role and text, got {turn!r}')
    segments.append((CHAT_TURN.format(role=turn['role'], text='')[:-1], False))
    segments.append((turn['text'] + '\n', turn['role'] == ASSISTANT))
  if not any(w for _, w in segments):
    raise ExampleError(f'{where}: no {ASSISTANT!r} turn, so nothing to learn')
  return segments


def _sft_example(record: dict, cfg, where: str) -> dict:
  if cfg.messages_field in record:
    return {'id': where, 'segments': chat_segments(record[cfg.messages_field], where)}
  for field in (cfg.prompt_field, cfg.completion_field):
    if not isinstance(record.get(field), str):
      raise ExampleError(f'{where}: field {field!r} missing or not a string (or give '
                         f'{cfg.messages_field!r} turns)')
  return {'id': where, 'segments': [(record[cfg.prompt_field], False),
                                    (record[cfg.completion_field], True)]}


def declared_labels(cfg) -> tuple[str, ...]:
  """The label set as the label field spells it: finetune.labels, or '0'..'K-1'."""
  return tuple(cfg.labels) or tuple(str(i) for i in range(cfg.num_labels))


def _classify_example(record: dict, cfg, where: str) -> dict:
  if not isinstance(record.get(cfg.text_field), str):
    raise ExampleError(f'{where}: field {cfg.text_field!r} missing or not a string')
  if cfg.label_field not in record:
    raise ExampleError(f'{where}: label field {cfg.label_field!r} missing')
  labels, label = declared_labels(cfg), str(record[cfg.label_field])
  if label not in labels:
    raise ExampleError(f'{where}: label {record[cfg.label_field]!r} is not in the declared '
                       f'set {list(labels)} (finetune.labels / num_labels)')
  return {'id': where, 'text': record[cfg.text_field] + cfg.prompt_suffix,
          'label': labels.index(label)}


def read_jsonl(spec: str, cfg) -> list[dict]:
  """The examples of `jsonl:PATH` for finetune.task; ExampleError names file and line."""
  if not spec.startswith('jsonl:'):
    raise ExampleError(f'finetune data {spec!r}: use jsonl:PATH or builtin:NAME')
  path = pathlib.Path(spec[len('jsonl:'):]).expanduser()
  if not path.is_file():
    raise ExampleError(f'finetune data {spec!r}: no such file {path}')
  make = _sft_example if cfg.task == 'sft' else _classify_example
  examples = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    where = f'{path} line {number}'
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ExampleError(f'{where}: invalid JSON ({e.msg})') from None
    if not isinstance(record, dict):
      raise ExampleError(f'{where}: expected a JSON object')
    examples.append(make(record, cfg, where))
  if not examples:
    raise ExampleError(f'finetune data {spec!r}: no examples in {path}')
  return examples


def _from_task_shape(example: dict, kind: str, stop: tuple[str, ...]) -> dict:
  """A built-in task's example (context with gold, target or choices) -> a fine-tune one."""
  if kind == 'classify':
    return {'id': example['id'], 'text': example['context'], 'label': int(example['gold'])}
  if kind == 'generate':
    completion = example['target'] + (stop[0] if stop else '')
  elif kind == 'multiple_choice':
    completion = example['choices'][example['gold']] + '\n'
  else:
    raise ExampleError(f'a {kind} task has no fine-tune examples')
  return {'id': example['id'], 'segments': [(example['context'], False), (completion, True)]}


def builtin_examples(name: str, cfg, data_cfg, seed: int) -> tuple[list, list, tuple]:
  """(training examples, held-out examples, label words) of built-in task `name`."""
  try:
    task = builtin.build(name, data_cfg, seed=seed)
    train = builtin_code.training_examples(name, seed, data_cfg.eval_fraction,
                                           data_cfg.split_seed, cfg.builtin_files)
  except ValueError as e:
    raise ExampleError(f'finetune.train_data=builtin:{name}: {e}') from None
  return _task_examples(f'builtin:{name}', task, train, cfg)


def tfds_examples(name: str, cfg, data_cfg) -> tuple[list, list, tuple]:
  """(training examples, held-out examples, label words) of TFDS set `name` ('tfds:...'):
  the first finetune.max_examples of its train split, and its eval task's examples."""
  try:
    task = tfds_tasks.task(name, data_dir=data_cfg.data_dir)
    train = tfds_tasks.examples(name, 'train', cfg.max_examples, data_cfg.data_dir)
  except TaskError as e:
    raise ExampleError(f'finetune.train_data={name}: {e}') from None
  return _task_examples(name, task, train, cfg)


def _task_examples(spec: str, task, train: list, cfg) -> tuple[list, list, tuple]:
  """A task's training and held-out examples as fine-tune ones, if its kind fits the
  fine-tune (classify: a classify task; sft: generation or multiple choice)."""
  wanted = ('classify',) if cfg.task == 'classify' else ('generate', 'multiple_choice')
  if task.kind not in wanted:
    raise ExampleError(f'finetune.train_data={spec} is a {task.kind} task; '
                       f'finetune.task={cfg.task} needs {" or ".join(wanted)}')
  convert = lambda examples: [_from_task_shape(e, task.kind, task.stop) for e in examples]
  return convert(train), convert(task.examples), task.labels
