"""`robust-prompt tasks` end to end through `robust_prompt.cli.main.main`."""

import json
import subprocess
import sys

import pytest

from robust_prompt.cli.main import main
from robust_prompt.data import bigbench, sources
from robust_prompt.instructions.io import (
  default_instruction_dir,
  instructions_for_task,
  load_instructions,
)


def _instructions(tmp_path):
  path = tmp_path / "inst.jsonl"
  rows = [
    {"id": "a_obs", "tasks": ["mmlu:*"], "template": "{question}\n{options}", "split": "observed",
     "options_format": "letters", "answer_space": "letters", "source": "flan_v2", "seen_by": ["flan-t5"]},
    {"id": "b_un", "tasks": ["mmlu:anatomy"], "template": "{subject}: {question} {options}",
     "split": "unobserved", "options_format": "inline", "answer_space": "option_text", "source": "human"},
  ]  # fmt: skip
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_json_pairs(tmp_path, capsys, mmlu_dir):
  inst = _instructions(tmp_path)
  rc = main(["tasks", "--benchmark", "mmlu", "--data_dir", str(mmlu_dir.parent),
             "--instructions", str(inst), "--format", "json"])  # fmt: skip
  assert rc == 0
  rows = json.loads(capsys.readouterr().out)
  assert len(rows) == 57 + 1
  anatomy = [r for r in rows if r["task"] == "mmlu:anatomy"]
  assert {(r["instruction_id"], r["split"], r["source"]) for r in anatomy} == {
    ("a_obs", "observed", "flan_v2"),
    ("b_un", "unobserved", "human"),
  }
  for r in rows:
    assert r["benchmark"] == "mmlu"
    assert r["n_examples"] == len(sources.load_task(r["task"], mmlu_dir.parent))
  assert anatomy[0]["seqio_task"] == "rp:mmlu:anatomy:observed:a_obs"
  assert sum(r["n_examples"] for r in rows if r["instruction_id"] == "a_obs") == 14042


def test_table_with_shipped_instructions(capsys, shared_dir):
  rc = main(["tasks", "--data_dir", str(shared_dir / "data"), "--benchmark", "bigbench_lite"])
  assert rc == 0
  captured = capsys.readouterr()
  lines = captured.out.splitlines()
  shipped = load_instructions([default_instruction_dir()])
  for task in bigbench.LITE_TASKS:
    name = f"bigbench:{task}"
    (line,) = [x for x in lines if x.split()[:1] == [name]]
    cells = line.split()
    if (shared_dir / "data" / "bigbench_lite" / task).is_dir():
      examples = sources.load_task(name, shared_dir / "data")
      applicable = instructions_for_task(shipped, name)
      assert cells[2:] == [
        str(len(examples)),
        str(sum(i.split == "observed" for i in applicable)),
        str(sum(i.split == "unobserved" for i in applicable)),
      ]
    else:
      assert cells[2] == "missing"
      assert f"benchmark_tasks/{task}/" in captured.err
  assert "10 tasks" in lines[-2]


def test_default_benchmarks_are_those_present(tmp_path, capsys, monkeypatch):
  (tmp_path / "jsonl").mkdir()
  (tmp_path / "jsonl" / "toy.jsonl").write_text('{"input": "x", "target": "y"}\n')
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path))
  inst = tmp_path / "i.jsonl"
  inst.write_text(
    json.dumps({"id": "g", "tasks": ["jsonl:*"], "template": "{input}", "options_format": "none",
                "answer_space": "option_text", "split": "unobserved", "source": "human"}) + "\n"
  )  # fmt: skip
  assert main(["tasks", "--instructions", str(inst), "--format", "json"]) == 0
  rows = json.loads(capsys.readouterr().out)
  assert [(r["task"], r["instruction_id"], r["n_examples"]) for r in rows] == [
    ("jsonl:toy", "g", 1)
  ]


def test_errors(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv(sources.ENV_VAR, raising=False)
  with pytest.raises(SystemExit) as e:
    main(["tasks", "--benchmark", "mmlx"])
  assert e.value.code == 2 and "invalid choice: 'mmlx'" in capsys.readouterr().err
  assert main(["tasks", "--benchmark", "mmlu"]) == 1
  assert "no data directory: pass --data_dir" in capsys.readouterr().err
  assert main(["tasks", "--data_dir", str(tmp_path / "absent")]) == 1
  assert "does not exist" in capsys.readouterr().err
  assert main(["tasks", "--data_dir", str(tmp_path)]) == 1
  assert "no benchmark data found" in capsys.readouterr().err
  bad = tmp_path / "mmlu" / "test" / "toy_test.csv"
  bad.parent.mkdir(parents=True)
  bad.write_text("q1,a,b,c,d,A\nq2,a,b,c,D\n")
  assert main(["tasks", "--benchmark", "mmlu", "--data_dir", str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert f"{bad}:2: expected 6 columns" in err and "Traceback" not in err
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"id": "x"\n')
  assert (
    main(
      ["tasks", "--benchmark", "mmlu", "--data_dir", str(tmp_path), "--instructions", str(broken)]
    )
    == 1
  )
  assert f"{broken}:1:" in capsys.readouterr().err


def test_does_not_import_jax_or_tensorflow(mmlu_dir):
  code = (
    "import sys; from robust_prompt.cli.main import main; "
    f"rc = main(['tasks', '--benchmark', 'mmlu', '--data_dir', {str(mmlu_dir.parent)!r}, '--format', 'json']); "
    "heavy = [m for m in ('jax', 'tensorflow', 'torch', 'seqio') if m in sys.modules]; "
    "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or bool(heavy))"
  )
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "HEAVY []" in proc.stderr
