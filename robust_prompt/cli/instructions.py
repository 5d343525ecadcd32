"""`robust-prompt instructions`: observed instruction sets from the real sources, and checks.

  robust-prompt instructions build --family flan_t5 --benchmark mmlu --source FLAN/flan/v2 \\
      --output observed/flan_t5_mmlu.jsonl [--data_dir ../shared/data]
  robust-prompt instructions import flan --templates templates.py --map arc=mmlu:* --output F
  robust-prompt instructions import promptsource TEMPLATES_DIR --dataset sciq --tasks mmlu:* ...
  robust-prompt instructions import niv2 --source FLAN/flan/v2 --task task1286_... --tasks mmlu:*
  robust-prompt instructions import alpaca alpaca_data.json --tasks mmlu:* --output F
  robust-prompt instructions list-sources [--flan DIR] [--promptsource DIR] [--grep TEXT]
  robust-prompt instructions check FILE... [--data_dir D]

`build` without `--source` uses the sources at their pinned commits, downloaded once into a
cache (docs/instructions.md). Reads files only: no jax, no tensorflow.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from robust_prompt.cli.gin_utils import UserError

if TYPE_CHECKING:
  from robust_prompt.instructions.schema import Instruction


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from robust_prompt.instructions import build

  sub = parser.add_subparsers(dest="instructions_command", metavar="ACTION")
  sub.required = True

  p = sub.add_parser(
    "build",
    help="write a validated observed collection for a model family and benchmark",
    description="Builds the observed instructions of a model family for a benchmark from the "
    "family's real tuning data, validates them (format, rendering on real examples, leakage "
    "against the shipped unobserved collection) and prints a coverage table.",
  )
  p.add_argument("--family", required=True, choices=build.FAMILIES)
  p.add_argument("--benchmark", required=True, choices=build.BENCHMARKS)
  p.add_argument(
    "--source",
    default=None,
    help="flan_t5: "
    + build.SOURCE_HELP["flan_t5"]
    + "; t0: "
    + build.SOURCE_HELP["t0"]
    + "; alpaca: "
    + build.SOURCE_HELP["alpaca"]
    + ". Default: the pinned commit, downloaded "
    "once into the cache (not for alpaca)",
  )
  p.add_argument("--output", required=True, help="the JSONL file to write")
  _data_arguments(p)
  p.add_argument("--verbose", action="store_true", help="list every skipped source template")

  p = sub.add_parser("import", help="the lower-level importers, one source at a time")
  which = p.add_subparsers(dest="importer", metavar="SOURCE")
  which.required = True
  _flan_parser(which.add_parser("flan", help="FLAN v2 templates.py / flan_templates_branched.py"))
  _promptsource_parser(which.add_parser("promptsource", help="PromptSource templates.yaml files"))
  _niv2_parser(which.add_parser("niv2", help="NIV2 definitions in FLAN's natinst_v2 templates"))
  _alpaca_parser(which.add_parser("alpaca", help="Alpaca's alpaca_data.json"))

  p = sub.add_parser(
    "list-sources",
    help="FLAN task keys, PromptSource datasets and NIV2 tasks, with counts",
    description="Lists what the sources hold. Without --flan/--promptsource, the pinned copies "
    "in the cache (downloaded when missing).",
  )
  p.add_argument("--flan", default=None, help="a folder with FLAN v2's templates (flan/v2/)")
  p.add_argument("--promptsource", default=None, help="PromptSource's templates/ folder")
  p.add_argument("--grep", default=None, help="only names containing this text")

  p = sub.add_parser(
    "check",
    help="validate instruction files and report leakage against the shipped collection",
  )
  p.add_argument("paths", nargs="+", help="instruction JSONL files or folders")
  p.add_argument(
    "--no_shipped",
    action="store_true",
    help="compare only the given files (default: also the shipped tasks/instructions)",
  )
  p.add_argument(
    "--benchmark",
    action="append",
    choices=build.BENCHMARKS,
    help="benchmark whose examples to render on (repeatable; default: those the files name)",
  )
  _data_arguments(p)


def _data_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--data_dir",
    default=None,
    help="data directory with mmlu/ and/or bigbench_lite/ (default: $ROBUST_PROMPT_DATA_DIR): "
    "every instruction is rendered on the real examples",
  )


def _common_import_arguments(p: argparse.ArgumentParser, seen_by: str) -> None:
  p.add_argument("--seen_by", default=seen_by, help=f"comma-separated families (default {seen_by})")
  p.add_argument("--id_prefix", default=None, help="id prefix")
  p.add_argument("--output", required=True, help="the JSONL file to write")
  p.add_argument("--verbose", action="store_true", help="list every skipped template")


def _binding_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--placeholder", action="append", default=[], help="SOURCE_NAME=OUR_NAME (repeatable)"
  )
  p.add_argument(
    "--bind", action="append", default=[], help="SOURCE_NAME=TEXT: a constant in its place"
  )
  p.add_argument(
    "--drop",
    action="append",
    default=[],
    help="SOURCE_NAME to remove where it stands alone on its line (repeatable)",
  )


def _flan_parser(p: argparse.ArgumentParser) -> None:
  from robust_prompt.instructions.schema import OPTIONS_FORMATS

  p.add_argument("--templates", required=True, help="templates.py or flan_templates_branched.py")
  p.add_argument(
    "--map", action="append", required=True, help="FLAN_TASK=OUR_TASK_GLOB[,...] (repeatable)"
  )
  _binding_arguments(p)
  p.add_argument(
    "--options_format",
    default="dashes",
    choices=[f for f in OPTIONS_FORMATS if f != "none"],
    help="how FLAN's {options_} list is shown (lettered layouts make the answer a letter)",
  )
  p.add_argument("--no_options", action="store_true", help="FLAN v2's no-options variant")
  _common_import_arguments(p, "flan-t5")


def _promptsource_parser(p: argparse.ArgumentParser) -> None:
  p.add_argument("paths", nargs="+", help="templates.yaml files or folders (e.g. templates/)")
  p.add_argument(
    "--dataset",
    action="append",
    default=None,
    help="only this DATASET[/SUBSET] under a templates/ folder (repeatable)",
  )
  p.add_argument("--tasks", required=True, help="comma-separated task names/globs")
  _binding_arguments(p)
  p.add_argument(
    "--original_task_only",
    action="store_true",
    help="skip templates whose metadata says original_task: false (not in T0's training mix)",
  )
  _common_import_arguments(p, "t0")


def _niv2_parser(p: argparse.ArgumentParser) -> None:
  p.add_argument("--source", default=None, help="a folder with constants_niv2.py and templates.py")
  p.add_argument("--constants", default=None, help="constants_niv2.py (instead of --source)")
  p.add_argument("--templates", default=None, help="templates.py (instead of --source)")
  p.add_argument("--task", action="append", required=True, help="NIV2 task name (repeatable)")
  p.add_argument("--tasks", required=True, help="comma-separated task names/globs of ours")
  _common_import_arguments(p, "flan-t5")


def _alpaca_parser(p: argparse.ArgumentParser) -> None:
  p.add_argument("path", help="alpaca_data.json")
  p.add_argument("--tasks", required=True, help="comma-separated task names/globs")
  p.add_argument("--limit", type=int, default=None, help="keep at most this many")
  _common_import_arguments(p, "alpaca")


def _csv(text: str) -> list[str]:
  return [t for t in text.split(",") if t]


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise UserError(f"{what} {item!r} must look like NAME=VALUE")
    out[key] = value
  return out


def run(args: argparse.Namespace) -> int:
  from robust_prompt.data.example import DataError
  from robust_prompt.instructions.schema import InstructionError
  from robust_prompt.instructions.sources_cache import SourceError

  actions = {
    "build": _build,
    "import": _import,
    "list-sources": _list_sources,
    "check": _check,
  }
  try:
    return actions[args.instructions_command](args)
  except (InstructionError, SourceError, DataError) as e:
    raise UserError(str(e)) from None
  except OSError as e:
    raise UserError(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}") from None


# -- build --------------------------------------------------------------------------------------


def _build(args: argparse.Namespace) -> int:
  from robust_prompt.instructions import build
  from robust_prompt.instructions.io import load_instructions, write_instructions

  built = build.build(args.family, args.benchmark, args.source)
  if not built.instructions:
    raise UserError(
      f"no instructions could be built for {args.family} on {args.benchmark} from "
      f"{built.source}:\n{built.result.summary(details=True)}"
    )
  out = pathlib.Path(args.output)
  write_instructions(built.instructions, out)
  written = load_instructions([out])  # what others will load: validate that
  print(
    f"built {len(written)} observed instructions for {args.family} on {args.benchmark} from "
    f"{built.source} -> {out}"
  )
  print(built.result.summary(details=args.verbose))
  status = _report(written, args.family, [args.benchmark], args.data_dir, shipped=True)
  return status


def _report(
  instructions: Sequence[Instruction],
  column: str,
  benchmarks: Sequence[str],
  data_dir: str | None,
  *,
  shipped: bool,
  extra: Sequence[Instruction] = (),
) -> int:
  """Coverage table (rendered on real examples when data is at hand) and leakage check."""
  from robust_prompt.data import sources
  from robust_prompt.instructions import build
  from robust_prompt.instructions.io import default_instruction_dir, load_instructions
  from robust_prompt.instructions.leakage import check_leakage

  status = 0
  have_data = bool(data_dir or os.environ.get(sources.ENV_VAR))
  columns, checked = {}, {}
  counts: dict[str, int] = {}
  for benchmark in benchmarks:
    if have_data:
      examples = sources.load_benchmark(benchmark, data_dir)
      ok, problems = build.check_renders(instructions, examples)
      counts |= build.coverage(instructions, examples)
      checked.setdefault(column, {}).update(ok)
      for problem in problems:
        print(f"render problem: {problem}", file=sys.stderr)
      status |= bool(problems)
    else:
      counts |= build.coverage(instructions, build.default_tasks(benchmark))
  columns[column] = counts
  print()
  print(f"coverage ({column}: instructions per task" + (", rendered/all" if checked else "") + "):")
  print(build.format_coverage(columns, checked or None))
  if not have_data:
    print("(not rendered on examples: pass --data_dir or set ROBUST_PROMPT_DATA_DIR)")
  others = list(extra)
  if shipped:
    others += load_instructions([default_instruction_dir()])
  report = check_leakage([*instructions, *others], warn=False)
  print()
  print(report)
  return status | (not report.ok)


# -- import -------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
  from robust_prompt.instructions import (
    alpaca_import,
    flan_import,
    niv2_import,
    promptsource_import,
  )
  from robust_prompt.instructions.io import write_instructions

  common = dict(seen_by=_csv(args.seen_by), id_prefix=args.id_prefix)
  if args.importer == "flan":
    result = flan_import.import_flan_templates(
      args.templates,
      {k: _csv(v) for k, v in _pairs(args.map, "--map").items()},
      placeholder_map=_pairs(args.placeholder, "--placeholder"),
      bind=_pairs(args.bind, "--bind"),
      drop=args.drop,
      options_format=args.options_format,
      no_options=args.no_options,
      **common,
    )
  elif args.importer == "promptsource":
    files = [
      f for p in args.paths for f in promptsource_import.find_template_files(p, args.dataset)
    ]
    result = promptsource_import.import_promptsource_templates(
      files,
      _csv(args.tasks),
      placeholder_map=_pairs(args.placeholder, "--placeholder"),
      bind=_pairs(args.bind, "--bind"),
      drop=args.drop,
      original_task_only=args.original_task_only,
      **common,
    )
  elif args.importer == "niv2":
    constants, templates = _niv2_files(args)
    result = niv2_import.import_niv2_definitions(
      constants, templates, args.task, _csv(args.tasks), **common
    )
  else:
    result = alpaca_import.import_alpaca_instructions(
      args.path, _csv(args.tasks), limit=args.limit, **common
    )
  n = write_instructions(result.instructions, args.output)
  print(f"wrote {n} instructions -> {args.output}")
  print(result.summary(details=args.verbose))
  return 0 if n else 1


def _niv2_files(args: argparse.Namespace) -> tuple[pathlib.Path, pathlib.Path]:
  from robust_prompt.instructions import flan_import, niv2_import

  if args.source:
    folder = pathlib.Path(args.source)
    constants = pathlib.Path(args.constants or folder / niv2_import.CONSTANTS_FILE)
    templates = pathlib.Path(args.templates or folder / flan_import.TEMPLATES_FILE)
  elif args.constants and args.templates:
    constants, templates = pathlib.Path(args.constants), pathlib.Path(args.templates)
  else:
    raise UserError("import niv2 needs --source FLAN_V2_DIR, or both --constants and --templates")
  for path in (constants, templates):
    if not path.is_file():
      raise UserError(f"{path}: no such file (FLAN v2's flan/v2/ holds it)")
  return constants, templates


# -- list-sources -------------------------------------------------------------------------------


def _list_sources(args: argparse.Namespace) -> int:
  from robust_prompt.instructions import (
    flan_import,
    niv2_import,
    promptsource_import,
    sources_cache,
  )

  flan = pathlib.Path(args.flan) if args.flan else None
  p3 = pathlib.Path(args.promptsource) if args.promptsource else None
  if flan is None and p3 is None:
    flan = sources_cache.ensure(sources_cache.FLAN)
    p3 = sources_cache.ensure(sources_cache.PROMPTSOURCE)
  keep = (lambda name: args.grep in name) if args.grep else (lambda name: True)
  if flan is not None:
    for name in (flan_import.TEMPLATES_FILE, flan_import.BRANCHED_FILE):
      path = flan / name
      if not path.is_file():
        raise UserError(f"{path}: no such file; --flan must be FLAN v2's flan/v2/ folder")
      tasks = flan_import.list_flan_tasks(path)
      total = sum(n for n, _ in tasks.values())
      direct = sum(d for _, d in tasks.values())
      print(f"FLAN {path}: {len(tasks)} task keys, {total} templates ({direct} answer directly)")
      rows = [(task, f"{n} templates, {d} direct") for task, (n, d) in tasks.items() if keep(task)]
      _print_rows(rows)
    niv2 = niv2_import.read_niv2_tasks(flan / niv2_import.CONSTANTS_FILE)
    print(f"NIV2 {flan / niv2_import.CONSTANTS_FILE}: {len(niv2)} tasks")
    _print_rows([(t.name, f"{t.number_examples} examples") for t in niv2.values() if keep(t.name)])
  if p3 is not None:
    datasets = promptsource_import.list_promptsource_datasets(p3)
    print(f"PromptSource {p3}: {len(datasets)} files, {sum(datasets.values())} templates")
    _print_rows([(k, f"{n} templates") for k, n in datasets.items() if keep(k)])
  return 0


def _print_rows(rows: list[tuple[str, str]]) -> None:
  width = max((len(a) for a, _ in rows), default=0)
  for a, b in rows:
    print(f"  {a.ljust(width)}  {b}")


# -- check --------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
  from robust_prompt.instructions.io import default_instruction_dir, load_instructions

  instructions = load_instructions(args.paths)
  observed = sum(i.split == "observed" for i in instructions)
  files = len({i.file for i in instructions})
  print(
    f"{len(instructions)} valid instructions in {files} file(s): {observed} observed, "
    f"{len(instructions) - observed} unobserved"
  )
  shipped_dir = default_instruction_dir().resolve()
  given_shipped = any(
    pathlib.Path(p).resolve() == shipped_dir or shipped_dir in pathlib.Path(p).resolve().parents
    for p in args.paths
  )
  extra = []
  if not args.no_shipped and not given_shipped:
    ids = {i.id for i in instructions}
    extra = [i for i in load_instructions([shipped_dir]) if i.id not in ids]
  benchmarks = args.benchmark or sorted(
    {
      "mmlu" if t.startswith("mmlu:") else "bigbench_lite"
      for i in instructions
      for t in i.tasks
      if t.startswith(("mmlu:", "bigbench:"))
    }
  )
  return _report(
    instructions, "instructions", benchmarks, args.data_dir, shipped=False, extra=extra
  )
