"""Leakage check: "unobserved" instructions that nearly repeat an observed one.

The observed/unobserved comparison is only meaningful if the unobserved phrasings really were
not seen in instruction tuning. A human-written instruction can accidentally match a FLAN or P3
template almost word for word; this module finds such pairs.

Similarity is the Jaccard index of the sets of word n-grams (default n = 2, word bigrams) of the
two normalised templates. Normalisation: lowercase, every placeholder replaced by one token
("{question}", "{input}", FLAN's "{options_}" all become `<slot>`, so templates of different
benchmarks compare on their wording alone), punctuation removed, whitespace collapsed.
A pair with similarity >= 0.8 is reported (and warned about with `warnings.warn`).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence

from robust_prompt.instructions.schema import Instruction

DEFAULT_N = 2
DEFAULT_THRESHOLD = 0.8
SLOT = "<slot>"

_PLACEHOLDER = re.compile(r"\{\{?\s*[A-Za-z_][A-Za-z0-9_]*\s*\}?\}")
_NON_WORD = re.compile(r"[^\w<>\s]+")


class LeakageWarning(UserWarning):
  """An unobserved instruction is a near-duplicate of an observed one."""


@dataclasses.dataclass(frozen=True)
class LeakagePair:
  unobserved: Instruction
  observed: Instruction
  similarity: float

  def describe(self) -> str:
    u, o = self.unobserved, self.observed
    return (
      f"{u.where}: unobserved instruction {u.id!r} is a near-duplicate (n-gram Jaccard "
      f"{self.similarity:.2f}) of observed instruction {o.id!r} ({o.source}) at {o.where}"
    )


@dataclasses.dataclass(frozen=True)
class LeakageReport:
  """Pairs found, most similar first, and the settings used."""

  pairs: tuple[LeakagePair, ...]
  n: int
  threshold: float
  num_unobserved: int
  num_observed: int

  @property
  def ok(self) -> bool:
    return not self.pairs

  def __str__(self) -> str:
    head = (
      f"leakage check ({self.n}-gram Jaccard >= {self.threshold}): {self.num_unobserved} "
      f"unobserved vs {self.num_observed} observed instructions, {len(self.pairs)} near-duplicates"
    )
    return "\n".join([head] + [p.describe() for p in self.pairs])


def normalize(template: str) -> list[str]:
  """Lowercased words of `template`, placeholders replaced by `<slot>`, punctuation removed."""
  text = _PLACEHOLDER.sub(f" {SLOT} ", template.lower())
  text = _NON_WORD.sub(" ", text).replace("_", " ")
  return text.split()


def ngrams(words: Sequence[str], n: int = DEFAULT_N) -> frozenset[tuple[str, ...]]:
  """Word n-grams; a text shorter than n yields itself as its only gram (so it still compares)."""
  if len(words) < n:
    return frozenset({tuple(words)}) if words else frozenset()
  return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
  if not a and not b:
    return 1.0
  return len(a & b) / len(a | b)


def similarity(a: str, b: str, n: int = DEFAULT_N) -> float:
  """The n-gram Jaccard similarity of two templates after normalisation."""
  return jaccard(ngrams(normalize(a), n), ngrams(normalize(b), n))


def check_leakage(
  instructions: Sequence[Instruction],
  *,
  n: int = DEFAULT_N,
  threshold: float = DEFAULT_THRESHOLD,
  warn: bool = True,
) -> LeakageReport:
  """Compares every unobserved instruction with every observed one.

  A phrasing seen in instruction tuning counts whatever task it was seen with, so pairs are
  compared across tasks too.

  Args:
    instructions: a mixed collection (both splits).
    n: n-gram size (words).
    threshold: report pairs with similarity >= threshold.
    warn: also emit one `LeakageWarning` per pair.

  Returns:
    The report; `report.ok` is True when nothing leaked.
  """
  # The whole text (`Instruction.text`): a phrasing split into instruction and input template
  # is the same phrasing as its joined form.
  observed = [(i, ngrams(normalize(i.text), n)) for i in instructions if i.split == "observed"]
  unobserved = [i for i in instructions if i.split == "unobserved"]
  pairs = []
  for u in unobserved:
    grams = ngrams(normalize(u.text), n)
    for o, o_grams in observed:
      sim = jaccard(grams, o_grams)
      if sim >= threshold:
        pairs.append(LeakagePair(u, o, sim))
  pairs.sort(key=lambda p: -p.similarity)
  if warn:
    for pair in pairs:
      warnings.warn(pair.describe(), LeakageWarning, stacklevel=2)
  return LeakageReport(tuple(pairs), n, threshold, len(unobserved), len(observed))


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m robust_prompt.instructions.leakage PATH...`: exit status 1 when something leaked."""
  import argparse

  from robust_prompt.instructions.io import load_instructions

  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("paths", nargs="+", help="instruction files/directories (both splits)")
  parser.add_argument("--n", type=int, default=DEFAULT_N, help="word n-gram size")
  parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
  args = parser.parse_args(argv)
  report = check_leakage(
    load_instructions(args.paths), n=args.n, threshold=args.threshold, warn=False
  )
  print(report)
  return 0 if report.ok else 1


if __name__ == "__main__":
  raise SystemExit(main())
