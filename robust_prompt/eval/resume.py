"""Resuming an interrupted evaluation: the run fingerprint and the completed prefix of results.

The engine writes `results.jsonl` in a fixed order, one (task, instruction) chunk at a time (all of
a chunk's rows in a single fsync'd append). After a crash or a kill the file therefore holds
complete chunks, then possibly part of one chunk and possibly a torn last line. On restart,
`completed_chunks` keeps the longest prefix of complete chunks, cuts the file right after it, and
the engine recomputes the rest; since every chunk is computed the same way whatever ran before, the
final file is byte-identical to that of an uninterrupted run.

`run.json` records what the results are *of* (model, instructions, tasks, score mode, ...). A rerun
into the same directory with a different fingerprint is refused: mixing results of two set-ups
would silently corrupt the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any

from robust_prompt import io_utils

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"


class FingerprintMismatch(ValueError):
  """The output directory holds results of a different run set-up."""


class CorruptResults(ValueError):
  """`results.jsonl` is damaged before its last line (not a torn write): it cannot be resumed."""


# Weight files are digested by size and their first and last MiB: different weights at one path
# are told apart without reading tens of GB; small files (configs, vocabularies) are read whole.
_EDGE = 1 << 20


def model_digest(spec: str) -> dict:
  """What identifies a model's weights: a content digest of its files, not the `--model` string.

  A local directory (or file) is digested by its files' names, sizes and contents (whole for
  files up to 2 MiB; first and last MiB otherwise), so the same directory as a relative and an
  absolute path gives one digest and new weights at the same path another. A hub id is kept as
  given (the hub resolves it to a revision when downloading).
  """
  path = pathlib.Path(spec).expanduser()
  if not path.exists():
    return {"hub_id": spec}
  files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
  h = hashlib.sha256()
  for f in files:
    if f.name == ".lock":
      continue
    size = f.stat().st_size
    h.update(f"{f.relative_to(path) if f != path else f.name}\0{size}\0".encode())
    with open(f, "rb") as fh:
      if size <= 2 * _EDGE:
        h.update(fh.read())
      else:
        h.update(fh.read(_EDGE))
        fh.seek(size - _EDGE)
        h.update(fh.read(_EDGE))
  return {"files": len(files), "digest": h.hexdigest()[:16]}


def digest(obj: Any) -> str:
  """A short, stable sha256 of a JSON-serialisable object (keys sorted)."""
  text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
  """sha256 of a file's bytes (e.g. a soft prompt `.npy`), shortened."""
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def check_fingerprint(output_dir: str | os.PathLike, fingerprint: dict) -> bool:
  """Writes `run.json`, or checks that the existing one matches `fingerprint`.

  Returns:
    True when an earlier run with the same fingerprint exists (resume), False for a fresh run.

  Raises:
    FingerprintMismatch: the directory holds a run with another fingerprint, or results without
      a `run.json`.
  """
  output_dir = pathlib.Path(output_dir)
  run_file = output_dir / RUN_FILE
  results = output_dir / RESULTS_FILE
  fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples -> lists
  if run_file.exists():
    try:
      old = json.loads(run_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise FingerprintMismatch(
        f"{run_file}: unreadable ({e}); delete {output_dir} or choose another --output_dir"
      ) from e
    if old != fingerprint:
      keys = sorted(set(old) | set(fingerprint))
      diffs = [
        f"  {k}: before {old.get(k)!r}, now {fingerprint.get(k)!r}"
        for k in keys
        if old.get(k) != fingerprint.get(k)
      ]
      raise FingerprintMismatch(
        f"{output_dir} holds results of a different run, so they cannot be resumed:\n"
        + "\n".join(diffs)
        + "\nUse another --output_dir, or delete this one to start over."
      )
    return True
  if results.exists() and results.stat().st_size > 0:
    raise FingerprintMismatch(
      f"{results} exists but {run_file} does not, so it is unknown which run wrote it; "
      "use another --output_dir or delete the old results"
    )
  io_utils.atomic_write_json(run_file, fingerprint)
  return False


def _row_key(row: dict) -> tuple[str, str]:
  return (str(row.get("task")), str(row.get("instruction_id")))


def completed_chunks(
  results_path: str | os.PathLike, chunks: Sequence[tuple[tuple[str, str], int]]
) -> int:
  """Counts the leading chunks fully present in `results_path` and cuts off anything after them.

  Args:
    results_path: the `results.jsonl` being resumed (may be absent).
    chunks: the planned chunks in write order: `((task, instruction_id), num_rows)`.

  Returns:
    How many chunks (from the start of `chunks`) are complete; the file then holds exactly their
    rows, so that the engine appends the next chunk.
  """
  path = pathlib.Path(results_path)
  if not path.exists():
    return 0
  with warnings.catch_warnings():
    # A torn last line is expected after a kill; read_jsonl warns about it.
    warnings.simplefilter("ignore", io_utils.TornLineWarning)
    try:
      rows = io_utils.read_jsonl(path, truncate_torn=True)
    except ValueError as e:
      raise CorruptResults(
        f"{e}. This is damage inside the file, not a torn last line, so it cannot be resumed: "
        "rerun with --overwrite to start afresh (or restore the file)"
      ) from e
  done = 0
  kept = 0
  for key, size in chunks:
    part = rows[kept : kept + size]
    if len(part) < size or any(_row_key(r) != key for r in part):
      break
    done += 1
    kept += size
  if kept != len(rows):
    _truncate_after_rows(path, kept)
  return done


def _truncate_after_rows(path: pathlib.Path, num_rows: int) -> None:
  """Cuts `path` right after its `num_rows`-th non-blank line (bytes before are kept as is)."""
  data = path.read_bytes()
  offset = 0
  seen = 0
  while seen < num_rows:
    end = data.index(b"\n", offset)
    if data[offset:end].strip():
      seen += 1
    offset = end + 1
  with open(path, "r+b") as f:
    f.truncate(offset)
    f.flush()
    os.fsync(f.fileno())
