"""The evaluation engine: score modes against PyTorch references, files, compilations, sharding."""

import csv
import json
import pathlib

import numpy as np
import pytest
from helpers import OBSERVED_BIGBENCH, OBSERVED_LETTERS, write_jsonl

INSTRUCTIONS = [
  dict(OBSERVED_LETTERS, id="mmlu_obs_letters", seen_by=["flan-t5"]),
  {
    "id": "mmlu_unobs_text",
    "tasks": ["mmlu:*"],
    "template": "Subject: {subject}. {question}\nChoices:\n{options}",
    "options_format": "dashes",
    "answer_space": "option_text",
    "split": "unobserved",
    "source": "human",
  },
  dict(OBSERVED_BIGBENCH, id="bb_obs_text"),
  {
    "id": "bb_unobs_inline",
    "tasks": ["bigbench:*"],
    "template": "Answer the question. {input}\nOptions: {options}",
    "options_format": "inline",
    "answer_space": "option_text",
    "split": "unobserved",
    "source": "human",
  },
]


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
  from robust_prompt.instructions.io import load_instructions

  path = write_jsonl(tmp_path_factory.mktemp("instr") / "instr.jsonl", INSTRUCTIONS)
  return load_instructions([path])


def load(model_dir, mesh=None):
  from robust_prompt.checkpoints.resolve import load_model

  return load_model(str(model_dir), mesh=mesh)


def make_evaluator(loaded, mesh=None, prompt=None, **settings):
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  settings.setdefault("batch_size", 4)
  return engine.Evaluator(
    prompted.for_config(loaded.config),
    loaded.params,
    loaded.vocab,
    engine.evaluate_settings(**settings),
    mesh=mesh,
    prompt=prompt,
  )


def mmlu_tasks(mmlu_dir, subjects=("anatomy",), n=3):
  from robust_prompt.data import mmlu

  return {f"mmlu:{s}": mmlu.load_subject(mmlu_dir, s)[:n] for s in subjects}


# -- greedy_prefix: the rule of the original study --------------------------------------------------


def _original_rule(probs, greedy, options):
  """The InstructionEval rule, transliterated (batch size 1): product of greedy-step probabilities.

  probs: [K, V] softmax of each greedy step; greedy: [K] tokens; options: list of token lists.
  """
  eos = [k for k, t in enumerate(greedy) if t == 1]
  steps = eos[0] + 1 if eos else len(greedy)
  n = min(min(len(o) for o in options), steps)
  return [np.prod([probs[k][o[k]] for k in range(n)]) for o in options]


def test_greedy_prefix_rule_matches_original_loop():
  from robust_prompt.model import scoring

  rng = np.random.default_rng(0)
  b, k, v, o, s = 4, 6, 12, 3, 6
  logits = rng.normal(size=(b, k, v)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  greedy = rng.integers(2, v, size=(b, k))
  greedy[1, 1] = 1  # EOS at step 1: only the first 2 tokens can count
  greedy[2, 4] = 1
  options = [
    [[3, 4, 1], [5, 1], [7, 8, 9, 1]],
    [[3, 4, 5, 6, 1], [5, 6, 7, 1], [2, 2, 2, 2, 2, 1]],
    [[3, 4, 5, 6, 7, 1], [5, 6, 7, 8, 9, 1]],  # 2 real options + 1 dummy
    [[9, 1], [10, 1], [11, 1]],
  ]
  option_ids = np.zeros((b, o, s), np.int32)
  option_mask = np.zeros((b, o, s), np.int32)
  for r, opts in enumerate(options):
    for j, t in enumerate(opts):
      option_ids[r, j, : len(t)] = t
      option_mask[r, j, : len(t)] = 1
  step_lp = np.log(np.take_along_axis(probs[:, None], option_ids[..., None], -1)[..., 0])
  got = np.asarray(scoring.greedy_prefix_scores(step_lp, greedy, option_mask, eos_id=1))
  for r, opts in enumerate(options):
    want = np.log(_original_rule(probs[r], greedy[r], opts))
    np.testing.assert_allclose(got[r, : len(opts)], want, rtol=1e-5)


def test_ties_pick_the_lowest_index():
  from robust_prompt.eval import rank

  assert rank.predict(np.array([-1.0, -0.5, -0.5, -3.0]), 4) == 1
  assert rank.predict(np.array([-2.0, -2.0, -np.inf]), 2) == 0


# -- score modes against PyTorch Hugging Face ----------------------------------------------------


def _hf_reference(model_dir, inputs, options, mode):
  """Per option: HF teacher-forced sum / mean, or the greedy-prefix rule on a hand-rolled decode."""
  import torch
  import transformers

  tm = transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval()
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  out = []
  with torch.inference_mode():
    for text, opts in zip(inputs, options):
      enc = tok(text, return_tensors="pt")
      labels = [tok(o).input_ids for o in opts]
      if mode in ("sum", "mean"):
        row = []
        for lab in labels:
          logits = tm(**enc, labels=torch.tensor([lab])).logits[0]
          lp = torch.log_softmax(logits, -1)[torch.arange(len(lab)), lab].sum().item()
          row.append(lp / len(lab) if mode == "mean" else lp)
        out.append(row)
        continue
      # greedy_prefix: greedy decode (max 32 new tokens), keep each step's distribution.
      dec = torch.zeros((1, 1), dtype=torch.long)
      probs, greedy = [], []
      for _ in range(32):
        step = tm(**enc, decoder_input_ids=dec).logits[0, -1]
        probs.append(torch.softmax(step.double(), -1).numpy())
        token = int(step.argmax())
        greedy.append(token)
        dec = torch.cat([dec, torch.tensor([[token]])], 1)
        if token == 1:
          break
      out.append([float(np.log(p)) for p in _original_rule(probs, greedy, labels)])
  return out


def _check_modes(model_dir, mmlu_dir, instructions, modes):
  """Each mode on one chunk: letters for sum (one-token options); multi-token options for mean
  (length normalisation) and greedy_prefix (the shortest option bounds the compared prefix)."""
  from robust_prompt.eval import engine

  loaded = load(model_dir)
  chunks = engine.plan_chunks(mmlu_tasks(mmlu_dir, n=2), instructions)
  by_id = {c.instruction.id: c for c in chunks}
  assert sorted(by_id) == ["mmlu_obs_letters", "mmlu_unobs_text"]
  for mode, instruction_id in modes:
    chunk = by_id[instruction_id]
    rows = make_evaluator(loaded, score_mode=mode).score_chunk(chunk, "m")
    want = _hf_reference(
      model_dir, [r.inputs for r in chunk.rendered], [r.options for r in chunk.rendered], mode
    )
    for row, ref in zip(rows, want):
      np.testing.assert_allclose(row["option_scores"], ref, rtol=2e-5, atol=2e-4)
      assert row["prediction"] == int(np.argmax(ref))


MODES = (
  ("sum", "mmlu_obs_letters"),
  ("mean", "mmlu_unobs_text"),
  ("greedy_prefix", "mmlu_unobs_text"),
)
ALL_MODES = tuple(
  (m, i) for m in ("sum", "mean", "greedy_prefix") for i in ("mmlu_obs_letters", "mmlu_unobs_text")
)


def test_score_modes_match_pytorch(tiny_model_dir, mmlu_dir, instructions):
  """sum / mean against HF teacher forcing; greedy_prefix against a hand-rolled HF greedy decode."""
  _check_modes(tiny_model_dir, mmlu_dir, instructions, MODES)


@pytest.mark.slow
def test_score_modes_match_pytorch_both_architectures(tiny_hf_dir, mmlu_dir, instructions):
  _check_modes(tiny_hf_dir, mmlu_dir, instructions, ALL_MODES)


# -- a whole run: files exist and agree ----------------------------------------------------------


def _run(loaded, tasks, instructions, out, **settings):
  from robust_prompt.eval import engine

  evaluator = make_evaluator(loaded, **settings)
  chunks = engine.plan_chunks(tasks, instructions, settings.get("max_examples"))
  fp = engine.fingerprint(model=loaded.source, chunks=chunks, settings=evaluator.settings)
  return engine.evaluate(
    evaluator, chunks, out, model_name=loaded.source, run_fingerprint=fp, progress=False
  )


def _check_files_agree(out: pathlib.Path, tasks, instructions):
  from robust_prompt import io_utils

  rows = io_utils.read_jsonl(out / "results.jsonl")
  applicable = {t: [i.id for i in instructions if i.applies_to(t)] for t in tasks}
  assert len(rows) == sum(len(tasks[t]) * len(applicable[t]) for t in tasks)
  for row in rows:
    assert set(row) == {
      "model", "task", "instruction_id", "split", "source", "example_id", "options",
      "input_digest", "option_scores", "prediction", "gold", "correct", "truncated_input",
      "truncated_options", "prompt_format",
    }  # fmt: skip
    assert row["prompt_format"] == "raw"  # no instruction declares one: the run's default
    assert row["prediction"] == int(np.argmax(row["option_scores"]))
    gold = row["gold"] if isinstance(row["gold"], list) else [row["gold"]]
    assert row["correct"] == (row["prediction"] in gold)
  with open(out / "per_instruction.csv", newline="") as f:
    per = list(csv.DictReader(f))
  assert {(r["task"], r["instruction_id"]) for r in per} == {
    (t, i) for t in tasks for i in applicable[t]
  }
  for r in per:
    mine = [
      x["correct"]
      for x in rows
      if (x["task"], x["instruction_id"]) == (r["task"], r["instruction_id"])
    ]
    assert float(r["accuracy"]) == pytest.approx(np.mean(mine))
    assert int(r["n_examples"]) == len(tasks[r["task"]])
    assert r["prompt_format"] == "raw"  # what the results rows say the model read
  summary = json.loads((out / "summary.json").read_text())
  assert sorted(summary["tasks"]) == sorted(tasks)
  for name, task in summary["tasks"].items():
    assert task["observed"]["n_instructions"] == 1
    assert task["unobserved"]["n_instructions"] == 1
    accs = {r["split"]: float(r["accuracy"]) for r in per if r["task"] == name}
    assert task["gap"]["value"] == pytest.approx(accs["observed"] - accs["unobserved"])
  md = (out / "report.md").read_text()
  html = (out / "report.html").read_text()
  for name in tasks:
    assert name in md and name in html


def test_end_to_end_mmlu_and_bigbench(
  tiny_model_dir, mmlu_dir, bigbench_lite_dir, instructions, tmp_path
):
  from robust_prompt.data import bigbench

  loaded = load(tiny_model_dir)
  tasks = mmlu_tasks(mmlu_dir, ("anatomy",), n=3)
  result = _run(loaded, tasks, instructions, tmp_path / "mmlu")
  assert result.num_rows == 6 and result.resumed_chunks == 0
  _check_files_agree(tmp_path / "mmlu", tasks, instructions)

  bb = {name: bigbench.load_task(bigbench_lite_dir, name)[:3] for name in ("bigbench:strategyqa",)}
  _run(loaded, bb, instructions, tmp_path / "bb")
  _check_files_agree(tmp_path / "bb", bb, instructions)


def test_option_scores_equal_score_command(tiny_model_dir, mmlu_dir, instructions, tmp_path):
  from robust_prompt import io_utils
  from robust_prompt.cli import main as cli_main
  from robust_prompt.eval import engine

  loaded = load(tiny_model_dir)
  tasks = mmlu_tasks(mmlu_dir, ("anatomy",), n=3)  # as above: compiled already
  _run(loaded, tasks, instructions, tmp_path / "out")
  rows = io_utils.read_jsonl(tmp_path / "out" / "results.jsonl")
  chunks = engine.plan_chunks(tasks, instructions)
  requests = [{"inputs": r.inputs, "targets": list(r.options)} for c in chunks for r in c.rendered]
  io_utils.atomic_write_text(tmp_path / "in.jsonl", "".join(json.dumps(q) + "\n" for q in requests))
  code = cli_main.main(
    ["score", "--model", str(tiny_model_dir), "--input", str(tmp_path / "in.jsonl"),
     "--output", str(tmp_path / "scores.jsonl"), "--no_progress"]
  )  # fmt: skip
  assert code == 0
  scored = io_utils.read_jsonl(tmp_path / "scores.jsonl")
  assert len(scored) == len(rows)
  for row, s in zip(rows, scored):
    np.testing.assert_allclose(row["option_scores"], s["scores"], rtol=1e-5, atol=1e-4)


# -- compilation count, sharding, soft prompts, generation ---------------------------------------


def test_compiles_a_handful_of_times(tiny_model_dir, mmlu_dir, instructions):
  from robust_prompt.eval import engine

  loaded = load(tiny_model_dir)
  evaluator = make_evaluator(loaded, batch_size=2)
  tasks = mmlu_tasks(mmlu_dir, ("anatomy", "virology"), n=16)
  letters = [i for i in instructions if i.id == "mmlu_obs_letters"]
  chunks = engine.plan_chunks(tasks, letters)
  before = evaluator.score_fn._cache_size()
  for chunk in chunks:
    evaluator.score_chunk(chunk, "m")
  batches = sum(len(c.examples) // 2 for c in chunks)
  compiled = evaluator.score_fn._cache_size() - before
  assert batches == 16
  # At most one compilation per distinct bucketed (B, T, O, S) shape: no more than the length
  # buckets the inputs fall in (O and S are fixed by the letters), fewer than the batches...
  from robust_prompt import batching

  spanned = {
    batching.bucket_length(len(x), steps_per_octave=4)
    for c in chunks
    for x in evaluator.input_ids(c)
  }
  assert compiled <= len(evaluator.shapes) <= len(spanned) < batches, sorted(evaluator.shapes)
  # ... and none at all when the same work comes again.
  for chunk in chunks:
    evaluator.score_chunk(chunk, "m")
  assert evaluator.score_fn._cache_size() - before == compiled


def test_pooled_chunks_score_like_single_chunks_in_fewer_batches(
  tiny_model_dir, mmlu_dir, instructions
):
  """Pooling the chunks of a task changes which rows share a batch, not their scores."""
  from robust_prompt.eval import engine

  loaded = load(tiny_model_dir)
  tasks = mmlu_tasks(mmlu_dir, ("anatomy",), n=5)
  chunks = engine.plan_chunks(tasks, instructions)
  assert len(chunks) >= 2
  evaluator = make_evaluator(loaded, batch_size=4)
  alone = [evaluator.score_chunk(c, "m") for c in chunks]
  batches = []
  pooled = evaluator.score_chunks(chunks, "m", on_batch=batches.append)
  assert sum(batches) == sum(len(c.examples) for c in chunks)
  # 5 rows a chunk: 2 batches each alone (one mostly dummy rows), ceil(5 * n / 4) together.
  assert len(batches) == -(-5 * len(chunks) // 4) < 2 * len(chunks)
  for want, got in zip(alone, pooled):
    assert [r["example_id"] for r in got] == [r["example_id"] for r in want]
    assert [r["instruction_id"] for r in got] == [r["instruction_id"] for r in want]
    for a, b in zip(got, want):
      np.testing.assert_allclose(a["option_scores"], b["option_scores"], rtol=1e-5, atol=1e-4)


def test_pools_stay_within_a_task_and_cover_every_chunk():
  from robust_prompt.eval import engine
  from robust_prompt.instructions.schema import Instruction

  inst = Instruction(
    id="i", tasks=("*",), template="{input}", split="unobserved", source="human",
    options_format="none", answer_space="text",
  )  # fmt: skip

  def chunk(task, n):
    return engine.Chunk(task, inst, tuple(range(n)), ())

  chunks = [
    chunk("a", 3),
    chunk("a", 3),
    chunk("a", 3),
    chunk("b", 1),
    chunk("b", 9),
    chunk("c", 2),
  ]
  pools = engine.plan_pools(chunks, pool_rows=5)
  assert [list(p) for p in pools] == [[0, 1], [2], [3, 4], [5]]
  assert [list(p) for p in engine.plan_pools(chunks, pool_rows=1)] == [[i] for i in range(6)]
  assert engine.plan_pools([], 5) == []


def test_sharded_predictions_equal_single_device(tiny_model_dir, mmlu_dir, instructions):
  from robust_prompt import partitioning
  from robust_prompt.eval import engine

  tasks = mmlu_tasks(mmlu_dir, ("anatomy",), n=4)
  chunks = engine.plan_chunks(tasks, [i for i in instructions if i.id == "mmlu_obs_letters"])
  single = make_evaluator(load(tiny_model_dir), batch_size=8)
  want = [single.score_chunk(c, "m") for c in chunks]
  for data, model in ((2, 4), (8, 1)):
    mesh = partitioning.make_mesh(data, model)
    sharded = make_evaluator(load(tiny_model_dir, mesh=mesh), mesh=mesh, batch_size=8)
    for chunk, ref in zip(chunks, want):
      got = sharded.score_chunk(chunk, "m")
      assert [r["prediction"] for r in got] == [r["prediction"] for r in ref]
      for a, b in zip(got, ref):
        np.testing.assert_allclose(a["option_scores"], b["option_scores"], rtol=1e-5, atol=1e-4)


def test_host_parameters_are_placed_once(tiny_model_dir, mmlu_dir, instructions):
  """numpy parameters (`load_model` without a mesh) go onto the device when the evaluator is
  made, not with every batch; placed ones are kept as they are (same buffers)."""
  import jax

  from robust_prompt import partitioning

  loaded = load(tiny_model_dir)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(loaded.params))
  evaluator = make_evaluator(loaded)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(evaluator.params))
  mesh = partitioning.make_mesh(2, 4)
  placed = load(tiny_model_dir, mesh=mesh)
  on_mesh = make_evaluator(placed, mesh=mesh)
  for a, b in zip(jax.tree.leaves(on_mesh.params), jax.tree.leaves(placed.params)):
    assert a is b


def test_soft_prompt_matches_pytorch_inputs_embeds(tiny_model_dir, mmlu_dir, instructions):
  import torch
  import transformers

  from robust_prompt.eval import engine

  loaded = load(tiny_model_dir)
  prompt = np.random.default_rng(1).normal(size=(3, loaded.config.d_model)).astype(np.float32)
  evaluator = make_evaluator(loaded, prompt=prompt)
  chunk = engine.plan_chunks(mmlu_tasks(mmlu_dir, n=2), instructions)[0]
  rows = evaluator.score_chunk(chunk, "m")
  tm = transformers.T5ForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
  tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
  with torch.inference_mode():
    for row, rendered in zip(rows, chunk.rendered):
      ids = tok(rendered.inputs, return_tensors="pt").input_ids
      embeds = torch.cat([torch.from_numpy(prompt)[None], tm.get_input_embeddings()(ids)], 1)
      want = []
      for option in rendered.options:
        lab = torch.tensor([tok(option).input_ids])
        logits = tm(inputs_embeds=embeds, labels=lab).logits[0]
        want.append(torch.log_softmax(logits, -1)[torch.arange(lab.shape[1]), lab[0]].sum().item())
      np.testing.assert_allclose(row["option_scores"], want, rtol=1e-5, atol=1e-4)


def test_generative_task_greedy_decode_and_exact_match(tiny_model_dir, tmp_path):
  import torch
  import transformers

  from robust_prompt.data.example import Example
  from robust_prompt.eval import engine
  from robust_prompt.instructions.schema import Instruction

  instruction = Instruction(
    id="gen", tasks=("jsonl:*",), template="Repeat: {input}", options_format="none",
    answer_space="option_text", split="unobserved", source="human",
  )  # fmt: skip
  texts = ["the cat sat", "hello world", "one two three four"]
  tm = transformers.T5ForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
  tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
  steps = 8
  hf_pred = []
  with torch.inference_mode():
    for t in texts:
      enc = tok(f"Repeat: {t}", return_tensors="pt")
      dec = torch.zeros((1, 1), dtype=torch.long)
      for _ in range(steps):
        nxt = tm(**enc, decoder_input_ids=dec).logits[0, -1].argmax()
        dec = torch.cat([dec, nxt.view(1, 1)], 1)
        if int(nxt) == 1:
          break
      hf_pred.append(tok.decode(dec[0], skip_special_tokens=True))
  # The first reference equals the model's own output up to case and spacing: exact match.
  examples = [
    Example(id="g0", task="jsonl:gen", fields={"input": texts[0]}, targets=(f"  {hf_pred[0].upper()} ", "x")),
    Example(id="g1", task="jsonl:gen", fields={"input": texts[1]}, targets=("surely not this",)),
    Example(id="g2", task="jsonl:gen", fields={"input": texts[2]}, targets=(hf_pred[2],)),
  ]  # fmt: skip
  evaluator = make_evaluator(load(tiny_model_dir), max_decode_length=steps)
  (chunk,) = engine.plan_chunks({"jsonl:gen": examples}, [instruction])
  rows = evaluator.score_chunk(chunk, "m")
  assert [r["prediction"].strip() for r in rows] == [p.strip() for p in hf_pred]
  assert [r["correct"] for r in rows] == [True, hf_pred[1].strip() == "surely not this", True]
  assert rows[0]["option_scores"] == [] and rows[0]["gold"] == [examples[0].targets[0], "x"]
