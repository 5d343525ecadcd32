"""Helpers shared by the benchmarks: model sizes, MMLU questions, thread settings, timing.

Nothing here imports TensorFlow or seqio, so `jax_versions.py` can run it in a bare jax+flax
virtual environment.
"""

from __future__ import annotations

import csv
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
MMLU_TEST_DIR = SHARED / "data" / "mmlu" / "test"
SPIECE = SHARED / "fixtures" / "t5_spiece.model"

# Architectures as Hugging Face `T5Config` keyword arguments (random weights: only speed matters).
HF_SIZES = {
  # T5 1.0 small: ReLU MLP, tied embeddings.
  "t5-small": dict(
    d_model=512,
    d_kv=64,
    d_ff=2048,
    num_layers=6,
    num_decoder_layers=6,
    num_heads=8,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
  ),
  # T5 1.1 / Flan-T5 small: gated-GELU, untied output layer.
  "t5-1.1-small": dict(
    d_model=512,
    d_kv=64,
    d_ff=1024,
    num_layers=8,
    num_decoder_layers=8,
    num_heads=6,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  ),
  # Flan-T5-XL (google/flan-t5-xl's config.json): 2.85B parameters, 5.7 GB in bfloat16.
  "flan-t5-xl": dict(
    d_model=2048,
    d_kv=64,
    d_ff=5120,
    num_layers=24,
    num_decoder_layers=24,
    num_heads=32,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  ),
  # A T5 1.1 layout small enough for a smoke test on CPU (seconds).
  "t5-tiny": dict(
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=4,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
  ),
}
VOCAB_SIZE = 32128


def cpu_threads() -> int:
  """The CPU threads both frameworks get: every core (XLA's CPU thread pool uses every core and
  has no flag to shrink it, so PyTorch is given the same with `torch.set_num_threads`)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def host_note() -> str:
  """Whether glibc asks for huge pages in this process, for a benchmark's header line.

  The scripts restart themselves first (`host_memory.reexec_with_huge_pages`, from their
  `__main__` block only, never under a test runner), as the `robust-prompt` executable does: both
  sides of a benchmark run in this one process, so both get it.
  """
  from robust_prompt import host_memory

  mode = host_memory.thp_mode()
  if host_memory.huge_pages_asked():
    return f"huge pages asked ({host_memory.HUGETLB}=1, THP {mode})"
  return f"the C library's default malloc (THP {mode})"


def mmlu_questions(
  limit: int, data_dir: pathlib.Path = MMLU_TEST_DIR
) -> list[tuple[str, list[str]]]:
  """The first `limit` MMLU test questions, cycling through subjects in name order.

  Returns:
    (input text, 4 option texts) per question; the input renders the question and the options
    the usual way ("question\\nA. ...\\nB. ...\\nAnswer:"), the targets are the option texts.
  """
  if not data_dir.is_dir():
    raise SystemExit(f"needs the MMLU test CSVs in {data_dir} (../shared beside the checkout)")
  per_subject = []
  for path in sorted(data_dir.glob("*_test.csv")):
    with open(path, newline="", encoding="utf-8") as f:
      per_subject.append([row for row in csv.reader(f) if len(row) == 6])
  out: list[tuple[str, list[str]]] = []
  i = 0
  while len(out) < limit and any(i < len(rows) for rows in per_subject):
    for rows in per_subject:
      if i < len(rows) and len(out) < limit:
        question, *options, _ = rows[i]
        lines = [question] + [f"{letter}. {o}" for letter, o in zip("ABCD", options)]
        out.append(("\n".join(lines) + "\nAnswer:", list(options)))
    i += 1
  return out


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
  """Wall-clock seconds of `repeats` calls of `fn`."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def summarize(times: list[float]) -> str:
  if len(times) == 1:
    return f"{times[0]:.2f}s"
  return f"median {statistics.median(times):.2f}s (min {min(times):.2f}, max {max(times):.2f})"


def matmul_peak_gflops(
  repeats: int = 10, m: int = 2048, k: int = 512, n: int = 2048, dtype: str = "float32"
) -> dict:
  """This machine's matrix-multiply rate, the ceiling of any step made of matrix products.

  Times `[m, k] @ [k, n]` (by default T5-small's MLP shape) in jax (jitted, on its default device)
  and in PyTorch (on the GPU when it has one, else the CPU); the best of `repeats` runs each.

  Args:
    repeats: timed products per framework (after one untimed one).
    m, k, n: the product's shape.
    dtype: "float32" or "bfloat16" (the inputs and the product).

  Returns:
    `{"jax": GFLOP/s, "torch": GFLOP/s}` (torch omitted when it is not installed).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  flops = 2.0 * m * k * n
  a = np.random.default_rng(0).normal(size=(m, k)).astype(np.float32)
  b = np.random.default_rng(1).normal(size=(k, n)).astype(np.float32)
  product = jax.jit(jnp.matmul)
  ja, jb = (jax.device_put(x).astype(jnp.dtype(dtype)) for x in (a, b))
  jax.block_until_ready(product(ja, jb))
  out = {"jax": flops / min(timed(lambda: jax.block_until_ready(product(ja, jb)), repeats)) / 1e9}
  try:
    import torch
  except ImportError:
    return out
  device = "cuda" if torch.cuda.is_available() else "cpu"
  ta, tb = (torch.from_numpy(x).to(device, getattr(torch, dtype)) for x in (a, b))

  def torch_product():
    ta @ tb
    if device == "cuda":
      torch.cuda.synchronize()  # kernels are asynchronous: time their completion

  torch_product()
  out["torch"] = flops / min(timed(torch_product, repeats)) / 1e9
  return out


def pair_flops(family: str, config, input_len: int, option_lens: Sequence[int]) -> float:
  """Useful FLOPs of one (question, instruction) pair: its input once, each option's own tokens.

  Matrix products are 2 FLOPs per weight per token; attention 4 x N x D per (query, real key)
  (scores and weighted values). T5: the encoder over the input's T tokens; the decoder over the
  shared start position plus each option's tokens but its last (teacher forcing), logits at those
  positions. Decoder-only: the context's C tokens, each option's tokens but its last after it,
  logits at the context's last position and those tokens (the first option token is scored off
  the context).
  """
  if family == "t5":
    h, n, d, f, v = (
      config.d_model,
      config.num_heads,
      config.head_dim,
      config.d_ff,
      config.vocab_size,
    )
    nd, t = n * d, input_len
    mlp = (3 if config.is_gated else 2) * h * f
    encoder = config.num_encoder_layers * (t * 2 * (4 * h * nd + mlp) + 4 * nd * t * t)
    positions = 1 + sum(s - 1 for s in option_lens)
    # The position at depth j of an option's chain sees the start and j tokens of its own.
    self_keys = 1 + sum(j + 1 for s in option_lens for j in range(1, s))
    cross = min(
      4 * nd * t * (h + positions),  # keys/values projected, then attended
      4 * n * positions * h * (d + t),  # absorbed: (q Wk^T) . encoded, (weights . encoded) Wv
    )
    per_position = 2 * (4 * h * nd + 2 * h * nd + mlp)  # self q/k/v/o, cross q/o, MLP
    decoder = config.num_decoder_layers * (positions * per_position + 4 * nd * self_keys + cross)
    return float(encoder + decoder + 2 * h * v * positions)
  h, v, f = config.d_model, config.vocab_size, config.d_ff
  nd, kd = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  c = input_len
  per_token = 2 * (2 * h * nd + 2 * h * kd + 3 * h * f)  # q/o, k/v (grouped), SwiGLU
  fed = sum(s - 1 for s in option_lens)
  keys = c * (c + 1) // 2 + sum(c + j for s in option_lens for j in range(1, s))
  body = config.num_layers * ((c + fed) * per_token + 4 * nd * keys)
  return float(body + 2 * h * v * (1 + fed))


# jax's monitoring event of one XLA backend compilation (`jax._src.dispatch.BACKEND_COMPILE_EVENT`).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """XLA programs compiled, and their compile seconds (summed over threads), since `reset()`."""

  def __init__(self):
    import jax

    self.reset()
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def reset(self) -> None:
    self.programs, self.seconds = 0, 0.0

  def _on_event(self, event: str, duration: float, *args, **kwargs) -> None:
    if event == COMPILE_EVENT:
      self.programs += 1
      self.seconds += duration
