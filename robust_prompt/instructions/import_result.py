"""What an importer returns: the instructions made and the source templates it refused, and why.

Importers never approximate a template they cannot map faithfully; they refuse it with a reason.
Each refusal carries a short `kind` (e.g. "jinja_logic", "target", "unmapped") so that a summary
can say how many templates were skipped for each reason. `ObservedImport` collects both as an
importer goes; the helpers at the end serve the importers' own `python -m` command lines.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from robust_prompt.instructions.schema import Instruction, InstructionError
from robust_prompt.instructions.validate import validate_instruction

# Short descriptions of the refusal kinds, for summaries.
SKIP_KINDS = {
  "alias": "another task key's templates (already counted there)",
  "answer": "the answer is not one of the options (generation, explanation, question writing)",
  "choices": "answer choices that are not the example's options (fixed labels, yes/no)",
  "drop": "a placeholder that cannot be dropped or bound cleanly",
  "duplicate": "the same template as another one already imported",
  "filter": "a jinja filter that rewrites a field's text",
  "jinja_logic": "jinja logic (conditionals, loops, variables) that cannot be mapped",
  "layout": "an option layout with no options_format",
  "metadata": "PromptSource metadata says the template was not part of the training mixture",
  "missing": "a dataset the source does not hold",
  "misfit": "does not fit the target benchmark (its fields, its number of options)",
  "syntax": "a malformed template",
  "unmapped": "a placeholder with no field in the target benchmark",
  "other": "other",
}


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A source template that was not imported, and why."""

  where: str  # file:line
  name: str  # source task / template name
  reason: str
  kind: str = "other"

  def __str__(self) -> str:
    return f"{self.where}: {self.name}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ImportResult:
  instructions: tuple[Instruction, ...]
  skipped: tuple[Skipped, ...]

  def skip_counts(self) -> Counter:
    """How many templates were skipped, by kind."""
    return Counter(s.kind for s in self.skipped)

  def summary(self, details: bool = True) -> str:
    """ "imported N instructions, skipped M" + counts by reason (+ each skip when `details`)."""
    lines = [f"imported {len(self.instructions)} instructions, skipped {len(self.skipped)}"]
    for kind, count in self.skip_counts().most_common():
      lines.append(f"  {count:5d} skipped: {SKIP_KINDS.get(kind, kind)}")
    if details:
      lines += [f"  skipped {s}" for s in self.skipped]
    return "\n".join(lines)

  def __add__(self, other: ImportResult) -> ImportResult:
    return ImportResult(self.instructions + other.instructions, self.skipped + other.skipped)


def dedupe(result: ImportResult) -> ImportResult:
  """Keeps the first of instructions that share template (stripped) and formats.

  Source files repeat phrasings (PromptSource's ARC-Easy and ARC-Challenge share their
  templates; FLAN lists some twice, and its no-options variants often coincide); a repeated
  phrasing would count twice in every robustness statistic. When the repeat is meant for other
  tasks, the first instruction takes on those tasks too.
  """
  first: dict[tuple, int] = {}
  kept: list[Instruction] = []
  skipped = list(result.skipped)
  for instruction in result.instructions:
    key = (instruction.template.strip(), instruction.options_format, instruction.answer_space)
    if key not in first:
      first[key] = len(kept)
      kept.append(instruction)
      continue
    original = kept[first[key]]
    extra = tuple(t for t in instruction.tasks if t not in original.tasks)
    if extra:
      kept[first[key]] = dataclasses.replace(original, tasks=original.tasks + extra)
    skipped.append(
      Skipped(
        instruction.where,
        instruction.origin or instruction.id,
        f"same template as {original.id!r}"
        + (" (which now also serves its tasks)" if extra else ""),
        "duplicate",
      )
    )
  return ImportResult(tuple(kept), tuple(skipped))


@dataclasses.dataclass
class ObservedImport:
  """One import run as it goes: the observed instructions made so far and the refusals.

  Every importer makes the instructions of one `source` for the model families `seen_by`, and
  refuses (never adjusts) one that does not fit the target benchmark; `add` is where that lives.
  """

  source: str
  seen_by: tuple[str, ...]
  instructions: list[Instruction] = dataclasses.field(default_factory=list)
  skipped: list[Skipped] = dataclasses.field(default_factory=list)

  def add(self, name: str, **fields: Any) -> None:
    """Keeps the observed instruction made of `fields`, or refuses it as a "misfit".

    What `validate_instruction` rejects (the template does not fit the benchmark's fields or
    number of options) is skipped with the reason, at the instruction's own `file:line`.

    Args:
      name: the source task / template name, for the refusal.
      **fields: the `Instruction` fields but `split`, `source` and `seen_by` (this run's).
    """
    instruction = Instruction(split="observed", source=self.source, seen_by=self.seen_by, **fields)
    try:
      validate_instruction(instruction)
    except InstructionError as e:
      where = f"{instruction.file}:{instruction.line}"
      self.skipped.append(Skipped(where, name, e.reason, "misfit"))
      return
    self.instructions.append(instruction)

  def result(self) -> ImportResult:
    """What the run made and refused, in the order found."""
    return ImportResult(tuple(self.instructions), tuple(self.skipped))


# -- the importers' own command lines (`python -m robust_prompt.instructions.X_import`) ----------


def parse_mapping(items: Sequence[str], what: str) -> dict[str, list[str]]:
  """["a=x,y", "b=z"] -> {"a": ["x", "y"], "b": ["z"]} (command-line helper)."""
  out: dict[str, list[str]] = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
      raise SystemExit(f"error: {what} {item!r} must look like NAME=VALUE[,VALUE...]")
    out.setdefault(key, []).extend(v for v in value.split(",") if v)
  return out


def add_import_arguments(
  parser: argparse.ArgumentParser, placeholder: str, seen_by: str, id_prefix: str
) -> None:
  """The options every importer's `main` takes after its own: placeholders, families, output.

  Args:
    parser: the importer's parser.
    placeholder: the `--placeholder` help ("SOURCE_NAME=OUR_NAME").
    seen_by: the `--seen_by` default.
    id_prefix: what the default id prefix is, for the `--id_prefix` help.
  """
  parser.add_argument("--placeholder", action="append", default=[], help=placeholder)
  parser.add_argument("--seen_by", default=seen_by, help="comma-separated model families")
  parser.add_argument("--id_prefix", default=None, help=f"id prefix (default: {id_prefix})")
  parser.add_argument("--out", required=True, help="output JSONL file")


def import_options(args: argparse.Namespace) -> dict[str, Any]:
  """The importer keyword arguments of the options `add_import_arguments` added."""
  placeholders = {k: v[0] for k, v in parse_mapping(args.placeholder, "--placeholder").items()}
  return dict(
    placeholder_map=placeholders,
    seen_by=[s for s in args.seen_by.split(",") if s],
    id_prefix=args.id_prefix,
  )


def write_import(result: ImportResult, out: str) -> int:
  """Writes the imported instructions to `out` and prints the summary; the exit status (0)."""
  from robust_prompt.instructions.io import write_instructions

  write_instructions(result.instructions, out)
  print(result.summary())
  return 0
