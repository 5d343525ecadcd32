"""Reading and writing instruction collections (JSONL, one instruction per line).

The format is documented in docs/instructions.md. Blank lines and lines starting with `#` or `//`
are skipped, so collections can carry comments. A file may start with one defaults line,
`{"defaults": {"prompt_format": "alpaca"}}`, which applies to every instruction of that file only
(an instruction's own key wins); `write_instructions` writes the resolved value on each line.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence

from robust_prompt.instructions.schema import Instruction, InstructionError
from robust_prompt.instructions.validate import (
  check_unique_ids,
  defaults_from_dict,
  instruction_from_dict,
)


def default_instruction_dir() -> pathlib.Path:
  """The shipped collection: `tasks/instructions` (package data of `robust_prompt_tasks`)."""
  try:
    import robust_prompt_tasks

    return pathlib.Path(robust_prompt_tasks.INSTRUCTIONS_DIR)
  except ImportError:  # a source checkout that is not installed
    return pathlib.Path(__file__).resolve().parents[2] / "tasks" / "instructions"


def _expand(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
  files: list[pathlib.Path] = []
  for p in paths:
    path = pathlib.Path(p)
    if path.is_dir():
      found = sorted(path.rglob("*.jsonl"))
      if not found:
        raise InstructionError(f"{path}: directory holds no *.jsonl instruction files")
      files.extend(found)
    elif path.is_file():
      files.append(path)
    else:
      raise InstructionError(f"{path}: no such instruction file or directory")
  return files


_BOM = b"\xef\xbb\xbf"


def _decoded_lines(path: pathlib.Path) -> list[str]:
  """The file's lines as text; a UTF-8 byte-order mark at the start is dropped.

  Raises:
    InstructionError: at the first line that is not UTF-8, naming the byte and its column.
  """
  try:
    data = path.read_bytes()
  except OSError as e:
    raise InstructionError(
      f"cannot read instruction file: {e.strerror}", file=str(path), line=0
    ) from None
  # Editors on Windows often save "UTF-8" with a byte-order mark; it is not part of the JSON.
  if data.startswith(_BOM):
    data = data[len(_BOM) :]
  lines = []
  for number, raw in enumerate(data.split(b"\n"), start=1):
    try:
      lines.append(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise InstructionError(
        f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1} cannot be decoded; "
        "instruction files must be UTF-8 (re-save the file with UTF-8 encoding)",
        file=str(path),
        line=number,
      ) from None
  return lines


def read_instruction_file(path: str | pathlib.Path) -> list[Instruction]:
  """Parses and validates one JSONL file (ids are checked within the file only).

  Raises:
    InstructionError: `file:line: ...` for a line that is not UTF-8, not JSON or not a valid
      instruction, for a defaults line that is invalid, repeated or after an instruction, and
      for a file that holds no instruction at all.
  """
  path = pathlib.Path(path)
  out = []
  defaults: dict | None = None
  defaults_line = 0
  for number, raw in enumerate(_decoded_lines(path), start=1):
    text = raw.strip()
    if not text or text.startswith("#") or text.startswith("//"):
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise InstructionError(
        f"invalid JSON ({e.msg} at column {e.colno}); each line must be one JSON object",
        file=str(path),
        line=number,
      ) from None
    if isinstance(obj, dict) and "defaults" in obj:
      # Defaults first: a reader (or a diff) then sees at the top what applies to every line.
      if defaults is not None:
        raise InstructionError(
          f"a second defaults line (the first is line {defaults_line}); merge them into one",
          file=str(path),
          line=number,
        )
      if out:
        raise InstructionError(
          "the defaults line must come before the first instruction (here it would apply to "
          f"some instructions of the file and not to others, e.g. {out[0].id!r})",
          file=str(path),
          line=number,
        )
      defaults, defaults_line = defaults_from_dict(obj, file=str(path), line=number), number
      continue
    out.append(instruction_from_dict(obj, file=str(path), line=number, defaults=defaults))
  if not out:
    # An empty file is almost always a mistake (a failed export, a wrong path); a silent empty
    # collection would make an evaluation run with no instructions for its tasks.
    raise InstructionError(
      "file holds no instructions (it is empty or has only blank and comment lines); write one "
      "JSON object per line (docs/instructions.md) or remove the file",
      file=str(path),
      line=1,
    )
  check_unique_ids(out)
  return out


def load_instructions(
  paths: Sequence[str | pathlib.Path] | str | pathlib.Path,
) -> list[Instruction]:
  """Loads instruction files and directories (every `*.jsonl` below), validating everything.

  Args:
    paths: files and/or directories; a single path is accepted too.

  Returns:
    Instructions in file order (files sorted within each directory).

  Raises:
    InstructionError: `file:line: ...` for the first problem found (bad JSON, bad field, bad
      template, duplicate id across all the files).
  """
  if isinstance(paths, (str, pathlib.Path)):
    paths = [paths]
  instructions: list[Instruction] = []
  for file in _expand(paths):
    instructions.extend(read_instruction_file(file))
  check_unique_ids(instructions)
  return instructions


def instructions_for_task(instructions: Iterable[Instruction], task: str) -> list[Instruction]:
  """The instructions that apply to `task` (e.g. "mmlu:anatomy"), in collection order.

  Raises:
    InstructionError: when two of them share an id (possible for lists not made by
      `load_instructions`, which rejects duplicate ids).
  """
  out = [i for i in instructions if i.applies_to(task)]
  check_unique_ids(out)
  return out


def write_instructions(instructions: Iterable[Instruction], path: str | pathlib.Path) -> int:
  """Writes instructions as JSONL (one object per line, UTF-8). Returns how many were written."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  n = 0
  with open(path, "w", encoding="utf-8") as f:
    for instruction in instructions:
      f.write(json.dumps(instruction.to_json_dict(), ensure_ascii=False) + "\n")
      n += 1
  return n
