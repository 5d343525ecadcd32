"""Budgeted evaluation: the robustness figures of the full grid, estimated from part of it.

Pure functions over the results table (design.md) of a possibly partial (instruction x example)
grid, e.g. one evaluated with `robust_prompt.eval.budget_design` at budget F. Per task the
estimated *figures* are, for each of the splits "observed", "unobserved" and "all" (both):
`mean, std, min, max` and the quantiles `q10, q50, q90` of the per-instruction accuracies across
instructions, and the `gap` (observed mean - unobserved mean); each has a percentile interval
(`ci_level`, default 95%). Every figure is an estimate of the value the *full* grid would give
(the instructions and examples are fixed; what is unknown is the outcome of the cells not
evaluated). docs/metrics.md ("Budgeted evaluation") writes out the model and its assumptions.

How (robust_prompt/eval/budget_model.py): a logistic model with instruction, label-bias and
example effects is fitted to the evaluated cells of each benchmark (tasks jointly); the
not-evaluated cells are then filled in by posterior draws, giving `R` draws of every
instruction's full-grid accuracy, and of every figure.

* the per-instruction accuracies, split means and the gap (figures linear in the cells) are the
  mean over examples of the evaluated value where a cell was evaluated and the fitted probability
  elsewhere (posterior mode);
* `std`, `min`, `max` and the quantiles are the mean of their draws (their plug-in values would
  be biased: the fitted accuracies are shrunk towards the split mean);
* intervals are the percentile intervals of the draws.

On a complete grid nothing is predicted and every figure equals the plain evaluation exactly
(`robust_prompt.eval.metrics`), with zero-width intervals. `naive_figures` gives the plain
figures of the evaluated cells, for comparison.

Figure names are flat strings, `"<split>.<stat>"` (`"observed.mean"`, `"all.q90"`) and `"gap"`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from robust_prompt import io_utils
from robust_prompt.eval import budget_model, metrics, tables
from robust_prompt.eval.budget_model import ModelSettings, TaskGrid

SPLIT_KEYS = ("observed", "unobserved", "all")
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
METHOD = "logistic_instruction_example_model"
NAIVE_METHOD = "plain_means_of_evaluated_cells"
# Figures that are linear in the cells: their estimate is the plug-in value (see module docstring).
_LINEAR_STATS = ("mean",)


@dataclasses.dataclass(frozen=True)
class BudgetSettings:
  """Settings of the estimate.

  Attributes:
    n_draws: posterior draws R (intervals and the nonlinear figures).
    seed: seed of the draws (task streams also depend on the benchmark name).
    ci_level: level of the percentile intervals.
    quantiles: quantiles of the per-instruction accuracies to report, in (0, 1).
    model: terms of the model (label bias, instructions shared across tasks).
  """

  n_draws: int = 1000
  seed: int = 0
  ci_level: float = 0.95
  quantiles: tuple[float, ...] = DEFAULT_QUANTILES
  model: ModelSettings = ModelSettings()


def quantile_key(q: float) -> str:
  """Name of a quantile figure: 0.1 -> "q10", 0.5 -> "q50", 0.975 -> "q97.5"."""
  return f"q{100 * q:g}"


def figure_names(quantiles: Sequence[float] = DEFAULT_QUANTILES) -> tuple[str, ...]:
  """Every figure name, in report order."""
  stats = ("mean", "std", "min", "max") + tuple(quantile_key(q) for q in quantiles)
  return tuple(f"{s}.{k}" for s in SPLIT_KEYS for k in stats) + ("gap",)


def benchmark_of(task: str) -> str:
  """The benchmark of a task: the part of its name before the first ':' (as summary.json)."""
  return task.split(":", 1)[0]


# -- inputs ---------------------------------------------------------------------------------------


def _label(gold: Any) -> int | None:
  """Label group of a results row's `gold`: the correct option index, if there is exactly one."""
  if isinstance(gold, (list, tuple)) and len(gold) == 1:
    gold = gold[0]
  if isinstance(gold, int) and not isinstance(gold, bool) and gold >= 0:
    return gold
  return None


def grids_from_results(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], TaskGrid]:
  """The (possibly partial) grid of every (model, task) in a results table.

  Instructions are ordered as `tables.tables_from_results` orders them (observed first, then by
  id); examples in order of first appearance. Only examples that appear in some row are known.
  Labels are the rows' integer `gold` (multiple-choice answer index); a task where some example
  has none (generative, several correct options) gets `labels=None`.
  """
  rows = list(rows)
  labels: dict[tuple[str, str], dict[str, int | None]] = {}
  for row in rows:
    key = (str(row.get("model")), str(row.get("task")))
    labels.setdefault(key, {}).setdefault(str(row.get("example_id")), _label(row.get("gold")))
  out = {}
  for key, t in tables.tables_from_results(rows).items():
    lab = [labels[key].get(e) for e in t.example_ids]
    out[key] = TaskGrid(
      task=t.task,
      instruction_ids=t.instruction_ids,
      splits=t.splits,
      correct=t.correct,
      labels=None if any(v is None for v in lab) else np.array(lab, dtype=np.int64),
      example_ids=t.example_ids,
    )
  return out


# -- figures of accuracy vectors ------------------------------------------------------------------


def _split_masks(splits: Sequence[str]) -> dict[str, np.ndarray]:
  s = np.asarray(splits)
  return {
    "observed": s == "observed",
    "unobserved": s == "unobserved",
    "all": np.ones(len(s), bool),
  }


def exact_figures(
  accuracy: np.ndarray, splits: Sequence[str], quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> dict[str, float | None]:
  """Figures of one accuracy vector [I], computed as `metrics` computes them (None if undefined).

  Quantiles use numpy's default (linear interpolation between order statistics).
  """
  acc = np.asarray(accuracy, dtype=np.float64)
  out: dict[str, float | None] = {}
  for split, mask in _split_masks(splits).items():
    a = acc[mask]
    stats = metrics.spread(a)
    for key in ("mean", "std", "min", "max"):
      out[f"{split}.{key}"] = stats[key]
    values = np.quantile(a, quantiles) if a.size else [None] * len(quantiles)
    for q, v in zip(quantiles, values):
      out[f"{split}.{quantile_key(q)}"] = None if v is None else float(v)
  out["gap"] = metrics.gap(out["observed.mean"], out["unobserved.mean"])
  return out


def _draw_figures(
  draws: np.ndarray, splits: Sequence[str], quantiles: Sequence[float]
) -> dict[str, np.ndarray | None]:
  """The figures of every draw: name -> [R] (None where undefined)."""
  out: dict[str, np.ndarray | None] = {}
  for split, mask in _split_masks(splits).items():
    a = draws[:, mask]
    n = a.shape[1]
    stats = ("mean", "std", "min", "max") + tuple(quantile_key(q) for q in quantiles)
    if n == 0:
      out.update({f"{split}.{k}": None for k in stats})
      continue
    out[f"{split}.mean"] = a.mean(axis=1)
    out[f"{split}.std"] = a.std(axis=1, ddof=1) if n > 1 else np.zeros(len(a))
    out[f"{split}.min"] = a.min(axis=1)
    out[f"{split}.max"] = a.max(axis=1)
    for q, v in zip(quantiles, np.quantile(a, quantiles, axis=1)):
      out[f"{split}.{quantile_key(q)}"] = v
  obs, uno = out["observed.mean"], out["unobserved.mean"]
  out["gap"] = None if obs is None or uno is None else obs - uno
  return out


def _interval(draws: np.ndarray | None, level: float) -> tuple[float, float] | None:
  if draws is None:
    return None
  lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)


# -- estimates ------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskEstimate:
  """The estimated full-grid figures of one task.

  Attributes:
    task: task name.
    instruction_ids, splits: [I], in the grid's order.
    n_examples: E, examples of the task (known from the rows).
    n_evaluated: [I] int cells evaluated per instruction.
    accuracy: [I] estimated full-grid accuracy per instruction.
    accuracy_ci: [I, 2] its interval.
    figures: figure name -> estimate (None when undefined, e.g. a gap without observed
      instructions).
    intervals: figure name -> (lo, hi) or None.
    draws: figure name -> [R] draws (None when undefined); what macro intervals are made of.
  """

  task: str
  instruction_ids: tuple[str, ...]
  splits: tuple[str, ...]
  n_examples: int
  n_evaluated: np.ndarray
  accuracy: np.ndarray
  accuracy_ci: np.ndarray
  figures: dict[str, float | None]
  intervals: dict[str, tuple[float, float] | None]
  draws: dict[str, np.ndarray | None]

  @property
  def n_cells(self) -> int:
    return len(self.instruction_ids) * self.n_examples

  @property
  def fraction_evaluated(self) -> float:
    return float(self.n_evaluated.sum() / self.n_cells) if self.n_cells else 0.0


@dataclasses.dataclass
class Estimate:
  """Estimates for one model: per task, macro over all tasks and macro per benchmark.

  Attributes:
    tasks: task -> TaskEstimate.
    macro: figure name -> {"value", "ci95", "n_tasks"}: mean over tasks of the per-task figure
      (the gap over tasks with both splits), interval from the mean of the tasks' draws.
    benchmarks: benchmark -> the same over its tasks.
    fits: benchmark -> {"iterations", "converged", "variances"} of the model fit (absent for a
      complete benchmark, where nothing is fitted).
    settings: the BudgetSettings used.
  """

  tasks: dict[str, TaskEstimate]
  macro: dict[str, dict[str, Any]]
  benchmarks: dict[str, dict[str, dict[str, Any]]]
  fits: dict[str, dict[str, Any]]
  settings: BudgetSettings


def _task_estimate(
  grid: TaskGrid,
  plugin: np.ndarray | None,
  draws: np.ndarray,
  settings: BudgetSettings,
) -> TaskEstimate:
  correct = np.asarray(grid.correct, dtype=np.float64)
  n_evaluated = np.sum(~np.isnan(correct), axis=1).astype(np.int64)
  complete = bool(np.all(n_evaluated == correct.shape[1]))
  level = settings.ci_level
  if complete:
    # Nothing to predict: the plain evaluation, bit for bit, with zero-width intervals.
    accuracy = metrics.instruction_accuracy(correct)
    figures = exact_figures(accuracy, grid.splits, settings.quantiles)
    intervals = {k: (None if v is None else (v, v)) for k, v in figures.items()}
    fig_draws = {
      k: (None if v is None else np.full(settings.n_draws, v)) for k, v in figures.items()
    }
    accuracy_ci = np.stack([accuracy, accuracy], axis=1)
  else:
    accuracy = plugin
    fig_draws = _draw_figures(draws, grid.splits, settings.quantiles)
    linear = exact_figures(accuracy, grid.splits, settings.quantiles)
    figures = {}
    for name, d in fig_draws.items():
      stat = name.split(".")[-1]
      if d is None:
        figures[name] = None
      elif name == "gap" or stat in _LINEAR_STATS:
        figures[name] = linear[name]
      else:
        figures[name] = float(np.mean(d))
    intervals = {k: _interval(d, level) for k, d in fig_draws.items()}
    accuracy_ci = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0).T
  return TaskEstimate(
    task=grid.task,
    instruction_ids=tuple(grid.instruction_ids),
    splits=tuple(grid.splits),
    n_examples=int(correct.shape[1]),
    n_evaluated=n_evaluated,
    accuracy=np.asarray(accuracy, dtype=np.float64),
    accuracy_ci=accuracy_ci,
    figures=figures,
    intervals=intervals,
    draws=fig_draws,
  )


def _macro(tasks: Sequence[TaskEstimate], settings: BudgetSettings) -> dict[str, dict[str, Any]]:
  out = {}
  for name in figure_names(settings.quantiles):
    kept = [t for t in tasks if t.figures.get(name) is not None]
    if not kept:
      out[name] = {"value": None, "ci95": None, "n_tasks": 0}
      continue
    # Benchmarks are fitted independently and tasks within one jointly, so averaging the tasks'
    # draws (same draw index, same joint posterior draw) gives the macro's draws.
    draws = np.mean(np.stack([t.draws[name] for t in kept]), axis=0)
    ci = _interval(draws, settings.ci_level)
    out[name] = {
      "value": float(np.mean([t.figures[name] for t in kept])),
      "ci95": list(ci),
      "n_tasks": len(kept),
    }
  return out


def estimate(grids: Sequence[TaskGrid], settings: BudgetSettings = BudgetSettings()) -> Estimate:
  """Estimates the full-grid figures of one model's tasks from their (partial) grids.

  Tasks of one benchmark (`benchmark_of`) are fitted jointly; each benchmark has its own draw
  stream `(seed, crc32(benchmark))`, so its figures do not depend on the other benchmarks.

  Args:
    grids: one TaskGrid per task (one model), e.g. `grids_from_results(rows)`'s values.
    settings: draws, interval level, quantiles, model terms.

  Returns:
    The Estimate (deterministic for the same grids and settings).
  """
  by_benchmark: dict[str, list[TaskGrid]] = {}
  for g in sorted(grids, key=lambda g: g.task):
    by_benchmark.setdefault(benchmark_of(g.task), []).append(g)
  tasks: dict[str, TaskEstimate] = {}
  fits: dict[str, dict[str, Any]] = {}
  for bench, group in by_benchmark.items():
    if all(not np.isnan(np.asarray(g.correct, dtype=np.float64)).any() for g in group):
      for g in group:
        tasks[g.task] = _task_estimate(g, None, np.zeros((0, len(g.instruction_ids))), settings)
      continue
    model = budget_model.fit(group, settings.model)
    seed = [int(settings.seed), zlib.crc32(bench.encode("utf-8"))]
    draws = model.accuracy_draws(settings.n_draws, seed)
    for g, plugin, d in zip(group, model.plugin_accuracy(), draws):
      tasks[g.task] = _task_estimate(g, plugin, d, settings)
    fits[bench] = {
      "iterations": model.iterations,
      "converged": model.converged,
      "variances": model.variance_components(),
    }
  benchmarks = {
    bench: _macro([tasks[g.task] for g in group], settings) for bench, group in by_benchmark.items()
  }
  return Estimate(
    tasks=tasks,
    macro=_macro(list(tasks.values()), settings),
    benchmarks=benchmarks,
    fits=fits,
    settings=settings,
  )


def estimate_results(
  rows: Iterable[Mapping[str, Any]], settings: BudgetSettings = BudgetSettings()
) -> dict[str, Estimate]:
  """`estimate` for every model of a (partial) results table: model -> Estimate."""
  models: dict[str, list[TaskGrid]] = {}
  for (model, _), grid in grids_from_results(rows).items():
    models.setdefault(model, []).append(grid)
  return {m: estimate(g, settings) for m, g in sorted(models.items())}


def naive_figures(
  grid: TaskGrid, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> dict[str, float | None]:
  """The plain figures of the evaluated cells: each instruction's accuracy is the mean of its
  evaluated cells (an instruction with none is left out), then `exact_figures`."""
  correct = np.asarray(grid.correct, dtype=np.float64)
  acc = metrics.instruction_accuracy(correct)
  keep = ~np.isnan(acc)
  return exact_figures(acc[keep], [s for s, k in zip(grid.splits, keep) if k], quantiles)


# -- JSON -----------------------------------------------------------------------------------------


def _figure_tree(figures: Mapping[str, Any], intervals: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in figures.items():
    ci = intervals.get(name)
    leaf = {"value": value, "ci95": None if ci is None else list(ci)}
    if "." in name:
      split, stat = name.split(".", 1)
      tree.setdefault(split, {})[stat] = leaf
    else:
      tree[name] = leaf
  return tree


def _macro_tree(macro: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  tree = _figure_tree(
    {k: v["value"] for k, v in macro.items()}, {k: v["ci95"] for k, v in macro.items()}
  )
  tree["n_tasks"] = max((v["n_tasks"] for v in macro.values()), default=0)
  return tree


def estimate_document(
  est: Estimate, *, budget: float | None = None, design_seed: int | None = None
) -> dict[str, Any]:
  """The JSON-clean "budget" section for summary.json (one model).

  Shape:
    {"method", "budget", "design_seed", "n_cells", "n_evaluated", "fraction_evaluated",
     "settings": {"n_draws", "seed", "ci_level", "quantiles", "label_bias",
                  "share_instructions"},
     "tasks": {TASK: {"n_cells", "n_evaluated", "n_examples", "fraction_evaluated",
                      "estimated": bool (False: complete grid, figures exact),
                      "observed" / "unobserved" / "all": {STAT: {"value", "ci95"}},
                      "gap": {"value", "ci95"},
                      "instructions": [{"instruction_id", "split", "accuracy", "ci95",
                                        "n_evaluated"}]}},
     "macro": {the same figure tree, "n_tasks"},
     "benchmarks": {BENCHMARK: {the same as macro}},
     "fits": {BENCHMARK: {"iterations", "converged", "variances"}}}
  """
  tasks = {}
  for name, t in est.tasks.items():
    entry = {
      "n_cells": t.n_cells,
      "n_evaluated": int(t.n_evaluated.sum()),
      "n_examples": t.n_examples,
      "fraction_evaluated": t.fraction_evaluated,
      "estimated": bool(t.n_evaluated.sum() < t.n_cells),
    }
    entry.update(_figure_tree(t.figures, t.intervals))
    entry["instructions"] = [
      {
        "instruction_id": iid,
        "split": split,
        "accuracy": float(acc),
        "ci95": [float(ci[0]), float(ci[1])],
        "n_evaluated": int(n),
      }
      for iid, split, acc, ci, n in zip(
        t.instruction_ids, t.splits, t.accuracy, t.accuracy_ci, t.n_evaluated
      )
    ]
    tasks[name] = entry
  n_cells = sum(t.n_cells for t in est.tasks.values())
  n_evaluated = sum(int(t.n_evaluated.sum()) for t in est.tasks.values())
  s = est.settings
  doc = {
    "method": METHOD,
    "budget": budget,
    "design_seed": design_seed,
    "n_cells": n_cells,
    "n_evaluated": n_evaluated,
    "fraction_evaluated": n_evaluated / n_cells if n_cells else None,
    "settings": {
      "n_draws": s.n_draws,
      "seed": s.seed,
      "ci_level": s.ci_level,
      "quantiles": list(s.quantiles),
      "label_bias": s.model.label_bias,
      "share_instructions": s.model.share_instructions,
    },
    "tasks": tasks,
    "macro": _macro_tree(est.macro),
    "benchmarks": {b: _macro_tree(m) for b, m in est.benchmarks.items()},
    "fits": est.fits,
  }
  return io_utils.json_clean(doc)
