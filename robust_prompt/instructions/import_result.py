"""What an importer returns: the instructions made and the source templates it refused, and why.

Importers never approximate a template they cannot map faithfully; they refuse it with a reason.
Each refusal carries a short `kind` (e.g. "jinja_logic", "target", "unmapped") so that a summary
can say how many templates were skipped for each reason.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from robust_prompt.instructions.schema import Instruction

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
