"""Observed collections per model family: recipes on fixtures, and the targets on ../shared."""

import dataclasses
import pathlib

import pytest
from helpers import instruction, mmlu_example

from robust_prompt.data import sources
from robust_prompt.instructions import build
from robust_prompt.instructions.io import default_instruction_dir, load_instructions
from robust_prompt.instructions.leakage import check_leakage
from robust_prompt.instructions.schema import Instruction, InstructionError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "instructions"
FLAN_DIR = FIXTURES / "flan_v2"
P3_TREE = FIXTURES / "promptsource_tree"
MMLU = mmlu_example("Is {x} a set?", ("yes", "no"), answer=0)


def test_flan_t5_mmlu_recipe_on_fixtures():
  built = build.build("flan_t5", "mmlu", FLAN_DIR)
  ids = [i.id for i in built.instructions]
  # Five curated NIV2 tasks x the fixture's two natinst templates.
  assert len(ids) == 10 and ids[:2] == ["niv2_task1286_01", "niv2_task1286_02"]
  assert all(i.seen_by == ("flan-t5",) and i.source == "niv2" for i in built.instructions)
  assert all(i.answer_space == "letters" and i.origin for i in built.instructions)
  assert built.source == str(FLAN_DIR)


def test_flan_t5_bigbench_recipe_by_category_on_fixtures():
  built = build.build("flan_t5", "bigbench_lite", FLAN_DIR)
  cover = build.coverage(built.instructions, build.default_tasks("bigbench_lite"))
  # Multiple-choice tasks also get arc/openbookqa; strategyqa also gets FLAN's strategyqa.
  assert cover["bigbench:hindu_knowledge"] > cover["bigbench:winowhy"] > 0
  assert cover["bigbench:strategyqa"] == cover["bigbench:winowhy"] + 1
  by_template = {i.template: i for i in built.instructions}
  # One phrasing from two FLAN tasks is kept once and serves the tasks of both.
  reply = by_template["{input}\nOPTIONS:\n{options}\nReply:"]
  assert reply.applies_to("bigbench:winowhy") and reply.applies_to("bigbench:hindu_knowledge")
  assert any(s.kind == "duplicate" for s in built.result.skipped)
  # FLAN v2's no-options variant, from the FLAN 2021 file for FLAN 2021's tasks.
  assert by_template["Quiz item (old style): {input}"].origin.startswith(
    "flan_templates_branched.py:arc#2"
  )
  assert by_template["True or false, in short: {input}"].tasks == (
    "bigbench:strategyqa",
    "bigbench:strategyqa:*",
  )


def test_t0_recipe_on_fixtures_reports_missing_datasets():
  built = build.build("t0", "mmlu", P3_TREE)
  by_id = {i.id: i for i in built.instructions}
  assert by_id["p3_ai2_arc_ARC_Easy_zip_letters"].seen_by == ("t0+", "t0pp")
  assert by_id["p3_sciq_closed_book"].seen_by == ("t0", "t0+", "t0pp")
  assert "p3_sciq_verify" not in by_id  # original_task: false
  missing = {s.name for s in built.result.skipped if s.kind == "missing"}
  assert "quail" in missing and "sciq" not in missing
  bigbench = build.build("t0", "bigbench_lite", P3_TREE)
  assert all(i.id.startswith("p3_bb_") for i in bigbench.instructions)
  assert all("{input}" in i.template for i in bigbench.instructions)


def test_alpaca_recipe_and_source_errors(tmp_path):
  built = build.build("alpaca", "mmlu", FIXTURES / "alpaca_data.json")
  assert [i.id for i in built.instructions] == ["alpaca_00000", "alpaca_00002"]
  with pytest.raises(InstructionError, match="no pinned copy.*pass --source"):
    build.build("alpaca", "mmlu")
  with pytest.raises(InstructionError, match=r"lacks \['flan_templates_branched.py'"):
    (tmp_path / "templates.py").write_text("PATTERNS = {}\n")
    (tmp_path / "constants_niv2.py").write_text("NATINST_META_DATA = {}\n")
    build.build("flan_t5", "mmlu", tmp_path)
  with pytest.raises(InstructionError, match="no PromptSource templates"):
    build.build("t0", "mmlu", tmp_path)
  with pytest.raises(InstructionError, match="unknown family 'gpt'"):
    build.build("gpt", "mmlu", tmp_path)
  with pytest.raises(InstructionError, match="unknown benchmark"):
    build.build("t0", "glue", P3_TREE)


def make(template: str, **kw) -> Instruction:
  fields = dict(
    id="u_01", options_format="dashes", answer_space="option_text", split="observed", source="p3"
  )
  return instruction(template, **(fields | kw))


def test_unfilled_template_syntax_is_found_and_field_braces_are_not():
  assert build.unfilled_placeholders(make("{question}\n{options}"), MMLU) == []
  left = make("{{{{ context }}}} {{answer}} {question}\n{options}")
  assert build.unfilled_placeholders(left, MMLU) == ["{{", "}}", "{answer}"]
  ok, problems = build.check_renders(
    [left, make("{question}\n{options}", id="u_02")], {"mmlu:x": [MMLU]}
  )
  assert ok == {"mmlu:x": 1}
  assert len(problems) == 1 and "u_01" in problems[0] and "left unfilled in mmlu:x:0" in problems[0]
  misfit = make("{question} {subject}", tasks=("jsonl:*",), options_format="none")
  other = dataclasses.replace(MMLU, task="jsonl:t", fields={"question": "q"})
  _, problems = build.check_renders([misfit], {"jsonl:t": [other]})
  assert "placeholder {subject} has no field" in problems[0]


def test_coverage_table():
  table = build.format_coverage(
    {"flan_t5": {"mmlu:a": 3, "mmlu:b": 2}, "t0": {"mmlu:a": 1}},
    {"flan_t5": {"mmlu:a": 3, "mmlu:b": 1}},
  )
  assert table.splitlines() == [
    "task    flan_t5  t0",
    "------  -------  --",
    "mmlu:a        3   1",
    "mmlu:b      1/2   -",
  ]


# -- the targets, on the real sources and data ----------------------------------------------


@pytest.fixture(scope="module")
def real(shared_dir):
  data = {b: sources.load_benchmark(b, shared_dir / "data") for b in build.BENCHMARKS}
  shipped = load_instructions([default_instruction_dir()])
  return shared_dir / "sources", data, shipped


@pytest.mark.parametrize(
  "family, benchmark, source, per_task",
  [
    ("flan_t5", "mmlu", "flan_v2", 20),
    ("t0", "mmlu", "promptsource", 10),
    ("flan_t5", "bigbench_lite", "flan_v2", 5),
  ],
)
def test_targets_on_real_sources(real, family, benchmark, source, per_task):
  root, data, shipped = real
  built = build.build(family, benchmark, root / source)
  examples = data[benchmark]
  if benchmark == "mmlu":
    assert len(examples) == 57
  ok, problems = build.check_renders(built.instructions, examples)
  assert problems == []
  own = [i for i in built.instructions if build.family_tag(family) in i.seen_by]
  for task, count in build.coverage(own, examples).items():
    # Every one of them renders (no placeholder left) on every example of every task.
    assert count >= per_task, (task, count)
    assert ok[task] == build.coverage(built.instructions, [task])[task]
  assert all(
    i.split == "observed" and i.source and i.origin and i.seen_by for i in built.instructions
  )
  report = check_leakage([*built.instructions, *shipped], warn=False)
  assert report.ok, str(report)
  assert report.num_unobserved == len(shipped) > 100
