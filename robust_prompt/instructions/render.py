"""Rendering an `Example` through an `Instruction` into model input and scored options.

The answer options are shown in the input according to `options_format` and scored according to
`answer_space`: with letters the model is scored on "A", "B", ...; with numbers on "1", "2", ...;
with option_text on the option strings themselves. Option order is never changed, so `answer` and
`correct` index the same positions as in the example.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

from robust_prompt.instructions.schema import LETTERED_FORMATS, LETTERS, Instruction


@dataclasses.dataclass(frozen=True)
class Rendered:
  """One example rendered through one instruction.

  Attributes:
    inputs: the model input text (without EOS; vocabularies add it).
    options: the strings to score, one per option (`O` of them): "A".."D", "1".."4" or the
      option texts; () for generative examples.
    answer: index of the first correct option (None for generative examples).
    correct: all correct option indices.
    targets: training targets: the strings of the correct options (`targets[0]` is the one for
      `answer`) for multiple choice, the example's references for generative examples.
  """

  inputs: str
  options: tuple[str, ...]
  answer: int | None
  correct: tuple[int, ...]
  targets: tuple[str, ...]


def answer_labels(answer_space: str, options: Sequence[str]) -> tuple[str, ...]:
  """The strings the model is scored on for `options` under `answer_space`."""
  if answer_space == "letters":
    if len(options) > len(LETTERS):
      raise ValueError(f"{len(options)} options cannot be lettered (at most {len(LETTERS)})")
    return tuple(LETTERS[: len(options)])
  if answer_space == "numbers":
    return tuple(str(i + 1) for i in range(len(options)))
  if answer_space == "option_text":
    return tuple(options)
  raise ValueError(f"unknown answer_space {answer_space!r}")


# Lettered layouts: how one option is shown with its letter (`{label}`, `{text}`).
LETTER_ITEMS = {
  "letters": "{label}. {text}",
  "letters_paren": "({label}) {text}",
  "letters_paren_inline": "({label}) {text}",
  "letters_colon": "{label}: {text}",
  "dash_letters": "- {label}: {text}",
}


def format_options(options_format: str, options: Sequence[str]) -> str:
  """The text that replaces `{options}`.

  "letters" -> "A. x\\nB. y"; "letters_paren" -> "(A) x\\n(B) y"; "letters_paren_inline" ->
  "(A) x (B) y"; "letters_colon" -> "A: x\\nB: y"; "dash_letters" -> "- A: x\\n- B: y";
  "numbers" -> "1. x\\n2. y"; "inline" -> "x, y or z"; "newline" -> "x\\ny"; "dashes" ->
  "- x\\n- y" (FLAN's OPTIONS list); "none" -> "".
  """
  opts = [o.strip() for o in options]
  if options_format in LETTER_ITEMS:
    item = LETTER_ITEMS[options_format]
    lines = [
      item.format(label=label, text=o) for label, o in zip(answer_labels("letters", opts), opts)
    ]
    return (" " if options_format == "letters_paren_inline" else "\n").join(lines)
  if options_format == "numbers":
    return "\n".join(f"{i + 1}. {o}" for i, o in enumerate(opts))
  if options_format == "inline":
    if len(opts) <= 1:
      return "".join(opts)
    return ", ".join(opts[:-1]) + " or " + opts[-1]
  if options_format == "newline":
    return "\n".join(opts)
  if options_format == "dashes":
    return "\n".join(f"- {o}" for o in opts)
  if options_format == "none":
    return ""
  raise ValueError(f"unknown options_format {options_format!r}")


def check_fits(instruction: Instruction, example: Any) -> None:
  """Raises `InstructionError` (at the instruction's file:line) when it cannot render `example`.

  Checks that the instruction is meant for the example's task, that every placeholder has a
  field, and that the option presentation and answer space work for the example's options
  (e.g. letters for more than 26 options, or `{options}` for a generative example, do not).
  """
  where = f"example {example.id!r} of task {example.task!r}"
  if not instruction.applies_to(example.task):
    raise instruction.error(f"does not apply to {where} (tasks: {list(instruction.tasks)})")
  for name in instruction.placeholders:
    if name != "options" and name not in example.fields:
      raise instruction.error(
        f"placeholder {{{name}}} has no field in {where}; its fields are "
        f"{sorted(example.fields)} (plus {{options}})"
      )
  n = len(example.options)
  if n == 0:
    if instruction.options_format != "none" or instruction.answer_space != "option_text":
      raise instruction.error(
        f"{where} is generative (no options), so the instruction must use options_format "
        f"'none' and answer_space 'option_text' (it has {instruction.options_format!r}, "
        f"{instruction.answer_space!r})"
      )
    return
  lettered = instruction.options_format in LETTERED_FORMATS or instruction.answer_space == "letters"
  if lettered and n > len(LETTERS):
    raise instruction.error(
      f"{where} has {n} options, more than the {len(LETTERS)} letters; use numbers or "
      "option_text for this task"
    )


def render(instruction: Instruction, example: Any) -> Rendered:
  """Renders `example` (a `robust_prompt.data.example.Example`) through `instruction`.

  Raises:
    InstructionError: when the instruction does not fit the example (see `check_fits`).
  """
  check_fits(instruction, example)
  values = {k: str(v).strip() for k, v in example.fields.items()}
  values["options"] = format_options(instruction.options_format, example.options)
  parts = []
  for literal, name, _, _ in string.Formatter().parse(instruction.template):
    parts.append(literal)
    if name is not None:
      parts.append(values[name])
  inputs = "".join(parts).strip()
  if not example.options:
    return Rendered(inputs, (), None, (), tuple(example.targets))
  options = answer_labels(instruction.answer_space, [o.strip() for o in example.options])
  correct = tuple(example.correct)
  order = [example.answer] if example.answer is not None else []
  order += [c for c in correct if c not in order]
  return Rendered(
    inputs=inputs,
    options=options,
    answer=example.answer,
    correct=correct,
    targets=tuple(options[i] for i in order),
  )
