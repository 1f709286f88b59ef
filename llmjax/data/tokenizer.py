"""Tokenizers. Byte-level for now: every byte is a token, so bits per byte is exact."""

import numpy as np


class ByteTokenizer:
  vocab_size = 256
  bytes_per_token = 1.0  # converts nats per token into bits per byte

  def encode(self, text: str | bytes) -> np.ndarray:
    data = text.encode('utf-8') if isinstance(text, str) else text
    return np.frombuffer(data, np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids).decode('utf-8', errors='replace')
