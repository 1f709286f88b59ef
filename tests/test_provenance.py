"""Provenance of a plain run: provenance.json (commit, versions, devices, parameter counts,
peak FLOP/s), the config as TensorBoard hparams, the sample as a text summary, a profile
trace of the chosen steps; and a rerun is not a changed config."""

import json
import pathlib
import struct

import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

from llmjax import configs, flops, metrics, provenance, resume, train


def _tiny_synthetic(steps=4, **overrides):
  """A seconds-long run on synthetic data (no corpus to build); train.sample_prompt is left
  at its default, which a synthetic source must accept."""
  config = configs.defaults()
  config.model.preset = 'ladder-64x2'
  config.model.d_model, config.model.mlp_dim, config.model.vocab_size = 32, 64, 33
  config.model.max_len = config.data.seq_len = 32
  config.data.source = 'synthetic:vocab=32,doc_len=32'
  config.data.global_batch_size = 8
  config.optim.warmup_steps = 1
  config.train.steps = config.train.eval_every = steps
  config.train.eval_batches, config.train.sample_tokens = 1, 5
  config.checkpoint.every_steps = steps
  config.metrics.profile_steps = '2,2'
  for dotted, value in overrides.items():
    section, field = dotted.split('__')
    config[section][field] = value
  return configs.build(config, num_devices=8)


@pytest.fixture(scope='module')
def run_folder(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('prov') / 'run'
  exp = _tiny_synthetic()
  train.run(exp, workdir, configs.as_dict(exp))
  return workdir, exp


def _events(folder: pathlib.Path) -> list:
  """Every summary value of a TensorBoard event folder (TFRecord framing: length, its
  CRC, the record, its CRC)."""
  values = []
  for path in folder.glob('events.out.tfevents.*'):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (size,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + size])
      values += list(event.summary.value)
      i += 12 + size + 4
  return values


def test_provenance_json_records_code_machine_and_size(run_folder):
  workdir, exp = run_folder
  record = json.loads((workdir / provenance.FILE).read_text())
  for key in ('git_commit', 'versions', 'devices', 'param_counts', 'peak_flops_per_device',
              'peak_flops_source', 'start_step'):
    assert key in record, key
  assert set(record['versions']) == set(provenance.PACKAGES)
  assert record['versions']['jax'] and record['versions']['orbax-checkpoint']
  assert record['devices'] == '8 x cpu' and record['start_step'] == 0
  assert record['param_counts'] == flops.param_counts(exp.model)
  assert record['peak_flops_per_device'] > 0
  commit = record['git_commit'].removesuffix('+dirty')
  assert len(commit) == 40 and int(commit, 16) >= 0  # a checkout: a full hexadecimal commit
  assert 'git_commit' not in json.loads((workdir / 'config.json').read_text())


def test_a_rerun_keeps_earlier_provenance_and_is_no_config_change(run_folder, tmp_path):
  workdir, exp = run_folder
  folder = tmp_path / 'copy'
  folder.mkdir()
  (folder / 'config.json').write_text((workdir / 'config.json').read_text())
  first = json.loads((workdir / provenance.FILE).read_text())
  (folder / provenance.FILE).write_text(json.dumps(first))
  provenance.write(folder, {**first, 'git_commit': 'another', 'start_step': 4})
  record = json.loads((folder / provenance.FILE).read_text())
  assert record['git_commit'] == 'another' and record['earlier'][0]['start_step'] == 0
  saved = json.loads((workdir / 'config.json').read_text())
  assert resume.changes(saved, saved) == []


def test_tensorboard_gets_hparams_and_the_sample(run_folder):
  workdir, exp = run_folder
  values = _events(workdir / 'tensorboard')
  by_tag = {v.tag: v for v in values}
  start = HParamsPluginData.FromString(
      by_tag['_hparams_/session_start_info'].metadata.plugin_data.content).session_start_info
  assert start.hparams['model.d_model'].number_value == 32
  assert start.hparams['data.source'].string_value == 'synthetic:vocab=32,doc_len=32'
  assert start.hparams['optim.name'].string_value == 'adamw'
  experiment = HParamsPluginData.FromString(
      by_tag['_hparams_/experiment'].metadata.plugin_data.content).experiment
  assert {m.name.tag for m in experiment.metric_infos} == set(metrics.HPARAM_METRICS)
  text = by_tag['sample/text_summary']
  assert text.metadata.plugin_data.plugin_name == 'text'
  assert text.tensor.string_val[0].decode() == (workdir / 'sample.txt').read_text()


def test_synthetic_sample_starts_a_document_by_default(run_folder):
  workdir, exp = run_folder
  assert exp.train.sample_prompt == ''  # the text default 'def ' is no synthetic prompt
  tokens = (workdir / 'sample.txt').read_text().split()
  assert len(tokens) == 5 and all(0 <= int(t) <= 32 for t in tokens)
  info = json.loads((workdir / 'config.json').read_text())['data_info']
  assert 'synthetic token' in info['bits_per_byte_unit']


def test_profile_trace_is_written_into_the_run_folder(run_folder):
  workdir, _ = run_folder
  traces = list((workdir / 'profile').glob('plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_hparam_values_flatten_every_field_to_a_shown_type():
  flat = metrics.hparam_values({'model': {'d_model': 32, 'tie': True}, 'init_from': '',
                                'eval': {'domains': ('a', 'b')}, 'data_info': {'x': None}})
  assert flat == {'model.d_model': 32, 'model.tie': True, 'init_from': '',
                  'eval.domains': '["a", "b"]', 'data_info.x': 'null'}
