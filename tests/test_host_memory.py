"""Huge pages for XLA:CPU's temporaries (robust_prompt/host_memory.py): restart, effect, hint."""

import os
import subprocess
import sys
import textwrap

import pytest

from robust_prompt import host_memory

GLIBC = ("glibc", "2.36")


def test_a_restart_asks_for_huge_pages_only_where_that_changes_anything():
  env = host_memory.huge_page_environment({"HOME": "/h"}, "madvise", GLIBC)
  assert env == {"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = host_memory.huge_page_environment(
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC
  )
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  for environ, mode, libc in [
    ({}, "always", GLIBC),  # every region gets huge pages already
    ({}, "never", GLIBC),  # none can
    ({}, None, GLIBC),  # no THP (not Linux)
    ({}, "madvise", ("glibc", "2.34")),  # before glibc.malloc.hugetlb
    ({}, "madvise", ("", "")),  # musl and others
    ({"ROBUST_PROMPT_MALLOC": "system"}, "madvise", GLIBC),  # turned off
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC),  # the user's choice wins
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "madvise", GLIBC),  # after the restart
  ]:
    assert host_memory.huge_page_environment(environ, mode, libc) is None, (environ, mode, libc)
  with pytest.raises(ValueError, match=r"\$ROBUST_PROMPT_MALLOC='jemalloc': expected 'huge_pages'"):
    host_memory.huge_page_environment({"ROBUST_PROMPT_MALLOC": "jemalloc"}, "madvise", GLIBC)


def test_huge_pages_asked_reads_the_tunable():
  assert host_memory.huge_pages_asked({"GLIBC_TUNABLES": "a=1:glibc.malloc.hugetlb=1"})
  assert not host_memory.huge_pages_asked({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert not host_memory.huge_pages_asked({})


# The program restarts itself (the same process id), then a worker thread allocates, touches and
# frees 300 MB twice, as XLA:CPU does with a step's temporaries, and prints the page faults of
# the second round.
_RESTART_THEN_TWO_ROUNDS = textwrap.dedent(
  """
  import ctypes, os, resource, threading
  print("start", os.getpid(), flush=True)
  from robust_prompt import host_memory
  host_memory.reexec_with_huge_pages()
  print("asked", host_memory.huge_pages_asked())
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = (ctypes.c_void_p,)
  size = 300 << 20
  faults = []
  def rounds():
    for _ in range(2):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      p = libc.malloc(size)
      ctypes.memset(p, 1, size)
      libc.free(p)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  t = threading.Thread(target=rounds)
  t.start()
  t.join()
  print("faults", faults[1])
  """
)


def _run(malloc_env: str) -> list[str]:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["ROBUST_PROMPT_MALLOC"] = malloc_env
  return subprocess.run(
    [sys.executable, "-c", _RESTART_THEN_TWO_ROUNDS],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.splitlines()


@pytest.mark.skipif(
  host_memory.huge_page_environment({}, host_memory.thp_mode(), __import__("platform").libc_ver())
  is None,
  reason="needs Linux with glibc >= 2.35 and transparent huge pages in mode 'madvise'",
)
def test_the_restarted_program_maps_its_temporaries_in_huge_pages():
  # 300 MB is 76,800 pages of 4 KB, or 150 of 2 MB.
  start, again, asked, faults = _run("huge_pages")
  assert start == again and start.startswith("start ")  # restarted once, same process id
  assert asked == "asked True" and int(faults.split()[1]) < 10_000
  start, asked, faults = _run("system")
  assert asked == "asked False" and int(faults.split()[1]) > 50_000


@pytest.mark.parametrize(
  "text, mode",
  [
    ("always [madvise] never\n", "madvise"),
    ("[always] madvise never\n", "always"),
    ("always madvise [never]\n", "never"),
    ("garbage\n", None),
  ],
)
def test_thp_mode_reads_the_bracketed_choice(tmp_path, text, mode):
  path = tmp_path / "enabled"
  path.write_text(text)
  assert host_memory.thp_mode(path) == mode


def test_thp_hint_only_for_cpu_runs_whose_heap_gets_no_huge_pages(tmp_path, monkeypatch):
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.setenv("ROBUST_PROMPT_MALLOC", "system")
  path = tmp_path / "enabled"
  assert host_memory.thp_mode(tmp_path / "missing") is None
  assert host_memory.thp_hint("cpu", tmp_path / "missing") is None  # not Linux: nothing to say
  path.write_text("always [madvise] never\n")
  hint = host_memory.thp_hint("cpu", path)
  assert "'madvise'" in hint and f"sudo tee {path}" in hint
  assert "unset $ROBUST_PROMPT_MALLOC" in hint
  assert host_memory.thp_hint("gpu", path) is None  # device memory: not these pages
  monkeypatch.delenv("ROBUST_PROMPT_MALLOC")  # madvise, not asked: a C library that cannot
  assert "unset" not in host_memory.thp_hint("cpu", path)
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  assert host_memory.thp_hint("cpu", path) is None  # asked: nothing to gain
  path.write_text("always madvise [never]\n")
  assert "set them to 'always'" in host_memory.thp_hint("cpu", path)
  path.write_text("[always] madvise never\n")
  assert host_memory.thp_hint("cpu", path) is None
