"""BIG-bench JSON tasks (google/BIG-bench `bigbench/benchmark_tasks/<task>/task.json`) as `Example`s.

Any of BIG-bench's JSON tasks loads the same way. A task folder holds either `task.json` with an
`examples` list, or (tasks with subtasks) a `task.json` without examples plus one sub-folder per
subtask, each with its own `task.json` (and its own prefixes). Examples carry `input` and

  * `target_scores` (multiple choice, option -> score): `options` are the keys in file order,
    `correct` every option with the maximal score, `answer` the first of them;
  * and/or `target` (a string or a list of strings): generative references. When an example has
    both (e.g. strategyqa's explanations) it is multiple choice and `target` goes to `metadata`.

Task names are `bigbench:<task>` (all subtasks together, `metadata["subtask"]` says which) and
`bigbench:<task>:<subtask>`. The task-level prompt keys (`task_prefix`, `example_input_prefix`,
`example_output_prefix`, `choice_prefix`, `append_choices_to_input`) are kept in
`metadata["bigbench"]` (with BIG-bench's defaults filled in) and as the fields `task_prefix` and
`default_prompt` (the zero-shot prompt BIG-bench itself would show), so that an instruction can
reuse them or replace them. `input` is also exposed as `question` so that generic
multiple-choice templates apply.
"""

from __future__ import annotations

import json
import numbers
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from robust_prompt import text_files
from robust_prompt.data.example import DataError, Example

# The multiple-choice tasks of BIG-bench Lite (BBL24 without its generative tasks).
LITE_TASKS: tuple[str, ...] = (
  "bbq_lite_json", "code_line_description", "conceptual_combinations", "hindu_knowledge",
  "known_unknowns", "language_identification", "logic_grid_puzzle", "logical_deduction",
  "novel_concepts", "play_dialog_same_or_different", "strange_stories", "strategyqa",
  "vitaminc_fact_verification", "winowhy",
)  # fmt: skip

# Defaults of BIG-bench's JSON task API for keys a task.json may omit.
FORMAT_DEFAULTS: dict[str, Any] = {
  "task_prefix": "",
  "example_input_prefix": "\nQ: ",
  "example_output_prefix": "\nA: ",
  "choice_prefix": "\n  choice: ",
  "append_choices_to_input": True,
  "few_shot_example_separator": "\n",
}


def source_hint(task: str) -> str:
  return f"get it from github.com/google/BIG-bench bigbench/benchmark_tasks/{task}/"


def parse_name(name: str) -> tuple[str, str | None]:
  """ "bigbench:<task>[:<subtask>]" (or "<task>[:<subtask>]") -> (task, subtask or None)."""
  parts = name.split(":")
  if parts[0] == "bigbench":
    parts = parts[1:]
  if not 1 <= len(parts) <= 2 or not all(parts):
    raise DataError(
      f"bad BIG-bench task name {name!r}: use bigbench:<task> or bigbench:<task>:<subtask>"
    )
  return parts[0], (parts[1] if len(parts) == 2 else None)


def task_dir(bigbench_dir: str | os.PathLike, task: str) -> pathlib.Path:
  """The folder of `task`; raises `DataError` naming the expected path when it is absent."""
  path = pathlib.Path(bigbench_dir) / task
  if not (path / "task.json").is_file():
    raise DataError(f"BIG-bench task {task} not found at {path / 'task.json'}; {source_hint(task)}")
  return path


def subtasks(path: str | os.PathLike) -> list[str]:
  """Names of the subtask folders (each with a task.json) of a task folder, sorted."""
  return sorted(p.parent.name for p in pathlib.Path(path).glob("*/task.json"))


def list_tasks(bigbench_dir: str | os.PathLike) -> list[str]:
  """Every task folder (with a task.json) in `bigbench_dir`, as `bigbench:<task>` names."""
  return [
    f"bigbench:{p.parent.name}" for p in sorted(pathlib.Path(bigbench_dir).glob("*/task.json"))
  ]


def read_task_json(path: str | os.PathLike) -> dict:
  """The JSON object of a task.json file.

  Raises:
    DataError: `file:line: ...` when it is not UTF-8 or not valid JSON, or not an object.
  """
  path = pathlib.Path(path)
  try:
    data = json.loads(text_files.read_text(path, error=DataError))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
  if not isinstance(data, dict):
    raise DataError(f"{path}: a BIG-bench task.json must hold a JSON object")
  return data


# Other task-level keys kept when a task.json has them (generation and scoring settings).
OPTIONAL_KEYS = ("output_regex", "stop_string", "preferred_score", "metrics")


def task_format(data: Mapping[str, Any]) -> dict[str, Any]:
  """The task-level prompt keys with BIG-bench's defaults filled in (+ `OPTIONAL_KEYS` present)."""
  fmt = {key: data.get(key, default) for key, default in FORMAT_DEFAULTS.items()}
  fmt.update({key: data[key] for key in OPTIONAL_KEYS if key in data})
  return fmt


def default_prompt(fmt: Mapping[str, Any], text: str, options: tuple[str, ...]) -> str:
  """The zero-shot prompt BIG-bench builds: prefixes, input, choices (if appended), output prefix.

  Choices are listed in file order (BIG-bench shuffles them with a fixed seed).
  """
  prompt = fmt["task_prefix"] + fmt["example_input_prefix"] + text
  if options and fmt["append_choices_to_input"]:
    prompt += fmt["choice_prefix"] + fmt["choice_prefix"].join(options)
  return prompt + fmt["example_output_prefix"]


def _example(path, index: int, raw: Any, name: str, fmt: dict, subtask: str | None) -> Example:
  where = f"{path}: examples[{index}]"
  if not isinstance(raw, dict):
    raise DataError(f"{where}: each example must be a JSON object, got {type(raw).__name__}")
  text = raw.get("input")
  if not isinstance(text, str):
    raise DataError(f"{where}: needs a string 'input' (got {type(text).__name__})")
  metadata: dict[str, Any] = {
    "file": str(path),
    "index": index,
    "subtask": subtask,
    "bigbench": fmt,
  }
  if "comment" in raw:
    metadata["comment"] = raw["comment"]
  target = raw.get("target")
  if target is not None:
    refs = (
      (target,) if isinstance(target, str) else tuple(target) if isinstance(target, list) else None
    )
    if refs is None or not all(isinstance(t, str) for t in refs):
      raise DataError(f"{where}: 'target' must be a string or a list of strings")
  scores = raw.get("target_scores")
  options: tuple[str, ...] = ()
  answer, correct, targets = None, (), ()
  if scores is not None:
    if not isinstance(scores, dict) or not scores:
      raise DataError(f"{where}: 'target_scores' must be a non-empty object (option -> score)")
    bad = [k for k, v in scores.items() if isinstance(v, bool) or not isinstance(v, numbers.Real)]
    if bad:
      raise DataError(f"{where}: target_scores of {bad[:3]} are not numbers")
    options = tuple(scores)
    if len(options) < 2:
      # Rank classification over one option always "predicts" the answer: the example would
      # count as correct under every instruction and inflate accuracy, so refuse it.
      raise DataError(
        f"{where} of task {name}: 'target_scores' has a single option ({options[0]!r}); a "
        "multiple-choice example needs at least 2 (fix or remove the example)"
      )
    best = max(scores.values())
    correct = tuple(i for i, o in enumerate(options) if scores[o] == best)
    answer = correct[0]
    metadata["target_scores"] = dict(scores)
    if target is not None:
      metadata["target"] = list(refs)
  elif target is not None:
    if not refs:
      raise DataError(f"{where}: 'target' is an empty list")
    targets = refs
  else:
    raise DataError(f"{where}: needs 'target_scores' (multiple choice) or 'target' (generative)")
  fields = {
    "input": text,
    "question": text,
    "task_prefix": fmt["task_prefix"],
    "default_prompt": default_prompt(fmt, text, options),
  }
  id_name = name if subtask is None or name.endswith(f":{subtask}") else f"{name}:{subtask}"
  return Example(
    id=f"{id_name}:{index}",
    task=name,
    fields=fields,
    options=options,
    answer=answer,
    correct=correct,
    targets=targets,
    metadata=metadata,
  )


def load_task_json(path: str | os.PathLike, name: str, subtask: str | None = None) -> list[Example]:
  """Examples of one task.json file, with task name `name`."""
  path = pathlib.Path(path)
  data = read_task_json(path)
  raw = data.get("examples", [])
  if not isinstance(raw, list):
    raise DataError(f"{path}: 'examples' must be a list")
  fmt = task_format(data)
  return [_example(path, i, ex, name, fmt, subtask) for i, ex in enumerate(raw)]


def load_task(bigbench_dir: str | os.PathLike, name: str) -> list[Example]:
  """Loads `bigbench:<task>` (all its subtasks, in sorted order) or `bigbench:<task>:<subtask>`.

  Raises:
    DataError: the task or subtask folder is missing (naming the expected path and where to get
      it), a file is malformed (naming the file and example index), or the task has no examples.
  """
  task, subtask = parse_name(name)
  name = f"bigbench:{task}" + (f":{subtask}" if subtask else "")
  path = task_dir(bigbench_dir, task)
  if subtask is not None:
    sub = path / subtask / "task.json"
    if not sub.is_file():
      raise DataError(
        f"BIG-bench subtask {task}:{subtask} not found at {sub} (subtasks of {task}: "
        f"{subtasks(path) or 'none'}); {source_hint(task)}"
      )
    examples = load_task_json(sub, name, subtask)
  else:
    examples = load_task_json(path / "task.json", name)  # holds no examples when split
    for sub_name in subtasks(path):
      examples += load_task_json(path / sub_name / "task.json", name, sub_name)
  if not examples:
    raise DataError(f"BIG-bench task {name}: no examples in {path} (nor in subtask folders)")
  return examples
