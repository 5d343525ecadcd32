"""BIG-bench JSON task loader: every task folder in ../shared/data/bigbench_lite, plus variants."""

import json
import pathlib

import pytest

from robust_prompt.data import bigbench, sources
from robust_prompt.data.example import DataError


def _expected(task_dir: pathlib.Path) -> list[dict]:
  """Expected examples computed straight from the JSON (independently of the loader)."""
  files = [task_dir / "task.json"] + sorted(task_dir.glob("*/task.json"))
  out = []
  for path in files:
    data = json.loads(path.read_text(encoding="utf-8"))
    for raw in data.get("examples", []):
      scores = raw["target_scores"]
      options = list(scores.keys())
      top = max(scores.values())
      out.append(
        {
          "input": raw["input"],
          "options": options,
          "correct": [i for i, o in enumerate(options) if scores[o] == top],
          "subtask": None if path.parent == task_dir else path.parent.name,
          "append": data.get("append_choices_to_input", True),
          "output_prefix": data.get("example_output_prefix", "\nA: "),
        }
      )
  return out


def _task_dirs():
  root = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bigbench_lite"
  return (
    sorted(p.name for p in root.iterdir() if (p / "task.json").is_file()) if root.is_dir() else []
  )


def test_shared_folders_are_lite_tasks(bigbench_lite_dir):
  assert len(bigbench.LITE_TASKS) == 14
  folders = _task_dirs()
  assert len(folders) == 10 and set(folders) <= set(bigbench.LITE_TASKS)


@pytest.mark.parametrize("task", _task_dirs() or ["strategyqa"])
def test_every_task_folder_loads(bigbench_lite_dir, task):
  examples = bigbench.load_task(bigbench_lite_dir, f"bigbench:{task}")
  expected = _expected(bigbench_lite_dir / task)
  assert len(examples) == len(expected) > 0
  for ex, exp in zip(examples, expected):
    assert ex.task == f"bigbench:{task}"
    assert ex.fields["input"] == exp["input"]
    assert list(ex.options) == exp["options"]
    assert list(ex.correct) == exp["correct"] and ex.answer == exp["correct"][0]
    assert ex.metadata["subtask"] == exp["subtask"]
    assert ex.targets == ()
    prompt = ex.fields["default_prompt"]
    assert prompt.endswith(exp["output_prefix"]) and exp["input"] in prompt
    # Choices appear in BIG-bench's own prompt only when the task asks for it.
    assert all(o in prompt for o in ex.options) or not exp["append"]
  assert len({ex.id for ex in examples}) == len(examples)


def test_subtasks_by_name_and_ids(bigbench_lite_dir):
  whole = bigbench.load_task(bigbench_lite_dir, "bigbench:logical_deduction")
  three = bigbench.load_task(bigbench_lite_dir, "bigbench:logical_deduction:three_objects")
  assert len(whole) == 1500 and len(three) == 300
  assert three[0].task == "bigbench:logical_deduction:three_objects"
  # Same stable id whether the subtask is loaded alone or through its parent.
  assert {e.id for e in three} <= {e.id for e in whole}
  assert three[0].id == "bigbench:logical_deduction:three_objects:0"
  fmt = three[0].metadata["bigbench"]
  assert fmt["task_prefix"].startswith("The following paragraphs each describe a set of three")
  assert fmt["append_choices_to_input"] is False and fmt["choice_prefix"] == ""
  with pytest.raises(DataError, match="subtasks of logical_deduction"):
    bigbench.load_task(bigbench_lite_dir, "bigbench:logical_deduction:nine_objects")


def test_prefix_defaults_and_default_prompt(bigbench_lite_dir):
  ku = bigbench.load_task(bigbench_lite_dir, "bigbench:known_unknowns")[0]
  fmt = ku.metadata["bigbench"]
  assert fmt["example_input_prefix"] == "\nQ: " and fmt["example_output_prefix"] == "\nA: "
  assert ku.fields["default_prompt"] == (
    "\nQ: " + ku.fields["input"] + "\n  choice: " + "\n  choice: ".join(ku.options) + "\nA: "
  )
  sqa = bigbench.load_task(bigbench_lite_dir, "bigbench:strategyqa")[0]
  assert sqa.options == ("Yes", "No") and sqa.metadata["target"][0].startswith("Yes.")
  assert sqa.fields["question"] == sqa.fields["input"]


@pytest.mark.parametrize(
  "task", sorted(set(bigbench.LITE_TASKS) - set(_task_dirs())) or ["winowhy"]
)
def test_missing_lite_task_error(tmp_path, task):
  with pytest.raises(DataError) as e:
    bigbench.load_task(tmp_path, f"bigbench:{task}")
  text = str(e.value)
  assert f"not found at {tmp_path / task / 'task.json'}" in text
  assert f"github.com/google/BIG-bench bigbench/benchmark_tasks/{task}/" in text


def test_lite_listing_marks_missing_tasks(bigbench_lite_dir):
  infos = sources.list_tasks("bigbench_lite", bigbench_lite_dir.parent)
  assert [i.name for i in infos] == [f"bigbench:{t}" for t in bigbench.LITE_TASKS]
  present = {i.name.split(":")[1] for i in infos if i.available}
  assert present == set(_task_dirs())
  assert all("github.com/google/BIG-bench" in i.problem for i in infos if not i.available)


def _task(tmp_path, name, body) -> pathlib.Path:
  path = tmp_path / name / "task.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(body) if not isinstance(body, str) else body, encoding="utf-8")
  return path


def test_generative_multi_correct_and_float_scores(tmp_path):
  # Shapes seen in other BIG-bench JSON tasks: generative `target` (string or list of strings),
  # fractional scores with several maximal options, per-example `comment`.
  _task(
    tmp_path,
    "toy",
    {
      "name": "toy",
      "task_prefix": "Do it.\n",
      "stop_string": "\n",
      "examples": [
        {"input": "1+1=", "target": "2"},
        {"input": "capital of France?", "target": ["Paris", "paris"], "comment": "two refs"},
        {"input": "pick", "target_scores": {"a": 0.25, "b": 1.0, "c": 1.0, "d": 0}},
      ],
    },
  )
  ex = bigbench.load_task(tmp_path, "bigbench:toy")
  assert ex[0].targets == ("2",) and ex[0].options == () and ex[0].answer is None
  assert ex[1].targets == ("Paris", "paris") and ex[1].metadata["comment"] == "two refs"
  assert ex[2].options == ("a", "b", "c", "d") and ex[2].answer == 1 and ex[2].correct == (1, 2)
  assert ex[0].fields["task_prefix"] == "Do it.\n"
  assert ex[0].metadata["bigbench"]["stop_string"] == "\n"
  assert ex[0].fields["default_prompt"] == "Do it.\n\nQ: 1+1=\nA: "
  assert [i.name for i in sources.list_tasks("bigbench", tmp_path)] == ["bigbench:toy"]


@pytest.mark.parametrize(
  "examples, message",
  [
    ([{"target": "x"}], r"examples\[0\]: needs a string 'input'"),
    ([{"input": "a", "target": "b"}, {"input": "q"}], r"examples\[1\]: needs 'target_scores'"),
    ([{"input": "q", "target_scores": {"a": "1"}}], "are not numbers"),
    ([{"input": "q", "target_scores": {}}], "non-empty object"),
    ([{"input": "q", "target": 3}], "'target' must be a string or a list"),
    (
      [
        {"input": "q", "target_scores": {"a": 1, "b": 0}},
        {"input": "r", "target_scores": {"a": 1}},
      ],
      r"examples\[1\] of task bigbench:bad: 'target_scores' has a single option \('a'\)",
    ),
  ],
)
def test_malformed_examples(tmp_path, examples, message):
  path = _task(tmp_path, "bad", {"name": "bad", "examples": examples})
  with pytest.raises(DataError, match=message) as e:
    bigbench.load_task(tmp_path, "bigbench:bad")
  assert str(e.value).startswith(str(path))


def test_invalid_json_names_line(tmp_path):
  path = _task(tmp_path, "broken", '{"name": "broken",\n "examples": [\n  {"input": "x",}\n]}')
  with pytest.raises(DataError) as e:
    bigbench.load_task(tmp_path, "bigbench:broken")
  assert str(e.value).startswith(f"{path}:3: invalid JSON")


def test_bad_names(tmp_path):
  with pytest.raises(DataError, match="bad BIG-bench task name"):
    bigbench.parse_name("bigbench:a:b:c")
  _task(tmp_path, "empty", {"name": "empty", "examples": []})
  with pytest.raises(DataError, match="no examples"):
    bigbench.load_task(tmp_path, "bigbench:empty")


def test_not_utf8_task_json_names_file_and_line(tmp_path):
  path = tmp_path / "latin" / "task.json"
  path.parent.mkdir()
  path.write_bytes(
    '{"name": "latin",\n "examples": [{"input": "caf\u00e9", "target": "x"}]}'.encode("cp1252")
  )
  with pytest.raises(DataError) as e:
    bigbench.load_task(tmp_path, "bigbench:latin")
  assert str(e.value).startswith(f"{path}:2: not UTF-8 (byte 0xe9 at column 29)")


def test_shuffle_options_follows_answers_and_is_seeded(bigbench_lite_dir):
  """The study's conceptual_combinations setting: one seeded RNG in example order reorders every
  example's options; the answer moves with its option (BIG-bench lists it first)."""
  from robust_prompt.data import option_order, sources

  task = "bigbench:conceptual_combinations"
  plain = sources.load_task(task, str(bigbench_lite_dir), benchmark="bigbench_lite")
  assert all(ex.answer == 0 for ex in plain[:20])  # why the study shuffled
  a = option_order.apply(task, plain, [(task, 42)])
  b = option_order.apply(f"{task}:contradictions", plain, [(task, 42)])  # a subtask is covered
  assert a == b and a != plain
  assert [ex.options for ex in a] != [ex.options for ex in option_order.shuffle_options(plain, 1)]
  for before, after in zip(plain, a):
    assert sorted(before.options) == sorted(after.options)
    assert after.options[after.answer] == before.options[before.answer]
  assert len({ex.answer for ex in a}) > 1
  assert option_order.apply("bigbench:strategyqa", plain, [(task, 42)]) == list(plain)
