"""Prompt-tuning step throughput: robust_prompt (JAX) vs Hugging Face PEFT (PyTorch), same setup.

A T5-small-sized model with RANDOM weights is created with `transformers`, saved, and loaded into
robust_prompt with `load_model`, so both frameworks train a prompt in front of identical frozen
weights. Both take the same token ids (MMLU test questions rendered with their options, the
correct option's text as the target, padded to the same static shapes), the same prompt length,
batch size, optimizer (Adam, lr 0.3) and CPU threads, with cross-entropy only (plain prompt
tuning: `LossConfig()` on our side, `labels=` on PEFT's).

Timed (warm: after one untimed step that compiles / allocates):
  ours   `robust_prompt.train.step.make_train_step`: one jitted step (forward, backward to the
         prompt only, Adam update), state donated, blocked on every step.
  peft   `peft.get_peft_model(model, PromptTuningConfig(task_type=SEQ_2_SEQ_LM))`:
         `loss.backward()` + `torch.optim.Adam.step()` + `zero_grad()`.

Usage: python benchmarks/train_throughput.py [--steps 10] [--batch_size 8] [--prompt_length 20]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
  HF_SIZES,
  SPIECE,
  cpu_threads,
  matmul_peak_gflops,
  mmlu_questions,
)
from benchmarks.score_throughput import make_hf_model  # noqa: E402


def make_batches(tokenizer, num_batches, batch_size, max_input_length, max_target_length):
  """Token ids (numpy, int32) of MMLU questions: inputs + correct option text as the target."""
  import numpy as np

  questions = mmlu_questions(num_batches * batch_size)
  inputs = [q for q, _ in questions]
  targets = [opts[0] for _, opts in questions]  # any option serves: only speed matters
  enc = tokenizer(
    inputs, max_length=max_input_length, truncation=True, padding="max_length", return_tensors="np"
  )
  tgt = tokenizer(
    targets,
    max_length=max_target_length,
    truncation=True,
    padding="max_length",
    return_tensors="np",
  )
  batches = []
  for b in range(num_batches):
    rows = slice(b * batch_size, (b + 1) * batch_size)
    batches.append(
      {
        "input_ids": enc["input_ids"][rows].astype(np.int32),
        "input_mask": enc["attention_mask"][rows].astype(np.int32),
        "target_ids": tgt["input_ids"][rows].astype(np.int32),
        "target_mask": tgt["attention_mask"][rows].astype(np.int32),
        # Plain prompt tuning: every row its own group, every row an anchor (unused terms).
        "group_ids": np.arange(batch_size, dtype=np.int32),
        "is_anchor": np.ones(batch_size, np.int32),
        "answer": np.full(batch_size, -1, np.int32),
      }
    )
  return batches


def run_ours(model_dir, batches, prompt_length, steps, lr):
  import jax

  from robust_prompt import partitioning
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.model import prompted
  from robust_prompt.train import objective
  from robust_prompt.train import state as state_lib
  from robust_prompt.train.step import make_train_step

  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  rules = partitioning.DEFAULT_RULES
  loaded = load_model(str(model_dir), mesh=mesh)
  tx = state_lib.make_optimizer("adam", lr)
  state, shardings = state_lib.create_state(
    jax.random.PRNGKey(0), tx, prompt_length, loaded.config.d_model, None, mesh, rules
  )
  step = make_train_step(
    model=prompted.for_config(loaded.config),
    tx=tx,
    loss_config=objective.LossConfig(),
    mesh=mesh,
    rules=rules,
    state_shardings=shardings,
    frozen_shardings=jax.tree.map(lambda x: x.sharding, loaded.params),
    example_batch=batches[0],
    num_groups=len(batches[0]["group_ids"]),
  )
  flops = step_flops(
    prompted.for_config(loaded.config), loaded.params, batches[0], state.params["prompt"]
  )
  rng = jax.random.PRNGKey(0)
  start = time.perf_counter()
  state, metrics = step(state, loaded.params, batches[0], rng)
  jax.block_until_ready(state)
  cold = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, loaded.params, batches[(i + 1) % len(batches)], rng)
    jax.block_until_ready(state)
  warm = time.perf_counter() - start
  return steps / warm, cold, float(metrics["loss"]), flops


def step_flops(model, params, batch, prompt) -> float:
  """FLOPs of one step's forward + backward to the prompt (XLA's cost analysis of the compiled
  gradient of `objective.compute_loss`; the Adam update of P x H values is negligible)."""
  import jax

  from robust_prompt.train import objective

  def loss(p):
    return objective.compute_loss(p, params, batch, model=model, config=objective.LossConfig())[0]

  cost = jax.jit(jax.grad(loss)).lower(prompt).compile().cost_analysis()
  if isinstance(cost, list):  # older jax: one dict per program
    cost = cost[0]
  return float(cost["flops"])


def run_peft(model, batches, prompt_length, steps, lr):
  import peft
  import torch

  config = peft.PromptTuningConfig(
    task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=prompt_length
  )
  model = peft.get_peft_model(model, config)
  model.train()  # dropout_rate is 0: train mode costs nothing extra but is how PEFT is used
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
  tensors = [
    {k: torch.from_numpy(b[k]).long() for k in ("input_ids", "input_mask", "target_ids")}
    for b in batches
  ]
  for t, b in zip(tensors, batches):
    # HF ignores label positions set to -100 (padding), as our target_mask does.
    t["labels"] = torch.where(torch.from_numpy(b["target_mask"]) > 0, t["target_ids"], -100)

  def one(t):
    out = model(input_ids=t["input_ids"], attention_mask=t["input_mask"], labels=t["labels"])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out.loss.item()

  one(tensors[0])
  start = time.perf_counter()
  for i in range(steps):
    loss = one(tensors[(i + 1) % len(tensors)])
  warm = time.perf_counter() - start
  trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
  return steps / warm, loss, trainable


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(HF_SIZES), default="t5-small")
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up)")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=20)
  parser.add_argument("--max_input_length", type=int, default=128)
  parser.add_argument("--max_target_length", type=int, default=16)
  parser.add_argument("--lr", type=float, default=0.3)
  args = parser.parse_args(argv)
  threads = cpu_threads()
  import torch
  import transformers

  torch.set_num_threads(threads)
  if not SPIECE.is_file():
    raise SystemExit(f"needs the T5 SentencePiece model at {SPIECE} (../shared)")
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = pathlib.Path(tmp)
    hf_model = make_hf_model(model_dir, args.size, seed=0)
    tokenizer = transformers.T5TokenizerFast.from_pretrained(model_dir)
    batches = make_batches(
      tokenizer, 4, args.batch_size, args.max_input_length, args.max_target_length
    )
    ours, cold, our_loss, flops = run_ours(
      model_dir, batches, args.prompt_length, args.steps, args.lr
    )
    theirs, their_loss, trainable = run_peft(
      hf_model, batches, args.prompt_length, args.steps, args.lr
    )
  print(
    f"{args.size} (random weights), batch {args.batch_size} x input {args.max_input_length} / "
    f"target {args.max_target_length} tokens, prompt {args.prompt_length} vectors "
    f"({trainable} trainable values), {threads} CPU threads, {args.steps} timed steps"
  )
  print(
    f"  ours (JAX, jitted step)    {ours:7.3f} steps/s  (first step incl. compile {cold:.1f}s, loss {our_loss:.3f})"
  )
  print(f"  HF PEFT (PyTorch)          {theirs:7.3f} steps/s  (loss {their_loss:.3f})")
  print(f"  ratio ours / PEFT          {ours / theirs:7.2f}x")
  # What any implementation could reach: a step is matrix products, so FLOPs / (this CPU's
  # matmul rate) bounds its time from below. PEFT computes at least our FLOPs (we skip some).
  peak = matmul_peak_gflops()
  gflop = flops / 1e9
  best = max(peak.values())
  print(
    f"roofline: {gflop:.1f} GFLOP per step (XLA cost analysis, forward + backward to the prompt); "
    f"fp32 matmul peak of this CPU "
    + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
    + " GFLOP/s"
  )
  print(
    f"  ours {gflop * ours:.0f} GFLOP/s ({gflop * ours / best:.0%} of peak), "
    f"PEFT >= {gflop * theirs:.0f} GFLOP/s ({gflop * theirs / best:.0%})"
  )
  print(
    f"  at 100% of peak a step of these FLOPs takes {gflop / best * 1e3:.0f} ms: "
    f"{best / gflop:.2f} steps/s, at most {best / gflop / theirs:.2f}x PEFT"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
