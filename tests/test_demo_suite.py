"""The demo's toy suite (robust_prompt/demo/suite.py, instructions.py): determinism, loaders, splits."""

import json

import pytest

from robust_prompt.data import jsonl, sources
from robust_prompt.demo import instructions, suite
from robust_prompt.demo.pipeline import DemoSettings, write_suite
from robust_prompt.eval import engine
from robust_prompt.instructions.io import load_instructions
from robust_prompt.train import grouping


def test_at_least_six_multiple_choice_tasks():
  assert len(suite.TASKS) >= 6
  for task in suite.TASKS:
    for line in suite.generate_lines(task, 30, seed=0):
      assert 2 <= len(line["options"]) <= 4
      assert len(set(line["options"])) == len(line["options"])


def test_generation_is_deterministic_from_the_seed():
  for task in suite.TASKS:
    assert suite.generate_lines(task, 20, seed=3) == suite.generate_lines(task, 20, seed=3)
  # Other seeds and other streams give other examples.
  assert suite.generate_lines("toy_parity", 20, 3) != suite.generate_lines("toy_parity", 20, 4)
  assert suite.generate_lines("toy_parity", 20, 3, "eval") != suite.generate_lines(
    "toy_parity", 20, 3, "prompt_train"
  )


def test_written_files_are_identical_across_runs(tmp_path):
  a = suite.write_task_files(tmp_path / "a", 15, seed=1, stream="eval")
  b = suite.write_task_files(tmp_path / "b", 15, seed=1, stream="eval")
  for task in suite.TASKS:
    assert (a / f"{task}.jsonl").read_bytes() == (b / f"{task}.jsonl").read_bytes()


def test_answers_are_right():
  for line in suite.generate_lines("toy_parity", 50, 0):
    assert line["options"][line["answer"]] == ("even" if int(line["number"]) % 2 == 0 else "odd")
  for line in suite.generate_lines("toy_bigger", 50, 0):
    assert int(line["options"][line["answer"]]) == max(int(line["first"]), int(line["second"]))
  for line in suite.generate_lines("toy_longer", 50, 0):
    assert len(line["options"][line["answer"]]) == max(len(w) for w in line["options"])
  for line in suite.generate_lines("toy_capital", 50, 0):
    assert line["options"][line["answer"]] == suite.CAPITALS[line["country"]]
  # Labels are not degenerate: every option is the answer somewhere.
  for task in suite.TASKS:
    lines = suite.generate_lines(task, 200, 0)
    assert len({line["answer"] for line in lines}) == len(lines[0]["options"]), task


def test_unknown_task_is_a_clear_error():
  with pytest.raises(KeyError, match="toy_parity"):
    suite.generate_lines("toy_nope", 3, 0)


def test_tasks_load_through_the_project_loaders(tmp_path):
  directory = suite.write_task_files(tmp_path, 12, seed=0, stream="eval")
  names = sources.select_tasks("jsonl", str(directory))
  assert names == sorted(f"jsonl:{t}" for t in suite.TASKS)
  for name in names:
    examples = sources.load_task(name, str(directory), benchmark="jsonl")
    assert len(examples) == 12
    assert examples[0].task == name and examples[0].is_multiple_choice
  # In-memory examples are parsed exactly like the file's lines.
  lines = suite.generate_lines("toy_topic", 12, 0, "eval")
  from_file = jsonl.load_jsonl(directory / "toy_topic.jsonl")
  from_memory = suite.lines_to_examples("toy_topic", lines)
  assert [(e.id, e.fields, e.options, e.answer) for e in from_file] == [
    (e.id, e.fields, e.options, e.answer) for e in from_memory
  ]


def test_instruction_files_validate_and_sets_are_disjoint(tmp_path):
  paths = instructions.write_instruction_files(tmp_path)
  assert set(paths) == {"observed", "train", "heldout"}
  loaded = {name: load_instructions(path) for name, path in paths.items()}
  assert {i.split for i in loaded["observed"]} == {"observed"}
  assert {i.split for i in loaded["train"]} == {"unobserved"}
  assert {i.split for i in loaded["heldout"]} == {"unobserved"}
  assert all(i.source == "demo" for insts in loaded.values() for i in insts)
  # Training pool (observed + training paraphrases) vs held-out: no shared id or template.
  grouping.check_disjoint(loaded["observed"] + loaded["train"], loaded["heldout"])
  grouping.check_disjoint(loaded["observed"], loaded["train"])
  for task in suite.TASKS:
    for name in ("observed", "train", "heldout"):
      assert any(i.applies_to(f"jsonl:{task}") for i in loaded[name]), (task, name)


def test_every_instruction_renders_every_example(tmp_path):
  paths = write_suite(tmp_path, DemoSettings(eval_examples=5, train_examples=5))
  insts = load_instructions(list(paths.instructions.values()))
  for data_dir in (paths.eval_data, paths.train_data):
    tasks = {
      name: sources.load_task(name, str(data_dir), benchmark="jsonl")
      for name in sources.select_tasks("jsonl", str(data_dir))
    }
    chunks = engine.plan_chunks(tasks, insts)
    assert len(chunks) == len(insts)
    for chunk in chunks:
      for r in chunk.rendered:
        assert "{" not in r.inputs and r.options


def test_suite_files_are_plain_jsonl(tmp_path):
  directory = suite.write_task_files(tmp_path, 3, seed=0, stream="eval", tasks=["toy_capital"])
  lines = (directory / "toy_capital.jsonl").read_text().splitlines()
  assert [json.loads(x)["id"] for x in lines] == [0, 1, 2]
  assert list(directory.iterdir()) == [directory / "toy_capital.jsonl"]
