"""Generation: cached decoding = full recomputation, greedy = a naive loop, sampling
options, stop tokens, one compilation per bucket, sharded = unsharded, scoring, Hugging
Face's greedy tokens, the CLI, and bad inputs by message."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from llmjax import checkpoint, generate, sharding, step
from llmjax.generate import cli as generate_cli
from llmjax.model.attention import KVCache
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

# GQA (4 query heads, 2 kv heads), rope, scanned layers.
CFG = ModelConfig(vocab_size=257, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_len=32)
PROMPTS = [[256, 104, 105], [256, *range(40, 50)], [7]]  # lengths 3, 11, 1


def random_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
  """A model with parameters drawn by numpy: unlike Transformer's own init, no op to compile.
  Norm scales and biases are perturbed too, so a misplaced one would show. The parameters
  are committed to device 0, as restored ones are: the CLI test reuses the compilations."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(param):
    value = (param.group == 'norm') + 0.2 * rng.standard_normal(param.get_value().shape)
    value = np.asarray(value, param.get_value().dtype)
    return param.replace(jax.device_put(value, jax.devices()[0]))

  return nnx.merge(graphdef, jax.tree.map(draw, abstract,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable)))


@pytest.fixture(scope='module')
def model():
  return random_model(CFG)


@functools.partial(jax.jit, static_argnums=0)
def _full_logits(graphdef, params, tokens):
  return nnx.merge(graphdef, params)(tokens)


def full_logits(model, tokens) -> np.ndarray:
  """Logits of the uncached forward pass over BT tokens."""
  return np.asarray(_full_logits(*nnx.split(model), jnp.asarray(tokens, jnp.int32)))


def naive_greedy(model, prompt, num_new):
  """(tokens, log-probabilities): argmax of a full forward pass per new token over a
  fixed-size buffer (causal masking hides its unfilled end)."""
  buffer = np.zeros((1, model.cfg.max_len), np.int32)
  buffer[0, :len(prompt)] = prompt
  tokens, logprobs = [], []
  for pos in range(len(prompt), len(prompt) + num_new):
    logits = full_logits(model, buffer)[0, pos - 1]
    buffer[0, pos] = np.argmax(logits)
    tokens.append(buffer[0, pos])
    logprobs.append(jax.nn.log_softmax(logits)[buffer[0, pos]])
  return np.array(tokens), np.array(logprobs)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, params, tokens, positions, cache):
  return nnx.merge(graphdef, params).decode(tokens, positions, cache)


@pytest.mark.parametrize('options', [
    dict(num_kv_heads=4, positions='learned', scan_layers=True, use_bias=True,
         attention_impl='xla'),
    dict(num_kv_heads=2, positions='rope', scan_layers=False, qk_norm=True),
], ids=['mha-learned-scan-bias-xla', 'gqa-rope-loop-qknorm'])
def test_cached_decoding_equals_full_recomputation(options):
  cfg = dataclasses.replace(CFG, **options)
  graphdef, params = nnx.split(random_model(cfg, seed=1))
  lengths, num_steps, width = np.array([3, 9, 16]), 4, 16
  sequences = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, width + num_steps))
  expected = full_logits(nnx.merge(graphdef, params), sequences)  # exact on real prefixes
  for pad in ('left', 'right'):
    prompt, positions, last = generate._pad_prompts(
        [s[:n] for s, n in zip(sequences, lengths)], 3, width, pad)
    assert all(last[row] == np.flatnonzero(positions[row] >= 0)[-1] for row in range(3))
    cache = KVCache.init(cfg, 3, width + num_steps)
    logits, cache = _decode(graphdef, params, prompt, positions, cache)
    for row, n in enumerate(lengths):
      np.testing.assert_allclose(logits[row, positions[row] >= 0], expected[row, :n],
                                 atol=1e-5, err_msg=pad)
    for i in range(num_steps):  # one token per row, at each row's own position
      step = np.stack([s[n + i] for s, n in zip(sequences, lengths)])[:, None]
      logits, cache = _decode(graphdef, params, step, lengths[:, None] + i, cache)
      np.testing.assert_allclose(logits[:, 0], expected[np.arange(3), lengths + i], atol=1e-5,
                                 err_msg=f'{pad}, step {i}')


def test_the_cache_is_in_the_compute_dtype():
  cache = KVCache.init(dataclasses.replace(CFG, dtype='bfloat16'), batch=2, length=8)
  assert cache.k.dtype == cache.v.dtype == jnp.bfloat16
  assert cache.k.shape == (CFG.num_layers, 2, 8, CFG.num_kv_heads, CFG.head_dim)
  np.testing.assert_array_equal(cache.positions, -1)  # every slot empty


def test_greedy_equals_a_naive_loop_and_logprobs_are_the_models(model):
  left = generate.generate(model, PROMPTS, max_new_tokens=10, temperature=0.0)
  right = generate.generate(model, PROMPTS, max_new_tokens=10, temperature=0.0, pad='right')
  for row, prompt in enumerate(PROMPTS):
    tokens, logprobs = naive_greedy(model, prompt, 10)
    np.testing.assert_array_equal(left.tokens[row], tokens)
    np.testing.assert_array_equal(right.tokens[row], tokens)
    np.testing.assert_allclose(left.logprobs[row], logprobs, atol=1e-5)
    np.testing.assert_array_equal(left.sampling_logprobs[row], 0.0)  # greedy: certain
  assert not left.finished.any()


def test_top_k_1_and_a_tiny_top_p_are_greedy_and_seeds_reproduce(model):
  greedy = generate.generate(model, PROMPTS, max_new_tokens=8, temperature=0.0).tokens
  sample = functools.partial(generate.generate, model, PROMPTS, max_new_tokens=8)
  for options in (dict(top_k=1), dict(top_p=1e-6), dict(top_k=5, top_p=1e-6)):
    out = sample(temperature=1.0, seed=3, **options)
    for a, b in zip(out.tokens, greedy):
      np.testing.assert_array_equal(a, b, err_msg=str(options))
    np.testing.assert_allclose(np.concatenate(out.sampling_logprobs), 0.0, atol=1e-6)
  a, b, c = (sample(temperature=1.0, seed=s).tokens for s in (1, 1, 2))
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_top_k_and_top_p_keep_the_right_tokens():
  logits = jnp.log(jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15]]))
  kept = lambda k, p: np.isfinite(generate._filter_top_k_top_p(logits, k, p))[0]
  np.testing.assert_array_equal(kept(2, 1.0), [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(kept(0, 0.69), [0, 1, 0, 1, 0])  # 0.4 + 0.3 reach 0.69
  np.testing.assert_array_equal(kept(0, 0.71), [0, 1, 0, 1, 1])
  # Nucleus of the renormalized top 3: 0.4 and 0.3 of 0.85 already hold 0.82 > 0.8.
  np.testing.assert_array_equal(kept(3, 0.8), [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(kept(0, 1.0), [1, 1, 1, 1, 1])


def test_stop_tokens_end_rows_and_keep_the_stop_token(model):
  greedy = generate.generate(model, PROMPTS, max_new_tokens=12, temperature=0.0).tokens
  stops = [int(greedy[0][2]), int(greedy[1][4])]
  out = generate.generate(model, PROMPTS, max_new_tokens=12, temperature=0.0, stop_tokens=stops)
  for row, full in enumerate(greedy):
    hits = np.flatnonzero(np.isin(full, stops))
    expected = full[:hits[0] + 1] if hits.size else full
    np.testing.assert_array_equal(out.tokens[row], expected)
    assert out.finished[row] == bool(hits.size)
    assert len(out.logprobs[row]) == len(expected)
  assert out.finished[0] and len(out.tokens[0]) <= 3


def test_new_tokens_are_clipped_to_the_context_with_a_warning(model):
  prompt = [1] * 16  # 16 new tokens fill max_len 32
  with pytest.warns(UserWarning, match='1 of 1 rows stop before max_new_tokens=20'):
    out = generate.generate(model, [prompt], max_new_tokens=20, temperature=0.0)
  np.testing.assert_array_equal(out.tokens[0], naive_greedy(model, prompt, 16)[0])


def test_one_compilation_per_bucket_and_streaming_in_chunks(model):
  generate.generate(model, PROMPTS, max_new_tokens=10, temperature=0.0)
  sizes = generate._prefill._cache_size(), generate._decode._cache_size()
  # Same buckets (batch <= 4, prompt <= 16, new tokens <= 16): no compilation, whatever the
  # prompts, lengths, sampling settings, seeds, stop tokens or number of tokens.
  out = generate.generate(model, [[5, 6], [1] * 16, [2], [3, 4, 5]], max_new_tokens=16,
                          temperature=0.7, top_k=4, top_p=0.9, seed=5, stop_tokens=[1, 2, 3])
  assert len(out.tokens) == 4
  chunks = list(generate.stream(model, PROMPTS, max_new_tokens=13, temperature=0.0, chunk=4,
                                pad='right'))
  assert (generate._prefill._cache_size(), generate._decode._cache_size()) == sizes
  assert [len(c.tokens[1]) for c in chunks] == [4, 8, 12, 13]
  whole = generate.generate(model, PROMPTS, max_new_tokens=13, temperature=0.0)
  for a, b in zip(chunks[-1].tokens, whole.tokens):
    np.testing.assert_array_equal(a, b)


def test_sharded_generation_equals_unsharded(model):
  mesh = sharding.make_mesh(2, 1, 2, devices=jax.devices()[:4])
  rules = sharding.DEFAULT_RULES
  graphdef, state = nnx.split(model)
  placed = jax.device_put(state, sharding.param_shardings(state, mesh, rules))
  assert placed['blocks']['attn']['wq'].sharding.spec == P(None, None, 'tensor', None)
  expected = generate.generate(model, PROMPTS, max_new_tokens=6, temperature=0.0)
  with sharding.activation_rules(mesh, rules):
    out = generate.generate(nnx.merge(graphdef, placed), PROMPTS, max_new_tokens=6,
                            temperature=0.0)
    cache = jax.jit(lambda: KVCache.init(CFG, 4, 16))()
  expected_layout = jax.sharding.NamedSharding(mesh, P(None, 'data', None, 'tensor', None))
  assert cache.k.sharding.is_equivalent_to(expected_layout, 5)  # L B S K H
  for row in range(len(PROMPTS)):
    np.testing.assert_array_equal(out.tokens[row], expected.tokens[row])
    np.testing.assert_allclose(out.logprobs[row], expected.logprobs[row], atol=1e-5)


def test_score_sums_the_log_softmax_of_the_full_forward(model):
  contexts = [[256, 1, 2, 3], [256], list(range(40))]  # the last one is cut to max_len
  continuations = [[4, 5], [9, 8, 7, 6], [1, 2, 3]]
  out = generate.score(model, contexts, continuations)
  for row, (context, continuation) in enumerate(zip(contexts, continuations)):
    sequence = np.concatenate([context, continuation])[-CFG.max_len - 1:]
    buffer = np.zeros((1, CFG.max_len), np.int32)
    buffer[0, :len(sequence) - 1] = sequence[:-1]
    logprobs = jax.nn.log_softmax(full_logits(model, buffer)[0])
    n = len(continuation)
    expected = logprobs[np.arange(len(sequence) - 1 - n, len(sequence) - 1), sequence[-n:]]
    np.testing.assert_allclose(out.logprobs[row], expected, atol=1e-5)
    np.testing.assert_allclose(out.sums[row], expected.sum(), rtol=1e-5)
  assert not out.greedy.any()
  greedy = generate.generate(model, PROMPTS, max_new_tokens=5, temperature=0.0).tokens
  np.testing.assert_array_equal(generate.score(model, PROMPTS, greedy).greedy, True)


@pytest.mark.parametrize('kwargs, match', [
    (dict(prompts=[[]]), 'prompt 0 has 0 tokens; a prompt needs 1 to 31'),
    (dict(prompts=[[1], list(range(32))]), 'prompt 1 has 32 tokens; a prompt needs 1 to 31'),
    (dict(prompts=[[1, 257]]), r'prompt 0 holds token id 257 outside the vocabulary \[0, 257\)'),
    (dict(prompts=[[-1]]), 'prompt 0 holds token id -1 outside the vocabulary'),
    (dict(prompts=[1, 2, 3]), 'prompts must be a list of token lists, not a list of int'),
    (dict(prompts=np.zeros(3, int)), 'prompts must be a 2-D array'),
    (dict(prompts=[]), 'no prompts given'),
    (dict(max_new_tokens=0), 'max_new_tokens must be >= 1, got 0'),
    (dict(chunk=0), 'chunk must be >= 1, got 0'),
    (dict(temperature=-1.0), 'temperature must be >= 0'),
    (dict(temperature=float('nan')), 'temperature must be >= 0 and finite'),
    (dict(temperature=float('inf')), 'temperature must be >= 0 and finite'),
    (dict(top_k=-2), 'top_k must be >= 0'),
    (dict(top_p=0.0), r'top_p must be in \(0, 1\]'),
    (dict(stop_tokens=[300]), r'stop token 300 is outside the vocabulary \[0, 257\)'),
    (dict(pad='middle'), "pad must be 'left' or 'right', got 'middle'"),
])
def test_bad_generation_inputs_name_the_problem(model, kwargs, match):
  kwargs = {'prompts': [[1, 2]], 'max_new_tokens': 4, **kwargs}
  with pytest.raises(ValueError, match=match):
    generate.stream(model, **kwargs)  # raises before the first chunk is asked for


@pytest.mark.parametrize('contexts, continuations, match', [
    ([[]], [[1]], 'context 0 is empty; start it with the end-of-text token'),
    ([[1]], [[]], 'continuation 0 has 0 tokens; it needs 1 to max_len=32'),
    ([[1]], [list(range(33))], 'continuation 0 has 33 tokens'),
    ([[1], [2]], [[1]], '2 contexts but 1 continuations'),
    ([[1]], [[999]], 'continuation 0 holds token id 999 outside the vocabulary'),
])
def test_bad_score_inputs_name_the_problem(model, contexts, continuations, match):
  with pytest.raises(ValueError, match=match):
    generate.score(model, contexts, continuations)


def _run_folder(tmp_path, model, data=None):
  """A training run folder holding `model`'s parameters at step 5 and, unless `data` says
  otherwise, the byte tokenizer."""
  workdir = tmp_path / 'run'
  # The generator reads the parameters only.
  state = step.TrainState(step=jnp.array(5), params=nnx.state(model, nnx.Param), opt_state=None,
                          rng=None)
  ckpt = checkpoint.Checkpointer(workdir, checkpoint.CheckpointConfig(), 10)
  ckpt.save(5, state, {'iterator': None}, {})
  ckpt.close()
  config = {'model': dataclasses.asdict(model.cfg), 'data': data or {'tokenizer': 'byte'}}
  (workdir / 'config.json').write_text(json.dumps(config))
  return workdir


def test_cli_reads_a_synthetic_run_with_its_own_tokens(tmp_path, capsys):
  # A synthetic-language run's tokens are the chain's states (here 0..15, end-of-text 16):
  # the byte tokenizer's end-of-text (256) would not even be in its vocabulary.
  model = random_model(dataclasses.replace(CFG, vocab_size=17))
  workdir = _run_folder(tmp_path, model, {'source': 'synthetic:vocab=16,seed=0'})
  assert generate_cli.main(['--workdir', str(workdir), '--prompt', '3 1 4', '--temperature',
                            '0', '--max_new_tokens', '8']) == 0
  printed = capsys.readouterr().out.split()
  expected = generate.generate(model, [[16, 3, 1, 4]], max_new_tokens=8, temperature=0.0,
                               stop_tokens=[16]).tokens[0]
  assert printed == ['3', '1', '4', *[str(t) for t in expected]]


def test_cli_streams_the_continuation_of_a_run(tmp_path, model, capsys):
  workdir = _run_folder(tmp_path, model)
  code = generate_cli.main(['--workdir', str(workdir), '--prompt', 'hi', '--temperature', '0',
                        '--max_new_tokens', '12', '--chunk', '4'])
  assert code == 0
  expected = generate.generate(model, [[256, 104, 105]], max_new_tokens=12, temperature=0.0,
                               stop_tokens=[256]).tokens[0]
  assert capsys.readouterr().out == 'hi' + bytes(expected[expected < 256].tolist()).decode(
      errors='replace') + '\n'
  assert generate_cli.main(['--workdir', str(workdir), '--step', '7', '--prompt', 'x']) == 2
  assert 'has no step 7; it has [5]' in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
  assert generate_cli.main(['--workdir', str(tmp_path / 'nothing'), '--prompt', 'x']) == 2
  assert 'does not exist; expected a run folder' in capsys.readouterr().err
  (tmp_path / 'empty').mkdir()
  assert generate_cli.main(['--workdir', str(tmp_path / 'empty'), '--prompt', 'x']) == 2
  assert 'no config.json in' in capsys.readouterr().err
  (tmp_path / 'config.json').write_text(json.dumps({'model': {}, 'data': {}}))
  assert generate_cli.main(['--workdir', str(tmp_path), '--prompt', 'x']) == 2
  assert 'no checkpoints in' in capsys.readouterr().err


@pytest.mark.parametrize('kind', ['gpt2', 'llama'])
@pytest.mark.slow
def test_greedy_equals_hugging_face_generate(tmp_path, kind, capsys):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  hf = pytest.importorskip('llmjax.convert.hf')
  hf_reference = pytest.importorskip('hf_reference')
  if kind == 'gpt2':
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128,
                                     n_positions=64)
  else:  # GQA, untied
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=False)
  reference = hf_reference.random_model(config)
  reference.save_pretrained(tmp_path / kind, safe_serialization=True)
  reference.generation_config.eos_token_id = None  # compare all 10 tokens
  model, _ = hf.load_hf(tmp_path / kind)
  prompts = np.random.default_rng(1).integers(0, 128, (2, 7))
  mask = np.ones_like(prompts)
  mask[1, :3] = 0  # the second prompt has 4 tokens, left-padded as transformers wants
  with torch.no_grad():
    expected = reference.generate(torch.tensor(prompts), attention_mask=torch.tensor(mask),
                                  do_sample=False, max_new_tokens=10, pad_token_id=0)
  out = generate.generate(model, [prompts[0], prompts[1, 3:]], max_new_tokens=10,
                          temperature=0.0)
  np.testing.assert_array_equal(np.stack(out.tokens), expected[:, 7:].numpy())
  assert generate_cli.main(['--hf_dir', str(tmp_path / kind), '--prompt', 'x']) == 2
  assert f'{tmp_path / kind} holds no tokenizer' in capsys.readouterr().err
