"""muP and CompleteP: the per-tensor table, equality with sp at the base shape, a
difference away from it, the attention scale on every path, and the refused inputs."""

import dataclasses
import functools
import math
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import configs, optim, step
from llmjax.model import parametrization as pz
from llmjax.model.attention import KVCache
from llmjax.model.config import ModelConfig, ladder_shape
from llmjax.model.transformer import Transformer, parametrization_rules

SMALL = dict(vocab_size=64, max_len=32, tie_embeddings=False)


def _ladder(width, depth, **fields):
  return ModelConfig(**SMALL, **ladder_shape(width, depth), **fields)


def test_mup_table_d512_over_base_128_by_hand():
  # D=512 ladder: 8 heads of 64, F=1376; its base at D=128: 4 heads of 32, F=352.
  cfg = _ladder(512, 2, parametrization='mup', mup_base_width=128, mup_output_mult=2.0)
  rules = parametrization_rules(cfg)
  width_ratio_d = 512 / 128  # fan-in D of wq, wk, wv, w_in, w_gate, unembed
  width_ratio_nh = (8 * 64) / (4 * 32)  # fan-in N*H of wo
  width_ratio_f = 1376 / 352  # fan-in F of w_out: the ladder's rounding, not 4
  for name in ('attn/wq', 'attn/wk', 'attn/wv', 'mlp/w_in', 'mlp/w_gate'):
    assert rules[f'blocks/{name}'].lr == pytest.approx(1 / width_ratio_d)
    assert rules[f'blocks/{name}'].init_std == pytest.approx(1 / math.sqrt(512))
  assert rules['blocks/attn/wo'].lr == pytest.approx(1 / width_ratio_nh)
  assert rules['blocks/mlp/w_out'].lr == pytest.approx(352 / 1376)
  assert rules['blocks/mlp/w_out'].lr != pytest.approx(1 / width_ratio_d)
  assert rules['blocks/mlp/w_out'].width_ratio == pytest.approx(width_ratio_f)
  sp_output_init = 1 / math.sqrt(1376 * 2 * 2)  # GPT-2's 1/sqrt(2L) kept under muP
  assert rules['blocks/mlp/w_out'].init_std == pytest.approx(sp_output_init)
  readout_init = 1 / 128  # the base's 1/D: width-independent
  assert rules['unembed'].init_std == pytest.approx(readout_init)
  assert rules['unembed'].lr == 1.0 and rules['embed/embedding'].lr == 1.0
  assert rules['blocks/attn_norm/scale'].lr == 1.0 and rules['final_norm/scale'].lr == 1.0
  assert all(r.eps == 1.0 for r in rules.values())  # muP leaves Adam's epsilon alone
  logit_mult = 2.0 / width_ratio_d
  assert pz.logit_multiplier(cfg) == pytest.approx(logit_mult)
  assert 'logits x0.5' in rules['unembed'].forward
  attn_scale = math.sqrt(32) / 64  # sqrt(H_base) / H, against sp's 1/8
  assert pz.attention_scale(cfg) == pytest.approx(attn_scale)


@pytest.mark.parametrize('alpha', [1.0, 0.5])
def test_completep_table_l8_over_base_depth_2_by_hand(alpha):
  cfg = _ladder(512, 8, parametrization='completep', mup_base_width=128, mup_base_depth=2,
                completep_alpha=alpha)
  rules = parametrization_rules(cfg)
  depth_ratio = 8 / 2
  width_ratio_d = 4.0
  branch = depth_ratio**-alpha  # 1/4 for alpha 1, 1/2 for alpha 0.5
  assert pz.branch_multiplier(cfg) == pytest.approx(branch)
  hidden_lr = (1 / width_ratio_d) * depth_ratio**(alpha - 1)
  assert rules['blocks/attn/wq'].lr == pytest.approx(hidden_lr)
  norm_lr_in_blocks = depth_ratio**(alpha - 1)
  assert rules['blocks/mlp_norm/scale'].lr == pytest.approx(norm_lr_in_blocks)
  assert rules['final_norm/scale'].lr == 1.0 and rules['embed/embedding'].lr == 1.0
  eps_in_blocks = (1 / width_ratio_d) * depth_ratio**-alpha
  eps_outside = 1 / width_ratio_d
  assert rules['blocks/attn/wo'].eps == pytest.approx(eps_in_blocks)
  assert rules['embed/embedding'].eps == pytest.approx(eps_outside)
  assert rules['unembed'].eps == pytest.approx(eps_outside)
  base_depth_output_init = 1 / math.sqrt(512 * 2 * 2)  # 1/sqrt(2 L_base), not 1/sqrt(2 L)
  assert rules['blocks/attn/wo'].init_std == pytest.approx(base_depth_output_init)
  assert f'branch x{branch:.4g}' in rules['blocks/attn/wo'].forward


def _steps(cfg, seed=0, steps=2):
  """(initial parameters, losses of `steps` AdamW steps of the real train_step) on fixed
  random tokens; eager (no compile: seconds for a model this small)."""
  ocfg = optim.OptimConfig(lr=1e-2, warmup_steps=0, schedule='constant')
  tx, _ = optim.make(ocfg, cfg, steps)
  graphdef, _ = step.abstract_model(cfg)
  state = step.init_state(cfg, tx, seed)
  tokens = jax.random.randint(jax.random.key(7), (2, 9), 0, cfg.vocab_size)
  batch = dict(inputs=tokens[:, :-1], targets=tokens[:, 1:],
               weights=jnp.ones((2, 8), jnp.float32),
               positions=jnp.broadcast_to(jnp.arange(8), (2, 8)),
               segment_ids=jnp.ones((2, 8), jnp.int32))
  params0 = jax.tree.leaves(state.params)
  losses = []
  for _ in range(steps):
    state, metrics = step.train_step(state, batch, graphdef=graphdef, tx=tx,
                                     num_microbatches=1, z_loss=0.0)
    losses.append(float(metrics['loss']))
  return params0, np.array(losses)


def _unrolled(width, depth, **fields):
  return _ladder(width, depth, scan_layers=False, attention_impl='einsum', **fields)


@pytest.mark.parametrize('parametrization', ['mup', 'completep'])
def test_base_shape_is_sp(parametrization):
  sp = _unrolled(32, 2)
  at_base = dataclasses.replace(sp, parametrization=parametrization, mup_base_width=32,
                                mup_base_depth=2 if parametrization == 'completep' else 0)
  sp_params, sp_losses = _steps(sp)
  base_params, base_losses = _steps(at_base)
  assert all(np.array_equal(a, b) for a, b in zip(sp_params, base_params))
  np.testing.assert_allclose(base_losses, sp_losses, rtol=0, atol=1e-6)
  assert sp_losses[-1] < sp_losses[0]  # it trained


def _update(cfg, params, grads):
  tx, _ = optim.make(optim.OptimConfig(lr=1.0, warmup_steps=0, schedule='constant',
                                       weight_decay=0.0), cfg, 10)
  return tx.update(grads, tx.init(params), params)[0]


@pytest.mark.parametrize('parametrization', ['mup', 'completep'])
def test_twice_the_width_is_not_sp(parametrization):
  # Guards against a switch that silently does nothing: the function and the update change.
  sp = _unrolled(64, 4)
  wide = dataclasses.replace(sp, parametrization=parametrization, mup_base_width=32,
                             mup_base_depth=2 if parametrization == 'completep' else 0)
  tokens = jax.random.randint(jax.random.key(0), (1, 8), 0, sp.vocab_size)
  # Tied head: the logits meet 1/m_d. (Untied, the base's init times 1/m_d is sp's init, so
  # the first forward agrees; the updates below do not.)
  tied = [Transformer(dataclasses.replace(c, tie_embeddings=True), nnx.Rngs(0)) for c in (sp, wide)]
  assert np.abs(np.asarray(tied[0](tokens) - tied[1](tokens))).max() > 1e-3
  sp_model = Transformer(sp, nnx.Rngs(0))
  params = nnx.state(sp_model, nnx.Param)
  grads = jax.tree.map(jnp.ones_like, params)
  sp_update = _update(sp, params, grads)['blocks']['attn']['wq'][...]
  wide_update = _update(wide, params, grads)['blocks']['attn']['wq'][...]
  expected = 0.5  # 1/m; completep's depth factor (L/L_base)^(alpha-1) is 1 at alpha 1
  np.testing.assert_allclose(wide_update, expected * sp_update, rtol=1e-5)


def test_attention_scale_reaches_every_attention_path():
  cfg = _unrolled(64, 2, parametrization='mup', mup_base_width=32, mup_attn_mult=3.0)
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, cfg.vocab_size)
  outs = {impl: Transformer(dataclasses.replace(cfg, attention_impl=impl), nnx.Rngs(0))(tokens)
          for impl in ('einsum', 'xla')}
  np.testing.assert_allclose(outs['einsum'], outs['xla'], atol=1e-5)
  sp_like = Transformer(dataclasses.replace(cfg, mup_attn_mult=1.0), nnx.Rngs(0))(tokens)
  assert np.abs(outs['einsum'] - sp_like).max() > 1e-4  # the multiplier is not dropped
  # The KV-cache decoder (a chunk, then one token) equals the full forward.
  model = Transformer(cfg, nnx.Rngs(0))
  cache = KVCache.init(cfg, 2, 12)
  first, cache = model.decode(tokens[:, :11], jnp.broadcast_to(jnp.arange(11), (2, 11)), cache)
  last, _ = model.decode(tokens[:, 11:], jnp.full((2, 1), 11), cache)
  np.testing.assert_allclose(jnp.concatenate([first, last], 1), outs['einsum'], atol=1e-5)


def test_branch_multiplier_reaches_the_decoder_too():
  cfg = _unrolled(64, 4, parametrization='completep', mup_base_width=32, mup_base_depth=2)
  model = Transformer(cfg, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(1), (1, 8), 0, cfg.vocab_size)
  cache = KVCache.init(cfg, 1, 8)
  logits, _ = model.decode(tokens, jnp.arange(8)[None], cache)
  np.testing.assert_allclose(logits, model(tokens), atol=1e-5)


def _tiny_config(**model):
  config = runpy.run_path('experiments/base.py')['get_config']('tiny')
  for key, value in model.items():
    if key == 'init_from':
      config.init_from = value
    else:
      config.model[key] = value
  return config


@pytest.mark.parametrize('fields, message', [
    (dict(parametrization='mupp'), "unknown option 'mupp'"),
    (dict(parametrization='mup', mup_base_width=24), 'base would have 1.5 heads'),
    (dict(parametrization='mup', mup_base_preset='llama3-8b'), 'kv grouping G=4'),
    (dict(parametrization='mup', init_from='hf:/models/gpt2'), 'Warm start it with'),
    (dict(parametrization='mup', mup_output_mult=0.0), 'mup_output_mult=0.0 must be positive'),
    (dict(parametrization='completep', mup_attn_mult=-1.0), 'mup_attn_mult=-1.0 must be'),
    (dict(mup_base_width=64), "no effect under parametrization='sp'"),
    (dict(parametrization='mup', mup_base_depth=2), 'completep only'),
])
def test_bad_parametrization_inputs_are_named(fields, message):
  with pytest.raises(configs.ConfigError, match=message):
    configs.build(_tiny_config(**fields), 1)


def test_a_wider_base_is_allowed():
  exp = configs.build(_tiny_config(parametrization='mup', mup_base_width=64), 1)
  assert pz.width_ratio(exp.model) == 0.5
