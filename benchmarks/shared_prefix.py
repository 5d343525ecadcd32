"""The decoder-only shared-prefix context pass: what it saves, what it costs in compilations.

Two parts (docs/design.md, "Decoder-only family"; `PromptedDecoder.with_shared_prefix`):

* `analysis` (host only, no model run): MMLU (the test CSVs in ../shared) x the 16 MMLU
  instructions of tasks/instructions/mmlu.jsonl, batched exactly as `eval` batches them (the real
  `Evaluator`, its step replaced by a recorder), tokenized with the T5 SentencePiece model as a
  stand-in for a 32k LLaMA-style tokenizer (BOS first). For each choice of prefix buckets: the
  context positions saved (what the shared prefix removes from `B * (T + P)`) and the number of
  distinct eval-step shapes (compilations), for the "raw" and "alpaca" prompt formats, without
  and with a soft prompt. `--group_chunks`: the same if batches were ordered by chunk.
* `timing`: the jitted eval step (`engine.eval_step`, rank classification and greedy decoding)
  of a small random Llama (`--hidden`, `--layers`) on batches of `--rows` inputs of about
  `--length` tokens whose first `--shared` are common, with and without the prefix path, warm.

```bash
python benchmarks/shared_prefix.py analysis --subjects 20
python benchmarks/shared_prefix.py timing --hidden 256 --layers 4 --length 200 --shared 60
python benchmarks/shared_prefix.py timing --shared 1 --prompt_length 20   # BOS + prompt shared
```
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402

SCHEMES = {
  "off": (),
  "x8": tuple(range(8, 4097, 8)),
  "16+x8": tuple(range(16, 4097, 8)),  # the default, prompted_decoder.SHARED_PREFIX_BUCKETS
  "x16": tuple(range(16, 4097, 16)),
  "x32": tuple(range(32, 4097, 32)),
  "pow2": tuple(2**k for k in range(4, 13)),
}


def _proxy_vocab(tmp: pathlib.Path):
  from robust_prompt import vocab as vocab_lib

  if not common.SPIECE.is_file():
    raise SystemExit(f"needs {common.SPIECE} (../shared beside the checkout)")
  shutil.copy(common.SPIECE, tmp / "tokenizer.model")
  # T5's pieces: "</s>" stands in for BOS (one shared first token, as LLaMA's <s>).
  config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "</s>", "eos_token": "</s>",
            "add_bos_token": True}  # fmt: skip
  (tmp / "tokenizer_config.json").write_text(json.dumps(config))
  return vocab_lib.load_decoder_vocabulary(tmp)


@contextlib.contextmanager
def _grouped_by_chunk(chunks, on: bool):
  """What if the engine ordered a pool's rows by chunk within each (length bucket, longest
  option) group: batches would hold one instruction more often (the padded shapes stay)."""
  from robust_prompt.eval import engine

  plan = engine.batching.plan_batches
  chunk_of = [k for k, c in enumerate(chunks) for _ in c.rendered]

  def grouped(lengths, batch_size, *, secondary, **kwargs):
    secondary = [s * len(chunks) + k for s, k in zip(secondary, chunk_of)]
    return plan(lengths, batch_size, secondary=secondary, **kwargs)

  if on:
    engine.batching.plan_batches = grouped
  try:
    yield
  finally:
    engine.batching.plan_batches = plan


def analysis(args) -> None:
  from robust_prompt.data import mmlu
  from robust_prompt.eval import engine
  from robust_prompt.instructions.io import load_instructions
  from robust_prompt.model.decoder_config import DecoderConfig
  from robust_prompt.model.prompted_decoder import PromptedDecoder

  tmp = tempfile.TemporaryDirectory()
  vocab = _proxy_vocab(pathlib.Path(tmp.name))
  subjects = mmlu.list_subjects(common.MMLU_TEST_DIR.parent)[: args.subjects]
  tasks = {mmlu.task_name(s): mmlu.load_subject(common.MMLU_TEST_DIR.parent, s) for s in subjects}
  instructions = load_instructions([common.REPO_ROOT / "tasks" / "instructions" / "mmlu.jsonl"])
  chunks = engine.plan_chunks(tasks, instructions)
  config = DecoderConfig(vocab_size=32128, bos_token_id=vocab.bos_id)
  print(f"{len(subjects)} MMLU subjects x {len(instructions)} instructions: {len(chunks)} chunks, "
        f"{sum(len(c.examples) for c in chunks)} rows; batch {args.batch_size}")  # fmt: skip
  print("| format | P | buckets | saved positions | eval-step shapes | batches with a prefix |")
  print("| --- | --- | --- | --- | --- | --- |")
  schemes = [(name, SCHEMES[name]) for name in args.schemes]
  for fmt, p, (name, buckets) in itertools.product(args.formats, args.prompt_lengths, schemes):
    model = PromptedDecoder(config, shared_prefix_buckets=buckets)
    settings = engine.evaluate_settings(
      batch_size=args.batch_size, prompt_format=fmt, max_input_length=args.max_input_length
    )
    prompt = np.zeros((p, 8), np.float32) if p else None
    evaluator = engine.Evaluator(model, {}, vocab, settings, prompt=prompt)
    seen = {"all": 0, "saved": 0, "batches": 0, "shared": 0}

    def record(fn, batch, seen=seen, p=p):
      b, t = batch["input_ids"].shape
      n = batch["prefix_ids"].shape[1] + p if "prefix_ids" in batch else 0
      seen["all"] += b * (t + p)
      seen["saved"] += (b - 1) * n
      seen["batches"] += 1
      seen["shared"] += n > 0
      return np.zeros((b, batch["option_ids"].shape[1]), np.float32)

    evaluator._run = record
    for pool in engine.plan_pools(chunks, settings.pool_rows):
      pooled = [chunks[i] for i in pool]
      with _grouped_by_chunk(pooled, args.group_chunks):
        evaluator.score_chunks(pooled, "m")
    print(f"| {fmt} | {p} | {name} | {seen['saved'] / seen['all']:.1%} | {len(evaluator.shapes)} | "
            f"{seen['shared']}/{seen['batches']} |")  # fmt: skip


def timing(args) -> None:
  import jax

  from robust_prompt.eval import engine
  from robust_prompt.model.decoder import Decoder
  from robust_prompt.model.decoder_config import DecoderConfig
  from robust_prompt.model.prompted_decoder import SHARED_PREFIX_BUCKETS, PromptedDecoder

  heads = max(args.hidden // 64, 1)
  config = DecoderConfig(
    vocab_size=32000,
    d_model=args.hidden,
    num_layers=args.layers,
    num_heads=heads,
    num_kv_heads=heads,
    head_dim=args.hidden // heads,
    d_ff=args.hidden * 8 // 3,
    max_position_embeddings=4096,
  )
  params = jax.jit(Decoder(config).init)(
    jax.random.PRNGKey(0), np.ones((1, 1), np.int32), np.ones((1, 1), np.int32)
  )["params"]
  rng = np.random.RandomState(0)
  shared = [1, *rng.randint(3, 32000, args.shared - 1)]
  lengths = rng.randint(args.length - 30, args.length + 31, args.rows)
  rows = [shared + list(rng.randint(3, 32000, n - args.shared)) for n in lengths]
  from robust_prompt import batching

  t = batching.bucket_length(max(lengths), steps_per_octave=4)
  ids, mask = batching.pad_batch(rows, t)
  option_ids = np.tile(np.array([[[319], [350], [315], [360]]], np.int32), (args.rows, 1, 1))
  batch = dict(input_ids=ids, input_mask=mask, option_ids=option_ids,
               option_mask=np.ones_like(option_ids))  # fmt: skip
  p = args.prompt_length
  prompt = rng.normal(0, 0.02, (p, args.hidden)).astype(np.float32) if p else None
  print(f"random Llama H={args.hidden} L={args.layers} N={heads} F={config.d_ff} V=32000; "
        f"B={args.rows}, T={t} (rows {min(lengths)}..{max(lengths)}), {args.shared} shared "
        f"tokens (BOS first), soft prompt P={p}, 4 one-token options; {jax.device_count()} "
        f"device(s), {args.repeats} interleaved runs")  # fmt: skip
  print("| step | buckets | prefix T_s | wall (median, min) | CPU s (median) | speed-up (CPU) |")
  print("| --- | --- | --- | --- | --- | --- |")
  variants = (("off", ()), ("16+x8", SHARED_PREFIX_BUCKETS), ("x16", SCHEMES["x16"]))
  for kind, option in (("options", "sum"), ("generate", 8)):
    runs, outs = [], []
    for name, buckets in variants:
      model = PromptedDecoder(config, shared_prefix_buckets=buckets)
      step = engine.eval_step(model, kind, option)
      plain = batch if kind == "options" else dict(input_ids=ids, input_mask=mask)
      placed = jax.device_put(model.with_shared_prefix(plain, p))
      n = placed["prefix_ids"].shape[1] if "prefix_ids" in placed else 0
      outs.append(np.asarray(step(params, prompt, placed)))  # compiles
      runs.append((name, n, lambda step=step, placed=placed: step(params, prompt, placed)))
    # Interleaved, so that a change in the machine's load hits every variant alike.
    # CPU seconds (all threads) are the work done; wall-clock moves with the machine's load.
    times, cpu = [[] for _ in runs], [[] for _ in runs]
    for _ in range(args.repeats):
      for k, (_, _, run) in enumerate(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(run())
        times[k].append(time.perf_counter() - start)
        cpu[k].append(time.process_time() - start_cpu)
    base = statistics.median(cpu[0])
    for (name, n, _), ts, cs in zip(runs, times, cpu):
      print(f"| {kind} | {name} | {n} | {statistics.median(ts) * 1e3:.0f} ms "
            f"({min(ts) * 1e3:.0f}) | {statistics.median(cs):.2f} | "
            f"{base / statistics.median(cs):.2f}x |")  # fmt: skip
    diff = max(float(np.abs(o.astype(np.float64) - outs[0]).max()) for o in outs[1:])
    print(f"max |diff| of the outputs against off: {diff:.2e}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="part", required=True)
  a = sub.add_parser("analysis")
  a.add_argument("--subjects", type=int, default=20)
  a.add_argument("--batch_size", type=int, default=32)
  a.add_argument("--max_input_length", type=int, default=1024)
  a.add_argument("--formats", nargs="+", default=["raw", "alpaca"])
  a.add_argument("--prompt_lengths", type=int, nargs="+", default=[0, 20])
  a.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
  a.add_argument("--group_chunks", action="store_true", help="the what-if of _grouped_by_chunk")
  t = sub.add_parser("timing")
  t.add_argument("--hidden", type=int, default=256)
  t.add_argument("--layers", type=int, default=4)
  t.add_argument("--rows", type=int, default=16)
  t.add_argument("--length", type=int, default=200)
  t.add_argument("--shared", type=int, default=60)
  t.add_argument("--prompt_length", type=int, default=0)
  t.add_argument("--repeats", type=int, default=9)
  args = parser.parse_args()
  common.cpu_threads()
  start = time.perf_counter()
  analysis(args) if args.part == "analysis" else timing(args)
  print(f"({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
  from robust_prompt import host_memory

  host_memory.reexec_with_huge_pages()
  main()
