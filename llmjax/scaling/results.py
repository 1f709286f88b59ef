"""The results table of a sweep, rebuilt from its trial folders at any time.

One row per trial of sweep.json, whatever its state (pending, running, failed, done):
name, status, N (total and non-embedding parameters), D (training tokens), C (training
FLOPs by llmjax.flops), the IsoFLOP budget it was made for, final and best held-out
loss, bits/byte, top-1 accuracy of the predicted tokens, train loss, steps, wall time, throughput, MFU and provenance (config
hash, git commit, data fingerprint, JAX versions), then one column per eval domain metric
(`eval/NAME/loss`, `eval/NAME/bits_per_byte`, `eval/NAME/accuracy`) and per task metric scored during training
(`task/NAME/METRIC`, its `_stderr` too), named like the metrics. Fine-tune trials add
`finetune_task` (lm for pretraining), `init_from`, the example counts trained on and held
out (`finetune_examples`, `eval_examples`) and their own eval metrics (`eval/acc`,
`eval/f1_macro` and their `_stderr`); every trial tag (pretraining C, size, ...) is a
column too. Fits read only rows marked done.
"""

import json
import math
import pathlib

import pandas as pd

from llmjax import flops, runs
from llmjax.scaling import runner

COLUMNS = [
    'name', 'status', 'N', 'N_nonembedding', 'D', 'C', 'budget', 'finetune_task', 'init_from',
    'eval_loss',
    'best_eval_loss', 'eval_bits_per_byte', 'eval_accuracy', 'train_loss', 'steps', 'steps_done',
    'wall_time_s', 'tokens_per_s', 'mfu', 'data_optimal_loss', 'error', 'config_hash',
    'git_commit', 'data_fingerprint', 'jax_version', 'jaxlib_version',
]
# Train loss in the table: the mean of the last few logged values, not one noisy batch.
TRAIN_LOSS_WINDOW = 5
# sweep.json's own fields of a trial; its other fields are the trial's tags.
_PLAN_FIELDS = {'index', 'name', 'N', 'N_nonembedding', 'D', 'C', 'steps', 'overrides'}
# eval/ metrics that have a column of their own already (eval_loss, ...).
_RENAMED = {'eval/loss', 'eval/bits_per_byte', 'eval/accuracy'}
# data_info counts of a fine-tune's examples, as columns.
_EXAMPLE_COUNTS = ('finetune_examples', 'eval_examples')


def collect(workdir: pathlib.Path) -> pd.DataFrame:
  """The table of the sweep in `workdir` (one row per trial in sweep.json, in order)."""
  workdir = pathlib.Path(workdir)
  manifest_path = workdir / 'sweep.json'
  if not manifest_path.exists():
    raise FileNotFoundError(f'{workdir} is not a sweep workdir (no sweep.json); run '
                            f'python -m llmjax.sweep --config FILE --workdir {workdir}')
  manifest = json.loads(manifest_path.read_text())
  rows = [_row(workdir, planned) for planned in manifest['trials']]
  extra = sorted({key for row in rows for key in row if key not in COLUMNS})
  return pd.DataFrame(rows, columns=COLUMNS + extra)


def write(workdir: pathlib.Path) -> pd.DataFrame:
  """Rebuilds the table and writes results.csv and results.json beside sweep.json."""
  table = collect(workdir)
  table.to_csv(pathlib.Path(workdir) / 'results.csv', index=False)
  table.to_json(pathlib.Path(workdir) / 'results.json', orient='records', indent=2)
  return table


def load(path) -> pd.DataFrame:
  """A results table from a sweep workdir (rebuilt, and rewritten) or a CSV file."""
  path = pathlib.Path(path)
  if path.is_dir():
    return write(path)
  if path.suffix == '.csv' and path.is_file():
    return pd.read_csv(path)
  raise FileNotFoundError(f'{path}: expected a sweep workdir or a CSV file')


def _row(workdir: pathlib.Path, planned: dict) -> dict:
  """A trial's row: its plan from sweep.json, completed by what its folder holds."""
  name = planned['name']
  folder = runner.trial_dir(workdir, name)
  status = runner.read_status(workdir, name)
  row = {'name': name, 'status': status['status'], 'N': planned['N'],
         'N_nonembedding': planned['N_nonembedding'], 'D': planned['D'], 'C': planned['C'],
         'budget': planned.get('budget', math.nan), 'steps': planned['steps'],
         'finetune_task': planned.get('finetune_task', 'lm'),  # sweeps from before: lm
         'init_from': planned.get('init_from', ''),
         'wall_time_s': status.get('wall_time_s', math.nan), 'error': status.get('error', ''),
         **{k: status.get(k, '') for k in ('config_hash', 'git_commit', 'jax_version',
                                            'jaxlib_version')}}
  row.update({k: v for k, v in planned.items() if k not in _PLAN_FIELDS and k not in row})
  if not folder.is_dir():
    return row
  run = runs.RunFolder(folder)
  if run.config_file.exists():  # what actually ran: recount from the resolved config
    exp = run.experiment
    counts = flops.param_counts(exp.model)
    tokens = exp.train.steps * exp.data.global_batch_size * exp.data.seq_len
    row.update(N=counts['total'], N_nonembedding=counts['non_embedding'], D=tokens,
               C=flops.flops_per_token(exp.model, exp.data.seq_len) * tokens,
               data_fingerprint=run.config.get('data_fingerprint', ''),
               data_optimal_loss=run.data_info.get('optimal_loss', math.nan),
               finetune_task=exp.finetune.task,
               **{k: run.data_info[k] for k in _EXAMPLE_COUNTS if k in run.data_info})
  row.update(_metrics_summary(run.metrics_records()))
  return row


def _metrics_summary(records: list[dict]) -> dict:
  if not records:
    return {}
  evals = [r for r in records if 'eval/loss' in r]
  train = [r for r in records if 'loss' in r]
  summary = {'steps_done': max((r['step'] for r in records), default=0)}
  if evals:
    summary.update(eval_loss=evals[-1]['eval/loss'],
                   best_eval_loss=min(r['eval/loss'] for r in evals),
                   eval_bits_per_byte=evals[-1]['eval/bits_per_byte'],
                   # Top-1 accuracy of the predicted tokens; folders from before it: NaN.
                   eval_accuracy=evals[-1].get('eval/accuracy', math.nan))
    summary.update({key: value for key, value in evals[-1].items()
                    if _is_domain_metric(key) or _is_finetune_metric(key)})
  scored = [r for r in records if any(key.startswith('task/') for key in r)]
  if scored:  # the newest task evaluation
    summary.update({key: value for key, value in scored[-1].items() if key.startswith('task/')})
  if train:
    recent = train[-TRAIN_LOSS_WINDOW:]
    summary['train_loss'] = sum(r['loss'] for r in recent) / len(recent)
    summary['tokens_per_s'] = _median([r['tokens_per_s'] for r in train])
    summary['mfu'] = _median([r['mfu'] for r in train])
  return summary


def _is_domain_metric(key: str) -> bool:
  parts = key.split('/')
  return len(parts) == 3 and parts[0] == 'eval' and parts[2] in ('loss', 'bits_per_byte',
                                                                 'accuracy')


def _is_finetune_metric(key: str) -> bool:
  """eval/acc, eval/f1_macro, ... (and _stderr): a classify fine-tune's own metrics."""
  parts = key.split('/')
  return len(parts) == 2 and parts[0] == 'eval' and key not in _RENAMED


def _median(values: list[float]) -> float:
  return float(pd.Series(values).median()) if values else math.nan
