"""Prompt-tuning step throughput: robust_prompt (JAX) vs Hugging Face PEFT (PyTorch), same setup.

A model with RANDOM weights is created with `transformers`, saved, and loaded into robust_prompt
with `load_model`, so both frameworks train a prompt in front of identical frozen weights.
`--family t5` (default) is a T5-small-sized encoder-decoder; `--family decoder` the ~100M Llama
of `eval_throughput.py` (`--size llama-100m`; its 32,000-piece tokenizer). Both sides take the
same token ids (MMLU test questions rendered with their options, the first option's text as the
target, padded to the same static shapes), the same prompt length, batch size, optimizer (Adam,
lr 0.3) and CPU threads, with cross-entropy on the target only (plain prompt tuning:
`LossConfig()`, i.e. lambda_sim = lambda_kl = 0, on our side).

Timed (warm: after one untimed step that compiles / allocates):
  ours   `robust_prompt.train.step.make_train_step`: one jitted step (forward, backward to the
         prompt only, Adam update), state donated, blocked on every step.
  peft   `peft.get_peft_model(model, PromptTuningConfig(task_type=...))`:
         `loss.backward()` + `torch.optim.Adam.step()` + `zero_grad()`.
         - t5 (SEQ_2_SEQ_LM): the loss is HF's `labels=` cross-entropy (the mean over target
           tokens; ours is the mean over rows of each row's token mean: same cost).
         - decoder (CAUSAL_LM): each row is its context followed by its target, right-padded to
           T + S; PEFT puts the P virtual tokens in front (ours: after BOS). The loss is OUR
           definition computed from PEFT's logits (per-row mean cross-entropy of the target
           tokens, mean over rows); HF computes logits at every position, as a causal-LM
           training step does, ours only at the S target positions.

A second setting, `--length_grouped` (t5): each side batches as its users would over real MMLU
lengths (inputs up to 512 tokens): ours `GroupedData(length_grouping=steps)` (the steps' examples
sorted by length, each batch padded to its length bucket, one compilation per bucket), PEFT the
Hugging Face `Trainer` with `group_by_length=True` (batches padded to their longest row), on the
same examples for the same number of steps. It prints each side's first run (ours with its
compilations) and warm rate.

Usage: python benchmarks/train_throughput.py [--family t5|decoder] [--steps 10] [--batch_size 8]
  [--prompt_length 20] [--length_grouped]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
  HF_SIZES,
  SPIECE,
  cpu_threads,
  host_note,
  matmul_peak_gflops,
  mmlu_questions,
)
from benchmarks.eval_throughput import DECODER_SIZES, make_hf_decoder  # noqa: E402
from benchmarks.score_throughput import make_hf_model  # noqa: E402

DEFAULT_SIZE = {"t5": "t5-small", "decoder": "llama-100m"}


def _grouped(batch: dict, batch_size: int) -> dict:
  """Adds the grouping fields of plain prompt tuning: every row its own group and an anchor."""
  import numpy as np

  return {
    **batch,
    "group_ids": np.arange(batch_size, dtype=np.int32),
    "is_anchor": np.ones(batch_size, np.int32),
    "answer": np.full(batch_size, -1, np.int32),
  }


def make_batches(tokenizer, num_batches, batch_size, max_input_length, max_target_length):
  """T5: token ids (numpy, int32) of MMLU questions: inputs + first option text as the target."""
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
      _grouped(
        {
          "input_ids": enc["input_ids"][rows].astype(np.int32),
          "input_mask": enc["attention_mask"][rows].astype(np.int32),
          "target_ids": tgt["input_ids"][rows].astype(np.int32),
          "target_mask": tgt["attention_mask"][rows].astype(np.int32),
        },
        batch_size,
      )
    )
  return batches


def make_decoder_batches(
  model, vocab, num_batches, batch_size, max_input_length, max_target_length
):
  """Decoder: the contexts and targets as our training data tokenizes them (`GroupedData`:
  `encode_inputs`, BOS + the context's last tokens; `encode_targets`, " " + target), padded."""
  from robust_prompt import batching

  questions = mmlu_questions(num_batches * batch_size)
  inputs = model.encode_inputs(vocab, [q for q, _ in questions], max_input_length)
  targets = model.encode_targets(vocab, [opts[0] for _, opts in questions], max_target_length)
  batches = []
  for b in range(num_batches):
    rows = slice(b * batch_size, (b + 1) * batch_size)
    ids, mask = batching.pad_batch(inputs[rows], max_input_length)
    tids, tmask = batching.pad_batch(targets[rows], max_target_length)
    batches.append(
      _grouped(
        {"input_ids": ids, "input_mask": mask, "target_ids": tids, "target_mask": tmask},
        batch_size,
      )
    )
  return batches


def our_step(loaded, mesh, prompt_length, lr, example_batch, num_groups):
  """Our train state and jitted step (Adam, plain prompt tuning), as `loop.train` makes them."""
  import jax

  from robust_prompt import partitioning
  from robust_prompt.model import prompted
  from robust_prompt.train import objective
  from robust_prompt.train import state as state_lib
  from robust_prompt.train.step import make_train_step

  rules = partitioning.DEFAULT_RULES
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
    example_batch=example_batch,
    num_groups=num_groups,
  )
  return state, step


def run_ours(loaded, mesh, batches, prompt_length, steps, lr):
  import jax

  from robust_prompt.model import prompted

  state, step = our_step(loaded, mesh, prompt_length, lr, batches[0], len(batches[0]["group_ids"]))
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


def _peft_loop(model, optimizer, tensors, loss_fn, steps):
  """One untimed step, then `steps` timed ones; returns (steps/s, last loss)."""

  def one(t):
    loss = loss_fn(t)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  one(tensors[0])
  start = time.perf_counter()
  for i in range(steps):
    loss = one(tensors[(i + 1) % len(tensors)])
  return steps / (time.perf_counter() - start), loss


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

  def loss_fn(t):
    return model(input_ids=t["input_ids"], attention_mask=t["input_mask"], labels=t["labels"]).loss

  rate, loss = _peft_loop(model, optimizer, tensors, loss_fn, steps)
  trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
  return rate, loss, trainable


def decoder_peft_tensors(batch: dict) -> dict:
  """One causal-LM row per example: its context then its target, right-padded to T + S.

  Returns torch tensors: `input_ids`, `attention_mask` `[B, T + S]` and `labels` (the target's
  token ids where they are, -100 elsewhere).
  """
  import numpy as np
  import torch

  ids, mask = batch["input_ids"], batch["input_mask"]
  tids, tmask = batch["target_ids"], batch["target_mask"]
  b, t = ids.shape
  width = t + tids.shape[1]
  seq = np.zeros((b, width), np.int64)
  att = np.zeros((b, width), np.int64)
  labels = np.full((b, width), -100, np.int64)
  for r in range(b):
    x = ids[r, mask[r] > 0]
    y = tids[r, tmask[r] > 0]
    seq[r, : len(x) + len(y)] = np.concatenate([x, y])
    att[r, : len(x) + len(y)] = 1
    labels[r, len(x) : len(x) + len(y)] = y
  return {
    "input_ids": torch.from_numpy(seq),
    "attention_mask": torch.from_numpy(att),
    "labels": torch.from_numpy(labels),
  }


def run_peft_decoder(model, batches, prompt_length, steps, lr):
  import peft
  import torch

  config = peft.PromptTuningConfig(
    task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=prompt_length
  )
  model = peft.get_peft_model(model, config)
  model.train()  # no dropout in Llama's config: train mode costs nothing extra
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
  tensors = [decoder_peft_tensors(b) for b in batches]

  def loss_fn(t):
    logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
    logits = logits[:, prompt_length:]  # PEFT's virtual tokens come first
    # Position j predicts token j + 1; our loss: each row's mean target-token CE, mean over rows.
    labels = t["labels"][:, 1:]
    keep = labels != -100
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(log_probs, 2, labels.clamp(min=0)[..., None])[..., 0]
    per_row = -(picked * keep).sum(-1) / keep.sum(-1).clamp(min=1)
    return per_row.mean()

  rate, loss = _peft_loop(model, optimizer, tensors, loss_fn, steps)
  trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
  return rate, loss, trainable


def grouped_data(
  vocab, model, num_examples: int, batch_size: int, steps: int, max_input: int, shape_cost=None
):
  """Our training data over real MMLU lengths: the questions as `GroupedData` groups of one
  member (plain prompt tuning), `length_grouping` over all the timed steps (one window)."""
  from robust_prompt.data.example import Example
  from robust_prompt.instructions.schema import Instruction
  from robust_prompt.train import grouping

  questions = mmlu_questions(num_examples)
  examples = [
    Example(
      id=f"mmlu:{i}",
      task="mmlu:mixed",
      fields={"question": q},
      options=tuple(opts),
      answer=0,  # the first option's text is the target, as in the fixed-shape setting
      correct=(0,),
    )
    for i, (q, opts) in enumerate(questions)
  ]
  as_is = Instruction(
    id="as_is",
    tasks=("mmlu:*",),
    template="{question}",  # the question already shows its lettered options
    options_format="none",
    answer_space="option_text",
    split="observed",
    source="benchmark",
  )
  return grouping.GroupedData(
    examples,
    [as_is],
    vocab,
    groups_per_batch=batch_size,
    members_per_group=1,
    max_input_length=max_input,
    max_target_length=16,
    model=model,
    length_grouping=steps,
    **({} if shape_cost is None else {"shape_cost_slots": shape_cost}),
  )


def run_ours_grouped(loaded, mesh, data, prompt_length, steps, lr):
  """Our length-grouped steps as `robust-prompt train` runs them (`loop.train`'s step, and its
  `WindowAhead`: the window's length buckets compiled in background threads while the first
  steps run): the first pass over the steps (cold), then the same steps again (warm).
  Returns (cold seconds, warm steps/s, buckets, input slots, real tokens, last loss)."""
  import jax

  from robust_prompt import partitioning
  from robust_prompt.train import loop

  batches = [data.batch(s) for s in range(steps)]
  state, step = our_step(loaded, mesh, prompt_length, lr, batches[0], data.G)
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batches[0].items()}
  rng = jax.random.PRNGKey(0)
  ahead = loop.WindowAhead(
    step, (state, loaded.params, rng), shapes, mesh, partitioning.DEFAULT_RULES, data, steps
  )
  rng = jax.random.PRNGKey(0)
  times = []
  for _ in range(2):
    start = time.perf_counter()
    for s, batch in enumerate(batches):
      ahead.wait(s)
      state, metrics = step(state, loaded.params, batch, rng)
      jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  buckets = sorted({b["input_ids"].shape[1] for b in batches})
  slots = sum(b["input_mask"].size for b in batches)
  real = sum(int(b["input_mask"].sum()) for b in batches)
  return times[0], steps / times[1], buckets, slots, real, float(metrics["loss"])


def run_peft_trainer(model, tokenizer, data, steps, batch_size, prompt_length, lr, out_dir):
  """PEFT prompt tuning as its users run it: `transformers.Trainer` grouping by length
  (`train_sampling_strategy="group_by_length"`, formerly `group_by_length=True`: its
  LengthGroupedSampler; batches padded to their longest row by `DataCollatorForSeq2Seq`)
  on the same examples (our token ids, the same as the HF tokenizer's) for the same steps.
  Returns (total seconds, steady steps/s after the first step, input slots, real tokens)."""
  import peft
  import torch
  import transformers

  rows = [data._encode_row(data._pool[e.task][0], i, 0) for i, e in enumerate(data.examples)]
  dataset = [
    {"input_ids": list(x), "attention_mask": [1] * len(x), "labels": list(y)} for x, y, _, _ in rows
  ]
  config = peft.PromptTuningConfig(
    task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=prompt_length
  )
  model = peft.get_peft_model(model, config)
  ends: list[float] = []
  slots = [0, 0]

  class Clock(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
      ends.append(time.perf_counter())

  collate = transformers.DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

  def counting(features):
    batch = collate(features)
    slots[0] += int(batch["attention_mask"].numel())
    slots[1] += int(batch["attention_mask"].sum())
    return batch

  args = transformers.TrainingArguments(
    output_dir=str(out_dir),
    per_device_train_batch_size=batch_size,
    max_steps=steps,
    learning_rate=lr,
    optim="adamw_torch",
    weight_decay=0.0,
    lr_scheduler_type="constant",
    # transformers 5's name for `group_by_length=True`: its LengthGroupedSampler.
    train_sampling_strategy="group_by_length",
    use_cpu=True,
    report_to=[],
    save_strategy="no",
    logging_strategy="no",
    disable_tqdm=True,
    dataloader_num_workers=0,
    remove_unused_columns=False,
    seed=0,
  )
  trainer = transformers.Trainer(
    model=model, args=args, train_dataset=dataset, data_collator=counting, callbacks=[Clock()]
  )
  start = time.perf_counter()
  trainer.train()
  total = time.perf_counter() - start
  del torch
  return total, (len(ends) - 1) / (ends[-1] - ends[0]), slots[0], slots[1]


def main_grouped(args, threads: int) -> int:
  """The second setting: each side batches as its users would, over real MMLU lengths."""
  import jax
  import transformers

  from robust_prompt import partitioning
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.model import prompted

  size = args.size or DEFAULT_SIZE["t5"]
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = pathlib.Path(tmp) / "model"
    hf_model = make_hf_model(model_dir, size, seed=0)
    tokenizer = transformers.T5TokenizerFast.from_pretrained(model_dir)
    loaded = load_model(str(model_dir), mesh=mesh)
    data = grouped_data(
      loaded.vocab,
      prompted.for_config(loaded.config),
      args.steps * args.batch_size,
      args.batch_size,
      args.steps,
      args.grouped_max_input_length,
      args.shape_cost_slots,
    )
    cold, ours, buckets, our_slots, our_real, our_loss = run_ours_grouped(
      loaded, mesh, data, args.prompt_length, args.steps, args.lr
    )
    del loaded
    total, theirs, their_slots, their_real = run_peft_trainer(
      hf_model,
      tokenizer,
      data,
      args.steps,
      args.batch_size,
      args.prompt_length,
      args.lr,
      pathlib.Path(tmp) / "trainer",
    )
  print(
    f"{size} (random weights), length-grouped setting: {args.steps} steps of "
    f"{args.batch_size} MMLU questions (the same {args.steps * args.batch_size} examples on "
    f"both sides; inputs up to {args.grouped_max_input_length} tokens), prompt "
    f"{args.prompt_length} vectors, {threads} CPU threads, {host_note()}"
  )
  print(
    f"  ours: GroupedData(length_grouping={args.steps}): {len(buckets)} length buckets "
    f"{buckets}, {our_real}/{our_slots} input slots real ({our_real / our_slots:.0%})"
  )
  print(
    f"  PEFT: Trainer(group_by_length=True), padded per batch: {their_real}/{their_slots} "
    f"input slots real ({their_real / max(their_slots, 1):.0%})"
  )
  print(
    f"  ours, first pass (incl. {len(buckets)} compilations) {cold:7.2f}s  (loss {our_loss:.3f})"
  )
  print(f"  ours, warm                       {ours:7.3f} steps/s")
  print(f"  PEFT Trainer, whole train()      {total:7.2f}s")
  print(f"  PEFT Trainer, after its first step {theirs:7.3f} steps/s")
  print(f"  ratio ours / PEFT: warm {ours / theirs:.2f}x, first run {total / cold:.2f}x")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--family", choices=("t5", "decoder"), default="t5")
  parser.add_argument(
    "--size",
    choices=sorted(HF_SIZES) + sorted(DECODER_SIZES),
    help=f"architecture (default {DEFAULT_SIZE})",
  )
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up)")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=20)
  parser.add_argument("--max_input_length", type=int, default=128)
  parser.add_argument("--max_target_length", type=int, default=16)
  parser.add_argument("--lr", type=float, default=0.3)
  parser.add_argument(
    "--length_grouped",
    action="store_true",
    help="t5: the second setting (ours: length-grouped GroupedData batches; PEFT: the HF "
    "Trainer with group_by_length) over real MMLU lengths",
  )
  parser.add_argument(
    "--grouped_max_input_length",
    type=int,
    default=512,
    help="--length_grouped: inputs cut at this many tokens (Flan-T5's input length)",
  )
  parser.add_argument(
    "--shape_cost_slots",
    type=int,
    default=None,
    help="--length_grouped: GroupedData's shape_cost_slots (default: the library's; 0 keeps "
    "every length bucket)",
  )
  args = parser.parse_args(argv)
  if args.length_grouped:
    if args.family != "t5":
      parser.error("--length_grouped is the t5 setting")
    threads = cpu_threads()
    import torch

    torch.set_num_threads(threads)
    return main_grouped(args, threads)
  size = args.size or DEFAULT_SIZE[args.family]
  if (size in DECODER_SIZES) != (args.family == "decoder"):
    parser.error(f"--size {size} is not a {args.family} architecture")
  threads = cpu_threads()
  import jax
  import torch
  import transformers

  from robust_prompt import partitioning
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.model import prompted

  torch.set_num_threads(threads)
  if not SPIECE.is_file():
    raise SystemExit(f"needs the T5 SentencePiece model at {SPIECE} (../shared)")
  mesh = partitioning.make_mesh(1, 1, jax.devices()[:1])
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = pathlib.Path(tmp)
    if args.family == "t5":
      hf_model = make_hf_model(model_dir, size, seed=0)
      tokenizer = transformers.T5TokenizerFast.from_pretrained(model_dir)
      loaded = load_model(str(model_dir), mesh=mesh)
      batches = make_batches(
        tokenizer, 4, args.batch_size, args.max_input_length, args.max_target_length
      )
    else:
      hf_model, _ = make_hf_decoder(model_dir, size, seed=0)
      loaded = load_model(str(model_dir), mesh=mesh)
      batches = make_decoder_batches(
        prompted.for_config(loaded.config),
        loaded.vocab,
        4,
        args.batch_size,
        args.max_input_length,
        args.max_target_length,
      )
    ours, cold, our_loss, flops = run_ours(
      loaded, mesh, batches, args.prompt_length, args.steps, args.lr
    )
    del loaded
    peft_fn = run_peft if args.family == "t5" else run_peft_decoder
    theirs, their_loss, trainable = peft_fn(
      hf_model, batches, args.prompt_length, args.steps, args.lr
    )
  real_slots = sum(int(b["input_mask"].sum()) for b in batches)
  real_in = real_slots / sum(b["input_mask"].size for b in batches)
  print(
    f"{size} (random weights, {sum(p.numel() for p in hf_model.parameters()) / 1e6:.1f}M "
    f"parameters), batch {args.batch_size} x input {args.max_input_length} / "
    f"target {args.max_target_length} tokens ({real_in:.0%} of input slots real), prompt "
    f"{args.prompt_length} vectors ({trainable} trainable values), {threads} CPU threads, "
    f"{host_note()}, "
    f"{args.steps} timed steps"
  )
  print(
    "losses on (ours): cross-entropy on the target only (LossConfig(): lambda_sim 0, "
    "lambda_kl 0); PEFT: "
    + ("HF's labels= cross-entropy" if args.family == "t5" else "the same per-row mean CE")
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
  from robust_prompt import host_memory

  host_memory.reexec_with_huge_pages()
  sys.exit(main())
