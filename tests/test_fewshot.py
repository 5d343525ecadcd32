"""Few-shot demonstrations: seeded selection, exclusion of the evaluated example, exact rendering."""

import random

import pytest
from helpers import instruction, mmlu_example

from robust_prompt.data import mmlu
from robust_prompt.data.example import Example
from robust_prompt.instructions.fewshot import render_demo, render_fewshot, select_demos
from robust_prompt.instructions.render import render

INSTRUCTION = instruction("{question}\n{options}\nAnswer:", id="fewshot_01")


def example(i: int, answer: int = 0) -> Example:
  return mmlu_example(f"Question {i}?", ("w", "x", "y", "z"), answer, subject="toy", index=i)


POOL = [example(i, answer=i % 4) for i in range(50)]


def ids(examples):
  return [e.id for e in examples]


def test_same_seed_same_demos_whatever_the_pool_order():
  first = select_demos(POOL, 5, seed=3, exclude_id="mmlu:toy:7")
  again = select_demos(list(POOL), 5, seed=3, exclude_id="mmlu:toy:7")
  shuffled = list(POOL)
  random.Random(0).shuffle(shuffled)
  assert ids(first) == ids(again) == ids(select_demos(shuffled, 5, seed=3, exclude_id="mmlu:toy:7"))
  assert len(set(ids(first))) == 5


def test_different_seeds_and_examples_get_different_demos():
  by_seed = {tuple(ids(select_demos(POOL, 5, seed=s, exclude_id="mmlu:toy:7"))) for s in range(10)}
  assert len(by_seed) == 10
  by_example = {
    tuple(ids(select_demos(POOL, 5, seed=0, exclude_id=f"mmlu:toy:{i}"))) for i in range(10)
  }
  assert len(by_example) == 10
  # A dev pool (nothing to exclude): `key` still gives each evaluated example its own demos ...
  keyed = {
    tuple(ids(select_demos(POOL, 5, seed=0, exclude_id=None, key=f"q{i}"))) for i in range(5)
  }
  assert len(keyed) == 5
  # ... and without it every example gets the same ones.
  assert ids(select_demos(POOL, 5, seed=0, exclude_id=None)) == ids(
    select_demos(POOL, 5, seed=0, exclude_id=None, key="")
  )


def test_never_returns_the_evaluated_example():
  for seed in range(200):
    evaluated = f"mmlu:toy:{seed % 50}"
    demos = select_demos(POOL, 49, seed=seed, exclude_id=evaluated)
    assert evaluated not in ids(demos)
    assert len(set(ids(demos))) == 49


def test_k_zero_is_the_plain_rendering():
  assert select_demos(POOL, 0, seed=0, exclude_id="mmlu:toy:0") == []
  assert select_demos([], 0, seed=0, exclude_id=None) == []
  assert render_fewshot(INSTRUCTION, POOL[0], []) == render(INSTRUCTION, POOL[0])


def test_too_small_pool_is_a_clear_error():
  with pytest.raises(ValueError, match=r"num_fewshot=50 needs at least 50 .* 49 usable .*excluded"):
    select_demos(POOL, 50, seed=0, exclude_id="mmlu:toy:3")
  with pytest.raises(ValueError, match=r"num_fewshot=3 .* 2 usable \(2 in all\)"):
    select_demos(POOL[:2], 3, seed=0, exclude_id=None)
  with pytest.raises(ValueError, match=">= 0"):
    select_demos(POOL, -1, seed=0, exclude_id=None)


def test_render_fewshot_keeps_the_scoring_and_uses_the_separator():
  demos = [POOL[1], POOL[2]]
  plain = render(INSTRUCTION, POOL[0])
  out = render_fewshot(INSTRUCTION, POOL[0], demos, separator="\n---\n")
  assert (out.options, out.answer, out.correct, out.targets) == (
    plain.options,
    plain.answer,
    plain.correct,
    plain.targets,
  )
  demo = "Question {}?\nA. w\nB. x\nC. y\nD. z\nAnswer: {}"
  assert render_demo(INSTRUCTION, POOL[1]) == demo.format(1, "B")
  assert out.inputs == "\n---\n".join([demo.format(1, "B"), demo.format(2, "C"), plain.inputs])


def test_exact_text_on_real_mmlu(mmlu_dir):
  examples = mmlu.load_subject(mmlu_dir, "abstract_algebra")
  evaluated = examples[0]
  demos = select_demos(examples, 2, seed=0, exclude_id=evaluated.id)
  assert ids(demos) == ["mmlu:abstract_algebra:16", "mmlu:abstract_algebra:87"]
  out = render_fewshot(INSTRUCTION, evaluated, demos)
  assert out.inputs == (
    "The inverse of -i in the multiplicative group, {1, -1, i , -i} is\n"
    "A. 1\nB. -1\nC. i\nD. -i\nAnswer: C"
    "\n\n"
    "For T: Z x Z -> Z where T(1, 0) = 3 and T(0, 1) = -5, find T(-3,2).\n"
    "A. -19\nB. -10\nC. 19\nD. 10\nAnswer: A"
    "\n\n"
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
    "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
  )
  assert out.options == ("A", "B", "C", "D")
  assert out.targets == ("B",) and out.answer == 1
