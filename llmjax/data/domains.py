"""Named held-out evaluation sets (`eval.domains`): each a corpus whose held-out split is
evaluated beside the run's own.

An entry is `NAME=SOURCE`, SOURCE any source the pipeline reads (`files:GLOB`,
`tfds:...`, `synthetic:...`) or a subset of the standard library's held-out files,
`pystdlib:code|tests|text|PACKAGE` (pystdlib.domain: a rule on the file path). A bare
name from NATURAL stands for its source. Only held-out material is evaluated: a
pystdlib subset filters the files the run's own split (data.eval_fraction,
data.split_seed) holds out; other sources give their eval split, held out by the same
rules as training data.
"""

import dataclasses
import pathlib
import re

from llmjax.data import pystdlib, synthetic, tokenizers
from llmjax.data.sources import KINDS, Corpus, DataError, open_corpus

NATURAL = {f'stdlib_{d}': f'pystdlib:{d}' for d in pystdlib.DOMAINS}
_NAME = re.compile(r'^[a-z][a-z0-9_]*$')


def parse(entries) -> dict[str, str]:
  """('stdlib_tests', 'docs=files:docs/*.txt') -> {name: source}; ValueError names the
  entry at fault."""
  domains = {}
  for entry in entries:
    name, source = _entry(entry)
    if name in domains:
      raise ValueError(f'eval.domains: domain {name!r} is named twice')
    domains[name] = source
  return domains


def _entry(entry) -> tuple[str, str]:
  if not isinstance(entry, str):
    raise ValueError(f'eval.domains: entries are strings NAME=SOURCE, got {entry!r}')
  name, sep, source = entry.partition('=')
  if not sep:
    if entry not in NATURAL:
      raise ValueError(f'eval.domains: unknown domain {entry!r}; name one of '
                       f'{", ".join(NATURAL)} or write NAME=SOURCE')
    source = NATURAL[entry]
  if not _NAME.match(name):
    raise ValueError(f'eval.domains: {entry!r}: a domain name is lower-case letters, digits '
                     f'and _, starting with a letter')
  return name, source


def problems(entries, data_cfg) -> list[str]:
  """Every problem of `eval.domains` for a run on `data_cfg` that can be found without
  opening a dataset (cheap: file names and sizes at most)."""
  found, names = [], set()
  for entry in entries:
    try:
      name, source = _entry(entry)
    except ValueError as e:
      found.append(str(e))
      continue
    if name in names:
      found.append(f'eval.domains: domain {name!r} is named twice')
    names.add(name)
    problem = _source_problem(source, data_cfg)
    if problem:
      found.append(f'eval.domains: {name}={source}: {problem}')
  return found


def _source_problem(source: str, data_cfg) -> str | None:
  kind, _, arg = source.partition(':')
  if kind not in KINDS:
    return (f'unknown source kind {kind!r}; use pystdlib:SUBSET, files:GLOB, tfds:... or '
            f'synthetic:...')
  trains_synthetic = data_cfg.source.startswith('synthetic:')
  if (kind == 'synthetic') != trains_synthetic:
    return (f'the run trains on {data_cfg.source!r}, whose tokens mean something else; a domain '
            f'must use the same tokens (synthetic with synthetic, text with text)')
  if kind == 'synthetic':
    try:
      vocab, trained = synthetic.parse_spec(arg).vocab, synthetic.parse_spec(
          data_cfg.source.partition(':')[2]).vocab
    except ValueError as e:
      return str(e)
    if vocab != trained:
      return f'vocab={vocab}, but the run trains on vocab={trained} (its end-of-text id differs)'
  elif kind == 'pystdlib':
    return _pystdlib_problem(arg, data_cfg)
  elif not arg:
    return f'{kind}: needs an argument'
  elif kind == 'files' and not _matches_a_file(arg):
    return f'files:{arg} matches no file'
  return None


def _matches_a_file(pattern: str) -> bool:
  base = pathlib.Path('/') if pattern.startswith('/') else pathlib.Path()
  return any(p.is_file() for p in base.glob(pattern.lstrip('/')))


def _pystdlib_problem(subset: str, data_cfg) -> str | None:
  root = pystdlib.stdlib_root()
  if subset and subset not in pystdlib.DOMAINS and not (
      (root / subset).is_dir() or (root / f'{subset}.py').is_file()):
    return (f'unknown subset {subset!r}; use one of {", ".join(pystdlib.DOMAINS)} or a '
            f'top-level standard-library package')
  if not pystdlib.held_out_files(data_cfg.eval_fraction, data_cfg.split_seed, subset):
    return (f'no held-out file is in it at data.eval_fraction={data_cfg.eval_fraction}, '
            f'data.split_seed={data_cfg.split_seed}; raise eval_fraction or name another subset')
  return None


def open_domain(source: str, data_cfg) -> Corpus:
  """The corpus of one domain; only its `eval` split is meant to be read (for a pystdlib
  subset `train` is empty and `info['files']` lists the held-out files it holds)."""
  kind, _, subset = source.partition(':')
  if kind != 'pystdlib':
    corpus = open_corpus(dataclasses.replace(data_cfg, source=source))
    return dataclasses.replace(corpus, train=())
  files = pystdlib.held_out_files(data_cfg.eval_fraction, data_cfg.split_seed, subset)
  if not files:
    raise DataError(f'eval.domains: pystdlib:{subset} holds no held-out file')
  root = pystdlib.stdlib_root()
  return Corpus(train=(), eval=[p.read_bytes() for p in files],
                tokenizer=tokenizers.load(data_cfg.tokenizer),
                fingerprint=f'{pystdlib.fingerprint(files)}-{subset}',
                info={'files': [p.relative_to(root).as_posix() for p in files]})


def load(entries, data_cfg) -> dict[str, Corpus]:
  """{name: corpus} of every domain; DataError names the domain whose data is bad."""
  corpora = {}
  for name, source in parse(entries).items():
    try:
      corpora[name] = open_domain(source, data_cfg)
    except (ValueError, KeyError, OSError) as e:
      raise DataError(f'eval.domains: {name}={source}: {str(e).strip(chr(34))}') from None
    if len(corpora[name].eval) == 0:
      raise DataError(f'eval.domains: {name}={source}: the held-out split is empty')
  return corpora
