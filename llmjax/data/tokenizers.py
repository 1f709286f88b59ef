"""Tokenizers: byte-level, SentencePiece, and Hugging Face `tokenizer.json`.

Every tokenizer has one end-of-text token (`eot_id`) that starts each document
(so the first real token is predicted too) and `token_bytes`: the UTF-8 length
of each token's text, so bits per byte counts the true bytes of what was
predicted whatever the tokenizer.

Specs: 'byte', 'sentencepiece:PATH.model', 'hf:PATH' (a tokenizer.json or a
folder holding one).
"""

import json
import pathlib
import re

import numpy as np


class ByteTokenizer:
  """Bytes 0..255 are tokens 0..255; 256 is end-of-text. No files."""

  vocab_size = 257
  eot_id = 256

  def __init__(self):
    self.token_bytes = np.array([1] * 256 + [0], np.int32)

  def encode(self, text: str | bytes) -> np.ndarray:
    data = text.encode('utf-8') if isinstance(text, str) else text
    return np.frombuffer(data, np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A SentencePiece model (train one with `python -m llmjax.tokenizer train`)."""

  def __init__(self, path: str):
    import sentencepiece as spm
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_file=path)
    self.vocab_size = self._sp.get_piece_size()
    self.eot_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else self._sp.unk_id()
    pieces = [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
    self.token_bytes = np.array(
        [0 if self._sp.is_control(i) or self._sp.is_unknown(i) else
         1 if self._sp.is_byte(i) else len(p.replace('\u2581', ' ').encode())
         for i, p in enumerate(pieces)], np.int32)

  def encode(self, text: str | bytes) -> np.ndarray:
    text = text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text
    return np.asarray(self._sp.encode(text), np.int32)

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids])


class HuggingFaceTokenizer:
  """A `tokenizer.json` (GPT-2's byte-level BPE, Llama's, ...) via the `tokenizers` library."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer
    file = pathlib.Path(path)
    file = file / 'tokenizer.json' if file.is_dir() else file
    self._tok = Tokenizer.from_file(str(file))
    self._byte_level = 'ByteLevel' in json.dumps(json.loads(self._tok.to_str()).get('decoder'))
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
    eot = next((t for t in ('<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>') if t in special),
               None)
    self.eot_id = self._tok.token_to_id(eot) if eot else 0
    self.token_bytes = np.array([0 if self._tok.id_to_token(i) in special else
                                 self._bytes_of(i) for i in range(self.vocab_size)], np.int32)

  def _bytes_of(self, i: int) -> int:
    # Alone, a token holding part of a character decodes to U+FFFD (3 bytes): a byte-level
    # token (GPT-2's alphabet, llmjax's exported byte tokenizer) is one byte per character,
    # a byte-fallback token ('<0xE2>', SentencePiece's) one byte.
    token = self._tok.id_to_token(i) or ''
    if self._byte_level:
      return len(token)
    if re.fullmatch(r'<0x[0-9A-F]{2}>', token):
      return 1
    return len(self._tok.decode([i], skip_special_tokens=False).encode())

  def encode(self, text: str | bytes) -> np.ndarray:
    text = text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def start_ids(self) -> list[int]:
    """The ids the tokenizer's post-processor puts before a text (a BOS token), which
    transformers adds to a prompt and a model of this tokenizer expects."""
    plain = self._tok.encode('a', add_special_tokens=False).ids
    marked = self._tok.encode('a', add_special_tokens=True).ids
    starts = [k for k in range(len(marked) - len(plain) + 1) if marked[k:k + len(plain)] == plain]
    return marked[:starts[0]] if starts else []

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def load(spec: str):
  """The tokenizer named by `spec`; errors name a missing file or an unknown kind."""
  kind, _, path = spec.partition(':')
  if kind == 'byte' and not path:
    return ByteTokenizer()
  if kind not in ('sentencepiece', 'hf') or not path:
    raise ValueError(f"unknown tokenizer {spec!r}; use 'byte', 'sentencepiece:PATH' or 'hf:PATH'")
  if not pathlib.Path(path).exists():
    raise FileNotFoundError(f'tokenizer file not found: {path}')
  if kind == 'hf' and pathlib.Path(path).is_dir() and not (pathlib.Path(path) /
                                                           'tokenizer.json').exists():
    raise FileNotFoundError(f'tokenizer file not found: {path}/tokenizer.json')
  try:
    return SentencePieceTokenizer(path) if kind == 'sentencepiece' else HuggingFaceTokenizer(path)
  except Exception as e:  # the libraries raise RuntimeError, OSError, their own types
    what = ('a SentencePiece model (train one with python -m llmjax.tokenizer train)'
            if kind == 'sentencepiece' else 'a Hugging Face tokenizer.json')
    detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    raise ValueError(f'data.tokenizer={spec!r}: {path} is not {what}: {detail}') from None
