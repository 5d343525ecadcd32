"""Reordering the options of multiple-choice examples reproducibly (the study's shuffled tasks).

The robustness study (Sun et al. 2023) shuffled the options of every BIG-bench
conceptual_combinations example with one `random.Random(42)`, example after example: BIG-bench
lists the correct option first there, so file order would put every answer on "A".
"""

from __future__ import annotations

import dataclasses
import fnmatch
import random
from collections.abc import Iterable, Sequence

from robust_prompt.data.example import Example


def shuffle_options(examples: Sequence[Example], seed: int) -> list[Example]:
  """Each example's options permuted by ONE `random.Random(seed)` drawn in example order.

  `answer`, `correct` and `metadata["target_scores"]` follow the options; generative examples
  are kept as they are (and draw nothing).
  """
  rng = random.Random(seed)
  out = []
  for ex in examples:
    if not ex.options:
      out.append(ex)
      continue
    order = list(range(len(ex.options)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    correct = tuple(sorted(where[c] for c in ex.correct))
    answer = None if ex.answer is None else where[ex.answer]
    if answer is not None and correct and answer not in correct:
      answer = correct[0]
    out.append(
      dataclasses.replace(
        ex,
        options=tuple(ex.options[i] for i in order),
        correct=correct,
        answer=correct[0] if correct else answer,
      )
    )
  return out


def apply(
  task: str, examples: Sequence[Example], rules: Iterable[tuple[str, int]]
) -> list[Example]:
  """`shuffle_options` with the seed of the first rule whose task pattern (fnmatch) matches
  `task` or its parent task (`bigbench:t` also covers `bigbench:t:<subtask>`)."""
  for pattern, seed in rules:
    if fnmatch.fnmatchcase(task, pattern) or fnmatch.fnmatchcase(task, f"{pattern}:*"):
      return shuffle_options(examples, int(seed))
  return list(examples)
