"""Encoder-decoders (T5): the decoder reads only its own encoder segment, causal decoder and
bidirectional encoder, T5's relative position buckets, scan = loop, sharded = unsharded,
closed-form counts, span-corruption rows through the pipeline, bad configs. Hugging Face
conversion is in test_convert_t5.py."""

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

from conftest import OPTIM, killed_and_straight_losses, text_corpus
from llmjax import configs, flops, optim, sharding, step
from llmjax.data import objectives, pipeline
from llmjax.data import tokenizers as data_tokenizers
from llmjax.model import layers
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

# T5 v1.1's layout (gated GELU, untied head) and v1.0's (ReLU, tied head, scaled down), and
# the same stacks with the decoder's modern parts (rope, scaled scores).
T5_V11 = dict(arch='encoder_decoder', positions='relative', scale_scores=False, mlp='geglu',
              tie_embeddings=False, num_decoder_layers=3)
T5_V10 = dict(arch='encoder_decoder', positions='relative', scale_scores=False, mlp='relu')
VARIANTS = [T5_V11, T5_V10, dict(arch='encoder_decoder')]
CFG = ModelConfig(vocab_size=272, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_len=64)


def _ids(options):
  return ','.join(f'{k}={v}' for k, v in options.items())


def _model(**changes):
  return Transformer(dataclasses.replace(CFG, **changes), nnx.Rngs(0))


def _tokens(shape, seed):
  return jax.random.randint(jax.random.key(seed), shape, 0, 256)


@pytest.mark.parametrize('changes', VARIANTS, ids=_ids)
def test_decoder_is_causal_and_reads_its_whole_encoder_input(changes):
  model = _model(**changes)
  enc, dec = _tokens((2, 12), 0), _tokens((2, 10), 1)
  logits = np.asarray(model(dec, encoder_inputs=enc))
  later = np.asarray(model(dec.at[:, 6].add(1), encoder_inputs=enc))
  diff = np.abs(later - logits).max(-1)
  assert np.all(diff[:, :6] == 0.0), 'a decoder position saw a later decoder token'
  assert np.all(diff[:, 6:] > 0.0)
  last = np.asarray(model(dec, encoder_inputs=enc.at[:, 11].add(1)))
  assert np.all(np.abs(last - logits).max(-1) > 0.0), 'a decoder position ignored the encoder'


def test_a_call_without_the_encoder_input_says_what_is_missing():
  with pytest.raises(ValueError, match="model.arch='encoder_decoder' reads an encoder input: "
                                       "pass encoder_inputs"):
    _model(**T5_V11)(_tokens((1, 4), 0))


@pytest.mark.parametrize('changes', VARIANTS, ids=_ids)
def test_each_decoder_segment_reads_only_its_own_encoder_segment(changes):
  model = _model(**changes)
  enc, dec = _tokens((1, 16), 2), _tokens((1, 10), 3)
  enc_segments = jnp.array([[1] * 7 + [2] * 9])
  enc_positions = jnp.array([list(range(7)) + list(range(9))])
  segments = jnp.array([[1] * 4 + [2] * 6])
  positions = jnp.array([list(range(4)) + list(range(6))])

  def run(enc, dec):
    return np.asarray(model(dec, positions, segments, encoder_inputs=enc,
                            encoder_positions=enc_positions, encoder_segment_ids=enc_segments))

  packed = run(enc, dec)
  other = run(enc.at[:, 7:].add(5), dec.at[:, 4:].add(5))  # segment 2 changed on both sides
  np.testing.assert_array_equal(packed[:, :4], other[:, :4])  # bit-identical: nothing leaks
  assert np.all(np.abs(packed[:, 4:] - other[:, 4:]).max(-1) > 0)
  alone = np.asarray(model(dec[:, 4:], encoder_inputs=enc[:, 7:]))
  np.testing.assert_allclose(packed[:, 4:], alone, atol=1e-5)  # packed = unpacked


@pytest.mark.parametrize('changes', VARIANTS, ids=_ids)
@pytest.mark.parametrize('remat', ['none', 'full'])
def test_scan_equals_loop_and_remat_equals_none(changes, remat):
  enc, dec = _tokens((2, 12), 4), _tokens((2, 8), 5)
  loop = _model(scan_layers=False, **changes)(dec, encoder_inputs=enc)
  scan = _model(scan_layers=True, remat=remat, **changes)(dec, encoder_inputs=enc)
  np.testing.assert_allclose(scan, loop, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('changes', VARIANTS + [dict(T5_V11, qk_norm=True, use_bias=True,
                                                     norm='layernorm')], ids=_ids)
def test_closed_form_parameter_count(changes):
  cfg = dataclasses.replace(CFG, **changes)
  params = nnx.state(Transformer(cfg, nnx.Rngs(0)), nnx.Param)
  assert flops.param_counts(cfg)['total'] == sum(x.size for x in jax.tree.leaves(params))
  stacks = flops.stack_params(cfg)
  assert stacks['encoder'] == sum(x.size for x in jax.tree.leaves(params['encoder_blocks']))
  assert stacks['decoder'] == sum(x.size for x in jax.tree.leaves(params['blocks']))


def _hf_bucket(offset, bidirectional, num_buckets, max_distance):
  """transformers' T5 bucketing, the reference imported tables were trained with."""
  torch = pytest.importorskip('torch')
  t5 = pytest.importorskip('transformers.models.t5.modeling_t5')
  return t5.T5Attention._relative_position_bucket(torch.tensor(offset), bidirectional,
                                                  num_buckets, max_distance).numpy()


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('num_buckets, max_distance', [(32, 128), (8, 20)])
def test_relative_buckets_are_t5s(bidirectional, num_buckets, max_distance):
  offset = np.arange(-300, 301)[None] - np.zeros((1, 1), np.int64)
  got = np.asarray(layers.relative_bucket(jnp.asarray(offset, jnp.int32), bidirectional,
                                          num_buckets, max_distance))
  np.testing.assert_array_equal(got, _hf_bucket(offset, bidirectional, num_buckets,
                                                max_distance))
  assert got.min() == 0 and got.max() == num_buckets - 1  # every bucket is reached


def test_relative_bias_is_one_table_per_stack_shared_by_its_layers():
  model = _model(**T5_V11)
  enc, dec = _tokens((1, 12), 6), _tokens((1, 8), 7)
  base = np.asarray(model(dec, encoder_inputs=enc))
  for table in ('relative_bias', 'encoder_relative_bias'):
    changed = _model(**T5_V11)
    getattr(changed, table).table[...] = getattr(changed, table).table[...] + 1.0
    # A constant added to every score of a row changes no softmax: a change per bucket does.
    getattr(changed, table).table[...] = getattr(changed, table).table[...].at[0].add(2.0)
    assert np.abs(np.asarray(changed(dec, encoder_inputs=enc)) - base).max() > 1e-4, table
  assert 'relative_bias' not in nnx.state(model.blocks, nnx.Param)  # not per layer


def _span_corpus():
  docs = [bytes(np.random.default_rng(i).integers(32, 127, 200 + 90 * i, dtype=np.uint8))
          for i in range(10)]
  return text_corpus(docs), docs


def _span_cfg(**changes):
  return pipeline.DataConfig(seq_len=64, global_batch_size=4, shuffle_window=1,
                             objective='span', packing='first_fit', **changes)


def _span_batches(cfg, count=4):
  corpus, _ = _span_corpus()
  it = iter(pipeline.train_dataset(corpus, cfg))
  return [next(it)['batch'] for _ in range(count)]


def test_span_rows_invert_to_document_pieces_and_fill_their_rows():
  corpus, docs = _span_corpus()
  cfg = _span_cfg()
  span = pipeline.span_corruption(corpus.tokenizer, cfg)
  raw_len, target_len = span.span_lengths(cfg.seq_len)
  pieces = {d[i:i + raw_len] for d in docs for i in range(0, len(d), raw_len)}
  batches = _span_batches(cfg)
  again = _span_batches(cfg)
  filled = []
  for batch, same in zip(batches, again):  # a function of (seed, document index, piece)
    for key in batch:
      np.testing.assert_array_equal(batch[key], same[key])
    assert batch['encoder_inputs'].shape == (4, 64) and batch['targets'].shape == (4, target_len)
    for r in range(4):
      enc_seg, seg = batch['encoder_segment_ids'][r], batch['segment_ids'][r]
      filled.append((enc_seg > 0).mean())
      for s in set(seg[seg > 0].tolist()):
        inputs, targets = batch['encoder_inputs'][r][enc_seg == s], batch['targets'][r][seg == s]
        original = objectives.uncorrupt(inputs, targets, span.sentinels, 256)
        assert bytes(original.astype(np.uint8).tolist()) in pieces
        decoder_inputs = batch['inputs'][r][seg == s]
        np.testing.assert_array_equal(decoder_inputs, np.r_[256, targets[:-1]])  # shifted
        np.testing.assert_array_equal(batch['encoder_positions'][r][enc_seg == s],
                                      np.arange(len(inputs)))
  assert np.mean(filled) > 0.9, 'span rows leave much of the encoder row empty'
  other = _span_batches(_span_cfg(seed=1), count=1)[0]
  assert not np.array_equal(other['encoder_inputs'], batches[0]['encoder_inputs'])


def test_span_rows_resume_exactly_and_split_across_processes_as_one_batch():
  corpus, _ = _span_corpus()
  cfg = _span_cfg()
  it = iter(pipeline.train_dataset(corpus, cfg))
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it)['batch'] for _ in range(2)]
  resumed = iter(pipeline.train_dataset(corpus, cfg))
  pipeline.restore_state(resumed, json.loads(json.dumps(state)))  # as a checkpoint keeps it
  for want in expected:
    got = next(resumed)['batch']
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  whole = next(iter(pipeline.train_dataset(corpus, cfg)))['batch']
  second = next(iter(pipeline.train_dataset(corpus, cfg, process_index=1, process_count=2)))
  for key in whole:
    np.testing.assert_array_equal(second['batch'][key], whole[key][2:])


def test_span_eval_batches_count_target_tokens():
  corpus, _ = _span_corpus()
  cfg = _span_cfg()
  items = pipeline.eval_batches(corpus, cfg)
  total = sum(item['stats']['tokens'] for item in items)
  assert total == sum(item['batch']['weights'].sum() for item in items) > 0
  assert set(items[0]['batch']) == set(pipeline.ROW_KEYS + pipeline.ENCODER_KEYS) - {'epoch'}
  # Bits per byte counts the dropped spans' bytes: sentinels and end-of-text have none.
  batch = items[0]['batch']
  counted = batch['targets'][batch['weights'] > 0]
  assert items[0]['stats']['bytes'] == int((counted < 256).sum())


def _span_step(mesh_shape, cfg):
  """(metrics, params on host) after one train step of `cfg` on a span batch on a mesh."""
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(*mesh_shape, devices=devices)
  rules = sharding.DEFAULT_RULES
  tx, _ = optim.make(OPTIM, cfg, total_steps=10)
  batch = _span_batches(dataclasses.replace(_span_cfg(), global_batch_size=8), count=1)[0]
  with sharding.activation_rules(mesh, rules):
    graphdef, state, shardings = step.create_sharded_state(cfg, tx, 0, mesh, rules)
    data_sharding = sharding.data_sharding(mesh, rules)
    step_fn = step.jit_train_step(graphdef, tx, step.TrainConfig(z_loss=1e-4), shardings,
                                  data_sharding)
    state, metrics = step_fn(state, step.device_batch(batch, data_sharding))
  return jax.device_get(metrics), jax.device_get(state.params)


def test_encoder_decoder_step_sharded_equals_single_device():
  cfg = dataclasses.replace(CFG, **T5_V11)
  ref_metrics, ref_params = _span_step((1, 1, 1), cfg)
  assert 4.0 < ref_metrics['loss'] < np.log(272) + 1.0
  for mesh_shape in [(2, 2, 2)]:  # data, fsdp and tensor at once (8 fake devices)
    metrics, params = _span_step(mesh_shape, cfg)
    np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(got, want, atol=1e-4)


SPAN = dict(arch='encoder_decoder', objective='span', packing='first_fit', vocab_size=300)


@pytest.mark.parametrize('changes, message', [
    (dict(objective='span', packing='first_fit'),
     "data.objective='span' does not train model.arch='decoder'; it trains on 'lm'"),
    (dict(objective='span', packing='first_fit', arch='encoder'),
     "data.objective='span' does not train model.arch='encoder'"),
    (dict(arch='encoder_decoder', objective='mlm'),
     "data.objective='mlm' does not train model.arch='encoder_decoder'; it trains on 'span'"),
    (dict(SPAN, packing='concat_split'), "packing='concat_split': data.objective=span packs "
                                         "whole examples"),
    (dict(SPAN, vocab_size=257), r"vocab_size=257 has no room for the \d+ sentinels .* set "
                                 r"model.vocab_size=\d+"),
    (dict(SPAN, noise_density=1.5), 'span corruption needs noise_density in'),
    (dict(num_decoder_layers=2), "num_decoder_layers=2: the decoder stack of "
                                 "model.arch='encoder_decoder'"),
    (dict(SPAN, attention_impl='blockwise'), "'blockwise' computes causal attention only"),
    (dict(SPAN, sample_tokens=20), 'does not generate text from a prompt'),
    (dict(SPAN, tasks='code_next_line'), 'the tasks score continuations with a decoder'),
    (dict(SPAN, positions='relative', relative_buckets=2), 'relative_buckets >= 4'),
    (dict(SPAN, parametrization='mup'), "trains in sp only"),
])
def test_bad_encoder_decoder_configs_are_named(changes, message):
  config = configs.defaults()
  sections = {'objective': 'data', 'packing': 'data', 'noise_density': 'data',
              'sample_tokens': 'train', 'tasks': 'eval'}
  for field, value in changes.items():
    config[sections.get(field, 'model')][field] = value
  with pytest.raises(configs.ConfigError, match=message):
    configs.build(config, num_devices=1)


def test_a_tokenizer_without_sentinels_is_refused_with_the_ones_to_use(tmp_path):
  tokenizers = pytest.importorskip('tokenizers')
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({'a': 0, '</s>': 1, '<unk>': 2},
                                                         unk_token='<unk>'))
  tok.save(str(tmp_path / 'tokenizer.json'))
  cfg = _span_cfg(tokenizer=f'hf:{tmp_path}')
  with pytest.raises(objectives.ObjectiveError, match=r'no sentinel tokens <extra_id_0>.*use '
                                                      r'a T5 tokenizer .* data.tokenizer=byte'):
    pipeline.span_corruption(data_tokenizers.load(cfg.tokenizer), cfg)


def test_a_good_span_config_builds():
  config = configs.defaults()
  for field, value in SPAN.items():
    config['data' if field in ('objective', 'packing') else 'model'][field] = value
  exp = configs.build(config, num_devices=1)
  assert exp.train.sample_tokens == 0  # nothing to sample from a prompt


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _losses(folder):
  lines = (folder / 'metrics.jsonl').read_text().splitlines()
  return {r['step']: r['loss'] for r in map(json.loads, lines) if 'loss' in r}


@pytest.mark.slow
def test_t5_experiment_trains_from_the_command_line(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'llmjax.main', '--config',
                        'experiments/t5.py:tiny', '--workdir', str(tmp_path / 't5')],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  losses = _losses(tmp_path / 't5')
  assert losses[max(losses)] < losses[min(losses)] < np.log(260) + 0.5
  # Exported as T5 (sentinels in its tokenizer), and transformers computes the same layers.
  for command in (['llmjax-to-hf', '--out', str(tmp_path / 'hf')], ['check', '--hf_dir',
                                                                    str(tmp_path / 'hf')]):
    out = subprocess.run([sys.executable, '-m', 'llmjax.convert', *command, '--workdir',
                          str(tmp_path / 't5')], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
  assert 'every output within' in out.stdout, out.stdout
  vocab = json.loads((tmp_path / 'hf' / 'tokenizer.json').read_text())['added_tokens']
  assert {t['content']: t['id'] for t in vocab}['<extra_id_2>'] == 259


@pytest.mark.slow
def test_a_span_run_killed_after_a_save_resumes_bitwise(tmp_path):
  resumed, straight = killed_and_straight_losses('experiments/t5.py:tiny', tmp_path)
  assert resumed == straight  # span corruption included
  assert sorted(resumed) == list(range(1, 21))


def test_throughput_and_mfu_count_the_decoders_target_tokens(tmp_path):
  """An encoder-decoder's loss counts target tokens, fewer per row than seq_len: tokens/s and
  the FLOPs per token (hence MFU) are both per target token, or MFU is several times high."""
  from llmjax import train  # noqa: PLC0415 - the loop's logger, used alone here
  exp = configs.build(configs.load_file(str(ROOT / 'experiments/t5.py:tiny')), num_devices=1)
  target = pipeline.target_length(exp.data)
  assert target < exp.data.seq_len
  resolved = {**configs.as_dict(exp), 'data_fingerprint': 'test'}
  logger = train.StepLogger(exp, tmp_path, resolved, 0, lambda s: 0.0, target)
  logger.close()
  assert logger.throughput.tokens_per_step == exp.data.global_batch_size * target
  assert logger.flops_per_token == flops.flops_per_token(exp.model, exp.data.seq_len, target)
