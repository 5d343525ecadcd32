"""Importing observed instructions from FLAN v2's `flan/v2/templates.py`, without running it.

FLAN keeps its zero-shot templates in a module-level dict

    PATTERNS = {
        "<flan task>": [("<input template>", "<output template>"), ...],
        ...
    }

(plus later `PATTERNS["a"] = PATTERNS["b"]` aliases and `PATTERNS["a"] = [...]` additions). We read
the file with `ast` and `ast.literal_eval` on the literal nodes only: the module is never imported
or executed (it imports FLAN's own packages and could run anything).

Each direct-answer template (output `{answer}`) of the FLAN tasks named in `task_map` becomes an
observed `Instruction` for our tasks: FLAN's `{options_}` (rendered by FLAN as "OPTIONS:\\n- x\\n- y")
becomes "OPTIONS:\\n{options}" with options_format "dashes" and answer_space "option_text", and the
other placeholders are renamed through `placeholder_map` (default: FLAN's `{question}` -> the main
field of the target benchmark, `{question}` for MMLU and `{input}` for BIG-bench), bound to a
constant or dropped (`bindings.apply_bindings`). Templates that cannot be mapped (other outputs,
unknown placeholders) are reported, not guessed.

Options may also be shown in a lettered layout (`options_format="letters_paren"`, ...; the answer
space is then "letters"), as FLAN v2 itself renders some option lists, and `no_options=True`
imports FLAN v2's no-options variant of each template (FLAN removes `{options_}` exactly as
`strip_options` does here; for the tasks of FLAN 2021, `flan_templates_branched.py` holds the
phrasings FLAN v2 builds that variant from).
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections.abc import Mapping, Sequence

from robust_prompt.instructions.bindings import apply_bindings
from robust_prompt.instructions.import_result import (
  ImportResult,
  ObservedImport,
  Skipped,
  add_import_arguments,
  import_options,
  parse_mapping,
  write_import,
)
from robust_prompt.instructions.schema import (
  LETTERED_FORMATS,
  OPTIONS_FORMATS,
  InstructionError,
  template_placeholders,
)
from robust_prompt.instructions.validate import BENCHMARK_FIELDS, benchmark_of

__all__ = ["ImportResult", "Skipped", "import_flan_templates", "read_flan_patterns"]

FLAN_OPTIONS = ("options_", "options_str")
FLAN_OPTIONS_HEADER = "OPTIONS:\n"
# The file names of FLAN v2's template modules (flan/v2/).
TEMPLATES_FILE = "templates.py"
BRANCHED_FILE = "flan_templates_branched.py"


def read_flan_patterns(
  path: str | pathlib.Path, variable: str = "PATTERNS"
) -> tuple[dict[str, list[tuple[str, str, int]]], list[Skipped]]:
  """Parses the `variable` dict of a FLAN templates module with `ast` (no execution).

  Returns:
    ({flan task: [(input template, output template, line), ...]}, skipped entries).
  """
  path = pathlib.Path(path)
  try:
    source = path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise InstructionError(f"not UTF-8 (byte {e.start})", file=str(path), line=1) from None
  try:
    tree = ast.parse(source, filename=str(path))
  except SyntaxError as e:
    raise InstructionError(f"not valid Python: {e.msg}", file=str(path), line=e.lineno) from None
  patterns: dict[str, list[tuple[str, str, int]]] = {}
  skipped: list[Skipped] = []
  found = False

  def literal_list(key: str, node: ast.AST) -> list[tuple[str, str, int]] | None:
    if isinstance(node, ast.Subscript) and _is_name(node.value, variable):
      # An alias: `PATTERNS["a"] = PATTERNS["b"]` or `"a": PATTERNS["b"]` (resolved in order).
      other = _const_str(node.slice)
      if other is not None and other in patterns:
        return list(patterns[other])
    if not isinstance(node, (ast.List, ast.Tuple)):
      skipped.append(Skipped(f"{path}:{node.lineno}", key, "value is not a literal list"))
      return None
    out = []
    for elt in node.elts:
      try:
        value = ast.literal_eval(elt)
      except ValueError:
        skipped.append(Skipped(f"{path}:{elt.lineno}", key, "template is not a literal"))
        continue
      if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, str) for v in value)
      ):
        skipped.append(
          Skipped(f"{path}:{elt.lineno}", key, "not an (input, output) pair of strings")
        )
        continue
      out.append((value[0], value[1], elt.lineno))
    return out

  for stmt in tree.body:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
      target, value = stmt.targets[0], stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
      target, value = stmt.target, stmt.value
    else:
      continue
    if _is_name(target, variable) and isinstance(value, ast.Dict):
      found = True
      for k, v in zip(value.keys, value.values):
        key = _const_str(k) if k is not None else None
        if key is None:
          skipped.append(Skipped(f"{path}:{v.lineno}", "?", "dict key is not a string literal"))
          continue
        items = literal_list(key, v)
        if items is not None:
          patterns[key] = items
    elif isinstance(target, ast.Subscript) and _is_name(target.value, variable):
      key = _const_str(target.slice)
      if key is None:
        continue
      items = literal_list(key, value)
      if items is not None:
        patterns[key] = items
  if not found:
    raise InstructionError(
      f"no top-level `{variable} = {{...}}` dict literal found; is this FLAN's "
      "flan/v2/templates.py?",
      file=str(path),
      line=1,
    )
  return patterns, skipped


def import_flan_templates(
  path: str | pathlib.Path,
  task_map: Mapping[str, Sequence[str]],
  *,
  placeholder_map: Mapping[str, str] | None = None,
  seen_by: Sequence[str] = ("flan-t5",),
  source: str = "flan_v2",
  variable: str = "PATTERNS",
  id_prefix: str | None = None,
  options_format: str = "dashes",
  no_options: bool = False,
  bind: Mapping[str, str] | None = None,
  drop: Sequence[str] = (),
) -> ImportResult:
  """Observed instructions from FLAN templates.

  Args:
    path: FLAN's `flan/v2/templates.py` or `flan/v2/flan_templates_branched.py` (or a file in
      the same format).
    task_map: FLAN task name -> our task names/globs the phrasings are used for, e.g.
      `{"arc": ["mmlu:*"], "trivia_qa": ["bigbench:hindu_knowledge"]}`.
    placeholder_map: FLAN placeholder -> ours, on top of the defaults (`question` -> the target
      benchmark's main field). Needed for FLAN tasks whose main field has another name,
      e.g. `{"context": "input"}`.
    seen_by: model families trained on these templates.
    source: the `source` recorded on each instruction.
    variable: the dict to read (FLAN also has e.g. `FEWSHOT_PATTERNS`, which holds objects).
    id_prefix: ids are `<id_prefix>_<flan task>_<k>` (default: `source`). Ids must be unique
      across every loaded file: give each import run that maps the same FLAN task onto other
      tasks its own prefix.
    options_format: how FLAN's `{options_}` list is shown: "dashes" (FLAN's "OPTIONS:\\n- x")
      or another list layout; a lettered one ("letters_paren": "(A) x", ...) makes the answer
      space "letters".
    no_options: import FLAN v2's no-options variant instead (`strip_options`): the options are
      not shown and the model is scored on the option texts. Ids get a `_noopt` suffix.
    bind: FLAN placeholder -> constant text put in its place.
    drop: FLAN placeholders to remove (only where one stands alone on its line and the rest of
      the template does not refer to it; see `bindings.apply_bindings`).

  Returns:
    Instructions (split "observed", ids `<id_prefix>_<flan task>_<k>` with k the 1-based
    template index, plus `_<benchmark>` when the targets span several benchmarks) and the
    templates that were skipped, with reasons.
  """
  if options_format not in OPTIONS_FORMATS or options_format == "none":
    raise ValueError(
      f"options_format {options_format!r}: choose a list layout from "
      f"{[f for f in OPTIONS_FORMATS if f != 'none']}"
    )
  path = pathlib.Path(path)
  patterns, skipped = read_flan_patterns(path, variable)
  found = ObservedImport(source, tuple(seen_by), skipped=skipped)
  answer_space = "letters" if options_format in LETTERED_FORMATS else "option_text"
  if options_format == "numbers":
    answer_space = "numbers"
  for flan_task, targets in task_map.items():
    if flan_task not in patterns:
      raise InstructionError(
        f"FLAN task {flan_task!r} is not in {variable}; known tasks include "
        f"{sorted(patterns)[:20]}",
        file=str(path),
        line=1,
      )
    groups = group_by_benchmark(targets)
    for k, (inp, out, line) in enumerate(patterns[flan_task], start=1):
      where = f"{path}:{line}"
      if out.strip() != "{answer}":
        found.skipped.append(
          Skipped(where, flan_task, f"output template {out!r} is not the answer itself", "answer")
        )
        continue
      if no_options:
        inp = strip_options(inp)
      for bench, bench_targets in groups.items():
        ident = f"{id_prefix or source}_{flan_task}_{k:02d}" + (
          f"_{bench}" if len(groups) > 1 else ""
        )
        ident += "_noopt" if no_options else ""
        mapping = default_placeholder_map(bench) | dict(placeholder_map or {})
        try:
          bound = apply_bindings(inp, bind=bind, drop=drop)
        except ValueError as e:
          found.skipped.append(Skipped(where, flan_task, str(e), "drop"))
          continue
        try:
          template, has_options = _convert(bound, mapping)
        except ValueError as e:
          kind = "syntax" if str(e).startswith("bad template") else "unmapped"
          found.skipped.append(Skipped(where, flan_task, str(e), kind))
          continue
        found.add(
          flan_task,
          id=ident,
          tasks=tuple(bench_targets),
          template=template,
          options_format=options_format if has_options else "none",
          answer_space=answer_space if has_options else "option_text",
          file=str(path),
          line=line,
          origin=f"{path.name}:{flan_task}#{k}" + (" (no options)" if no_options else ""),
        )
  return found.result()


def strip_options(template: str) -> str:
  """FLAN v2's no-options variant of a template (the replacements `PATTERNS_NO_OPTIONS` makes)."""
  for shown in ("\n\n{options_}", "\n{options_}", "{options_}", "\n\n{options_str}"):
    template = template.replace(shown, "")
  return template


def _convert(template: str, mapping: Mapping[str, str]) -> tuple[str, bool]:
  """FLAN input template -> our template (placeholders renamed) and whether it shows options."""
  try:
    names = template_placeholders(template)
  except ValueError as e:
    raise ValueError(f"bad template: {e}") from None
  unknown = [n for n in names if n not in FLAN_OPTIONS and n not in mapping]
  if unknown:
    raise ValueError(
      f"placeholder(s) {['{' + n + '}' for n in unknown]} have no mapping; pass "
      "placeholder_map={...} to map them onto the task's fields (or bind/drop them)"
    )
  has_options = False

  def repl(m: re.Match) -> str:
    nonlocal has_options
    if m.group(1):  # an escaped "{{" or "}}": keep as is
      return m.group(0)
    name = m.group(2)
    if name in FLAN_OPTIONS:
      has_options = True
      return FLAN_OPTIONS_HEADER + "{options}"
    return "{" + mapping[name] + "}"

  converted = re.sub(r"(\{\{|\}\})|\{([A-Za-z_][A-Za-z0-9_]*)\}", repl, template)
  return converted, has_options


def list_flan_tasks(
  path: str | pathlib.Path, variable: str = "PATTERNS"
) -> dict[str, tuple[int, int]]:
  """FLAN task key -> (templates, templates whose output is the answer itself)."""
  patterns, _ = read_flan_patterns(path, variable)
  return {
    task: (len(items), sum(out.strip() == "{answer}" for _, out, _ in items))
    for task, items in patterns.items()
  }


def default_placeholder_map(bench: str) -> dict[str, str]:
  fields = BENCHMARK_FIELDS.get(bench)
  return {"question": fields.main} if fields else {}


def group_by_benchmark(targets: Sequence[str]) -> dict[str, list[str]]:
  groups: dict[str, list[str]] = {}
  for t in [targets] if isinstance(targets, str) else targets:
    groups.setdefault(benchmark_of(t), []).append(t)
  return groups


def _is_name(node: ast.AST, name: str) -> bool:
  return isinstance(node, ast.Name) and node.id == name


def _const_str(node: ast.AST) -> str | None:
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m robust_prompt.instructions.flan_import templates.py --map ai2_arc=mmlu:* --out F`."""
  import argparse

  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("templates", help="FLAN's flan/v2/templates.py (it is parsed, not run)")
  parser.add_argument(
    "--map", action="append", required=True, help="FLAN_TASK=OUR_TASK_GLOB[,...] (repeatable)"
  )
  add_import_arguments(parser, "FLAN_NAME=OUR_NAME", seen_by="flan-t5", id_prefix="flan_v2")
  args = parser.parse_args(argv)
  options = import_options(args)  # --placeholder is checked before --map, as it always was
  result = import_flan_templates(args.templates, parse_mapping(args.map, "--map"), **options)
  return write_import(result, args.out)


if __name__ == "__main__":
  raise SystemExit(main())
