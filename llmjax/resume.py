"""What a rerun in an existing run folder may change, and the folder's config history.

Resume is automatic: the same command in the same --workdir continues the run (a folder
stopped before its first checkpoint starts again, with any config). A rerun whose config
differs from the folder's `config.json` is judged per field:

  model, data, optim.name   never: another model, data order or optimizer state is another
                            run (use a new --workdir, with init_from to warm-start)
  optim, train, init_from   refused unless named in --allow_changes (a field such as
                            train.steps, or a whole section): extending a run or changing a
                            hyperparameter mid-run is a decision, so it is explicit and logged
  mesh, metrics, checkpoint, free: a checkpoint restores on any mesh, and logging, saving or
  eval                      evaluating differently (other held-out domains or tasks) changes
                            no training result

Every accepted change is printed, and the `config.json` it replaces is appended to
`config_history.jsonl` (with the step the run had reached), so the folder always says
how each of its checkpoints was trained.
"""

import json
import pathlib
import time

from llmjax import configs, runs

NEVER = ('model', 'data', 'optim.name', 'lora')  # lora: the adapters' shapes
FREE = ('mesh', 'metrics', 'checkpoint', 'eval')
HISTORY_FILE = 'config_history.jsonl'


def changes(saved: dict, resolved: dict) -> list[tuple[str, object, object]]:
  """(section.field, saved value, new value) for every field that differs."""
  found = []
  for section in sorted(set(saved) | set(resolved)):
    old, new = saved.get(section), resolved.get(section)
    if section not in resolved or section in ('data_fingerprint', 'data_info'):
      continue
    if isinstance(old, dict) and isinstance(new, dict):
      found += [(f'{section}.{f}', old.get(f), new.get(f)) for f in sorted(set(old) | set(new))
                if old.get(f) != new.get(f)]
    elif old != new:
      found.append((section, old, new))
  return found


def as_written_now(run: runs.RunFolder) -> dict:
  """The folder's config as this version writes it: fields added since take their
  defaults, moved fields their new place, so only real changes differ."""
  return {**run.config, **configs.as_dict(run.experiment)}


def _covered(field: str, names) -> bool:
  return any(field == n or field.startswith(n + '.') for n in names)


def problem(workdir: pathlib.Path, resolved: dict, allowed: set[str]) -> str | None:
  """Why this config may not continue the run in `workdir`, if it may not."""
  if not (workdir / 'config.json').exists():
    if (workdir / 'metrics.jsonl').exists() or (workdir / 'checkpoints').exists():
      return (f'{workdir} already holds a run without config.json (not written by llmjax, or '
              f'damaged); choose another --workdir')
    return None
  run = runs.RunFolder(workdir)
  try:
    saved = as_written_now(run)
  except (FileNotFoundError, configs.ConfigError) as e:
    return f'{e}; move it aside to start a new run there, or choose another --workdir'
  if run.imported:
    return (f'{workdir} holds a model imported by llmjax.convert; train from it in a new '
            f'--workdir with --config.init_from={workdir}')
  if not run.steps:
    return None  # stopped before its first checkpoint: it starts again (its config is kept)
  for field, old, new in changes(saved, resolved):
    if _covered(field, FREE):
      continue
    if _covered(field, NEVER):
      return (f'{workdir} holds a run with another {field} ({old!r}, now {new!r}); resume with '
              f'the same settings, or train in another --workdir (init_from={workdir} starts '
              f'from its parameters)')
    if not _covered(field, allowed):
      return (f'{workdir} holds a run with {field}={old!r}, now {new!r}; rerun with '
              f'--allow_changes={field} to continue it that way (the change is logged in '
              f'{HISTORY_FILE}), or use another --workdir')
  return None


def record(workdir: pathlib.Path, resolved: dict) -> list[str]:
  """Writes `resolved` as the folder's config.json; a config it replaces goes to the history
  first. Returns the changed fields, as lines to print."""
  path = workdir / 'config.json'
  lines = []
  if path.exists():
    run = runs.RunFolder(workdir)
    saved = run.config
    found = changes(as_written_now(run), resolved)
    if found:
      reached = run.steps
      entry = {'replaced_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
               'newest_checkpoint': reached[-1] if reached else None, 'config': saved}
      with open(workdir / HISTORY_FILE, 'a', encoding='utf-8') as history:
        history.write(json.dumps(entry) + '\n')
      lines = [f'{field}: {old!r} -> {new!r}' for field, old, new in found]
  path.write_text(json.dumps(resolved, indent=2) + '\n')
  return lines
