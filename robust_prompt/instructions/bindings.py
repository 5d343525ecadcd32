"""Binding a source template's placeholder to a constant, or dropping it, before import.

Source templates name fields our benchmarks do not have: FLAN's openbookqa shows `{fact}`,
PromptSource's cosmos_qa and quail show `{{ context }}`. An importer may

* **bind** such a placeholder to a constant text (`bind={"fact": "..."}`), which then becomes
  part of the instruction's wording; or
* **drop** it (`drop=("context",)`), but only where that leaves a sensible phrasing: the
  placeholder must stand alone on its line (the whole line is removed), and the remaining text
  must not refer to what was dropped (its own name, or words such as "context", "passage",
  "fact"; see `REFERENCE_WORDS`). "{context}\\n{question}\\nPick the best answer:" loses the
  context cleanly; "Context: {context}" or "According to the above context, ..." do not, and
  are refused rather than approximated.

Both work on our template syntax (`str.format` placeholders, literal braces doubled), after an
importer has converted the source's own syntax.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping

# Words by which a template refers to a passage-like field; a template that still says one of
# them after a drop would ask about something the model is no longer shown.
REFERENCE_WORDS = (
  "article",
  "background",
  "context",
  "conversation",
  "dialog",
  "dialogue",
  "fact",
  "facts",
  "information",
  "paragraph",
  "passage",
  "story",
  "support",
  "text",
)


def escape(text: str) -> str:
  """Literal text for our templates: braces doubled (as `str.format` reads them)."""
  return text.replace("{", "{{").replace("}", "}}")


def literal_text(template: str) -> str:
  """The template's literal text, placeholders removed (braces un-doubled)."""
  return "".join(literal for literal, _, _, _ in string.Formatter().parse(template))


def _words(text: str) -> set[str]:
  return set(re.findall(r"[a-z]+", text.lower()))


def apply_bindings(
  template: str, *, bind: Mapping[str, str] | None = None, drop: Iterable[str] = ()
) -> str:
  """Applies `bind` (placeholder -> constant text) and `drop` (placeholders) to `template`.

  Placeholders named in neither are kept. Raises ValueError (with the reason) when a dropped
  placeholder does not stand alone on its line, or when the text left still refers to it.
  """
  bind = dict(bind or {})
  drop = [name for name in drop if "{" + name + "}" in _placeholder_tokens(template)]
  lines = template.split("\n")
  kept = []
  for line in lines:
    names = _placeholders_in(line)
    dropped_here = [n for n in names if n in drop]
    if not dropped_here:
      kept.append(line)
      continue
    if line.strip() != "{" + dropped_here[0] + "}":
      raise ValueError(
        f"cannot drop {{{dropped_here[0]}}}: it is part of the line {line.strip()!r} (only a "
        "placeholder alone on its line can be dropped without breaking the sentence)"
      )
  text = "\n".join(kept)
  if len(kept) < len(lines):
    text = _collapse_blank_lines(text)
  if drop:
    refers = sorted(_words(literal_text(text)) & (set(REFERENCE_WORDS) | _name_words(drop)))
    if refers:
      raise ValueError(
        f"cannot drop {['{' + n + '}' for n in drop]}: the rest of the template still refers "
        f"to it ({', '.join(repr(w) for w in refers)})"
      )
  if bind:
    text = _substitute(text, {k: escape(v) for k, v in bind.items()})
  return text


def _name_words(names: Iterable[str]) -> set[str]:
  return {w for n in names for w in n.lower().split("_") if len(w) > 2}


def _placeholder_tokens(template: str) -> set[str]:
  return {"{" + name + "}" for _, name, _, _ in string.Formatter().parse(template) if name}


def _placeholders_in(line: str) -> list[str]:
  try:
    return [name for _, name, _, _ in string.Formatter().parse(line) if name]
  except ValueError:  # a line holding half of a doubled brace pair never holds a placeholder
    return []


def _collapse_blank_lines(text: str) -> str:
  # Removing a paragraph leaves the blank lines around it; keep at most one blank line.
  return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _substitute(template: str, values: Mapping[str, str]) -> str:
  parts = []
  for literal, name, _, _ in string.Formatter().parse(template):
    parts.append(escape(literal))
    if name is not None:
      parts.append(values[name] if name in values else "{" + name + "}")
  return "".join(parts)
