"""Ahead-of-time compilation: memory per device from shardings, and --compile_only of a
1B-class preset on 64 fake devices."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from llmjax import aot, configs, flops, sharding
from llmjax.model.config import from_preset

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config():
  config = configs.defaults()
  config.model.update(vocab_size=264, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_dim=128, max_len=32)
  config.data.update(seq_len=32, global_batch_size=8)
  return config


def test_parameters_and_optimizer_state_split_evenly_over_fsdp():
  config = _tiny_config()
  config.mesh.fsdp = 8
  exp = configs.build(config, 8)
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  report = aot.memory_report(exp, mesh)
  # Every parameter has an axis named 'embed' (sharded over fsdp) of size 64 = 8 x 8.
  assert report['params_bytes'] * 8 == flops.param_counts(exp.model)['total'] * 4
  # AdamW's two moments per parameter, plus a few replicated step counters.
  assert 0 <= report['optimizer_bytes'] - 2 * report['params_bytes'] < 64
  assert report['temp_bytes'] > 0
  assert report['peak_bytes'] >= report['arguments_bytes'] + report['temp_bytes']
  text = aot.format_report(exp, mesh, report)
  assert "mesh {'data': 1, 'fsdp': 8, 'tensor': 1}, 1 x 32 tokens per device" in text
  assert f"\n  {'parameters':<40}{aot.human_bytes(report['params_bytes']):>12}\n" in text
  assert 'warning' not in text  # 4 heads, 2 kv heads, tensor axis 1


def test_under_lora_the_optimizer_state_holds_only_the_adapters():
  config = _tiny_config()
  config.lora.rank = 2
  exp = configs.build(config, 1)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  report = aot.memory_report(exp, mesh)
  assert report['params_bytes'] == flops.param_counts(exp.model)['total'] * 4
  # AdamW's two moments of the adapters only (a few counters besides), far below the
  # parameters' 2x that full fine-tuning needs.
  assert 0 < report['adapter_bytes'] < report['params_bytes'] / 10
  assert 0 <= report['optimizer_bytes'] - 2 * report['adapter_bytes'] < 64
  assert 'LoRA adapters' in aot.format_report(exp, mesh, report)


@pytest.mark.parametrize('size, text', [
    (0, '0 B'), (1023, '1023 B'), (1024, '1.00 KiB'), (89_128_960, '85.00 MiB'),
    (13.5 * 2**30, '13.50 GiB'), (3 * 2**40, '3.00 TiB'), (5 * 2**50, '5120.00 TiB')])
def test_memory_is_shown_in_the_unit_its_size_calls_for(size, text):
  assert aot.human_bytes(size) == text


def _exp(num_heads, num_kv_heads, tensor):
  config = configs.defaults()
  config.model.update(vocab_size=264, d_model=64, num_layers=2, num_heads=num_heads,
                      num_kv_heads=num_kv_heads, mlp_dim=128, max_len=32)
  config.data.update(seq_len=32, global_batch_size=8)
  config.mesh.tensor = tensor
  return configs.build(config, 8)


def test_a_tensor_axis_the_heads_cannot_use_is_warned_about():
  assert aot.axis_warnings(_exp(4, 4, 4), {'data': 2, 'fsdp': 1, 'tensor': 4}) == []
  warnings = aot.axis_warnings(_exp(4, 2, 4), {'data': 2, 'fsdp': 1, 'tensor': 4})
  assert warnings == ['the tensor axis (4 devices) exceeds model.num_kv_heads=2: the kv_heads '
                      'weights stay replicated over it (unused for them); use a tensor size '
                      'that divides 2']
  both = aot.axis_warnings(_exp(2, 2, 8), {'data': 1, 'fsdp': 1, 'tensor': 8})
  assert [w.split(':')[0] for w in both] == [
      'the tensor axis (8 devices) exceeds model.num_heads=2',
      'the tensor axis (8 devices) exceeds model.num_kv_heads=2']


@pytest.mark.slow
def test_compile_only_of_a_1b_preset_on_64_fake_devices(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/preset.py:llama3.2-1b'),
       '--compile_only', '--num_fake_devices=64', '--config.mesh.fsdp=16',
       '--config.mesh.tensor=4', '--config.data.seq_len=128', '--config.data.global_batch_size=16'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  params = flops.param_counts(from_preset('llama3.2-1b'))['total']
  assert (f'compiled the train step of {params:,} parameters on 64 cpu devices, mesh '
          f"{{'data': 1, 'fsdp': 16, 'tensor': 4}}, 1 x 128 tokens per device") in out, out
  scale = {unit: 1024**i for i, unit in enumerate(aot.UNITS)}
  size = {m[1].strip(): float(m[2]) * scale[m[3]]
          for m in re.finditer(r'\n  (\D+?) +([\d.]+) (\w+)', out)}
  # Embeddings, projections and MLPs split 64 ways; only the norm scales are not.
  assert abs(size['parameters'] - params * 4 / 64) < 0.001 * 2**30
  assert size['activations and temporaries'] > 0
  assert list(tmp_path.iterdir()) == []  # no workdir, no data


def test_an_encoder_decoder_compiles_ahead_of_time():
  """Span rows: the encoder side is seq_len tokens, the decoder rows T5's shorter length."""
  config = configs.load_file(str(ROOT / 'experiments/t5.py:tiny'))
  exp = configs.build(config, 1)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  batch = aot.abstract_batch(exp.data, None)
  assert batch['encoder_inputs'].shape == (exp.data.global_batch_size, exp.data.seq_len)
  assert batch['targets'].shape[1] < exp.data.seq_len
  report = aot.memory_report(exp, mesh)
  assert report['params_bytes'] == flops.param_counts(exp.model)['total'] * 4
