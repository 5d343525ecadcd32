"""PromptSource Jinja we map (letter layouts, loops, shuffles, guards, nested targets) and refuse.

On fixtures in PromptSource's format with our own wording (tests/fixtures/instructions/
promptsource_tree), then on the real templates in ../shared when present.
"""

import pathlib

import pytest
from helpers import mmlu_example

from robust_prompt.instructions.jinja_subset import JinjaError, split_at, strip_guard, tokenize
from robust_prompt.instructions.promptsource_import import (
  FileOptions,
  convert_template,
  find_template_files,
  import_promptsource_templates,
  list_promptsource_datasets,
  parse_answer_choices,
)
from robust_prompt.instructions.render import render
from robust_prompt.instructions.schema import InstructionError

TREE = pathlib.Path(__file__).parent / "fixtures" / "instructions" / "promptsource_tree"
MMLU = mmlu_example("Which is a metal?", ("wood", "iron", "glass", "salt"), answer=1)


@pytest.fixture(scope="module")
def imported():
  result = import_promptsource_templates(
    [TREE], ["mmlu:*"], drop=("context", "support"), original_task_only=True
  )
  return {i.id: i for i in result.instructions}, {s.name: s for s in result.skipped}


def test_letter_layouts_and_letter_answers(imported):
  by_id, _ = imported
  zipped = by_id["p3_ai2_arc_ARC_Easy_zip_letters"]
  assert (zipped.options_format, zipped.answer_space) == ("dash_letters", "letters")
  assert render(zipped, MMLU).inputs == (
    "Solve this: Which is a metal?\n\nChoices:\n- A: wood\n- B: iron\n- C: glass\n- D: salt"
  )
  assert render(zipped, MMLU).targets == ("B",)
  joined = by_id["p3_commonsense_qa_guarded_letters"]  # '. '.join loop inside a data guard
  assert (joined.options_format, joined.answer_space) == ("letters", "letters")
  assert joined.template == "Everyday question: {question}\nLetters:\n{options}"
  listed = by_id["p3_cosmos_qa_letters_after_passage"]  # A. {{ answer0 }} ... one per line
  assert (listed.options_format, listed.answer_space) == ("letters", "letters")
  assert listed.template == "{question}\nWhich letter fits best?\n{options}"


def test_shuffles_nested_targets_selecting_loops_and_constants(imported):
  by_id, _ = imported
  shuffled = by_id["p3_sciq_shuffled_picks"]
  assert shuffled.options_format == "dashes" and shuffled.answer_space == "option_text"
  assert render(shuffled, MMLU).inputs.endswith("- wood\n- iron\n- glass\n- salt\n\nPick:")
  nested = by_id["p3_ai2_arc_ARC_Easy_nested_index"]  # answer_choices[{"A":0,...}[answerKey]]
  assert nested.template == "{question}\nOptions:\n{options}"
  selecting = by_id["p3_commonsense_qa_selecting_loop"]
  assert selecting.template == "Everyday question: {question} (pick one)\n{options}"
  assert selecting.options_format == "newline"
  assert by_id["p3_sciq_closed_book"].options_format == "none"


def test_drops_where_the_phrasing_survives_and_refusals_with_reasons(imported):
  by_id, skipped = imported
  dropped = by_id["p3_cosmos_qa_dashes_after_passage"]
  assert dropped.template == "{question}\nWhich option fits best?\n{options}"  # "\n - " sep
  assert skipped["refers to passage"].kind == "drop"
  assert "still refers to it ('context')" in skipped["refers to passage"].reason
  assert "'paragraph'" in skipped["with support"].reason
  assert skipped["lowered"].kind == "filter" and "|lower" in skipped["lowered"].reason
  assert skipped["inner conditional"].kind == "jinja_logic"
  assert skipped["arrow layout"].kind == "layout" and "'A => x'" in skipped["arrow layout"].reason
  assert skipped["verify"].kind == "metadata"
  assert skipped["verify"].where.endswith("sciq/templates.yaml:43")
  assert len(by_id) == 8 and len(skipped) == 6


def test_without_drop_or_metadata_filter():
  result = import_promptsource_templates([TREE / "sciq"], ["mmlu:*"])
  reasons = {s.name: s for s in result.skipped}
  # Fixed Yes/No choices are not the example's options; an unmapped passage is named.
  assert reasons["verify"].kind == "choices" and "['Yes', 'No']" in reasons["verify"].reason
  assert (
    reasons["with support"].kind == "unmapped" and "{{support}}" in reasons["with support"].reason
  )
  bound = import_promptsource_templates(
    [TREE / "sciq"], ["mmlu:*"], bind={"support": "Plants need light."}
  )
  with_support = next(i for i in bound.instructions if i.id.endswith("with_support"))
  assert with_support.template.startswith("Use the paragraph to answer.\n\nPlants need light.")


def test_benchmark_placeholders_and_ids(imported):
  result = import_promptsource_templates(
    [TREE / "ai2_arc"], ["mmlu:*", "bigbench:strategyqa"], id_prefix="ps"
  )
  ids = sorted(i.id for i in result.instructions)
  assert ids == [
    "ps_nested_index_bigbench",
    "ps_nested_index_mmlu",
    "ps_zip_letters_bigbench",
    "ps_zip_letters_mmlu",
  ]
  big = next(i for i in result.instructions if i.id == "ps_zip_letters_bigbench")
  assert big.template.startswith("Solve this: {input}")


def test_jinja_pieces():
  tokens = tokenize('{% if k != "" %}A {{ q }}|||{{ t }}{% endif %}')
  assert [t.kind for t in strip_guard(tokens)] == ["text", "expr", "text", "expr"]
  assert len(split_at(strip_guard(tokens))) == 2
  assert [t.value for t in tokenize("a  {%- set x = 1 -%}  b")] == ["a", "set x = 1", "b"]
  assert parse_answer_choices('{{choices.label | join("|||")}}').kind == "labels"
  assert parse_answer_choices("A ||| B ||| C").fixed == ("A", "B", "C")
  assert parse_answer_choices("{{a0}} ||| {{a1}}").fields == ("a0", "a1")
  assert parse_answer_choices(None).kind == "none"
  with pytest.raises(JinjaError, match="not a list of the options"):
    parse_answer_choices("{{a0}} and more ||| x {{a1}}")
  opts = FileOptions(frozenset({"choices.text"}), ())
  template, fmt, space = convert_template(
    "Q {{question}}\n{{answer_choices | join(', ')}}?|||{{answer_choices[0]}}",
    '{{choices.text | join("|||")}}',
    opts,
    {"question": "question"},
  )
  assert (template, fmt, space) == ("Q {question}\n{options}?", "inline", "option_text")
  with pytest.raises(JinjaError, match="shown twice"):
    convert_template(
      "{{question}}\n- {{answer_choices | join('\\n- ')}}\n{{answer_choices | join('\\n')}}|||{{answer}}",
      '{{choices.text | join("|||")}}',
      opts,
      {"question": "question"},
    )
  with pytest.raises(JinjaError, match="one at a time"):
    convert_template(
      'Is it "{{answer_choices[0]}}"? {{question}}|||{{answer}}',
      '{{choices.text | join("|||")}}',
      opts,
      {"question": "question"},
    )
  with pytest.raises(JinjaError, match="not one of the answer choices") as info:
    convert_template(
      "{{question}}|||The answer is {{answer}}",
      '{{choices.text | join("|||")}}',
      opts,
      {"question": "question"},
    )
  assert info.value.kind == "answer"


def test_discovery_and_errors(tmp_path):
  assert [f.parent.name for f in find_template_files(TREE, ["ai2_arc"])] == ["ARC-Easy"]
  assert list_promptsource_datasets(TREE) == {
    "ai2_arc/ARC-Easy": 3,
    "commonsense_qa": 3,
    "cosmos_qa": 4,
    "sciq": 4,
  }
  with pytest.raises(InstructionError, match="no PromptSource templates for dataset 'nope'"):
    find_template_files(TREE, ["nope"])
  with pytest.raises(InstructionError, match="no such PromptSource templates folder"):
    find_template_files(tmp_path / "missing")


def test_real_promptsource_tree(shared_dir):
  root = shared_dir / "sources" / "promptsource" / "templates"
  datasets = list_promptsource_datasets(root)
  assert len(datasets) == 279 and sum(datasets.values()) == 2085
  result = import_promptsource_templates([root], ["mmlu:*"])
  assert len(result.instructions) + len(result.skipped) == 2085
  counts = result.skip_counts()
  # Every refusal has a reason of a known kind, and the summary counts them.
  assert set(counts) <= {
    "answer",
    "choices",
    "unmapped",
    "jinja_logic",
    "syntax",
    "filter",
    "layout",
    "misfit",
  }
  assert f"{counts['answer']:5d} skipped" in result.summary(details=False)
  # The documented example imports (the real key is ARC-Challenge under ai2_arc).
  arc = import_promptsource_templates(
    find_template_files(root, ["ai2_arc/ARC-Challenge"]), ["mmlu:*"], original_task_only=True
  )
  assert len(arc.instructions) == 5
  assert {i.options_format for i in arc.instructions} == {"dashes", "dash_letters"}
  for instruction in arc.instructions:
    assert "{{" not in render(instruction, MMLU).inputs
