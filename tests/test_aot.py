"""Ahead-of-time compilation: memory per device from shardings, and --compile_only of a
1B-class preset on 64 fake devices."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from llmjax import aot, configs, flops, sharding
from llmjax.model.config import from_preset

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_parameters_and_optimizer_state_split_evenly_over_fsdp():
  config = configs.defaults()
  config.model.update(vocab_size=264, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_dim=128, max_len=32)
  config.data.update(seq_len=32, global_batch_size=8)
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


@pytest.mark.slow
def test_compile_only_of_a_1b_preset_on_64_fake_devices(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', '--config', str(ROOT / 'experiments/preset.py'),
       '--compile_only', '--num_fake_devices=64', '--config.mesh.fsdp=16',
       '--config.mesh.tensor=4', '--config.data.seq_len=128', '--config.data.global_batch_size=16'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  params = flops.param_counts(from_preset('llama3.2-1b'))['total']
  assert (f'compiled the train step of {params:,} parameters on 64 cpu devices, mesh '
          f"{{'data': 1, 'fsdp': 16, 'tensor': 4}}, 1 x 128 tokens per device") in out, out
  gib = {m[1].strip(): float(m[2]) for m in re.finditer(r'\n  (\D+?) +([\d.]+)', out)}
  # Embeddings, projections and MLPs split 64 ways; only the norm scales are not.
  assert abs(gib['parameters'] - params * 4 / 64 / 2**30) < 0.001
  assert gib['activations and temporaries'] > 0
  assert list(tmp_path.iterdir()) == []  # no workdir, no data
