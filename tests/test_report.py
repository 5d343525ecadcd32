"""report.md / report.html / plots and per_instruction.csv writing and reading."""

import base64
import re

import numpy as np
import pytest

from robust_prompt.eval import plots, report, summary, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results(model="m", n_tasks=3, n_inst=6, n_examples=20, shift=0.0, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for t in range(n_tasks):
    for i in range(n_inst):
      split = "observed" if i < n_inst // 2 else "unobserved"
      p = 0.7 if split == "observed" else 0.55 + shift
      for e in range(n_examples):
        pred = int(rng.random() >= p)  # option 0 is gold
        rows.append(
          dict(
            model=model,
            task=f"mmlu:t{t}",
            instruction_id=f"i{i}",
            split=split,
            source="human",
            example_id=f"{t}:{e}",
            option_scores=[0.0, -1.0] if pred == 0 else [-1.0, 0.0],
            prediction=pred,
            gold=0,
            correct=pred == 0,
          )
        )
  return rows


def _section(label, rows, texts=None):
  tabs = tables.tables_from_results(rows)
  ((model, s),) = summary.summarize(tabs, n_resamples=100, instruction_texts=texts).items()
  return (label, s, [r for r in tables.per_instruction_rows(tabs) if r["model"] == model])


def test_report_files_and_self_contained_html(tmp_path):
  texts = {f"i{i}": "Pick | the <best> answer:\n{question}\n{options}" for i in range(6)}
  before = _section("before", _results(), texts)
  after = _section("after", _results(shift=0.1, seed=1), texts)
  written = report.write_report(tmp_path, [before, after], title="T5 <robustness>")
  for name in ("report.md", "report.html", "plots/gap.png", "plots/accuracy_before.png"):
    assert (tmp_path / name).is_file(), name
    assert written[name] == tmp_path / name
  html = (tmp_path / "report.html").read_text()
  images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
  assert len(images) == 3  # gap (both sections) + one accuracy plot per section
  assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
  assert not re.search(r"(src|href)=['\"]?(https?:|//|[^'\"d])", html)  # no external asset
  assert "T5 &lt;robustness&gt;" in html and "<best>" not in html  # escaped
  md = (tmp_path / "report.md").read_text()
  assert "![gap per task with 95% CI](plots/gap.png)" in md
  assert "Per-task comparison" in md and "| before |" in md and "| after |" in md
  assert "Pick \\| the <best> answer: {question} {options}" in md  # one table cell
  assert not list(tmp_path.rglob("*.tmp"))


def test_single_section_without_comparison(tmp_path):
  report.write_report(tmp_path, [_section("m", _results())])
  md = (tmp_path / "report.md").read_text()
  assert "Per-task comparison" not in md
  assert "## m — m" in md and "Worst instructions" in md


def test_report_needs_a_section(tmp_path):
  with pytest.raises(ValueError, match="at least one section"):
    report.write_report(tmp_path, [])


def test_plots_many_tasks_and_instructions_are_capped():
  label, s, per_inst = _section("m", _results(n_tasks=12, n_inst=8, n_examples=5))
  png = plots.accuracy_by_instruction(per_inst, s, max_tasks=5)
  assert png.startswith(PNG_MAGIC)
  assert plots.gap_with_ci([(label, s)], max_tasks=5).startswith(PNG_MAGIC)
  # Same input, same bytes (fixed jitter), so reports are reproducible.
  assert plots.accuracy_by_instruction(per_inst, s, max_tasks=5) == png


def test_per_instruction_csv_roundtrip(tmp_path):
  tabs = tables.tables_from_results(_results(n_tasks=2))
  rows = tables.per_instruction_rows(tabs)
  path = tmp_path / "per_instruction.csv"
  tables.write_per_instruction_csv(path, rows)
  assert path.read_text().splitlines()[0] == ",".join(tables.PER_INSTRUCTION_COLUMNS)
  back = tables.read_per_instruction_csv(path)
  assert back == rows
  again = tables.tables_from_per_instruction(back)
  np.testing.assert_allclose(again[("m", "mmlu:t0")].accuracy, tabs[("m", "mmlu:t0")].accuracy)
  assert again[("m", "mmlu:t0")].correct is None


@pytest.mark.parametrize(
  "body, message",
  [
    ("model,task,instruction_id,accuracy\nm,t,i,0.5\n", r":1: missing column\(s\) split"),
    (
      "model,task,instruction_id,split,accuracy\nm,t,i,observed,abc\n",
      r":2: accuracy 'abc' is not a number",
    ),
    (
      "model,task,instruction_id,split,accuracy\nm,t,i,observed,57.3\n",
      r":2: accuracy 57.3 is outside \[0, 1\]",
    ),
    ("model,task,instruction_id,split,accuracy\nm,t,i,seen,0.5\n", r":2: unknown split 'seen'"),
    (
      "model,task,instruction_id,split,accuracy\nm,t,i,observed,0.5\nm,t,i,observed,0.4\n",
      r":3: duplicate of line 2",
    ),
    ("model,task,instruction_id,split,accuracy\nm,t,i,observed\n", r":2: expected 5 fields"),
    ("model,task,instruction_id,split,accuracy\n", r"no rows"),
  ],
)
def test_per_instruction_csv_errors(tmp_path, body, message):
  path = tmp_path / "bad.csv"
  path.write_text(body)
  with pytest.raises(tables.TableError, match=message):
    tables.read_per_instruction_csv(path)


def test_per_instruction_csv_optional_columns_and_bom(tmp_path):
  path = tmp_path / "excel.csv"
  path.write_bytes("\ufeffmodel,task,instruction_id,split,accuracy\nm,t,i,observed,0.5\n".encode())
  (row,) = tables.read_per_instruction_csv(path)
  assert row == dict(
    model="m",
    task="t",
    instruction_id="i",
    split="observed",
    source="",
    n_examples=-1,
    accuracy=0.5,
  )


def test_results_with_bad_split_or_missing_field():
  row = _results(n_tasks=1, n_inst=2, n_examples=1)[0]
  with pytest.raises(tables.TableError, match="unknown split"):
    tables.tables_from_results([dict(row, split="train")])
  with pytest.raises(tables.TableError, match="missing field 'correct'"):
    tables.tables_from_results([{k: v for k, v in row.items() if k != "correct"}])
