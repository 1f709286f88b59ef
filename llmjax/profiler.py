"""A jax.profiler trace of a few training steps, written into the run folder.

`metrics.profile_steps='START,COUNT'` traces steps START .. START+COUNT-1 (numbered as in
metrics.jsonl) into WORKDIR/profile/plugins/profile/DATE/HOST.xplane.pb, the layout
TensorBoard's profile plugin reads (`tensorboard --logdir WORKDIR/profile`); Perfetto opens
the trace too. Every process traces its own devices.
"""

import pathlib

import jax

FOLDER = 'profile'


def parse(spec: str) -> tuple[int, int] | None:
  """(first step, number of steps) of a 'START,COUNT' spec, None for ''; ValueError names
  what is wrong."""
  if not spec:
    return None
  parts = spec.split(',')
  try:
    first, count = (int(p) for p in parts)
  except ValueError:
    raise ValueError(f'metrics.profile_steps={spec!r}: expected START,COUNT (two integers, '
                     f'e.g. 10,5), or empty for no trace') from None
  if first < 1 or count < 1:
    raise ValueError(f'metrics.profile_steps={spec!r}: START and COUNT must be at least 1 '
                     f'(step 1 includes the compile; START >= 2 traces steady steps)')
  return first, count


def problems(spec: str) -> list[str]:
  try:
    parse(spec)
  except ValueError as e:
    return [str(e)]
  return []


class StepProfiler:
  """Starts the trace before the first chosen step is dispatched and stops it once the last
  one has finished; steps already behind a resumed run are not traced."""

  def __init__(self, spec: str, workdir: pathlib.Path):
    self.window = parse(spec)
    self.directory = workdir / FOLDER
    self.active = False

  def before(self, step: int) -> None:
    """Called before step `step` (1-based) is dispatched."""
    if self.window is not None and step == self.window[0]:
      jax.profiler.start_trace(str(self.directory))
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Called once step `step` is dispatched; waits for it only when the trace ends there."""
    if self.active and step == sum(self.window) - 1:
      jax.block_until_ready(outputs)
      self.stop()
      print(f'llmjax: profile of steps {self.window[0]}..{step} written to {self.directory}')

  def stop(self) -> None:
    """Ends an open trace (the run stopped inside the window)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
