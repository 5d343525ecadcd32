"""Robustness metrics: pure numpy functions over one task's score table.

Shape letters (besides design.md's): `I` instructions of one task (or of one split of it), `E`
examples of the task (shared by all its instructions, so scores are *paired* across instructions),
`R` bootstrap resamples (robust_prompt/eval/bootstrap.py). Correctness matrices are float `[I, E]` with 1.0 / 0.0 and NaN where an
instruction was not scored on an example; predictions are int `[I, E]` option indices (or codes of
generated strings) with -1 where missing. Every formula is also written out in docs/metrics.md.

Undefined values (a statistic of an empty split, a gap without observed instructions, ...) are
`None`, never NaN, so that summaries are JSON-clean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def instruction_accuracy(correct: np.ndarray) -> np.ndarray:
  """Accuracy of each instruction: mean of `correct` over the examples it was scored on.

  Args:
    correct: [I, E] float, 1.0 correct / 0.0 wrong / NaN not scored.

  Returns:
    [I] float; NaN for an instruction scored on no example.
  """
  correct = np.asarray(correct, dtype=np.float64)
  counts = np.sum(~np.isnan(correct), axis=1)
  sums = np.nansum(correct, axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def spread(accuracy: Sequence[float] | np.ndarray) -> dict:
  """Mean, std, min, max and range of per-instruction accuracies (one task, one split).

  std is the sample standard deviation (ddof=1) when there are at least two instructions and 0.0
  for a single one; range = max - min. An empty split gives `None` everywhere and
  `n_instructions` 0.

  Args:
    accuracy: [I] accuracies in [0, 1].
  """
  a = np.asarray(accuracy, dtype=np.float64)
  a = a[~np.isnan(a)]
  if a.size == 0:
    return dict(mean=None, std=None, min=None, max=None, range=None, n_instructions=0)
  return dict(
    mean=float(a.mean()),
    std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
    min=float(a.min()),
    max=float(a.max()),
    range=float(a.max() - a.min()),
    n_instructions=int(a.size),
  )


def gap(mean_observed: float | None, mean_unobserved: float | None) -> float | None:
  """Observed - unobserved gap: mean accuracy over observed minus over unobserved instructions."""
  if mean_observed is None or mean_unobserved is None:
    return None
  return float(mean_observed - mean_unobserved)


def pdr(mean_observed: float | None, mean_unobserved: float | None) -> float | None:
  """Performance drop rate, PDR = 1 - acc_unobserved / acc_observed.

  `None` when either split is missing or acc_observed is 0 (the ratio is undefined). Negative when
  unobserved instructions do better.
  """
  if mean_observed is None or mean_unobserved is None or mean_observed == 0:
    return None
  return float(1.0 - mean_unobserved / mean_observed)


def cps(accuracy: Sequence[float] | np.ndarray) -> dict:
  """MaxP, AvgP and Combined Performance Score (Mizrahi et al., 2024) over instructions.

  MaxP = max_i acc_i, AvgP = mean_i acc_i and CPS = MaxP * (1 - (MaxP - AvgP)): high when the best
  instruction is good and the average is close to it. Callers pass all instructions of a task
  (both splits).
  """
  a = np.asarray(accuracy, dtype=np.float64)
  a = a[~np.isnan(a)]
  if a.size == 0:
    return dict(maxp=None, avgp=None, cps=None)
  maxp, avgp = float(a.max()), float(a.mean())
  return dict(maxp=maxp, avgp=avgp, cps=maxp * (1.0 - (maxp - avgp)))


def consistency(predictions: np.ndarray) -> dict:
  """Agreement of predictions across instructions (compare option indices, not rendered labels).

  all_agree: fraction of examples, among those scored under every instruction, whose prediction is
    identical under all of them.
  pairwise: for each pair of instructions, the fraction of examples (scored under both) with the
    same prediction; averaged with equal weight over the I*(I-1)/2 pairs.
  Both are `None` with fewer than two instructions (nothing to compare) or no shared example.

  Args:
    predictions: [I, E] int, -1 where missing.
  """
  p = np.asarray(predictions)
  if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] == 0:
    return dict(all_agree=None, pairwise=None)
  valid = p >= 0
  full = valid.all(axis=0)
  all_agree = float(np.mean((p[:, full] == p[0, full]).all(axis=0))) if full.any() else None
  pair_scores = []
  for a in range(p.shape[0] - 1):
    both = valid[a] & valid[a + 1 :]  # [I-a-1, E]
    same = (p[a] == p[a + 1 :]) & both
    n = both.sum(axis=1)
    pair_scores.extend((same.sum(axis=1)[n > 0] / n[n > 0]).tolist())
  pairwise = float(np.mean(pair_scores)) if pair_scores else None
  return dict(all_agree=all_agree, pairwise=pairwise)


def worst_instructions(
  instruction_ids: Sequence[str], accuracy: Sequence[float] | np.ndarray, k: int = 5
) -> list[tuple[str, float]]:
  """The k instructions with the lowest accuracy, worst first (ties broken by id)."""
  acc = np.asarray(accuracy, dtype=np.float64)
  order = sorted(
    (i for i in range(len(instruction_ids)) if not np.isnan(acc[i])),
    key=lambda i: (acc[i], instruction_ids[i]),
  )
  return [(instruction_ids[i], float(acc[i])) for i in order[:k]]


def macro_mean(
  values: Sequence[float | None], weights: Sequence[float] | None = None
) -> float | None:
  """(Weighted) mean over tasks of a per-task statistic, skipping tasks where it is `None`.

  Args:
    values: [T] per-task values (None where undefined).
    weights: [T] task weights (e.g. numbers of examples); default equal.
  """
  w = [1.0] * len(values) if weights is None else list(weights)
  if len(w) != len(values):
    raise ValueError(f"{len(values)} values but {len(w)} weights")
  kept = [(v, wt) for v, wt in zip(values, w) if v is not None]
  if not kept or sum(wt for _, wt in kept) <= 0:
    return None
  return float(np.average([v for v, _ in kept], weights=[wt for _, wt in kept]))


def paired_mean_se(correct: np.ndarray) -> float | None:
  """Standard error, over examples, of the mean accuracy of a set of paired instructions.

  The split mean `mean_i acc_i` is (up to missing cells) the mean over examples of
  `cbar_e = mean_i c[i, e]`; examples are the sampled unit, so its standard error is
  `sd_e(cbar_e) / sqrt(E)` (ddof=1). Pairing is accounted for: instructions that agree on every
  example give the binomial error of one instruction, not a smaller one.

  Args:
    correct: [I, E] float 1/0/NaN; examples scored under none of the instructions are ignored.

  Returns:
    The standard error, or None with fewer than two scored examples.
  """
  c = np.asarray(correct, dtype=np.float64)
  if c.ndim != 2 or c.shape[0] == 0:
    return None
  scored = ~np.isnan(c).all(axis=0)
  if scored.sum() < 2:
    return None
  cbar = np.nanmean(c[:, scored], axis=0)
  return float(np.std(cbar, ddof=1) / np.sqrt(cbar.size))


def binomial_se(mean: float | None, n_examples: int | None) -> float | None:
  """`sqrt(m (1 - m) / n)`: the standard error of an accuracy `m` measured on `n` examples.

  For the mean of paired instructions it is an upper bound of `paired_mean_se` (a variable in
  [0, 1] with mean m has variance at most m (1 - m)), reached when they all agree; used when
  only per-instruction accuracies are known. None when `n` is unknown (< 1).
  """
  if mean is None or n_examples is None or n_examples < 1:
    return None
  return float(np.sqrt(mean * (1.0 - mean) / n_examples))


def macro_se(ses: Sequence[float | None], weights: Sequence[float] | None = None) -> float | None:
  """Standard error of the (weighted) mean over tasks from the tasks' standard errors.

  Tasks have their own examples, so their errors are independent:
  `sqrt(sum_t w_t^2 se_t^2) / sum_t w_t`. None when any task lacks one (the mean would then not
  match the macro mean it describes).
  """
  w = [1.0] * len(ses) if weights is None else list(weights)
  if not ses or any(s is None for s in ses) or sum(w) <= 0:
    return None
  return float(np.sqrt(sum(wt * wt * s * s for s, wt in zip(ses, w))) / sum(w))
