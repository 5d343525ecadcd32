"""Smoke test of the decoder-only benchmarks, so that the scripts cannot rot unnoticed.

`benchmarks/eval_throughput.py` and `benchmarks/train_throughput.py` run end to end with
`--family decoder` on a tiny Llama (`llama-tiny`) and a few MMLU questions / steps. Speed is not
checked (that is the scripts' job, on a quiet machine); agreement with the PyTorch reference is.
"""

import re
import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(autouse=True)
def _needs_shared(mmlu_dir, spiece_path):
  """The benchmarks read MMLU and build their tokenizer from T5's SentencePiece model."""


def test_eval_throughput_decoder_agrees_with_lm_eval_loop(capsys):
  from benchmarks import eval_throughput

  argv = "--family decoder --size llama-tiny --num_questions 4 --batch_size 4".split()
  assert eval_throughput.main(argv) == 0
  out = capsys.readouterr().out
  assert "llama-tiny" in out and "parameters" in out
  # 4 questions x 2 instructions = 8 pairs, 4 options each.
  assert "ours = the harness's (context, continuation) ids on 32/32 requests" in out
  assert "predictions disagree on 0/8 pairs" in out
  diff = float(re.search(r"max \|option log-likelihood difference\| (\S+)", out).group(1))
  assert diff < 1e-4
  for line in ("ours (warm)", "ours (cold, +jit)", "hf lm-eval loop", "logits cache"):
    assert line in out
  assert re.search(r"speed-up \(warm\): [0-9.]+x", out)


def test_train_throughput_decoder_runs(capsys):
  from benchmarks import train_throughput

  argv = (
    "--family decoder --size llama-tiny --steps 1 --batch_size 2 --prompt_length 4 "
    "--max_input_length 32 --max_target_length 4"
  ).split()
  assert train_throughput.main(argv) == 0
  out = capsys.readouterr().out
  assert "losses on (ours): cross-entropy" in out
  ours = float(re.search(r"ours \(JAX, jitted step\)\s+([0-9.]+) steps/s", out).group(1))
  theirs = float(re.search(r"HF PEFT \(PyTorch\)\s+([0-9.]+) steps/s", out).group(1))
  assert ours > 0 and theirs > 0
  assert re.search(r"roofline: [0-9.]+ GFLOP per step", out)
  # Both train a prompt in front of a random 32,000-token model: losses near log(32000) = 10.4.
  losses = [float(x) for x in re.findall(r"loss ([0-9.]+)\)", out)]
  assert len(losses) == 2 and all(8.0 < x < 13.0 for x in losses)
