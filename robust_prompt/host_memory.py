"""Linux transparent huge pages, and what XLA:CPU's per-step temporaries cost without them.

XLA:CPU maps every execution's temporary buffer afresh (`mmap`, not `malloc`, so no malloc
setting keeps it) and unmaps it afterwards. A train step's buffer is large (T5-small, batch 8,
input 148: 317 MB): with 4 KB pages the kernel faults and zeroes 77,000 pages per step, about a
sixth of the step's CPU time. With transparent huge pages in mode `always` it maps 2 MB pages and
the faults all but vanish (measured on a 2-core AMD EPYC Zen 5, `benchmarks/train_throughput.py
--steps 6`: 2.50 steps/s against 1.77-2.16 in other runs; the step alone, 10 steps in
alternating runs: 1.10-1.15x). XLA does not ask for huge pages (`madvise`), so in
the common default mode `madvise` it gets none; only the machine's owner can change the mode.
"""

from __future__ import annotations

import pathlib

THP_ENABLED = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


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


def thp_hint(platform: str, path: pathlib.Path | None = None) -> str | None:
  """A one-line hint for a CPU run where huge pages are not used by default, else None."""
  path = THP_ENABLED if path is None else path
  mode = thp_mode(path)
  if platform != "cpu" or mode not in ("madvise", "never"):
    return None
  return (
    f"note: transparent huge pages are '{mode}' here ({path}); XLA:CPU re-maps each train "
    "step's temporaries in 4 KB pages, which cost up to ~15% of a step. With 'always' (echo "
    f"always | sudo tee {path}) steps ran 1.1-1.4x faster on a 2-core CPU (host_memory.py)"
  )
