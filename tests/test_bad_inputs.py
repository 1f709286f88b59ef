"""Every bad input gets one clear message and exit status 2 before anything is written.

Table-driven: each case runs a command line in a subprocess (in a fresh folder) and
requires exit status 2, a message naming the field or cause, no traceback, no run
folder left behind, and little CPU time (all are refused before any compile).
"""

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / 'experiments/base.py:tiny')
CPU_SECONDS = 6.0  # of the refusing process: two Python starts (allocator re-exec) and imports
WATCHDOG_S = 60  # a case still running then was not refused up front


def _write(path: pathlib.Path, text) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


def _config(tmp, name, text):
  return ['--config', _write(tmp / name, text)]


def _files(tmp, files: dict, pattern: str):
  for name, text in files.items():
    _write(tmp / 'texts' / name, text)
  return ['--config', TINY, f'--config.data.source=files:{tmp}/texts/{pattern}',
          f'--config.data.data_dir={tmp}/cache', '--config.data.eval_fraction=0.3']


def _other_shape_run(tmp):
  """A run folder (config.json and a checkpoint folder) of a wider model."""
  sys.path.insert(0, str(ROOT))
  from experiments import base  # noqa: PLC0415
  from llmjax import configs  # noqa: PLC0415
  config = base.get_config('tiny')
  config.model.d_model = 64
  resolved = configs.as_dict(configs.build(config, 1))
  _write(tmp / 'source/config.json', json.dumps(resolved))
  (tmp / 'source/checkpoints/20/state').mkdir(parents=True)
  _write(tmp / 'source/checkpoints/20/_CHECKPOINT_METADATA', '{}')
  return ['--config', TINY, f'--config.init_from={tmp}/source']


# name -> (function of the case's folder giving the llmjax.main arguments, or a whole
# command as ['-m', module, ...]; a text the message must hold)
CASES = {
    # loading the experiment file and its overrides
    'misspelt_field': (lambda t: ['--config', TINY, '--config.train.stepz=3'],
                       '--config.train.stepz: no such field in the config; Did you mean "steps"'),
    'misspelt_section': (lambda t: ['--config', TINY, '--config.trian.steps=3'],
                         '--config.trian.steps: no such field'),
    'override_value': (lambda t: ['--config', TINY, '--config.train.steps=abc'],
                       '--config.train.steps=abc'),
    'file_raises': (lambda t: _config(t, 'raises.py', 'def get_config():\n  raise '
                                      'RuntimeError("no such cluster")\n'),
                    'raised RuntimeError: no such cluster at line 2'),
    'no_get_config': (lambda t: _config(t, 'empty.py', 'X = 1\n'), 'has no get_config()'),
    'missing_file': (lambda t: ['--config', f'{t}/none.py'], 'experiment file not found'),
    'does_not_parse': (lambda t: _config(t, 'bad.py', 'def get_config(:\n'), 'does not parse'),
    'unknown_variant': (lambda t: ['--config', TINY + 'y'],
                        "has no variant 'tinyy' (it changes nothing in the config); did you "
                        "mean 'tiny'?"),
    'plain_dict': (lambda t: _config(t, 'dict.py', 'def get_config():\n  return {"train": '
                                     '{"steps": 3}}\n'), 'returned a dict, not an'),
    # values
    'eval_batches_0': (lambda t: ['--config', TINY, '--config.train.eval_batches=0'],
                       'config.train.eval_batches'),
    'every_steps_negative': (lambda t: ['--config', TINY, '--config.checkpoint.every_steps=-5'],
                             'config.checkpoint.every_steps=-5 must not be negative'),
    'clip_norm_negative': (lambda t: ['--config', TINY, '--config.optim.clip_norm=-1'],
                           'config.optim.clip_norm=-1.0 must not be negative'),
    'weight_decay_negative': (lambda t: ['--config', TINY, '--config.optim.weight_decay=-0.1'],
                              'config.optim.weight_decay=-0.1 must not be negative'),
    'fake_devices_negative': (lambda t: ['--config', TINY, '--num_fake_devices=-2'],
                              '--num_fake_devices=-2'),
    'init_from_other_shape': (_other_shape_run, 'other parameter shapes'),
    'init_from_trial_outside_a_sweep': (
        lambda t: ['--config', TINY, '--config.init_from=trial:pre'],
        "trial:NAME names another trial of a sweep and works only in python -m llmjax.sweep"),
    # data
    'empty_text_file': (lambda t: _files(t, {'a.txt': 'text\n', 'b.txt': ''}, '*.txt'),
                        'b.txt is empty'),
    'jsonl_text_number': (lambda t: _files(t, {'a.jsonl': '{"text": "x"}\n{"text": 5}\n'},
                                           '*.jsonl'),
                          "a.jsonl line 2: field 'text' is int 5, not a string"),
    'jsonl_text_null': (lambda t: _files(t, {'a.jsonl': '{"text": null}\n{"text": "y"}\n'},
                                         '*.jsonl'),
                        "a.jsonl line 1: field 'text' is NoneType None, not a string"),
    'jsonl_invalid': (lambda t: _files(t, {'a.jsonl': '{"text": "x"}\n{"text": "y\n'},
                                       '*.jsonl'), 'a.jsonl line 2 is not valid JSON'),
    'jsonl_not_utf8': (lambda t: _files(t, {'a.jsonl': b'{"text": "x"}\n\n{"text": "\xff"}\n'},
                                        '*.jsonl'), 'a.jsonl line 3 is not UTF-8'),
    'unreadable_file': (lambda t: ['--config', TINY, '--config.data.source=files:/proc/self/mem',
                                   f'--config.data.data_dir={t}/cache'],
                        'cannot read /proc/self/mem'),
    'garbage_sentencepiece': (lambda t: ['--config', TINY, '--config.data.tokenizer='
                                         f'sentencepiece:{_write(t / "sp.model", "garbage")}'],
                              'not a SentencePiece model'),
    'garbage_tokenizer_json': (lambda t: ['--config', TINY, '--config.data.tokenizer='
                                          f'hf:{_write(t / "tokenizer.json", "{garbage")}'],
                               'not a Hugging Face tokenizer.json'),
    'tfds_not_prepared': (lambda t: ['--config', TINY, '--config.data.source=tfds:tiny_shakespeare',
                                     '--config.data.eval_split=test',
                                     f'--config.data.data_dir={t}/tfds'],
                          "TFDS dataset 'tiny_shakespeare' is not prepared in"),
    # other command lines
    'jobset_name_newline': (lambda t: ['launch/k8s/make_jobset.py', '--name', 'run1\nkind: x',
                                       '--image', 'llmjax:1', '--accelerator', 'gpu', '--config',
                                       TINY], 'DNS-1123'),
    'convert_garbage_safetensors': (
        lambda t: ['-m', 'llmjax.convert', 'hf-to-llmjax', '--hf_dir',
                   str(pathlib.Path(_write(t / 'hf/model.safetensors', b'\x08\x00garbage')).parent),
                   '--out', f'{t}/run'], 'model.safetensors'),
}


def _command(args: list[str], workdir: pathlib.Path) -> list[str]:
  if args[0] == '-m' or args[0].endswith('.py'):
    return [sys.executable, *(args if args[0] == '-m' else [str(ROOT / args[0]), *args[1:]])]
  return [sys.executable, '-m', 'llmjax.main', *args, f'--workdir={workdir}']


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_is_refused_with_one_message(name, tmp_path):
  make_args, message = CASES[name]
  args = make_args(tmp_path)
  if name == 'convert_garbage_safetensors':
    _write(tmp_path / 'hf/config.json', json.dumps({'model_type': 'gpt2'}))
  workdir = tmp_path / 'run'
  before = set(tmp_path.rglob('*'))
  with open(tmp_path / 'out.txt', 'w') as out, open(tmp_path / 'err.txt', 'w') as err:
    start = time.time()
    proc = subprocess.Popen(_command(args, workdir), cwd=tmp_path, stdout=out, stderr=err,
                            env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT)})
    watchdog = threading.Timer(WATCHDOG_S, proc.kill)  # a case that hangs fails, not the suite
    watchdog.start()
    _, status, usage = os.wait4(proc.pid, 0)  # its CPU time, whatever the machine's load
    watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
  stderr = (tmp_path / 'err.txt').read_text()
  assert proc.returncode == 2, stderr[-3000:]
  assert message in stderr, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert not workdir.exists()
  written = set(tmp_path.rglob('*')) - before - {tmp_path / 'out.txt', tmp_path / 'err.txt'}
  assert not [p for p in written if 'cache' not in p.parts], written  # a data cache may stay
  cpu = usage.ru_utime + usage.ru_stime
  assert cpu < CPU_SECONDS, f'{cpu:.1f} s of CPU time ({time.time() - start:.1f} s wall)'


def test_wandb_without_the_package_is_refused_up_front(tmp_path):
  try:
    import wandb  # noqa: F401, PLC0415
    pytest.skip('wandb is installed')
  except ImportError:
    pass
  proc = subprocess.run([sys.executable, '-m', 'llmjax.main', '--config', TINY,
                         '--config.metrics.wandb=True', f'--workdir={tmp_path}/run'],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT)})
  assert proc.returncode == 2 and 'needs the wandb package' in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / 'run').exists()
