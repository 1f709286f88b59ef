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
import pandas as pd
from flax import nnx

from llmjax import flops, generate, runs
from llmjax.data import pipeline, sources, synthetic
from llmjax.eval import runner as eval_runner
from llmjax.model.transformer import Transformer
from llmjax.scaling import results, runner
from llmjax.step import TrainState

CACHED_CHECKPOINTS = 4  # parameter sets a Run keeps in memory (a notebook revisits a few)


def cpu_device() -> jax.Device:
  """Where analysis puts parameters: the first CPU device, also on an accelerator machine."""
  return jax.devices('cpu')[0]


class Run(runs.RunFolder):
  """One training run folder. `params(step)` and `model(step)` restore lazily, on CPU."""

  def __init__(self, path):
    super().__init__(path)
    if not self.config_file.is_file() and (self.path / 'sweep.json').is_file():
      raise FileNotFoundError(f'{self.path} is a sweep folder, not a run: use '
                              f'Sweep({str(path)!r}), or a Run of one of its trials')
    self.name = self.path.name
    data = self.experiment.data  # read now: a folder without config.json is refused here
    self.tokens_per_step = data.global_batch_size * data.seq_len
    self.flops_per_token = flops.flops_per_token(self.model_cfg, data.seq_len)
    self.num_params = flops.param_counts(self.model_cfg)['total']
    self._params = collections.OrderedDict()  # step -> nnx.State, least recently used first

  def __repr__(self) -> str:
    return f'Run({str(self.path)!r}: {self.num_params:,} parameters, checkpoints {self.steps})'

  @functools.cached_property
  def metrics(self) -> pd.DataFrame:
    """metrics.jsonl as one row per logged step (training and evaluation records of a step
    merged), with `tokens` and `flops` (training tokens and FLOPs up to that step) added.
    Read on first use: a new Run sees what a run still training has logged since."""
    records = self.metrics_records()
    if not records:
      return pd.DataFrame({'step': [], 'tokens': [], 'flops': []})
    # Non-finite values are written as strings ('nan', 'inf'): numbers again here.
    table = pd.DataFrame(records).apply(pd.to_numeric, errors='coerce')
    table = table.groupby('step', as_index=False).first()
    table['tokens'] = table['step'] * self.tokens_per_step
    table['flops'] = table['tokens'] * self.flops_per_token
    return table

  def task_results(self) -> pd.DataFrame:
    """Every RUN/eval/STEP.json (python -m llmjax.eval, eval.tasks during training) as one
    row per (step, task, metric): value, stderr, chance, ceiling (NaN where the task knows
    none) and the training tokens and FLOPs at the step, for plots against compute."""
    rows = []
    for step, by_task in eval_runner.read_results(self.path).items():
      for task, out in by_task.items():
        chance, ceiling = out.get('chance', {}), out.get('ceiling', {})
        for metric, value in out.items():
          if isinstance(value, (int, float)) and not metric.endswith('_stderr') and (
              metric != 'num_examples'):
            rows.append({'step': step, 'task': task, 'metric': metric, 'value': value,
                         'stderr': out.get(f'{metric}_stderr', np.nan),
                         'chance': chance.get(metric, np.nan),
                         'ceiling': ceiling.get(metric, np.nan),
                         'num_examples': out.get('num_examples')})
    table = pd.DataFrame(rows, columns=['step', 'task', 'metric', 'value', 'stderr', 'chance',
                                        'ceiling', 'num_examples'])
    table['tokens'] = table['step'] * self.tokens_per_step
    table['flops'] = table['tokens'] * self.flops_per_token
    return table

  def params(self, step: int | None = None, shardings=None) -> nnx.State:
    """The parameters of checkpoint `step` (default: the newest) on one CPU device
    (or on `shardings`, uncached)."""
    if shardings is not None:
      return super().params(step, shardings)
    step = self.step_at(step)
    if step not in self._params:
      cpu = jax.sharding.SingleDeviceSharding(cpu_device())
      self._params[step] = super().params(step, cpu)
      while len(self._params) > CACHED_CHECKPOINTS:
        self._params.popitem(last=False)
    self._params.move_to_end(step)
    return self._params[step]

  def model(self, step: int | None = None, shardings=None) -> Transformer:
    """The model of checkpoint `step` (default: the newest), on CPU."""
    return nnx.merge(self.abstract_model[0], self.params(step, shardings))

  def state(self, step: int | None = None, sharding=None) -> TrainState:
    """The whole train state of checkpoint `step` (parameters, optimizer moments, step,
    RNG) on CPU; the optimizer is rebuilt from config.json."""
    return super().state(step, sharding or jax.sharding.SingleDeviceSharding(cpu_device()))

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
    data_cfg = self.experiment.data
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

