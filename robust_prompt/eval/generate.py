"""Generative tasks: the text of a greedy decode and its exact-match score against references.

The decode itself is `PromptedModel.greedy` (one decoder per family, with a KV cache); this
module turns its tokens into text and compares them with the references.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def strip_after_eos(tokens: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
  """The generated ids before the first EOS (EOS and padding dropped)."""
  out = []
  for t in tokens:
    t = int(t)
    if t == eos_id:
      break
    if t != pad_id:
      out.append(t)
  return out


_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
  """Exact-match normalisation: strip, lowercase, collapse runs of whitespace."""
  return _SPACE.sub(" ", text.strip().lower())


def exact_match(prediction: str, references) -> bool:
  """True when the normalised prediction equals any normalised reference."""
  pred = normalize_answer(prediction)
  return any(pred == normalize_answer(r) for r in references)
