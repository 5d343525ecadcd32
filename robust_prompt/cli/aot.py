"""`aot`: check ahead of time that a model size's train and eval steps compile on a mesh, and fit.

    python -m robust_prompt.cli.aot --gin_file models/flan_t5_xxl.gin --mesh data=2,model=8

prints the parameter memory on one device vs. per device, and per step the compile time and the
per-device argument / temporary / output bytes of `compiled.memory_analysis()`. No weights are
loaded or allocated (abstract shapes only, see `robust_prompt/aot.py`). By default the mesh is made
of fake CPU devices (as many as it needs), so this runs on a laptop; `--real_devices` compiles for
the accelerators of the machine instead (e.g. on one TPU VM host, for exact memory figures).

The train step is compiled under the model config's rematerialisation policy (gin
`T5Config.remat_policy` / `DecoderConfig.remat_policy`, or --remat_policy): "none" keeps every
activation for the backward pass, "full" recomputes each layer from its input, "dots" keeps only
the projections' matmul outputs. --compare_remat compiles the train step again under the other
policies and prints their peaks side by side, e.g. the saving of the XXL training configuration:

    python -m robust_prompt.cli.aot --gin_file experiments/train_alignment_prompt_flan_t5_xxl.gin \
      --mesh data=2,model=8 --groups 8 --num_microbatches 1 --compare_remat
"""

from __future__ import annotations

import argparse
import json
import sys

from robust_prompt.cli import gin_utils
from robust_prompt.cli.common import positive_int
from robust_prompt.cli.gin_utils import UserError

USES_GIN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--mesh", default="data=2,model=4", help="mesh sizes 'data=D,model=M' (default data=2,model=4)"
  )
  parser.add_argument(
    "--real_devices",
    action="store_true",
    help="compile for this machine's devices instead of fake CPU devices",
  )
  parser.add_argument(
    "--steps", default="train,eval", help="comma-separated steps to compile: train, eval"
  )
  # Unset (None) sizes come from the same gin files `train` and `eval` read (e.g.
  # --gin_file runs/train_soft_prompt.gin): data.*, train.num_microbatches, prompt.length,
  # evaluate.*; the optimizer and the losses always come from gin (optimizer.*, losses.*).
  sizes = (
    ("--groups", "G: groups per train batch (gin data.groups_per_batch; default 8)"),
    ("--members", "K: members per group (gin data.members_per_group; default 4)"),
    ("--eval_batch", "rows per eval batch (gin evaluate.batch_size; default 32)"),
    ("--input_length", "T (gin data.max_input_length; default 512)"),
    ("--target_length", "S, train targets (gin data.max_target_length; default 32)"),
    ("--num_options", "O (default 4)"),
    ("--option_length", "S_opt (default 16)"),
    ("--prompt_length", "P (gin prompt.length; default 100)"),
    ("--num_microbatches", "gradient accumulation (gin train.num_microbatches; default 1)"),
  )
  for flag, help_text in sizes:
    parser.add_argument(flag, type=positive_int, default=None, help=help_text)
  parser.add_argument(
    "--score_mode", default=None, help="rank-classification mode (gin evaluate.score_mode; sum)"
  )
  parser.add_argument(
    "--device_memory_gib", type=float, default=None, help="say whether each step fits this size"
  )
  parser.add_argument(
    "--remat_policy",
    default=None,
    help="rematerialisation of the train step's layers: none, full or dots (default: the gin "
    "model config's remat_policy, else none)",
  )
  parser.add_argument(
    "--compare_remat",
    action="store_true",
    help="also compile the train step under the other remat policies (none, full, dots) and "
    "print each one's peak per device beside the configured one's (one more compile each)",
  )
  parser.add_argument("--json", default=None, help="also write the report as JSON to this path")


def _setup_devices(data: int, model: int, real: bool) -> None:
  """Fake CPU devices must be requested before jax creates any backend."""
  import jax

  if real:
    return
  if data < 1 or model < 1:
    raise UserError("--mesh needs explicit sizes (no -1) with fake devices; or pass --real_devices")
  try:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", data * model)
  except RuntimeError:
    # Backends already exist (e.g. called in-process after other jax work): use what is there.
    pass


# StepShapes field -> (flag, gin name that train/eval read, default).
_SIZES = {
  "groups": ("groups", "data.groups_per_batch", 8),
  "members": ("members", "data.members_per_group", 4),
  "eval_batch": ("eval_batch", "evaluate.batch_size", 32),
  "input_length": ("input_length", "data.max_input_length", 512),
  "target_length": ("target_length", "data.max_target_length", 32),
  "num_options": ("num_options", None, 4),
  "option_length": ("option_length", None, 16),
  "prompt_length": ("prompt_length", "prompt.length", 100),
  "num_microbatches": ("num_microbatches", "train.num_microbatches", 1),
}


def _sizes(args: argparse.Namespace) -> dict:
  """Step sizes: explicit flags, else the train/eval gin bindings, else the defaults."""
  from robust_prompt.cli import train as train_cli

  out = {}
  for field, (flag, gin_name, default) in _SIZES.items():
    value = getattr(args, flag)
    if value is None and gin_name is not None:
      value = train_cli._gin_value(gin_name, None)
    out[field] = default if value is None else int(value)
  return out


def run(args: argparse.Namespace) -> int:
  from robust_prompt import partitioning

  try:
    data, model_size = partitioning.parse_mesh_spec(args.mesh)
  except ValueError as e:
    raise UserError(str(e)) from e
  _setup_devices(data, model_size, args.real_devices)
  from robust_prompt.cli import eval as eval_cli
  from robust_prompt.cli import train as train_cli

  gin_utils.register_configurables()
  train_cli.configurables()  # the names train and eval gin files bind must exist
  eval_cli.configured_settings()
  gin_utils.parse_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
  config = gin_utils.model_config_from_gin()
  if config is None:
    raise UserError(
      "no model architecture: pass a model gin file, e.g. --gin_file models/flan_t5_xl.gin"
    )
  import jax

  from robust_prompt import aot

  try:
    mesh = partitioning.make_mesh(data, model_size)
  except ValueError as e:
    raise UserError(
      f"{e} ({jax.device_count()} {jax.devices()[0].platform} device(s) here; drop "
      "--real_devices to use fake CPU devices)"
    ) from e
  from robust_prompt.cli import train as train_cli
  from robust_prompt.model import remat

  if args.remat_policy is not None:
    try:
      config = config.replace(remat_policy=remat.check_policy(args.remat_policy, "--remat_policy"))
    except ValueError as e:
      raise UserError(str(e)) from e
  tx, _ = train_cli._call("optimizer")
  loss_config = train_cli._call("losses")
  shapes = aot.StepShapes(**_sizes(args))
  steps = [s.strip() for s in args.steps.split(",") if s.strip()]
  score_mode = args.score_mode or train_cli._gin_value("evaluate.score_mode", "sum")
  try:
    report = aot.run_check(
      config,
      mesh,
      shapes,
      steps=steps,
      tx=tx,
      loss_config=loss_config,
      score_mode=score_mode,
      compare_remat=remat.POLICIES if args.compare_remat else (),
    )
  except ValueError as e:
    raise UserError(str(e)) from e
  print(aot.format_report(report, args.device_memory_gib))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(aot.report_dict(report), f, indent=2)
  return 0


def main(argv: list[str] | None = None) -> int:
  """`python -m robust_prompt.cli.aot ...` (the same flags as a `robust-prompt` sub-command)."""
  argv, bindings = gin_utils.split_gin_bindings(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog="python -m robust_prompt.cli.aot", description=__doc__)
  add_arguments(parser)
  gin_utils.add_gin_arguments(parser)
  args = parser.parse_args(argv)
  args.gin_bindings = bindings
  try:
    return run(args)
  except UserError as e:
    print(f"aot: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
