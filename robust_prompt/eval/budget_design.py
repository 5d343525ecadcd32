"""Which (instruction, example) cells a budgeted evaluation scores: a seeded cyclic design.

`--budget F` evaluates about a fraction F of a task's `[I, E]` grid (`I` instructions, `E`
examples; see docs/metrics.md, "Budgeted evaluation"). The design is a cyclic incomplete block
design:

* the examples are put in a seeded random order (positions `0 .. E-1` on a circle);
* the instructions get evenly spaced start offsets on that circle, `o_k = floor(k E / I)` for their
  rank `k`, the ranks interleaving the two splits in proportion (stratified, seeded);
* instruction `i` scores the `n(F) = round(F E)` examples that follow its offset. Each cell has a
  *phase*, its distance `(position - offset) mod E` from the instruction's start, and is in the
  design at budget F when `phase < n(F)`.

Consequences (each one tested):

* every instruction scores exactly `n(F)` examples and every example is scored under
  `n(F) I / E` instructions up to rounding (at least one: `n(F)` is raised to `ceil(E / I)` if
  needed, which can exceed F when `F I < 1`);
* each split gets the fraction F of its cells, and the instructions scoring any one example mix
  the splits in proportion, so the observed - unobserved comparison is paired within examples;
* designs are *nested*: with the same seed a larger budget is a superset of a smaller one, so
  raising the budget of a run evaluates only the missing cells;
* `F = 1` is the full grid; the design depends only on the seed, the task name and the *sets* of
  ids (not their order), and a task's design does not depend on the other tasks.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from robust_prompt.instructions.schema import SPLITS


@dataclasses.dataclass(frozen=True)
class TaskDesign:
  """The cells of one task to score at one budget.

  Attributes:
    task: task name (part of the seed).
    instruction_ids: [I] in the caller's order; `mask` rows follow it.
    example_ids: [E] in the caller's order; `mask` columns follow it.
    phase: [I, E] int in [0, E): a cell is in the design at budget F when
      `phase < per_instruction(F)`; sorting a row by phase gives the order in which that
      instruction's examples enter as the budget grows.
    budget: the requested fraction F.
    n_per_instruction: examples each instruction scores at this budget.
    mask: [I, E] bool, True for the cells to score.
  """

  task: str
  instruction_ids: tuple[str, ...]
  example_ids: tuple[str, ...]
  phase: np.ndarray
  budget: float
  n_per_instruction: int
  mask: np.ndarray

  @property
  def fraction(self) -> float:
    """Fraction of the grid in the design (>= budget when the at-least-once floor applies)."""
    return float(self.mask.mean()) if self.mask.size else 0.0

  def cells(self) -> set[tuple[str, str]]:
    """The (instruction_id, example_id) pairs to score."""
    rows, cols = np.nonzero(self.mask)
    return {(self.instruction_ids[i], self.example_ids[e]) for i, e in zip(rows, cols)}


def check_budget(budget: float) -> float:
  """`budget` as a float, or ValueError unless 0 < budget <= 1."""
  b = float(budget)
  if not (0.0 < b <= 1.0):
    raise ValueError(f"budget must be a fraction in (0, 1], got {budget!r}")
  return b


def per_instruction(budget: float, n_instructions: int, n_examples: int) -> int:
  """Examples each instruction scores: round(F E), at least ceil(E / I) and 1, at most E.

  The ceil(E / I) floor is what makes every example appear at least once (the instructions'
  offsets are at most ceil(E / I) apart on the circle). Non-decreasing in the budget, which is
  what makes designs nested.
  """
  budget = check_budget(budget)
  if n_examples == 0 or n_instructions == 0:
    return 0
  n = max(int(round(budget * n_examples)), math.ceil(n_examples / n_instructions), 1)
  return min(n, n_examples)


def task_seed(seed: int, task: str) -> list[int]:
  """Seed sequence of one task's design: independent of the other tasks of the run."""
  return [int(seed), zlib.crc32(task.encode("utf-8"))]


def _instruction_ranks(
  rng: np.random.Generator, instruction_ids: Sequence[str], splits: Sequence[str]
) -> np.ndarray:
  """[I] rank on the circle; ranks interleave the splits in proportion (stratified, seeded)."""
  position = np.zeros(len(instruction_ids))
  order = sorted(range(len(instruction_ids)), key=lambda i: instruction_ids[i])
  groups = [s for s in SPLITS if s in splits] + sorted(set(splits) - set(SPLITS))
  for split in groups:
    members = [i for i in order if splits[i] == split]
    # Members of a split sit at (j + u) / n_split in a random order: any arc of the circle then
    # holds each split's instructions in proportion to its size.
    slots = (rng.permutation(len(members)) + rng.uniform()) / len(members)
    position[members] = slots
  # Ties (same slot in two splits) resolve by id through the stable sort of the id order.
  ranked = sorted(order, key=lambda i: position[i])
  ranks = np.empty(len(instruction_ids), dtype=np.int64)
  ranks[ranked] = np.arange(len(instruction_ids))
  return ranks


def design_phase(
  task: str,
  instruction_ids: Sequence[str],
  splits: Sequence[str],
  example_ids: Sequence[str],
  *,
  seed: int = 0,
) -> np.ndarray:
  """[I, E] int phase of every cell (see the module docstring); rows and columns follow the input.

  Raises:
    ValueError: repeated ids, or `splits` not aligned with `instruction_ids`.
  """
  n_inst, n_ex = len(instruction_ids), len(example_ids)
  if len(splits) != n_inst:
    raise ValueError(f"{len(splits)} splits for {n_inst} instructions")
  if len(set(instruction_ids)) != n_inst or len(set(example_ids)) != n_ex:
    raise ValueError(f"task {task!r}: instruction and example ids must be unique")
  rng = np.random.default_rng(task_seed(seed, task))
  # Positions are drawn over the sorted ids, so the design ignores the order ids come in.
  by_id = sorted(range(n_ex), key=lambda e: example_ids[e])
  position = np.empty(n_ex, dtype=np.int64)
  position[by_id] = rng.permutation(n_ex)
  ranks = _instruction_ranks(rng, list(instruction_ids), list(splits))
  offsets = (ranks * n_ex) // max(n_inst, 1)  # evenly spaced starts, at most ceil(E/I) apart
  return (position[None, :] - offsets[:, None]) % max(n_ex, 1)


def design_task(
  task: str,
  instruction_ids: Sequence[str],
  splits: Sequence[str],
  example_ids: Sequence[str],
  budget: float,
  *,
  seed: int = 0,
) -> TaskDesign:
  """The cells of one task to score at `budget` (0 < budget <= 1), deterministic under `seed`.

  Args:
    task: task name; with `seed` it seeds the design.
    instruction_ids: [I] unique ids.
    splits: [I] "observed" / "unobserved", aligned with `instruction_ids`.
    example_ids: [E] unique ids.
    budget: fraction F of the grid.
    seed: design seed (a larger budget with the same seed gives a superset).
  """
  phase = design_phase(task, instruction_ids, splits, example_ids, seed=seed)
  n = per_instruction(budget, len(instruction_ids), len(example_ids))
  return TaskDesign(
    task=task,
    instruction_ids=tuple(instruction_ids),
    example_ids=tuple(example_ids),
    phase=phase,
    budget=float(budget),
    n_per_instruction=n,
    mask=phase < n,
  )


def design_tasks(
  tasks: Mapping[str, tuple[Sequence[str], Sequence[str], Sequence[str]]],
  budget: float,
  *,
  seed: int = 0,
) -> dict[str, TaskDesign]:
  """`design_task` for every task: `{task: (instruction_ids, splits, example_ids)}`."""
  check_budget(budget)
  return {
    task: design_task(task, iids, splits, eids, budget, seed=seed)
    for task, (iids, splits, eids) in sorted(tasks.items())
  }


def missing_cells(design: TaskDesign, done: set[tuple[str, str]]) -> list[tuple[str, str]]:
  """Cells of `design` not in `done` (scored before, e.g. at a lower budget), in phase order.

  Phase order (then instruction order) means an interrupted run has covered every instruction
  about equally far.
  """
  rows, cols = np.nonzero(design.mask)
  order = np.lexsort((rows, design.phase[rows, cols]))
  cells = [(design.instruction_ids[rows[k]], design.example_ids[cols[k]]) for k in order]
  return [c for c in cells if c not in done]
