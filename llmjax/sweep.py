"""Command line for sweeps.

  python -m llmjax.sweep --config experiments/scaling/cpu_small.py --workdir runs/sweep1
      [--only NAME,NAME] [--trial_index I] [--dry_run] [--count] [--results]
      [--config.train.eval_batches=4 ...]   (overrides apply to every trial)

Runs the trials not yet done, one after another, each in WORKDIR/trials/NAME, then
writes WORKDIR/results.csv. Rerunning resumes. `--trial_index` runs one trial (one
cluster job each); `--dry_run` lists the trials with their size and cost; `--results`
only rebuilds the results table. Exit status: 0 all selected trials done, 1 some failed
or were interrupted, 2 bad config or arguments.
"""

import fnmatch
import pathlib
import sys

from llmjax import allocator

if __name__ == '__main__':  # first: a re-exec for the allocator costs little before JAX loads
  allocator.ensure()

import jax  # noqa: E402
from absl import app, flags, logging

from llmjax import configs, distributed
from llmjax.scaling import results, runner
from llmjax.scaling import grids

_CONFIG = flags.DEFINE_string('config', None, 'Sweep file[:VARIANT] with get_config() and '
                              'get_sweep(); --config.SECTION.FIELD=VALUE applies to every trial.')
_OVERRIDES: list[str] = []  # the --config.SECTION.FIELD=VALUE flags, in order
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep folder.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these trials (names or shell patterns).')
_TRIAL_INDEX = flags.DEFINE_integer('trial_index', None, 'Run only the trial at this index '
                                    '(0-based, the order of --dry_run): one cluster job each.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List the trials, their size, cost and status.')
_COUNT = flags.DEFINE_bool('count', False, 'Print the number of trials and exit.')
_RESULTS = flags.DEFINE_bool('results', False, 'Only rebuild the results table.')


def _select(trials: list[grids.Trial]) -> list[grids.Trial]:
  if _TRIAL_INDEX.value is not None:
    if not 0 <= _TRIAL_INDEX.value < len(trials):
      raise configs.ConfigError(f'--trial_index={_TRIAL_INDEX.value}: the sweep has '
                                f'{len(trials)} trials (0 to {len(trials) - 1})')
    return [trials[_TRIAL_INDEX.value]]
  if not _ONLY.value:
    return trials
  unmatched = [p for p in _ONLY.value if not any(fnmatch.fnmatch(t.name, p) for t in trials)]
  if unmatched:
    raise configs.ConfigError(f'--only: no trial matches {unmatched}; trials: '
                              f'{", ".join(t.name for t in trials)}')
  return [t for t in trials if any(fnmatch.fnmatch(t.name, p) for p in _ONLY.value)]


def _refuse(message: str) -> None:
  """Bad input: one message, exit status 2."""
  print(f'llmjax.sweep: {message}', file=sys.stderr)
  sys.exit(2)


def _print_plan(workdir: pathlib.Path, sw: runner.SweepSpec) -> None:
  print(f'{"#":>3}  {"trial":<24} {"N":>13} {"N_non_emb":>13} {"D":>10} {"C (FLOPs)":>10} '
        f'{"D/N":>6}  status')
  for i, trial in enumerate(sw.trials):
    row = grids.describe(sw.base, trial)
    status = runner.read_status(workdir, trial.name)['status'] if workdir else ''
    print(f'{i:>3}  {trial.name:<24} {row["N"]:>13,} {row["N_nonembedding"]:>13,} '
          f'{row["D"]:>10.3g} {row["C"]:>10.3g} {row["D"] / row["N"]:>6.1f}  {status}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; trials save often
  try:  # one job of several hosts (SLURM array task, TPU slice): join the others first
    distributed.initialize()
  except ValueError as e:
    _refuse(str(e))
  if _CONFIG.value is None:
    _refuse('--config is required, e.g. --config experiments/scaling/cpu_small.py')
  workdir = pathlib.Path(_WORKDIR.value) if _WORKDIR.value else None
  if workdir is None and not (_DRY_RUN.value or _COUNT.value):
    _refuse('--workdir is required')
  try:
    if _RESULTS.value:
      table = results.write(workdir)
      print(table.to_string(index=False, columns=['name', 'status', 'N', 'D', 'C', 'eval_loss']))
      return
    sw = runner.load(_CONFIG.value, configs.load_file(_CONFIG.value, _OVERRIDES))
    if _COUNT.value:
      print(len(sw.trials))
      return
    selected = _select(sw.trials)
    if _DRY_RUN.value:
      _print_plan(workdir, sw)
      return
    experiments = runner.build_all(sw, jax.device_count())
  except (configs.ConfigError, ValueError, FileNotFoundError) as e:
    _refuse(str(e))
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    runner.write_manifest(workdir, sw, _OVERRIDES)
  try:
    statuses = runner.run(workdir, sw, experiments, selected)
  except configs.ConfigError as e:
    _refuse(str(e))
  if jax.process_index() == 0:
    results.write(workdir)
  problems = {name: s for name, s in statuses.items() if s != runner.DONE}
  if problems:
    for name, status in problems.items():
      error = runner.read_status(workdir, name).get('error', '')
      print(f'llmjax.sweep: trial {name}: {status} {error}', file=sys.stderr)
    sys.exit(1)
  print(f'llmjax.sweep: all {len(statuses)} selected trials done; results in '
        f'{workdir / "results.csv"}')


if __name__ == '__main__':
  app.run(main, flags_parser=configs.flags_parser('llmjax.sweep', _OVERRIDES))
