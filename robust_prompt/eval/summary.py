"""`summary.json`: the robustness metrics of robust_prompt/eval/metrics.py per task and macro.

Schema (one model; fractions in [0, 1]; undefined values are null):

  {"model": str,
   "settings": {"n_resamples", "seed", "ci_level", "k_worst", "std_ddof"},
   "tasks": {TASK: {
      "observed" / "unobserved": {"mean", "std", "min", "max", "range", "n_instructions"},
      "gap": {"value", "ci95": [lo, hi] | null, "ci_method"},
      "pdr", "maxp", "avgp", "cps",
      "consistency": {"observed": {"all_agree", "pairwise"}, "unobserved": {...}},
      "worst": [{"instruction_id", "split", "source", "accuracy", "text"}],
      "n_examples"}},
   "macro": {same keys, each the mean over tasks (see docs/metrics.md), plus "n_tasks"},
   "benchmarks": {BENCHMARK: {the macro keys over that benchmark's tasks}}}

A file with several models is `{"models": {MODEL: <the above>}}`; `load_summaries` reads both.
"""

from __future__ import annotations

import json
import pathlib
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from robust_prompt import io_utils
from robust_prompt.eval import bootstrap, metrics
from robust_prompt.eval.tables import TaskScores
from robust_prompt.instructions.schema import SPLITS

CI_PAIRED = "paired_bootstrap_instructions_and_examples"
CI_INSTRUCTIONS = "bootstrap_instructions_only"
STAT_KEYS = ("mean", "std", "min", "max", "range")


def benchmark_of(task: str) -> str:
  """The benchmark of a task name: the part before the first ':' ("mmlu:anatomy" -> "mmlu")."""
  return task.split(":", 1)[0]


def _task_seed(seed: int, task: str) -> list[int]:
  # Per-task streams: a task's interval does not depend on which other tasks are summarised.
  return [seed, zlib.crc32(task.encode("utf-8"))]


def summarize_task(
  t: TaskScores,
  *,
  instruction_texts: Mapping[str, str] | None = None,
  k_worst: int = 5,
  n_resamples: int = bootstrap.DEFAULT_N_RESAMPLES,
  seed: int = 0,
  ci_level: float = 0.95,
) -> tuple[dict[str, Any], np.ndarray | None]:
  """Summary of one task, plus its gap bootstrap replicates ([R], None without a gap)."""
  out: dict[str, Any] = {}
  for split in SPLITS:
    out[split] = metrics.spread(t.accuracy[t.in_split(split)])
  obs, uno = t.in_split("observed"), t.in_split("unobserved")
  value = metrics.gap(out["observed"]["mean"], out["unobserved"]["mean"])
  replicates, method = None, None
  if value is not None:
    s = _task_seed(seed, t.task)
    if t.correct is not None:
      method = CI_PAIRED
      replicates = bootstrap.bootstrap_gap_paired(
        t.correct[obs], t.correct[uno], n_resamples=n_resamples, seed=s
      )
    else:
      method = CI_INSTRUCTIONS
      replicates = bootstrap.bootstrap_gap_instructions(
        t.accuracy[obs], t.accuracy[uno], n_resamples=n_resamples, seed=s
      )
  ci = bootstrap.percentile_interval(replicates, ci_level) if replicates is not None else None
  out["gap"] = {"value": value, "ci95": list(ci) if ci else None, "ci_method": method}
  out["pdr"] = metrics.pdr(out["observed"]["mean"], out["unobserved"]["mean"])
  out.update(metrics.cps(t.accuracy))
  out["consistency"] = {
    split: (
      metrics.consistency(t.predictions[t.in_split(split)])
      if t.predictions is not None
      else {"all_agree": None, "pairwise": None}
    )
    for split in SPLITS
  }
  texts = instruction_texts or {}
  index = {iid: i for i, iid in enumerate(t.instruction_ids)}
  out["worst"] = [
    {
      "instruction_id": iid,
      "split": t.splits[index[iid]],
      "source": t.sources[index[iid]],
      "accuracy": acc,
      "text": texts.get(iid),
    }
    for iid, acc in metrics.worst_instructions(t.instruction_ids, t.accuracy, k_worst)
  ]
  n = t.n_examples[t.n_examples >= 0]
  out["n_examples"] = int(n.max()) if n.size else None
  return out, replicates


def _macro(tasks: Mapping[str, dict], replicates: Mapping[str, np.ndarray], k: int, level: float):
  macro: dict[str, Any] = {"n_tasks": len(tasks)}
  for split in SPLITS:
    stats = [tasks[name][split] for name in tasks]
    macro[split] = {key: metrics.macro_mean([s[key] for s in stats]) for key in STAT_KEYS}
    macro[split]["n_instructions"] = int(sum(s["n_instructions"] for s in stats))
    macro[split]["n_tasks"] = sum(s["n_instructions"] > 0 for s in stats)
  paired = [name for name in tasks if tasks[name]["gap"]["value"] is not None]
  ci, methods = None, sorted({tasks[name]["gap"]["ci_method"] for name in paired})
  if paired:
    # Tasks are resampled independently, so averaging their replicates gives the macro's.
    reps = np.mean(np.stack([replicates[name] for name in paired]), axis=0)
    ci = bootstrap.percentile_interval(reps, level)
  macro["gap"] = {
    "value": metrics.macro_mean([tasks[name]["gap"]["value"] for name in paired]),
    "ci95": list(ci) if ci else None,
    "ci_method": "+".join(methods) if methods else None,
    "n_tasks": len(paired),
  }
  # PDR of the macro means over the tasks that have both splits (so it agrees with the gap).
  macro["pdr"] = metrics.pdr(
    metrics.macro_mean([tasks[n]["observed"]["mean"] for n in paired]),
    metrics.macro_mean([tasks[n]["unobserved"]["mean"] for n in paired]),
  )
  for key in ("maxp", "avgp", "cps"):
    macro[key] = metrics.macro_mean([tasks[n][key] for n in tasks])
  macro["consistency"] = {
    split: {
      key: metrics.macro_mean([tasks[n]["consistency"][split][key] for n in tasks])
      for key in ("all_agree", "pairwise")
    }
    for split in SPLITS
  }
  every = [dict(w, task=name) for name in tasks for w in tasks[name]["worst"]]
  macro["worst"] = sorted(every, key=lambda w: (w["accuracy"], w["task"], w["instruction_id"]))[:k]
  return macro


def summarize_model(
  tables: Mapping[str, TaskScores],
  *,
  model: str = "",
  instruction_texts: Mapping[str, str] | None = None,
  k_worst: int = 5,
  n_resamples: int = bootstrap.DEFAULT_N_RESAMPLES,
  seed: int = 0,
  ci_level: float = 0.95,
) -> dict[str, Any]:
  """summary.json's content for one model from its `TaskScores` keyed by task name."""
  tasks, replicates = {}, {}
  for name in sorted(tables):
    tasks[name], replicates[name] = summarize_task(
      tables[name],
      instruction_texts=instruction_texts,
      k_worst=k_worst,
      n_resamples=n_resamples,
      seed=seed,
      ci_level=ci_level,
    )
  settings = dict(
    n_resamples=n_resamples,
    seed=seed,
    ci_level=ci_level,
    k_worst=k_worst,
    std_ddof="1 (sample std); 0.0 for a single instruction",
  )
  summary = {"model": model, "settings": settings, "tasks": tasks}
  summary["macro"] = _macro(tasks, replicates, k_worst, ci_level)
  # Macro per benchmark (task-name prefix: "mmlu:anatomy" -> "mmlu"), as papers report them apart.
  groups: dict[str, list[str]] = {}
  for name in tasks:
    groups.setdefault(benchmark_of(name), []).append(name)
  summary["benchmarks"] = {
    b: _macro({n: tasks[n] for n in names}, replicates, k_worst, ci_level)
    for b, names in sorted(groups.items())
  }
  return io_utils.json_clean(summary)


def summarize(
  tables: Mapping[tuple[str, str], TaskScores], **kwargs: Any
) -> dict[str, dict[str, Any]]:
  """`summarize_model` for every model in tables keyed by (model, task); returns model -> summary."""
  models: dict[str, dict[str, TaskScores]] = {}
  for (model, task), t in tables.items():
    models.setdefault(model, {})[task] = t
  return {m: summarize_model(ts, model=m, **kwargs) for m, ts in models.items()}


def summary_document(summaries: Mapping[str, dict]) -> dict:
  """What summary.json holds: the single model's summary, or {"models": {...}} for several."""
  if len(summaries) == 1:
    return dict(next(iter(summaries.values())))
  return {"models": dict(summaries)}


def write_summary(path: str | pathlib.Path, summaries: Mapping[str, dict]) -> pathlib.Path:
  """Writes summary.json atomically."""
  return io_utils.atomic_write_json(path, summary_document(summaries))


def load_summaries(path: str | pathlib.Path) -> dict[str, dict]:
  """Reads summary.json (either shape) as model -> summary."""
  doc = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  if "models" in doc:
    return dict(doc["models"])
  return {doc.get("model", ""): doc}
