"""`robust-prompt demo --quick` end to end (robust_prompt/cli/demo.py, demo/pipeline.py)."""

import json
import time

import numpy as np
import pytest

from robust_prompt.cli import main as cli_main
from robust_prompt.demo import pipeline, suite
from robust_prompt.eval import summary
from robust_prompt.io_utils import read_jsonl

# One task keeps the number of shapes to compile (which dominates the run time) small.
SMOKE_TASKS = ("toy_parity",)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo")
  start = time.perf_counter()  # kept for debugging; no timing assertion (shared CPUs)
  argv = ["demo", "--quick", "--output_dir", str(out), "--no_progress", "--tasks", *SMOKE_TASKS]
  rc = cli_main.main(argv)
  return out, rc, time.perf_counter() - start


def test_quick_demo_runs_every_phase(quick_run, capsys):
  out, rc, _ = quick_run
  assert rc == 0
  for name in (
    "summary.json",
    "per_instruction.csv",
    "report.md",
    "report.html",
    "demo.json",
    "before/results.jsonl",
    "after/results.jsonl",
    "prompt/prompt.npy",
    "suite/instructions/heldout.jsonl",
  ):
    assert (out / name).is_file(), name


def test_quick_demo_report_has_before_and_after(quick_run):
  out, _, _ = quick_run
  summaries = summary.load_summaries(out / "summary.json")
  assert set(summaries) == {"demo-t5", "demo-t5+prompt"}
  html = (out / "report.html").read_text()
  assert pipeline.BEFORE_LABEL in html and pipeline.AFTER_LABEL in html
  demo = json.loads((out / "demo.json").read_text())
  for key, name in (("before", "demo-t5"), ("after", "demo-t5+prompt")):
    macro = summaries[name]["macro"]
    assert demo[key]["observed"]["mean"] == macro["observed"]["mean"]
    assert demo[key]["gap"]["value"] == pytest.approx(
      macro["observed"]["mean"] - macro["unobserved"]["mean"]
    )


def test_quick_demo_evaluates_observed_and_heldout_only(quick_run):
  out, _, _ = quick_run
  n = pipeline.QUICK.eval_examples
  for phase in ("before", "after"):
    rows = read_jsonl(out / phase / "results.jsonl")
    ids = {r["instruction_id"] for r in rows}
    assert all(":observed_" in i or ":heldout_" in i for i in ids)
    assert len(rows) == n * len(ids)
    assert {r["task"] for r in rows} == {f"jsonl:{t}" for t in SMOKE_TASKS}
  # The measured numbers are the results' own: the summary's observed mean is the macro over
  # tasks of the mean over observed instructions of the per-instruction accuracy.
  rows = read_jsonl(out / "before" / "results.jsonl")
  per = {}
  for r in rows:
    if r["split"] == "observed":
      per.setdefault(r["task"], {}).setdefault(r["instruction_id"], []).append(r["correct"])
  expected = np.mean([np.mean([np.mean(v) for v in d.values()]) for d in per.values()])
  got = summary.load_summaries(out / "summary.json")["demo-t5"]["macro"]["observed"]["mean"]
  assert got == pytest.approx(expected)


def test_prompt_has_the_quick_shape(quick_run):
  out, _, _ = quick_run
  prompt = np.load(out / "prompt" / "prompt.npy")
  assert prompt.shape[0] == pipeline.QUICK.prompt_length and np.all(np.isfinite(prompt))


def test_bad_flags_are_user_errors(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert cli_main.main(["demo", "--quick", "--output_dir", str(blocker)]) == 1
  assert "--output_dir" in capsys.readouterr().err
  rc = cli_main.main(["demo", "--quick", "--output_dir", str(tmp_path / "o"), "--lambda_sim", "-1"])
  assert rc == 1
  assert "--lambda_sim" in capsys.readouterr().err
  rc = cli_main.main(["demo", "--quick", "--output_dir", str(tmp_path / "o"), "--tasks", "nope"])
  assert rc == 1
  assert "unknown toy task 'nope'" in capsys.readouterr().err
  rc = cli_main.main(
    ["demo", "--quick", "--output_dir", str(tmp_path / "o"), "--model", str(tmp_path)]
  )
  assert rc == 1
  assert "no recognised checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_with_every_task(tmp_path):
  """`robust-prompt demo --quick` exactly as documented (all seven tasks; ~1-2 min on 2 cores)."""
  rc = cli_main.main(["demo", "--quick", "--output_dir", str(tmp_path), "--no_progress"])
  assert rc == 0
  rows = read_jsonl(tmp_path / "after" / "results.jsonl")
  assert {r["task"] for r in rows} == {f"jsonl:{t}" for t in suite.TASKS}
