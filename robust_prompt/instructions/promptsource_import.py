"""Importing observed instructions from PromptSource (P3 / T0) `templates.yaml` files.

A PromptSource file looks like

    dataset: <hf dataset>
    subset: <config or absent>
    templates:
      <uuid>: !Template
        answer_choices: '{{choices.text | join("|||")}}'   # or "A ||| B ||| C", or null
        id: <uuid>
        jinja: '<input jinja> ||| <target jinja>'
        name: <template name>
        metadata: !TemplateMetadata {original_task: true, choices_in_prompt: true, ...}

We read it with a YAML *safe* loader that turns the two custom tags into plain mappings (the
`promptsource` package is not needed and nothing is executed), split `jinja` at `|||` and read
its structure (`jinja_subset`); nothing is rendered. What we map:

* `answer_choices`: a list of the example's options (`{{choices.text | join("|||")}}`,
  `{{answer0}} ||| {{answer1}} ||| ...`) gives answer space "option_text"; letters
  (`A ||| B ||| C`, or the dataset's `choices.label`) give answer space "letters". Fixed labels
  (`Yes ||| No`) are not the example's options and are refused.
* the options in the input, shown as `{{ answer_choices | join(SEP) }}` (SEP "\\n- " after a
  "- " -> "dashes", "\\n" -> "newline", ", " / " or " -> "inline"), as a `{% for %}` loop over
  the choices (`{{'. '.join([answer_choices[k], choices[k]])}}` -> "letters", `- {{letter}}:
  {{t}}` over `zip(answer_choices, choices.text)` -> "dash_letters", `({{label}}) {{text}}` ->
  "letters_paren", ...) or one by one (`A. {{ answer0 }}\\nB. {{ answer1 }}`, `- {{
  answer_choices[order[0]] }}` after a `{% set order = [...] | choice %}` shuffle). The spacing
  between listed options is normalised (one option a line): our layouts have one line each.
* `{{ name }}` -> `{mapped}` through `placeholder_map` (default: `question` -> the target
  benchmark's main field); other variables may be bound to a constant or dropped
  (`bindings.apply_bindings`, e.g. `drop=("context",)`).
* the target must be the correct answer choice: one expression (`{{ answer_choices[label] }}`,
  `{{ answer_choices[{"A": 0, ...}[answerKey]] }}`, `{{ answer }}`, `{{ answerKey }}`) or a loop
  that selects one of `answer_choices`; PromptSource scores such templates by ranking
  `answer_choices`, which is what our answer spaces do.
* a whole-template guard `{% if answerKey != "" %} ... {% endif %}` (it only skips dataset rows
  without an answer) is ignored.
* `metadata.original_task: false` marks templates T0's training mixture left out;
  `original_task_only=True` refuses them.

Anything else (conditionals, other loops and `set`s, filters that rewrite a field such as
`| lower` or `[1:]`, unknown variables) is reported in `ImportResult.skipped` with the reason,
never approximated.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from robust_prompt.instructions.bindings import apply_bindings, escape
from robust_prompt.instructions.flan_import import default_placeholder_map, group_by_benchmark
from robust_prompt.instructions.import_result import (
  ImportResult,
  ObservedImport,
  Skipped,
  add_import_arguments,
  import_options,
  write_import,
)
from robust_prompt.instructions.jinja_subset import (
  JinjaError,
  Token,
  constant_str,
  is_blank,
  join_separator,
  parse_expr,
  path_of,
  split_at,
  strip_guard,
  tokenize,
  unfold_filters,
)
from robust_prompt.instructions.schema import (
  LETTERED_FORMATS,
  LETTERS,
  InstructionError,
)

TEMPLATES_FILE = "templates.yaml"
_INLINE_SEPS = (", ", " or ", ", or ")
_LABEL, _TEXT = "\x00L", "\x00T"
# One listed option, with `_LABEL`/`_TEXT` standing for its letter and text -> options_format.
_ITEM_LAYOUTS = {
  f"{_LABEL}. {_TEXT}": "letters",
  f"({_LABEL}) {_TEXT}": "letters_paren",
  f"{_LABEL}: {_TEXT}": "letters_colon",
  f"- {_LABEL}: {_TEXT}": "dash_letters",
  f"- {_TEXT}": "dashes",
  _TEXT: "newline",
}
# The marker that introduces option i (0-based) in each layout, when options are listed one by
# one (`A. {{ answer0 }}`).
_MARKERS = {
  "letters": lambda i: f"{LETTERS[i]}. ",
  "letters_paren": lambda i: f"({LETTERS[i]}) ",
  "letters_colon": lambda i: f"{LETTERS[i]}: ",
  "dash_letters": lambda i: f"- {LETTERS[i]}: ",
  "dashes": lambda i: "- ",
}


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


@dataclasses.dataclass(frozen=True)
class PromptSourceFile:
  """One parsed `templates.yaml`: its dataset (and subset) and its templates (dicts)."""

  path: pathlib.Path
  dataset: str
  subset: str | None
  templates: tuple[dict[str, Any], ...]

  @property
  def name(self) -> str:
    """ "<dataset>[_<subset>]", e.g. "cos_e_v1.11" (used in ids)."""
    return "_".join(p for p in (self.dataset, self.subset) if p)

  @property
  def key(self) -> str:
    """ "<dataset>[/<subset>]", e.g. "cos_e/v1.11" (the folder under templates/)."""
    return "/".join(p for p in (self.dataset, self.subset) if p)


def read_promptsource_file(path: str | pathlib.Path) -> PromptSourceFile:
  """Parses one PromptSource `templates.yaml` (a YAML safe load; nothing is executed)."""
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
  except UnicodeDecodeError:
    raise InstructionError("not UTF-8", file=str(path), line=1) from None
  if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
    raise InstructionError(
      "expected a PromptSource templates.yaml with a `templates:` mapping", file=str(path), line=1
    )
  out = []
  for key, template in data["templates"].items():
    if not isinstance(template, dict) or "jinja" not in template:
      raise InstructionError(f"template {key!r} has no `jinja` field", file=str(path), line=1)
    template.setdefault("id", key)
    template.setdefault("__line__", 1)
    out.append(template)
  dataset = str(data.get("dataset") or path.parent.name)
  subset = str(data["subset"]) if data.get("subset") else None
  return PromptSourceFile(path, dataset, subset, tuple(out))


def read_promptsource_templates(path: str | pathlib.Path) -> tuple[str, list[dict[str, Any]]]:
  """Parses one PromptSource `templates.yaml`.

  Returns:
    ("<dataset>[_<subset>]", template dicts), each template dict with its `__line__`.
  """
  parsed = read_promptsource_file(path)
  return parsed.name, list(parsed.templates)


def installed_templates_dir() -> pathlib.Path | None:
  """The `templates/` folder of an installed `promptsource` package (found, not imported)."""
  spec = importlib.util.find_spec("promptsource")
  if spec is None or not spec.origin:
    return None
  path = pathlib.Path(spec.origin).parent / "templates"
  return path if path.is_dir() else None


def find_template_files(
  root: str | pathlib.Path, datasets: Iterable[str] | None = None
) -> list[pathlib.Path]:
  """The `templates.yaml` files under `root` (PromptSource's templates/ folder), sorted.

  Args:
    root: the templates/ folder (or one dataset's folder, or a templates.yaml file).
    datasets: only these "<dataset>[/<subset>]" keys (a dataset name alone takes all its
      subsets); None takes every file.

  Raises:
    InstructionError: when `root` does not exist or a named dataset has no file.
  """
  root = pathlib.Path(root)
  if root.is_file():
    return [root]
  if not root.is_dir():
    raise InstructionError(f"{root}: no such PromptSource templates folder or file")
  files = sorted(root.rglob(TEMPLATES_FILE))
  if datasets is None:
    return files
  chosen = []
  for key in datasets:
    found = [f for f in files if _key_of(root, f) == key or _key_of(root, f).startswith(key + "/")]
    if not found:
      raise InstructionError(
        f"{root}: no PromptSource templates for dataset {key!r} (expected "
        f"{root / key / TEMPLATES_FILE})"
      )
    chosen += [f for f in found if f not in chosen]
  return chosen


def _key_of(root: pathlib.Path, file: pathlib.Path) -> str:
  return file.parent.relative_to(root).as_posix()


def list_promptsource_datasets(root: str | pathlib.Path) -> dict[str, int]:
  """ "<dataset>[/<subset>]" -> number of templates, for every file under `root`."""
  root = pathlib.Path(root)
  return {
    _key_of(root, f): len(read_promptsource_file(f).templates) for f in find_template_files(root)
  }


@dataclasses.dataclass(frozen=True)
class Choices:
  """What a template's `answer_choices` are.

  Attributes:
    kind: "options" (the example's option texts), "labels" (letters standing for the options),
      "fixed" (constant labels such as Yes/No) or "none" (no answer_choices: generation).
    list_path: the dataset list they come from (`choices.text`), when joined from one.
    fields: the dataset fields they are made of (`answer0`, `answer1`, ...), when listed.
    fixed: the constant labels (kind "fixed" / literal "labels").
  """

  kind: str
  list_path: str | None = None
  fields: tuple[str, ...] = ()
  fixed: tuple[str, ...] = ()


def parse_answer_choices(text: str | None) -> Choices:
  """Classifies a template's `answer_choices` string (see `Choices`)."""
  if text is None or not str(text).strip():
    return Choices("none")
  parts = [[t for t in part if not is_blank(t)] for part in split_at(tokenize(str(text)))]
  if len(parts) == 1 and len(parts[0]) == 1 and parts[0][0].kind == "expr":
    base, filters = unfold_filters(parse_expr(parts[0][0].value))
    path = path_of(base)
    if path is not None and join_separator(filters) == "|||":
      kind = "labels" if path.split(".")[-1] in ("label", "labels") else "options"
      return Choices(kind, list_path=path)
  if all(len(p) == 1 and p[0].kind == "text" for p in parts):
    words = tuple(p[0].value.strip() for p in parts)
    if words == tuple(LETTERS[: len(words)]):
      return Choices("labels", fixed=words)
    return Choices("fixed", fixed=words)
  if all(len(p) == 1 and p[0].kind == "expr" for p in parts):
    paths = tuple(path_of(parse_expr(p[0].value)) for p in parts)
    if all(paths):
      return Choices("options", fields=paths)  # type: ignore[arg-type]
  raise JinjaError(f"answer_choices {text!r} is not a list of the options", "choices")


@dataclasses.dataclass(frozen=True)
class FileOptions:
  """How a file's templates name the example's options (from their `answer_choices`).

  A template whose own answer choices are letters still lists the option texts, by the same
  names its sibling templates use for their answer choices (`{{ answer0 }}`, `choices.text`).
  """

  lists: frozenset[str]
  fields: tuple[tuple[str, ...], ...]

  @classmethod
  def of(cls, templates: Iterable[dict[str, Any]]) -> FileOptions:
    lists, fields = set(), []
    for template in templates:
      try:
        choices = parse_answer_choices(template.get("answer_choices"))
      except JinjaError:
        continue
      if choices.kind == "options" and choices.list_path:
        lists.add(choices.list_path)
      if choices.kind == "options" and choices.fields and choices.fields not in fields:
        fields.append(choices.fields)
    return cls(frozenset(lists), tuple(fields))

  def field_index(self, path: str) -> int | None:
    for group in self.fields:
      if path in group:
        return group.index(path)
    return None


def import_promptsource_templates(
  paths: Sequence[str | pathlib.Path] | str | pathlib.Path,
  tasks: Sequence[str],
  *,
  placeholder_map: Mapping[str, str] | None = None,
  seen_by: Sequence[str] = ("t0",),
  source: str = "p3",
  id_prefix: str | None = None,
  bind: Mapping[str, str] | None = None,
  drop: Sequence[str] = (),
  original_task_only: bool = False,
) -> ImportResult:
  """Observed instructions from PromptSource templates.

  Args:
    paths: `templates.yaml` files and/or folders holding them (e.g. PromptSource's templates/).
    tasks: our task names/globs the phrasings are used for, e.g. ["mmlu:*"].
    placeholder_map: PromptSource variable -> our placeholder, on top of `question` -> the main
      field of the target benchmark (e.g. `{"question_stem": "question"}`).
    seen_by: model families trained on these templates.
    source: the `source` recorded on each instruction.
    id_prefix: ids are `<id_prefix>_<template name>` (default: `<source>_<dataset>`).
    bind: PromptSource variable -> constant text put in its place.
    drop: PromptSource variables to remove where that leaves a sensible phrasing
      (`bindings.apply_bindings`); dotted names are written with "_" (`choices_text`).
    original_task_only: refuse templates whose metadata says `original_task: false` (T0's
      training mixture used only the others).

  Returns:
    Instructions (split "observed") and the templates skipped, with reasons.
  """
  if isinstance(paths, (str, pathlib.Path)):
    paths = [paths]
  files = [f for p in paths for f in find_template_files(p)]
  groups = group_by_benchmark(tasks)
  found = ObservedImport(source, tuple(seen_by))
  for file in files:
    parsed = read_promptsource_file(file)
    file_options = FileOptions.of(parsed.templates)
    prefix = id_prefix or f"{source}_{parsed.name}"
    for template in parsed.templates:
      name = str(template.get("name") or template["id"])
      where = f"{file}:{template['__line__']}"
      metadata = template.get("metadata") or {}
      if original_task_only and metadata.get("original_task") is False:
        found.skipped.append(
          Skipped(
            where, name, "metadata original_task is false (not in the training mixture)", "metadata"
          )
        )
        continue
      for bench, bench_tasks in groups.items():
        mapping = default_placeholder_map(bench) | dict(placeholder_map or {})
        try:
          text, options_format, answer_space = convert_template(
            str(template["jinja"]),
            template.get("answer_choices"),
            file_options,
            mapping,
            bind=bind,
            drop=drop,
          )
        except JinjaError as e:
          found.skipped.append(Skipped(where, name, str(e), e.kind))
          break  # the same reason holds for every benchmark
        ident = re.sub(r"\W+", "_", f"{prefix}_{name}").strip("_")
        if len(groups) > 1:
          ident += f"_{bench}"
        found.add(
          name,
          id=ident,
          tasks=tuple(bench_tasks),
          template=text,
          options_format=options_format,
          answer_space=answer_space,
          file=str(file),
          line=template["__line__"],
          origin=f"promptsource:{parsed.key}:{template['id']} ({name})",
        )
  return found.result()


def convert_template(
  jinja: str,
  answer_choices: str | None,
  file_options: FileOptions,
  mapping: Mapping[str, str],
  *,
  bind: Mapping[str, str] | None = None,
  drop: Sequence[str] = (),
) -> tuple[str, str, str]:
  """One PromptSource template -> (our template, options_format, answer_space).

  Raises:
    JinjaError: with the reason (and its skip kind) when the template cannot be mapped.
  """
  choices = parse_answer_choices(answer_choices)
  parts = split_at(strip_guard(tokenize(jinja)))
  if len(parts) != 2:
    raise JinjaError("jinja must have exactly one '|||' (input ||| target)", "syntax")
  if choices.kind == "fixed":
    raise JinjaError(
      f"answer choices {list(choices.fixed)} are fixed labels, not the example's options",
      "choices",
    )
  check_target(parts[1], choices)
  names = {name.replace(".", "_") for name in drop} | {k.replace(".", "_") for k in (bind or {})}
  converter = _InputConverter(choices, file_options, mapping, names)
  template, options_format = converter.convert(parts[0])
  try:
    template = apply_bindings(
      template,
      bind={k.replace(".", "_"): v for k, v in (bind or {}).items()},
      drop=[name.replace(".", "_") for name in drop],
    )
  except ValueError as e:
    raise JinjaError(str(e), "drop") from None
  answer_space = "letters" if choices.kind == "labels" else "option_text"
  if answer_space == "letters" and options_format not in LETTERED_FORMATS:
    raise JinjaError(
      "the answer is a letter but the options are not shown with their letters", "layout"
    )
  return template.strip(), options_format, answer_space


def check_target(tokens: list[Token], choices: Choices) -> None:
  """Raises JinjaError unless the target is the correct one of the answer choices."""
  shown = "".join(
    t.value if t.kind == "text" else "{{" + t.value + "}}" if t.kind == "expr" else "{%...%}"
    for t in tokens
  ).strip()
  if choices.kind == "none":
    raise JinjaError(
      f"no answer_choices: PromptSource scores target {shown!r} as free generation, not as a "
      "choice among the options",
      "answer",
    )
  meaningful = [t for t in tokens if not is_blank(t)]
  if len(meaningful) == 1 and meaningful[0].kind == "expr":
    return
  selects = [t for t in meaningful if t.kind == "expr"]
  if (
    selects
    and all(t.kind in ("expr", "stmt") for t in meaningful)
    and all(_is_choice_subscript(parse_expr(t.value)) for t in selects)
  ):
    return  # e.g. {% for c in choices.label %}{% if c == answerKey %}{{ answer_choices[...] }}...
  raise JinjaError(f"target {shown!r} is not one of the answer choices", "answer")


def _is_choice_subscript(node: ast.AST) -> bool:
  return isinstance(node, ast.Subscript) and path_of(node.value) == "answer_choices"


@dataclasses.dataclass
class _Options:
  """Where the options are shown, once recognised."""

  options_format: str


@dataclasses.dataclass
class _Item:
  """`answer_choices[i]` (or the i-th option field) shown on its own."""

  index: int
  source: str


class _InputConverter:
  """The input side of a template -> our template text and options_format."""

  def __init__(
    self,
    choices: Choices,
    file_options: FileOptions,
    mapping: Mapping[str, str],
    bindable: set[str],
  ):
    self.choices = choices
    self.file_options = file_options
    self.mapping = mapping
    self.bindable = bindable
    self.shuffles: set[str] = set()

  # -- classification of the names a template uses --------------------------------------------

  def _is_option_list(self, path: str | None) -> bool:
    if path is None:
      return False
    if path == "answer_choices":
      return self.choices.kind == "options"
    return path in self.file_options.lists or path == self.choices.list_path

  def _is_label_list(self, node: ast.AST) -> bool:
    path = path_of(node)
    if path == "answer_choices":
      return self.choices.kind == "labels"
    if path is not None:
      return path.split(".")[-1] in ("label", "labels")
    if isinstance(node, ast.List) and node.elts:
      values = [constant_str(e) for e in node.elts]
      return values == list(LETTERS[: len(values)])
    return False

  def _item_index(self, node: ast.AST) -> int | None:
    """`answer_choices[2]`, `answer_choices[order[2]]` or the option field `answer2` -> 2."""
    path = path_of(node)
    if path is not None:
      return self.file_options.field_index(path)
    if not (isinstance(node, ast.Subscript) and self._is_option_list(path_of(node.value))):
      return None
    index = node.slice
    if (
      isinstance(index, ast.Subscript)
      and isinstance(index.value, ast.Name)
      and index.value.id in self.shuffles
    ):
      index = index.slice  # a shuffled order: options are shown in the example's order
    if isinstance(index, ast.Constant) and isinstance(index.value, int):
      return index.value
    return None

  # -- the walk ---------------------------------------------------------------------------------

  def convert(self, tokens: list[Token]) -> tuple[str, str]:
    segments: list[Any] = []
    i = 0
    while i < len(tokens):
      token = tokens[i]
      if token.kind == "text":
        segments.append(token.value)
      elif token.kind == "expr":
        segments.append(self._expression(token.value))
      else:
        head = token.value.split()[0] if token.value.split() else ""
        if head == "set":
          self._set(token.value)
        elif head == "for":
          end = next(
            (
              j
              for j in range(i + 1, len(tokens))
              if tokens[j].kind == "stmt" and tokens[j].value == "endfor"
            ),
            None,
          )
          if end is None:
            raise JinjaError("`for` without `endfor`", "syntax")
          segments.append(self._loop(token.value, tokens[i + 1 : end]))
          i = end
        else:
          raise JinjaError(f"uses jinja logic {{% {token.value} %}} that cannot be mapped")
      i += 1
    segments = self._items_to_options(_merge_text(segments))
    shown = [s for s in segments if isinstance(s, _Options)]
    if len(shown) > 1:
      raise JinjaError("the options are shown twice", "layout")
    out = []
    for s in segments:
      if isinstance(s, str):
        out.append(escape(s))
      elif isinstance(s, _Options):
        out.append("{options}")
      else:
        out.append(s.placeholder)
    return "".join(out), shown[0].options_format if shown else "none"

  def _set(self, statement: str) -> None:
    m = re.fullmatch(r"set\s+(\w+)\s*=\s*(.+)", statement, re.S)
    if m:
      base, filters = unfold_filters(parse_expr(m.group(2)))
      if isinstance(base, ast.List) and [f.name for f in filters] == ["choice"]:
        self.shuffles.add(m.group(1))  # a random order of the options, chosen per example
        return
    raise JinjaError(f"uses jinja logic {{% {statement} %}} that cannot be mapped")

  def _expression(self, source: str) -> Any:
    node = parse_expr(source)
    text = constant_str(node)
    if text is not None:
      return text
    base, filters = unfold_filters(node)
    path = path_of(base)
    sep = join_separator(filters)
    if filters and sep is not None and self._is_option_list(path):
      return _Join(sep)
    index = self._item_index(node)
    if index is not None and not filters:
      return _Item(index, source)
    if path is None:
      if isinstance(base, ast.Subscript) and path_of(base.value):
        raise JinjaError(
          f"{{{{ {source} }}}} takes part of {{{{ {path_of(base.value)} }}}}; our templates "
          "insert fields whole",
          "filter",
        )
      raise JinjaError(f"expression {{{{ {source} }}}} is not a plain variable")
    for f in filters:
      harmless = (f.name == "trim" and not f.args) or (f.name == "join" and sep is not None)
      if not harmless:
        raise JinjaError(
          f"filter |{f.name} rewrites the text of {{{{ {path} }}}}; our templates insert "
          "fields verbatim",
          "filter",
        )
    return self._field(path)

  def _field(self, path: str) -> _Field:
    if path in self.mapping:
      return _Field("{" + self.mapping[path] + "}")
    name = path.replace(".", "_")
    if name in self.bindable:
      return _Field("{" + name + "}")
    raise JinjaError(
      f"variable {{{{{path}}}}} has no mapping; pass placeholder_map={{...}} to map it (or bind "
      "or drop it)",
      "unmapped",
    )

  def _loop(self, header: str, body: list[Token]) -> _Options:
    m = re.fullmatch(r"for\s+(\w+)\s+in\s+(.+)", header, re.S)
    zipped = re.fullmatch(r"for\s+(\w+)\s*,\s*(\w+)\s+in\s+(.+)", header, re.S)
    roles: dict[str, str] = {}  # loop variable -> "label" / "text" / "index"
    if zipped:
      call = parse_expr(zipped.group(3))
      if not (isinstance(call, ast.Call) and path_of(call.func) == "zip" and len(call.args) == 2):
        raise JinjaError(f"uses jinja logic {{% {header} %}} that cannot be mapped")
      for var, arg in zip(zipped.groups()[:2], call.args):
        roles[var] = self._list_role(arg, header)
    elif m:
      base, filters = unfold_filters(parse_expr(m.group(2)))
      is_range = (
        isinstance(base, ast.Call) and path_of(base.func) == "range" and len(base.args) == 1
      )
      if not is_range:
        raise JinjaError(f"uses jinja logic {{% {header} %}} that cannot be mapped")
      inner, inner_filters = unfold_filters(base.args[0])
      if [f.name for f in inner_filters] != ["length"] or path_of(inner) is None:
        raise JinjaError(f"uses jinja logic {{% {header} %}} that cannot be mapped")
      roles[m.group(1)] = "index"
    else:
      raise JinjaError(f"uses jinja logic {{% {header} %}} that cannot be mapped")
    item = []
    for token in body:
      if token.kind == "text":
        item.append(token.value)
      elif token.kind == "expr":
        item.append(self._loop_expression(token.value, roles, header))
      else:
        raise JinjaError(f"uses jinja logic {{% {token.value} %}} inside a loop")
    text = "".join(item)
    layout = text.strip()
    if "\n" in text and layout in _ITEM_LAYOUTS:
      options_format = _ITEM_LAYOUTS[layout]
    elif "\n" not in text and layout == f"({_LABEL}) {_TEXT}":
      options_format = "letters_paren_inline"
    else:
      shown = layout.replace(_LABEL, "A").replace(_TEXT, "x")
      raise JinjaError(f"options listed as {shown!r}: no options_format has that layout", "layout")
    if (_LABEL in layout) != (options_format in LETTERED_FORMATS) or _TEXT not in layout:
      raise JinjaError("a loop that does not list the options", "layout")
    return _Options(options_format)

  def _list_role(self, node: ast.AST, header: str) -> str:
    if self._is_label_list(node):
      return "label"
    if self._is_option_list(path_of(node)):
      return "text"
    raise JinjaError(f"uses jinja logic {{% {header} %}} over a list that is not the options")

  def _loop_expression(self, source: str, roles: dict[str, str], header: str) -> str:
    node = parse_expr(source)
    if isinstance(node, ast.Name) and roles.get(node.id) in ("label", "text"):
      return _LABEL if roles[node.id] == "label" else _TEXT
    if isinstance(node, ast.Subscript) and _is_index(node.slice, roles):
      role = self._list_role(node.value, header)
      return _LABEL if role == "label" else _TEXT
    # `'. '.join([answer_choices[k], choices[k]])`: a label and a text joined by a separator.
    if (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and node.func.attr == "join"
      and constant_str(node.func.value) is not None
      and len(node.args) == 1
      and isinstance(node.args[0], ast.List)
      and len(node.args[0].elts) == 2
    ):
      pieces = [self._loop_expression(ast.unparse(e), roles, header) for e in node.args[0].elts]
      return constant_str(node.func.value).join(pieces)
    raise JinjaError(f"expression {{{{ {source} }}}} in a loop is not an option or its label")

  def _items_to_options(self, segments: list[Any]) -> list[Any]:
    """Options shown one by one (`A. {{ answer0 }}\\nB. {{ answer1 }}`) -> one `_Options`."""
    joins = [i for i, s in enumerate(segments) if isinstance(s, _Join)]
    for i in reversed(joins):
      segments = self._join_to_options(segments, i)
    positions = [i for i, s in enumerate(segments) if isinstance(s, _Item)]
    if not positions:
      return segments
    items = [segments[i] for i in positions]
    consecutive = all(
      b - a == 2 and isinstance(segments[a + 1], str) for a, b in zip(positions, positions[1:])
    )
    if len(items) < 2 or not consecutive or [it.index for it in items] != list(range(len(items))):
      raise JinjaError(
        f"answer choices shown one at a time ({', '.join(it.source for it in items)}), not as a "
        "list of all the options",
        "layout",
      )
    gaps = [segments[p - 1] for p in positions[1:]]
    markers = []
    for gap in gaps:
      m = re.fullmatch(r"[ \t]*\n\s*?([^\n]*)", gap)
      if not m:
        raise JinjaError("options listed on one line with no options_format for it", "layout")
      markers.append(m.group(1))
    options_format = next(
      (f for f, marker in _MARKERS.items() if markers[0].strip() == marker(1).strip()),
      "newline" if not markers[0].strip() else None,
    )
    if options_format is None or any(
      m.strip() != (_MARKERS[options_format](j + 1).strip() if options_format in _MARKERS else "")
      for j, m in enumerate(markers)
    ):
      raise JinjaError(
        f"options listed as {markers[0]!r}...: no options_format has that layout", "layout"
      )
    first = positions[0]
    before = segments[first - 1] if first > 0 and isinstance(segments[first - 1], str) else ""
    marker0 = _MARKERS[options_format](0).strip() if options_format in _MARKERS else ""
    head = before.rstrip(" \t")
    if not head.endswith(marker0):
      raise JinjaError("the first option is not introduced like the others", "layout")
    head = head[: len(head) - len(marker0)]
    if head and not head.rstrip(" \t").endswith("\n"):
      raise JinjaError("options listed after text on the same line", "layout")
    last = positions[-1]
    after = segments[last + 1] if last + 1 < len(segments) else ""
    if isinstance(after, str) and after.strip(" \t") and not after.lstrip(" \t").startswith("\n"):
      raise JinjaError("text follows the last option on its line", "layout")
    start = first - 1 if before else first
    return segments[:start] + [head, _Options(options_format)] + segments[last + 1 :]

  def _join_to_options(self, segments: list[Any], i: int) -> list[Any]:
    sep = segments[i].separator
    norm = re.sub(r"[ \t]*\n[ \t]*", "\n", sep)
    before = segments[i - 1] if i > 0 and isinstance(segments[i - 1], str) else ""
    if norm.rstrip() == "\n-":
      stripped = before.rstrip(" \t")
      if not stripped.endswith("-") or not (stripped[:-1].endswith("\n") or not stripped[:-1]):
        raise JinjaError(f"answer choices joined with {sep!r} after {before[-10:]!r}", "layout")
      new_before, options_format = stripped[:-1], "dashes"
    elif norm == "\n":
      new_before, options_format = before, "newline"
    elif sep in _INLINE_SEPS:
      new_before, options_format = before, "inline"
    else:
      raise JinjaError(f"answer choices joined with {sep!r}: no matching options_format", "layout")
    start = i - 1 if before else i
    return segments[:start] + [new_before, _Options(options_format)] + segments[i + 1 :]


@dataclasses.dataclass
class _Join:
  separator: str


@dataclasses.dataclass
class _Field:
  placeholder: str


def _is_index(node: ast.AST, roles: dict[str, str]) -> bool:
  return isinstance(node, ast.Name) and roles.get(node.id) == "index"


def _merge_text(segments: list[Any]) -> list[Any]:
  out: list[Any] = []
  for s in segments:
    if isinstance(s, str) and out and isinstance(out[-1], str):
      out[-1] += s
    else:
      out.append(s)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m robust_prompt.instructions.promptsource_import a/templates.yaml --tasks mmlu:* --out F`."""
  import argparse

  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("templates", nargs="+", help="PromptSource templates.yaml files or folders")
  parser.add_argument("--tasks", required=True, help="comma-separated task names/globs")
  add_import_arguments(parser, "P3_NAME=OUR_NAME", seen_by="t0", id_prefix="p3_<dataset>")
  args = parser.parse_args(argv)
  result = import_promptsource_templates(
    args.templates, [t for t in args.tasks.split(",") if t], **import_options(args)
  )
  return write_import(result, args.out)


if __name__ == "__main__":
  raise SystemExit(main())
