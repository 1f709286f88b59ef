"""Runs and sweeps as a notebook sees them: config, metrics table, checkpoint steps, and any
checkpoint's parameters restored on demand onto one CPU device, whatever mesh wrote them.

A run folder is the --workdir of `python -m llmjax.main` (config.json, metrics.jsonl,
checkpoints/STEP/{state,data,config}); a sweep folder is the --workdir of
`python -m llmjax.sweep` (sweep.json, trials/NAME/ run folders). Nothing is read until asked
for, and a checkpoint's optimizer state is read only by `Run.state`.
"""

import collections
import dataclasses
import functools
import json
import pathlib
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
from flax import nnx

from llmjax import checkpoint, flops, generate, optim, train
from llmjax.data import pipeline, sources, synthetic, tokenizers
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer
from llmjax.scaling import results, runner

CACHED_CHECKPOINTS = 4  # parameter sets a Run keeps in memory (a notebook revisits a few)


def cpu_device() -> jax.Device:
  """Where analysis puts parameters: the first CPU device, also on an accelerator machine."""
  return jax.devices('cpu')[0]


def _on_cpu(abstract):
  device = jax.sharding.SingleDeviceSharding(cpu_device())
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                      abstract)


class Run:
  """One training run folder. `params(step)` and `model(step)` restore lazily, on CPU."""

  def __init__(self, path):
    self.path = pathlib.Path(path).expanduser().resolve()
    config_file = self.path / 'config.json'
    if not self.path.is_dir():
      raise FileNotFoundError(f'{self.path} does not exist')
    if not config_file.is_file():
      if (self.path / 'sweep.json').is_file():
        raise FileNotFoundError(f'{self.path} is a sweep folder, not a run: use '
                                f'Sweep({str(path)!r}), or a Run of one of its trials')
      raise FileNotFoundError(f'{self.path} is not a run folder (no config.json); a run folder '
                              f'is the --workdir of python -m llmjax.main')
    self.config: dict = json.loads(config_file.read_text())  # configs.as_dict + data info
    self.name = self.path.name
    self.model_cfg = ModelConfig(**self.config['model'])
    data = self.config['data']
    self.tokens_per_step = data['global_batch_size'] * data['seq_len']
    self.flops_per_token = flops.flops_per_token(self.model_cfg, data['seq_len'])
    self.num_params = flops.param_counts(self.model_cfg)['total']
    self._params = collections.OrderedDict()  # step -> nnx.State, least recently used first

  def __repr__(self) -> str:
    return f'Run({str(self.path)!r}: {self.num_params:,} parameters, checkpoints {self.steps})'

  @property
  def steps(self) -> list[int]:
    """Checkpoint steps on disk now (a run still training gains more)."""
    folder = self.path / 'checkpoints'
    return sorted(int(p.name) for p in folder.glob('[0-9]*') if p.name.isdigit())

  @functools.cached_property
  def metrics(self) -> pd.DataFrame:
    """metrics.jsonl as one row per logged step (training and evaluation records of a step
    merged), with `tokens` and `flops` (training tokens and FLOPs up to that step) added.
    Read on first use: a new Run sees what a run still training has logged since."""
    path = self.path / 'metrics.jsonl'
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []
    if not records:
      return pd.DataFrame({'step': [], 'tokens': [], 'flops': []})
    # Non-finite values are written as strings ('nan', 'inf'): numbers again here.
    table = pd.DataFrame(records).apply(pd.to_numeric, errors='coerce')
    table = table.groupby('step', as_index=False).first()
    table['tokens'] = table['step'] * self.tokens_per_step
    table['flops'] = table['tokens'] * self.flops_per_token
    return table

  def step_at(self, step: int | None) -> int:
    """`step`, or the newest checkpoint's step if None; FileNotFoundError if not on disk."""
    return int(checkpoint.find_step(str(self.path) if step is None else
                                    f'{self.path}:{step}').name)

  def params(self, step: int | None = None) -> nnx.State:
    """The parameters of checkpoint `step` (default: the newest) on one CPU device."""
    step = self.step_at(step)
    if step not in self._params:
      target = train.TrainState(step=None, params=_on_cpu(self._abstract[1]), opt_state=None,
                                rng=None)
      self._params[step], _ = checkpoint.restore_params(f'{self.path}:{step}', target)
      while len(self._params) > CACHED_CHECKPOINTS:
        self._params.popitem(last=False)
    self._params.move_to_end(step)
    return self._params[step]

  def model(self, step: int | None = None) -> Transformer:
    """The model of checkpoint `step` (default: the newest), on CPU."""
    return nnx.merge(self._abstract[0], self.params(step))

  @functools.cached_property
  def _abstract(self) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's structure and parameter shapes; allocates nothing."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(self.model_cfg, nnx.Rngs(0))), nnx.Param)

  def state(self, step: int | None = None) -> train.TrainState:
    """The whole train state of checkpoint `step` (parameters, optimizer moments, step, RNG)
    on CPU; the optimizer is rebuilt from config.json."""
    folder = checkpoint.find_step(str(self.path) if step is None else f'{self.path}:{step}')
    optim_cfg = optim.OptimConfig(**{k: _tuples(v) for k, v in self.config['optim'].items()})
    tx, _ = optim.make(optim_cfg, self.model_cfg, self.config['train']['steps'])
    abstract = jax.eval_shape(functools.partial(train.init_state, self.model_cfg, tx,
                                                self.config['train']['seed']))
    return ocp.StandardCheckpointer().restore(folder / 'state', _on_cpu(abstract))

  @functools.cached_property
  def tokenizer(self):
    data = self.config['data']
    kind, _, spec = data['source'].partition(':')
    if kind == 'synthetic':  # its own tokens: the chain's states
      return synthetic.SyntheticTokenizer(synthetic.parse_spec(spec).vocab)
    return tokenizers.load(data['tokenizer'])

  def encode(self, text: str) -> np.ndarray:
    """Token ids of a document starting with `text` (end-of-text first, as in training).
    For a synthetic-language run, `text` is token ids separated by spaces."""
    tok = self.tokenizer
    if isinstance(tok, synthetic.SyntheticTokenizer):
      ids = [int(t) for t in re.findall(r'-?\d+', text)]
      bad = [t for t in ids if not 0 <= t < tok.eot_id]
      if bad:
        raise ValueError(f'token {bad[0]} is not a state of this synthetic language '
                         f'(0 to {tok.eot_id - 1})')
      body = np.asarray(ids, np.int32)
    else:
      body = tok.encode(text)
    return np.concatenate([[tok.eot_id], body]).astype(np.int32)

  def eval_batch(self, rows: int = 8) -> dict[str, np.ndarray]:
    """The first `rows` rows of the run's held-out split, packed as in its evaluation:
    inputs, targets, positions, segment_ids, weights (each rows x seq_len)."""
    data_cfg = pipeline.DataConfig(**self.config['data'])
    corpus = sources.open_corpus(data_cfg)
    cfg = dataclasses.replace(data_cfg, global_batch_size=rows)
    batch = pipeline.eval_batches(corpus, cfg, max_batches=1)[0]['batch']
    return {k: v for k, v in batch.items() if k != 'epoch'}

  def sample(self, step: int | None = None, prompt: str = '', num_tokens: int = 64,
             temperature: float = 0.8, seed: int = 0) -> str:
    """Text sampled from checkpoint `step` after `prompt` (see `encode`), up to the end of
    the document or `num_tokens` tokens."""
    ids = self.encode(prompt)
    num_tokens = min(num_tokens, self.model_cfg.max_len - len(ids))
    out = generate.generate(self.model(step), [ids], max_new_tokens=num_tokens,
                            temperature=temperature, seed=seed,
                            stop_tokens=[self.tokenizer.eot_id])
    return self.tokenizer.decode(np.concatenate([ids[1:], out.tokens[0]]))


class Sweep:
  """A sweep folder: its results table and a Run per trial that has started."""

  def __init__(self, path):
    self.path = pathlib.Path(path).expanduser().resolve()
    manifest = self.path / 'sweep.json'
    if not manifest.is_file():
      hint = ('; it is a run folder: use Run' if (self.path / 'config.json').is_file()
              else '')
      raise FileNotFoundError(f'{self.path} is not a sweep folder (no sweep.json){hint}')
    self.manifest: dict = json.loads(manifest.read_text())
    self.trials: list[str] = [t['name'] for t in self.manifest['trials']]

  def __repr__(self) -> str:
    return f'Sweep({str(self.path)!r}: {len(self.trials)} trials)'

  def table(self) -> pd.DataFrame:
    """The results table (llmjax.scaling.results), rebuilt from the trial folders now."""
    return results.collect(self.path)

  @property
  def runs(self) -> dict[str, Run]:
    """Trial name -> Run, for the trials that have started, in sweep order."""
    return {name: self.run(name) for name in self.trials
            if (runner.trial_dir(self.path, name) / 'config.json').is_file()}

  def run(self, name: str) -> Run:
    if name not in self.trials:
      raise KeyError(f'no trial {name!r} in {self.path}; trials: {", ".join(self.trials)}')
    return Run(runner.trial_dir(self.path, name))

  def metrics(self) -> pd.DataFrame:
    """Every started trial's metrics in one table, with columns trial, N and
    N_nonembedding (total and non-embedding parameters) added."""
    frames = []
    for name, run in self.runs.items():
      counts = flops.param_counts(run.model_cfg)
      frames.append(run.metrics.assign(trial=name, N=counts['total'],
                                       N_nonembedding=counts['non_embedding']))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _tuples(value):
  """JSON turned the config's tuples into lists: back to tuples."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value

