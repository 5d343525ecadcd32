"""Macro averages: the shared-instruction bootstrap of the macro gap, task weights, errors."""

import math

import numpy as np
import pytest

from robust_prompt.eval import bootstrap, metrics, summary, tables
from robust_prompt.eval.tables import TaskScores


def _csv_rows(task, accs, n_examples=None, model="m"):
  """Per-instruction rows: `accs` maps instruction id ("o*" observed, "u*" unobserved) -> acc."""
  return [
    dict(
      model=model,
      task=task,
      instruction_id=iid,
      split="observed" if iid.startswith("o") else "unobserved",
      source="human",
      n_examples=-1 if n_examples is None else n_examples,
      accuracy=acc,
    )
    for iid, acc in accs.items()
  ]


def _summ(rows, **kw):
  return summary.summarize(tables.tables_from_per_instruction(rows), **kw)["m"]


# -- standard errors -------------------------------------------------------------------------------


def test_paired_se_accounts_for_pairing_and_binomial_bounds_it():
  rng = np.random.default_rng(0)
  one = (rng.random(200) < 0.6).astype(float)
  # Instructions that agree on every example: the error of one instruction, not sqrt(I) smaller.
  same = np.stack([one] * 5)
  assert metrics.paired_mean_se(same) == pytest.approx(np.std(one, ddof=1) / math.sqrt(200))
  indep = (rng.random((5, 200)) < 0.6).astype(float)
  assert metrics.paired_mean_se(indep) < 0.6 * metrics.paired_mean_se(same)
  bound = metrics.binomial_se(float(indep.mean()), 200)
  assert metrics.paired_mean_se(indep) <= bound
  assert metrics.binomial_se(0.5, None) is None and metrics.paired_mean_se(same[:, :1]) is None


def test_split_se_from_csv_is_binomial_and_macro_se_combines_tasks():
  rows = _csv_rows("A", {"o1": 0.6, "o2": 0.8, "u1": 0.5}, 100)
  rows += _csv_rows("B", {"o1": 0.4, "u1": 0.3}, 400)
  s = _summ(rows, n_resamples=50)
  se_a = math.sqrt(0.7 * 0.3 / 100)
  se_b = math.sqrt(0.4 * 0.6 / 400)
  assert s["tasks"]["A"]["observed"]["se"] == pytest.approx(se_a)
  assert s["tasks"]["B"]["observed"]["se"] == pytest.approx(se_b)
  assert s["macro"]["observed"]["se"] == pytest.approx(math.sqrt(se_a**2 + se_b**2) / 2)
  w = _summ(rows, n_resamples=50, macro="weighted")
  assert w["macro"]["observed"]["se"] == pytest.approx(
    math.sqrt((100 * se_a) ** 2 + (400 * se_b) ** 2) / 500
  )
  # Unknown n_examples: no standard error (not a made-up one).
  assert _summ(_csv_rows("A", {"o1": 0.6, "u1": 0.5}))["tasks"]["A"]["observed"]["se"] is None


# -- weighting -------------------------------------------------------------------------------------


def test_macro_weighted_by_task_size():
  rows = _csv_rows("mmlu:a", {"o1": 0.6, "o2": 0.8, "u1": 0.5}, 100)
  rows += _csv_rows("mmlu:b", {"o1": 0.4, "u1": 0.3, "u2": 0.2}, 300)
  plain = _summ(rows, n_resamples=100)
  assert plain["settings"]["macro"] == "unweighted"
  assert plain["macro"]["observed"]["mean"] == pytest.approx((0.7 + 0.4) / 2)
  w = _summ(rows, n_resamples=100, macro="weighted")
  assert w["settings"]["macro"] == "weighted"
  assert w["macro"]["observed"]["mean"] == pytest.approx((100 * 0.7 + 300 * 0.4) / 400)
  assert w["macro"]["unobserved"]["mean"] == pytest.approx((100 * 0.5 + 300 * 0.25) / 400)
  assert plain["macro"]["gap"]["value"] == pytest.approx((0.2 + 0.15) / 2)
  assert w["macro"]["gap"]["value"] == pytest.approx((100 * 0.2 + 300 * 0.15) / 400)
  assert w["macro"]["avgp"] == pytest.approx((100 * 1.9 / 3 + 300 * 0.3) / 400)
  assert w["macro"]["pdr"] == pytest.approx(1 - 0.3125 / 0.475)
  assert w["benchmarks"]["mmlu"]["observed"]["mean"] == w["macro"]["observed"]["mean"]
  # Per-task values do not depend on the weighting.
  assert w["tasks"] == plain["tasks"]
  lo, hi = w["macro"]["gap"]["ci95"]
  assert lo <= w["macro"]["gap"]["value"] <= hi


def test_weighted_macro_needs_task_sizes():
  rows = _csv_rows("A", {"o1": 0.6, "u1": 0.5}, 100) + _csv_rows("B", {"o1": 0.4, "u1": 0.3})
  with pytest.raises(ValueError, match="number of examples.*unknown for B"):
    _summ(rows, macro="weighted")
  with pytest.raises(ValueError, match="macro must be one of unweighted, weighted"):
    _summ(rows, macro="micro")


# -- shared instructions ---------------------------------------------------------------------------


def _gap_data(obs_ids, uno_ids, acc_obs, acc_uno, correct=None):
  return bootstrap.TaskGapData(
    tuple(obs_ids),
    tuple(uno_ids),
    np.asarray(acc_obs, float),
    np.asarray(acc_uno, float),
    *(correct or (None, None)),
  )


def test_instruction_sets_are_connected_components():
  tasks = {
    "a": _gap_data(["o1"], ["u1"], [0.5], [0.4]),
    "b": _gap_data(["o2"], ["u1"], [0.5], [0.4]),  # shares u1 with a
    "c": _gap_data(["o3"], ["u3"], [0.5], [0.4]),
    "d": _gap_data(["o3", "o4"], ["u4"], [0.5, 0.6], [0.4]),  # shares o3 with c
    "e": _gap_data(["u1"], ["o1"], [0.5], [0.4]),  # same ids, other splits: other instructions
  }
  assert bootstrap.instruction_sets(tasks) == [["a", "b"], ["c", "d"], ["e"]]


def test_macro_interval_of_tasks_sharing_instructions_is_not_averaged_away():
  # 30 subjects scored under one instruction set whose phrasings differ the same way in every
  # subject: the macro gap is exactly as uncertain as one subject's (the instruction draw is the
  # same), not sqrt(30) times less.
  accs = {"o1": 0.50, "o2": 0.62, "o3": 0.71, "u1": 0.45, "u2": 0.66, "u3": 0.52, "u4": 0.70}
  rows = [r for t in range(30) for r in _csv_rows(f"mmlu:s{t:02d}", accs, 100)]
  s = _summ(rows, n_resamples=2000)
  lo, hi = s["macro"]["gap"]["ci95"]
  tlo, thi = s["tasks"]["mmlu:s00"]["gap"]["ci95"]
  assert (hi - lo) == pytest.approx(thi - tlo, rel=0.15)
  assert s["macro"]["gap"]["n_instruction_sets"] == 1
  # Subjects with their own instructions (disjoint ids) are independent: the macro narrows.
  rows = [
    r
    for t in range(30)
    for r in _csv_rows(f"bb:t{t:02d}", {f"{k[0]}{t}_{k[1:]}": v for k, v in accs.items()}, 100)
  ]
  s = _summ(rows, n_resamples=2000)
  lo, hi = s["macro"]["gap"]["ci95"]
  assert s["macro"]["gap"]["n_instruction_sets"] == 30
  assert (hi - lo) == pytest.approx((thi - tlo) / math.sqrt(30), rel=0.25)


def test_macro_replicates_with_partial_overlap_and_examples():
  rng = np.random.default_rng(3)
  obs, uno = (rng.random((3, 50)) < 0.6).astype(float), (rng.random((4, 50)) < 0.5).astype(float)
  tasks = {
    "paired": _gap_data(
      ["o1", "o2", "o3"], ["u1", "u2", "u3", "u4"], obs.mean(1), uno.mean(1), (obs, uno)
    ),
    "subset": _gap_data(["o1"], ["u1", "u2"], [0.7], [0.5, 0.6]),  # often draws no o1
  }
  reps = bootstrap.macro_gap_replicates(tasks, n_resamples=500, seed=1)
  assert reps.shape == (500,) and np.isfinite(reps).all()
  again = bootstrap.macro_gap_replicates(tasks, n_resamples=500, seed=1)
  np.testing.assert_array_equal(reps, again)
  alone = bootstrap.macro_gap_replicates({"paired": tasks["paired"]}, n_resamples=500, seed=1)
  point = obs.mean() - uno.mean()
  assert abs(alone.mean() - point) < 0.03 and alone.std() > 0.02
  with pytest.raises(ValueError, match="at least one task"):
    bootstrap.macro_gap_replicates({})


def _simulated_shared_study(rng, n_tasks=57, n_obs=10, n_uno=16, sd_phrasing=0.06):
  """Per-task accuracies [T, I] of a study whose tasks share phrasings; true gap 0.

  A phrasing's effect is shared by every task (one instruction set for all), plus a small
  task x phrasing interaction; observed and unobserved phrasings come from one population.
  """
  effect = rng.normal(0.0, sd_phrasing, n_obs + n_uno)
  base = rng.uniform(0.3, 0.8, n_tasks)
  noise = rng.normal(0.0, 0.02, (n_tasks, n_obs + n_uno))
  return np.clip(base[:, None] + effect[None, :] + noise, 0.0, 1.0)


def _coverage(n_sims, make_interval):
  rng = np.random.default_rng(2024)
  hits = 0
  for sim in range(n_sims):
    lo, hi = make_interval(rng, sim)
    hits += lo <= 0.0 <= hi
  return hits / n_sims


def test_macro_gap_interval_covers_with_shared_instructions():
  n_obs, n_uno = 10, 16
  ids_obs = [f"o{i}" for i in range(n_obs)]
  ids_uno = [f"u{i}" for i in range(n_uno)]

  def interval(rng, sim):
    acc = _simulated_shared_study(rng, n_obs=n_obs, n_uno=n_uno)
    tasks = {
      f"t{t}": _gap_data(ids_obs, ids_uno, acc[t, :n_obs], acc[t, n_obs:])
      for t in range(acc.shape[0])
    }
    reps = bootstrap.macro_gap_replicates(tasks, n_resamples=200, seed=sim)
    return bootstrap.percentile_interval(reps)

  assert _coverage(300, interval) >= 0.90


@pytest.mark.slow
def test_macro_gap_interval_covers_with_examples_through_summary():
  # The whole summary path with paired example-level scores (100 examples a task, 500
  # resamples): a phrasing's accuracy is drawn per task, then every example under it.
  n_obs, n_uno, n_examples = 10, 16, 100
  ids = tuple(f"o{i}" for i in range(n_obs)) + tuple(f"u{i}" for i in range(n_uno))
  splits = ("observed",) * n_obs + ("unobserved",) * n_uno

  def interval(rng, sim):
    acc = _simulated_shared_study(rng, n_tasks=57, n_obs=n_obs, n_uno=n_uno)
    tabs = {}
    for t in range(acc.shape[0]):
      correct = (rng.random((len(ids), n_examples)) < acc[t][:, None]).astype(float)
      tabs[f"mmlu:t{t}"] = TaskScores(
        model="m",
        task=f"mmlu:t{t}",
        instruction_ids=ids,
        splits=splits,
        sources=("human",) * len(ids),
        accuracy=correct.mean(1),
        n_examples=np.full(len(ids), n_examples),
        correct=correct,
      )
    return summary.summarize_model(tabs, n_resamples=500, seed=sim)["macro"]["gap"]["ci95"]

  assert _coverage(200, interval) >= 0.90
