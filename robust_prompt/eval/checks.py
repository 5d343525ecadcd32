"""Sanity checks on results rows before any metric is computed from them.

A NaN option score makes `np.argmax` return the first NaN's index (option A when the first score
is NaN), so a numerically broken model (e.g. a bfloat16 overflow) silently "predicts" A and
the accuracy looks plausible. These checks refuse such rows and say which ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MAX_LISTED = 5


class NonFiniteScoreError(ValueError):
  """Option scores that no prediction can be read from (NaN, +inf, or all -inf)."""


def _problem(scores: Any) -> str | None:
  """What is wrong with one row's option scores, or None."""
  try:
    values = [float(s) for s in scores]
  except (TypeError, ValueError):
    return f"non-numeric option scores {list(scores)!r}"
  nan = [i for i, v in enumerate(values) if math.isnan(v)]
  if nan:
    return f"NaN score for option(s) {nan}"
  pos_inf = [i for i, v in enumerate(values) if v == math.inf]
  if pos_inf:
    return f"+inf score for option(s) {pos_inf}"
  if values and all(v == -math.inf for v in values):
    return "every option scores -inf"
  return None


def check_finite_scores(rows: Iterable[Mapping[str, Any]]) -> None:
  """Raises when any results row has option scores that cannot be ranked.

  Scores must be numbers, neither NaN nor +inf; -inf (an option the model finds impossible) is
  allowed as long as some option of the row is above it. Rows without options (generative
  tasks: `option_scores` empty or absent) are not checked. Every row is scanned, so the error
  counts all bad rows and lists the first few.

  Args:
    rows: results rows (docs/design.md: `model`, `task`, `instruction_id`, `example_id`,
      `option_scores` [O]).

  Raises:
    NonFiniteScoreError: naming model, task, instruction and example of the first
      `MAX_LISTED` bad rows, and how many there are.
  """
  bad: list[str] = []
  count = 0
  for n, row in enumerate(rows, start=1):
    scores = row.get("option_scores")
    if scores is None or len(scores) == 0:
      continue
    problem = _problem(scores)
    if problem is None:
      continue
    count += 1
    if len(bad) < MAX_LISTED:
      bad.append(
        f"row {n}: task {row.get('task')!r}, instruction {row.get('instruction_id')!r}, "
        f"example {row.get('example_id')!r} (model {row.get('model')!r}): {problem}"
      )
  if count:
    more = f"; and {count - len(bad)} more" if count > len(bad) else ""
    raise NonFiniteScoreError(
      f"{count} results row(s) with option scores no prediction can be read from (a NaN would "
      "count as predicting the first option): " + "; ".join(bad) + more + ". Check the model "
      "numerics (e.g. run in float32 instead of bfloat16) and the scoring of these inputs."
    )
