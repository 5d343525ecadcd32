"""`aot`: check ahead of time that a model size's train and eval steps compile on a mesh, and fit.

    python -m robust_prompt.cli.aot --gin_file models/flan_t5_xxl.gin --mesh data=2,model=8

prints the parameter memory on one device vs. per device, and per step the compile time and the
per-device argument / temporary / output bytes of `compiled.memory_analysis()`. No weights are
loaded or allocated (abstract shapes only, see `robust_prompt/aot.py`). By default the mesh is made
of fake CPU devices (as many as it needs), so this runs on a laptop; `--real_devices` compiles for
the accelerators of the machine instead (e.g. on one TPU VM host, for exact memory figures).
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
  parser.add_argument("--groups", type=positive_int, default=8, help="G: groups per train batch")
  parser.add_argument("--members", type=positive_int, default=4, help="K: members per group")
  parser.add_argument("--eval_batch", type=positive_int, default=32, help="rows per eval batch")
  parser.add_argument("--input_length", type=positive_int, default=512, help="T")
  parser.add_argument("--target_length", type=positive_int, default=32, help="S (train)")
  parser.add_argument("--num_options", type=positive_int, default=4, help="O")
  parser.add_argument("--option_length", type=positive_int, default=16, help="S_opt")
  parser.add_argument("--prompt_length", type=positive_int, default=100, help="P")
  parser.add_argument(
    "--num_microbatches", type=positive_int, default=1, help="gradient accumulation (train)"
  )
  parser.add_argument("--optimizer", default="adafactor", help="prompt optimizer (train step)")
  parser.add_argument("--score_mode", default="sum", help="rank-classification mode (eval step)")
  parser.add_argument(
    "--device_memory_gib", type=float, default=None, help="say whether each step fits this size"
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


def run(args: argparse.Namespace) -> int:
  from robust_prompt import partitioning

  try:
    data, model_size = partitioning.parse_mesh_spec(args.mesh)
  except ValueError as e:
    raise UserError(str(e)) from e
  _setup_devices(data, model_size, args.real_devices)
  gin_utils.register_configurables()
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
  shapes = aot.StepShapes(
    groups=args.groups,
    members=args.members,
    eval_batch=args.eval_batch,
    input_length=args.input_length,
    target_length=args.target_length,
    num_options=args.num_options,
    option_length=args.option_length,
    prompt_length=args.prompt_length,
    num_microbatches=args.num_microbatches,
  )
  steps = [s.strip() for s in args.steps.split(",") if s.strip()]
  try:
    report = aot.run_check(
      config, mesh, shapes, steps=steps, optimizer=args.optimizer, score_mode=args.score_mode
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
