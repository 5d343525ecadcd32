"""`robust-prompt demo`: the whole method on a toy suite, offline, on a laptop CPU.

  robust-prompt demo [--output_dir demo_out] [--quick]

Evaluates the committed tiny instruction-tuned T5 on observed vs held-out unobserved instructions,
trains a soft prompt with the paraphrase-alignment loss on *training* paraphrases, evaluates
again, and writes one report (`summary.json`, `report.html`) with before and after side by side.
See docs/demo.md. Everything it shows is measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from robust_prompt.cli import common
from robust_prompt.cli.gin_utils import UserError

DEFAULT_OUTPUT_DIR = "robust_prompt_demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--output_dir",
    default=DEFAULT_OUTPUT_DIR,
    help=f"where the suite, both evaluations, the prompt and the report go (default "
    f"./{DEFAULT_OUTPUT_DIR})",
  )
  parser.add_argument(
    "--quick",
    action="store_true",
    help="reduced sizes (a few examples, a few training steps): a smoke test, numbers are noise",
  )
  parser.add_argument(
    "--model",
    default=None,
    help="evaluate another robust-prompt checkpoint directory instead of the bundled demo model "
    "(it must know the toy tasks, e.g. one rebuilt by scripts/build_demo_model.py)",
  )
  parser.add_argument("--seed", type=int, default=None, help="suite and training seed (default 0)")
  parser.add_argument(
    "--num_steps", type=common.positive_int, default=None, help="prompt-training steps"
  )
  parser.add_argument(
    "--eval_examples", type=common.positive_int, default=None, help="evaluation examples per task"
  )
  parser.add_argument(
    "--lambda_sim",
    type=float,
    default=None,
    help="weight of the alignment loss (0 = plain prompt tuning; default 1.0)",
  )
  parser.add_argument(
    "--tasks",
    nargs="+",
    default=None,
    help="only these toy tasks (toy_sentiment, toy_bigger, toy_parity, toy_longer, toy_topic, "
    "toy_capital, toy_entailment; default: all)",
  )
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
  from robust_prompt import io_utils
  from robust_prompt.demo import pipeline

  settings = pipeline.QUICK if args.quick else pipeline.DemoSettings()
  overrides = {
    k: getattr(args, k)
    for k in ("seed", "num_steps", "eval_examples", "lambda_sim")
    if getattr(args, k) is not None
  }
  if overrides.get("lambda_sim", 0) < 0:
    raise UserError(f"--lambda_sim must be >= 0, got {overrides['lambda_sim']}")
  if args.tasks:
    overrides["tasks"] = tuple(_task_names(args.tasks))
  settings = dataclasses.replace(settings, **overrides)
  try:
    io_utils.check_writable_dir(args.output_dir)
  except io_utils.NotWritableError as e:
    raise UserError(f"--output_dir: {e}") from e
  try:
    pipeline.run_demo(
      args.output_dir,
      settings,
      model_dir=args.model,
      progress=not args.no_progress,
      log=lambda message: print(message, file=sys.stderr, flush=True),
    )
  except FileNotFoundError as e:
    raise UserError(str(e)) from e
  except pipeline.resume.FingerprintMismatch as e:
    raise UserError(
      f"{e} (the output directory holds a demo run with other settings: pass another "
      "--output_dir or delete it)"
    ) from e
  return 0


def _task_names(names: list[str]) -> list[str]:
  """Toy task names (`toy_parity` or `jsonl:toy_parity`), checked against the suite."""
  from robust_prompt.demo import suite

  out = []
  for name in names:
    stem = name.split(":", 1)[1] if name.startswith("jsonl:") else name
    if stem not in suite.TASKS:
      raise UserError(f"--tasks: unknown toy task {name!r}; the suite has {', '.join(suite.TASKS)}")
    if stem not in out:
      out.append(stem)
  return out
