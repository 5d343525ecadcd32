"""The shipped collection (tasks/instructions): loads, validates, renders on real examples, fits T5.

The MMLU length check tokenizes with the real T5 vocabulary (+ EOS) and prints, per instruction,
how many of 2,000 sampled MMLU questions exceed 512 tokens (run with -s to see the table).
"""

import collections
import random
import re

import helpers
import pytest

from robust_prompt.data import bigbench, mmlu
from robust_prompt.instructions.io import (
  default_instruction_dir,
  instructions_for_task,
  load_instructions,
)
from robust_prompt.instructions.render import render

BIGBENCH_LITE = (
  "bbq_lite_json", "code_line_description", "conceptual_combinations", "hindu_knowledge",
  "known_unknowns", "language_identification", "logic_grid_puzzle", "logical_deduction",
  "novel_concepts", "play_dialog_same_or_different", "strange_stories", "strategyqa",
  "vitaminc_fact_verification", "winowhy",
)  # fmt: skip
MAX_TOKENS = 512
MMLU_SAMPLE = 2000
BIGBENCH_SAMPLE = 200


@pytest.fixture(scope="module")
def shipped():
  return load_instructions([default_instruction_dir()])


@pytest.fixture(scope="module")
def vocab(spiece_path):
  import seqio

  return seqio.SentencePieceVocabulary(str(spiece_path), extra_ids=100)


def token_length(vocab, text: str) -> int:
  return len(vocab.encode(text)) + 1  # + EOS, as the model input


def assert_filled(instruction, example, rendered):
  for name in instruction.placeholders:
    token = "{" + name + "}"
    if not any(token in str(v) for v in example.fields.values()):
      assert token not in rendered.inputs, (instruction.id, example.id)
  if example.options:
    assert len(rendered.options) == len(example.options)
    assert rendered.targets[0] == rendered.options[example.answer]


def test_collection_files_and_variety(shipped):
  root = default_instruction_dir()
  by_file = collections.defaultdict(list)
  for i in shipped:
    by_file[i.file].append(i)
  expected = {str(root / "mmlu.jsonl")} | {
    str(root / "bigbench" / f"{t}.jsonl") for t in BIGBENCH_LITE
  }
  assert set(by_file) == expected
  for file, items in by_file.items():
    assert len(items) >= 10, file
    assert all(i.split == "unobserved" and i.source == "human" for i in items), file
    prefix = "" if file.endswith("mmlu.jsonl") else file.rsplit("/", 1)[-1][: -len(".jsonl")] + "_"
    assert all(re.fullmatch(prefix + r"human_\d\d", i.id) for i in items), file
    assert len({i.options_format for i in items}) >= 4, file
    assert {i.answer_space for i in items} == {"letters", "numbers", "option_text"}, file
  mmlu_items = by_file[str(root / "mmlu.jsonl")]
  with_subject = [i for i in mmlu_items if "subject" in i.placeholders]
  assert len(with_subject) >= 5 and len(mmlu_items) - len(with_subject) >= 5
  for task in BIGBENCH_LITE:
    found = instructions_for_task(shipped, f"bigbench:{task}")
    assert len(found) >= 10 and all(i.file.endswith(f"{task}.jsonl") for i in found)
    assert instructions_for_task(shipped, f"bigbench:{task}:some_subtask") == found


def test_mmlu_renders_within_512_tokens(shipped, mmlu_dir, vocab, capsys):
  examples = [e for s in mmlu.list_subjects(mmlu_dir) for e in mmlu.load_subject(mmlu_dir, s)]
  sample = random.Random(0).sample(examples, min(MMLU_SAMPLE, len(examples)))
  rows = []
  for instruction in instructions_for_task(shipped, "mmlu:anatomy"):
    lengths = []
    for example in sample:
      rendered = render(instruction, example)
      assert_filled(instruction, example, rendered)
      assert example.fields["question"].strip() in rendered.inputs
      lengths.append(token_length(vocab, rendered.inputs))
    over = sum(n > MAX_TOKENS for n in lengths)
    rows.append((instruction.id, over, max(lengths)))
  with capsys.disabled():
    print(f"\nMMLU: questions over {MAX_TOKENS} tokens (of {len(sample)}) per instruction:")
    for ident, over, longest in rows:
      print(f"  {ident}: {over} truncated ({100 * over / len(sample):.1f}%), longest {longest}")
  for ident, over, _ in rows:
    assert over <= 0.05 * len(sample), (ident, over)


def test_bigbench_renders_on_real_tasks(shipped, bigbench_lite_dir, vocab):
  rng = random.Random(0)
  tasks = bigbench.list_tasks(bigbench_lite_dir)
  assert tasks
  for task in tasks:
    examples = bigbench.load_task(bigbench_lite_dir, task)
    sample = rng.sample(examples, min(BIGBENCH_SAMPLE, len(examples)))
    instructions = instructions_for_task(shipped, task)
    assert len(instructions) >= 10, task
    for instruction in instructions:
      over = 0
      for example in sample:
        rendered = render(instruction, example)
        assert_filled(instruction, example, rendered)
        assert example.fields["input"].strip() in rendered.inputs
        over += token_length(vocab, rendered.inputs) > MAX_TOKENS
      assert over <= 0.05 * len(sample), (task, instruction.id, over)


# The four BIG-bench Lite JSON tasks not in ../shared: examples shaped like theirs (input text,
# option counts) check that every instruction renders, e.g. letters fit the option count.
ABSENT_TASK_SHAPES = {
  "language_identification": ("Ba ha ngaa ya ndi baa.", [f"Language {i}" for i in range(11)]),
  "logic_grid_puzzle": ("Q: There are 3 houses ... Clues: ... Who lives in house 1?", ["1", "2", "3"]),
  "strange_stories": ("Story ... Why did she say that?", ["a", "b", "c", "d"]),
  "vitaminc_fact_verification": ("Passage: ...\nClaim: ...\nTrue, False, or Neither?",
                                 ["True", "False", "Neither"]),
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(ABSENT_TASK_SHAPES))
def test_absent_bigbench_tasks_render(shipped, task):
  text, options = ABSENT_TASK_SHAPES[task]
  for name in (f"bigbench:{task}", f"bigbench:{task}:sub"):
    example = helpers.example(name, {"input": text, "question": text}, options, 1)
    instructions = instructions_for_task(shipped, name)
    assert len(instructions) >= 10
    for instruction in instructions:
      rendered = render(instruction, example)
      assert_filled(instruction, example, rendered)
      assert text in rendered.inputs
