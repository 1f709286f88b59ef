"""Hugging Face interop: logits equal to transformers' after import and after export, exact
round trips, the command line, warm starts from an HF folder, and bad inputs by message."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

import hf_reference  # noqa: E402

from llmjax import configs, runs, train, warmstart  # noqa: E402
from llmjax.convert import hf, hf_config  # noqa: E402
from llmjax.convert.__main__ import main as convert_main  # noqa: E402
from llmjax.data import pipeline  # noqa: E402
from llmjax.model import options  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402
from llmjax.model.transformer import Transformer  # noqa: E402

VOCAB = 300
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 16))
# HF Llama in the shapes of a tiny llmjax run: GQA (4 query heads, 2 kv heads), untied.
LLAMA = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             rope_theta=500.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
            eos_token_id=0)


def _hf_model(kind: str, **overrides):
  if kind == 'gpt2':
    return hf_reference.random_model(transformers.GPT2Config(**{**GPT2, **overrides}))
  return hf_reference.random_model(transformers.LlamaConfig(**{**LLAMA, **overrides}))


def _write_tokenizer(path, size: int) -> None:
  """A word-level tokenizer.json of `size` tokens, the last one end-of-text."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {f't{i}': i for i in range(size - 1)} | {'<|endoftext|>': size - 1}
  tokenizer = Tokenizer(models.WordLevel(vocab, unk_token='t0'))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer.add_special_tokens(['<|endoftext|>'])
  tokenizer.save(str(path))


def _saved(tmp_path, kind: str, **overrides):
  """(transformers model, the folder it was saved to with safetensors)."""
  model = _hf_model(kind, **overrides)
  folder = tmp_path / f'hf_{kind}'
  model.save_pretrained(folder, safe_serialization=True)
  return model, folder


# Llama's MLP is gated: every other gated kind of the registry is checked as a Llama with its
# hidden_act, so a new kind gets golden logits from transformers with no edit here.
_OTHER_GATED = [name for name, k in options.MLPS.items() if k.gated and name != 'swiglu']


@pytest.mark.parametrize('kind, overrides', [
    ('gpt2', {}), ('llama', {}), ('llama', {'tie_word_embeddings': True}),
    *[('llama', {'hidden_act': options.MLPS[name].hf_activations[0]}) for name in _OTHER_GATED]],
    ids=['gpt2', 'llama-gqa-untied', 'llama-tied', *[f'llama-{n}' for n in _OTHER_GATED]])
def test_import_and_export_give_the_logits_of_transformers(tmp_path, kind, overrides):
  reference, folder = _saved(tmp_path, kind, **overrides)
  expected = hf_reference.logits(reference, TOKENS)
  model, tokenizer = hf.load_hf(folder)
  assert tokenizer is None  # the folder has no tokenizer.json
  assert model.cfg.tie_embeddings == (kind == 'gpt2' or overrides.get('tie_word_embeddings', False))
  hf_activation = overrides.get('hidden_act', 'silu' if kind == 'llama' else 'gelu_new')
  assert hf_activation in options.MLPS[model.cfg.mlp].hf_activations
  assert model.cfg.num_kv_heads == (4 if kind == 'gpt2' else 2)
  np.testing.assert_allclose(np.asarray(model(jax.numpy.asarray(TOKENS))), expected, atol=1e-4)

  out = hf.save_hf(model, tmp_path / 'exported')
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out,
                                                                     output_loading_info=True)
  assert type(reloaded) is type(reference)
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  np.testing.assert_allclose(hf_reference.logits(reloaded.eval(), TOKENS), expected, atol=1e-4)


def test_hub_layouts_import_too(tmp_path):
  """The original GPT-2 files: no 'transformer.' prefix, causal-mask buffers, a tied head
  stored anyway; here also sharded with an index."""
  reference, folder = _saved(tmp_path, 'gpt2')
  tensors = {k.removeprefix('transformer.'): v
             for k, v in load_file(folder / 'model.safetensors').items()}
  tensors['h.0.attn.bias'] = np.tril(np.ones((1, 1, 64, 64), np.float32))
  tensors['lm_head.weight'] = tensors['wte.weight']
  names = sorted(tensors)
  shards = {'model-00001-of-00002.safetensors': names[::2],
            'model-00002-of-00002.safetensors': names[1::2]}
  (folder / 'model.safetensors').unlink()
  for file, shard in shards.items():
    save_file({n: tensors[n] for n in shard}, folder / file, metadata={'format': 'pt'})
  weight_map = {n: file for file, shard in shards.items() for n in shard}
  (folder / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  model, _ = hf.load_hf(folder)
  np.testing.assert_allclose(np.asarray(model(jax.numpy.asarray(TOKENS))),
                             hf_reference.logits(reference, TOKENS), atol=1e-4)

  head_file = weight_map['lm_head.weight']
  save_file({n: tensors[n] + (n == 'lm_head.weight') for n in shards[head_file]},
            folder / head_file, metadata={'format': 'pt'})
  with pytest.raises(hf_config.ConversionError, match='lm_head.weight differs from the input '
                     'embedding although config.json ties them'):
    hf.load_hf(folder)


def _random_model(cfg: ModelConfig) -> Transformer:
  """A model of `cfg` with every parameter random (biases and norms included)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  rng = np.random.default_rng(1)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: jax.numpy.asarray(rng.normal(size=x.shape), x.dtype), state))


def _params(model: Transformer) -> dict:
  return jax.device_get(nnx.state(model, nnx.Param).to_pure_dict())


GPT2_LIKE = ModelConfig(vocab_size=VOCAB, d_model=48, num_layers=2, num_heads=4, num_kv_heads=4,
                        head_dim=12, mlp_dim=96, max_len=32, norm='layernorm',
                        positions='learned', mlp='gelu', use_bias=True, tie_embeddings=False)
LLAMA_LIKE = ModelConfig(vocab_size=VOCAB, d_model=48, num_layers=3, num_heads=4, num_kv_heads=1,
                         head_dim=16, mlp_dim=96, max_len=32, rope_theta=1234.0, norm_eps=1e-6)


@pytest.mark.parametrize('cfg', [GPT2_LIKE, LLAMA_LIKE], ids=['gpt2-untied', 'llama-mqa'])
def test_llmjax_to_hf_to_llmjax_is_exact(tmp_path, cfg):
  model = _random_model(cfg)
  hf.save_hf(model, tmp_path / 'hf')
  loaded, _ = hf.load_hf(tmp_path / 'hf')
  assert hf_config.architecture_mismatch(cfg, loaded.cfg) == [] and loaded.cfg.max_len == 32
  jax.tree.map(np.testing.assert_array_equal, _params(loaded), _params(model))
  hf.save_hf(model, tmp_path / 'hf', overwrite=True, dtype='bfloat16')
  loaded, _ = hf.load_hf(tmp_path / 'hf', dtype='bfloat16')
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(a.dtype)),
               _params(loaded), _params(model))


def test_command_line_round_trip(tmp_path, capsys):
  reference, folder = _saved(tmp_path, 'gpt2')
  _write_tokenizer(folder / 'tokenizer.json', VOCAB)
  run = tmp_path / 'run'
  assert convert_main(['hf-to-llmjax', '--hf_dir', str(folder), '--out', str(run)]) == 0
  config = json.loads((run / 'config.json').read_text())
  assert config['model']['num_layers'] == 2 and config['model']['positions'] == 'learned'
  assert config['data']['tokenizer'] == f'hf:{run.resolve() / "tokenizer.json"}'
  assert (run / 'checkpoints' / '0' / 'state').is_dir()
  # The parameters are read whatever the optimizer of the run that asks.
  params = runs.RunFolder(run).params()
  imported, _ = hf.load_hf(folder)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params.to_pure_dict()),
               _params(imported))

  out = tmp_path / 'exported'
  assert convert_main(['llmjax-to-hf', '--workdir', str(run), '--out', str(out)]) == 0
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  np.testing.assert_allclose(hf_reference.logits(reloaded, TOKENS), hf_reference.logits(reference, TOKENS),
                             atol=1e-4)
  assert (out / 'tokenizer.json').read_text() == (folder / 'tokenizer.json').read_text()
  assert json.loads((out / 'config.json').read_text())['eos_token_id'] == VOCAB - 1
  capsys.readouterr()
  assert convert_main(['llmjax-to-hf', '--workdir', str(run), '--out', str(out)]) == 2
  assert 'is not empty' in capsys.readouterr().err
  assert convert_main(['hf-to-llmjax', '--hf_dir', str(tmp_path / 'nope'), '--out',
                       str(tmp_path / 'run2')]) == 2
  assert 'does not exist' in capsys.readouterr().err


def _warm_start_config(folder, num_layers=2):
  """A one-step run of the HF Llama's architecture on synthetic rows of one document each."""
  config = configs.defaults()
  model = dict(vocab_size=VOCAB, d_model=64, num_layers=num_layers, num_heads=4, num_kv_heads=2,
               head_dim=16, mlp_dim=128, max_len=64, norm_eps=1e-6, rope_theta=500.0,
               tie_embeddings=False)
  for key, value in model.items():
    config.model[key] = value
  config.data.source = 'synthetic:vocab=64,doc_len=16'
  config.data.seq_len = 16
  config.data.global_batch_size = 8
  config.data.packing = 'first_fit'
  config.data.shuffle_window = 1
  config.train.steps = 1
  config.optim.warmup_steps = 0
  config.train.log_every = 1
  config.train.eval_batches = 1
  config.train.sample_tokens = 0
  config.metrics.tensorboard = False
  config.metrics.peak_flops_per_device = 1e12  # skips measuring the CPU's matmul peak
  config.init_from = f'hf:{folder}'
  return config


@pytest.mark.slow
def test_warm_start_from_a_hugging_face_folder(tmp_path, capsys):
  reference, folder = _saved(tmp_path, 'llama')
  exp = configs.build(_warm_start_config(folder), jax.device_count())
  batch = next(iter(pipeline.train_dataset(pipeline.load(exp.data), exp.data)))['batch']
  # One whole document per row (positions 0..15, every target counted): HF sees the same.
  assert (batch['positions'] == np.arange(16)).all() and (batch['weights'] == 1).all()
  logits = torch.tensor(hf_reference.logits(reference, batch['inputs'])).reshape(-1, VOCAB)
  targets = torch.tensor(batch['targets']).long().reshape(-1)
  hf_loss = float(torch.nn.functional.cross_entropy(logits, targets))
  train.run(exp, tmp_path / 'run', configs.as_dict(exp))
  assert f'parameters initialized from {folder.resolve()}' in capsys.readouterr().out
  lines = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  first = next(json.loads(line) for line in lines if '"loss"' in line)
  assert first['step'] == 1
  np.testing.assert_allclose(first['loss'], hf_loss, rtol=1e-5)

  # Checked before anything is written (python -m llmjax.main prints it as config.init_from).
  other = configs.build(_warm_start_config(folder, num_layers=3), jax.device_count())
  with pytest.raises(hf_config.ConversionError, match=r'holds a different model than '
                     r'config.model:\n  model.num_layers: run 3, hf 2'):
    warmstart.check(other.init_from, other.model)


@pytest.mark.parametrize('hf_cfg, message', [
    ({'model_type': 'falcon'}, "unsupported model_type 'falcon'; supported: gpt2, llama, "
                               "mistral, qwen2, bert, t5"),
    ({'model_type': 'gpt2', 'activation_function': 'silu'},
     r"activation_function='silu'; llmjax supports 'gelu_new' or 'gelu_pytorch_tanh'"),
    ({'model_type': 'gpt2', 'scale_attn_by_inverse_layer_idx': True},
     'scale_attn_by_inverse_layer_idx=True'),
    ({'model_type': 'llama', 'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0}},
     'llama3 rope scaling without low_freq_factor, high_freq_factor, '
     'original_max_position_embeddings'),
    ({'model_type': 'mistral', 'max_position_embeddings': 32768, 'sliding_window': 4096},
     'sliding_window=4096 is shorter than max_position_embeddings=32768'),
    ({'model_type': 'mistral', 'max_position_embeddings': 32768},  # the class default window
     'sliding_window=4096 is shorter'),
    ({'model_type': 'qwen2', 'num_hidden_layers': 4, 'use_sliding_window': True,
      'sliding_window': 16, 'max_window_layers': 2, 'max_position_embeddings': 64},
     'sliding_window=16 is shorter than max_position_embeddings=64'),
    ({'model_type': 'llama', 'rope_parameters': {'rope_type': 'yarn', 'rope_theta': 1e4}},
     "rope scaling 'yarn'"),
    ({'model_type': 'llama', 'attention_bias': True}, 'attention_bias=True'),
    ({'model_type': 'llama', 'hidden_act': 'gelu'}, "hidden_act='gelu'"),
])
def test_unsupported_hf_configs_are_named(hf_cfg, message):
  with pytest.raises(hf_config.ConversionError, match=message):
    hf_config.config_from_hf(hf_cfg)


def test_bad_folders_are_named(tmp_path):
  _, folder = _saved(tmp_path, 'llama')
  empty = tmp_path / 'no_weights'
  empty.mkdir()
  shutil.copy(folder / 'config.json', empty)
  with pytest.raises(FileNotFoundError, match='no weights in .*no_weights: expected '
                     'model.safetensors'):
    hf.load_hf(empty)
  (empty / 'pytorch_model.bin').write_bytes(b'')
  with pytest.raises(hf_config.ConversionError, match=r'only PyTorch pickle weights '
                     r'\(pytorch_model.bin\); llmjax reads safetensors only'):
    hf.load_hf(empty)
  with pytest.raises(FileNotFoundError, match='no config.json in'):
    hf.load_hf(tmp_path)

  tensors = load_file(folder / 'model.safetensors')
  tensors['model.layers.1.mlp.up_proj.weight'] = tensors['model.layers.1.mlp.up_proj.weight'][:100]
  tensors['model.layers.0.self_attn.q_proj.bias'] = np.zeros(64, np.float32)
  del tensors['model.norm.weight']
  save_file(tensors, folder / 'model.safetensors', metadata={'format': 'pt'})
  with pytest.raises(hf_config.ConversionError, match=(
      r'do not match its config.json:\n'
      r'  model.layers.1.mlp.up_proj.weight: shape \(100, 64\) in the file, \(128, 64\) from '
      r'config.json\n  model.norm.weight: missing \(expected shape \(64,\)\)\n'
      r'  model.layers.0.self_attn.q_proj.bias: unexpected tensor')):
    hf.load_hf(folder)


def test_vocabulary_must_fit(tmp_path):
  _, folder = _saved(tmp_path, 'llama')
  _write_tokenizer(folder / 'tokenizer.json', VOCAB + 1)
  with pytest.raises(hf_config.ConversionError, match=f'has {VOCAB + 1} tokens but the model has '
                     f'vocab_size={VOCAB}'):
    hf.load_hf(folder)
  model = _random_model(LLAMA_LIKE)
  with pytest.raises(hf_config.ConversionError, match=f'has {VOCAB + 1} tokens'):
    hf.save_hf(model, tmp_path / 'out', tokenizer_dir=folder)
  _write_tokenizer(folder / 'tokenizer.json', 200)
  _, tokenizer = hf.load_hf(folder)
  assert tokenizer.vocab_size == 200 and tokenizer.eot_id == 199


@pytest.mark.parametrize('changes, message', [
    (dict(norm='layernorm'), "as llama .*model.norm='layernorm' \\(needs 'rmsnorm'\\)"),
    (dict(qk_norm=True), 'model.qk_norm=True \\(needs False\\)'),
    (dict(logits_soft_cap=30.0), 'model.logits_soft_cap=30.0'),
    (dict(arch='encoder'), "as bert .*model.norm_position='pre' \\(needs 'post'\\); "
                           "model.embed_norm=False \\(needs True\\)"),
    (dict(positions='learned'), "as gpt2 .*model.norm='rmsnorm' \\(needs 'layernorm'\\); "
                                "model.mlp='swiglu' \\(needs 'gelu' or 'gelu_exact' or 'relu'\\); "
                                "model.use_bias=False"),
])
def test_export_refuses_what_hugging_face_cannot_express(tmp_path, changes, message):
  model = nnx.eval_shape(lambda: Transformer(dataclasses.replace(LLAMA_LIKE, **changes),
                                             nnx.Rngs(0)))
  with pytest.raises(hf_config.ConversionError, match=message):
    hf.save_hf(model, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()


def test_export_refuses_a_non_empty_folder(tmp_path):
  model = _random_model(GPT2_LIKE)
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'notes.txt').write_text('mine')
  with pytest.raises(FileExistsError, match='out is not empty; choose another folder'):
    hf.save_hf(model, tmp_path / 'out')
  hf.save_hf(model, tmp_path / 'out', overwrite=True)
  assert (tmp_path / 'out' / 'notes.txt').read_text() == 'mine'
  assert (tmp_path / 'out' / 'model.safetensors').is_file()


def _perturbed_model(cfg: ModelConfig) -> Transformer:
  """A model of `cfg` at its own init (logits O(1), where 1e-4 is a tight bound), every
  parameter perturbed so that norms and biases are not 1 and 0."""
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(1)
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: x + jax.numpy.asarray(0.05 * rng.normal(size=x.shape), x.dtype), state))


@pytest.mark.parametrize('cfg', [
    dataclasses.replace(LLAMA_LIKE, num_kv_heads=2, tie_embeddings=False),
    dataclasses.replace(LLAMA_LIKE, num_kv_heads=2, tie_embeddings=True),
    dataclasses.replace(GPT2_LIKE, tie_embeddings=True),
], ids=['llama-untied', 'llama-tied', 'gpt2-tied'])
@pytest.mark.parametrize('parametrization', ['mup', 'completep'])
def test_a_mup_model_exports_with_its_multipliers_folded(tmp_path, cfg, parametrization):
  # Twice the base width (and, for completep, 3 layers over a base depth of 1), every
  # multiplier away from 1: each must reach the exported weights exactly once.
  cfg = dataclasses.replace(cfg, parametrization=parametrization,
                            mup_base_width=cfg.d_model // 2, mup_input_mult=1.7,
                            mup_output_mult=3.0, mup_attn_mult=0.6,
                            mup_base_depth=1 if parametrization == 'completep' else 0)
  model = _perturbed_model(cfg)
  tokens = jax.numpy.asarray(TOKENS[:, :12])
  expected = np.asarray(model(tokens))
  sp_logits = np.asarray(_perturbed_model(dataclasses.replace(
      cfg, parametrization='sp', mup_base_width=0, mup_input_mult=1.0, mup_output_mult=1.0,
      mup_attn_mult=1.0, mup_base_depth=0))(tokens))
  assert np.abs(expected - sp_logits).max() > 1e-2  # the multipliers matter here
  out = hf.save_hf(model, tmp_path / 'exported')
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  np.testing.assert_allclose(hf_reference.logits(reloaded, TOKENS[:, :12]), expected, atol=1e-4)


def test_a_multiplier_that_cannot_be_folded_is_named(tmp_path):
  # The base keeps the model's head dim, so only a non-unit attention multiplier makes a
  # score factor other than 1/sqrt(H), which qk_norm would cancel in the query projection.
  cfg = dataclasses.replace(LLAMA_LIKE, parametrization='mup', mup_base_width=24, qk_norm=True,
                            num_kv_heads=2, mup_attn_mult=2.0)
  model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  with pytest.raises(hf_config.ConversionError, match='qk_norm would undo it'):
    hf.save_hf(model, tmp_path / 'out')
  assert not (tmp_path / 'out').exists()
