"""Metric functions and summary.json against values computed by hand on a tiny results table."""

import json
import math

import numpy as np
import pytest

from robust_prompt.eval import bootstrap, metrics, summary, tables

# Two tasks x three instructions x four examples. Correctness per instruction (examples e0..e3):
#   task A: o1 [1,1,1,0] = .75, o2 [1,1,0,0] = .50 (observed); u1 [1,0,0,0] = .25 (unobserved)
#   task B: o1 [1,0,1,0] = .50 (observed); u1 [1,1,1,1] = 1.0, u2 [0,0,1,1] = .50 (unobserved)
# Predictions (option indices): A gold [0,1,2,3], o1 [0,1,2,0], o2 [0,1,3,1], u1 [0,2,3,1];
# B gold [0,0,0,0] of two options, prediction 0 when correct else 1.
A_PRED = {"o1": [0, 1, 2, 0], "o2": [0, 1, 3, 1], "u1": [0, 2, 3, 1]}
A_GOLD = [0, 1, 2, 3]
B_CORRECT = {"o1": [1, 0, 1, 0], "u1": [1, 1, 1, 1], "u2": [0, 0, 1, 1]}
SPLIT = {"o1": "observed", "o2": "observed", "u1": "unobserved", "u2": "unobserved"}


def _row(task, iid, e, pred, gold, n_options, label=False):
  scores = [0.0] * n_options
  scores[pred] = 1.0
  return {
    "model": "m",
    "task": task,
    "instruction_id": iid,
    "split": SPLIT[iid],
    "source": "human",
    "example_id": f"{task}:{e}",
    "option_scores": scores,
    # o2 of task A reports letters: consistency must compare option indices, not labels.
    "prediction": "ABCD"[pred] if label else pred,
    "gold": gold,
    "correct": pred == gold,
  }


def tiny_rows():
  rows = []
  for iid, preds in A_PRED.items():
    rows += [_row("A", iid, e, p, A_GOLD[e], 4, label=iid == "o2") for e, p in enumerate(preds)]
  for iid, ok in B_CORRECT.items():
    rows += [_row("B", iid, e, 0 if c else 1, 0, 2) for e, c in enumerate(ok)]
  return rows


@pytest.fixture(scope="module")
def summ():
  return summary.summarize(tables.tables_from_results(tiny_rows()), k_worst=2, n_resamples=200)["m"]


def test_tables_from_results():
  t = tables.tables_from_results(tiny_rows())[("m", "A")]
  assert t.instruction_ids == ("o1", "o2", "u1")
  assert t.splits == ("observed", "observed", "unobserved")
  np.testing.assert_allclose(t.accuracy, [0.75, 0.5, 0.25])
  np.testing.assert_array_equal(t.n_examples, [4, 4, 4])
  # Codes, not labels: o2's "A" (index 0) equals o1's 0.
  assert t.predictions[0, 0] == t.predictions[1, 0]


def test_per_task_spread_gap_pdr_cps(summ):
  a, b = summ["tasks"]["A"], summ["tasks"]["B"]
  # se: sd over examples (ddof=1) of the split-mean correctness, over sqrt(E); A observed:
  # [1, 1, .5, 0] -> sqrt(.6875 / 3) / 2; A unobserved: [1, 0, 0, 0] -> .5 / 2.
  assert a["observed"] == pytest.approx(
    dict(mean=0.625, std=math.sqrt(0.03125), min=0.5, max=0.75, range=0.25, n_instructions=2)
    | {"se": math.sqrt(0.6875 / 3) / 2}
  )
  assert a["unobserved"] == pytest.approx(
    dict(mean=0.25, std=0.0, min=0.25, max=0.25, range=0.0, n_instructions=1, se=0.25)
  )
  assert a["gap"]["value"] == pytest.approx(0.375)
  assert a["pdr"] == pytest.approx(0.6)  # 1 - .25 / .625
  assert (a["maxp"], a["avgp"], a["cps"]) == pytest.approx((0.75, 0.5, 0.5625))
  assert b["unobserved"]["std"] == pytest.approx(math.sqrt(0.125))  # ddof=1 of [1, .5]
  assert b["gap"]["value"] == pytest.approx(-0.25)
  assert b["pdr"] == pytest.approx(-0.5)  # 1 - .75 / .5
  assert b["cps"] == pytest.approx(2 / 3)  # 1 * (1 - (1 - 2/3))


def test_consistency(summ):
  a, b = summ["tasks"]["A"]["consistency"], summ["tasks"]["B"]["consistency"]
  assert a["observed"] == pytest.approx({"all_agree": 0.5, "pairwise": 0.5})
  assert a["unobserved"] == {"all_agree": None, "pairwise": None}  # one instruction
  assert b["unobserved"] == pytest.approx({"all_agree": 0.5, "pairwise": 0.5})


def test_consistency_three_instructions_and_missing():
  p = np.array([[0, 1, 2, 3], [0, 1, 2, 0], [0, 2, 2, 0]])
  # all agree on e0, e2 -> 2/4; pairs (0,1) 3/4, (0,2) 2/4, (1,2) 3/4 -> 2/3.
  assert metrics.consistency(p) == pytest.approx({"all_agree": 0.5, "pairwise": 2 / 3})
  p = np.array([[0, 1, -1], [0, 0, 1]])
  # e2 is missing under the first instruction: only e0, e1 count.
  assert metrics.consistency(p) == pytest.approx({"all_agree": 0.5, "pairwise": 0.5})


def test_macro(summ):
  m = summ["macro"]
  assert m["n_tasks"] == 2
  assert m["observed"]["mean"] == pytest.approx(0.5625)
  assert m["observed"]["std"] == pytest.approx(math.sqrt(0.03125) / 2)
  assert m["observed"]["range"] == pytest.approx(0.125)
  assert m["observed"]["n_instructions"] == 3
  assert m["unobserved"]["mean"] == pytest.approx(0.5)
  assert m["gap"]["value"] == pytest.approx(0.0625)
  assert m["pdr"] == pytest.approx(1 - 0.5 / 0.5625)
  assert (m["maxp"], m["avgp"]) == pytest.approx((0.875, (0.5 + 2 / 3) / 2))
  assert m["cps"] == pytest.approx((0.5625 + 2 / 3) / 2)
  assert m["consistency"]["observed"]["all_agree"] == pytest.approx(0.5)
  assert [(w["task"], w["instruction_id"]) for w in m["worst"]] == [("A", "u1"), ("A", "o2")]
  # Per benchmark (task-name prefix): here each task is its own benchmark.
  assert set(summ["benchmarks"]) == {"A", "B"}
  assert summ["benchmarks"]["A"]["gap"]["value"] == pytest.approx(0.375)
  assert summ["benchmarks"]["B"]["observed"]["mean"] == pytest.approx(0.5)


def test_worst_with_text():
  tabs = tables.tables_from_results(tiny_rows())
  s = summary.summarize(tabs, instruction_texts={"u1": "Answer: {question}"}, k_worst=1)["m"]
  assert s["tasks"]["A"]["worst"] == [
    {
      "instruction_id": "u1",
      "split": "unobserved",
      "source": "human",
      "accuracy": 0.25,
      "text": "Answer: {question}",
    }
  ]


def test_missing_split_gives_none():
  rows = [r for r in tiny_rows() if not (r["task"] == "A" and r["split"] == "observed")]
  s = summary.summarize(tables.tables_from_results(rows), n_resamples=50)["m"]
  a = s["tasks"]["A"]
  assert a["observed"]["mean"] is None and a["observed"]["n_instructions"] == 0
  assert a["gap"] == {"value": None, "ci95": None, "ci_method": None}
  assert a["pdr"] is None
  assert s["macro"]["gap"]["n_tasks"] == 1
  assert s["macro"]["gap"]["value"] == pytest.approx(-0.25)


def test_summary_schema_is_json_clean(summ):
  text = json.dumps(summ, allow_nan=False)
  assert "NaN" not in text
  for task in summ["tasks"].values():
    assert set(task) >= {"observed", "unobserved", "gap", "pdr", "maxp", "avgp", "cps"}
    assert set(task["observed"]) == {"mean", "std", "min", "max", "range", "se", "n_instructions"}
    assert set(task["gap"]) == {"value", "ci95", "ci_method"}
    assert task["gap"]["ci_method"] == summary.CI_PAIRED
    for split in ("observed", "unobserved"):
      for key in ("mean", "min", "max"):
        assert 0.0 <= task[split][key] <= 1.0
  assert set(summ["macro"]) >= {"observed", "unobserved", "gap", "pdr", "cps", "consistency"}


def test_summary_document_roundtrip(tmp_path):
  tabs = tables.tables_from_results(tiny_rows() + [dict(r, model="m2") for r in tiny_rows()])
  summaries = summary.summarize(tabs, n_resamples=20)
  summary.write_summary(tmp_path / "one.json", {"m": summaries["m"]})
  summary.write_summary(tmp_path / "two.json", summaries)
  assert json.loads((tmp_path / "one.json").read_text())["model"] == "m"
  assert set(json.loads((tmp_path / "two.json").read_text())["models"]) == {"m", "m2"}
  assert summary.load_summaries(tmp_path / "two.json") == summaries
  assert list(summary.load_summaries(tmp_path / "one.json")) == ["m"]


def test_spread_edge_cases():
  assert metrics.spread([])["mean"] is None
  assert metrics.spread([0.4, np.nan]) == pytest.approx(
    dict(mean=0.4, std=0.0, min=0.4, max=0.4, range=0.0, n_instructions=1)
  )
  assert metrics.pdr(0.0, 0.3) is None
  assert metrics.cps([]) == {"maxp": None, "avgp": None, "cps": None}


def _random_table(rng, n_obs, n_uno, n_examples):
  p_obs, p_uno = rng.uniform(0.6, 0.8, n_obs), rng.uniform(0.4, 0.6, n_uno)
  obs = (rng.random((n_obs, n_examples)) < p_obs[:, None]).astype(float)
  uno = (rng.random((n_uno, n_examples)) < p_uno[:, None]).astype(float)
  return obs, uno


def test_paired_bootstrap_deterministic_and_sane():
  obs, uno = _random_table(np.random.default_rng(0), 4, 5, 60)
  r1 = bootstrap.bootstrap_gap_paired(obs, uno, n_resamples=500, seed=3)
  r2 = bootstrap.bootstrap_gap_paired(obs, uno, n_resamples=500, seed=3)
  np.testing.assert_array_equal(r1, r2)
  assert not np.array_equal(r1, bootstrap.bootstrap_gap_paired(obs, uno, n_resamples=500, seed=4))
  point = obs.mean() - uno.mean()
  lo, hi = bootstrap.percentile_interval(r1)
  assert lo < point < hi
  assert abs(r1.mean() - point) < 0.02
  # More instructions and examples: a narrower interval.
  big_obs, big_uno = _random_table(np.random.default_rng(1), 16, 20, 600)
  blo, bhi = bootstrap.percentile_interval(
    bootstrap.bootstrap_gap_paired(big_obs, big_uno, n_resamples=500, seed=3)
  )
  assert bhi - blo < (hi - lo) / 2


def test_paired_bootstrap_matches_naive_loop():
  obs, uno = _random_table(np.random.default_rng(5), 3, 4, 40)
  fast = bootstrap.bootstrap_gap_paired(obs, uno, n_resamples=3000, seed=0)
  rng = np.random.default_rng(123)
  naive = []
  for _ in range(3000):
    ex = rng.integers(0, 40, 40)  # the same example draw for every instruction (paired)
    o = obs[rng.integers(0, 3, 3)][:, ex].mean(axis=1).mean()
    u = uno[rng.integers(0, 4, 4)][:, ex].mean(axis=1).mean()
    naive.append(o - u)
  assert np.std(fast) == pytest.approx(np.std(naive), rel=0.1)
  assert np.mean(fast) == pytest.approx(np.mean(naive), abs=0.01)


def test_paired_bootstrap_handles_missing_scores():
  obs, uno = _random_table(np.random.default_rng(2), 3, 3, 30)
  obs[0, :5] = np.nan
  reps = bootstrap.bootstrap_gap_paired(obs, uno, n_resamples=200, seed=0)
  assert np.isfinite(reps).all()
  with pytest.raises(ValueError, match="at least one observed"):
    bootstrap.bootstrap_gap_paired(obs[:0], uno)


def test_instruction_bootstrap_exact_support():
  # One unobserved instruction and two observed: replicate gaps are .1, .2 or .3 with
  # probabilities 1/4, 1/2, 1/4, so the 95% interval is exactly [.1, .3].
  reps = bootstrap.bootstrap_gap_instructions([0.6, 0.8], [0.5], n_resamples=1000, seed=0)
  assert set(np.round(reps, 6)) == {0.1, 0.2, 0.3}
  assert bootstrap.percentile_interval(reps) == pytest.approx((0.1, 0.3))
  single = bootstrap.bootstrap_gap_instructions([0.7], [0.5], n_resamples=10, seed=0)
  np.testing.assert_allclose(single, 0.2)


def test_summary_ci_independent_of_other_tasks():
  tabs = tables.tables_from_results(tiny_rows())
  both = summary.summarize(tabs, n_resamples=100, seed=7)["m"]["tasks"]["A"]["gap"]
  alone = summary.summarize({("m", "A"): tabs[("m", "A")]}, n_resamples=100, seed=7)["m"]
  assert alone["tasks"]["A"]["gap"] == both
