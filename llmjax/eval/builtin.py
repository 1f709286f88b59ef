"""The built-in tasks by name, made by llmjax from held-out material it already has.

`BUILTIN[name](seed=0, max_examples=..., **material)` builds a Task. Standard-library tasks
(builtin_code) take the run's split, `eval_fraction` and `split_seed` (data.eval_fraction,
data.split_seed), so they read exactly the files its training left out; synthetic tasks
(builtin_synthetic) take the run's `spec` (data.source). `build(name, data_cfg)` passes
the right ones from a run's DataConfig and refuses a task whose material the run's tokens
cannot express (a code task on a synthetic run, or the reverse).
"""

from llmjax.eval import builtin_code, builtin_synthetic
from llmjax.eval.tasks import Task, TaskError

CODE = {'code_next_line': builtin_code.code_next_line,
        'code_summarize': builtin_code.code_summarize,
        'code_retrieve': builtin_code.code_retrieve,
        'code_classify': builtin_code.code_classify}
SYNTHETIC = {'synthetic_continuation': builtin_synthetic.synthetic_continuation,
             'synthetic_chain': builtin_synthetic.synthetic_chain}
BUILTIN = {**CODE, **SYNTHETIC}


def names_for(data_source: str) -> list[str]:
  """The built-in tasks a run on `data_source` can be evaluated on (none for a synthetic
  language other than the Markov chain)."""
  if data_source.startswith('synthetic:'):
    return list(SYNTHETIC) if builtin_synthetic.applies(data_source) else []
  return list(CODE)


def build(name: str, data_cfg, seed: int = 0, max_examples: int | None = None) -> Task:
  """Task `name` from the held-out material of a run with DataConfig `data_cfg`
  (max_examples None: the task's default). Raises TaskError naming the problem."""
  if name not in BUILTIN:
    raise TaskError(f'unknown built-in task {name!r}; known: {", ".join(BUILTIN)}')
  synthetic_run = data_cfg.source.startswith('synthetic:')
  if (name in SYNTHETIC) != synthetic_run:
    needs = 'the synthetic language' if name in SYNTHETIC else 'text'
    raise TaskError(f'task {name!r} needs a run on {needs}; this run trains on '
                    f'{data_cfg.source!r} (its tasks: '
                    f'{", ".join(names_for(data_cfg.source)) or "none built in"})')
  sized = {} if max_examples is None else {'max_examples': max_examples}
  try:
    if synthetic_run:
      return BUILTIN[name](spec=data_cfg.source, seed=seed, **sized)
    return BUILTIN[name](seed=seed, eval_fraction=data_cfg.eval_fraction,
                         split_seed=data_cfg.split_seed, **sized)
  except ValueError as e:
    raise TaskError(f'task {name!r}: {e}') from None
