"""Optimizers, schedules and the weight-decay mask."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from llmjax import optim
from llmjax.model import parametrization as pz
from llmjax.model.transformer import Transformer


def _lr(cfg, total, step):
  return float(optim.schedule(cfg, total)(step))


def test_warmup_then_cosine_to_the_floor():
  cfg = optim.OptimConfig(lr=1.0, warmup_steps=10, schedule='cosine', min_lr_ratio=0.1)
  assert _lr(cfg, 110, 0) == 0.0
  assert _lr(cfg, 110, 5) == pytest.approx(0.5)
  assert _lr(cfg, 110, 10) == pytest.approx(1.0)
  assert _lr(cfg, 110, 60) == pytest.approx(0.55, abs=1e-6)  # halfway: (1 + 0.1) / 2
  assert _lr(cfg, 110, 110) == pytest.approx(0.1)


def test_warmup_stable_decay():
  cfg = optim.OptimConfig(lr=1.0, warmup_steps=10, schedule='wsd', decay_fraction=0.2)
  assert _lr(cfg, 100, 50) == pytest.approx(1.0)
  assert _lr(cfg, 100, 80) == pytest.approx(1.0)
  assert _lr(cfg, 100, 90) == pytest.approx(0.5)
  assert _lr(cfg, 100, 100) == pytest.approx(0.0)


def test_constant_and_inverse_sqrt():
  const = optim.OptimConfig(lr=2.0, warmup_steps=4, schedule='constant')
  assert _lr(const, 100, 2) == pytest.approx(1.0) and _lr(const, 100, 99) == pytest.approx(2.0)
  inv = optim.OptimConfig(lr=1.0, warmup_steps=4, schedule='inverse_sqrt')
  assert _lr(inv, 100, 4) == pytest.approx(1.0)
  assert _lr(inv, 100, 16) == pytest.approx(0.5)  # sqrt(4 / 16)


def _params(tiny_cfg):
  model = Transformer(dataclasses.replace(tiny_cfg, use_bias=True, norm='layernorm'),
                      nnx.Rngs(0))
  return nnx.state(model, nnx.Param)


def _groups(params):
  return [v.group for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))]


def test_weight_decay_skips_norms_biases_and_embeddings(tiny_cfg):
  params = _params(tiny_cfg)
  cfg = optim.OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.5, schedule='constant')
  tx, _ = optim.make(cfg, tiny_cfg, total_steps=10)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  for group, update in zip(_groups(params), jax.tree.leaves(updates)):
    decayed = bool(jnp.any(update != 0))
    assert decayed == (group not in pz.NO_DECAY_GROUPS), group


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_every_optimizer_lowers_a_quadratic(name, tiny_cfg):
  params = _params(tiny_cfg)
  cfg = optim.OptimConfig(name=name, lr=1e-2, warmup_steps=0, schedule='constant',
                          weight_decay=0.0)
  tx, _ = optim.make(cfg, tiny_cfg, total_steps=10)
  loss = lambda p: sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))
  state = tx.init(params)
  before = loss(params)
  for _ in range(3):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < before


def test_clipping_bounds_the_update(tiny_cfg):
  params = _params(tiny_cfg)
  cfg = optim.OptimConfig(name='adamw', lr=1.0, warmup_steps=0, schedule='constant',
                          weight_decay=0.0, clip_norm=1e-3)
  tx, _ = optim.make(cfg, tiny_cfg, total_steps=10)
  huge = jax.tree.map(lambda x: jnp.full_like(x, 1e6), params)
  clip_only = optax.clip_by_global_norm(1e-3)
  clipped, _ = clip_only.update(huge, clip_only.init(params))
  assert optax.global_norm(clipped) == pytest.approx(1e-3, rel=1e-4)
  updates, _ = tx.update(huge, tx.init(params), params)
  assert np.isfinite(float(optax.global_norm(updates)))
