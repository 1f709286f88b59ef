"""Optimizers, schedules and the weight-decay mask."""

import dataclasses
import inspect
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from llmjax import optim
from llmjax.model import parametrization as pz
from llmjax.model.transformer import Transformer, parametrization_rules, pz_path


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


def _flat(state) -> dict:
  leaves, _ = jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return {pz_path(p): np.asarray(v[...]) for p, v in leaves}


def _wide_mup(tiny_cfg, **fields):
  """Twice the base width: hidden LR multipliers 1/2."""
  return dataclasses.replace(tiny_cfg, d_model=64, num_heads=8, num_kv_heads=4, mlp_dim=128,
                             parametrization='mup', mup_base_width=32, **fields)


@pytest.mark.parametrize('mode', ['coupled', 'independent'])
def test_decay_step_follows_the_chain_order(tiny_cfg, mode):
  # Zero gradients: Adam's direction is 0, so the update is the decay step alone.
  model_cfg = _wide_mup(tiny_cfg)
  params = nnx.state(Transformer(model_cfg, nnx.Rngs(0)), nnx.Param)
  lr, wd = 0.1, 0.5
  cfg = optim.OptimConfig(lr=lr, warmup_steps=0, weight_decay=wd, schedule='constant',
                          weight_decay_mode=mode)
  tx, _ = optim.make(cfg, model_cfg, total_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  update, p = _flat(updates), _flat(params)
  hidden_lr_mult = 32 / 64
  # coupled: lr_t * lr_mult * wd * p (the multiplier comes after adamw's decay);
  # independent: lr_t * wd * p (the decay comes after the multiplier).
  factor = hidden_lr_mult if mode == 'coupled' else 1.0
  np.testing.assert_allclose(update['blocks/attn/wq'], -lr * factor * wd * p['blocks/attn/wq'],
                             rtol=1e-6)
  assert not update['blocks/attn_norm/scale'].any()  # norms are not decayed in either mode


def test_auto_decay_mode_is_coupled_for_sp_and_independent_for_mup(tiny_cfg):
  cfg = optim.OptimConfig()
  assert optim.decay_mode(cfg, tiny_cfg) == 'coupled'
  assert optim.decay_mode(cfg, _wide_mup(tiny_cfg)) == 'independent'


def test_completep_epsilon_is_adams_epsilon_times_the_tensors_multiplier(tiny_cfg):
  model_cfg = dataclasses.replace(_wide_mup(tiny_cfg, mup_base_depth=1), num_layers=4,
                                  parametrization='completep', tie_embeddings=False)
  params = nnx.state(Transformer(model_cfg, nnx.Rngs(0)), nnx.Param)
  eps = 1e-3  # large, so that a wrong epsilon shows
  cfg = optim.OptimConfig(lr=1.0, warmup_steps=0, weight_decay=0.0, schedule='constant',
                          eps=eps, clip_norm=0.0)
  tx, _ = optim.make(cfg, model_cfg, total_steps=10)
  grads = jax.tree.map(lambda x: 1e-3 * jnp.sin(jnp.arange(x.size).reshape(x.shape)), params)
  updates = _flat(tx.update(grads, tx.init(params), params)[0])
  g = _flat(grads)
  for path, multiplier in (('blocks/attn/wq', 0.5 * 4**-1), ('unembed', 0.5)):
    lr_mult = parametrization_rules(model_cfg)[path].lr
    reference = optax.scale_by_adam(eps=eps * multiplier)
    expected = reference.update(g[path], reference.init(g[path]))[0]
    np.testing.assert_allclose(updates[path], -lr_mult * expected, rtol=1e-5)


@pytest.mark.parametrize('name', optim.SCHEDULES)
def test_every_schedule_warms_up_to_the_peak_and_stays_in_range(name):
  cfg = optim.OptimConfig(schedule=name, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
  lr = optim.schedule(cfg, total_steps=100)
  values = np.array([float(lr(step)) for step in range(101)])
  assert values[0] == 0.0 and values[10] == pytest.approx(1e-3)
  assert np.all(np.isfinite(values)) and np.all(values >= 0) and np.all(values <= 1e-3 * (1 + 1e-6))


def test_option_lists_in_comments_and_readme_follow_the_registries():
  readme = (pathlib.Path(__file__).resolve().parents[1] / 'README.md').read_text()
  source = inspect.getsource(optim.OptimConfig)
  for field, table in (('name', optim.OPTIMIZERS), ('schedule', optim.SCHEDULES)):
    assert f'optim.{field}={"|".join(table)}' in readme, field
    assert f'# {" | ".join(table)}' in source, field
