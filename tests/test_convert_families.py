"""Hugging Face families beyond GPT-2 and Llama: Llama 3.1 rope scaling, Mistral and Qwen2,
each against transformers' logits on a small random config with odd sizes, after import and
after export; and the llama3.2-1b preset against the released model's shape."""

import dataclasses

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

import hf_reference  # noqa: E402

from llmjax import flops  # noqa: E402
from llmjax.convert import hf, hf_config  # noqa: E402
from llmjax.model.config import ModelConfig, from_preset  # noqa: E402

VOCAB = 211  # odd sizes everywhere: a swapped axis cannot pass by symmetry
# Positions up to 95 with an original context of 24: every llama3 regime (kept, blended,
# divided) appears in the head's 10 frequencies.
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 96))
LLAMA3_ROPE = dict(rope_type='llama3', rope_theta=5000.0, factor=6.0, low_freq_factor=1.0,
                   high_freq_factor=3.0, original_max_position_embeddings=24)
# 6 query heads over 2 kv heads of width 20 (not D/N), SwiGLU width 70.
SHAPE = dict(vocab_size=VOCAB, hidden_size=54, intermediate_size=70, num_hidden_layers=2,
             num_attention_heads=6, num_key_value_heads=2, head_dim=20,
             max_position_embeddings=128, rms_norm_eps=1e-6)
CASES = {
    'llama3-rope-tied': ('Llama', dict(tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)),
    'mistral-no-window': ('Mistral', dict(sliding_window=None, rope_parameters=dict(
        rope_type='default', rope_theta=777.0))),
    'mistral-window-of-the-context': ('Mistral', dict(sliding_window=128)),
    'qwen2': ('Qwen2', dict(rope_parameters=dict(rope_type='default', rope_theta=3000.0))),
    'qwen2-tied-llama3-rope': ('Qwen2', dict(tie_word_embeddings=True,
                                             rope_parameters=LLAMA3_ROPE)),
}


def _hf_model(prefix: str, overrides: dict):
  config = getattr(transformers, f'{prefix}Config')(**{**SHAPE, **overrides})
  return hf_reference.random_model(config)


@pytest.mark.parametrize('case', CASES)
def test_families_give_the_logits_of_transformers(tmp_path, case):
  prefix, overrides = CASES[case]
  reference = _hf_model(prefix, overrides)
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  expected = hf_reference.logits(reference, TOKENS)
  model, _ = hf.load_hf(tmp_path / 'hf')
  cfg = model.cfg
  assert (cfg.qkv_bias, cfg.use_bias) == (prefix == 'Qwen2', False)
  assert cfg.rope_scaling == ('llama3' if 'llama3' in case else 'none')
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (6, 2, 20)
  np.testing.assert_allclose(np.asarray(model(jax.numpy.asarray(TOKENS))), expected, atol=1e-4)

  kind = prefix.lower()
  out = hf.save_hf(model, tmp_path / 'exported', kind=kind)
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out,
                                                                     output_loading_info=True)
  assert type(reloaded) is type(reference)
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  np.testing.assert_allclose(hf_reference.logits(reloaded.eval(), TOKENS), expected, atol=1e-4)
  assert hf_config.architecture_mismatch(cfg, hf.load_hf(out)[0].cfg) == []


def test_rope_scaling_changes_the_function():
  """The llama3 scaling matters at these positions, else the test above proves nothing.
  (rope_scaling='none' keeps llmjax's own golden values: tests/test_model.py.)"""
  scaled = _hf_model('Llama', dict(rope_parameters=LLAMA3_ROPE))
  plain = _hf_model('Llama', dict(rope_parameters=dict(rope_type='default', rope_theta=5000.0)))
  assert np.abs(hf_reference.logits(scaled, TOKENS) - hf_reference.logits(plain, TOKENS)).max() > 1e-2


def test_export_family_is_chosen_and_checked(tmp_path):
  """q/k/v biases export as Qwen2; Llama and Mistral cannot hold them; a model without them
  is not a Qwen2 (whose biases would be zeros llmjax would not train)."""
  qwen = ModelConfig(vocab_size=VOCAB, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=48, max_len=16, qkv_bias=True)
  assert hf_config.family(qwen) == 'qwen2'
  assert hf_config.config_to_hf(qwen)['architectures'] == ['Qwen2ForCausalLM']
  for kind in ('llama', 'mistral'):
    with pytest.raises(hf_config.ConversionError, match=f'as {kind} \\(chosen\\): '
                       'model.qkv_bias=True \\(needs False\\)'):
      hf_config.config_to_hf(qwen, kind=kind)
  with pytest.raises(hf_config.ConversionError, match='model.qkv_bias=False \\(needs True\\)'):
    hf_config.config_to_hf(dataclasses.replace(qwen, qkv_bias=False), kind='qwen2')
  with pytest.raises(hf_config.ConversionError, match="unknown Hugging Face family 'falcon'"):
    hf_config.config_to_hf(qwen, kind='falcon')
  with pytest.raises(hf_config.ConversionError,
                     match="as bert \\(chosen\\): model.arch='decoder' \\(needs 'encoder'\\)"):
    hf_config.config_to_hf(qwen, kind='bert')  # a decoder is no BERT
  mistral = hf_config.config_to_hf(dataclasses.replace(qwen, qkv_bias=False), kind='mistral')
  assert mistral['sliding_window'] is None and mistral['model_type'] == 'mistral'


def test_llama3_2_1b_preset_is_the_released_model():
  # The released meta-llama/Llama-3.2-1B config.json, as far as the architecture goes.
  released = dict(
      model_type='llama', vocab_size=128256, hidden_size=2048, intermediate_size=8192,
      num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
      max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
      hidden_act='silu', rope_theta=500000.0,
      rope_scaling=dict(rope_type='llama3', factor=32.0, low_freq_factor=1.0,
                        high_freq_factor=4.0, original_max_position_embeddings=8192))
  imported = hf_config.config_from_hf(released)
  preset = from_preset('llama3.2-1b')
  assert hf_config.architecture_mismatch(preset, imported) == []
  assert preset.max_len == imported.max_len == 131072
  assert flops.param_counts(preset)['total'] == 1_235_814_400  # "1.24B" on the model card


def test_a_run_imported_from_mistral_exports_as_mistral(tmp_path, capsys):
  from llmjax.convert.__main__ import main as convert_main
  reference = _hf_model('Mistral', dict(sliding_window=None))
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  run = tmp_path / 'run'
  assert convert_main(['hf-to-llmjax', '--hf_dir', str(tmp_path / 'hf'), '--out', str(run)]) == 0
  for args, kind in (([], 'mistral'), (['--family', 'llama'], 'llama')):
    out = tmp_path / f'out_{kind}'
    assert convert_main(['llmjax-to-hf', '--workdir', str(run), '--out', str(out), *args]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.model_type == kind
    np.testing.assert_allclose(hf_reference.logits(reloaded, TOKENS[:, :16]),
                               hf_reference.logits(reference, TOKENS[:, :16]), atol=1e-4)
  capsys.readouterr()
  assert convert_main(['llmjax-to-hf', '--workdir', str(run), '--out', str(tmp_path / 'q'),
                       '--family', 'qwen2']) == 2
  assert 'as qwen2 (chosen): model.qkv_bias=False (needs True)' in capsys.readouterr().err
