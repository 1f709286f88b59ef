"""Command line: python -m llmjax.main --config experiments/base.py [--config.a.b=v] [--workdir DIR]."""

import datetime
import json
import pathlib
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from llmjax import configs, train
from llmjax.data.sources import DataError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file with get_config().',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; default: a new one under runs/.')


def _default_workdir(config_path: str) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return pathlib.Path('runs') / f'{pathlib.Path(config_path).stem}-{stamp}'


def _resume_problem(workdir: pathlib.Path, resolved: dict) -> str | None:
  """Why `workdir` cannot take this run, if it cannot: a run there without
  checkpoints, or checkpoints of a different model or data."""
  if not (workdir / 'metrics.jsonl').exists():
    return None
  if not any((workdir / 'checkpoints').glob('[0-9]*')):
    return f'{workdir} already holds a run without checkpoints; choose another --workdir'
  saved = json.loads((workdir / 'config.json').read_text())
  for section in ('model', 'data'):
    if saved.get(section) != resolved[section]:
      return (f'{workdir} holds checkpoints of a different config.{section}; resume with the '
              f'same {section} settings or choose another --workdir')
  return None


def main(argv):
  del argv
  if _CONFIG.value is None:
    sys.exit('llmjax: --config is required, e.g. --config experiments/base.py')
  try:
    exp = configs.build(_CONFIG.value, jax.device_count())
  except configs.ConfigError as e:
    print(f'llmjax: invalid config:\n{e}', file=sys.stderr)
    sys.exit(2)
  workdir = pathlib.Path(_WORKDIR.value or _default_workdir(flags.FLAGS['config'].config_filename))
  problem = _resume_problem(workdir, configs.as_dict(exp))
  if problem:
    print(f'llmjax: {problem}', file=sys.stderr)
    sys.exit(2)
  print(f'llmjax: workdir {workdir}')
  try:
    train.run(exp, workdir, configs.as_dict(exp))
  except DataError as e:  # raised while opening the data, before the workdir exists
    print(f'llmjax: bad data input: {e}', file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:  # the non-finite policy halted the run
    print(f'llmjax: halted: {e}', file=sys.stderr)
    sys.exit(3)


if __name__ == '__main__':
  app.run(main)
