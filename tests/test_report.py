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
  results = _results(n_tasks=2)
  for r in results:  # each instruction's prompt format, as the eval engine records it
    r["prompt_format"] = "alpaca" if r["instruction_id"] == "i1" else "raw"
  tabs = tables.tables_from_results(results)
  rows = tables.per_instruction_rows(tabs)
  assert {(r["instruction_id"], r["prompt_format"]) for r in rows if r["task"] == "mmlu:t0"} == {
    (f"i{i}", "alpaca" if i == 1 else "raw") for i in range(6)
  }
  path = tmp_path / "per_instruction.csv"
  tables.write_per_instruction_csv(path, rows)
  assert path.read_text().splitlines()[0] == ",".join(tables.PER_INSTRUCTION_COLUMNS)
  back = tables.read_per_instruction_csv(path)
  assert back == rows
  again = tables.tables_from_per_instruction(back)
  np.testing.assert_allclose(again[("m", "mmlu:t0")].accuracy, tabs[("m", "mmlu:t0")].accuracy)
  assert again[("m", "mmlu:t0")].correct is None
  assert again[("m", "mmlu:t0")].prompt_formats == tabs[("m", "mmlu:t0")].prompt_formats
  # A file written before the column existed still reads, its formats unknown ("").
  old = tmp_path / "old.csv"
  old.write_text("\n".join(line.rsplit(",", 1)[0] for line in path.read_text().splitlines()))
  assert {r["prompt_format"] for r in tables.read_per_instruction_csv(old)} == {""}


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
    (
      "model,task,instruction_id,split,n_examples,accuracy\nm,t,i,observed,0,0.5\n",
      r":2: n_examples 0 must be a positive integer",
    ),
    (
      "model,task,instruction_id,split,n_examples,accuracy\nm,t,i,observed,5,0.5\n"
      "m,t,j,observed,-3,0.5\n",
      r":3: n_examples -3 must be a positive integer",
    ),
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
    prompt_format="",
  )


def test_results_with_bad_split_or_missing_field():
  row = _results(n_tasks=1, n_inst=2, n_examples=1)[0]
  with pytest.raises(tables.TableError, match="unknown split"):
    tables.tables_from_results([dict(row, split="train")])
  with pytest.raises(tables.TableError, match="missing field 'correct'"):
    tables.tables_from_results([{k: v for k, v in row.items() if k != "correct"}])


DUPLICATED = (
  "model,task,instruction_id,split,n_examples,accuracy\n"
  "m,t,i,observed,100,0.5\n"
  "m,t,j,unobserved,100,0.2\n"
  "m,t,i,observed,100,0.7\n"
  "m,t,i,observed,120,0.6\n"
)


def test_per_instruction_csv_duplicates(tmp_path):
  path = tmp_path / "dup.csv"
  path.write_text(DUPLICATED)
  with pytest.raises(
    tables.TableError, match=r"dup.csv:4: duplicate of line 2 for m/t/i.*--on_duplicate"
  ):
    tables.read_per_instruction_csv(path)
  with pytest.warns(UserWarning, match="2 repeated .* for 1 instruction.*kept the first"):
    first = tables.read_per_instruction_csv(path, on_duplicate="first")
  assert [(r["instruction_id"], r["accuracy"], r["n_examples"]) for r in first] == [
    ("i", 0.5, 100),
    ("j", 0.2, 100),
  ]
  with pytest.warns(UserWarning, match="averaged"):
    mean = tables.read_per_instruction_csv(path, on_duplicate="mean")
  assert mean[0]["accuracy"] == pytest.approx(0.6) and mean[0]["n_examples"] == 120
  assert mean[1] == first[1]
  # Repeats that disagree on the split are refused whatever the choice.
  path.write_text(DUPLICATED.replace("m,t,i,observed,120", "m,t,i,unobserved,120"))
  with pytest.raises(
    tables.TableError, match=r":5: m/t/i is unobserved here but observed on line 2"
  ):
    tables.read_per_instruction_csv(path, on_duplicate="mean")
  with pytest.raises(ValueError, match="on_duplicate must be one of"):
    tables.read_per_instruction_csv(path, on_duplicate="last")


def test_per_instruction_csv_not_utf8_names_file_and_line(tmp_path):
  path = tmp_path / "latin1.csv"
  body = (
    "model,task,instruction_id,split,accuracy\nm,t,i,observed,0.5\nm,t,caf\u00e9,observed,0.5\n"
  )
  path.write_bytes(body.encode("latin-1"))
  with pytest.raises(tables.TableError, match=r"latin1.csv:3: not UTF-8 \(byte 0xe9 at column 8\)"):
    tables.read_per_instruction_csv(path)


def test_plot_names_stay_distinct():
  assert report.plot_names(["before", "after"]) == ["accuracy_before.png", "accuracy_after.png"]
  names = report.plot_names(["T0", "T0++", "t0", "T0"])
  assert len({n.lower() for n in names}) == 4
  assert all(re.fullmatch(r"accuracy_[Tt]0_[0-9a-f]{8}(_2)?\.png", n) for n in names)
  assert report.plot_names(["T0", "T0++"]) == report.plot_names(["T0", "T0++"])  # stable


def test_sections_whose_labels_share_a_slug_keep_their_own_plot(tmp_path):
  rows = _results()
  a, b = _section("T0", rows), _section("T0++", _results(shift=0.1, seed=1))
  written = report.write_report(tmp_path, [a, b])
  pngs = sorted(p.name for p in (tmp_path / "plots").glob("accuracy_*.png"))
  assert len(pngs) == 2 and set(pngs) == {k[len("plots/") :] for k in written if "accuracy_" in k}
  md = (tmp_path / "report.md").read_text()
  for name in pngs:
    assert f"(plots/{name})" in md
  # Each section's plot is its own (the two inputs differ, so do the images).
  assert (tmp_path / "plots" / pngs[0]).read_bytes() != (tmp_path / "plots" / pngs[1]).read_bytes()


def test_report_header_states_the_macro_weighting(tmp_path):
  report.write_report(tmp_path, [_section("m", _results())])
  assert "unweighted, the default" in (tmp_path / "report.md").read_text()
  label, s, rows = _section("m", _results())
  s = dict(s, settings=dict(s["settings"], macro="weighted"))
  report.write_report(tmp_path, [(label, s, rows)])
  assert "weighted by their number of examples" in (tmp_path / "report.md").read_text()
