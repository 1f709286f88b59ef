"""Exports that stand alone: a run's tokenizer (byte-level, SentencePiece) goes into the
Hugging Face folder, AutoTokenizer loads it, and transformers' greedy generation from the
same text prompt equals llmjax's, with no manual step; llmjax reads its own export back."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from llmjax import checkpoint, generate, step  # noqa: E402
from llmjax.convert import hf_tokenizer  # noqa: E402
from llmjax.convert.__main__ import main as convert_main  # noqa: E402
from llmjax.data.tokenizers import (ByteTokenizer, HuggingFaceTokenizer,  # noqa: E402
                                    SentencePieceTokenizer)
from llmjax.generate import cli as generate_cli  # noqa: E402
from llmjax.model.config import ModelConfig  # noqa: E402
from llmjax.model.transformer import Transformer  # noqa: E402
from llmjax.tokenizer import train_sentencepiece  # noqa: E402

TEXTS = ['def fibonacci(n):\n    return n', '  two leading spaces', 'tabs\tand\nnewlines\n',
         'unicode: héllo wörld ✓ 😀', 'x', '']
NEW_TOKENS = 12


def _run(tmp_path, vocab_size: int, tokenizer: str, objective: str = 'lm', **model_fields):
  """A run folder (step 3) of a small (by default Llama-shaped) model whose parameters are
  perturbed away from init, so that greedy decoding is no constant."""
  cfg = ModelConfig(**{**dict(vocab_size=vocab_size, d_model=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=64),
                       **model_fields})
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(3)
  model = nnx.merge(graphdef, jax.tree.map(
      lambda x: x + jnp.asarray(0.5 * rng.normal(size=x.shape), x.dtype), state))
  workdir = tmp_path / 'run'
  ckpt = checkpoint.Checkpointer(workdir, checkpoint.CheckpointConfig(), 10)
  ckpt.save(3, step.TrainState(step=jnp.array(3), params=nnx.state(model, nnx.Param),
                               opt_state=None, rng=None), {'iterator': None}, {})
  ckpt.close()
  config = {'model': dataclasses.asdict(cfg),
            'data': {'tokenizer': tokenizer, 'objective': objective}}
  (workdir / 'config.json').write_text(json.dumps(config))
  return workdir, model


def _check_generation(tmp_path, workdir, model, tokenizer, capsys, same_text=True):
  """Exports `workdir` by the command line; then transformers (tokenizer and model from the
  folder alone) and llmjax continue each prompt with the same tokens, and llmjax's
  --workdir and --hf_dir print the same text (`same_text`)."""
  out = tmp_path / 'hf'
  assert convert_main(['llmjax-to-hf', '--workdir', str(workdir), '--out', str(out)]) == 0
  capsys.readouterr()
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  eot = tokenizer.eot_id
  assert hf_tok.bos_token_id == hf_tok.eos_token_id == hf_model.config.eos_token_id == eot
  for text in ['def ', 'héllo', 'a b']:
    ids = hf_tok(text, return_tensors='pt').input_ids
    assert ids[0].tolist() == [eot, *tokenizer.encode(text)]  # llmjax's document start
    with torch.no_grad():
      expected = hf_model.generate(ids, do_sample=False,
                                   max_new_tokens=NEW_TOKENS)[0, ids.shape[1]:]
    ours = generate.generate(model, [ids[0].numpy()], max_new_tokens=NEW_TOKENS,
                             temperature=0.0, stop_tokens=[eot]).tokens[0]
    np.testing.assert_array_equal(ours, expected.numpy()[:len(ours)], err_msg=text)
    printed = []
    for source in (['--workdir', str(workdir)], ['--hf_dir', str(out)]):
      assert generate_cli.main([*source, '--prompt', text, '--temperature', '0',
                                '--max_new_tokens', str(NEW_TOKENS)]) == 0
      printed.append(capsys.readouterr().out)
    if same_text:
      assert printed[0] == printed[1], text
  return out


def test_the_byte_tokenizer_exports_as_a_tokenizer_json(tmp_path):
  converted = hf_tokenizer.byte_level()
  for text in TEXTS:  # bytes are their own ids, whatever the text
    assert converted.encode(text, add_special_tokens=False).ids == list(text.encode())
    assert converted.decode(list(text.encode())) == text
  cut = list('✓'.encode())[:2] + [ord('a')]  # an invalid sequence decodes as llmjax's does
  assert converted.decode(cut) == ByteTokenizer().decode(cut) == '\ufffda'
  tokenizer, eot = hf_tokenizer.of_run(ByteTokenizer())
  hf_tokenizer.write(tmp_path, tokenizer, eot, max_len=64)
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert hf_tok('hé').input_ids == [256, 104, 195, 169]  # end-of-text first, as llmjax's docs
  assert hf_tok.decode([256, 104, 195, 169], skip_special_tokens=True) == 'hé'
  # Read back as a tokenizer.json run: the same ids, one byte per byte token (bits per byte).
  reread = HuggingFaceTokenizer(str(tmp_path))
  assert reread.eot_id == 256 and reread.vocab_size == 257 and reread.start_ids() == [256]
  assert (reread.token_bytes == np.array([1] * 256 + [0])).all()


@pytest.mark.slow
def test_a_byte_level_run_exports_a_folder_that_stands_alone(tmp_path, capsys):
  workdir, model = _run(tmp_path, 257, 'byte')
  _check_generation(tmp_path, workdir, model, ByteTokenizer(), capsys)


def test_a_masked_lm_run_exports_its_mask_token_for_fill_mask(tmp_path, capsys):
  bert = dict(arch='encoder', norm='layernorm', norm_position='post', embed_norm=True,
              positions='learned', mlp='gelu_exact', use_bias=True, tie_embeddings=True,
              num_kv_heads=4)
  workdir, model = _run(tmp_path, 258, 'byte', objective='mlm', **bert)
  out = tmp_path / 'hf'
  assert convert_main(['llmjax-to-hf', '--workdir', str(workdir), '--out', str(out)]) == 0
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  assert (hf_tok.mask_token, hf_tok.mask_token_id) == ('[MASK]', 257)  # llmjax's mask id
  ids = hf_tok('ab[MASK]d').input_ids
  assert ids == [256, 97, 98, 257, 100]
  # transformers' fill-mask, from the folder alone, predicts what the llmjax model does.
  fill = transformers.pipeline('fill-mask', model=str(out), top_k=3)
  logits = np.asarray(model(jnp.asarray([ids])))[0, 3]
  assert [guess['token'] for guess in fill('ab[MASK]d')] == list(np.argsort(-logits)[:3])
  with pytest.raises(ValueError, match='the mask token is id 300, but the tokenizer has 257'):
    hf_tokenizer.of_run(ByteTokenizer(), mask_id=300)


@pytest.fixture(scope='module')
def sentencepiece_model(tmp_path_factory):
  docs = [(f'def f{i}(x):\n    return x * {i} + "text {i}"\n' * 3).encode()
          for i in range(60)]
  return train_sentencepiece(docs, str(tmp_path_factory.mktemp('spm') / 'sp'), vocab_size=320)


def test_sentencepiece_exports_as_a_tokenizer_json(sentencepiece_model):
  sp = SentencePieceTokenizer(str(sentencepiece_model))
  converted = hf_tokenizer.sentencepiece(sentencepiece_model)
  for text in TEXTS:  # the converted tokenizer encodes as SentencePiece does
    assert converted.encode(text, add_special_tokens=False).ids == sp.encode(text).tolist(), text
    assert converted.decode(sp.encode(text).tolist()) == sp.decode(sp.encode(text)), text


@pytest.mark.slow
def test_a_sentencepiece_run_exports_a_folder_that_stands_alone(tmp_path, capsys,
                                                                sentencepiece_model):
  sp = SentencePieceTokenizer(str(sentencepiece_model))
  workdir, model = _run(tmp_path, sp.vocab_size, f'sentencepiece:{sentencepiece_model}')
  # Where the random model emits a broken UTF-8 sequence, tokenizers' ByteFallback decoder
  # prints one U+FFFD per byte of the run of byte tokens (which may hold a prompt character
  # with no piece of its own) and SentencePiece fewer: the same tokens, other text.
  _check_generation(tmp_path, workdir, model, sp, capsys, same_text=False)


def test_a_folder_without_a_tokenizer_is_named(tmp_path, capsys):
  workdir, _ = _run(tmp_path, 257, 'byte')
  out = tmp_path / 'hf'
  assert convert_main(['llmjax-to-hf', '--workdir', str(workdir), '--out', str(out)]) == 0
  (out / 'tokenizer.json').unlink()
  assert generate_cli.main(['--hf_dir', str(out), '--prompt', 'x']) == 2
  assert 'holds no tokenizer' in capsys.readouterr().err


def test_a_run_trained_on_a_tokenizer_json_exports_it_starting_with_end_of_text(tmp_path):
  """A tokenizer.json llmjax trained with gets llmjax's document start; an imported folder's
  tokenizer is copied as it came (tests/test_convert.py)."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {f't{i}': i for i in range(99)} | {'<|endoftext|>': 99}
  word_level = Tokenizer(models.WordLevel(vocab, unk_token='t0'))
  word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  word_level.add_special_tokens(['<|endoftext|>'])
  word_level.save(str(tmp_path / 'words.json'))
  workdir, _ = _run(tmp_path, 100, f'hf:{tmp_path / "words.json"}')
  out = tmp_path / 'hf'
  assert convert_main(['llmjax-to-hf', '--workdir', str(workdir), '--out', str(out)]) == 0
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  assert hf_tok('t5 t7').input_ids == [99, 5, 7]
  assert hf_tok.eos_token_id == hf_tok.bos_token_id == 99
