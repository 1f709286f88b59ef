"""Encoder-decoder generation (llmjax/generate/seq2seq.py): cached decoding equals the full
forward pass, greedy output equals transformers' `generate` token for token on random T5s,
padded rows do not change each other, and the inputs it refuses."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax.generate import seq2seq
from llmjax.model.attention import KVCache
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer

CFG = ModelConfig(vocab_size=97, d_model=32, num_layers=2, num_decoder_layers=3, num_heads=4,
                  num_kv_heads=4, head_dim=8, mlp_dim=48, max_len=64, arch='encoder_decoder',
                  positions='relative', relative_buckets=8, relative_max_distance=20,
                  scale_scores=False, mlp='geglu', tie_embeddings=False)
VARIANTS = {'t5-v1.1': {}, 't5-v1.0': dict(mlp='relu', tie_embeddings=True),
            'rope-gqa': dict(positions='rope', scale_scores=True, num_kv_heads=2)}


def _model(**changes):
  graphdef, state = nnx.split(Transformer(dataclasses.replace(CFG, **changes), nnx.Rngs(0)))
  rng = np.random.default_rng(1)  # norms off 1, so a misplaced one shows
  return nnx.merge(graphdef, jax.tree.map(
      lambda x: x + jnp.asarray(0.1 * rng.normal(size=x.shape), x.dtype), state))


@pytest.mark.parametrize('variant', VARIANTS)
def test_cached_decoding_equals_the_full_forward_pass(variant):
  model = _model(**VARIANTS[variant])
  rng = np.random.default_rng(2)
  encoder = jnp.asarray(rng.integers(0, 97, (2, 13)))
  segments = jnp.asarray(np.r_[[[1] * 13], [[1] * 9 + [0] * 4]])  # row 1 right-padded
  decoder = jnp.asarray(rng.integers(0, 97, (2, 9)))
  full = model(decoder, encoder_inputs=encoder, encoder_segment_ids=segments)
  full = full.at[1].set(model(decoder[1:], encoder_inputs=encoder[1:, :9])[0])  # unpadded
  memory = model.memory(encoder, None, segments)
  positions = jnp.broadcast_to(jnp.arange(9), decoder.shape)
  cache = KVCache.init(model.cfg, 2, 16)
  logits, cache = model.decode(decoder[:, :4], positions[:, :4], cache, memory)  # prefill
  steps = [logits]
  for t in range(4, 9):
    logits, cache = model.decode(decoder[:, t:t + 1], positions[:, t:t + 1], cache, memory)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_greedy_output_is_a_row_function_of_its_input():
  model = _model()
  rng = np.random.default_rng(3)
  long, short = rng.integers(0, 97, 20), rng.integers(0, 97, 7)
  both = seq2seq.generate(model, [long, short], max_new_tokens=10, decoder_start=0)
  for i, row in enumerate((long, short)):
    alone = seq2seq.generate(model, [row], max_new_tokens=10, decoder_start=0)
    np.testing.assert_array_equal(both.tokens[i], alone.tokens[0])
    np.testing.assert_allclose(both.logprobs[i], alone.logprobs[0], atol=1e-5)
  assert len(both.tokens[0]) == 10 and not np.array_equal(both.tokens[0], both.tokens[1])


@pytest.mark.parametrize('version', ['v1.0', 'v1.1'])
def test_greedy_output_equals_transformers_generate(tmp_path, version):
  torch = pytest.importorskip('torch')
  pytest.importorskip('transformers')
  import test_convert_t5  # noqa: PLC0415 (the same random T5s as the conversion tests)
  from llmjax.convert import hf  # noqa: PLC0415
  reference = test_convert_t5._reference(version, noise=0.3)  # input-dependent outputs
  reference.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  model, _ = hf.load_hf(tmp_path / 'hf')
  inputs = np.random.default_rng(4).integers(2, test_convert_t5.VOCAB, (3, 17))
  with torch.no_grad():
    # transformers 5's cache assumes as many decoder as encoder blocks: recompute instead.
    expected = reference.generate(torch.tensor(inputs), max_new_tokens=14, do_sample=False,
                                  num_beams=1, decoder_start_token_id=0, eos_token_id=1,
                                  pad_token_id=0, use_cache=False).numpy()[:, 1:]
  got = seq2seq.generate(model, inputs, max_new_tokens=14, decoder_start=0, stop_tokens=[1])
  assert len(set(np.concatenate(got.tokens).tolist())) >= 3  # not one token over and over
  for row, tokens in zip(expected, got.tokens):
    assert len(tokens) > 1
    np.testing.assert_array_equal(tokens, row[:len(tokens)])
    assert len(tokens) == 14 or tokens[-1] == 1


@pytest.mark.parametrize('call, message', [
    (lambda m: seq2seq.generate(m, [[1, 2]], max_new_tokens=0, decoder_start=0),
     'max_new_tokens must be >= 1'),
    (lambda m: seq2seq.generate(m, [[1, 200]], max_new_tokens=3, decoder_start=0),
     'input 0 holds token id 200 outside the vocabulary'),
    (lambda m: seq2seq.generate(m, [[1, 2]], max_new_tokens=3, decoder_start=97),
     'decoder_start 0 holds token id 97'),
    (lambda m: seq2seq.generate(m, [list(range(65))], max_new_tokens=3, decoder_start=0),
     'encoder inputs need 1 to max_len=64 tokens'),
    (lambda m: seq2seq.generate(Transformer(dataclasses.replace(m.cfg, arch='decoder',
                                                                num_decoder_layers=0),
                                            nnx.Rngs(0)), [[1]], max_new_tokens=3,
                                decoder_start=0),
     "model.arch='decoder' has no encoder stack"),
])
def test_bad_inputs_are_named(call, message):
  with pytest.raises(ValueError, match=message):
    call(_model())
