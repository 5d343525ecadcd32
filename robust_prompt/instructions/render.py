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
from robust_prompt.model import prompt_formats


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
    instruction_text / input_text: the two parts of `inputs` when the instruction shows the
      input apart (`Instruction.input_template`): `inputs` is the instruction text, a blank
      line, then the input text. Both "" otherwise: `inputs` is one text.
  """

  inputs: str
  options: tuple[str, ...]
  answer: int | None
  correct: tuple[int, ...]
  targets: tuple[str, ...]
  instruction_text: str = ""
  input_text: str = ""

  def parts(self) -> tuple[str, str]:
    """`(instruction, input)` as the prompt formats take them; `(inputs, "")` when not split."""
    if self.input_text:
      return self.instruction_text, self.input_text
    return self.inputs, ""


def model_input(rendered: Rendered, prompt_format: str, tokenizer_config=None) -> str:
  """The text the model reads: `rendered` in `prompt_format` (`model/prompt_formats.py`).

  "raw" is `rendered.inputs` exactly; "alpaca" uses Alpaca's with-input wrapper when the
  instruction shows its input apart (`Rendered.parts`), its without-input wrapper otherwise;
  "chat" puts `inputs` in one user turn of the tokenizer's chat template.

  Raises:
    ValueError: an unknown format, or "chat" without a chat template in `tokenizer_config`.
  """
  if prompt_format == "raw":
    return rendered.inputs
  instruction_text, input_text = rendered.parts()
  return prompt_formats.format_input(prompt_format, instruction_text, input_text, tokenizer_config)


def check_prompt_formats(
  instructions: Sequence[Instruction], run_format: str, tokenizer_config=None
) -> dict[str, str]:
  """Each instruction's prompt format (`Instruction.format_for`), checked against the tokenizer.

  Args:
    instructions: the instructions of a run.
    run_format: the run's format, for instructions that declare none.
    tokenizer_config: the model's tokenizer settings (`DecoderVocabulary.tokenizer_config`).

  Returns:
    Instruction id -> the format it is read in.

  Raises:
    InstructionError: at the first instruction whose format cannot be applied (e.g. "chat" for
      a tokenizer without a chat template), naming its file:line and where the format came from.
  """
  out, ok = {}, set()
  for instruction in instructions:
    fmt = instruction.format_for(run_format)
    if fmt not in ok:
      try:
        prompt_formats.format_input(fmt, "instruction", "", tokenizer_config)
      except ValueError as e:
        where = (
          "declared by the instruction or its file" if instruction.prompt_format else "the run's"
        )
        raise instruction.error(f"prompt_format {fmt!r} ({where}): {e}") from None
      ok.add(fmt)
    out[instruction.id] = fmt
  return out


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
  inputs = _fill(instruction.template, values)
  split = {}
  if instruction.input_template:
    input_text = _fill(instruction.input_template, values)
    # The join the "raw" format makes of an instruction and its input (a blank line), so that
    # a model reading `inputs` sees the same text whichever part a placeholder sits in.
    split = {"instruction_text": inputs, "input_text": input_text}
    inputs = prompt_formats.user_turn(inputs, input_text)
  if not example.options:
    return Rendered(inputs, (), None, (), tuple(example.targets), **split)
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
    **split,
  )


def _fill(template: str, values: dict[str, str]) -> str:
  """`template` with its placeholders replaced by `values`, stripped."""
  parts = []
  for literal, name, _, _ in string.Formatter().parse(template):
    parts.append(literal)
    if name is not None:
      parts.append(values[name])
  return "".join(parts).strip()
