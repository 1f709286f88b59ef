"""The shape of the code: imports point down the layers (function-local ones too), there is
no import cycle, and no function is over 60 lines. DESIGN.md's layout names the same layers;
a new module gets a layer here when it is added."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'llmjax'

# Higher layers may import lower ones (and their own layer), never higher ones. The longest
# matching prefix gives a module its layer.
LAYERS = {
    'llmjax.main': 9, 'llmjax.sweep': 9, 'llmjax.tokenizer': 9, 'llmjax.generate.cli': 9,
    'llmjax.generate.__main__': 9, 'llmjax.convert.__main__': 9, 'llmjax.scaling.__main__': 9,
    'llmjax.eval.cli': 9, 'llmjax.eval.__main__': 9,
    'llmjax.analysis': 8,  # notebooks' library: reads runs and sweeps
    'llmjax.scaling': 7, 'llmjax.convert.run_folder': 7, 'llmjax.convert.check': 7,
    'llmjax.aot': 7,  # many runs, or one
    'llmjax.train': 6,  # the loop
    # Downstream tasks, scored on a run folder's checkpoints or, by the loop, during training.
    'llmjax.eval': 5,
    'llmjax.finetune': 5,  # the training task: lm, sft, classify (rows, head, reports)
    'llmjax.finetune.config': 2,  # its config section, read by configs
    'llmjax.warmstart': 5,  # init_from: a run folder or a Hugging Face folder
    'llmjax.resume': 5,  # what a rerun may change; the folder's config history
    'llmjax.runs': 4,  # a run folder as one object
    'llmjax.configs': 3,  # an experiment: the config dataclasses and their validation
    # The parts: pure step, storage, data, metrics, decoding, Hugging Face formats.
    'llmjax.step': 2, 'llmjax.checkpoint': 2, 'llmjax.metrics': 2, 'llmjax.generate': 2,
    'llmjax.convert': 2, 'llmjax.data': 2, 'llmjax.distributed': 2, 'llmjax.flops': 2,
    'llmjax.optim': 2,
    'llmjax.provenance': 2, 'llmjax.profiler': 2,  # a run's origin record; its trace window
    'llmjax.model': 1, 'llmjax.sharding': 1,
    'llmjax.model.lora': 1,  # LoRA adapters on the parameter tree: init, targets, merge
    'llmjax.allocator': 0,  # the entry points' first act, before anything else loads
    'llmjax': 0,
}
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for path in PACKAGE.rglob('*.py'):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return modules


MODULES = _modules()


def _imports(name: str) -> set[str]:
  """llmjax modules imported anywhere in module `name` (top level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(MODULES[name].read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:  # `from llmjax import step` imports the module llmjax.step
        full = f'{node.module}.{alias.name}'
        found.add(full if full in MODULES else node.module)
  return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
  prefix = max((p for p in LAYERS if name == p or name.startswith(p + '.')), key=len)
  return LAYERS[prefix]


def test_the_graph_is_read():
  # Guards the checks below against parsing nothing.
  assert 'llmjax.step' in GRAPH['llmjax.train'] and 'llmjax.runs' in GRAPH['llmjax.warmstart']


@pytest.mark.parametrize('name', sorted(MODULES))
def test_imports_point_down(name):
  upward = sorted(m for m in GRAPH[name] if _layer(m) > _layer(name))
  assert not upward, f'{name} (layer {_layer(name)}) imports higher layers: {upward}'


def test_no_import_cycle():
  done, path = set(), []

  def visit(name):
    if name in path:
      raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(name):] + [name]))
    if name in done:
      return
    path.append(name)
    for imported in sorted(GRAPH[name]):
      visit(imported)
    path.pop()
    done.add(name)

  for name in sorted(GRAPH):
    visit(name)


def test_functions_are_short():
  long = []
  for name, path in sorted(MODULES.items()):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          long.append(f'{name}.{node.name}: {lines} lines')
  assert not long, long
