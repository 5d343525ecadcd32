"""`robust-prompt train` end to end: tiny HF T5 (real tokenizer), a few MMLU questions."""

import json

import numpy as np
import pytest

from robust_prompt.cli import common
from robust_prompt.cli.main import main
from robust_prompt.train import metrics_log

TRAIN_LINES = [
  {
    "id": "tr_observed",
    "tasks": ["mmlu:*"],
    "template": "Question: {question}\n{options}\nAnswer:",
    "options_format": "letters",
    "answer_space": "letters",
    "split": "observed",
    "source": "human",
  },
  {
    "id": "tr_para_1",
    "tasks": ["mmlu:*"],
    "template": "{question}\nChoices:\n{options}\nThe correct letter is",
    "options_format": "letters",
    "answer_space": "letters",
    "split": "unobserved",
    "source": "human",
  },
  {
    "id": "tr_para_2",
    "tasks": ["mmlu:anatomy"],
    "template": "Pick the answer to this {subject} question.\n{question}\n{options}",
    "options_format": "letters",
    "answer_space": "letters",
    "split": "unobserved",
    "source": "human",
  },
]
HELDOUT_LINE = {
  "id": "eval_only",
  "tasks": ["mmlu:*"],
  "template": "Answer the following question. {question}\n{options}",
  "options_format": "letters",
  "answer_space": "letters",
  "split": "unobserved",
  "source": "human",
}


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


@pytest.fixture
def instructions(tmp_path):
  return (
    _write(tmp_path / "train.jsonl", TRAIN_LINES),
    _write(tmp_path / "heldout.jsonl", [HELDOUT_LINE]),
  )


def _argv(model, mmlu_dir, train, heldout, model_dir, *extra):
  return [
    "train",
    "--model",
    str(model),
    "--benchmark",
    "mmlu",
    "--data_dir",
    str(mmlu_dir),
    "--train_instructions",
    train,
    "--heldout_instructions",
    heldout,
    "--model_dir",
    str(model_dir),
    "--tasks",
    "anatomy",
    "--max_examples",
    "6",
    "--no_progress",
    *extra,
  ]


def test_train_end_to_end(tiny_hf_dir, mmlu_dir, instructions, tmp_path, capsys):
  model_dir = tmp_path / "run"
  argv = _argv(tiny_hf_dir, mmlu_dir, *instructions, model_dir, "--gin_file", "test/train_tiny.gin")
  assert main([*argv, "--num_steps", "2", "--gin.losses.lambda_sim=0.5"]) == 0
  assert "trained to step 2" in capsys.readouterr().err
  prompt = common.load_prompt(model_dir / "prompt.npy", d_model=32)  # what `eval --prompt` reads
  assert prompt.shape == (4, 32) and np.all(np.isfinite(prompt))
  config = (model_dir / "config.gin").read_text()
  assert "losses.lambda_sim = 0.5" in config and "train.num_steps = 2" in config
  records = metrics_log.read_metrics(str(model_dir))
  assert [r["step"] for r in records] == [1, 2]
  assert all(r["kl_options"] is not None and r["align"] is not None for r in records)
  assert (model_dir / "checkpoints" / "2").is_dir()
  pool = [json.loads(line)["id"] for line in open(model_dir / "train_instructions.jsonl")]
  assert pool == [r["id"] for r in TRAIN_LINES]

  if "t5_1_1" in str(tiny_hf_dir):  # one architecture is enough for the CLI resume path
    assert main([*argv, "--num_steps", "3", "--gin.losses.lambda_sim=0.5"]) == 0
    assert "resumed at step 2, trained to step 3" in capsys.readouterr().err
    assert [r["step"] for r in metrics_log.read_metrics(str(model_dir))] == [1, 2, 3]
  else:  # ... and the other for continuing from a trained prompt (its P wins over prompt.length)
    again = _argv(tiny_hf_dir, mmlu_dir, *instructions, tmp_path / "again")
    extra = ["--gin_file", "test/train_tiny.gin", "--gin.prompt.length=9", "--num_steps", "1"]
    assert main([*again, *extra, "--prompt", str(model_dir / "prompt.npy")]) == 0
    assert "training a 4-vector prompt" in capsys.readouterr().err
    assert common.load_prompt(tmp_path / "again" / "prompt.npy", d_model=32).shape == (4, 32)


def test_overlap_with_heldout_instructions_is_refused(mmlu_dir, instructions, tmp_path, capsys):
  train, _ = instructions
  heldout = _write(tmp_path / "eval.jsonl", [HELDOUT_LINE, {**TRAIN_LINES[1], "id": "eval_copy"}])
  argv = _argv(tmp_path / "no_model_needed", mmlu_dir, train, heldout, tmp_path / "run")
  assert main([*argv, "--num_steps", "1"]) == 1
  err = capsys.readouterr().err
  assert "'tr_para_1'" in err and "'eval_copy'" in err and "same template" in err


def test_num_steps_is_required(mmlu_dir, instructions, tmp_path, capsys):
  argv = _argv(tmp_path / "m", mmlu_dir, *instructions, tmp_path / "run")
  assert main(argv) == 1  # runs/train_soft_prompt.gin by default, which requires num_steps
  assert "--num_steps" in capsys.readouterr().err


def test_length_grouping_flag(tiny_hf_dir, mmlu_dir, instructions, tmp_path, capsys, monkeypatch):
  """--length_grouping N: length-grouped batches, recorded in config.gin; the data weighs a
  compilation over the run's steps (`run_steps` is train.num_steps)."""
  from robust_prompt.train import grouping

  seen = []
  original = grouping.GroupedData.input_length

  def input_length(self, step):
    seen.append((self.length_grouping, self.run_steps, self.shape_cost_slots))
    return original(self, step)

  monkeypatch.setattr(grouping.GroupedData, "input_length", input_length)
  # A CPU host without huge pages by default, and the executable's restart turned off: train
  # says what they would save (host_memory.py).
  from robust_prompt import host_memory

  thp = tmp_path / "thp_enabled"
  thp.write_text("always [madvise] never\n")
  monkeypatch.setattr(host_memory, "THP_ENABLED", thp)
  monkeypatch.setenv("ROBUST_PROMPT_MALLOC", "system")
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  model_dir = tmp_path / "grouped"
  argv = _argv(tiny_hf_dir, mmlu_dir, *instructions, model_dir, "--gin_file", "test/train_tiny.gin")
  assert main([*argv, "--num_steps", "2", "--length_grouping", "2"]) == 0
  err = capsys.readouterr().err
  assert "trained to step 2" in err
  assert f"transparent huge pages are 'madvise' here ({thp})" in err
  assert "data.length_grouping = 2" in (model_dir / "config.gin").read_text()
  assert seen and set(seen) == {(2, 2, grouping.TRAIN_SHAPE_COST_SLOTS)}
  with pytest.raises(SystemExit):
    main([*argv, "--num_steps", "2", "--length_grouping", "-1"])
  assert "expected an integer >= 0, got -1" in capsys.readouterr().err
