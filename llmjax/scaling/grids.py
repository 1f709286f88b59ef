"""Sweep definitions: trials as named config overrides, and the grids scaling studies use.

An experiment file defines `get_config()` and, beside it, `get_sweep()` returning a
list of `Trial`s built with the helpers here:

  sizes = grids.model_sizes(['ladder-64x2', 'ladder-128x4', (192, 4)])
  return grids.isoflop(config, budgets=[1e12, 3e12], sizes=sizes)

A trial's overrides are 'section.field' paths into the base config; its tags
(IsoFLOP budget, size label) are not config but travel into the results table.
Trial names are derived from the values, so they are stable across edits that do
not change a trial, and they name the trial's folder.
"""

import copy
import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ml_collections import config_dict

from llmjax import configs, flops
from llmjax.model import config as model_config

# The model fields a size fixes; vocabulary, context and dtypes stay the base config's.
SHAPE_FIELDS = ('d_model', 'num_layers', 'num_heads', 'num_kv_heads', 'head_dim', 'mlp_dim')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._=+-]*$')


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str  # unique within the sweep; the trial's folder name
  overrides: Mapping[str, Any]  # 'section.field' -> value, applied to the base config
  tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {'budget': 1e12}


def trial_config(base: config_dict.ConfigDict, trial: Trial) -> config_dict.ConfigDict:
  """A copy of `base` with the trial's overrides; unknown paths and wrong types raise
  ConfigError naming the trial."""
  config = copy.deepcopy(base)
  config.lock()
  for path, value in trial.overrides.items():
    *parents, field = path.split('.')
    node = config
    try:
      for parent in parents:
        node = node[parent]
      if field not in node:
        raise KeyError(field)
      node[field] = value
    except (KeyError, AttributeError, TypeError) as e:
      detail = 'unknown key' if isinstance(e, KeyError | AttributeError) else str(e)
      raise configs.ConfigError(f'trial {trial.name!r}: override {path}={value!r}: {detail}')
  return config


def check_names(trials: Sequence[Trial]) -> None:
  """Trial names must be unique and usable as folder names."""
  problems = [f'trial name {t.name!r} is not a valid folder name (letters, digits, ._=+-)'
              for t in trials if not _NAME.match(t.name)]
  seen: dict[str, int] = {}
  for t in trials:
    seen[t.name] = seen.get(t.name, 0) + 1
  problems += [f'trial name {name!r} is used by {count} trials; names must be unique'
               for name, count in seen.items() if count > 1]
  if not trials:
    problems.append('the sweep has no trials')
  if problems:
    raise configs.ConfigError('\n'.join(problems))


def model_sizes(sizes: Iterable[str | tuple[int, int]]) -> list[Trial]:
  """One trial per model size: a preset name ('ladder-128x4', 'gpt2-small') or a
  (d_model, num_layers) pair shaped by the ladder rule (`model.config.ladder_shape`).

  Only the shape fields are set, so the vocabulary and context of the base config stay.
  """
  trials = []
  for size in sizes:
    if isinstance(size, str):
      if size not in model_config.PRESETS:
        raise ValueError(f'unknown model preset {size!r}; known: {", ".join(model_config.PRESETS)}')
      preset = model_config.PRESETS[size]
      shape = {f: preset[f] for f in SHAPE_FIELDS if f in preset}
      label = size.removeprefix('ladder-')
    else:
      d_model, num_layers = size
      shape, label = model_config.ladder_shape(d_model, num_layers), f'{d_model}x{num_layers}'
    trials.append(Trial(label, {f'model.{k}': v for k, v in shape.items()}, {'size': label}))
  return trials


def grid(path: str, values: Iterable[Any], label: str | None = None) -> list[Trial]:
  """One trial per value of one config field: grid('optim.lr', [1e-3, 3e-3]) names
  them 'lr0.001' and 'lr0.003'."""
  label = label if label is not None else path.rsplit('.', 1)[-1]
  return [Trial(f'{label}{_format(v)}', {path: v}, {label: v}) for v in values]


def cross(*axes: Sequence[Trial]) -> list[Trial]:
  """Every combination of the axes' trials (names joined by '_'); an axis may not
  override a field another axis sets."""
  return [_merge(combo) for combo in itertools.product(*axes)]


def zip_trials(*axes: Sequence[Trial]) -> list[Trial]:
  """The i-th trials of equally long axes merged together."""
  if len({len(a) for a in axes}) > 1:
    raise ValueError(f'zip_trials: axes of different lengths {[len(a) for a in axes]}')
  return [_merge(combo) for combo in zip(*axes)]


def steps_for_tokens(base: config_dict.ConfigDict, tokens: float) -> int:
  """Training steps that process about `tokens` tokens at the base config's batch shape."""
  return max(1, round(tokens / (base.data.global_batch_size * base.data.seq_len)))


def token_budgets(base: config_dict.ConfigDict, tokens: Iterable[float],
                  warmup_fraction: float | None = None) -> list[Trial]:
  """One trial per training-token budget D (steps from batch size and sequence length).

  The learning-rate schedule spans each trial's own steps (Chinchilla's finding that a
  cosine longer than the run overestimates the loss); `warmup_fraction` scales the warmup.
  """
  trials = []
  for d in tokens:
    steps = steps_for_tokens(base, d)
    overrides = {'train.steps': steps, **_warmup(warmup_fraction, steps)}
    trials.append(Trial(f'D{_format(float(d))}', overrides, {'tokens': d}))
  return trials


def isoflop(base: config_dict.ConfigDict, budgets: Iterable[float], sizes: Sequence[Trial],
            *, min_steps: int = 50, tokens_per_param: tuple[float, float] = (0.0, math.inf),
            warmup_fraction: float | None = 0.1) -> list[Trial]:
  """For each compute budget C and model size, the steps whose training FLOPs (by
  `llmjax.flops.flops_per_token`, attention included) come to C.

  Sizes that would get fewer than `min_steps` steps are left out of that budget (too
  few to train, and rounding would miss C by more than 1%; with min_steps >= 50 every
  kept trial is within 1% of its budget), and so are sizes whose tokens per parameter
  fall outside `tokens_per_param` (far from any plausible optimum: wasted compute).
  """
  trials = []
  tokens_per_step = base.data.global_batch_size * base.data.seq_len
  for c in budgets:
    for size in sizes:
      model = configs.build_model_config(trial_config(base, size))
      per_token = flops.flops_per_token(model, base.data.seq_len)
      steps = round(c / (per_token * tokens_per_step))
      tokens = steps * tokens_per_step
      ratio = tokens / flops.param_counts(model)['total']
      if steps < min_steps or not tokens_per_param[0] <= ratio <= tokens_per_param[1]:
        continue
      overrides = {**size.overrides, 'train.steps': steps, **_warmup(warmup_fraction, steps)}
      tags = {**size.tags, 'budget': float(c)}
      trials.append(Trial(f'C{_format(float(c))}_{size.name}', overrides, tags))
  if not trials:
    raise ValueError(f'isoflop: no size gets {min_steps} steps and {tokens_per_param} tokens '
                     f'per parameter within any budget; change the budgets or the sizes')
  return trials


def describe(base: config_dict.ConfigDict, trial: Trial) -> dict[str, Any]:
  """Size and cost of a trial as it would run: parameters (total and non-embedding),
  tokens D, FLOPs C, and its tags."""
  config = trial_config(base, trial)
  model = configs.build_model_config(config)
  counts = flops.param_counts(model)
  tokens = config.train.steps * config.data.global_batch_size * config.data.seq_len
  return {'name': trial.name, 'N': counts['total'], 'N_nonembedding': counts['non_embedding'],
          'D': tokens, 'C': flops.flops_per_token(model, config.data.seq_len) * tokens,
          'steps': config.train.steps, **trial.tags}


def _warmup(fraction: float | None, steps: int) -> dict[str, int]:
  return {} if fraction is None else {'optim.warmup_steps': max(1, int(fraction * steps))}


def _merge(combo: Sequence[Trial]) -> Trial:
  overrides: dict[str, Any] = {}
  for t in combo:
    clash = set(overrides) & set(t.overrides)
    if clash:
      raise ValueError(f'trials {[c.name for c in combo]} both set {sorted(clash)}')
    overrides.update(t.overrides)
  tags = {k: v for t in combo for k, v in t.tags.items()}
  return Trial('_'.join(t.name for t in combo), overrides, tags)


def _format(value: Any) -> str:
  """Short, stable text for a value in a trial name: 3e12 -> '3e12', 0.001 -> '0.001'."""
  if isinstance(value, float):
    return f'{value:.3g}'.replace('e+0', 'e').replace('e+', 'e').replace('e-0', 'e-')
  return str(value)
