"""Resuming `robust-prompt eval`: a killed run, rerun with the same command, ends byte-identical."""

import pathlib
import shutil

import pytest
from helpers import OBSERVED_LETTERS, write_jsonl

INSTRUCTIONS = [
  OBSERVED_LETTERS,
  {
    "id": "unobs_numbers",
    "tasks": ["mmlu:*"],
    "template": "Question about {subject}: {question}\n{options}\nReply with a number.",
    "options_format": "numbers",
    "answer_space": "numbers",
    "split": "unobserved",
    "source": "human",
  },
]


@pytest.fixture(scope="module")
def instructions_path(tmp_path_factory):
  return write_jsonl(tmp_path_factory.mktemp("instr") / "instr.jsonl", INSTRUCTIONS)


def eval_argv(model_dir, mmlu_dir, instructions_path, out, *extra):
  return [
    "eval", "--model", str(model_dir), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir),
    "--instructions", str(instructions_path), "--output_dir", str(out),
    "--tasks", "anatomy", "astronomy", "--max_examples", "3", "--batch_size", "4", "--no_progress",
    *extra,
  ]  # fmt: skip


def snapshot(out: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_killed_run_resumes_to_identical_files(
  tiny_model_dir, mmlu_dir, instructions_path, tmp_path, capsys
):
  from robust_prompt.cli import main as cli_main

  out = tmp_path / "out"
  argv = eval_argv(tiny_model_dir, mmlu_dir, instructions_path, out)
  assert cli_main.main(argv) == 0
  full = snapshot(out)
  assert {"results.jsonl", "run.json", "summary.json", "per_instruction.csv", "report.md"} <= set(
    full
  )
  lines = full["results.jsonl"].splitlines(keepends=True)
  assert len(lines) == 2 * 2 * 3  # tasks x instructions x examples

  # A kill in the middle of the second chunk, half-way through writing a line; reports never written.
  for cut in (4, 3, 0):
    for path in out.iterdir():
      if path.name not in ("results.jsonl", "run.json"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    torn = lines[cut][: len(lines[cut]) // 2]
    (out / "results.jsonl").write_bytes(b"".join(lines[:cut]) + torn)
    capsys.readouterr()
    assert cli_main.main(argv) == 0
    err = capsys.readouterr().err
    if cut >= 3:
      assert "resumed: 1 of 4" in err  # the complete first chunk was kept, not recomputed
    assert snapshot(out) == full, f"files differ after resuming from a cut at line {cut}"

  # Rerunning a finished run changes nothing.
  assert cli_main.main(argv) == 0
  assert "resumed: 4 of 4" in capsys.readouterr().err
  assert snapshot(out) == full


def test_refuses_to_resume_a_different_run(
  tiny_model_dir, mmlu_dir, instructions_path, tmp_path, capsys
):
  from robust_prompt.cli import main as cli_main

  out = tmp_path / "out"
  assert cli_main.main(eval_argv(tiny_model_dir, mmlu_dir, instructions_path, out)) == 0
  before = snapshot(out)
  capsys.readouterr()
  argv = eval_argv(tiny_model_dir, mmlu_dir, instructions_path, out, "--score_mode", "mean")
  assert cli_main.main(argv) == 1
  err = capsys.readouterr().err
  assert "different run" in err and "score_mode" in err and "'sum'" in err and "'mean'" in err
  assert snapshot(out) == before  # nothing touched


def test_results_without_fingerprint_are_not_resumed(tiny_model_dir, tmp_path):
  from robust_prompt.eval import resume

  out = tmp_path / "out"
  out.mkdir()
  (out / "results.jsonl").write_text('{"task": "x"}\n')
  with pytest.raises(resume.FingerprintMismatch, match="run.json"):
    resume.check_fingerprint(out, {"model": "m"})


def test_completed_chunks_keeps_only_whole_chunks(tmp_path):
  from robust_prompt import io_utils
  from robust_prompt.eval import resume

  path = tmp_path / "results.jsonl"
  chunks = [(("t1", "a"), 2), (("t1", "b"), 2), (("t2", "a"), 1)]
  rows = [{"task": t, "instruction_id": i, "k": n} for (t, i), size in chunks for n in range(size)]
  io_utils.append_jsonl(path, rows)
  data = path.read_bytes()
  assert resume.completed_chunks(path, chunks) == 3
  # Partial second chunk plus a torn line: only the first chunk survives, byte for byte.
  lines = data.splitlines(keepends=True)
  path.write_bytes(b"".join(lines[:3]) + lines[3][:5])
  assert resume.completed_chunks(path, chunks) == 1
  assert path.read_bytes() == b"".join(lines[:2])
  # Rows of another plan (e.g. a reordered instruction) are not taken as done.
  path.write_bytes(b"".join([lines[2], lines[3]]))
  assert resume.completed_chunks(path, chunks) == 0
  assert path.read_bytes() == b""
  assert resume.completed_chunks(tmp_path / "absent.jsonl", chunks) == 0


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(
  tiny_model_dir, mmlu_dir, instructions_path, tmp_path
):
  """A real process, killed with SIGKILL while it writes results, then the same command again."""
  import os
  import signal
  import subprocess
  import sys
  import time

  def command(out):
    argv = eval_argv(tiny_model_dir, mmlu_dir, instructions_path, out)
    argv[argv.index("--max_examples") + 1] = "8"
    argv[argv.index("--batch_size") + 1] = "2"
    return [sys.executable, "-m", "robust_prompt.cli.main", *argv]

  env = dict(os.environ, JAX_PLATFORMS="cpu")
  reference = tmp_path / "reference"
  subprocess.run(command(reference), check=True, env=env, capture_output=True)

  out = tmp_path / "killed"
  proc = subprocess.Popen(
    command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  results = out / "results.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if results.exists() and results.read_bytes().count(b"\n") >= 8:  # a chunk or more written
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not (out / "summary.json").exists()
  subprocess.run(command(out), check=True, env=env, capture_output=True)
  assert snapshot(out) == snapshot(reference)
