"""Flags and helpers shared by the sub-commands that run a model (score, eval, train, ...).

`add_model_arguments` gives every such command the same flags; `mesh_from_args`,
`model_from_args` and `load_prompt` turn them into a mesh, a `LoadedModel` and a soft prompt,
converting library errors into `UserError`s that say what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

import numpy as np

from robust_prompt.cli import gin_utils
from robust_prompt.cli.gin_utils import UserError

if TYPE_CHECKING:
  from jax.sharding import Mesh

  from robust_prompt.checkpoints.resolve import LoadedModel

DTYPES = ("float32", "bfloat16")
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_INPUT_LENGTH = 1024
DEFAULT_MAX_TARGET_LENGTH = 256


def _int_at_least(text: str, minimum: int, what: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
  if value < minimum:
    raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
  return value


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  return _int_at_least(text, 0, "an integer >= 0")


def add_benchmark_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
  """Adds --benchmark and --data_dir (the same for eval, train and tasks: `data.sources`)."""
  from robust_prompt.data import sources

  parser.add_argument(
    "--benchmark", required=required, choices=sources.BENCHMARKS, help="which benchmark's tasks"
  )
  parser.add_argument(
    "--data_dir",
    default=None,
    help="benchmark data: a parent folder (mmlu/, bigbench_lite/, bigbench/, jsonl/ inside), the "
    "benchmark's own folder (the MMLU CSV release holding test/, a folder of BIG-bench "
    f"<task>/task.json, a folder of <name>.jsonl), or hf://cais/mmlu; default: ${sources.ENV_VAR}",
  )


def select_tasks(args: argparse.Namespace) -> list[str]:
  """The tasks `--benchmark`, `--data_dir` and `--tasks` select (`data.sources.select_tasks`)."""
  from robust_prompt.data import sources

  try:
    return sources.select_tasks(args.benchmark, args.data_dir, getattr(args, "tasks", None))
  except sources.DataError as e:
    raise UserError(str(e)) from e


def load_task(args: argparse.Namespace, task: str):
  """The examples of one selected task (`data.sources.load_task`), errors as `UserError`s."""
  from robust_prompt.data import sources

  try:
    return sources.load_task(task, args.data_dir, benchmark=args.benchmark)
  except sources.DataError as e:
    raise UserError(str(e)) from e


def add_prompt_format_argument(parser: argparse.ArgumentParser, gin_name: str) -> None:
  """`--prompt_format` (eval and train): how the rendered text is wrapped for the model."""
  from robust_prompt.model.prompt_formats import FORMATS

  parser.add_argument(
    "--prompt_format",
    choices=FORMATS,
    default=None,
    help="wrap the rendered text for the model: raw (as is), alpaca (Alpaca's wrappers: "
    "with-input when an instruction has an input_template), chat (the tokenizer's chat "
    f"template); gin {gin_name}, else the model gin file's PROMPT_FORMAT, else raw. An "
    "instruction file that declares its own prompt_format wins for its instructions (a line on "
    "stderr says which; rows record it; docs/instructions.md)",
  )


def add_model_arguments(parser: argparse.ArgumentParser, *, batch_size: int = DEFAULT_BATCH_SIZE):
  """Adds --model, --vocab, --dtype, --mesh, --prompt, --batch_size and the length limits."""
  group = parser.add_argument_group("model")
  group.add_argument(
    "--model",
    required=True,
    help="a Hugging Face hub id (google/flan-t5-small), a Hugging Face model directory, a T5X "
    "checkpoint directory (.../checkpoint_N; also pass --gin_file models/<size>.gin and --vocab) "
    "or a robust-prompt orbax checkpoint directory",
  )
  group.add_argument(
    "--vocab",
    default=None,
    help="vocabulary: a spiece.model, a tokenizer.json, or a directory holding one (default: the "
    "one stored with the model)",
  )
  group.add_argument(
    "--dtype",
    choices=DTYPES,
    default=None,
    help="activation dtype (parameters stay float32); bfloat16 is faster on TPU/GPU "
    "(default: gin's T5Config.dtype when a model gin file is given, else float32)",
  )
  group.add_argument(
    "--mesh",
    default=None,
    help='device mesh "data=D,model=M" (either may be -1: all remaining devices); default: all '
    "devices on the data axis",
  )
  group.add_argument(
    "--prompt",
    default=None,
    help="a trained soft prompt (.npy of shape [P, d_model]) prepended to every input",
  )
  group.add_argument(
    "--batch_size",
    type=positive_int,
    default=batch_size,
    help=f"GLOBAL batch: inputs per step over all devices, split over the mesh's data axis "
    f"(rounded up to a multiple of it; never more rows than the work needs; default {batch_size})",
  )
  group.add_argument(
    "--max_input_length",
    type=positive_int,
    default=DEFAULT_MAX_INPUT_LENGTH,
    help="inputs longer than this (in tokens, EOS included) are truncated, keeping EOS "
    f"(default {DEFAULT_MAX_INPUT_LENGTH})",
  )
  group.add_argument(
    "--max_target_length",
    type=positive_int,
    default=DEFAULT_MAX_TARGET_LENGTH,
    help=f"targets longer than this are truncated, keeping EOS (default {DEFAULT_MAX_TARGET_LENGTH})",
  )


def mesh_from_args(args: argparse.Namespace) -> Mesh:
  """The `Mesh(data, model)` that `--mesh` asks for (default: every device on `data`)."""
  from robust_prompt import partitioning

  spec = getattr(args, "mesh", None) or _mesh_from_gin(args) or "data=-1,model=1"
  try:
    data, model = partitioning.parse_mesh_spec(spec)
    return partitioning.make_mesh(data, model)
  except ValueError as e:
    raise UserError(f"--mesh {spec!r}: {e}") from e


def _mesh_from_gin(args: argparse.Namespace) -> str | None:
  """A mesh spec from the MESH_DATA / MESH_MODEL macros of gin_configs/mesh/*.gin, if bound."""
  if not (getattr(args, "gin_file", None) or getattr(args, "gin_bindings", None)):
    return None
  data = gin_utils.query_macro("MESH_DATA")
  model = gin_utils.query_macro("MESH_MODEL")
  if data is None and model is None:
    return None
  return f"data={-1 if data is None else data},model={1 if model is None else model}"


def data_axis_size(mesh: Mesh | None) -> int:
  """How many ways the batch is split (the size of the mesh's `data` axis; 1 without a mesh)."""
  if mesh is None:
    return 1
  return int(dict(mesh.shape).get("data", 1))


def model_from_args(args: argparse.Namespace, mesh: Mesh | None = None) -> LoadedModel:
  """Loads `--model` onto `mesh`, with the gin `MODEL_CONFIG` (if any) and `--vocab`/`--dtype`.

  Call after `gin_utils.parse_gin` when the command uses gin (a T5X checkpoint carries no
  architecture: `--gin_file models/t5_1_1_small.gin` supplies it).
  """
  from robust_prompt.checkpoints.resolve import load_model

  config = None
  if getattr(args, "gin_file", None) or getattr(args, "gin_bindings", None):
    config = gin_utils.model_config_from_gin()
  try:
    return load_model(
      args.model,
      mesh=mesh,
      config=config,
      vocab_path=getattr(args, "vocab", None),
      dtype=getattr(args, "dtype", None),
    )
  except (FileNotFoundError, NotADirectoryError, ValueError, KeyError) as e:
    raise UserError(f"could not load --model {args.model!r}: {_message(e)}") from e


def load_prompt(path: str | os.PathLike, d_model: int) -> np.ndarray:
  """Reads a soft prompt `.npy` and checks it fits the model.

  Returns:
    prompt: [P, H] float32 with P >= 1 and H == d_model.

  Raises:
    UserError: the file is missing, is not a `.npy` array, is not 2-D, is empty, or has a width
      other than the model's `d_model`.
  """
  from robust_prompt.model import soft_prompt as prompt_lib

  try:
    value = prompt_lib.load_prompt(path, width=d_model)
  except (FileNotFoundError, ValueError, OSError) as e:
    raise UserError(f"--prompt: {_message(e)}") from e
  if value.shape[0] == 0:
    raise UserError(
      f"--prompt: {path} holds an empty prompt (shape {tuple(value.shape)}); a soft prompt needs "
      "at least one vector: pass the .npy written by `robust-prompt train`"
    )
  if not np.all(np.isfinite(value)):
    raise UserError(f"--prompt: {path} holds NaN or infinite values; the prompt is corrupt")
  return value


def _message(e: BaseException) -> str:
  # KeyError's str() is the repr of its key; the others read well as they are.
  if isinstance(e, KeyError) and e.args:
    return str(e.args[0])
  return str(e)


def prompt_formats(instructions, run_format: str, run_source: str, vocab) -> dict[str, str]:
  """Checks each instruction's prompt format against the model and says which ones differ.

  An instruction's declared format (its record, or its file's defaults) wins over the run's;
  when any instruction is read in a format other than the run's, one line on stderr says which
  (per format and file), so that an explicit `--prompt_format` that did not apply is visible.

  Args:
    instructions: the run's instructions (each once).
    run_format: the run's format; `run_source` says where it came from (for the message).
    vocab: the model's vocabulary (its `tokenizer_config` holds the chat template).

  Returns:
    Instruction id -> the format it is read in.

  Raises:
    UserError: an instruction's format cannot be applied (e.g. "chat" without a chat template),
      naming the instruction's file:line.
  """
  import sys

  from robust_prompt.instructions.render import check_prompt_formats
  from robust_prompt.instructions.schema import InstructionError

  try:
    formats = check_prompt_formats(
      instructions, run_format, getattr(vocab, "tokenizer_config", None)
    )
  except InstructionError as e:
    raise UserError(str(e)) from e
  others: dict[tuple[str, str], list[str]] = {}
  for instruction in instructions:
    fmt = formats[instruction.id]
    if fmt != run_format:
      others.setdefault((fmt, instruction.file), []).append(instruction.id)
  if others:
    kept = sum(f == run_format for f in formats.values())
    declared = "; ".join(
      f"{fmt!r} for {len(ids)} from {file} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
      for (fmt, file), ids in sorted(others.items())
    )
    print(
      f"prompt format: {run_format!r} ({run_source}) for {kept} instruction(s); declared by "
      f"their instruction files: {declared} (results rows: prompt_format)",
      file=sys.stderr,
    )
  return formats
