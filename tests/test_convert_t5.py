"""T5 (T5ForConditionalGeneration) <-> llmjax encoder-decoders: v1.0 (ReLU, tied head read
at d_model^-0.5) and v1.1 (gated GELU, untied head) logits equal transformers' after import
and after export, an exact llmjax round trip, and what T5 cannot express by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from llmjax.convert import check, hf, hf_config  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402
from llmjax.model.transformer import Transformer  # noqa: E402

VOCAB = 203  # odd sizes: a swapped axis cannot pass by symmetry
ENCODER_TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 23))
DECODER_TOKENS = np.random.default_rng(1).integers(0, VOCAB, (2, 11))
# d_kv * heads != d_model, and more decoder than encoder blocks.
T5 = dict(vocab_size=VOCAB, d_model=36, d_kv=10, d_ff=52, num_layers=2, num_decoder_layers=3,
          num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
          layer_norm_epsilon=1e-6, dropout_rate=0.0)
VERSIONS = {'v1.0': dict(feed_forward_proj='relu', tie_word_embeddings=True),
            'v1.1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False)}
# The llmjax side of the same layouts.
T5_CFG = ModelConfig(vocab_size=VOCAB, d_model=36, num_layers=2, num_decoder_layers=3,
                     num_heads=3, num_kv_heads=3, head_dim=10, mlp_dim=52, max_len=512,
                     arch='encoder_decoder', positions='relative', relative_buckets=8,
                     relative_max_distance=20, scale_scores=False, norm='rmsnorm',
                     norm_eps=1e-6, mlp='relu', tie_embeddings=True)
LLMJAX = {'v1.0': T5_CFG, 'v1.1': dataclasses.replace(T5_CFG, mlp='geglu', tie_embeddings=False)}


def _reference(version: str, noise: float = 0.05):
  """A random float32 T5 with every parameter moved off its init by `noise` x N(0, 1), its
  head untied for v1.1 (transformers 5 ties T5's head whatever the config says, unless the
  weights differ)."""
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**T5,
                                                                        **VERSIONS[version]))
  if not VERSIONS[version]['tie_word_embeddings']:
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  with torch.no_grad():
    for p in model.parameters():
      p.add_(noise * torch.randn_like(p))
  return model.eval()


def _hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(ENCODER_TOKENS),
                 decoder_input_ids=torch.tensor(DECODER_TOKENS)).logits.numpy()


def _logits(model) -> np.ndarray:
  return np.asarray(model(jnp.asarray(DECODER_TOKENS), encoder_inputs=jnp.asarray(ENCODER_TOKENS)))


def _params(model) -> dict:
  return jax.device_get(nnx.state(model, nnx.Param).to_pure_dict())


@pytest.mark.parametrize('version', VERSIONS)
def test_import_and_export_give_the_logits_of_transformers(tmp_path, version):
  reference = _reference(version)
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  expected = _hf_logits(reference)
  assert np.abs(expected).max() > 1.0  # not a degenerate model

  model, _ = hf.load_hf(tmp_path / 'hf')
  assert hf_config.architecture_mismatch(LLMJAX[version], model.cfg) == []
  np.testing.assert_allclose(_logits(model), expected, atol=1e-4)

  out = hf.save_hf(model, tmp_path / 'exported')
  reloaded, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(out,
                                                                      output_loading_info=True)
  assert type(reloaded) is transformers.T5ForConditionalGeneration
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  np.testing.assert_allclose(_hf_logits(reloaded.eval()), expected, atol=1e-4)


def _perturbed(cfg: ModelConfig) -> Transformer:
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(1)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: x + jnp.asarray(0.05 * rng.normal(size=x.shape), x.dtype), state))


@pytest.mark.parametrize('version', VERSIONS)
def test_llmjax_to_t5_to_llmjax_is_exact(tmp_path, version):
  model = _perturbed(LLMJAX[version])
  out = hf.save_hf(model, tmp_path / 'hf')
  assert hf.model_type(out) == 't5'  # an encoder-decoder's default family
  loaded, _ = hf.load_hf(out)
  assert hf_config.architecture_mismatch(LLMJAX[version], loaded.cfg) == []
  jax.tree.map(np.testing.assert_array_equal, _params(loaded), _params(model))
  reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
  np.testing.assert_allclose(_hf_logits(reloaded), _logits(model), atol=1e-4)


@pytest.mark.parametrize('changes, message', [
    (dict(positions='rope'), "as t5 .*model.positions='rope' \\(needs 'relative'\\)"),
    (dict(num_kv_heads=1), 'model.num_kv_heads=1 \\(needs 3\\)'),
    (dict(scale_scores=True), 'model.scale_scores=True \\(needs False\\)'),
    (dict(norm='layernorm'), "model.norm='layernorm' \\(needs 'rmsnorm'\\)"),
])
def test_export_names_what_t5_cannot_express(tmp_path, changes, message):
  model = nnx.eval_shape(lambda: Transformer(dataclasses.replace(T5_CFG, **changes),
                                             nnx.Rngs(0)))
  with pytest.raises(hf_config.ConversionError, match=message):
    hf.save_hf(model, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('changes, message', [
    (dict(feed_forward_proj='gated-relu'), "feed_forward_proj='gated-relu'; llmjax supports"),
    (dict(is_encoder_decoder=False), 'is_encoder_decoder=False'),
])
def test_import_refuses_what_llmjax_computes_differently(changes, message):
  config = {'model_type': 't5', **T5, **changes}
  with pytest.raises(hf_config.ConversionError, match=message):
    hf_config.config_from_hf(config)


def test_released_configs_read_as_their_version():
  # Flan-T5 / T5 v1.1 folders (written by transformers 4) say tie_word_embeddings=false;
  # transformers 5 writes True and says it in scale_decoder_outputs.
  old = hf_config.config_from_hf({'model_type': 't5', **T5, 'feed_forward_proj': 'gated-gelu',
                                  'tie_word_embeddings': False})
  new = hf_config.config_from_hf({'model_type': 't5', **T5, 'feed_forward_proj': 'gated-gelu',
                                  'tie_word_embeddings': True, 'scale_decoder_outputs': False})
  assert old == new and not old.tie_embeddings and old.mlp == 'geglu'
  v10 = hf_config.config_from_hf({'model_type': 't5', **T5})
  assert v10.tie_embeddings and v10.mlp == 'relu' and v10.num_decoder_layers == 3


def test_the_checker_compares_every_layer_of_both_stacks(tmp_path):
  _reference('v1.1').save_pretrained(tmp_path / 'hf', safe_serialization=True)
  report = check.compare(tmp_path / 'hf', length=13)
  assert report.names == ['encoder embeddings', 'encoder layer 0', 'encoder layer 1 + final norm',
                          'decoder embeddings', 'decoder layer 0', 'decoder layer 1',
                          'decoder layer 2 + final norm', 'logits']
  assert report.first_mismatch() is None, report.lines()
  # Both sides computed each block (an embedding lookup is exact).
  assert all(d > 0 for n, d in zip(report.names, report.max_diff) if 'layer' in n)


def test_decoder_depth_compares_however_it_is_written():
  explicit = dataclasses.replace(T5_CFG, num_layers=3, num_decoder_layers=3)
  assert hf_config.architecture_mismatch(explicit, dataclasses.replace(explicit,
                                                                       num_decoder_layers=0)) == []
  assert hf_config.architecture_mismatch(T5_CFG, dataclasses.replace(T5_CFG, num_decoder_layers=2)
                                         ) == ['model.num_decoder_layers: run 3, hf 2']


def test_a_byte_runs_sentinels_are_exported_as_t5s_and_read_back(tmp_path):
  from llmjax.convert import hf_tokenizer  # noqa: PLC0415
  from llmjax.data import pipeline, tokenizers  # noqa: PLC0415
  cfg = pipeline.DataConfig(seq_len=64, objective='span', packing='first_fit')
  span = pipeline.span_corruption(tokenizers.ByteTokenizer(), cfg)
  assert span.sentinels == (257, 258, 259)  # past the bytes and end-of-text
  converted, eot = hf_tokenizer.of_run(tokenizers.ByteTokenizer(), None, span.sentinels)
  hf_tokenizer.write(tmp_path, converted, eot, 64)
  exported = tokenizers.load(f'hf:{tmp_path}')
  assert pipeline.span_corruption(exported, cfg).sentinels == span.sentinels
  fast = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert fast.convert_tokens_to_ids('<extra_id_2>') == 259
  with pytest.raises(ValueError, match='not the next free ids'):
    hf_tokenizer.of_run(tokenizers.ByteTokenizer(), None, (258, 259))
