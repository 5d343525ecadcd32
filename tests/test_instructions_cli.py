"""`robust-prompt instructions build|import|list-sources|check` end to end (fixture sources)."""

import json
import pathlib
import re

import pytest

from robust_prompt.cli.main import main
from robust_prompt.instructions import sources_cache
from robust_prompt.instructions.io import load_instructions

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "instructions"
FLAN_DIR = FIXTURES / "flan_v2"
P3_TREE = FIXTURES / "promptsource_tree"


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch, tmp_path):
  monkeypatch.delenv("ROBUST_PROMPT_DATA_DIR", raising=False)
  monkeypatch.setenv(sources_cache.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv("ROBUST_PROMPT_OFFLINE", "1")


def test_build_writes_a_valid_collection_and_prints_coverage(tmp_path, capsys):
  out = tmp_path / "obs" / "flan_t5_mmlu.jsonl"
  rc = main(
    [
      "instructions",
      "build",
      "--family",
      "flan_t5",
      "--benchmark",
      "mmlu",
      "--source",
      str(FLAN_DIR),
      "--output",
      str(out),
    ]
  )
  assert rc == 0
  text = capsys.readouterr().out
  assert f"built 10 observed instructions for flan_t5 on mmlu from {FLAN_DIR} -> {out}" in text
  assert "mmlu:abstract_algebra" in text and "mmlu:world_religions" in text
  assert "(not rendered on examples: pass --data_dir" in text
  assert "0 near-duplicates" in text
  loaded = load_instructions([out])
  assert len(loaded) == 10 and all(
    json.loads(line)["origin"] for line in out.read_text().splitlines()
  )


def test_build_renders_on_real_data(tmp_path, capsys, shared_dir):
  out = tmp_path / "bb.jsonl"
  rc = main(
    ["instructions", "build", "--family", "flan_t5", "--benchmark", "bigbench_lite", "--source", str(FLAN_DIR),
     "--output", str(out), "--data_dir", str(shared_dir / "data"), "--verbose"]
  )  # fmt: skip
  assert rc == 0
  text = capsys.readouterr().out
  assert "rendered/all" in text and "bigbench:winowhy" in text
  assert "skipped /" in text  # --verbose lists each skipped template


def test_leakage_makes_check_fail(tmp_path, capsys):
  observed = tmp_path / "obs.jsonl"
  assert main(["instructions", "build", "--family", "t0", "--benchmark", "mmlu", "--source", str(P3_TREE),
               "--output", str(observed)]) == 0  # fmt: skip
  copy = json.loads(observed.read_text().splitlines()[0])
  copy.update(id="human_copy", split="unobserved", source="human", seen_by=[])
  copy.pop("origin")
  mine = tmp_path / "mine.jsonl"
  mine.write_text(json.dumps(copy) + "\n")
  capsys.readouterr()
  assert main(["instructions", "check", str(observed), str(mine), "--no_shipped"]) == 1
  text = capsys.readouterr().out
  assert "human_copy" in text and "1 near-duplicates" in text
  assert main(["instructions", "check", str(observed)]) == 0
  assert "observed, 0 unobserved" in capsys.readouterr().out


def test_importers(tmp_path, capsys):
  cases = {
    "flan": ["--templates", str(FLAN_DIR / "templates.py"), "--map", "arc=mmlu:*", "--map", "openbookqa=mmlu:*",
             "--drop", "fact", "--options_format", "letters_colon"],
    "promptsource": [str(P3_TREE), "--dataset", "sciq", "--tasks", "mmlu:*", "--bind", "support=Light helps.",
                     "--original_task_only"],
    "niv2": ["--source", str(FLAN_DIR), "--task", "task228_arc_answer_generation_easy", "--tasks", "mmlu:*"],
    "alpaca": [str(FIXTURES / "alpaca_data.json"), "--tasks", "mmlu:*,bigbench:strategyqa", "--limit", "1"],
  }  # fmt: skip
  counts = {}
  for name, extra in cases.items():
    out = tmp_path / f"{name}.jsonl"
    assert main(["instructions", "import", name, *extra, "--output", str(out)]) == 0, name
    counts[name] = len(load_instructions([out]))
    assert f"wrote {counts[name]} instructions" in capsys.readouterr().out
  assert counts == {"flan": 4, "promptsource": 3, "niv2": 2, "alpaca": 2}
  flan = load_instructions([tmp_path / "flan.jsonl"])
  assert {(i.options_format, i.answer_space) for i in flan} == {("letters_colon", "letters")}


def test_list_sources(capsys):
  assert (
    main(["instructions", "list-sources", "--flan", str(FLAN_DIR), "--promptsource", str(P3_TREE)])
    == 0
  )
  text = capsys.readouterr().out
  assert "6 task keys, 14 templates (10 answer directly)" in text
  assert "natinst_v2" in text and re.search(
    r"task1286_openbookqa_question_answering +12 examples", text
  )
  assert "PromptSource" in text and re.search(r"ai2_arc/ARC-Easy +3 templates", text)
  assert main(["instructions", "list-sources", "--flan", str(FLAN_DIR), "--grep", "arc"]) == 0
  text = capsys.readouterr().out
  assert "  arc " in text and "strategyqa" not in text


@pytest.mark.parametrize(
  "argv, message",
  [
    (["build", "--family", "t0", "--benchmark", "mmlu", "--output", "x.jsonl"],
     "ROBUST_PROMPT_OFFLINE is set (offline) and the cache has no usable copy of promptsource"),
    (["build", "--family", "flan_t5", "--benchmark", "mmlu", "--source", "/nonexistent", "--output", "x.jsonl"],
     "FLAN v2 source folder lacks"),
    (["import", "flan", "--templates", "/nonexistent/templates.py", "--map", "a=mmlu:*", "--output", "x.jsonl"],
     "/nonexistent/templates.py"),
    (["import", "niv2", "--task", "t", "--tasks", "mmlu:*", "--output", "x.jsonl"],
     "needs --source FLAN_V2_DIR"),
    (["import", "flan", "--templates", str(FLAN_DIR / "templates.py"), "--map", "nope", "--output", "x.jsonl"],
     "--map 'nope' must look like NAME=VALUE"),
    (["check", str(FIXTURES / "bad" / "invalid_json.jsonl")], "invalid_json.jsonl:2: invalid JSON"),
  ],
)  # fmt: skip
def test_errors_are_messages(tmp_path, monkeypatch, capsys, argv, message):
  monkeypatch.chdir(tmp_path)
  assert main(["instructions", *argv]) == 1
  err = capsys.readouterr().err
  assert err.startswith("robust-prompt instructions: error: ") and message in err
  assert "Traceback" not in err
