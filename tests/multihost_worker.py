"""One process of the multi-host equivalence test (tests/test_multihost.py); also runnable alone.

    python tests/multihost_worker.py --out DIR --num_processes 1 --local_devices 8
    python tests/multihost_worker.py --out DIR --num_processes 2 --process_id I \
        --coordinator 127.0.0.1:PORT --local_devices 4

Runs, on a (data=4, model=2) mesh over all processes' CPU devices, a tiny T5 through what a
multi-host run does, every batch assembled from HOST-LOCAL rows (each process builds only the rows
that land on its devices):

1. teacher-forced scoring of hand-made rows (`multihost.host_local_to_global`, per-row results
   gathered across processes with `multihost.to_host`);
2. the real training loop (`train.loop.train`: grouped batches built per process, CE + alignment +
   KL with a group straddling the processes, async orbax checkpoints, process-0 logs);
3. the last checkpoint restored by all processes together;
4. the real eval engine (`eval.engine.evaluate`) with the trained prompt: ranked multiple-choice
   and greedy generative chunks, results.jsonl and reports from process 0.

Process 0 writes `result.npz` (and `main_only.txt` through `multihost.write_text_main`); the test
compares the 2-process outputs with a 1-process run.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True, help="output directory (shared by the processes)")
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--coordinator", default=None, help="host:port of process 0")
  p.add_argument("--local_devices", type=int, default=8, help="fake CPU devices of this process")
  p.add_argument("--steps", type=int, default=3, help="prompt-tuning steps")
  p.add_argument("--timeout", type=int, default=60, help="jax.distributed start-up timeout (s)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  # Device count and collectives must be fixed before jax creates its CPU client.
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.local_devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax

  if args.num_processes > 1:
    # CPU collectives across processes go through gloo (TCP); the default implementation only
    # works inside one process.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from robust_prompt import distributed

    distributed.maybe_initialize(
      distributed.DistributedSpec(
        mode="on",
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=args.timeout,
      )
    )
  try:
    run(args)
  finally:
    if args.num_processes > 1:
      jax.distributed.shutdown()
  return 0


def make_rows(row_ids, length: int, vocab: int, seed: int):
  """Deterministic token rows, each a function of its GLOBAL row id only (so any process can
  build any subset of rows): `(ids [R, length], mask [R, length])`."""
  import numpy as np

  ids = np.zeros((len(row_ids), length), np.int32)
  mask = np.zeros((len(row_ids), length), np.int32)
  for r, row in enumerate(row_ids):
    rng = np.random.default_rng([seed, int(row)])
    n = int(rng.integers(2, length + 1))
    ids[r, : n - 1] = rng.integers(2, vocab, n - 1)
    ids[r, n - 1] = 1  # EOS
    mask[r, :n] = 1
  return ids, mask


def run(args: argparse.Namespace) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import seqio

  from robust_prompt import multihost, partitioning
  from robust_prompt.data.example import Example
  from robust_prompt.eval import engine
  from robust_prompt.instructions.schema import Instruction
  from robust_prompt.model.config import T5Config
  from robust_prompt.model.prompted_t5 import PromptedT5
  from robust_prompt.model.t5 import T5
  from robust_prompt.train import checkpointing, grouping, loop, metrics_log, objective
  from robust_prompt.train import state as state_lib

  assert jax.device_count() == 8, jax.devices()
  config = T5Config(
    vocab_size=300, d_model=16, num_heads=4, head_dim=4, d_ff=32,
    num_encoder_layers=2, num_decoder_layers=2,
  )  # fmt: skip
  model = T5(config)
  prompted_model = PromptedT5(config)
  mesh = partitioning.make_mesh(data=4, model=2)
  rules = partitioning.DEFAULT_RULES
  # Identical host-side init on every process, then each device receives only its slice.
  ids = jnp.ones((1, 4), jnp.int32)
  host_params = jax.device_get(
    partitioning.unbox(model.init(jax.random.PRNGKey(0), ids, ids, ids, ids))["params"]
  )
  params = partitioning.place_params(host_params, partitioning.model_param_shardings(model, mesh))

  B, T, S, P = 8, 12, 5, 3
  rows = multihost.process_rows(mesh, B)
  mine = range(rows.start, rows.stop)  # the global row ids this process builds
  in_ids, in_mask = make_rows(mine, T, config.vocab_size, seed=1)
  tgt_ids, tgt_mask = make_rows(mine, S, config.vocab_size, seed=2)
  local = {
    "input_ids": in_ids, "input_mask": in_mask, "target_ids": tgt_ids, "target_mask": tgt_mask,
  }  # fmt: skip
  batch = multihost.host_local_to_global(local, mesh, B)
  out: dict[str, np.ndarray] = {
    "rows_" + str(jax.process_index()): np.asarray([rows.start, rows.stop])
  }

  with partitioning.mesh_context(mesh, rules):
    # 1. Sharded forward pass: per-row scores stay split over `data` until gathered.
    score = jax.jit(lambda p, b: prompted_model.target_scores(p, None, b)[0])
    scores = score(params, batch)
    out["scores"] = multihost.to_host(jax.block_until_ready(scores))

  # 2. The real training loop: host-local grouped batches (G=3 groups of K=4 rows, so group 1
  #    straddles the two processes), async orbax checkpoints written by all processes,
  #    metrics.jsonl / prompt.npy / config.gin by process 0.
  examples = [
    Example(
      id=f"toy:mc:{i}", task="toy:mc", fields={"question": f"What is {i} + {i}?"},
      options=(str(2 * i), str(2 * i + 1), "zero"), answer=0, correct=(0,),
    )
    for i in range(6)
  ]  # fmt: skip
  instructions = [
    Instruction(
      id=f"ins_{j}", tasks=("toy:*",), template=f"Variant {j}: {{question}}\n{{options}}",
      options_format="letters", answer_space="letters",
      split="observed" if j == 0 else "unobserved", source="human",
    )
    for j in range(4)
  ]  # fmt: skip
  data = grouping.GroupedData(
    examples, instructions, seqio.ByteVocabulary(), groups_per_batch=3, members_per_group=4,
    max_input_length=64, max_target_length=4,
  )  # fmt: skip
  train_rows = multihost.process_rows(mesh, data.batch_size)
  if jax.process_count() == 2:  # process 1 builds rows 6:12, i.e. half of group 1 and group 2
    assert train_rows == slice(6 * jax.process_index(), 6 * jax.process_index() + 6), train_rows
  tx = state_lib.make_optimizer("adam", 0.1)
  model_dir = os.path.join(args.out, "train")
  result = loop.train(
    model=prompted_model, frozen_params=params, data=data, model_dir=model_dir, mesh=mesh, rules=rules,
    num_steps=args.steps, prompt_length=P, optimizer=tx,
    loss_config=objective.LossConfig(lambda_sim=0.5, lambda_kl=0.5), save_every=args.steps,
    log_every=1, write_config=lambda: "# operative config\n", progress=False,
  )  # fmt: skip
  out["prompt"] = result.prompt

  # 3. Read the last checkpoint back, all processes together.
  with partitioning.mesh_context(mesh, rules):
    abstract = jax.eval_shape(
      lambda r: state_lib.init_state(r, tx, P, config.d_model), jax.random.PRNGKey(0)
    )
    state_sh = state_lib.state_shardings(abstract, tx, mesh, rules)
  ckpt = checkpointing.Checkpointer(model_dir, save_every=args.steps, asynchronous=False)
  try:
    target = state_lib.abstract_state(tx, P, config.d_model, state_sh)
    restored = ckpt.restore(ckpt.latest_step(), target)
  finally:
    ckpt.close()
  out["restored_prompt"] = multihost.to_host(restored.params["prompt"])
  out["restored_step"] = np.asarray(multihost.to_host(restored.step))

  # 4. The real eval engine with the trained prompt: ranked multiple-choice chunks and greedy
  #    generative chunks, results.jsonl and the reports written by process 0.
  gen_examples = [
    Example(id=f"toy:gen:{i}", task="toy:gen", fields={"input": f"echo {i}"}, targets=(f"{i}",))
    for i in range(5)
  ]
  eval_instructions = [
    Instruction("mc_eval", ("toy:mc",), "Q: {question}\n{options}", "letters", "letters",
                "unobserved", "human"),
    Instruction("gen_eval", ("toy:gen",), "Repeat: {input}", "none", "option_text",
                "unobserved", "human"),
  ]  # fmt: skip
  settings = engine.evaluate_settings(
    batch_size=8, max_input_length=64, max_target_length=8, max_decode_length=4
  )
  chunks = engine.plan_chunks({"toy:mc": examples, "toy:gen": gen_examples}, eval_instructions)
  evaluator = engine.Evaluator(
    prompted_model, params, seqio.ByteVocabulary(), settings, mesh=mesh, prompt=result.prompt
  )
  engine.evaluate(
    evaluator, chunks, os.path.join(args.out, "eval"), model_name="tiny",
    run_fingerprint=engine.fingerprint(model="tiny", chunks=chunks, settings=settings),
    progress=False,
  )  # fmt: skip

  rows_all = multihost.to_host(
    multihost.host_local_to_global({"r": np.asarray(list(mine))}, mesh, B)["r"]
  )
  out["row_ids"] = rows_all
  multihost.sync("worker-done")
  if multihost.is_main_process():
    logged = metrics_log.read_metrics(model_dir)
    out["losses"] = np.asarray([[m[k] for k in ("loss", "ce", "align", "kl")] for m in logged])
    out["logged_steps"] = np.asarray([m["step"] for m in logged])
    np.savez(os.path.join(args.out, "result.npz"), **out)
  multihost.write_text_main(os.path.join(args.out, "main_only.txt"), str(jax.process_index()))
  multihost.sync("worker-written")
  print(f"process {jax.process_index()}: done", flush=True)


if __name__ == "__main__":
  sys.exit(main())
