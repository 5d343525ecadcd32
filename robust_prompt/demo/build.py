"""Building the committed demo model: vocabulary, instruction tuning, checks, checkpoint.

`build_model` is what `scripts/build_demo_model.py` runs. It writes our orbax checkpoint
(`checkpoints/orbax_io.save_params`: `params/`, `config.json`, `robust_prompt.json`,
`spiece.model`) and `demo_build.json` beside it: the recipe, the parameter digests (after
`PREFIX_STEPS` steps and at the end), a prefix reference for this machine's CPU kind
(`reproduce`), and the accuracy measured per instruction set right after training (rank
classification with the `eval` engine on freshly generated examples).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable

import jax
import numpy as np

from robust_prompt import io_utils
from robust_prompt.checkpoints import orbax_io
from robust_prompt.demo import assets, reproduce, suite, tuning
from robust_prompt.demo.instructions import SETS, demo_instructions
from robust_prompt.eval import engine
from robust_prompt.model import prompted

PREFIX_STEPS = 5  # the reproducibility test re-runs this many steps and compares the digest
ACCURACY_EXAMPLES = 40  # per task, from the "eval" stream (the demo's own evaluation set)


def accuracy_by_set(
  model_config, params, vocab, num_examples: int = ACCURACY_EXAMPLES, seed: int = 0
) -> dict[str, dict[str, float]]:
  """Rank-classification accuracy per instruction set and task (macro over the set's templates).

  Returns:
    `{set: {task: accuracy, ..., "mean": macro over tasks}}` for `SETS`.
  """
  settings = engine.EvalSettings(batch_size=64, max_input_length=96, max_target_length=8)
  evaluator = engine.Evaluator(prompted.for_config(model_config), params, vocab, settings)
  tasks = {
    suite.task_name(t): suite.lines_to_examples(t, suite.generate_lines(t, num_examples, seed))
    for t in suite.TASKS
  }
  out: dict[str, dict[str, float]] = {}
  for name, instructions in demo_instructions().items():
    per_task: dict[str, list[float]] = {}
    for chunk in engine.plan_chunks(tasks, instructions):
      rows = evaluator.score_chunk(chunk, "demo-t5")
      per_task.setdefault(chunk.task, []).append(float(np.mean([r["correct"] for r in rows])))
    accs = {task: round(float(np.mean(v)), 4) for task, v in per_task.items()}
    accs["mean"] = round(float(np.mean(list(accs.values()))), 4)
    out[name] = accs
  return out


def build_model(
  output_dir: str | os.PathLike | None = None,
  config: tuning.TuneConfig | None = None,
  *,
  progress: bool = True,
  log: Callable[[str], None] = print,
  overwrite: bool = False,
) -> dict:
  """Builds the demo model into `output_dir` (default: the package's assets) and returns the record.

  Raises:
    FileExistsError: `output_dir` already holds a checkpoint and not `overwrite`.
  """
  config = config or tuning.TuneConfig()
  out = pathlib.Path(output_dir) if output_dir else assets.ASSETS_DIR / assets.MODEL_DIR_NAME
  if (out / orbax_io.PARAMS_DIR).exists() and not overwrite:
    raise FileExistsError(f"{out} already holds a checkpoint; pass --overwrite to replace it")
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    spiece = tuning.write_vocabulary(config, pathlib.Path(tmp) / "spiece.model")
    vocab = tuning.load_vocabulary(spiece)
    log(f"vocabulary: {vocab.vocab_size} pieces (trained on observed-template text only)")

    def log_step(step: int, metrics: dict) -> None:
      log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    result = tuning.tune(
      config,
      vocab,
      progress=progress,
      log_every=max(config.num_steps // 10, 1),
      log=log_step,
      digest_at=(PREFIX_STEPS,),
    )
    seconds = time.perf_counter() - t0
    reference = reproduce.prefix_reference(config, vocab, PREFIX_STEPS)
    if reference["digest"] != result.digests[PREFIX_STEPS]:
      raise RuntimeError(
        f"the recipe is not deterministic on this machine: two runs of its first {PREFIX_STEPS} "
        "steps gave different parameters"
      )
    accuracy = accuracy_by_set(result.model_config, result.params, vocab, seed=config.seed)
    for name in SETS:
      log(f"accuracy on {name} instructions: {accuracy[name]['mean']:.3f}")
    orbax_io.save_params(
      out,
      result.params,
      result.model_config,
      vocab,
      source="robust_prompt demo model (scripts/build_demo_model.py)",
      overwrite=overwrite,
    )
  num_params = int(sum(np.size(x) for x in jax.tree.leaves(result.params)))
  record = {
    "recipe": dataclasses.asdict(config),
    "num_params": num_params,
    "vocab_size": vocab.vocab_size,
    "digests": {str(k): v for k, v in result.digests.items()},
    "final_digest": tuning.params_digest(result.params),
    "prefix_steps": PREFIX_STEPS,
    "prefix_references": [reference],
    "final_metrics": result.metrics,
    "accuracy": accuracy,
    "accuracy_examples_per_task": ACCURACY_EXAMPLES,
    "training_seconds": round(seconds, 1),
    "software": {
      "jax": jax.__version__,
      "python": platform.python_version(),
      "machine": platform.machine(),
    },
  }
  io_utils.atomic_write_json(out / assets.BUILD_INFO, record)
  log(f"{num_params} parameters -> {out} ({seconds:.0f} s of training)")
  return record


def add_prefix_reference(
  model_dir: str | os.PathLike | None = None, *, log: Callable[[str], None] = print
) -> dict:
  """Records this machine's CPU kind in `demo_build.json` (the model is not touched).

  Re-runs the recipe's first `PREFIX_STEPS` steps twice (a CPU kind must be deterministic to be
  recorded) and adds the reference, replacing an older one of the same kind.

  Returns:
    The new reference entry.
  """
  directory = pathlib.Path(model_dir) if model_dir else assets.model_dir()
  if not (directory / assets.BUILD_INFO).is_file():
    raise FileNotFoundError(
      f"{directory / assets.BUILD_INFO} not found: --output_dir must be a demo model directory "
      "(one that build_demo_model.py wrote)"
    )
  info = assets.build_info(directory)
  config = tuning.TuneConfig(**info["recipe"])
  vocab = tuning.load_vocabulary(directory / "spiece.model")
  steps = info["prefix_steps"]
  first, second = (reproduce.prefix_reference(config, vocab, steps) for _ in range(2))
  if first["digest"] != second["digest"]:
    raise RuntimeError(f"two runs of the first {steps} steps differ on this machine: not recorded")
  references = info.get("prefix_references", [])
  for ref in references:
    bad = reproduce.checksums_close(first["checksums"], ref["checksums"])
    if ref["steps"] == steps and bad:
      raise RuntimeError(f"this machine's run is not close to the one on {ref['cpu']}: {bad[:5]}")
  info["prefix_references"] = reproduce.with_reference(references, first)
  io_utils.atomic_write_json(directory / assets.BUILD_INFO, info)
  log(f"prefix reference for {first['cpu']} -> {directory / assets.BUILD_INFO}")
  return first
