"""Users' own tasks as JSONL files (one example per line), documented in docs/tasks.md.

Multiple choice:  {"id": "q1", "question": "...", "options": ["x", "y"], "answer": 1}
                  ("answer" is an option index or the option's text; a list of them when several
                  options are correct)
Generative:       {"id": "g1", "input": "...", "target": "..."}   (or "targets": ["...", ...])

Every other top-level string value becomes a field that instruction templates can use
(`{question}`, `{context}`, `{input}`, ...). An optional "metadata" object is kept as is. A file
`<name>.jsonl` is the task `jsonl:<name>`. Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from typing import Any

from robust_prompt import text_files
from robust_prompt.data.example import DataError, Example

RESERVED = ("id", "options", "answer", "target", "targets", "metadata")


def task_name(path: str | os.PathLike) -> str:
  return f"jsonl:{pathlib.Path(path).stem}"


def list_tasks(jsonl_dir: str | os.PathLike) -> list[str]:
  """`jsonl:<stem>` for every `*.jsonl` file directly in `jsonl_dir`, sorted."""
  return [task_name(p) for p in sorted(pathlib.Path(jsonl_dir).glob("*.jsonl"))]


def _answer_index(value: Any, options: list[str], where: str) -> int:
  if isinstance(value, bool):
    raise DataError(f"{where}: 'answer' must be an option index or an option's text, got {value!r}")
  if isinstance(value, int):
    if not 0 <= value < len(options):
      raise DataError(f"{where}: answer index {value} is out of range for {len(options)} options")
    return value
  if isinstance(value, str):
    if value not in options:
      raise DataError(f"{where}: answer {value!r} is not one of the options {options}")
    return options.index(value)
  raise DataError(
    f"{where}: 'answer' must be an int index or an option's text, got {type(value).__name__}"
  )


def parse_line(
  obj: Any, *, task: str, index: int, file: str = "<memory>", line: int = 0
) -> Example:
  """One decoded JSON line -> `Example` (`file` and `line` locate error messages)."""
  where = f"{file}:{line}"
  if not isinstance(obj, dict):
    raise DataError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
  example_id = obj.get("id", index)
  if not isinstance(example_id, (str, int)) or isinstance(example_id, bool):
    raise DataError(f"{where}: 'id' must be a string or an integer")
  fields = {}
  for key, value in obj.items():
    if key in RESERVED:
      continue
    if not isinstance(value, str):
      raise DataError(
        f"{where}: field {key!r} must be a string (fields fill template placeholders); put other "
        "values under 'metadata'"
      )
    fields[key] = value
  metadata = obj.get("metadata", {})
  if not isinstance(metadata, dict):
    raise DataError(f"{where}: 'metadata' must be an object")
  metadata = {**metadata, "file": file, "line": line}
  common = dict(id=f"{task}:{example_id}", task=task, fields=fields, metadata=metadata)
  if "options" in obj:
    options = obj["options"]
    if (
      not isinstance(options, list)
      or len(options) < 2
      or not all(isinstance(o, str) for o in options)
    ):
      raise DataError(f"{where}: 'options' must be a list of at least 2 strings")
    if len(set(options)) != len(options):
      raise DataError(f"{where}: 'options' has duplicates")
    if "answer" not in obj:
      raise DataError(f"{where}: a multiple-choice line (with 'options') needs 'answer'")
    raw = obj["answer"]
    answers = raw if isinstance(raw, list) else [raw]
    if not answers:
      raise DataError(f"{where}: 'answer' is an empty list")
    correct = [_answer_index(a, options, where) for a in answers]
    correct = tuple(dict.fromkeys(correct))
    return Example(
      options=tuple(options), answer=correct[0], correct=tuple(sorted(correct)), **common
    )
  if "answer" in obj:
    raise DataError(
      f"{where}: 'answer' needs 'options'; a generative line uses 'target' or 'targets'"
    )
  if "target" in obj and "targets" in obj:
    raise DataError(f"{where}: give either 'target' or 'targets', not both")
  targets = obj.get("targets", [obj["target"]] if "target" in obj else None)
  if targets is None:
    raise DataError(
      f"{where}: needs 'options' + 'answer' (multiple choice) or 'target'/'targets' (generative)"
    )
  if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
    raise DataError(f"{where}: 'target' must be a string and 'targets' a non-empty list of strings")
  return Example(targets=tuple(targets), **common)


def load_jsonl(path: str | os.PathLike, task: str | None = None) -> list[Example]:
  """Reads a task file. The task name defaults to `jsonl:<file stem>`.

  Raises:
    DataError: `file:line: ...` for a file that is not UTF-8, bad JSON, a bad field, or a
      duplicate id.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"JSONL task file not found: {path}")
  task = task or task_name(path)
  examples: list[Example] = []
  seen: dict[str, int] = {}
  # Universal newlines, as `open` in text mode would split the lines.
  lines = io.StringIO(text_files.read_text(path, error=DataError), newline=None)
  for number, raw in enumerate(lines, start=1):
    text = raw.strip()
    if not text or text.startswith("#"):
      continue
    where = f"{path}:{number}"
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    example = parse_line(obj, task=task, index=len(examples), file=str(path), line=number)
    if example.id in seen:
      raise DataError(f"{where}: duplicate id {example.id!r} (first on line {seen[example.id]})")
    seen[example.id] = number
    examples.append(example)
  if not examples:
    raise DataError(f"{path}: no examples (the file is empty)")
  return examples
