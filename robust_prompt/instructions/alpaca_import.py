"""Observed instructions from Alpaca's training data (`alpaca_data.json`), in Alpaca's wrapper.

Alpaca (tatsu-lab/stanford_alpaca) was tuned on `alpaca_data.json`: a JSON list of
`{"instruction": ..., "input": ..., "output": ...}` records, each shown to the model as

    Below is an instruction that describes a task, paired with an input that provides further
    context. Write a response that appropriately completes the request.

    ### Instruction:
    <instruction>

    ### Input:
    <input>

    ### Response:

An observed instruction for multiple-choice tasks is that wrapper around one of the training
instructions that asks to pick the answer of a multiple-choice question (`is_multiple_choice`),
with our question and its lettered options as the input. Records whose instruction holds its
own question (a "?") or that have no input are not generic instructions and are left out; so
are repeats of an instruction already taken.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping, Sequence

from robust_prompt.instructions.bindings import escape
from robust_prompt.instructions.flan_import import default_placeholder_map, group_by_benchmark
from robust_prompt.instructions.import_result import ImportResult, Skipped
from robust_prompt.instructions.schema import Instruction, InstructionError
from robust_prompt.instructions.validate import validate_instruction

DATA_FILE = "alpaca_data.json"
# Alpaca's prompt for records with an input (stanford_alpaca train.py, PROMPT_DICT).
WRAPPER = (
  "Below is an instruction that describes a task, paired with an input that provides further "
  "context. Write a response that appropriately completes the request.\n\n"
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
# Instructions that ask for the answer of a multiple-choice question.
MULTIPLE_CHOICE = re.compile(
  r"multiple[- ]choice"
  r"|\b(choose|select|pick|identify|find|circle|indicate)\b[^.]*\b(correct|best|right|"
  r"appropriate|suitable|most likely)\b[^.]*\b(answer|option|choice|alternative)s?\b"
  r"|\b(choose|select|pick)\b[^.]*\bfrom the (following|given|provided) (options|choices|answers)\b",
  re.I,
)
_LETTER_OUTPUT = re.compile(r"\(?[A-Da-d][).:]?(\s|$)")
MAX_INSTRUCTION_CHARS = 300


def read_alpaca_records(path: str | pathlib.Path) -> list[tuple[int, dict]]:
  """The records of an alpaca_data.json file, each with the line it starts on.

  Raises:
    InstructionError: (file:line) for a file that is not a JSON list of objects with string
      `instruction`, `input` and `output`.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise InstructionError(f"not UTF-8 (byte {e.start})", file=str(path), line=1) from None
  except OSError as e:
    raise InstructionError(f"cannot read: {e.strerror}", file=str(path), line=0) from None
  decoder = json.JSONDecoder()
  pos = _skip_ws(text, 0)
  if not text.startswith("[", pos):
    raise InstructionError(
      "expected a JSON list of {instruction, input, output} records", file=str(path), line=1
    )
  pos = _skip_ws(text, pos + 1)
  records = []
  while not text.startswith("]", pos):
    line = text.count("\n", 0, pos) + 1
    try:
      record, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise InstructionError(f"invalid JSON: {e.msg}", file=str(path), line=e.lineno) from None
    if not isinstance(record, dict) or not all(
      isinstance(record.get(k), str) for k in ("instruction", "input", "output")
    ):
      raise InstructionError(
        "each record must be an object with string 'instruction', 'input' and 'output'",
        file=str(path),
        line=line,
      )
    records.append((line, record))
    pos = _skip_ws(text, pos)
    if text.startswith(",", pos):
      pos = _skip_ws(text, pos + 1)
    elif not text.startswith("]", pos):
      raise InstructionError(
        "expected ',' or ']' after a record", file=str(path), line=text.count("\n", 0, pos) + 1
      )
  return records


def _skip_ws(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in " \t\r\n":
    pos += 1
  return pos


def is_multiple_choice(record: Mapping[str, str]) -> str | None:
  """None when `record` is a generic multiple-choice instruction; else why it is not."""
  instruction = record["instruction"].strip()
  if not MULTIPLE_CHOICE.search(instruction):
    return "not a multiple-choice instruction"
  if not record["input"].strip():
    return "no input: the question is not separate from the instruction"
  if "?" in instruction:
    return "the instruction holds its own question"
  if len(instruction) > MAX_INSTRUCTION_CHARS:
    return f"longer than {MAX_INSTRUCTION_CHARS} characters"
  return None


def import_alpaca_instructions(
  path: str | pathlib.Path,
  tasks: Sequence[str],
  *,
  placeholder_map: Mapping[str, str] | None = None,
  seen_by: Sequence[str] = ("alpaca",),
  source: str = "alpaca",
  id_prefix: str | None = None,
  limit: int | None = None,
) -> ImportResult:
  """Observed instructions: Alpaca's wrapper around its multiple-choice training instructions.

  Args:
    path: alpaca_data.json.
    tasks: our task names/globs, e.g. ["mmlu:*"].
    placeholder_map: overrides of `question` -> the benchmark's main field.
    seen_by: model families trained on them.
    source: the `source` recorded.
    id_prefix: ids are `<id_prefix>_<record index>` (default `source`).
    limit: keep at most this many (in file order).

  Returns:
    The instructions (options lettered "A. x"; answer space "letters" when the record's own
    answer was a letter, else "option_text"; `prompt_format` "raw", as the wrapper is in the
    template) and the records left out, with the reason (most of the file: "not a
    multiple-choice instruction").
  """
  path = pathlib.Path(path)
  groups = group_by_benchmark(tasks)
  instructions: list[Instruction] = []
  skipped: list[Skipped] = []
  seen: dict[str, int] = {}
  for index, (line, record) in enumerate(read_alpaca_records(path)):
    why = is_multiple_choice(record)
    where = f"{path}:{line}"
    if why is not None:
      skipped.append(Skipped(where, f"record {index}", why, "misfit"))
      continue
    instruction_text = record["instruction"].strip()
    if instruction_text in seen:
      skipped.append(
        Skipped(
          where,
          f"record {index}",
          f"same instruction as record {seen[instruction_text]}",
          "duplicate",
        )
      )
      continue
    seen[instruction_text] = index
    letters = bool(_LETTER_OUTPUT.match(record["output"].strip()))
    for bench, bench_tasks in groups.items():
      main = (default_placeholder_map(bench) | dict(placeholder_map or {})).get("question")
      if main is None:
        raise InstructionError(
          f"no field for the question of {bench} tasks: pass placeholder_map={{'question': ...}}"
        )
      template = _wrap(escape(instruction_text), f"{{{main}}}\n{{options}}")
      ident = f"{id_prefix or source}_{index:05d}" + (f"_{bench}" if len(groups) > 1 else "")
      instruction = Instruction(
        id=ident,
        tasks=tuple(bench_tasks),
        template=template,
        options_format="letters",
        answer_space="letters" if letters else "option_text",
        split="observed",
        source=source,
        seen_by=tuple(seen_by),
        file=str(path),
        line=line,
        origin=f"{path.name}#{index}",
        # The template already is Alpaca's wrapper: a run's --prompt_format alpaca (or chat)
        # must not wrap it a second time.
        prompt_format="raw",
      )
      validate_instruction(instruction)
      instructions.append(instruction)
    if limit is not None and len(seen) >= limit:
      break
  return ImportResult(tuple(instructions), tuple(skipped))


def _wrap(instruction: str, our_input: str) -> str:
  # str.format inserts the values verbatim: the escaped braces of `instruction` stay escaped.
  return WRAPPER.format(instruction=instruction, input=our_input)
