"""The prepared GPU check (benchmarks/gpu.py) runs end to end on CPU in its smoke mode, so
the one chance a session gets at a GPU is not spent on a script that crashes."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_reports_every_variant_and_the_numerics(tmp_path):
  out = tmp_path / 'gpu.json'
  variants = ["attention_impl='cudnn',remat='none'", "attention_impl='xla',remat='full'"]
  env = {**os.environ, 'XLA_FLAGS': ''}  # one CPU device, not the suite's eight
  proc = subprocess.run([sys.executable, 'benchmarks/gpu.py', '--smoke', '--out', str(out),
                         '--variants', *variants], cwd=ROOT, env=env, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  cudnn, xla = result['throughput']
  # No cuDNN on a CPU: that variant is reported as failed, and the next one still runs.
  assert 'cuDNN' in cudnn['failed'] and 'step_s' not in cudnn
  assert xla['variant'] == variants[1] and xla['step_s'] > 0 and 0 < xla['mfu'] < 1
  assert 'best for ladder-64x2' in proc.stdout
  check = result['numerics']
  assert set(check['final_loss']) == {'float32', 'bfloat16'}
  # 20 steps of a tiny model: bf16 compute moves the loss by far less than the 2% flag.
  assert abs(check['relative_gap']) < 0.005 and not check['flag']
