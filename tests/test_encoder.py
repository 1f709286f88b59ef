"""Encoders (BERT): attention both ways within a segment, post-norm, the masked-LM head and
objective, scan = loop, sharded = unsharded, closed-form counts, bad configs, a CLI run.
The FLOP count against XLA is in test_flops.py."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import CFG, killed_and_straight_losses, one_train_step, text_corpus
from llmjax import configs, flops, step, train
from llmjax.data import pipeline
from llmjax.model import options
from llmjax.model.transformer import Transformer

ROOT = pathlib.Path(__file__).resolve().parents[1]
BERT = dict(arch='encoder', norm='layernorm', norm_position='post', embed_norm=True,
            positions='learned', mlp='gelu_exact', use_bias=True)
# Encoder variants: BERT's layout, and an encoder with the decoder's modern parts.
ENCODERS = [BERT, dict(arch='encoder')]


def _ids(options):
  return ','.join(f'{k}={v}' for k, v in options.items())


def _model(tiny_cfg, **changes):
  return Transformer(dataclasses.replace(tiny_cfg, vocab_size=258, **changes), nnx.Rngs(0))


@pytest.mark.parametrize('arch', options.ARCHITECTURES)
def test_a_later_token_reaches_earlier_positions_only_in_an_encoder(tiny_cfg, arch):
  model = _model(tiny_cfg, **(BERT if arch == 'encoder' else dict(arch=arch)))
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 256)
  changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 256)
  # An encoder-decoder's decoder reads an encoder input too (the same one both times).
  memory = {'encoder_inputs': tokens} if options.ARCHITECTURES[arch].cross_attention else {}
  diff = np.abs(np.asarray(model(tokens, **memory)) - np.asarray(model(changed, **memory))
                ).max(-1)
  if options.ARCHITECTURES[arch].causal:
    assert np.all(diff[:, :9] == 0.0), 'a decoder position saw a later token'
  else:
    assert np.all(diff[:, :9] > 0.0), 'an encoder position ignored a later token'
  assert np.all(diff[:, 9:] > 0.0)


@pytest.mark.parametrize('changes', ENCODERS, ids=_ids)
def test_segments_do_not_see_each_other(tiny_cfg, changes):
  model = _model(tiny_cfg, **changes)
  tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, 256)
  segments = jnp.array([[1] * 6 + [2] * 10])
  positions = jnp.array([list(range(6)) + list(range(10))])
  other = tokens.at[:, 7:].set((tokens[:, 7:] + 5) % 256)
  a, b = model(tokens, positions, segments), model(other, positions, segments)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])  # bit-identical: nothing leaks
  alone = model(tokens[:, 6:])
  np.testing.assert_allclose(a[:, 6:], alone, atol=1e-5)


@pytest.mark.parametrize('changes', ENCODERS, ids=_ids)
def test_scan_equals_loop(tiny_cfg, changes):
  tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, 256)
  loop = _model(tiny_cfg, scan_layers=False, **changes)(tokens)
  scan = _model(tiny_cfg, scan_layers=True, **changes)(tokens)
  np.testing.assert_allclose(scan, loop, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('changes', ENCODERS + [dict(norm_position='post')], ids=_ids)
def test_closed_form_parameter_count(tiny_cfg, changes):
  cfg = dataclasses.replace(tiny_cfg, vocab_size=258, **changes)
  params = nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param)
  assert flops.param_counts(cfg)['total'] == sum(x.size for x in jax.tree.leaves(params))


def test_post_norm_blocks_end_normalized(tiny_cfg):
  cfg = dataclasses.replace(tiny_cfg, norm='layernorm', norm_position='post')
  model = Transformer(cfg, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 256)
  positions = jnp.broadcast_to(jnp.arange(16), tokens.shape)
  h = model.hidden(model.embed_tokens(tokens, positions), positions, jnp.ones_like(tokens))
  np.testing.assert_allclose(np.asarray(h).mean(-1), 0.0, atol=1e-5)  # LayerNorm's output
  np.testing.assert_allclose(np.asarray(h).std(-1), 1.0, atol=1e-3)
  assert not hasattr(model, 'final_norm')


def test_encoder_step_sharded_equals_single_device():
  cfg = dataclasses.replace(CFG, **BERT)
  ref_metrics, ref_params, _ = one_train_step((1, 1, 1), cfg=cfg)
  for mesh_shape in [(2, 2, 2), (1, 2, 4)]:
    metrics, params, _ = one_train_step(mesh_shape, cfg=cfg)
    np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(got, want, atol=1e-4)


def _mlm_batches(seed=0, count=3):
  docs = [bytes(np.random.default_rng(i).integers(32, 127, 300, dtype=np.uint8))
          for i in range(12)]
  cfg = pipeline.DataConfig(seq_len=64, global_batch_size=4, shuffle_window=1,
                            objective='mlm', seed=seed)
  it = iter(pipeline.train_dataset(text_corpus(docs), cfg))
  return [next(it)['batch'] for _ in range(count)]


def test_masked_rows_predict_the_original_tokens_at_selected_positions_only():
  first, again = _mlm_batches(), _mlm_batches()
  for a, b in zip(first, again):  # a function of (seed, document index)
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  batch = first[0]
  selected = batch['weights'] > 0
  assert 0.1 < selected.mean() < 0.2
  masked = batch['inputs'] == 257
  assert np.all(selected[masked]), 'a mask token outside the selected positions'
  np.testing.assert_array_equal(batch['inputs'][~selected], batch['targets'][~selected])
  eot = batch['targets'] == 256  # unshifted (inputs = targets above): a document's own start
  assert eot.any() and not selected[eot].any(), 'end-of-text was selected'
  assert not np.array_equal(batch['inputs'], _mlm_batches(seed=1)[0]['inputs'])


def test_eval_accuracy_is_masked_token_accuracy(tiny_cfg):
  model = _model(tiny_cfg, **BERT)
  graphdef, params = nnx.split(model)
  batches = _mlm_batches(count=2)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  evaluate = train.Evaluator(step.jit_eval_step(graphdef, None, sharding),
                             [{'batch': b, 'stats': {'bytes': 1}} for b in batches], sharding)
  top = [np.asarray(model(b['inputs'], b['positions'], b['segment_ids'])).argmax(-1)
         for b in batches]
  hits = sum(((t == b['targets']) * b['weights']).sum() for t, b in zip(top, batches))
  expected = hits / sum(b['weights'].sum() for b in batches)
  assert 0 <= expected < 0.5  # an untrained model: far from the copy of unselected tokens
  np.testing.assert_allclose(evaluate(params)['eval/accuracy'], expected, rtol=1e-6)
  # Tokens the objective did not select never count, whatever the model predicts there.
  for t, b in zip(top, batches):
    b['targets'] = np.where(b['weights'] > 0, b['targets'], t)
  np.testing.assert_allclose(evaluate(params)['eval/accuracy'], expected, rtol=1e-6)


@pytest.mark.parametrize('changes, message', [
    (dict(arch='encoder'), "data.objective='lm' does not train model.arch='encoder'; it "
                           "trains on 'mlm'"),
    (dict(objective='mlm'), "data.objective='mlm' does not train model.arch='decoder'"),
    (dict(arch='encoder', objective='mlm', vocab_size=257),
     r"vocab_size=257 has no room for the mask token .* set model.vocab_size=258"),
    (dict(arch='encoder', objective='mlm', attention_impl='blockwise'),
     "'blockwise' computes causal attention only"),
    (dict(arch='encoder', objective='mlm', sample_tokens=20), 'does not generate text'),
    (dict(arch='encoder', objective='mlm', tasks='code_next_line'),
     "eval.tasks='code_next_line': the tasks score continuations with a decoder"),
    (dict(arch='bidirectional'), "model.arch: unknown option 'bidirectional'; choose one of "
                                 "decoder, encoder"),
    (dict(norm_position='sandwich'), "model.norm_position: unknown option 'sandwich'"),
])
def test_bad_encoder_configs_are_named(changes, message):
  config = configs.defaults()
  config.model.vocab_size = 258
  sections = {'objective': 'data', 'sample_tokens': 'train', 'tasks': 'eval'}
  for field, value in changes.items():
    config[sections.get(field, 'model')][field] = value
  with pytest.raises(configs.ConfigError, match=message):
    configs.build(config, num_devices=1)


@pytest.mark.slow
def test_bert_experiment_trains_from_the_command_line(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'llmjax.main', '--config',
                        'experiments/bert.py:tiny', '--workdir', str(tmp_path / 'bert')],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  records = [json.loads(line)
             for line in (tmp_path / 'bert' / 'metrics.jsonl').read_text().splitlines()]
  losses = [r['loss'] for r in records if 'loss' in r]
  assert losses[-1] < losses[0] < np.log(258) + 0.5
  for module, extra in (('llmjax.generate', ['--prompt', 'def ']),
                        ('llmjax.eval', ['--tasks', 'code_next_line'])):
    refused = subprocess.run([sys.executable, '-m', module, '--workdir', str(tmp_path / 'bert'),
                              *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "model.arch='encoder'" in refused.stderr, refused.stderr


@pytest.mark.slow
def test_a_masked_lm_run_killed_after_a_save_resumes_bitwise(tmp_path):
  resumed, straight = killed_and_straight_losses('experiments/bert.py:tiny', tmp_path)
  assert resumed == straight  # masks included: bitwise
  assert sorted(resumed) == list(range(1, 21))
