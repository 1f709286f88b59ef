"""Command line for scaling fits:

  python -m llmjax.scaling fit PATH       prints the fitted laws with 95% intervals
  python -m llmjax.scaling report PATH    writes fit.json, summary.md and plots (a sweep
                                          over width x LR: the LR-transfer section instead)
  python -m llmjax.scaling coord-check --config FILE --parametrization mup --widths 64,128,256
  python -m llmjax.scaling describe-parametrization --config FILE --parametrization mup \
      --base-width 64

PATH is a sweep workdir (its results table is rebuilt from the trial folders) or a CSV of
points (a results.csv, or external data such as published (N, D, loss) points).
`--fix E=1.48` holds Approach 3's E (any of E, A, B, alpha, beta) at a known value.
A sweep with fine-tune trials (finetune_task other than lm, e.g.
experiments/scaling/finetune_transfer.py): the fits read its pretraining trials only, the
report adds the fine-tuning transfer section, and it succeeds (exit 0) even when the
pretraining trials support no approach.
Every fit's warnings (parameters at a bound, degenerate exponents, collapsed or huge
intervals, predictions below the known entropy) go to stderr and into the summary.
Exit codes: 0 fitted, 2 bad input (path, table, or no approach could be fitted).
"""

import argparse
import pathlib
import sys

import pandas as pd

from llmjax.scaling import finetune_transfer, fit, lr_transfer, report


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m llmjax.scaling', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  for name, help_text in (('fit', 'print the fitted laws with intervals'),
                          ('report', 'write the report folder')):
    command = commands.add_parser(name, help=help_text)
    command.add_argument('path', type=pathlib.Path, help='sweep workdir or CSV file')
    command.add_argument('--params', default='N', choices=('N', 'N_nonembedding'),
                         help='parameter count to fit (default N, total)')
    command.add_argument('--loss', default='eval_loss', help='loss column (default eval_loss)')
    command.add_argument('--bootstrap', type=int, default=200,
                         help='resamples for the intervals (default 200; 0: none)')
    command.add_argument('--seed', type=int, default=0, help='seed of the resampling')
    command.add_argument('--fix', action='append', default=[], metavar='NAME=VALUE',
                         help="hold an Approach 3 parameter fixed, e.g. E=1.48 for data "
                              "whose entropy is known (repeatable)")
    if name == 'report':
      command.add_argument('--out', type=pathlib.Path,
                           help='report folder (default PATH/report, or CSV_report beside a CSV)')
  return parser


def _parse_fix(items: list[str]) -> dict[str, float]:
  """['E=1.48'] -> {'E': 1.48}; the error names the bad item."""
  fixed = {}
  for item in items:
    name, _, value = item.partition('=')
    try:
      fixed[name] = float(value)
    except ValueError:
      raise ValueError(f'--fix {item!r}: expected NAME=NUMBER, e.g. E=1.48') from None
  fit.check_fix(fixed)
  return fixed


def _load(path: pathlib.Path) -> pd.DataFrame:
  if path.is_dir():
    from llmjax.scaling import results  # brings in JAX and the model: only sweeps need it
    return results.load(path)
  return pd.read_csv(path)


def _default_out(path: pathlib.Path) -> pathlib.Path:
  return path / 'report' if path.is_dir() else path.with_name(f'{path.stem}_report')


def _lr_transfer_report(args) -> int:
  out = args.out or _default_out(args.path)
  try:
    text = lr_transfer.write(args.path, _load(args.path), out, loss=args.loss,
                             bootstrap=args.bootstrap, seed=args.seed)
  except (ValueError, KeyError) as e:
    print(f'llmjax.scaling: {args.path}: {e}', file=sys.stderr)
    return 2
  print(text + f'llmjax.scaling: report written to {out}')
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] in ('coord-check', 'describe-parametrization'):
    from llmjax.scaling import coord_check  # brings in JAX and the model: only these need it
    return coord_check.main(argv)
  parser = _parser()
  args = parser.parse_args(argv)
  if args.bootstrap < 0:
    parser.error('--bootstrap must be >= 0')
  try:
    fix = _parse_fix(args.fix)
  except ValueError as e:
    parser.error(str(e))
  if not args.path.exists():
    print(f'llmjax.scaling: {args.path}: no such file or directory', file=sys.stderr)
    return 2
  if args.command == 'report' and args.path.is_dir() and lr_transfer.applies(args.path):
    return _lr_transfer_report(args)  # a width x LR sweep: no IsoFLOP fits to make
  try:
    table = _load(args.path)
    # The IsoFLOP fits read pretraining trials; fine-tunes get their own report section.
    pts = fit.points(finetune_transfer.pretraining_rows(table), loss=args.loss,
                     params=args.params)
  except (ValueError, OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as e:
    print(f'llmjax.scaling: {args.path}: {e}', file=sys.stderr)
    return 2
  if pts.empty:
    excluded = len(pts.attrs['excluded'])
    print(f'llmjax.scaling: {args.path}: no finished trials to fit ({excluded} not done)',
          file=sys.stderr)
    return 2
  settings = {'loss': args.loss, 'params': args.params, 'bootstrap': args.bootstrap,
              'seed': args.seed}
  if args.command == 'fit':
    fits = report.run_fits(pts, bootstrap=args.bootstrap, seed=args.seed, fix=fix)
    print(report.summary_markdown(fits, report.default_budgets(pts), settings))
  else:
    out = args.out or _default_out(args.path)
    fits = report.write_report(pts, out, loss=args.loss, params=args.params,
                               bootstrap=args.bootstrap, seed=args.seed, fix=fix,
                               tasks_table=table)  # its task columns: the downstream fits
    print(f'llmjax.scaling: report written to {out}')
  for name, flag in fits.all_flags():
    print(f'llmjax.scaling: warning: {name}: {flag.message}', file=sys.stderr)
  if not fits.optimal():
    print('llmjax.scaling: no approach could be fitted:\n' +
          '\n'.join(f'  {k}: {v}' for k, v in fits.skipped.items()), file=sys.stderr)
    # A fine-tuning transfer sweep pretrains a ladder, not IsoFLOP profiles: its report
    # is the fine-tune section, so the missing fits are a note, not a failure.
    transfer = args.command == 'report' and finetune_transfer.is_finetune(table).any()
    return 0 if transfer else 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
