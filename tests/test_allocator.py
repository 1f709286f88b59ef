"""The allocator choice: what each setting plans, the log line, the opt-out, and that the
entry point re-executes exactly once (never in a loop), with or without tcmalloc."""

import os
import subprocess
import sys

import pytest

from llmjax import allocator

TCMALLOC = '/opt/lib/libtcmalloc_minimal.so.4'


@pytest.mark.parametrize('environ, tcmalloc, expected', [
    ({}, TCMALLOC, ('tcmalloc', {'LD_PRELOAD': TCMALLOC})),
    ({'LD_PRELOAD': 'libfoo.so'}, TCMALLOC, ('tcmalloc', {'LD_PRELOAD': f'{TCMALLOC} libfoo.so'})),
    ({'LD_PRELOAD': TCMALLOC}, TCMALLOC, ('tcmalloc', {})),  # already there: nothing to do
    ({}, None, ('hugetlb', {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})),  # the fallback
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, None,
     ('hugetlb', {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'})),
    ({'LLMJAX_ALLOCATOR': 'hugetlb'}, TCMALLOC,
     ('hugetlb', {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})),
    ({'LLMJAX_ALLOCATOR': 'system'}, TCMALLOC, ('system', {})),  # the opt-out
])
def test_plan(environ, tcmalloc, expected):
  wanted, changes = allocator.plan(environ, tcmalloc)
  changes.pop('TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD', None)
  assert (wanted, changes) == expected


def test_bad_choices_are_refused_by_name():
  with pytest.raises(ValueError, match=r"LLMJAX_ALLOCATOR='jemalloc': expected one of auto"):
    allocator.plan({'LLMJAX_ALLOCATOR': 'jemalloc'}, TCMALLOC)
  with pytest.raises(ValueError, match='LLMJAX_ALLOCATOR=tcmalloc, but no libtcmalloc'):
    allocator.plan({'LLMJAX_ALLOCATOR': 'tcmalloc'}, None)


def test_find_and_active(tmp_path, monkeypatch):
  monkeypatch.delenv('CONDA_PREFIX', raising=False)
  assert allocator.find_tcmalloc([str(tmp_path)]) is None
  (tmp_path / 'libtcmalloc_minimal.so.4').write_bytes(b'')
  assert allocator.find_tcmalloc([str(tmp_path)]) == str(tmp_path / 'libtcmalloc_minimal.so.4')
  maps = tmp_path / 'maps'
  maps.write_text('7f00 r-xp /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n')
  assert allocator.active(str(maps)) == 'tcmalloc'
  maps.write_text('7f00 r-xp /usr/lib/x86_64-linux-gnu/libc.so.6\n')
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
  assert allocator.active(str(maps)) == 'hugetlb'
  monkeypatch.delenv('GLIBC_TUNABLES')
  assert allocator.active(str(maps)) == 'system'


# Prints a line before ensure() (once per execution) and the allocator's variables after.
_SCRIPT = ('import os, sys; print("start", flush=True); from llmjax import allocator; '
           'allocator.ensure(); print("ran with", os.environ.get("GLIBC_TUNABLES"), '
           'os.environ.get("LD_PRELOAD"))')


def _run(**env):
  clean = {k: v for k, v in os.environ.items()
           if k not in ('LD_PRELOAD', 'GLIBC_TUNABLES', allocator.CHOICE_VAR, allocator.DONE_VAR)}
  return subprocess.run([sys.executable, '-c', _SCRIPT], env={**clean, **env},
                        capture_output=True, text=True, timeout=60, check=True)


def test_reexecutes_once_with_the_fallback():
  out = _run(LLMJAX_ALLOCATOR='hugetlb')
  assert out.stdout.splitlines() == ['start', 'start', 'ran with glibc.malloc.hugetlb=1 None']
  assert out.stderr.count('llmjax: memory allocator hugetlb (LLMJAX_ALLOCATOR=hugetlb') == 1


def test_opt_out_runs_as_started():
  out = _run(LLMJAX_ALLOCATOR='system')
  assert out.stdout.splitlines() == ['start', 'ran with None None']
  assert 'llmjax: memory allocator system (LLMJAX_ALLOCATOR=system' in out.stderr


def test_a_library_that_does_not_load_costs_one_reexec_not_a_loop(tmp_path):
  (tmp_path / 'lib').mkdir()
  (tmp_path / 'lib' / 'libtcmalloc_minimal.so.4').write_bytes(b'not a library')
  out = _run(LLMJAX_ALLOCATOR='tcmalloc', CONDA_PREFIX=str(tmp_path))
  assert out.stdout.splitlines()[:2] == ['start', 'start'] and len(out.stdout.splitlines()) == 3
  assert 'allocator system, though tcmalloc was wanted' in out.stderr


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason='tcmalloc is not installed')
def test_tcmalloc_is_loaded_by_default():
  out = _run(CONDA_PREFIX='')
  assert out.stdout.splitlines()[:2] == ['start', 'start']
  assert 'llmjax: memory allocator tcmalloc (LLMJAX_ALLOCATOR=auto' in out.stderr


def test_the_reexecuted_process_never_reexecutes_again(monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(os, 'execv', lambda path, argv: calls.append(argv))
  for name in ('GLIBC_TUNABLES', 'LD_PRELOAD', allocator.DONE_VAR):
    monkeypatch.setenv(name, '')  # restored (unset) after the test
    monkeypatch.delenv(name)
  monkeypatch.setenv(allocator.CHOICE_VAR, 'hugetlb')
  allocator.ensure()
  assert calls == [[sys.executable, *sys.orig_argv[1:]]]
  monkeypatch.delenv('GLIBC_TUNABLES')  # as if the tunable had not reached the new process
  allocator.ensure()
  assert len(calls) == 1
  assert ', though hugetlb was wanted' in capsys.readouterr().err
