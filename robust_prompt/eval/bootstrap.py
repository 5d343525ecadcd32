"""Bootstrap intervals for the observed - unobserved gap (see docs/metrics.md).

Shape letters as in robust_prompt/eval/metrics.py: `I` instructions, `E` examples shared by all
instructions of a task (paired), `R` resamples, `T` tasks. Resampling is done with multinomial
counts and weighted means, never an `[R, I, E]` tensor, so 1,000 resamples of a 50-instruction,
1,500-example task take milliseconds.

The macro gap (mean over tasks) resamples instructions jointly across the tasks that share them
(`macro_gap_replicates`): MMLU's 57 subjects are scored under one instruction set, so a phrasing
that happens to be bad is bad in every subject, and resampling it independently per task would
average that away (an interval several times too narrow).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_N_RESAMPLES = 1000
# Cap on R * E floats materialised at once by the paired bootstrap (about 32 MB of float64).
_CHUNK_ELEMENTS = 4_000_000


def _uniform_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[size, n] multiplicities of n items in `size` resamples of n draws with replacement."""
  return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Row-wise mean of `values` [R, I] under integer weights [R, I], ignoring NaN values."""
  valid = ~np.isnan(values)
  den = np.sum(weights * valid, axis=1)
  num = np.sum(weights * np.where(valid, values, 0.0), axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def bootstrap_gap_paired(
  correct_observed: np.ndarray,
  correct_unobserved: np.ndarray,
  *,
  n_resamples: int = DEFAULT_N_RESAMPLES,
  seed: int | Sequence[int] = 0,
  instruction_counts: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
  """Bootstrap replicates of the gap, resampling instructions AND (paired) examples.

  Each replicate draws E examples with replacement, the same draw for every instruction of both
  splits (scores are paired across instructions), recomputes each instruction's accuracy on that
  draw, then draws I_obs observed and I_unobs unobserved instructions with replacement, each
  within its split, and takes mean(observed) - mean(unobserved). Vectorised as weighted means
  with multinomial counts (no [R, I, E] tensor).

  Args:
    correct_observed: [I_obs, E] float (NaN where not scored).
    correct_unobserved: [I_unobs, E] float, same E columns (same examples, same order).
    n_resamples: R.
    seed: seed (or seed sequence) of `np.random.default_rng`; same seed, same replicates.
    instruction_counts: optional `([R, I_obs], [R, I_unobs])` instruction multiplicities drawn
      by the caller (shared with other tasks, see `macro_gap_replicates`); then only the
      examples are drawn here.

  Returns:
    [R] replicate gaps (NaN only for degenerate replicates with missing scores or, with
    `instruction_counts`, no weight on any instruction of a split).
  """
  obs = np.asarray(correct_observed, dtype=np.float64)
  uno = np.asarray(correct_unobserved, dtype=np.float64)
  if obs.shape[0] == 0 or uno.shape[0] == 0:
    raise ValueError("the gap needs at least one observed and one unobserved instruction")
  if obs.shape[1] != uno.shape[1]:
    raise ValueError(f"splits must share examples: E={obs.shape[1]} vs E={uno.shape[1]}")
  _check_counts(instruction_counts, n_resamples, (obs.shape[0], uno.shape[0]))
  rng = np.random.default_rng(seed)
  n_examples = obs.shape[1]
  chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n_examples, 1)))
  out = []
  for start in range(0, n_resamples, chunk):
    r = min(chunk, n_resamples - start)
    w = _uniform_counts(rng, n_examples, r)  # [r, E]
    means = []
    for split, c in enumerate((obs, uno)):
      mask = ~np.isnan(c)
      num = w @ np.where(mask, c, 0.0).T  # [r, I]
      den = w @ mask.T.astype(np.float64)
      with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)
      if instruction_counts is None:
        counts = _uniform_counts(rng, c.shape[0], r)
      else:
        counts = instruction_counts[split][start : start + r]
      means.append(_weighted_mean(counts, acc))
    out.append(means[0] - means[1])
  return np.concatenate(out)


def bootstrap_gap_instructions(
  accuracy_observed: Sequence[float] | np.ndarray,
  accuracy_unobserved: Sequence[float] | np.ndarray,
  *,
  n_resamples: int = DEFAULT_N_RESAMPLES,
  seed: int | Sequence[int] = 0,
) -> np.ndarray:
  """Bootstrap replicates of the gap resampling instructions only (within each split).

  For when only per-instruction accuracies are known: example-level sampling noise is ignored, so
  the interval is narrower than the paired one when instructions are few.

  Args:
    accuracy_observed: [I_obs]; accuracy_unobserved: [I_unobs].
    n_resamples: R.
    seed: seed (or seed sequence) of `np.random.default_rng`.

  Returns:
    [R] replicate gaps.
  """
  accs = [np.asarray(a, dtype=np.float64) for a in (accuracy_observed, accuracy_unobserved)]
  if any(np.all(np.isnan(a)) for a in accs):  # also an empty split
    raise ValueError("the gap needs at least one observed and one unobserved instruction")
  rng = np.random.default_rng(seed)
  means = []
  for a in accs:
    a = a[~np.isnan(a)]
    counts = _uniform_counts(rng, a.size, n_resamples)  # [R, I]
    means.append(counts @ a / a.size)
  return means[0] - means[1]


def _check_counts(counts, n_resamples: int, sizes: tuple[int, int]) -> None:
  if counts is None:
    return
  shapes = tuple(np.shape(c) for c in counts)
  if shapes != ((n_resamples, sizes[0]), (n_resamples, sizes[1])):
    raise ValueError(
      f"instruction_counts have shapes {shapes}; expected ({n_resamples}, {sizes[0]}) and "
      f"({n_resamples}, {sizes[1]})"
    )


@dataclasses.dataclass(frozen=True)
class TaskGapData:
  """What the gap bootstrap needs of one task (both splits non-empty).

  Attributes:
    observed_ids, unobserved_ids: `[I_obs]`, `[I_unobs]` instruction ids; the same id in two
      tasks is the same instruction (one phrasing scored on both).
    accuracy_observed, accuracy_unobserved: `[I_obs]`, `[I_unobs]` float.
    correct_observed, correct_unobserved: `[I_obs, E]`, `[I_unobs, E]` float 1/0/NaN (paired
      examples), or None when only accuracies are known.
  """

  observed_ids: tuple[str, ...]
  unobserved_ids: tuple[str, ...]
  accuracy_observed: np.ndarray
  accuracy_unobserved: np.ndarray
  correct_observed: np.ndarray | None = None
  correct_unobserved: np.ndarray | None = None


def instruction_sets(tasks: Mapping[str, TaskGapData]) -> list[list[str]]:
  """Tasks grouped by shared instructions: connected components of "have an instruction in common".

  Returns:
    lists of task names (each sorted; components ordered by their first task).
  """
  parent = {name: name for name in tasks}

  def find(x: str) -> str:
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  owner: dict[tuple[str, str], str] = {}
  for name in sorted(tasks):
    t = tasks[name]
    keys = [("observed", i) for i in t.observed_ids] + [("unobserved", i) for i in t.unobserved_ids]
    for key in keys:
      if key in owner:
        parent[find(name)] = find(owner[key])
      else:
        owner[key] = name
  groups: dict[str, list[str]] = {}
  for name in sorted(tasks):
    groups.setdefault(find(name), []).append(name)
  return sorted(groups.values(), key=lambda g: g[0])


def _seed(seed: int, *labels: str) -> list[int]:
  return [seed] + [zlib.crc32(label.encode("utf-8")) for label in labels]


def macro_gap_replicates(
  tasks: Mapping[str, TaskGapData],
  *,
  weights: Mapping[str, float] | None = None,
  n_resamples: int = DEFAULT_N_RESAMPLES,
  seed: int = 0,
) -> np.ndarray:
  """Bootstrap replicates of the (weighted) mean gap over tasks, instructions resampled jointly.

  Tasks that share instructions (`instruction_sets`) share one draw of instruction
  multiplicities per replicate: the union of their ids in each split is resampled with
  replacement (as many draws as the union has ids), and every task weighs its own
  instructions by those counts. So a phrasing drawn twice counts twice in every task that uses
  it, which is what makes the macro interval reflect that the tasks' gaps move together. Tasks
  with disjoint instructions are resampled independently. Examples are drawn per task (tasks
  have their own examples), paired across the task's instructions as in `bootstrap_gap_paired`;
  tasks without example-level scores resample instructions only.

  With identical instruction sets this is exactly `bootstrap_gap_paired` with one instruction
  draw for all tasks. Where sets only partly overlap, a task can draw none of its own
  instructions of a split in a replicate; it is then left out of that replicate's mean.

  Args:
    tasks: task name -> its data (both splits present).
    weights: task name -> weight of the task in the mean (default: equal).
    n_resamples: R.
    seed: base seed; the draws of an instruction set are seeded by its ids, a task's examples
      by its name, so a replicate does not depend on which other sets are in the run.

  Returns:
    [R] replicate macro gaps (NaN only when no task is defined in a replicate).
  """
  names = sorted(tasks)
  if not names:
    raise ValueError("the macro gap needs at least one task with both splits")
  w = np.array([1.0 if weights is None else float(weights[n]) for n in names])
  reps = np.full((n_resamples, len(names)), np.nan)
  column = {n: j for j, n in enumerate(names)}
  for group in instruction_sets(tasks):
    union = [
      sorted({i for n in group for i in getattr(tasks[n], f"{split}_ids")})
      for split in ("observed", "unobserved")
    ]
    rng = np.random.default_rng(_seed(seed, "instructions", *union[0], "|", *union[1]))
    counts = [_uniform_counts(rng, len(u), n_resamples) for u in union]  # [R, |union|] each
    index = [{iid: k for k, iid in enumerate(u)} for u in union]
    accuracy_only = []
    for n in group:
      t = tasks[n]
      if t.correct_observed is None or t.correct_unobserved is None:
        accuracy_only.append(n)
        continue
      own = tuple(
        c[:, [ix[i] for i in ids]]
        for c, ix, ids in zip(counts, index, (t.observed_ids, t.unobserved_ids))
      )
      reps[:, column[n]] = bootstrap_gap_paired(
        t.correct_observed,
        t.correct_unobserved,
        n_resamples=n_resamples,
        seed=_seed(seed, "examples", n),
        instruction_counts=own,
      )
    if accuracy_only:
      # No example draw: all of the set's accuracy-only tasks at once, as a [T', |union|] table
      # (NaN where a task lacks an instruction) weighted by the shared counts.
      means = []
      for split, (c, ix) in enumerate(zip(counts, index)):
        table = np.full((len(accuracy_only), len(ix)), np.nan)
        for row, n in enumerate(accuracy_only):
          t = tasks[n]
          ids = (t.observed_ids, t.unobserved_ids)[split]
          acc = (t.accuracy_observed, t.accuracy_unobserved)[split]
          table[row, [ix[i] for i in ids]] = acc
        valid = ~np.isnan(table)
        num = c @ np.where(valid, table, 0.0).T  # [R, T']
        den = c @ valid.T.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
          means.append(np.where(den > 0, num / np.maximum(den, 1e-300), np.nan))
      reps[:, [column[n] for n in accuracy_only]] = means[0] - means[1]
  valid = ~np.isnan(reps)
  den = valid @ w
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, np.where(valid, reps, 0.0) @ w / np.maximum(den, 1e-300), np.nan)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
  """Percentile bootstrap interval: the (1-level)/2 and (1+level)/2 quantiles of the replicates."""
  r = np.asarray(replicates, dtype=np.float64)
  r = r[~np.isnan(r)]
  if r.size == 0:
    return None
  lo, hi = np.quantile(r, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)
