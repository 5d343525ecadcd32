"""Evaluation throughput: (question x instruction) pairs per second, ours vs a Hugging Face loop.

A T5-small-sized model with RANDOM weights is created with `transformers`, saved with
`save_pretrained`, and loaded into robust_prompt with `load_model`, so both sides run identical
weights. Both evaluate the same real MMLU test questions rendered through the same instructions
(`robust_prompt.instructions.render`: the 4 options shown lettered, the letters "A".."D" scored),
with the same token ids, in one run:

  ours    `robust_prompt.eval.engine.Evaluator.score_chunks` over the pools of chunks that
          `evaluate` uses (`plan_pools`: the (task, instruction) chunks of a task together),
          inputs sorted and padded to bucketed static shapes, the encoder run ONCE per pair and
          the 4 options scored in one decoder pass over its output (jit; "warm" = already
          compiled, the first, compiling pass is reported as "cold").
  hf      what lm-evaluation-harness does for seq2seq models (`loglikelihood` of
          `HFLM` with AutoModelForSeq2SeqLM): one request per (pair, option), requests sorted by
          length (longest first), batched, padded, ONE FULL FORWARD (encoder + decoder) per
          request with the option as teacher-forced labels, log-softmax, summed over the
          option's tokens; `torch.inference_mode()`.

Tokenization is excluded from both timings. The predictions of the two are checked to agree.

Usage: python benchmarks/eval_throughput.py [--num_questions 64] [--batch_size 16]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import HF_SIZES, SPIECE, VOCAB_SIZE, cpu_threads  # noqa: E402

MMLU_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"
# Two subjects: each (task, instruction) chunk then holds num_questions / 2 examples, i.e. whole
# batches, as in real runs (MMLU subjects have 100-1,534 questions).
SUBJECTS = ("anatomy", "astronomy")


def make_hf_model(out_dir: pathlib.Path, size: str, seed: int = 0):
  """Saves a random HF T5 of `size` with the real T5 tokenizer; returns (model, tokenizer)."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config = transformers.T5Config(
    vocab_size=VOCAB_SIZE,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    **HF_SIZES[size],
  )
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.save_pretrained(out_dir)
  shutil.copy(SPIECE, out_dir / "spiece.model")
  tokenizer = transformers.T5TokenizerFast.from_pretrained(out_dir)
  tokenizer.save_pretrained(out_dir)
  return model, tokenizer


def instructions():
  from robust_prompt.instructions.schema import Instruction

  common = dict(tasks=("mmlu:*",), options_format="letters", answer_space="letters")
  return [
    Instruction(
      id="flan_style",
      template="{question}\n{options}\nAnswer:",
      split="observed",
      source="flan_v2",
      **common,
    ),
    Instruction(
      id="human_1",
      template="The following is a question about {subject}. Choose the correct letter.\n"
      "{question}\n{options}",
      split="unobserved",
      source="human",
      **common,
    ),
  ]


def hf_lm_eval_loop(model, requests, batch_size: int) -> list[float]:
  """lm-evaluation-harness's seq2seq loglikelihood: one full forward per (input, option) request.

  Args:
    requests: (input ids with EOS, option ids with EOS) pairs.

  Returns:
    The summed log-probability of each request's option, in request order.
  """
  import torch

  order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
  out = [0.0] * len(requests)
  with torch.inference_mode():
    for start in range(0, len(order), batch_size):
      batch = [requests[i] for i in order[start : start + batch_size]]
      t = max(len(x) for x, _ in batch)
      s = max(len(y) for _, y in batch)
      ids = torch.zeros((len(batch), t), dtype=torch.long)
      mask = torch.zeros((len(batch), t), dtype=torch.long)
      labels = torch.full((len(batch), s), -100, dtype=torch.long)
      for r, (x, y) in enumerate(batch):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
        labels[r, : len(y)] = torch.tensor(y)
      logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
      log_probs = torch.log_softmax(logits, dim=-1)
      keep = labels != -100
      picked = torch.gather(log_probs, 2, labels.clamp(min=0)[..., None])[..., 0]
      sums = (picked * keep).sum(-1)
      for r, i in enumerate(order[start : start + batch_size]):
        out[i] = float(sums[r])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_questions", type=int, default=64, help="MMLU questions in total")
  parser.add_argument("--batch_size", type=int, default=16, help="rows per batch (both sides)")
  parser.add_argument("--size", default="t5-small", choices=sorted(HF_SIZES))
  args = parser.parse_args()
  threads = cpu_threads()

  import numpy as np
  import torch

  torch.set_num_threads(threads)
  from robust_prompt import vocab as vocab_lib
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.data import mmlu
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  per_subject = -(-args.num_questions // len(SUBJECTS))
  tasks = {f"mmlu:{s}": mmlu.load_subject(MMLU_DIR, s)[:per_subject] for s in SUBJECTS}
  chunks = engine.plan_chunks(tasks, instructions())
  pairs = sum(len(c.examples) for c in chunks)

  with tempfile.TemporaryDirectory() as tmp:
    hf_model, _ = make_hf_model(pathlib.Path(tmp), args.size)
    loaded = load_model(tmp)
  settings = engine.evaluate_settings(batch_size=args.batch_size)
  evaluator = engine.Evaluator(
    prompted.for_config(loaded.config), loaded.params, loaded.vocab, settings
  )

  pools = engine.plan_pools(chunks, settings.pool_rows)

  def ours():
    return [
      row
      for pool in pools
      for rows in evaluator.score_chunks([chunks[i] for i in pool], "ours")
      for row in rows
    ]

  start = time.perf_counter()
  ours()
  cold = time.perf_counter() - start
  start = time.perf_counter()
  rows = ours()
  warm = time.perf_counter() - start

  # The same token ids for the reference: inputs and options as the engine tokenizes them.
  requests, owner = [], []
  for c in chunks:
    inputs = vocab_lib.encode_inputs(loaded.vocab, [r.inputs for r in c.rendered], 1024)
    for x, r in zip(inputs, c.rendered):
      for y in vocab_lib.encode_targets(loaded.vocab, r.options):
        requests.append((x, y))
      owner.append(len(r.options))
  hf_lm_eval_loop(hf_model, requests[: args.batch_size], args.batch_size)  # warm-up
  start = time.perf_counter()
  scores = hf_lm_eval_loop(hf_model, requests, args.batch_size)
  hf_time = time.perf_counter() - start

  flat, k = [], 0
  for n in owner:
    flat.append(scores[k : k + n])
    k += n
  agree = sum(int(np.argmax(h)) == r["prediction"] for h, r in zip(flat, rows))
  max_diff = max(
    float(np.max(np.abs(np.array(h) - r["option_scores"]))) for h, r in zip(flat, rows)
  )

  print(f"model: {args.size} (random weights), {threads} CPU threads, batch {args.batch_size}")
  print(f"work: {pairs} (question x instruction) pairs, {len(requests)} (pair, option) requests")
  print(f"  ours (warm)         {warm:7.2f}s  {pairs / warm:7.1f} pairs/s")
  print(f"  ours (cold, +jit)   {cold:7.2f}s  {pairs / cold:7.1f} pairs/s")
  print(f"  hf lm-eval loop     {hf_time:7.2f}s  {pairs / hf_time:7.1f} pairs/s")
  print(f"speed-up (warm): {hf_time / warm:.2f}x   (cold: {hf_time / cold:.2f}x)")
  print(f"predictions agree on {agree}/{len(rows)} pairs; max |score difference| {max_diff:.2e}")


if __name__ == "__main__":
  main()
