"""Sharding: sharded = unsharded, the golden PartitionSpec table per arch, rule resolution,
meshes."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from conftest import CFG, one_train_step
from llmjax import sharding
from llmjax.model import config as model_config
from llmjax.model import options
from llmjax.model.transformer import Transformer


@pytest.fixture(scope='module')
def single_device_step():
  return one_train_step((1, 1, 1))


@pytest.mark.parametrize('mesh_shape', [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_step_equals_single_device(single_device_step, mesh_shape):
  ref_metrics, ref_params, _ = single_device_step
  metrics, params, _ = one_train_step(mesh_shape)
  np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(metrics['grad_norm'], ref_metrics['grad_norm'], rtol=1e-4)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_gradient_accumulation_equals_one_big_batch(single_device_step):
  ref_metrics, ref_params, _ = single_device_step
  metrics, params, _ = one_train_step((1, 1, 1), microbatches=4)
  np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(got, want, atol=1e-5)


def _specs(cfg, mesh):
  abstract = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))), nnx.Param)
  shardings = sharding.param_shardings(abstract, mesh, sharding.DEFAULT_RULES)
  return {'.'.join(map(str, path)): (var.get_value().spec, abstract_var.get_value())
          for (path, var), (_, abstract_var) in zip(nnx.to_flat_state(shardings),
                                                    nnx.to_flat_state(abstract))}


# Golden table. Update it only when the default rules or parameter names change
# on purpose; every change moves checkpoints and memory per device.
GOLDEN_SPECS = {
    'blocks.attn.wq': P(None, 'fsdp', 'tensor', None),
    'blocks.attn.wk': P(None, 'fsdp', 'tensor', None),
    'blocks.attn.wv': P(None, 'fsdp', 'tensor', None),
    'blocks.attn.wo': P(None, 'tensor', None, 'fsdp'),
    'blocks.attn_norm.scale': P(None, 'fsdp'),
    'blocks.mlp.w_gate': P(None, 'fsdp', 'tensor'),
    'blocks.mlp.w_in': P(None, 'fsdp', 'tensor'),
    'blocks.mlp.w_out': P(None, 'tensor', 'fsdp'),
    'blocks.mlp_norm.scale': P(None, 'fsdp'),
    'embed.embedding': P('tensor', 'fsdp'),
    'final_norm.scale': P('fsdp'),
}


# The encoder (BERT's layout: biases, post-norm blocks, an embedding norm, learned positions
# and the masked-LM head) shares the decoder's projections and adds these, under the same
# update rule as GOLDEN_SPECS.
_ENCODER_ONLY = {
    'blocks.attn.bq': P(None, 'tensor', None),
    'blocks.attn.bk': P(None, 'tensor', None),
    'blocks.attn.bv': P(None, 'tensor', None),
    'blocks.attn.bo': P(None, 'fsdp'),
    'blocks.attn_norm.bias': P(None, 'fsdp'),
    'blocks.mlp.b_in': P(None, 'tensor'),
    'blocks.mlp.b_out': P(None, 'fsdp'),
    'blocks.mlp_norm.bias': P(None, 'fsdp'),
    'embed_norm.scale': P('fsdp'),
    'embed_norm.bias': P('fsdp'),
    'pos_embedding': P(None, 'fsdp'),
    'mlm_head.w': P('fsdp', None),
    'mlm_head.b': P(None),
    'mlm_head.norm.scale': P('fsdp'),
    'mlm_head.norm.bias': P('fsdp'),
    'mlm_head.bias': P('tensor'),
}
_NOT_IN_ENCODER = ('blocks.mlp.w_gate', 'final_norm.scale')
# The encoder-decoder (T5 v1.1: relative positions, unscaled scores, untied head): the
# decoder's tensors, an encoder stack like them, cross-attention, one bias table per stack.
_STACK = {k: v for k, v in GOLDEN_SPECS.items() if k.startswith('blocks.')}
_ENCODER_DECODER_ONLY = {
    **{k.replace('blocks.', 'encoder_blocks.'): v for k, v in _STACK.items()},
    **{k.replace('.attn', '.cross_attn'): v for k, v in _STACK.items() if '.attn.' in k},
    'blocks.cross_norm.scale': P(None, 'fsdp'),
    'encoder_norm.scale': P('fsdp'),
    'relative_bias.table': P(None, 'tensor'),
    'encoder_relative_bias.table': P(None, 'tensor'),
    'unembed': P('fsdp', 'tensor'),
}
GOLDEN_SPECS_BY_ARCH = {
    'decoder': (CFG, GOLDEN_SPECS),
    'encoder': (dataclasses.replace(CFG, arch='encoder', norm='layernorm',
                                    norm_position='post', embed_norm=True, positions='learned',
                                    mlp='gelu_exact', use_bias=True),
                {**{k: v for k, v in GOLDEN_SPECS.items() if k not in _NOT_IN_ENCODER},
                 **_ENCODER_ONLY}),
    'encoder_decoder': (dataclasses.replace(CFG, arch='encoder_decoder', positions='relative',
                                            scale_scores=False, mlp='geglu',
                                            tie_embeddings=False, num_decoder_layers=3),
                        {**GOLDEN_SPECS, **_ENCODER_DECODER_ONLY}),
}


def test_every_arch_has_a_golden_table():
  assert set(GOLDEN_SPECS_BY_ARCH) == set(options.ARCHITECTURES)


@pytest.mark.parametrize('arch', GOLDEN_SPECS_BY_ARCH)
def test_golden_partition_specs(arch):
  cfg, golden = GOLDEN_SPECS_BY_ARCH[arch]
  mesh = sharding.make_mesh(1, 4, 2)
  specs = {path: spec for path, (spec, _) in _specs(cfg, mesh).items()}
  assert specs == golden


def test_no_large_parameter_replicated_under_fsdp():
  mesh = sharding.make_mesh(1, 8, 1)
  for preset in ('gpt2-small', 'llama3.2-1b'):
    for path, (spec, shape) in _specs(model_config.from_preset(preset), mesh).items():
      nbytes = np.prod(shape.shape) * shape.dtype.itemsize
      if nbytes > 2**20:
        assert any(axis is not None for axis in spec), f'{preset} {path} replicated'


def test_state_is_created_sharded():
  _, _, state = one_train_step((1, 4, 2))
  wq = state.params['blocks']['attn']['wq'].get_value()
  assert wq.sharding.spec == GOLDEN_SPECS['blocks.attn.wq']
  assert wq.addressable_shards[0].data.shape == (2, 16, 2, 16)  # D/4, N/2
  adam = state.opt_state.inner_state[1][0]  # apply_if_finite(chain(clip, adamw, ...))
  mu = adam.mu['blocks']['attn']['wq'].get_value()
  assert mu.sharding.spec == wq.sharding.spec  # Adam moments follow their parameter


def test_rules_skip_axes_that_do_not_divide_and_use_each_mesh_axis_once():
  rules = (('kv_heads', 'tensor'), ('embed', ('fsdp', 'tensor')), ('mlp', 'fsdp'))
  mesh_shape = {'data': 1, 'fsdp': 2, 'tensor': 4}
  assert sharding.logical_to_spec(('kv_heads',), (2,), rules, mesh_shape) == P(None)
  assert sharding.logical_to_spec(('embed',), (16,), rules, mesh_shape) == P(('fsdp', 'tensor'))
  assert sharding.logical_to_spec(('embed', 'mlp'), (16, 8), rules, mesh_shape) == P(
      ('fsdp', 'tensor'), None)
  assert sharding.logical_to_spec((None, 'unlisted'), (4, 4), rules, mesh_shape) == P(None, None)


def test_mesh_shape_resolution_and_errors():
  assert sharding.resolve_mesh_shape((-1, 2, 1), 8) == (4, 2, 1)
  with pytest.raises(ValueError, match='has 4 devices but 8 are available'):
    sharding.resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(ValueError, match='cannot fill 8 devices'):
    sharding.resolve_mesh_shape((-1, 3, 1), 8)
  with pytest.raises(ValueError, match='at most one -1'):
    sharding.resolve_mesh_shape((-1, -1, 1), 8)


def test_constrain_is_a_no_op_outside_a_mesh():
  x = np.ones((4, 4), np.float32)
  assert sharding.constrain(x, ('batch', 'act_embed')) is x


def test_make_mesh_names_axes():
  mesh = sharding.make_mesh(2, 2, 2)
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert dataclasses.asdict(sharding.MeshConfig())['rules'] == sharding.DEFAULT_RULES
