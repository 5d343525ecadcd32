"""Alpaca's wrapper around the multiple-choice instructions of alpaca_data.json (fixture file)."""

import pathlib

import pytest

from robust_prompt.data.example import Example
from robust_prompt.instructions.alpaca_import import (
  import_alpaca_instructions,
  is_multiple_choice,
  read_alpaca_records,
)
from robust_prompt.instructions.render import render
from robust_prompt.instructions.schema import InstructionError

DATA = pathlib.Path(__file__).parent / "fixtures" / "instructions" / "alpaca_data.json"
MMLU = Example(
  id="mmlu:x:0",
  task="mmlu:x",
  fields={"question": "Which is a metal?", "subject": "x"},
  options=("wood", "iron"),
  answer=1,
  correct=(1,),
)


def test_records_with_their_lines():
  records = read_alpaca_records(DATA)
  assert [line for line, _ in records] == [2, 7, 12, 17, 22, 27]
  assert records[2][1]["output"] == "scissors"


def test_selection_and_wrapper():
  result = import_alpaca_instructions(DATA, ["mmlu:*"])
  assert [i.id for i in result.instructions] == ["alpaca_00000", "alpaca_00002"]
  first, second = result.instructions
  assert (first.answer_space, second.answer_space) == ("letters", "option_text")
  assert (first.seen_by, first.source, first.origin, first.line) == (
    ("alpaca",),
    "alpaca",
    "alpaca_data.json#0",
    2,
  )
  r = render(first, MMLU)
  assert r.inputs.startswith("Below is an instruction that describes a task, paired with an input")
  assert r.inputs.endswith(
    "### Instruction:\nChoose the correct answer from the options below.\n\n"
    "### Input:\nWhich is a metal?\nA. wood\nB. iron\n\n### Response:"
  )
  assert r.targets == ("B",)
  # The wrapper is in the template already: declared "raw", so no run format wraps it again.
  assert first.prompt_format == "raw" and first.to_json_dict()["prompt_format"] == "raw"
  reasons = sorted(s.reason for s in result.skipped)
  assert reasons == [
    "no input: the question is not separate from the instruction",
    "not a multiple-choice instruction",
    "same instruction as record 0",
    "the instruction holds its own question",
  ]
  assert import_alpaca_instructions(DATA, ["mmlu:*"], limit=1).instructions[0].id == "alpaca_00000"
  assert (
    is_multiple_choice({"instruction": "Pick the right option.", "input": "x", "output": ""})
    is None
  )


@pytest.mark.parametrize(
  "text, message",
  [
    ('{"a": 1}', "expected a JSON list"),
    ('[\n  {"instruction": "x", "input": "y"}\n]', r":2: each record must be an object"),
    ('[\n  {"instruction": "x",\n  "input": }\n]', r":3: invalid JSON"),
  ],
)
def test_bad_files(tmp_path, text, message):
  path = tmp_path / "alpaca_data.json"
  path.write_text(text, encoding="utf-8")
  with pytest.raises(InstructionError, match=message):
    read_alpaca_records(path)
