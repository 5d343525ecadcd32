"""`robust-prompt report` end to end through robust_prompt.cli.main.main."""

import json

import pytest

from robust_prompt import io_utils
from robust_prompt.cli.main import main

HEADER = "model,task,instruction_id,split,source,n_examples,accuracy\n"


def _csv_two_models():
  lines = []
  for model, shift in (("flan-t5-small", 0.0), ("t0-3b", 0.1)):
    for task in ("mmlu:anatomy", "bigbench:strategyqa"):
      for i, (split, acc) in enumerate(
        [("observed", 0.7), ("observed", 0.6), ("unobserved", 0.5), ("unobserved", 0.3)]
      ):
        lines.append(f"{model},{task},inst_{i},{split},human,40,{acc - shift:.2f}\n")
  return HEADER + "".join(lines)


def _instruction_file(path):
  rows = [
    {
      "id": f"inst_{i}",
      "tasks": ["mmlu:*"],
      "template": f"Phrasing number {i}: {{question}}\n{{options}}",
      "options_format": "letters",
      "answer_space": "letters",
      "split": "observed" if i < 2 else "unobserved",
      "source": "human",
    }
    for i in range(4)
  ]
  # The worst one shows its input apart: the report must quote the whole template.
  rows[3]["template"] = "Phrasing number 3: answer the question."
  rows[3]["input_template"] = "{question}\n{options}"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_report_two_models(tmp_path, capsys):
  csv = tmp_path / "in.csv"
  csv.write_text(_csv_two_models())
  out = tmp_path / "out"
  inst = _instruction_file(tmp_path / "inst.jsonl")
  argv = ["report", "--per_instruction", str(csv), "--output_dir", str(out)]
  assert main(argv + ["--instructions", str(inst), "--n_resamples", "200"]) == 0
  for name in ("summary.json", "per_instruction.csv", "report.md", "report.html"):
    assert (out / name).is_file()
  doc = json.loads((out / "summary.json").read_text())
  assert set(doc["models"]) == {"flan-t5-small", "t0-3b"}
  s = doc["models"]["flan-t5-small"]
  anatomy = s["tasks"]["mmlu:anatomy"]
  assert anatomy["gap"]["value"] == pytest.approx(0.65 - 0.4)
  assert anatomy["gap"]["ci_method"] == "bootstrap_instructions_only"
  assert anatomy["consistency"]["observed"]["all_agree"] is None  # needs --results
  assert anatomy["worst"][0]["instruction_id"] == "inst_3"
  assert (
    anatomy["worst"][0]["text"]
    == "Phrasing number 3: answer the question.\n\n{question}\n{options}"
  )
  assert s["macro"]["observed"]["mean"] == pytest.approx(0.65)
  assert doc["models"]["t0-3b"]["macro"]["unobserved"]["mean"] == pytest.approx(0.3)
  md = (out / "report.md").read_text()
  assert "## flan-t5-small" in md and "## t0-3b" in md
  assert "| flan-t5-small | flan-t5-small | bigbench (1) |" in md  # macro per benchmark
  stdout = capsys.readouterr().out
  assert "flan-t5-small: 2 tasks; macro gap +25.0 pp" in stdout
  # Same seed, same output.
  first = (out / "summary.json").read_text()
  assert main(argv + ["--instructions", str(inst), "--n_resamples", "200"]) == 0
  assert (out / "summary.json").read_text() == first


@pytest.mark.parametrize(
  "row, message",
  [
    ("m,t,i9,observed,human,40,1.5", "in.csv:3: accuracy 1.5 is outside [0, 1]"),
    ("m,t,i9,observed,human,40,n/a", "in.csv:3: accuracy 'n/a' is not a number"),
    ("m,t,i9,heldout,human,40,0.5", "in.csv:3: unknown split 'heldout'"),
  ],
)
def test_report_bad_rows_exit_1_with_file_line(tmp_path, capsys, row, message):
  csv = tmp_path / "in.csv"
  csv.write_text(HEADER + "m,t,i0,observed,human,40,0.5\n" + row + "\n")
  assert main(["report", "--per_instruction", str(csv), "--output_dir", str(tmp_path / "o")]) == 1
  err = capsys.readouterr().err
  assert "robust-prompt report: error:" in err and message in err
  assert "Traceback" not in err
  assert not (tmp_path / "o" / "summary.json").exists()


def test_report_unknown_prompt_format_names_its_line(tmp_path, capsys):
  csv = tmp_path / "in.csv"
  header = HEADER.strip() + ",prompt_format\n"
  csv.write_text(header + "m,t,i0,observed,human,40,0.5,alpaca\nm,t,i1,unobserved,,,0.4,alpacca\n")
  assert main(["report", "--per_instruction", str(csv), "--output_dir", str(tmp_path / "o")]) == 1
  err = capsys.readouterr().err
  assert "in.csv:3: unknown prompt_format 'alpacca'; use one of raw, alpaca, chat" in err
  assert not (tmp_path / "o" / "summary.json").exists()


def test_report_missing_column_and_missing_file(tmp_path, capsys):
  csv = tmp_path / "in.csv"
  csv.write_text("model,task,split,accuracy\nm,t,observed,0.5\n")
  assert main(["report", "--per_instruction", str(csv), "--output_dir", str(tmp_path)]) == 1
  assert "in.csv:1: missing column(s) instruction_id" in capsys.readouterr().err
  missing = tmp_path / "nope.csv"
  assert main(["report", "--per_instruction", str(missing), "--output_dir", str(tmp_path)]) == 1
  assert "does not exist" in capsys.readouterr().err


def _results_rows():
  # Two observed / two unobserved instructions over 4 examples; gold option 0.
  correct = {"o1": [1, 1, 1, 0], "o2": [1, 1, 0, 0], "u1": [1, 0, 0, 0], "u2": [1, 1, 0, 0]}
  rows = []
  for iid, ok in correct.items():
    for e, c in enumerate(ok):
      rows.append(
        dict(
          model="m",
          task="mmlu:x",
          instruction_id=iid,
          split="observed" if iid[0] == "o" else "unobserved",
          source="human",
          example_id=f"e{e}",
          option_scores=[0.0, -1.0] if c else [-1.0, 0.0],
          prediction=0 if c else 1,
          gold=0,
          correct=bool(c),
        )
      )
  return rows


def test_report_with_results_paired_ci_and_consistency(tmp_path, capsys):
  results = tmp_path / "results.jsonl"
  io_utils.append_jsonl(results, _results_rows())
  with open(results, "a") as f:
    f.write('{"model": "m", "task": "mm')  # a torn last line from a crash is tolerated
  csv = tmp_path / "in.csv"
  csv.write_text(
    HEADER + "m,mmlu:x,o1,observed,human,4,0.75\nm,mmlu:x,o2,observed,human,4,0.5\n"
    "m,mmlu:x,u1,unobserved,human,4,0.25\nm,mmlu:x,u2,unobserved,human,4,0.5\n"
  )
  argv = ["report", "--per_instruction", str(csv), "--output_dir", str(tmp_path / "o")]
  assert main(argv + ["--results", str(results)]) == 0
  assert "torn last line" in capsys.readouterr().err
  s = json.loads((tmp_path / "o" / "summary.json").read_text())
  task = s["tasks"]["mmlu:x"]
  assert task["gap"]["ci_method"] == "paired_bootstrap_instructions_and_examples"
  assert task["gap"]["value"] == pytest.approx(0.25)
  # Observed predictions agree on e0, e1, e3 (o1 and o2 differ on e2 only).
  assert task["consistency"]["observed"] == pytest.approx({"all_agree": 0.75, "pairwise": 0.75})
  # A CSV that contradicts the results is refused.
  csv.write_text(csv.read_text().replace("0.75", "0.8"))
  assert main(argv + ["--results", str(results)]) == 1
  assert "disagree for m/mmlu:x/o1" in capsys.readouterr().err


def test_report_unwritable_output_dir(tmp_path, capsys):
  csv = tmp_path / "in.csv"
  csv.write_text(_csv_two_models())
  blocker = tmp_path / "file"
  blocker.write_text("")
  assert main(["report", "--per_instruction", str(csv), "--output_dir", str(blocker)]) == 1
  assert "--output_dir" in capsys.readouterr().err


def _run(tmp_path, body: bytes | str, *extra):
  csv = tmp_path / "in.csv"
  csv.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
  out = tmp_path / "o"
  argv = ["report", "--per_instruction", str(csv), "--output_dir", str(out), "--n_resamples", "50"]
  return main(argv + list(extra)), out


def test_report_repeated_rows_need_on_duplicate(tmp_path, capsys):
  # As in released per-instruction tables: the same (model, task, instruction) twice.
  body = _csv_two_models() + "flan-t5-small,mmlu:anatomy,inst_0,observed,human,40,0.60\n"
  rc, out = _run(tmp_path, body)
  assert rc == 1
  err = capsys.readouterr().err
  assert "in.csv:18: duplicate of line 2 for flan-t5-small/mmlu:anatomy/inst_0" in err
  assert "--on_duplicate first" in err and "--on_duplicate mean" in err
  rc, out = _run(tmp_path, body, "--on_duplicate", "mean")
  assert rc == 0
  assert "1 repeated" in capsys.readouterr().err
  s = json.loads((out / "summary.json").read_text())["models"]["flan-t5-small"]
  assert s["tasks"]["mmlu:anatomy"]["observed"]["mean"] == pytest.approx((0.65 + 0.6) / 2)
  rc, out = _run(tmp_path, body, "--on_duplicate", "first")
  s = json.loads((out / "summary.json").read_text())["models"]["flan-t5-small"]
  assert rc == 0 and s["tasks"]["mmlu:anatomy"]["observed"]["mean"] == pytest.approx(0.65)


def test_report_macro_weighted(tmp_path, capsys):
  body = HEADER + "".join(
    f"m,{task},i{i},{split},human,{n},{acc}\n"
    for task, n, accs in (("mmlu:a", 100, (0.8, 0.6)), ("mmlu:b", 300, (0.4, 0.4)))
    for i, (split, acc) in enumerate(zip(("observed", "unobserved"), accs))
  )
  rc, out = _run(tmp_path, body)
  assert rc == 0 and "macro over tasks: unweighted" in capsys.readouterr().out
  s = json.loads((out / "summary.json").read_text())
  assert s["settings"]["macro"] == "unweighted"
  assert s["macro"]["gap"]["value"] == pytest.approx(0.1)
  assert "unweighted, the default" in (out / "report.md").read_text()
  rc, out = _run(tmp_path, body, "--macro", "weighted")
  assert rc == 0 and "macro over tasks: weighted" in capsys.readouterr().out
  s = json.loads((out / "summary.json").read_text())
  assert s["settings"]["macro"] == "weighted"
  assert s["macro"]["gap"]["value"] == pytest.approx(0.2 * 100 / 400)
  assert s["macro"]["observed"]["mean"] == pytest.approx((80 + 120) / 400)
  assert "weighted by their number of examples" in (out / "report.md").read_text()
  # Without task sizes, a weighted macro is refused with what to do.
  rc, _ = _run(tmp_path, body.replace(",100,", ",,"), "--macro", "weighted")
  assert rc == 1
  err = capsys.readouterr().err
  assert "--macro weighted" in err and "unknown for mmlu:a" in err and "Traceback" not in err


@pytest.mark.parametrize(
  "body, message",
  [
    (HEADER + "m,t,i0,observed,human,0,0.5\n", "in.csv:2: n_examples 0 must be a positive integer"),
    (
      (HEADER + "m,t,i0,observed,human,40,0.5\nm,t,\u00e9,unobserved,human,40,0.5\n").encode(
        "cp1252"
      ),
      "in.csv:3: not UTF-8 (byte 0xe9 at column 5)",
    ),
  ],
)
def test_report_bad_input_names_file_and_line(tmp_path, capsys, body, message):
  rc, out = _run(tmp_path, body)
  assert rc == 1
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err
  assert not (out / "summary.json").exists()


def test_report_models_whose_names_share_a_slug(tmp_path):
  body = _csv_two_models().replace("t0-3b", "T0++").replace("flan-t5-small", "T0")
  rc, out = _run(tmp_path, body)
  assert rc == 0
  assert len(list((out / "plots").glob("accuracy_*.png"))) == 2


def test_report_estimates_from_a_partial_results_file(tmp_path, capsys):
  """`report --results partial.jsonl --estimate`: the full-grid figures estimated from the cells
  that were scored (as after `eval --budget`), marked as estimated in summary.json and report.md."""
  rows = [
    r for r in _results_rows() if not (r["instruction_id"] == "o1" and r["example_id"] == "e3")
  ]
  results = tmp_path / "results.jsonl"
  io_utils.append_jsonl(results, rows)
  csv = tmp_path / "in.csv"
  csv.write_text(
    HEADER + "m,mmlu:x,o1,observed,human,3,1.0\nm,mmlu:x,o2,observed,human,4,0.5\n"
    "m,mmlu:x,u1,unobserved,human,4,0.25\nm,mmlu:x,u2,unobserved,human,4,0.5\n"
  )
  out = tmp_path / "o"
  argv = ["report", "--per_instruction", str(csv), "--output_dir", str(out), "--estimate"]
  assert main(argv) == 1 and "--estimate needs --results" in capsys.readouterr().err
  assert main([*argv, "--results", str(results)]) == 0, capsys.readouterr().err
  doc = json.loads((out / "summary.json").read_text())["budget"]["m"]
  assert doc["n_cells"] == 16 and doc["n_evaluated"] == 15
  task = doc["tasks"]["mmlu:x"]
  assert task["estimated"] is True and task["gap"]["ci95"] is not None
  o1 = next(i for i in task["instructions"] if i["instruction_id"] == "o1")
  assert o1["n_evaluated"] == 3 and 0.75 <= o1["accuracy"] <= 1.0  # 3 of 3 seen, one predicted
  assert "Estimated from a budgeted evaluation" in (out / "report.md").read_text()
