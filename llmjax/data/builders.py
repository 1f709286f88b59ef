"""TFDS builders that turn local text into ArrayRecord datasets, cached by content.

`pystdlib` and `files:GLOB` sources are written once with a
`GeneratorBasedBuilder` (ArrayRecord, random access, no TensorFlow needed) into
`data_dir/<name>/<fingerprint>/`: changed inputs get a new fingerprint and a new
build; unchanged ones are read back. TFDS writes into a temporary folder and
renames it when complete, so a crashed build is never read; leftovers of one
are removed before the next build.
"""

import hashlib
import json
import pathlib
import shutil

import tensorflow_datasets as tfds

from llmjax.data import pystdlib

TEXT = 'text'


class LocalText(tfds.core.GeneratorBasedBuilder):
  """Documents given as a list of (key, text) per split."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, name: str, splits: dict[str, list[tuple[str, bytes]]], **kwargs):
    self.name = name  # TFDS uses the builder name for folder and file names
    self._splits = splits
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self,
                                 features=tfds.features.FeaturesDict({TEXT: tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(docs) for split, docs in self._splits.items()}

  def _generate_examples(self, docs):
    for key, text in docs:
      yield key, {TEXT: text}


CHECKSUMS = 'llmjax_checksums.json'


def build(name: str, fingerprint: str, data_dir: pathlib.Path, load_splits) -> dict:
  """ArrayRecord data sources per split, built on first use by `load_splits()`.

  After a build the SHA-256 of every file is recorded; a cache whose files no
  longer match (truncated, altered) is reported, deleted and rebuilt.
  """
  root = pathlib.Path(data_dir) / name / fingerprint
  for leftover in root.glob(f'{name}/incomplete.*'):
    shutil.rmtree(leftover, ignore_errors=True)  # a build that died half-way
  builder = LocalText(name=name, splits={}, data_dir=str(root), file_format='array_record')
  if builder.is_prepared() and not _checksums_match(root):
    print(f'llmjax: data cache {root} is corrupt or incomplete; rebuilding it')
    shutil.rmtree(root)
    builder = LocalText(name=name, splits={}, data_dir=str(root), file_format='array_record')
  if not builder.is_prepared():
    builder = LocalText(name=name, splits=load_splits(), data_dir=str(root),
                        file_format='array_record')
    builder.download_and_prepare()
    (root / CHECKSUMS).write_text(json.dumps(_checksums(root), indent=1))
  return builder.as_data_source()


def _checksums(root: pathlib.Path) -> dict[str, str]:
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file() and p.name != CHECKSUMS}


def _checksums_match(root: pathlib.Path) -> bool:
  recorded = root / CHECKSUMS
  return recorded.exists() and json.loads(recorded.read_text()) == _checksums(root)


def pystdlib_sources(data_dir: pathlib.Path, eval_fraction: float, split_seed: int):
  """(train, eval) sources of the standard library, and the dataset's fingerprint."""
  files = pystdlib.source_files()
  fingerprint = f'{pystdlib.fingerprint(files)}-eval{eval_fraction}-seed{split_seed}'

  def load_splits():
    train, held_out = pystdlib.split(files, eval_fraction, split_seed)
    root = pystdlib.stdlib_root()
    doc = lambda p: (p.relative_to(root).as_posix(), p.read_bytes())
    return {'train': [doc(p) for p in train], 'eval': [doc(p) for p in held_out]}

  sources = build('pystdlib', fingerprint, data_dir, load_splits)
  return sources['train'], sources['eval'], fingerprint


def text_files_sources(pattern: str, data_dir: pathlib.Path, text_key: str, eval_fraction: float,
                       split_seed: int):
  """(train, eval) sources of the user's .txt / .jsonl files, and their fingerprint.

  A .txt file is one document; each line of a .jsonl file is one, its text under
  `text_key`. Held out: a seeded random sample of whole documents.
  """
  paths = sorted(pathlib.Path().glob(pattern) if not pattern.startswith('/')
                 else pathlib.Path('/').glob(pattern.lstrip('/')))
  paths = [p for p in paths if p.is_file()]
  if not paths:
    raise FileNotFoundError(f'files:{pattern} matches no file')
  digest = hashlib.sha256(f'{text_key}|{eval_fraction}|{split_seed}'.encode())
  for p in paths:
    digest.update(str(p.resolve()).encode())
    digest.update(p.read_bytes())
  fingerprint = f'files-{digest.hexdigest()[:16]}'

  def load_splits():
    docs = []
    for p in paths:
      if p.suffix == '.jsonl':
        docs += [(f'{p}:{i}', _field(p, i, line, text_key))
                 for i, line in enumerate(p.read_text(encoding='utf-8').splitlines()) if line.strip()]
      else:
        docs.append((str(p), p.read_bytes()))
    if len(docs) < 2:
      raise ValueError(f'files:{pattern} holds {len(docs)} document(s); need 2 or more '
                       f'to hold some out for evaluation')
    return pystdlib.split_documents(docs, eval_fraction, split_seed)

  sources = build('text_files', fingerprint, data_dir, load_splits)
  return sources['train'], sources['eval'], fingerprint


def _field(path: pathlib.Path, index: int, line: str, key: str) -> str:
  record = json.loads(line)
  if key not in record:
    raise KeyError(f'{path} line {index + 1} has no field {key!r} (data.text_key); '
                   f'fields: {", ".join(record)}')
  return record[key]
