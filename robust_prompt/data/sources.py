"""Benchmarks by name: where their data lives, which tasks they have, and loading a task.

The data directory comes from the `--data_dir` flag (or a gin binding in the CLI), else from the
`ROBUST_PROMPT_DATA_DIR` environment variable. It holds one sub-folder per benchmark:

  <data_dir>/mmlu/test/<subject>_test.csv          MMLU CSV release (or --data_dir hf://cais/mmlu)
  <data_dir>/bigbench_lite/<task>/task.json        BIG-bench Lite JSON tasks
  <data_dir>/bigbench/<task>/task.json             any BIG-bench JSON tasks (benchmark_tasks/)
  <data_dir>/jsonl/<name>.jsonl                    users' own tasks (docs/tasks.md)

A benchmark's own folder may also be passed directly as the data directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import os
import pathlib
from collections.abc import Sequence

from robust_prompt.data import bigbench, jsonl, mmlu
from robust_prompt.data.example import DataError, Example

ENV_VAR = "ROBUST_PROMPT_DATA_DIR"
BENCHMARKS: tuple[str, ...] = ("mmlu", "bigbench_lite", "bigbench", "jsonl")
HF_PREFIX = "hf://"
_HINTS = {
  "mmlu": mmlu.SOURCE_HINT,
  "bigbench_lite": "BIG-bench Lite tasks come from github.com/google/BIG-bench "
  "bigbench/benchmark_tasks/<task>/ (copy each task folder into <data_dir>/bigbench_lite/)",
  "bigbench": "BIG-bench JSON tasks come from github.com/google/BIG-bench bigbench/benchmark_tasks/",
  "jsonl": "JSONL tasks are your own files, one example per line (format: docs/tasks.md)",
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """One task of a benchmark; `problem` says why it cannot be loaded (None when it can)."""

  name: str
  benchmark: str
  location: str
  problem: str | None = None

  @property
  def available(self) -> bool:
    return self.problem is None


def check_benchmark(benchmark: str) -> str:
  if benchmark not in BENCHMARKS:
    raise DataError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
  return benchmark


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """The data directory: the argument, else $ROBUST_PROMPT_DATA_DIR. `hf://...` is kept as is."""
  value = os.fspath(data_dir) if data_dir else os.environ.get(ENV_VAR, "")
  if not value:
    raise DataError(
      f"no data directory: pass --data_dir DIR (or set {ENV_VAR}); it should hold "
      "mmlu/test/<subject>_test.csv, bigbench_lite/<task>/task.json and/or jsonl/<name>.jsonl"
    )
  if not value.startswith(HF_PREFIX) and not pathlib.Path(value).is_dir():
    origin = "--data_dir" if data_dir else f"${ENV_VAR}"
    raise DataError(f"data directory {value} (from {origin}) does not exist")
  return value


def _looks_like(benchmark: str, path: pathlib.Path) -> bool:
  if benchmark == "mmlu":
    return (path / "test").is_dir() or any(path.glob("*_test.csv"))
  if benchmark == "jsonl":
    return any(path.glob("*.jsonl"))
  return any(path.glob("*/task.json"))


def benchmark_dir(benchmark: str, data_dir: str | os.PathLike | None = None) -> str:
  """The folder (or `hf://` address, MMLU only) holding `benchmark`'s data."""
  check_benchmark(benchmark)
  root = resolve_data_dir(data_dir)
  if root.startswith(HF_PREFIX):
    if benchmark != "mmlu":
      raise DataError(f"{root}: only MMLU can be read from the Hugging Face hub here")
    return root
  path = pathlib.Path(root)
  if (path / benchmark).is_dir():
    return str(path / benchmark)
  if _looks_like(benchmark, path):
    return str(path)
  raise DataError(f"{benchmark} data not found: expected {path / benchmark}. {_HINTS[benchmark]}")


def list_tasks(benchmark: str, data_dir: str | os.PathLike | None = None) -> list[TaskInfo]:
  """The benchmark's tasks. BIG-bench Lite lists all 14; absent ones carry a `problem`."""
  where = benchmark_dir(benchmark, data_dir)
  if where.startswith(HF_PREFIX):
    return [TaskInfo(mmlu.task_name(s), benchmark, where) for s in mmlu.SUBJECTS]
  if benchmark == "mmlu":
    return [
      TaskInfo(mmlu.task_name(s), benchmark, where) for s in mmlu.list_subjects(where, "test")
    ]
  if benchmark == "jsonl":
    return [TaskInfo(name, benchmark, where) for name in jsonl.list_tasks(where)]
  if benchmark == "bigbench":
    return [TaskInfo(name, benchmark, where) for name in bigbench.list_tasks(where)]
  infos = []
  for task in bigbench.LITE_TASKS:
    try:
      bigbench.task_dir(where, task)
      problem = None
    except DataError as e:
      problem = str(e)
    infos.append(TaskInfo(f"bigbench:{task}", benchmark, where, problem))
  return infos


def benchmark_of(task: str) -> str:
  """A default benchmark for a task name: mmlu:* -> mmlu, jsonl:* -> jsonl, bigbench:* -> lite."""
  prefix = task.split(":", 1)[0]
  if prefix in ("mmlu", "jsonl"):
    return prefix
  if prefix == "bigbench":
    return "bigbench_lite" if bigbench.parse_name(task)[0] in bigbench.LITE_TASKS else "bigbench"
  raise DataError(f"task {task!r}: names start with mmlu:, bigbench: or jsonl:")


@functools.lru_cache(maxsize=8)
def _hf_mmlu(repo_id: str, split: str) -> dict[str, list[Example]]:
  return mmlu.load_hf(split=split, repo_id=repo_id)


@functools.lru_cache(maxsize=512)
def _load_cached(task: str, benchmark: str, where: str, split: str) -> tuple[Example, ...]:
  if where.startswith(HF_PREFIX):
    subject = task.split(":", 1)[1]
    subjects = _hf_mmlu(where[len(HF_PREFIX) :].rstrip("/"), split)
    if subject not in subjects:
      raise DataError(f"{where} has no MMLU subject {subject!r} in its {split} split")
    return tuple(subjects[subject])
  if benchmark == "mmlu":
    return tuple(mmlu.load_subject(where, task.split(":", 1)[1], split))
  if benchmark == "jsonl":
    name = task.split(":", 1)[1]
    path = pathlib.Path(where) / f"{name}.jsonl"
    if not path.is_file():
      raise DataError(f"JSONL task {task} not found at {path}. {_HINTS['jsonl']}")
    return tuple(jsonl.load_jsonl(path, task))
  return tuple(bigbench.load_task(where, task))


def load_task(
  task: str,
  data_dir: str | os.PathLike | None = None,
  *,
  benchmark: str | None = None,
  split: str = "test",
) -> list[Example]:
  """Loads one task (`mmlu:anatomy`, `bigbench:strategyqa`, `jsonl:mytask`, ...).

  Args:
    task: the task name.
    data_dir: the data directory (default: $ROBUST_PROMPT_DATA_DIR).
    benchmark: where to look (default from the name: `benchmark_of`).
    split: MMLU split ("test", "dev", "val"; on the hub also "validation", "auxiliary_train").
      BIG-bench and JSONL tasks have one split.

  Raises:
    DataError: unknown benchmark, missing data (naming the expected path and the data's
      origin) or malformed files (naming file and line).
  """
  benchmark = check_benchmark(benchmark or benchmark_of(task))
  expected = "mmlu" if benchmark == "mmlu" else "jsonl" if benchmark == "jsonl" else "bigbench"
  if task.split(":", 1)[0] != expected or ":" not in task:
    raise DataError(
      f"task {task!r} does not belong to benchmark {benchmark} (names: {expected}:...)"
    )
  where = benchmark_dir(benchmark, data_dir)
  # Cached: SeqIO calls this once per (task x instruction) and BIG-bench files are large.
  return list(_load_cached(task, benchmark, where, split))


def load_benchmark(
  benchmark: str, data_dir: str | os.PathLike | None = None, *, split: str = "test"
) -> dict[str, list[Example]]:
  """Every available task of a benchmark: name -> examples (absent Lite tasks are skipped)."""
  return {
    info.name: load_task(info.name, data_dir, benchmark=benchmark, split=split)
    for info in list_tasks(benchmark, data_dir)
    if info.available
  }


def task_prefix(benchmark: str) -> str:
  """The prefix of the benchmark's task names (`mmlu`, `bigbench` or `jsonl`)."""
  check_benchmark(benchmark)
  return "bigbench" if benchmark.startswith("bigbench") else benchmark


def subtask_names(benchmark: str, data_dir: str | os.PathLike | None, tasks: Sequence[str]):
  """`bigbench:<task>:<subtask>` names of `tasks` (selectable one by one, never by default)."""
  if task_prefix(benchmark) != "bigbench":
    return []
  where = pathlib.Path(benchmark_dir(benchmark, data_dir))
  names = []
  for task in tasks:
    name, sub = bigbench.parse_name(task)
    if sub is None:
      names.extend(f"{task}:{s}" for s in bigbench.subtasks(bigbench.task_dir(where, name)))
  return names


def select_tasks(
  benchmark: str, data_dir: str | os.PathLike | None = None, patterns: Sequence[str] | None = None
) -> list[str]:
  """The tasks that names / globs select (with or without the `<prefix>:`); all by default.

  BIG-bench subtasks (`bigbench:logical_deduction:five_objects`) are selected only when a
  pattern names them: a glob over tasks must not select both a task and its subtasks.

  Raises:
    DataError: no task data, or a pattern matches no task (with close matches).
  """
  available = [i.name for i in list_tasks(benchmark, data_dir) if i.available]
  if not available:
    raise DataError(f"{benchmark_dir(benchmark, data_dir)}: holds no {benchmark} tasks")
  if not patterns:
    return available
  prefix = task_prefix(benchmark)
  extra = subtask_names(benchmark, data_dir, available)
  everything = available + [t for t in extra if t not in available]
  chosen: list[str] = []
  for pattern in patterns:
    candidates = [pattern] if pattern.startswith(prefix + ":") else [pattern, f"{prefix}:{pattern}"]
    hits = [t for t in available if any(fnmatch.fnmatchcase(t, c) for c in candidates)]
    if not hits:  # subtasks only when named
      hits = [t for t in everything if any(fnmatch.fnmatchcase(t, c) for c in candidates)]
    if not hits:
      close = difflib.get_close_matches(pattern, everything, n=5, cutoff=0.5)
      close += [
        t
        for t in difflib.get_close_matches(f"{prefix}:{pattern}", everything, n=5)
        if t not in close
      ]
      hint = f" Did you mean: {', '.join(close[:5])}?" if close else ""
      raise DataError(
        f"--tasks: unknown task {pattern!r} ({len(available)} tasks available, e.g. "
        f"{', '.join(available[:3])}).{hint}"
      )
    chosen.extend(t for t in hits if t not in chosen)
  return chosen
