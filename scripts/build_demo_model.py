"""Rebuilds the demo model committed under robust_prompt/demo/assets/model/, bit for bit.

  python scripts/build_demo_model.py --overwrite            # replaces the committed model
  python scripts/build_demo_model.py --output_dir /tmp/m    # builds a copy elsewhere

Trains a SentencePiece vocabulary on observed-template text, instruction-tunes a tiny T5 from
scratch on the toy suite's observed templates (robust_prompt/demo/tuning.py, fixed seeds, one CPU
device), measures its accuracy per instruction set and saves our orbax checkpoint with
`demo_build.json` (recipe, parameter digests, accuracies) beside it. Compare `final_digest` with
the committed one to check a rebuild is identical (same jax/XLA version and CPU kind).

  python scripts/build_demo_model.py --add_prefix_reference # records this CPU kind, model untouched

XLA's float results depend on the CPU's instruction set; `--add_prefix_reference` re-runs the
first steps of the recipe here and records their digest for this CPU kind in `demo_build.json`
(after checking they agree to float tolerance with the kinds already recorded), so that the
reproducibility test checks bit-identity on this kind too (robust_prompt/demo/reproduce.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# One CPU device, whatever the machine offers: the recipe's numbers are defined on CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv: list[str] | None = None) -> int:
  from robust_prompt.demo import build, tuning

  defaults = tuning.TuneConfig()
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output_dir", default=None, help="default: the package's assets/model")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
  parser.add_argument("--seed", type=int, default=defaults.seed)
  parser.add_argument("--num_steps", type=int, default=defaults.num_steps)
  parser.add_argument("--no_progress", action="store_true")
  parser.add_argument(
    "--add_prefix_reference",
    action="store_true",
    help="record this CPU kind's prefix digest in the model's demo_build.json; no training",
  )
  args = parser.parse_args(argv)
  if args.add_prefix_reference:
    try:
      build.add_prefix_reference(args.output_dir)
    except (FileNotFoundError, RuntimeError) as e:
      print(f"build_demo_model: error: {e} (demo_build.json left as it was)", file=sys.stderr)
      return 1
    return 0
  config = dataclasses.replace(defaults, seed=args.seed, num_steps=args.num_steps)
  try:
    build.build_model(
      args.output_dir, config, progress=not args.no_progress, overwrite=args.overwrite
    )
  except FileExistsError as e:
    print(f"build_demo_model: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
