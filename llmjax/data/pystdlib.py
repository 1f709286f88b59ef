"""The built-in corpus: the running interpreter's standard-library `.py` sources.

Present on every machine with no download. The held-out split is a seeded random
sample of whole files (about `eval_fraction` of the bytes), never chosen by content.
"""

import hashlib
import pathlib
import sys
import sysconfig

import numpy as np


def source_files() -> list[pathlib.Path]:
  """Every .py file of the standard library (not site-packages), in a fixed order."""
  root = pathlib.Path(sysconfig.get_paths()['stdlib'])
  files = [p for p in root.rglob('*.py')
           if 'site-packages' not in p.parts and 'dist-packages' not in p.parts]
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def split(files: list[pathlib.Path], eval_fraction: float,
          seed: int) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """(train, eval): eval takes files in a seeded random order until it holds the fraction."""
  sizes = np.array([p.stat().st_size for p in files])
  order = np.random.default_rng(seed).permutation(len(files))
  target = eval_fraction * sizes.sum()
  taken = np.cumsum(sizes[order]) <= target
  taken[0] = taken[0] or eval_fraction > 0  # at least one file when asked for any
  eval_ids = set(order[taken].tolist())
  train = [p for i, p in enumerate(files) if i not in eval_ids]
  evals = [p for i, p in enumerate(files) if i in eval_ids]
  return train, evals


def fingerprint(files: list[pathlib.Path]) -> str:
  """Names the exact data: Python version plus a hash of every file's bytes."""
  h = hashlib.sha256(sys.version.encode())
  for p in files:
    h.update(p.name.encode())
    h.update(p.read_bytes())
  return f'pystdlib-{sys.version_info.major}.{sys.version_info.minor}-{h.hexdigest()[:12]}'
