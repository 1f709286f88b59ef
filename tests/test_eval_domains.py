"""Held-out eval domains: the path rule, held-out files only, config errors, and a run that
reports eval/<domain>/loss in metrics.jsonl and in the sweep results table."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from llmjax import configs, train
from llmjax.data import domains, pipeline, pystdlib
from llmjax.scaling import results

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('path,domain', [
    ('test/test_json/test_scanstring.py', 'tests'), ('idlelib/idle_test/test_help.py', 'tests'),
    ('lib2to3/tests/data/infinite_recursion.py', 'tests'), ('ctypes/test/__init__.py', 'tests'),
    ('sqlite3/test_x.py', 'tests'), ('encodings/cp1125.py', 'text'),
    ('pydoc_data/topics.py', 'text'), ('unittest/case.py', 'code'), ('json/decoder.py', 'code'),
    ('sched.py', 'code'), ('test_x_helpers/encodings.py', 'code')])
def test_domain_is_a_rule_on_the_path(path, domain):
  assert pystdlib.domain(path) == domain


@pytest.mark.parametrize('eval_fraction,split_seed', [(0.01, 0), (0.03, 5)])
def test_domains_hold_held_out_files_only(eval_fraction, split_seed):
  cfg = pipeline.DataConfig(eval_fraction=eval_fraction, split_seed=split_seed)
  root = pystdlib.stdlib_root()
  train_files, held_out = pystdlib.split(pystdlib.source_files(), eval_fraction, split_seed)
  train_files = {p.relative_to(root).as_posix() for p in train_files}
  held_out = {p.relative_to(root).as_posix() for p in held_out}
  seen = []
  for subset in pystdlib.DOMAINS:
    if not pystdlib.held_out_files(eval_fraction, split_seed, subset):
      continue
    corpus = domains.open_domain(f'pystdlib:{subset}', cfg)
    files = corpus.info['files']
    assert files and set(files) <= held_out and not set(files) & train_files
    assert all(pystdlib.domain(f) == subset for f in files)
    assert [bytes(d) for d in corpus.eval] == [(root / f).read_bytes() for f in files]
    seen += files
  assert sorted(seen) == sorted(held_out)  # the domains partition the held-out files


def _base_config():
  spec = importlib.util.spec_from_file_location('_domains_experiment', ROOT / 'experiments/base.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('tiny')


@pytest.mark.parametrize('entries,source,message', [
    (('stdlib_doc',), 'pystdlib', "unknown domain 'stdlib_doc'; name one of stdlib_code"),
    (('Bad=pystdlib',), 'pystdlib', "'Bad=pystdlib': a domain name is lower-case"),
    (('a=pystdlib', 'a=pystdlib:code'), 'pystdlib', "domain 'a' is named twice"),
    (('a=web:x',), 'pystdlib', "a=web:x: unknown source kind 'web'"),
    (('a=pystdlib:nosuchpkg',), 'pystdlib', "unknown subset 'nosuchpkg'"),
    (('stdlib_text',), 'pystdlib', 'stdlib_text=pystdlib:text: no held-out file is in it at '
                                   'data.eval_fraction=0.01'),
    (('a=files:no/such/*.txt',), 'pystdlib', 'files:no/such/*.txt matches no file'),
    (('a=synthetic:seed=3',), 'pystdlib', "the run trains on 'pystdlib', whose tokens mean"),
    (('stdlib_code',), 'synthetic:vocab=16', 'a domain must use the same tokens'),
    (('a=synthetic:vocab=8',), 'synthetic:vocab=16', 'vocab=8, but the run trains on vocab=16'),
    (('a=synthetic:vocab=16,bogus=1',), 'synthetic:vocab=16', "unknown key 'bogus'"),
])
def test_bad_domains_are_config_errors(entries, source, message):
  config = _base_config()
  config.eval.domains = entries
  config.data.source = source
  if source.startswith('synthetic'):
    config.train.sample_tokens = 0
  with pytest.raises(configs.ConfigError, match='config.eval.domains: ') as error:
    configs.build(config, jax.device_count())
  assert message in str(error.value)


def test_every_bad_domain_is_reported_at_once():
  config = _base_config()
  config.eval.domains = ('nope', 'x=files:/no/such/*.txt', 'stdlib_code', 'stdlib_code')
  with pytest.raises(configs.ConfigError) as error:
    configs.build(config, jax.device_count())
  lines = str(error.value).splitlines()
  assert len(lines) == 3 and "unknown domain 'nope'" in lines[0]
  assert 'matches no file' in lines[1] and "'stdlib_code' is named twice" in lines[2]


def test_a_files_domain_is_the_held_out_split_of_its_files(tmp_path):
  for i in range(12):
    (tmp_path / f'doc{i}.txt').write_text(f'document {i} ' * (i + 1))
  glob = f'{tmp_path}/doc*.txt'
  cfg = pipeline.DataConfig(source=f'files:{glob}', data_dir=str(tmp_path / 'cache'),
                            eval_fraction=0.3)
  corpus = domains.load((f'mine=files:{glob}',), cfg)['mine']
  run = pipeline.load(cfg)  # the run's own split of the same files: the same documents
  assert len(corpus.train) == 0 and 0 < len(corpus.eval) == len(run.eval) < 12
  assert [corpus.eval[i] for i in range(len(run.eval))] == [run.eval[i] for i in
                                                             range(len(run.eval))]
  with pytest.raises(pipeline.DataError, match=r'eval.domains: one=files:.*doc0.txt: .*holds 1 '
                                               r'document'):
    domains.load((f'one=files:{tmp_path}/doc0.txt',), cfg)


def test_good_domains_build():
  config = _base_config()
  config.eval.domains = ('stdlib_code', 'sched=pystdlib:sched',
                         f'own=files:{ROOT}/tests/test_eval_*.py')
  assert configs.build(config, jax.device_count()).eval.domains == config.eval.domains
  config.data.source, config.train.sample_tokens = 'synthetic:vocab=16', 0
  config.eval.domains = ('other=synthetic:vocab=16,seed=7',)
  configs.build(config, jax.device_count())


RUNS = {  # data.source, eval.domains; `same` reads the run's own held-out split, in its order
    'synthetic': ('synthetic:vocab=16,doc_len=64',
                  ('same=synthetic:vocab=16,doc_len=64', 'other=synthetic:vocab=16,seed=7')),
    'pystdlib': ('pystdlib', ('stdlib_tests', 'stdlib_code', 'sched=pystdlib:sched')),
}


TASKS = {  # eval.tasks, eval.tasks_every
    'synthetic': (('synthetic_chain',), 0), 'pystdlib': (('code_next_line', 'code_classify'), 2)}


@pytest.mark.slow  # a training run with tasks and domains: ~30 s of CPU
@pytest.mark.parametrize('run', ['synthetic', 'pystdlib'])
def test_a_run_reports_each_domain_in_metrics_and_the_results_table(tmp_path, run):
  source, entries = RUNS[run]
  config = _base_config()
  config.data.source, config.eval.domains = source, entries
  config.train.steps, config.train.eval_every, config.train.log_every = 4, 2, 2
  config.optim.warmup_steps, config.train.eval_batches, config.train.sample_tokens = 1, 1, 0
  config.metrics.tensorboard, config.checkpoint.keep_log_spaced = False, False
  task_names, every = TASKS[run]
  config.eval.tasks, config.eval.tasks_every, config.eval.tasks_max_examples = (
      ','.join(task_names), every, 8)
  exp = configs.build(config, jax.device_count())
  workdir = tmp_path / 'sweep' / 'trials' / 't0'
  train.run(exp, workdir, configs.as_dict(exp))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in records if 'eval/loss' in r]
  assert [r['step'] for r in evals] == [2, 4]
  names = list(domains.parse(entries))
  for r in evals:
    for name in names:
      loss, bpb = r[f'eval/{name}/loss'], r[f'eval/{name}/bits_per_byte']
      assert 0 < loss < 10
      np.testing.assert_allclose(bpb, loss / np.log(2), rtol=1e-6)  # bytes: one token each
    if 'same' in names:
      assert r['eval/same/loss'] == r['eval/loss']  # the same split, the same evaluation
  assert len({evals[-1][f'eval/{name}/loss'] for name in names}) == len(names)
  scored = [r for r in records if any(k.startswith('task/') for k in r)]
  assert [r['step'] for r in scored] == ([2, 4] if every else [4])  # and at the last step
  saved = json.loads((workdir / 'eval' / '4.json').read_text())['tasks']
  for task in task_names:
    acc = scored[-1][f'task/{task}/acc']
    assert 0 <= acc <= 1 and saved[task]['acc'] == acc and saved[task]['num_examples'] == 8
    assert f'task/{task}/acc_stderr' in scored[-1]

  sweep = tmp_path / 'sweep'
  (sweep / 'sweep.json').write_text(json.dumps({'trials': [
      {'name': 't0', 'N': 0, 'N_nonembedding': 0, 'D': 0, 'C': 0, 'steps': 4}]}))
  (workdir / 'trial.json').write_text(json.dumps({'status': 'done'}))
  table = results.collect(sweep)
  assert list(table.columns[:len(results.COLUMNS)]) == results.COLUMNS
  assert table.loc[0, 'eval_accuracy'] == evals[-1]['eval/accuracy']
  for name in names:
    for metric in ('loss', 'bits_per_byte', 'accuracy'):
      column = f'eval/{name}/{metric}'
      assert table.loc[0, column] == evals[-1][column]
  for task in task_names:
    assert table.loc[0, f'task/{task}/acc'] == scored[-1][f'task/{task}/acc']


def test_unknown_tasks_are_refused_before_the_workdir_exists(tmp_path):
  config = _base_config()
  config.data.source, config.train.sample_tokens = 'synthetic:vocab=16,doc_len=64', 0
  config.eval.tasks = 'synthetic_chain,no_such_task'
  exp = configs.build(config, jax.device_count())
  with pytest.raises(pipeline.DataError, match="config.eval.tasks: unknown task 'no_such_task'"):
    train.run(exp, tmp_path / 'run', configs.as_dict(exp))
  assert not (tmp_path / 'run').exists()
