"""Rendering an Example through an Instruction: every options_format / answer_space, and misfits."""

import pytest
from helpers import example, instruction, mmlu_example

from robust_prompt.data.example import Example
from robust_prompt.instructions.render import Rendered, check_fits, format_options, render
from robust_prompt.instructions.schema import InstructionError
from robust_prompt.instructions.validate import check_fit_all


def make(template, options_format, answer_space, tasks=("mmlu:*",), **kw):
  return instruction(
    template,
    id=kw.pop("id", "t_01"),
    tasks=tuple(tasks),
    options_format=options_format,
    answer_space=answer_space,
    file="x.jsonl",
    line=7,
  )


MMLU = mmlu_example("Which bone is longest? ", ("Femur", "Tibia ", "Ulna"), 0, subject="anatomy")
BB = example(
  "bigbench:strategyqa",
  {"input": "Can a cat swim?", "question": "Can a cat swim?"},
  ("Yes", "No"),
  0,
)


def test_letters():
  r = render(make("About {subject}: {question}\n{options}\nAnswer:", "letters", "letters"), MMLU)
  assert r == Rendered(
    inputs="About anatomy: Which bone is longest?\nA. Femur\nB. Tibia\nC. Ulna\nAnswer:",
    options=("A", "B", "C"),
    answer=0,
    correct=(0,),
    targets=("A",),
  )


def test_numbers():
  r = render(make("{options}\n{question}", "numbers", "numbers"), MMLU)
  assert r.inputs == "1. Femur\n2. Tibia\n3. Ulna\nWhich bone is longest?"
  assert r.options == ("1", "2", "3") and r.targets == ("1",)


def test_option_text_inline():
  r = render(make("{question} Is it {options}?", "inline", "option_text"), MMLU)
  assert r.inputs == "Which bone is longest? Is it Femur, Tibia or Ulna?"
  assert r.options == ("Femur", "Tibia", "Ulna") and r.targets == ("Femur",)
  two = render(make("{input} {options}?", "inline", "option_text", ("bigbench:*",)), BB)
  assert two.inputs == "Can a cat swim? Yes or No?"


def test_option_text_newline_dashes_and_none():
  assert render(make("{question}\n{options}", "newline", "option_text"), MMLU).inputs == (
    "Which bone is longest?\nFemur\nTibia\nUlna"
  )
  r = render(make("{question}\nOPTIONS:\n{options}", "dashes", "option_text"), MMLU)
  assert r.inputs == "Which bone is longest?\nOPTIONS:\n- Femur\n- Tibia\n- Ulna"
  r = render(make("Q: {input}\nA:", "none", "option_text", ("bigbench:strategyqa",)), BB)
  assert r.inputs == "Q: Can a cat swim?\nA:" and r.options == ("Yes", "No")


def test_several_correct_options_keep_answer_first_in_targets():
  ex = example("bigbench:t", {"input": "x"}, ("a", "b", "c"), 1, correct=(1, 2))
  r = render(make("{input}\n{options}", "letters", "letters", ("bigbench:t",)), ex)
  assert r.answer == 1 and r.correct == (1, 2) and r.targets == ("B", "C")


def test_generative_example():
  ex = Example(
    id="bigbench:g:0", task="bigbench:g", fields={"input": "2+2="}, targets=("4", "four")
  )
  r = render(make("Compute: {input}", "none", "option_text", ("bigbench:g",)), ex)
  assert r == Rendered("Compute: 2+2=", (), None, (), ("4", "four"))
  with pytest.raises(InstructionError, match="generative"):
    check_fits(make("{input}\n{options}", "letters", "letters", ("bigbench:g",)), ex)


def test_letters_do_not_fit_more_than_26_options():
  ex = example("bigbench:many", {"input": "pick"}, [f"o{i}" for i in range(30)], 3)
  with pytest.raises(InstructionError, match=r"^x\.jsonl:7: .*30 options, more than the 26"):
    render(make("{input}\n{options}", "letters", "letters", ("bigbench:*",)), ex)
  # A letters *display* with a text answer space cannot letter them either.
  with pytest.raises(InstructionError, match="26"):
    check_fits(make("{input}\n{options}", "letters", "option_text", ("bigbench:*",)), ex)
  r = render(make("{input}\n{options}", "numbers", "numbers", ("bigbench:*",)), ex)
  assert r.options[-1] == "30" and r.inputs.endswith("30. o29")


def test_misfits_are_located_errors():
  with pytest.raises(InstructionError, match=r"^x\.jsonl:7: .*does not apply"):
    check_fits(make("{input}", "none", "option_text", ("bigbench:other",)), BB)
  with pytest.raises(InstructionError, match=r"\{subject\} has no field"):
    check_fits(make("{subject}: {input}", "none", "option_text", ("bigbench:*",)), BB)
  errors = check_fit_all(
    [make("{subject}: {input}", "none", "option_text", ("bigbench:*",))],
    {"bigbench:strategyqa": [BB, BB], "mmlu:anatomy": [MMLU]},
  )
  assert len(errors) == 1 and "subject" in str(errors[0])


def test_format_options_edge_cases():
  assert format_options("inline", ["only"]) == "only"
  assert format_options("none", ["a", "b"]) == ""
  with pytest.raises(ValueError):
    format_options("bullets", ["a"])


def test_field_values_with_braces_are_not_reinterpreted():
  ex = mmlu_example("Is {1, 2} a set? {options}", ("yes", "no"), 0)
  r = render(make("{{Q}} {question}\n{options}", "letters", "letters"), ex)
  assert r.inputs == "{Q} Is {1, 2} a set? {options}\nA. yes\nB. no"


@pytest.mark.parametrize(
  "options_format, shown",
  [
    ("letters_paren", "(A) Femur\n(B) Tibia\n(C) Ulna"),
    ("letters_paren_inline", "(A) Femur (B) Tibia (C) Ulna"),
    ("letters_colon", "A: Femur\nB: Tibia\nC: Ulna"),
    ("dash_letters", "- A: Femur\n- B: Tibia\n- C: Ulna"),
  ],
)
def test_lettered_layouts_for_every_instruction_file(options_format, shown):
  assert format_options(options_format, MMLU.options) == shown
  # Loaded from a file like any instruction: the layouts are not only the importers'.
  from robust_prompt.instructions.validate import instruction_from_dict

  instruction = instruction_from_dict(
    dict(
      id="l_01",
      tasks=["mmlu:*"],
      template="{question}\n{options}\nLetter:",
      options_format=options_format,
      answer_space="letters",
      split="unobserved",
      source="human",
    ),
    file="l.jsonl",
    line=1,
  )
  r = render(instruction, MMLU)
  assert r.inputs == f"Which bone is longest?\n{shown}\nLetter:"
  assert r.options == ("A", "B", "C") and r.targets == ("A",)
  text = render(make("{question}\n{options}", options_format, "option_text"), MMLU)
  assert text.options == ("Femur", "Tibia", "Ulna")


def test_letters_answer_needs_a_lettered_layout():
  from robust_prompt.instructions.validate import validate_instruction

  with pytest.raises(InstructionError, match="answer_space 'letters' needs the options shown"):
    validate_instruction(make("{question}\n{options}", "dashes", "letters"))
  with pytest.raises(InstructionError, match="answer_space 'numbers' needs"):
    validate_instruction(make("{question}\n{options}", "letters_paren", "numbers"))
  many = mmlu_example("q", [str(i) for i in range(27)], 0, index=1)
  with pytest.raises(InstructionError, match="more than the 26 letters"):
    check_fits(make("{question}\n{options}", "dash_letters", "option_text"), many)
