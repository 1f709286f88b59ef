"""One analysis across the checkpoints of a run, or across the runs of a sweep (model sizes),
each result tagged with the training step, tokens and FLOPs it belongs to.

An analysis is any function of a model returning a DataFrame (`weights.stats`, or
`lambda m: activations.loss_by_position(activations.token_losses(m, batch))`).
"""

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from llmjax.analysis import weights
from llmjax.analysis.runs import Run, Sweep

Analysis = Callable[..., pd.DataFrame]


def _tagged(table: pd.DataFrame, run: Run, step: int) -> pd.DataFrame:
  tokens = step * run.tokens_per_step
  return table.assign(step=step, tokens=tokens, flops=tokens * run.flops_per_token)


def checkpoint_near(run: Run, *, tokens: float | None = None,
                    flops: float | None = None) -> int:
  """The checkpoint step of `run` whose training tokens (or FLOPs) are nearest in log scale
  to the value given: how runs of different sizes are matched."""
  if (tokens is None) == (flops is None):
    raise ValueError('give exactly one of tokens= or flops=')
  steps = [s for s in run.steps if s > 0]
  if not steps:
    raise FileNotFoundError(f'{run.path} has no checkpoints')
  per_step = run.tokens_per_step if flops is None else run.tokens_per_step * run.flops_per_token
  wanted = tokens if flops is None else flops
  return min(steps, key=lambda s: abs(np.log(s * per_step / wanted)))


def over_steps(run: Run, analysis: Analysis, steps: Iterable[int] | None = None) -> pd.DataFrame:
  """`analysis(model)` at each checkpoint step (default: all), concatenated, with step,
  tokens and flops columns."""
  steps = run.steps if steps is None else [run.step_at(s) for s in steps]
  return pd.concat([_tagged(analysis(run.model(s)), run, s) for s in steps],
                   ignore_index=True)


def _runs(runs: Sweep | Mapping[str, Run] | Iterable[Run]) -> dict[str, Run]:
  if isinstance(runs, Sweep):
    return runs.runs
  if isinstance(runs, Mapping):
    return dict(runs)
  return {run.name: run for run in runs}


def over_runs(runs: Sweep | Mapping[str, Run] | Iterable[Run], analysis: Analysis, *,
              tokens: float | None = None, flops: float | None = None) -> pd.DataFrame:
  """`analysis(model)` for each run, at its last checkpoint or at the one nearest to the
  same training tokens (or FLOPs), concatenated with columns run, N (parameters), step,
  tokens and flops."""
  frames = []
  for name, run in _runs(runs).items():
    if not run.steps:
      continue  # a trial that has not saved yet
    step = run.steps[-1] if tokens is None and flops is None else \
        checkpoint_near(run, tokens=tokens, flops=flops)
    frames.append(_tagged(analysis(run.model(step)), run, step).assign(run=name,
                                                                         N=run.num_params))
  if not frames:
    raise FileNotFoundError('none of the runs has a checkpoint yet')
  return pd.concat(frames, ignore_index=True)


def weight_changes(run: Run, steps: Iterable[int] | None = None,
                   reference: str = 'previous') -> pd.DataFrame:
  """`weights.changes` from each checkpoint to the next (reference='previous') or from the
  first one given (reference='first'); tagged with the later step."""
  if reference not in ('previous', 'first'):
    raise ValueError(f"reference must be 'previous' or 'first', got {reference!r}")
  steps = run.steps if steps is None else [run.step_at(s) for s in steps]
  if len(steps) < 2:
    raise ValueError(f'weight changes need two checkpoints; {run.path} has {steps}')
  frames, base = [], steps[0]
  for step in steps[1:]:
    frames.append(_tagged(weights.changes(run.params(base), run.params(step)), run, step)
                  .assign(from_step=base))
    base = step if reference == 'previous' else base
  return pd.concat(frames, ignore_index=True)
