"""python -m llmjax.eval on a tiny run trained here: the table, RUN/eval/STEP.json, task
files, and bad input (exit 2, reason given, no model loaded, the folder untouched)."""

import dataclasses
import importlib.util
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import pytest
from absl import logging
from flax import nnx

from llmjax import checkpoint, configs, runs, step, train
from llmjax.eval import cli, registry, runner
from test_eval_scorer import random_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _experiment(spec: str):
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_eval_experiment', ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def train_tiny_run(root: pathlib.Path) -> pathlib.Path:
  """experiments/base.py:tiny for 3 steps on a few of llmjax's own files."""
  config = _experiment('experiments/base.py:tiny')
  config.data.source = f'files:{ROOT}/llmjax/eval/*.py'
  config.data.data_dir = str(root / 'data')
  config.data.shuffle_window = 8
  config.train.steps = 3
  config.optim.warmup_steps = 1
  config.train.eval_every = 3
  config.train.eval_batches = 1
  config.train.sample_tokens = 0
  config.metrics.tensorboard = False
  config.metrics.peak_flops_per_device = 1e9  # no matmul benchmark
  exp = configs.build(config, jax.device_count())
  logging.set_verbosity(logging.WARNING)
  train.run(exp, root / 'run', configs.as_dict(exp))
  return root / 'run'


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory) -> pathlib.Path:
  """A run folder holding a random model at step 3 (the byte tokenizer): what the CLI reads
  of a run, without the training (the slow test below trains one)."""
  workdir = tmp_path_factory.mktemp('eval_cli') / 'run'
  model = random_model()
  state = step.TrainState(step=jnp.array(3), params=nnx.state(model, nnx.Param),
                          opt_state=None, rng=None)
  ckpt = checkpoint.Checkpointer(workdir, checkpoint.CheckpointConfig(), 10)
  ckpt.save(3, state, {'iterator': None}, {})
  ckpt.close()
  config = {'model': dataclasses.asdict(model.cfg), 'data': {'tokenizer': 'byte'}}
  (workdir / 'config.json').write_text(json.dumps(config))
  return workdir


def write_jsonl(path: pathlib.Path, rows) -> pathlib.Path:
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


def mc_file(tmp_path) -> pathlib.Path:
  return write_jsonl(tmp_path / 'defs.jsonl', [
      {'id': f'd{i}', 'context': f'{word} x', 'choices': [':', ' = 1'], 'gold': 0}
      for i, word in enumerate(['def f(', 'class A', 'import os', 'def g('])])


def check_cli_on(run_dir: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
  qa = write_jsonl(tmp_path / 'qa.jsonl', [{'id': 'g', 'context': 'def ', 'target': 'main'}])
  spec = f'jsonl:{mc_file(tmp_path)}:multiple_choice'
  assert cli.main(['--workdir', str(run_dir), '--tasks', spec]) == 0
  printed = capsys.readouterr().out
  assert 'defs' in printed and 'acc_norm' in printed and 'wrote' in printed
  written = json.loads((run_dir / 'eval' / '3.json').read_text())
  assert written['step'] == 3
  assert written['tasks']['defs']['num_examples'] == 4
  assert written['tasks']['defs']['chance']['acc'] == 0.5
  # The CLI's numbers are the runner's on the same checkpoint.
  run = runs.RunFolder(run_dir)
  task = registry.resolve(spec, run.experiment.data)
  assert runner.evaluate([task], run.model(3), run.tokenizer)['defs']['acc'] == (
      written['tasks']['defs']['acc'])
  # A second task at the same step joins the first in the file.
  generate_spec = f'jsonl:{qa}:generate:max_new_tokens=4,stop=\\n'
  assert cli.main(['--workdir', str(run_dir), '--step', '3', '--tasks', generate_spec]) == 0
  written = json.loads((run_dir / 'eval' / '3.json').read_text())
  assert set(written['tasks']) == {'defs', 'qa'} and 'rougeL' in written['tasks']['qa']



def test_cli_prints_the_table_and_writes_the_step_file(run_dir, tmp_path, capsys):
  check_cli_on(run_dir, tmp_path, capsys)
  shutil.rmtree(run_dir / 'eval')


@pytest.mark.slow
def test_cli_on_a_trained_run(tmp_path, capsys):
  check_cli_on(train_tiny_run(tmp_path), tmp_path, capsys)


@pytest.fixture
def no_model(monkeypatch):
  """Loading a model fails the test: bad input must be refused before."""
  def refuse(*_, **__):
    raise AssertionError('the model was loaded')
  monkeypatch.setattr(runs.RunFolder, 'model', refuse)


ONE = {'id': 'a', 'context': 'c'}


@pytest.mark.parametrize('make_tasks, message', [
    (lambda p: 'no_such_task', "unknown task 'no_such_task'; known tasks: "),
    (lambda p: 'bogus,also_bogus', "unknown tasks 'bogus', 'also_bogus'"),
    (lambda p: f'jsonl:{p}/missing.jsonl:multiple_choice', 'no such task file'),
    (lambda p: f'jsonl:{mc_file(p)}:sorting', "unknown kind 'sorting'"),
    (lambda p: f'jsonl:{mc_file(p)}:multiple_choice:shots=3', "unknown option 'shots=3'"),
    (lambda p: f'jsonl:{write_jsonl(p / "bad.jsonl", [{**ONE, "choices": ["x"], "gold": 0}])}'
               ':multiple_choice', 'bad.jsonl:1: multiple_choice needs at least 2 choices'),
    (lambda p: f'jsonl:{write_jsonl(p / "gen.jsonl", [{**ONE, "target": "t"}])}'
               ':generate', 'generate needs max_new_tokens > 0'),
])
def test_bad_tasks_exit_2_before_the_model_loads(run_dir, tmp_path, capsys, no_model,
                                                 make_tasks, message):
  before = sorted(p.name for p in run_dir.iterdir())
  assert cli.main(['--workdir', str(run_dir), '--tasks', make_tasks(tmp_path),
                   '--no_write']) == 2
  assert message in capsys.readouterr().err
  assert sorted(p.name for p in run_dir.iterdir()) == before


def test_unknown_names_list_the_known_tasks(run_dir, capsys, no_model):
  assert cli.main(['--workdir', str(run_dir), '--tasks', 'nope']) == 2
  err = capsys.readouterr().err
  assert 'jsonl:PATH:KIND' in err
  for name in registry.known_names():
    assert name in err


def test_bad_step_and_folder_exit_2(run_dir, tmp_path, capsys, no_model):
  spec = f'jsonl:{mc_file(tmp_path)}:multiple_choice'
  assert cli.main(['--workdir', str(run_dir), '--step', '99', '--tasks', spec]) == 2
  assert 'has no step 99; it has [' in capsys.readouterr().err
  assert cli.main(['--workdir', str(tmp_path / 'none'), '--tasks', spec]) == 2
  assert 'does not exist; expected a run folder' in capsys.readouterr().err
  assert cli.main(['--workdir', str(run_dir), '--tasks', spec, '--max_examples', '0']) == 2
  assert '--max_examples must be >= 1' in capsys.readouterr().err
  assert cli.main(['--workdir', str(run_dir), '--tasks', spec, '--rows', '0']) == 2
  assert '--rows must be >= 1, got 0' in capsys.readouterr().err
