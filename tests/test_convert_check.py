"""The logit checker (python -m llmjax.convert check): a matching pair passes, and a pair
with one weight perturbed is reported at the first layer that reads it."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

import hf_reference  # noqa: E402

from llmjax import checkpoint, step  # noqa: E402
from llmjax.convert import check, hf, run_folder  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402
from llmjax.model.transformer import Transformer  # noqa: E402
from llmjax.convert.__main__ import main as convert_main  # noqa: E402

# Three layers, GQA, odd widths; Qwen2 so that the q/k/v biases are checked too.
QWEN2 = dict(vocab_size=97, hidden_size=36, intermediate_size=50, num_hidden_layers=3,
             num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64)


@pytest.fixture
def folder(tmp_path):
  model = hf_reference.random_model(transformers.Qwen2Config(**QWEN2))
  model.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  return tmp_path / 'hf'


def test_a_matching_pair_passes(folder):
  report = check.compare(folder, num_prompts=2, length=16)
  assert report.names == ['embeddings', 'layer 0', 'layer 1', 'layer 2 + final norm', 'logits']
  assert max(report.max_diff) < 1e-5 and report.first_mismatch() is None
  assert report.lines()[-1] == 'every output within 0.0001'


def test_one_perturbed_weight_is_reported_at_its_layer(folder, tmp_path, capsys):
  run = tmp_path / 'run'
  run_folder.hf_to_run(folder, run)  # llmjax's copy of the original weights
  tensors = load_file(folder / 'model.safetensors')
  name = 'model.layers.1.self_attn.k_proj.bias'
  tensors[name] = tensors[name] + np.float32(0.01) * np.arange(tensors[name].size)
  save_file(tensors, folder / 'model.safetensors', metadata={'format': 'pt'})
  assert convert_main(['check', '--hf_dir', str(folder), '--workdir', str(run), '--length',
                       '16']) == 1
  out = capsys.readouterr().out.splitlines()
  assert f'run {run}' in out[0] and out[-1] == 'first output past 0.0001: layer 1'
  diffs = {name.strip(): float(value) for name, value in (l.rsplit(None, 1) for l in out[1:-1])}
  assert diffs['layer 0'] < 1e-5 < 1e-3 < diffs['layer 1']  # layer 0 the same, 1 not


def test_bad_check_inputs_exit_2(folder, tmp_path, capsys):
  assert convert_main(['check', '--hf_dir', str(tmp_path / 'nope')]) == 2
  assert 'does not exist' in capsys.readouterr().err
  assert convert_main(['check', '--hf_dir', str(folder), '--num_prompts', '0']) == 2
  assert 'num_prompts=0 and length=32 must be at least 1' in capsys.readouterr().err


def test_a_mup_run_compares_layer_by_layer_with_its_export(tmp_path):
  """Its multipliers are folded into the exported weights; the checker folds them too, so
  even the final norm (which holds a tied head's logit multiplier) compares."""
  cfg = ModelConfig(vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=48, max_len=32, parametrization='mup',
                    mup_base_width=16, mup_input_mult=1.7, mup_output_mult=3.0,
                    mup_attn_mult=0.6)
  model = Transformer(cfg, nnx.Rngs(0))
  workdir = tmp_path / 'run'
  ckpt = checkpoint.Checkpointer(workdir, checkpoint.CheckpointConfig(), 10)
  ckpt.save(1, step.TrainState(step=jnp.array(1), params=nnx.state(model, nnx.Param),
                               opt_state=None, rng=None), {'iterator': None}, {})
  ckpt.close()
  config = {'model': dataclasses.asdict(cfg), 'data': {'tokenizer': 'byte'}}
  (workdir / 'config.json').write_text(json.dumps(config))
  hf.save_hf(model, tmp_path / 'hf')
  report = check.compare(tmp_path / 'hf', workdir, num_prompts=2, length=16)
  assert report.first_mismatch() is None, report.lines()
