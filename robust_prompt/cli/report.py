"""`robust-prompt report`: summary.json and report.md/html from a per-instruction CSV.

For accuracies produced elsewhere (another toolkit, a paper's table, an earlier eval):

  robust-prompt report --per_instruction per_instruction.csv --output_dir out/ \\
      [--instructions tasks/instructions] [--results results.jsonl] \\
      [--macro unweighted|weighted] [--on_duplicate error|first|mean]

The CSV has the columns model,task,instruction_id,split,source,n_examples,accuracy,prompt_format
(source, n_examples and prompt_format optional; accuracy a fraction in [0, 1]). Several models give one report section each.
Without `--results` the gap's interval resamples instructions only (`ci_method` says so);
with it, tasks found in the results get the paired instruction+example bootstrap and the
consistency metrics.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

import numpy as np

from robust_prompt.cli.common import positive_int
from robust_prompt.cli.gin_utils import UserError

OUTPUT_FILES = ("summary.json", "per_instruction.csv", "report.md", "report.html")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--per_instruction",
    required=True,
    help="CSV with columns model,task,instruction_id,split,source,n_examples,accuracy,"
    "prompt_format (source, n_examples, prompt_format optional; accuracy in [0, 1]; split "
    "observed|unobserved)",
  )
  parser.add_argument("--output_dir", required=True, help="where the summary and report go")
  parser.add_argument(
    "--instructions",
    nargs="+",
    default=[],
    help="instruction JSONL files or directories, to show the worst instructions' text",
  )
  parser.add_argument(
    "--results",
    nargs="+",
    default=[],
    help="results.jsonl file(s) of the same run: enables the paired (instruction x example) "
    "bootstrap and the consistency metrics",
  )
  parser.add_argument(
    "--n_resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)"
  )
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
  parser.add_argument(
    "--k_worst", type=positive_int, default=5, help="worst instructions listed (default 5)"
  )
  parser.add_argument(
    "--macro",
    choices=("unweighted", "weighted"),
    default="unweighted",
    help="macro averages over tasks: unweighted (default: every task counts the same) or "
    "weighted by each task's number of examples (needs n_examples in the CSV)",
  )
  parser.add_argument(
    "--on_duplicate",
    choices=("error", "first", "mean"),
    default="error",
    help="a (model, task, instruction_id) on several CSV lines: error (default), keep the first, "
    "or average the repeats' accuracies",
  )
  parser.add_argument(
    "--estimate",
    action="store_true",
    help="with --results: estimate the full-grid figures from a partial grid (any subset of "
    "cells, e.g. an `eval --budget` run) into summary.json's budget section and report.md",
  )
  parser.add_argument("--title", default="Instruction-robustness report", help="report title")


def _instruction_texts(paths: list[str]) -> dict[str, str]:
  from robust_prompt.instructions.io import load_instructions
  from robust_prompt.instructions.schema import InstructionError

  if not paths:
    return {}
  try:
    return {i.id: i.text for i in load_instructions(paths)}
  except InstructionError as e:
    raise UserError(f"--instructions: {e}") from e


def _merge_results(tabs: dict, paths: list[str]) -> dict:
  """Replaces CSV-only tables by example-level ones from results.jsonl, after checking they agree."""
  from robust_prompt import io_utils
  from robust_prompt.eval import tables

  rows = []
  for path in paths:
    try:
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", io_utils.TornLineWarning)
        rows.extend(io_utils.read_jsonl(path))
      for w in caught:
        print(f"robust-prompt report: warning: {w.message}", file=sys.stderr)
    except (OSError, ValueError) as e:
      raise UserError(f"--results: {e}") from e
  try:
    detailed = tables.tables_from_results(rows)
  except tables.TableError as e:
    raise UserError(f"--results {', '.join(paths)}: {e}") from e
  merged = dict(tabs)
  for key, t in detailed.items():
    csv_t = tabs.get(key)
    if csv_t is None:
      print(
        f"robust-prompt report: warning: {'/'.join(key)} is in --results but not in "
        "--per_instruction; including it",
        file=sys.stderr,
      )
    else:
      csv_acc = dict(zip(csv_t.instruction_ids, csv_t.accuracy))
      res_acc = dict(zip(t.instruction_ids, t.accuracy))
      if set(csv_acc) != set(res_acc):
        diff = sorted(set(csv_acc) ^ set(res_acc))
        raise UserError(
          f"--results and --per_instruction list different instructions for {'/'.join(key)} "
          f"(e.g. {', '.join(diff[:5])}); pass the results of the same run"
        )
      bad = [i for i in csv_acc if not np.isclose(csv_acc[i], res_acc[i], atol=1e-6)]
      if bad:
        i = bad[0]
        raise UserError(
          f"--results and --per_instruction disagree for {'/'.join(key)}/{i}: accuracy "
          f"{res_acc[i]:.6f} vs {csv_acc[i]:.6f}; pass the results of the same run"
        )
    merged[key] = t
  return merged


def _write_estimate(output_dir: pathlib.Path, results: list[str]) -> None:
  """The budgeted-evaluation estimate of the --results rows, into summary.json and report.md."""
  import json

  from robust_prompt import io_utils
  from robust_prompt.eval import budget_run

  if not results:
    raise UserError("--estimate needs --results (the scored cells to estimate from)")
  rows = [row for path in results for row in io_utils.read_jsonl(path)]
  section = budget_run.summary_section(rows, None, None)
  path = output_dir / "summary.json"
  summary = json.loads(path.read_text(encoding="utf-8"))
  summary["budget"] = section
  io_utils.atomic_write_json(path, summary)
  md = output_dir / "report.md"
  io_utils.atomic_write_text(
    md, md.read_text(encoding="utf-8") + "\n".join(budget_run.report_lines(section)) + "\n"
  )


def run(args: argparse.Namespace) -> int:
  from robust_prompt import io_utils
  from robust_prompt.eval import report, summary, tables

  try:
    output_dir = io_utils.check_writable_dir(args.output_dir)
  except io_utils.NotWritableError as e:
    raise UserError(f"--output_dir: {e}") from e
  csv_path = pathlib.Path(args.per_instruction)
  if not csv_path.is_file():
    raise UserError(f"--per_instruction: {csv_path} does not exist or is not a file")
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      rows = tables.read_per_instruction_csv(csv_path, on_duplicate=args.on_duplicate)
    for w in caught:
      print(f"robust-prompt report: warning: {w.message}", file=sys.stderr)
  except tables.TableError as e:
    raise UserError(str(e)) from e
  texts = _instruction_texts(args.instructions)
  tabs = tables.tables_from_per_instruction(rows)
  if args.results:
    tabs = _merge_results(tabs, args.results)
  per_instruction = tables.per_instruction_rows(tabs)
  try:
    summaries = summary.summarize(
      tabs,
      instruction_texts=texts,
      k_worst=args.k_worst,
      n_resamples=args.n_resamples,
      seed=args.seed,
      macro=args.macro,
    )
  except ValueError as e:  # --macro weighted without task sizes
    raise UserError(f"--macro {args.macro}: {e}") from e
  summary.write_summary(output_dir / "summary.json", summaries)
  out_csv = output_dir / "per_instruction.csv"
  if not (out_csv.exists() and out_csv.samefile(csv_path)):
    tables.write_per_instruction_csv(out_csv, per_instruction)
  sections = [
    (model, s, [r for r in per_instruction if r["model"] == model])
    for model, s in summaries.items()
  ]
  report.write_report(output_dir, sections, title=args.title)
  if args.estimate:
    _write_estimate(output_dir, args.results)
  for model, s in summaries.items():
    g = s["macro"]["gap"]
    ci = g["ci95"]
    gap = "n/a" if g["value"] is None else f"{100 * g['value']:+.1f} pp"
    if ci:
      gap += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] ({g['ci_method']})"
    print(
      f"{model}: {s['macro']['n_tasks']} tasks; macro gap {gap}; macro over tasks: {args.macro}"
    )
  print(f"wrote {', '.join(OUTPUT_FILES)} and plots/ to {output_dir}")
  return 0
