"""Command line: python -m llmjax.main --config experiments/base.py [--config.a.b=v] [--workdir DIR]."""

import datetime
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
  if (workdir / 'metrics.jsonl').exists():
    print(f'llmjax: {workdir} already holds a run (metrics.jsonl); choose another --workdir',
          file=sys.stderr)
    sys.exit(2)
  print(f'llmjax: workdir {workdir}')
  try:
    train.run(exp, workdir, configs.as_dict(exp))
  except DataError as e:  # raised while opening the data, before the workdir exists
    print(f'llmjax: bad data input: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
