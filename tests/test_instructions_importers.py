"""FLAN v2 templates.py and PromptSource templates.yaml importers, on fixtures in their formats."""

import pathlib

import pytest

from robust_prompt.instructions.flan_import import import_flan_templates, read_flan_patterns
from robust_prompt.instructions.io import load_instructions, write_instructions
from robust_prompt.instructions.promptsource_import import import_promptsource_templates
from robust_prompt.instructions.schema import InstructionError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "instructions"
FLAN = FIXTURES / "flan_templates.py"
P3 = FIXTURES / "promptsource_templates.yaml"


def test_flan_file_is_parsed_not_executed():
  # The fixture raises at import time and imports a package that does not exist.
  patterns, skipped = read_flan_patterns(FLAN)
  assert set(patterns) == {
    "toy_arc",
    "toy_trivia",
    "toy_nli",
    "toy_braces",
    "toy_arc_copy",
    "toy_extra",
  }
  assert (
    patterns["toy_arc"][1][0] == "Toy question, pick an option: {question}\n{options_}\nAnswer:"
  )
  assert patterns["toy_arc_copy"] == patterns["toy_arc"]
  assert [(s.name, s.reason) for s in skipped] == [("toy_dynamic", "value is not a literal list")]


def test_flan_import_maps_placeholders_and_options():
  result = import_flan_templates(
    FLAN,
    {"toy_arc": ["mmlu:*"], "toy_trivia": ["bigbench:hindu_knowledge"], "toy_nli": ["mmlu:*"]},
    seen_by=("flan-t5", "flan-palm"),
  )
  by_id = {i.id: i for i in result.instructions}
  assert sorted(by_id) == [
    "flan_v2_toy_arc_01",
    "flan_v2_toy_arc_02",
    "flan_v2_toy_arc_03",
    "flan_v2_toy_trivia_01",
  ]
  arc = by_id["flan_v2_toy_arc_02"]
  assert arc.template == "Toy question, pick an option: {question}\nOPTIONS:\n{options}\nAnswer:"
  assert (arc.options_format, arc.answer_space, arc.split, arc.source) == (
    "dashes",
    "option_text",
    "observed",
    "flan_v2",
  )
  assert arc.seen_by == ("flan-t5", "flan-palm") and arc.file == str(FLAN) and arc.line == 17
  trivia = by_id["flan_v2_toy_trivia_01"]
  assert trivia.template == "Trivia time! {input}" and trivia.options_format == "none"
  reasons = {(s.name, s.reason.split(" ")[0]) for s in result.skipped}
  # The question-generation template, the chain-of-thought one and the unmapped NLI one.
  assert ("toy_arc", "output") in reasons and ("toy_trivia", "output") in reasons
  assert any(s.name == "toy_nli" and "{premise}" in s.reason for s in result.skipped)
  assert "skipped" in result.summary()


def test_flan_import_placeholder_map_braces_and_benchmark_groups():
  result = import_flan_templates(
    FLAN,
    {"toy_nli": ["bigbench:strategyqa"], "toy_braces": ["mmlu:*", "bigbench:strategyqa"]},
    placeholder_map={"premise": "input", "hypothesis": "question"},
  )
  by_id = {i.id: i for i in result.instructions}
  assert by_id["flan_v2_toy_nli_01"].template == (
    "{input}\nDoes it follow that {question}?\nOPTIONS:\n{options}"
  )
  assert by_id["flan_v2_toy_braces_01_mmlu"].template.startswith(
    "Set notation {{a, b}}: {question}"
  )
  assert by_id["flan_v2_toy_braces_01_bigbench"].tasks == ("bigbench:strategyqa",)


def test_flan_errors():
  with pytest.raises(InstructionError, match="'nope' is not in PATTERNS"):
    import_flan_templates(FLAN, {"nope": ["mmlu:*"]})
  with pytest.raises(InstructionError, match="no top-level `OTHER"):
    read_flan_patterns(FLAN, variable="OTHER")


def test_promptsource_import():
  result = import_promptsource_templates(P3, ["mmlu:*"])
  by_id = {i.id: i for i in result.instructions}
  assert sorted(by_id) == [
    "p3_toy_qa_easy_toy_dashes",
    "p3_toy_qa_easy_toy_inline",
    "p3_toy_qa_easy_toy_loop",
    "p3_toy_qa_easy_toy_no_options",
  ]
  dashes = by_id["p3_toy_qa_easy_toy_dashes"]
  assert dashes.template == "Here is a toy question: {question}\nChoose one:\n{options}"
  assert (dashes.options_format, dashes.answer_space, dashes.source, dashes.seen_by) == (
    "dashes",
    "option_text",
    "p3",
    ("t0",),
  )
  assert dashes.line == 6
  assert by_id["p3_toy_qa_easy_toy_inline"].template == "{question} Could it be {options}?"
  assert by_id["p3_toy_qa_easy_toy_inline"].options_format == "inline"
  assert by_id["p3_toy_qa_easy_toy_no_options"].options_format == "none"
  # A loop over the dataset's labels and texts: lettered options, the answer still the text.
  loop = by_id["p3_toy_qa_easy_toy_loop"]
  assert loop.template == "Toy quiz.\n{question}\n{options}"
  assert (loop.options_format, loop.answer_space) == ("letters_paren", "option_text")
  assert loop.origin == "promptsource:toy_qa/easy:0a000000-0000-4000-8000-000000000003 (toy_loop)"
  skipped = {s.name: (s.reason, s.kind) for s in result.skipped}
  assert set(skipped) == {"toy_letter_target", "toy_fact"}
  assert "no answer_choices" in skipped["toy_letter_target"][0]
  assert skipped["toy_letter_target"][1] == "answer"
  assert "{{fact1}}" in skipped["toy_fact"][0] and skipped["toy_fact"][1] == "unmapped"
  assert "2 skipped" not in result.summary() and "1 skipped: a placeholder" in result.summary()


def test_promptsource_placeholder_map_and_newline_join():
  result = import_promptsource_templates(
    [P3], ["bigbench:hindu_knowledge"], placeholder_map={"fact1": "task_prefix"}, seen_by=()
  )
  fact = next(i for i in result.instructions if i.id.endswith("toy_fact"))
  assert fact.template == "Background: {task_prefix}\nToy question: {input}\n{options}"
  assert fact.options_format == "newline" and fact.seen_by == ()


def test_imported_instructions_round_trip_through_jsonl(tmp_path):
  flan = import_flan_templates(FLAN, {"toy_arc": ["mmlu:*"], "toy_braces": ["mmlu:*"]})
  p3 = import_promptsource_templates(P3, ["mmlu:*"])
  out = tmp_path / "observed.jsonl"
  write_instructions(flan.instructions + p3.instructions, out)
  loaded = load_instructions([out])
  assert [i.to_json_dict() for i in loaded] == [
    i.to_json_dict() for i in flan.instructions + p3.instructions
  ]
  assert all(i.split == "observed" for i in loaded)


def test_promptsource_bad_yaml(tmp_path):
  bad = tmp_path / "templates.yaml"
  bad.write_text("dataset: x\ntemplates:\n  a: !Template\n    jinja: 'x\n  - : :\n")
  with pytest.raises(InstructionError, match=r"templates\.yaml:\d+: invalid YAML"):
    import_promptsource_templates(bad, ["mmlu:*"])
  bad.write_text("dataset: x\n")
  with pytest.raises(InstructionError, match="`templates:` mapping"):
    import_promptsource_templates(bad, ["mmlu:*"])


def test_command_line_importers_and_leakage_check(tmp_path, capsys):
  from robust_prompt.instructions import flan_import, leakage, promptsource_import

  flan_out, p3_out = tmp_path / "flan.jsonl", tmp_path / "p3.jsonl"
  assert (
    flan_import.main(
      [
        str(FLAN),
        "--map",
        "toy_arc=mmlu:*",
        "--map",
        "toy_nli=mmlu:*",
        "--placeholder",
        "premise=question",
        "--placeholder",
        "hypothesis=subject",
        "--id_prefix",
        "flan_mmlu",
        "--out",
        str(flan_out),
      ]
    )
    == 0
  )
  assert (
    promptsource_import.main(
      [str(P3), "--tasks", "mmlu:*", "--seen_by", "t0,t0pp", "--out", str(p3_out)]
    )
    == 0
  )
  loaded = load_instructions([tmp_path])
  assert {i.id for i in loaded} >= {"flan_mmlu_toy_arc_01", "flan_mmlu_toy_nli_01"}
  assert next(i for i in loaded if i.source == "p3").seen_by == ("t0", "t0pp")
  assert "skipped" in capsys.readouterr().out
  # An unobserved copy of an imported phrasing is caught by the leakage command (exit status 1).
  copy = tmp_path / "mine.jsonl"
  copy.write_text(
    '{"id": "human_99", "tasks": ["mmlu:*"], "template": "Toy question, pick an option: '
    '{question}\\nOPTIONS:\\n{options}\\nAnswer:", "options_format": "dashes", "answer_space": '
    '"option_text", "split": "unobserved", "source": "human"}\n'
  )
  assert leakage.main([str(tmp_path)]) == 1
  assert "human_99" in capsys.readouterr().out
  copy.unlink()
  assert leakage.main([str(tmp_path)]) == 0


FLAN_DIR = FIXTURES / "flan_v2"


def test_flan_lettered_options_no_options_variant_and_drops():
  from robust_prompt.instructions.flan_import import strip_options

  lettered = import_flan_templates(
    FLAN_DIR / "templates.py", {"arc": ["mmlu:*"]}, options_format="letters_paren"
  )
  first = lettered.instructions[0]
  assert (first.options_format, first.answer_space) == ("letters_paren", "letters")
  assert first.origin == "templates.py:arc#1"
  noopt = import_flan_templates(
    FLAN_DIR / "flan_templates_branched.py", {"arc": ["mmlu:*"]}, no_options=True
  )
  assert [i.template for i in noopt.instructions] == [
    "{question}",
    "Quiz item (old style): {question}",
    "Think it over: {question}",
  ]
  assert all(i.id.endswith("_noopt") and i.options_format == "none" for i in noopt.instructions)
  assert strip_options("A {options_}\n\n{options_str} B") == "A  B"
  dropped = import_flan_templates(
    FLAN_DIR / "templates.py", {"openbookqa": ["mmlu:*"]}, drop=["fact"]
  )
  assert [i.template for i in dropped.instructions] == ["{question}\n\nOPTIONS:\n{options}"]
  assert [s.kind for s in dropped.skipped] == ["drop"]
  bound = import_flan_templates(
    FLAN_DIR / "templates.py", {"openbookqa": ["mmlu:*"]}, bind={"fact": "heat rises"}
  )
  assert bound.instructions[1].template.startswith("Keeping in mind that heat rises, settle")
  with pytest.raises(ValueError, match="choose a list layout"):
    import_flan_templates(FLAN, {"toy_arc": ["mmlu:*"]}, options_format="none")


def test_flan_task_listing_and_real_files(shared_dir):
  from robust_prompt.instructions.flan_import import list_flan_tasks

  assert list_flan_tasks(FLAN_DIR / "templates.py")["arc"] == (4, 3)
  tasks = list_flan_tasks(shared_dir / "sources" / "flan_v2" / "templates.py")
  assert len(tasks) == 120 and sum(n for n, _ in tasks.values()) == 1290
  assert tasks["arc"] == (10, 7) and tasks["natinst_v2"] == (10, 0)
  branched = list_flan_tasks(shared_dir / "sources" / "flan_v2" / "flan_templates_branched.py")
  assert "arc" in branched and "natinst_v2" not in branched
  # The documented example: FLAN's key is "arc" (not "ai2_arc"); openbookqa keeps what survives
  # without its fact.
  result = import_flan_templates(
    shared_dir / "sources" / "flan_v2" / "templates.py",
    {"arc": ["mmlu:*"], "openbookqa": ["mmlu:*"]},
    drop=["fact"],
  )
  assert len(result.instructions) == 8
  with pytest.raises(InstructionError, match="'ai2_arc' is not in PATTERNS"):
    import_flan_templates(
      shared_dir / "sources" / "flan_v2" / "templates.py", {"ai2_arc": ["mmlu:*"]}
    )
