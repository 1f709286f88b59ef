"""Model invariants: causality, segment isolation, scan = loop, remat = no remat, counts."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import flops
from llmjax.model import config as model_config
from llmjax.model import options
from llmjax.model.attention import einsum_attention
from llmjax.model.transformer import Transformer

# One model per entry of each option registry, so a new entry is tested with no edit here;
# then head layouts, the untied head with qk-norm, GPT-2's combination, kernels and dtypes.
ARCHITECTURES = (
    [dict(mlp=name) for name in options.MLPS]
    + [dict(norm=name, use_bias=True) for name in options.NORMS]
    + [dict(positions=name) for name in options.POSITIONS]
    + [dict(),  # rmsnorm, rope, swiglu, GQA (4 query heads, 2 kv heads), tied
       dict(norm='layernorm', positions='learned', mlp='gelu', use_bias=True, num_kv_heads=4),
       dict(num_kv_heads=1),  # multi-query
       dict(qk_norm=True, tie_embeddings=False)])
OPTIONS = ARCHITECTURES + [dict(attention_impl='xla'), dict(attention_impl='einsum'),
                           dict(dtype='bfloat16')]


def _ids(options):
  return ','.join(f'{k}={v}' for k, v in options.items()) or 'default'


def _tokens(cfg, batch=2, length=16, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, cfg.vocab_size)


@pytest.mark.parametrize('options', OPTIONS, ids=_ids)
def test_causal_no_gradient_from_the_future(tiny_cfg, options):
  cfg = dataclasses.replace(tiny_cfg, **options)
  model = Transformer(cfg, nnx.Rngs(0))
  tokens = _tokens(cfg)
  positions = jnp.broadcast_to(jnp.arange(16), tokens.shape)
  segments = jnp.ones_like(tokens)
  x = model.embed_tokens(tokens, positions)
  t = 7

  def logits_at_t(x):
    return model.logits(model.hidden(x, positions, segments))[:, t].astype(jnp.float32).sum()

  grad = np.asarray(jax.grad(logits_at_t)(x).astype(jnp.float32))
  assert np.all(grad[:, t + 1:] == 0.0), 'position t depends on later inputs'
  assert np.all(np.abs(grad[:, :t + 1]).sum(-1) > 0), 'position t ignores earlier inputs'


def test_packed_segments_do_not_see_each_other(tiny_cfg):
  model = Transformer(tiny_cfg, nnx.Rngs(0))
  tokens = _tokens(tiny_cfg, batch=1)
  segments = jnp.array([[1] * 6 + [2] * 10])
  positions = jnp.array([list(range(6)) + list(range(10))])
  x = model.embed_tokens(tokens, positions)

  def loss_in_second_doc(x):
    return model.logits(model.hidden(x, positions, segments))[:, 6:].sum()

  grad = np.asarray(jax.grad(loss_in_second_doc)(x))
  assert np.all(grad[:, :6] == 0.0)
  # The second document alone, from position 0, gives the same logits.
  packed = model(tokens, positions, segments)[:, 6:]
  alone = model(tokens[:, 6:])
  np.testing.assert_allclose(packed, alone, atol=1e-5)


def _loss_and_grads(cfg, tokens, seed=0):
  model = Transformer(cfg, nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params):
    return nnx.merge(graphdef, params)(tokens).mean()

  value, grads = jax.value_and_grad(loss)(params)
  return value, jax.tree.leaves(grads)


@pytest.mark.parametrize('remat', options.REMAT_POLICIES)
def test_scan_equals_loop_and_remat_equals_no_remat(tiny_cfg, remat):
  tokens = _tokens(tiny_cfg)
  ref_loss, ref_grads = _loss_and_grads(dataclasses.replace(tiny_cfg, scan_layers=False),
                                        tokens)
  loss, grads = _loss_and_grads(dataclasses.replace(tiny_cfg, scan_layers=True, remat=remat),
                                tokens)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_dropout_only_with_a_key(tiny_cfg):
  cfg = dataclasses.replace(tiny_cfg, dropout=0.5)
  model = Transformer(cfg, nnx.Rngs(0))
  tokens = _tokens(cfg)
  evaluation = model(tokens)
  np.testing.assert_array_equal(evaluation, model(tokens))
  a = model(tokens, dropout_key=jax.random.key(1))
  b = model(tokens, dropout_key=jax.random.key(2))
  assert not np.allclose(a, evaluation) and not np.allclose(a, b)
  no_dropout = Transformer(tiny_cfg, nnx.Rngs(0))
  np.testing.assert_array_equal(no_dropout(tokens, dropout_key=jax.random.key(1)), evaluation)


@pytest.mark.parametrize('num_kv_heads', [4, 2, 1])
def test_jax_attention_matches_explicit_einsum(num_kv_heads):
  q = jax.random.normal(jax.random.key(0), (2, 16, 4, 8))
  k, v = jax.random.normal(jax.random.key(1), (2, 2, 16, num_kv_heads, 8))
  segments = jnp.array([[1] * 5 + [2] * 11, [1] * 16])
  mask = (jnp.tril(jnp.ones((16, 16), bool)) & (segments[:, :, None] == segments[:, None]))
  mask = mask[:, None]
  expected = einsum_attention(q, k, v, mask)
  got = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='xla')
  np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize('options', ARCHITECTURES, ids=_ids)
def test_closed_form_parameter_count(tiny_cfg, options):
  cfg = dataclasses.replace(tiny_cfg, **options)
  params = nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param)
  actual = sum(x.size for x in jax.tree.leaves(params))
  assert flops.param_counts(cfg)['total'] == actual


def test_presets_match_published_parameter_counts():
  # Published totals: GPT-2 small (tied head) and Llama 2 7B (untied head).
  assert flops.param_counts(model_config.from_preset('gpt2-small'))['total'] == 124_439_808
  assert flops.param_counts(model_config.from_preset('llama2-7b'))['total'] == 6_738_415_616


def test_eval_shape_of_a_7b_preset_allocates_nothing_and_matches_closed_form():
  cfg = model_config.from_preset('llama2-7b')
  abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert sum(int(np.prod(x.shape)) for x in leaves) == flops.param_counts(cfg)['total']


def test_bfloat16_params_and_compute(tiny_cfg):
  cfg = dataclasses.replace(tiny_cfg, param_dtype='bfloat16', dtype='bfloat16')
  model = Transformer(cfg, nnx.Rngs(0))
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
  logits = model(_tokens(cfg))
  assert logits.dtype == jnp.float32  # the loss is always computed in float32
  reference = Transformer(tiny_cfg, nnx.Rngs(0))(_tokens(cfg))
  np.testing.assert_allclose(logits, reference, atol=0.05)


def test_unknown_preset_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown model preset 'gpt3'.*gpt2-small"):
    model_config.from_preset('gpt3')
