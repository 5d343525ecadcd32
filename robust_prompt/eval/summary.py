"""`summary.json`: the robustness metrics of robust_prompt/eval/metrics.py per task and macro.

Schema (one model; fractions in [0, 1]; undefined values are null):

  {"model": str,
   "settings": {"n_resamples", "seed", "ci_level", "k_worst", "std_ddof", "macro"},
   "tasks": {TASK: {
      "observed" / "unobserved": {"mean", "std", "min", "max", "range", "se", "n_instructions"},
      "gap": {"value", "ci95": [lo, hi] | null, "ci_method"},
      "pdr", "maxp", "avgp", "cps",
      "consistency": {"observed": {"all_agree", "pairwise"}, "unobserved": {...}},
      "worst": [{"instruction_id", "split", "source", "accuracy", "text"}],
      "n_examples"}},
   "macro": {same keys, each the (weighted, settings.macro) mean over tasks (see
             docs/metrics.md), plus "n_tasks"; gap also "n_tasks", "n_instruction_sets"},
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
MACRO_CHOICES = ("unweighted", "weighted")


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
    in_split = t.in_split(split)
    out[split] = metrics.spread(t.accuracy[in_split])
    out[split]["se"] = _split_se(t, in_split, out[split]["mean"])
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


def _split_se(t: TaskScores, in_split: np.ndarray, mean: float | None) -> float | None:
  """Example-sampling standard error of a split's mean accuracy (docs/metrics.md)."""
  if mean is None:
    return None
  if t.correct is not None:
    return metrics.paired_mean_se(t.correct[in_split])
  n = t.n_examples[in_split]
  n = n[n > 0]
  return metrics.binomial_se(mean, int(n.max()) if n.size else None)


def gap_data(t: TaskScores) -> bootstrap.TaskGapData | None:
  """What the macro gap bootstrap needs of a task; None without both splits."""
  obs, uno = t.in_split("observed"), t.in_split("unobserved")
  if not (obs.any() and uno.any()):
    return None
  ids = np.asarray(t.instruction_ids, dtype=object)
  return bootstrap.TaskGapData(
    observed_ids=tuple(ids[obs]),
    unobserved_ids=tuple(ids[uno]),
    accuracy_observed=t.accuracy[obs],
    accuracy_unobserved=t.accuracy[uno],
    correct_observed=None if t.correct is None else t.correct[obs],
    correct_unobserved=None if t.correct is None else t.correct[uno],
  )


def task_weights(tasks: Mapping[str, dict], macro: str) -> dict[str, float] | None:
  """Task weights of the macro averages: None (equal) or each task's number of examples.

  Raises:
    ValueError: `macro` is not one of MACRO_CHOICES, or "weighted" with a task whose number of
      examples is unknown (a per-instruction CSV without n_examples).
  """
  if macro not in MACRO_CHOICES:
    raise ValueError(f"macro must be one of {', '.join(MACRO_CHOICES)}; got {macro!r}")
  if macro == "unweighted":
    return None
  unknown = sorted(n for n, v in tasks.items() if not v.get("n_examples"))
  if unknown:
    raise ValueError(
      f"a macro weighted by task size needs every task's number of examples; unknown for "
      f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} (give n_examples in the "
      "per-instruction CSV, or use the unweighted macro)"
    )
  return {n: float(v["n_examples"]) for n, v in tasks.items()}


def _macro(
  tasks: Mapping[str, dict],
  data: Mapping[str, bootstrap.TaskGapData | None],
  weights: Mapping[str, float] | None,
  *,
  k: int,
  level: float,
  n_resamples: int,
  seed: int,
  cache: dict[tuple[str, ...], np.ndarray],
) -> dict[str, Any]:
  def mean(names: list[str], path: tuple[str, ...]) -> float | None:
    """The (weighted) mean over `names` of the per-task value at `path` (keys into its summary)."""
    values = []
    for n in names:
      v = tasks[n]
      for p in path:
        v = v[p]
      values.append(v)
    return metrics.macro_mean(values, None if weights is None else [weights[n] for n in names])

  macro: dict[str, Any] = {"n_tasks": len(tasks)}
  for split in SPLITS:
    names = [n for n in tasks if tasks[n][split]["n_instructions"] > 0]
    macro[split] = {key: mean(list(tasks), (split, key)) for key in STAT_KEYS}
    macro[split]["se"] = metrics.macro_se(
      [tasks[n][split]["se"] for n in names],
      None if weights is None else [weights[n] for n in names],
    )
    macro[split]["n_instructions"] = int(sum(tasks[n][split]["n_instructions"] for n in tasks))
    macro[split]["n_tasks"] = len(names)
  paired = [name for name in tasks if tasks[name]["gap"]["value"] is not None]
  ci, methods, n_sets = None, sorted({tasks[name]["gap"]["ci_method"] for name in paired}), None
  if paired:
    gap_tasks = {n: data[n] for n in paired}
    key = tuple(sorted(paired))
    if key not in cache:  # e.g. a run of one benchmark: its macro is the overall one
      cache[key] = bootstrap.macro_gap_replicates(
        gap_tasks,
        weights=None if weights is None else {n: weights[n] for n in paired},
        n_resamples=n_resamples,
        seed=seed,
      )
    reps = cache[key]
    ci = bootstrap.percentile_interval(reps, level)
    n_sets = len(bootstrap.instruction_sets(gap_tasks))
  macro["gap"] = {
    "value": mean(paired, ("gap", "value")),
    "ci95": list(ci) if ci else None,
    "ci_method": "+".join(methods) if methods else None,
    "n_tasks": len(paired),
    # Tasks sharing instructions are resampled jointly: one set per group of such tasks.
    "n_instruction_sets": n_sets,
  }
  # PDR of the macro means over the tasks that have both splits (so it agrees with the gap).
  macro["pdr"] = metrics.pdr(
    mean(paired, ("observed", "mean")),
    mean(paired, ("unobserved", "mean")),
  )
  for key in ("maxp", "avgp", "cps"):
    macro[key] = mean(list(tasks), (key,))
  macro["consistency"] = {
    split: {
      key: mean(list(tasks), ("consistency", split, key)) for key in ("all_agree", "pairwise")
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
  macro: str = "unweighted",
) -> dict[str, Any]:
  """summary.json's content for one model from its `TaskScores` keyed by task name.

  Args:
    tables: task -> scores.
    model: the model's name.
    instruction_texts: instruction id -> template, for the worst instructions.
    k_worst: how many worst instructions to list.
    n_resamples: bootstrap resamples R.
    seed: bootstrap seed.
    ci_level: interval level.
    macro: "unweighted" (every task counts the same) or "weighted" (tasks weighted by their
      number of examples, as a pooled accuracy over all examples would).

  Raises:
    ValueError: see `task_weights`.
  """
  tasks, data = {}, {}
  for name in sorted(tables):
    tasks[name], _ = summarize_task(
      tables[name],
      instruction_texts=instruction_texts,
      k_worst=k_worst,
      n_resamples=n_resamples,
      seed=seed,
      ci_level=ci_level,
    )
    data[name] = gap_data(tables[name])
  weights = task_weights(tasks, macro)
  settings = dict(
    n_resamples=n_resamples,
    seed=seed,
    ci_level=ci_level,
    k_worst=k_worst,
    std_ddof="1 (sample std); 0.0 for a single instruction",
    macro=macro,
  )
  summary = {"model": model, "settings": settings, "tasks": tasks}
  opts = dict(k=k_worst, level=ci_level, n_resamples=n_resamples, seed=seed, cache={})
  summary["macro"] = _macro(tasks, data, weights, **opts)
  # Macro per benchmark (task-name prefix: "mmlu:anatomy" -> "mmlu"), as papers report them apart.
  groups: dict[str, list[str]] = {}
  for name in tasks:
    groups.setdefault(benchmark_of(name), []).append(name)
  summary["benchmarks"] = {
    b: _macro({n: tasks[n] for n in names}, data, weights, **opts)
    for b, names in sorted(groups.items())
  }
  return io_utils.json_clean(summary)


def summarize(
  tables: Mapping[tuple[str, str], TaskScores], **kwargs: Any
) -> dict[str, dict[str, Any]]:
  """`summarize_model` for every model in tables keyed by (model, task); returns model -> summary.

  Keyword arguments are `summarize_model`'s (e.g. `macro="weighted"`).
  """
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
