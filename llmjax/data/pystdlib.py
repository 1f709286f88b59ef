"""The built-in corpus: the running interpreter's standard-library `.py` sources.

Present on every machine with no download. The held-out split is a seeded random
sample of whole files (about `eval_fraction` of the bytes), never chosen by content.
"""

import hashlib
import pathlib
import sys
import sysconfig

import numpy as np


def stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()['stdlib'])


def source_files() -> list[pathlib.Path]:
  """Every .py file of the standard library (not site-packages), in a fixed order."""
  root = stdlib_root()
  files = [p for p in root.rglob('*.py')
           if 'site-packages' not in p.parts and 'dist-packages' not in p.parts]
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def held_out_indices(sizes, eval_fraction: float, seed: int) -> set[int]:
  """Documents taken in a seeded random order until they hold `eval_fraction` of the
  bytes (at least one): chosen by chance, never by content."""
  sizes = np.asarray(sizes)
  order = np.random.default_rng(seed).permutation(len(sizes))
  taken = np.cumsum(sizes[order]) <= eval_fraction * sizes.sum()
  taken[0] = True
  return set(order[taken].tolist())


def split(files: list[pathlib.Path], eval_fraction: float,
          seed: int) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """(train, eval) lists of whole files."""
  held_out = held_out_indices([p.stat().st_size for p in files], eval_fraction, seed)
  return ([p for i, p in enumerate(files) if i not in held_out],
          [p for i, p in enumerate(files) if i in held_out])


def split_documents(docs: list[tuple[str, bytes | str]], eval_fraction: float,
                    seed: int) -> dict[str, list]:
  """{'train': [...], 'eval': [...]} of (key, text) documents, split like `split`."""
  sizes = [len(text.encode() if isinstance(text, str) else text) for _, text in docs]
  held_out = held_out_indices(sizes, eval_fraction, seed)
  return {'train': [d for i, d in enumerate(docs) if i not in held_out],
          'eval': [d for i, d in enumerate(docs) if i in held_out]}


def fingerprint(files: list[pathlib.Path]) -> str:
  """Names the exact data: Python version plus a hash of every file's bytes."""
  h = hashlib.sha256(sys.version.encode())
  for p in files:
    h.update(p.name.encode())
    h.update(p.read_bytes())
  return f'pystdlib-{sys.version_info.major}.{sys.version_info.minor}-{h.hexdigest()[:12]}'
