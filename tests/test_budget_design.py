"""The budgeted-evaluation design: balance, nesting, determinism, order invariance."""

import numpy as np
import pytest

from robust_prompt.eval import budget_design


def _ids(n_obs=4, n_unobs=10, n_ex=300):
  iids = [f"o{i}" for i in range(n_obs)] + [f"u{i}" for i in range(n_unobs)]
  splits = ["observed"] * n_obs + ["unobserved"] * n_unobs
  return iids, splits, [f"ex{e}" for e in range(n_ex)]


@pytest.mark.parametrize("budget", [0.05, 0.1, 0.2, 0.5])
def test_balanced_over_instructions_examples_and_splits(budget):
  iids, splits, eids = _ids()
  d = budget_design.design_task("t", iids, splits, eids, budget, seed=3)
  n = d.n_per_instruction
  assert n == max(round(budget * len(eids)), -(-len(eids) // len(iids)))
  np.testing.assert_array_equal(d.mask.sum(axis=1), n)  # every instruction exactly n cells
  per_example = d.mask.sum(axis=0)
  expected = n * len(iids) / len(eids)
  assert per_example.min() >= 1
  assert per_example.min() >= np.floor(expected) - 1 and per_example.max() <= np.ceil(expected) + 1
  # The instructions scoring one example mix the splits in proportion (within one instruction).
  observed = d.mask[np.array(splits) == "observed"].sum(axis=0)
  assert np.max(np.abs(observed - per_example * 4 / 14)) <= 1.5
  assert d.fraction == pytest.approx(n / len(eids))


def test_every_example_appears_even_below_one_cell_per_example():
  iids, splits, eids = _ids(n_obs=2, n_unobs=3, n_ex=200)  # F I = 0.05 * 5 < 1
  d = budget_design.design_task("t", iids, splits, eids, 0.05, seed=0)
  assert d.mask.sum(axis=0).min() == 1
  assert d.n_per_instruction == 40  # raised from round(0.05 * 200) = 10 to E / I


def test_nested_and_full_at_one():
  iids, splits, eids = _ids()
  masks = [
    budget_design.design_task("t", iids, splits, eids, f, seed=7).mask
    for f in (0.05, 0.1, 0.2, 0.5, 1.0)
  ]
  for small, large in zip(masks, masks[1:]):
    assert np.all(large[small])  # superset
    assert large.sum() > small.sum()
  assert masks[-1].all()


def test_deterministic_order_invariant_and_seeded():
  iids, splits, eids = _ids()
  a = budget_design.design_task("t", iids, splits, eids, 0.1, seed=1)
  b = budget_design.design_task("t", iids, splits, eids, 0.1, seed=1)
  np.testing.assert_array_equal(a.mask, b.mask)
  rng = np.random.default_rng(0)
  order_i, order_e = rng.permutation(len(iids)), rng.permutation(len(eids))
  shuffled = budget_design.design_task(
    "t",
    [iids[i] for i in order_i],
    [splits[i] for i in order_i],
    [eids[e] for e in order_e],
    0.1,
    seed=1,
  )
  assert shuffled.cells() == a.cells()
  other_seed = budget_design.design_task("t", iids, splits, eids, 0.1, seed=2)
  other_task = budget_design.design_task("t2", iids, splits, eids, 0.1, seed=1)
  assert other_seed.cells() != a.cells() and other_task.cells() != a.cells()


def test_design_tasks_and_missing_cells():
  iids, splits, eids = _ids(n_ex=50)
  alone = budget_design.design_task("a", iids, splits, eids, 0.1, seed=0)
  both = budget_design.design_tasks(
    {"a": (iids, splits, eids), "b": (iids[:3], splits[:3], eids[:10])}, 0.1, seed=0
  )
  assert both["a"].cells() == alone.cells()  # a task's design ignores the other tasks
  low = budget_design.design_task("a", iids, splits, eids, 0.1, seed=0)
  high = budget_design.design_task("a", iids, splits, eids, 0.3, seed=0)
  todo = budget_design.missing_cells(high, low.cells())
  assert set(todo) == high.cells() - low.cells()
  assert len(todo) == len(set(todo))
  phase = {
    (high.instruction_ids[i], high.example_ids[e]): high.phase[i, e]
    for i, e in zip(*np.nonzero(high.mask))
  }
  assert [phase[c] for c in todo] == sorted(phase[c] for c in todo)


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan")])
def test_rejects_budgets_outside_zero_one(budget):
  iids, splits, eids = _ids()
  with pytest.raises(ValueError, match="budget"):
    budget_design.design_task("t", iids, splits, eids, budget)


def test_rejects_repeated_ids():
  with pytest.raises(ValueError, match="unique"):
    budget_design.design_task("t", ["a", "a"], ["observed"] * 2, ["e"], 0.5)
