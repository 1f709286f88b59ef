"""The README's code blocks, read and run, so the README cannot drift from the code.

Every block is read (fast): the files and modules its commands name exist; each
`python -m llmjax.main|sweep` command's experiment file, variant, `--config.*` overrides and
flags are the ones the code defines; the steps it names for `runs/base` are checkpoints the
keep policy of experiments/base.py keeps; each Python block compiles and every
`module.attribute` it uses from llmjax exists. The blocks that fit this CPU run for real,
listed in RUNNABLE (slow: each trains or compiles for a while), in a temporary folder.
"""

import ast
import importlib
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from llmjax import checkpoint, configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def _blocks(language: str) -> list[str]:
  return re.findall(rf'^```{language}\n(.*?)^```', README, flags=re.S | re.M)


def _commands() -> list[list[str]]:
  """Each shell command of the bash blocks as words: continuation lines joined, comments
  dropped, `a && b` split, [optional] parts and leading VAR=value assignments removed."""
  found = []
  for block in _blocks('bash'):
    text = re.sub(r'\\\n\s*', ' ', block)
    for line in text.splitlines():
      line = re.sub(r'\s+#.*$', '', line.strip()) if not line.strip().startswith('#') else ''
      line = re.sub(r'\[[^\]]*\]', '', line)
      for part in line.split('&&'):
        words = shlex.split(part)
        while words and re.match(r'^[A-Z_]+=', words[0]):
          words.pop(0)
        if words:
          found.append(words)
  return found


COMMANDS = _commands()


def _llmjax_commands(module: str) -> list[list[str]]:
  """The words after `python -m llmjax.MODULE` of every such command."""
  return [words[3:] for words in COMMANDS
          if words[:3] == ['python', '-m', f'llmjax.{module}']]


def _defined_flags(path: str) -> set[str]:
  """The absl flags a module defines (read from its source: importing two entry points
  in one process would define --config twice)."""
  text = (ROOT / path).read_text()
  names = set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", text))
  return names | {f'no{n}' for n in names}


def test_the_readme_is_read():
  # Guards the checks below against finding nothing to check.
  assert len(COMMANDS) > 40 and len(_llmjax_commands('main')) >= 8
  assert len(_blocks('python')) >= 2


def test_every_named_file_and_module_exists():
  missing = []
  for words in COMMANDS:
    for word in words:
      path = re.sub(r':.*$', '', word.split('=', 1)[-1])
      if re.match(r'^(experiments|launch|benchmarks|notebooks|docs)/', path):
        if not any(ROOT.glob(path)):
          missing.append(path)
    if words[:2] == ['python', '-m']:
      if importlib.util.find_spec(words[2]) is None:
        missing.append(words[2])
  assert not missing, f'the README names what does not exist: {missing}'


@pytest.mark.parametrize('module, source', [('main', 'llmjax/main.py'),
                                            ('sweep', 'llmjax/sweep.py')])
def test_configs_overrides_and_flags_of_each_command_exist(module, source):
  defined = _defined_flags(source)
  for words in _llmjax_commands(module):
    overrides = [w for w in words if w.startswith('--config.')]
    flags = {w[2:].split('=')[0] for w in words if w.startswith('--') and w not in overrides}
    assert flags <= defined, f'{words}: unknown flags {sorted(flags - defined)}'
    spec = words[words.index('--config') + 1]
    try:
      configs.load_file(str(ROOT / spec), overrides)
    except configs.ConfigError as e:
      pytest.fail(f'README command {" ".join(words)}:\n{e}')


def _kept_steps(config_file: str) -> set[int]:
  """The checkpoints a finished run of an experiment file keeps: saved by the cadence,
  the log-spaced steps and the last; kept by checkpoint.keep_* (no time cadence)."""
  exp = configs.build(configs.load_file(str(ROOT / config_file)), num_devices=1)
  c, total = exp.checkpoint, exp.train.steps
  log_spaced = set(checkpoint.log_spaced_steps(total)) if c.keep_log_spaced else set()
  saved = sorted({s for s in range(1, total + 1)
                  if s == total or (c.every_steps and s % c.every_steps == 0)
                  or s in log_spaced or (c.keep_every and s % c.keep_every == 0)})
  every = {s for s in saved if c.keep_every and s % c.keep_every == 0}
  return set(saved[-c.keep_last:]) | log_spaced | every


def test_steps_named_for_runs_base_are_kept_by_its_policy():
  named = [int(n) for n in re.findall(r'runs/base:(\d+)', README)]
  named += [int(n) for words in COMMANDS if 'runs/base' in words
            for n in re.findall(r'--step[= ](\d+)', ' '.join(words))]
  analysis = next(b for b in _blocks('python') if "Run('runs/base')" in b)
  named += [int(n) for n in re.findall(r'run\.model\((\d+)\)', analysis)]
  kept = _kept_steps('experiments/base.py')
  assert named and set(named) <= kept, (
      f'the README names steps {sorted(set(named) - kept)} of runs/base, which its keep '
      f'policy deletes; kept: {sorted(kept)}')


def test_python_blocks_compile_and_use_attributes_that_exist():
  for block in _blocks('python'):
    tree = ast.parse(block)
    modules = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module.startswith('llmjax'):
        for alias in node.names:
          parent = importlib.import_module(node.module)
          value = getattr(parent, alias.name, None)
          if value is None and importlib.util.find_spec(f'{node.module}.{alias.name}'):
            value = importlib.import_module(f'{node.module}.{alias.name}')  # a submodule
          assert value is not None, f'{node.module} has no {alias.name}'
          modules[alias.asname or alias.name] = value
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = modules.get(node.value.id)
        if owner is not None and isinstance(owner, type(sys)):
          assert hasattr(owner, node.attr), f'{owner.__name__}.{node.attr} does not exist'


# The bash lines run for real: (a line of the README, as it stands there, minus its
# continuation backslashes), with /tmp/... and runs/... folders moved into tmp_path.
RUNNABLE = [
    'python -m llmjax.main --config experiments/base.py:tiny --workdir /tmp/smoke',
    'python -m llmjax.main --config experiments/base.py:tiny --workdir /tmp/smoke '
    '--config.train.steps=40 --allow_changes=train.steps',
    'python -m llmjax.main --config experiments/base.py:tiny --workdir /tmp/prof '
    '--config.metrics.profile_steps=5,3',
    'python -m llmjax.main --config experiments/base.py:tiny --workdir /tmp/syn '
    '--config.data.source=synthetic:vocab=32,doc_len=64 --config.model.vocab_size=33',
    'python -m llmjax.sweep --config experiments/scaling/cpu_small.py --dry_run',
    'python -m llmjax.main --config experiments/preset.py:ladder-64x2 --compile_only '
    '--num_fake_devices=8',
]


def test_runnable_lines_are_in_the_readme():
  lines = {' '.join(words) for words in COMMANDS}
  missing = [line for line in RUNNABLE if line not in lines]
  assert not missing, f'RUNNABLE lines no longer in the README: {missing}'


@pytest.mark.slow
def test_runnable_lines_run(tmp_path):
  """In order (the second continues the first's folder); each exits 0."""
  env_python = [sys.executable]
  for line in RUNNABLE:
    words = [re.sub(r'^/tmp/', f'{tmp_path}/', w) for w in shlex.split(line)]
    proc = subprocess.run(env_python + words[1:], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f'{line}\n{proc.stderr[-3000:]}'
  assert (tmp_path / 'smoke' / 'checkpoints' / '40').is_dir()
  assert list((tmp_path / 'prof' / 'profile').glob('plugins/profile/*/*.xplane.pb'))
