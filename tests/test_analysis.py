"""llmjax.analysis: runs and sweeps restored on one CPU device, traces equal to the model,
attention and logit-lens invariants, weight statistics, comparisons, curves and plots.

`make_tiny_run` and `make_tiny_sweep` train once per session (the notebook tests use them
too): a 20-step run on the 8 fake devices with sharded parameters, and a 6-trial sweep.
"""

import dataclasses
import functools
import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from absl import logging
from flax import nnx
from matplotlib.figure import Figure

from llmjax import configs, sharding, step, train
from llmjax.analysis import Run, Sweep, activations, compare, curves, plots, weights
from llmjax.data.tokenizers import ByteTokenizer
from llmjax.model.attention import attention_mask
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

pytestmark = pytest.mark.slow  # trains a run and a sweep; .ci/run runs it

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN_STEPS = [5, 10, 15, 20]


def _experiment(spec: str):
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_analysis_experiment', ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


@functools.cache
def make_tiny_run(root: pathlib.Path) -> pathlib.Path:
  """experiments/base.py:tiny for 20 steps, parameters sharded fsdp=4 x tensor=2 over the 8
  fake devices, a checkpoint every 5 steps, metrics every step; trained on llmjax's own
  source files, whose small held-out split keeps the final evaluation short."""
  config = _experiment('experiments/base.py:tiny')
  config.data.source = f'files:{ROOT}/llmjax/**/*.py'
  config.data.data_dir = str(root / 'data')
  config.data.eval_fraction = 0.05
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  config.checkpoint.every_steps = 5
  config.checkpoint.keep_log_spaced = False
  config.checkpoint.keep_last = 10
  config.train.log_every = 1
  config.train.sample_tokens = 0
  config.train.inject_nan_at_step = 12  # a skipped step, for the spike analysis
  config.train.nonfinite = 'skip'
  config.metrics.tensorboard = False
  config.metrics.peak_flops_per_device = 1e9  # no matmul benchmark
  config.data.shuffle_window = 64  # filling the default window of 8192 rows takes seconds
  exp = configs.build(config, jax.device_count())
  workdir = root / 'tiny_run'
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  train.run(exp, workdir, configs.as_dict(exp))
  return workdir


# The synthetic language of synthetic_entropy.py:tiny, 2 sizes x 3 IsoFLOP budgets of 6 to 40
# steps at a constant learning rate: the trials of a size then compile the same programs,
# which the persistent compilation cache compiles once.
SWEEP_FILE = """
import importlib.util

from llmjax.scaling import grids

_spec = importlib.util.spec_from_file_location('_synthetic', {source!r})
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)


def get_config(variant=''):
  config = _synthetic.get_config(variant)
  config.optim.schedule = 'constant'
  config.optim.warmup_steps = 0
  config.data.shuffle_window = 64
  config.checkpoint.every_steps = 0
  config.metrics.tensorboard = False
  config.metrics.peak_flops_per_device = 1e9
  return config


def get_sweep(variant=''):
  sizes = grids.model_sizes([(32, 1), (48, 1)])
  return grids.isoflop(get_config(variant), [3e8, 6e8, 1.2e9], sizes, min_steps=3,
                       warmup_fraction=None)
"""


@functools.cache
def start_tiny_sweep(root: pathlib.Path) -> subprocess.Popen:
  """Starts the sweep CLI on one CPU device; it trains while the tests go on."""
  sweep_file = root / 'tiny_sweep.py'
  sweep_file.write_text(SWEEP_FILE.format(
      source=str(ROOT / 'experiments/scaling/synthetic_entropy.py')))
  env = {**os.environ, 'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu',
         'JAX_COMPILATION_CACHE_DIR': str(root / 'jax_cache'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  with open(root / 'tiny_sweep.log', 'w') as log:
    return subprocess.Popen([sys.executable, '-m', 'llmjax.sweep',
                             f'--config={sweep_file}:tiny', f'--workdir={root / "tiny_sweep"}'],
                            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)


@functools.cache
def make_tiny_sweep(root: pathlib.Path) -> pathlib.Path:
  returncode = start_tiny_sweep(root).wait(timeout=600)
  assert returncode == 0, (root / 'tiny_sweep.log').read_text()[-3000:]
  return root / 'tiny_sweep'


@pytest.fixture(scope='module', autouse=True)
def _sweep_in_the_background(tmp_path_factory):
  start_tiny_sweep(tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory) -> Run:
  return Run(make_tiny_run(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory) -> Sweep:
  return Sweep(make_tiny_sweep(tmp_path_factory.getbasetemp()))


# ----------------------------------------------------------------------------- runs


def test_checkpoint_written_on_8_devices_restores_on_one_cpu(tiny_run):
  assert tiny_run.steps == RUN_STEPS
  params = tiny_run.params(10)
  for leaf in jax.tree.leaves(params):
    assert leaf.sharding.device_set == {jax.devices('cpu')[0]}
  # The same checkpoint restored as training resumes: onto the 8-device mesh that wrote it.
  mesh = sharding.make_mesh(1, 4, 2)
  shardings = sharding.param_shardings(tiny_run.abstract_model[1], mesh, sharding.DEFAULT_RULES)
  sharded = tiny_run.params(10, shardings)
  wq = sharded['blocks']['attn']['wq'].get_value()
  assert len(wq.sharding.device_set) == 8  # it really was sharded
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(sharded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  assert tiny_run.params(10) is params  # restored once, then kept
  newest = tiny_run.params()
  assert not np.array_equal(newest['embed']['embedding'].get_value(),
                            params['embed']['embedding'].get_value())
  state = tiny_run.state(10)  # with the optimizer moments
  assert int(state.step) == 10
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(FileNotFoundError, match=r'has no step 7; it has \[5, 10, 15, 20\]'):
    tiny_run.params(7)


def test_run_metrics_table(tiny_run):
  table = tiny_run.metrics
  assert list(table.step) == list(range(1, 21))  # one row per logged step
  assert table.loss.isna().tolist() == [s == 12 for s in range(1, 21)]  # skipped: NaN ('nan')
  spikes = curves.find_spikes(table, checkpoints=tiny_run.steps)
  assert spikes[['step', 'skipped', 'checkpoint_before', 'checkpoint_after']].values.tolist() \
      == [[12, True, 10, 15]]
  assert table['eval/loss'].notna().tolist() == [s in (10, 20) for s in range(1, 21)]
  assert table.loc[table.step == 20, 'loss'].notna().all()  # train and eval records merged
  assert (table.tokens == table.step * 8 * 64).all()
  np.testing.assert_allclose(table.flops, table.tokens * tiny_run.flops_per_token)
  assert table.loss.iloc[-1] < table.loss.iloc[0]
  assert 'Run(' in repr(tiny_run) and '28,864 parameters' in repr(tiny_run)


def test_folders_of_the_wrong_kind_are_named(tiny_run, tiny_sweep, tmp_path):
  with pytest.raises(FileNotFoundError, match='is not a run folder'):
    Run(tmp_path)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    Run(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match='is a sweep folder, not a run'):
    Run(tiny_sweep.path)
  with pytest.raises(FileNotFoundError, match=r'not a sweep folder \(no sweep.json\); it is a '
                                              r'run folder'):
    Sweep(tiny_run.path)
  with pytest.raises(KeyError, match="no trial 'C1_1x1'"):
    tiny_sweep.run('C1_1x1')


def test_sweep_table_runs_and_metrics(tiny_sweep):
  table = tiny_sweep.table()
  assert list(table.name) == tiny_sweep.trials and len(table) == 6
  assert (table.status == 'done').all()
  assert list(tiny_sweep.runs) == tiny_sweep.trials
  metrics = tiny_sweep.metrics()
  assert set(metrics.trial) == set(tiny_sweep.trials)
  by_trial = metrics.groupby('trial').N.first()
  assert (by_trial == table.set_index('name').N.loc[by_trial.index]).all()


def test_text_encoding_and_held_out_batch(tiny_run):
  ids = tiny_run.encode('ab')
  assert ids.tolist() == [256, 97, 98]  # end-of-text first, as training documents start
  batch = tiny_run.eval_batch(3)
  assert set(batch) == {'inputs', 'targets', 'positions', 'segment_ids', 'weights'}
  assert batch['inputs'].shape == (3, 64)
  np.testing.assert_array_equal(batch['inputs'][:, 1:], batch['targets'][:, :-1])


# ----------------------------------------------------------------------------- activations


CONFIGS = {
    'llama_gqa_scan': dict(attention_impl='einsum', scan_layers=True),
    'gpt2_loop': dict(norm='layernorm', positions='learned', mlp='gelu', use_bias=True,
                      tie_embeddings=False, qk_norm=True, attention_impl='xla',
                      scan_layers=False, num_kv_heads=4),
    # BERT's layout: post-norm blocks (no final norm), attention both ways, masked-LM head.
    'bert_encoder': dict(arch='encoder', norm='layernorm', norm_position='post',
                         embed_norm=True, positions='learned', mlp='gelu_exact',
                         use_bias=True, attention_impl='einsum'),
}


def _model(tiny_cfg, **overrides) -> Transformer:
  return Transformer(dataclasses.replace(tiny_cfg, **overrides), nnx.Rngs(params=0))


def _packed_tokens(cfg: ModelConfig):
  """Two rows of 24 tokens; the first row packs two documents."""
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)).astype(np.int32)
  segment_ids = np.array([[1] * 10 + [2] * 14, [1] * 24], np.int32)
  positions = np.array([list(range(10)) + list(range(14)), list(range(24))], np.int32)
  return tokens, positions, segment_ids


@pytest.mark.parametrize('name', CONFIGS)
def test_trace_equals_the_model_and_lens_ends_at_its_logits(tiny_cfg, name):
  model = _model(tiny_cfg, **CONFIGS[name])
  tokens, positions, segment_ids = _packed_tokens(model.cfg)
  tr = activations.trace(model, tokens, positions, segment_ids)
  graphdef, params = nnx.split(model)
  logits = jax.jit(lambda p, *a: nnx.merge(graphdef, p)(*a))(params, tokens, positions,
                                                             segment_ids)
  # The model's own computation: bitwise for decoders; XLA fuses the encoder's post-norm
  # layers differently in the unrolled trace (1e-7 apart), where a causal mask is 1e-1 off.
  atol = 1e-6 if name == 'bert_encoder' else 0
  np.testing.assert_allclose(tr.logits, logits, rtol=0, atol=atol)
  cfg = model.cfg
  assert tr.residuals.shape == (cfg.num_layers + 1, 2, 24, cfg.d_model)
  assert tr.attention.shape == (cfg.num_layers, 2, cfg.num_heads, 24, 24)
  lens = activations.lens_logits(model, tr.residuals)
  assert lens.shape == (cfg.num_layers + 1, 2, 24, cfg.vocab_size)
  np.testing.assert_allclose(lens[-1], logits, rtol=1e-6, atol=1e-6)

  probs = np.asarray(tr.attention)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)  # every row is a distribution
  causal = cfg.arch == 'decoder'
  allowed = np.asarray(attention_mask(segment_ids, causal))[None]  # 1 B 1 T S
  assert (probs[~np.broadcast_to(allowed, probs.shape)] == 0).all()  # no other doc (no future)
  if not causal:  # an encoder's positions attend to later tokens too
    assert (probs[:, 1, :, 0, 1:] > 0).all()


def test_logit_lens_table(tiny_cfg):
  model = _model(tiny_cfg, attention_impl='einsum')
  tokens, _, _ = _packed_tokens(model.cfg)
  tr = activations.trace(model, tokens)
  targets = np.roll(tokens, -1, axis=1)
  table = activations.logit_lens(model, tr, targets)
  assert len(table) == (model.cfg.num_layers + 1) * tokens.size
  last = table[table.layer == model.cfg.num_layers]
  logprobs = np.asarray(jax.nn.log_softmax(tr.logits))
  expected = -np.take_along_axis(logprobs, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(last.loss, expected.ravel(), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(last.top_token, logprobs.argmax(-1).ravel())
  assert ((last['rank'] == 0) == (last.top_token == last.target)).all()
  assert (table.entropy <= np.log(model.cfg.vocab_size) + 1e-4).all()


def test_attention_stats_on_known_patterns():
  t = 6
  previous = np.eye(t, k=-1)
  previous[0, 0] = 1.0  # the first token can only see itself
  uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
  probs = np.stack([previous, uniform])[None, None]  # L=1 B=1 N=2 T S
  tr = activations.Trace(residuals=None, mid=None, attention=jnp.asarray(probs),
                         logits=jnp.zeros((1, t, 3)))
  table = activations.attention_stats(tr).set_index('head')
  assert table.loc[0, 'previous_token'] == 1.0 and table.loc[0, 'entropy'] == 0.0
  np.testing.assert_allclose(table.loc[1, 'entropy'], np.log(np.arange(1, t + 1)).mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(table.loc[1, 'uniform_entropy'], table.loc[1, 'entropy'],
                             rtol=1e-6)
  np.testing.assert_allclose(table.loc[1, 'first_token'], np.mean(1 / np.arange(1, t + 1)))


def test_token_losses_match_the_training_loss(tiny_cfg):
  model = _model(tiny_cfg)
  tokens, positions, segment_ids = _packed_tokens(model.cfg)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'positions': positions[:, :-1],
           'segment_ids': segment_ids[:, :-1], 'weights': np.ones((2, 23), np.float32)}
  batch['weights'][1, 20:] = 0.0  # padding is left out
  graphdef, params = nnx.split(model)
  expected = step.eval_step(params, batch, graphdef=graphdef)
  tokenizer = ByteTokenizer()
  table = activations.token_losses(model, batch, tokenizer)
  assert len(table) == 2 * 23 - 3
  np.testing.assert_allclose(table.loss.sum(), expected['nll'], rtol=1e-5)
  by_position = activations.loss_by_position(table)
  assert by_position['count'].sum() == len(table)
  assert activations.loss_by_position(table, bins=4)['count'].sum() == len(table)
  by_class = activations.loss_by_class(table)
  np.testing.assert_allclose(by_class.share_of_loss.sum(), 1.0)

  ids = [97, 32, 49, 40, 256, 0xC3, 10]
  assert list(activations.token_class(tokenizer, ids)) == [
      'letter', 'whitespace', 'digit', 'punctuation', 'end_of_text', 'other', 'whitespace']
  text = activations.as_batch(np.array([256, 104, 105]))
  assert text['inputs'].tolist() == [[256, 104]] and text['targets'].tolist() == [[104, 105]]


def test_bad_inputs_are_refused(tiny_cfg):
  model = _model(tiny_cfg)
  with pytest.raises(ValueError, match=r'token id 300 is outside the vocabulary \[0, 257\)'):
    activations.trace(model, [1, 2, 300])
  with pytest.raises(ValueError, match="40 tokens per row exceed the model's max_len 32"):
    activations.trace(model, np.zeros(40, np.int32))
  with pytest.raises(ValueError, match=r"batch lacks \['positions', 'segment_ids', 'weights'\]"):
    activations.token_losses(model, {'inputs': np.zeros((1, 4)), 'targets': np.zeros((1, 4))})
  with pytest.raises(ValueError, match='pass a tokenizer to token_losses'):
    activations.loss_by_class(pd.DataFrame({'loss': [1.0]}))


# ----------------------------------------------------------------------------- weights


def test_weight_stats_and_changes(tiny_cfg):
  model = _model(tiny_cfg)
  table = weights.stats(model)
  cfg = model.cfg
  per_layer = table[table.layer >= 0]
  assert set(per_layer.layer) == set(range(cfg.num_layers))
  assert set(table[table.layer < 0].kind) == {'embed.embedding', 'final_norm.scale'}
  wq = np.asarray(model.blocks.attn.wq.get_value())[1]  # D N H
  row = table[(table.kind == 'attn.wq') & (table.layer == 1)].iloc[0]
  np.testing.assert_allclose(row.norm, np.linalg.norm(wq), rtol=1e-5)
  np.testing.assert_allclose(row.rms, np.sqrt(np.mean(wq**2)), rtol=1e-5)
  top = np.linalg.svd(wq.reshape(cfg.d_model, -1), compute_uv=False)[0]
  np.testing.assert_allclose(row.spectral_norm, top, rtol=1e-5)
  wo = np.asarray(model.blocks.attn.wo.get_value())[0]  # N H D: the embed axis comes last
  np.testing.assert_allclose(weights.singular_values(model, 'attn.wo', 0),
                             np.linalg.svd(wo.reshape(-1, cfg.d_model), compute_uv=False),
                             rtol=1e-5)
  assert table.loc[table.kind == 'final_norm.scale', 'spectral_norm'].isna().all()

  heads = weights.head_norms(model)
  assert len(heads) == cfg.num_layers * cfg.num_heads
  np.testing.assert_allclose((heads[heads.layer == 1].wq ** 2).sum(), row.norm**2, rtol=1e-5)

  same = weights.changes(model, model)
  assert (same.delta_norm == 0).all() and np.allclose(same.cosine, 1.0)
  doubled = jax.tree.map(lambda x: 2 * x, nnx.state(model, nnx.Param))
  moved = weights.changes(model, doubled)
  np.testing.assert_allclose(moved.relative_change, 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match='different parameters'):
    weights.changes(model, _model(tiny_cfg, num_layers=3))
  with pytest.raises(KeyError, match="no parameter 'attn.wz' at layer 0; kinds: attn.wk"):
    weights.singular_values(model, 'attn.wz', 0)


# ----------------------------------------------------------------------------- comparisons


def test_over_steps_and_over_runs(tiny_run, tiny_sweep):
  stats = compare.over_steps(tiny_run, weights.stats, [5, 20])
  assert sorted(set(stats.step)) == [5, 20]
  assert (stats.tokens == stats.step * tiny_run.tokens_per_step).all()
  changes = compare.weight_changes(tiny_run, reference='first')
  assert set(changes.from_step) == {5} and sorted(set(changes.step)) == [10, 15, 20]
  later = changes[changes.kind == 'embed.embedding'].sort_values('step').delta_norm
  assert later.is_monotonic_increasing  # still drifting away from step 5 at this lr
  with pytest.raises(ValueError, match="reference must be 'previous' or 'first'"):
    compare.weight_changes(tiny_run, reference='last')

  assert compare.checkpoint_near(tiny_run, tokens=9 * 512) == 10
  assert compare.checkpoint_near(tiny_run, flops=tiny_run.flops_per_token * 1e9) == 20
  with pytest.raises(ValueError, match='exactly one of tokens= or flops='):
    compare.checkpoint_near(tiny_run)

  sizes = compare.over_runs(tiny_sweep, weights.head_norms)
  assert set(sizes.run) == set(tiny_sweep.trials)
  assert sizes.groupby('run').N.first().nunique() == 2  # two model sizes


def test_align_curves_on_tokens():
  table = pd.DataFrame({'trial': ['a'] * 3 + ['b'] * 2, 'tokens': [1e3, 1e4, 1e5, 1e3, 1e4],
                        'loss': [3.0, 2.0, 1.0, 4.0, 3.0]})
  wide = curves.align(table, num=5)
  assert list(wide.columns) == ['a', 'b'] and wide.index.name == 'tokens'
  np.testing.assert_allclose(wide.index, np.geomspace(1e3, 1e5, 5))
  np.testing.assert_allclose(wide['a'], [3.0, 2.5, 2.0, 1.5, 1.0])  # linear in log tokens
  assert wide['b'].isna().tolist() == [False, False, False, True, True]
  with pytest.raises(KeyError, match="y 'eval' is not a column"):
    curves.align(table, y='eval')


def test_find_spikes():
  steps = np.arange(1, 101)
  loss = 3.0 - steps * 0.01 + 0.01 * np.sin(steps)
  loss[59] += 1.0  # step 60
  grad_norm = np.ones(100) + 0.01 * np.cos(steps)
  grad_norm[58:60] = 10.0  # the gradients blew up one step before
  metrics = pd.DataFrame({'step': steps, 'loss': loss, 'grad_norm': grad_norm})
  found = curves.find_spikes(metrics, checkpoints=[25, 50, 75, 100])
  assert found.step.tolist() == [60]
  spike = found.iloc[0]
  assert spike.z > 5 and spike.grad_norm_ratio > 5
  assert (spike.checkpoint_before, spike.checkpoint_after) == (50, 75)
  metrics.loc[79, 'loss'] = np.inf
  metrics['skipped_steps'] = (steps >= 90).astype(float)  # step 90 was skipped: NaN loss
  metrics.loc[89, 'loss'] = np.nan
  metrics.loc[94, 'loss'] = np.nan  # not logged
  found = curves.find_spikes(metrics)
  assert found.step.tolist() == [60, 80, 90]
  assert found.skipped.tolist() == [False, False, True]
  with pytest.raises(ValueError, match='window must be at least 3'):
    curves.find_spikes(metrics, window=2)


# ----------------------------------------------------------------------------- plots


def test_every_plot_returns_a_figure(tiny_run, tiny_sweep):
  model = tiny_run.model()
  batch = tiny_run.eval_batch(2)
  tr = activations.trace(model, batch['inputs'], batch['positions'], batch['segment_ids'])
  losses = activations.token_losses(model, batch, tiny_run.tokenizer)
  over = compare.over_steps(tiny_run, lambda m: activations.residual_rms(activations.trace(
      m, batch['inputs'], batch['positions'], batch['segment_ids'])), [5, 20])  # compiled once
  figures = [
      plots.curves(tiny_run, ['loss', 'eval/loss'], x='tokens', smooth=3),
      plots.curves(tiny_sweep, 'loss', x='flops', logx=True),
      plots.weight_stats(weights.stats(model)),
      plots.weight_stats(compare.over_steps(tiny_run, weights.stats, [5, 20]), 'rms'),
      plots.spectrum({s: tiny_run.params(s) for s in (5, 20)}, 'mlp.w_in', 0),
      plots.attention(tr, 1, labels=[chr(t) if t < 128 else '?' for t in batch['inputs'][0]]),
      plots.heads(activations.attention_stats(tr)),
      plots.logit_lens(activations.logit_lens(model, tr, batch['targets'])),
      plots.by_layer(over),
      plots.loss_by_position(activations.loss_by_position(losses, bins=4)),
      plots.loss_by_class(activations.loss_by_class(losses)),
      plots.spikes(tiny_run.metrics, curves.find_spikes(tiny_run.metrics)),
  ]
  for fig in figures:
    assert isinstance(fig, Figure) and fig.axes
  assert len(figures[1].axes[0].lines) == 6  # one line per trial
  assert len(figures[8].axes[0].lines) == 2  # one line per checkpoint
  with pytest.raises(KeyError, match="no metric 'nope'"):
    plots.curves(tiny_run, ['nope'])


def test_task_results_table(tiny_run):
  from llmjax.eval import runner as eval_runner
  step = tiny_run.steps[-1]
  eval_runner.write_results(tiny_run.path, step, {'t': {
      'acc': 0.5, 'acc_stderr': 0.1, 'num_examples': 20, 'chance': {'acc': 0.25},
      'ceiling': {'acc': 0.9}}})
  table = tiny_run.task_results()
  assert list(table['metric']) == ['acc']
  row = table.iloc[0]
  assert (row['step'], row['task'], row['value'], row['stderr'], row['chance'],
          row['ceiling'], row['num_examples']) == (step, 't', 0.5, 0.1, 0.25, 0.9, 20)
  assert row['flops'] == step * tiny_run.tokens_per_step * tiny_run.flops_per_token
