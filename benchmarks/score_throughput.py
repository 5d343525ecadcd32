"""Scoring throughput: robust_prompt (JAX) vs Hugging Face PyTorch, same weights, same questions.

A T5-small-sized model with RANDOM weights is created with `transformers`, saved, and loaded into
robust_prompt with `load_model`, so both frameworks run identical weights. Both score the same
MMLU test questions (question + 4 lettered options as the input, each option text a target), with
the same token ids, the same number of questions per batch and the same CPU threads, in one run.

Timed (tokenization excluded from both):
  ours           `robust-prompt score`'s Scorer (`eval/scorer.py`): bucketed static shapes, each input encoded once
                 and its 4 options scored against that encoder output (warm: compiled already;
                 the compile time of the first pass is reported separately as "cold").
  hf pairs       PyTorch, `torch.inference_mode()`: one full forward per (input, option) pair,
                 padded to the batch's longest row (how rank classification is usually done).
  hf encode-once PyTorch, encoder run once per input and its output repeated for the 4 options
                 (the same algorithm as ours, done by hand with the HF API).

Usage: python benchmarks/score_throughput.py [--num_examples 256] [--batch_size 16]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
  HF_SIZES,
  SPIECE,
  VOCAB_SIZE,
  cpu_threads,
  host_note,
  mmlu_questions,
)


def make_hf_model(out_dir: pathlib.Path, size: str, seed: int):
  """Saves a random HF T5 of `size` with the real T5 tokenizer; returns the torch model."""
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
  transformers.T5TokenizerFast.from_pretrained(out_dir).save_pretrained(out_dir)
  return model


def _pad(rows, pad_id=0):
  import torch

  width = max(len(r) for r in rows)
  ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
  mask = torch.zeros((len(rows), width), dtype=torch.long)
  for i, r in enumerate(rows):
    ids[i, : len(r)] = torch.tensor(r)
    mask[i, : len(r)] = 1
  return ids, mask


def hf_score(model, input_ids, target_ids, batch_size: int, encode_once: bool):
  """PyTorch scores (sum log-prob per target, EOS included), batches sorted by input length."""
  import torch

  order = sorted(range(len(input_ids)), key=lambda i: len(input_ids[i]), reverse=True)
  results = [None] * len(input_ids)
  with torch.inference_mode():
    for start in range(0, len(order), batch_size):
      chunk = order[start : start + batch_size]
      owners = [(i, k) for i in chunk for k in range(len(target_ids[i]))]
      labels, label_mask = _pad([target_ids[i][k] for i, k in owners])
      decoder_input_ids = torch.cat(
        [torch.zeros((labels.shape[0], 1), dtype=torch.long), labels[:, :-1]], dim=1
      )
      if encode_once:
        ids, mask = _pad([input_ids[i] for i in chunk])
        encoded = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        repeats = torch.tensor([len(target_ids[i]) for i in chunk])
        out = model(
          encoder_outputs=(encoded.repeat_interleave(repeats, dim=0),),
          attention_mask=mask.repeat_interleave(repeats, dim=0),
          decoder_input_ids=decoder_input_ids,
          decoder_attention_mask=label_mask,
        )
      else:
        ids, mask = _pad([input_ids[i] for i, _ in owners])
        out = model(
          input_ids=ids,
          attention_mask=mask,
          decoder_input_ids=decoder_input_ids,
          decoder_attention_mask=label_mask,
        )
      logp = torch.log_softmax(out.logits.float(), dim=-1)
      token_lp = logp.gather(-1, labels[..., None])[..., 0] * label_mask
      sums = token_lp.sum(-1).tolist()
      for (i, _), s in zip(owners, sums):
        if results[i] is None:
          results[i] = []
        results[i].append(s)
  return results


def _cpu_seconds() -> float:
  """User + system CPU time of this process (all threads)."""
  import resource

  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--num_examples", type=int, default=256, help="MMLU questions scored")
  parser.add_argument("--batch_size", type=int, default=16, help="questions per batch (both)")
  parser.add_argument("--size", default="t5-small", choices=sorted(HF_SIZES))
  parser.add_argument("--repeats", type=int, default=2, help="timed passes of each (interleaved)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--skip_pairs", action="store_true", help="skip the HF pairs baseline")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  threads = cpu_threads()
  import jax
  import numpy as np
  import torch

  torch.set_num_threads(threads)

  from robust_prompt import partitioning
  from robust_prompt import vocab as vocab_lib
  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.eval.scorer import Scorer
  from robust_prompt.model import prompted

  questions = mmlu_questions(args.num_examples)
  n = len(questions)
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = pathlib.Path(tmp) / "model"
    hf_model = make_hf_model(model_dir, args.size, args.seed)
    mesh = partitioning.make_mesh(-1, 1)
    loaded = load_model(str(model_dir), mesh=mesh, dtype=args.dtype)
  input_ids = vocab_lib.encode_inputs(loaded.vocab, [q for q, _ in questions], max_len=1024)
  target_ids = [vocab_lib.encode_targets(loaded.vocab, options) for _, options in questions]
  in_tokens = [len(x) for x in input_ids]
  tgt_tokens = [len(t) for ts in target_ids for t in ts]
  print(
    f"{args.size} (random weights, {args.dtype}), {n} MMLU questions x 4 options, batch "
    f"{args.batch_size} questions, {threads} CPU threads, {host_note()}; jax {jax.__version__}, torch "
    f"{torch.__version__}\n  input tokens: mean {statistics.mean(in_tokens):.0f}, max "
    f"{max(in_tokens)}; target tokens: mean {statistics.mean(tgt_tokens):.1f}, max {max(tgt_tokens)}",
    flush=True,
  )

  scorer = Scorer(
    prompted.for_config(loaded.config),
    loaded.params,
    loaded.vocab,
    mesh=mesh,
    batch_size=args.batch_size,
  )

  def ours():
    return scorer.score(
      input_ids, target_ids, max_input_length=1024, max_target_length=256, progress=False
    )

  start = time.perf_counter()
  ours_results = ours()
  cold = time.perf_counter() - start
  print(
    f"  ours, first pass (compiles every shape): {n / cold:7.2f} ex/s ({cold:.1f}s)", flush=True
  )

  runners = {"ours": ours}
  runners["hf encode-once"] = lambda: hf_score(
    hf_model, input_ids, target_ids, args.batch_size, True
  )
  if not args.skip_pairs:
    runners["hf pairs"] = lambda: hf_score(hf_model, input_ids, target_ids, args.batch_size, False)
  hf_model(  # warm-up (allocator, thread pool)
    input_ids=torch.ones((2, 8), dtype=torch.long),
    decoder_input_ids=torch.zeros((2, 2), dtype=torch.long),
  )
  times: dict[str, list[float]] = {name: [] for name in runners}
  cpu_times: dict[str, list[float]] = {name: [] for name in runners}
  outputs = {}
  for _ in range(args.repeats):  # interleaved, so that load from other processes hits all alike
    for name, fn in runners.items():
      start, start_cpu = time.perf_counter(), _cpu_seconds()
      outputs[name] = fn()
      times[name].append(time.perf_counter() - start)
      cpu_times[name].append(_cpu_seconds() - start_cpu)
      print(
        f"  {name:15s} {n / times[name][-1]:7.2f} ex/s ({times[name][-1]:.1f}s wall, "
        f"{cpu_times[name][-1]:.1f}s CPU)",
        flush=True,
      )

  ours_scores = np.array([s for scores, _ in outputs["ours"] for s in scores])
  assert [c for _, counts in ours_results for c in counts] == tgt_tokens
  print("\nexamples/s (median over passes; higher is better):")
  rate = {name: n / statistics.median(t) for name, t in times.items()}
  for name, value in rate.items():
    line = f"  {name:15s} {value:7.2f} ex/s"
    if name != "ours":
      hf_scores = np.array([s for scores in outputs[name] for s in scores])
      diff = float(np.max(np.abs(hf_scores - ours_scores)))
      line += f"   ours / this = {rate['ours'] / value:.2f}x   (max |score diff| {diff:.2e})"
    print(line)
  print(f"  ours cold (first pass incl. compilation): {n / cold:.2f} ex/s")
  # On a shared machine wall time depends on the other processes; CPU time is the work done.
  cpu = {name: statistics.median(t) for name, t in cpu_times.items()}
  print("CPU seconds per pass (all threads; lower is better):")
  for name, value in cpu.items():
    extra = f"   this / ours = {value / cpu['ours']:.2f}x" if name != "ours" else ""
    print(f"  {name:15s} {value:7.1f}s{extra}")


if __name__ == "__main__":
  from robust_prompt import host_memory

  host_memory.reexec_with_huge_pages()
  main()
