"""Warm starts (`config.init_from`): parameters from another llmjax run or a Hugging Face
folder, with a fresh optimizer and data order.

Specs: 'WORKDIR[:STEP]' (a run folder or its checkpoints folder; default: the newest
step) or 'hf:PATH' (a Hugging Face GPT-2 or Llama folder). The source must hold a
model with the same parameters, names and shapes as the run's `config.model`;
`check` says so before anything is trained or written. A LoRA fine-tune's folder gives
its merged weights (W + (alpha / r) * A @ B), the model it evaluated.
"""

import pathlib

import jax
from flax import nnx

from llmjax import checkpoint, runs
from llmjax.convert import hf
from llmjax.model import lora
from llmjax.model.config import ModelConfig
from llmjax.step import abstract_model

HF_PREFIX = 'hf:'


def _hf_folder(spec: str) -> pathlib.Path:
  return pathlib.Path(spec[len(HF_PREFIX):]).expanduser().resolve()


def check(spec: str, model_cfg: ModelConfig) -> None:
  """Raises FileNotFoundError or ValueError unless `spec` can initialize a model of
  `model_cfg`; reads no parameters."""
  if spec.startswith(HF_PREFIX):
    hf.check_warm_start(_hf_folder(spec), model_cfg)
    return
  path, step = runs.parse_spec(spec)
  source = runs.RunFolder(path)
  source.step_folder(step)  # a missing checkpoint is named first
  mismatch = shape_mismatch(source.model_cfg, model_cfg)
  if mismatch:
    raise ValueError(f'{source.path} holds a model of other parameter shapes than '
                     f'config.model: ' + '; '.join(mismatch))


def shape_mismatch(source: ModelConfig, target: ModelConfig) -> list[str]:
  """Parameters whose presence or shape differs between two model configs."""
  def shapes(cfg):
    flat = nnx.to_flat_state(abstract_model(cfg)[1])
    return {'.'.join(map(str, path)): tuple(v.shape) for path, v in flat}

  have, want = shapes(source), shapes(target)
  return [f'{name}: source {have.get(name, "absent")}, config {want.get(name, "absent")}'
          for name in sorted(set(have) | set(want)) if have.get(name) != want.get(name)]


def params(spec: str, params_target: nnx.State) -> tuple[nnx.State, pathlib.Path]:
  """(parameters placed as `params_target` says, the folder they came from)."""
  if spec.startswith(HF_PREFIX):
    folder = _hf_folder(spec)
    return hf.params_like(folder, params_target), folder
  path, step = runs.parse_spec(spec)
  source = runs.RunFolder(path)
  folder = source.step_folder(step)
  if lora.enabled(source.experiment.lora):  # a LoRA fine-tune: its merged weights
    merged = source.params(step, jax.tree.map(lambda t: t.sharding, params_target))
    return jax.tree.map(lambda m, t: m.astype(t.dtype), merged, params_target), folder
  return checkpoint.restore_params(folder, params_target), folder
