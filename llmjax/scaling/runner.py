"""Running a sweep: every trial in its own workdir, resumable, one after another.

Layout of a sweep workdir:
  sweep.json            the sweep file, its overrides and every trial (name, overrides,
                        tags, size and cost): what cluster scripts fan out over
  trials/NAME/          an ordinary run folder (config.json, metrics.jsonl, checkpoints/)
  trials/NAME/trial.json  status (running | done | failed | interrupted), wall time,
                        error, config hash, git commit, versions
  results.csv/.json     the results table (llmjax.scaling.results)

A finished trial is skipped; an interrupted one resumes from its checkpoints; a failed
one is retried. Trials run in this process (one after another), or one per job with
`--trial_index` on a cluster.

A trial may warm-start from an earlier trial of the same sweep: `init_from='trial:NAME'`
(or 'trial:NAME:STEP') is WORKDIR/trials/NAME, resolved when the trial runs, so one sweep
pretrains and then fine-tunes. The source must be in the sweep, earlier in its order, with
the same parameter shapes (checked when the sweep loads); a source not done when its
dependent runs (a cluster job started too early) fails the dependent with a sentence
naming it, and a later rerun runs it. The hash and config.json keep 'trial:NAME', so a
moved sweep folder still resumes.
"""

import dataclasses
import datetime
import hashlib
import importlib.util
import json
import pathlib
import time
import traceback

import jax
from ml_collections import config_dict

from llmjax import configs, provenance, resume, runs, train, warmstart
from llmjax.data.sources import DataError
from llmjax.scaling import grids

DONE, FAILED, RUNNING, INTERRUPTED, PENDING = 'done', 'failed', 'running', 'interrupted', 'pending'
# The sections that define what a trial computes; mesh, metrics and checkpoint settings may
# change between resumes without making it another trial.
HASHED_SECTIONS = ('model', 'data', 'optim', 'train', 'init_from')
TRIAL_PREFIX = 'trial:'  # init_from naming another trial of the same sweep


class DependencyError(Exception):
  """A trial's warm-start source (another trial) cannot start it yet."""


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """A sweep as its file defines it: the base config and the trials over it."""
  config_file: str  # the experiment file, with its ':variant' if any
  base: config_dict.ConfigDict  # get_config() with command-line overrides applied
  trials: list[grids.Trial]


def load(config_file: str, base: config_dict.ConfigDict | None = None) -> SweepSpec:
  """The sweep of an experiment file ('path.py' or 'path.py:variant'): its get_sweep()
  over `base`, by default its get_config() (the CLI passes it with its overrides).
  Trial names are checked here."""
  path, _, variant = config_file.partition(':')
  if not pathlib.Path(path).is_file():
    raise configs.ConfigError(f'no experiment file {path}')
  spec = importlib.util.spec_from_file_location('_llmjax_sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise configs.ConfigError(f'{path} has no get_sweep(); a sweep file defines get_config() '
                              f'and get_sweep() returning a list of grids.Trial')
  args = (variant,) if variant else ()
  trials = list(module.get_sweep(*args))
  grids.check_names(trials)
  return SweepSpec(config_file, base if base is not None else module.get_config(*args), trials)


def build_all(sw: SweepSpec, num_devices: int) -> dict[str, configs.Experiment]:
  """Every trial's validated Experiment; all problems of all trials reported at once."""
  experiments, problems = {}, []
  for trial in sw.trials:
    try:
      experiments[trial.name] = configs.build(grids.trial_config(sw.base, trial), num_devices)
    except configs.ConfigError as e:
      problems.append(f'trial {trial.name!r}:\n  ' + str(e).replace('\n', '\n  '))
  if problems:
    raise configs.ConfigError('\n'.join(problems))
  check_sources(sw, experiments)
  return experiments


def source_trial(init_from: str) -> tuple[str, int | None] | None:
  """'trial:NAME[:STEP]' -> (NAME, STEP or None for the newest); None for other specs."""
  if not init_from.startswith(TRIAL_PREFIX):
    return None
  name, step = runs.parse_spec(init_from[len(TRIAL_PREFIX):])
  return str(name), step


def check_sources(sw: SweepSpec, experiments: dict[str, configs.Experiment]) -> None:
  """Every 'trial:NAME' source is in the sweep, before its dependent (so one in-process
  sweep has trained it by then), and holds a model of the dependent's shapes."""
  order = {t.name: i for i, t in enumerate(sw.trials)}
  problems = []
  for trial in sw.trials:
    source = source_trial(experiments[trial.name].init_from)
    if source is None:
      continue
    name = source[0]
    where = f'trial {trial.name!r}: init_from={experiments[trial.name].init_from!r}'
    if name not in order:
      problems.append(f'{where}: the sweep has no trial {name!r}')
    elif order[name] >= order[trial.name]:
      problems.append(f'{where}: trial {name!r} comes at index {order[name]}, not before '
                      f'this one (index {order[trial.name]}); list sources first')
    else:
      mismatch = warmstart.shape_mismatch(experiments[name].model, experiments[trial.name].model)
      if mismatch:
        problems.append(f'{where}: its model has other parameter shapes: ' + '; '.join(mismatch))
  if problems:
    raise configs.ConfigError('\n'.join(problems))


def resolve_source(workdir: pathlib.Path, exp: configs.Experiment) -> configs.Experiment:
  """`exp` with a 'trial:NAME[:STEP]' init_from replaced by that trial's folder; raises
  DependencyError unless the source trial is done."""
  source = source_trial(exp.init_from)
  if source is None:
    return exp
  name, step = source
  status = read_status(workdir, name)['status']
  if status != DONE:
    raise DependencyError(f'it starts from trial {name!r}, which is {status}, not done; rerun '
                          f'the sweep once {name!r} has finished (done trials are skipped)')
  spec = str(trial_dir(workdir, name)) + ('' if step is None else f':{step}')
  try:
    warmstart.check(spec, exp.model)
  except (FileNotFoundError, ValueError) as e:
    raise DependencyError(f'trial {name!r} cannot start it: {e}') from None
  return dataclasses.replace(exp, init_from=spec)


def trial_dir(workdir: pathlib.Path, name: str) -> pathlib.Path:
  return workdir / 'trials' / name


def read_status(workdir: pathlib.Path, name: str) -> dict:
  """The trial's trial.json, or {'status': 'pending'} if it never started."""
  path = trial_dir(workdir, name) / 'trial.json'
  return json.loads(path.read_text()) if path.exists() else {'status': PENDING}


def config_hash(exp: configs.Experiment) -> str:
  resolved = configs.as_dict(exp)
  text = json.dumps({k: resolved[k] for k in HASHED_SECTIONS}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_manifest(workdir: pathlib.Path, sw: SweepSpec, overrides: list[str]) -> None:
  """sweep.json: everything a cluster script needs to fan the sweep out."""
  rows = [{'index': i, **grids.describe(sw.base, t), 'overrides': dict(t.overrides),
           # pretraining (lm) or a fine-tune: which fits a trial's row belongs to
           'finetune_task': grids.trial_config(sw.base, t).finetune.task,
           'init_from': grids.trial_config(sw.base, t).init_from}
          for i, t in enumerate(sw.trials)]
  manifest = {'config': sw.config_file, 'overrides': overrides, 'trials': rows}
  _write_json(workdir / 'sweep.json', manifest)


def run_trial(workdir: pathlib.Path, trial: grids.Trial, exp: configs.Experiment) -> str:
  """Trains one trial to completion (resuming if it was interrupted); returns its status.

  Errors of the trial itself (bad data, a non-finite halt, a crash) mark it failed with
  the reason and do not stop the sweep; a preemption (SIGTERM/SIGINT, checkpoint saved)
  marks it interrupted.
  """
  folder = trial_dir(workdir, trial.name)
  previous = read_status(workdir, trial.name)
  digest = config_hash(exp)
  env = provenance.environment()  # the same record as a plain run's provenance.json
  record = {
      'name': trial.name, 'overrides': dict(trial.overrides), 'tags': dict(trial.tags),
      'status': RUNNING, 'config_hash': digest, 'git_commit': env['git_commit'],
      'jax_version': env['versions']['jax'], 'jaxlib_version': env['versions']['jaxlib'],
      'versions': env['versions'], 'devices': env['devices'],
      'attempts': previous.get('attempts', 0) + 1,
      'wall_time_s': previous.get('wall_time_s', 0.0),
      'started': previous.get('started', _now()), 'error': '',
  }
  main_process = jax.process_index() == 0
  folder.mkdir(parents=True, exist_ok=True)
  if main_process:
    _write_json(folder / 'trial.json', record)
  start = time.perf_counter()
  try:
    # config.json keeps the unresolved 'trial:NAME': a moved sweep folder still resumes.
    train.run(resolve_source(workdir, exp), folder, configs.as_dict(exp))
    complete = (folder / 'checkpoints' / str(exp.train.steps)).is_dir()
    record['status'] = DONE if complete else INTERRUPTED
  except (DataError, FloatingPointError, DependencyError) as e:
    record.update(status=FAILED, error=f'{type(e).__name__}: {e}')
  except Exception as e:  # noqa: BLE001 - one broken trial must not sink the sweep
    record.update(status=FAILED, error=f'{type(e).__name__}: {e}')
    if main_process:
      (folder / 'error.txt').write_text(traceback.format_exc())
  record['wall_time_s'] += time.perf_counter() - start
  record['finished'] = _now()
  if main_process:
    _write_json(folder / 'trial.json', record)
  return record['status']


def run(workdir: pathlib.Path, sw: SweepSpec, experiments: dict[str, configs.Experiment],
        selected: list[grids.Trial]) -> dict[str, str]:
  """Runs the selected trials that are not done, in order; stops early on a preemption.
  Returns each selected trial's status."""
  _check_unchanged(workdir, selected, experiments)
  costs = {t.name: grids.describe(sw.base, t)['C'] for t in selected}
  statuses = {t.name: read_status(workdir, t.name)['status'] for t in selected}
  todo = [t for t in selected if statuses[t.name] != DONE]
  total = sum(costs[t.name] for t in todo)
  _say(f'{len(selected)} trials selected, {len(selected) - len(todo)} already done, '
       f'{len(todo)} to run ({total:.3g} FLOPs)')
  start, spent = time.perf_counter(), 0.0
  for i, trial in enumerate(todo):
    _say(f'trial {i + 1}/{len(todo)}: {trial.name} ({costs[trial.name]:.3g} FLOPs; was '
         f'{statuses[trial.name]})')
    statuses[trial.name] = run_trial(workdir, trial, experiments[trial.name])
    spent += costs[trial.name]
    elapsed = time.perf_counter() - start
    eta = elapsed / spent * (total - spent) if spent else 0.0
    _say(f'trial {trial.name}: {statuses[trial.name]}; {spent / total:.0%} of the FLOPs to run '
         f'done in {elapsed / 60:.1f} min, about {eta / 60:.1f} min left')
    if statuses[trial.name] == INTERRUPTED:
      _say('interrupted; run the same command to resume')
      break
  return statuses


def _check_unchanged(workdir: pathlib.Path, trials: list[grids.Trial],
                     experiments: dict[str, configs.Experiment]) -> None:
  """A trial folder holds one config: a trial edited after it ran must get a new name
  (its old results would otherwise be mistaken for the new config's)."""
  problems = []
  for trial in trials:
    changed = _changed_fields(workdir, trial.name, experiments[trial.name])
    if changed:
      problems.append(f'trial {trial.name!r} in {trial_dir(workdir, trial.name)} was run with a '
                      f'different config ({"; ".join(changed)}); move that folder away or '
                      f'rename the trial')
  if problems:
    raise configs.ConfigError('\n'.join(problems))


def _changed_fields(workdir: pathlib.Path, name: str, exp: configs.Experiment) -> list[str]:
  """The hashed fields in which `exp` differs from what trial `name` ran with. Read from its
  config.json as this version would write it, so a field added to llmjax since (at its
  default) is no change; a trial stopped before writing one is compared by its hash."""
  folder = trial_dir(workdir, name)
  if not (folder / 'config.json').exists():
    recorded = read_status(workdir, name).get('config_hash')
    return ['config hash'] if recorded and recorded != config_hash(exp) else []
  try:
    saved = resume.as_written_now(runs.RunFolder(folder))
  except configs.ConfigError as e:  # fields that no longer exist
    return [str(e)]
  return [f'{field}: {old!r} -> {new!r}'
          for field, old, new in resume.changes(saved, configs.as_dict(exp))
          if field.split('.')[0] in HASHED_SECTIONS]


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(f'llmjax.sweep: {message}', flush=True)


def _write_json(path: pathlib.Path, value) -> None:
  """Atomic: concurrent cluster jobs and readers never see half a file."""
  tmp = path.with_name(f'.{path.name}.{jax.process_index()}.tmp')
  tmp.write_text(json.dumps(value, indent=2, default=str) + '\n')
  tmp.replace(path)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')

