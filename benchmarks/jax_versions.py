"""Times OUR T5 forward pass under two jax/flax installations, to choose the pinned versions.

Usage (driver: runs the timing once per Python interpreter and prints a comparison):

  python benchmarks/jax_versions.py --python /work/venv/bin/python /work/venv_old/bin/python

Each interpreter only needs jax, flax and numpy: the timed path (robust_prompt.model) imports no
TensorFlow or seqio. The repository is put on PYTHONPATH, so the same model code runs in both.
With `--worker`, the script times the current interpreter and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# (batch B, input length T, target length S): MMLU-like rank classification, and long inputs.
SHAPES = ((32, 128, 16), (8, 512, 32))


def _cpu_seconds() -> float:
  """User + system CPU time of this process (all threads): the work, whatever else runs."""
  import resource

  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _worker(args: argparse.Namespace) -> None:
  import flax
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks.common import HF_SIZES, VOCAB_SIZE
  from robust_prompt.model.config import T5Config
  from robust_prompt.model.t5 import T5

  hf = HF_SIZES[args.size]
  config = T5Config(
    vocab_size=VOCAB_SIZE,
    d_model=hf["d_model"],
    num_heads=hf["num_heads"],
    head_dim=hf["d_kv"],
    d_ff=hf["d_ff"],
    num_encoder_layers=hf["num_layers"],
    num_decoder_layers=hf["num_decoder_layers"],
    feed_forward_proj=hf["feed_forward_proj"],
    tie_word_embeddings=hf["tie_word_embeddings"],
  )
  model = T5(config)
  rng = np.random.default_rng(0)
  results = {"python": sys.executable, "jax": jax.__version__, "flax": flax.__version__}
  params = None
  forward = jax.jit(lambda p, x, xm, y, ym: model.apply({"params": p}, x, xm, y, ym))
  for b, t, s in SHAPES:
    x = jnp.asarray(rng.integers(2, VOCAB_SIZE, (b, t)), jnp.int32)
    y = jnp.asarray(rng.integers(2, VOCAB_SIZE, (b, s)), jnp.int32)
    xm = jnp.ones((b, t), jnp.int32)
    ym = jnp.ones((b, s), jnp.int32)
    if params is None:
      params = jax.jit(model.init)(jax.random.PRNGKey(0), x, xm, y, ym)["params"]
    start = time.perf_counter()
    jax.block_until_ready(forward(params, x, xm, y, ym))
    compile_s = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(args.iters):
      start, start_cpu = time.perf_counter(), _cpu_seconds()
      jax.block_until_ready(forward(params, x, xm, y, ym))
      times.append(time.perf_counter() - start)
      cpu_times.append(_cpu_seconds() - start_cpu)
    median = statistics.median(times)
    results[f"B{b}_T{t}_S{s}"] = {
      "examples_per_s": b / median,
      "median_s": median,
      "min_s": min(times),
      "cpu_s": statistics.median(cpu_times),
      "first_call_s": compile_s,
    }
  print(json.dumps(results))


def _drive(args: argparse.Namespace) -> None:
  env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  runs = []
  # Interleave the interpreters over rounds so that load from other processes hits both alike.
  for round_ in range(args.rounds):
    for python in args.python:
      cmd = [python, str(pathlib.Path(__file__).resolve()), "--worker", "--size", args.size]
      cmd += ["--iters", str(args.iters)]
      out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
      if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-3000:]}")
      row = json.loads(out.stdout.strip().splitlines()[-1])
      row["round"] = round_
      runs.append(row)
      print(json.dumps(row), flush=True)
  print(f"\nT5 forward pass ({args.size}, random weights, float32), examples/s (median of rounds):")
  shapes = [f"B{b}_T{t}_S{s}" for b, t, s in SHAPES]
  table = {}
  for python in args.python:
    rows = [r for r in runs if r["python"] == python]
    versions = f"jax {rows[0]['jax']} / flax {rows[0]['flax']}"
    table[versions] = [statistics.median(r[s]["examples_per_s"] for r in rows) for s in shapes]
    first = [statistics.median(r[s]["first_call_s"] for r in rows) for s in shapes]
    cpu = [statistics.median(r[s]["cpu_s"] for r in rows) for s in shapes]
    cells = ", ".join(
      f"{s}: {v:6.1f} ex/s, {c:.2f} CPU-s/step (compile {f:.1f}s)"
      for s, v, c, f in zip(shapes, table[versions], cpu, first)
    )
    print(f"  {versions:28s} {cells}")
  if len(table) == 2:
    (name_a, a), (name_b, b) = table.items()
    ratios = ", ".join(f"{s}: {y / x:.2f}x" for s, x, y in zip(shapes, a, b))
    print(f"  ({name_b}) / ({name_a}): {ratios}")


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters to time")
  parser.add_argument("--size", default="t5-small", choices=("t5-small", "t5-1.1-small"))
  parser.add_argument("--iters", type=int, default=5, help="timed forward passes per shape")
  parser.add_argument("--rounds", type=int, default=2, help="repeats of the whole comparison")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
  else:
    _drive(args)


if __name__ == "__main__":
  main()
