"""`robust-prompt train`: train a soft prompt (model frozen) with paraphrase-alignment losses.

  robust-prompt train --model google/flan-t5-small --benchmark mmlu --data_dir data/mmlu \\
    --train_instructions tasks/instructions/mmlu/train.jsonl \\
    --heldout_instructions tasks/instructions/mmlu/unobserved.jsonl \\
    --model_dir runs/flan_small_prompt --num_steps 2000 \\
    --gin_file runs/train_soft_prompt.gin --gin.losses.lambda_sim=1.0

Writes into `--model_dir`: `checkpoints/<step>/` (orbax; rerunning resumes exactly), `prompt.npy`
(the trained `[P, d_model]` prompt, for `eval --prompt`), `config.gin` (the operative config),
`train_instructions.jsonl` (the training pool), `metrics.jsonl` and `tensorboard/`.

Gin names (T5X style: the library functions are wrapped here, the library never imports gin):
`train.*` (`robust_prompt.train.loop.train`: num_steps, seed, num_microbatches, save_every,
keep_checkpoints, log_every), `data.*` (`grouping.GroupedData`: groups_per_batch,
members_per_group, anchor, seed, max_input_length, max_target_length), `losses.*`
(`objective.LossConfig`), `optimizer.*` (`state.build_optimizer`) and `prompt.*` (length, init,
scale, num_vocab_ids, text, path). Explicit flags win over gin. Without `--gin_file`,
`runs/train_soft_prompt.gin` is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from robust_prompt.cli import common, gin_utils
from robust_prompt.cli.gin_utils import UserError

USES_GIN = True
DEFAULT_GIN_FILE = "runs/train_soft_prompt.gin"
TRAIN_INSTRUCTIONS_FILE = "train_instructions.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  common.add_benchmark_arguments(parser)
  parser.add_argument(
    "--train_instructions",
    required=True,
    nargs="+",
    help="the pool of training instructions: JSONL files and/or directories",
  )
  parser.add_argument(
    "--heldout_instructions",
    nargs="+",
    default=None,
    help="instructions held out for evaluation; training refuses any overlap with them",
  )
  parser.add_argument("--model_dir", required=True, help="checkpoints, prompt.npy, logs")
  parser.add_argument(
    "--tasks", nargs="+", default=None, help="task names or globs (default: all covered tasks)"
  )
  parser.add_argument(
    "--num_steps",
    type=common.positive_int,
    default=None,
    help="optimizer steps (gin: train.num_steps)",
  )
  parser.add_argument(
    "--max_examples", type=common.positive_int, default=None, help="first N examples per task"
  )
  parser.add_argument("--seed", type=int, default=None, help="seed (gin: train.seed, data.seed)")
  parser.add_argument(
    "--length_grouping",
    type=common.non_negative_int,
    default=None,
    metavar="N",
    help="sort each N steps' groups by length and pad each batch to its length bucket, as "
    "Hugging Face's group_by_length (one compiled step per bucket; gin: data.length_grouping; "
    "default 0: every batch padded to --max_input_length)",
  )
  common.add_prompt_format_argument(parser, "data.prompt_format")
  common.add_model_arguments(parser)
  # None = "not given": gin decides. --batch_size is G * K rows; --prompt initialises the prompt.
  parser.set_defaults(batch_size=None, max_input_length=None, max_target_length=None)
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


# -- gin -----------------------------------------------------------------------------------------


_CONFIGURABLES: dict | None = None


def configurables() -> dict:
  """Registers the library functions with gin under their short names (once per process)."""
  global _CONFIGURABLES
  if _CONFIGURABLES is None:
    import gin

    from robust_prompt.model import soft_prompt
    from robust_prompt.train import grouping, loop, objective, state

    not_from_gin = [
      "model",
      "frozen_params",
      "data",
      "model_dir",
      "mesh",
      "rules",
      "prompt_length",
      "prompt_init",
      "optimizer",
      "learning_rate_fn",
      "loss_config",
      "write_config",
      "progress",
      "run_meta",
    ]
    _CONFIGURABLES = {
      "train": gin.external_configurable(loop.train, name="train", denylist=not_from_gin),
      "data": gin.external_configurable(
        grouping.GroupedData,
        name="data",
        # run_steps is train.num_steps, passed in, so that the two cannot disagree.
        denylist=["examples", "instructions", "vocab", "model", "run_steps"],
      ),
      "losses": gin.external_configurable(objective.LossConfig, name="losses"),
      "optimizer": gin.external_configurable(state.build_optimizer, name="optimizer"),
      "prompt": gin.external_configurable(soft_prompt.PromptSettings, name="prompt"),
    }
  return _CONFIGURABLES


def _call(name: str, **kwargs):
  """Calls a gin configurable, turning gin's and the library's complaints into UserErrors."""
  try:
    return configurables()[name](**kwargs)
  except ValueError as e:
    message = str(e)
    raise UserError(f"{name}: {message.splitlines()[0] if message else type(e).__name__}") from e


def _gin_value(name: str, default):
  import gin

  try:
    return gin.query_parameter(name)
  except ValueError:
    return default


def _gin_section(prefix: str) -> dict:
  """The gin bindings `prefix.*` in force (e.g. the optimizer's), as plain values."""
  import gin

  out = {}
  for (scope, name), values in gin.config._CONFIG.items():  # noqa: SLF001 - no public listing
    if name.split(".")[-1] == prefix and not scope:
      out.update({k: repr(v) for k, v in values.items()})
  return dict(sorted(out.items()))


def _is_required(name: str) -> bool:
  """Whether a gin file bound `name = %gin.REQUIRED` (and nothing overrode it)."""
  return repr(_gin_value(name, None)) == "%gin.REQUIRED"


# -- run -----------------------------------------------------------------------------------------


def _load_pool(paths, what: str):
  from robust_prompt.instructions.io import load_instructions
  from robust_prompt.instructions.schema import InstructionError

  try:
    return load_instructions(paths)
  except (InstructionError, FileNotFoundError) as e:
    raise UserError(f"{what}: {e}") from e


def _initializer(settings, args, loaded):
  """`(initializer, P)` from gin's `prompt.*`; `--prompt PATH` starts from a trained prompt."""
  import jax
  import numpy as np

  from robust_prompt.model import soft_prompt

  if args.prompt:
    settings = dataclasses.replace(settings, init="from_npy", path=args.prompt)
  if settings.init == "from_npy" and settings.path:
    common.load_prompt(settings.path, loaded.config.d_model)  # a clear error for a bad file
  embedding = None
  if settings.init in ("from_vocab", "from_text"):
    embedding = np.asarray(jax.device_get(loaded.params["token_embedder"]["embedding"]))
  try:
    return soft_prompt.make_initializer(settings, embedding, loaded.vocab.encode)
  except (ValueError, FileNotFoundError) as e:
    raise UserError(f"prompt: {e}") from e


def run(args: argparse.Namespace) -> int:

  from robust_prompt import io_utils
  from robust_prompt.train import grouping

  gin_utils.register_configurables()
  configurables()
  # Without --gin_file the standard recipe applies (test/train_tiny.gin etc. include it too).
  gin_files = args.gin_file or [DEFAULT_GIN_FILE]
  gin_utils.parse_gin(gin_files, args.gin_bindings, args.gin_search_paths)
  if args.num_steps is None and _is_required("train.num_steps"):
    raise UserError(
      "how long to train is required: pass --num_steps N (or --gin.train.num_steps=N)"
    )
  # gin hands a placeholder to external configurables for unset %gin.REQUIRED values: check.
  if _is_required("prompt.text"):
    raise UserError("prompt.text is required by the gin config: pass --gin.prompt.text=\"'...'\"")
  if _is_required("prompt.path") and not args.prompt:
    raise UserError("prompt.path is required by the gin config: pass --prompt PATH")

  # Cheap checks first (directory, instructions, overlap, tasks, data), then the model.
  try:
    model_dir = io_utils.check_writable_dir(args.model_dir)
  except io_utils.NotWritableError as e:
    raise UserError(f"--model_dir: {e}") from e
  pool = _load_pool(args.train_instructions, "--train_instructions")
  if args.heldout_instructions:
    heldout = _load_pool(args.heldout_instructions, "--heldout_instructions")
    try:
      grouping.check_disjoint(pool, heldout)
    except grouping.OverlapError as e:
      raise UserError(str(e)) from e
  selected = common.select_tasks(args)
  covered = [t for t in selected if any(i.applies_to(t) for i in pool)]
  if not covered:
    patterns = sorted({p for i in pool for p in i.tasks})
    raise UserError(
      f"no training instruction applies to the selected task(s) ({', '.join(selected[:5])}); "
      f"the instructions are for {', '.join(patterns[:8])}"
    )
  examples = []
  for task in covered:
    task_examples = common.load_task(args, task)
    examples.extend(task_examples[: args.max_examples] if args.max_examples else task_examples)

  import contextlib

  from robust_prompt import multihost

  # One writer per model_dir (released by the kernel even when the process is killed).
  lock = contextlib.nullcontext()
  if multihost.is_main_process():
    lock = io_utils.DirectoryLock(model_dir, "robust-prompt train")
  try:
    with lock:
      return _train_locked(args, model_dir, pool, covered, examples)
  except io_utils.DirectoryLockedError as e:
    raise UserError(str(e)) from e


def _pool_digest(pool) -> str:
  from robust_prompt.eval import resume

  return resume.digest([i.to_json_dict() for i in pool])


def _check_pool(model_dir, pool) -> None:
  """A resumed run must train on the same pool: refuse before anything is overwritten."""
  from robust_prompt.instructions.io import load_instructions

  path = model_dir / TRAIN_INSTRUCTIONS_FILE
  checkpoints = model_dir / "checkpoints"
  has_steps = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
  if not path.exists() or not has_steps:
    return
  if _pool_digest(load_instructions([path])) != _pool_digest(pool):
    raise UserError(
      f"{model_dir} holds a run trained on another instruction pool ({path}); pass the same "
      "--train_instructions to resume, or train into a new --model_dir"
    )


def _train_locked(args, model_dir, pool, covered, examples) -> int:
  import gin
  import jax

  from robust_prompt import host_memory, multihost
  from robust_prompt.eval import resume
  from robust_prompt.instructions.io import write_instructions
  from robust_prompt.instructions.schema import InstructionError
  from robust_prompt.model import prompted
  from robust_prompt.train import checkpointing

  _check_pool(model_dir, pool)
  # Provenance: the exact training pool, so that evaluations can check they hold it out.
  if multihost.is_main_process():  # one writer on a shared model_dir
    write_instructions(pool, model_dir / TRAIN_INSTRUCTIONS_FILE)

  mesh = common.mesh_from_args(args)
  loaded = common.model_from_args(args, mesh)
  settings = _call("prompt")
  # Explicit flags become gin bindings, so that config.gin records what the run really used.
  flags = {"train.num_steps": args.num_steps, "train.seed": args.seed, "data.seed": args.seed}
  flags["data.length_grouping"] = args.length_grouping
  # A model file's format (models/alpaca_7b.gin: PROMPT_FORMAT = 'alpaca') is the default.
  flags["data.prompt_format"] = args.prompt_format or gin_utils.model_prompt_format(
    "data.prompt_format"
  )
  for flag in ("max_input_length", "max_target_length"):
    flags[f"data.{flag}"] = getattr(args, flag)
  if args.batch_size is not None:
    k = _gin_value("data.members_per_group", 4)
    if args.batch_size % k:
      raise UserError(f"--batch_size {args.batch_size} is G x K rows: not a multiple of K={k}")
    flags["data.groups_per_batch"] = args.batch_size // k
  for name, value in flags.items():
    if value is not None:
      gin.bind_parameter(name, value)
  try:
    model = prompted.for_config(loaded.config)
    data = _call(
      "data",
      examples=examples,
      instructions=pool,
      vocab=loaded.vocab,
      model=model,
      run_steps=_gin_value("train.num_steps", None),
    )
    # Before any rendering: a format the tokenizer cannot apply is named with its file:line.
    source = "--prompt_format" if args.prompt_format else "gin data.prompt_format, or the default"
    common.prompt_formats(pool, data.prompt_format, source, loaded.vocab)
    data.batch(0)  # renders a first batch: instruction/example mismatches surface here
  except ValueError as e:  # InstructionError included: it names the instruction's file:line
    raise UserError(str(e)) from e
  tx, schedule = _call("optimizer")
  loss_config = _call("losses")
  prompt_init, prompt_length = _initializer(settings, args, loaded)
  print(
    f"training a {prompt_length}-vector prompt for {loaded.source} on {len(examples)} examples "
    f"of {len(covered)} task(s) with {len(pool)} training instructions "
    f"(G={data.G} x K={data.K}) -> {model_dir}",
    file=sys.stderr,
  )
  hint = host_memory.thp_hint(jax.default_backend())
  if hint and multihost.is_main_process():
    print(hint, file=sys.stderr)
  try:
    result = _call(
      "train",
      model=model,
      frozen_params=loaded.params,
      data=data,
      model_dir=str(model_dir),
      mesh=mesh,
      prompt_length=prompt_length,
      prompt_init=prompt_init,
      optimizer=tx,
      learning_rate_fn=schedule,
      loss_config=loss_config,
      write_config=gin.operative_config_str,
      progress=not args.no_progress,
      # Everything else that changes the trained prompt: a resumed run must match it all.
      run_meta={
        "model": resume.model_digest(args.model),
        "dtype": str(loaded.config.dtype),
        "instruction_pool": _pool_digest(pool),
        "losses": dataclasses.asdict(loss_config),
        "optimizer": _gin_section("optimizer"),
        "max_examples": args.max_examples,
        # Only when not "raw", so that runs from before prompt formats still resume.
        **({"prompt_format": data.prompt_format} if data.prompt_format != "raw" else {}),
      },
    )
  except (checkpointing.ResumeMismatchError, InstructionError) as e:
    raise UserError(str(e)) from e
  where = f"resumed at step {result.resumed_from}, " if result.resumed_from else ""
  loss = result.metrics.get("loss")
  print(
    f"{where}trained to step {result.step}"
    + (f" (loss {loss:.4f})" if loss is not None else "")
    + f"; prompt -> {model_dir}/prompt.npy",
    file=sys.stderr,
  )
  return 0
