"""Downstream tasks scored while a run trains (`eval.tasks`, every `eval.tasks_every` steps
and at the last): the same tasks, scorer and RUN/eval/STEP.json as `python -m llmjax.eval`,
and each metric also in metrics.jsonl as `task/NAME/METRIC` (with `_stderr`, `_chance`,
`_ceiling`, and per domain `task/NAME/DOMAIN/METRIC`), so sweep
tables and plots read task metrics like the losses."""

import pathlib

import jax
from flax import nnx

from llmjax.eval import registry, runner
from llmjax.eval.tasks import Task

PREFIX = 'task'


def resolve(eval_cfg, data_cfg, seed: int) -> list[Task]:
  """The Tasks of `eval_cfg.tasks` for a run on `data_cfg` (none if empty); raises TaskError
  naming the problem, before any model exists."""
  if not eval_cfg.tasks.strip():
    return []
  max_examples = None if eval_cfg.tasks_max_examples < 0 else eval_cfg.tasks_max_examples
  return registry.resolve_all(eval_cfg.tasks, data_cfg, seed=seed, max_examples=max_examples)


def scalars(results: dict) -> dict[str, float]:
  """{task: {metric: value, ...}} -> {'task/NAME/METRIC': value} for the metrics, their
  standard errors, and their chance and ceiling values (`METRIC_chance`, `METRIC_ceiling`:
  the scaling report's at-chance test reads them from the results table); a task's
  per-domain results as 'task/NAME/DOMAIN/METRIC'. Counts stay in eval/STEP.json."""
  out = {}
  for name, values in results.items():
    out.update(_task_scalars(f'{PREFIX}/{name}', values))
    for domain, domain_values in values.get('domains', {}).items():
      out.update(_task_scalars(f'{PREFIX}/{name}/{domain or "none"}', domain_values))
  return out


def _task_scalars(prefix: str, values: dict) -> dict[str, float]:
  out = {f'{prefix}/{metric}': float(value) for metric, value in values.items()
         if isinstance(value, int | float) and metric != 'num_examples'}
  for bound in ('chance', 'ceiling'):
    out.update({f'{prefix}/{metric}_{bound}': float(value)
                for metric, value in (values.get(bound) or {}).items()})
  return out


class TaskEvaluator:
  """Scores the tasks on the current parameters when due; process 0 writes eval/STEP.json."""

  def __init__(self, task_list: list[Task], graphdef: nnx.GraphDef, tokenizer,
               workdir: pathlib.Path, every: int, total_steps: int, seed: int = 0):
    self.tasks, self.graphdef, self.tokenizer = task_list, graphdef, tokenizer
    self.workdir, self.every, self.total_steps, self.seed = workdir, every, total_steps, seed

  def due(self, step: int) -> bool:
    return bool(self.tasks) and (step == self.total_steps or
                                 (self.every > 0 and step % self.every == 0))

  def __call__(self, params, step: int) -> dict[str, float]:
    results = runner.evaluate(self.tasks, nnx.merge(self.graphdef, params), self.tokenizer,
                              seed=self.seed)
    if jax.process_index() == 0:
      runner.write_results(self.workdir, step, results)
    return scalars(results)
