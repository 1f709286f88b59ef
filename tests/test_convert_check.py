"""The logit checker (python -m llmjax.convert check): a matching pair passes, and a pair
with one weight perturbed is reported at the first layer that reads it."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from llmjax.convert import check, run_folder  # noqa: E402
from llmjax.convert.__main__ import main as convert_main  # noqa: E402

# Three layers, GQA, odd widths; Qwen2 so that the q/k/v biases are checked too.
QWEN2 = dict(vocab_size=97, hidden_size=36, intermediate_size=50, num_hidden_layers=3,
             num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64)


@pytest.fixture
def folder(tmp_path):
  torch.manual_seed(0)
  model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**QWEN2))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.eval().save_pretrained(tmp_path / 'hf', safe_serialization=True)
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
