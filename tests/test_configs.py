"""Config validation: each invalid case fails before any work with a message naming the field."""

import pathlib
import subprocess
import sys

import pytest
from ml_collections import config_dict

from llmjax import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(**overrides):
  config = configs.defaults()
  config.model.preset = 'ladder-64x2'
  for dotted, value in overrides.items():
    section, field = dotted.split('__')
    config[section][field] = value
  return config


def test_defaults_build_and_presets_resolve():
  exp = configs.build(_config(model__num_layers=3), num_devices=1)
  assert (exp.model.d_model, exp.model.num_layers, exp.model.head_dim) == (64, 3, 32)
  assert exp.mesh.data == -1 and exp.optim.name == 'adamw'


def test_head_dim_defaults_to_width_over_heads():
  config = configs.defaults()
  config.model.d_model, config.model.num_heads, config.model.num_kv_heads = 96, 3, 3
  assert configs.build(config, num_devices=1).model.head_dim == 32


@pytest.mark.parametrize('overrides, message', [
    (dict(model__d_model=65), r'model.d_model=65 is not divisible by model.num_heads=2'),
    (dict(model__num_heads=4, model__num_kv_heads=3),
     r'model.num_heads=4 is not divisible by model.num_kv_heads=3'),
    (dict(train__steps=0), r'config.train.steps: must be positive, got 0'),
    (dict(optim__lr=-1.0), r'config.optim.lr: must be positive, got -1.0'),
    (dict(model__preset='gpt5'), r"config.model.preset: unknown preset 'gpt5'; known: gpt2-small"),
    (dict(model__norm='batchnorm'),
     r"config.model.norm: unknown option 'batchnorm'; choose one of layernorm, rmsnorm"),
    (dict(model__remat='some'), r"config.model.remat: unknown option 'some'"),
    (dict(optim__name='sgd'), r"config.optim.name: unknown option 'sgd'"),
    (dict(optim__schedule='linear'), r"config.optim.schedule: unknown option 'linear'"),
    (dict(mesh__data=3), r"config.mesh: mesh shape \{'data': 3, 'fsdp': 1, 'tensor': 1\} has 3 "
                         r"devices but 4 are available"),
    (dict(data__global_batch_size=6),
     r'config.data.global_batch_size=6 is not divisible by the data-parallel size 4'),
    (dict(data__seq_len=1024), r'config.data.seq_len=1024 exceeds model.max_len=256'),
    (dict(model__dropout=1.5), r'config.model.dropout=1.5 must be in \[0, 1\)'),
    (dict(model__vocab_size=100), r"config.model.vocab_size=100 is smaller than the vocabulary "
                                  r"of data.tokenizer='byte' \(257 tokens\)"),
    (dict(data__tokenizer='sentencepiece:/no/sp.model'),
     r'config.data: tokenizer file not found: /no/sp.model'),
    (dict(data__source='http://x'), r"config.data: unknown data source 'http://x'"),
    (dict(data__packing='greedy'), r"config.data.packing: unknown option 'greedy'"),
    (dict(data__source='synthetic:vocab=64', train__sample_tokens=5, train__sample_prompt='def f'),
     r"config.train.sample_prompt: synthetic tokens are written as space-separated state ids"),
])
def test_invalid_config_is_reported_by_field(overrides, message):
  config = _config(**overrides)
  if 'model__d_model' in overrides or 'model__num_heads' in overrides:
    config.model.head_dim = 16
  if 'data__seq_len' in overrides:
    config.model.max_len = 256
  with pytest.raises(configs.ConfigError, match=message):
    configs.build(config, num_devices=4)


def test_wrong_type_in_a_config_file():
  # ConfigDict refuses a wrong type on assignment; a file can still build a section anew.
  config = _config()
  config.train = config_dict.ConfigDict({**config.train.to_dict(), 'steps': '10'})
  with pytest.raises(configs.ConfigError, match=r"config.train.steps: expected int, got str '10'"):
    configs.build(config, num_devices=1)


def test_unknown_keys_are_reported_with_a_suggestion():
  config = _config()
  config.model.d_modle = 3
  config.trian = {'steps': 1}
  with pytest.raises(configs.ConfigError) as error:
    configs.build(config, num_devices=1)
  assert "config.model.d_modle: unknown key; did you mean 'd_model'?" in str(error.value)
  assert "config.trian: unknown key; did you mean 'train'?" in str(error.value)


def test_all_problems_reported_at_once():
  with pytest.raises(configs.ConfigError) as error:
    configs.build(_config(train__steps=-1, optim__lr=0.0), num_devices=1)
  assert 'train.steps' in str(error.value) and 'optim.lr' in str(error.value)


def _cli(tmp_path, *flags):
  workdir = tmp_path / 'run'
  proc = subprocess.run([sys.executable, '-m', 'llmjax.main', '--config',
                         str(ROOT / 'experiments/base.py:tiny'), f'--workdir={workdir}', *flags],
                        capture_output=True, text=True, cwd=tmp_path, timeout=300)
  return proc, workdir


@pytest.mark.parametrize('flag, message', [
    ('--config.model.dmodel=64', 'dmodel'),  # misspelt override: the locked config refuses it
    ('--config.train.steps=abc', 'steps'),
    ('--config.model.d_model=33', 'config.model.d_model=33 is not divisible'),
    ('--config.mesh.fsdp=3', 'config.mesh'),
])
def test_cli_rejects_bad_config_before_writing_anything(tmp_path, flag, message):
  proc, workdir = _cli(tmp_path, flag)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not workdir.exists()
