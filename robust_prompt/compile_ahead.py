"""Compiling a jitted step's coming shapes in background threads, before they are needed.

An evaluation plans all its batches before running them, so it knows every static shape it will
send to `jax.jit`. Compiled one at a time when first called, those programs are most of a short
run's time on a CPU (T5-small, `benchmarks/eval_throughput.py`: 6 shapes, ~1.3 s each).
XLA's compilation of one program is single-threaded and releases the GIL, so the engine hands the
shapes to a few threads here (`submit`) and waits only for the shape it is about to run (`wait`):
compilations overlap each other and the batches already running.

`fn.lower(...).compile()` fills the same in-memory cache as a first call of `fn` (and the
persistent cache), so the call that follows compiles nothing. Nothing depends on this for
correctness: a shape that failed to compile here, or was never submitted, is compiled by the call
itself as usual (and a real error is raised there, in the caller's thread).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from robust_prompt import multihost, partitioning

logger = logging.getLogger(__name__)

# More threads than this would hold several large programs' compilation memory at once on a
# big host for little gain: an evaluation has a handful to a few dozen shapes.
MAX_THREADS = 4

# Keys of finished compilations are remembered (a key is not compiled twice), but only this many:
# a key holds its jitted step, and so that step's compiled programs, alive; a long-lived process
# (a notebook evaluating model after model) would otherwise keep every program it ever ran.
MAX_FINISHED = 256

_lock = threading.Lock()
_futures: dict[Hashable, Future] = {}  # in submission order (oldest first)
_executor: ThreadPoolExecutor | None = None
_threads: int | None = None  # set_num_threads; None: one per core, at most MAX_THREADS


def num_threads() -> int:
  """Compilation threads: `set_num_threads`'s, else one per CPU core, at most `MAX_THREADS`."""
  if _threads is not None:
    return _threads
  return max(1, min(os.cpu_count() or 1, MAX_THREADS))


def set_num_threads(n: int | None) -> None:
  """Compile up to `n` programs at a time from now on (None: the default). On an accelerator
  host with many cores, whose programs take tens of seconds each to compile, more can pay."""
  global _executor, _threads
  if n is not None and n < 1:
    raise ValueError(f"compilation threads must be >= 1, got {n}")
  with _lock:
    _threads = n
    if _executor is not None:
      _executor.shutdown(wait=False)  # running compilations finish; their futures stay valid
      _executor = None


def _pool() -> ThreadPoolExecutor:
  global _executor
  if _executor is None:
    _executor = ThreadPoolExecutor(num_threads(), thread_name_prefix="robust_prompt-compile")
  return _executor


def submit(
  key: Hashable,
  lower: Callable[[], object],
  context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> None:
  """Starts compiling `lower()` (a `jax.stages.Lowered`) in the background, once per `key`.

  Args:
    key: identifies the program (the step and every argument's shape, dtype and placement);
      a key already submitted in this process is not compiled again.
    lower: traces and lowers the step, e.g. `lambda: fn.lower(params, prompt, batch_spec)`.
    context: entered around lowering in the worker thread (e.g. the mesh and logical-axis
      rules, which are per thread).
  """
  with _lock:
    if key in _futures:
      return
    _futures[key] = _pool().submit(_compile, lower, context)
    _forget_finished(MAX_FINISHED)


def _forget_finished(keep: int) -> None:
  """Drops the oldest finished entries beyond `keep` of them (called with `_lock` held)."""
  finished = [k for k, f in _futures.items() if f.done()]
  for k in finished[: max(0, len(finished) - keep)]:
    del _futures[k]


def _compile(lower, context) -> None:
  with context() if context is not None else contextlib.nullcontext():
    lower().compile()


def wait(key: Hashable) -> None:
  """Blocks until the program of `key` is compiled (returns at once if it was never submitted).

  A background failure is logged at debug level and forgotten: the caller's own call compiles the
  program again and raises any real error itself.
  """
  with _lock:
    future = _futures.get(key)
  if future is None:
    return
  try:
    future.result()
  except Exception as e:  # noqa: BLE001 - the caller's call reports real errors
    logger.debug("compiling ahead failed for %r: %s", key, e)
    with _lock:
      if _futures.get(key) is future:
        del _futures[key]


def cancel(keys) -> None:
  """Drops the compilations of `keys` that have not started (a caller that stops early: an
  error or an interrupt must not leave the process compiling programs nobody will run, nor
  waiting for them at exit). Those already compiling finish."""
  with _lock:
    for key in keys:
      future = _futures.get(key)
      if future is not None and future.cancel():
        del _futures[key]


def avals_key(tree: Any, mesh=None) -> tuple:
  """Hashable shapes, dtypes (and, on a mesh, shardings) of a tree of arrays: the part of a
  step's compile key that its fixed arguments (parameters, prompt) contribute."""
  leaves, treedef = jax.tree.flatten(tree)
  avals = tuple(
    (np.shape(x), str(x.dtype), getattr(x, "sharding", None) if mesh is not None else None)
    for x in leaves
  )
  return (treedef, avals, mesh)


def submit_step(
  fn, params, prompt, batch: Mapping[str, Any], mesh, fixed_key: Hashable
) -> Hashable:
  """Submits `fn(params, prompt, batch)` (a jitted step) for `batch`'s shapes; returns the key
  to `wait` on before calling it with that batch.

  Args:
    fn: the jitted step; params, prompt: its fixed arguments, already placed.
    batch: the host batch (numpy), placed on `mesh` by the call (`multihost.place_batch`).
    mesh: the mesh, or None for the default device.
    fixed_key: `avals_key((params, prompt), mesh)`, computed once by the caller.
  """
  specs = multihost.batch_specs(batch, mesh)
  shapes = tuple((k, v.shape, v.dtype.str) for k, v in sorted(specs.items()) if v is not None)
  key = (fn, fixed_key, shapes)
  context = None if mesh is None else functools.partial(partitioning.mesh_context, mesh)
  submit(key, lambda: fn.lower(params, prompt, specs), context)
  return key
