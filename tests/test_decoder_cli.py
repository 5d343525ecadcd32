"""End to end through the CLI on a tiny Llama directory: score, eval, train, then eval --prompt.

The decoder-only family reaches every command through the prompted-model API only; no flag
says which family a model is (config.json's model_type decides).
"""

import json

import numpy as np
import pytest
from test_decoder_common import make_bpe_tokenizer, make_hf_model

pytest.importorskip("torch")
pytest.importorskip("transformers")

INSTRUCTIONS = [
  {"id": "plain", "tasks": ["jsonl:toy"], "template": "{input}", "options_format": "none",
   "answer_space": "option_text", "split": "observed", "source": "user"},
  {"id": "polite", "tasks": ["jsonl:toy"], "template": "Please answer: {input}",
   "options_format": "none", "answer_space": "option_text", "split": "unobserved",
   "source": "human"},
]  # fmt: skip
EXAMPLES = [
  {"id": str(i), "input": q, "options": opts, "answer": a}
  for i, (q, opts, a) in enumerate(
    [("the quick brown", ["fox", "dog", "cat"], 0), ("hello", ["world", "Paris"], 0),
     ("true or false", ["true", "false", "maybe", "yes"], 1), ("answer A B", ["C", "D"], 0)]
  )
]  # fmt: skip


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tiny_llama")
  make_bpe_tokenizer(out)
  make_hf_model(out, "llama")
  return out


def _cli(argv, capsys):
  from robust_prompt.cli import main as cli_main

  capsys.readouterr()
  code = cli_main.main(argv)
  return code, capsys.readouterr().err


def test_score_eval_train_eval_prompt(llama_dir, tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  _jsonl(data / "toy.jsonl", EXAMPLES)
  instructions = _jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
  model = ["--model", str(llama_dir), "--no_progress"]

  # score: continuations of the input, one number per target.
  requests = _jsonl(tmp_path / "in.jsonl", [{"inputs": "hello", "targets": ["world", "Paris"]}])
  code, err = _cli(
    ["score", *model, "--input", str(requests), "--output", str(tmp_path / "s.jsonl")], capsys
  )
  assert code == 0, err
  scored = json.loads((tmp_path / "s.jsonl").read_text())
  assert len(scored["scores"]) == 2 and all(np.isfinite(scored["scores"]))
  assert all(s < 0 for s in scored["scores"]) and min(scored["num_tokens"]) >= 1

  bench = ["--benchmark", "jsonl", "--data_dir", str(data), "--instructions", str(instructions)]
  code, err = _cli(["eval", *model, *bench, "--output_dir", str(tmp_path / "base")], capsys)
  assert code == 0, err
  rows = [json.loads(x) for x in (tmp_path / "base" / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 8 and all(
    len(r["option_scores"]) == len(EXAMPLES[int(r["example_id"].split(":")[-1])]["options"])
    for r in rows
  )
  assert json.loads((tmp_path / "base" / "summary.json").read_text())

  code, err = _cli(
    ["train", *model, "--benchmark", "jsonl", "--data_dir", str(data),
     "--train_instructions", str(instructions), "--model_dir", str(tmp_path / "prompt"),
     "--num_steps", "2", "--gin.prompt.length=2", "--gin.data.groups_per_batch=4",
     "--gin.data.members_per_group=2", "--gin.prompt.init='uniform'"], capsys,
  )  # fmt: skip
  assert code == 0, err
  prompt = np.load(tmp_path / "prompt" / "prompt.npy")
  assert prompt.shape == (2, 32)

  code, err = _cli(
    ["eval", *model, *bench, "--prompt", str(tmp_path / "prompt" / "prompt.npy"),
     "--output_dir", str(tmp_path / "after")], capsys,
  )  # fmt: skip
  assert code == 0, err
  after = [json.loads(x) for x in (tmp_path / "after" / "results.jsonl").read_text().splitlines()]
  assert "+prompt:" in after[0]["model"]
  assert any(a["option_scores"] != b["option_scores"] for a, b in zip(rows, after))
