"""Natural-Instructions v2 definitions in FLAN's natinst_v2 templates (fixture + real files)."""

import pathlib

import pytest
from helpers import mmlu_example

from robust_prompt.instructions.niv2_import import (
  import_niv2_definitions,
  input_layout,
  read_niv2_tasks,
)
from robust_prompt.instructions.render import render
from robust_prompt.instructions.schema import InstructionError

FLAN_DIR = pathlib.Path(__file__).parent / "fixtures" / "instructions" / "flan_v2"
CONSTANTS, TEMPLATES = FLAN_DIR / "constants_niv2.py", FLAN_DIR / "templates.py"
MMLU = mmlu_example("Which is a metal?", ("wood", "iron", "glass", "salt"), answer=1)


def test_read_definitions_without_running_the_file():
  tasks = read_niv2_tasks(CONSTANTS)
  assert len(tasks) == 6
  task = tasks["task1286_openbookqa_question_answering"]
  assert task.definition.startswith("Pick the lettered option") and task.number_examples == 12
  assert task.line == 5 and task.example_output == "A"


def test_layouts_follow_each_tasks_example():
  tasks = read_niv2_tasks(CONSTANTS)
  inline = input_layout(tasks["task1286_openbookqa_question_answering"])
  assert inline.template("question") == "{question} {options}"
  assert input_layout(tasks["task228_arc_answer_generation_easy"]).template("q") == "{q}\n{options}"
  labelled = input_layout(tasks["task1135_xcsr_en_commonsense_mc_classification"])
  assert labelled.template("question") == "Question: {question}\nOptions: {options}"
  assert labelled.options_format == "letters_paren_inline"
  with pytest.raises(ValueError, match="does not list lettered options"):
    input_layout(tasks["task1420_mathqa_general"])


def test_import_renders_definition_verbatim_and_letter_answers():
  result = import_niv2_definitions(
    CONSTANTS,
    TEMPLATES,
    ["task1286_openbookqa_question_answering", "task1420_mathqa_general"],
    ["mmlu:*"],
  )
  assert [i.id for i in result.instructions] == ["niv2_task1286_01", "niv2_task1286_02"]
  second = result.instructions[1]
  assert second.origin == (
    "constants_niv2.py:task1286_openbookqa_question_answering + templates.py:natinst_v2#2"
  )
  r = render(second, MMLU)
  # The definition's own braces stay literal text.
  assert r.inputs == (
    "Task: Pick the lettered option that answers the quiz item. Reply with its letter {A-D}.\n"
    "Item: Which is a metal? (A) wood (B) iron (C) glass (D) salt\nReply:"
  )
  assert r.options == ("A", "B", "C", "D") and r.targets == ("B",)
  assert [(s.name, s.kind) for s in result.skipped] == [("task1420_mathqa_general", "layout")]
  with pytest.raises(InstructionError, match="'task1286_openbook' is not in NATINST_META_DATA"):
    import_niv2_definitions(CONSTANTS, TEMPLATES, ["task1286_openbook"], ["mmlu:*"])


def test_real_constants(shared_dir):
  folder = shared_dir / "sources" / "flan_v2"
  tasks = read_niv2_tasks(folder / "constants_niv2.py")
  assert len(tasks) == 1654
  result = import_niv2_definitions(
    folder / "constants_niv2.py",
    folder / "templates.py",
    ["task228_arc_answer_generation_easy", "task309_race_answer_generation"],
    ["mmlu:*"],
  )
  assert len(result.instructions) == 20  # both show "(A) ..." options and answer with letters
  assert all(i.answer_space == "letters" for i in result.instructions)
