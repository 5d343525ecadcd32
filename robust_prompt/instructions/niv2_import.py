"""Observed instructions from Natural-Instructions v2 task definitions, as FLAN v2 shows them.

FLAN v2 trains on Natural-Instructions v2 (NIV2) tasks by putting each task's *definition* (a
paragraph that says what to do) into one of its `natinst_v2` templates (`templates.py`:
"{Definition}\\n\\n{input}", "Definition: {Definition}\\nInput: {input}\\nOutput:", ...). FLAN
ships every definition in `constants_niv2.py` (`NATINST_META_DATA`: task name -> definition,
one positive example, number of examples). Both files are read with `ast`; neither is executed.

For a multiple-choice NIV2 task, an observed instruction for our multiple-choice tasks is: a
`natinst_v2` template, its `{Definition}` the task's definition (verbatim), its `{input}` our
question and options laid out the way the task's own positive example lays them out (e.g.
"Which part ...? \\n (A) Seat (B) Frame" -> "{question}\\n{options}" with options_format
"letters_paren_inline"), and the answer a letter, as the task's outputs are. Tasks whose
examples do not show lettered options "(A) ..." and answer with a letter are refused.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re
import string
from collections.abc import Mapping, Sequence

from robust_prompt.instructions.bindings import escape
from robust_prompt.instructions.flan_import import (
  default_placeholder_map,
  group_by_benchmark,
  read_flan_patterns,
)
from robust_prompt.instructions.import_result import ImportResult, ObservedImport, Skipped
from robust_prompt.instructions.schema import InstructionError, template_placeholders

CONSTANTS_FILE = "constants_niv2.py"
VARIABLE = "NATINST_META_DATA"
NATINST_TASK = "natinst_v2"  # FLAN's key for the templates that render NIV2 definitions
_QUESTION_PREFIX = re.compile(r"^(Question|Q)\s*:\s*")
_OPTIONS_LABEL = re.compile(r"(Options|Choices)\s*:\s*$")
_LETTER_ANSWER = re.compile(r"\(?([A-Z])\)?\.?")


@dataclasses.dataclass(frozen=True)
class NIV2Task:
  """One NIV2 task as FLAN ships it (constants_niv2.py)."""

  name: str
  definition: str
  example_input: str
  example_output: str
  number_examples: int
  line: int


def read_niv2_tasks(path: str | pathlib.Path, variable: str = VARIABLE) -> dict[str, NIV2Task]:
  """Parses `NATINST_META_DATA` of FLAN's constants_niv2.py with `ast` (no execution).

  Raises:
    InstructionError: (file:line) when the file is not Python or holds no such dict.
  """
  path = pathlib.Path(path)
  try:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  except SyntaxError as e:
    raise InstructionError(f"not valid Python: {e.msg}", file=str(path), line=e.lineno) from None
  except UnicodeDecodeError:
    raise InstructionError("not UTF-8", file=str(path), line=1) from None
  for stmt in tree.body:
    if (
      isinstance(stmt, ast.Assign)
      and len(stmt.targets) == 1
      and isinstance(stmt.targets[0], ast.Name)
      and stmt.targets[0].id == variable
      and isinstance(stmt.value, ast.Dict)
    ):
      return _tasks_of(path, stmt.value)
  raise InstructionError(
    f"no top-level `{variable} = {{...}}` dict literal found; is this FLAN's "
    "flan/v2/constants_niv2.py?",
    file=str(path),
    line=1,
  )


def _tasks_of(path: pathlib.Path, node: ast.Dict) -> dict[str, NIV2Task]:
  tasks = {}
  for key, value in zip(node.keys, node.values):
    try:
      name, meta = ast.literal_eval(key), ast.literal_eval(value)
    except ValueError:
      raise InstructionError(
        "an entry is not a literal", file=str(path), line=getattr(key, "lineno", 1)
      ) from None
    if not isinstance(name, str) or not isinstance(meta, dict):
      raise InstructionError(
        "each entry must be 'task name': {definition, positive_examples, ...}",
        file=str(path),
        line=getattr(key, "lineno", 1),
      )
    example = meta.get("positive_examples") or {}
    if isinstance(example, list):
      example = example[0] if example else {}
    if not isinstance(example, dict):
      example = {}
    tasks[name] = NIV2Task(
      name=name,
      definition=str(meta.get("definition", "")),
      example_input=str(example.get("input", "")),
      example_output=str(example.get("output", "")),
      number_examples=int(meta.get("number_examples", 0)),
      line=key.lineno,
    )
  return tasks


@dataclasses.dataclass(frozen=True)
class InputLayout:
  """How a multiple-choice NIV2 task lays out its input: prefix, question, separator, options."""

  prefix: str  # "Question: " or ""
  separator: str  # between the question and the options: " " or "\n"
  label: str  # "Options: " or ""
  options_format: str  # letters_paren_inline / letters_paren

  def template(self, main: str) -> str:
    return f"{self.prefix}{{{main}}}{self.separator}{self.label}{{options}}"


def input_layout(task: NIV2Task) -> InputLayout:
  """The lettered-options layout of `task`'s positive example.

  Raises:
    ValueError: when the example does not show options as "(A) ... (B) ..." or its output is
      not a letter.
  """
  text = task.example_input
  start = text.find("(A)")
  if start < 0 or "(B)" not in text[start:]:
    raise ValueError("its example does not list lettered options '(A) ... (B) ...'")
  if not _LETTER_ANSWER.fullmatch(task.example_output.strip()):
    raise ValueError(f"its example answers {task.example_output.strip()!r}, not a letter")
  head, options = text[:start], text[start:]
  options_format = "letters_paren" if re.search(r"\n\s*\(B\)", options) else "letters_paren_inline"
  label = ""
  m = _OPTIONS_LABEL.search(head)
  if m:
    label, head = m.group(1) + ": ", head[: m.start()]
  separator = "\n" if "\n" in head[len(head.rstrip()) :] else " "
  prefix_match = _QUESTION_PREFIX.match(head.lstrip())
  prefix = prefix_match.group(1) + ": " if prefix_match else ""
  return InputLayout(prefix, separator, label, options_format)


def import_niv2_definitions(
  constants_path: str | pathlib.Path,
  templates_path: str | pathlib.Path,
  niv2_tasks: Sequence[str],
  tasks: Sequence[str],
  *,
  placeholder_map: Mapping[str, str] | None = None,
  seen_by: Sequence[str] = ("flan-t5",),
  source: str = "niv2",
  id_prefix: str | None = None,
) -> ImportResult:
  """Observed instructions: NIV2 definitions of multiple-choice tasks in FLAN's natinst templates.

  Args:
    constants_path: FLAN's flan/v2/constants_niv2.py.
    templates_path: FLAN's flan/v2/templates.py (for `PATTERNS["natinst_v2"]`).
    niv2_tasks: NIV2 task names (e.g. "task1286_openbookqa_question_answering").
    tasks: our task names/globs, e.g. ["mmlu:*"].
    placeholder_map: overrides of `question` -> the benchmark's main field.
    seen_by: model families trained on them.
    source: the `source` recorded.
    id_prefix: ids are `<id_prefix>_<taskNNN>_<k>` (default `source`), k the natinst template.

  Raises:
    InstructionError: an unknown NIV2 task name (with close names), or no natinst templates.
  """
  constants_path, templates_path = pathlib.Path(constants_path), pathlib.Path(templates_path)
  known = read_niv2_tasks(constants_path)
  patterns, _ = read_flan_patterns(templates_path)
  if NATINST_TASK not in patterns:
    raise InstructionError(
      f"PATTERNS has no {NATINST_TASK!r} templates", file=str(templates_path), line=1
    )
  groups = group_by_benchmark(tasks)
  found = ObservedImport(source, tuple(seen_by))
  for name in niv2_tasks:
    if name not in known:
      close = [k for k in known if name.split("_")[0] == k.split("_")[0] or name in k][:5]
      raise InstructionError(
        f"NIV2 task {name!r} is not in {VARIABLE}" + (f"; did you mean {close}?" if close else ""),
        file=str(constants_path),
        line=1,
      )
    task = known[name]
    where = f"{constants_path}:{task.line}"
    try:
      layout = input_layout(task)
    except ValueError as e:
      found.skipped.append(Skipped(where, name, str(e), "layout"))
      continue
    for k, (inp, out, line) in enumerate(patterns[NATINST_TASK], start=1):
      if out.strip() != "{output}" or set(template_placeholders(inp)) != {"Definition", "input"}:
        found.skipped.append(
          Skipped(
            f"{templates_path}:{line}",
            f"{NATINST_TASK}#{k}",
            "not a definition + input template",
            "syntax",
          )
        )
        continue
      for bench, bench_tasks in groups.items():
        main = (default_placeholder_map(bench) | dict(placeholder_map or {})).get("question")
        if main is None:
          raise InstructionError(
            f"no field for the question of {bench} tasks: pass placeholder_map={{'question': ...}}"
          )
        text = _fill(inp, escape(task.definition), layout.template(main))
        ident = f"{id_prefix or source}_{name.split('_')[0]}_{k:02d}" + (
          f"_{bench}" if len(groups) > 1 else ""
        )
        found.add(
          name,
          id=ident,
          tasks=tuple(bench_tasks),
          template=text,
          options_format=layout.options_format,
          answer_space="letters",
          file=str(constants_path),
          line=task.line,
          origin=f"{constants_path.name}:{name} + {templates_path.name}:{NATINST_TASK}#{k}",
        )
  return found.result()


def _fill(natinst: str, definition: str, our_input: str) -> str:
  """Puts the definition (escaped) and our input template into a natinst template."""
  parts = []
  for literal, name, _, _ in string.Formatter().parse(natinst):
    parts.append(escape(literal))
    if name == "Definition":
      parts.append(definition)
    elif name == "input":
      parts.append(our_input)
  return "".join(parts)
