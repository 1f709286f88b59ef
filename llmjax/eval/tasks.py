"""A downstream task: its examples, its kind, and the few-shot prompts built from it.

A task is one of four kinds (KINDS). Every example is a dict with `id`, `domain` and
`context`, plus the fields its kind needs (see `_REQUIRED`). Data whose tokenizer is not
text (the synthetic Markov language) gives token ids instead: `context_tokens` and, for
multiple choice, `choices_tokens`. `validate` and `load_jsonl` report every bad input as a
`TaskError` naming the task, the example (or JSONL line) and the problem, before a model is
loaded. Few-shot demonstrations come from `Task.fewshot_pool`, never from `Task.examples`.
"""

import dataclasses
import json
import pathlib

import numpy as np

KINDS = ('multiple_choice', 'generate', 'classify', 'retrieve')
POOLINGS = ('mean', 'last')
# Between demonstrations and before the evaluated context in a few-shot prompt.
FEWSHOT_SEPARATOR = '\n\n'


class TaskError(ValueError):
  """A task or task file that cannot be evaluated."""


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  kind: str  # one of KINDS
  examples: tuple[dict, ...]  # the evaluated examples
  fewshot_pool: tuple[dict, ...] = ()  # k-shot demonstrations are drawn from here only
  num_fewshot: int = 0
  fewshot_seed: int = 0
  max_examples: int = -1  # -1: all
  stop: tuple[str, ...] = ()  # generate: stop strings
  max_new_tokens: int = 0  # generate
  labels: tuple[str, ...] = ()  # classify: the label words/strings; gold indexes them
  documents: tuple[str, ...] = ()  # retrieve: the corpus; gold indexes it
  pooling: str = 'mean'  # retrieve: mean | last
  ceiling: dict | None = None  # best achievable metric values (synthetic tasks): {'acc': 0.71}
  chance: dict | None = None  # metric values of a random guesser: {'acc': 0.25}
  description: str = ''


def _has_text_or_tokens(example: dict, field: str) -> bool:
  return field in example or f'{field}_tokens' in example


def _gold_problem(example: dict, count: int, what: str) -> str | None:
  gold = example.get('gold')
  if isinstance(gold, bool) or not isinstance(gold, (int, np.integer)):
    return f'gold must be an integer index into {what}, got {gold!r}'
  if not 0 <= gold < count:
    return f'gold {gold} is out of range for {count} {what}'
  return None


def _choices_problem(example: dict) -> str | None:
  if not _has_text_or_tokens(example, 'choices'):
    return "missing field 'choices' (or 'choices_tokens')"
  choices = example.get('choices_tokens', example.get('choices'))
  if not isinstance(choices, (list, tuple)) or len(choices) < 2:
    count = len(choices) if isinstance(choices, (list, tuple)) else type(choices).__name__
    return f'multiple_choice needs at least 2 choices, got {count}'
  return _gold_problem(example, len(choices), 'choices')


def example_problem(kind: str, example, labels: int = 0, documents: int = 0) -> str | None:
  """What is wrong with one example of a task of `kind` (None if nothing)."""
  if not isinstance(example, dict):
    return f'an example must be a JSON object, got {type(example).__name__}'
  if 'id' not in example:
    return "missing field 'id'"
  if not _has_text_or_tokens(example, 'context'):
    return "missing field 'context' (or 'context_tokens')"
  if kind == 'multiple_choice':
    return _choices_problem(example)
  if kind == 'generate':
    if not isinstance(example.get('target'), str):
      return "missing field 'target' (a string)"
    return None
  if kind == 'classify':
    return _gold_problem(example, labels, 'labels')
  return _gold_problem(example, documents, 'documents')


def _task_problem(task: Task) -> str | None:
  if task.kind not in KINDS:
    return f'unknown kind {task.kind!r}; known kinds: {", ".join(KINDS)}'
  if not task.examples:
    return 'no examples'
  if task.kind == 'generate' and task.max_new_tokens <= 0:
    # Stop strings alone may never appear; the KV cache needs a bound either way.
    return f'generate needs max_new_tokens > 0 (stop strings: {list(task.stop)})'
  if task.kind == 'classify' and len(task.labels) < 2:
    return f'classify needs at least 2 labels, got {len(task.labels)}'
  if task.kind == 'retrieve' and not task.documents:
    return 'retrieve needs documents'
  if task.kind == 'retrieve' and task.pooling not in POOLINGS:
    return f'unknown pooling {task.pooling!r}; known: {", ".join(POOLINGS)}'
  if task.kind == 'retrieve' and task.num_fewshot:
    return 'retrieve takes no few-shot demonstrations (num_fewshot must be 0)'
  if task.max_examples == 0 or task.max_examples < -1:
    return f'max_examples must be -1 (all) or positive, got {task.max_examples}'
  if task.num_fewshot < 0 or task.num_fewshot > len(task.fewshot_pool):
    return (f'num_fewshot {task.num_fewshot} needs that many pool examples; '
            f'the few-shot pool has {len(task.fewshot_pool)}')
  return None


def validate(task: Task) -> None:
  """Raises TaskError naming the task, the example id and the problem."""
  problem = _task_problem(task)
  if problem:
    raise TaskError(f'task {task.name!r}: {problem}')
  seen = set()
  for where, examples in (('example', task.examples), ('few-shot example', task.fewshot_pool)):
    for example in examples:
      problem = example_problem(task.kind, example, len(task.labels), len(task.documents))
      name = example.get('id', '?') if isinstance(example, dict) else '?'
      if problem:
        raise TaskError(f'task {task.name!r}, {where} {name!r}: {problem}')
      if name in seen:
        raise TaskError(f'task {task.name!r}, {where} {name!r}: the id appears twice '
                        '(few-shot demonstrations must not be evaluated examples)')
      seen.add(name)


def _read_line(path: pathlib.Path, number: int, line: str, kind: str, fields: dict) -> dict:
  try:
    example = json.loads(line)
  except json.JSONDecodeError as error:
    raise TaskError(f'{path}:{number}: invalid JSON ({error.msg})') from None
  if isinstance(example, dict):
    example.setdefault('id', f'{path.stem}-{number}')
    example.setdefault('domain', '')
  problem = example_problem(
      kind, example, len(fields.get('labels', ())), len(fields.get('documents', ())))
  if problem:
    raise TaskError(f'{path}:{number}: {problem}')
  return example


def load_jsonl(path, name: str, kind: str, **task_fields) -> Task:
  """A Task from a JSONL file, one example per line (blank lines skipped). An example
  without an `id` gets FILESTEM-LINE; errors name the file and the line."""
  path = pathlib.Path(path)
  if kind not in KINDS:
    raise TaskError(f'task {name!r}: unknown kind {kind!r}; known kinds: {", ".join(KINDS)}')
  if not path.is_file():
    raise TaskError(f'task {name!r}: no such task file {path}')
  examples = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if line.strip():
      examples.append(_read_line(path, number, line, kind, task_fields))
  for key in ('stop', 'labels', 'documents', 'fewshot_pool'):
    if key in task_fields:
      task_fields[key] = tuple(task_fields[key])
  task = Task(name=name, kind=kind, examples=tuple(examples), **task_fields)
  validate(task)
  return task


def selected(task: Task) -> tuple[dict, ...]:
  """The evaluated examples: the first max_examples (all for -1)."""
  return task.examples if task.max_examples < 0 else task.examples[:task.max_examples]


def answer_text(task: Task, example: dict) -> str:
  """The gold continuation a demonstration shows after its context."""
  if task.kind == 'multiple_choice':
    return example['choices'][example['gold']]
  if task.kind == 'generate':
    return example['target']
  return task.labels[example['gold']]


def fewshot_examples(task: Task, index: int) -> list[dict]:
  """The k demonstrations of evaluated example `index`: drawn without replacement from the
  pool by an RNG seeded with (fewshot_seed, index), so every example has its own draw and
  the same task always gives the same prompts."""
  if not task.num_fewshot:
    return []
  rng = np.random.default_rng([task.fewshot_seed, index])
  picks = rng.choice(len(task.fewshot_pool), size=task.num_fewshot, replace=False)
  return [task.fewshot_pool[i] for i in picks]


def prompt(task: Task, example: dict, index: int) -> str:
  """The context the model sees: k demonstrations (context + gold answer), then the
  example's own context, joined by FEWSHOT_SEPARATOR."""
  shots = [d['context'] + answer_text(task, d) for d in fewshot_examples(task, index)]
  return FEWSHOT_SEPARATOR.join(shots + [example['context']])


def prompt_tokens(task: Task, example: dict, index: int) -> list[int]:
  """The token-id form of `prompt` for examples given as ids: demonstrations'
  context_tokens + gold choice tokens (multiple choice) or context_tokens alone
  (classify: label words are text), then the example's context_tokens."""
  tokens = []
  for shot in fewshot_examples(task, index):
    tokens += list(shot['context_tokens'])
    if task.kind == 'multiple_choice' and 'choices_tokens' in shot:
      tokens += list(shot['choices_tokens'][shot['gold']])
  return tokens + list(example['context_tokens'])
