"""llmjax run folders from Hugging Face folders, and back.

An imported run folder looks like one the trainer wrote, so `init_from=WORKDIR`,
`runs.RunFolder` and tools that read runs work on it unchanged:
`config.json` (the resolved experiment with default optimizer, data and train
sections, the data tokenizer set to the imported tokenizer.json) and an orbax
checkpoint at step 0 holding a TrainState (imported parameters, fresh optimizer
state). It holds no data iterator state, so it starts runs (init_from) rather
than resuming one in place.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import checkpoint, configs, optim, runs
from llmjax.checkpoint import CheckpointConfig
from llmjax.convert import hf, hf_config, hf_tokenizer
from llmjax.data import pipeline
from llmjax.metrics import MetricsConfig
from llmjax.sharding import MeshConfig
from llmjax.step import TrainConfig, TrainState


def hf_to_run(hf_dir, workdir, dtype: str = 'float32') -> pathlib.Path:
  """Imports a Hugging Face folder as a new llmjax run folder; returns the step folder."""
  hf_dir, workdir = pathlib.Path(hf_dir).resolve(), pathlib.Path(workdir).resolve()
  if workdir.exists() and any(workdir.iterdir()):
    raise FileExistsError(f'{workdir} is not empty; the import writes a new run folder')
  model, tokenizer = hf.load_hf(hf_dir, dtype)
  cfg = model.cfg
  workdir.mkdir(parents=True, exist_ok=True)
  tokenizer_spec = pipeline.DataConfig.tokenizer
  if tokenizer is not None:  # a copy in the run folder, so the run outlives the HF folder
    shutil.copyfile(hf_dir / 'tokenizer.json', workdir / 'tokenizer.json')
    tokenizer_spec = f'hf:{workdir / "tokenizer.json"}'
  data = pipeline.DataConfig(tokenizer=tokenizer_spec,
                             seq_len=min(pipeline.DataConfig.seq_len, cfg.max_len))
  exp = configs.Experiment(model=cfg, data=data, optim=optim.OptimConfig(),
                           train=TrainConfig(), mesh=MeshConfig(), metrics=MetricsConfig(),
                           checkpoint=CheckpointConfig())
  resolved = {**configs.as_dict(exp), 'data_fingerprint': '', 'data_info': {},
              'imported_from': str(hf_dir), 'hf_model_type': hf.model_type(hf_dir)}
  (workdir / 'config.json').write_text(json.dumps(resolved, indent=2) + '\n')

  tx, _ = optim.make(exp.optim, cfg, exp.train.steps)
  params = nnx.state(model, nnx.Param)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=tx.init(params),
                     rng=jax.random.key_data(jax.random.key(exp.train.seed + 1)))
  counts = {'tokens_seen': 0, 'unique_tokens_seen': 0, 'epoch': 0}
  ckpt = checkpoint.Checkpointer(workdir, exp.checkpoint, exp.train.steps)
  ckpt.save(0, state, {'iterator': None, 'counts': counts}, resolved)
  ckpt.close()
  if ckpt.steps() != [0]:  # Checkpointer.save reports a failed write and carries on
    raise OSError(f'the checkpoint could not be written to {ckpt.directory}')
  return ckpt.directory / '0'


def _export_family(run: runs.RunFolder, kind: str | None) -> str | None:
  """The family asked for, else the one the run was imported from when it still fits."""
  imported = run.config.get('hf_model_type')
  if kind or imported not in hf_config.FAMILIES:
    return kind
  return imported if not hf_config.export_problems(run.model_cfg, imported) else None


def _run_tokenizer(run: runs.RunFolder):
  """(tokenizer dir to copy, converted tokenizer) of a run; llmjax's convention (each
  document starts with end-of-text) goes into every tokenizer llmjax trained with. An
  imported folder's tokenizer.json is copied as it came."""
  spec = run.experiment.data.tokenizer
  if spec.startswith('hf:') and run.imported:
    return spec.removeprefix('hf:'), None
  # A masked-LM run's mask token (one past the tokenizer's ids) goes into the export.
  mask = pipeline.mask_id(run.tokenizer) if run.experiment.data.objective == 'mlm' else None
  if spec.startswith('hf:'):
    return None, hf_tokenizer.of_hf_file(spec.removeprefix('hf:'), mask)
  # A span-corruption run's sentinels past the tokenizer's ids (byte) go in as <extra_id_N>.
  span = pipeline.span_corruption(run.tokenizer, run.experiment.data)
  added = [i for i in span.sentinels if i >= run.tokenizer.vocab_size] if span else []
  return None, hf_tokenizer.of_run(run.tokenizer, mask, added)


def run_to_hf(workdir, out_dir, step: int | None = None, overwrite: bool = False,
              dtype: str = 'float32', kind: str | None = None) -> pathlib.Path:
  """Exports a run's checkpoint (newest, or `step`) as a Hugging Face folder of family
  `kind` (default: the family it was imported from, else `hf_config.family`), with its
  tokenizer (byte, SentencePiece or tokenizer.json; none for synthetic languages)."""
  run = runs.RunFolder(workdir)
  cfg = run.model_cfg
  kind = _export_family(run, kind)
  hf.check_export(cfg, out_dir, overwrite, dtype, kind)  # before the checkpoint is read
  run.step_folder(step)
  tokenizer_dir, converted = _run_tokenizer(run)
  return hf.save_hf(run.model(step), out_dir, tokenizer_dir, overwrite, dtype, kind, converted)
