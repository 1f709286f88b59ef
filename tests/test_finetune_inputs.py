"""Bad fine-tune input: one clear message, exit status 2, before any compile, nothing
written (the pattern of test_bad_inputs.py, for finetune.* and its data files)."""

import json
import os
import pathlib
import resource
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / 'experiments/base.py:tiny')
CPU_SECONDS = 6.0  # of the refusing process: as in test_bad_inputs (two Python starts, imports)


def _jsonl(tmp: pathlib.Path, name: str, records) -> str:
  path = tmp / name
  path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records))
  return f'jsonl:{path}'


def _classify(tmp, records, *extra):
  return ['--config', TINY, '--config.finetune.task=classify', '--config.data.packing=first_fit',
          f'--config.finetune.train_data={_jsonl(tmp, "train.jsonl", records)}',
          f'--config.finetune.eval_data={_jsonl(tmp, "eval.jsonl", [records[0]])}', *extra]


LABELS = "--config.finetune.labels=('yes','no')"
GOOD = {'text': 'a', 'label': 'yes'}
CASES = {
    'label_missing': (lambda t: _classify(t, [GOOD, {'text': 'b'}], LABELS),
                      "train.jsonl line 2: label field 'label' missing"),
    'label_not_declared': (lambda t: _classify(t, [GOOD, GOOD, {'text': 'c', 'label': 'maybe'}],
                                               LABELS),
                           "train.jsonl line 3: label 'maybe' is not in the declared set"),
    'label_index_out_of_range': (lambda t: _classify(t, [{'text': 'a', 'label': 2}],
                                                     '--config.finetune.num_labels=2'),
                                 "line 1: label 2 is not in the declared set ['0', '1']"),
    'invalid_json': (lambda t: _classify(t, [GOOD, '{"text": '], LABELS),
                     'train.jsonl line 2: invalid JSON'),
    'classify_without_labels': (lambda t: _classify(t, [GOOD]),
                                'finetune.task=classify needs finetune.labels'),
    'prompt_too_long': (lambda t: ['--config', TINY, '--config.finetune.task=sft',
                                   '--config.data.packing=first_fit',
                                   f'--config.finetune.train_data=' + _jsonl(
                                       t, 'train.jsonl', [{'prompt': 'p' * 500,
                                                           'completion': ' c'}]),
                                   f'--config.finetune.eval_data=' + _jsonl(
                                       t, 'eval.jsonl', [{'prompt': 'p', 'completion': 'c'}])],
                        'train.jsonl line 1: 503 tokens exceed data.seq_len=64; set '
                        'finetune.truncate=left'),
    'sft_field_missing': (lambda t: ['--config', TINY, '--config.finetune.task=sft',
                                     '--config.data.packing=first_fit',
                                     '--config.finetune.train_data=' + _jsonl(
                                         t, 'train.jsonl', [{'prompt': 'p'}]),
                                     '--config.finetune.eval_data=' + _jsonl(
                                         t, 'eval.jsonl', [{'prompt': 'p'}])],
                          "train.jsonl line 1: field 'completion' missing"),
    'concat_split_packing': (lambda t: _classify(t, [GOOD], LABELS, '--config.data.packing='
                                                 'concat_split'),
                             'config.data.packing=\'concat_split\': finetune.task=classify packs'),
    'unknown_task': (lambda t: ['--config', TINY, '--config.finetune.task=sfft'],
                     'config.finetune.task'),
    'labels_without_own_token': (lambda t: _classify(t, [{'text': 'a', 'label': 'no'}],
                                                     "--config.finetune.labels=('no','not')"),
                                 'each needs a token of its own'),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_finetune_input_is_refused_up_front(name, tmp_path):
  make_args, message = CASES[name]
  args = make_args(tmp_path)
  workdir = tmp_path / 'run'
  before = set(tmp_path.rglob('*'))
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = subprocess.run([sys.executable, '-m', 'llmjax.main', *args, f'--workdir={workdir}'],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT)})
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
  stderr = proc.stderr
  assert proc.returncode == 2, stderr[-3000:]
  assert message in stderr, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert not workdir.exists() and set(tmp_path.rglob('*')) == before
  assert cpu < CPU_SECONDS, f'{cpu:.1f} s of CPU time: refused after real work?'
