"""The budgeted-evaluation estimator: exactness on full grids, recovery of simulated effects,
determinism, results-table input and the summary section."""

import dataclasses
import json

import numpy as np
import pytest

from robust_prompt.eval import budget, budget_design, budget_model, summary, tables
from robust_prompt.eval.budget_model import TaskGrid

SETTINGS = budget.BudgetSettings(n_draws=200)


def simulate(
  seed=0,
  n_tasks=2,
  n_obs=4,
  n_unobs=8,
  n_ex=400,
  shared=False,
  biased=(),
  b_sd=0.8,
):
  """Full grids from the estimator's own model with known effects.

  Returns (grids, truth) with truth[task] = {"delta": [I] instruction logit effects, "p": [I, E]}.
  Instructions in `biased` always answer option 0 (right exactly when the gold label is 0).
  """
  rng = np.random.default_rng(seed)
  n_inst = n_obs + n_unobs
  splits = ("observed",) * n_obs + ("unobserved",) * n_unobs
  common = rng.normal(0.0, 0.8, n_inst)
  grids, truth = [], {}
  for t in range(n_tasks):
    labels = rng.integers(0, 2, n_ex)
    delta = common + rng.normal(0.0, 0.1, n_inst) if shared else rng.normal(0.0, 0.8, n_inst)
    delta = delta + np.where(np.array(splits) == "observed", 1.0, 0.0)
    logit = 0.5 + delta[:, None] + rng.normal(0.0, b_sd, n_ex)[None, :]
    p = 1.0 / (1.0 + np.exp(-logit))
    for i in biased:
      p[i] = np.where(labels == 0, 0.98, 0.02)
    correct = (rng.uniform(size=p.shape) < p).astype(np.float64)
    ids = tuple(f"i{i}" if shared else f"t{t}_i{i}" for i in range(n_inst))
    grid = TaskGrid(
      task=f"sim:t{t}",
      instruction_ids=ids,
      splits=splits,
      correct=correct,
      labels=labels,
      example_ids=tuple(f"e{e}" for e in range(n_ex)),
    )
    grids.append(grid)
    truth[grid.task] = {"delta": delta, "p": p}
  return grids, truth


def subsample(grid, fraction, seed=0):
  d = budget_design.design_task(
    grid.task, grid.instruction_ids, grid.splits, grid.example_ids, fraction, seed=seed
  )
  return dataclasses.replace(grid, correct=np.where(d.mask, grid.correct, np.nan))


def rows_of(grid, model="m"):
  """Results rows of a grid (NaN cells left out), gold = label, prediction consistent."""
  rows = []
  for i, iid in enumerate(grid.instruction_ids):
    for e, eid in enumerate(grid.example_ids):
      if np.isnan(grid.correct[i, e]):
        continue
      gold = int(grid.labels[e])
      ok = bool(grid.correct[i, e])
      rows.append(
        dict(
          model=model,
          task=grid.task,
          instruction_id=iid,
          split=grid.splits[i],
          source="sim",
          example_id=eid,
          prediction=gold if ok else 1 - gold,
          gold=gold,
          correct=ok,
        )
      )
  return rows


def test_full_grid_gives_the_plain_evaluation_exactly():
  grids, _ = simulate(n_ex=120)
  rows = [r for g in grids for r in rows_of(g)]
  est = budget.estimate_results(rows, SETTINGS)["m"]
  plain = summary.summarize_model(
    {t: s for (_, t), s in tables.tables_from_results(rows).items()}, n_resamples=10
  )
  assert est.fits == {}  # nothing to predict, nothing fitted
  for task, te in est.tasks.items():
    table = tables.tables_from_results(rows)[("m", task)]
    np.testing.assert_array_equal(te.accuracy, table.accuracy)
    for split in ("observed", "unobserved"):
      for key in ("mean", "std", "min", "max"):
        assert te.figures[f"{split}.{key}"] == plain["tasks"][task][split][key]
      acc = table.accuracy[table.in_split(split)]
      for q in (0.1, 0.5, 0.9):
        assert te.figures[f"{split}.{budget.quantile_key(q)}"] == float(np.quantile(acc, q))
    assert te.figures["gap"] == plain["tasks"][task]["gap"]["value"]
    for name, value in te.figures.items():
      assert te.intervals[name] == (value, value)
  assert est.macro["gap"]["value"] == pytest.approx(plain["macro"]["gap"]["value"], abs=1e-15)


def test_recovers_known_instruction_and_label_effects():
  grids, truth = simulate(seed=1, n_tasks=1, n_ex=600, biased=(9,))
  sub = [subsample(g, 0.2) for g in grids]
  fit = budget_model.fit(sub)
  assert fit.converged
  t = fit.tasks[0]
  # Instruction logits (mu + delta + c, averaged over the labels) against the known effects.
  kappa = t.kappa(fit.phi).reshape(2, t.n_inst)
  known = truth["sim:t0"]["delta"]
  keep = np.arange(t.n_inst) != 9
  assert np.corrcoef(kappa.mean(axis=0)[keep], known[keep])[0, 1] > 0.9
  # The option-0 instruction: the label bias is found (right on label 0, wrong on label 1).
  assert kappa[0, 9] > 2.0 and kappa[1, 9] < -2.0
  # Full-grid accuracies: better than the evaluated cells' means, and with honest intervals.
  est = budget.estimate(sub, SETTINGS)
  te = est.tasks["sim:t0"]
  full = grids[0].correct.mean(axis=1)
  naive = np.nanmean(sub[0].correct, axis=1)
  assert np.abs(te.accuracy - full).mean() < 0.8 * np.abs(naive - full).mean()
  inside = (te.accuracy_ci[:, 0] <= full) & (full <= te.accuracy_ci[:, 1])
  assert inside.mean() >= 0.75
  lo, hi = te.intervals["gap"]
  assert lo <= budget.exact_figures(full, grids[0].splits)["gap"] <= hi


def test_shared_instruction_effects_help_a_small_task():
  grids, _ = simulate(seed=2, n_tasks=4, n_ex=300, shared=True, b_sd=0.3)
  grids[0] = dataclasses.replace(
    grids[0],
    correct=grids[0].correct[:, :40],
    labels=grids[0].labels[:40],
    example_ids=grids[0].example_ids[:40],
  )
  sub = [subsample(g, 0.1) for g in grids]
  errors = {}
  for share in (True, False):
    settings = dataclasses.replace(
      SETTINGS, model=budget_model.ModelSettings(share_instructions=share)
    )
    est = budget.estimate(sub, settings)
    errors[share] = np.abs(est.tasks["sim:t0"].accuracy - grids[0].correct.mean(axis=1)).mean()
    assert ("A/observed" in est.fits["sim"]["variances"]) == share
  assert errors[True] < errors[False]


def test_deterministic_under_the_seed():
  grids, _ = simulate(seed=3, n_ex=150)
  sub = [subsample(g, 0.2) for g in grids]
  a = budget.estimate(sub, SETTINGS)
  b = budget.estimate(sub, SETTINGS)
  c = budget.estimate(sub, dataclasses.replace(SETTINGS, seed=1))
  for task in a.tasks:
    assert a.tasks[task].figures == b.tasks[task].figures
    assert a.tasks[task].intervals == b.tasks[task].intervals
    np.testing.assert_array_equal(a.tasks[task].accuracy, c.tasks[task].accuracy)  # plug-in
    assert a.tasks[task].intervals != c.tasks[task].intervals  # other draws
  assert a.macro == b.macro


def test_partial_results_rows_and_summary_section():
  grids, _ = simulate(seed=4, n_ex=80)
  rows = [r for g in grids for r in rows_of(subsample(g, 0.25))]
  parsed = budget.grids_from_results(rows)
  g0 = parsed[("m", "sim:t0")]
  assert g0.labels is not None and len(g0.labels) == g0.correct.shape[1]
  assert np.isnan(g0.correct).mean() == pytest.approx(0.75, abs=0.02)
  est = budget.estimate_results(rows, SETTINGS)["m"]
  doc = budget.estimate_document(est, budget=0.25, design_seed=0)
  json.dumps(doc, allow_nan=False)  # JSON-clean
  task = doc["tasks"]["sim:t0"]
  assert task["estimated"] and task["fraction_evaluated"] == pytest.approx(0.25, abs=0.02)
  assert set(task) >= {"observed", "unobserved", "all", "gap", "instructions"}
  assert set(task["observed"]) == {"mean", "std", "min", "max", "q10", "q50", "q90"}
  lo, hi = task["gap"]["ci95"]
  assert lo <= task["gap"]["value"] <= hi
  assert len(task["instructions"]) == len(g0.instruction_ids)
  assert doc["macro"]["n_tasks"] == 2 and doc["fits"]["sim"]["converged"]
  # The naive figures are the plain figures of the evaluated cells.
  naive = budget.naive_figures(g0)
  assert naive["observed.mean"] == pytest.approx(np.nanmean(g0.correct[:4], axis=1).mean())


def test_generative_rows_fit_without_label_terms():
  grids, _ = simulate(seed=5, n_tasks=1, n_ex=100)
  rows = rows_of(subsample(grids[0], 0.3))
  for r in rows:
    r["gold"] = ["several", "answers"]  # no single option index
  est = budget.estimate_results(rows, SETTINGS)["m"]
  assert not any(k.startswith("c/") for k in est.fits["sim"]["variances"])
  assert 0.0 <= est.tasks["sim:t0"].figures["all.mean"] <= 1.0


def test_one_split_only_has_no_gap():
  grids, _ = simulate(seed=6, n_tasks=1, n_obs=0, n_unobs=6, n_ex=100)
  est = budget.estimate([subsample(grids[0], 0.3)], SETTINGS)
  te = est.tasks["sim:t0"]
  assert te.figures["gap"] is None and te.intervals["gap"] is None
  assert te.figures["observed.mean"] is None and te.figures["unobserved.mean"] is not None
  assert est.macro["gap"]["value"] is None
