"""Tokenizers: round trips, end-of-text, and the byte counts behind bits per byte."""

import json
import subprocess
import sys

import numpy as np
import pytest

from llmjax.data import tokenizers

TEXT = 'def f(x):\n    return x ** 2  # ünïcödé, 数学\n'


def _check(tok):
  ids = tok.encode(TEXT)
  assert tok.decode(ids) == TEXT
  assert int(tok.token_bytes[ids].sum()) == len(TEXT.encode('utf-8'))
  assert tok.token_bytes[tok.eot_id] == 0 and 0 <= tok.eot_id < tok.vocab_size
  assert ids.max() < tok.vocab_size


def test_byte_tokenizer():
  tok = tokenizers.load('byte')
  _check(tok)
  assert tok.vocab_size == 257 and tok.encode('A').tolist() == [65]


def test_sentencepiece_trained_by_the_command(tmp_path):
  corpus = tmp_path / 'docs'
  corpus.mkdir()
  rng = np.random.default_rng(0)
  words = ['def', 'return', 'class', 'self', 'import', 'for', 'in', 'if', 'else', 'x', 'y']
  for i in range(20):
    (corpus / f'{i}.txt').write_text(' '.join(rng.choice(words, 200)) + '\n')
  out = tmp_path / 'sp'
  proc = subprocess.run(
      [sys.executable, '-m', 'llmjax.tokenizer', 'train', '--source', f'files:{corpus}/*.txt',
       '--vocab_size', '300', '--out', str(out), '--data_dir', str(tmp_path / 'cache')],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  tok = tokenizers.load(f'sentencepiece:{out}.model')
  _check(tok)
  assert tok.vocab_size == 300
  assert len(tok.encode('def return class')) < len('def return class')  # it merged something


def test_hugging_face_tokenizer_json(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=['<|endoftext|>'],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([TEXT * 3, 'import numpy as np\n' * 5], trainer)
  tok.save(str(tmp_path / 'tokenizer.json'))
  loaded = tokenizers.load(f'hf:{tmp_path}')
  _check(loaded)
  assert loaded.eot_id == tok.token_to_id('<|endoftext|>')
  assert json.loads((tmp_path / 'tokenizer.json').read_text())['model']['type'] == 'BPE'


@pytest.mark.parametrize('spec, message', [
    ('wordpiece', 'unknown tokenizer'),
    ('sentencepiece:', 'unknown tokenizer'),
    ('hf:/no/such/folder', 'tokenizer file not found'),
])
def test_bad_tokenizer_specs(spec, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    tokenizers.load(spec)
