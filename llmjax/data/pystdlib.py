"""The built-in corpus: the running interpreter's standard-library `.py` sources.

Present on every machine with no download. The held-out split is a seeded random
sample of whole files (about `eval_fraction` of the bytes), never chosen by content.
"""

import functools
import hashlib
import pathlib
import sys
import sysconfig

import numpy as np


def stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()['stdlib'])


def source_files() -> list[pathlib.Path]:
  """Every .py file of the standard library (not site-packages), in a fixed order."""
  return list(_source_files())


@functools.lru_cache(maxsize=1)
def _source_files() -> tuple[pathlib.Path, ...]:
  # Walking the tree takes about a second; the installed stdlib does not change under a process.
  root = stdlib_root()
  files = [p for p in root.rglob('*.py')
           if 'site-packages' not in p.parts and 'dist-packages' not in p.parts]
  return tuple(sorted(files, key=lambda p: p.relative_to(root).as_posix()))


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


# Natural domains of the corpus, by file path alone (never by content, so a file's
# domain cannot depend on the split or on what a model does with it).
DOMAINS = ('code', 'tests', 'text')
TEST_FOLDERS = ('test', 'tests', 'idle_test')
TEXT_PACKAGES = ('pydoc_data', 'encodings')  # documentation text and codec tables


def domain(relative_path: str) -> str:
  """'tests': under a test/tests/idle_test folder or named test_*.py / *_test.py;
  'text': under pydoc_data/ (the documentation's text) or encodings/ (codec tables);
  'code': every other file (library modules)."""
  *folders, name = relative_path.split('/')
  if (set(folders) & set(TEST_FOLDERS) or name.startswith('test_') or name == 'test.py'
      or name.endswith('_test.py')):
    return 'tests'
  if folders and folders[0] in TEXT_PACKAGES:
    return 'text'
  return 'code'


def held_out_files(eval_fraction: float, seed: int, subset: str = '') -> list[pathlib.Path]:
  """The held-out files of the split a run with (eval_fraction, seed) trains beside,
  optionally only those of one domain (DOMAINS) or one top-level package."""
  root = stdlib_root()
  held_out = list(_held_out(eval_fraction, seed))
  if not subset:
    return held_out
  relative = [p.relative_to(root).as_posix() for p in held_out]
  if subset in DOMAINS:
    return [p for p, rel in zip(held_out, relative) if domain(rel) == subset]
  return [p for p, rel in zip(held_out, relative) if rel.split('/')[0] in (subset, f'{subset}.py')]


@functools.lru_cache(maxsize=8)
def _held_out(eval_fraction: float, seed: int) -> tuple[pathlib.Path, ...]:
  return tuple(split(source_files(), eval_fraction, seed)[1])
