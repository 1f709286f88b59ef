"""The input pipeline: sources, splits, packing, resumable iterators, multi-host slicing."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import text_corpus
from llmjax.data import pipeline, pystdlib
from llmjax.data.sources import DataError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _docs(n=40, seed=0):
  rng = np.random.default_rng(seed)
  return [bytes(rng.integers(97, 123, rng.integers(1, 120)).astype(np.uint8)) for _ in range(n)]


def _take(dataset, n):
  it = iter(dataset)
  return [next(it) for _ in range(n)]


def test_pystdlib_split_is_whole_files_seeded_and_about_one_percent():
  files = pystdlib.source_files()
  train, held_out = pystdlib.split(files, 0.01, seed=0)
  assert set(train).isdisjoint(held_out) and len(train) + len(held_out) == len(files)
  share = sum(p.stat().st_size for p in held_out) / sum(p.stat().st_size for p in files)
  assert 0.005 < share <= 0.01
  assert pystdlib.split(files, 0.01, seed=0)[1] == held_out
  assert pystdlib.split(files, 0.01, seed=1)[1] != held_out


@pytest.mark.parametrize('packing', pipeline.PACKINGS)
def test_packing_loses_and_duplicates_no_token(packing):
  docs = _docs()
  cfg = pipeline.DataConfig(seq_len=16, global_batch_size=4, packing=packing, shuffle_window=1)
  total_targets = sum(len(d) for d in docs)  # each byte is a target once per epoch
  seen = []
  for item in _take(pipeline.train_dataset(text_corpus(docs), cfg), 200):
    b = item['batch']
    if item['stats']['epoch'] > 0:
      break
    seen += [tuple(row[w > 0]) for row, w in zip(b['targets'], b['weights'])]
  counted = sum(len(r) for r in seen)
  # Whole batches of epoch 0: every target counted at most once, nearly all present.
  assert counted <= total_targets and counted > total_targets - 4 * 16 * 2
  by_value = np.bincount(np.concatenate([np.array(r, int) for r in seen]), minlength=257)
  expected = np.bincount(np.concatenate([np.frombuffer(d, np.uint8) for d in docs]), minlength=257)
  assert np.all(by_value <= expected)


@pytest.mark.parametrize('packing', pipeline.PACKINGS)
def test_rows_mark_documents_positions_and_padding(packing):
  docs = [b'abcde', b'xyz', b'0123456789']
  cfg = pipeline.DataConfig(seq_len=8, global_batch_size=1, packing=packing, seed=3)
  for item in _take(pipeline.train_dataset(text_corpus(docs), cfg), 6):
    row = {k: v[0] for k, v in item['batch'].items()}
    seg, pos, w = row['segment_ids'], row['positions'], row['weights']
    assert np.all((w > 0) == (seg > 0))  # padding never counts
    for s in set(seg[seg > 0].tolist()):
      p = pos[seg == s]
      assert np.array_equal(p, np.arange(p[0], p[0] + len(p)))  # consecutive in a document
      targets = row['targets'][seg == s]
      inputs = row['inputs'][seg == s]
      assert np.array_equal(inputs[1:], targets[:-1])  # next-token pairs within the document
      if inputs[0] == 256:  # a document starts with end-of-text, at position 0
        assert p[0] == 0


@pytest.mark.parametrize('packing, objective', [(p, 'lm') for p in pipeline.PACKINGS] +
                         [('concat_split', 'mlm')])
def test_resume_from_saved_iterator_state_in_a_new_process(tmp_path, packing, objective):
  docs = _docs()
  cfg = pipeline.DataConfig(seq_len=16, global_batch_size=4, seed=7, shuffle_window=64,
                            packing=packing, objective=objective)
  it = iter(pipeline.train_dataset(text_corpus(docs), cfg))
  for _ in range(13):  # mid-epoch
    next(it)
  state = it.get_state()
  # Masked rows: the masks (inputs) and the selected tokens (weights) come back too.
  expected = [(lambda b: b['inputs'].tolist() + b['weights'].tolist())(next(it)['batch'])
              for _ in range(5)]
  (tmp_path / 'state.json').write_text(json.dumps(state))
  script = f'''
import json, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
import numpy as np
from conftest import text_corpus
from test_data import _docs
from llmjax.data import pipeline
cfg = pipeline.DataConfig(seq_len=16, global_batch_size=4, seed=7, shuffle_window=64,
                          packing={packing!r}, objective={objective!r})
it = iter(pipeline.train_dataset(text_corpus(_docs()), cfg))
pipeline.restore_state(it, json.loads(open({str(tmp_path / 'state.json')!r}).read()))
rows = [next(it)['batch'] for _ in range(5)]
print(json.dumps([b['inputs'].tolist() + b['weights'].tolist() for b in rows]))
'''
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True)
  assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_global_batch_is_the_same_for_any_number_of_processes():
  docs = _docs()
  cfg = pipeline.DataConfig(seq_len=16, global_batch_size=8, seed=1, shuffle_window=32)
  one = [x['batch'] for x in _take(pipeline.train_dataset(text_corpus(docs), cfg), 6)]
  for count in (2, 4):
    per_process = [[x['batch'] for x in _take(
        pipeline.train_dataset(text_corpus(docs), cfg, index, count), 6)]
                   for index in range(count)]
    for step in range(6):
      for key in one[step]:
        joined = np.concatenate([per_process[i][step][key] for i in range(count)])
        np.testing.assert_array_equal(joined, one[step][key])


def test_token_accounting_counts_epochs_and_unique_tokens():
  docs = [b'ab' * 20] * 3  # 120 targets per epoch
  cfg = pipeline.DataConfig(seq_len=10, global_batch_size=2, shuffle_window=1)
  items = _take(pipeline.train_dataset(text_corpus(docs), cfg), 12)  # 240 rows' worth
  assert sum(i['stats']['tokens'] for i in items) == 12 * 2 * 10  # concat_split: no padding
  assert sum(i['stats']['unique_tokens'] for i in items) == 120
  assert items[-1]['stats']['epoch'] == 1


def test_eval_batches_cover_the_split_once():
  docs = _docs(10)
  cfg = pipeline.DataConfig(seq_len=16, global_batch_size=4)
  items = pipeline.eval_batches(text_corpus(docs), cfg)
  assert sum(int((i['batch']['weights'] > 0).sum()) for i in items) == sum(len(d) for d in docs)
  assert sum(i['stats']['bytes'] for i in items) == sum(len(d) for d in docs)
  assert all(i['batch']['inputs'].shape == (4, 16) for i in items)


def test_tfds_dataset_end_to_end_with_mock_data(tmp_path):
  cfg = pipeline.DataConfig(source='tfds:tiny_shakespeare', train_split='train',
                            eval_split='test', seq_len=16, global_batch_size=2,
                            data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    corpus = pipeline.load(cfg)
    batch = next(iter(pipeline.train_dataset(corpus, cfg)))['batch']
    assert batch['inputs'].shape == (2, 16) and corpus.fingerprint.startswith('tfds-')
    with pytest.raises(DataError, match="no feature 'body'"):
      pipeline.load(dataclasses.replace(cfg, text_key='body'))
  with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_dataset'"):
    pipeline.load(dataclasses.replace(cfg, source='tfds:no_such_dataset'))


def _files_cfg(tmp_path, pattern):
  return pipeline.DataConfig(source=f'files:{pattern}', data_dir=str(tmp_path / 'cache'),
                             eval_fraction=0.3, seq_len=16, global_batch_size=2)


def test_files_source_is_cached_by_content(tmp_path):
  folder = tmp_path / 'texts'
  folder.mkdir()
  for i in range(4):
    (folder / f'{i}.txt').write_text(f'document number {i}\n' * (i + 3))
  cfg = _files_cfg(tmp_path, f'{folder}/*.txt')
  first = pipeline.load(cfg)
  again = pipeline.load(cfg)
  assert again.fingerprint == first.fingerprint
  builds = list((tmp_path / 'cache' / 'text_files').iterdir())
  assert len(builds) == 1
  stamp = next(builds[0].rglob('*.array_record*')).stat().st_mtime_ns
  pipeline.load(cfg)
  assert next(builds[0].rglob('*.array_record*')).stat().st_mtime_ns == stamp  # reused
  (folder / '2.txt').write_text('changed\n')
  changed = pipeline.load(cfg)
  assert changed.fingerprint != first.fingerprint
  assert len(list((tmp_path / 'cache' / 'text_files').iterdir())) == 2  # rebuilt
  texts = [changed.train[i] for i in range(len(changed.train))] + [
      changed.eval[i] for i in range(len(changed.eval))]
  assert b'changed\n' in texts


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, capsys):
  folder = tmp_path / 'texts'
  folder.mkdir()
  lines = [json.dumps({'body': f'line {i} ' * 5}) for i in range(10)]
  (folder / 'a.jsonl').write_text('\n'.join(lines) + '\n')
  cfg = dataclasses.replace(_files_cfg(tmp_path, f'{folder}/*.jsonl'), text_key='body')
  corpus = pipeline.load(cfg)
  assert len(corpus.train) + len(corpus.eval) == 10
  record = next((tmp_path / 'cache').rglob('*train.array_record*'))
  record.write_bytes(record.read_bytes()[:-7])  # truncated
  corpus = pipeline.load(cfg)
  assert 'corrupt or incomplete; rebuilding' in capsys.readouterr().out
  assert sorted(corpus.train[i] for i in range(len(corpus.train)))[0].startswith(b'line')


def test_bad_inputs_name_their_cause(tmp_path):
  with pytest.raises(DataError, match='matches no file'):
    pipeline.load(_files_cfg(tmp_path, f'{tmp_path}/nothing/*.txt'))
  (tmp_path / 'one.jsonl').write_text(json.dumps({'text': 'x'}) + '\n' +
                                      json.dumps({'content': 'y'}) + '\n')
  with pytest.raises(DataError, match=r"line 2 has no field 'text'"):
    pipeline.load(_files_cfg(tmp_path, f'{tmp_path}/one.jsonl'))
  (tmp_path / 'single.txt').write_text('only one document')
  with pytest.raises(DataError, match='need 2 or more'):
    pipeline.load(_files_cfg(tmp_path, f'{tmp_path}/single.txt'))
  with pytest.raises(DataError, match='unknown data source'):
    pipeline.load(pipeline.DataConfig(source='ftp://x'))
  with pytest.raises(DataError, match='tokenizer file not found'):
    pipeline.load(pipeline.DataConfig(tokenizer='sentencepiece:/no/such.model',
                                      data_dir=str(tmp_path)))


def test_cli_stops_on_bad_data_before_creating_the_workdir(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/base.py:tiny'),
       f'--workdir={workdir}', f'--config.data.source=files:{tmp_path}/none/*.txt',
       f'--config.data.data_dir={tmp_path}/cache'],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and 'matches no file' in proc.stderr
  assert not workdir.exists()



_LOAD = """
import sys, time
from llmjax.data import pipeline
start = float(sys.argv[3])
while time.time() < start:  # all builders start together
  time.sleep(0.001)
cfg = pipeline.DataConfig(source='files:' + sys.argv[1], data_dir=sys.argv[2], eval_fraction=0.3)
corpus = pipeline.load(cfg)
print(len(corpus.train) + len(corpus.eval), corpus.fingerprint)
"""


def test_concurrent_first_builds_of_one_cache_are_safe_and_write_nothing_else(tmp_path):
  """Processes building the same cache at once (the hosts of one run, parallel
  sweep tasks) all get it; no temporary folder is left in data_dir or in TMPDIR."""
  folder = tmp_path / 'texts'
  folder.mkdir()
  for i in range(6):
    (folder / f'{i}.txt').write_text(f'document {i}\n' * 50)
  temp = tmp_path / 'tmpdir'
  temp.mkdir()
  env = {**os.environ, 'TMPDIR': str(temp), 'JAX_PLATFORMS': 'cpu'}
  start = time.time() + 8  # after every interpreter has imported TFDS
  procs = [subprocess.Popen([sys.executable, '-c', _LOAD, f'{folder}/*.txt',
                             str(tmp_path / 'cache'), str(start)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(4)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  results = {out.splitlines()[-1] for out, _ in outs}
  assert len(results) == 1 and results.pop().startswith('6 ')
  assert [p.name for p in (tmp_path / 'cache/text_files').iterdir()] == [
      outs[0][0].split()[-1]]  # the cache alone: no build folder left beside it
  assert list(temp.iterdir()) == []
