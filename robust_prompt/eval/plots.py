"""Report plots as PNG bytes (matplotlib's Agg renderer; no pyplot global state, no display).

Sized for real runs: tasks are rows (one per task, sorted), so 60 tasks and 50+ instructions a
task stay legible; beyond `max_tasks` rows the tasks with the largest |gap| are kept and the
title says so.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SPLIT_COLORS = {"observed": "#1f77b4", "unobserved": "#ff7f0e"}
SECTION_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
DEFAULT_MAX_TASKS = 70


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  return buf.getvalue()


def _figure(n_rows: int) -> tuple[Figure, Any]:
  fig = Figure(figsize=(9.0, 1.6 + 0.3 * max(n_rows, 2)))
  return fig, fig.add_subplot(1, 1, 1)


def _cap(tasks: list[str], key, max_tasks: int) -> tuple[list[str], str]:
  if len(tasks) <= max_tasks:
    return tasks, ""
  kept = set(sorted(tasks, key=key)[:max_tasks])
  return [t for t in tasks if t in kept], f" ({max_tasks} of {len(tasks)} tasks shown)"


def accuracy_by_instruction(
  per_instruction: Sequence[Mapping[str, Any]],
  summary: Mapping[str, Any],
  *,
  title: str = "",
  max_tasks: int = DEFAULT_MAX_TASKS,
) -> bytes:
  """Strip plot: one row per task, one dot per instruction, observed above unobserved.

  Short vertical bars mark each split's mean. Rows are sorted by mean accuracy over all
  instructions (AvgP), best on top.

  Args:
    per_instruction: rows with task, split, accuracy (one model).
    summary: that model's summary (for the sort order and the |gap| cap).
  """
  by_task: dict[str, dict[str, list[float]]] = {}
  for r in per_instruction:
    by_task.setdefault(r["task"], {}).setdefault(r["split"], []).append(float(r["accuracy"]))
  tasks_s = summary.get("tasks", {})
  tasks = sorted(by_task, key=lambda t: (tasks_s.get(t, {}).get("avgp") or 0.0, t))
  tasks, note = _cap(
    tasks, lambda t: -abs((tasks_s.get(t, {}).get("gap") or {}).get("value") or 0), max_tasks
  )
  fig, ax = _figure(len(tasks))
  rng = np.random.default_rng(0)  # fixed jitter: identical inputs give identical PNGs
  for y, task in enumerate(tasks):
    for split, offset in (("observed", 0.18), ("unobserved", -0.18)):
      acc = 100.0 * np.asarray(by_task[task].get(split, []))
      if acc.size == 0:
        continue
      jitter = rng.uniform(-0.08, 0.08, size=acc.size)
      ax.scatter(acc, y + offset + jitter, s=14, alpha=0.6, color=SPLIT_COLORS[split], label=split)
      ax.plot([acc.mean()] * 2, [y + offset - 0.15, y + offset + 0.15], color="black", lw=1.5)
  ax.set_yticks(range(len(tasks)))
  ax.set_yticklabels(tasks, fontsize=8)
  ax.set_ylim(-0.7, len(tasks) - 0.3)
  ax.set_xlim(-2, 102)
  ax.set_xlabel("accuracy % (one dot per instruction; bar = split mean)")
  ax.grid(axis="x", alpha=0.3)
  ax.set_title((title or "Accuracy per instruction") + note)
  handles, labels = ax.get_legend_handles_labels()
  uniq = dict(zip(labels, handles))
  ax.legend(uniq.values(), uniq.keys(), loc="lower right", fontsize=8)
  return _png(fig)


def gap_with_ci(
  summaries: Sequence[tuple[str, Mapping[str, Any]]],
  *,
  title: str = "Observed - unobserved gap (95% CI)",
  max_tasks: int = DEFAULT_MAX_TASKS,
) -> bytes:
  """Error-bar plot of the gap and its CI per task (and the macro average, on top).

  Several summaries (e.g. before / after training, or several models) share the rows, offset
  vertically and coloured per label. Rows are sorted by the first summary's gap.
  """
  first = summaries[0][1]
  tasks = sorted(
    {t for _, s in summaries for t, v in s["tasks"].items() if v["gap"]["value"] is not None},
    key=lambda t: ((first["tasks"].get(t, {}).get("gap") or {}).get("value") or 0.0, t),
  )
  tasks, note = _cap(
    tasks, lambda t: -abs(first["tasks"].get(t, {}).get("gap", {}).get("value") or 0), max_tasks
  )
  rows = tasks + ["MACRO (mean over tasks)"]
  fig, ax = _figure(len(rows))
  n = len(summaries)
  for k, (label, s) in enumerate(summaries):
    offset = (k - (n - 1) / 2) * (0.6 / max(n, 1))
    ys, xs, lo, hi = [], [], [], []
    for y, task in enumerate(rows):
      g = s["macro"]["gap"] if y == len(tasks) else s["tasks"].get(task, {}).get("gap")
      if not g or g["value"] is None:
        continue
      value = 100.0 * g["value"]
      ci = [100.0 * c for c in g["ci95"]] if g["ci95"] else [value, value]
      ys.append(y + offset)
      xs.append(value)
      lo.append(value - ci[0])
      hi.append(ci[1] - value)
    color = SECTION_COLORS[k % len(SECTION_COLORS)]
    ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", ms=4, capsize=2, color=color, label=label)
  ax.axvline(0.0, color="gray", lw=1, ls="--")
  ax.axhline(len(tasks) - 0.5, color="gray", lw=0.5)
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels(rows, fontsize=8)
  ax.get_yticklabels()[-1].set_fontweight("bold")
  ax.set_ylim(-0.7, len(rows) - 0.3)
  ax.set_xlabel(
    "gap, percentage points: mean acc. observed - mean acc. unobserved (> 0: worse on unseen phrasings)"
  )
  ax.grid(axis="x", alpha=0.3)
  ax.set_title(title + note)
  if n > 1 or summaries[0][0]:
    ax.legend(loc="lower right", fontsize=8)
  return _png(fig)
