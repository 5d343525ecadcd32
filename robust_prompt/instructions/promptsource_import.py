"""Importing observed instructions from PromptSource (P3 / T0) `templates.yaml` files.

A PromptSource file looks like

    dataset: <hf dataset>
    subset: <config or absent>
    templates:
      <uuid>: !Template
        answer_choices: '{{choices.text | join("|||")}}'   # or "yes ||| no", or null
        id: <uuid>
        jinja: '<input jinja> ||| <target jinja>'
        name: <template name>
        metadata: !TemplateMetadata {...}

We read it with a YAML *safe* loader that turns the two custom tags into plain mappings (the
`promptsource` package is not needed and nothing is executed), split `jinja` at `|||`, and map
the input side onto our template syntax:

* `{{ name }}` -> `{mapped}` through `placeholder_map` (default: `question` -> the target
  benchmark's main field);
* `{{ answer_choices | join(SEP) }}` -> `{options}`: SEP "\\n- " (after a "- ") gives "dashes",
  "\\n" gives "newline", ", " / " or " / ", or " give "inline";
* the target side must be `{{ answer_choices[...] }}` (the answer is one of the choices), so the
  answer space is "option_text".

Anything else (loops, conditionals, other filters, indexing, unknown variables) is jinja logic we
cannot map faithfully: the template is reported in `ImportResult.skipped`, never approximated.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from robust_prompt.instructions.flan_import import (
  ImportResult,
  Skipped,
  default_placeholder_map,
  group_by_benchmark,
)
from robust_prompt.instructions.schema import Instruction, InstructionError
from robust_prompt.instructions.validate import validate_instruction

_JINJA = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}|\{#(.*?)#\}", re.S)
_VAR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_JOIN = re.compile(
  r"""^\s*answer_choices\s*\|\s*join\(\s*(?P<q>["'])(?P<sep>.*?)(?P=q)\s*\)\s*$""", re.S
)
_TARGET = re.compile(r"^\s*\{\{\s*answer_choices\s*\[[^\]]+\]\s*\}\}\s*$", re.S)
_INLINE_SEPS = (", ", " or ", ", or ")


class _Loader(yaml.SafeLoader):
  """SafeLoader that reads PromptSource's `!Template`/`!TemplateMetadata` tags as mappings."""


def _construct_template(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
  value = loader.construct_mapping(node, deep=True)
  value["__line__"] = node.start_mark.line + 1
  return value


_Loader.add_constructor("!Template", _construct_template)
_Loader.add_constructor(
  "!TemplateMetadata", lambda loader, node: loader.construct_mapping(node, deep=True)
)


def read_promptsource_templates(path: str | pathlib.Path) -> tuple[str, list[dict[str, Any]]]:
  """Parses one PromptSource `templates.yaml`.

  Returns:
    ("<dataset>[_<subset>]", template dicts), each template dict with its `__line__`.
  """
  path = pathlib.Path(path)
  try:
    with open(path, encoding="utf-8") as f:
      data = yaml.load(f, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    raise InstructionError(
      f"invalid YAML: {getattr(e, 'problem', e)}",
      file=str(path),
      line=mark.line + 1 if mark else 1,
    ) from None
  if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
    raise InstructionError(
      "expected a PromptSource templates.yaml with a `templates:` mapping", file=str(path), line=1
    )
  out = []
  for key, template in data["templates"].items():
    if not isinstance(template, dict) or "jinja" not in template:
      raise InstructionError(f"template {key!r} has no `jinja` field", file=str(path), line=1)
    template.setdefault("id", key)
    out.append(template)
  dataset = "_".join(str(data[k]) for k in ("dataset", "subset") if data.get(k))
  return dataset, out


def import_promptsource_templates(
  paths: Sequence[str | pathlib.Path] | str | pathlib.Path,
  tasks: Sequence[str],
  *,
  placeholder_map: Mapping[str, str] | None = None,
  seen_by: Sequence[str] = ("t0",),
  source: str = "p3",
  id_prefix: str | None = None,
) -> ImportResult:
  """Observed instructions from PromptSource templates.

  Args:
    paths: one or more `templates.yaml` files (e.g. ai2_arc's, openbookqa's).
    tasks: our task names/globs the phrasings are used for, e.g. ["mmlu:*"].
    placeholder_map: PromptSource variable -> our placeholder, on top of `question` -> the main
      field of the target benchmark (e.g. `{"question_stem": "question"}`).
    seen_by: model families trained on these templates.
    source: the `source` recorded on each instruction.
    id_prefix: ids are `<id_prefix>_<template name>` (default: `<source>_<dataset>`).

  Returns:
    Instructions (split "observed") and the templates skipped, with reasons.
  """
  if isinstance(paths, (str, pathlib.Path)):
    paths = [paths]
  groups = group_by_benchmark(tasks)
  instructions: list[Instruction] = []
  skipped: list[Skipped] = []
  for path in paths:
    path = pathlib.Path(path)
    dataset, templates = read_promptsource_templates(path)
    prefix = id_prefix or f"{source}_{dataset or path.parent.name}"
    for template in templates:
      name = str(template.get("name") or template["id"])
      where = f"{path}:{template['__line__']}"
      parts = str(template["jinja"]).split("|||")
      if len(parts) != 2:
        skipped.append(Skipped(where, name, "jinja must have exactly one '|||' (input ||| target)"))
        continue
      if not _TARGET.match(parts[1]):
        skipped.append(
          Skipped(
            where, name, f"target {parts[1].strip()!r} is not `{{{{ answer_choices[...] }}}}`"
          )
        )
        continue
      for bench, bench_tasks in groups.items():
        mapping = default_placeholder_map(bench) | dict(placeholder_map or {})
        try:
          text, options_format = _convert(parts[0], mapping)
        except ValueError as e:
          skipped.append(Skipped(where, name, str(e)))
          continue
        ident = re.sub(r"\W+", "_", f"{prefix}_{name}").strip("_")
        if len(groups) > 1:
          ident += f"_{bench}"
        instruction = Instruction(
          id=ident,
          tasks=tuple(bench_tasks),
          template=text,
          options_format=options_format,
          answer_space="option_text",
          split="observed",
          source=source,
          seen_by=tuple(seen_by),
          file=str(path),
          line=template["__line__"],
        )
        try:
          validate_instruction(instruction)
        except InstructionError as e:
          skipped.append(Skipped(where, name, e.reason))
          continue
        instructions.append(instruction)
  return ImportResult(tuple(instructions), tuple(skipped))


def _escape(text: str) -> str:
  return text.replace("{", "{{").replace("}", "}}")


def _convert(jinja: str, mapping: Mapping[str, str]) -> tuple[str, str]:
  """Input-side jinja -> (our template, options_format). Raises ValueError when unmappable."""
  out: list[str] = []
  options_format = "none"
  pos = 0
  for m in _JINJA.finditer(jinja):
    literal = jinja[pos : m.start()]
    pos = m.end()
    if m.group(2) is not None:
      raise ValueError(f"uses jinja logic {{%{m.group(2)}%}} that cannot be mapped")
    if m.group(3) is not None:  # a jinja comment
      out.append(_escape(literal))
      continue
    expr = m.group(1)
    join = _JOIN.match(expr)
    var = _VAR.match(expr)
    if join:
      sep = join.group("sep").encode("utf-8").decode("unicode_escape")
      if sep == "\n- " and literal.endswith("- "):
        literal, options_format = literal[:-2], "dashes"
      elif sep == "\n":
        options_format = "newline"
      elif sep in _INLINE_SEPS:
        options_format = "inline"
      else:
        raise ValueError(f"answer_choices joined with {sep!r}: no matching options_format")
      out.append(_escape(literal) + "{options}")
    elif var:
      name = var.group(1)
      if name not in mapping:
        raise ValueError(
          f"variable {{{{{name}}}}} has no mapping; pass placeholder_map={{...}} to map it"
        )
      out.append(_escape(literal) + "{" + mapping[name] + "}")
    else:
      raise ValueError(f"expression {{{{{expr.strip()}}}}} is not a plain variable")
  out.append(_escape(jinja[pos:]))
  return "".join(out).strip(), options_format


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m robust_prompt.instructions.promptsource_import a/templates.yaml --tasks mmlu:* --out F`."""
  import argparse

  from robust_prompt.instructions.flan_import import parse_mapping
  from robust_prompt.instructions.io import write_instructions

  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("templates", nargs="+", help="PromptSource templates.yaml files")
  parser.add_argument("--tasks", required=True, help="comma-separated task names/globs")
  parser.add_argument("--placeholder", action="append", default=[], help="P3_NAME=OUR_NAME")
  parser.add_argument("--seen_by", default="t0", help="comma-separated model families")
  parser.add_argument("--id_prefix", default=None, help="id prefix (default: p3_<dataset>)")
  parser.add_argument("--out", required=True, help="output JSONL file")
  args = parser.parse_args(argv)
  placeholders = {k: v[0] for k, v in parse_mapping(args.placeholder, "--placeholder").items()}
  result = import_promptsource_templates(
    args.templates,
    [t for t in args.tasks.split(",") if t],
    placeholder_map=placeholders,
    seen_by=[s for s in args.seen_by.split(",") if s],
    id_prefix=args.id_prefix,
  )
  write_instructions(result.instructions, args.out)
  print(result.summary())
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
