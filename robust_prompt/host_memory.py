"""Host memory for XLA:CPU: huge pages for the C library's heap.

XLA:CPU allocates each execution's temporary buffer with `posix_memalign` from one of its worker
threads and frees it afterwards. A train step's buffer is large (T5-small, batch 8, input 148:
317 MB). glibc gives a worker thread its own arena, which cannot hold a chunk over 64 MB, so it
maps the buffer with `mmap` and unmaps it on free: every step the kernel faults in and zeroes
77,000 fresh 4 KB pages, about a sixth of the step's CPU time on a 2-core AMD EPYC (Zen 5).

Where transparent huge pages are in mode `madvise` (this VM's default), a region gets 2 MB pages
only when its owner asks. glibc asks for every region it maps or grows when started with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc 2.35 and later), and a tunable is read once, at
start-up. So `robust-prompt` restarts itself with it (`reexec_with_huge_pages`, the first thing
the executable does; same process id, arguments and streams). Measured there, alternating
processes (benchmarks/README.md, eighth session): faults per 10 train steps 776,000 ->
2,300-8,000, the step 1.17x faster (2.29 against 1.95 steps/s, 9 passes each), the demo 0.90x the
wall time, eval and score within noise of before, peak memory within 3%.
`ROBUST_PROMPT_MALLOC=system` turns it off.

Tried and not kept: every thread on glibc's main arena with freed memory kept (`mallopt`
M_ARENA_MAX 1, M_MMAP_MAX 0, M_TRIM_THRESHOLD -1, which needs no restart) ended the faults and
made steps up to 1.25x faster, but one arena shared by the compiling threads made XLA's
compilation 10-40% slower, so a first, short run got slower (score's first pass 7.8 against 9.7
examples/s).
"""

from __future__ import annotations

import os
import pathlib
import platform
import sys
from collections.abc import Mapping

THP_ENABLED = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
ENV_VAR = "ROBUST_PROMPT_MALLOC"  # "system": leave the C library's allocator as it is
TUNABLES_VAR = "GLIBC_TUNABLES"
HUGETLB = "glibc.malloc.hugetlb"
_MIN_GLIBC = (2, 35)  # the first with glibc.malloc.hugetlb


def thp_mode(path: pathlib.Path | None = None) -> str | None:
  """The bracketed mode of `path` (default `THP_ENABLED`: "always", "madvise", "never"), or None
  where there is none (not Linux, no THP support, unreadable)."""
  path = THP_ENABLED if path is None else path
  try:
    text = path.read_text()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1 : end] if 0 <= start < end else None


def _choice(environ: Mapping[str, str]) -> str:
  choice = environ.get(ENV_VAR, "").strip().lower() or "huge_pages"
  if choice not in ("huge_pages", "system"):
    raise ValueError(
      f"${ENV_VAR}={environ[ENV_VAR]!r}: expected 'huge_pages' (the default) or 'system'"
    )
  return choice


def _glibc_version(libc: tuple[str, str]) -> tuple[int, ...] | None:
  name, version = libc
  if name != "glibc":
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def huge_page_environment(
  environ: Mapping[str, str],
  mode: str | None,
  libc: tuple[str, str],
) -> dict[str, str] | None:
  """The environment to restart with so that glibc asks for huge pages, or None if no restart
  would change anything.

  Args:
    environ: the current environment.
    mode: the transparent-huge-pages mode (`thp_mode()`): only `madvise` needs asking.
    libc: `platform.libc_ver()` of this interpreter.

  Raises:
    ValueError: `ROBUST_PROMPT_MALLOC` holds something other than "huge_pages" or "system".
  """
  if _choice(environ) == "system" or mode != "madvise":
    return None
  version = _glibc_version(libc)
  if version is None or version < _MIN_GLIBC:
    return None
  if _hugetlb_setting(environ) is not None:
    return None  # already set, by us before the restart or by the user: theirs wins
  tunables = environ.get(TUNABLES_VAR, "")
  env = dict(environ)
  env[TUNABLES_VAR] = f"{tunables}:{HUGETLB}=1" if tunables else f"{HUGETLB}=1"
  return env


def reexec_with_huge_pages() -> None:
  """Restarts this program (same interpreter, arguments, process id) with glibc asking for huge
  pages, where that changes anything (`huge_page_environment`); otherwise returns.

  Call it first, before anything is computed or written: the process image is replaced.

  Raises:
    ValueError: a bad `ROBUST_PROMPT_MALLOC`.
  """
  if not sys.platform.startswith("linux") or not sys.executable:
    return
  env = huge_page_environment(os.environ, thp_mode(), platform.libc_ver())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, list(sys.orig_argv), env)
  except OSError:
    return  # the interpreter cannot be started again (removed, say): run as we are


def _hugetlb_setting(environ: Mapping[str, str]) -> str | None:
  """The value `GLIBC_TUNABLES` gives `glibc.malloc.hugetlb`, or None where it gives none."""
  for item in environ.get(TUNABLES_VAR, "").split(":"):
    name, _, value = item.partition("=")
    if name == HUGETLB:
      return value
  return None


def huge_pages_asked(environ: Mapping[str, str] | None = None) -> bool:
  """Whether this process's glibc was started asking for huge pages (`GLIBC_TUNABLES`)."""
  return _hugetlb_setting(os.environ if environ is None else environ) in ("1", "2")


def thp_hint(platform_name: str, path: pathlib.Path | None = None) -> str | None:
  """A one-line hint for a CPU run whose heap gets no huge pages, else None."""
  path = THP_ENABLED if path is None else path
  mode = thp_mode(path)
  if platform_name != "cpu" or mode not in ("madvise", "never"):
    return None
  if mode == "madvise" and huge_pages_asked():
    return None
  if mode == "madvise" and os.environ.get(ENV_VAR, "").strip().lower() == "system":
    fix = f"unset ${ENV_VAR}, or set them to 'always'"
  else:  # 'never', or a C library that cannot ask (not glibc 2.35+)
    fix = "set them to 'always'"
  return (
    f"note: transparent huge pages are '{mode}' here ({path}) and this process does not ask "
    f"for them: XLA:CPU maps each train step's temporaries afresh in 4 KB pages, which cost up "
    f"to ~20% of a step; {fix} (echo always | sudo tee {path}) (robust_prompt/host_memory.py)"
  )
