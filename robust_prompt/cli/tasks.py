"""`robust-prompt tasks`: the tasks, their instruction counts per split and their example counts.

  robust-prompt tasks --data_dir ../shared/data
  robust-prompt tasks --benchmark mmlu --data_dir D --instructions my.jsonl --format json

Stays fast: it reads the data files and instruction collections only (no jax, no tensorflow).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from robust_prompt.cli.gin_utils import UserError

FORMATS = ("table", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from robust_prompt.data import sources

  parser.add_argument(
    "--benchmark",
    choices=sources.BENCHMARKS,
    action="append",
    help="benchmark to list (repeatable; default: every benchmark found in the data directory)",
  )
  parser.add_argument(
    "--data_dir",
    default=None,
    help=f"data directory (default: ${sources.ENV_VAR}); holds mmlu/, bigbench_lite/, jsonl/ ...",
  )
  parser.add_argument(
    "--instructions",
    nargs="+",
    default=None,
    metavar="PATH",
    help="instruction files or folders (default: the shipped collection, tasks/instructions)",
  )
  parser.add_argument("--format", choices=FORMATS, default="table", help="output format")


def _benchmarks(requested, data_dir) -> list[str]:
  from robust_prompt.data import sources

  if requested:
    return list(dict.fromkeys(requested))
  found = []
  for benchmark in sources.BENCHMARKS:
    try:
      sources.benchmark_dir(benchmark, data_dir)
      found.append(benchmark)
    except sources.DataError:
      continue
  if not found:
    raise UserError(
      f"no benchmark data found in {sources.resolve_data_dir(data_dir)} (expected sub-folders "
      f"{', '.join(sources.BENCHMARKS)}); pass --benchmark to see what is expected"
    )
  return found


def collect(benchmarks, data_dir, instructions) -> tuple[list[dict], list[dict], list[str]]:
  """Returns (pair rows, per-task rows, notes about missing tasks)."""
  from robust_prompt import seqio_tasks
  from robust_prompt.data import sources
  from robust_prompt.instructions.io import instructions_for_task

  pairs, per_task, notes = [], [], []
  for benchmark in benchmarks:
    for info in sources.list_tasks(benchmark, data_dir):
      if not info.available:
        notes.append(info.problem)
        per_task.append({"task": info.name, "benchmark": benchmark, "missing": info.problem})
        continue
      n = len(sources.load_task(info.name, data_dir, benchmark=benchmark))
      applicable = instructions_for_task(instructions, info.name)
      counts = Counter(i.split for i in applicable)
      per_task.append(
        {
          "task": info.name,
          "benchmark": benchmark,
          "n_examples": n,
          "observed": counts["observed"],
          "unobserved": counts["unobserved"],
        }
      )
      for instruction in applicable:
        pairs.append(
          {
            "task": info.name,
            "benchmark": benchmark,
            "split": instruction.split,
            "instruction_id": instruction.id,
            "source": instruction.source,
            "n_examples": n,
            "seqio_task": seqio_tasks.task_name(
              benchmark, info.name, instruction.split, instruction.id
            ),
            "seen_by": list(instruction.seen_by),
          }
        )
  return pairs, per_task, notes


def format_table(per_task: list[dict]) -> str:
  header = ("task", "benchmark", "examples", "observed", "unobserved")
  rows = [
    (r["task"], r["benchmark"], "missing", "-", "-")
    if "missing" in r
    else (r["task"], r["benchmark"], str(r["n_examples"]), str(r["observed"]), str(r["unobserved"]))
    for r in per_task
  ]
  present = [r for r in per_task if "missing" not in r]
  total = (
    f"{len(present)} tasks",
    "",
    str(sum(r["n_examples"] for r in present)),
    str(sum(r["observed"] for r in present)),
    str(sum(r["unobserved"] for r in present)),
  )
  widths = [max(len(row[i]) for row in [header, *rows, total]) for i in range(len(header))]

  def line(row):
    cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
    return "  ".join(cells).rstrip()

  rule = "  ".join("-" * w for w in widths)
  return "\n".join([line(header), rule, *map(line, rows), rule, line(total)])


def run(args: argparse.Namespace) -> int:
  from robust_prompt.data.example import DataError
  from robust_prompt.instructions.io import default_instruction_dir, load_instructions
  from robust_prompt.instructions.schema import InstructionError

  try:
    instructions = load_instructions(args.instructions or [default_instruction_dir()])
    benchmarks = _benchmarks(args.benchmark, args.data_dir)
    pairs, per_task, notes = collect(benchmarks, args.data_dir, instructions)
  except (DataError, InstructionError) as e:
    raise UserError(str(e)) from None
  if args.format == "json":
    print(json.dumps(pairs, indent=1, ensure_ascii=False))
  else:
    print(format_table(per_task))
    print("(observed / unobserved: number of instructions per split)")
  for note in notes:
    print(f"note: skipped: {note}", file=sys.stderr)
  return 0
