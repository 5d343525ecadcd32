"""`eval` runs that must not mix, and what a user comparing with another tool expects (issue 14)."""

import json
import shutil

import pytest
from conftest import make_tiny_hf_t5
from test_cli_eval import MMLU_INSTRUCTIONS, run_cli, write_jsonl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, spiece_path):
  return make_tiny_hf_t5(tmp_path_factory.mktemp("trust"), "t5_1_1", spiece_path)


def _base(model, mmlu_dir, instructions, out, *extra):
  return [
    "eval", "--model", str(model), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir),
    "--instructions", str(instructions), "--tasks", "mmlu:anatomy", "--max_examples", "3",
    "--no_progress", "--output_dir", str(out), *extra,
  ]  # fmt: skip


def _rows(out):
  return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_fingerprint_follows_the_weights_not_the_path(
  tiny, mmlu_dir, tmp_path, capsys, monkeypatch
):
  instructions = write_jsonl(tmp_path / "i.jsonl", MMLU_INSTRUCTIONS)
  out = tmp_path / "out"
  code, err = run_cli(_base(tiny, mmlu_dir, instructions, out), capsys)
  assert code == 0, err
  # The same directory given relative to the working directory: the same run, resumed.
  monkeypatch.chdir(tiny.parent)
  code, err = run_cli(_base(tiny.name, mmlu_dir, instructions, out), capsys)
  assert code == 0, err
  # Different weights at the same path: refused, naming what changed.
  moved = tmp_path / "moved"
  shutil.copytree(tiny, moved)
  out = tmp_path / "out2"
  code, err = run_cli(_base(moved, mmlu_dir, instructions, out), capsys)
  assert code == 0, err
  weights = moved / "model.safetensors"  # new values for the last float: other weights
  data = bytearray(weights.read_bytes())
  data[-4:] = bytes([0, 0, 128, 63])  # 1.0f
  weights.write_bytes(bytes(data))
  code, err = run_cli(_base(moved, mmlu_dir, instructions, out), capsys)
  assert code == 1 and "different run" in err and "model:" in err
  # --overwrite starts afresh with the new weights.
  code, err = run_cli(_base(moved, mmlu_dir, instructions, out, "--overwrite"), capsys)
  assert code == 0, err
  assert not (out / "REPORTS_INCOMPLETE").exists()


def test_a_second_writer_is_refused_at_once(tiny, mmlu_dir, tmp_path, capsys):
  from robust_prompt import io_utils

  instructions = write_jsonl(tmp_path / "i.jsonl", MMLU_INSTRUCTIONS)
  out = tmp_path / "out"
  out.mkdir()
  with io_utils.DirectoryLock(out, "robust-prompt eval"):  # another eval holds it
    code, err = run_cli(_base(tiny, mmlu_dir, instructions, out), capsys)
  assert code == 1 and "being written by another robust-prompt eval" in err
  assert not (out / "results.jsonl").exists()


def test_rows_carry_options_digests_inputs_and_truncation(tiny, mmlu_dir, tmp_path, capsys):
  import hashlib

  instructions = write_jsonl(tmp_path / "i.jsonl", MMLU_INSTRUCTIONS)
  out = tmp_path / "out"
  args = _base(tiny, mmlu_dir, instructions, out, "--log_inputs", "--max_input_length", "16")
  code, err = run_cli(args, capsys)
  assert code == 0, err
  rows = _rows(out)
  assert len(rows) == 6
  for r in rows:
    assert r["options"] == ["A", "B", "C", "D"]
    assert r["input_digest"] == hashlib.sha256(r["inputs"].encode()).hexdigest()[:16]
  truncated = sum(r["truncated_input"] for r in rows)
  assert truncated > 0  # MMLU questions are longer than 16 tokens
  summary = json.loads((out / "summary.json").read_text())
  assert summary["truncation"]["mmlu:anatomy"]["inputs_truncated"] == truncated
  assert "were truncated" in err
  for name in ("report.md", "report.html"):  # the report says it too, per task
    text = (out / name).read_text()
    assert "Truncation" in text and "mmlu:anatomy" in text.split("Truncation")[-1], name
  md = (out / "report.md").read_text().split("### Truncation")[-1]
  assert f"| mmlu:anatomy | {len(rows)} | {truncated} | 0 |" in md


def test_option_truncation_that_makes_options_tie_is_refused(tiny, mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(
    tmp_path / "i.jsonl",
    [dict(MMLU_INSTRUCTIONS[0], answer_space="option_text", options_format="newline")],
  )
  out = tmp_path / "out"
  code, err = run_cli(_base(tiny, mmlu_dir, instructions, out, "--max_target_length", "1"), capsys)
  assert code == 1 and "would tie" in err and "--max_target_length" in err


def test_acc_norm_fractions_ids_and_corrupt_results(tiny, mmlu_dir, tmp_path, capsys):
  instructions = write_jsonl(tmp_path / "i.jsonl", MMLU_INSTRUCTIONS[:1])
  plain = tmp_path / "plain"
  code, err = run_cli(_base(tiny, mmlu_dir, instructions, plain), capsys)
  assert code == 0, err
  norm = tmp_path / "norm"
  code, err = run_cli(_base(tiny, mmlu_dir, instructions, norm, "--score_mode", "acc_norm"), capsys)
  assert code == 0, err
  for a, b in zip(_rows(plain), _rows(norm)):  # letters are one byte: sum / 1
    assert b["option_scores"] == pytest.approx(a["option_scores"], abs=1e-6)
  # A fraction of each task, and an id list.
  frac = tmp_path / "frac"
  argv = _base(tiny, mmlu_dir, instructions, frac)
  argv[argv.index("--max_examples") + 1] = "0.5"
  code, err = run_cli(argv, capsys)
  assert code == 0, err
  from robust_prompt.data import mmlu

  n = len(mmlu.load_subject(mmlu_dir, "anatomy"))
  assert len(_rows(frac)) == -(-n // 2)
  ids = tmp_path / "ids.txt"
  wanted = [r["example_id"] for r in _rows(plain)][1:]
  ids.write_text("# chosen\n" + "\n".join(wanted) + "\n")
  chosen = tmp_path / "chosen"
  code, err = run_cli(
    _base(tiny, mmlu_dir, instructions, chosen, "--example_ids", str(ids)), capsys
  )
  assert code == 0, err
  assert [r["example_id"] for r in _rows(chosen)] == wanted
  # A damaged line inside results.jsonl (not a torn last line): a clear error, nothing lost.
  path = plain / "results.jsonl"
  lines = path.read_text().splitlines()
  lines[1] = lines[1][:20]
  path.write_text("\n".join(lines) + "\n")
  before = path.read_bytes()
  code, err = run_cli(_base(tiny, mmlu_dir, instructions, plain), capsys)
  assert code == 1 and "results.jsonl:2" in err and "--overwrite" in err
  assert path.read_bytes() == before


def test_budget_scores_part_of_the_grid_and_raising_it_adds_only_new_cells(
  tiny, mmlu_dir, tmp_path, capsys
):
  instructions = write_jsonl(tmp_path / "i.jsonl", MMLU_INSTRUCTIONS)
  out = tmp_path / "out"
  argv = _base(tiny, mmlu_dir, instructions, out)
  argv[argv.index("--max_examples") + 1] = "8"
  code, err = run_cli([*argv, "--budget", "0.5"], capsys)
  assert code == 0, err
  first = _rows(out)
  assert 8 <= len(first) < 16  # about half of 2 instructions x 8 examples
  assert {r["instruction_id"] for r in first} == {"obs_letters", "unobs_letters"}
  summary = json.loads((out / "summary.json").read_text())
  doc = next(iter(summary["budget"].values()))
  assert doc["budget"] == 0.5 and doc["n_cells"] == 16 and doc["n_evaluated"] == len(first)
  assert doc["tasks"]["mmlu:anatomy"]["estimated"] is True
  assert "Estimated from a budgeted evaluation" in (out / "report.md").read_text()
  # A lower budget into the same directory is refused; a higher one scores only the new cells.
  code, err = run_cli([*argv, "--budget", "0.25"], capsys)
  assert code == 1 and "can only be raised" in err
  code, err = run_cli([*argv, "--budget", "1.0"], capsys)
  assert code == 0, err
  rows = _rows(out)
  assert rows[: len(first)] == first and len(rows) == 16
  assert len({(r["instruction_id"], r["example_id"]) for r in rows}) == 16
  doc = next(iter(json.loads((out / "summary.json").read_text())["budget"].values()))
  assert doc["tasks"]["mmlu:anatomy"]["estimated"] is False  # the full grid: exact figures
