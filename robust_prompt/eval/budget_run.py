"""A budgeted evaluation run: the design's cells as engine chunks, raised budgets, estimates.

`eval --budget F` scores only the cells (instruction x example) of the seeded design
(`budget_design`), and writes the estimated figures (`budget.estimate_document`) into
summary.json and report.md. Raising F later (same seed, same directory) keeps every row already
scored: the earlier rows stay as they are at the head of `results.jsonl` and only the design's
new cells are scored after them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from robust_prompt.eval import budget, budget_design
from robust_prompt.eval.engine import Chunk


def design_for(chunks: Sequence[Chunk], fraction: float, seed: int) -> dict[str, Any]:
  """The design of every task of `chunks` (`{task: TaskDesign}`)."""
  tasks: dict[str, tuple[list[str], list[str], list[str]]] = {}
  for c in chunks:
    iids, splits, _ = tasks.setdefault(c.task, ([], [], [e.id for e in c.examples]))
    iids.append(c.instruction.id)
    splits.append(c.instruction.split)
  return budget_design.design_tasks(tasks, fraction, seed=seed)


def _restrict(chunk: Chunk, keep: set[tuple[str, str]]) -> Chunk | None:
  pairs = [
    (e, r) for e, r in zip(chunk.examples, chunk.rendered) if (chunk.instruction.id, e.id) in keep
  ]
  if not pairs:
    return None
  return dataclasses.replace(
    chunk, examples=tuple(e for e, _ in pairs), rendered=tuple(r for _, r in pairs)
  )


def plan(
  chunks: Sequence[Chunk], fraction: float, seed: int, done_rows: Sequence[Mapping[str, Any]] = ()
) -> list[Chunk]:
  """The chunks a budgeted run writes, in order: those of `done_rows` (the rows already in
  `results.jsonl`, regrouped exactly as they lie), then the design's cells not yet scored.

  Raises:
    ValueError: a done row that is not a cell of `chunks` (the file holds another run).
  """
  designs = design_for(chunks, fraction, seed)
  by_key = {c.key: c for c in chunks}
  done = {(r["task"], r["instruction_id"], r["example_id"]) for r in done_rows}
  out: list[Chunk] = []
  # The rows already written, as consecutive (task, instruction) runs.
  start = 0
  rows = list(done_rows)
  while start < len(rows):
    key = (rows[start]["task"], rows[start]["instruction_id"])
    end = start
    while end < len(rows) and (rows[end]["task"], rows[end]["instruction_id"]) == key:
      end += 1
    if key not in by_key:
      raise ValueError(f"results.jsonl holds rows of {key}, which this run does not evaluate")
    ids = {r["example_id"] for r in rows[start:end]}
    restricted = _restrict(by_key[key], {(key[1], i) for i in ids})
    if restricted is None or len(restricted.examples) != end - start:
      raise ValueError(f"results.jsonl holds rows of {key} that are not this run's examples")
    out.append(restricted)
    start = end
  for c in chunks:
    cells = designs[c.task].cells()
    todo = {(iid, eid) for iid, eid in cells if (c.task, iid, eid) not in done}
    restricted = _restrict(c, todo)
    if restricted is not None:
      out.append(restricted)
  return out


def summary_section(
  rows: Sequence[Mapping[str, Any]], fraction: float | None, seed: int | None
) -> dict[str, Any]:
  """summary.json's "budget" section: per model, the estimated figures and what was scored."""
  estimates = budget.estimate_results(rows)
  return {
    model: budget.estimate_document(est, budget=fraction, design_seed=seed)
    for model, est in estimates.items()
  }


def report_lines(section: Mapping[str, Any]) -> list[str]:
  """A Markdown section for report.md: estimated figures per task, and how much was scored."""
  lines = ["", "## Estimated from a budgeted evaluation", ""]
  for model, doc in section.items():
    frac = doc.get("fraction_evaluated")
    lines.append(
      f"Model `{model}`: {doc.get('n_evaluated')} of {doc.get('n_cells')} (instruction x "
      f"example) cells scored ({100 * (frac or 0):.1f}%, budget {doc.get('budget')}); the other "
      'cells are predicted by the model of docs/metrics.md ("Budgeted evaluation"). Figures '
      "marked * are estimated, with 95% intervals."
    )
    lines += [
      "",
      "| task | observed | unobserved | gap | scored |",
      "| --- | --- | --- | --- | --- |",
    ]
    for task, t in sorted(doc.get("tasks", {}).items()):
      star = "*" if t.get("estimated") else ""

      lines.append(
        f"| {task} | {_fig((t.get('observed') or {}).get('mean'), star)} | "
        f"{_fig((t.get('unobserved') or {}).get('mean'), star)} | {_fig(t.get('gap'), star)} | "
        f"{t.get('n_evaluated')}/{t.get('n_cells')} |"
      )
    lines.append("")
  return lines


def _fig(node: Mapping[str, Any] | None, star: str) -> str:
  """`value[star] [lo, hi]` in percent, or n/a."""
  if not node or node.get("value") is None:
    return "n/a"
  ci = node.get("ci95")
  ci_text = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
  return f"{100 * node['value']:.1f}{star}{ci_text}"
