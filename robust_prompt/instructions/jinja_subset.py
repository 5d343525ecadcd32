"""The part of Jinja that PromptSource templates use and that we can read faithfully.

PromptSource (P3, the templates T0 was trained on) writes each template in Jinja. We do not
render Jinja: we read a template's *structure* and map it onto our template syntax, and refuse
what we cannot map. This module tokenizes a template and classifies its pieces:

* text, `{# comments #}`;
* `{{ expression }}`: a variable path (`question`, `choices.text`, `choices["text"]`), a string
  constant, a subscript (`answer_choices[0]`, `answer_choices[order[2]]`), a filter chain
  (`answers | join("\\n- ")`, `question | trim`) or a call (`'. '.join([...])`);
* `{% statement %}`: `for`, `endfor`, `if`, `endif`, `set`, ...

Expressions are parsed with Python's `ast` (Jinja's expression syntax is Python's for everything
used here; a Jinja filter `x | f(a)` parses as a bitwise or, which we then read as a filter).
Nothing is evaluated.
"""

from __future__ import annotations

import ast
import dataclasses
import re

_TOKEN = re.compile(r"\{\{(.*?)\}\}|\{%(-?)(.*?)(-?)%\}|\{#(.*?)#\}", re.S)


class JinjaError(ValueError):
  """A template piece we cannot map; `kind` is the skip kind (import_result.SKIP_KINDS)."""

  def __init__(self, message: str, kind: str = "jinja_logic"):
    super().__init__(message)
    self.kind = kind


@dataclasses.dataclass(frozen=True)
class Token:
  """One piece of a template: kind "text" (value = the text), "expr" or "stmt" (value = source)."""

  kind: str
  value: str


def tokenize(template: str) -> list[Token]:
  """Splits a Jinja template into text, expression and statement tokens (comments dropped).

  Whitespace control (`{%- ... -%}`) strips the whitespace beside the statement, as Jinja does.
  """
  tokens: list[Token] = []
  pos = 0
  strip_next = False
  for m in _TOKEN.finditer(template):
    text = template[pos : m.start()]
    if strip_next:
      text = text.lstrip()
    if m.group(2) == "-":
      text = text.rstrip()
    if text:
      tokens.append(Token("text", text))
    strip_next = False
    if m.group(1) is not None:
      tokens.append(Token("expr", m.group(1).strip()))
    elif m.group(3) is not None:
      tokens.append(Token("stmt", m.group(3).strip()))
      strip_next = m.group(4) == "-"
    pos = m.end()
  tail = template[pos:]
  if strip_next:
    tail = tail.lstrip()
  if tail:
    tokens.append(Token("text", tail))
  return tokens


def split_at(tokens: list[Token], separator: str = "|||") -> list[list[Token]]:
  """Splits a token list at `separator` occurrences inside text tokens (PromptSource's `|||`)."""
  parts: list[list[Token]] = [[]]
  for token in tokens:
    if token.kind != "text" or separator not in token.value:
      parts[-1].append(token)
      continue
    pieces = token.value.split(separator)
    for i, piece in enumerate(pieces):
      if i:
        parts.append([])
      if piece:
        parts[-1].append(Token("text", piece))
  return parts


def is_blank(token: Token) -> bool:
  return token.kind == "text" and not token.value.strip()


def strip_guard(tokens: list[Token]) -> list[Token]:
  """Removes a whole-template data guard `{% if x != "" %} ... {% endif %}` (or `{% if x %}`).

  PromptSource wraps some templates in such a guard only to skip dataset rows without an
  answer; it says nothing about the phrasing. Other conditionals are left for the caller to
  refuse.
  """
  inner = [i for i, t in enumerate(tokens) if not is_blank(t)]
  if len(inner) < 2:
    return tokens
  first, last = tokens[inner[0]], tokens[inner[-1]]
  if not (first.kind == "stmt" and first.value.startswith("if ") and last.kind == "stmt"):
    return tokens
  if last.value != "endif":
    return tokens
  body = tokens[inner[0] + 1 : inner[-1]]
  if any(t.kind == "stmt" and t.value.split()[0] in ("if", "elif", "else", "endif") for t in body):
    return tokens
  condition = parse_expr(first.value[3:])
  empty_test = (
    isinstance(condition, ast.Compare)
    and len(condition.ops) == 1
    and isinstance(condition.ops[0], ast.NotEq)
    and isinstance(condition.comparators[0], ast.Constant)
    and condition.comparators[0].value == ""
    and path_of(condition.left) is not None
  )
  if not (empty_test or path_of(condition) is not None):
    return tokens
  return tokens[: inner[0]] + body + tokens[inner[-1] + 1 :]


def parse_expr(source: str) -> ast.expr:
  """A Jinja expression as a Python AST (raises JinjaError when it is not Python syntax)."""
  try:
    return ast.parse(source.strip(), mode="eval").body
  except SyntaxError:
    raise JinjaError(f"expression {{{{ {source.strip()} }}}} is not simple jinja") from None


def path_of(node: ast.AST) -> str | None:
  """`question` -> "question"; `choices.text` / `choices["text"]` -> "choices.text"; else None."""
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    base = path_of(node.value)
    return f"{base}.{node.attr}" if base else None
  if (
    isinstance(node, ast.Subscript)
    and isinstance(node.slice, ast.Constant)
    and isinstance(node.slice.value, str)
  ):
    base = path_of(node.value)
    return f"{base}.{node.slice.value}" if base else None
  return None


@dataclasses.dataclass(frozen=True)
class Filter:
  name: str
  args: tuple[ast.expr, ...]


def unfold_filters(node: ast.expr) -> tuple[ast.expr, list[Filter]]:
  """`x | f | g(a)` -> (x, [f, g(a)]). A node without filters gives (node, [])."""
  filters: list[Filter] = []
  while isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
    right = node.right
    if isinstance(right, ast.Name):
      filters.append(Filter(right.id, ()))
    elif isinstance(right, ast.Call) and isinstance(right.func, ast.Name) and not right.keywords:
      filters.append(Filter(right.func.id, tuple(right.args)))
    else:
      raise JinjaError(f"filter {ast.unparse(right)!r} is not simple jinja")
    node = node.left
  return node, filters[::-1]


def constant_str(node: ast.AST) -> str | None:
  return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def join_separator(filters: list[Filter]) -> str | None:
  """The separator of a single `join(SEP)` filter, else None."""
  if len(filters) == 1 and filters[0].name == "join" and len(filters[0].args) == 1:
    return constant_str(filters[0].args[0])
  return None
