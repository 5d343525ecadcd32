"""The `Example` record: one benchmark item, independent of how an instruction phrases it.

Loaders (`mmlu.py`, `bigbench.py`, `jsonl.py`) turn their formats into `Example`s; instructions
(`robust_prompt/instructions/render.py`) turn an `Example` into model input text and the strings
to score. Keeping the two apart is what lets one item be asked in many phrasings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


class DataError(ValueError):
  """Bad or missing benchmark data. The message names the file (and line) and what to do."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One benchmark item.

  Attributes:
    id: stable, unique within a task, e.g. "mmlu:anatomy:17".
    task: e.g. "mmlu:anatomy", "bigbench:strategyqa".
    fields: the values of template placeholders: question, input, context, subject, ...
    options: the `O` answer options of a multiple-choice item; () for generative items.
    answer: index into `options` of the first correct option (None for generative items).
    correct: all correct option indices (BIG-bench items may have several).
    targets: generative references (() for multiple choice).
    metadata: provenance and format details (file, line, BIG-bench prefixes, ...).
  """

  id: str
  task: str
  fields: Mapping[str, str]
  options: tuple[str, ...] = ()
  answer: int | None = None
  correct: tuple[int, ...] = ()
  targets: tuple[str, ...] = ()
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Loaders build these from user files; a wrong index would silently score the wrong option.
    if self.options:
      if self.answer is None or not 0 <= self.answer < len(self.options):
        raise DataError(
          f"{self.id}: answer {self.answer!r} is not an index into {len(self.options)} options"
        )
      if not self.correct or self.answer not in self.correct:
        raise DataError(f"{self.id}: correct {self.correct!r} must contain answer {self.answer}")
      if any(not 0 <= c < len(self.options) for c in self.correct):
        raise DataError(f"{self.id}: correct {self.correct!r} has an index outside the options")
    elif self.answer is not None or self.correct:
      raise DataError(f"{self.id}: an example without options cannot have an answer index")

  @property
  def is_multiple_choice(self) -> bool:
    return bool(self.options)

  def to_json(self) -> str:
    """A JSON string (used to pass examples through tf.data as one string feature)."""
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False, default=str)

  @classmethod
  def from_json(cls, text: str | bytes) -> Example:
    d = json.loads(text)
    return cls(
      id=d["id"],
      task=d["task"],
      fields=dict(d["fields"]),
      options=tuple(d["options"]),
      answer=d["answer"],
      correct=tuple(d["correct"]),
      targets=tuple(d["targets"]),
      metadata=dict(d["metadata"]),
    )
