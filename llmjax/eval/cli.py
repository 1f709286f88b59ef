"""Command line: evaluate downstream tasks on a run folder's checkpoint.

  python -m llmjax.eval --workdir runs/base --tasks code_next_line,code_summarize
  python -m llmjax.eval --workdir RUN --step 2000 --tasks jsonl:qa.jsonl:multiple_choice

Prints a table of every task's metrics (value, bootstrap standard error, chance, ceiling)
and merges them into RUN/eval/STEP.json. Task names, task files and the checkpoint are all
checked before the model is loaded; a bad one exits 2 with the reason, the folder untouched.
"""

import argparse
import sys

from llmjax import runs
from llmjax.eval import registry, runner
from llmjax.eval.tasks import TaskError
from llmjax.model import options


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m llmjax.eval',
                                   description='Evaluate downstream tasks on a checkpoint.')
  parser.add_argument('--workdir', required=True, help='a run folder (config.json, checkpoints/)')
  parser.add_argument('--tasks', required=True,
                      help='comma-separated: built-in names, or jsonl:PATH:KIND[:key=value,...]')
  parser.add_argument('--step', type=int, help='checkpoint step; default: the newest')
  parser.add_argument('--max_examples', type=int, help="per task; default: the task's own")
  parser.add_argument('--seed', type=int, default=0, help='task generation and bootstrap')
  parser.add_argument('--rows', type=int, default=8,
                      help='packed rows per forward pass (more on an accelerator)')
  parser.add_argument('--no_write', action='store_true', help='print only; write no file')
  return parser


def _cell(value) -> str:
  return '' if value is None else f'{value:.4g}'


def _rows(name: str, out: dict) -> list[str]:
  lines = []
  for metric, value in out.items():
    if metric.endswith('_stderr') or not isinstance(value, float):
      continue
    lines.append(f'{name:<24} {metric:<12} {_cell(value):>9} '
                 f'{_cell(out.get(metric + "_stderr")):>9} '
                 f'{_cell(out["chance"].get(metric)):>9} '
                 f'{_cell(out.get("ceiling", {}).get(metric)):>9}  {out["num_examples"]}')
  return lines


def format_table(results: dict) -> str:
  """One line per task and metric: value, standard error, chance, ceiling; then the same
  per domain (as NAME/DOMAIN) for a task with examples from several."""
  lines = [f'{"task":<24} {"metric":<12} {"value":>9} {"stderr":>9} {"chance":>9} '
           f'{"ceiling":>9}  n']
  for name, out in results.items():
    lines += _rows(name, out)
    for domain, domain_out in out.get('domains', {}).items():
      lines += _rows(f'{name}/{domain or "none"}', domain_out)
  return '\n'.join(lines)


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.max_examples is not None and args.max_examples < 1:
      raise TaskError(f'--max_examples must be >= 1, got {args.max_examples}')
    run = runs.RunFolder(args.workdir)
    if not options.ARCHITECTURES[run.model_cfg.arch].causal:
      raise TaskError(f'{args.workdir} holds a model.arch={run.model_cfg.arch!r} model; the '
                      f'tasks score continuations with a decoder (encoders: not yet)')
    task_list = registry.resolve_all(args.tasks, run.experiment.data,
                                     seed=args.seed, max_examples=args.max_examples)
    step = run.step_at(args.step)
    tokenizer = run.tokenizer
    if args.rows < 1:
      raise TaskError(f'--rows must be >= 1, got {args.rows}')
    results = runner.evaluate(task_list, run.model(step), tokenizer, seed=args.seed,
                              rows=args.rows)
  except (FileNotFoundError, ValueError) as e:  # TaskError is a ValueError
    print(f'llmjax.eval: {e}', file=sys.stderr)
    return 2
  print(f'{run.path} step {step}')
  print(format_table(results))
  if not args.no_write:
    print(f'wrote {runner.write_results(run.path, step, results)}')
  return 0
