"""Encoder forward time: our jitted T5 encoder vs Hugging Face PyTorch's, same weights and inputs.

A T5-small-sized model with random weights (`score_throughput.make_hf_model`) is loaded into
robust_prompt; both encoders run the same random token ids at each `[B, T]` shape (all tokens
real), warm, `torch.inference_mode()`, the same CPU threads. Prints milliseconds per forward pass
and the ratio: a per-kernel comparison, without batching or padding effects.

Usage: python benchmarks/encoder_forward.py [--batch_size 16] [--lengths 64 128 192] [--iters 5]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import HF_SIZES, cpu_threads  # noqa: E402
from benchmarks.score_throughput import make_hf_model  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(HF_SIZES), default="t5-small")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 192])
  parser.add_argument("--iters", type=int, default=5)
  args = parser.parse_args(argv)
  threads = cpu_threads()
  import jax
  import numpy as np
  import torch

  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.model.t5 import T5

  torch.set_num_threads(threads)
  with tempfile.TemporaryDirectory() as tmp:
    hf = make_hf_model(pathlib.Path(tmp), args.size, seed=0)
    loaded = load_model(tmp)
  model = T5(loaded.config)
  params = jax.device_put(loaded.params)  # once: numpy leaves would be copied in on every call
  encode = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, method=T5.encode))

  def ours(ids, mask):
    return jax.block_until_ready(encode(params, ids, mask))

  def theirs(ids, mask):
    with torch.inference_mode():
      return hf.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

  def ms(fn, *a):
    fn(*a)  # warm: compiled / allocated
    start = time.perf_counter()
    for _ in range(args.iters):
      fn(*a)
    return (time.perf_counter() - start) / args.iters * 1e3

  print(f"{args.size} (random weights) encoder, {threads} CPU threads, {args.iters} timed passes")
  for t in args.lengths:
    ids = np.random.default_rng(t).integers(2, 32000, (args.batch_size, t)).astype(np.int32)
    mask = np.ones_like(ids)
    tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
    diff = float(np.max(np.abs(np.asarray(ours(ids, mask)) - theirs(tids, tmask).numpy())))
    a, b = ms(ours, ids, mask), ms(theirs, tids, tmask)
    print(
      f"  B{args.batch_size} T{t}: ours {a:7.1f} ms, PyTorch {b:7.1f} ms, "
      f"ratio {b / a:.2f}x (max |diff| {diff:.1e})"
    )
  return 0


if __name__ == "__main__":
  from robust_prompt import host_memory

  host_memory.reexec_with_huge_pages()
  sys.exit(main())
