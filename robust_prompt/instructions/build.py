"""Observed instruction collections per model family and benchmark, as the study built them.

The study compares phrasings a model was instruction-tuned on (observed) with phrasings it never
saw (unobserved). The observed ones come from each family's own tuning data:

* **flan_t5** (FLAN v2). MMLU: Natural-Instructions v2 definitions of multiple-choice QA tasks
  (`NIV2_MMLU_TASKS`) in FLAN's `natinst_v2` templates (`niv2_import`). BIG-bench Lite: FLAN
  templates of the task's category (`BIGBENCH_CATEGORIES`, `CATEGORY_FLAN_TASKS`), with the
  options shown (FLAN v2's "zsopt" templates, `templates.py`) and without them (FLAN v2's
  "zsnoopt" variant, built from `flan_templates_branched.py` for FLAN 2021's tasks).
* **t0** (P3). PromptSource templates of the multiple-choice QA datasets of T0's training
  mixture (`T0_DATASETS`; ARC and OpenBookQA joined in T0+ / T0++, which their `seen_by` says),
  only those PromptSource marks as the original task (T0 trained on no others).
* **alpaca**. Alpaca's prompt wrapper around the multiple-choice instructions of
  `alpaca_data.json` (`alpaca_import`).

Every instruction keeps `source`, `origin` (the original template's file and id/name) and
`seen_by`. `build` also checks what the study's comparison needs: that every instruction
renders on the real examples with no placeholder left unfilled (`check_renders`), and that no
unobserved instruction of the shipped collection nearly repeats a built one (`leakage`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from robust_prompt.instructions import (
  alpaca_import,
  flan_import,
  niv2_import,
  promptsource_import,
  sources_cache,
)
from robust_prompt.instructions.import_result import ImportResult, Skipped, dedupe
from robust_prompt.instructions.render import render
from robust_prompt.instructions.schema import Instruction, InstructionError
from robust_prompt.instructions.validate import check_unique_ids

FAMILIES = ("flan_t5", "t0", "alpaca")
BENCHMARKS = ("mmlu", "bigbench_lite")

# Multiple-choice QA tasks of NIV2 whose definitions ask for the letter of the answer to a
# question with lettered options and nothing else (no passage, facts or story that MMLU lacks,
# no extra "I don't know" option). The MMLU tasks of NIV2 (`task664`-`task737`, "mmmlu") hold
# MMLU's own questions and are left out: they are the benchmark, not tuning data beside it.
NIV2_MMLU_TASKS = (
  "task1286_openbookqa_question_answering",
  "task228_arc_answer_generation_easy",
  "task229_arc_answer_generation_hard",
  "task073_commonsenseqa_answer_generation",
  "task1135_xcsr_en_commonsense_mc_classification",
)

# The study's task categories of BIG-bench Lite.
BIGBENCH_CATEGORIES = {
  "multiple_choice": (
    "bbq_lite_json",
    "code_line_description",
    "conceptual_combinations",
    "hindu_knowledge",
    "known_unknowns",
    "logic_grid_puzzle",
    "logical_deduction",
    "novel_concepts",
  ),
  "binary_classification": (
    "play_dialog_same_or_different",
    "strange_stories",
    "strategyqa",
    "winowhy",
  ),
  "classification": ("language_identification", "vitaminc_fact_verification"),
}
# FLAN tasks whose templates fit each category. FLAN's multiple-choice QA templates take a
# question and its options; its binary and multi-class classification tasks all name two or
# three fields of their own (premise/hypothesis, passage/question), which a BIG-bench input
# (one text that already holds the question) cannot fill. FLAN's classification-shaped data
# from P3 and UnifiedQA is shown with the generic question + options templates
# (`t0_multiple_choice_separated_options`, `unified_qa_science_inst`), so those serve the
# classification categories.
CATEGORY_FLAN_TASKS = {
  "multiple_choice": (
    "arc",
    "openbookqa",
    "t0_multiple_choice_separated_options",
    "unified_qa_science_inst",
  ),
  "binary_classification": ("t0_multiple_choice_separated_options", "unified_qa_science_inst"),
  "classification": ("t0_multiple_choice_separated_options", "unified_qa_science_inst"),
}
# A BIG-bench task that *is* a FLAN training task gets that task's own templates too.
SAME_DATASET_FLAN_TASKS = {"strategyqa": ("strategyqa",)}
# Fields of FLAN's templates that a benchmark example does not have, dropped where the phrasing
# survives without them (openbookqa's "{fact}\n{question}\n\n{options_}").
FLAN_DROP = ("fact",)

# PromptSource datasets of T0's multiple-choice QA training data -> the families trained on them.
T0_FAMILY = ("t0", "t0+", "t0pp")
T0_PLUS_FAMILY = ("t0+", "t0pp")
T0_DATASETS = {
  "commonsense_qa": T0_FAMILY,
  "cos_e/v1.11": T0_FAMILY,
  "cosmos_qa": T0_FAMILY,
  "dream": T0_FAMILY,
  "qasc": T0_FAMILY,
  "quail": T0_FAMILY,
  "quarel": T0_FAMILY,
  "quartz": T0_FAMILY,
  "sciq": T0_FAMILY,
  "social_i_qa": T0_FAMILY,
  "wiki_hop/original": T0_FAMILY,
  "wiqa": T0_FAMILY,
  "ai2_arc": T0_PLUS_FAMILY,
  "openbookqa/main": T0_PLUS_FAMILY,
}
# PromptSource variables our examples lack; dropped only where the phrasing survives.
P3_DROP = ("context", "support", "para", "dialogue", "fact1", "fact2")
# PromptSource names of the question besides `question` (mapped onto the benchmark's main field).
P3_QUESTION_FIELDS = ("question_stem",)

SOURCE_KINDS = {"flan_t5": "flan_v2", "t0": "promptsource", "alpaca": "alpaca"}
SOURCE_HELP = {
  "flan_t5": "a folder holding FLAN v2's templates.py, flan_templates_branched.py and "
  "constants_niv2.py (google-research/FLAN flan/v2/)",
  "t0": "PromptSource's templates/ folder (bigscience-workshop/promptsource "
  "promptsource/templates/), or 'package' for an installed promptsource",
  "alpaca": "Alpaca's alpaca_data.json (tatsu-lab/stanford_alpaca)",
}


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """A built collection: the instructions, what was refused and where the source was."""

  family: str
  benchmark: str
  source: str
  result: ImportResult

  @property
  def instructions(self) -> tuple[Instruction, ...]:
    return self.result.instructions


def family_tag(family: str) -> str:
  """The `seen_by` name of a family ("flan_t5" -> "flan-t5")."""
  return family.replace("_", "-")


def resolve_source(family: str, source: str | pathlib.Path | None) -> pathlib.Path:
  """The folder or file to read `family`'s tuning data from.

  `None` means the pinned copy in the cache (downloaded when missing; `sources_cache`).

  Raises:
    InstructionError: a path that does not hold what the family needs (saying what should be
      there); sources_cache.SourceError when the pinned copy cannot be had.
  """
  check_family(family)
  if source is None:
    if family == "alpaca":
      raise InstructionError(
        "Alpaca's training data has no pinned copy to download here: get alpaca_data.json from "
        "https://github.com/tatsu-lab/stanford_alpaca and pass --source PATH"
      )
    return sources_cache.ensure(sources_cache.SOURCES[SOURCE_KINDS[family]])
  if family == "t0" and str(source) == "package":
    found = promptsource_import.installed_templates_dir()
    if found is None:
      raise InstructionError(
        "--source package: no installed promptsource package with a templates/ folder was found"
      )
    return found
  path = pathlib.Path(source).expanduser()
  if family == "flan_t5":
    folder = path.parent if path.is_file() else path
    missing = [
      n
      for n in (flan_import.TEMPLATES_FILE, flan_import.BRANCHED_FILE, niv2_import.CONSTANTS_FILE)
      if not (folder / n).is_file()
    ]
    if missing:
      raise InstructionError(
        f"{folder}: FLAN v2 source folder lacks {missing}; --source must be {SOURCE_HELP[family]}"
      )
    return folder
  if family == "t0":
    # A repository checkout, a promptsource/ package folder, or the templates/ folder itself.
    for candidate in (path / "promptsource" / "templates", path / "templates", path):
      if candidate.is_dir() and (
        any(candidate.glob(f"*/{promptsource_import.TEMPLATES_FILE}"))
        or any(candidate.glob(f"*/*/{promptsource_import.TEMPLATES_FILE}"))
      ):
        return candidate
    raise InstructionError(
      f"{path}: no PromptSource templates; --source must be {SOURCE_HELP[family]}"
    )
  if not path.is_file():
    raise InstructionError(f"{path}: no such file; --source must be {SOURCE_HELP[family]}")
  return path


def check_family(family: str) -> None:
  if family not in FAMILIES:
    raise InstructionError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def check_benchmark(benchmark: str) -> None:
  if benchmark not in BENCHMARKS:
    raise InstructionError(
      f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}"
    )


def bigbench_task_patterns(tasks: Iterable[str]) -> list[str]:
  """Our task globs for BIG-bench tasks: each task and its subtasks."""
  return [p for t in tasks for p in (f"bigbench:{t}", f"bigbench:{t}:*")]


def build(family: str, benchmark: str, source: str | pathlib.Path | None = None) -> BuildResult:
  """Builds the observed collection of `family` for `benchmark` (see the module docstring).

  Returns:
    The instructions (validated, unique ids, repeated phrasings removed) and what was skipped.
  """
  check_family(family)
  check_benchmark(benchmark)
  where = resolve_source(family, source)
  if family == "flan_t5":
    result = _flan_mmlu(where) if benchmark == "mmlu" else _flan_bigbench(where)
  elif family == "t0":
    tasks = ["mmlu:*"] if benchmark == "mmlu" else bigbench_task_patterns(_lite_tasks())
    result = _t0(where, tasks, benchmark)
  else:
    tasks = ["mmlu:*"] if benchmark == "mmlu" else bigbench_task_patterns(_lite_tasks())
    prefix = "alpaca" if benchmark == "mmlu" else "alpaca_bb"
    result = alpaca_import.import_alpaca_instructions(where, tasks, id_prefix=prefix)
  result = dedupe(result)
  check_unique_ids(result.instructions)
  return BuildResult(family, benchmark, str(where), result)


def _lite_tasks() -> tuple[str, ...]:
  return tuple(t for tasks in BIGBENCH_CATEGORIES.values() for t in tasks)


def _flan_mmlu(folder: pathlib.Path) -> ImportResult:
  return niv2_import.import_niv2_definitions(
    folder / niv2_import.CONSTANTS_FILE,
    folder / flan_import.TEMPLATES_FILE,
    NIV2_MMLU_TASKS,
    ["mmlu:*"],
    seen_by=("flan-t5",),
  )


def flan_bigbench_targets() -> dict[str, list[str]]:
  """FLAN task -> the BIG-bench Lite task globs its templates serve (by category, + same dataset)."""
  targets: dict[str, list[str]] = {}
  for category, tasks in BIGBENCH_CATEGORIES.items():
    for flan_task in CATEGORY_FLAN_TASKS[category]:
      targets.setdefault(flan_task, []).extend(bigbench_task_patterns(tasks))
  for task, flan_tasks in SAME_DATASET_FLAN_TASKS.items():
    for flan_task in flan_tasks:
      targets.setdefault(flan_task, []).extend(bigbench_task_patterns([task]))
  return targets


def _flan_bigbench(folder: pathlib.Path) -> ImportResult:
  templates = folder / flan_import.TEMPLATES_FILE
  branched = folder / flan_import.BRANCHED_FILE
  branched_tasks = set(flan_import.read_flan_patterns(branched)[0])
  result = ImportResult((), ())
  for flan_task, targets in flan_bigbench_targets().items():
    common = dict(id_prefix="flan_v2_bb", drop=FLAN_DROP)
    result += flan_import.import_flan_templates(templates, {flan_task: targets}, **common)
    # FLAN v2's no-options variant: from the FLAN 2021 phrasings where FLAN v2 takes them.
    path = branched if flan_task in branched_tasks else templates
    result += flan_import.import_flan_templates(
      path, {flan_task: targets}, no_options=True, **common
    )
  return result


def _t0(root: pathlib.Path, tasks: Sequence[str], benchmark: str) -> ImportResult:
  main = "question" if benchmark == "mmlu" else "input"
  result = ImportResult((), ())
  for dataset, families in T0_DATASETS.items():
    if not (root / dataset).is_dir():
      # A partial copy of the templates: say what is missing rather than fail.
      reason = f"{root / dataset} is missing from the source"
      result += ImportResult((), (Skipped(str(root), dataset, reason, "missing"),))
      continue
    files = promptsource_import.find_template_files(root, [dataset])
    result += promptsource_import.import_promptsource_templates(
      files,
      tasks,
      placeholder_map={k: main for k in P3_QUESTION_FIELDS},
      seen_by=families,
      drop=P3_DROP,
      original_task_only=True,
    )
  if benchmark != "mmlu":
    # Ids must differ from the MMLU collection's, which may be loaded beside this one.
    result = ImportResult(
      tuple(
        dataclasses.replace(i, id=i.id.replace("p3_", "p3_bb_", 1)) for i in result.instructions
      ),
      result.skipped,
    )
  return result


# -- checks ------------------------------------------------------------------------------------

# Anything of a template's syntax left in a rendered input: a placeholder that was not filled.
_UNFILLED = re.compile(r"\{\{|\}\}|\{%|%\}|\{[A-Za-z_][A-Za-z0-9_]*\}")
_SENTINEL = "\x01"


def unfilled_placeholders(instruction: Instruction, example: Any) -> list[str]:
  """Template syntax left over when `example` is rendered through `instruction` ([] if none).

  The example's own text may hold braces (code, LaTeX), so the check renders a copy whose field
  values and options are sentinels: whatever brace syntax remains came from the template.
  """
  probe = dataclasses.replace(
    example,
    fields={k: _SENTINEL for k in example.fields},
    options=tuple(_SENTINEL for _ in example.options),
  )
  return _UNFILLED.findall(render(instruction, probe).inputs)


def check_renders(
  instructions: Sequence[Instruction], examples_by_task: Mapping[str, Sequence[Any]]
) -> tuple[dict[str, int], list[str]]:
  """Renders every instruction on the examples of every task it applies to.

  Whether an example renders, and what template syntax would be left, depends only on its task,
  its field names and its number of options; each distinct kind of example is rendered once
  (the first of its kind), which covers every example of the task.

  Returns:
    (task -> number of instructions that render on all its examples, problems as
    "file:line: instruction 'id': ..." messages, one per failing instruction and task).
  """
  ok: dict[str, int] = {}
  problems: list[str] = []
  for task, examples in examples_by_task.items():
    kinds: dict[tuple, Any] = {}
    for example in examples:
      kinds.setdefault((tuple(sorted(example.fields)), len(example.options)), example)
    ok[task] = 0
    for instruction in instructions:
      if not instruction.applies_to(task):
        continue
      problem = None
      for example in kinds.values():
        try:
          left = unfilled_placeholders(instruction, example)
          rendered = render(instruction, example)
        except InstructionError as e:
          problem = str(e)
          break
        if left:
          problem = (
            f"{instruction.where}: instruction {instruction.id!r}: template syntax {left} is "
            f"left unfilled in {example.id}"
          )
          break
        if example.options and len(rendered.options) != len(example.options):
          problem = (
            f"{instruction.where}: instruction {instruction.id!r}: options lost in {example.id}"
          )
          break
      if problem:
        problems.append(problem)
      else:
        ok[task] += 1
  return ok, problems


def coverage(instructions: Sequence[Instruction], tasks: Iterable[str]) -> dict[str, int]:
  """Task -> number of instructions that apply to it."""
  return {task: sum(i.applies_to(task) for i in instructions) for task in tasks}


def default_tasks(benchmark: str) -> list[str]:
  """The benchmark's task names when no data is at hand (MMLU's 57 subjects, the 14 Lite tasks)."""
  from robust_prompt.data import bigbench, mmlu

  if benchmark == "mmlu":
    return [mmlu.task_name(s) for s in mmlu.SUBJECTS]
  return [f"bigbench:{t}" for t in bigbench.LITE_TASKS]


def format_coverage(
  columns: Mapping[str, Mapping[str, int]], checked: Mapping[str, Mapping[str, int]] | None = None
) -> str:
  """A table: one row per task, one column per family (instructions that apply).

  With `checked` (family -> task -> instructions that rendered on the real examples), each cell
  reads "N" when all rendered, else "rendered/N".
  """
  families = list(columns)
  tasks = list(dict.fromkeys(t for column in columns.values() for t in column))
  header = ["task", *families]
  rows = []
  for task in tasks:
    row = [task]
    for family in families:
      n = columns[family].get(task)
      if n is None:
        row.append("-")
        continue
      good = (checked or {}).get(family, {}).get(task)
      row.append(str(n) if good is None or good == n else f"{good}/{n}")
    rows.append(row)
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

  def line(cells: Sequence[str]) -> str:
    return "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()

  rule = "  ".join("-" * w for w in widths)
  return "\n".join([line(header), rule, *map(line, rows)])
