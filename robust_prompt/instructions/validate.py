"""Validation of instruction records, with `file:line` errors.

Two levels:

* `instruction_from_dict` / `validate_instruction`: what can be checked from the file alone
  (field types and values, template syntax, known and required placeholders) and
  `check_unique_ids` across every loaded file. `io.load_instructions` runs all of them.
* `render.check_fits` / `check_fit_all` here: what needs the examples (an answer space that does
  not fit an example's options, a placeholder the example has no field for).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from robust_prompt.instructions.schema import (
  ANSWER_SPACES,
  LETTERED_FORMATS,
  OPTIONS_FORMATS,
  PROMPT_FORMATS,
  SPLITS,
  Instruction,
  InstructionError,
  template_placeholders,
)


@dataclasses.dataclass(frozen=True)
class BenchmarkFields:
  """Placeholders a benchmark's examples provide.

  Attributes:
    main: the field every instruction must show (the example's content itself).
    fields: all fields the benchmark's examples carry (besides the rendered `{options}`).
  """

  main: str
  fields: frozenset[str]


# Keyed by the benchmark prefix of the task name (`mmlu:anatomy` -> "mmlu"). Tasks of benchmarks
# not listed here (e.g. user JSONL tasks) accept any placeholder at load time; `render.check_fits`
# then checks them against real examples.
BENCHMARK_FIELDS: dict[str, BenchmarkFields] = {
  "mmlu": BenchmarkFields(main="question", fields=frozenset({"question", "subject"})),
  # BIG-bench examples also carry "question" (= input), the task-level "task_prefix" and the
  # "default_prompt" BIG-bench itself would build; instructions must still show {input}.
  "bigbench": BenchmarkFields(
    main="input", fields=frozenset({"input", "question", "task_prefix", "default_prompt"})
  ),
}

REQUIRED_KEYS = ("id", "tasks", "template", "options_format", "answer_space", "split", "source")
OPTIONAL_KEYS = ("seen_by", "origin", "input_template", "prompt_format")
# What a file's `{"defaults": {...}}` line may set for every instruction of the file.
DEFAULTABLE_KEYS = ("prompt_format",)


def benchmark_of(task_pattern: str) -> str:
  return task_pattern.split(":", 1)[0]


def check_prompt_format(value: Any, *, file: str, line: int, what: str = "prompt_format") -> str:
  """`value` when it is one of `PROMPT_FORMATS`.

  Raises:
    InstructionError: at `file:line`, naming the value and the allowed ones.
  """
  if not isinstance(value, str) or value not in PROMPT_FORMATS:
    raise InstructionError(
      f"{what} {value!r} is not one of {list(PROMPT_FORMATS)} (how the rendered text is wrapped "
      "for the model: docs/instructions.md, Prompt formats)",
      file=file,
      line=line,
    )
  return value


def defaults_from_dict(obj: Any, *, file: str, line: int) -> dict[str, Any]:
  """The settings of a file's `{"defaults": {...}}` line, checked.

  Raises:
    InstructionError: at `file:line` for anything but an object of `DEFAULTABLE_KEYS`.
  """
  if set(obj) != {"defaults"}:
    raise InstructionError(
      f"a defaults line holds only the key 'defaults', got {sorted(obj)}", file=file, line=line
    )
  defaults = obj["defaults"]
  if not isinstance(defaults, dict):
    raise InstructionError(
      f'\'defaults\' must be an object such as {{"prompt_format": "alpaca"}}, got '
      f"{type(defaults).__name__}",
      file=file,
      line=line,
    )
  unknown = sorted(set(defaults) - set(DEFAULTABLE_KEYS))
  if unknown:
    raise InstructionError(
      f"unknown key(s) {unknown} in 'defaults'; a file can set {list(DEFAULTABLE_KEYS)}",
      file=file,
      line=line,
    )
  if "prompt_format" in defaults:
    check_prompt_format(
      defaults["prompt_format"], file=file, line=line, what="defaults.prompt_format"
    )
  return dict(defaults)


def instruction_from_dict(
  obj: Any, *, file: str, line: int, defaults: Mapping[str, Any] | None = None
) -> Instruction:
  """Builds an `Instruction` from one parsed JSONL object, checking keys, types and values.

  Args:
    obj: the parsed line.
    file: where it was read (for errors and provenance).
    line: its 1-based line number.
    defaults: the file's `defaults` (`defaults_from_dict`); the record's own keys win.

  Raises:
    InstructionError: located at `file:line`, saying which key is wrong and what is allowed.
  """

  def fail(message: str) -> InstructionError:
    return InstructionError(message, file=file, line=line)

  if not isinstance(obj, dict):
    raise fail(f"expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in REQUIRED_KEYS if k not in obj]
  if missing:
    raise fail(f"missing key(s) {missing}; every instruction needs {list(REQUIRED_KEYS)}")
  unknown = sorted(set(obj) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
  if unknown:
    raise fail(f"unknown key(s) {unknown}; allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)}")
  for key in ("id", "template", "options_format", "answer_space", "split", "source"):
    if not isinstance(obj[key], str):
      raise fail(f"{key!r} must be a string, got {type(obj[key]).__name__}")
  ident = obj["id"].strip()
  if not ident:
    raise fail("'id' is empty")
  if ident != obj["id"] or any(c.isspace() for c in ident):
    raise fail(f"'id' {obj['id']!r} must not contain whitespace")
  tasks = obj["tasks"]
  if isinstance(tasks, str):
    tasks = [tasks]
  if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
    raise fail("'tasks' must be a non-empty list of task names or globs, e.g. [\"mmlu:*\"]")
  seen_by = obj.get("seen_by", [])
  if not isinstance(seen_by, list) or not all(isinstance(s, str) and s for s in seen_by):
    raise fail("'seen_by' must be a list of model-family names, e.g. [\"flan-t5\"]")
  origin = obj.get("origin", "")
  if not isinstance(origin, str):
    raise fail("'origin' must be a string: the original template's file and id/name")
  input_template = obj.get("input_template", "")
  if not isinstance(input_template, str):
    raise fail(
      "'input_template' must be a string: the example's input, shown apart from the instruction"
    )
  prompt_format = None
  if "prompt_format" in obj:
    prompt_format = check_prompt_format(obj["prompt_format"], file=file, line=line)
  elif defaults and "prompt_format" in defaults:
    prompt_format = defaults["prompt_format"]
  if not obj["source"].strip():
    raise fail("'source' is empty; say where the phrasing comes from (human, flan_v2, p3, ...)")
  for key, allowed in (
    ("options_format", OPTIONS_FORMATS),
    ("answer_space", ANSWER_SPACES),
    ("split", SPLITS),
  ):
    if obj[key] not in allowed:
      raise fail(f"{key} {obj[key]!r} is not one of {list(allowed)}")
  instruction = Instruction(
    id=ident,
    tasks=tuple(tasks),
    template=obj["template"],
    options_format=obj["options_format"],
    answer_space=obj["answer_space"],
    split=obj["split"],
    source=obj["source"],
    seen_by=tuple(seen_by),
    file=file,
    line=line,
    origin=origin,
    input_template=input_template,
    prompt_format=prompt_format,
  )
  validate_instruction(instruction)
  return instruction


def validate_instruction(instruction: Instruction) -> None:
  """Checks the template against the instruction's formats and its tasks' fields.

  Raises:
    InstructionError: at the instruction's `file:line`.
  """
  if not instruction.template.strip():
    raise instruction.error("template is empty")
  try:
    template_placeholders(instruction.template)
  except ValueError as e:
    raise instruction.error(f"bad template: {e}") from None
  if instruction.input_template:
    if not instruction.input_template.strip():
      raise instruction.error("input_template is blank; leave it out or give the input's text")
    try:
      template_placeholders(instruction.input_template)
    except ValueError as e:
      raise instruction.error(f"bad input_template: {e}") from None
  if instruction.prompt_format is not None:
    check_prompt_format(
      instruction.prompt_format,
      file=instruction.file,
      line=instruction.line,
      what=f"instruction {instruction.id!r}: prompt_format",
    )
  # The checks below are about the whole text: a placeholder may sit in either part.
  names = instruction.placeholders
  has_options = "options" in names
  fmt, space = instruction.options_format, instruction.answer_space
  if fmt == "none" and has_options:
    raise instruction.error(
      "template uses {options} but options_format is 'none'; pick how options are shown "
      f"({[f for f in OPTIONS_FORMATS if f != 'none']})"
    )
  if fmt != "none" and not has_options:
    raise instruction.error(
      f"options_format is {fmt!r} but the template has no {{options}} placeholder; add it "
      "or set options_format to 'none'"
    )
  if space == "letters" and fmt not in LETTERED_FORMATS:
    raise instruction.error(
      "answer_space 'letters' needs the options shown with their labels: set options_format "
      f"to one of {sorted(LETTERED_FORMATS)} and put {{options}} in the template"
    )
  if space == "numbers" and fmt != "numbers":
    raise instruction.error(
      "answer_space 'numbers' needs the options shown with their labels: set options_format "
      "to 'numbers' and put {options} in the template"
    )
  for pattern in instruction.tasks:
    bench = BENCHMARK_FIELDS.get(benchmark_of(pattern))
    if bench is None:
      continue
    if bench.main not in names:
      raise instruction.error(
        f"template must contain {{{bench.main}}}: it is the content of every "
        f"{benchmark_of(pattern)} example (task {pattern!r})"
      )
    unknown = [n for n in names if n != "options" and n not in bench.fields]
    if unknown:
      raise instruction.error(
        f"unknown placeholder(s) {['{' + n + '}' for n in unknown]} for task {pattern!r}; "
        f"allowed: {sorted('{' + n + '}' for n in bench.fields | {'options'})}"
      )


def check_unique_ids(instructions: Iterable[Instruction]) -> None:
  """Raises `InstructionError` at the second occurrence of an id, across all loaded files.

  Ids are global (not per task): reports, held-out checks and resumable runs key instructions by
  id, so the shipped BIG-bench files prefix theirs with the task (`strategyqa_human_01`).
  """
  first: dict[str, Instruction] = {}
  for instruction in instructions:
    prev = first.setdefault(instruction.id, instruction)
    if prev is not instruction:
      raise instruction.error(f"duplicate id; first defined at {prev.where}")


def check_fit_all(
  instructions: Sequence[Instruction], examples_by_task: Mapping[str, Sequence[Any]]
) -> list[InstructionError]:
  """Runs `render.check_fits` for every instruction on every example of the tasks it applies to.

  Returns:
    One error per (instruction, task) that does not fit (the first failing example), so a
    collection can be checked against a benchmark before an expensive evaluation.
  """
  from robust_prompt.instructions.render import check_fits

  errors = []
  for instruction in instructions:
    for task, examples in examples_by_task.items():
      if not instruction.applies_to(task):
        continue
      for example in examples:
        try:
          check_fits(instruction, example)
        except InstructionError as e:
          errors.append(e)
          break
  return errors
