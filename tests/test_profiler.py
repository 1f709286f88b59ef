"""metrics.profile_steps: its spec and its bad inputs (the trace of a real run is checked in
test_provenance.py, on the same tiny run)."""

import pytest

from llmjax import configs, profiler


def test_spec_names_the_first_step_and_the_count():
  assert profiler.parse('') is None
  assert profiler.parse('10,5') == (10, 5)


@pytest.mark.parametrize('spec, message', [
    ('10', r"metrics.profile_steps='10': expected START,COUNT"),
    ('a,b', r"metrics.profile_steps='a,b': expected START,COUNT"),
    ('1,2,3', r"metrics.profile_steps='1,2,3': expected START,COUNT"),
    ('0,5', r"metrics.profile_steps='0,5': START and COUNT must be at least 1"),
    ('3,0', r"metrics.profile_steps='3,0': START and COUNT must be at least 1"),
])
def test_bad_spec_is_refused_by_the_config_check(spec, message):
  config = configs.defaults()
  config.model.preset = 'ladder-64x2'
  config.metrics.profile_steps = spec
  with pytest.raises(configs.ConfigError, match='config.' + message):
    configs.build(config, num_devices=1)


def test_the_window_opens_and_closes_once(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(profiler.jax.profiler, 'start_trace', lambda d: calls.append(('start', d)))
  monkeypatch.setattr(profiler.jax.profiler, 'stop_trace', lambda: calls.append(('stop',)))
  trace = profiler.StepProfiler('3,2', tmp_path)
  for step in range(1, 7):
    trace.before(step)
    calls.append(step)
    trace.after(step, None)
  trace.stop()  # the loop's finally: nothing left open
  assert calls == [1, 2, ('start', str(tmp_path / 'profile')), 3, 4, ('stop',), 5, 6]
