"""Crash-safe file IO: atomic writes, fsync'd JSON-lines appends, torn-line tolerant reads.

Every file the toolkit writes for a user (summaries, reports, CSVs, checkpoints' side files) goes
through `atomic_write_*`: the bytes land in a temporary file in the destination's directory, are
fsync'd, and `os.replace` swaps it in. A crash (or a serialisation error) therefore leaves either
the old file or the new one, never half of one.

Streaming results (`results.jsonl`) are appended row by row with `append_jsonl`, which flushes and
fsyncs so that a killed run loses at most the row being written. `read_jsonl` tolerates that torn
last line (warns, skips it, and can truncate it away so appending can resume).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PathLike = str | os.PathLike


class NotWritableError(OSError):
  """An output directory cannot be created or written to."""


class TornLineWarning(UserWarning):
  """The last line of a JSON-lines file was cut short (a crash mid-write) and was skipped."""


def _fsync_dir(directory: pathlib.Path) -> None:
  # Makes the rename itself durable. Not every platform / file system allows opening a directory.
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically (temp file in the same directory + fsync + os.replace).

  The destination directory must exist. A pre-existing file keeps its permission bits; a new file
  gets 0o644 (temporary files are created 0o600).

  Returns:
    The destination path.
  """
  path = pathlib.Path(path)
  directory = path.parent
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    try:
      mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
      mode = 0o644
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  except BaseException:
    # Never leave the temporary file behind (e.g. disk full, KeyboardInterrupt).
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  _fsync_dir(directory)
  return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> pathlib.Path:
  """Writes `text` to `path` atomically (see `atomic_write_bytes`)."""
  return atomic_write_bytes(path, text.encode(encoding))


def json_clean(obj: Any) -> Any:
  """Returns `obj` with numpy scalars/arrays made plain Python and NaN / inf replaced by None.

  JSON has no NaN: a metric that is undefined (e.g. the gap of a task without observed
  instructions) is written as `null`.
  """
  if isinstance(obj, Mapping):
    return {str(k): json_clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_clean(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return json_clean(obj.tolist())
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> pathlib.Path:
  """Serialises `obj` (strict JSON: NaN is an error, use `json_clean`) and writes it atomically.

  Serialisation happens before anything touches the disk, so an unserialisable object leaves no
  file (and an existing file untouched).
  """
  text = json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)
  return atomic_write_text(path, text + "\n")


def append_jsonl(path: PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
  """Appends `rows` to a JSON-lines file, one object per line, then flushes and fsyncs.

  Each row is serialised completely before anything is written, so a bad row writes nothing.

  Raises:
    ValueError: if the file ends in an unterminated (torn) line: appending would glue the new row
      onto it. Call `read_jsonl(path, truncate_torn=True)` first (resuming after a crash does).

  Returns:
    The number of rows written.
  """
  path = pathlib.Path(path)
  lines = [json.dumps(json_clean(row), allow_nan=False, ensure_ascii=False) + "\n" for row in rows]
  if not lines:
    return 0
  with open(path, "ab") as f:
    if f.tell() > 0:
      with open(path, "rb") as r:
        r.seek(-1, os.SEEK_END)
        if r.read(1) != b"\n":
          raise ValueError(
            f"{path}: the last line is unterminated (a crash mid-write?); call "
            "read_jsonl(path, truncate_torn=True) to drop it before appending"
          )
    f.write("".join(lines).encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())
  return len(lines)


def read_jsonl(path: PathLike, *, truncate_torn: bool = False) -> list[dict[str, Any]]:
  """Reads a JSON-lines file (one object per line; blank lines are skipped).

  A last line that does not parse is treated as torn by a crash mid-write: it is skipped with a
  `TornLineWarning` and, with `truncate_torn=True`, cut off the file so that appends can resume.
  A bad line anywhere else is corruption and raises. With `truncate_torn=True` a complete last
  row that lost its newline gets one, so the file is always ready for `append_jsonl` afterwards.

  Raises:
    ValueError: `path:line: ...` for an unparseable line before the last, or a line that is not a
      JSON object.
  """
  path = pathlib.Path(path)
  data = path.read_bytes()
  rows: list[dict[str, Any]] = []
  raw_lines = data.split(b"\n")
  # Byte offset at which each line starts, to truncate precisely.
  offset = 0
  last_index = len(raw_lines) - 1
  while last_index > 0 and not raw_lines[last_index].strip():
    last_index -= 1
  for lineno, raw in enumerate(raw_lines, start=1):
    start = offset
    offset += len(raw) + 1
    if not raw.strip():
      continue
    try:
      row = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      if lineno - 1 == last_index:
        warnings.warn(
          f"{path}:{lineno}: skipping a torn last line ({len(raw)} bytes; a crash mid-write?)"
          + ("; truncated it" if truncate_torn else ""),
          TornLineWarning,
          stacklevel=2,
        )
        if truncate_torn:
          with open(path, "r+b") as f:
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
        break
      raise ValueError(
        f"{path}:{lineno}: not valid JSON ({e}); the file is corrupt: fix or delete that line"
      ) from e
    if not isinstance(row, dict):
      raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    rows.append(row)
  else:
    if truncate_torn and data and not data.endswith(b"\n"):
      # A complete last row whose newline was lost: terminate it so appends start a new line.
      with open(path, "ab") as f:
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())
  return rows


def check_writable_dir(path: PathLike) -> pathlib.Path:
  """Creates `path` (with parents) if needed and checks that files can be written in it.

  Raises:
    NotWritableError: (an OSError) saying which directory and what to do.

  Returns:
    The directory as a `pathlib.Path`.
  """
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise NotWritableError(
      f"output directory {path} exists and is not a directory: choose another output directory"
    )
  try:
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise NotWritableError(
      f"output directory {path} is not writable ({e.strerror or e}): choose another output "
      "directory or fix its permissions"
    ) from e
  return path


class DirectoryLockedError(OSError):
  """Another process is writing the same output or model directory."""


class DirectoryLock:
  """An exclusive, non-blocking lock on a directory for as long as a run writes it.

  `flock` on `<dir>/.lock`: released by the kernel when the process dies, so a killed run never
  leaves a stale lock behind. A second `eval` or `train` into the same directory fails at once.
  """

  def __init__(self, path: PathLike, what: str = "run"):
    self.path = pathlib.Path(path)
    self.what = what
    self._file = None

  def __enter__(self) -> DirectoryLock:
    import fcntl

    self._file = open(self.path / ".lock", "a+")  # noqa: SIM115 - held until __exit__
    try:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      self._file.close()
      self._file = None
      raise DirectoryLockedError(
        f"{self.path} is being written by another {self.what} right now; wait for it to finish, "
        "or write to another directory"
      ) from e
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"{os.getpid()}\n")
    self._file.flush()
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      import fcntl

      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None
