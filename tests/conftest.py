"""Test setup: 8 fake CPU devices, so sharding tests run on any machine.

Tests that want one device build their mesh from `jax.devices()[:1]`.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from llmjax import allocator  # noqa: E402

# The entry points' allocator (tcmalloc, else glibc's hugetlb) for the xdist workers and every
# subprocess the tests start; this process itself keeps the allocator it started with.
_WANTED, _CHANGES = allocator.plan(os.environ, allocator.find_tcmalloc())
os.environ.update(_CHANGES, **{allocator.DONE_VAR: _WANTED})
# A peak measured while the suite loads every core must not become the user's MFU peak.
os.environ.setdefault('LLMJAX_PEAK_CACHE', os.path.join(tempfile.gettempdir(),
                                                        f'llmjax-tests-{os.getuid()}',
                                                        'peak_flops.json'))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llmjax import optim, sharding, step  # noqa: E402
from llmjax.data import pipeline  # noqa: E402
from llmjax.data.sources import Corpus  # noqa: E402
from llmjax.data.tokenizers import ByteTokenizer  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_cfg() -> ModelConfig:
  """A model small enough for gradients of everything in milliseconds."""
  return ModelConfig(vocab_size=257, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, max_len=32)


# The model, optimizer and batch of one-step invariants and golden values.
CFG = ModelConfig(vocab_size=264, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, mlp_dim=128, max_len=32)
# A large eps makes Adam's first update smooth in the gradient, so reduction-order
# noise between meshes cannot flip the sign of tiny components.
OPTIM = optim.OptimConfig(lr=1e-2, warmup_steps=0, eps=1e-4, weight_decay=0.1)


def text_corpus(docs: list[bytes]) -> Corpus:
  """An in-memory byte-level corpus (the same documents serve as eval split)."""
  return Corpus(train=docs, eval=docs, tokenizer=ByteTokenizer(), fingerprint='test')


def fixed_batch(batch_size=8, seq_len=16):
  """The first batch of the grain pipeline over five random byte documents."""
  tokens = np.random.default_rng(0).integers(0, 256, 4096).astype(np.uint8)
  docs = [d.tobytes() for d in np.split(tokens, [300, 1500, 1600, 3000])]
  cfg = pipeline.DataConfig(seq_len=seq_len, global_batch_size=batch_size, shuffle_window=1)
  return next(iter(pipeline.train_dataset(text_corpus(docs), cfg)))['batch']


def one_train_step(mesh_shape, cfg=CFG, microbatches=1):
  """(metrics, params on host, state) after one train step of CFG on a mesh."""
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(*mesh_shape, devices=devices)
  rules = sharding.DEFAULT_RULES
  tx, _ = optim.make(OPTIM, cfg, total_steps=10)
  with sharding.activation_rules(mesh, rules):
    graphdef, state, shardings = step.create_sharded_state(cfg, tx, 0, mesh, rules)
    data_sharding = sharding.data_sharding(mesh, rules)
    train_cfg = step.TrainConfig(microbatches=microbatches, z_loss=1e-4)
    step_fn = step.jit_train_step(graphdef, tx, train_cfg, shardings, data_sharding)
    state, metrics = step_fn(state, step.device_batch(fixed_batch(), data_sharding))
  return jax.device_get(metrics), jax.device_get(state.params), state


def killed_and_straight_losses(config: str, tmp_path, kill_after: int = 10) -> tuple[dict, dict]:
  """Step -> training loss of a run of `config` killed (SIGKILL) once checkpoint
  `kill_after` exists and then resumed, and of the same run uninterrupted."""
  root = pathlib.Path(__file__).resolve().parents[1]
  command = [sys.executable, '-m', 'llmjax.main', '--config', config,
             '--config.train.log_every=1', '--config.checkpoint.every_steps=5',
             '--config.checkpoint.keep_log_spaced=False']

  def losses(folder):
    lines = (folder / 'metrics.jsonl').read_text().splitlines()
    return {r['step']: r['loss'] for r in map(json.loads, lines) if 'loss' in r}

  straight = subprocess.run([*command, f'--workdir={tmp_path / "straight"}'], cwd=root,
                            capture_output=True, text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-2000:]
  killed = tmp_path / 'killed'
  proc = subprocess.Popen([*command, f'--workdir={killed}'], cwd=root,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / 'checkpoints' / str(kill_after)).is_dir() and time.time() < deadline:
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  resumed = subprocess.run([*command, f'--workdir={killed}'], cwd=root, capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0 and 'resuming from' in resumed.stdout, resumed.stderr[-2000:]
  return losses(killed), losses(tmp_path / 'straight')
