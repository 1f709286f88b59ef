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
from llmjax.convert import hf
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
              'imported_from': str(hf_dir)}
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


def run_to_hf(workdir, out_dir, step: int | None = None, overwrite: bool = False,
              dtype: str = 'float32') -> pathlib.Path:
  """Exports a run's checkpoint (newest, or `step`) as a Hugging Face folder, with the
  run's tokenizer when it is a tokenizer.json (data.tokenizer='hf:PATH')."""
  run = runs.RunFolder(workdir)
  cfg = run.model_cfg
  hf.check_export(cfg, out_dir, overwrite, dtype)  # before the checkpoint is read
  run.step_folder(step)
  tokenizer = run.experiment.data.tokenizer
  tokenizer_dir = tokenizer.removeprefix('hf:') if tokenizer.startswith('hf:') else None
  return hf.save_hf(run.model(step), out_dir, tokenizer_dir, overwrite, dtype)
