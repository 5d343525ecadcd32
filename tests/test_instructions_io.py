"""Instruction files: loading, the JSONL format, and one bad-input test per validation rule."""

import json
import pathlib

import helpers
import pytest

from robust_prompt.instructions.io import (
  instructions_for_task,
  load_instructions,
  read_instruction_file,
  write_instructions,
)
from robust_prompt.instructions.schema import Instruction, InstructionError, template_placeholders
from robust_prompt.instructions.validate import instruction_from_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "instructions"
BAD = FIXTURES / "bad"

# fixture file (its line 2 is bad) -> a fragment the error message must contain.
BAD_FILES = {
  "invalid_json": "invalid JSON",
  "unknown_placeholder": "unknown placeholder(s) ['{passage}']",
  "missing_main_field": "must contain {question}",
  "bigbench_without_input": "must contain {input}",
  "missing_options_placeholder": "has no {options} placeholder",
  "letters_answer_unlabelled": "answer_space 'letters' needs the options shown with their labels",
  "options_with_format_none": "uses {options} but options_format is 'none'",
  "empty_template": "template is empty",
  "bad_split": "split 'seen' is not one of ['observed', 'unobserved']",
  "bad_options_format": "options_format 'bullets' is not one of",
  "bad_answer_space": "answer_space 'words' is not one of",
  "missing_key": "missing key(s) ['source']",
  "unknown_key": "unknown key(s) ['notes']",
  "unbalanced_brace": "bad template",
  "positional_placeholder": "is not a plain name",
  "empty_id": "'id' is empty",
  "duplicate_id": "duplicate id",
  "tasks_not_a_list": "'tasks' must be a non-empty list",
}


def test_every_bad_fixture_is_covered():
  assert {p.stem for p in BAD.glob("*.jsonl")} == set(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_reports_file_and_line(name):
  path = BAD / f"{name}.jsonl"
  with pytest.raises(InstructionError) as info:
    load_instructions([path])
  message = str(info.value)
  assert message.startswith(f"{path}:2: "), message
  assert BAD_FILES[name] in message
  assert info.value.file == str(path) and info.value.line == 2


def test_duplicate_id_across_files():
  with pytest.raises(InstructionError, match=r"b\.jsonl:3: .*duplicate id.*a\.jsonl:1"):
    load_instructions([FIXTURES / "dup_across"])
  # Each file alone is fine (comments and blank lines are skipped, line numbers still count).
  assert [i.line for i in read_instruction_file(FIXTURES / "dup_across" / "b.jsonl")] == [3]


def test_same_id_for_different_tasks_is_rejected(tmp_path):
  # Ids are global: reports and held-out checks key instructions by id alone.
  rows = [
    dict(id="human_01", tasks=["mmlu:*"], template="{question}\n{options}"),
    dict(id="human_01", tasks=["bigbench:strategyqa"], template="{input}\n{options}"),
  ]
  path = tmp_path / "x.jsonl"
  path.write_text(
    "\n".join(
      json.dumps(
        dict(
          r, options_format="letters", answer_space="letters", split="unobserved", source="human"
        )
      )
      for r in rows
    )
  )
  with pytest.raises(InstructionError, match=r"x\.jsonl:2: .*duplicate id; first defined at .*:1"):
    load_instructions(path)
  # Lists built in code (not by load_instructions) are checked when selecting a task's instructions.
  made = [
    instruction_from_dict(
      dict(
        json.loads(line),
        tasks=["mmlu:*"],
        template="{question}",
        options_format="none",
        answer_space="option_text",
      ),
      file="m",
      line=n,
    )
    for n, line in enumerate(path.read_text().splitlines(), 1)
  ]
  with pytest.raises(InstructionError, match=r"^m:2: .*duplicate id"):
    instructions_for_task(made, "mmlu:anatomy")


def test_missing_paths_and_empty_dirs(tmp_path):
  with pytest.raises(InstructionError, match="no such instruction file"):
    load_instructions([tmp_path / "nope.jsonl"])
  with pytest.raises(InstructionError, match="holds no"):
    load_instructions([tmp_path])


def _p3_instruction(template: str, **fields) -> Instruction:
  """An instruction as the PromptSource importer makes them: observed, from P3, seen by T0."""
  return helpers.instruction(template, split="observed", source="p3", seen_by=("t0",), **fields)


def _write_and_load(instruction: Instruction, path: pathlib.Path) -> Instruction:
  """`instruction` written alone to `path`, then loaded back from it."""
  assert write_instructions([instruction], path) == 1
  (back,) = load_instructions([path])
  return back


def test_write_read_round_trip_and_applies_to(tmp_path):
  instruction = _p3_instruction(
    "Passage {{braces}}: {input}\n{options}",
    id="p3_x_1",
    tasks=("bigbench:bbq_lite_json", "bigbench:bbq_lite_json:*"),
    options_format="numbers",
    answer_space="numbers",
  )
  path = tmp_path / "out" / "x.jsonl"
  back = _write_and_load(instruction, path)
  assert dataclasses_equal_but_provenance(back, instruction)
  assert back.file == str(path) and back.line == 1
  assert back.applies_to("bigbench:bbq_lite_json")
  assert back.applies_to("bigbench:bbq_lite_json:age_ambig")
  assert not back.applies_to("bigbench:strategyqa")
  assert back.placeholders == ("input", "options")


def dataclasses_equal_but_provenance(a: Instruction, b: Instruction) -> bool:
  return a.to_json_dict() == b.to_json_dict()


def test_template_placeholders():
  assert template_placeholders("{a} {{lit}} {b} {a}") == ("a", "b")
  for bad in ("{a", "a}", "{}", "{0}", "{a.b}", "{a[0]}", "{a:>3}", "{a!r}"):
    with pytest.raises(ValueError):
      template_placeholders(bad)


LINE = (
  '{"id": "enc_01", "tasks": ["mmlu:*"], "template": "{question}\\n{options}", '
  '"options_format": "letters", "answer_space": "letters", "split": "unobserved", '
  '"source": "human"}\n'
)


def test_byte_order_mark_is_accepted(tmp_path):
  path = tmp_path / "bom.jsonl"
  path.write_bytes(b"\xef\xbb\xbf" + LINE.encode("utf-8"))
  (instruction,) = load_instructions([path])
  assert instruction.id == "enc_01" and instruction.line == 1


def test_non_utf8_file_names_file_and_line(tmp_path):
  path = tmp_path / "latin1.jsonl"
  bad = LINE.replace("enc_01", "enc_02").replace("{question}", "Caf\u00e9 {question}")
  path.write_bytes(("# comment\n" + LINE + bad).encode("latin-1"))
  with pytest.raises(InstructionError) as info:
    load_instructions([path])
  message = str(info.value)
  assert message.startswith(f"{path}:3: not UTF-8: byte 0xe9 at column "), message
  assert "re-save the file with UTF-8" in message


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n// and another\n"])
def test_empty_instruction_file_is_an_error(tmp_path, content):
  path = tmp_path / "empty.jsonl"
  path.write_bytes(content)
  with pytest.raises(InstructionError, match=rf"^{path}:1: file holds no instructions"):
    load_instructions([path])
  # Within a folder too: the empty file is named.
  (tmp_path / "good.jsonl").write_text(LINE, encoding="utf-8")
  with pytest.raises(InstructionError, match="empty.jsonl:1: file holds no instructions"):
    load_instructions([tmp_path])


def test_origin_round_trips_and_must_be_a_string(tmp_path):
  instruction = _p3_instruction(
    "{question}\n{options}",
    id="p3_x_2",
    options_format="dash_letters",
    origin="promptsource:x:uuid (name)",
  )
  back = _write_and_load(instruction, tmp_path / "o.jsonl")
  assert back.origin == "promptsource:x:uuid (name)"
  assert back.to_json_dict() == instruction.to_json_dict()
  assert "origin" not in dataclasses_replace_origin(instruction).to_json_dict()
  with pytest.raises(InstructionError, match="'origin' must be a string"):
    instruction_from_dict(dict(json.loads(LINE), origin=3), file="f", line=1)


def dataclasses_replace_origin(instruction: Instruction) -> Instruction:
  import dataclasses

  return dataclasses.replace(instruction, origin="")
