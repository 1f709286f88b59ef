"""BERT (BertForMaskedLM) <-> llmjax encoders: masked-LM logits equal transformers' after
import and after export, an exact llmjax round trip, the token-type row folded into the
position table, muP multipliers folded, and what BERT cannot express by name."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

import hf_reference  # noqa: E402
from llmjax.convert import check, hf, hf_config, hf_weights  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402
from llmjax.model.transformer import Transformer  # noqa: E402

VOCAB = 203  # odd sizes: a swapped axis cannot pass by symmetry
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 21))
BERT = dict(vocab_size=VOCAB, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
            intermediate_size=52, max_position_embeddings=40, layer_norm_eps=1e-7)
# The llmjax side of the same layout.
ENCODER = ModelConfig(vocab_size=VOCAB, d_model=36, num_layers=2, num_heads=3, num_kv_heads=3,
                      head_dim=12, mlp_dim=52, max_len=40, arch='encoder', norm='layernorm',
                      norm_position='post', embed_norm=True, positions='learned',
                      mlp='gelu_exact', use_bias=True, norm_eps=1e-7)


def _params(model) -> dict:
  return jax.device_get(nnx.state(model, nnx.Param).to_pure_dict())


def _perturbed(cfg: ModelConfig) -> Transformer:
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(1)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: x + jax.numpy.asarray(0.05 * rng.normal(size=x.shape), x.dtype), state))


@pytest.mark.parametrize('tied', [True, False], ids=['tied', 'untied'])
def test_import_and_export_give_the_masked_lm_logits_of_transformers(tmp_path, tied):
  reference = hf_reference.random_model(
      transformers.BertConfig(**BERT, tie_word_embeddings=tied), head='masked_lm')
  types = reference.bert.embeddings.token_type_embeddings.weight.detach().numpy()
  assert np.abs(types[0]).max() > 1e-2  # the folded row matters
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  expected = hf_reference.logits(reference, TOKENS)

  model, _ = hf.load_hf(tmp_path / 'hf')
  assert hf_config.architecture_mismatch(dataclasses.replace(ENCODER, tie_embeddings=tied),
                                         model.cfg) == []
  np.testing.assert_allclose(np.asarray(model(jax.numpy.asarray(TOKENS))), expected, atol=1e-4)

  out = hf.save_hf(model, tmp_path / 'exported')
  reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(out,
                                                                     output_loading_info=True)
  assert type(reloaded) is transformers.BertForMaskedLM
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  np.testing.assert_allclose(hf_reference.logits(reloaded.eval(), TOKENS), expected, atol=1e-4)


def test_llmjax_to_bert_to_llmjax_is_exact(tmp_path):
  model = _perturbed(ENCODER)
  out = hf.save_hf(model, tmp_path / 'hf')
  assert hf.model_type(out) == 'bert'  # an encoder's default family
  loaded, _ = hf.load_hf(out)
  assert hf_config.architecture_mismatch(ENCODER, loaded.cfg) == []
  jax.tree.map(np.testing.assert_array_equal, _params(loaded), _params(model))
  reloaded = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  np.testing.assert_allclose(hf_reference.logits(reloaded, TOKENS),
                             np.asarray(model(jax.numpy.asarray(TOKENS))), atol=1e-4)


def test_the_token_type_row_joins_the_position_table(tmp_path):
  reference = hf_reference.random_model(transformers.BertConfig(**BERT), head='masked_lm')
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  embeddings = reference.bert.embeddings
  positions = embeddings.position_embeddings.weight.detach().numpy()
  types = embeddings.token_type_embeddings.weight.detach().numpy()
  _, params = hf.read_params(tmp_path / 'hf')
  np.testing.assert_allclose(params['pos_embedding'], positions + types[0], rtol=1e-6)
  # Type-1 tokens are another function; llmjax never feeds them (as its docstring says).
  ones = torch.ones_like(torch.tensor(TOKENS))
  assert np.abs(hf_reference.logits(reference, TOKENS, token_type_ids=ones)
                - hf_reference.logits(reference, TOKENS)).max() > 1e-3


@pytest.mark.parametrize('tied', [True, False], ids=['tied', 'untied'])
def test_a_mup_encoder_exports_with_its_multipliers_folded(tmp_path, tied):
  cfg = dataclasses.replace(ENCODER, parametrization='mup', mup_base_width=12,
                            mup_input_mult=1.7, mup_output_mult=3.0, mup_attn_mult=0.6,
                            tie_embeddings=tied)
  model = _perturbed(cfg)
  expected = np.asarray(model(jax.numpy.asarray(TOKENS)))
  out = hf.save_hf(model, tmp_path / 'exported')
  reloaded = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  np.testing.assert_allclose(hf_reference.logits(reloaded, TOKENS), expected, atol=1e-4)


@pytest.mark.parametrize('changes, message', [
    (dict(norm_position='pre'), "as bert .*model.norm_position='pre' \\(needs 'post'\\)"),
    (dict(positions='rope'), "model.positions='rope' \\(needs 'learned'\\)"),
    (dict(num_kv_heads=1), 'model.num_kv_heads=1 \\(needs 3\\)'),
    (dict(mlp='swiglu'), "model.mlp='swiglu' \\(needs 'gelu' or 'gelu_exact' or 'relu'\\)"),
])
def test_export_names_what_bert_cannot_express(tmp_path, changes, message):
  model = nnx.eval_shape(lambda: Transformer(dataclasses.replace(ENCODER, **changes),
                                             nnx.Rngs(0)))
  with pytest.raises(hf_config.ConversionError, match=message):
    hf.save_hf(model, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('changes, message', [
    (dict(type_vocab_size=3), 'type_vocab_size=3; llmjax supports 2'),
    (dict(position_embedding_type='relative_key'), "position_embedding_type='relative_key'"),
    (dict(is_decoder=True), 'is_decoder=True'),
    (dict(hidden_act='silu'), "hidden_act='silu'"),
])
def test_unsupported_bert_configs_are_named(changes, message):
  config = {**transformers.BertConfig(**BERT).to_dict(), **changes}
  with pytest.raises(hf_config.ConversionError, match=message):
    hf_config.config_from_hf(config)


def test_pretraining_checkpoints_leave_out_the_next_sentence_head(tmp_path):
  reference = transformers.BertForPreTraining(transformers.BertConfig(**BERT)).eval()
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  model, _ = hf.load_hf(tmp_path / 'hf')  # pooler and seq_relationship are not the MLM's
  with torch.no_grad():
    expected = reference(torch.tensor(TOKENS)).prediction_logits.numpy()
  np.testing.assert_allclose(np.asarray(model(jax.numpy.asarray(TOKENS))), expected, atol=1e-4)
  assert hf_weights.layout(model.cfg) == 'bert'


def test_the_logit_checker_compares_an_encoder_layer_by_layer(tmp_path):
  reference = hf_reference.random_model(transformers.BertConfig(**BERT), head='masked_lm')
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  report = check.compare(tmp_path / 'hf', length=16)
  assert report.names == ['embeddings', 'layer 0', 'layer 1', 'logits']
  assert report.first_mismatch() is None, report.lines()
