"""Test setup: 8 fake CPU devices, so sharding tests run on any machine.

Tests that want one device build their mesh from `jax.devices()[:1]`.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from llmjax.model.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_cfg() -> ModelConfig:
  """A model small enough for gradients of everything in milliseconds."""
  return ModelConfig(vocab_size=256, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, max_len=32)


def replace(cfg: ModelConfig, **kw) -> ModelConfig:
  return dataclasses.replace(cfg, **kw)
