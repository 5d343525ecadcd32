"""The `Instruction` record: one phrasing of a task, with its provenance.

An instruction is a template with named placeholders (`{question}`, `{options}`, `{input}`, ...)
that turns one benchmark `Example` into model input text, plus how its answer options are shown
(`options_format`) and what the model must output (`answer_space`). Collections are JSONL files
(one instruction per line, see docs/instructions.md); `file` and `line` say where each came from
so that every error can point at the offending line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import string

# How the rendered text is wrapped for the model (`model/prompt_formats.py`). An instruction may
# declare one (`Instruction.prompt_format`); the declaration wins over the run's format.
from robust_prompt.model.prompt_formats import FORMATS as PROMPT_FORMATS  # noqa: F401

# How `{options}` is rendered (see `render.format_options`): one option a line unless inline.
OPTIONS_FORMATS = (
  "letters",  # A. x
  "letters_paren",  # (A) x
  "letters_paren_inline",  # (A) x (B) y   (one line, as Natural-Instructions inputs show them)
  "letters_colon",  # A: x
  "dash_letters",  # - A: x
  "numbers",  # 1. x
  "inline",  # x, y or z
  "newline",  # x
  "dashes",  # - x   (FLAN's OPTIONS list)
  "none",  # no {options} in the template
)
# The formats that show each option with its letter, so that a "letters" answer space is
# answerable (the model must see which letter stands for which option).
LETTERED_FORMATS = frozenset(f for f in OPTIONS_FORMATS if "letters" in f)
# What the model must output; the strings scored by rank classification.
ANSWER_SPACES = ("letters", "numbers", "option_text")
SPLITS = ("observed", "unobserved")

# Labels of the "letters" answer space; more options than this cannot be lettered.
LETTERS = string.ascii_uppercase


class InstructionError(ValueError):
  """A bad instruction (file or template) or an instruction that does not fit an example.

  The message starts with `file:line: ` when the location is known, so that editors and
  terminals can jump to it.
  """

  def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
    self.file = file
    self.line = line
    self.reason = message
    if file is not None:
      message = f"{file}:{line if line is not None else 0}: {message}"
    super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One instruction (phrasing) for one or more tasks.

  Attributes:
    id: unique across all loaded collections, e.g. "human_07", "strategyqa_human_01",
      "flan_v2_ai2_arc_03".
    tasks: task names or `fnmatch` globs it applies to, e.g. ("mmlu:*",),
      ("bigbench:strategyqa",), ("bigbench:bbq_lite_json:*",).
    template: text with named placeholders (`{question}`, `{options}`, ...); literal braces are
      written `{{` and `}}` as in `str.format`.
    options_format: how `{options}` is rendered: "letters" ("A. x\\nB. y"), "letters_paren"
      ("(A) x\\n(B) y"), "letters_paren_inline" ("(A) x (B) y"), "letters_colon" ("A: x\\nB: y"),
      "dash_letters" ("- A: x\\n- B: y"), "numbers" ("1. x\\n2. y"), "inline" ("x, y or z"),
      "newline" ("x\\ny"), "dashes" ("- x\\n- y", FLAN's OPTIONS style) or "none" (no `{options}`).
    answer_space: what the model outputs and is scored on: "letters" (A, B, ...), "numbers"
      (1, 2, ...) or "option_text" (the option strings themselves; also generative targets).
    split: "observed" (a phrasing some model saw in instruction tuning) or "unobserved".
    source: where the phrasing comes from: flan_v2, p3, niv2, alpaca, human, llm_paraphrase, ...
    seen_by: model families that saw it in instruction tuning, e.g. ("flan-t5",), ("t0",).
    file: the file it was read from (provenance for error messages).
    line: the 1-based line in `file`.
    origin: for observed instructions, the original template it was made from (source file and
      template id/name, e.g. "promptsource/templates/cos_e/v1.11/templates.yaml:<uuid>
      (question_description_option_text)"), so that provenance stays checkable; "" otherwise.
    input_template: the example's input, shown apart from the instruction (`template` is then
      the instruction alone): Alpaca's `### Input:` under the "alpaca" prompt format; the other
      formats read `template`, a blank line, then this. "" = the template holds everything.
    prompt_format: how the rendered text is wrapped for the model ("raw", "alpaca", "chat";
      `PROMPT_FORMATS`), declared by the record or its file's `defaults`; None = the run's
      format. A declared format wins over the run's.
  """

  id: str
  tasks: tuple[str, ...]
  template: str
  options_format: str
  answer_space: str
  split: str
  source: str
  seen_by: tuple[str, ...] = ()
  file: str = "<memory>"
  line: int = 0
  origin: str = ""
  input_template: str = ""
  prompt_format: str | None = None

  def applies_to(self, task: str) -> bool:
    """Whether this instruction is meant for `task` (exact name or glob match)."""
    return any(fnmatch.fnmatchcase(task, pattern) for pattern in self.tasks)

  @property
  def placeholders(self) -> tuple[str, ...]:
    """Placeholder names in order, template then input template (duplicates removed).

    Raises on malformed braces.
    """
    names = template_placeholders(self.template)
    extra = template_placeholders(self.input_template) if self.input_template else ()
    return names + tuple(n for n in extra if n not in names)

  @property
  def text(self) -> str:
    """The whole template as the "raw" format reads it: the instruction, then the input
    template after a blank line (when there is one)."""
    return f"{self.template}\n\n{self.input_template}" if self.input_template else self.template

  def format_for(self, run_format: str) -> str:
    """The prompt format this instruction is read in: its declared one, else `run_format`."""
    return self.prompt_format or run_format

  @property
  def where(self) -> str:
    return f"{self.file}:{self.line}"

  def error(self, message: str) -> InstructionError:
    """An `InstructionError` located at this instruction's file and line."""
    return InstructionError(f"instruction {self.id!r}: {message}", file=self.file, line=self.line)

  def to_json_dict(self) -> dict:
    """The JSONL representation (without file/line, which is where the line is written)."""
    out = {
      "id": self.id,
      "tasks": list(self.tasks),
      "template": self.template,
      "options_format": self.options_format,
      "answer_space": self.answer_space,
      "split": self.split,
      "source": self.source,
      "seen_by": list(self.seen_by),
    }
    if self.origin:
      out["origin"] = self.origin
    # Written only when set, so that collections without them keep their digests (run.json).
    if self.input_template:
      out["input_template"] = self.input_template
    if self.prompt_format is not None:
      out["prompt_format"] = self.prompt_format
    return out


def template_placeholders(template: str) -> tuple[str, ...]:
  """Named placeholders of a `str.format`-style template, in order of first use.

  Raises:
    ValueError: on unbalanced braces, positional (`{}`/`{0}`) or attribute/index placeholders,
      format specs or conversions, which instruction templates do not support.
  """
  names: list[str] = []
  for _, name, spec, conversion in string.Formatter().parse(template):
    if name is None:
      continue
    if not name.isidentifier():
      raise ValueError(
        f"placeholder {{{name}}} is not a plain name (positional, attribute or index "
        "placeholders are not supported; write literal braces as {{ and }})"
      )
    if spec or conversion:
      raise ValueError(f"placeholder {{{name}}} has a format spec or conversion; remove it")
    if name not in names:
      names.append(name)
  return tuple(names)
