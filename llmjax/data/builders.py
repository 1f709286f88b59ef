"""TFDS builders that turn local text into ArrayRecord datasets, cached by content.

`pystdlib` and `files:GLOB` sources are written once with a
`GeneratorBasedBuilder` (ArrayRecord, random access, no TensorFlow needed) into
`data_dir/<name>/<fingerprint>/`: changed inputs get a new fingerprint and a new
build; unchanged ones are read back. A build writes into a folder of its own
and renames it into place when complete, so a crashed build is never read and
concurrent builders of the same cache are safe; leftovers of dead builds are
removed before the next one.
"""

import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import tempfile
import time

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
_BUILDING = '.incomplete-'  # a build in progress: data_dir/<name>/.<fingerprint>.incomplete-HOST-PID-RANDOM


def build(name: str, fingerprint: str, data_dir: pathlib.Path, load_splits) -> dict:
  """ArrayRecord data sources per split, built on first use by `load_splits()`.

  A build writes into a folder of its own beside the cache and renames it into
  place when complete (with the SHA-256 of every file), so concurrent first-time
  builders (the processes of a multi-host run, parallel sweep tasks sharing
  `data_dir`) never see each other's half-written files: the first rename wins and
  the others use its result. A cache whose files no longer match their checksums
  (truncated, altered) is reported, moved aside, deleted and rebuilt.
  """
  parent = pathlib.Path(data_dir) / name
  root = parent / fingerprint
  _remove_dead_builds(parent)
  if root.exists():
    if _is_prepared(root, name) and _checksums_match(root):
      return _open(name, root)
    print(f'llmjax: data cache {root} is corrupt or incomplete; rebuilding it')
    _discard(root)
  _build_into(name, root, load_splits)
  return _open(name, root)


def _is_prepared(root: pathlib.Path, name: str) -> bool:
  return (root / name / str(LocalText.VERSION) / 'dataset_info.json').is_file()


def _open(name: str, root: pathlib.Path) -> dict:
  builder = LocalText(name=name, splits={}, data_dir=str(root), file_format='array_record')
  return builder.as_data_source()


def _build_into(name: str, root: pathlib.Path, load_splits) -> None:
  """Builds in a private folder, then renames it to `root` unless another builder
  got there first (then its complete build is used and this one is deleted)."""
  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = root.parent / (f'.{root.name}{_BUILDING}{socket.gethostname()}-{os.getpid()}-'
                       f'{secrets.token_hex(4)}')
  try:
    with _tempdir_inside(tmp / '.tmp'):
      # TFDS looks up metadata of a not yet prepared builder in a tempfile.mkdtemp()
      # folder it never deletes; kept inside the build, it goes with it.
      builder = LocalText(name=name, splits=load_splits(), data_dir=str(tmp),
                          file_format='array_record')
      builder.download_and_prepare()
    (tmp / CHECKSUMS).write_text(json.dumps(_checksums(tmp), indent=1))
    try:
      os.rename(tmp, root)  # atomic; fails if another builder renamed first
    except OSError:
      if not (_is_prepared(root, name) and _checksums_match(root)):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _tempdir_inside(folder: pathlib.Path):
  created = [p for p in [folder, *folder.parents] if not p.exists()]
  folder.mkdir(parents=True)
  previous, tempfile.tempdir = tempfile.tempdir, str(folder)
  try:
    yield
  finally:
    tempfile.tempdir = previous
    shutil.rmtree(folder, ignore_errors=True)
    for parent in created[1:]:  # folders made only for it, if still empty
      try:
        parent.rmdir()
      except OSError:
        break


def tempdir_inside(data_dir: pathlib.Path | None):
  """A context in which tempfile's folders go to a private folder in `data_dir`,
  deleted at its end (TFDS makes mkdtemp() folders it never deletes)."""
  if data_dir is None:
    return contextlib.nullcontext()
  return _tempdir_inside(pathlib.Path(data_dir) / f'.tmp-{os.getpid()}-{secrets.token_hex(4)}')


def _discard(root: pathlib.Path) -> None:
  """Takes a bad cache out of use at once (a rename), then deletes it."""
  aside = root.parent / f'.{root.name}.discarded-{os.getpid()}-{secrets.token_hex(4)}'
  try:
    os.rename(root, aside)
  except FileNotFoundError:
    return  # another process discarded it first
  shutil.rmtree(aside, ignore_errors=True)


def _remove_dead_builds(parent: pathlib.Path) -> None:
  """Deletes the folders of builds that died half-way: this host's, whose process
  is gone, and anyone's older than a day."""
  for folder in parent.glob(f'.*{_BUILDING}*'):
    host, _, rest = folder.name.partition(_BUILDING)[2].rpartition('-')[0].rpartition('-')
    try:
      dead = (host == socket.gethostname() and not _alive(int(rest))) or (
          time.time() - folder.stat().st_mtime > 86400)
    except (ValueError, OSError):
      continue
    if dead:
      shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


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
    digest.update(_read(p))
  fingerprint = f'files-{digest.hexdigest()[:16]}'

  def load_splits():
    docs, empty = [], []
    for p in paths:
      data = _read(p)
      if p.suffix == '.jsonl':
        records = _jsonl_texts(p, data, text_key)
        docs += records
        if not records:
          empty.append(p)
      elif not data.strip():
        empty.append(p)  # no document (a package's empty __init__.py, say): left out
      else:
        docs.append((str(p), data))
    if len(docs) < 2:
      left_out = (f' ({len(empty)} empty file(s) left out: {empty[0]} is empty'
                  f'{" and more" if len(empty) > 1 else ""})' if empty else '')
      raise ValueError(f'files:{pattern} holds {len(docs)} document(s){left_out}; need 2 or '
                       f'more to hold some out for evaluation')
    return pystdlib.split_documents(docs, eval_fraction, split_seed)

  sources = build('text_files', fingerprint, data_dir, load_splits)
  return sources['train'], sources['eval'], fingerprint


def _read(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise ValueError(f'cannot read {path}: {e.strerror or e}') from None


def _jsonl_texts(path: pathlib.Path, data: bytes, key: str) -> list[tuple[str, str]]:
  """(key, text) of each record of a .jsonl file; errors name the file and line."""
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise ValueError(f'{path} line {line} is not UTF-8 (byte {e.start + 1} of the file)') from None
  docs = []
  for index, line in enumerate(text.splitlines()):  # index: part of the example key
    if line.strip():
      docs.append((f'{path}:{index}', _field(path, index, line, key)))
  return docs


def _field(path: pathlib.Path, index: int, line: str, key: str) -> str:
  where = f'{path} line {index + 1}'
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where} is not valid JSON: {e.msg} (column {e.colno})') from None
  if not isinstance(record, dict):
    raise ValueError(f'{where} is a JSON {type(record).__name__}, not an object with a '
                     f'{key!r} field')
  if key not in record:
    raise KeyError(f'{where} has no field {key!r} (data.text_key); '
                   f'fields: {", ".join(record)}')
  if not isinstance(record[key], str):
    raise ValueError(f'{where}: field {key!r} is {type(record[key]).__name__} '
                     f'{record[key]!r}, not a string (data.text_key)')
  return record[key]
