"""Leakage check: unobserved instructions that nearly repeat an observed one."""

import warnings

import pytest

from robust_prompt.instructions.io import default_instruction_dir, load_instructions
from robust_prompt.instructions.leakage import (
  LeakageWarning,
  check_leakage,
  ngrams,
  normalize,
  similarity,
)
from robust_prompt.instructions.schema import Instruction


def make(ident, template, split, tasks=("mmlu:*",), source="human"):
  return Instruction(
    ident, tuple(tasks), template, "none", "option_text", split, source, file="f.jsonl", line=3
  )


def test_normalisation():
  assert normalize("Question: {question}\n\nOPTIONS:\n{options_}  Answer!") == [
    "question",
    "<slot>",
    "options",
    "<slot>",
    "answer",
  ]
  # Placeholders of different benchmarks compare equal; punctuation and case do not matter.
  assert similarity("Q: {question}, answer it.", "q {input} answer it") == 1.0
  assert ngrams(["a"], 2) == frozenset({("a",)})


def test_near_duplicate_is_reported_and_warned():
  observed = make(
    "flan_v2_arc_01",
    "Answer the following question.\n\n{question}\n\n{options_}",
    "observed",
    source="flan_v2",
  )
  leaked = make("human_09", "answer the following question: {question} -- {options}!", "unobserved")
  other = make(
    "human_10", "Here is a tricky exam item; reply with the right choice. {question}", "unobserved"
  )
  with pytest.warns(LeakageWarning, match=r"f\.jsonl:3: unobserved instruction 'human_09'"):
    report = check_leakage([observed, leaked, other])
  assert not report.ok
  assert [(p.unobserved.id, p.observed.id) for p in report.pairs] == [
    ("human_09", "flan_v2_arc_01")
  ]
  assert report.pairs[0].similarity == 1.0
  assert "1 near-duplicates" in str(report)


def test_small_edit_stays_above_threshold_and_rewording_below():
  base = "Read the question and choose the best answer from the list below. {question} {options}"
  edited = (
    "Read the question and choose the best answer from the list below: {question}\n{options}."
  )
  reworded = "Which listed answer is best? Think first, then reply. {question} {options}"
  assert similarity(base, edited) >= 0.8
  assert similarity(base, reworded) < 0.8


def test_no_leak_is_quiet():
  observed = make("o1", "Trivia question: {question}\nAnd the answer is?", "observed")
  unobserved = make("u1", "I'm studying and got stuck on this. {question}", "unobserved")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    report = check_leakage([observed, unobserved])
  assert report.ok and report.num_observed == 1 and report.num_unobserved == 1


def test_shipped_collection_has_no_internal_near_duplicates():
  # No observed phrasings are shipped; compare our own instructions pairwise within each file, as if
  # each were observed, to make sure the collection's phrasings are really distinct.
  shipped = load_instructions([default_instruction_dir()])
  by_file = {}
  for i in shipped:
    by_file.setdefault(i.file, []).append(i)
  for file, items in by_file.items():
    for a in items:
      for b in items:
        if a.id < b.id:
          assert similarity(a.template, b.template) < 0.8, (file, a.id, b.id)
