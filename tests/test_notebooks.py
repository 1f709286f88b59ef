"""The notebooks run top to bottom on a real Jupyter kernel against a tiny run and sweep, and
are stored without outputs."""

import os
import pathlib

import nbclient
import nbformat
import pytest

from test_analysis import make_tiny_run, make_tiny_sweep, start_tiny_sweep

pytestmark = pytest.mark.slow  # trains a run and a sweep; .ci/run runs it

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / 'notebooks'
NAMES = ['checkpoint_analysis', 'training_dynamics', 'scaling_analysis', 'downstream_scaling']


def test_every_notebook_is_tested_and_stored_without_outputs():
  assert sorted(p.stem for p in NOTEBOOKS.glob('*.ipynb')) == sorted(NAMES)
  for name in NAMES:
    book = nbformat.read(NOTEBOOKS / f'{name}.ipynb', as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == 'code']
    assert all(not c.outputs and c.execution_count is None for c in code), name
    assert 'os.environ.get(' in code[0].source  # the parameter cell comes first


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory) -> dict[str, str]:
  root = tmp_path_factory.getbasetemp()
  start_tiny_sweep(root)  # trains while the run trains
  return {**os.environ,
          'LLMJAX_RUN': str(make_tiny_run(root)), 'LLMJAX_SWEEP': str(make_tiny_sweep(root)),
          'LLMJAX_BOOTSTRAP': '10', 'LLMJAX_SPIKE_THRESHOLD': '1',
          # One CPU device, as on a laptop; the run was written on 8.
          'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu',
          # The notebooks trace the same models: each compiled program is compiled once.
          'JAX_COMPILATION_CACHE_DIR': str(root / 'jax_cache'),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


@pytest.mark.parametrize('name', NAMES)
def test_notebook_runs(name, kernel_env, tmp_path):
  book = nbformat.read(NOTEBOOKS / f'{name}.ipynb', as_version=4)
  client = nbclient.NotebookClient(book, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute(env=kernel_env)  # raises CellExecutionError naming the failing cell
  outputs = [o for c in book.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) >= 3, f'{name} showed {len(images)} figures'
