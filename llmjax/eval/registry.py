"""Task names: the built-in tasks (`builtin.BUILTIN`), TFDS datasets and JSONL files.

A name is a built-in task's, `tfds:NAME` (llmjax.eval.tfds_tasks.SPECS: prepared TFDS
datasets such as `tfds:glue/sst2`, `tfds:squad`, `tfds:cnn_dailymail`), or
`jsonl:PATH:KIND[:OPTIONS]` with OPTIONS a comma-separated
`key=value` list: `max_new_tokens=N` and `stop=S` (generate; S with Python escapes, like
`\\n`), `labels=A|B|...` (classify), `documents=PATH` (retrieve: a JSONL file of strings or
of objects with `text`), `pooling=mean|last`, `num_fewshot=K` with `fewshot=PATH` (a JSONL
pool of the same kind) and `fewshot_seed=S`. Such a task is named after its file's stem.
Every name is resolved (files read and validated) before a model is loaded.
"""

import codecs
import dataclasses
import json
import pathlib

from llmjax.eval import tasks
from llmjax.eval.tasks import Task, TaskError

JSONL_PREFIX = 'jsonl:'
TFDS_PREFIX = 'tfds:'  # llmjax.eval.tfds_tasks.PREFIX, without importing TFDS to read it
_INT_OPTIONS = ('max_new_tokens', 'num_fewshot', 'fewshot_seed')
_OPTIONS = (*_INT_OPTIONS, 'stop', 'labels', 'documents', 'pooling', 'fewshot')


def _builtin():
  """llmjax.eval.builtin, imported only when a built-in task is asked for."""
  try:
    from llmjax.eval import builtin  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise TaskError(f'the built-in tasks are not available ({e}); name a task file as '
                    f'{JSONL_PREFIX}PATH:KIND') from None
  return builtin


def known_names() -> list[str]:
  try:
    return list(_builtin().BUILTIN)
  except TaskError:
    return []


def _unknown(*names: str) -> TaskError:
  known = ', '.join(known_names()) or '(no built-in tasks)'
  which = f'task {names[0]!r}' if len(names) == 1 else f'tasks {", ".join(map(repr, names))}'
  return TaskError(f'unknown {which}; known tasks: {known}, a prepared TFDS dataset as '
                   f'{TFDS_PREFIX}NAME (e.g. {TFDS_PREFIX}squad), or a file as '
                   f'{JSONL_PREFIX}PATH:KIND[:key=value,...] with KIND one of '
                   f'{", ".join(tasks.KINDS)}')


def _options(name: str, text: str) -> dict:
  options = {}
  for item in filter(None, text.split(',')):
    key, eq, value = item.partition('=')
    if not eq or key not in _OPTIONS:
      raise TaskError(f'task {name!r}: unknown option {item!r}; options: {", ".join(_OPTIONS)}')
    if key in _INT_OPTIONS:
      if not value.lstrip('-').isdigit():
        raise TaskError(f'task {name!r}: option {key} must be an integer, got {value!r}')
      options[key] = int(value)
    elif key == 'stop':
      options[key] = (codecs.decode(value, 'unicode_escape'),)
    elif key == 'labels':
      options[key] = tuple(value.split('|'))
    else:
      options[key] = value
  return options


def _documents(name: str, path: str) -> tuple[str, ...]:
  path = pathlib.Path(path)
  if not path.is_file():
    raise TaskError(f'task {name!r}: no such documents file {path}')
  out = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if line.strip():
      try:
        item = json.loads(line)
      except json.JSONDecodeError as e:
        raise TaskError(f'{path}:{number}: invalid JSON ({e.msg})') from None
      out.append(item['text'] if isinstance(item, dict) and 'text' in item else item)
      if not isinstance(out[-1], str):
        raise TaskError(f'{path}:{number}: a document is a string or {{"text": string}}')
  return tuple(out)


def jsonl_task(name: str) -> Task:
  """The Task of a `jsonl:PATH:KIND[:OPTIONS]` name."""
  body = name[len(JSONL_PREFIX):]
  head, _, last = body.rpartition(':')
  options_text = ''
  if '=' in last:  # PATH:KIND:OPTIONS (a path may hold ':' itself)
    options_text, (head, _, last) = last, head.rpartition(':')
  if not head:
    raise _unknown(name)
  options = _options(name, options_text)
  if 'documents' in options:
    options['documents'] = _documents(name, options['documents'])
  if 'fewshot' in options:
    pool = tasks.load_jsonl(options.pop('fewshot'), name, last,
                            labels=options.get('labels', ()),
                            documents=options.get('documents', ()))
    options['fewshot_pool'] = pool.examples
  return tasks.load_jsonl(head, pathlib.Path(head).stem, last, **options)


def resolve(name: str, data_cfg, seed: int = 0, max_examples: int | None = None) -> Task:
  """The Task called `name` for a run trained on `data_cfg` (its DataConfig: built-in tasks
  read the run's own held-out material). Raises TaskError naming the problem."""
  if name.startswith(JSONL_PREFIX):
    task = jsonl_task(name)
    return task if max_examples is None else dataclasses.replace(
        task, max_examples=max_examples)
  if name.startswith(TFDS_PREFIX):
    from llmjax.eval import tfds_tasks  # pylint: disable=import-outside-toplevel
    sized = {} if max_examples is None else {'max_examples': max_examples}
    return tfds_tasks.task(name, data_dir=getattr(data_cfg, 'data_dir', None) or None, **sized)
  builtin = _builtin()
  if name not in builtin.BUILTIN:
    raise _unknown(name)
  return builtin.build(name, data_cfg, seed=seed, max_examples=max_examples)


def split_names(text: str) -> list[str]:
  """'a,jsonl:x.jsonl:generate:max_new_tokens=8,stop=\\n,b' -> the three names: a piece
  holding '=' that starts no task continues the previous task's options."""
  names = []
  for piece in map(str.strip, text.split(",")):
    continues = names and names[-1].startswith(JSONL_PREFIX) and '=' in piece and not (
        piece.startswith(JSONL_PREFIX))
    if continues:
      names[-1] += ',' + piece
    else:
      names.append(piece)
  return [n.strip() for n in names if n.strip()]


def resolve_all(names, data_cfg, seed: int = 0, max_examples: int | None = None) -> list[Task]:
  """Every named task (a list, or a comma-separated string), each validated; unknown
  names are all reported at once."""
  names = split_names(names) if isinstance(names, str) else [n.strip() for n in names
                                                               if n.strip()]
  if not names:
    raise TaskError('no tasks named')
  unknown = [n for n in names if not n.startswith((JSONL_PREFIX, TFDS_PREFIX)) and
             n not in known_names()]
  if unknown:
    raise _unknown(*unknown)
  out = [resolve(n, data_cfg, seed, max_examples) for n in names]
  for task in out:
    tasks.validate(task)
  if len({t.name for t in out}) < len(out):
    raise TaskError(f'two tasks share a name: {[t.name for t in out]}')
  return out
