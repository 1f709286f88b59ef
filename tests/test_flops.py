"""The analytic FLOP count against XLA's own count, and MFU arithmetic."""

import dataclasses
import functools
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from llmjax import flops, optim, sharding, step
from llmjax.model import options
from llmjax.model.config import ModelConfig


# Every MLP kind of the registry (the untied head with the first, tied with the others), and
# a BERT-shaped encoder (its masked-LM head's transform is counted).
BERT = dict(arch='encoder', norm='layernorm', norm_position='post', embed_norm=True,
            positions='learned', mlp='gelu_exact', use_bias=True, attention_impl='einsum')


@pytest.mark.parametrize('changes', [dict(mlp=name, tie_embeddings=i > 0)
                                     for i, name in enumerate(options.MLPS)] + [BERT],
                         ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()))
def test_analytic_flops_match_xla_cost_analysis(changes):
  # Unrolled layers (XLA counts a scanned body once) on one device (sharded
  # cost analysis is per device). Wide enough that matmuls dominate, as in
  # real models: the formula leaves out norms, softmax and the optimizer.
  cfg = ModelConfig(vocab_size=512, d_model=256, num_layers=2, num_heads=4, num_kv_heads=4,
                    head_dim=64, mlp_dim=1024, max_len=128, scan_layers=False, **changes)
  batch, seq_len = 4, 128
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  tx, _ = optim.make(optim.OptimConfig(), cfg, total_steps=10)
  graphdef, state, _ = step.create_sharded_state(cfg, tx, 0, mesh, sharding.DEFAULT_RULES)
  step_fn = jax.jit(functools.partial(step.train_step, graphdef=graphdef, tx=tx,
                                      num_microbatches=1, z_loss=0.0))
  tokens = np.zeros((batch, seq_len), np.int32)
  example = {'inputs': tokens, 'targets': tokens, 'positions': tokens,
             'segment_ids': tokens + 1, 'weights': np.ones_like(tokens, np.float32)}
  cost = step_fn.lower(state, example).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  xla_flops = cost['flops']
  analytic = flops.flops_per_token(cfg, seq_len) * batch * seq_len
  assert abs(xla_flops - analytic) / analytic < 0.10, (xla_flops, analytic)


def test_encoder_decoder_flops_match_xla_cost_analysis():
  # T5 v1.1's layout, a decoder deeper than the encoder and a target row much shorter than
  # the input, so each of the terms (encoder, decoder, cross keys/values) shows.
  cfg = ModelConfig(vocab_size=512, d_model=256, num_layers=2, num_decoder_layers=3,
                    num_heads=4, num_kv_heads=4, head_dim=64, mlp_dim=1024, max_len=128,
                    scan_layers=False, arch='encoder_decoder', positions='relative',
                    scale_scores=False, mlp='geglu', tie_embeddings=False)
  batch, seq_len, target_len = 4, 128, 32
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  tx, _ = optim.make(optim.OptimConfig(), cfg, total_steps=10)
  graphdef, state, _ = step.create_sharded_state(cfg, tx, 0, mesh, sharding.DEFAULT_RULES)
  step_fn = jax.jit(functools.partial(step.train_step, graphdef=graphdef, tx=tx,
                                      num_microbatches=1, z_loss=0.0))
  inputs, targets = (np.zeros((batch, n), np.int32) for n in (seq_len, target_len))
  example = {'inputs': targets, 'targets': targets, 'positions': targets,
             'segment_ids': targets + 1, 'weights': np.ones_like(targets, np.float32),
             'encoder_inputs': inputs, 'encoder_positions': inputs,
             'encoder_segment_ids': inputs + 1}
  cost = step_fn.lower(state, example).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  analytic = flops.flops_per_token(cfg, seq_len, target_len) * batch * target_len
  assert abs(cost['flops'] - analytic) / analytic < 0.10, (cost['flops'], analytic)  # 2.7%
  # Per target token, the encoder's work on the 4x longer input dominates.
  decoder_only = flops.flops_per_token(dataclasses.replace(cfg, arch='decoder',
                                                           num_decoder_layers=0), target_len)
  assert flops.flops_per_token(cfg, seq_len, target_len) > 4 * decoder_only
  assert flops.flops_per_token(cfg, 512) == flops.flops_per_token(cfg, 512, 114)  # T5's lengths


def test_flops_per_token_by_hand():
  cfg = ModelConfig(vocab_size=100, d_model=8, num_layers=3, num_heads=2, num_kv_heads=1,
                    head_dim=4, mlp_dim=16, mlp='gelu')
  attention_params = 8 * 2 * 4 + 2 * 8 * 1 * 4 + 2 * 4 * 8  # wq, wk + wv, wo
  mlp_params = 2 * 8 * 16
  matmul = 3 * (attention_params + mlp_params) + 8 * 100  # + output head
  assert flops.flops_per_token(cfg, seq_len=10) == 6 * matmul + 12 * 3 * 10 * 2 * 4


def test_mfu():
  assert flops.mfu(tokens_per_s=1000.0, flops_per_tok=1e9, peak_total=4e12) == 0.25


def test_peak_flops_sources(tmp_path, monkeypatch):
  assert flops.peak_flops_per_device(123.0) == (123.0, 'config')
  monkeypatch.setattr(flops, '_busy_cores', lambda: 0.0)  # a quiet machine
  monkeypatch.delenv(flops.CACHE_VAR, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  peak, source = flops.peak_flops_per_device(0.0)
  path = tmp_path / 'llmjax' / 'peak_flops.json'
  assert source == f'measured, cached in {path}' and peak > 1e8  # at least 0.1 GFLOP/s
  assert flops.peak_flops_per_device(0.0) == (peak, f'cached {path}')


class FakeMeasure:
  """A matmul measurement that counts its calls and returns 1e9 per call."""

  def __init__(self):
    self.calls = []

  def __call__(self, dtype):
    self.calls.append(dtype)
    return 1e9 * len(self.calls)


def test_peak_is_measured_once_per_machine_and_dtype(tmp_path, monkeypatch):
  monkeypatch.setattr(flops, '_busy_cores', lambda: 0.0)
  path, measure = tmp_path / 'sub' / 'peak.json', FakeMeasure()
  assert flops.cached_peak_flops('float32', path, measure) == (1e9, f'measured, cached in {path}')
  assert flops.cached_peak_flops('float32', path, measure) == (1e9, f'cached {path}')
  assert flops.cached_peak_flops('bfloat16', path, measure)[0] == 2e9  # its own entry
  assert flops.cached_peak_flops('float32', path, measure)[0] == 1e9
  assert measure.calls == ['float32', 'bfloat16']
  # Another CPU, core count or JAX version is another machine.
  monkeypatch.setattr(flops, 'machine_key', lambda: 'another machine')
  assert flops.cached_peak_flops('float32', path, measure)[0] == 3e9
  assert len(json.loads(path.read_text())) == 2


@pytest.mark.parametrize('content', ['{"half": ', '[1, 2]', '{"KEY": {"float32": -1}}',
                                     '{"KEY": "x"}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path, content, monkeypatch):
  monkeypatch.setattr(flops, '_busy_cores', lambda: 0.0)
  path, measure = tmp_path / 'peak.json', FakeMeasure()
  path.write_text(content.replace('KEY', flops.machine_key()))
  assert flops.cached_peak_flops('float32', path, measure) == (1e9, f'measured, cached in {path}')
  assert flops.cached_peak_flops('float32', path, measure) == (1e9, f'cached {path}')


def test_an_unwritable_cache_still_gives_a_peak(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')  # a file where the cache folder should be
  peak, source = flops.cached_peak_flops('float32', blocker / 'peak.json', FakeMeasure(),
                                         busy=lambda: 0.0)
  assert (peak, source) == (1e9, 'measured (cache not writable)')


def test_a_peak_measured_on_a_busy_machine_is_not_cached(tmp_path):
  path, measure = tmp_path / 'peak.json', FakeMeasure()
  busy = lambda: float(os.cpu_count())  # noqa: E731  every core taken by other work
  assert flops.cached_peak_flops('float32', path, measure, busy) == (
      1e9, f'measured under load {os.cpu_count():.1f}, not cached')
  assert not path.exists()
  assert flops.cached_peak_flops('float32', path, measure, lambda: 0.0)[0] == 2e9
  assert flops.cached_peak_flops('float32', path, measure, busy) == (2e9, f'cached {path}')


def test_machine_key_names_cores_jax_and_devices():
  key = flops.machine_key()
  assert f'{os.cpu_count()} cores' in key and f'jax {jax.__version__}' in key
  assert f'{jax.device_count()} cpu devices' in key


def test_the_tests_keep_their_own_peak_cache():
  assert flops.default_cache_path() == pathlib.Path(os.environ[flops.CACHE_VAR])
  assert 'llmjax-tests-' in str(flops.default_cache_path())


def test_datasheet_lookup():
  class FakeDevice:
    device_kind = 'NVIDIA H100 80GB HBM3'

  assert flops.device_peak_flops(FakeDevice()) == 989e12
  FakeDevice.device_kind = 'cpu'
  assert flops.device_peak_flops(FakeDevice()) is None
