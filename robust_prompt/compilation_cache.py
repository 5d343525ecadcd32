"""JAX's persistent compilation cache: compiled XLA programs kept on disk between runs.

An evaluation compiles one program per bucket shape; for T5-small on a CPU that is about two
thirds of a short run's time (`benchmarks/eval_throughput.py`: 9.9 s cold, 3.5 s warm). With the
cache, a rerun with the same shapes, or another run of the same model, loads those programs
instead of compiling them again (6.8 s on that benchmark).

The cache is keyed by the program, the jax/XLA versions and the device kind, so a stale entry is
never used: it is safe to share one directory between runs and models.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

# JAX reads this variable itself (with its own 1 s minimum compile time, see `enable`).
ENV_VAR = "JAX_COMPILATION_CACHE_DIR"
# Ours: a directory, or "none" to compile without a cache (e.g. a read-only home, or tests).
OUR_ENV_VAR = "ROBUST_PROMPT_COMPILATION_CACHE"
OFF = "none"


def user_cache_dir() -> pathlib.Path:
  """`$XDG_CACHE_HOME/robust_prompt/xla`, `~/.cache/robust_prompt/xla` without it."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "robust_prompt" / "xla"


def default_dir() -> str | None:
  """Where the CLI caches compiled programs unless told otherwise; None = no cache.

  `$ROBUST_PROMPT_COMPILATION_CACHE` ("none" turns the cache off), else JAX's own
  `$JAX_COMPILATION_CACHE_DIR`, else the user cache directory (`user_cache_dir`): a user's
  second run of the same model and shapes loads its programs instead of compiling them.
  """
  ours = os.environ.get(OUR_ENV_VAR)
  if ours:
    return None if ours.strip().lower() == OFF else ours
  return os.environ.get(ENV_VAR) or str(user_cache_dir())


def enable(path: str | os.PathLike) -> pathlib.Path:
  """Turns the persistent cache on in `path` (created if missing); call before compiling.

  Every program is cached, however fast it compiled: JAX's default keeps only those that took
  over a second, and most CPU programs here compile in less.

  Raises:
    ValueError: `path` cannot be created or written (says which, and why).
  """
  import jax

  directory = pathlib.Path(path).expanduser()
  try:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
      pass
  except OSError as e:
    raise ValueError(
      f"compilation cache directory {str(directory)!r} is not writable ({e.strerror or e}); "
      "pick a directory you can write to, or leave the flag out to compile without a cache"
    ) from e
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
