"""The process's memory allocator: tcmalloc where it is installed, chosen at the entry point.

On CPU, glibc's malloc serves XLA's large temporaries with mmap and returns them to the
kernel when freed, so every train step faults them back in page by page (a large share of
a CPU step is then system time). tcmalloc keeps freed memory for reuse. An allocator must be
in place before the process starts, so `ensure()` re-executes the entry point once with
LD_PRELOAD set; where tcmalloc is absent it falls back to glibc with transparent huge pages
for malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1: fewer, larger faults), which needs the
same re-exec and is ignored by a glibc older than 2.35.

LLMJAX_ALLOCATOR chooses: auto (default: tcmalloc, else hugetlb) | tcmalloc | hugetlb |
system (the process as started, nothing set). Install tcmalloc with
`apt-get install libtcmalloc-minimal4` (Debian/Ubuntu) or `conda install gperftools`.
"""

import glob
import os
import sys

CHOICE_VAR = 'LLMJAX_ALLOCATOR'
CHOICES = ('auto', 'tcmalloc', 'hugetlb', 'system')
# Set in the re-executed process: it never re-executes again, whatever it finds.
DONE_VAR = 'LLMJAX_ALLOCATOR_SET'
HUGETLB_TUNABLE = 'glibc.malloc.hugetlb=1'
TCMALLOC_NAMES = ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4')
LIBRARY_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64',
                '/usr/lib', '/usr/local/lib')


def find_tcmalloc(dirs=LIBRARY_DIRS) -> str | None:
  """Path of an installed tcmalloc shared library, if any (also in an active conda env)."""
  prefix = os.environ.get('CONDA_PREFIX')
  for folder in ([os.path.join(prefix, 'lib')] if prefix else []) + list(dirs):
    for name in TCMALLOC_NAMES:
      found = glob.glob(os.path.join(folder, name))
      if found:
        return found[0]
  return None


def active(maps_path: str = '/proc/self/maps') -> str:
  """The allocator this process runs with: tcmalloc, hugetlb or system."""
  try:
    with open(maps_path) as f:
      if 'tcmalloc' in f.read():
        return 'tcmalloc'
  except OSError:  # not Linux: nothing to inspect
    pass
  return 'hugetlb' if HUGETLB_TUNABLE in os.environ.get('GLIBC_TUNABLES', '') else 'system'


def plan(environ, tcmalloc_path: str | None) -> tuple[str, dict[str, str]]:
  """(the allocator to use, the environment variables that give it) for the process
  environment `environ`; no variables: run as is."""
  choice = environ.get(CHOICE_VAR, 'auto') or 'auto'
  if choice not in CHOICES:
    raise ValueError(f'{CHOICE_VAR}={choice!r}: expected one of {", ".join(CHOICES)}')
  if choice == 'system':
    return 'system', {}
  if choice == 'tcmalloc' and not tcmalloc_path:
    raise ValueError(f'{CHOICE_VAR}=tcmalloc, but no {" or ".join(TCMALLOC_NAMES)} is installed '
                     f'in {", ".join(LIBRARY_DIRS)} or $CONDA_PREFIX/lib')
  if choice in ('auto', 'tcmalloc') and tcmalloc_path:
    preload = environ.get('LD_PRELOAD', '')
    if 'tcmalloc' in preload:
      return 'tcmalloc', {}
    # Large-allocation reports would print a line for every big XLA buffer.
    return 'tcmalloc', {'LD_PRELOAD': ' '.join(filter(None, [tcmalloc_path, preload])),
                        'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD': str(1 << 40)}
  tunables = environ.get('GLIBC_TUNABLES', '')
  if HUGETLB_TUNABLE in tunables:
    return 'hugetlb', {}
  return 'hugetlb', {'GLIBC_TUNABLES': ':'.join(filter(None, [tunables, HUGETLB_TUNABLE]))}


def ensure() -> None:
  """Re-executes this entry point (same pid, same argv) with the planned allocator unless
  it is in place; then prints one line naming the allocator in use. Call it first thing in
  `if __name__ == '__main__'`, before JAX is imported, so the re-exec costs little."""
  try:
    wanted, changes = plan(os.environ, find_tcmalloc())
  except ValueError as e:
    print(f'llmjax: {e}', file=sys.stderr)
    sys.exit(2)
  if changes and DONE_VAR not in os.environ:
    os.environ.update(changes, **{DONE_VAR: wanted})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
  using = active()
  note = '' if using == wanted else f', though {wanted} was wanted'
  print(f'llmjax: memory allocator {using}{note} ({CHOICE_VAR}='
        f'{os.environ.get(CHOICE_VAR) or "auto"}; see llmjax/allocator.py)', file=sys.stderr,
        flush=True)
